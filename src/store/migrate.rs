//! Schema versions of the store and the steps between them.
//!
//! `meta/schema_version` holds a big-endian u32. A fresh database gets [`SCHEMA_VERSION`]. A
//! database with records but no version is refused rather than guessed at, and one from a newer
//! sashad is refused rather than misread. Each future layout change adds one step to [`STEPS`].

use super::{trees, Store, StoreError};

/// The schema this sashad writes.
pub const SCHEMA_VERSION: u32 = 1;

const VERSION_KEY: &str = "schema_version";

/// A migration from version `n` (its index + 1) to `n + 1`.
type Step = fn(&Store) -> Result<(), StoreError>;

/// Steps from version 1 upwards. Empty while version 1 is the only layout.
const STEPS: &[Step] = &[];

/// Brings the store to [`SCHEMA_VERSION`], flushing after each step.
pub(super) fn migrate(store: &Store) -> Result<(), StoreError> {
    let found = match store.meta_get(VERSION_KEY)? {
        Some(bytes) => {
            let raw: [u8; 4] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    tree: trees::META,
                    key: VERSION_KEY.into(),
                    reason: format!("expected 4 bytes, found {}", bytes.len()),
                })?;
            u32::from_be_bytes(raw)
        }
        None => {
            let sizes = store.tree_sizes()?;
            if let Some((tree, _)) = sizes.iter().find(|(_, n)| *n > 0) {
                return Err(StoreError::Corrupt {
                    tree,
                    key: VERSION_KEY.into(),
                    reason: "the store holds records but no schema version".into(),
                });
            }
            store.meta_set(VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            return Ok(());
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found..SCHEMA_VERSION {
        let step = STEPS.get(version as usize - 1).ok_or(StoreError::Corrupt {
            tree: trees::META,
            key: VERSION_KEY.into(),
            reason: format!("no migration step from version {version}"),
        })?;
        step(store)?;
        store.meta_set(VERSION_KEY, &(version + 1).to_be_bytes())?;
        tracing::info!(from = version, to = version + 1, "migrated store schema");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_store_gets_the_current_version_and_newer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.meta_get(VERSION_KEY).unwrap().unwrap(),
                SCHEMA_VERSION.to_be_bytes()
            );
            store
                .meta_set(VERSION_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    }
}

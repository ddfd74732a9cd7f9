//! Schema versions of the store and the steps between them.
//!
//! `meta/schema_version` holds a big-endian u32. A fresh database gets [`SCHEMA_VERSION`]. A
//! database with records but no version is refused rather than guessed at, and one from a newer
//! sashad is refused rather than misread. Each future layout change adds one step to [`STEPS`].

use super::{trees, Store, StoreError};

/// The schema this sashad writes.
pub const SCHEMA_VERSION: u32 = 2;

const VERSION_KEY: &str = "schema_version";

/// A migration from version `n` (its index + 1) to `n + 1`.
type Step = fn(&Store) -> Result<(), StoreError>;

/// Steps from version 1 upwards: `STEPS[0]` takes 1 to 2.
const STEPS: &[Step] = &[assign_uid_slots];

/// 1 → 2: every user gets a uid slot (per-user uids, issue "Isolation between users"), in
/// creation order, and the next free slot is recorded.
fn assign_uid_slots(store: &Store) -> Result<(), StoreError> {
    let mut users = store.list_users()?;
    users.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut next = 0u32;
    for mut user in users {
        if let Some(slot) = user.uid_slot {
            next = next.max(slot + 1);
            continue;
        }
        user.uid_slot = Some(next);
        next += 1;
        store.put_user(&user)?;
    }
    store.meta_set(
        std::str::from_utf8(super::sled::NEXT_UID_SLOT_KEY).unwrap_or("next_uid_slot"),
        &next.to_be_bytes(),
    )
}

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
    fn version_1_stores_get_uid_slots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for name in ["a", "b"] {
                let created = store
                    .create_user(
                        name,
                        "h",
                        crate::store::Role::User,
                        crate::store::Admission::Open,
                        u32::MAX,
                    )
                    .unwrap();
                let crate::store::CreateUser::Created(mut user) = created else {
                    panic!()
                };
                // Make it look like a version-1 record.
                user.uid_slot = None;
                store.put_user(&user).unwrap();
            }
            store
                .meta_remove(std::str::from_utf8(super::super::sled::NEXT_UID_SLOT_KEY).unwrap())
                .unwrap();
            store.meta_set(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.meta_get(VERSION_KEY).unwrap().unwrap(),
            SCHEMA_VERSION.to_be_bytes()
        );
        let mut slots: Vec<u32> = store
            .list_users()
            .unwrap()
            .iter()
            .map(|u| u.uid_slot.unwrap())
            .collect();
        slots.sort();
        assert_eq!(slots, [0, 1]);
        let crate::store::CreateUser::Created(c) = store
            .create_user(
                "c",
                "h",
                crate::store::Role::User,
                crate::store::Admission::Open,
                u32::MAX,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c.uid_slot,
            Some(2),
            "new users continue after the migrated ones"
        );
    }

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

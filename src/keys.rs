//! Which master key the daemon uses, how it is checked against the store at startup, and key
//! rotation (DESIGN §3).
//!
//! The `meta` tree records the id of the key that seals (`key_active`) and, during a rotation,
//! the id being rotated to (`key_rotating`), plus one sealed check value per key id
//! (`key_check:<kid>`). Only ids are stored, never key material. Startup refuses to run with a
//! key that is not the store's, so a wrong key is a clear error instead of credentials that
//! silently fail to open, and nothing is rewritten or deleted in that case.

use std::path::{Path, PathBuf};

use crate::crypto::{configured_key_file, CryptoError, KeyId, KeySource, Keyring, MasterKey};
use crate::store::{now, Store, StoreError};

const ACTIVE_KEY: &str = "key_active";
const ROTATING_KEY: &str = "key_rotating";
const CHECK_PREFIX: &str = "key_check:";
const CHECK_KIND: &str = "key_check";
const CHECK_PLAINTEXT: &[u8] = b"sashad key check v1";

/// Errors of key selection, verification and rotation.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Loading or using a key failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The loaded key is not the one the store's records are sealed with.
    #[error(
        "the store's records are sealed with master key id {stored}, but the key loaded from {source_path} \
         has id {loaded}; start sashad with the original key file (--master-key-file, \
         SASHAD_MASTER_KEY_FILE or $CREDENTIALS_DIRECTORY/master-key). Nothing was changed"
    )]
    WrongKey {
        /// The id the store expects.
        stored: String,
        /// The id of the loaded key.
        loaded: String,
        /// Where the loaded key came from.
        source_path: PathBuf,
    },
    /// No key is configured and the store already has sealed records, so generating one would
    /// only hide the missing key.
    #[error(
        "no master key: the store's records are sealed with key id {stored}, and {path} does not \
         exist; pass --master-key-file (or SASHAD_MASTER_KEY_FILE) pointing at the original key"
    )]
    MissingKey {
        /// The id the store expects.
        stored: String,
        /// The data-dir key file that was looked for.
        path: PathBuf,
    },
    /// A rotation was started and not finished.
    #[error(
        "a key rotation to key id {to} did not finish; run `sashad rotate-key --new-key-file <that key>` \
         again with the current key loaded"
    )]
    RotationUnfinished {
        /// The id being rotated to.
        to: String,
    },
    /// The sealed check value did not open with the key of the same id.
    #[error("master key id {0} matches, but its check value does not open: the store's meta tree is damaged")]
    CheckFailed(String),
}

/// Picks the master key file in DESIGN §3's order (flag, `SASHAD_MASTER_KEY_FILE`,
/// `$CREDENTIALS_DIRECTORY/master-key`, `<data_dir>/master.key`), loads it, and checks it
/// against the store. A data-dir key is generated (0600, with a warning) only for a store that
/// has never had one.
pub fn load_and_verify(
    store: &Store,
    flag: Option<&Path>,
    env_file: Option<&str>,
    credentials_directory: Option<&str>,
) -> Result<(Keyring, KeySource), KeysError> {
    let stored = stored_active(store)?;
    let source = match configured_key_file(flag, env_file, credentials_directory) {
        Some(source) => source,
        None => {
            let path = store.data_dir().join("master.key");
            let generated = !path.exists();
            if generated {
                if let Some(stored) = &stored {
                    return Err(KeysError::MissingKey {
                        stored: stored.to_string(),
                        path,
                    });
                }
            }
            KeySource::DataDir { path, generated }
        }
    };
    let key = match &source {
        KeySource::DataDir {
            path,
            generated: true,
        } => {
            let key = MasterKey::generate_file(path)?;
            tracing::warn!(
                path = %path.display(),
                kid = %key.kid(),
                "generated a new master key next to the data it protects; anyone who can read the \
                 data directory can open the credentials. For production, keep the key elsewhere \
                 (--master-key-file, SASHAD_MASTER_KEY_FILE, or systemd LoadCredential=master-key) \
                 and back it up: without it the stored credentials are lost"
            );
            key
        }
        other => MasterKey::load(other.path())?,
    };
    let keyring = Keyring::new(key);
    verify(store, &keyring, source.path())?;
    Ok((keyring, source))
}

fn stored_active(store: &Store) -> Result<Option<KeyId>, KeysError> {
    Ok(store
        .meta_get(ACTIVE_KEY)?
        .map(|v| serde_json::from_slice(&v))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            tree: "meta",
            key: ACTIVE_KEY.into(),
            reason: e.to_string(),
        })?)
}

/// Checks that `keyring` holds the store's active key, and records it for a fresh store.
pub fn verify(store: &Store, keyring: &Keyring, source_path: &Path) -> Result<(), KeysError> {
    if let Some(to) = store.meta_get(ROTATING_KEY)? {
        let to: KeyId = serde_json::from_slice(&to).map_err(|e| StoreError::Corrupt {
            tree: "meta",
            key: ROTATING_KEY.into(),
            reason: e.to_string(),
        })?;
        return Err(KeysError::RotationUnfinished { to: to.to_string() });
    }
    match stored_active(store)? {
        None => {
            write_check(store, keyring)?;
            store.meta_set(
                ACTIVE_KEY,
                &serde_json::to_vec(keyring.active_kid()).unwrap_or_default(),
            )?;
            Ok(())
        }
        Some(stored) if keyring.has(&stored) => check(store, keyring, &stored),
        Some(stored) => Err(KeysError::WrongKey {
            stored: stored.to_string(),
            loaded: keyring.active_kid().to_string(),
            source_path: source_path.to_path_buf(),
        }),
    }
}

fn write_check(store: &Store, keyring: &Keyring) -> Result<(), KeysError> {
    let sealed = keyring.seal("", CHECK_KIND, CHECK_PLAINTEXT)?;
    let key = format!("{CHECK_PREFIX}{}", keyring.active_kid());
    store.meta_set(&key, &serde_json::to_vec(&sealed).unwrap_or_default())?;
    Ok(())
}

fn check(store: &Store, keyring: &Keyring, kid: &KeyId) -> Result<(), KeysError> {
    let key = format!("{CHECK_PREFIX}{kid}");
    let Some(bytes) = store.meta_get(&key)? else {
        return Err(KeysError::CheckFailed(kid.to_string()));
    };
    let sealed = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        tree: "meta",
        key: key.clone(),
        reason: e.to_string(),
    })?;
    match keyring.open("", CHECK_KIND, &sealed) {
        Ok(plain) if plain.as_slice() == CHECK_PLAINTEXT => Ok(()),
        _ => Err(KeysError::CheckFailed(kid.to_string())),
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The old active key id.
    pub from: String,
    /// The new active key id.
    pub to: String,
    /// Records re-sealed.
    pub resealed: usize,
}

/// Re-seals every sealed record under `new_key` (`sashad rotate-key`). `current` must open the
/// store (as at startup). Restartable: until it finishes, `meta/key_rotating` names the new
/// key, the daemon refuses to start, and running it again with the same keys completes it.
/// Each record is swapped only if unchanged since it was read.
pub fn rotate(
    store: &Store,
    current: MasterKey,
    new_key: MasterKey,
    source_path: &Path,
) -> Result<RotationReport, KeysError> {
    let from = current.kid().to_string();
    let to = new_key.kid().to_string();
    let keyring = Keyring::with_older(new_key, vec![current]);
    if let Some(rotating) = store.meta_get(ROTATING_KEY)? {
        if rotating != serde_json::to_vec(keyring.active_kid()).unwrap_or_default() {
            let rotating = String::from_utf8_lossy(&rotating)
                .trim_matches('"')
                .to_owned();
            return Err(KeysError::RotationUnfinished { to: rotating });
        }
    }
    match stored_active(store)? {
        Some(stored) if keyring.has(&stored) => check(store, &keyring, &stored)?,
        Some(stored) => {
            return Err(KeysError::WrongKey {
                stored: stored.to_string(),
                loaded: from,
                source_path: source_path.to_path_buf(),
            })
        }
        None => {}
    }
    store.meta_set(
        ROTATING_KEY,
        &serde_json::to_vec(keyring.active_kid()).unwrap_or_default(),
    )?;
    write_check(store, &keyring)?;
    let mut resealed = 0;
    for (user_id, record) in store.all_credentials()? {
        if &record.sealed.kid == keyring.active_kid() {
            continue;
        }
        let mut new = record.clone();
        new.sealed = keyring.reseal(&user_id, crate::credential::SEAL_KIND, &record.sealed)?;
        new.updated_at = now();
        if store.replace_credential(&user_id, &record, &new)? {
            resealed += 1;
        }
    }
    // Sign-ins under way hold a sealed PKCE verifier each.
    for (state, mut pending) in store.all_pending()? {
        if &pending.verifier.kid == keyring.active_kid() {
            continue;
        }
        pending.verifier = keyring.reseal(
            &pending.user_id,
            crate::signin::VERIFIER_KIND,
            &pending.verifier,
        )?;
        store.put_pending(&state, &pending)?;
        resealed += 1;
    }
    store.meta_set(
        ACTIVE_KEY,
        &serde_json::to_vec(keyring.active_kid()).unwrap_or_default(),
    )?;
    store.meta_remove(ROTATING_KEY)?;
    Ok(RotationReport { from, to, resealed })
}

//! The keyring: master keys, per-user key derivation, and sealing of credential records.
//!
//! DESIGN §3, with the refinement that the associated data also binds the key id:
//! - a master key is 32 random bytes, loaded from a file;
//! - the per-user key is HKDF-SHA256(ikm = master, salt = `sashad/credentials/v1`,
//!   info = user id) (RFC 5869);
//! - the cipher is XChaCha20-Poly1305 with a random 24-byte nonce, so nonces never need
//!   coordination (draft-irtf-cfrg-xchacha);
//! - the AAD is `sashad/v1|<kid>|<user id>|<record kind>`, so a record moved to another user,
//!   another kind, or relabelled with another key id fails to open;
//! - a sealed record is stored as `{v: 1, kid, nonce, ct}` ([`Sealed`]).
//!
//! Key material lives in [`MasterKey`], which zeroizes on drop and is deliberately not `Clone`,
//! `Serialize` or `Debug`-printable (its `Debug` shows only the key id).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Length of a master key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// The HKDF salt of per-user credential keys (DESIGN §3).
const HKDF_SALT: &[u8] = b"sashad/credentials/v1";
/// The version of the sealed format, first in the AAD and in [`Sealed::v`].
const SEAL_VERSION: u8 = 1;

/// Errors of key loading and sealing. Messages name files and key ids, never key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file could not be read or written.
    #[error("cannot use master key file {path}: {source}")]
    KeyFileIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file's mode lets other users read it.
    #[error(
        "master key file {path} can be read by other users (mode {mode:o}); \
         run `chmod 600 {path}` so only sashad's user can read it"
    )]
    KeyFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file holds neither 32 raw bytes nor 64 hex digits.
    #[error(
        "master key file {path} has the wrong length ({len} bytes): it must hold 32 random bytes, \
         raw or as 64 hex digits; create one with `openssl rand -hex 32 > {path} && chmod 600 {path}`"
    )]
    KeyFileLength {
        /// The file.
        path: PathBuf,
        /// What it held, in bytes.
        len: usize,
    },
    /// A record was sealed under a key id that is not in the keyring.
    #[error("record is sealed with master key id {kid}, which is not loaded")]
    KeyNotLoaded {
        /// The key id the record names.
        kid: String,
    },
    /// Authentication failed: the record was altered, moved to another user or kind, or the
    /// key with its id is not the one that sealed it.
    #[error("sealed record failed to open (altered, moved, or sealed under another key)")]
    OpenFailed,
    /// The stored form is not `{v:1, kid, nonce, ct}`.
    #[error("sealed record is malformed: {0}")]
    Malformed(&'static str),
    /// The AEAD refused to seal (cannot happen for in-range lengths; kept rather than panic).
    #[error("sealing failed")]
    SealFailed,
}

/// A key id: the first 8 bytes of SHA-256(`sashad/kid/v1` ‖ key), as 16 hex digits. Safe to
/// store and log: it identifies a key without revealing it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A 32-byte master key. Zeroized on drop; not `Clone`, `Serialize`, or printable: `Debug`
/// shows only its [`KeyId`].
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
    kid: KeyId,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey {{ kid: {}, bytes: [redacted] }}", self.kid)
    }
}

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let mut hasher = Sha256::new();
        hasher.update(b"sashad/kid/v1");
        hasher.update(bytes.as_slice());
        let kid = KeyId(hex::encode(&hasher.finalize()[..8]));
        Self { bytes, kid }
    }

    /// A fresh random key from the OS.
    pub fn generate() -> Self {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rand::RngCore::fill_bytes(&mut OsRng, &mut bytes);
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// This key's id.
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// Loads a key file: 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
    ///
    /// Errors: [`CryptoError::KeyFileMode`] when group or others have any access (like ssh, since
    /// a group member is another user), [`CryptoError::KeyFileLength`] for any other content.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let io_err = |source| CryptoError::KeyFileIo {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::KeyFileMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let raw = Zeroizing::new(fs::read(path).map_err(io_err)?);
        let mut bytes = [0u8; MASTER_KEY_LEN];
        if raw.len() == MASTER_KEY_LEN {
            bytes.copy_from_slice(&raw);
        } else {
            let text = raw.trim_ascii();
            if text.len() != 2 * MASTER_KEY_LEN || hex::decode_to_slice(text, &mut bytes).is_err() {
                return Err(CryptoError::KeyFileLength {
                    path: path.to_path_buf(),
                    len: raw.len(),
                });
            }
        }
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// Writes a new random key to `path` as 64 hex digits, mode 0600, refusing to overwrite.
    pub fn generate_file(path: &Path) -> Result<Self, CryptoError> {
        let io_err = |source| CryptoError::KeyFileIo {
            path: path.to_path_buf(),
            source,
        };
        let key = Self::generate();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        let text = Zeroizing::new(hex::encode(key.bytes.as_slice()));
        file.write_all(text.as_bytes()).map_err(io_err)?;
        file.write_all(b"\n").map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(key)
    }

    /// HKDF-SHA256(master, salt, info = user id) → the user's 32-byte key (RFC 5869 §2).
    fn user_key(&self, user_id: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.bytes.as_slice());
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 255 × 32 limit, so expand cannot fail.
        let _ = hk.expand(user_id.as_bytes(), okm.as_mut_slice());
        okm
    }
}

/// A sealed record, as stored: `{v: 1, kid, nonce (base64), ct (base64)}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Format version, 1.
    pub v: u8,
    /// Id of the master key that sealed it.
    pub kid: KeyId,
    /// 24-byte XChaCha20 nonce, base64 without padding.
    pub nonce: String,
    /// Ciphertext with the 16-byte Poly1305 tag, base64 without padding.
    pub ct: String,
}

/// The master keys in use: one active key that seals, and older ones that still open records
/// during a rotation.
#[derive(Debug)]
pub struct Keyring {
    active: MasterKey,
    older: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(active: MasterKey) -> Self {
        Self {
            active,
            older: Vec::new(),
        }
    }

    /// A keyring whose `active` key seals and whose `older` keys only open.
    pub fn with_older(active: MasterKey, older: Vec<MasterKey>) -> Self {
        Self { active, older }
    }

    /// The id of the key that seals.
    pub fn active_kid(&self) -> &KeyId {
        &self.active.kid
    }

    /// Whether a key with this id is loaded.
    pub fn has(&self, kid: &KeyId) -> bool {
        self.key(kid).is_some()
    }

    fn key(&self, kid: &KeyId) -> Option<&MasterKey> {
        std::iter::once(&self.active)
            .chain(&self.older)
            .find(|k| &k.kid == kid)
    }

    /// Seals `plaintext` for `user_id` as a record of `kind` under the active key.
    pub fn seal(&self, user_id: &str, kind: &str, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let key = &self.active;
        let cipher = XChaCha20Poly1305::new(key.user_key(user_id).as_slice().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(&key.kid, user_id, kind);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::SealFailed)?;
        Ok(Sealed {
            v: SEAL_VERSION,
            kid: key.kid.clone(),
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        })
    }

    /// Opens a record sealed for `user_id` as `kind`. The plaintext zeroizes on drop.
    ///
    /// Errors: [`CryptoError::KeyNotLoaded`] naming the record's key id,
    /// [`CryptoError::OpenFailed`] for any tampering or a moved record.
    pub fn open(
        &self,
        user_id: &str,
        kind: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.v != SEAL_VERSION {
            return Err(CryptoError::Malformed("unknown version"));
        }
        let key = self
            .key(&sealed.kid)
            .ok_or_else(|| CryptoError::KeyNotLoaded {
                kid: sealed.kid.to_string(),
            })?;
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| CryptoError::Malformed("nonce"))?;
        if nonce.len() != 24 {
            return Err(CryptoError::Malformed("nonce length"));
        }
        let ct = B64
            .decode(&sealed.ct)
            .map_err(|_| CryptoError::Malformed("ciphertext"))?;
        let cipher = XChaCha20Poly1305::new(key.user_key(user_id).as_slice().into());
        let aad = aad(&key.kid, user_id, kind);
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::OpenFailed)
    }

    /// Re-seals a record under the active key (rotation). A record already under it is
    /// returned unchanged.
    pub fn reseal(
        &self,
        user_id: &str,
        kind: &str,
        sealed: &Sealed,
    ) -> Result<Sealed, CryptoError> {
        if &sealed.kid == self.active_kid() {
            return Ok(sealed.clone());
        }
        let plain = self.open(user_id, kind, sealed)?;
        self.seal(user_id, kind, &plain)
    }
}

fn aad(kid: &KeyId, user_id: &str, kind: &str) -> String {
    format!("sashad/v{SEAL_VERSION}|{kid}|{user_id}|{kind}")
}

/// Where the master key came from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--master-key-file`.
    Flag(PathBuf),
    /// `SASHAD_MASTER_KEY_FILE`.
    Env(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/master-key` (systemd `LoadCredential=`).
    SystemdCredential(PathBuf),
    /// `<data_dir>/master.key`, existing or generated now.
    DataDir {
        /// The file.
        path: PathBuf,
        /// Whether it was generated by this start.
        generated: bool,
    },
}

impl KeySource {
    /// The file the key came from.
    pub fn path(&self) -> &Path {
        match self {
            Self::Flag(p) | Self::Env(p) | Self::SystemdCredential(p) => p,
            Self::DataDir { path, .. } => path,
        }
    }
}

/// The configured key file, in DESIGN §3's order: flag, `SASHAD_MASTER_KEY_FILE`,
/// `$CREDENTIALS_DIRECTORY/master-key` if it exists. `None` means "use `<data>/master.key`".
pub fn configured_key_file(
    flag: Option<&Path>,
    env_file: Option<&str>,
    credentials_directory: Option<&str>,
) -> Option<KeySource> {
    if let Some(p) = flag {
        return Some(KeySource::Flag(p.to_path_buf()));
    }
    if let Some(p) = env_file.filter(|p| !p.is_empty()) {
        return Some(KeySource::Env(PathBuf::from(p)));
    }
    if let Some(dir) = credentials_directory.filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join("master-key");
        if p.exists() {
            return Some(KeySource::SystemdCredential(p));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::new(MasterKey::from_bytes([7u8; 32]))
    }

    #[test]
    fn same_plaintext_gives_different_ciphertexts() {
        let k = keyring();
        let a = k.seal("u1", "credential", b"secret").unwrap();
        let b = k.seal("u1", "credential", b"secret").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ct, b.ct);
        assert_eq!(&*k.open("u1", "credential", &a).unwrap(), b"secret");
        assert_eq!(&*k.open("u1", "credential", &b).unwrap(), b"secret");
    }

    #[test]
    fn a_flipped_byte_fails_to_open() {
        let k = keyring();
        let sealed = k.seal("u1", "credential", b"secret").unwrap();
        let mut ct = B64.decode(&sealed.ct).unwrap();
        for i in 0..ct.len() {
            ct[i] ^= 0x01;
            let bad = Sealed {
                ct: B64.encode(&ct),
                ..sealed.clone()
            };
            assert!(
                matches!(
                    k.open("u1", "credential", &bad),
                    Err(CryptoError::OpenFailed)
                ),
                "byte {i}"
            );
            ct[i] ^= 0x01;
        }
        let mut nonce = B64.decode(&sealed.nonce).unwrap();
        nonce[0] ^= 0x80;
        let bad = Sealed {
            nonce: B64.encode(&nonce),
            ..sealed
        };
        assert!(matches!(
            k.open("u1", "credential", &bad),
            Err(CryptoError::OpenFailed)
        ));
    }

    #[test]
    fn a_record_moved_to_another_user_or_kind_fails_to_open() {
        let k = keyring();
        let sealed = k.seal("u1", "credential", b"secret").unwrap();
        assert!(matches!(
            k.open("u2", "credential", &sealed),
            Err(CryptoError::OpenFailed)
        ));
        assert!(matches!(
            k.open("u1", "oauth_verifier", &sealed),
            Err(CryptoError::OpenFailed)
        ));
    }

    #[test]
    fn an_unknown_key_id_is_named() {
        let k = keyring();
        let mut sealed = k.seal("u1", "credential", b"secret").unwrap();
        sealed.kid = KeyId("00112233aabbccdd".into());
        match k.open("u1", "credential", &sealed) {
            Err(CryptoError::KeyNotLoaded { kid }) => assert_eq!(kid, "00112233aabbccdd"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_relabelled_key_id_fails_even_when_that_key_is_loaded() {
        let old = MasterKey::from_bytes([1u8; 32]);
        let new = MasterKey::from_bytes([2u8; 32]);
        let new_kid = new.kid().clone();
        let k = Keyring::with_older(new, vec![old]);
        let old_only = Keyring::new(MasterKey::from_bytes([1u8; 32]));
        let mut sealed = old_only.seal("u1", "credential", b"secret").unwrap();
        sealed.kid = new_kid;
        assert!(matches!(
            k.open("u1", "credential", &sealed),
            Err(CryptoError::OpenFailed)
        ));
    }

    #[test]
    fn rotation_reseals_under_the_active_key() {
        let old = Keyring::new(MasterKey::from_bytes([1u8; 32]));
        let sealed = old.seal("u1", "credential", b"secret").unwrap();
        let both = Keyring::with_older(
            MasterKey::from_bytes([2u8; 32]),
            vec![MasterKey::from_bytes([1u8; 32])],
        );
        let resealed = both.reseal("u1", "credential", &sealed).unwrap();
        assert_eq!(&resealed.kid, both.active_kid());
        let new_only = Keyring::new(MasterKey::from_bytes([2u8; 32]));
        assert_eq!(
            &*new_only.open("u1", "credential", &resealed).unwrap(),
            b"secret"
        );
        assert!(matches!(
            new_only.open("u1", "credential", &sealed),
            Err(CryptoError::KeyNotLoaded { .. })
        ));
    }

    #[test]
    fn per_user_keys_differ() {
        let k = MasterKey::from_bytes([9u8; 32]);
        assert_ne!(*k.user_key("a"), *k.user_key("b"));
        assert_eq!(*k.user_key("a"), *k.user_key("a"));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = MasterKey::from_bytes([0xAB; 32]);
        let shown = format!(
            "{k:?} {:?}",
            Keyring::new(MasterKey::from_bytes([0xAB; 32]))
        );
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn key_files_are_checked_for_mode_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let generated = MasterKey::generate_file(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(MasterKey::load(&path).unwrap().kid(), generated.kid());
        assert!(MasterKey::generate_file(&path).is_err(), "never overwrites");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let raw = dir.path().join("raw");
        fs::write(&raw, [5u8; 32]).unwrap();
        fs::set_permissions(&raw, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            MasterKey::load(&raw).unwrap().kid(),
            MasterKey::from_bytes([5u8; 32]).kid()
        );

        let short = dir.path().join("short");
        fs::write(&short, b"abcd").unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        let err = MasterKey::load(&short).unwrap_err();
        assert!(err.to_string().contains("openssl rand -hex 32"), "{err}");
    }

    #[test]
    fn key_file_order_is_flag_env_systemd() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("master-key"), b"x").unwrap();
        let creds = dir.path().to_str();
        assert_eq!(
            configured_key_file(Some(Path::new("/f")), Some("/e"), creds),
            Some(KeySource::Flag("/f".into()))
        );
        assert_eq!(
            configured_key_file(None, Some("/e"), creds),
            Some(KeySource::Env("/e".into()))
        );
        assert_eq!(
            configured_key_file(None, None, creds),
            Some(KeySource::SystemdCredential(dir.path().join("master-key")))
        );
        assert_eq!(configured_key_file(None, None, Some("/nonexistent")), None);
    }
}

//! Durable state: users, login tokens, sealed credentials, OAuth sign-ins under way, and
//! sessions, in sled 0.34 (DESIGN §2).
//!
//! Layout: `<data_dir>/store-v1/` holds the sled database, `<data_dir>/sashad.lock` is held
//! (with `flock`) by the process that has it open, so a second daemon or an operator command
//! fails with "database in use" instead of sled's bare lock error. The `meta` tree carries
//! `schema_version`, and [`migrate`] brings older layouts forward step by step.
//!
//! [`Store`] is a concrete handle rather than a trait: there is one backend, and a trait would
//! box every async call for no caller's benefit; tests use the real thing in a temp directory.
//! Its methods are synchronous and every write method flushes before it returns, so a caller
//! that acknowledges after the call acknowledges only durable data. Async code goes through
//! [`Store::run`], which moves the work to tokio's blocking pool so sled never stalls the async
//! threads.

mod migrate;
mod sled;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::credential::CredentialKind;
use crate::crypto::Sealed;

pub use self::migrate::SCHEMA_VERSION;

/// The versioned folder under the data directory that holds the sled database.
pub const STORE_DIR: &str = "store-v1";
/// The lock file under the data directory.
pub const LOCK_FILE: &str = "sashad.lock";

/// Tree names (DESIGN §2).
pub mod trees {
    /// `schema_version`, key ids, health probe.
    pub const META: &str = "meta";
    /// user id → [`super::UserRecord`].
    pub const USERS: &str = "users";
    /// lower-cased username → user id.
    pub const USERS_BY_NAME: &str = "users_by_name";
    /// SHA-256 of a token → [`super::TokenRecord`].
    pub const TOKENS: &str = "tokens";
    /// user id → [`super::CredentialRecord`].
    pub const CREDENTIALS: &str = "credentials";
    /// OAuth `state` → pending sign-in.
    pub const OAUTH_PENDING: &str = "oauth_pending";
    /// session id → [`super::SessionRecord`].
    pub const SESSIONS: &str = "sessions";
    /// Every tree, for checks that span them all.
    pub const ALL: &[&str] = &[
        META,
        USERS,
        USERS_BY_NAME,
        TOKENS,
        CREDENTIALS,
        OAUTH_PENDING,
        SESSIONS,
    ];
}

/// Errors of the store. None of them carries record contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error(
        "database in use: another sashad process{} holds {path}; stop it first, or make the \
         change through the running daemon's admin API",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// The holder's pid, if it wrote one.
        pid: Option<u32>,
    },
    /// A file operation on the data directory failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// sled itself failed (I/O, or a corrupt database file).
    #[error("sled: {0}")]
    Sled(#[from] ::sled::Error),
    /// A record does not parse.
    #[error("corrupt record in tree {tree:?} at key {key}: {reason}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The key, printable (hex for binary keys).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The store was written by a newer sashad.
    #[error("the store's schema version is {found}, newer than this sashad supports ({supported}); run a newer sashad or restore a backup")]
    NewerSchema {
        /// The version found.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("store task was cancelled")]
    Cancelled,
}

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May create, disable and list users, and see all sessions.
    Admin,
    /// A regular user.
    User,
}

/// `users` value (DESIGN §2).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Record version, 1.
    pub v: u32,
    /// Random id (32 hex digits); names the user's folders.
    pub id: String,
    /// As given at registration (case kept; uniqueness is case-insensitive).
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// A disabled user's tokens stop working.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// The user's slot in `isolation.uid_base..+uid_count`: their children run as uid and gid
    /// `uid_base + uid_slot`. Allocated once, at creation (schema 2).
    #[serde(default)]
    pub uid_slot: Option<u32>,
}

impl UserRecord {
    /// The host uid (= gid) of this user's children, given `isolation.uid_base` and
    /// `uid_count`; `None` without a slot, or with one past the range (more users were created
    /// than the range holds, or the operator shrank it): such a user's children must not run
    /// under a uid the operator did not set aside.
    pub fn uid(&self, base: u32, count: u32) -> Option<u32> {
        self.uid_slot
            .filter(|slot| *slot < count)
            .and_then(|slot| base.checked_add(slot))
    }
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Issued by `POST /api/auth/login`.
    Login,
}

/// `tokens` value, keyed by the SHA-256 of the token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Record version, 1.
    pub v: u32,
    /// Owner.
    pub user_id: String,
    /// Kind.
    pub kind: TokenKind,
    /// Free text, e.g. the user agent at login.
    pub label: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// How a stored credential was validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// The upstream accepted it.
    Ok,
    /// The upstream answered 429 or 529: the key is real, but it could not be fully checked.
    RateLimited,
    /// Not checked (a kind with no cheap check).
    Unchecked,
}

/// `credentials` value: what can be shown without opening, plus the sealed credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Record version, 1.
    pub v: u32,
    /// Kind (also inside the sealed plaintext; this copy serves `status` without opening).
    pub kind: CredentialKind,
    /// Safe hint (`sk-ant-…WXYZ`).
    pub hint: String,
    /// Unix seconds of the last successful validation.
    pub validated_at: Option<i64>,
    /// Outcome of that validation.
    pub validation: Validation,
    /// Set when the upstream rejected it later (401 during a turn, `invalid_grant`).
    pub needs_reauth: bool,
    /// Unix seconds when it expires (OAuth access tokens).
    pub expires_at: Option<i64>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// Bumped on every change, so sessions can tell their child runs on an old credential.
    pub generation: u64,
    /// The sealed [`crate::credential::Credential`].
    pub sealed: Sealed,
}

/// `sessions` value (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Record version, 1.
    pub v: u32,
    /// Session id.
    pub id: String,
    /// Owner's user id.
    pub owner: String,
    /// Project id (folder name).
    pub project: String,
    /// `--model`, if chosen.
    pub model: Option<String>,
    /// `--permission-mode`, if chosen.
    pub permission_mode: Option<String>,
    /// The Claude session id from the last `system/init` line, for `--resume`.
    pub claude_session_id: Option<String>,
    /// Last sequence number handed out.
    pub last_seq: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_active: i64,
}

/// Where a started sign-in is (`oauth_pending` tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStatus {
    /// Waiting for the provider's code.
    Pending,
    /// A code arrived and is being exchanged: the state is used up.
    Exchanging,
    /// Tokens are stored.
    Completed,
    /// The exchange or the provider failed (see `reason`).
    Failed,
}

/// `oauth_pending` value, keyed by the OAuth `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthPendingRecord {
    /// Record version, 1.
    pub v: u32,
    /// The user who started it.
    pub user_id: String,
    /// The sealed PKCE `code_verifier` (kind `oauth_verifier`).
    pub verifier: Sealed,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; after this the state is refused.
    pub expires_at: i64,
    /// Progress.
    pub status: PendingStatus,
    /// Why it failed, for a person (no secrets).
    pub reason: Option<String>,
}

/// The outcome of [`Store::create_user`].
#[derive(Debug)]
pub enum CreateUser {
    /// Created (and flushed).
    Created(UserRecord),
    /// The username is taken (case-insensitively).
    Taken,
    /// The registration policy refused it.
    Closed,
    /// Every uid slot (`isolation.uid_count`) has been handed out.
    Full,
}

/// Who is asking to create a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Self-registration that only succeeds while no user exists.
    FirstUserOnly,
    /// Self-registration under the `open` policy.
    Open,
    /// An admin or an operator command: always allowed.
    Admin,
}

/// A handle on the open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: ::sled::Db,
    data_dir: PathBuf,
    // Held for the life of the store: dropping it releases the flock.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, creating the folder 0700.
    ///
    /// Errors: [`StoreError::InUse`] when another process holds it; [`StoreError::Sled`] for a
    /// damaged database (never replaced by an empty one); [`StoreError::NewerSchema`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let io = |context, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io {
                context,
                path,
                source,
            }
        };
        fs::create_dir_all(data_dir).map_err(io("cannot create data directory", data_dir))?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io("cannot set mode 0700 on data directory", data_dir))?;
        let lock_path = data_dir.join(LOCK_FILE);
        let lock = acquire_lock(&lock_path, data_dir)?;
        let db_path = data_dir.join(STORE_DIR);
        let db = ::sled::Config::new().path(&db_path).open()?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                data_dir: data_dir.to_path_buf(),
                _lock: lock,
            }),
        };
        migrate::migrate(&store)?;
        Ok(store)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Runs `f` on tokio's blocking pool, so sled's I/O never stalls an async thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| StoreError::Cancelled)?
    }

    fn tree(&self, name: &'static str) -> Result<::sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

fn acquire_lock(lock_path: &Path, data_dir: &Path) -> Result<File, StoreError> {
    let io = |context| {
        let path = lock_path.to_path_buf();
        move |source| StoreError::Io {
            context,
            path,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(io("cannot open lock file"))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io("cannot write lock file"))?;
            file.rewind().map_err(io("cannot write lock file"))?;
            writeln!(file, "{}", std::process::id()).map_err(io("cannot write lock file"))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Err(StoreError::InUse {
                path: data_dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io("cannot lock")(e)),
    }
}

/// Unix seconds now. The one wall-clock read of the store layer.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A printable form of a key: UTF-8 text when it is, else hex.
fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => hex::encode(key),
    }
}

/// Parses a record, naming tree and key when it does not parse.
fn decode<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        key: printable_key(key),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

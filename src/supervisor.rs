//! Supervision of `claude` children: the [`Registry`] actor (one per daemon) and a [`Session`]
//! actor per chat session, each owning at most one child (DESIGN §1, §6).
//!
//! Sessions run on a few long-lived supervisor arbiters (threads), never on the HTTP workers or
//! the blocking pool: children are spawned from the session's thread, and `PR_SET_PDEATHSIG`
//! is tied to the thread that forks. Sessions of different users never share a lock on the hot
//! path (child line → sockets); each session's events stay in order on its own arbiter.

pub mod child;
pub mod fanout;
pub mod frame;
pub mod registry;
pub mod replay;
pub mod session;

use std::time::Duration;

use serde::Serialize;

pub use self::registry::Registry;
pub use self::session::Session;

use crate::store::StoreError;

/// The states of a session (DESIGN §6), as clients see them in `state` events and views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// No child; the next message starts one (resuming the conversation when there is one).
    Stopped,
    /// A child is being started (credential fetched, process spawned).
    Starting,
    /// The child waits for a message.
    Idle,
    /// A turn is running.
    Busy,
    /// The child is being stopped; messages wait for the next one.
    Stopping,
    /// The child exited unexpectedly; the next message restarts it.
    Exited,
    /// Start failed, or the restart budget is spent.
    Failed,
}

impl SessionState {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Failed => "failed",
        }
    }
}

/// Why a session request was refused. Each maps to one HTTP status and code in
/// [`crate::error::Error`], and to an `error` event for the session's sockets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// No such session, or another user's.
    #[error("no such session")]
    NotFound,
    /// The user has no Claude credential.
    #[error("connect a Claude credential first")]
    NoCredentials,
    /// The stored credential was rejected upstream and must be replaced.
    #[error("your Claude credential was rejected; connect it again")]
    CredentialsRejected,
    /// The stored OAuth sign-in expired or was revoked and could not be refreshed.
    #[error("your Claude sign-in expired ({0}); sign in again")]
    CredentialsExpired(String),
    /// The stored credential is a subscription one and the operator turned those off.
    #[error("Claude account sign-in is turned off on this server; connect an API key")]
    SubscriptionDisabled,
    /// The user has `limits.sessions_per_user` sessions, or `limits.live_children` children
    /// are running and none is idle.
    #[error("{0}")]
    Limit(String, Duration),
    /// Too many messages are waiting.
    #[error("too many messages are waiting; wait for the current turn to finish")]
    QueueFull,
    /// An interrupt with no turn running.
    #[error("no turn is running")]
    NotBusy,
    /// The restart budget is spent.
    #[error("the session's process keeps exiting; it is stopped for now: {0}")]
    Failed(String),
    /// The child could not be started.
    #[error("could not start Claude Code: {0}")]
    SpawnFailed(String),
    /// The credential could not be read (store or key trouble).
    #[error("your stored credential could not be read; ask the operator")]
    CredentialUnreadable,
    /// The session's owner was disabled or deleted by an operator.
    #[error("this account is disabled; ask an admin")]
    AccountDisabled,
    /// The message is not a string or an array of content blocks.
    #[error("{0}")]
    InvalidMessage(String),
    /// The daemon is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The session was stopped (deleted, credential removed, admin) before the message ran.
    #[error("the session was stopped before this message ran")]
    Stopped,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl SessionError {
    /// The stable code of this error, for error bodies and `error` events.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NoCredentials => "no_credentials",
            Self::CredentialsRejected => "credentials_rejected",
            Self::CredentialsExpired(_) => "credentials_expired",
            Self::SubscriptionDisabled => "subscription_login_disabled",
            Self::Limit(..) => "session_limit",
            Self::QueueFull => "queue_full",
            Self::NotBusy => "not_busy",
            Self::Failed(_) => "session_failed",
            Self::SpawnFailed(_) => "spawn_failed",
            Self::CredentialUnreadable => "credential_unreadable",
            Self::AccountDisabled => "account_disabled",
            Self::InvalidMessage(_) => "invalid_message",
            Self::ShuttingDown => "shutting_down",
            Self::Stopped => "stopped",
            Self::Store(_) => "internal",
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Project id.
    pub project: String,
    /// `--model`, if chosen.
    pub model: Option<String>,
    /// `--permission-mode`, if chosen.
    pub permission_mode: Option<String>,
    /// Current state.
    pub state: SessionState,
    /// Last `seq` handed out.
    pub last_seq: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_active: i64,
    /// The child's pid, when one runs.
    pub pid: Option<u32>,
    /// Unix seconds when the running child started.
    pub child_started_at: Option<i64>,
    /// Whether the conversation can be resumed (a Claude session id is known).
    pub resumable: bool,
    /// The owner's user id (for admins' lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

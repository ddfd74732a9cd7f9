//! Settings, layered: built-in defaults, then the config file (`config/sashad.toml`, or
//! `--config PATH`), then `SASHAD__SECTION__KEY` environment variables, then command-line flags.
//!
//! Every struct denies unknown fields, so a typo in the file or in an env name is an error that
//! names the key instead of a setting silently ignored. Durations are humantime strings
//! ("15m", "500ms"). `config/sashad.toml` documents every key; a test keeps it equal to
//! [`Settings::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The prefix of environment variables that set config keys: `SASHAD__SERVER__LISTEN`.
pub const ENV_PREFIX: &str = "SASHAD__";

/// The file read when no `--config` is given, relative to the working directory. It is optional.
pub const DEFAULT_CONFIG_PATH: &str = "config/sashad.toml";

/// The Anthropic API's public origin. Children are only handed `ANTHROPIC_BASE_URL` when the
/// configured URL differs from it (DESIGN §4).
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// Why a configuration could not be used. The message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers did not merge into valid settings (unknown key, wrong type, bad duration).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `--config PATH` names a file that does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

/// The whole configuration tree. Each field is one `[section]` of `config/sashad.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[server]`: the listener and the origins allowed to use cookies.
    pub server: ServerSettings,
    /// `[storage]`: where sled, the generated key and the workspace live.
    pub storage: StorageSettings,
    /// `[auth]`: sashad's own accounts and login tokens.
    pub auth: AuthSettings,
    /// `[anthropic]`: the upstream API used for key checks and handed to children.
    pub anthropic: AnthropicSettings,
    /// `[claude]`: the CLI binary and its extra arguments.
    pub claude: ClaudeSettings,
    /// `[claude_auth]`: which ways of connecting Claude are offered.
    pub claude_auth: ClaudeAuthSettings,
    /// `[oauth]`: the Claude account sign-in provider.
    pub oauth: OAuthSettings,
    /// `[sessions]`: timeouts and buffers of session actors.
    pub sessions: SessionSettings,
    /// `[websocket]`: heartbeat and per-socket queues.
    pub websocket: WebSocketSettings,
    /// `[limits]`: admission limits.
    pub limits: LimitSettings,
    /// `[isolation]`: the sandbox of every child.
    pub isolation: IsolationSettings,
    /// `[metrics]`: access to `/metrics`.
    pub metrics: MetricsSettings,
    /// `[tls]`: the built-in HTTPS listener.
    pub tls: TlsSettings,
    /// `[log]`: level and format of the daemon's logs.
    pub log: LogSettings,
    /// `[ui]`: where the web UI's files come from.
    pub ui: UiSettings,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to bind. Default `127.0.0.1:3001`.
    pub listen: SocketAddr,
    /// The external URL users reach sashad at, if it differs from `listen` (a proxy). An
    /// `https` URL turns on `Secure` cookies. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Origins allowed for cookie-authenticated writes and socket upgrades. Empty means the
    /// listen origin (with both `127.0.0.1` and `localhost` for a loopback listener) and
    /// `public_url`.
    pub allowed_origins: Vec<String>,
    /// Take the client address for rate limits from `X-Forwarded-For` (only behind a proxy that
    /// sets it). Default false: the socket's peer address.
    pub trust_forwarded_for: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            public_url: None,
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Holds the sled store (`store-v1/`), the generated master key and, by default, the
    /// workspace. Created 0700. Default `./data`.
    pub data_dir: PathBuf,
    /// Users' homes and projects. Default `<data_dir>/workspace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_dir: Option<PathBuf>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            workspace_dir: None,
        }
    }
}

impl StorageSettings {
    /// The workspace folder: `workspace_dir`, or `<data_dir>/workspace`.
    pub fn workspace(&self) -> PathBuf {
        self.workspace_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("workspace"))
    }
}

/// Who may create accounts through `POST /api/auth/register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationPolicy {
    /// Anyone may register the first account (which becomes admin); after that only admins.
    FirstUserOnly,
    /// Anyone may register.
    Open,
    /// Only admins create accounts (the first one with `sashad user add --admin`).
    AdminOnly,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Default `first-user-only`.
    pub registration: RegistrationPolicy,
    /// How long a login token lives. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Login attempts allowed per username per minute (also the burst). Default 5.
    pub login_attempts_per_username: u32,
    /// Login attempts allowed per client address per minute (also the burst). Default 20.
    pub login_attempts_per_ip: u32,
    /// Shortest password accepted, in characters. Default 8.
    pub min_password_length: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            registration: RegistrationPolicy::FirstUserOnly,
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            login_attempts_per_username: 5,
            login_attempts_per_ip: 20,
            min_password_length: 8,
        }
    }
}

/// `[anthropic]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicSettings {
    /// The Messages API origin, for key checks and, when not the default, handed to children as
    /// `ANTHROPIC_BASE_URL`. Default `https://api.anthropic.com`.
    pub base_url: String,
    /// Deadline of one key check (`GET /v1/models`). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub validation_timeout: Duration,
}

impl Default for AnthropicSettings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            validation_timeout: Duration::from_secs(5),
        }
    }
}

impl AnthropicSettings {
    /// `base_url` when it is not the public API, else `None`.
    pub fn custom_base_url(&self) -> Option<&str> {
        let url = self.base_url.trim_end_matches('/');
        (url != DEFAULT_ANTHROPIC_BASE_URL).then_some(url)
    }
}

/// `[claude]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaudeSettings {
    /// The CLI to run. Default: the pinned CLI that `make run` installs
    /// (`tools/claude/node_modules/.bin/claude`) when it exists, else `claude` on PATH.
    pub binary: PathBuf,
    /// Appended to every child's argv, e.g. `["--allowedTools", "Bash"]`. Default empty.
    pub extra_args: Vec<String>,
}

/// Where `make run` and `make test` install the pinned CLI, relative to the repository root.
pub const PINNED_CLI_PATH: &str = "tools/claude/node_modules/.bin/claude";

impl Default for ClaudeSettings {
    fn default() -> Self {
        let pinned = Path::new(PINNED_CLI_PATH);
        let binary = if pinned.exists() {
            pinned.to_path_buf()
        } else {
            PathBuf::from("claude")
        };
        Self {
            binary,
            extra_args: Vec::new(),
        }
    }
}

/// `[claude_auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClaudeAuthSettings {
    /// Offer Claude account sign-in (OAuth) and setup tokens. Off by default: Anthropic's terms
    /// say third-party products may not offer claude.ai sign-in unless Anthropic approved them.
    pub subscription_login: bool,
}

/// Where the OAuth provider sends the user after sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectMode {
    /// The provider redirects the browser to `GET /api/claude/auth/oauth/callback`.
    Callback,
    /// The provider shows a `code#state` that the user pastes into
    /// `POST /api/claude/auth/oauth/code` (how Claude Code signs in on remote machines).
    Paste,
}

/// `[oauth]`: the provider of Claude account sign-in, a generic OAuth 2.0 authorization server
/// with PKCE (RFC 6749, RFC 7636). Only used when `claude_auth.subscription_login` is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthSettings {
    /// Authorization endpoint (RFC 6749 §3.1). Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// Token endpoint (RFC 6749 §3.2). Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Client id (RFC 6749 §2.2). Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client secret, for a confidential client (sent with HTTP Basic, RFC 6749 §2.3.1).
    /// Prefer `client_secret_file`. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// A file holding the client secret. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes to request. Default empty.
    pub scopes: Vec<String>,
    /// `callback` or `paste`. Default `callback`.
    pub redirect_mode: RedirectMode,
    /// The redirect URI registered with the provider. In `callback` mode it defaults to
    /// `<public_url or listen origin>/api/claude/auth/oauth/callback`; in `paste` mode it is the
    /// provider's page that shows the code, and must be set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// How long a started sign-in stays valid. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub state_ttl: Duration,
    /// Refresh an access token that expires within this margin, before a child starts and in
    /// the background for users with live children. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub refresh_margin: Duration,
    /// Assumed disagreement between our clock and the provider's, added to the margin.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Deadline of one token request. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            authorize_url: None,
            token_url: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            scopes: Vec::new(),
            redirect_mode: RedirectMode::Callback,
            redirect_uri: None,
            state_ttl: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(300),
            clock_skew: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[sessions]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// A child idle this long is stopped; the next message resumes it. Default `15m`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A busy turn with no output this long is interrupted, then killed. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub turn_timeout: Duration,
    /// Each step of a stop waits this long: after closing stdin, then after SIGTERM, before
    /// SIGKILL to the process group. Default `5s` (the CLI needs a second or more).
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Unexpected exits allowed within `restart_window` before the session is `failed`.
    /// Default 3.
    pub restart_budget: usize,
    /// Window of `restart_budget`. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// Messages a session holds while its child starts or is busy; more get 429. Default 32.
    pub queued_messages: usize,
    /// Largest user message (REST body or WebSocket message), in bytes. Default 4 MiB.
    pub max_message_bytes: usize,
    /// Longest stdout line passed on, in bytes; a longer one becomes an `error` event.
    /// Default 64 MiB.
    pub max_line_bytes: usize,
    /// Bytes of the child's stderr kept for `exited` events. Default 64 KiB.
    pub stderr_tail_bytes: usize,
    /// Events kept per session for replay. Default 5000.
    pub replay_events: usize,
    /// Bytes of events kept per session for replay. Default 8 MiB. Total replay memory is at
    /// most this times the number of sessions.
    pub replay_bytes: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(15 * 60),
            turn_timeout: Duration::from_secs(10 * 60),
            stop_timeout: Duration::from_secs(5),
            restart_budget: 3,
            restart_window: Duration::from_secs(10 * 60),
            queued_messages: 32,
            max_message_bytes: 4 << 20,
            max_line_bytes: 64 << 20,
            stderr_tail_bytes: 64 << 10,
            replay_events: 5_000,
            replay_bytes: 8 << 20,
        }
    }
}

/// `[websocket]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// A ping goes to each socket this often. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A socket silent this long (no pong, no message) is dropped. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub client_timeout: Duration,
    /// Frames queued for one socket before it counts as too slow (closed with 1013).
    /// Default 1024.
    pub queue_frames: usize,
    /// Bytes queued for one socket before it counts as too slow (closed with 1013). A single
    /// frame larger than this still passes when the queue is empty. Default 8 MiB.
    pub queue_bytes: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            queue_frames: 1024,
            queue_bytes: 8 << 20,
        }
    }
}

/// How children are kept apart (`isolation.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// `uid` when the daemon is root, else `userns` when the kernel allows it, else refuse to
    /// start.
    Auto,
    /// bubblewrap, with each user's children under their own host uid (the daemon is root).
    Uid,
    /// bubblewrap in a user namespace; every child runs as the daemon's host uid, mapped to the
    /// user's uid inside (the daemon is not root).
    Userns,
    /// No sandbox: every child runs as the daemon's user and can read what it can. Only for a
    /// single-user machine; logged as a warning at startup and shown in the admin API.
    None,
}

/// `[isolation]`: the sandbox of every child (issue "Isolation between users").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationSettings {
    /// `auto`, `uid`, `userns` or `none`. Default `auto`.
    pub mode: IsolationMode,
    /// The bubblewrap binary. Default `bwrap` (on PATH).
    pub bwrap: PathBuf,
    /// First uid (and gid) of the range users' children run as. Default 1879048192 (0x70000000):
    /// the start of the range systemd's UIDS-GIDS.md lists as unused, above its container
    /// ranges and far above `/etc/subuid` ranges (`useradd`'s `SUB_UID_MAX`, 600100000).
    pub uid_base: u32,
    /// Size of that range: at most this many users. Default 100000.
    pub uid_count: u32,
    /// `RLIMIT_NPROC` of a child: processes its user may have in all. Default 1024.
    pub max_processes: u64,
    /// `RLIMIT_NOFILE` of a child. Default 4096.
    pub max_open_files: u64,
    /// Size cap of each sandbox's private `/tmp`, and of its `/dev/shm` (tmpfs, held in RAM),
    /// in bytes. Default 1 GiB; at least 1 MiB.
    pub tmp_max_bytes: u64,
    /// cgroup v2 `memory.max` per session where a delegated cgroup is available (`"2G"`, bytes
    /// or `max`). Default `max`.
    pub memory_max: String,
    /// cgroup v2 `pids.max` per session. Default 1024.
    pub pids_max: u64,
    /// cgroup v2 `cpu.max` per session (`"<quota> <period>"` in µs, or `max`). Default `max`.
    pub cpu_max: String,
}

impl Default for IsolationSettings {
    fn default() -> Self {
        Self {
            mode: IsolationMode::Auto,
            bwrap: PathBuf::from("bwrap"),
            uid_base: 1_879_048_192,
            uid_count: 100_000,
            max_processes: 1024,
            max_open_files: 4096,
            tmp_max_bytes: 1 << 30,
            memory_max: "max".to_owned(),
            pids_max: 1024,
            cpu_max: "max".to_owned(),
        }
    }
}

/// `[metrics]`: who may read `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics` on this address only (a separate listener, e.g. `127.0.0.1:9101`), and
    /// not on the main one. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// On the main listener, require `Authorization: Bearer <token>`. Unset by default: then
    /// only loopback clients may read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
}

/// `[tls]`: serve HTTPS directly (rustls), for deployments without a proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain. Unset by default (plain HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sessions one user may have. Default 10.
    pub sessions_per_user: usize,
    /// `claude` processes alive at once, across all users. Default 50.
    pub live_children: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            sessions_per_user: 10,
            live_children: 50,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter (`info`, `sashad=debug,actix_web=info`). `RUST_LOG` wins when set.
    /// Default `info`.
    pub level: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `[ui]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// Serve the web UI from this folder instead of the copy embedded in the binary, read on
    /// every request, for working on `static/` without rebuilding. Unset by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,
}

/// Values from command-line flags, the last layer. `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--log-level`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl Settings {
    /// Merges the four layers. `config_path` is `--config`; when `None`,
    /// [`DEFAULT_CONFIG_PATH`] is read if it exists. `env` is the process environment (passed
    /// in so tests can layer without touching the real one).
    ///
    /// Errors: a missing explicit file, an unknown key (named), a value of the wrong type.
    pub fn load(
        config_path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_path {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH))
            }
            None => {}
        }
        figment = figment.merge(env_provider(env));
        let mut overrides = Figment::new();
        if let Some(listen) = flags.listen {
            overrides = overrides.merge(Serialized::default("server.listen", listen));
        }
        if let Some(dir) = &flags.data_dir {
            overrides = overrides.merge(Serialized::default("storage.data_dir", dir));
        }
        if let Some(level) = &flags.log_level {
            overrides = overrides.merge(Serialized::default("log.level", level));
        }
        let settings: Settings = figment
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: URL shapes and non-zero limits.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if !(self.anthropic.base_url.starts_with("http://")
            || self.anthropic.base_url.starts_with("https://"))
        {
            return invalid(format!(
                "anthropic.base_url must be an http(s) URL, got {:?}",
                self.anthropic.base_url
            ));
        }
        if let Some(url) = &self.server.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(format!(
                    "server.public_url must be an http(s) URL, got {url:?}"
                ));
            }
        }
        for origin in &self.server.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return invalid(format!(
                    "server.allowed_origins: {origin:?} is not an origin like https://app.example.com"
                ));
            }
        }
        let s = &self.sessions;
        if s.queued_messages == 0
            || s.max_message_bytes == 0
            || s.replay_events == 0
            || s.replay_bytes == 0
        {
            return invalid(
                "sessions.queued_messages, max_message_bytes and replay_* must be at least 1"
                    .into(),
            );
        }
        if s.max_line_bytes < 1024 || s.stderr_tail_bytes == 0 {
            return invalid(
                "sessions.max_line_bytes must be at least 1024 and stderr_tail_bytes at least 1"
                    .into(),
            );
        }
        let w = &self.websocket;
        if w.queue_frames == 0
            || w.queue_bytes == 0
            || w.ping_interval.is_zero()
            || w.client_timeout <= w.ping_interval
        {
            return invalid(
                "websocket.queue_* must be at least 1 and client_timeout longer than ping_interval"
                    .into(),
            );
        }
        if self.limits.sessions_per_user == 0 || self.limits.live_children == 0 {
            return invalid(
                "limits.sessions_per_user and limits.live_children must be at least 1".into(),
            );
        }
        if self.auth.login_attempts_per_username == 0 || self.auth.login_attempts_per_ip == 0 {
            return invalid("auth.login_attempts_* must be at least 1".into());
        }
        if self.auth.token_ttl < Duration::from_secs(60) {
            return invalid("auth.token_ttl must be at least 1m".into());
        }
        let o = &self.oauth;
        for (key, url) in [
            ("oauth.authorize_url", &o.authorize_url),
            ("oauth.token_url", &o.token_url),
            ("oauth.redirect_uri", &o.redirect_uri),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return invalid(format!("{key} must be an http(s) URL, got {url:?}"));
                }
            }
        }
        if o.client_secret.is_some() && o.client_secret_file.is_some() {
            return invalid("set oauth.client_secret or oauth.client_secret_file, not both".into());
        }
        if let Some(path) = &o.client_secret_file {
            if !path.is_file() {
                return invalid(format!(
                    "oauth.client_secret_file {} is not a readable file",
                    path.display()
                ));
            }
        }
        if o.redirect_mode == RedirectMode::Paste
            && o.redirect_uri.is_none()
            && o.authorize_url.is_some()
        {
            return invalid("oauth.redirect_mode = \"paste\" needs oauth.redirect_uri (the provider's code page)".into());
        }
        let iso = &self.isolation;
        if iso.tmp_max_bytes < 1 << 20 {
            return invalid("isolation.tmp_max_bytes must be at least 1048576 (1 MiB)".into());
        }
        if iso.uid_base < 1000
            || iso.uid_count == 0
            || iso.uid_base.checked_add(iso.uid_count).is_none()
        {
            return invalid(
                "isolation.uid_base must be at least 1000 and uid_base + uid_count fit in 32 bits"
                    .into(),
            );
        }
        if iso.max_processes == 0 || iso.max_open_files < 64 {
            return invalid(
                "isolation.max_processes must be at least 1 and max_open_files at least 64".into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("set both tls.cert_file and tls.key_file, or neither".into());
        }
        for (key, path) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
            ("metrics.bearer_token_file", &self.metrics.bearer_token_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return invalid(format!("{key} {} is not a readable file", path.display()));
                }
            }
        }
        if self.metrics.bearer_token.is_some() && self.metrics.bearer_token_file.is_some() {
            return invalid(
                "set metrics.bearer_token or metrics.bearer_token_file, not both".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(format!(
                "log.level {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        Ok(())
    }

    /// The effective config as TOML, for `sashad config check`. Secrets print as `[redacted]`
    /// (none of the keys so far holds one; [`Secret`] serializes that way by construction).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Origins allowed for cookie-authenticated writes, given the address actually bound.
    pub fn effective_allowed_origins(&self, bound: SocketAddr) -> Vec<String> {
        if !self.server.allowed_origins.is_empty() {
            return self.server.allowed_origins.clone();
        }
        let scheme = if self.tls.enabled() { "https" } else { "http" };
        let mut origins = vec![format!("{scheme}://{bound}")];
        // A wildcard listen address (a container's 0.0.0.0) is no browser's origin; loopback is
        // at least reachable, and public_url names the real one.
        if bound.ip().is_loopback() || bound.ip().is_unspecified() {
            origins.push(format!("{scheme}://localhost:{}", bound.port()));
            origins.push(format!("{scheme}://127.0.0.1:{}", bound.port()));
        }
        if let Some(url) = &self.server.public_url {
            origins.push(origin_of(url));
        }
        origins.dedup();
        origins
    }

    /// Whether cookies need `Secure`: TLS on, or a public URL on https.
    pub fn secure_cookies(&self) -> bool {
        self.tls.enabled()
            || self
                .server
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }
}

/// `scheme://host[:port]` of a URL, without path.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// `SASHAD__SECTION__KEY=value` pairs as a figment provider. Values parse as TOML-ish scalars
/// (figment's rules), so `SASHAD__LIMITS__LIVE_CHILDREN=5` is a number.
fn env_provider(
    env: impl IntoIterator<Item = (String, String)>,
) -> Serialized<figment::value::Dict> {
    let mut root = figment::value::Dict::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let parsed: figment::value::Value = value.parse().unwrap_or_else(|_| value.clone().into());
        insert_path(&mut root, &path, parsed);
    }
    Serialized::defaults(root)
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

/// Turns figment's error into one line that names the key and where it came from.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| {
                    m.source
                        .as_ref()
                        .map(|s| format!(" (from {s})"))
                        .or(Some(format!(" (from {})", m.name)))
                })
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Env names `SASHAD_*` that are neither config keys (`SASHAD__…`) nor known variables: most
/// likely typos, worth a warning at startup.
pub fn unknown_sashad_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    const KNOWN: &[&str] = &["SASHAD_MASTER_KEY_FILE", "SASHAD_CONFIG"];
    env.into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            k.starts_with("SASHAD_") && !k.starts_with(ENV_PREFIX) && !KNOWN.contains(&k.as_str())
        })
        .collect()
}

/// Keys a SIGHUP may change while sessions run: they are read at each use, never baked into a
/// listener, a limiter or an open socket. Everything else needs a restart.
pub const RELOADABLE: &[&str] = &[
    "log.level",
    "limits.sessions_per_user",
    "limits.live_children",
    "sessions.idle_timeout",
    "sessions.turn_timeout",
    "sessions.stop_timeout",
    "sessions.restart_budget",
    "sessions.restart_window",
    "sessions.queued_messages",
    "anthropic.validation_timeout",
    "auth.registration",
];

/// What a reload did.
#[derive(Debug)]
pub struct Reload {
    /// The settings now in force: the old ones with the reloadable keys taken from the new.
    pub settings: Settings,
    /// Keys that changed and were applied.
    pub applied: Vec<String>,
    /// Keys that changed but need a restart (left as they were).
    pub needs_restart: Vec<String>,
}

/// Merges `new` into `current` for the [`RELOADABLE`] keys; lists the other changed keys.
pub fn reload(current: &Settings, new: Settings) -> Reload {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
        }
    }
    let as_pairs = |s: &Settings| {
        let mut out = Vec::new();
        if let Ok(v) = toml::Value::try_from(s) {
            flatten("", &v, &mut out);
        }
        out
    };
    let old: std::collections::BTreeMap<_, _> = as_pairs(current).into_iter().collect();
    let fresh: std::collections::BTreeMap<_, _> = as_pairs(&new).into_iter().collect();
    let mut changed: Vec<String> = old
        .keys()
        .chain(fresh.keys())
        .filter(|k| old.get(*k) != fresh.get(*k))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    let (applied, needs_restart): (Vec<String>, Vec<String>) = changed
        .into_iter()
        .partition(|k| RELOADABLE.contains(&k.as_str()));
    let mut settings = current.clone();
    settings.log.level = new.log.level;
    settings.limits = new.limits;
    let s = &mut settings.sessions;
    s.idle_timeout = new.sessions.idle_timeout;
    s.turn_timeout = new.sessions.turn_timeout;
    s.stop_timeout = new.sessions.stop_timeout;
    s.restart_budget = new.sessions.restart_budget;
    s.restart_window = new.sessions.restart_window;
    s.queued_messages = new.sessions.queued_messages;
    settings.anthropic.validation_timeout = new.anthropic.validation_timeout;
    settings.auth.registration = new.auth.registration;
    Reload {
        settings,
        applied,
        needs_restart,
    }
}

/// Settings that may change at runtime (SIGHUP): readers take a snapshot with [`Self::get`],
/// so one request or one decision sees one consistent version.
#[derive(Debug)]
pub struct LiveSettings(arc_swap::ArcSwap<Settings>);

impl LiveSettings {
    /// Starts with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self(arc_swap::ArcSwap::from_pointee(settings))
    }

    /// The current settings.
    pub fn get(&self) -> std::sync::Arc<Settings> {
        self.0.load_full()
    }

    /// Replaces them.
    pub fn set(&self, settings: Settings) {
        self.0.store(std::sync::Arc::new(settings));
    }
}

/// A secret config value: deserializes from a string, and never prints: both `Debug` and
/// `Serialize` give `[redacted]`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The plaintext, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write_toml(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::default();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:3001");
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(s.storage.workspace(), PathBuf::from("./data/workspace"));
        assert_eq!(s.auth.registration, RegistrationPolicy::FirstUserOnly);
        assert_eq!(s.sessions.idle_timeout, Duration::from_secs(900));
        assert_eq!(s.limits.sessions_per_user, 10);
        assert!(!s.claude_auth.subscription_login);
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let file = write_toml("[server]\nlisten = \"127.0.0.1:4000\"\n[limits]\nlive_children = 7\n[log]\nlevel = \"debug\"\n");
        let e = env(&[
            ("SASHAD__LIMITS__LIVE_CHILDREN", "9"),
            ("SASHAD__SESSIONS__IDLE_TIMEOUT", "2m"),
        ]);
        let flags = FlagOverrides {
            log_level: Some("warn".into()),
            ..Default::default()
        };
        let s = Settings::load(Some(file.path()), e, &flags).unwrap();
        assert_eq!(s.server.listen.port(), 4000, "file beats defaults");
        assert_eq!(s.limits.live_children, 9, "env beats file");
        assert_eq!(s.sessions.idle_timeout, Duration::from_secs(120));
        assert_eq!(s.log.level, "warn", "flags beat env and file");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let file = write_toml("[server]\nlistne = \"127.0.0.1:4000\"\n");
        let err =
            Settings::load(Some(file.path()), env(&[]), &FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let e = env(&[("SASHAD__LIMITS__LIVE_KIDS", "3")]);
        let err =
            Settings::load(Some(write_toml("").path()), e, &FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("live_kids"), "{err}");
    }

    #[test]
    fn unknown_section_is_named() {
        let file = write_toml("[srever]\nlisten = \"x\"\n");
        let err =
            Settings::load(Some(file.path()), env(&[]), &FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("srever"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let e = env(&[("SASHAD__SESSIONS__IDLE_TIMEOUT", "soon")]);
        let err =
            Settings::load(Some(write_toml("").path()), e, &FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Settings::load(
            Some(Path::new("/nonexistent/sashad.toml")),
            env(&[]),
            &FlagOverrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile(_)));
    }

    #[test]
    fn allowed_origins_default_to_the_listener_and_public_url() {
        let mut s = Settings::default();
        s.server.public_url = Some("https://claude.example.com/app".into());
        let origins = s.effective_allowed_origins("127.0.0.1:4444".parse().unwrap());
        assert!(origins.contains(&"http://127.0.0.1:4444".to_string()));
        assert!(origins.contains(&"http://localhost:4444".to_string()));
        assert!(origins.contains(&"https://claude.example.com".to_string()));
        assert!(s.secure_cookies());
    }

    #[test]
    fn secret_never_prints() {
        let secret: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn unknown_sashad_variables_are_reported() {
        let odd = unknown_sashad_env(env(&[
            ("SASHAD_MASTER_KEY_FILE", "x"),
            ("SASHAD__LOG__LEVEL", "debug"),
            ("SASHAD_MASTERKEY", "x"),
        ]));
        assert_eq!(odd, vec!["SASHAD_MASTERKEY".to_string()]);
    }

    #[test]
    fn reload_applies_runtime_keys_and_lists_the_rest() {
        let current = Settings::default();
        let mut new = Settings::default();
        new.log.level = "debug".into();
        new.limits.live_children = 3;
        new.sessions.idle_timeout = Duration::from_secs(60);
        new.server.listen = "127.0.0.1:9999".parse().unwrap();
        new.storage.data_dir = "/elsewhere".into();
        let r = reload(&current, new);
        assert_eq!(
            r.applied,
            ["limits.live_children", "log.level", "sessions.idle_timeout"]
        );
        assert_eq!(r.needs_restart, ["server.listen", "storage.data_dir"]);
        assert_eq!(r.settings.limits.live_children, 3);
        assert_eq!(
            r.settings.server.listen, current.server.listen,
            "not applied"
        );
    }

    /// `config/sashad.toml` is the operator's documentation of every key: it must hold every
    /// default key with its default value, and nothing else.
    #[test]
    fn shipped_config_file_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let text = std::fs::read_to_string(&path).unwrap();
        let shipped: toml::Table = toml::from_str(&text).unwrap();
        let defaults = toml::Table::try_from(Settings::default()).unwrap();
        let mut defaults = defaults;
        // The CLI default depends on whether the pinned CLI is installed; the file documents
        // the installed path.
        for table in [&mut defaults] {
            if let Some(toml::Value::Table(claude)) = table.get_mut("claude") {
                claude.insert("binary".into(), toml::Value::String(PINNED_CLI_PATH.into()));
            }
        }
        assert_eq!(
            shipped, defaults,
            "config/sashad.toml and Settings::default() drifted apart"
        );
        let parsed = Settings::load(Some(&path), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(parsed.server, Settings::default().server);
        // Optional keys are documented as commented-out lines.
        for key in [
            "public_url",
            "workspace_dir",
            "authorize_url",
            "token_url",
            "client_id",
            "client_secret",
            "client_secret_file",
            "redirect_uri",
            "listen",
            "bearer_token",
            "bearer_token_file",
            "cert_file",
            "key_file",
            "static_dir",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("# {key} ="))),
                "config/sashad.toml should document the optional key {key}"
            );
        }
    }
}

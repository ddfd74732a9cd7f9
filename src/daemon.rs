//! Starting and stopping the daemon: open the store, check the keys, serve HTTP on a bound
//! listener, and shut down on SIGTERM or SIGINT with exit status 0.
//!
//! The order matters to operators: nothing listens until the store is open and the keys are
//! verified, so a wrong key or a locked data directory is a startup error, never a daemon that
//! answers and then fails every request.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::accounts::LoginLimiter;
use crate::anthropic::oauth::OAuthProvider;
use crate::config::{FlagOverrides, LiveSettings, Settings};
use crate::credential::CredentialKeeper;
use crate::crypto::{KeySource, Keyring};
use crate::http::{self, AppState};
use crate::keys;
use crate::logging::LogHandle;
use crate::signin::SignIn;
use crate::store::Store;
use crate::supervisor::registry::{LoadSessions, Shutdown};
use crate::supervisor::session::SessionConfig;
use crate::supervisor::Registry;
use crate::workspace::Workspace;
use sd_notify::NotifyState;

/// Where the master key may come from, besides the data directory (DESIGN §3's order).
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// `--master-key-file`.
    pub flag: Option<PathBuf>,
    /// `SASHAD_MASTER_KEY_FILE`.
    pub env_file: Option<String>,
    /// `CREDENTIALS_DIRECTORY` (systemd).
    pub credentials_directory: Option<String>,
}

impl KeyOptions {
    /// Reads the two environment variables, with `flag` from the command line.
    pub fn from_env(flag: Option<PathBuf>) -> Self {
        Self {
            flag,
            env_file: std::env::var("SASHAD_MASTER_KEY_FILE").ok(),
            credentials_directory: std::env::var("CREDENTIALS_DIRECTORY").ok(),
        }
    }
}

/// An open store with verified keys: everything the daemon needs before it listens.
#[derive(Debug)]
pub struct Prepared {
    /// Effective settings.
    pub settings: Settings,
    /// The open store (holding the data directory's lock).
    pub store: Store,
    /// Verified keys.
    pub keyring: Keyring,
    /// Where the active key came from.
    pub key_source: KeySource,
    /// The sandbox of children.
    pub isolation: crate::sandbox::Isolation,
    /// The delegated cgroup, or why there is none.
    pub cgroups: Result<crate::sandbox::Cgroups, String>,
    /// What the startup log said about isolation and limits ([`crate::sandbox::describe`]),
    /// for the admin API.
    pub limits: serde_json::Value,
}

/// Opens the store and loads and verifies the master key.
///
/// Errors name what to fix: a data directory in use, a damaged store, a key file with the wrong
/// mode or length, or a key that is not the store's.
pub fn prepare(mut settings: Settings, key_options: &KeyOptions) -> anyhow::Result<Prepared> {
    absolutize_paths(&mut settings)?;
    let data_dir = settings.storage.data_dir.clone();
    let store = Store::open(&data_dir)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let (keyring, key_source) = keys::load_and_verify(
        &store,
        key_options.flag.as_deref(),
        key_options.env_file.as_deref(),
        key_options.credentials_directory.as_deref(),
    )?;
    let isolation = crate::sandbox::probe(&settings.isolation)?;
    let cgroups = if matches!(isolation, crate::sandbox::Isolation::None) {
        Err("no sandbox".to_owned())
    } else {
        crate::sandbox::Cgroups::detect()
    };
    let limits = crate::sandbox::describe(&isolation, &cgroups, &settings.isolation);
    if matches!(isolation, crate::sandbox::Isolation::None) {
        tracing::warn!(
            limits = %limits,
            "isolation.mode = \"none\": children run WITHOUT a sandbox, as the daemon's user; any user's \
             Claude can read other users' files and credentials. Use this only on a single-user machine"
        );
    } else {
        tracing::info!(limits = %limits, "children run sandboxed (isolation {})", isolation.name());
    }
    if matches!(isolation, crate::sandbox::Isolation::Uid { .. }) {
        for overlap in crate::sandbox::id_range_overlaps(&settings.isolation, Path::new("/etc")) {
            tracing::warn!(
                "{overlap}: users' children would share these ids; move isolation.uid_base"
            );
        }
    }
    Ok(Prepared {
        settings,
        store,
        keyring,
        key_source,
        isolation,
        cgroups,
        limits,
    })
}

/// Makes the paths children use absolute. A child runs in its project folder, so a relative
/// HOME or CLI path (`./data`, `tools/claude/…`, the defaults of `make run`) would resolve
/// against the project, not against where the daemon started.
fn absolutize_paths(settings: &mut Settings) -> anyhow::Result<()> {
    let absolute = |p: &std::path::Path| {
        std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
    };
    settings.storage.data_dir = absolute(&settings.storage.data_dir)?;
    if let Some(dir) = &settings.storage.workspace_dir {
        settings.storage.workspace_dir = Some(absolute(dir)?);
    }
    // A bare name (`claude`) is looked up on PATH; only a path with a slash is relative.
    if settings.claude.binary.components().count() > 1 && settings.claude.binary.is_relative() {
        settings.claude.binary = absolute(&settings.claude.binary)?;
    }
    Ok(())
}

/// Binds the configured address, with an error that says what to change.
pub fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    let addr = settings.server.listen;
    TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr}; free the port or set server.listen (--listen, SASHAD__SERVER__LISTEN)")
    })
}

/// What a SIGHUP reloads from: the same config file and flags as at startup.
#[derive(Debug, Clone, Default)]
pub struct ReloadSource {
    /// `--config`.
    pub config_path: Option<PathBuf>,
    /// The command-line flags, applied again on top.
    pub flags: FlagOverrides,
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully. Returns `Ok` on a clean stop.
///
/// systemd (`Type=notify`) hears `READY=1` once the listener serves, `STOPPING=1` when a stop
/// begins, `RELOADING=1`/`READY=1` around a SIGHUP, and `WATCHDOG=1` at half of
/// `WATCHDOG_USEC` when the unit sets a watchdog (sd_notify(3)).
pub async fn run(
    prepared: Prepared,
    listener: TcpListener,
    log: Option<LogHandle>,
    reload: ReloadSource,
) -> anyhow::Result<()> {
    let Prepared {
        settings,
        store,
        keyring,
        key_source,
        isolation,
        cgroups,
        limits: isolation_summary,
    } = prepared;
    let local_addr = listener.local_addr().context("listener has no address")?;
    let tls = settings.tls.enabled();
    let tls_config = if tls {
        Some(tls_config(&settings)?)
    } else {
        None
    };
    let metrics_listener = match settings.metrics.listen {
        Some(addr) => Some(TcpListener::bind(addr).with_context(|| {
            format!("cannot listen on {addr} for metrics; free the port or change metrics.listen")
        })?),
        None => None,
    };
    let metrics_token = metrics_token(&settings)?;
    let live = Arc::new(LiveSettings::new(settings.clone()));
    let keyring = Arc::new(keyring);
    let workspace = Workspace::new(settings.storage.workspace());
    let http = crate::anthropic::http_client().context("cannot build the HTTP client")?;
    let scheme = if tls { "https" } else { "http" };
    let public_base = settings
        .server
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
    let oauth = OAuthProvider::from_settings(
        &settings.oauth,
        &format!("{public_base}/api/claude/auth/oauth/callback"),
        http.clone(),
    )
    .context("invalid [oauth] settings")?
    .map(Arc::new);
    if settings.claude_auth.subscription_login && oauth.is_none() {
        tracing::warn!(
            "claude_auth.subscription_login is on but [oauth] is not configured; only setup tokens are offered"
        );
    }
    let keeper = Arc::new(CredentialKeeper::new(
        store.clone(),
        keyring.clone(),
        oauth,
        settings.oauth.refresh_margin + settings.oauth.clock_skew,
    ));
    let signin = SignIn::new(keeper.clone(), settings.oauth.state_ttl);
    let session_config = Arc::new(SessionConfig {
        settings: live.clone(),
        path: std::env::var("PATH").ok(),
        lang: std::env::var("LANG").ok(),
        isolation,
        cgroups: cgroups.ok(),
    });
    // Children are spawned from these threads, which live as long as the daemon: the parent
    // death signal is tied to the thread that forks (prctl(2)).
    let arbiters: Vec<Arbiter> = (0..supervisor_threads()).map(|_| Arbiter::new()).collect();
    let registry = Registry::new(
        store.clone(),
        keeper.clone(),
        workspace.clone(),
        session_config,
        arbiters.iter().map(Arbiter::handle).collect(),
    )
    .start();
    let stored = load_sessions(&store).await?;
    let loaded = registry
        .send(LoadSessions { sessions: stored })
        .await
        .context("registry is gone")?;
    let state = web::Data::new(AppState {
        allowed_origins: settings.effective_allowed_origins(local_addr),
        secure_cookies: settings.secure_cookies(),
        login_limiter: LoginLimiter::new(
            settings.auth.login_attempts_per_username,
            settings.auth.login_attempts_per_ip,
        ),
        http,
        keyring,
        store: store.clone(),
        settings: live.clone(),
        local_addr,
        registry: registry.clone(),
        workspace,
        keeper,
        signin,
        metrics_token,
        started: std::time::Instant::now(),
        isolation: isolation_summary,
    });
    let app_state = state.clone();
    let metrics_on_main = metrics_listener.is_none();
    let max_message_bytes = settings.sessions.max_message_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(from_fn(http::observe))
            .configure(|cfg| http::configure(cfg, max_message_bytes, metrics_on_main))
    });
    let server = match tls_config {
        Some(config) => server.listen_rustls_0_23(listener, config),
        None => server.listen(listener),
    }
    .context("cannot serve on the listener")?
    .disable_signals()
    .shutdown_timeout(10)
    .run();
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let metrics_addr = listener
                .local_addr()
                .context("metrics listener has no address")?;
            let server = HttpServer::new(|| App::new().configure(http::configure_metrics_only))
                .workers(1)
                .listen(listener)
                .context("cannot serve metrics")?
                .disable_signals()
                .shutdown_timeout(2)
                .run();
            tracing::info!(address = %metrics_addr, "metrics on http://{metrics_addr}/metrics");
            Some(server)
        }
        None => None,
    };
    tracing::info!(
        address = %local_addr,
        data_dir = %settings.storage.data_dir.display(),
        key_id = %state.keyring.active_kid(),
        key_source = %key_source.path().display(),
        sessions = loaded,
        "listening on {scheme}://{local_addr}"
    );
    notify(&[NotifyState::Ready]);
    let watchdog = start_watchdog();
    let handle = server.handle();
    let metrics_handle = metrics_server.as_ref().map(|s| s.handle());
    let housekeeping = actix_rt::spawn(housekeeping(state.clone()));
    let reloader = actix_rt::spawn(reload_on_sighup(live, log, reload));
    actix_rt::spawn(async move {
        let signal = wait_for_stop_signal().await;
        notify(&[NotifyState::Stopping]);
        tracing::info!(signal, "stopping: no new sessions; stopping every child");
        match registry.send(Shutdown).await {
            Ok(saved) => tracing::info!(sessions = saved, "every session stopped"),
            Err(e) => tracing::error!(error = %e, "registry did not answer the shutdown"),
        }
        if let Some(metrics) = metrics_handle {
            metrics.stop(true).await;
        }
        handle.stop(true).await;
    });
    if let Some(metrics_server) = metrics_server {
        actix_rt::spawn(metrics_server);
    }
    server.await.context("HTTP server failed")?;
    housekeeping.abort();
    reloader.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    for arbiter in arbiters {
        arbiter.stop();
        let _ = arbiter.join();
    }
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// Sends a state to systemd when `NOTIFY_SOCKET` is set (a no-op otherwise).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pings the systemd watchdog at half its interval, when the unit set one.
fn start_watchdog() -> Option<actix_rt::task::JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let every = Duration::from_micros(usec / 2);
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog on"
    );
    Some(actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    }))
}

/// The rustls server config from `tls.cert_file` and `tls.key_file`.
fn tls_config(settings: &Settings) -> anyhow::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert_file), Some(key_file)) = (&settings.tls.cert_file, &settings.tls.key_file)
    else {
        anyhow::bail!("tls.cert_file and tls.key_file are both needed");
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "cannot read the certificates in tls.cert_file {}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls.cert_file {} holds no PEM certificate",
            cert_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "cannot read a private key in tls.key_file {}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls.cert_file and tls.key_file do not make a usable certificate")
}

/// The metrics bearer token, from `metrics.bearer_token` or its file.
fn metrics_token(settings: &Settings) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    let metrics = &settings.metrics;
    if let Some(token) = &metrics.bearer_token {
        return Ok(Some(zeroize::Zeroizing::new(token.expose().to_owned())));
    }
    match &metrics.bearer_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read metrics.bearer_token_file {}", path.display())
            })?;
            Ok(Some(zeroize::Zeroizing::new(text.trim().to_owned())))
        }
        None => Ok(None),
    }
}

/// On SIGHUP, reloads the config file and environment (with the startup flags on top) and
/// applies what can change safely at runtime (see [`crate::config::reload`]); the rest is
/// logged as needing a restart.
async fn reload_on_sighup(live: Arc<LiveSettings>, log: Option<LogHandle>, source: ReloadSource) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reloads are off");
        return;
    };
    while hup.recv().await.is_some() {
        notify(&[NotifyState::Reloading]);
        match Settings::load(
            source.config_path.as_deref(),
            std::env::vars(),
            &source.flags,
        ) {
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the new config is invalid; nothing changed")
            }
            Ok(new) => {
                let current = live.get();
                let outcome = crate::config::reload(&current, new);
                if let (Some(log), true) = (&log, outcome.applied.iter().any(|k| k == "log.level"))
                {
                    if let Err(e) = log.set_level(&outcome.settings.log.level) {
                        tracing::error!(error = %e, "SIGHUP: cannot change the log level");
                    }
                }
                live.set(outcome.settings);
                tracing::info!(
                    applied = ?outcome.applied,
                    needs_restart = ?outcome.needs_restart,
                    "SIGHUP: configuration reloaded"
                );
            }
        }
        notify(&[NotifyState::Ready]);
    }
}

/// Supervisor threads: one per core, at least two, so sessions seldom share a thread.
fn supervisor_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// Every stored session with its owner's username. Sessions of users that no longer exist are
/// skipped with a warning.
async fn load_sessions(
    store: &Store,
) -> anyhow::Result<Vec<(crate::store::SessionRecord, String)>> {
    let loaded = store
        .run(|s| {
            let mut out = Vec::new();
            for record in s.list_sessions()? {
                match s.user(&record.owner)? {
                    Some(user) => out.push((record, user.username)),
                    None => tracing::warn!(session_id = %record.id, "session of a missing user; skipped"),
                }
            }
            Ok(out)
        })
        .await?;
    Ok(loaded)
}

/// Waits for SIGTERM or SIGINT and names it.
async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Periodic upkeep: forget idle rate-limit keys, drop expired login tokens, and drop sign-ins
/// that expired a day ago (kept that long so their status still reads `expired`).
async fn housekeeping(state: web::Data<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut minutes = 0u64;
    loop {
        tick.tick().await;
        state.login_limiter.retain_recent();
        if minutes.is_multiple_of(60) {
            match state.store.run(|s| s.purge_expired_tokens()).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "purged expired tokens"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot purge expired tokens"),
            }
            if let Err(e) = state.store.run(|s| s.purge_pending(24 * 3600)).await {
                tracing::warn!(error = %e, "cannot purge expired sign-ins");
            }
        }
        minutes += 1;
    }
}

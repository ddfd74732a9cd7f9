//! Starting and stopping the daemon: open the store, check the keys, serve HTTP on a bound
//! listener, and shut down on SIGTERM or SIGINT with exit status 0.
//!
//! The order matters to operators: nothing listens until the store is open and the keys are
//! verified, so a wrong key or a locked data directory is a startup error, never a daemon that
//! answers and then fails every request.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::accounts::LoginLimiter;
use crate::config::Settings;
use crate::crypto::{KeySource, Keyring};
use crate::http::{self, AppState};
use crate::keys;
use crate::logging::LogHandle;
use crate::store::Store;
use crate::supervisor::registry::{LoadSessions, Shutdown};
use crate::supervisor::session::SessionConfig;
use crate::supervisor::Registry;
use crate::workspace::Workspace;

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
}

/// Opens the store and loads and verifies the master key.
///
/// Errors name what to fix: a data directory in use, a damaged store, a key file with the wrong
/// mode or length, or a key that is not the store's.
pub fn prepare(settings: Settings, key_options: &KeyOptions) -> anyhow::Result<Prepared> {
    let data_dir = settings.storage.data_dir.clone();
    let store = Store::open(&data_dir)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let (keyring, key_source) = keys::load_and_verify(
        &store,
        key_options.flag.as_deref(),
        key_options.env_file.as_deref(),
        key_options.credentials_directory.as_deref(),
    )?;
    Ok(Prepared {
        settings,
        store,
        keyring,
        key_source,
    })
}

/// Binds the configured address, with an error that says what to change.
pub fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    let addr = settings.server.listen;
    TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr}; free the port or set server.listen (--listen, SASHAD__SERVER__LISTEN)")
    })
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully. Returns `Ok` on a clean stop.
pub async fn run(
    prepared: Prepared,
    listener: TcpListener,
    _log: Option<LogHandle>,
) -> anyhow::Result<()> {
    let Prepared {
        settings,
        store,
        keyring,
        key_source,
    } = prepared;
    let local_addr = listener.local_addr().context("listener has no address")?;
    let settings = Arc::new(settings);
    let keyring = Arc::new(keyring);
    let workspace = Workspace::new(settings.storage.workspace());
    let session_config = Arc::new(SessionConfig {
        settings: settings.clone(),
        path: std::env::var("PATH").ok(),
        lang: std::env::var("LANG").ok(),
    });
    // Children are spawned from these threads, which live as long as the daemon: the parent
    // death signal is tied to the thread that forks (prctl(2)).
    let arbiters: Vec<Arbiter> = (0..supervisor_threads()).map(|_| Arbiter::new()).collect();
    let registry = Registry::new(
        store.clone(),
        keyring.clone(),
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
        http: crate::anthropic::http_client().context("cannot build the HTTP client")?,
        keyring,
        store: store.clone(),
        settings: settings.clone(),
        local_addr,
        registry: registry.clone(),
        workspace,
    });
    let app_state = state.clone();
    let app_settings = settings.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(from_fn(http::observe))
            .configure(|cfg| http::configure(cfg, &app_settings))
    })
    .listen(listener)
    .context("cannot serve on the listener")?
    .disable_signals()
    .shutdown_timeout(10)
    .run();
    tracing::info!(
        address = %local_addr,
        data_dir = %settings.storage.data_dir.display(),
        key_id = %state.keyring.active_kid(),
        key_source = %key_source.path().display(),
        sessions = loaded,
        "listening on http://{local_addr}"
    );
    let handle = server.handle();
    let housekeeping = actix_rt::spawn(housekeeping(state.clone()));
    actix_rt::spawn(async move {
        let signal = wait_for_stop_signal().await;
        tracing::info!(signal, "stopping: no new sessions; stopping every child");
        match registry.send(Shutdown).await {
            Ok(saved) => tracing::info!(sessions = saved, "every session stopped"),
            Err(e) => tracing::error!(error = %e, "registry did not answer the shutdown"),
        }
        handle.stop(true).await;
    });
    server.await.context("HTTP server failed")?;
    housekeeping.abort();
    for arbiter in arbiters {
        arbiter.stop();
        let _ = arbiter.join();
    }
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
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

/// Periodic upkeep: forget idle rate-limit keys, drop expired tokens.
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
        }
        minutes += 1;
    }
}

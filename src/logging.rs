//! Logging with `tracing`: text or JSON lines on stderr, the level from `RUST_LOG` or
//! `log.level`, changeable at runtime through the returned handle (SIGHUP).
//!
//! Nothing secret is ever given to a log macro; credential and key types print `[redacted]`
//! even if one slipped into a `?` field.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogFormat, LogSettings};

/// Changes the active filter at runtime.
#[derive(Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogHandle")
    }
}

impl LogHandle {
    /// Replaces the filter with `level` (a `tracing` filter string).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// The filter in force at startup: `RUST_LOG` when set, else `log.level`.
fn initial_filter(settings: &LogSettings) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"))
        })
}

/// Installs the global subscriber. Call once, first thing.
pub fn init(settings: &LogSettings) -> LogHandle {
    let (filter, handle) = reload::Layer::new(initial_filter(settings));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("sashad: logging was already initialised: {e}");
    }
    LogHandle(handle)
}

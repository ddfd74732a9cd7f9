//! Prometheus metrics, with the `prometheus` crate (its text encoder writes the exposition
//! format). One process-wide registry: sessions, sockets and handlers update counters where the
//! thing happens, and `GET /metrics` renders them.
//!
//! Labels are closed sets (outcomes, causes, route patterns, status codes), never user input, so
//! cardinality stays bounded. Every label set of an outcome or cause starts at 0, so a dashboard
//! sees a series before its first event.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Spawn outcomes.
pub const SPAWN_OUTCOMES: &[&str] = &["ok", "error"];
/// Why a child ended: on request (idle, credential restart, delete, shutdown, admin), killed
/// after a stalled turn, or on its own (crash).
pub const EXIT_CAUSES: &[&str] = &["requested", "idle", "turn_timeout", "crash"];
/// API-key validation outcomes.
pub const VALIDATION_OUTCOMES: &[&str] = &[
    "ok",
    "rate_limited",
    "invalid",
    "forbidden",
    "unavailable",
    "malformed",
];
/// OAuth refresh outcomes.
pub const REFRESH_OUTCOMES: &[&str] = &["ok", "invalid_grant", "failed"];
/// Sign-in steps.
pub const SIGNIN_EVENTS: &[&str] = &["started", "completed", "failed"];

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    /// Sessions known to the registry.
    pub sessions: IntGauge,
    /// `claude` processes alive.
    pub live_children: IntGauge,
    /// Child spawns by outcome.
    pub child_spawns: IntCounterVec,
    /// Seconds from spawn to the child's first `system/init` line.
    pub spawn_to_init: Histogram,
    /// Child exits by cause.
    pub child_exits: IntCounterVec,
    /// WebSockets open.
    pub sockets_open: IntGauge,
    /// Frames sent to sockets.
    pub events_relayed: IntCounter,
    /// Bytes of frames sent to sockets.
    pub bytes_relayed: IntCounter,
    /// Sockets closed with 1013 for not keeping up.
    pub sockets_closed_slow: IntCounter,
    /// API-key validations by outcome.
    pub credential_validations: IntCounterVec,
    /// OAuth refreshes by outcome.
    pub oauth_refreshes: IntCounterVec,
    /// OAuth sign-ins by step.
    pub oauth_signins: IntCounterVec,
    /// HTTP requests by route pattern and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route pattern, seconds.
    pub http_latency: HistogramVec,
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    for value in values {
        vec.with_label_values(&[value]);
    }
    register(registry, vec)
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are constants below and unique; a failure is a programming error caught by the
    // unit test, so startup may stop on it.
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering a metric: {e}"));
    metric
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new_custom(Some("sashad".into()), None).unwrap_or_default();
        let gauge = |name: &str, help: &str| {
            register(
                &r,
                IntGauge::new(name, help).unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let counter = |name: &str, help: &str| {
            register(
                &r,
                IntCounter::new(name, help).unwrap_or_else(|e| panic!("{e}")),
            )
        };
        Self {
            sessions: gauge("sessions", "Sessions known to the registry."),
            live_children: gauge("live_children", "claude processes alive."),
            child_spawns: counter_vec(
                &r,
                "child_spawns_total",
                "Child spawns by outcome.",
                "outcome",
                SPAWN_OUTCOMES,
            ),
            spawn_to_init: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "child_spawn_to_init_seconds",
                        "Seconds from spawn to the first system/init line.",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            child_exits: counter_vec(
                &r,
                "child_exits_total",
                "Child exits by cause.",
                "cause",
                EXIT_CAUSES,
            ),
            sockets_open: gauge("sockets_open", "WebSockets open."),
            events_relayed: counter("events_relayed_total", "Frames sent to sockets."),
            bytes_relayed: counter("bytes_relayed_total", "Bytes of frames sent to sockets."),
            sockets_closed_slow: counter(
                "sockets_closed_slow_total",
                "Sockets closed with 1013 for not keeping up.",
            ),
            credential_validations: counter_vec(
                &r,
                "credential_validations_total",
                "API-key validations by outcome.",
                "outcome",
                VALIDATION_OUTCOMES,
            ),
            oauth_refreshes: counter_vec(
                &r,
                "oauth_refreshes_total",
                "OAuth refreshes by outcome.",
                "outcome",
                REFRESH_OUTCOMES,
            ),
            oauth_signins: counter_vec(
                &r,
                "oauth_signins_total",
                "OAuth sign-ins by step.",
                "event",
                SIGNIN_EVENTS,
            ),
            http_requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "http_requests_total",
                        "HTTP requests by route pattern and status.",
                    ),
                    &["route", "status"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            http_latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "HTTP request latency by route pattern.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                    &["route"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            registry: r,
        }
    }

    /// The exposition text (Prometheus text format 0.0.4).
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Shorthand for [`METRICS`].
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_outcomes_start_at_zero() {
        let text = metrics().render();
        for line in [
            "sashad_child_spawns_total{outcome=\"error\"} 0",
            "sashad_child_exits_total{cause=\"crash\"} 0",
            "sashad_credential_validations_total{outcome=\"unavailable\"} 0",
            "sashad_oauth_refreshes_total{outcome=\"invalid_grant\"} 0",
            "sashad_sockets_open 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}

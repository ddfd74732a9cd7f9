//! The HTTP layer: routes, shared state, authentication, and the middleware every request
//! passes through (request id, access log without query strings, security headers).

mod accounts;
mod admin;
mod assets;
mod auth;
mod claude_auth;
mod health;
mod metrics;
mod sessions;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use tracing::Instrument;

use crate::accounts::LoginLimiter;
use crate::crypto::Keyring;
use crate::error::json_error;
use crate::store::Store;
use crate::supervisor::Registry;
use crate::workspace::Workspace;

pub use self::auth::{Authed, SESSION_COOKIE};

/// Largest JSON body accepted by the API, in bytes.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// The Content-Security-Policy of every response: no inline script, no framing (issue "Web
/// UI" §1).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What every handler shares. Built once at startup.
pub struct AppState {
    /// The effective settings (reloadable: read a snapshot with `get()`).
    pub settings: Arc<crate::config::LiveSettings>,
    /// The store.
    pub store: Store,
    /// The master keys.
    pub keyring: Arc<Keyring>,
    /// Upstream HTTP client.
    pub http: reqwest::Client,
    /// Login rate limits.
    pub login_limiter: LoginLimiter,
    /// Origins allowed for cookie-authenticated writes.
    pub allowed_origins: Vec<String>,
    /// Whether cookies carry `Secure`.
    pub secure_cookies: bool,
    /// The bound address.
    pub local_addr: SocketAddr,
    /// The session registry.
    pub registry: actix::Addr<Registry>,
    /// Users' homes and projects.
    pub workspace: Workspace,
    /// Seals, stores, opens and refreshes credentials.
    pub keeper: std::sync::Arc<crate::credential::CredentialKeeper>,
    /// Claude account sign-in under way.
    pub signin: crate::signin::SignIn,
    /// `metrics.bearer_token`, read once at startup.
    pub metrics_token: Option<zeroize::Zeroizing<String>>,
    /// When the daemon started, for uptime.
    pub started: std::time::Instant,
    /// The sandbox and limits in force, for the admin API.
    pub isolation: serde_json::Value,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Registers every route on an actix-web `App`.
///
/// `max_message_bytes` is `sessions.max_message_bytes`; `metrics_on_main` puts `/metrics` on
/// this listener (when `metrics.listen` does not give it its own).
pub fn configure(cfg: &mut web::ServiceConfig, max_message_bytes: usize, metrics_on_main: bool) {
    if metrics_on_main {
        cfg.configure(metrics::configure);
    } else {
        cfg.configure(metrics::configure_elsewhere);
    }
    cfg.app_data(json_config(MAX_JSON_BODY))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            let message = err.to_string();
            actix_web::error::InternalError::from_response(
                err,
                json_error(StatusCode::BAD_REQUEST, "invalid_path", &message),
            )
            .into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            let message = err.to_string();
            actix_web::error::InternalError::from_response(
                err,
                json_error(StatusCode::BAD_REQUEST, "invalid_query", &message),
            )
            .into()
        }))
        .configure(health::configure)
        .configure(accounts::configure)
        .configure(claude_auth::configure)
        .configure(admin::configure)
        .configure(|cfg| sessions::configure(cfg, max_message_bytes))
        .configure(ws::configure)
        .default_service(web::to(assets::serve));
}

/// The routes of the metrics-only listener (`metrics.listen`).
pub fn configure_metrics_only(cfg: &mut web::ServiceConfig) {
    metrics::configure_open(cfg);
}

/// JSON body extraction with a size limit (bytes) and typed JSON errors.
pub(crate) fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _| {
            use actix_web::error::JsonPayloadError as E;
            let response = match &err {
                E::Overflow { .. } | E::OverflowKnownLength { .. } => json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    &format!("the request body is over {limit} bytes"),
                ),
                E::ContentType => json_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as application/json",
                ),
                other => json_error(StatusCode::BAD_REQUEST, "invalid_json", &other.to_string()),
            };
            actix_web::error::InternalError::from_response(err, response).into()
        })
}

pub(crate) async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

/// Middleware: gives each request an id (`x-request-id`, and a tracing span field), logs one
/// access line (method, path without the query string, status, latency), and sets the security
/// headers. The query string is never logged: it could carry an OAuth `code` or `state`.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = hex::encode(rand::random::<[u8; 8]>());
    let method = req.method().clone();
    // An OAuth `state` in a path is a one-time secret: it is logged as its route pattern.
    let path = match req.path() {
        p if p.starts_with(OAUTH_STATUS_PREFIX) => format!("{OAUTH_STATUS_PREFIX}{{state}}"),
        p => p.to_owned(),
    };
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            // The route pattern, not the path: ids in paths would explode the label set.
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let m = crate::metrics::metrics();
            m.http_requests
                .with_label_values(&[route.as_str(), status_label(status)])
                .inc();
            m.http_latency
                .with_label_values(&[route.as_str()])
                .observe(started.elapsed().as_secs_f64());
            let headers = response.headers_mut();
            for (name, value) in security_headers() {
                headers.insert(name, value);
            }
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                headers.insert(HeaderName::from_static("x-request-id"), value);
            }
            tracing::info!(
                %method, path = %path, status, latency_ms = started.elapsed().as_millis() as u64,
                "http request"
            );
            Ok(response)
        }
        Err(e) => {
            tracing::info!(%method, path = %path, error = %e, "http request failed");
            Err(e)
        }
    }
}

/// Status codes as static labels (an unusual one is counted under its class).
fn status_label(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

fn security_headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// Paths under this prefix end in an OAuth `state`, which the access log never shows.
const OAUTH_STATUS_PREFIX: &str = "/api/claude/auth/oauth/status/";

/// The id of the request being served, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

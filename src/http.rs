//! The HTTP layer: routes, shared state, authentication, and the middleware every request
//! passes through (request id, access log without query strings, security headers).

mod accounts;
mod assets;
mod auth;
mod claude_auth;
mod health;
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
use crate::config::Settings;
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
    /// The effective settings.
    pub settings: Arc<Settings>,
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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
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
        .configure(|cfg| sessions::configure(cfg, settings.sessions.max_message_bytes))
        .configure(ws::configure)
        .default_service(web::to(assets::serve));
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

async fn not_found() -> HttpResponse {
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
    let path = req.path().to_owned();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
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

/// The id of the request being served, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

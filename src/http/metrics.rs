//! `GET /metrics`: Prometheus text exposition of [`crate::metrics`].
//!
//! Access (`[metrics]`): on its own listener (`metrics.listen`) it answers anyone who can reach
//! that address; on the main listener it needs `Authorization: Bearer <metrics.bearer_token>`
//! when a token is set, and otherwise answers loopback clients only.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::Error;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(guarded));
}

/// On the main listener when metrics have their own: a plain 404, so the path does not fall
/// through to the web UI.
pub fn configure_elsewhere(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(super::not_found));
}

/// The route for the metrics-only listener.
pub fn configure_open(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(open));
}

fn render() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(crate::metrics::metrics().render())
}

async fn open() -> HttpResponse {
    render()
}

async fn guarded(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    match &state.metrics_token {
        Some(token) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                return Err(Error::Unauthenticated {
                    code: "unauthenticated",
                    message: "send Authorization: Bearer <metrics.bearer_token>".into(),
                });
            }
        }
        None => {
            let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
            if !loopback {
                return Err(Error::forbidden(
                    "metrics_forbidden",
                    "metrics are served to loopback clients only; set metrics.bearer_token or metrics.listen",
                ));
            }
        }
    }
    Ok(render())
}

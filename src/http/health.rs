//! `GET /healthz` (the process answers) and `GET /readyz` (the store writes, flushes and reads
//! back), for load balancers, Docker's HEALTHCHECK and systemd watchers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::Error;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    match state.store.run(|s| s.health_check()).await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            Ok(HttpResponse::ServiceUnavailable()
                .json(json!({"error": "store_unavailable", "message": "the store cannot write and read back"})))
        }
    }
}

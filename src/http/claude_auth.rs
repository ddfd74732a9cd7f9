//! `/api/claude/auth/*`: connecting a user's own Claude credential (DESIGN §4).
//!
//! An API key is shape-checked, then validated with the Anthropic API, and only then sealed and
//! stored (flushed before the answer). The key is never echoed: answers carry the status view
//! with a hint.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::Authed;
use super::AppState;
use crate::anthropic::{validate_api_key, KeyCheck};
use crate::credential::{normalize_api_key, Credential, CredentialKind, SEAL_KIND};
use crate::error::Error;
use crate::store::{now, CredentialRecord, Validation};
use crate::supervisor::registry::{CredentialChanged, StopUserSessions};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/claude/auth/api-key", web::post().to(set_api_key))
        .route("/api/claude/auth/status", web::get().to(status))
        .route("/api/claude/auth", web::delete().to(disconnect));
}

/// `GET /api/claude/auth/status`: what the user has connected, without any secret.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    authenticated: bool,
    auth_type: Option<CredentialKind>,
    hint: Option<String>,
    /// RFC 3339.
    validated_at: Option<String>,
    validation: Option<Validation>,
    /// RFC 3339.
    expires_at: Option<String>,
    needs_reauth: bool,
    /// Which ways of connecting the server offers, for the Connect Claude screen.
    methods: Methods,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Methods {
    api_key: bool,
    oauth: bool,
    setup_token: bool,
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn view(state: &AppState, record: Option<&CredentialRecord>) -> StatusView {
    let subscription = state.settings.claude_auth.subscription_login;
    StatusView {
        authenticated: record.is_some_and(|r| !r.needs_reauth),
        auth_type: record.map(|r| r.kind),
        hint: record.map(|r| r.hint.clone()),
        validated_at: record.and_then(|r| r.validated_at).map(rfc3339),
        validation: record.map(|r| r.validation),
        expires_at: record.and_then(|r| r.expires_at).map(rfc3339),
        needs_reauth: record.is_some_and(|r| r.needs_reauth),
        methods: Methods {
            api_key: true,
            oauth: subscription,
            setup_token: subscription,
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApiKeyBody {
    api_key: Zeroizing<String>,
}

async fn set_api_key(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<ApiKeyBody>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let key = normalize_api_key(&body.api_key)
        .map_err(|e| Error::bad_request("malformed_api_key", e.to_string()))?;
    let check = validate_api_key(
        &state.http,
        &state.settings.anthropic.base_url,
        key,
        state.settings.anthropic.validation_timeout,
    )
    .await;
    let user_id = authed.user.id.clone();
    let check = match check {
        Ok(check) => check,
        Err(e) => {
            tracing::info!(user_id = %user_id, outcome = ?e, "API key validation refused");
            return Err(e.into());
        }
    };
    let credential = Credential::ApiKey {
        key: key.to_owned(),
    };
    let sealed = state
        .keyring
        .seal(&user_id, SEAL_KIND, &credential.to_plaintext())?;
    let record = CredentialRecord {
        v: 1,
        kind: credential.kind(),
        hint: credential.hint(),
        validated_at: Some(now()),
        validation: match check {
            KeyCheck::Valid => Validation::Ok,
            KeyCheck::RateLimited => Validation::RateLimited,
        },
        needs_reauth: false,
        expires_at: None,
        updated_at: now(),
        generation: 0,
        sealed,
    };
    drop(credential);
    let uid = user_id.clone();
    let stored = state
        .store
        .run(move |s| s.put_credential(&uid, record))
        .await?;
    tracing::info!(user_id = %user_id, validation = ?stored.validation, "API key stored");
    state.registry.do_send(CredentialChanged {
        user_id: user_id.clone(),
        generation: stored.generation,
    });
    Ok(HttpResponse::Ok().json(view(&state, Some(&stored))))
}

async fn status(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let user_id = authed.user.id.clone();
    let record = state.store.run(move |s| s.credential(&user_id)).await?;
    Ok(HttpResponse::Ok().json(view(&state, record.as_ref())))
}

async fn disconnect(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let user_id = authed.user.id.clone();
    let existed = state
        .store
        .run(move |s| s.delete_credential(&user_id))
        .await?;
    tracing::info!(user_id = %authed.user.id, existed, "credential deleted");
    let _ = state
        .registry
        .send(StopUserSessions {
            user_id: authed.user.id.clone(),
        })
        .await;
    Ok(HttpResponse::NoContent().finish())
}

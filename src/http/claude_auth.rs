//! `/api/claude/auth/*`: connecting a user's own Claude credential (DESIGN §4).
//!
//! - An API key is shape-checked, validated with the Anthropic API, and only then sealed and
//!   stored (flushed before the answer).
//! - Claude account sign-in (OAuth with PKCE) and setup tokens sit behind
//!   `claude_auth.subscription_login`, off by default (403 `subscription_login_disabled`):
//!   Anthropic's terms say third-party products may not offer claude.ai sign-in unless
//!   Anthropic approved them.
//! - Bedrock, Vertex and Foundry settings are checked for shape and stored.
//!
//! No secret is ever echoed: answers carry the status view with a hint. Every change tells the
//! registry, so the user's live children restart with the new credential before their next
//! turn.

use std::fmt::Write;

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::Authed;
use super::AppState;
use crate::anthropic::{validate_api_key, KeyCheck};
use crate::credential::{
    normalize_api_key, parse_setup_token, BedrockInput, Credential, CredentialKind, FoundryInput,
    VertexInput, VERTEX_CREDENTIALS_FILE,
};
use crate::error::Error;
use crate::signin::{split_pasted, SignInError};
use crate::store::{CredentialRecord, Validation};
use crate::supervisor::registry::{CredentialChanged, StopUserSessions};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/claude/auth/api-key", web::post().to(set_api_key))
        .route(
            "/api/claude/auth/setup-token",
            web::post().to(set_setup_token),
        )
        .route("/api/claude/auth/bedrock", web::post().to(set_bedrock))
        .route("/api/claude/auth/vertex", web::post().to(set_vertex))
        .route("/api/claude/auth/foundry", web::post().to(set_foundry))
        .route(
            "/api/claude/auth/oauth/initiate",
            web::post().to(oauth_initiate),
        )
        .route(
            "/api/claude/auth/oauth/callback",
            web::get().to(oauth_callback),
        )
        .route("/api/claude/auth/oauth/code", web::post().to(oauth_code))
        .route(
            "/api/claude/auth/oauth/status/{state}",
            web::get().to(oauth_status),
        )
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
    bedrock: bool,
    vertex: bool,
    foundry: bool,
    /// `callback` or `paste`, when `oauth` is offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    oauth_redirect_mode: Option<crate::config::RedirectMode>,
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn view(state: &AppState, record: Option<&CredentialRecord>) -> StatusView {
    let subscription = state.settings.get().claude_auth.subscription_login;
    let oauth = subscription && state.signin.configured();
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
            oauth,
            setup_token: subscription,
            bedrock: true,
            vertex: true,
            foundry: true,
            oauth_redirect_mode: oauth.then_some(state.settings.get().oauth.redirect_mode),
        },
    }
}

/// Refuses subscription sign-in when the operator has not turned it on.
fn require_subscription(state: &AppState) -> Result<(), Error> {
    if state.settings.get().claude_auth.subscription_login {
        Ok(())
    } else {
        Err(Error::forbidden(
            "subscription_login_disabled",
            "Claude account sign-in and setup tokens are turned off on this server; use an API key or a cloud provider",
        ))
    }
}

/// Stores a credential and tells the registry; answers the status.
async fn store(
    state: &AppState,
    user_id: &str,
    credential: Credential,
    validation: Validation,
) -> Result<HttpResponse, Error> {
    let record = state
        .keeper
        .put(user_id, &credential, validation)
        .await
        .map_err(keeper_error)?;
    drop(credential);
    tracing::info!(user_id, kind = ?record.kind, validation = ?record.validation, "credential stored");
    notify_changed(state, user_id, record.generation);
    Ok(HttpResponse::Ok().json(view(state, Some(&record))))
}

fn notify_changed(state: &AppState, user_id: &str, generation: u64) {
    // A full mailbox only delays the restart to the next credential check; never block here.
    let _ = state.registry.try_send(CredentialChanged {
        user_id: user_id.to_owned(),
        generation,
    });
}

fn keeper_error(e: crate::credential::RefreshError) -> Error {
    use crate::credential::RefreshError as R;
    match e {
        R::Store(e) => Error::Store(e),
        R::Crypto(e) => Error::Crypto(e),
        other => Error::Internal(other.to_string()),
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
    let validations = &crate::metrics::metrics().credential_validations;
    let key = normalize_api_key(&body.api_key).map_err(|e| {
        validations.with_label_values(&["malformed"]).inc();
        Error::bad_request("malformed_api_key", e.to_string())
    })?;
    let check = validate_api_key(
        &state.http,
        &state.settings.get().anthropic.base_url,
        key,
        state.settings.get().anthropic.validation_timeout,
    )
    .await;
    let check = match check {
        Ok(check) => check,
        Err(e) => {
            let outcome = match e {
                crate::anthropic::UpstreamError::InvalidApiKey => "invalid",
                crate::anthropic::UpstreamError::ApiKeyForbidden => "forbidden",
                _ => "unavailable",
            };
            validations.with_label_values(&[outcome]).inc();
            tracing::info!(user_id = %authed.user.id, outcome, "API key validation refused");
            return Err(e.into());
        }
    };
    validations
        .with_label_values(&[if check == KeyCheck::Valid {
            "ok"
        } else {
            "rate_limited"
        }])
        .inc();
    let validation = match check {
        KeyCheck::Valid => Validation::Ok,
        KeyCheck::RateLimited => Validation::RateLimited,
    };
    store(
        &state,
        &authed.user.id,
        Credential::ApiKey {
            key: key.to_owned(),
        },
        validation,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: Zeroizing<String>,
}

async fn set_setup_token(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<TokenBody>,
) -> Result<HttpResponse, Error> {
    require_subscription(&state)?;
    let credential =
        parse_setup_token(&body.token).map_err(|m| Error::bad_request("malformed_token", m))?;
    store(&state, &authed.user.id, credential, Validation::Unchecked).await
}

async fn set_bedrock(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<BedrockInput>,
) -> Result<HttpResponse, Error> {
    let credential = body
        .into_inner()
        .into_credential()
        .map_err(|m| Error::bad_request("invalid_bedrock", m))?;
    store(&state, &authed.user.id, credential, Validation::Unchecked).await
}

async fn set_vertex(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<VertexInput>,
) -> Result<HttpResponse, Error> {
    let credential = body
        .into_inner()
        .into_credential()
        .map_err(|m| Error::bad_request("invalid_vertex", m))?;
    store(&state, &authed.user.id, credential, Validation::Unchecked).await
}

async fn set_foundry(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<FoundryInput>,
) -> Result<HttpResponse, Error> {
    let credential = body
        .into_inner()
        .into_credential()
        .map_err(|m| Error::bad_request("invalid_foundry", m))?;
    store(&state, &authed.user.id, credential, Validation::Unchecked).await
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
    // A Vertex service-account file written for a child goes with the credential.
    let workspace = state.workspace.clone();
    let user_id = authed.user.id.clone();
    let _ = web::block(move || {
        let removed = workspace
            .home(&user_id)
            .map_err(|e| e.to_string())
            .and_then(|home| {
                crate::ownership::remove_file(&home, std::path::Path::new(VERTEX_CREDENTIALS_FILE))
                    .map_err(|e| e.to_string())
            });
        if let Err(error) = removed {
            tracing::warn!(user_id = %user_id, %error, "cannot remove the Vertex credentials file");
        }
    })
    .await;
    Ok(HttpResponse::NoContent().finish())
}

// ---- OAuth ----

fn signin_error(e: SignInError) -> Error {
    match e {
        SignInError::Internal(cause) => Error::Internal(cause),
        SignInError::Exchange(crate::anthropic::oauth::OAuthError::Unavailable(_)) => {
            Error::Upstream(crate::anthropic::UpstreamError::OAuthUnavailable(
                e.to_string(),
            ))
        }
        other => Error::bad_request(other.code(), other.to_string()),
    }
}

fn require_oauth(state: &AppState) -> Result<(), Error> {
    require_subscription(state)?;
    if state.signin.configured() {
        Ok(())
    } else {
        Err(Error::ServiceUnavailable {
            code: "oauth_not_configured",
            message: "Claude account sign-in is not configured on this server (oauth.* settings)"
                .into(),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Initiated {
    auth_url: String,
    state: String,
    redirect_mode: crate::config::RedirectMode,
}

async fn oauth_initiate(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    require_oauth(&state)?;
    let (auth_url, oauth_state) = state
        .signin
        .initiate(&authed.user.id, &state.store)
        .await
        .map_err(signin_error)?;
    Ok(HttpResponse::Ok().json(Initiated {
        auth_url,
        state: oauth_state,
        redirect_mode: state.settings.get().oauth.redirect_mode,
    }))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider redirects the browser here (RFC 6749 §4.1.2). Answers a static HTML page;
/// anything taken from the query is escaped, and the global CSP forbids scripts.
async fn oauth_callback(
    state: web::Data<AppState>,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    if require_oauth(&state).is_err() {
        return page(
            StatusCode::FORBIDDEN,
            "Sign-in is not available",
            "Claude account sign-in is turned off on this server.",
        );
    }
    let query = query.into_inner();
    let Some(oauth_state) = query.state.as_deref() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider's answer has no state; start the sign-in again.",
        );
    };
    if let Some(error) = query.error {
        let reason = match query.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error,
        };
        let _ = state
            .signin
            .deny(&state.store, oauth_state, reason.clone())
            .await;
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            &format!("The provider did not grant access ({reason})."),
        );
    }
    let Some(code) = query.code.as_deref() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider's answer has no code; start the sign-in again.",
        );
    };
    match state
        .signin
        .complete(&state.store, oauth_state, code, None)
        .await
    {
        Ok((user_id, record)) => {
            notify_changed(&state, &user_id, record.generation);
            page(
                StatusCode::OK,
                "Signed in",
                "Your Claude account is connected. You can close this window.",
            )
        }
        Err(e) => page(StatusCode::BAD_REQUEST, "Sign-in failed", &e.to_string()),
    }
}

/// A minimal HTML page: no script, escaped text.
fn page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · sashad</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/style.css\"></head><body class=\"callback\"><main>\
         <h1>{t}</h1><p id=\"message\">{m}</p></main></body></html>",
        t = html_escape::encode_safe(title),
        m = html_escape::encode_safe(message),
    );
    HttpResponse::build(status)
        .insert_header(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: Zeroizing<String>,
}

async fn oauth_code(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<CodeBody>,
) -> Result<HttpResponse, Error> {
    require_oauth(&state)?;
    let (code, oauth_state) = split_pasted(&body.code).map_err(signin_error)?;
    let (user_id, record) = state
        .signin
        .complete(&state.store, oauth_state, code, Some(&authed.user.id))
        .await
        .map_err(signin_error)?;
    notify_changed(&state, &user_id, record.generation);
    Ok(HttpResponse::Ok().json(view(&state, Some(&record))))
}

async fn oauth_status(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    require_subscription(&state)?;
    let status = state
        .signin
        .status(&state.store, &path, &authed.user.id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(HttpResponse::Ok().json(status))
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    #[test]
    fn the_callback_page_escapes_its_text() {
        let response = super::page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "<script>alert('x')</script> & \"y\"",
        );
        let body = response.into_body().try_into_bytes().unwrap();
        let html = std::str::from_utf8(&body).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains(
                "&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2F;script&gt; &amp; &quot;y&quot;"
            ),
            "{html}"
        );
    }
}

//! Who is asking: the [`Authed`] extractor (bearer token or the `sashad_session` cookie), the
//! Origin rule for cookie-authenticated writes, and the session cookie itself.
//!
//! A cookie is sent by the browser on its own, so a request authenticated by cookie that
//! changes state must also carry an allowed `Origin` (CSRF). A bearer token is only ever sent on
//! purpose, so bearer requests need no Origin. The cookie is HttpOnly and SameSite=Strict as a
//! second layer.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::AppState;
use crate::accounts::token_hash;
use crate::error::Error;
use crate::store::{now, Role, UserRecord};

/// Name of the session cookie (DESIGN §4).
pub const SESSION_COOKIE: &str = "sashad_session";

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The `sashad_session` cookie.
    Cookie,
}

/// An authenticated request: the user, and how they authenticated. Extracting it fails with
/// 401 (no token, unknown or expired token, disabled user) or 403 `origin_not_allowed` (a
/// cookie-authenticated write without an allowed Origin).
#[derive(Debug, Clone)]
pub struct Authed {
    /// The user, as stored.
    pub user: UserRecord,
    /// How.
    pub via: AuthVia,
    /// SHA-256 of the presented token, for logout.
    pub token_hash: [u8; 32],
}

impl Authed {
    /// 403 `admin_only` unless the user is an admin.
    pub fn require_admin(&self) -> Result<(), Error> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(Error::forbidden("admin_only", "only an admin can do this"))
        }
    }
}

/// The token a request carries, and how.
pub fn presented_token(req: &HttpRequest) -> Option<(String, AuthVia)> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        return Some((token.trim().to_owned(), AuthVia::Bearer));
    }
    req.cookie(SESSION_COOKIE)
        .map(|c| (c.value().to_owned(), AuthVia::Cookie))
}

/// Whether the method changes state (everything but GET, HEAD and OPTIONS).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks the `Origin` header against the allowed list. `required` makes a missing header an
/// error too (cookie-authenticated writes and socket upgrades).
pub fn check_origin(req: &HttpRequest, state: &AppState, required: bool) -> Result<(), Error> {
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) if state.allowed_origins.iter().any(|a| a == origin) => Ok(()),
        Some(_) => Err(Error::forbidden(
            "origin_not_allowed",
            "this request's Origin is not allowed; add it to server.allowed_origins",
        )),
        None if required => Err(Error::forbidden(
            "origin_not_allowed",
            "a cookie-authenticated request that changes state must send an Origin header",
        )),
        None => Ok(()),
    }
}

/// Resolves a request to its user, or the reason it is refused.
pub async fn authenticate(req: &HttpRequest, state: &web::Data<AppState>) -> Result<Authed, Error> {
    let (token, via) = presented_token(req).ok_or_else(Error::unauthenticated)?;
    if via == AuthVia::Cookie && is_write(req.method()) {
        check_origin(req, state, true)?;
    }
    let hash = token_hash(&token);
    drop(token);
    let store = state.store.clone();
    let found = store
        .run(move |s| {
            let Some(record) = s.token(&hash)? else {
                return Ok(None);
            };
            if record.expires_at <= now() {
                s.remove_token(&hash)?;
                return Ok(None);
            }
            s.user(&record.user_id)
        })
        .await?;
    let user = found.ok_or_else(|| Error::Unauthenticated {
        code: "unauthenticated",
        message: "this token is unknown, expired or revoked; log in again".into(),
    })?;
    if user.disabled {
        return Err(Error::Unauthenticated {
            code: "account_disabled",
            message: "this account is disabled; ask an admin".into(),
        });
    }
    Ok(Authed {
        user,
        via,
        token_hash: hash,
    })
}

impl FromRequest for Authed {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| Error::Internal("AppState missing".into()))?;
            if let Some(authed) = req.extensions().get::<Authed>() {
                return Ok(authed.clone());
            }
            let authed = authenticate(&req, &state).await?;
            req.extensions_mut().insert(authed.clone());
            Ok(authed)
        })
    }
}

/// The session cookie carrying `token`, valid for `ttl`.
pub fn session_cookie(token: &str, ttl: Duration, secure: bool) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            ttl.as_secs() as i64
        ))
        .finish()
}

/// A cookie that clears the session cookie.
pub fn clear_cookie(secure: bool) -> Cookie<'static> {
    let mut cookie = session_cookie("", Duration::ZERO, secure);
    cookie.make_removal();
    cookie
}

/// The client's address for rate limits: the socket peer, or the first `X-Forwarded-For` hop
/// when `server.trust_forwarded_for` is set.
pub fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !trust_forwarded_for {
        return peer;
    }
    req.headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

//! `/api/auth/*`: registration, login, logout, and who am I (DESIGN §4), plus `/api/info`, which
//! tells the login page whether the next account will be the first (and so the admin).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::auth::{authenticate, check_origin, clear_cookie, client_ip, session_cookie, Authed};
use super::AppState;
use crate::accounts::{
    hash_password, new_token, validate_password, validate_username, verify_against_dummy,
    verify_password,
};
use crate::config::RegistrationPolicy;
use crate::error::Error;
use crate::store::{now, Admission, CreateUser, Role, TokenKind, TokenRecord, UserRecord};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/info", web::get().to(info))
        .route("/api/auth/register", web::post().to(register))
        .route("/api/auth/login", web::post().to(login))
        .route("/api/auth/logout", web::post().to(logout))
        .route("/api/auth/me", web::get().to(me));
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: String,
    username: String,
    role: Role,
    disabled: bool,
    created_at: i64,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    version: &'static str,
    registration: RegistrationPolicy,
    /// No account exists yet: the next registration creates the admin.
    first_user: bool,
    /// Whether anyone may register right now without an admin.
    registration_open: bool,
    subscription_login: bool,
}

async fn info(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let has_users = state.store.run(|s| s.has_users()).await?;
    let registration = state.settings.get().auth.registration;
    let registration_open = match registration {
        RegistrationPolicy::Open => true,
        RegistrationPolicy::FirstUserOnly => !has_users,
        RegistrationPolicy::AdminOnly => false,
    };
    Ok(HttpResponse::Ok().json(Info {
        version: env!("CARGO_PKG_VERSION"),
        registration,
        first_user: !has_users,
        registration_open,
        subscription_login: state.settings.get().claude_auth.subscription_login,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: Zeroizing<String>,
    /// Only an admin may set it; ignored (defaults to `user`) otherwise.
    #[serde(default)]
    role: Option<Role>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    // An admin creating a user authenticates like any other request; without (valid) auth,
    // the registration policy decides.
    let admin = match authenticate(&req, &state).await {
        Ok(a) if a.user.role == Role::Admin => Some(a),
        _ => None,
    };
    if admin.is_none() {
        check_origin(&req, &state, false)?;
    }
    validate_username(&body.username).map_err(|m| Error::bad_request("invalid_username", m))?;
    validate_password(
        &body.password,
        state.settings.get().auth.min_password_length,
    )
    .map_err(|m| Error::bad_request("invalid_password", m))?;
    let admission = match (&admin, state.settings.get().auth.registration) {
        (Some(_), _) => Admission::Admin,
        (None, RegistrationPolicy::Open) => Admission::Open,
        (None, RegistrationPolicy::FirstUserOnly) => Admission::FirstUserOnly,
        (None, RegistrationPolicy::AdminOnly) => {
            return Err(registration_closed());
        }
    };
    let role = if admin.is_some() {
        body.role.unwrap_or(Role::User)
    } else {
        Role::User
    };
    let password = body.password.clone();
    let hash = web::block(move || hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(e.to_string()))?;
    let username = body.username.clone();
    let slots = state.settings.get().isolation.uid_count;
    let outcome = state
        .store
        .run(move |s| s.create_user(&username, &hash, role, admission, slots))
        .await?;
    match outcome {
        CreateUser::Created(user) => {
            tracing::info!(
                user_id = %user.id, role = ?user.role,
                by_admin = admin.as_ref().map(|a| a.user.id.as_str()),
                "user registered"
            );
            Ok(HttpResponse::Created().json(UserView::from(&user)))
        }
        CreateUser::Taken => Err(Error::conflict("username_taken", "this username is taken")),
        CreateUser::Closed => Err(registration_closed()),
        CreateUser::Full => Err(Error::conflict(
            "user_limit",
            "this server has as many accounts as it can isolate (isolation.uid_count); ask the operator",
        )),
    }
}

fn registration_closed() -> Error {
    Error::forbidden(
        "registration_closed",
        "registration is closed; ask an admin to create your account",
    )
}

#[derive(Serialize)]
struct LoginAnswer<'a> {
    token: &'a str,
    user: UserView,
}

async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, Error> {
    check_origin(&req, &state, false)?;
    let body = body.into_inner();
    let ip = client_ip(&req, state.settings.get().server.trust_forwarded_for);
    if let Err(wait) = state.login_limiter.check(&body.username, ip) {
        tracing::warn!(%ip, "login rate limited");
        return Err(Error::TooManyRequests {
            code: "rate_limited",
            message: "too many login attempts; wait and try again".into(),
            retry_after: wait,
        });
    }
    let username = body.username.clone();
    let user = state.store.run(move |s| s.user_by_name(&username)).await?;
    let password = body.password.clone();
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let ok = web::block(move || match phc {
        Some(phc) => verify_password(&password, &phc),
        None => {
            verify_against_dummy(&password);
            false
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            tracing::info!(%ip, "login failed");
            return Err(Error::Unauthenticated {
                code: "invalid_credentials",
                message: "wrong username or password".into(),
            });
        }
    };
    if user.disabled {
        return Err(Error::Unauthenticated {
            code: "account_disabled",
            message: "this account is disabled; ask an admin".into(),
        });
    }
    let (token, hash) = new_token();
    let ttl = state.settings.get().auth.token_ttl;
    let record = TokenRecord {
        v: 1,
        user_id: user.id.clone(),
        kind: TokenKind::Login,
        label: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(120).collect()),
        created_at: now(),
        expires_at: now() + ttl.as_secs() as i64,
    };
    state
        .store
        .run(move |s| s.insert_token(&hash, &record))
        .await?;
    tracing::info!(user_id = %user.id, "logged in");
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&token, ttl, state.secure_cookies))
        .json(LoginAnswer {
            token: &token,
            user: UserView::from(&user),
        }))
}

async fn logout(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let hash = authed.token_hash;
    state.store.run(move |s| s.remove_token(&hash)).await?;
    tracing::info!(user_id = %authed.user.id, "logged out");
    Ok(HttpResponse::build(StatusCode::NO_CONTENT)
        .cookie(clear_cookie(state.secure_cookies))
        .finish())
}

async fn me(authed: Authed) -> HttpResponse {
    HttpResponse::Ok().json(UserView::from(&authed.user))
}

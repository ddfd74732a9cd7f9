//! `/api/admin/*`: the operator's view, for users with the admin role (403 `admin_only` for
//! anyone else). Every change is logged as an audit event (`target: sashad::audit`) naming the
//! admin, the action and its subject.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;

use super::auth::Authed;
use super::AppState;
use crate::error::Error;
use crate::store::{Role, UserRecord};
use crate::supervisor::registry::{DeleteSession, FindSession, ListSessions, StopUserSessions};
use crate::supervisor::session::{Stop, StopReason};
use crate::supervisor::SessionError;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/users", web::get().to(list_users))
        .route(
            "/api/admin/users/{id}/disable",
            web::post().to(disable_user),
        )
        .route("/api/admin/users/{id}/enable", web::post().to(enable_user))
        .route("/api/admin/users/{id}", web::delete().to(delete_user))
        .route("/api/admin/sessions", web::get().to(list_sessions))
        .route(
            "/api/admin/sessions/{id}/stop",
            web::post().to(stop_session),
        )
        .route("/api/admin/daemon", web::get().to(daemon));
}

fn audit(admin: &Authed, action: &str, subject: &str) {
    tracing::info!(
        target: "sashad::audit",
        admin_id = %admin.user.id,
        admin = %admin.user.username,
        action,
        subject,
        "admin action"
    );
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRow {
    id: String,
    username: String,
    role: Role,
    disabled: bool,
    created_at: i64,
    credential: Option<crate::credential::CredentialKind>,
    needs_reauth: bool,
}

async fn list_users(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    authed.require_admin()?;
    let rows = state
        .store
        .run(|s| {
            let mut rows = Vec::new();
            for user in s.list_users()? {
                let credential = s.credential(&user.id)?;
                rows.push(UserRow {
                    id: user.id.clone(),
                    username: user.username.clone(),
                    role: user.role,
                    disabled: user.disabled,
                    created_at: user.created_at,
                    credential: credential.as_ref().map(|c| c.kind),
                    needs_reauth: credential.is_some_and(|c| c.needs_reauth),
                });
            }
            Ok(rows)
        })
        .await?;
    Ok(HttpResponse::Ok().json(rows))
}

async fn find_user(state: &AppState, id: &str) -> Result<UserRecord, Error> {
    let id = id.to_owned();
    state
        .store
        .run(move |s| s.user(&id))
        .await?
        .ok_or(Error::NotFound)
}

async fn set_disabled(
    authed: Authed,
    state: web::Data<AppState>,
    id: String,
    disabled: bool,
) -> Result<HttpResponse, Error> {
    authed.require_admin()?;
    let user = find_user(&state, &id).await?;
    if disabled && user.id == authed.user.id {
        return Err(Error::conflict(
            "cannot_disable_self",
            "an admin cannot disable their own account",
        ));
    }
    let uid = user.id.clone();
    state
        .store
        .run(move |s| s.set_disabled(&uid, disabled))
        .await?;
    if disabled {
        let _ = state
            .registry
            .send(StopUserSessions {
                user_id: user.id.clone(),
            })
            .await;
    }
    audit(
        &authed,
        if disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        &user.id,
    );
    Ok(HttpResponse::NoContent().finish())
}

async fn disable_user(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    set_disabled(authed, state, path.into_inner(), true).await
}

async fn enable_user(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    set_disabled(authed, state, path.into_inner(), false).await
}

/// Deletes a user with everything of theirs: sessions (children stopped), credential, tokens,
/// sign-ins under way, and their home and projects on disk.
async fn delete_user(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    authed.require_admin()?;
    let user = find_user(&state, &path).await?;
    if user.id == authed.user.id {
        return Err(Error::conflict(
            "cannot_delete_self",
            "an admin cannot delete their own account",
        ));
    }
    // Disabled first, so that nothing of theirs starts while they are removed: their tokens
    // stop working and an open socket cannot start a child (the registry checks at each start).
    let uid = user.id.clone();
    state.store.run(move |s| s.set_disabled(&uid, true)).await?;
    let sessions = state
        .registry
        .send(ListSessions {
            owner: Some(user.id.clone()),
        })
        .await
        .map_err(|_| SessionError::ShuttingDown)?;
    for session in sessions {
        let _ = state
            .registry
            .send(DeleteSession {
                id: session.id,
                owner: None,
            })
            .await;
    }
    // Files first: if they cannot be removed, the account stays and the delete can be retried;
    // the other order would leave files that no account owns and no request can reach.
    let workspace = state.workspace.clone();
    let uid = user.id.clone();
    web::block(move || workspace.remove_user(&uid))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let uid = user.id.clone();
    state.store.run(move |s| s.delete_user(&uid)).await?;
    audit(&authed, "user.delete", &user.id);
    Ok(HttpResponse::NoContent().finish())
}

async fn list_sessions(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    authed.require_admin()?;
    let views = state
        .registry
        .send(ListSessions { owner: None })
        .await
        .map_err(|_| SessionError::ShuttingDown)?;
    let names: std::collections::HashMap<String, String> = state
        .store
        .run(|s| {
            Ok(s.list_users()?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect())
        })
        .await?;
    let rows = web::block(move || {
        views
            .into_iter()
            .map(|v| {
                let memory_kib = v.pid.map(crate::supervisor::child::group_rss_kib);
                let owner_name = v.owner.as_ref().and_then(|o| names.get(o).cloned());
                json!({
                    "session": v,
                    "ownerName": owner_name,
                    "uptimeSeconds": v.child_started_at.map(|t| crate::store::now() - t),
                    "memoryKiB": memory_kib,
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(rows))
}

async fn stop_session(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    authed.require_admin()?;
    let id = path.into_inner();
    let addr = state
        .registry
        .send(FindSession {
            id: id.clone(),
            owner: None,
        })
        .await
        .map_err(|_| SessionError::ShuttingDown)?
        .ok_or(Error::NotFound)?;
    addr.send(Stop {
        reason: StopReason::Requested,
    })
    .await
    .map_err(|_| SessionError::NotFound)?;
    audit(&authed, "session.stop", &id);
    Ok(HttpResponse::NoContent().finish())
}

async fn daemon(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    authed.require_admin()?;
    let settings = state.settings.get();
    let config: toml::Value =
        toml::Value::try_from(&*settings).unwrap_or(toml::Value::Boolean(false));
    Ok(HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": state.started.elapsed().as_secs(),
        "listen": state.local_addr.to_string(),
        "keyId": state.keyring.active_kid().to_string(),
        "config": config,
        "isolation": state.isolation,
        "limits": {
            "sessionsPerUser": settings.limits.sessions_per_user,
            "liveChildren": settings.limits.live_children,
        },
    })))
}

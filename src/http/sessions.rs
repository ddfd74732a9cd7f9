//! `/api/projects` and `/api/sessions/*` (DESIGN §4): projects on disk, sessions through the
//! registry, and messages and interrupts for clients without a socket.
//!
//! Another user's session answers 404, never 403, so session ids cannot be probed.

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Authed;
use super::AppState;
use crate::claude::command::{valid_model, valid_permission_mode, PERMISSION_MODES};
use crate::error::Error;
use crate::supervisor::registry::{CreateSession, DeleteSession, FindSession, ListSessions};
use crate::supervisor::session::{GetView, Interrupt, SendMessage, Session};
use crate::supervisor::SessionError;
use crate::workspace::Workspace;

pub(super) fn configure(cfg: &mut web::ServiceConfig, max_message_bytes: usize) {
    cfg.route("/api/projects", web::get().to(list_projects))
        .route("/api/projects", web::post().to(create_project))
        .route("/api/sessions", web::get().to(list_sessions))
        .route("/api/sessions", web::post().to(create_session))
        .route("/api/sessions/{id}", web::get().to(get_session))
        .route("/api/sessions/{id}", web::delete().to(delete_session))
        .service(
            web::resource("/api/sessions/{id}/messages")
                // A message may carry images: its own, larger body limit. The whole body counts,
                // as the whole message does on a socket, so both ways share one cap.
                .app_data(super::json_config(max_message_bytes))
                .route(web::post().to(send_message)),
        )
        .route("/api/sessions/{id}/interrupt", web::post().to(interrupt));
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    web::block(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

async fn list_projects(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let workspace = state.workspace.clone();
    let ids = blocking(move || Ok(workspace.list_projects(&authed.user.id)?)).await?;
    let list: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(HttpResponse::Ok().json(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    id: String,
}

async fn create_project(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<NewProject>,
) -> Result<HttpResponse, Error> {
    let workspace = state.workspace.clone();
    let id = body.into_inner().id;
    let created = id.clone();
    blocking(move || Ok(workspace.create_project(&authed.user.id, &created)?)).await?;
    Ok(HttpResponse::Created().json(json!({ "id": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSession {
    project: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    permission_mode: Option<String>,
}

async fn create_session(
    authed: Authed,
    state: web::Data<AppState>,
    body: web::Json<NewSession>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    if let Some(model) = body.model.as_deref().filter(|m| !valid_model(m)) {
        return Err(Error::bad_request(
            "invalid_model",
            format!("{model:?} is not a model name"),
        ));
    }
    if let Some(mode) = body
        .permission_mode
        .as_deref()
        .filter(|m| !valid_permission_mode(m))
    {
        return Err(Error::bad_request(
            "invalid_permission_mode",
            format!("{mode:?} is not one of {}", PERMISSION_MODES.join(", ")),
        ));
    }
    let workspace: Workspace = state.workspace.clone();
    let (user_id, project) = (authed.user.id.clone(), body.project.clone());
    blocking(move || Ok(workspace.project(&user_id, &project).map(|_| ())?)).await?;
    let (_, addr) = state
        .registry
        .send(CreateSession {
            owner: authed.user.id.clone(),
            owner_name: authed.user.username.clone(),
            project: body.project,
            model: body.model,
            permission_mode: body.permission_mode,
        })
        .await
        .map_err(|_| SessionError::ShuttingDown)??;
    let view = addr
        .send(GetView)
        .await
        .map_err(|_| SessionError::NotFound)?;
    Ok(HttpResponse::Created().json(view))
}

async fn list_sessions(authed: Authed, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let views = state
        .registry
        .send(ListSessions {
            owner: Some(authed.user.id.clone()),
        })
        .await
        .map_err(|_| SessionError::ShuttingDown)?;
    Ok(HttpResponse::Ok().json(views))
}

/// The caller's own session by id, or 404.
pub(super) async fn find(
    state: &AppState,
    authed: &Authed,
    id: &str,
) -> Result<Addr<Session>, Error> {
    state
        .registry
        .send(FindSession {
            id: id.to_owned(),
            owner: Some(authed.user.id.clone()),
        })
        .await
        .map_err(|_| SessionError::ShuttingDown)?
        .ok_or(Error::Session(SessionError::NotFound))
}

async fn get_session(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let addr = find(&state, &authed, &path).await?;
    let view = addr
        .send(GetView)
        .await
        .map_err(|_| SessionError::NotFound)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn delete_session(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state
        .registry
        .send(DeleteSession {
            id: path.into_inner(),
            owner: Some(authed.user.id.clone()),
        })
        .await
        .map_err(|_| SessionError::ShuttingDown)??;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    content: Value,
}

async fn send_message(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<NewMessage>,
) -> Result<HttpResponse, Error> {
    let addr = find(&state, &authed, &path).await?;
    let seq = addr
        .send(SendMessage {
            content: body.into_inner().content,
        })
        .await
        .map_err(|_| SessionError::NotFound)??;
    Ok(HttpResponse::Accepted().json(json!({ "seq": seq })))
}

async fn interrupt(
    authed: Authed,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let addr = find(&state, &authed, &path).await?;
    addr.send(Interrupt)
        .await
        .map_err(|_| SessionError::NotFound)??;
    Ok(HttpResponse::Accepted().json(json!({})))
}

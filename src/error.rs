//! The error every HTTP handler returns, and its one mapping to a status and a typed JSON body
//! `{"error": "<code>", "message": "<text for a person>"}` (DESIGN §4).
//!
//! Internal causes (sled, crypto, I/O) are logged with their chain and answered with a generic
//! message: a client never sees store or crypto internals.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::anthropic::UpstreamError;
use crate::crypto::CryptoError;
use crate::store::StoreError;
use crate::supervisor::SessionError;
use crate::workspace::WorkspaceError;

/// A request's failure, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 with a specific code (`malformed_api_key`, `invalid_project_id`, …).
    #[error("{message}")]
    BadRequest {
        /// Stable snake_case code.
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// 401: no valid token or cookie.
    #[error("{message}")]
    Unauthenticated {
        /// `unauthenticated`, `invalid_credentials`, `account_disabled`.
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// 403.
    #[error("{message}")]
    Forbidden {
        /// `origin_not_allowed`, `registration_closed`, `admin_only`, …
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// 404: no such thing, or another user's (never 403, so ids cannot be probed).
    #[error("not found")]
    NotFound,
    /// 409.
    #[error("{message}")]
    Conflict {
        /// `username_taken`, `no_credentials`, …
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// 503 with a specific code (`oauth_not_configured`).
    #[error("{message}")]
    ServiceUnavailable {
        /// Stable snake_case code.
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// 413: a body over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        /// `rate_limited`, `session_limit`.
        code: &'static str,
        /// For a person.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// An upstream (Anthropic, OAuth provider) call failed or refused.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A session refused or failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A project path was refused or could not be made.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// Anything else that is our fault; the string goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// 403 with `code`.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::Unauthenticated {
            code: "unauthenticated",
            message: "log in first: send a bearer token or the session cookie".into(),
        }
    }

    /// Status, code and the message a client may see: the one mapping of the crate.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use UpstreamError as U;
        match self {
            Self::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message.clone()),
            Self::Unauthenticated { code, message } => (StatusCode::UNAUTHORIZED, code, message.clone()),
            Self::Forbidden { code, message } => (StatusCode::FORBIDDEN, code, message.clone()),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource".into()),
            Self::Conflict { code, message } => (StatusCode::CONFLICT, code, message.clone()),
            Self::PayloadTooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message.clone()),
            Self::TooManyRequests { code, message, .. } => (StatusCode::TOO_MANY_REQUESTS, code, message.clone()),
            Self::Upstream(e @ U::InvalidApiKey) => (StatusCode::BAD_REQUEST, "invalid_api_key", e.to_string()),
            Self::Upstream(e @ U::ApiKeyForbidden) => (StatusCode::BAD_REQUEST, "api_key_forbidden", e.to_string()),
            Self::ServiceUnavailable { code, message } => (StatusCode::SERVICE_UNAVAILABLE, code, message.clone()),
            Self::Upstream(e @ U::OAuthUnavailable(_)) => (StatusCode::BAD_GATEWAY, "oauth_unavailable", e.to_string()),
            Self::Upstream(e @ U::Unavailable(_)) => {
                (StatusCode::BAD_GATEWAY, "validation_unavailable", e.to_string())
            }
            Self::Store(StoreError::Cancelled) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down".into())
            }
            Self::Store(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "something went wrong on the server".into())
            }
            Self::Session(e) => {
                use SessionError as S;
                let status = match e {
                    S::NotFound => StatusCode::NOT_FOUND,
                    S::AccountDisabled => StatusCode::FORBIDDEN,
                    S::InvalidMessage(_) => StatusCode::BAD_REQUEST,
                    S::NoCredentials
                    | S::CredentialsRejected
                    | S::CredentialsExpired(_)
                    | S::SubscriptionDisabled
                    | S::NotBusy
                    | S::Stopped
                    | S::Failed(_) => StatusCode::CONFLICT,
                    S::Limit(..) | S::QueueFull => StatusCode::TOO_MANY_REQUESTS,
                    S::SpawnFailed(_) | S::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                    S::CredentialUnreadable | S::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let message = match e {
                    S::Store(_) => "something went wrong on the server".to_owned(),
                    S::NotFound => "no such session".to_owned(),
                    other => other.to_string(),
                };
                (status, e.code(), message)
            }
            Self::Workspace(e) => {
                use WorkspaceError as W;
                match e {
                    W::InvalidProjectId | W::NotADirectory(_) => (
                        StatusCode::BAD_REQUEST,
                        "invalid_project_id",
                        W::InvalidProjectId.to_string(),
                    ),
                    W::NoSuchProject => (StatusCode::NOT_FOUND, "project_not_found", e.to_string()),
                    W::ProjectExists => (StatusCode::CONFLICT, "project_exists", e.to_string()),
                    W::Io { .. } => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "something went wrong on the server".into(),
                    ),
                }
            }
            Self::Crypto(CryptoError::KeyNotLoaded { kid }) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "credential_unreadable",
                format!("your stored credential is sealed with master key id {kid}, which this server has not loaded; ask the operator"),
            ),
            Self::Crypto(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "credential_unreadable",
                "your stored credential could not be opened; ask the operator".into(),
            ),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        }
        let mut response = HttpResponse::build(status);
        let retry_after = match self {
            Self::TooManyRequests { retry_after, .. }
            | Self::Session(SessionError::Limit(_, retry_after)) => Some(*retry_after),
            Self::Session(SessionError::QueueFull) => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.insert_header((header::RETRY_AFTER, value));
            }
        }
        response.json(Body {
            error: code,
            message: &message,
        })
    }
}

/// A JSON error response outside the [`Error`] type (for actix's extractor error handlers).
pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(Body {
        error: code,
        message,
    })
}

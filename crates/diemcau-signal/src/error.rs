//! Errors of the HTTP API: what the client is told, and what only the log sees.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use diemcau_store::StoreError;

/// An API error. Client errors carry a message safe to show; internal errors are logged and answered generically.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: credentials fine, action not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request is fine but the meeting's state refuses it (e.g. a roll call already in progress).
    #[error("{0}")]
    Conflict(String),
    /// 500: our fault; details only in the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => AppError::BadRequest(m),
            StoreError::Csv(e) => AppError::BadRequest(format!("CSV: {e}")),
            StoreError::NotFound(m) => AppError::NotFound(m),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, msg) = match &self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            AppError::Internal(m) => {
                tracing::error!("internal error: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        (status, Json(serde_json::json!({ "error": msg }))).into_response()
    }
}

//! The API's errors: `{"error": {"code", "message"}}` with the status a client can act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tidemark_ingest::IngestError;
use tidemark_objstore::StoreError;
use tidemark_pitr_index::IndexError;
use tidemark_rehydrator::RestoreError;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// One of: invalid_input, unauthorized, forbidden, not_found, method_not_allowed,
    /// conflict, fenced, released, invalid_point, payload_too_large, corrupt, store_full,
    /// unavailable, internal.
    pub code: String,
    /// A one-line explanation.
    pub message: String,
}

/// An error answered to a client.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or breaks a rule; nothing changed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request contradicts the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 409: the domain was released to another site (planned failover); writes go
    /// there now.
    pub fn released(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "released", message)
    }

    /// 409: another site owns the domain; only it may do this.
    pub fn fenced(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "fenced", message)
    }

    /// 500: a stored object is damaged.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", message)
    }

    /// 401: no or unknown token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 413: the body is larger than the service accepts.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 405: the route exists, not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 503: the service is shutting down or its store cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: a fault of the service itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(msg),
            StoreError::Invalid(_) => ApiError::invalid(msg),
            StoreError::AlreadyExists { .. } | StoreError::PreconditionFailed { .. } => {
                ApiError::conflict(msg)
            }
            StoreError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "store_full", msg)
            }
            StoreError::Config(_) | StoreError::Backend(_) | StoreError::Io { .. } => {
                ApiError::unavailable(msg)
            }
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        let msg = e.to_string();
        match e {
            IndexError::UnknownDomain(_) => ApiError::not_found(msg),
            IndexError::NoSuchPoint(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_point", msg)
            }
            IndexError::Store(s) => s.into(),
            IndexError::Corrupt(_) | IndexError::CorruptObject { .. } | IndexError::Format(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", msg)
            }
            IndexError::Db(_) => ApiError::internal(msg),
            // Transient: the restores holding the domain end, and the same request
            // then goes through.
            IndexError::Busy(_) => ApiError::unavailable(format!("{msg}; retry later")),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let msg = e.to_string();
        match e {
            IngestError::Invalid(_) => ApiError::invalid(msg),
            IngestError::UnknownDomain(_) => ApiError::not_found(msg),
            IngestError::Conflict(_) | IngestError::SeqTaken { .. } => ApiError::conflict(msg),
            IngestError::Fenced { .. } => ApiError::new(StatusCode::CONFLICT, "fenced", msg),
            IngestError::Corrupt { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", msg)
            }
            IngestError::Store(s) => s.into(),
            IngestError::Index(i) => i.into(),
            IngestError::Read { .. } | IngestError::Injected(_) => ApiError::internal(msg),
        }
    }
}

impl From<RestoreError> for ApiError {
    fn from(e: RestoreError) -> Self {
        let msg = e.to_string();
        match e {
            RestoreError::Invalid(_) => ApiError::invalid(msg),
            RestoreError::Corrupt { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", msg)
            }
            RestoreError::Index(i) => i.into(),
            RestoreError::Store(s) => s.into(),
            RestoreError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "store_full", msg)
            }
            RestoreError::Io { .. } => ApiError::internal(msg),
            RestoreError::Cancelled => ApiError::conflict(msg),
        }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

//! API errors: every failure leaves the server as a Kubernetes `Status` with its HTTP code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::{FieldError, ResourceKind, Status};
use berth_store::StoreError;

/// A failed request, already worded for the client. Shown (`Display`) as its message; the
/// whole `Status` is `status()`.
#[derive(Debug, Clone)]
pub struct ApiError(pub(crate) Box<Status>);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub(crate) fn from_status(s: Status) -> Self {
        ApiError(Box::new(s))
    }

    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self::from_status(Status::failure(code, reason, message))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::from_status(
            Status::failure(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", kind.qualified_plural()),
            )
            .with_details(kind.group, kind.plural, name),
        )
    }

    pub fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        Self::from_status(
            Status::failure(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.qualified_plural()),
            )
            .with_details(kind.group, kind.plural, name),
        )
    }

    pub fn conflict(kind: &ResourceKind, name: &str) -> Self {
        Self::from_status(
            Status::failure(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.qualified_plural()
                ),
            )
            .with_details(kind.group, kind.plural, name),
        )
    }

    pub fn invalid(kind: &ResourceKind, name: &str, errors: &[FieldError]) -> Self {
        Self::from_status(Status::invalid(kind.group, kind.kind, name, errors))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Names the object the error is about (`details.name`, `details.kind`).
    pub fn with_details(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.0 = Box::new((*self.0).with_details(kind.group, kind.plural, name));
        self
    }

    /// The same error with `message` in place of its own.
    pub fn with_message(mut self, message: String) -> Self {
        self.0.message = message;
        self
    }

    pub fn code(&self) -> u16 {
        self.0.code
    }

    /// The `Status` a client would get.
    pub fn status(&self) -> &Status {
        &self.0
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::FutureRevision { requested, current } => ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            StoreError::TimeNotRetained => ApiError::gone(e.to_string()),
            StoreError::Closed => {
                ApiError::new(503, "ServiceUnavailable", "the server is shutting down")
            }
            // Nothing was changed: the client may retry once space is freed.
            StoreError::DiskFull(_) => ApiError::new(
                507,
                "InsufficientStorage",
                format!("{e}; nothing was changed, retry once space is freed"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        (code, [("content-type", "application/json")], body).into_response()
    }
}

//! [`HostError`]: every way an HTTP request can fail, and the only place that picks status codes.
//!
//! Client errors (4xx) carry a message that says what to do and are logged at debug level.
//! Server-side failures are logged once with the request id; internal ones answer with a generic
//! message so no internals leak.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::backend::BackendError;
use crate::engine::{CallError, ValidationError};
use crate::registry::{DeployError, ResolveError, VersionError};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Malformed input: bad name, garbage upload, core module.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// The admin API has no token configured.
    #[error(
        "the admin API is disabled: start goldfish with --admin-token TOKEN (or GOLDFISH_ADMIN_TOKEN)"
    )]
    AdminDisabled,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request conflicts with the resource's state (a rollback with nothing to go back to).
    #[error("{0}")]
    Conflict(String),
    /// Too many failed admin logins from one address.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A well-formed component that Goldfish cannot run.
    #[error("{0}")]
    Unprocessable(String),
    /// The guest trapped or ran out of memory.
    #[error("{0}")]
    GuestFailed(String),
    /// The guest answered with something that is not valid HTTP.
    #[error("{0}")]
    BadGuestResponse(String),
    /// The store is down, or the host is at capacity.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    /// A bug or an unexpected failure; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HostError {
    pub fn status(&self) -> StatusCode {
        match self {
            HostError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HostError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HostError::AdminDisabled => StatusCode::FORBIDDEN,
            HostError::NotFound(_) => StatusCode::NOT_FOUND,
            HostError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HostError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HostError::Conflict(_) => StatusCode::CONFLICT,
            HostError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            HostError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HostError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HostError::GuestFailed(_) | HostError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HostError::BadGuestResponse(_) => StatusCode::BAD_GATEWAY,
            HostError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HostError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            HostError::Internal(detail) => {
                tracing::error!("internal error: {detail}");
                "internal error; the host log has details".to_owned()
            }
            e if status.is_server_error() => {
                tracing::warn!(status = status.as_u16(), "{e}");
                e.to_string()
            }
            e => {
                tracing::debug!(status = status.as_u16(), "{e}");
                e.to_string()
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if let HostError::TooManyRequests { retry_after, .. } = &self
            && let Ok(value) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<BackendError> for HostError {
    fn from(e: BackendError) -> Self {
        HostError::Unavailable(format!(
            "{e}; check that Redis is running and reachable, then retry"
        ))
    }
}

impl From<DeployError> for HostError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid(v @ (ValidationError::NotWasm | ValidationError::CoreModule)) => {
                HostError::BadRequest(v.to_string())
            }
            DeployError::Invalid(v) => HostError::Unprocessable(v.to_string()),
            DeployError::Backend(b) => b.into(),
            DeployError::Busy(message) => HostError::Unavailable(message),
            DeployError::Internal(detail) => HostError::Internal(detail),
        }
    }
}

impl From<VersionError> for HostError {
    fn from(e: VersionError) -> Self {
        match e {
            VersionError::NotFound(_) | VersionError::UnknownVersion { .. } => {
                HostError::NotFound(e.to_string())
            }
            VersionError::NoPrevious { .. } => HostError::Conflict(e.to_string()),
            VersionError::Contended(_) => HostError::Unavailable(e.to_string()),
            VersionError::Unreadable { .. } => HostError::Internal(e.to_string()),
            VersionError::Backend(b) => b.into(),
        }
    }
}

impl From<ResolveError> for HostError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound(name) => HostError::NotFound(format!(
                "no function named `{name}` is deployed; deploy it with PUT /v1/functions/{name}"
            )),
            ResolveError::Backend(b) => b.into(),
            // Not the caller's fault, but the operator can fix it: say how.
            broken @ ResolveError::Broken { .. } => HostError::GuestFailed(broken.to_string()),
        }
    }
}

impl From<CallError> for HostError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout(_) => HostError::Timeout(e.to_string()),
            CallError::MemoryLimit(_) | CallError::Trap(_) | CallError::CpuBudget(_) => {
                HostError::GuestFailed(e.to_string())
            }
            CallError::BadResponse(message) => HostError::BadGuestResponse(message),
        }
    }
}

//! [`HostError`]: every way an HTTP request can fail, and the only place that picks status codes.
//!
//! Client errors (4xx) carry a message that says what to do and are logged at debug level.
//! Server-side failures (5xx) are logged once, in the request's span (so with its request id).
//! The admin API's caller is the authenticated operator and sees their whole detail; an invoke
//! caller is anyone, and sees only their [`FailureClass`], the request id and where the detail
//! is ([`HostError::into_invoke_response`]): never Redis' words, compile errors, the guest's
//! backtrace or its stderr.
//!
//! # Layout
//! - this file: [`HostError`], its status and headers, the answers it gives (admin API, invoke),
//!   and the conversions from the other modules' errors.
//! - `failure_class.rs`: [`FailureClass`], the kinds of server-side failure, each with its status,
//!   its stored name, and what anyone may be told of it.

mod failure_class;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use failure_class::FailureClass;

use crate::backend::BackendError;
use crate::engine::{CallError, ValidationError};
use crate::registry::{DeployError, ResolveError, VersionError};

/// The `Retry-After` of a 503 for capacity or storage: slots free and Redis reconnects within
/// about that, and a client that waits it does not hammer a host that is shedding load.
const RETRY_AFTER_SECONDS: u64 = 1;

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
    /// The function or the store failed: `class` picks the status and is all an invoke caller
    /// learns (unless [`FailureClass::detail_is_public`]); `detail` (the trap, the guest's
    /// backtrace and stderr, Redis' or the compiler's words) is for the log, the failure list
    /// and the admin API.
    #[error("{detail}")]
    Failed { class: FailureClass, detail: String },
    /// The host is at capacity or shutting down: the host's own words about its own limits,
    /// shown to anyone, with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
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
            HostError::Failed { class, .. } => class.status(),
            HostError::Unavailable(_) => FailureClass::AtCapacity.status(),
            HostError::Internal(_) => FailureClass::Internal.status(),
        }
    }

    /// The class of a server-side failure; `None` for a client error.
    pub fn class(&self) -> Option<FailureClass> {
        match self {
            HostError::Failed { class, .. } => Some(*class),
            HostError::Unavailable(_) => Some(FailureClass::AtCapacity),
            HostError::Internal(_) => Some(FailureClass::Internal),
            _ => None,
        }
    }

    /// The answer an invoke caller gets, who may be anyone: a client error says what to do,
    /// as everywhere; a server-side failure says its class, the request id and where the
    /// operator finds the detail (the failure list of `function` when it is one that is
    /// recorded, else the host log), and the detail goes to the log. The body is
    /// `{"error": ..., "request_id": ...}`.
    pub fn into_invoke_response(self, request_id: &str, function: Option<&str>) -> Response {
        let status = self.status();
        self.log(status, Some(request_id));
        let message = match self.class() {
            None => self.to_string(),
            Some(class) => {
                let said = if class.detail_is_public() {
                    self.to_string()
                } else {
                    class.summary().to_owned()
                };
                match function {
                    _ if !class.is_recorded() => format!("{said} (request id {request_id})"),
                    Some(name) => format!(
                        "{said}; request id {request_id}: its operator finds the details with \
                         `goldfish errors {name}` (GET /v1/functions/{name}/errors) and in the \
                         host log"
                    ),
                    None => {
                        format!("{said}; request id {request_id}: the host log has the details")
                    }
                }
            }
        };
        let body = json!({ "error": message, "request_id": request_id });
        self.with_headers((status, Json(body)).into_response())
    }

    /// Logs once, with the invocation's request id when there is one: internal errors as
    /// errors, other server-side failures as warnings with their whole detail, client errors
    /// at debug level.
    fn log(&self, status: StatusCode, request_id: Option<&str>) {
        match self {
            HostError::Internal(detail) => {
                tracing::error!(request_id, "internal error: {detail}")
            }
            e if status.is_server_error() => {
                let class = e.class().map_or("", FailureClass::as_str);
                tracing::warn!(request_id, status = status.as_u16(), class, "{e}")
            }
            e => tracing::debug!(request_id, status = status.as_u16(), "{e}"),
        }
    }

    /// The headers that go with the error: `Retry-After` on 429 and 503, `WWW-Authenticate`
    /// on 401.
    fn with_headers(&self, mut response: Response) -> Response {
        let retry_after = match self {
            HostError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ if response.status() == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECONDS),
            _ => None,
        };
        if let Some(seconds) = retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The answer every route but invocation gives: the admin API's caller is the operator, who
/// sees the whole detail of a failure (internal errors excepted: those are the log's).
impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log(status, None);
        let message = match &self {
            HostError::Internal(_) => "internal error; the host log has details".to_owned(),
            e => e.to_string(),
        };
        self.with_headers((status, Json(json!({ "error": message }))).into_response())
    }
}

impl From<BackendError> for HostError {
    fn from(e: BackendError) -> Self {
        HostError::Failed {
            class: FailureClass::StoreUnavailable,
            detail: format!("{e}; check that Redis is running and reachable, then retry"),
        }
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
            // Not the caller's fault, but the operator can fix it: the detail says how.
            broken @ ResolveError::Broken { .. } => HostError::Failed {
                class: FailureClass::CannotLoad,
                detail: broken.to_string(),
            },
        }
    }
}

impl From<CallError> for HostError {
    fn from(e: CallError) -> Self {
        let class = match e {
            CallError::PoolExhausted(_) => return HostError::Unavailable(e.to_string()),
            CallError::BadResponse(message) => {
                return HostError::Failed {
                    class: FailureClass::InvalidHttp,
                    detail: message,
                };
            }
            // These three are the host's sentences about its own limits: public.
            CallError::Timeout(_) => FailureClass::Timeout,
            CallError::MemoryLimit(_) => FailureClass::MemoryLimit,
            CallError::CpuBudget(_) => FailureClass::CpuBudget,
            CallError::Trap(_) => FailureClass::Trapped,
            CallError::StackOverflow(_) => FailureClass::StackOverflow,
        };
        HostError::Failed {
            class,
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[tokio::test]
    async fn an_invoke_caller_sees_the_class_and_request_id_never_the_detail() {
        let trap = HostError::Failed {
            class: FailureClass::Trapped,
            detail: "wasm trap (in _ZN9misbehave6handle17h); the guest's last stderr line: \
                     secret"
                .into(),
        };
        let response = trap.into_invoke_response("00ff", Some("mb"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response).await;
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("trapped") && message.contains("00ff"),
            "{body}"
        );
        assert!(message.contains("goldfish errors mb"), "{body}");
        assert!(
            !message.contains("secret") && !message.contains("_ZN"),
            "{body}"
        );
        assert_eq!(body["request_id"], "00ff");

        let redis = HostError::from(BackendError::Unavailable(
            "Connection refused (os error 111)".into(),
        ));
        let response = redis.into_invoke_response("00fe", None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let body = body_of(response).await;
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("storage is unavailable"), "{body}");
        assert!(!message.contains("refused"), "{body}");
    }

    #[tokio::test]
    async fn the_operator_sees_the_whole_detail_on_the_admin_api() {
        let redis = HostError::from(BackendError::Unavailable("Connection refused".into()));
        let body = body_of(redis.into_response()).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Connection refused"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn limits_hit_are_named_with_their_value_and_pool_exhaustion_is_a_retryable_503() {
        let memory = HostError::from(CallError::MemoryLimit(16));
        let body = body_of(memory.into_invoke_response("1", Some("mb"))).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("memory limit of 16 MiB"),
            "{body}"
        );
        let pool = HostError::from(CallError::PoolExhausted(
            "maximum concurrent limit of 8 for core instances reached".into(),
        ));
        let response = pool.into_invoke_response("2", Some("mb"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
    }
}

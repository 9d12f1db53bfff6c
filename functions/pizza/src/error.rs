//! [`ApiError`]: every way a cart or checkout request can fail, and the only place that picks the
//! status code and body for it.

use crate::cart::MAX_LINES;
use crate::http::Reply;
use crate::kv::KvError;

/// Why a request failed.
///
/// Client errors carry a message telling the user what to do and are not logged. `Unavailable`
/// and `Internal` carry a detail for the log only: the client gets a generic message, and the
/// detail goes to stderr, which the host logs with the function name and request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed; this path accepts {allow}")]
    MethodNotAllowed {
        /// The value of the `allow` header: the methods the path does accept.
        allow: &'static str,
    },
    #[error("cart is empty: add items with POST /fn/cart/items, then check out")]
    CartEmpty,
    #[error("the cart holds at most {MAX_LINES} lines: check out or remove some first")]
    CartFull,
    /// The request's `Idempotency-Key` was already used on this cart for a different change.
    #[error(
        "this Idempotency-Key was already used on this cart to {earlier}: send a new key with each new change"
    )]
    IdempotencyKeyReused {
        /// What the key was used for, as [`crate::cart::Change::describe`] puts it.
        earlier: String,
    },
    /// The compare-and-swap loop lost every race it was allowed to run.
    #[error("cart is busy, retry")]
    CartBusy,
    /// The store could not be reached; the payload is for the log.
    #[error("storage is unavailable, retry later")]
    Unavailable(String),
    /// A bug or corrupt data; the payload is for the log.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::CartEmpty | ApiError::CartFull => 409,
            ApiError::IdempotencyKeyReused { .. } => 422,
            ApiError::CartBusy | ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// The JSON reply `{"error": "..."}` for this error, logging the detail of a server error.
    pub fn into_reply(self) -> Reply {
        match &self {
            ApiError::Unavailable(detail) => eprintln!("storage unavailable: {detail}"),
            ApiError::Internal(detail) => eprintln!("internal error: {detail}"),
            _ => {}
        }
        let reply = Reply::json(
            self.status(),
            &serde_json::json!({ "error": self.to_string() }),
        );
        match self {
            ApiError::MethodNotAllowed { allow } => reply.with_header("allow", allow),
            _ => reply,
        }
    }
}

impl From<KvError> for ApiError {
    fn from(error: KvError) -> ApiError {
        match error {
            KvError::Unavailable(detail) => ApiError::Unavailable(detail),
            // The functions build every key and bound every value themselves, so any other kv
            // error is a bug here, not something the client can fix.
            other => ApiError::Internal(format!("kv: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reply: &Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    #[test]
    fn a_client_error_tells_the_client_what_went_wrong() {
        let reply = ApiError::BadRequest("qty must be 1..=20".into()).into_reply();
        assert_eq!(reply.status, 400);
        assert_eq!(
            body(&reply),
            serde_json::json!({"error": "qty must be 1..=20"})
        );
        assert!(
            reply
                .headers
                .contains(&("content-type".into(), "application/json".into()))
        );
    }

    #[test]
    fn a_storage_outage_is_a_503_without_the_detail() {
        let reply =
            ApiError::from(KvError::Unavailable("redis at 10.0.0.1 refused".into())).into_reply();
        assert_eq!(reply.status, 503);
        assert_eq!(body(&reply)["error"], "storage is unavailable, retry later");
    }

    #[test]
    fn other_kv_errors_are_internal() {
        let error = ApiError::from(KvError::ValueTooLarge(1 << 20));
        assert_eq!(error.status(), 500);
        assert_eq!(body(&error.into_reply())["error"], "internal error");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let reply = ApiError::MethodNotAllowed { allow: "GET" }.into_reply();
        assert_eq!(reply.status, 405);
        assert!(reply.headers.contains(&("allow".into(), "GET".into())));
    }

    #[test]
    fn a_reused_idempotency_key_is_a_422_naming_its_first_use() {
        let reply = ApiError::IdempotencyKeyReused {
            earlier: "add 1 coke regular".into(),
        }
        .into_reply();
        assert_eq!(reply.status, 422);
        let message = body(&reply)["error"].as_str().unwrap().to_owned();
        assert!(message.contains("add 1 coke regular"), "{message}");
        assert!(message.contains("new key"), "{message}");
    }

    #[test]
    fn busy_asks_the_client_to_retry() {
        let reply = ApiError::CartBusy.into_reply();
        assert_eq!(reply.status, 503);
        assert_eq!(
            body(&reply),
            serde_json::json!({"error": "cart is busy, retry"})
        );
    }
}

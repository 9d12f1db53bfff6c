//! [`FailureClass`]: the kinds of server-side failure, each with its status, the name it is
//! stored under, and what anyone may be told of it.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What kind of server-side failure a request met: all of a 5xx an invoke caller is told about
/// it, beside the request id; stored (kebab-case) with each failure record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The guest trapped: a panic, `unreachable`, a bad memory access.
    Trapped,
    /// The guest recursed past its stack.
    StackOverflow,
    /// The guest grew its memory past its limit.
    MemoryLimit,
    /// The guest used up its CPU budget.
    CpuBudget,
    /// The guest ran past its wall-clock deadline.
    Timeout,
    /// The guest answered, but not with valid HTTP.
    InvalidHttp,
    /// The function's component is missing or no longer compiles on this host.
    CannotLoad,
    /// Redis did not answer, or refused.
    StoreUnavailable,
    /// The host is at one of its limits (requests in flight, instance slots, a function's
    /// concurrency, the instance pool) or shutting down.
    AtCapacity,
    /// A bug or an unexpected failure of the host.
    Internal,
}

impl FailureClass {
    /// The name it is stored and listed under (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Trapped => "trapped",
            FailureClass::StackOverflow => "stack-overflow",
            FailureClass::MemoryLimit => "memory-limit",
            FailureClass::CpuBudget => "cpu-budget",
            FailureClass::Timeout => "timeout",
            FailureClass::InvalidHttp => "invalid-http",
            FailureClass::CannotLoad => "cannot-load",
            FailureClass::StoreUnavailable => "store-unavailable",
            FailureClass::AtCapacity => "at-capacity",
            FailureClass::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            FailureClass::Trapped
            | FailureClass::StackOverflow
            | FailureClass::MemoryLimit
            | FailureClass::CpuBudget
            | FailureClass::CannotLoad
            | FailureClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            FailureClass::InvalidHttp => StatusCode::BAD_GATEWAY,
            FailureClass::StoreUnavailable | FailureClass::AtCapacity => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            FailureClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// What anyone may be told about a failure of this class.
    pub fn summary(self) -> &'static str {
        match self {
            FailureClass::Trapped => "the function trapped (it crashed)",
            FailureClass::StackOverflow => {
                "the function failed with a stack overflow (it recursed too deeply)"
            }
            FailureClass::MemoryLimit => "the function exceeded its memory limit",
            FailureClass::CpuBudget => "the function used more than its CPU budget",
            FailureClass::Timeout => "the function did not answer within its time limit",
            FailureClass::InvalidHttp => {
                "the function answered with invalid HTTP (a bad status, header or body)"
            }
            FailureClass::CannotLoad => {
                "the function cannot be loaded on this host; its operator must redeploy it"
            }
            FailureClass::StoreUnavailable => "storage is unavailable; retry shortly",
            FailureClass::AtCapacity => "the host is at capacity; retry shortly",
            FailureClass::Internal => "internal error",
        }
    }

    /// Whether the detail of a failure of this class may be shown to anyone: true where the
    /// host writes it from its own settings alone (the limit that was hit, the capacity that is
    /// full; see `From<CallError>` and the capacity checks in [`crate::invoke`]), with nothing
    /// from the guest, Redis or the compiler in it.
    pub fn detail_is_public(self) -> bool {
        matches!(
            self,
            FailureClass::MemoryLimit
                | FailureClass::CpuBudget
                | FailureClass::Timeout
                | FailureClass::AtCapacity
        )
    }

    /// Whether an invocation failing this way is kept in the function's failure list
    /// ([`crate::failures`]). Not at capacity: the caller's message already says all there is,
    /// the metrics count them, and a host shedding load should not also write to Redis for
    /// every request it sheds.
    pub fn is_recorded(self) -> bool {
        self != FailureClass::AtCapacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_their_serde_names() {
        use FailureClass::*;
        for class in [
            Trapped,
            StackOverflow,
            MemoryLimit,
            CpuBudget,
            Timeout,
            InvalidHttp,
            CannotLoad,
            StoreUnavailable,
            AtCapacity,
            Internal,
        ] {
            assert_eq!(
                serde_json::to_value(class).ok(),
                Some(serde_json::json!(class.as_str()))
            );
        }
    }
}

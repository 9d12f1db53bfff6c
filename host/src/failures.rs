//! Each function's recent failures, kept in the store so that an operator on any host can read
//! them (`GET /v1/functions/{name}/errors`, `goldfish errors NAME`): when, which request, the
//! status and class, the whole detail an invoke caller is not shown, and which host answered.
//!
//! Recording never changes the answer and never delays it: the record is written by a task of
//! its own after the answer is built, at most [`MAX_PENDING_WRITES`] at once, and a write that
//! fails (Redis down is one of the failures being recorded) is only logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use crate::backend::{Backend, BackendError};
use crate::error::{FailureClass, HostError};

/// Failures kept per function, newest first: enough to see a pattern, small enough to read in
/// one answer.
pub const KEPT_PER_FUNCTION: usize = 50;
/// How long a function's list outlives its latest failure, so the list of a function fixed long
/// ago goes away by itself (deleting a function removes its list at once).
pub const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest detail stored, in bytes: the guest's stderr line is already bounded, this bounds the
/// whole record whatever the trap or Redis said.
const MAX_DETAIL_BYTES: usize = 4096;
/// Records being written at once by this process. A failure past it is logged but not
/// recorded: a storm of failures cannot pile up tasks and writes.
const MAX_PENDING_WRITES: usize = 64;

/// One per process, not per host state: it bounds this process's background writes, whichever
/// router answered.
static PENDING_WRITES: Semaphore = Semaphore::const_new(MAX_PENDING_WRITES);

/// One failed invocation, as stored and as `GET /v1/functions/{name}/errors` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailureRecord {
    /// When it was answered: milliseconds since the Unix epoch, by the answering host's clock.
    pub at_ms: u64,
    /// The `x-request-id` the caller got (also in its error body and in every log line of the
    /// request).
    pub request_id: String,
    /// The status the caller got.
    pub status: u16,
    pub class: FailureClass,
    /// Everything the host knows: the trap and the guest's innermost function, the guest's last
    /// stderr line, Redis' or the compiler's words (at most 4 KiB).
    pub detail: String,
    /// The id of the host that answered, as on the status page.
    pub host: String,
}

/// `GET /v1/functions/{name}/errors`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailureList {
    pub name: String,
    /// The most recent failures, newest first, at most 50, none older than 7 days after the
    /// latest.
    pub errors: Vec<FailureRecord>,
}

/// The answer to an invocation that failed with `error`: see
/// [`HostError::into_invoke_response`]. A server-side failure of a deployed `function` is
/// also recorded in its failure list, in the background, as answered by `host`.
pub fn answer(
    backend: &Backend,
    host: &str,
    error: HostError,
    request_id: &str,
    function: Option<&str>,
) -> Response {
    if let (Some(function), Some(class)) = (function, error.class())
        && class.is_recorded()
    {
        let record = FailureRecord {
            at_ms: now_ms(),
            request_id: request_id.to_owned(),
            status: error.status().as_u16(),
            class,
            detail: bounded(error.to_string()),
            host: host.to_owned(),
        };
        record_in_background(backend, function, record);
    }
    error.into_invoke_response(request_id, function)
}

/// Writes `record` to `function`'s list from a task of its own (a failed write is logged with
/// the request id), unless [`MAX_PENDING_WRITES`] are under way.
fn record_in_background(backend: &Backend, function: &str, record: FailureRecord) {
    let Ok(permit) = PENDING_WRITES.try_acquire() else {
        let request_id = &record.request_id;
        tracing::warn!(
            request_id,
            "too many failure records being written; this one is only in the log"
        );
        return;
    };
    let json = match serde_json::to_string(&record) {
        Ok(json) => json,
        Err(e) => {
            let request_id = &record.request_id;
            tracing::warn!(request_id, "cannot serialize a failure record: {e}");
            return;
        }
    };
    let backend = backend.clone();
    let function = function.to_owned();
    let request_id = record.request_id;
    tokio::spawn(async move {
        let ttl = KEPT_FOR.as_secs() as u32;
        if let Err(e) = backend
            .push_failure(&function, &json, KEPT_PER_FUNCTION, ttl)
            .await
        {
            tracing::warn!(request_id, "could not record the failure in the store: {e}");
        }
        drop(permit);
    });
}

/// `function`'s kept failures, newest first by the time each happened (records are written in
/// the background after the answer, so two close failures may be stored out of order); a
/// record this host cannot read (written by a newer host, say) is left out.
pub async fn recent(backend: &Backend, function: &str) -> Result<Vec<FailureRecord>, BackendError> {
    let stored = backend.failures(function, KEPT_PER_FUNCTION).await?;
    let mut records: Vec<FailureRecord> = stored
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    // Stable: records of the same millisecond keep the store's order.
    records.sort_by_key(|record| std::cmp::Reverse(record.at_ms));
    Ok(records)
}

/// `detail` cut to [`MAX_DETAIL_BYTES`] at a character boundary, marked when cut.
fn bounded(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL_BYTES {
        let mut end = MAX_DETAIL_BYTES;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push_str(" [cut]");
    }
    detail
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn a_long_detail_is_cut_at_a_character_boundary() {
        let detail = "é".repeat(MAX_DETAIL_BYTES);
        let cut = bounded(detail);
        assert!(cut.len() <= MAX_DETAIL_BYTES + " [cut]".len());
        assert!(cut.ends_with(" [cut]"));
        assert_eq!(bounded("short".into()), "short");
    }

    #[tokio::test]
    async fn a_failure_is_recorded_newest_first_and_the_list_is_capped() {
        let backend = Backend::Memory(MemoryBackend::new());
        for n in 0..KEPT_PER_FUNCTION + 5 {
            let error = HostError::Failed {
                class: FailureClass::Trapped,
                detail: format!("trap {n}"),
            };
            let response = answer(&backend, "h1", error, &format!("id{n}"), Some("mb"));
            assert_eq!(response.status(), 500);
        }
        let mut kept = Vec::new();
        for _ in 0..200 {
            kept = recent(&backend, "mb").await.unwrap_or_default();
            if kept.first().is_some_and(|r| r.request_id == "id54") && kept.len() == 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(kept.len(), KEPT_PER_FUNCTION);
        assert_eq!(kept[0].request_id, "id54");
        assert_eq!(kept[0].detail, "trap 54");
        assert_eq!(kept[0].host, "h1");
        assert_eq!(kept[49].request_id, "id5");
    }

    #[tokio::test]
    async fn client_errors_at_capacity_answers_and_unknown_functions_are_not_recorded() {
        let backend = Backend::Memory(MemoryBackend::new());
        answer(
            &backend,
            "h",
            HostError::NotFound("x".into()),
            "a",
            Some("mb"),
        );
        answer(
            &backend,
            "h",
            HostError::Unavailable("full".into()),
            "b",
            Some("mb"),
        );
        let unknown = HostError::Failed {
            class: FailureClass::StoreUnavailable,
            detail: "down".into(),
        };
        answer(&backend, "h", unknown, "c", None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(recent(&backend, "mb").await.map(|r| r.len()).ok(), Some(0));
    }
}

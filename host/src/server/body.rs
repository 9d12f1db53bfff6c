//! Reading a request body with a size limit (413) and a deadline (408).

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::HostError;

/// Reads a request body of at most `limit` bytes within `deadline`; `what` names it in the 413
/// and 408 messages.
pub async fn read_body(
    request: Request<Body>,
    limit: usize,
    deadline: Duration,
    what: &str,
    flag: &str,
) -> Result<Bytes, HostError> {
    let too_large = || {
        HostError::PayloadTooLarge(format!(
            "the {what} is larger than the limit of {limit} bytes (host option {flag})"
        ))
    };
    let declared = declared_length(request.headers());
    let mut body = request.into_body();
    if declared.is_some_and(|len| len > limit as u64) {
        drain(body).await;
        return Err(too_large());
    }
    // Most requests (GET, HEAD, DELETE) carry no body: nothing to wait for, so no timer.
    if axum::body::HttpBody::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    // `&mut body`: past the limit, what is left is still here to drain.
    let collected = tokio::time::timeout(deadline, Limited::new(&mut body, limit).collect())
        .await
        .map_err(|_| {
            HostError::RequestTimeout(format!(
                "the {what} did not arrive within {deadline:?} (host option --body-timeout-ms); \
                 send it at once"
            ))
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            drain(body).await;
            Err(too_large())
        }
        Err(e) => Err(HostError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The request's `Content-Length`, when it has a readable one.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The most of a refused body [`drain`] reads, and for how long.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and discards what is left of a body the host refuses (at most [`DRAIN_BYTES`], within
/// [`DRAIN_TIME`]) before the refusal is answered. A server that answers while the client is
/// still sending and then closes resets the connection: the client's write fails with a broken
/// pipe, and most clients (curl, reqwest) report that instead of the 413 and its message. The
/// same bounded "lingering" nginx does; a body declared larger than the bound is not read at all
/// (that client sees a reset, as from any server).
pub async fn drain(mut body: Body) {
    if axum::body::HttpBody::size_hint(&body).lower() > DRAIN_BYTES {
        return;
    }
    let discard = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |data| data.len() as u64);
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

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
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // Most requests (GET, HEAD, DELETE) carry no body: nothing to wait for, so no timer.
    if axum::body::HttpBody::is_end_stream(request.body()) {
        return Ok(Bytes::new());
    }
    let collected = tokio::time::timeout(
        deadline,
        Limited::new(request.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| {
        HostError::RequestTimeout(format!(
            "the {what} did not arrive within {deadline:?} (host option --body-timeout-ms); \
                 send it at once"
        ))
    })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(HostError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

//! Invocation: `/fn/{name}` and `/fn/{name}/{*path}`, any method. Turns the HTTP request into the
//! WIT `request`, runs it on a fresh instance, and turns the guest's `response` back into HTTP,
//! refusing anything that is not valid HTTP.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::{self, CallError, Request as GuestRequest};
use crate::error::HostError;
use crate::guest_log::GuestLog;
use crate::kv::KvSession;
use crate::metrics::UNKNOWN_FUNCTION;
use crate::server::{AppState, read_body};

/// How long a request may wait for a free instance slot before it is refused with 503.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Response headers the host owns: the guest's values would conflict with the framing hyper
/// computes from the body.
const HOST_OWNED_HEADERS: &[HeaderName] = &[
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
];

/// Handles `/fn/{name}` and `/fn/{name}/{*path}`; the guest path is taken from the URI so it
/// stays exactly as sent (not percent-decoded).
pub async fn invoke(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    request: Request<Body>,
) -> Response {
    let name = params
        .into_iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let request_id = new_request_id();
    let started = Instant::now();
    // Requests for names that are not deployed share one label, so random names cannot blow up
    // the number of metric series.
    let (label, response) = match run(&state, &name, &request_id, request).await {
        Ok(response) => (name.as_str(), response),
        Err(e @ HostError::NotFound(_)) => (UNKNOWN_FUNCTION, e.into_response()),
        Err(e) => (name.as_str(), e.into_response()),
    };
    state
        .metrics
        .request(label, response.status().as_u16(), started.elapsed());
    with_request_id(response, &request_id)
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn run(
    state: &AppState,
    name: &str,
    request_id: &str,
    request: Request<Body>,
) -> Result<Response, HostError> {
    let ready = state.registry.resolve(name).await?;
    let guest_request = to_guest_request(name, request, state.settings.max_body_bytes).await?;
    let _slot = tokio::time::timeout(SLOT_WAIT, state.instance_slots.acquire())
        .await
        .map_err(|_| {
            HostError::Unavailable("the host is at its instance limit; retry shortly".into())
        })?
        .map_err(|_| HostError::Unavailable("the host is shutting down".into()))?;
    let log = GuestLog::new(name, request_id);
    let kv = KvSession::new(
        state.backend.clone(),
        &ready.entry.app,
        state.metrics.clone(),
    );
    let outcome = state
        .runtime
        .call(
            name,
            &ready.compiled,
            kv,
            &log,
            &state.settings.limits,
            &state.metrics,
            guest_request,
        )
        .await;
    log.emit();
    let guest_response = outcome.map_err(|e| match (&e, log.last_stderr_line()) {
        // A Rust guest prints its panic message to stderr just before it traps: the most useful
        // line for whoever reads the 500.
        (CallError::Trap(_), Some(line)) => {
            HostError::GuestFailed(format!("{e}; the guest's last stderr line: {line}"))
        }
        _ => HostError::from(e),
    })?;
    to_http_response(guest_response)
}

/// The WIT request: path below `/fn/{name}`, raw query, lower-case header names, whole body.
async fn to_guest_request(
    name: &str,
    request: Request<Body>,
    max_body: usize,
) -> Result<GuestRequest, HostError> {
    let method = request.method().as_str().to_owned();
    let uri = request.uri();
    let full_path = uri.path();
    let prefix_len = "/fn/".len() + name.len();
    let path = match full_path.get(prefix_len..) {
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => "/".to_owned(),
    };
    let query = uri.query().unwrap_or_default().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = read_body(request, max_body, "request body", "--max-body-bytes").await?;
    Ok(GuestRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn to_http_response(guest: engine::Response) -> Result<Response, HostError> {
    let status = StatusCode::from_u16(guest.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            HostError::BadGuestResponse(format!(
                "the function answered with invalid status {}",
                guest.status
            ))
        })?;
    let mut response = Response::new(Body::from(guest.body));
    *response.status_mut() = status;
    for (name, value) in guest.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            HostError::BadGuestResponse(format!(
                "the function answered with invalid header name {name:?}"
            ))
        })?;
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            HostError::BadGuestResponse(format!(
                "the function answered with an invalid value for header `{name}`"
            ))
        })?;
        if !HOST_OWNED_HEADERS.contains(&header_name) {
            response.headers_mut().append(header_name, header_value);
        }
    }
    Ok(response)
}

/// 16 hex digits, random: unique enough to find one request in the logs of many hosts.
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(status: u16, headers: &[(&str, &str)]) -> engine::Response {
        engine::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"hi".to_vec(),
        }
    }

    #[test]
    fn invalid_status_or_headers_are_refused() {
        assert!(to_http_response(guest(200, &[("content-type", "text/plain")])).is_ok());
        assert!(matches!(
            to_http_response(guest(42, &[])),
            Err(HostError::BadGuestResponse(_))
        ));
        assert!(matches!(
            to_http_response(guest(1000, &[])),
            Err(HostError::BadGuestResponse(_))
        ));
        assert!(matches!(
            to_http_response(guest(200, &[("bad name", "x")])),
            Err(HostError::BadGuestResponse(_))
        ));
        assert!(matches!(
            to_http_response(guest(200, &[("x", "a\r\nb")])),
            Err(HostError::BadGuestResponse(_))
        ));
    }

    #[test]
    fn host_owned_headers_from_the_guest_are_dropped() {
        let response =
            to_http_response(guest(201, &[("content-length", "999"), ("x-a", "1")])).ok();
        let response = response.as_ref();
        assert_eq!(response.map(|r| r.status()), Some(StatusCode::CREATED));
        assert_eq!(
            response.and_then(|r| r.headers().get("content-length")),
            None
        );
        assert!(response.and_then(|r| r.headers().get("x-a")).is_some());
    }
}

//! Invocation: `/fn/{name}` and `/fn/{name}/{*path}`, any method. Turns the HTTP request into the
//! world-neutral [`GuestRequest`], runs it on a fresh instance of whatever world the function
//! speaks, and sends the guest's checked answer back.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
#[cfg(test)]
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};

use crate::engine::CallError;
use crate::error::HostError;
use crate::guest_log::GuestLog;
use crate::kv::KvSession;
use crate::metrics::UNKNOWN_FUNCTION;
use crate::server::{AppState, read_body};
use crate::worlds::{GuestRequest, GuestResponse};

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
    let limits = state.settings.limits_for(&ready.entry);
    let outcome = state
        .runtime
        .call(
            name,
            &ready.compiled,
            kv,
            &log,
            &limits,
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
    Ok(to_http_response(guest_response))
}

/// The world-neutral request: path below `/fn/{name}`, raw query, the client's `Host`, headers
/// and the whole body.
async fn to_guest_request(
    name: &str,
    request: Request<Body>,
    max_body: usize,
) -> Result<GuestRequest, HostError> {
    let method = request.method().clone();
    let uri = request.uri();
    let full_path = uri.path();
    let prefix_len = "/fn/".len() + name.len();
    let path = match full_path.get(prefix_len..) {
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => "/".to_owned(),
    };
    let query = uri.query().unwrap_or_default().to_owned();
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
        .to_owned();
    let headers = request.headers().clone();
    let body = read_body(request, max_body, "request body", "--max-body-bytes").await?;
    Ok(GuestRequest {
        method,
        path,
        query,
        authority,
        headers,
        body,
    })
}

/// The guest's answer as an HTTP response, minus the headers the host owns.
fn to_http_response(guest: GuestResponse) -> Response {
    let (mut parts, body) = guest.into_parts();
    for name in HOST_OWNED_HEADERS {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Body::from(body))
}

/// 16 hex digits, random: unique enough to find one request in the logs of many hosts.
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_owned_headers_from_the_guest_are_dropped() {
        let guest = http::Response::builder()
            .status(201)
            .header("content-length", "999")
            .header("x-a", "1")
            .body(bytes::Bytes::from_static(b"hi"))
            .expect("a valid response");
        let response = to_http_response(guest);
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers().get("content-length"), None);
        assert!(response.headers().get("x-a").is_some());
    }
}

//! Invocation: `/fn/{name}` and `/fn/{name}/{*path}`, any method. Turns the HTTP request into the
//! world-neutral [`GuestRequest`], runs it on a fresh instance of whatever world the function
//! speaks, and sends the guest's checked answer back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::response::Response;

use crate::engine::CallError;
use crate::error::{FailureClass, HostError};
use crate::failures;
use crate::guest_log::GuestLog;
use crate::kv::KvSession;
use crate::metrics::{FunctionSeries, UNKNOWN_FUNCTION};
use crate::registry::{Ready, is_valid_name};
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

/// Handles `/fn/{name}`, `/fn/{name}/` and `/fn/{name}/{*path}`; the name and the guest path
/// are taken from the raw URI, so the path stays exactly as sent (not percent-decoded) and a
/// percent-encoded name is not a name at all.
pub async fn invoke(State(state): State<AppState>, request: Request<Body>) -> Response {
    // Every line the host logs for this request (its errors, its guest's output, a refused
    // outbound call, a failure record it could not write) names the request id, so one request
    // can be followed in the log. Each names it itself, rather than through a tracing span
    // around the request: creating, entering and closing that span on every poll cost 5-7% of
    // the host's CPU per request (scripts/bench-ab, hello and kv increment).
    let request_id = new_request_id();
    let started = Instant::now();
    let (name, path) = split_route(request.uri().path());
    let (name, path) = (name.to_owned(), path.to_owned());
    // Only deployed, resolvable functions get a metric series of their own: random or invalid
    // names, and names whose lookup failed, share one label.
    let (series, response) = if !is_valid_name(&name) {
        let e = HostError::NotFound(format!(
            "no function named `{name}`: names are 1 to 63 lowercase letters, digits and dashes"
        ));
        // Like every other invoke failure, the body carries the request id.
        (None, e.into_invoke_response(&request_id, None))
    } else {
        let (series, outcome) = run(&state, &name, path, &request_id, request).await;
        let response = match outcome {
            Ok(response) => response,
            Err(e) => {
                // Failures are recorded under deployed names only; one that cannot be loaded is
                // deployed too, and its operator needs the reason.
                let deployed = series.is_some() || e.class() == Some(FailureClass::CannotLoad);
                let function = deployed.then_some(name.as_str());
                failures::answer(&state.backend, &state.fleet.id, e, &request_id, function)
            }
        };
        (series, response)
    };
    let series = series.unwrap_or_else(|| state.metrics.function(UNKNOWN_FUNCTION));
    state
        .metrics
        .request(&series, response.status().as_u16(), started.elapsed());
    with_request_id(response, &request_id)
}

/// The header every invocation answer carries its request id in (a constant: a `&str` name
/// would be parsed again on every request).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// A permit of `slots`: at once when one is free (no timer), else after waiting up to
/// [`SLOT_WAIT`]; 503 with `full()`'s message when none frees in time.
async fn acquire(
    slots: &Arc<Semaphore>,
    full: impl FnOnce() -> String,
) -> Result<OwnedSemaphorePermit, HostError> {
    match slots.clone().try_acquire_owned() {
        Ok(permit) => Ok(permit),
        Err(TryAcquireError::Closed) => {
            Err(HostError::Unavailable("the host is shutting down".into()))
        }
        Err(TryAcquireError::NoPermits) => {
            tokio::time::timeout(SLOT_WAIT, slots.clone().acquire_owned())
                .await
                .map_err(|_| HostError::Unavailable(full()))?
                .map_err(|_| HostError::Unavailable("the host is shutting down".into()))
        }
    }
}

/// `/fn/{name}{path}` → (`name`, `path`), with `path` `/` when empty. Raw, not decoded.
/// Public for the `conversion` fuzz target (`fuzz/`).
pub fn split_route(uri_path: &str) -> (&str, &str) {
    let rest = uri_path.strip_prefix("/fn/").unwrap_or_default();
    match rest.find('/') {
        Some(slash) if slash + 1 < rest.len() => (&rest[..slash], &rest[slash..]),
        Some(slash) => (&rest[..slash], "/"),
        None => (rest, "/"),
    }
}

/// Runs the request; also gives the function's metric series once it resolved.
async fn run(
    state: &AppState,
    name: &str,
    path: String,
    request_id: &str,
    request: Request<Body>,
) -> (Option<Arc<FunctionSeries>>, Result<Response, HostError>) {
    let ready = match state.registry.resolve(name).await {
        Ok(ready) => ready,
        Err(e) => return (None, Err(HostError::from(e))),
    };
    let series = state.metrics.function(name);
    let outcome = call(state, name, &series, path, request_id, request, ready).await;
    (Some(series), outcome)
}

async fn call(
    state: &AppState,
    name: &str,
    series: &Arc<FunctionSeries>,
    path: String,
    request_id: &str,
    request: Request<Body>,
    ready: Ready,
) -> Result<Response, HostError> {
    // Shed load before buffering another body: past the in-flight cap, 503 at once.
    let _in_flight = state.in_flight.clone().try_acquire_owned().map_err(|_| {
        HostError::Unavailable(format!(
            "the host has {} requests in flight; retry shortly or on another host",
            state.settings.max_in_flight
        ))
    })?;
    let mut guest_request = to_guest_request(
        path,
        request,
        state.settings.max_body_bytes,
        state.settings.body_timeout,
    )
    .await?;
    crate::cookies::scope_request(&ready.entry.app, &mut guest_request.headers);
    let entry = ready.entry.clone();
    // Two waits, both bounded: a place among this function's concurrent calls (so one hot
    // function cannot take every slot), then an instance slot of the host's pool.
    let function_slot = match state.guests.function_permits(name) {
        Some(cap) => Some(
            acquire(&cap, || {
                format!(
                    "function `{name}` is at its concurrency limit of {} calls; retry shortly",
                    state.settings.max_concurrency_per_function
                )
            })
            .await?,
        ),
        None => None,
    };
    let instance_slot = acquire(&state.instance_slots, || {
        "the host is at its instance limit; retry shortly".into()
    })
    .await?;
    let log = GuestLog::new(name, request_id);
    let kv_budget = state.settings.kv_budget_for(&ready.entry);
    let limits = state.settings.limits_for(&ready.entry);
    let runtime = state.runtime.clone();
    let metrics = state.metrics.clone();
    let series = series.clone();
    // The guest runs on a guest thread (the one serving this connection, unless that one is
    // busy with CPU-bound guests; see `Guests::run`), as a task of its own, and reaches the
    // store through that thread's connection. The slots travel with it, so they are held
    // exactly as long as it runs, even if the client goes away. A task of its own even on the
    // thread serving the connection: polled by the connection's task instead (the call boxed,
    // and spawned only if the client went away first), it cost more CPU per request
    // (scripts/bench-ab, LTO build, 3 rounds: hello 1.29x, kv increment 1.17x, cart add 1.18x),
    // likely because each answer was then written as soon as it was ready, not with the others
    // that thread had made meanwhile, so the client was woken once per answer.
    // Boxed here, once: the spawn then moves a pointer, and this request's own future does
    // not carry the guest's (several KiB) inside it.
    let (outcome, log) = state
        .guests
        .run(move |store| {
            Box::pin(async move {
                let kv =
                    KvSession::with_budget(store, &ready.entry.app, metrics.clone(), kv_budget);
                let outcome = runtime
                    .call(
                        &series,
                        &ready.compiled,
                        kv,
                        &log,
                        &limits,
                        &metrics,
                        guest_request,
                    )
                    .await;
                drop((instance_slot, function_slot));
                (outcome, log)
            })
        })
        .await
        .map_err(|e| HostError::Internal(format!("the guest task failed: {e}")))?;
    log.emit();
    let guest_response = outcome.map_err(|e| match (&e, log.last_stderr_line()) {
        // A Rust guest prints its panic message to stderr just before it traps: the most useful
        // line for the operator reading the failure (the caller is not shown it).
        (CallError::Trap(_), Some(line)) => HostError::Failed {
            class: FailureClass::Trapped,
            detail: format!("{e}; the guest's last stderr line: {line}"),
        },
        _ => HostError::from(e),
    })?;
    let mut response = to_http_response(guest_response);
    crate::cookies::scope_response(&entry.app, response.headers_mut());
    Ok(response)
}

/// The world-neutral request: path below `/fn/{name}`, raw query, the client's `Host`, headers
/// and the whole body. `HEAD` reaches the guest as `GET`; hyper sends no body for it.
/// Public for the `conversion` fuzz target (`fuzz/`).
pub async fn to_guest_request(
    path: String,
    request: Request<Body>,
    max_body: usize,
    body_timeout: Duration,
) -> Result<GuestRequest, HostError> {
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let uri = request.uri();
    let query = uri.query().unwrap_or_default().to_owned();
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
        .to_owned();
    // The headers move to the guest; the body limit only needs the length they declared.
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let mut request = Request::from_parts(parts, body);
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length.clone());
    }
    let body = read_body(
        request,
        max_body,
        body_timeout,
        "request body",
        "--max-body-bytes",
    )
    .await?;
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
/// Public for the `conversion` fuzz target (`fuzz/`).
pub fn to_http_response(guest: GuestResponse) -> Response {
    let (mut parts, body) = guest.into_parts();
    for name in HOST_OWNED_HEADERS {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Body::from(body))
}

/// 16 hex digits, random: unique enough to find one request in the logs of many hosts.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u64>();
    // Written digit by digit: `format!` costs ~5x as much, on every request.
    (0..16)
        .rev()
        .map(|i| char::from(HEX[((bits >> (i * 4)) & 0xf) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn the_route_splits_into_a_raw_name_and_path() {
        assert_eq!(split_route("/fn/cart"), ("cart", "/"));
        assert_eq!(split_route("/fn/cart/"), ("cart", "/"));
        assert_eq!(split_route("/fn/cart/items/3"), ("cart", "/items/3"));
        assert_eq!(split_route("/fn/cart/a%20b/"), ("cart", "/a%20b/"));
        // Not decoded: `%63art` is not the name `cart`.
        assert_eq!(split_route("/fn/%63art/items/3"), ("%63art", "/items/3"));
    }

    #[test]
    fn request_ids_are_sixteen_lowercase_hex_digits() {
        let ids: Vec<String> = (0..100).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        // 100 random 64-bit ids: a repeat would mean the generator is broken.
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

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

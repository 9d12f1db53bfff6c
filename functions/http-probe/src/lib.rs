//! The HTTP probe (`/fn/http-probe`): the recycle probe as a standard `wasi:http/proxy` component
//! that keeps its counter in `wasi:keyvalue@0.2.0-draft`, so a test can hold a wasi:http guest to
//! the same promises as a goldfish-world guest.
//!
//! It speaks the recycle probe's protocol exactly. Every request but `GET /count` adds one to a
//! global and atomically adds one to `probe:calls` in bucket `default`, and answers 200
//! `{"global": <global after the add>, "kv": <counter after the add>}`. A fresh instance per
//! request means `global` is always 1 while `kv` counts every call. `GET /count` answers
//! `{"kv": <counter>}` (0 before the first call) and changes nothing. A keyvalue error answers
//! 503 `{"error": "..."}`.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use keyvalue::wasi::keyvalue::{atomics, store};
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The bindings generated from the vendored `wasi:keyvalue@0.2.0-draft`. They sit in their own
/// module because they generate a `wasi` module of their own, which would shadow the `wasi` crate.
mod keyvalue {
    wit_bindgen::generate!({ path: "../../wit/vendor/keyvalue-draft", world: "imports" });
}

/// The bucket the host gives every function; the host namespaces it by app.
const BUCKET: &str = "default";

/// The kv key counting every probe call, on every host (the same key as the recycle probe's).
const CALLS_KEY: &str = "probe:calls";

/// Calls this instance has served. Lives in linear memory, so it survives exactly as long as the
/// instance does.
static CALLS_ON_THIS_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The exported component.
struct Probe;

impl wasi::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let is_count = matches!(request.method(), Method::Get)
            && request
                .path_with_query()
                .is_some_and(|path| path.split('?').next() == Some("/count"));
        let (status, body) = match if is_count { count() } else { probe() } {
            Ok(body) => (200, body),
            Err(error) => {
                eprintln!("keyvalue failed: {error:?}");
                (
                    503,
                    format!(
                        r#"{{"error":"keyvalue failed, retry: {}"}}"#,
                        error_name(&error)
                    ),
                )
            }
        };
        respond(response_out, status, &body);
    }
}

wasi::http::proxy::export!(Probe);

/// Counts this call in the global and in the store.
fn probe() -> Result<String, store::Error> {
    let global = CALLS_ON_THIS_INSTANCE.fetch_add(1, Ordering::Relaxed) + 1;
    let bucket = store::open(BUCKET)?;
    let total = atomics::increment(&bucket, CALLS_KEY, 1)?;
    Ok(format!(r#"{{"global":{global},"kv":{total}}}"#))
}

/// Reads the counter without counting.
fn count() -> Result<String, store::Error> {
    let bucket = store::open(BUCKET)?;
    let total = match bucket.get(CALLS_KEY)? {
        // `increment` stores decimal text; anything else means someone else wrote the key.
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| store::Error::Other(format!("{CALLS_KEY} is not an integer")))?,
        None => 0,
    };
    Ok(format!(r#"{{"kv":{total}}}"#))
}

/// The WIT name of `error`'s case, safe to show (the payload is for logs).
fn error_name(error: &store::Error) -> &'static str {
    match error {
        store::Error::NoSuchStore => "no-such-store",
        store::Error::AccessDenied => "access-denied",
        store::Error::Other(_) => "other",
    }
}

/// Sends `body` as a JSON response with `status`.
fn respond(response_out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::new();
    // Cannot fail: the name and value are valid and a fresh `Fields` is mutable.
    let _ = headers.append("content-type", b"application/json");
    let response = OutgoingResponse::new(headers);
    // Cannot fail: every u16 from 100 to 599 is a valid status, and we only pass 200 and 503.
    let _ = response.set_status_code(status);
    // Cannot fail: `body` is taken once, from a response we just made.
    let Ok(outgoing_body) = response.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(response));
    // A write fails only if the client went away; then there is nobody left to tell.
    if let Ok(mut stream) = outgoing_body.write() {
        let _ = stream.write_all(body.as_bytes());
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing_body, None);
}

//! The recycle probe (`/fn/recycle-probe`): shows whether an instance, and so its globals, ever
//! serves more than one request.
//!
//! Every request but `GET /count` adds one to a global and to the kv counter `probe:calls`, and
//! answers `{"global": <global after the add>, "kv": <counter after the add>}`. Goldfish promises
//! a fresh instance per request, so `global` must always be 1 while `kv` counts every call;
//! a stress test that ever sees `global > 1` has caught an instance being reused.
//! `GET /count` answers `{"kv": <counter>}` (0 before the first call) and changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use bindings::goldfish::function::kv;
use bindings::{Guest, Request, Response};

/// The bindings generated from `wit/function.wit`.
mod bindings {
    // The generated export shim takes one parameter per flattened field of `request`.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ path: "../../wit", world: "function" });
}

/// The kv key counting every probe call, on every host.
const CALLS_KEY: &str = "probe:calls";

/// Calls this instance has served. Lives in linear memory, so it survives exactly as long as the
/// instance does.
static CALLS_ON_THIS_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The exported component.
struct Probe;

impl Guest for Probe {
    fn handle(request: Request) -> Response {
        let result = if request.method == "GET" && request.path == "/count" {
            count()
        } else {
            probe()
        };
        match result {
            Ok(body) => json(200, body),
            Err(error) => {
                eprintln!("kv failed: {error}");
                json(
                    503,
                    format!(r#"{{"error":"kv failed, retry: {}"}}"#, error_name(&error)),
                )
            }
        }
    }
}

bindings::export!(Probe with_types_in bindings);

/// Counts this call in the global and in kv.
fn probe() -> Result<String, kv::Error> {
    let global = CALLS_ON_THIS_INSTANCE.fetch_add(1, Ordering::Relaxed) + 1;
    let total = kv::increment(CALLS_KEY, 1)?;
    Ok(format!(r#"{{"global":{global},"kv":{total}}}"#))
}

/// Reads the kv counter without counting.
fn count() -> Result<String, kv::Error> {
    let total = match kv::get(CALLS_KEY)? {
        // `increment` stores decimal text; anything else means someone else wrote the key.
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or(kv::Error::NotAnInteger)?,
        None => 0,
    };
    Ok(format!(r#"{{"kv":{total}}}"#))
}

/// The WIT name of `error`'s case, safe to show (the payloads are for logs).
fn error_name(error: &kv::Error) -> &'static str {
    match error {
        kv::Error::InvalidKey(_) => "invalid-key",
        kv::Error::ValueTooLarge(_) => "value-too-large",
        kv::Error::NotAnInteger => "not-an-integer",
        kv::Error::InvalidCursor => "invalid-cursor",
        kv::Error::Unavailable(_) => "unavailable",
    }
}

fn json(status: u16, body: String) -> Response {
    Response {
        status,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.into_bytes(),
    }
}

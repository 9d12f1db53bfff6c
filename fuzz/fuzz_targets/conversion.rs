//! Request and response conversion: any HTTP request the host can receive on `/fn/...` becomes
//! a world-neutral `GuestRequest` or a 4xx (never a panic, never a 5xx), and that request converts
//! to both worlds' shapes: the goldfish WIT record, and a `wasi:http` request (a failure there
//! would be a trap, a 500 the client caused). Any answer a goldfish guest gives is valid HTTP or
//! refused with a message, and the host's own framing headers never come from the guest.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::response::IntoResponse;
use goldfish::bindings::goldfish::Response as WitResponse;
use goldfish::invoke::{split_route, to_guest_request, to_http_response};
use goldfish::worlds::{GuestRequest, goldfish as world, wasi_http};
use http::{HeaderName, HeaderValue, Method, Request, header};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    method: Vec<u8>,
    /// What follows `/fn/` in the request target.
    target: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// `--max-body-bytes`.
    max_body: u16,
    /// What a goldfish guest answers.
    status: u16,
    guest_headers: Vec<(String, String)>,
    guest_body: Vec<u8>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

fn copy(request: &GuestRequest) -> GuestRequest {
    GuestRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        authority: request.authority.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    }
}

fuzz_target!(|input: Input| {
    // Only what hyper could hand the host: a valid method, target and headers.
    let Ok(method) = Method::from_bytes(&input.method) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(format!("/fn/{}", input.target)) else {
        return;
    };
    let mut request = Request::builder().method(method.clone()).uri(uri);
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            return;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Body::from(input.body.clone())) else {
        return;
    };

    let (name, path) = split_route(request.uri().path());
    assert!(!name.contains('/'), "{name:?}");
    assert!(path.starts_with('/'), "{path:?}");
    let path = path.to_owned();
    let max_body = usize::from(input.max_body);
    let converted = runtime().block_on(to_guest_request(
        path.clone(),
        request,
        max_body,
        Duration::from_secs(1),
    ));
    match converted {
        Ok(guest) => {
            assert_eq!(guest.path, path);
            assert!(guest.body.len() <= max_body);
            assert_ne!(guest.method, Method::HEAD);
            let wit = world::to_wit(copy(&guest));
            assert_eq!(wit.headers.len(), guest.headers.len());
            assert_eq!(wit.body.len(), guest.body.len());
            if let Err(e) = wasi_http::to_hyper(guest) {
                panic!("a request the host accepted is no wasi:http request: {e:#}");
            }
        }
        Err(e) => {
            let response = e.into_response();
            assert!(response.status().is_client_error(), "{}", response.status());
        }
    }

    let answer = WitResponse {
        status: input.status,
        headers: input.guest_headers,
        body: input.guest_body,
    };
    match world::from_wit(answer) {
        Ok(response) => {
            assert!((200..=599).contains(&response.status().as_u16()));
            let response = to_http_response(response);
            for owned in [
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
            ] {
                assert!(!response.headers().contains_key(&owned), "{owned}");
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});

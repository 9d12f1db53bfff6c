//! The `wasi:http/proxy` world (0.2.x): the request becomes a `wasi:http` incoming request whose
//! URI is the path below `/fn/{name}` with the client's `Host` as authority; the guest's response
//! is read to the end while `handle` runs (its body is streamed through a small buffer, so it
//! must be drained concurrently), then the instance is dropped and the buffered response sent.

use std::pin::pin;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::HostState;
use crate::worlds::{GuestRequest, GuestResponse};

/// The export that makes a component a `wasi:http` handler (any 0.2.x version).
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// Instantiates `pre` in `store`, calls `on_instance` once the instance exists, and runs
/// `incoming-handler.handle`, collecting at most `max_body` bytes of response body. The outer
/// `Err` is a trap; the inner one says why there is no valid answer.
pub async fn run(
    pre: &ProxyPre<HostState>,
    store: &mut Store<HostState>,
    request: GuestRequest,
    max_body: usize,
    on_instance: impl FnOnce(),
) -> wasmtime::Result<Result<GuestResponse, String>> {
    let request = to_hyper(request)?;
    let proxy = pre.instantiate_async(&mut *store).await?;
    on_instance();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let outparam = store.data_mut().http().new_response_outparam(sender)?;

    let mut call = pin!(proxy.wasi_http_incoming_handler().call_handle(
        &mut *store,
        incoming,
        outparam
    ));
    let mut collect = pin!(async move {
        match receiver.await {
            Ok(Ok(response)) => collect(response, max_body).await,
            Ok(Err(code)) => Err(format!("the function answered with an error: {code:?}")),
            Err(_) => Err("the function returned without setting a response".to_owned()),
        }
    });
    // The body only moves while both run; a trap ends the call at once, whatever the body does.
    tokio::select! {
        called = &mut call => {
            called?;
            Ok(collect.await)
        }
        collected = &mut collect => {
            call.await?;
            Ok(collected)
        }
    }
}

/// The `wasi:http` request: URI `http://{authority}{path}?{query}`, headers and body as sent.
/// Public for the `conversion` fuzz target (`fuzz/`).
pub fn to_hyper(request: GuestRequest) -> wasmtime::Result<http::Request<Full<Bytes>>> {
    let path_and_query = if request.query.is_empty() {
        PathAndQuery::try_from(request.path)?
    } else {
        PathAndQuery::try_from(format!("{}?{}", request.path, request.query))?
    };
    let authority = Authority::try_from(request.authority.as_str())
        .unwrap_or_else(|_| Authority::from_static("localhost"));
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()?;
    let mut hyper = http::Request::new(Full::new(request.body));
    *hyper.method_mut() = request.method;
    *hyper.uri_mut() = uri;
    *hyper.headers_mut() = request.headers;
    Ok(hyper)
}

/// Reads the guest's response body, refusing more than `max_body` bytes.
async fn collect(
    response: http::Response<HyperOutgoingBody>,
    max_body: usize,
) -> Result<GuestResponse, String> {
    let (parts, body) = response.into_parts();
    match Limited::new(body, max_body).collect().await {
        Ok(body) => Ok(http::Response::from_parts(parts, body.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(format!(
            "the function's response body is larger than its limit of {max_body} bytes"
        )),
        Err(e) => Err(format!("the function's response body failed: {e}")),
    }
}

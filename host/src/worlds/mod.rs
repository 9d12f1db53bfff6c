//! The guest ABIs Goldfish runs, one file each, and the world-neutral request and response the
//! rest of the host speaks. A component's world is told apart at deploy time by its exports:
//! - [`goldfish`]: `goldfish:function/function`, exporting `handle(request) -> response`: the
//!   whole request in, the whole response out, in one call (the fastest path);
//! - [`wasi_http`]: `wasi:http/proxy` 0.2.x, exporting `wasi:http/incoming-handler`, what Spin,
//!   `wasmtime serve`, wasmCloud and the JavaScript and Python toolchains produce.

pub mod goldfish;
pub mod wasi_http;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};

/// Which ABI a component speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `goldfish:function/function`.
    Goldfish,
    /// `wasi:http/proxy` 0.2.x.
    WasiHttp,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Goldfish => "goldfish",
            World::WasiHttp => "wasi-http",
        }
    }
}

/// An invocation, as the host received it, with the route prefix `/fn/{name}` removed.
#[derive(Debug)]
pub struct GuestRequest {
    pub method: Method,
    /// The path below `/fn/{name}`, starting with `/`, not percent-decoded.
    pub path: String,
    /// The raw query without `?`; empty when there is none.
    pub query: String,
    /// The `Host` the client asked for (a wasi:http guest sees it as the authority).
    pub authority: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A function's answer, already checked to be valid HTTP.
pub type GuestResponse = http::Response<Bytes>;

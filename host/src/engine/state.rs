//! What one request's [`wasmtime::Store`] owns, and the capabilities it grants: the WASI 0.2
//! contexts (with no preopens, no network, empty environment and stdin), the `wasi:http`
//! context (outbound requests denied), the memory limiter and the kv session. Dropped with the
//! store at the end of the request.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::clocks::WasiClocksCtx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::guest_log::{Capture, GuestLog};
use crate::kv::KvSession;

/// Most elements a guest table may grow to (wit-bindgen guests use a few hundred; language
/// runtimes a few thousand).
pub const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Most resources (streams, bodies, buckets, cas handles...) one request's guest may hold at
/// once. wasmtime's default is 1,000,000 entries of host memory outside the guest's memory
/// limit; real guests hold a few dozen.
pub const MAX_RESOURCES: usize = 10_000;

/// The store data of one request.
pub struct HostState {
    /// Built on the guest's first WASI call (see [`HostState::new`]); many guests never make one.
    /// Not for `wasi:random`, `wasi:clocks`, `wasi:cli` and `wasi:io` (see `config::linker`): only
    /// a guest touching the filesystem or sockets (every attempt of which fails) builds it.
    wasi: Option<WasiCtx>,
    /// `wasi:clocks`' own context, built on the guest's first clock call (see `wasi_parts`).
    pub(super) clocks: Option<WasiClocksCtx>,
    /// Where the guest's stdout and stderr go (see `wasi_parts`).
    pub(super) output: (Capture, Capture),
    http: WasiHttpCtx,
    http_hooks: DenyOutbound,
    /// Every resource handed to the guest: WASI streams, HTTP bodies, kv buckets, cas handles.
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryLimits,
    pub(crate) kv: KvSession,
    /// Set at the first epoch tick that finds the guest running wasm: its guest thread then
    /// counts it as CPU-bound, and sends light calls elsewhere, until this store drops.
    pub(crate) cpu_bound: Option<crate::guests::Counted>,
}

impl HostState {
    /// A request's state: WASI with stdout and stderr going to `log` and nothing else granted.
    /// The WASI context itself is built only when the guest first touches the filesystem or
    /// sockets (see [`wasi_ctx`]): building it seeds two random generators and allocates a
    /// dozen objects, which other guests never need.
    pub fn new(kv: KvSession, log: &GuestLog, max_memory_bytes: usize) -> Self {
        HostState {
            wasi: None,
            clocks: None,
            output: (log.stdout(), log.stderr()),
            http: WasiHttpCtx::new(),
            http_hooks: DenyOutbound {
                request_id: log.request_id(),
            },
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limits: MemoryLimits {
                max_memory_bytes,
                hit: false,
                cpu_ticks: 0,
                cpu_exceeded: false,
            },
            kv,
            cpu_bound: None,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(wasi_ctx),
            table: &mut self.table,
        }
    }
}

/// What the WASI context still serves, filesystem and sockets, granting nothing: no preopens;
/// TCP, UDP and name lookup off (the builder's defaults), and every socket address refused on
/// top of that. Its CLI, clocks and random parts are never reached: `wasi_parts` serves those
/// interfaces (stdout and stderr into the request's log there).
fn wasi_ctx() -> WasiCtx {
    let mut wasi = WasiCtx::builder();
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    wasi.build()
}

/// wasi:io needs only the resource table (see `engine::config::linker`).
impl wasmtime_wasi_io::IoView for HostState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// `wasi:http/outgoing-handler` is linked (toolchains import it whether or not the code sends
/// anything) but every request fails with `HTTP-request-denied`.
struct DenyOutbound {
    /// The request whose guest asked, for the log line.
    request_id: Arc<str>,
}

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        tracing::debug!(request_id = %self.request_id, uri = %request.uri(), "refused an outbound HTTP request from a guest");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Caps linear memory and tables, and remembers whether the cap was hit so a resulting trap can
/// be reported as "memory limit" rather than an opaque `unreachable`; also counts CPU ticks.
pub(crate) struct MemoryLimits {
    pub(crate) max_memory_bytes: usize,
    pub(crate) hit: bool,
    /// Epoch ticks that found the guest running wasm: its CPU use, in ticks.
    pub(crate) cpu_ticks: u64,
    /// Whether the call was stopped for using more than its CPU budget.
    pub(crate) cpu_exceeded: bool,
}

impl ResourceLimiter for MemoryLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

//! The WebAssembly side: one wasmtime [`Engine`] per host, the linker that defines everything a
//! guest may import (and what each grants), deploy-time validation, and running one request on a
//! fresh instance.
//!
//! Every request gets a new [`Store`] and a new instance from a component pre-instantiated once
//! per digest; both are dropped when the call returns, so nothing the guest did survives. The
//! pooling allocator with copy-on-write memory images and `keep_resident` makes that cheap (a
//! few microseconds). How a call looks inside depends on the component's world
//! ([`crate::worlds`]); the limits, the deadline and the instance accounting here are the same
//! for every world.

mod inlining;
mod state;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, types::ComponentItem};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use self::state::HostState;
use self::state::MAX_TABLE_ELEMENTS;
use crate::bindings;
use crate::guest_log::GuestLog;
use crate::kv::KvSession;
use crate::metrics::{InstanceGuard, Metrics};
use crate::worlds::{self, GuestRequest, GuestResponse, World};

/// How often the epoch advances. A running guest is interrupted at the next tick to yield to the
/// async runtime, so this bounds how long a CPU-bound guest can hold a worker thread, and how
/// late a timed-out request notices.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Default for the concurrent instances one host can hold: the pooling allocator reserves this
/// many slots up front (each a few GiB of address space, not memory), and requests beyond it wait
/// for a slot (see [`crate::invoke`]). `--max-instances` changes it.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;

/// Linear memory kept mapped and resident in a pooled slot after an instance is dropped, so the
/// next instance reuses it without page faults (the bytes are reset, not unmapped). The wasm
/// stack, data segments and small heaps of typical functions fit in this.
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
/// Same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Core instances one component may hold: a wit-bindgen component has a handful (the guest plus
/// canonical-ABI shims); language runtimes linked from several modules have more.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Tables one component may hold (one per core module that defines one).
const MAX_TABLES_PER_COMPONENT: u32 = 16;
/// Linear memories one component may hold; every toolchain we know of uses one.
const MAX_MEMORIES_PER_COMPONENT: u32 = 2;

/// Interfaces (package and interface, without version) the linker defines. A component importing
/// anything else is refused at deploy with the import named. The versions are whatever
/// `wasmtime-wasi` and `wasmtime-wasi-http` define; any semver-compatible 0.2.x import links.
///
/// What each one *grants* is set in [`HostState::new`]: filesystem without preopens, sockets
/// that refuse every address, outbound HTTP that fails with `HTTP-request-denied`, empty
/// environment, arguments and stdin; stdout and stderr go to the host log.
pub const PROVIDED_INTERFACES: &[&str] = &[
    "goldfish:function/types",
    "goldfish:function/kv",
    "wasi:keyvalue/store",
    "wasi:keyvalue/atomics",
    "wasi:keyvalue/batch",
    "fermyon:spin/key-value",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Why a component was refused at deploy time.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// Not WebAssembly at all.
    #[error(
        "the upload is not WebAssembly (no `\\0asm` header); upload a component built for wasm32-wasip2"
    )]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "the upload is a core WebAssembly module, not a component; build with `--target wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// Imports an interface Goldfish does not provide.
    #[error(
        "the component imports `{0}`, which Goldfish does not provide; functions may import \
         goldfish:function/kv, wasi:keyvalue (0.2.0-draft, 0.2.0-draft2), fermyon:spin/key-value, \
         wasi:http and the rest of WASI 0.2"
    )]
    UnsupportedImport(String),
    /// Exports neither world's entry point.
    #[error(
        "the component exports neither `handle` (world goldfish:function/function) nor \
         `wasi:http/incoming-handler` (world wasi:http/proxy); its exports: {0}"
    )]
    MissingExport(String),
    /// Compiling took longer than the host allows.
    #[error(
        "the component did not compile within {0:?} (host option --compile-timeout-secs); make it \
         smaller or raise the limit"
    )]
    CompileTimeout(Duration),
    /// wasmtime could not compile or link it.
    #[error("the component does not compile or link: {0}")]
    Invalid(String),
}

/// A component compiled and linked, ready to instantiate any number of times.
pub struct Compiled {
    world: World,
    pre: Pre,
}

enum Pre {
    Goldfish(bindings::goldfish::FunctionPre<HostState>),
    WasiHttp(ProxyPre<HostState>),
}

impl Compiled {
    pub fn world(&self) -> World {
        self.world
    }
}

/// Per-request bounds.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    pub max_memory_bytes: usize,
    /// Wall-clock deadline: waiting on kv counts.
    pub timeout: Duration,
    /// CPU the guest may use, counted in epoch ticks while it runs wasm code (waiting on kv or
    /// for its turn does not count); `None` for no budget beyond the deadline.
    pub cpu_budget: Option<Duration>,
}

/// Why a call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the function exceeded its memory limit of {0} MiB")]
    MemoryLimit(usize),
    #[error("the function trapped: {0}")]
    Trap(String),
    /// A trap that is the guest recursing past its stack; the reason says which kind.
    #[error("the function trapped: {0}")]
    StackOverflow(String),
    #[error("the function did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the function used more than its CPU budget of {0:?}")]
    CpuBudget(Duration),
    /// The guest answered, but not with valid HTTP.
    #[error("{0}")]
    BadResponse(String),
    /// The pooling allocator had no free slot for one of the instance's parts (component or
    /// core instances, memories, tables, stacks): the host is full, not the guest wrong.
    #[error("the host's instance pool has no free slot ({0}); retry shortly or on another host")]
    PoolExhausted(String),
}

/// How instances get their memories and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Pre-reserved slots reused across instances, copy-on-write images, resident pages reset
    /// in place: what `goldfish serve` uses.
    Pooling,
    /// wasmtime's default: map and unmap per instance. Only a benchmark baseline.
    OnDemand,
}

/// The engine and linker, shared by every request on this host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
}

impl Runtime {
    /// Builds the engine with the pooling allocator: `max_instances` slots of
    /// `max_memory_bytes` each. Starts the epoch ticker thread.
    pub fn new(max_memory_bytes: usize, max_instances: u32) -> anyhow::Result<Arc<Self>> {
        Self::with_allocation(max_memory_bytes, max_instances, Allocation::Pooling)
    }

    /// Like [`Runtime::new`] with a choice of allocator; [`Allocation::OnDemand`] exists as the
    /// baseline in `cargo bench`.
    pub fn with_allocation(
        max_memory_bytes: usize,
        max_instances: u32,
        allocation: Allocation,
    ) -> anyhow::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max_instances)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            // Most components hold a handful of core instances and tables and one memory;
            // the totals leave room for some that hold more.
            .total_core_instances(max_instances.saturating_mul(8))
            .total_tables(max_instances.saturating_mul(4))
            .total_memories(max_instances.saturating_mul(2))
            .total_stacks(max_instances)
            .max_memory_size(max_memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            // Linux >= 6.7: reset only the pages a guest dirtied instead of the whole
            // keep-resident region. Falls back silently where unsupported.
            .pagemap_scan(Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // The only way to stop a guest stuck in a loop without stopping the host.
            .epoch_interruption(true)
            // Copy-on-write memory images: instantiation maps the data segments instead of
            // copying them.
            .memory_init_cow(true)
            .allocation_strategy(match allocation {
                Allocation::Pooling => InstanceAllocationStrategy::Pooling(pool),
                Allocation::OnDemand => InstanceAllocationStrategy::OnDemand,
            });
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let linker = linker(&engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("goldfish-epoch".into())
            .spawn(move || {
                // Ends when the engine is dropped.
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        Ok(Arc::new(Runtime { engine, linker }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Validates and compiles a component: header, imports, exports, compilation and linking.
    /// CPU-heavy (tens of milliseconds for a small Rust function, seconds for a language
    /// runtime): call from a blocking thread.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, ValidationError> {
        self.link(self.compile_component(bytes)?)
    }

    /// The compiling half of [`Runtime::compile`]: machine code, not yet checked against the
    /// linker. The result may be cached with [`Component::serialize`].
    pub fn compile_component(&self, bytes: &[u8]) -> Result<Component, ValidationError> {
        check_header(bytes)?;
        // Before wasmtime's inliner gets to a component bomb (see `inlining`).
        inlining::check(bytes).map_err(ValidationError::Invalid)?;
        Component::new(&self.engine, bytes).map_err(|e| ValidationError::Invalid(format!("{e:#}")))
    }

    /// The checking half of [`Runtime::compile`]: imports, world, linking.
    pub fn link(&self, component: Component) -> Result<Compiled, ValidationError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            let interface = name.split('@').next().unwrap_or(name);
            if !PROVIDED_INTERFACES.contains(&interface) {
                return Err(ValidationError::UnsupportedImport(name.to_owned()));
            }
        }
        let exports: Vec<(String, bool)> = ty
            .exports(&self.engine)
            .map(|(name, item)| {
                (
                    name.to_owned(),
                    matches!(item.ty, ComponentItem::ComponentFunc(_)),
                )
            })
            .collect();
        let world = if exports
            .iter()
            .any(|(name, is_func)| name == worlds::goldfish::HANDLE_EXPORT && *is_func)
        {
            World::Goldfish
        } else if exports.iter().any(|(name, is_func)| {
            !is_func && name.split('@').next() == Some(worlds::wasi_http::INCOMING_HANDLER)
        }) {
            World::WasiHttp
        } else {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            let names = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            return Err(ValidationError::MissingExport(names));
        };
        let invalid = |e: wasmtime::Error| ValidationError::Invalid(format!("{e:#}"));
        let instance_pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = match world {
            World::Goldfish => {
                Pre::Goldfish(bindings::goldfish::FunctionPre::new(instance_pre).map_err(invalid)?)
            }
            World::WasiHttp => Pre::WasiHttp(ProxyPre::new(instance_pre).map_err(invalid)?),
        };
        Ok(Compiled { world, pre })
    }

    /// Runs one request on a fresh instance of `compiled`, then drops the instance.
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        function: &str,
        compiled: &Compiled,
        kv: KvSession,
        log: &GuestLog,
        limits: &RequestLimits,
        metrics: &Arc<Metrics>,
        request: GuestRequest,
    ) -> Result<GuestResponse, CallError> {
        let started = std::time::Instant::now();
        let state = HostState::new(kv, log, limits.max_memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Yield to the executor at every tick: a looping guest then shares its thread, and the
        // timeout below can fire and drop the call. Each tick that finds the guest running wasm
        // counts against its CPU budget.
        store.set_epoch_deadline(1);
        let tick_budget = limits
            .cpu_budget
            .map(|budget| (budget.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64);
        store.epoch_deadline_callback(move |mut store| {
            let limits = &mut store.data_mut().limits;
            limits.cpu_ticks += 1;
            if tick_budget.is_some_and(|budget| limits.cpu_ticks > budget) {
                limits.cpu_exceeded = true;
                return Err(wasmtime::Error::msg("CPU budget exceeded"));
            }
            Ok(UpdateDeadline::Yield(1))
        });

        // Lives outside the call future so that, whatever ends the call (answer, trap, timeout),
        // the instance is counted as dropped only after its store is gone.
        let mut live: Option<InstanceGuard> = None;
        let on_instance = || live = Some(metrics.instance_created(function, started.elapsed()));
        let run = async {
            match &compiled.pre {
                Pre::Goldfish(pre) => {
                    worlds::goldfish::run(pre, &mut store, request, on_instance).await
                }
                Pre::WasiHttp(pre) => {
                    let max_body = limits.max_memory_bytes;
                    worlds::wasi_http::run(pre, &mut store, request, max_body, on_instance).await
                }
            }
        };
        let outcome = tokio::time::timeout(limits.timeout, run).await;
        let memory_hit = store.data().limits.hit;
        let cpu_exceeded = store.data().limits.cpu_exceeded;
        drop(store);
        drop(live);
        match outcome {
            Err(_) => Err(CallError::Timeout(limits.timeout)),
            Ok(Err(_)) if cpu_exceeded => Err(CallError::CpuBudget(
                limits.cpu_budget.unwrap_or(limits.timeout),
            )),
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(bad))) => Err(CallError::BadResponse(bad)),
            Ok(Err(e)) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Err(CallError::PoolExhausted(pool_limit(&e)))
            }
            Ok(Err(_)) if memory_hit => Err(CallError::MemoryLimit(limits.max_memory_bytes >> 20)),
            Ok(Err(e)) => Err(describe_trap(&e)),
        }
    }
}

/// Everything a guest may import, linked once per host: all of WASI 0.2 (granting nothing, see
/// [`HostState::new`]), `wasi:http`, and every key-value dialect.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    type Data = HasSelf<HostState>;
    fn own(state: &mut HostState) -> &mut HostState {
        state
    }
    bindings::goldfish::goldfish::function::kv::add_to_linker::<_, Data>(&mut linker, own)?;
    bindings::goldfish::goldfish::function::types::add_to_linker::<_, Data>(&mut linker, own)?;
    bindings::keyvalue_draft::Imports::add_to_linker::<_, Data>(&mut linker, own)?;
    bindings::keyvalue_draft2::Imports::add_to_linker::<_, Data>(&mut linker, own)?;
    bindings::spin_key_value::KeyValueImports::add_to_linker::<_, Data>(&mut linker, own)?;
    Ok(linker)
}

/// Distinguishes garbage and core modules from components by the preamble: `\0asm`, then a
/// version and layer (core: 1,0 / 0,0; component: 0x0d,0 / 1,0).
fn check_header(bytes: &[u8]) -> Result<(), ValidationError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Err(ValidationError::CoreModule),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err(ValidationError::NotWasm),
    }
}

/// Fewest captured frames (wasmtime keeps the innermost 20) that can show deep recursion.
const RECURSION_MIN_FRAMES: usize = 16;

/// Whether the innermost frames are mostly one function calling itself.
fn is_deep_recursion(frames: &[wasmtime::FrameInfo]) -> bool {
    let Some(top) = frames.first() else {
        return false;
    };
    let repeats = frames
        .iter()
        .filter(|f| f.func_index() == top.func_index() && f.module().name() == top.module().name())
        .count();
    frames.len() >= RECURSION_MIN_FRAMES && repeats * 2 >= frames.len()
}

/// Which limit of the pool was reached, in wasmtime's words ("maximum concurrent limit of 16
/// for core instances reached").
fn pool_limit(e: &wasmtime::Error) -> String {
    e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// The trap as a [`CallError`]: its reason first (e.g. "wasm trap: wasm `unreachable`
/// instruction executed"), then the guest backtrace's innermost named function if any, on one
/// line for the log and the operator; a stack overflow is told apart.
fn describe_trap(e: &wasmtime::Error) -> CallError {
    let trap = e.downcast_ref::<wasmtime::Trap>();
    let recursing = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .is_some_and(|backtrace| is_deep_recursion(backtrace.frames()));
    let (mut reason, overflow) = match trap {
        Some(wasmtime::Trap::StackOverflow) => (
            "stack overflow: the function recursed too deeply for the host's wasm stack".to_owned(),
            true,
        ),
        // Languages that keep their own stack in linear memory (Rust, C, ...) overflow it as an
        // out-of-bounds access; a backtrace of one function calling itself tells that apart from
        // a wild pointer.
        Some(wasmtime::Trap::MemoryOutOfBounds) if recursing => (
            "stack overflow: the function recursed until it ran out of its stack \
             (wasm trap: out of bounds memory access)"
                .to_owned(),
            true,
        ),
        Some(trap) => (trap.to_string(), false),
        None => (e.to_string(), false),
    };
    if let Some(frame) = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|backtrace| backtrace.frames().iter().find_map(|f| f.func_name()))
    {
        reason.push_str(&format!(" (in {frame})"));
    }
    if overflow {
        CallError::StackOverflow(reason)
    } else {
        CallError::Trap(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_garbage_core_modules_and_components_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(ValidationError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(ValidationError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"\0as"),
            Err(ValidationError::NotWasm)
        ));
    }
}

//! The WebAssembly side: one wasmtime [`Engine`] per host, the linker that defines exactly what a
//! guest may import, deploy-time validation, and running one request on a fresh instance.
//!
//! Every request gets a new [`Store`] and a new instance from a component pre-instantiated once
//! per digest ([`FunctionPre`]); both are dropped when the call returns, so nothing the guest
//! did survives. The pooling allocator with copy-on-write memory images and `keep_resident`
//! makes that cheap (a few microseconds).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::guest_log::GuestLog;
use crate::kv::KvSession;
use crate::metrics::{InstanceGuard, Metrics};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "function",
    imports: { default: async },
    exports: { default: async },
});

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
/// Most elements a guest table may grow to (wit-bindgen guests use a few hundred).
const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Interfaces a component may import. Everything here is defined in the linker; anything else
/// (`wasi:filesystem`, `wasi:sockets`, `wasi:http`, ...) is refused at deploy time.
pub const PROVIDED_INTERFACES: &[&str] = &[
    "goldfish:function/types",
    "goldfish:function/kv",
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
];

/// The name of the one export Goldfish calls.
pub const HANDLE_EXPORT: &str = "handle";

/// What one request's store owns. Dropped with the store at the end of the request.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryLimits,
    pub(crate) kv: KvSession,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and tables, and remembers whether the cap was hit so a resulting trap can
/// be reported as "memory limit" rather than an opaque `unreachable`.
pub(crate) struct MemoryLimits {
    max_memory_bytes: usize,
    hit: bool,
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
        "the component imports `{0}`, which Goldfish does not provide; functions may import only \
         goldfish:function/kv and the WASI clocks, random, io and cli stdio interfaces"
    )]
    UnsupportedImport(String),
    /// Does not export `handle`.
    #[error(
        "the component does not export `handle`; it must implement the world goldfish:function/function \
         (exports: {0})"
    )]
    MissingExport(String),
    /// wasmtime could not compile or link it.
    #[error("the component does not compile or link: {0}")]
    Invalid(String),
}

/// A component compiled and linked, ready to instantiate any number of times.
pub struct Compiled {
    pre: FunctionPre<HostState>,
}

/// Per-request bounds.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    pub max_memory_bytes: usize,
    pub timeout: Duration,
}

/// Why a call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the function exceeded its memory limit of {0} MiB")]
    MemoryLimit(usize),
    #[error("the function trapped: {0}")]
    Trap(String),
    #[error("the function did not answer within {0:?}")]
    Timeout(Duration),
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
            // A wit-bindgen component holds a handful of core instances (the guest plus
            // canonical-ABI shims), tables likewise; only the guest has a memory.
            .total_core_instances(max_instances.saturating_mul(8))
            .total_tables(max_instances.saturating_mul(4))
            .total_memories(max_instances)
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

        let mut linker = Linker::<HostState>::new(&engine);
        add_wasi_basics(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        Function::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("{e}"))?;

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

    /// Validates and compiles a component: header, imports, exports, compilation and linking.
    /// CPU-heavy (tens of milliseconds): call from a blocking thread.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, ValidationError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ValidationError::Invalid(format!("{e:#}")))?;
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
        if !exports
            .iter()
            .any(|(name, is_func)| name == HANDLE_EXPORT && *is_func)
        {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            let names = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            return Err(ValidationError::MissingExport(names));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ValidationError::Invalid(format!("{e:#}")))?;
        let pre = FunctionPre::new(instance_pre)
            .map_err(|e| ValidationError::Invalid(format!("{e:#}")))?;
        Ok(Compiled { pre })
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
        request: Request,
    ) -> Result<Response, CallError> {
        let started = std::time::Instant::now();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(log.stdout()).stderr(log.stderr());
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: MemoryLimits {
                max_memory_bytes: limits.max_memory_bytes,
                hit: false,
            },
            kv,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Yield to the executor at every tick: a looping guest then shares its thread, and the
        // timeout below can fire and drop the call.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));

        // Lives outside the call future so that, whatever ends the call (answer, trap, timeout),
        // the instance is counted as dropped only after its store is gone.
        let mut live: Option<InstanceGuard> = None;
        let run = async {
            let instance = compiled.pre.instantiate_async(&mut store).await?;
            live = Some(metrics.instance_created(function, started.elapsed()));
            instance.call_handle(&mut store, &request).await
        };
        let outcome = tokio::time::timeout(limits.timeout, run).await;
        let memory_hit = store.data().limits.hit;
        drop(store);
        drop(live);
        match outcome {
            Err(_) => Err(CallError::Timeout(limits.timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) if memory_hit => Err(CallError::MemoryLimit(limits.max_memory_bytes >> 20)),
            Ok(Err(e)) => Err(CallError::Trap(describe_trap(&e))),
        }
    }
}

/// The WASI interfaces a guest gets: clocks, random, io streams, and cli stdio, environment
/// (empty) and exit. No filesystem, no sockets.
fn add_wasi_basics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, io, random};
    use wasmtime_wasi::random::WasiRandom;

    struct HasIo;
    impl wasmtime::component::HasData for HasIo {
        type Data<'a> = &'a mut ResourceTable;
    }

    let l = linker;
    io::error::add_to_linker::<HostState, HasIo>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<HostState, HasIo>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<HostState, HasIo>(l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
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

/// The trap's reason first (e.g. "wasm trap: wasm `unreachable` instruction executed"), then
/// the guest backtrace if any, on one line for the JSON error and the log.
fn describe_trap(e: &wasmtime::Error) -> String {
    let mut reason = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => e.to_string(),
    };
    if let Some(frame) = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|backtrace| backtrace.frames().iter().find_map(|f| f.func_name()))
    {
        reason.push_str(&format!(" (in {frame})"));
    }
    reason
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

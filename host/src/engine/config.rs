//! How the engine is built: wasmtime settings, the pooling allocator's slots and what each may
//! hold, and the linker that defines everything a guest may import.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::Runtime;
use super::state::{HostState, MAX_TABLE_ELEMENTS};
use crate::bindings;

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

/// How instances get their memories and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Pre-reserved slots reused across instances, copy-on-write images, resident pages reset
    /// in place: what `goldfish serve` uses.
    Pooling,
    /// wasmtime's default: map and unmap per instance. Only a benchmark baseline.
    OnDemand,
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
            // keep-resident region. Falls back silently where unsupported. Not where swap is
            // on: see `memory_reset_scan`.
            .pagemap_scan(memory_reset_scan(&swap_areas()));

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

        let ticks = super::epoch::start_ticker(&engine)?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            ticks,
        }))
    }
}

/// Whether a slot's memory is reset by scanning for the pages its guest dirtied (PAGEMAP_SCAN)
/// or by the full reset: the keep-resident part rewritten, the rest decommitted.
///
/// The scan only finds dirty pages that are in RAM: wasmtime 48 asks for `PRESENT` pages, so a
/// page the guest wrote and the kernel swapped out before the reset is neither reset nor
/// decommitted, and the next request in that slot would read what the last one wrote (the
/// same gap is described in wasmtime pull request #14357, open as of December 2026). So on a
/// host with any swap area in use at start, the full reset, which is correct whatever is
/// swapped, at 1.50–1.65× a hello's CPU per request and 2.35–2.97× a kv increment's on the
/// machine of 2026-12-07 (README, Limits and isolation). Hosts without swap (Kubernetes' default)
/// keep the scan.
fn memory_reset_scan(swap_areas: &[String]) -> Enabled {
    if swap_areas.is_empty() {
        return Enabled::Auto;
    }
    tracing::warn!(
        swap = %swap_areas.join(", "),
        "swap is on: guest memory is reset in full after each request, since the dirty-page scan \
         misses swapped-out pages (up to 3x the CPU per request); turn swap off and restart for the faster reset"
    );
    Enabled::No
}

/// The swap areas in use, from `/proc/swaps` (none where it cannot be read: not Linux, where
/// the scan does not exist either).
fn swap_areas() -> Vec<String> {
    std::fs::read_to_string("/proc/swaps")
        .map(|table| parse_swaps(&table))
        .unwrap_or_default()
}

/// The first column of each row under `/proc/swaps`' header line.
fn parse_swaps(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| row.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Everything a guest may import, linked once per host: all of WASI 0.2 (granting nothing, see
/// [`HostState::new`]), `wasi:http`, and every key-value dialect.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // wasi:io (streams, poll, error) once more, over the resource table alone. wasmtime-wasi
    // reaches the table through `WasiView::ctx`, which builds the request's lazy WASI context
    // (see `HostState::new`): every wasi:http guest writes its body through a stream, so each
    // such request paid for a context it never uses. Same host code, other accessor.
    // wasi:random, wasi:clocks and wasi:cli likewise (see `wasi_parts`).
    linker.allow_shadowing(true);
    wasmtime_wasi_io::add_to_linker_async(&mut linker)?;
    super::wasi_parts::add_to_linker(&mut linker)?;
    linker.allow_shadowing(false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_areas_are_read_from_proc_swaps_rows() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(parse_swaps(header).is_empty());
        assert!(parse_swaps("").is_empty());
        let two = format!(
            "{header}/swapfile                               file\t\t1048572\t\t0\t\t-2\n\
             /dev/zram0                              partition\t4194300\t\t0\t\t100\n"
        );
        assert_eq!(parse_swaps(&two), ["/swapfile", "/dev/zram0"]);
    }

    #[test]
    fn the_dirty_page_scan_is_used_only_without_swap() {
        assert_eq!(memory_reset_scan(&[]), Enabled::Auto);
        assert_eq!(memory_reset_scan(&["/swapfile".to_owned()]), Enabled::No);
    }
}

//! Parts of WASI served without the request's WASI context, shadowing wasmtime-wasi's
//! definitions of them (see `config::linker`). That context holds clocks, CLI streams,
//! filesystem and socket state and two freshly seeded generators, about a dozen allocations; a
//! guest asking only for random bytes (a session id, a hash-map seed) or the time (an order's
//! timestamp) used to build all of it. Now:
//!
//! - `wasi:random` (`random`, `insecure`, `insecure-seed`) draws from the host thread's
//!   generator ([`GuestRandom`]);
//! - `wasi:clocks` (`wall-clock`, `monotonic-clock`) uses a clocks context of its own, built on
//!   the guest's first clock call: two boxed clocks, one of them zero-sized.

use rand::RngCore;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksCtxView};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::random::DEFAULT_MAX_SIZE;

use super::HostState;

/// A guest's view of randomness: rand's `ThreadRng`, a ChaCha12 generator seeded and reseeded
/// from the operating system (wasmtime-wasi's context seeds a ChaCha12 generator of its own
/// from it for every request). No state belongs to the request; one guest's draws tell nothing
/// about another's.
pub(super) struct GuestRandom;

impl HasData for GuestRandom {
    type Data<'a> = GuestRandom;
}

/// Links `wasi:random` and `wasi:clocks`, shadowing wasmtime-wasi's definitions.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn random_view(_: &mut HostState) -> GuestRandom {
        GuestRandom
    }
    random::add_to_linker::<HostState, GuestRandom>(linker, random_view)?;
    insecure::add_to_linker::<HostState, GuestRandom>(linker, random_view)?;
    insecure_seed::add_to_linker::<HostState, GuestRandom>(linker, random_view)?;
    fn clocks_view(state: &mut HostState) -> WasiClocksCtxView<'_> {
        WasiClocksCtxView {
            ctx: state.clocks.get_or_insert_with(Default::default),
            table: &mut state.table,
        }
    }
    wall_clock::add_to_linker::<HostState, WasiClocks>(linker, clocks_view)?;
    monotonic_clock::add_to_linker::<HostState, WasiClocks>(linker, clocks_view)?;
    Ok(())
}

/// `len` random bytes; more than wasmtime-wasi allows (64 MiB) traps, as it does there.
fn bytes(len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > DEFAULT_MAX_SIZE {
        wasmtime::bail!("requested {len} random bytes, more than the limit of {DEFAULT_MAX_SIZE}");
    }
    let mut out = vec![0; usize::try_from(len)?];
    rand::rng().fill_bytes(&mut out);
    Ok(out)
}

impl random::Host for GuestRandom {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        bytes(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(rand::rng().next_u64())
    }
}

impl insecure::Host for GuestRandom {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        bytes(len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(rand::rng().next_u64())
    }
}

impl insecure_seed::Host for GuestRandom {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        let mut rng = rand::rng();
        Ok((rng.next_u64(), rng.next_u64()))
    }
}

//! Parts of WASI served without the request's WASI context, shadowing wasmtime-wasi's
//! definitions of them (see `config::linker`). That context holds clocks, CLI streams,
//! filesystem and socket state and two freshly seeded generators, about a dozen allocations; a
//! guest asking only for random bytes (a session id, a hash-map seed) or the time (an order's
//! timestamp) used to build all of it. Now:
//!
//! - `wasi:random` (`random`, `insecure`, `insecure-seed`) draws from the host thread's
//!   generator ([`GuestRandom`]);
//! - `wasi:clocks` (`wall-clock`, `monotonic-clock`) uses a clocks context of its own, built on
//!   the guest's first clock call: two boxed clocks, one of them zero-sized;
//! - `wasi:cli` ([`GuestCli`]) grants what the context's CLI part granted: stdout and stderr
//!   into the request's log, a closed stdin, no environment, arguments or working directory,
//!   never a terminal; `exit` ends the call the same way.
//!
//! What is left to the context, filesystem and sockets, fails for every guest anyway.

use rand::RngCore;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksCtxView};
use wasmtime_wasi::p2::bindings::cli::{
    environment, exit, stderr, stdin, stdout, terminal_input, terminal_output, terminal_stderr,
    terminal_stdin, terminal_stdout,
};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::p2::pipe::ClosedInputStream;
use wasmtime_wasi::random::DEFAULT_MAX_SIZE;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::HostState;
use crate::guest_log::Capture;

/// A guest's view of randomness: rand's `ThreadRng`, a ChaCha12 generator seeded and reseeded
/// from the operating system (wasmtime-wasi's context seeds a ChaCha12 generator of its own
/// from it for every request). No state belongs to the request; one guest's draws tell nothing
/// about another's.
pub(super) struct GuestRandom;

impl HasData for GuestRandom {
    type Data<'a> = GuestRandom;
}

/// Links `wasi:random`, `wasi:clocks` and `wasi:cli`, shadowing wasmtime-wasi's definitions.
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
    fn cli_view(state: &mut HostState) -> GuestCliView<'_> {
        GuestCliView {
            output: &state.output,
            table: &mut state.table,
        }
    }
    environment::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    exit::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    stdin::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    stdout::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    stderr::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    terminal_input::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    terminal_output::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    terminal_stdin::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    terminal_stdout::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    terminal_stderr::add_to_linker::<HostState, GuestCli>(linker, cli_view)?;
    Ok(())
}

/// `wasi:cli` as every guest gets it (see the module doc).
pub(super) struct GuestCli;

impl HasData for GuestCli {
    type Data<'a> = GuestCliView<'a>;
}

/// The request's log streams and resource table.
pub(super) struct GuestCliView<'a> {
    output: &'a (Capture, Capture),
    table: &'a mut ResourceTable,
}

impl environment::Host for GuestCliView<'_> {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

impl exit::Host for GuestCliView<'_> {
    fn exit(&mut self, status: Result<(), ()>) -> wasmtime::Result<()> {
        Err(wasmtime::format_err!(I32Exit(i32::from(status.is_err()))))
    }

    fn exit_with_code(&mut self, status_code: u8) -> wasmtime::Result<()> {
        Err(wasmtime::format_err!(I32Exit(status_code.into())))
    }
}

impl stdin::Host for GuestCliView<'_> {
    fn get_stdin(&mut self) -> wasmtime::Result<Resource<DynInputStream>> {
        let closed: DynInputStream = Box::new(ClosedInputStream);
        Ok(self.table.push(closed)?)
    }
}

impl stdout::Host for GuestCliView<'_> {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(self.table.push(self.output.0.p2_stream())?)
    }
}

impl stderr::Host for GuestCliView<'_> {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(self.table.push(self.output.1.p2_stream())?)
    }
}

impl terminal_input::Host for GuestCliView<'_> {}

impl terminal_input::HostTerminalInput for GuestCliView<'_> {
    fn drop(&mut self, input: Resource<terminal_input::TerminalInput>) -> wasmtime::Result<()> {
        self.table.delete(input)?;
        Ok(())
    }
}

impl terminal_output::Host for GuestCliView<'_> {}

impl terminal_output::HostTerminalOutput for GuestCliView<'_> {
    fn drop(&mut self, output: Resource<terminal_output::TerminalOutput>) -> wasmtime::Result<()> {
        self.table.delete(output)?;
        Ok(())
    }
}

/// Never a terminal: none of the three standard streams is one.
impl terminal_stdin::Host for GuestCliView<'_> {
    fn get_terminal_stdin(
        &mut self,
    ) -> wasmtime::Result<Option<Resource<terminal_input::TerminalInput>>> {
        Ok(None)
    }
}

impl terminal_stdout::Host for GuestCliView<'_> {
    fn get_terminal_stdout(
        &mut self,
    ) -> wasmtime::Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

impl terminal_stderr::Host for GuestCliView<'_> {
    fn get_terminal_stderr(
        &mut self,
    ) -> wasmtime::Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
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

//! The WebAssembly side: one wasmtime [`Engine`] per host, the linker that defines everything a
//! guest may import (and what each grants), deploy-time validation, and running one request on a
//! fresh instance.
//!
//! Every request gets a new [`Store`](wasmtime::Store) and a new instance from a component
//! pre-instantiated once per digest; both are dropped when the call returns, so nothing the guest
//! did survives. The pooling allocator with copy-on-write memory images and `keep_resident` makes
//! that cheap (a few microseconds). How a call looks inside depends on the component's world
//! ([`crate::worlds`]); the limits, the deadline and the instance accounting here are the same
//! for every world.
//!
//! Split by responsibility: `config` (engine and pooling-allocator settings, the linker),
//! `epoch` (the epoch ticker, and whether a tick came while the guest ran or while it waited),
//! `validation` (what a component must be to deploy: header, imports, exports), `call` (one
//! request on a fresh instance, with its bounds), `trap` (what a failed call is told: trap,
//! stack overflow, full pool), `state` (what one request's store owns and grants),
//! `wasi_parts` (`wasi:random`, `wasi:clocks` and `wasi:cli` without the request's WASI context),
//! `inlining` (a bound on component nesting, checked before a compile).

mod call;
mod config;
mod epoch;
mod inlining;
mod state;
mod trap;
mod validation;
mod wasi_parts;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use self::call::{CallError, RequestLimits};
pub use self::config::{Allocation, DEFAULT_MAX_INSTANCES};
pub use self::epoch::EPOCH_TICK;
pub use self::state::HostState;
pub use self::validation::{PROVIDED_INTERFACES, ValidationError};
use crate::bindings;
use crate::worlds::World;

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

/// The engine and linker, shared by every request on this host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// The epoch ticker's count of its ticks (see `epoch`).
    ticks: Arc<AtomicU64>,
}

impl Runtime {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

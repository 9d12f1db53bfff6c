//! One request on a fresh instance: its bounds ([`RequestLimits`]), the store with its memory
//! limit and epoch deadline, the instance accounting, and why a call produced no response
//! ([`CallError`]).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};

use super::epoch::{self, EPOCH_TICK};
use super::trap::{describe_trap, pool_limit};
use super::{Compiled, HostState, Pre, Runtime};
use crate::guest_log::GuestLog;
use crate::kv::KvSession;
use crate::metrics::{FunctionSeries, InstanceGuard, Metrics};
use crate::worlds::{self, GuestRequest, GuestResponse};

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

impl Runtime {
    /// Runs one request on a fresh instance of `compiled`, then drops the instance.
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        series: &Arc<FunctionSeries>,
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
        let ticks = self.ticks.clone();
        store.epoch_deadline_callback(move |mut store| {
            // A tick that came while the guest waited (kv, a sleep) is not its CPU, and no
            // reason to yield: it has only just resumed.
            if !epoch::ran_through_tick(&ticks) {
                return Ok(UpdateDeadline::Continue(1));
            }
            let state = store.data_mut();
            if state.cpu_bound.is_none() {
                state.cpu_bound = crate::guests::mark_cpu_bound();
            }
            let limits = &mut state.limits;
            limits.cpu_ticks += 1;
            if tick_budget.is_some_and(|budget| limits.cpu_ticks > budget) {
                limits.cpu_exceeded = true;
                return Err(wasmtime::Error::msg("CPU budget exceeded"));
            }
            // `yield_now` rather than a plain `Yield`: tokio runs a task that wakes itself again
            // before it polls for I/O (only every 61st task on a busy thread), so guests
            // spinning on the thread that serves connections held their requests (and
            // `/healthz`) ~300 ms; `yield_now` waits until the thread has polled for I/O.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });

        // Lives outside the call future so that, whatever ends the call (answer, trap, timeout),
        // the instance is counted as dropped only after its store is gone.
        let mut live: Option<InstanceGuard> = None;
        let on_instance = || live = Some(metrics.instance_created(series, started.elapsed()));
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
        let outcome = {
            let run = std::pin::pin!(run);
            tokio::time::timeout(limits.timeout, epoch::note_polls(&self.ticks, run)).await
        };
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

//! Where guest code runs: a tokio runtime of its own, apart from the one that accepts
//! connections and serves `/healthz`, `/readyz`, `/metrics` and the admin API, so busy or
//! CPU-bound guests cannot starve those; and a cap on each function's concurrent calls, so one
//! hot function cannot take every instance slot from the others.
//!
//! Within the guest runtime, every guest yields at each epoch tick ([`crate::engine::EPOCH_TICK`]),
//! so guests share its threads round-robin rather than one holding a thread for its whole
//! deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinError;

pub struct Guests {
    /// `Option` only so `Drop` can take it: a runtime may not be dropped from async code, so it
    /// is shut down in the background instead.
    runtime: Option<tokio::runtime::Runtime>,
    /// `None` when the cap is at least the host's instance slots: then it could never bind.
    max_per_function: Option<usize>,
    /// Function name → its concurrency permits. `std::sync::Mutex`: held for one lookup.
    per_function: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Guests {
    /// A guest runtime with `threads` workers, and `max_per_function` concurrent calls per
    /// function on a host of `max_instances` slots.
    /// With `low_priority`, guest threads yield the CPU to everything else (see
    /// [`lower_priority`]).
    pub fn new(
        threads: usize,
        max_per_function: usize,
        max_instances: usize,
        low_priority: bool,
    ) -> std::io::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads.max(1))
            .thread_name("goldfish-guest")
            .enable_all();
        if low_priority {
            builder.on_thread_start(lower_priority);
        }
        let runtime = builder.build()?;
        Ok(Guests {
            runtime: Some(runtime),
            max_per_function: (max_per_function < max_instances).then_some(max_per_function.max(1)),
            per_function: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `call` on the guest runtime and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, JoinError> {
        match &self.runtime {
            Some(runtime) => runtime.spawn(call).await,
            // Only during drop; nothing can call in then.
            None => Ok(call.await),
        }
    }

    /// The permits of function `name` (created on first use); `None` when there is no cap.
    pub fn function_permits(&self, name: &str) -> Option<Arc<Semaphore>> {
        let cap = self.max_per_function?;
        let mut map = self.per_function.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(permits) = map.get(name) {
            return Some(permits.clone());
        }
        // Bounded by the names that resolved to deployed functions (invalid and unknown names
        // never get here); entries of deleted functions are a few bytes each.
        Some(
            map.entry(name.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(cap)))
                .clone(),
        )
    }
}

/// Makes the calling (guest) thread yield the CPU to the HTTP front and to Redis whenever they
/// want it: `SCHED_BATCH` at the lowest niceness. Guests still get every cycle nobody else needs.
/// Off by default (`--low-priority-guests`): on a saturated host it keeps `/healthz` quick, but
/// it starves the very guests that finish the requests the front accepts, which cost about 40%
/// of throughput in scripts/bench. Lowering one's own priority needs no privileges; where it
/// fails anyway, guests run at normal priority.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, batch) {
        tracing::debug!("guest thread keeps its priority: {e:?}");
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

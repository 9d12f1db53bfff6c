//! Where guest code runs: threads of their own, apart from the runtime that accepts
//! connections and serves `/healthz`, `/readyz`, `/metrics` and the admin API, so busy or
//! CPU-bound guests cannot starve those; and a cap on each function's concurrent calls, so one
//! hot function cannot take every instance slot from the others.
//!
//! Each guest thread runs a single-threaded tokio runtime with a Redis connection of its own,
//! and each call goes to the thread with the fewest calls in flight. A guest so stays on one
//! thread from its instantiation to its answer: the reply to a kv call wakes it where its stack,
//! store and memory are still in cache, and no idle worker is woken to steal it. One
//! work-stealing runtime for all guest threads cost more (`scripts/bench-ab`, CPU per request of
//! this design against that one: kv increment 0.84-0.86x with 15-17% more req/s, cart add
//! 0.86-0.89x, hello 0.98-1.04x). The same threads dealt calls round-robin showed no
//! consistent gain (README, Performance): a thread busy with slow guests kept getting its share.
//!
//! Within a thread, every guest yields at each epoch tick ([`crate::engine::EPOCH_TICK`]), so
//! guests share it round-robin rather than one holding it for its whole deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinError;

use crate::backend::Backend;

pub struct Guests {
    /// At least one.
    threads: Vec<GuestThread>,
    /// Where the search for the least loaded thread starts; advanced on every call, so ties go
    /// to each thread in turn.
    next: AtomicUsize,
    /// `None` when the cap is at least the host's instance slots: then it could never bind.
    max_per_function: Option<usize>,
    /// Function name → its concurrency permits. `std::sync::Mutex`: held for one lookup.
    per_function: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One guest thread: its runtime, its load and its connection to the store.
struct GuestThread {
    runtime: Handle,
    /// Calls given to this thread that have not ended.
    in_flight: Arc<AtomicUsize>,
    /// The store through a connection whose I/O runs on this thread (see
    /// [`Backend::another_connection`]): what its guests' kv calls use.
    kv: Backend,
    /// Dropped with [`Guests`]: the thread then shuts its runtime down and ends.
    _stop: oneshot::Sender<()>,
}

/// One call counted in its thread's `in_flight` until it ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Guests {
    /// `threads` guest threads, each connected to `store`, and `max_per_function` concurrent
    /// calls per function on a host of `max_instances` slots.
    /// With `low_priority`, guest threads yield the CPU to everything else (see
    /// [`lower_priority`]).
    pub async fn new(
        threads: usize,
        max_per_function: usize,
        max_instances: usize,
        low_priority: bool,
        store: &Backend,
    ) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let mut started = Vec::with_capacity(threads);
        for _ in 0..threads {
            started.push(GuestThread::start(low_priority, store).await?);
        }
        Ok(Guests {
            threads: started,
            next: AtomicUsize::new(0),
            max_per_function: (max_per_function < max_instances).then_some(max_per_function.max(1)),
            per_function: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the future `call` makes on the guest thread with the fewest calls in flight, and
    /// waits for its result. `call` gets that thread's connection to the store.
    pub async fn run<T, F>(&self, call: impl FnOnce(Backend) -> F) -> Result<T, JoinError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let thread = self.least_loaded();
        // Moves into the task: the call counts until it ends, even if its client goes away.
        let in_flight = InFlight::enter(&thread.in_flight);
        let call = call(thread.kv.clone());
        thread
            .runtime
            .spawn(async move {
                let result = call.await;
                drop(in_flight);
                result
            })
            .await
    }

    fn least_loaded(&self) -> &GuestThread {
        let count = self.threads.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|i| &self.threads[(first + i) % count])
            .min_by_key(|thread| thread.in_flight.load(Ordering::Relaxed))
            .unwrap_or(&self.threads[first])
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

impl GuestThread {
    /// Starts the thread and opens its connection to `store` on it.
    async fn start(low_priority: bool, store: &Backend) -> anyhow::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        // The name is for its blocking-pool threads (the guest thread is named below): their
        // CPU is the guests' too, for `top -H` and scripts/bench-cpu.
        builder.enable_all().thread_name("goldfish-guest");
        if low_priority {
            // The runtime's blocking-pool threads; the guest thread itself lowers its own below.
            builder.on_thread_start(lower_priority);
        }
        let runtime = builder.build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("goldfish-guest".into())
            .spawn(move || {
                if low_priority {
                    lower_priority();
                }
                // Ends when `stop` is dropped (or sends).
                let _ = runtime.block_on(stopped);
                runtime.shutdown_background();
            })?;
        let store = store.clone();
        let kv = handle
            .spawn(async move { store.another_connection().await })
            .await??;
        Ok(GuestThread {
            runtime: handle,
            in_flight: Arc::default(),
            kv,
            _stop: stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::thread::ThreadId;

    use super::*;
    use crate::backend::memory::MemoryBackend;

    async fn guests(threads: usize) -> Guests {
        let store = Backend::Memory(MemoryBackend::new());
        Guests::new(threads, 10, 100, false, &store)
            .await
            .expect("guest threads start")
    }

    fn here() -> ThreadId {
        std::thread::current().id()
    }

    #[tokio::test]
    async fn calls_go_to_the_thread_with_the_fewest_in_flight() {
        let guests = Arc::new(guests(2).await);
        // One call holds its thread until told to end.
        let (started_tx, started) = oneshot::channel();
        let (end, ended) = oneshot::channel::<()>();
        let held = {
            let guests = guests.clone();
            tokio::spawn(async move {
                guests
                    .run(|_| async move {
                        let _ = started_tx.send(here());
                        let _ = ended.await;
                    })
                    .await
            })
        };
        let busy = started.await.expect("the held call started");
        // Each quick call finds the other thread with none in flight, so all go there (dealt
        // round-robin, every other one would share the busy thread).
        for _ in 0..6 {
            let ran_on = guests.run(|_| async { here() }).await.expect("call");
            assert_ne!(
                ran_on, busy,
                "a quick call went to the thread holding a call"
            );
        }
        end.send(()).expect("the held call is waiting");
        held.await.expect("task").expect("the held call ended");
        // Once it has ended, both threads are free again and ties take turns.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            seen.insert(guests.run(|_| async { here() }).await.expect("call"));
        }
        assert_eq!(seen.len(), 2, "idle threads take calls in turn");
    }

    #[tokio::test]
    async fn a_call_counts_until_it_ends_even_when_nobody_waits_for_it() {
        let guests = Arc::new(guests(1).await);
        let (end, ended) = oneshot::channel::<()>();
        let waiter = {
            let guests = guests.clone();
            tokio::spawn(async move { guests.run(|_| ended).await })
        };
        let started = async {
            while guests.threads[0].in_flight.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), started)
            .await
            .expect("the call was counted");
        // The request that waited goes away; the call goes on, and still counts.
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(guests.threads[0].in_flight.load(Ordering::Relaxed), 1);
        end.send(()).expect("the call is still running");
        let ended = async {
            while guests.threads[0].in_flight.load(Ordering::Relaxed) != 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), ended)
            .await
            .expect("the call stopped counting once it ended");
    }
}

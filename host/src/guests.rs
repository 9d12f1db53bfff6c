//! Where guest code runs: guest threads, each a single-threaded tokio runtime with a Redis
//! connection of its own; the public listener's HTTP connections are served on them too; and a
//! cap on each function's concurrent calls, so one hot function cannot take every instance slot
//! from the others.
//!
//! A connection is given to the guest thread with the fewest CPU-bound calls, then the fewest
//! open connections, and its requests' guests run on that same thread: no request crosses
//! threads from its first byte to its answer, and a kv reply wakes its guest where its stack,
//! store and memory are still in cache. Against the front on threads of its own handing every
//! call over (`--separate-http-threads`), this costs less CPU per request (`scripts/bench-ab`,
//! LTO build: hello 0.92x, kv increment 0.77x, cart add 0.91x; README, Performance). A thread
//! holding a CPU-bound call (one an epoch tick found running wasm, see [`mark_cpu_bound`])
//! sends calls to a less loaded thread instead, so light functions keep answering beside
//! spinning ones. Calls made off the guest threads (with `--separate-http-threads`) go to the
//! least loaded thread.
//! Within a thread, every guest yields at each epoch tick ([`crate::engine::EPOCH_TICK`]), so
//! guests and the connections served there share it round-robin rather than one holding it for
//! its whole deadline.
//!
//! One work-stealing runtime for all guests cost more than threads of their own
//! (`scripts/bench-ab`: kv increment 0.84-0.86x CPU with threads of their own), as did dealing
//! calls round-robin rather than to the least loaded (README, Performance).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinError;

use crate::backend::Backend;

thread_local! {
    /// On a guest thread: the id of its [`Guests`] and its index there.
    static GUEST_THREAD: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
    /// On a guest thread: its count of CPU-bound calls (see [`mark_cpu_bound`]).
    static CPU_BOUND: std::cell::RefCell<Option<Arc<AtomicUsize>>> =
        const { std::cell::RefCell::new(None) };
}

/// Counts the call running on this guest thread as CPU-bound until the returned mark drops
/// (with its store): it was found running wasm at an epoch tick. `None` off a guest thread.
pub fn mark_cpu_bound() -> Option<Counted> {
    CPU_BOUND.with_borrow(|count| count.as_ref().map(Counted::enter))
}

/// Tells one [`Guests`] from another (a test process may hold several), for [`GUEST_THREAD`].
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

pub struct Guests {
    id: usize,
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
    /// HTTP connections served on this thread that are open.
    connections: Arc<AtomicUsize>,
    /// Calls on this thread found running wasm at an epoch tick (see [`mark_cpu_bound`]).
    cpu_bound: Arc<AtomicUsize>,
    /// The store through a connection whose I/O runs on this thread (see
    /// [`Backend::another_connection`]): what its guests' kv calls use.
    kv: Backend,
    /// Dropped with [`Guests`]: the thread then shuts its runtime down and ends.
    _stop: oneshot::Sender<()>,
}

/// One call, connection or CPU-bound mark counted in its thread's `in_flight`, `connections`
/// or `cpu_bound` until it ends, however it ends.
pub struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count.clone())
    }
}

impl Drop for Counted {
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
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut started = Vec::with_capacity(threads);
        for index in 0..threads {
            started.push(GuestThread::start((id, index), low_priority, store).await?);
        }
        Ok(Guests {
            id,
            threads: started,
            next: AtomicUsize::new(0),
            max_per_function: (max_per_function < max_instances).then_some(max_per_function.max(1)),
            per_function: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the future `call` makes on a guest thread, and waits for its result: on the calling
    /// guest thread unless that one holds CPU-bound calls and another is less loaded, else on
    /// the least loaded. `call` gets that thread's connection to the store.
    pub async fn run<T, F>(&self, call: impl FnOnce(Backend) -> F) -> Result<T, JoinError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let thread = match self.this_thread() {
            Some(here) if here.cpu_bound() == 0 => here,
            Some(here) => {
                let least = self.least_loaded();
                if here.load() <= least.load() {
                    here
                } else {
                    least
                }
            }
            None => self.least_loaded(),
        };
        // Moves into the task: the call counts until it ends, even if its client goes away.
        let in_flight = Counted::enter(&thread.in_flight);
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

    /// The guest thread the caller runs on, if it is one of these.
    fn this_thread(&self) -> Option<&GuestThread> {
        match GUEST_THREAD.get() {
            Some((id, index)) if id == self.id => self.threads.get(index),
            _ => None,
        }
    }

    /// Where to serve a new HTTP connection: the guest thread with the fewest open, and the
    /// count the connection holds while it is open.
    pub fn connection_home(&self) -> (Handle, Counted) {
        let thread = self.least_by(|thread| {
            (
                thread.cpu_bound(),
                thread.connections.load(Ordering::Relaxed),
            )
        });
        (thread.runtime.clone(), Counted::enter(&thread.connections))
    }

    fn least_loaded(&self) -> &GuestThread {
        self.least_by(GuestThread::load)
    }

    /// The thread with the least `key`; ties go to each thread in turn.
    fn least_by<K: Ord>(&self, key: impl Fn(&GuestThread) -> K) -> &GuestThread {
        let count = self.threads.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|i| &self.threads[(first + i) % count])
            .min_by_key(|thread| key(thread))
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
    /// CPU-bound calls first, then calls in flight.
    fn load(&self) -> (usize, usize) {
        (self.cpu_bound(), self.in_flight.load(Ordering::Relaxed))
    }

    fn cpu_bound(&self) -> usize {
        self.cpu_bound.load(Ordering::Relaxed)
    }

    /// Starts the thread and opens its connection to `store` on it.
    async fn start(
        place: (usize, usize),
        low_priority: bool,
        store: &Backend,
    ) -> anyhow::Result<Self> {
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
        let cpu_bound = Arc::new(AtomicUsize::new(0));
        let cpu_bound_here = cpu_bound.clone();
        std::thread::Builder::new()
            .name("goldfish-guest".into())
            .spawn(move || {
                GUEST_THREAD.set(Some(place));
                CPU_BOUND.set(Some(cpu_bound_here));
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
            connections: Arc::default(),
            cpu_bound,
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
    async fn a_guest_thread_keeps_its_calls_unless_it_holds_a_cpu_bound_one() {
        let guests = Arc::new(guests(2).await);
        let nested = guests.clone();
        // A call made on a guest thread (as a connection served there makes it) stays there,
        // though the other thread is idle; once a CPU-bound call holds the thread, calls go to
        // the other one; when it ends, they stay again.
        let (stays, moves, stays_after) = guests
            .run(|_| async move {
                let home = here();
                let stays = nested.run(|_| async { here() }).await.expect("call") == home;
                let bound = mark_cpu_bound().expect("on a guest thread");
                let moves = nested.run(|_| async { here() }).await.expect("call") != home;
                drop(bound);
                let stays_after = nested.run(|_| async { here() }).await.expect("call") == home;
                (stays, moves, stays_after)
            })
            .await
            .expect("call");
        assert!(stays, "a call left its idle guest thread");
        assert!(moves, "a call stayed beside a CPU-bound one");
        assert!(
            stays_after,
            "a call left its guest thread once the CPU-bound one ended"
        );
        assert!(mark_cpu_bound().is_none(), "not a guest thread");
    }

    #[tokio::test]
    async fn connections_go_to_the_thread_with_the_fewest_open() {
        let guests = guests(2).await;
        let (_, first) = guests.connection_home();
        let (_, second) = guests.connection_home();
        let open = |i: usize| guests.threads[i].connections.load(Ordering::Relaxed);
        assert_eq!((open(0), open(1)), (1, 1));
        drop(first);
        drop(second);
        assert_eq!((open(0), open(1)), (0, 0));
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

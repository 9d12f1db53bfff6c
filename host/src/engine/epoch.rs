//! Epochs: the ticker thread that advances the engine's epoch, and how a tick is told apart as
//! CPU the guest used or time it spent waiting.
//!
//! A store's epoch deadline is an absolute epoch, and wasmtime checks it only while wasm runs.
//! So a tick that falls while the guest is suspended (on kv, a sleep, a body write) is seen at the
//! guest's first check after it resumes, as if the guest had run through it. Charged like that,
//! a guest making many short waits was billed a tick for most of them (100 sleeps of 3 ms failed
//! a 50 ms CPU budget having run for microseconds: `tests/isolation.rs`), and counted as
//! CPU-bound, which sends its thread's new calls to another thread. Here the host counts ticks
//! itself too, notes the count each time a call's future is polled (the guest starting or
//! resuming), and the deadline callback charges a tick only if it fell after that: while wasm
//! ran.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances. A running guest is interrupted at the next tick to yield to the
/// async runtime, so this bounds how long a CPU-bound guest can hold a worker thread, and how
/// late a timed-out request notices.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

thread_local! {
    /// The host's tick count when the call being polled on this thread was last polled: when
    /// its guest started or resumed. Only one call's wasm runs on a thread within one poll (a
    /// guest's fiber runs inside its future's poll), so the deadline callback, which runs on
    /// that fiber, reads its own call's value.
    static POLLED_AT: Cell<u64> = const { Cell::new(0) };
}

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`], until the engine is
/// dropped. Returns the host's own count of those ticks (wasmtime does not expose the engine's).
pub(super) fn start_ticker(engine: &Engine) -> std::io::Result<Arc<AtomicU64>> {
    let ticks = Arc::new(AtomicU64::new(0));
    let counted = ticks.clone();
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("goldfish-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                // Ours first: a guest resuming between the two then counts the tick as waited,
                // which it (all but) was.
                counted.fetch_add(1, Ordering::Relaxed);
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(ticks)
}

/// `call`, noting the tick count at each poll for [`ran_through_tick`].
pub(super) fn note_polls<'a, F: Future + Send>(
    ticks: &'a AtomicU64,
    mut call: Pin<&'a mut F>,
) -> impl Future<Output = F::Output> + Send + 'a {
    std::future::poll_fn(move |cx| {
        POLLED_AT.set(ticks.load(Ordering::Relaxed));
        call.as_mut().poll(cx)
    })
}

/// Called from a store's epoch deadline callback: whether the guest was running wasm when the
/// latest tick came, rather than suspended (then the tick fell before this poll began).
pub(super) fn ran_through_tick(ticks: &AtomicU64) -> bool {
    charged(POLLED_AT.get(), ticks.load(Ordering::Relaxed))
}

/// A tick counts as the guest's CPU only if it came after the guest last started or resumed.
fn charged(polled_at: u64, now: u64) -> bool {
    now > polled_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_counts_only_if_it_came_while_the_guest_ran() {
        // Resumed at tick 7, deadline reached at tick 7: the tick came during the wait.
        assert!(!charged(7, 7));
        // Resumed at tick 7 and still running at tick 8: that tick was the guest's.
        assert!(charged(7, 8));
    }

    #[tokio::test]
    async fn each_poll_notes_the_tick_count() {
        let ticks = AtomicU64::new(3);
        let mut polls = 0;
        let call = std::pin::pin!(std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                // Still on tick 3: a tick now would have come while running.
                assert!(!ran_through_tick(&AtomicU64::new(3)));
                assert!(ran_through_tick(&AtomicU64::new(4)));
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(POLLED_AT.get())
            }
        }));
        let noted = note_polls(&ticks, call);
        let mut noted = std::pin::pin!(noted);
        assert!(poll_once(noted.as_mut()).is_pending());
        ticks.store(5, Ordering::Relaxed);
        assert_eq!(
            noted.await,
            5,
            "the second poll noted the count at its start"
        );
    }

    fn poll_once<F: Future>(future: Pin<&mut F>) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        future.poll(&mut std::task::Context::from_waker(waker))
    }
}

//! The bounded read-modify-compare-and-swap loop, and the jittered pause between its attempts.

use std::time::Duration;

use crate::ApiError;

/// How many times one request may go round a compare-and-swap loop before answering 503.
///
/// A round loses only when another request changed the same cart in between, so 64 consecutive
/// losses means heavy contention on one cart; with [`jittered_pause`] that gives up after roughly a
/// quarter of a second, well inside the host's time limit.
pub const MAX_ATTEMPTS: u32 = 64;

/// The longest pause between two attempts, in milliseconds.
const MAX_PAUSE_MS: u64 = 4;

/// What one attempt of a [`bounded`] loop achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<T> {
    /// Finished with this value.
    Done(T),
    /// Lost a race (a compare-and-swap returned false) or moved the record along; read again.
    Again,
}

/// Runs `attempt` until it is [`Attempt::Done`] or fails, at most [`MAX_ATTEMPTS`] times, calling
/// `pause` with the number of attempts so far before each retry. Too many retries is
/// [`ApiError::CartBusy`].
pub fn bounded<T>(
    pause: &dyn Fn(u32),
    mut attempt: impl FnMut() -> Result<Attempt<T>, ApiError>,
) -> Result<T, ApiError> {
    for attempts in 0..MAX_ATTEMPTS {
        if attempts > 0 {
            pause(attempts);
        }
        if let Attempt::Done(value) = attempt()? {
            return Ok(value);
        }
    }
    Err(ApiError::CartBusy)
}

/// Sleeps a random 1 to 4 ms, so that requests that just collided on a cart do not collide again
/// in lockstep. The pause for guests; tests pass one that does not sleep.
pub fn jittered_pause(_attempts: u32) {
    let mut byte = [0u8; 1];
    // Without randomness, a fixed pause still spreads retries out, just less well.
    let jitter = getrandom::fill(&mut byte)
        .map(|()| u64::from(byte[0]))
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1 + jitter % MAX_PAUSE_MS));
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn returns_the_first_done_value() {
        let calls = Cell::new(0);
        let result = bounded(&|_| {}, || {
            calls.set(calls.get() + 1);
            Ok(if calls.get() < 3 {
                Attempt::Again
            } else {
                Attempt::Done(calls.get())
            })
        });
        assert_eq!(result, Ok(3));
    }

    #[test]
    fn pauses_before_each_retry_but_not_the_first_attempt() {
        let pauses = Cell::new(Vec::new());
        let calls = Cell::new(0);
        let _ = bounded(
            &|attempts| {
                let mut seen = pauses.take();
                seen.push(attempts);
                pauses.set(seen);
            },
            || {
                calls.set(calls.get() + 1);
                Ok(if calls.get() < 3 {
                    Attempt::Again
                } else {
                    Attempt::Done(())
                })
            },
        );
        assert_eq!(pauses.take(), vec![1, 2]);
    }

    #[test]
    fn gives_up_as_busy_after_max_attempts() {
        let calls = Cell::new(0);
        let result: Result<(), _> = bounded(&|_| {}, || {
            calls.set(calls.get() + 1);
            Ok(Attempt::Again)
        });
        assert_eq!(result, Err(ApiError::CartBusy));
        assert_eq!(calls.get(), MAX_ATTEMPTS);
    }

    #[test]
    fn an_error_stops_the_loop() {
        let calls = Cell::new(0);
        let result: Result<(), _> = bounded(&|_| {}, || {
            calls.set(calls.get() + 1);
            Err(ApiError::Unavailable("down".into()))
        });
        assert_eq!(result, Err(ApiError::Unavailable("down".into())));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn the_jittered_pause_is_short() {
        let started = std::time::Instant::now();
        jittered_pause(1);
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}

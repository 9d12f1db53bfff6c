//! Failed admin logins, counted per client address: past [`MAX_FAILURES`] in one
//! [`WINDOW`], that address is refused (429) until the window ends, so a token cannot be guessed
//! at network speed. Bounded: at most [`MAX_TRACKED`] addresses are remembered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::HostError;

/// Failed attempts one address may make per window.
pub const MAX_FAILURES: u32 = 10;
/// How long failures count against an address.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once; past it, expired entries are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct AuthFailures {
    /// `std::sync::Mutex`: held for a map lookup, never across an `.await`.
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl AuthFailures {
    /// Refuses an address that has failed [`MAX_FAILURES`] times in the current window.
    pub fn check(&self, address: IpAddr) -> Result<(), HostError> {
        let now = Instant::now();
        let map = self.lock();
        match map.get(&address) {
            Some(f) if now.duration_since(f.since) < WINDOW && f.count >= MAX_FAILURES => {
                let retry = WINDOW.saturating_sub(now.duration_since(f.since));
                Err(HostError::TooManyRequests {
                    message: format!(
                        "too many failed admin logins from {address}; wait {}s and check the token",
                        retry.as_secs().max(1)
                    ),
                    retry_after: retry.as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed attempt from `address`.
    pub fn record(&self, address: IpAddr) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&address) {
            map.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if map.len() >= MAX_TRACKED
                && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.since).map(|(a, _)| *a)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(address).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(entry.since) >= WINDOW {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        // Counters only: a poisoned map is still a usable map.
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_too_many_failures_and_others_are_not() {
        let limiter = AuthFailures::default();
        let guesser: IpAddr = "10.0.0.1".parse().expect("ip");
        let operator: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(limiter.check(guesser).is_ok());
            limiter.record(guesser);
        }
        assert!(matches!(
            limiter.check(guesser),
            Err(HostError::TooManyRequests { .. })
        ));
        assert!(limiter.check(operator).is_ok());
    }
}

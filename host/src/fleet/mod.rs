//! The fleet: every host writes a heartbeat into the store every [`HEARTBEAT_INTERVAL`] (who it
//! is, where it listens, what it has served) with a TTL, and reads everyone's for the status
//! page; plus this host's own per-function figures, read from its Prometheus metrics.
//!
//! A heartbeat carries per-function request and error totals and request rates, so a status page
//! on any host can add up the figures of every host it sees.
//!
//! Split by responsibility: this file holds the timings and bounds; `heartbeat.rs` what a
//! heartbeat says and reading every host's; `this_host.rs` this host's identity, its request
//! rates and the task that writes its heartbeat; `figures.rs` its per-function figures, read from
//! its metrics.

mod figures;
mod heartbeat;
mod this_host;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use figures::{FunctionFigures, Quantile, figures};
pub use heartbeat::{FunctionTotals, Heartbeat, hosts};
pub use this_host::{Fleet, HeartbeatTask};

/// How often a host writes its heartbeat, and samples its own figures for the request rate.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A host whose last heartbeat is older than this is shown as stale: three missed beats, so one
/// slow Redis write on a busy machine does not flag a healthy host. Compared against the
/// reader's clock, so hosts' clocks must agree to within a few seconds (NTP does far better).
pub const STALE_AFTER: Duration = Duration::from_secs(6);
/// How long a heartbeat outlives its last write: long enough that a crashed host stays on the
/// page (as stale) for someone to notice, short enough that the list heals by itself.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(30);
/// Request rates are measured over this window: the figures now minus the oldest sample kept.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most hosts one listing returns: bounds one Redis read and the page.
pub const MAX_HOSTS_LISTED: usize = 1000;
/// Most functions one heartbeat carries (the busiest first): bounds its size whatever the
/// metrics hold (they keep a label for every name ever invoked on this host).
const MAX_FUNCTIONS_PER_HEARTBEAT: usize = 500;
/// Most samples kept for the rate: one per beat over [`RATE_WINDOW`] is 31; the cap only matters
/// should beats ever come faster than the interval.
const MAX_SAMPLES: usize = 64;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

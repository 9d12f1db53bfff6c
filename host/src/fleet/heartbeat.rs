//! What one host says about itself in the store, and reading every host's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MAX_HOSTS_LISTED, STALE_AFTER};
use crate::backend::{Backend, BackendError};

/// What one host says about itself, as stored under [`crate::backend::keys::host`]. Every field
/// has a default, so hosts of different versions read each other's heartbeats.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Heartbeat {
    /// Random per process: a restarted host is a new host, and its old heartbeat fades out.
    pub id: String,
    pub hostname: String,
    /// Where the host serves invocations, `host:port`; the hostname stands in for an
    /// unspecified listen address such as `0.0.0.0`.
    pub address: String,
    /// The `goldfish` version it runs.
    pub version: String,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// When this heartbeat was written: milliseconds since the Unix epoch, by the host's clock.
    pub seen_at_ms: u64,
    /// Invocation requests answered since the host started, every function (unknown names too).
    pub requests: u64,
    /// Wasm instances alive on the host right now.
    pub instances_live: i64,
    /// Per function name: what the host has served.
    pub functions: BTreeMap<String, FunctionTotals>,
}

impl Heartbeat {
    /// Whether the host has missed its last beats, as seen at `now_ms`.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_at_ms) > STALE_AFTER.as_millis() as u64
    }
}

/// One function's figures on one host, as a heartbeat carries them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FunctionTotals {
    /// Requests answered since the host started.
    pub requests: u64,
    /// Of those, answered with a 5xx.
    pub errors: u64,
    /// Requests per second over the last [`RATE_WINDOW`](super::RATE_WINDOW) (over the uptime,
    /// when shorter).
    pub rate: f64,
}

/// The heartbeat of every host that wrote one within [`HEARTBEAT_TTL`](super::HEARTBEAT_TTL),
/// this one included, oldest host first. Heartbeats that do not parse are skipped.
pub async fn hosts(backend: &Backend) -> Result<Vec<Heartbeat>, BackendError> {
    let mut hosts: Vec<Heartbeat> = backend
        .list_hosts(MAX_HOSTS_LISTED)
        .await?
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    hosts.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_goes_stale_after_missed_beats() {
        let heartbeat = Heartbeat {
            seen_at_ms: 10_000,
            ..Heartbeat::default()
        };
        assert!(!heartbeat.is_stale(10_000 + STALE_AFTER.as_millis() as u64));
        assert!(heartbeat.is_stale(10_001 + STALE_AFTER.as_millis() as u64));
    }

    #[test]
    fn a_heartbeat_from_another_version_still_reads() {
        let heartbeat: Heartbeat =
            serde_json::from_str(r#"{"id":"x","future":1,"functions":{"f":{"requests":3}}}"#)
                .expect("parses");
        assert_eq!(heartbeat.id, "x");
        assert_eq!(heartbeat.functions["f"].requests, 3);
    }
}

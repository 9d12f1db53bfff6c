//! This host: its identity, its request rates from samples of its own figures, and the task
//! that writes its heartbeat every [`HEARTBEAT_INTERVAL`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use tokio::task::JoinHandle;

use super::{
    FunctionFigures, FunctionTotals, HEARTBEAT_INTERVAL, HEARTBEAT_TTL, Heartbeat,
    MAX_FUNCTIONS_PER_HEARTBEAT, MAX_SAMPLES, RATE_WINDOW, figures, unix_ms,
};
use crate::backend::Backend;
use crate::metrics::Metrics;

/// This host's identity and its recent figures. One per host (in [`crate::server::AppState`]).
pub struct Fleet {
    /// Random per process, 12 hex digits.
    pub id: String,
    pub hostname: String,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// Set once, by [`HeartbeatTask::start`], when the listener is bound.
    address: OnceLock<String>,
    /// This host's per-function (requests, errors), one sample per heartbeat, oldest first,
    /// spanning at most [`RATE_WINDOW`]. A `std` mutex: held for a few map copies, never across
    /// an `.await`.
    samples: Mutex<VecDeque<Sample>>,
}

struct Sample {
    at: Instant,
    totals: BTreeMap<String, (u64, u64)>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        // Every counter starts at zero with the process: that is the first sample.
        let start = Sample {
            at: Instant::now(),
            totals: BTreeMap::new(),
        };
        Fleet {
            id: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            hostname: hostname(),
            started_at: unix_ms() / 1000,
            address: OnceLock::new(),
            samples: Mutex::new(VecDeque::from([start])),
        }
    }

    /// Where this host serves invocations (empty until it listens).
    pub fn address(&self) -> &str {
        self.address.get().map_or("", String::as_str)
    }

    fn lock_samples(&self) -> MutexGuard<'_, VecDeque<Sample>> {
        // Samples are pushed and popped whole, so a poisoned lock still holds consistent ones.
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests per second per function: the figures now against the oldest sample kept, at
    /// most [`RATE_WINDOW`] ago (the host's start, when it is younger than that).
    pub fn rates(&self, figures: &BTreeMap<String, FunctionFigures>) -> BTreeMap<String, f64> {
        let samples = self.lock_samples();
        let Some(oldest) = samples.front() else {
            return BTreeMap::new();
        };
        let elapsed = oldest.at.elapsed().as_secs_f64();
        figures
            .iter()
            .map(|(name, figure)| {
                let before = oldest.totals.get(name).map_or(0, |&(requests, _)| requests);
                let rate = if elapsed > 0.0 {
                    figure.requests.saturating_sub(before) as f64 / elapsed
                } else {
                    0.0
                };
                (name.clone(), rate)
            })
            .collect()
    }

    /// Keeps `figures` as the newest sample, dropping samples the window no longer needs.
    fn record_sample(&self, figures: &BTreeMap<String, FunctionFigures>) {
        let now = Instant::now();
        let mut samples = self.lock_samples();
        samples.push_back(Sample {
            at: now,
            totals: figures
                .iter()
                .map(|(name, f)| (name.clone(), (f.requests, f.errors)))
                .collect(),
        });
        // The oldest sample kept must stay within the window, and one sample is always kept.
        while samples.len() > MAX_SAMPLES
            || (samples.len() > 1
                && samples
                    .front()
                    .is_some_and(|s| now.duration_since(s.at) > RATE_WINDOW))
        {
            samples.pop_front();
        }
    }

    /// This host's heartbeat as of now, from `figures` (see [`figures`]).
    pub fn heartbeat(
        &self,
        figures: &BTreeMap<String, FunctionFigures>,
        instances_live: i64,
    ) -> Heartbeat {
        let rates = self.rates(figures);
        let mut busiest: Vec<(&String, &FunctionFigures)> = figures.iter().collect();
        busiest.sort_by_key(|(_, f)| std::cmp::Reverse(f.requests));
        let functions = busiest
            .into_iter()
            .take(MAX_FUNCTIONS_PER_HEARTBEAT)
            .map(|(name, f)| {
                let totals = FunctionTotals {
                    requests: f.requests,
                    errors: f.errors,
                    rate: rates.get(name).copied().unwrap_or(0.0),
                };
                (name.clone(), totals)
            })
            .collect();
        Heartbeat {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            address: self.address().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            seen_at_ms: unix_ms(),
            requests: figures.values().map(|f| f.requests).sum(),
            instances_live,
            functions,
        }
    }
}

/// The machine's hostname, for people reading the status page.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `listening` as other hosts and people can reach it: `0.0.0.0:8080` says nothing about
/// where, so the hostname stands in for an unspecified address.
fn reachable_address(listening: SocketAddr, hostname: &str) -> String {
    if listening.ip().is_unspecified() {
        format!("{hostname}:{}", listening.port())
    } else {
        listening.to_string()
    }
}

/// The task that writes this host's heartbeat every [`HEARTBEAT_INTERVAL`].
pub struct HeartbeatTask {
    task: JoinHandle<()>,
    fleet: Arc<Fleet>,
    backend: Backend,
}

impl HeartbeatTask {
    /// Starts beating at once; `listening` is the address invocations are served on.
    pub fn start(
        fleet: Arc<Fleet>,
        backend: Backend,
        metrics: Arc<Metrics>,
        listening: SocketAddr,
    ) -> HeartbeatTask {
        // Only the first bound address counts; a host serves from one.
        let _ = fleet
            .address
            .set(reachable_address(listening, &fleet.hostname));
        let task = tokio::spawn(beat(fleet.clone(), backend.clone(), metrics));
        HeartbeatTask {
            task,
            fleet,
            backend,
        }
    }

    /// Stops beating and removes the heartbeat, so a host stopped politely leaves every status
    /// page at once (a killed one shows as stale, then expires).
    pub async fn stop(self) {
        self.task.abort();
        if let Err(e) = self.backend.remove_host(&self.fleet.id).await {
            tracing::debug!("could not remove this host's heartbeat (it expires by itself): {e}");
        }
    }
}

async fn beat(fleet: Arc<Fleet>, backend: Backend, metrics: Arc<Metrics>) {
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Logged when writing starts failing and when it works again, not on every beat.
    let mut failing = false;
    loop {
        ticker.tick().await;
        let figures = figures(&metrics);
        let heartbeat = fleet.heartbeat(&figures, metrics.instances_live.get());
        fleet.record_sample(&figures);
        let json = match serde_json::to_string(&heartbeat) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("encoding the heartbeat failed: {e}");
                continue;
            }
        };
        let ttl = HEARTBEAT_TTL.as_secs() as u32;
        match backend
            .put_host(&fleet.id, &json, heartbeat.seen_at_ms, ttl)
            .await
        {
            Ok(()) if failing => {
                tracing::info!("heartbeat written again: other hosts see this one");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(
                    "could not write this host's heartbeat (other hosts will show it stale): {e}"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_shown_by_hostname() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(reachable_address(any, "web-1"), "web-1:8080");
        assert_eq!(reachable_address(local, "web-1"), "127.0.0.1:8080");
    }
}

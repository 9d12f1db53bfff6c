//! The fleet: every host writes a heartbeat into the store every [`HEARTBEAT_INTERVAL`] (who it
//! is, where it listens, what it has served) with a TTL, and reads everyone's for the status
//! page; plus this host's own per-function figures, read from its Prometheus metrics.
//!
//! A heartbeat carries per-function request and error totals and request rates, so a status page
//! on any host can add up the figures of every host it sees.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{HistogramVec, IntCounterVec};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendError};
use crate::metrics::Metrics;

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
    /// Requests per second over the last [`RATE_WINDOW`] (over the uptime, when shorter).
    pub rate: f64,
}

/// One function's figures on this host since it started, read from its metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionFigures {
    pub requests: u64,
    /// Requests answered with a 5xx.
    pub errors: u64,
    pub instances_created: u64,
    /// Instances created and not yet dropped.
    pub instances_live: u64,
    /// The request latency histogram: (upper bound in seconds, cumulative count), ascending.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Every latency observation (the `+Inf` bucket).
    pub latency_count: u64,
}

/// A latency quantile read from a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quantile {
    /// Interpolated within its bucket.
    Within(Duration),
    /// Past the last bucket's bound: the histogram cannot say by how much.
    Above(Duration),
}

impl FunctionFigures {
    /// The `q` quantile (0..=1) of the request latency, interpolated linearly within its bucket
    /// as Prometheus' `histogram_quantile` does. `None` before the first request.
    pub fn latency_quantile(&self, q: f64) -> Option<Quantile> {
        if self.latency_count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.latency_count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(upper, cumulative) in &self.latency_buckets {
            if cumulative as f64 >= rank && cumulative > below {
                let within = (rank - below as f64) / (cumulative - below) as f64;
                let seconds = lower + (upper - lower) * within.clamp(0.0, 1.0);
                return Some(Quantile::Within(Duration::from_secs_f64(seconds)));
            }
            (lower, below) = (upper, cumulative);
        }
        Some(Quantile::Above(Duration::from_secs_f64(lower)))
    }
}

/// Each function's figures on this host, by function name, from its metrics. Includes
/// [`crate::metrics::UNKNOWN_FUNCTION`], the requests that named no deployed function.
pub fn figures(metrics: &Metrics) -> BTreeMap<String, FunctionFigures> {
    let mut figures: BTreeMap<String, FunctionFigures> = BTreeMap::new();
    for (labels, count) in counters(&metrics.requests) {
        let figure = figures.entry(label(&labels, "function")).or_default();
        figure.requests += count;
        if label(&labels, "status").starts_with('5') {
            figure.errors += count;
        }
    }
    for (labels, count) in counters(&metrics.instances_created) {
        let figure = figures.entry(label(&labels, "function")).or_default();
        figure.instances_created += count;
        figure.instances_live += count;
    }
    for (labels, count) in counters(&metrics.instances_dropped) {
        let figure = figures.entry(label(&labels, "function")).or_default();
        // Saturating: created and dropped are read one after the other, not atomically.
        figure.instances_live = figure.instances_live.saturating_sub(count);
    }
    for series in histograms(&metrics.request_duration) {
        let figure = figures
            .entry(label(&series.labels, "function"))
            .or_default();
        figure.latency_buckets = series.buckets;
        figure.latency_count = series.count;
    }
    figures
}

type Labels = Vec<(String, String)>;

fn label(labels: &Labels, name: &str) -> String {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn labels_of(metric: &prometheus::proto::Metric) -> Labels {
    metric
        .get_label()
        .iter()
        .map(|pair| (pair.name().to_owned(), pair.value().to_owned()))
        .collect()
}

/// Every series of a counter vector, with its labels.
fn counters(vector: &IntCounterVec) -> Vec<(Labels, u64)> {
    vector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| (labels_of(m), m.get_counter().get_value() as u64))
        .collect()
}

/// One series of a histogram vector.
struct HistogramSeries {
    labels: Labels,
    /// (upper bound, cumulative count), ascending.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

/// Every series of a histogram vector.
fn histograms(vector: &HistogramVec) -> Vec<HistogramSeries> {
    vector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| {
            let histogram = m.get_histogram();
            let buckets = histogram
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect();
            HistogramSeries {
                labels: labels_of(m),
                buckets,
                count: histogram.get_sample_count(),
            }
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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

/// The heartbeat of every host that wrote one within [`HEARTBEAT_TTL`], this one included,
/// oldest host first. Heartbeats that do not parse are skipped.
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

    fn with_latencies(buckets: &[(f64, u64)], count: u64) -> FunctionFigures {
        FunctionFigures {
            latency_buckets: buckets.to_vec(),
            latency_count: count,
            ..FunctionFigures::default()
        }
    }

    #[test]
    fn a_quantile_is_interpolated_within_its_bucket() {
        // 100 requests: 50 under 1 ms, 40 between 1 and 2 ms, 10 between 2 and 4 ms.
        let figures = with_latencies(&[(0.001, 50), (0.002, 90), (0.004, 100)], 100);
        let ms = |q| match figures.latency_quantile(q) {
            Some(Quantile::Within(d)) => d.as_secs_f64() * 1000.0,
            other => panic!("{other:?}"),
        };
        assert!((ms(0.5) - 1.0).abs() < 1e-9);
        assert!((ms(0.7) - 1.5).abs() < 1e-9);
        assert!((ms(0.99) - 3.8).abs() < 1e-9);
    }

    #[test]
    fn a_quantile_past_the_last_bucket_says_only_above_it() {
        let figures = with_latencies(&[(0.001, 1), (10.0, 1)], 2);
        assert_eq!(
            figures.latency_quantile(0.99),
            Some(Quantile::Above(Duration::from_secs(10)))
        );
        assert_eq!(with_latencies(&[], 0).latency_quantile(0.5), None);
    }

    #[test]
    fn figures_count_requests_errors_and_live_instances_per_function() {
        let metrics = Metrics::new().expect("metrics");
        metrics.request("a", 200, Duration::from_millis(1));
        metrics.request("a", 503, Duration::from_millis(1));
        metrics.request("b", 404, Duration::from_millis(1));
        let guard = metrics.instance_created("a", Duration::from_micros(10));
        drop(metrics.instance_created("a", Duration::from_micros(10)));
        let figures = figures(&metrics);
        let a = &figures["a"];
        assert_eq!((a.requests, a.errors), (2, 1));
        assert_eq!((a.instances_created, a.instances_live), (2, 1));
        assert_eq!(a.latency_count, 2);
        assert_eq!((figures["b"].requests, figures["b"].errors), (1, 0));
        drop(guard);
    }

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
    fn an_unspecified_listen_address_is_shown_by_hostname() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(reachable_address(any, "web-1"), "web-1:8080");
        assert_eq!(reachable_address(local, "web-1"), "127.0.0.1:8080");
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

//! The figures of one `goldfish stress` run, the checks that decide its verdict, and the text a
//! person reads. Everything here is plain data and pure functions, so the checks are tested on
//! synthetic runs without a host.
//!
//! Split by responsibility: this file holds the figures ([`StressReport`] and its parts);
//! `statistics.rs` the percentiles, latency summary and histogram they are computed with;
//! `checks.rs` the checks behind the verdict ([`find_failures`]); `text.rs` the text report.

mod checks;
mod statistics;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;

pub use checks::find_failures;
pub use statistics::{latency_histogram, percentile, repeated_values};

/// Everything one run measured; `--report` writes it as JSON, `render` as text.
#[derive(Debug, Clone, Serialize)]
pub struct StressReport {
    pub function: String,
    pub method: String,
    /// The URL path under the function, as given (`/` by default).
    pub path: String,
    pub concurrency: usize,
    /// From the first request sent to the last answer received.
    pub elapsed_seconds: f64,
    pub requests: RequestCounts,
    /// Answered or failed requests per second over `elapsed_seconds`.
    pub throughput_rps: f64,
    /// Over every request that got an HTTP response, whatever its status.
    pub latency: LatencySummary,
    /// The distribution behind `latency`, in equal-width buckets; the last bucket also holds the
    /// slowest outliers (see [`latency_histogram`]).
    pub latency_histogram: Vec<LatencyBucket>,
    pub freshness: Freshness,
    /// One per target, in the order the targets were given.
    pub hosts: Vec<HostReport>,
    /// Progress and live instances over time, one point per sample (about every 200 ms) plus
    /// one at the end.
    pub timeline: Vec<TimelinePoint>,
    /// The load generator's own ceiling on this machine, measured after the run.
    pub generator: GeneratorCeiling,
    /// What failed, one sentence each; empty when every check passed.
    pub failures: Vec<String>,
}

/// How the requests ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestCounts {
    pub sent: u64,
    /// Answered 200.
    pub ok: u64,
    /// Everything else: another status or no HTTP response at all (`sent - ok`).
    pub failed: u64,
    /// Responses by HTTP status, 200 included.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP response: refused or reset connections, timeouts.
    pub transport_errors: u64,
    /// A few distinct error messages (transport errors and non-200 bodies), for diagnosis.
    pub error_examples: Vec<String>,
}

/// Latency percentiles in milliseconds (nearest-rank; all 0 when nothing was answered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Requests whose latency `l` was `from_ms <= l < to_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyBucket {
    pub from_ms: f64,
    pub to_ms: f64,
    pub count: u64,
}

/// What the recycle-probe's answers and its kv counter say about instance reuse.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Freshness {
    /// 200 responses read as the probe's `{"global": G, "kv": K}`.
    pub checked: u64,
    /// Of those, answers with `global != 1`: the instance had run a call before (must be 0).
    pub reused_instances: u64,
    /// 200 responses whose body was not the probe's JSON (must be 0).
    pub unreadable: u64,
    /// `kv` values that more than one response returned; an atomic increment never repeats one
    /// (must be 0).
    pub repeated_kv_values: u64,
    /// `GET /fn/{function}/count` on the first target before the load.
    pub kv_before: Option<u64>,
    /// The same after the load.
    pub kv_after: Option<u64>,
    /// Why a kv reading above is missing.
    pub kv_errors: Vec<String>,
}

impl Freshness {
    /// How far the kv counter moved during the run, when both readings exist.
    pub fn kv_advanced(&self) -> Option<i128> {
        Some(i128::from(self.kv_after?) - i128::from(self.kv_before?))
    }
}

/// One host's side of the run, from what the tool sent and from the host's `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostReport {
    /// Base URL, without a trailing slash.
    pub target: String,
    /// Load requests the tool sent to this host.
    pub sent: u64,
    /// Of those, the ones that got an HTTP response (any status).
    pub answered: u64,
    /// Of those, the ones answered 200.
    pub ok: u64,
    /// Requests for the function the host counted during the run: the growth of
    /// `goldfish_requests_total{function}` summed over every status.
    pub served: u64,
    /// Growth of `goldfish_instances_created_total{function}`.
    pub instances_created: u64,
    /// Growth of `goldfish_instances_dropped_total{function}`.
    pub instances_dropped: u64,
    /// The highest `goldfish_instances_live` seen. A lower bound of the real peak: the gauge is
    /// only sampled about every 200 ms, and an instance lives for a single request.
    pub peak_live_instances: u64,
    pub live_instances_before: u64,
    /// After the load, once the gauge reached 0 or ~2 s passed (must be 0).
    pub live_instances_after: u64,
    /// `process_resident_memory_bytes`; absent when the host does not export it.
    pub rss_bytes_before: Option<u64>,
    pub rss_bytes_after: Option<u64>,
    /// Samples during the load where `/metrics` could not be read.
    pub failed_samples: u64,
}

/// One sample of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Since the load started.
    pub seconds: f64,
    /// Requests finished (answered or failed) by then.
    pub completed: u64,
    /// Requests finished per second since the previous point (0 for the first).
    pub throughput_rps: f64,
    /// `goldfish_instances_live` of each host, in `hosts` order; `None` where the scrape failed.
    pub live_instances: Vec<Option<u64>>,
}

/// Whether the load generator could have limited the run (see `stress::generator`). Not part of
/// the verdict: a saturated generator makes the throughput a floor, not the freshness wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum GeneratorCeiling {
    /// `--generator-check 0`.
    Skipped,
    Measured(GeneratorCheck),
    /// The baseline could not be measured; why.
    Failed {
        error: String,
    },
}

/// The generator's ceiling set against the run's throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeneratorCheck {
    /// Requests per second the same workers reached against a trivial native server.
    pub ceiling_rps: f64,
    /// `ceiling_rps` ÷ the run's `throughput_rps`; absent when the run's throughput was 0.
    pub headroom: Option<f64>,
    /// Headroom below 3: the run may have measured the generator rather than the hosts.
    pub saturated: bool,
    /// How long the baseline was driven.
    pub seconds: f64,
}

impl GeneratorCheck {
    pub fn new(ceiling_rps: f64, throughput_rps: f64, seconds: f64) -> GeneratorCheck {
        let headroom = (throughput_rps > 0.0).then(|| ceiling_rps / throughput_rps);
        GeneratorCheck {
            ceiling_rps,
            headroom,
            saturated: headroom.is_some_and(|h| h < crate::stress::generator::MIN_HEADROOM),
            seconds,
        }
    }
}

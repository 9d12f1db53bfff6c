//! The figures of one `goldfish stress` run, the checks that decide its verdict, and the text a
//! person reads. Everything here is plain data and pure functions, so the checks are tested on
//! synthetic runs without a host.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

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

impl StressReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as a person reads it, ending with the verdict line
    /// (`recycling: OK` or `recycling: FAILED: ...`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason only.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        let requests = &self.requests;
        writeln!(
            out,
            "goldfish stress: {} {}{} on {} host(s), concurrency {}, {:.2} s",
            self.method,
            self.function,
            if self.path == "/" { "" } else { &self.path },
            self.hosts.len(),
            self.concurrency,
            self.elapsed_seconds
        )?;
        writeln!(
            out,
            "requests    sent {}, ok {}, failed {}{}",
            requests.sent,
            requests.ok,
            requests.failed,
            failure_breakdown(requests)
                .map(|b| format!(" ({b})"))
                .unwrap_or_default()
        )?;
        writeln!(out, "throughput  {:.1} req/s", self.throughput_rps)?;
        let latency = &self.latency;
        writeln!(
            out,
            "latency     p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms)",
            latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms, latency.mean_ms
        )?;
        let fresh = &self.freshness;
        writeln!(
            out,
            "freshness   {} answers checked, {} from a reused instance, {} unreadable, {} repeated kv values",
            fresh.checked, fresh.reused_instances, fresh.unreadable, fresh.repeated_kv_values
        )?;
        match fresh.kv_advanced() {
            Some(advanced) => writeln!(
                out,
                "kv counter  {} -> {}: advanced {advanced} for {} ok requests",
                fresh.kv_before.unwrap_or_default(),
                fresh.kv_after.unwrap_or_default(),
                requests.ok
            )?,
            None => writeln!(out, "kv counter  not read: {}", fresh.kv_errors.join("; "))?,
        }
        for host in &self.hosts {
            writeln!(out, "host {}", host.target)?;
            writeln!(
                out,
                "  sent {}, answered {}, ok {}; host served {}, instances created {}, dropped {}",
                host.sent,
                host.answered,
                host.ok,
                host.served,
                host.instances_created,
                host.instances_dropped
            )?;
            writeln!(
                out,
                "  live instances: before {}, peak >= {} (sampled), after {}",
                host.live_instances_before, host.peak_live_instances, host.live_instances_after
            )?;
            writeln!(
                out,
                "  RSS {} -> {}",
                mebibytes(host.rss_bytes_before),
                mebibytes(host.rss_bytes_after)
            )?;
            if host.failed_samples > 0 {
                writeln!(
                    out,
                    "  {} metrics samples could not be read",
                    host.failed_samples
                )?;
            }
        }
        for example in &requests.error_examples {
            writeln!(out, "error example: {example}")?;
        }
        if self.passed() {
            writeln!(out, "recycling: OK")
        } else {
            writeln!(out, "recycling: FAILED: {}", self.failures.join("; "))
        }
    }
}

/// "status 500: 3, transport errors: 2", or `None` when nothing failed.
fn failure_breakdown(requests: &RequestCounts) -> Option<String> {
    let mut parts: Vec<String> = requests
        .by_status
        .iter()
        .filter(|(status, _)| **status != 200)
        .map(|(status, count)| format!("status {status}: {count}"))
        .collect();
    if requests.transport_errors > 0 {
        parts.push(format!("transport errors: {}", requests.transport_errors));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn mebibytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(bytes) => format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20)),
        None => "unknown".to_owned(),
    }
}

/// Every check of the run, as sentences naming what failed; empty when all pass.
///
/// Checks: every request answered 200; every answer from a fresh instance (`global == 1`) and
/// readable; no kv value twice; the kv counter advanced by exactly the number of 200s; per host,
/// instances created == requests served == responses the tool got, created == dropped, and no
/// instance live after the run.
pub fn find_failures(report: &StressReport) -> Vec<String> {
    let mut failures = Vec::new();
    let requests = &report.requests;
    if requests.sent == 0 {
        failures.push("no request was sent".to_owned());
    }
    if requests.failed > 0 {
        failures.push(format!(
            "{} of {} requests failed ({})",
            requests.failed,
            requests.sent,
            failure_breakdown(requests).unwrap_or_else(|| "no status recorded".to_owned())
        ));
    }
    let fresh = &report.freshness;
    if fresh.reused_instances > 0 {
        failures.push(format!(
            "{} answers came from a reused instance (global != 1)",
            fresh.reused_instances
        ));
    }
    if fresh.unreadable > 0 {
        failures.push(format!(
            "{} answers were not the recycle-probe's JSON",
            fresh.unreadable
        ));
    }
    if fresh.repeated_kv_values > 0 {
        failures.push(format!(
            "{} kv values were returned more than once",
            fresh.repeated_kv_values
        ));
    }
    match fresh.kv_advanced() {
        Some(advanced) if advanced != i128::from(requests.ok) => {
            failures.push(format!(
                "kv counter advanced by {advanced}, expected {} (the number of 200s)",
                requests.ok
            ));
        }
        Some(_) => {}
        None => failures.push(format!(
            "kv counter could not be read: {}",
            fresh.kv_errors.join("; ")
        )),
    }
    for host in &report.hosts {
        let target = &host.target;
        if host.instances_created != host.served {
            failures.push(format!(
                "{target}: {} instances created for {} requests served",
                host.instances_created, host.served
            ));
        }
        if host.served != host.answered {
            failures.push(format!(
                "{target}: host counted {} requests served but answered {} of the {} sent",
                host.served, host.answered, host.sent
            ));
        }
        if host.instances_dropped != host.instances_created {
            failures.push(format!(
                "{target}: {} instances created but {} dropped",
                host.instances_created, host.instances_dropped
            ));
        }
        if host.live_instances_after != 0 {
            failures.push(format!(
                "{target}: {} instances still live after the run",
                host.live_instances_after
            ));
        }
    }
    failures
}

/// The `q` quantile (0 < q <= 1) of ascending `sorted` by nearest rank: the smallest value with
/// at least `q` of the samples at or below it. 0 for no samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl LatencySummary {
    /// Summarises ascending latencies in milliseconds.
    pub fn from_sorted(sorted_ms: &[f64]) -> LatencySummary {
        if sorted_ms.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            samples: sorted_ms.len() as u64,
            mean_ms: sorted_ms.iter().sum::<f64>() / sorted_ms.len() as f64,
            p50_ms: percentile(sorted_ms, 0.50),
            p90_ms: percentile(sorted_ms, 0.90),
            p99_ms: percentile(sorted_ms, 0.99),
            max_ms: sorted_ms[sorted_ms.len() - 1],
        }
    }
}

/// How far past p99 the histogram reaches before lumping outliers into its last bucket: one
/// 30-second timeout among fast requests would otherwise squeeze every other bar into one.
const HISTOGRAM_REACH_PAST_P99: f64 = 2.0;

/// `buckets` equal-width buckets from 0 to the maximum latency, or to twice the p99 when the
/// maximum is further out; then the last bucket also counts every latency above its end.
pub fn latency_histogram(sorted_ms: &[f64], buckets: usize) -> Vec<LatencyBucket> {
    let (Some(&max), true) = (sorted_ms.last(), buckets > 0) else {
        return Vec::new();
    };
    let end = max
        .min(percentile(sorted_ms, 0.99) * HISTOGRAM_REACH_PAST_P99)
        .max(f64::EPSILON);
    let width = end / buckets as f64;
    let mut histogram: Vec<LatencyBucket> = (0..buckets)
        .map(|i| LatencyBucket {
            from_ms: width * i as f64,
            to_ms: width * (i + 1) as f64,
            count: 0,
        })
        .collect();
    for &latency in sorted_ms {
        let index = ((latency / width) as usize).min(buckets - 1);
        histogram[index].count += 1;
    }
    histogram
}

/// How many values of ascending `sorted` equal the one before them.
pub fn repeated_values(sorted: &[u64]) -> u64 {
    sorted.windows(2).filter(|pair| pair[0] == pair[1]).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of 100 requests over two hosts where every check passes.
    fn passing_run() -> StressReport {
        let host = |target: &str| HostReport {
            target: target.to_owned(),
            sent: 50,
            answered: 50,
            ok: 50,
            served: 50,
            instances_created: 50,
            instances_dropped: 50,
            peak_live_instances: 7,
            live_instances_before: 0,
            live_instances_after: 0,
            rss_bytes_before: Some(40 << 20),
            rss_bytes_after: Some(42 << 20),
            failed_samples: 0,
        };
        StressReport {
            function: "probe".into(),
            method: "POST".into(),
            path: "/".into(),
            concurrency: 8,
            elapsed_seconds: 2.0,
            requests: RequestCounts {
                sent: 100,
                ok: 100,
                failed: 0,
                by_status: BTreeMap::from([(200, 100)]),
                transport_errors: 0,
                error_examples: Vec::new(),
            },
            throughput_rps: 50.0,
            latency: LatencySummary::from_sorted(&[1.0, 2.0, 3.0]),
            latency_histogram: latency_histogram(&[1.0, 2.0, 3.0], 4),
            freshness: Freshness {
                checked: 100,
                kv_before: Some(10),
                kv_after: Some(110),
                ..Freshness::default()
            },
            hosts: vec![host("http://127.0.0.1:1"), host("http://127.0.0.1:2")],
            timeline: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn verdict(report: &mut StressReport) -> Vec<String> {
        report.failures = find_failures(report);
        report.failures.clone()
    }

    #[test]
    fn a_clean_run_passes_and_says_ok() {
        let mut report = passing_run();
        assert_eq!(verdict(&mut report), Vec::<String>::new());
        assert!(report.passed());
        assert!(
            report.render().ends_with("recycling: OK\n"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn a_reused_instance_fails_the_run() {
        let mut report = passing_run();
        report.freshness.reused_instances = 1;
        assert_eq!(
            verdict(&mut report),
            ["1 answers came from a reused instance (global != 1)"]
        );
        assert!(
            report
                .render()
                .contains("recycling: FAILED: 1 answers came from a reused instance")
        );
    }

    #[test]
    fn kv_counter_must_advance_by_exactly_the_number_of_200s() {
        let mut report = passing_run();
        report.freshness.kv_after = Some(109);
        assert_eq!(
            verdict(&mut report),
            ["kv counter advanced by 99, expected 100 (the number of 200s)"]
        );
        report.freshness.kv_after = None;
        report.freshness.kv_errors = vec!["connection refused".into()];
        assert_eq!(
            verdict(&mut report),
            ["kv counter could not be read: connection refused"]
        );
    }

    #[test]
    fn instances_must_match_requests_and_all_be_dropped() {
        let mut report = passing_run();
        report.hosts[1].instances_created = 49;
        report.hosts[1].live_instances_after = 1;
        assert_eq!(
            verdict(&mut report),
            [
                "http://127.0.0.1:2: 49 instances created for 50 requests served",
                "http://127.0.0.1:2: 49 instances created but 50 dropped",
                "http://127.0.0.1:2: 1 instances still live after the run",
            ]
        );
    }

    #[test]
    fn host_must_count_every_answer_the_tool_got() {
        let mut report = passing_run();
        report.hosts[0].served = 51;
        report.hosts[0].instances_created = 51;
        report.hosts[0].instances_dropped = 51;
        assert_eq!(
            verdict(&mut report),
            ["http://127.0.0.1:1: host counted 51 requests served but answered 50 of the 50 sent"]
        );
    }

    #[test]
    fn failed_requests_fail_the_run_with_their_statuses() {
        let mut report = passing_run();
        report.requests.ok = 97;
        report.requests.failed = 3;
        report.requests.by_status = BTreeMap::from([(200, 97), (503, 2)]);
        report.requests.transport_errors = 1;
        report.freshness.kv_after = Some(107);
        assert_eq!(
            verdict(&mut report),
            ["3 of 100 requests failed (status 503: 2, transport errors: 1)"]
        );
        assert!(
            report
                .render()
                .contains("failed 3 (status 503: 2, transport errors: 1)")
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.50), 50.0);
        assert_eq!(percentile(&sorted, 0.90), 90.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.5), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.51), 2.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }

    #[test]
    fn latency_summary_of_known_samples() {
        let summary = LatencySummary::from_sorted(&[1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!(
            summary,
            LatencySummary {
                samples: 5,
                mean_ms: 4.0,
                p50_ms: 3.0,
                p90_ms: 10.0,
                p99_ms: 10.0,
                max_ms: 10.0
            }
        );
        assert_eq!(LatencySummary::from_sorted(&[]), LatencySummary::default());
    }

    #[test]
    fn histogram_counts_every_sample_and_lumps_outliers_into_the_last_bucket() {
        let mut sorted: Vec<f64> = (0..1000).map(|i| f64::from(i % 10) + 0.5).collect();
        sorted.push(30_000.0);
        sorted.sort_by(f64::total_cmp);
        let histogram = latency_histogram(&sorted, 10);
        assert_eq!(histogram.len(), 10);
        assert_eq!(histogram.iter().map(|b| b.count).sum::<u64>(), 1001);
        // p99 is 9.5, so the buckets reach 19 ms, not 30 s.
        assert!((histogram[9].to_ms - 19.0).abs() < 1e-9, "{histogram:?}");
        assert_eq!(histogram[9].count, 1);
        assert!(latency_histogram(&[], 10).is_empty());
    }

    #[test]
    fn repeated_values_are_counted_once_per_extra_occurrence() {
        assert_eq!(repeated_values(&[1, 2, 2, 3, 3, 3]), 3);
        assert_eq!(repeated_values(&[1, 2, 3]), 0);
        assert_eq!(repeated_values(&[]), 0);
    }
}

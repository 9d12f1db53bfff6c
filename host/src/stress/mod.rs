//! `goldfish stress`: drives load at one or more hosts and checks, from the hosts' `/metrics` and
//! the recycle-probe's answers, that every request ran on a fresh instance that was dropped after.
//!
//! # Layout
//! - this file: the limits, what a run does ([`StressConfig`]), the measuring procedure ([`run`]).
//! - `args.rs`: the flags ([`StressArgs`]), `--duration` parsing, the CLI entry ([`command`]) and
//!   the `--report` JSON.
//! - `plan.rs`: the configuration checked and turned into the URLs of a run.
//! - `load.rs`: the load workers, what they tally, the progress bar.
//! - `generator.rs`: the generator's own ceiling against a trivial native server, after the run.
//! - `sampler.rs`: `/metrics` snapshots and samples, the probe's kv counter, bounded body reads.
//! - `assemble.rs`: the tallies, samples and snapshots turned into a [`StressReport`].
//! - [`prometheus`]: the Prometheus text-format parser and the queries asked of a scrape.
//! - [`report`]: the figures ([`StressReport`]), the checks behind the verdict, the text report.
//! - [`plot`]: the `--plot` SVG.
//!
//! # Why the procedure has this order
//! Reading the probe's kv counter is itself a call that creates an instance, so it happens before
//! the "before" snapshot and after the "after" snapshot, and each snapshot waits (briefly) for the
//! live-instance gauge to reach 0, because an instance is dropped just after its response is sent.

mod args;
mod assemble;
mod generator;
mod load;
mod plan;
pub mod plot;
pub mod prometheus;
pub mod report;
mod sampler;

use std::time::Duration;

use anyhow::Context as _;
use reqwest::Client;

pub use args::{DurationError, StressArgs, command, parse_duration, write_json};
use assemble::assemble;
use load::{load_client, progress_bar, run_load};
use plan::Plan;
pub use plot::write_svg;
pub use report::{
    Freshness, GeneratorCeiling, GeneratorCheck, HostReport, LatencyBucket, LatencySummary,
    RequestCounts, StressReport, TimelinePoint,
};
use sampler::{kv_reading, settle};

/// Requests sent when neither `--requests` nor `--duration` is given.
pub const DEFAULT_REQUESTS: u64 = 10_000;
/// Requests in flight at once when `--concurrency` is not given.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Ceiling on the requests of one run, which also applies to a run bounded only by `--duration`:
/// the run keeps every latency and kv value (16 bytes per request), so this bounds its memory.
pub const MAX_REQUESTS: u64 = 10_000_000;
/// Ceiling on `--concurrency`: each worker holds a connection, and more than this on one machine
/// measures the client, not the host.
pub const MAX_CONCURRENCY: usize = 4096;
/// Limit of one load request. Longer than a host's own invocation limit, so a slow guest shows up
/// as the host's status, not as our timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit for opening a connection; a host that does not accept within this is not coming.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the sampler scrapes every host's `/metrics` during the load: often enough to see
/// instances come and go in the plot, rarely enough not to compete with the load on a small box.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Limit of one sampler scrape, so one stuck host does not stall the samples of the others.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Limit of one snapshot scrape or kv counter read.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a snapshot waits for every host's `goldfish_instances_live` to reach 0.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Poll period while waiting for the live gauge to reach 0.
pub const SETTLE_POLL: Duration = Duration::from_millis(20);
/// Largest response body read from a function: the probe answers a few dozen bytes, and a larger
/// body is not the probe's and not worth buffering.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// Largest `/metrics` page read: a few series per function, with histograms.
pub const MAX_METRICS_BYTES: usize = 16 << 20;
/// Distinct error messages kept as examples in the report.
pub const MAX_ERROR_EXAMPLES: usize = 5;
/// Longest error example kept, in characters (a body may be an HTML page).
pub const MAX_ERROR_EXAMPLE_CHARS: usize = 300;
/// Bars in the latency histogram.
pub const LATENCY_BUCKETS: usize = 40;

/// The series read from each host, as the host exports them.
mod series {
    pub const INSTANCES_CREATED: &str = "goldfish_instances_created_total";
    pub const INSTANCES_DROPPED: &str = "goldfish_instances_dropped_total";
    pub const INSTANCES_LIVE: &str = "goldfish_instances_live";
    pub const REQUESTS: &str = "goldfish_requests_total";
    pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
}

/// What [`run`] does; [`command`] builds it from the flags.
#[derive(Debug, Clone)]
pub struct StressConfig {
    /// Base URLs; a trailing slash is ignored.
    pub targets: Vec<String>,
    pub function: String,
    /// Path under `/fn/{function}`; `/` calls `/fn/{function}` itself.
    pub path: String,
    pub method: String,
    /// Stop after this many requests. With neither this nor `duration`, [`DEFAULT_REQUESTS`];
    /// never more than [`MAX_REQUESTS`].
    pub requests: Option<u64>,
    /// Stop sending after this long; requests in flight then still finish.
    pub duration: Option<Duration>,
    pub concurrency: usize,
    /// After the run, how long to drive a trivial native server to measure the generator's own
    /// ceiling (see [`generator`]); `None` skips that.
    pub generator_check: Option<Duration>,
    /// Draw a progress bar on stderr (indicatif hides it anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Runs the whole procedure: kv counter, "before" snapshot, load with sampling, "after"
/// snapshot, kv counter again; then the checks. Errors only when the run cannot be measured
/// (bad configuration, a host's `/metrics` unreadable); failed checks are in the report.
pub async fn run(config: &StressConfig) -> anyhow::Result<StressReport> {
    let plan = Plan::new(config)?;
    let client = Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_max_idle_per_host(plan.concurrency)
        .build()
        .context("building the HTTP client")?;
    let mut kv_errors = Vec::new();

    // 1. The counter read runs an instance on the first host: let it be dropped before step 2.
    let kv_before = kv_reading(&client, &plan.count_url, "before the run", &mut kv_errors).await;
    settle(&client, &plan.metrics_urls[..1]).await?;

    // 2. "Before" snapshot.
    let before = settle(&client, &plan.metrics_urls).await?;

    // 3. Load, sampled.
    let progress = progress_bar(config.progress, &plan);
    let load_client = load_client(plan.concurrency);
    let load = run_load(&client, &load_client, &plan, &progress).await?;
    progress.finish_and_clear();

    // 4. "After" snapshot, once the last instances are dropped.
    let after = settle(&client, &plan.metrics_urls).await?;
    let after_seconds = load.started.elapsed().as_secs_f64();

    // 5. The counter again, now that the metrics are read.
    let kv_after = kv_reading(&client, &plan.count_url, "after the run", &mut kv_errors).await;

    let mut report = assemble(config, &plan, load, &before, &after, after_seconds);
    report.freshness.kv_before = kv_before;
    report.freshness.kv_after = kv_after;
    report.freshness.kv_errors = kv_errors;
    report.failures = report::find_failures(&report);

    // 6. The generator's own ceiling, now that the hosts are measured.
    if let Some(duration) = config.generator_check {
        report.generator = match generator::check(
            &load_client,
            &plan.method,
            plan.concurrency,
            duration,
            report.throughput_rps,
        )
        .await
        {
            Ok(check) => GeneratorCeiling::Measured(check),
            Err(e) => GeneratorCeiling::Failed {
                error: format!("{e:#}"),
            },
        };
    }
    Ok(report)
}

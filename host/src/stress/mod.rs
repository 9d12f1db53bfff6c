//! `goldfish stress`: drives load at one or more hosts and checks, from the hosts' `/metrics` and
//! the recycle-probe's answers, that every request ran on a fresh instance that was dropped after.
//!
//! # Layout
//! - this file: the flags and limits, the validated plan, the measuring procedure ([`run`]).
//! - `load.rs`: the load workers, what they tally, the progress bar.
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

mod assemble;
mod load;
pub mod plot;
pub mod prometheus;
pub mod report;
mod sampler;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Client, Method, Url};

use assemble::assemble;
use load::{progress_bar, run_load};
pub use plot::write_svg;
pub use report::{
    Freshness, HostReport, LatencyBucket, LatencySummary, RequestCounts, StressReport,
    TimelinePoint,
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

/// `goldfish stress`: load one function on one or more hosts and check that it was recycled.
#[derive(clap::Args, Debug, Clone)]
pub struct StressArgs {
    /// Base URL of a host (http://HOST:PORT). Comma-separated or repeated for several; requests go
    /// round robin over them.
    #[arg(
        long = "target",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub targets: Vec<String>,
    /// The deployed function to call; the freshness checks expect the recycle-probe.
    #[arg(long, value_name = "NAME")]
    pub function: String,
    /// Path under /fn/NAME of each load request.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP method of each load request.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Stop after N requests [default: 10000, or 10000000 when --duration is given].
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Stop sending after this long (e.g. 30s, 2m, 1m30s, 500ms), or after --requests,
    /// whichever comes first.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Also draw throughput, live instances and latency to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
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
    /// Draw a progress bar on stderr (indicatif hides it anyway when stderr is not a terminal).
    pub progress: bool,
}

impl StressConfig {
    fn from_args(args: &StressArgs) -> StressConfig {
        StressConfig {
            targets: args.targets.clone(),
            function: args.function.clone(),
            path: args.path.clone(),
            method: args.method.clone(),
            requests: args.requests,
            duration: args.duration,
            concurrency: args.concurrency,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// The CLI entry: runs, prints the text report to stdout, writes `--report` and `--plot`, and
/// returns whether every check passed (the caller turns `false` into a failing exit code).
pub async fn command(args: StressArgs) -> anyhow::Result<bool> {
    let report = run(&StressConfig::from_args(&args)).await?;
    print!("{}", report.render());
    if let Some(path) = &args.report {
        write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
        write_svg(&report, path)?;
    }
    Ok(report.passed())
}

/// Writes `report` as pretty JSON to `path` (overwriting it).
pub fn write_json(report: &StressReport, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("serialising the report")?;
    std::fs::write(path, json + "\n")
        .with_context(|| format!("writing the report to {}", path.display()))
}

/// A `--duration` that is not `<number><unit>...` with units ms, s, m, h.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a duration: expected e.g. 30s, 2m, 1m30s, 500ms or 1h")]
    Invalid(String),
}

/// Parses `30s`, `2m`, `1h`, `500ms`, `1m30s`, `1.5s`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(text.to_owned());
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let unit_end = rest[number_end..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| number_end + i);
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        let seconds_per_unit = match &rest[number_end..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        let part = Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| invalid())?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// The validated shape of a run.
struct Plan {
    targets: Vec<String>,
    /// Load URL per target, same order.
    load_urls: Vec<Url>,
    /// `/metrics` per target, same order.
    metrics_urls: Vec<Url>,
    /// The probe's non-incrementing counter read, on the first target.
    count_url: Url,
    method: Method,
    limit: u64,
    duration: Option<Duration>,
    concurrency: usize,
}

impl Plan {
    fn new(config: &StressConfig) -> anyhow::Result<Plan> {
        if config.targets.is_empty() {
            bail!("no --target given");
        }
        if config.function.is_empty() || config.function.contains('/') {
            bail!(
                "--function must be a function name, got {:?}",
                config.function
            );
        }
        if !config.path.starts_with('/') {
            bail!("--path must start with `/`, got {:?}", config.path);
        }
        if !(1..=MAX_CONCURRENCY).contains(&config.concurrency) {
            bail!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                config.concurrency
            );
        }
        if config.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        if let Some(requests) = config.requests.filter(|&n| n > MAX_REQUESTS) {
            bail!("--requests must be at most {MAX_REQUESTS}, got {requests}");
        }
        let method = Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("--method {:?} is not an HTTP method", config.method))?;
        let mut targets: Vec<String> = Vec::new();
        for target in &config.targets {
            let target = target.trim().trim_end_matches('/').to_owned();
            let url =
                Url::parse(&target).with_context(|| format!("--target {target:?} is not a URL"))?;
            if url.scheme() != "http" {
                bail!("--target {target:?}: only http:// URLs are supported");
            }
            if targets.contains(&target) {
                bail!("--target {target:?} is given twice; its metrics would be counted twice");
            }
            targets.push(target);
        }
        // `/fn/NAME/` and `/fn/NAME` are the same function call; the bare form is used for `/`.
        let function_path = if config.path == "/" {
            String::new()
        } else {
            config.path.clone()
        };
        let url = |text: String| {
            Url::parse(&text).with_context(|| format!("{text:?} is not a valid URL"))
        };
        let load_urls = targets
            .iter()
            .map(|target| url(format!("{target}/fn/{}{function_path}", config.function)))
            .collect::<anyhow::Result<_>>()?;
        let metrics_urls = targets
            .iter()
            .map(|target| url(format!("{target}/metrics")))
            .collect::<anyhow::Result<_>>()?;
        let count_url = url(format!("{}/fn/{}/count", targets[0], config.function))?;
        let limit = match (config.requests, config.duration) {
            (Some(requests), _) => requests,
            (None, Some(_)) => MAX_REQUESTS,
            (None, None) => DEFAULT_REQUESTS,
        };
        Ok(Plan {
            targets,
            load_urls,
            metrics_urls,
            count_url,
            method,
            limit,
            duration: config.duration,
            concurrency: config.concurrency,
        })
    }
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
    let load = run_load(&client, &plan, &progress).await?;
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
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &[&str]) -> StressConfig {
        StressConfig {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            function: "probe".into(),
            path: "/".into(),
            method: "post".into(),
            requests: None,
            duration: None,
            concurrency: 4,
            progress: false,
        }
    }

    #[test]
    fn durations_parse_with_units_and_combinations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn malformed_durations_are_refused() {
        assert_eq!(parse_duration(" "), Err(DurationError::Empty));
        for text in ["s", "10x", "1m30", "-5s", "1..2s", "ten seconds", "-1"] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::Invalid(text.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn plan_builds_urls_and_strips_trailing_slashes() {
        let plan = Plan::new(&config(&["http://127.0.0.1:1/", "http://127.0.0.1:2"])).unwrap();
        assert_eq!(plan.targets, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(plan.load_urls[0].as_str(), "http://127.0.0.1:1/fn/probe");
        assert_eq!(plan.metrics_urls[1].as_str(), "http://127.0.0.1:2/metrics");
        assert_eq!(plan.count_url.as_str(), "http://127.0.0.1:1/fn/probe/count");
        assert_eq!(plan.method, Method::POST);
        assert_eq!(plan.limit, DEFAULT_REQUESTS);
        let mut with_path = config(&["http://127.0.0.1:1"]);
        with_path.path = "/a/b?x=1".into();
        assert_eq!(
            Plan::new(&with_path).unwrap().load_urls[0].as_str(),
            "http://127.0.0.1:1/fn/probe/a/b?x=1"
        );
    }

    #[test]
    fn duration_alone_is_bounded_by_the_request_ceiling() {
        let mut timed = config(&["http://127.0.0.1:1"]);
        timed.duration = Some(Duration::from_secs(1));
        assert_eq!(Plan::new(&timed).unwrap().limit, MAX_REQUESTS);
        timed.requests = Some(5);
        assert_eq!(Plan::new(&timed).unwrap().limit, 5);
    }

    #[test]
    fn plan_refuses_what_it_cannot_measure() {
        let refused = |config: StressConfig| Plan::new(&config).err().map(|e| e.to_string());
        assert!(refused(config(&[])).is_some());
        assert!(
            refused(config(&["https://example.test"]))
                .unwrap()
                .contains("only http://")
        );
        assert!(
            refused(config(&["http://127.0.0.1:1", "http://127.0.0.1:1/"]))
                .unwrap()
                .contains("twice")
        );
        let mut zero = config(&["http://127.0.0.1:1"]);
        zero.concurrency = 0;
        assert!(refused(zero).is_some());
        let mut no_slash = config(&["http://127.0.0.1:1"]);
        no_slash.path = "count".into();
        assert!(refused(no_slash).is_some());
    }

    #[test]
    fn stress_args_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            stress: StressArgs,
        }
        let cli = Cli::try_parse_from([
            "goldfish",
            "--target",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--function",
            "probe",
            "--duration",
            "1m30s",
        ])
        .unwrap();
        assert_eq!(
            cli.stress.targets,
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(cli.stress.duration, Some(Duration::from_secs(90)));
        assert_eq!(
            (
                cli.stress.concurrency,
                cli.stress.requests,
                cli.stress.method.as_str()
            ),
            (32, None, "POST")
        );
        assert!(
            Cli::try_parse_from(["goldfish", "--function", "probe"]).is_err(),
            "--target is required"
        );
    }
}

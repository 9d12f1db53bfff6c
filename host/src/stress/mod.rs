//! `goldfish stress`: drives load at one or more hosts and checks, from the hosts' `/metrics` and
//! the recycle-probe's answers, that every request ran on a fresh instance that was dropped after.
//!
//! # Layout
//! - this file: the command's flags, the measuring procedure ([`run`]), the load workers and the
//!   `/metrics` sampler.
//! - [`prometheus`]: the Prometheus text-format parser and the queries asked of a scrape.
//! - [`report`]: the figures ([`StressReport`]), the checks behind the verdict, the text report.
//! - [`plot`]: the `--plot` SVG.
//!
//! # Why the procedure has this order
//! Reading the probe's kv counter is itself a call that creates an instance, so it happens before
//! the "before" snapshot and after the "after" snapshot, and each snapshot waits (briefly) for the
//! live-instance gauge to reach 0, because an instance is dropped just after its response is sent.

pub mod plot;
pub mod prometheus;
pub mod report;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Client, Method, Url};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub use plot::write_svg;
use prometheus::Scrape;
pub use report::{
    Freshness, HostReport, LatencyBucket, LatencySummary, RequestCounts, StressReport,
    TimelinePoint,
};

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

/// The probe's answer to `GET /fn/{function}/count`.
#[derive(Deserialize)]
struct CountAnswer {
    /// Absent or null before the first increment.
    kv: Option<u64>,
}

/// The probe's answer to every other call.
#[derive(Deserialize)]
struct ProbeAnswer {
    /// Calls this instance has served, this one included: 1 on a fresh instance.
    global: u64,
    /// The kv counter after this call's atomic increment.
    kv: u64,
}

/// [`read_kv`], noting in `errors` why the reading is missing when it is.
async fn kv_reading(
    client: &Client,
    url: &Url,
    when: &str,
    errors: &mut Vec<String>,
) -> Option<u64> {
    match read_kv(client, url).await {
        Ok(kv) => Some(kv),
        Err(error) => {
            errors.push(format!("{when}: {error}"));
            None
        }
    }
}

/// Reads the probe's kv counter without incrementing it.
async fn read_kv(client: &Client, url: &Url) -> Result<u64, String> {
    let response = client
        .get(url.clone())
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = read_bounded(response, MAX_BODY_BYTES)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "GET {url}: status {status}: {}",
            example_text(&body)
        ));
    }
    let answer: CountAnswer = serde_json::from_slice(&body)
        .map_err(|e| format!("GET {url}: not {{\"kv\": N}}: {e}: {}", example_text(&body)))?;
    Ok(answer.kv.unwrap_or(0))
}

/// Scrapes one host's `/metrics`.
async fn scrape(client: &Client, url: &Url, timeout: Duration) -> anyhow::Result<Scrape> {
    let response = client
        .get(url.clone())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let status = response.status();
    let body = read_bounded(response, MAX_METRICS_BYTES).await?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {url}: status {status}: {}", example_text(&body));
    }
    let page = String::from_utf8(body).with_context(|| format!("GET {url}: page is not UTF-8"))?;
    Scrape::parse(&page).with_context(|| format!("GET {url}"))
}

/// Snapshots every host's `/metrics`, polling for up to [`SETTLE_TIMEOUT`] until each reports no
/// live instance; returns the last scrape of each (live may still be > 0 when time ran out, and
/// the checks will say so).
async fn settle(client: &Client, metrics_urls: &[Url]) -> anyhow::Result<Vec<Scrape>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut scrapes = Vec::with_capacity(metrics_urls.len());
        for url in metrics_urls {
            scrapes.push(
                scrape(client, url, PROBE_TIMEOUT)
                    .await
                    .context("reading a host's metrics")?,
            );
        }
        if scrapes.iter().all(|scrape| live_instances(scrape) == 0) || Instant::now() >= deadline {
            return Ok(scrapes);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

fn live_instances(scrape: &Scrape) -> u64 {
    as_count(scrape.sum(series::INSTANCES_LIVE, &[]))
}

/// A metric value as a count: counters and gauges of whole things are exported as floats.
fn as_count(value: f64) -> u64 {
    // `as` saturates: NaN and negatives become 0, which the checks then report as a mismatch.
    value.round() as u64
}

/// Reads a body of at most `limit` bytes.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            bail!("response body larger than {limit} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes ("error sending request: connection refused"): reqwest's own message
/// alone rarely says what went wrong.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A body shortened for an error message.
fn example_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(MAX_ERROR_EXAMPLE_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

fn progress_bar(enabled: bool, plan: &Plan) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // The templates are constants; a template error could only come from editing them, and then
    // the default style is a fine fallback.
    let (bar, template) = if plan.limit < MAX_REQUESTS {
        (
            ProgressBar::new(plan.limit),
            "{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec:0} {msg}",
        )
    } else {
        (
            ProgressBar::no_length(),
            "{spinner} {elapsed_precise} {pos} requests {per_sec:0} {msg}",
        )
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Counters the workers bump and the sampler reads while the load runs.
#[derive(Default)]
struct Progress {
    /// The next request's index; a worker claims one with `fetch_add` and stops past the limit,
    /// so exactly `limit` requests are sent and index `i` goes to target `i % targets`.
    next: AtomicU64,
    /// Requests finished, answered or not.
    completed: AtomicU64,
    /// Requests that did not end in a 200.
    failed: AtomicU64,
}

/// What one worker saw; merged after the load.
struct Tally {
    /// Per target, same order as the plan's.
    hosts: Vec<HostTally>,
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    error_examples: Vec<String>,
    /// Milliseconds, of every request that got an HTTP response.
    latencies_ms: Vec<f64>,
    /// The probe's `kv` of every readable 200.
    kv_values: Vec<u64>,
    reused_instances: u64,
    unreadable: u64,
}

#[derive(Clone, Copy, Default)]
struct HostTally {
    sent: u64,
    answered: u64,
    ok: u64,
}

impl Tally {
    fn new(hosts: usize) -> Tally {
        Tally {
            hosts: vec![HostTally::default(); hosts],
            by_status: BTreeMap::new(),
            transport_errors: 0,
            error_examples: Vec::new(),
            latencies_ms: Vec::new(),
            kv_values: Vec::new(),
            reused_instances: 0,
            unreadable: 0,
        }
    }

    fn add_example(&mut self, example: String) {
        if self.error_examples.len() < MAX_ERROR_EXAMPLES && !self.error_examples.contains(&example)
        {
            self.error_examples.push(example);
        }
    }

    fn absorb(&mut self, other: Tally) {
        for (mine, theirs) in self.hosts.iter_mut().zip(other.hosts) {
            mine.sent += theirs.sent;
            mine.answered += theirs.answered;
            mine.ok += theirs.ok;
        }
        for (status, count) in other.by_status {
            *self.by_status.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        for example in other.error_examples {
            self.add_example(example);
        }
        self.latencies_ms.extend(other.latencies_ms);
        self.kv_values.extend(other.kv_values);
        self.reused_instances += other.reused_instances;
        self.unreadable += other.unreadable;
    }
}

/// One sampler tick.
struct RawSample {
    seconds: f64,
    completed: u64,
    /// Per target; `None` where the scrape failed.
    live: Vec<Option<u64>>,
}

/// The load phase's results.
struct Load {
    started: Instant,
    elapsed: Duration,
    tally: Tally,
    samples: Vec<RawSample>,
}

/// Runs [`StressConfig::concurrency`] workers and the sampler until the request limit or the
/// deadline, and merges what the workers saw.
async fn run_load(client: &Client, plan: &Plan, bar: &ProgressBar) -> anyhow::Result<Load> {
    let progress = Arc::new(Progress::default());
    let load_urls: Arc<[Url]> = plan.load_urls.clone().into();
    let started = Instant::now();
    let deadline = plan.duration.map(|duration| started + duration);

    let (stop_sampler, stopped) = oneshot::channel();
    let sampler = tokio::spawn(sample(
        client.clone(),
        plan.metrics_urls.clone(),
        Arc::clone(&progress),
        bar.clone(),
        started,
        stopped,
    ));

    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency {
        workers.spawn(work(
            client.clone(),
            plan.method.clone(),
            Arc::clone(&load_urls),
            plan.limit,
            deadline,
            Arc::clone(&progress),
            bar.clone(),
        ));
    }
    let mut tally = Tally::new(load_urls.len());
    while let Some(finished) = workers.join_next().await {
        tally.absorb(finished.context("a load worker failed")?);
    }
    let elapsed = started.elapsed();

    // The sampler may already be gone only if it panicked; join reports that.
    let _ = stop_sampler.send(());
    let samples = sampler.await.context("the metrics sampler failed")?;
    Ok(Load {
        started,
        elapsed,
        tally,
        samples,
    })
}

/// One worker: claims request indexes until the limit or the deadline, one request at a time.
async fn work(
    client: Client,
    method: Method,
    load_urls: Arc<[Url]>,
    limit: u64,
    deadline: Option<Instant>,
    progress: Arc<Progress>,
    bar: ProgressBar,
) -> Tally {
    let mut tally = Tally::new(load_urls.len());
    loop {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let index = progress.next.fetch_add(1, Ordering::Relaxed);
        if index >= limit {
            break;
        }
        // `index % len` is below `len`, a usize, so the cast back is lossless.
        let host = (index % load_urls.len() as u64) as usize;
        tally.hosts[host].sent += 1;
        let request_started = Instant::now();
        let ok = match client
            .request(method.clone(), load_urls[host].clone())
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = read_bounded(response, MAX_BODY_BYTES).await;
                tally
                    .latencies_ms
                    .push(request_started.elapsed().as_secs_f64() * 1e3);
                tally.hosts[host].answered += 1;
                *tally.by_status.entry(status).or_default() += 1;
                if status == 200 {
                    tally.hosts[host].ok += 1;
                    examine_answer(&mut tally, body);
                    true
                } else {
                    let detail = body.map_or_else(|e| e.to_string(), |body| example_text(&body));
                    tally.add_example(format!("status {status}: {detail}"));
                    false
                }
            }
            Err(error) => {
                tally.transport_errors += 1;
                // reqwest's message names the URL; the example stays the same across requests.
                tally.add_example(error_chain(&error.without_url()));
                false
            }
        };
        progress.completed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        bar.inc(1);
    }
    tally
}

/// Counts a 200's body as fresh, reused or unreadable.
fn examine_answer(tally: &mut Tally, body: anyhow::Result<Vec<u8>>) {
    let answer = body
        .ok()
        .and_then(|body| serde_json::from_slice::<ProbeAnswer>(&body).ok());
    match answer {
        Some(answer) => {
            if answer.global != 1 {
                tally.reused_instances += 1;
            }
            tally.kv_values.push(answer.kv);
        }
        None => tally.unreadable += 1,
    }
}

/// Every [`SAMPLE_INTERVAL`] until told to stop: how many requests finished and how many
/// instances each host has live. Also refreshes the progress bar's message.
async fn sample(
    client: Client,
    metrics_urls: Vec<Url>,
    progress: Arc<Progress>,
    bar: ProgressBar,
    started: Instant,
    mut stop: oneshot::Receiver<()>,
) -> Vec<RawSample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    // A slow scrape delays the next sample instead of causing a burst of catch-up scrapes.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Sent or dropped: either way the load is over.
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let seconds = started.elapsed().as_secs_f64();
        let completed = progress.completed.load(Ordering::Relaxed);
        let mut live = Vec::with_capacity(metrics_urls.len());
        for url in &metrics_urls {
            live.push(
                scrape(&client, url, SAMPLE_TIMEOUT)
                    .await
                    .ok()
                    .map(|scrape| live_instances(&scrape)),
            );
        }
        let live_text: Vec<String> = live
            .iter()
            .map(|l| l.map_or_else(|| "?".to_owned(), |n| n.to_string()))
            .collect();
        bar.set_message(format!(
            "failed {}, live {}",
            progress.failed.load(Ordering::Relaxed),
            live_text.join("/")
        ));
        samples.push(RawSample {
            seconds,
            completed,
            live,
        });
    }
    samples
}

/// Turns the load and the two snapshots into the report; the kv readings and the checks are
/// filled in by the caller.
fn assemble(
    config: &StressConfig,
    plan: &Plan,
    load: Load,
    before: &[Scrape],
    after: &[Scrape],
    after_seconds: f64,
) -> StressReport {
    let Load {
        elapsed,
        mut tally,
        samples,
        ..
    } = load;
    let function = [("function", config.function.as_str())];
    let counter =
        |scrapes: &[Scrape], host: usize, name: &str| as_count(scrapes[host].sum(name, &function));
    let delta = |host: usize, name: &str| {
        counter(after, host, name).saturating_sub(counter(before, host, name))
    };
    let rss = |scrape: &Scrape| scrape.value(series::RESIDENT_MEMORY, &[]).map(as_count);

    let mut timeline: Vec<TimelinePoint> = Vec::with_capacity(samples.len() + 1);
    let end_point = RawSample {
        seconds: after_seconds,
        completed: tally.hosts.iter().map(|host| host.sent).sum(),
        live: after
            .iter()
            .map(|scrape| Some(live_instances(scrape)))
            .collect(),
    };
    for sample in samples.into_iter().chain(std::iter::once(end_point)) {
        let throughput_rps = match timeline.last() {
            Some(previous) if sample.seconds > previous.seconds => {
                sample.completed.saturating_sub(previous.completed) as f64
                    / (sample.seconds - previous.seconds)
            }
            _ => 0.0,
        };
        timeline.push(TimelinePoint {
            seconds: sample.seconds,
            completed: sample.completed,
            throughput_rps,
            live_instances: sample.live,
        });
    }

    let hosts = plan
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let live_before = live_instances(&before[index]);
            let live_after = live_instances(&after[index]);
            let sampled = timeline
                .iter()
                .filter_map(|point| point.live_instances.get(index).copied().flatten());
            HostReport {
                target: target.clone(),
                sent: tally.hosts[index].sent,
                answered: tally.hosts[index].answered,
                ok: tally.hosts[index].ok,
                served: delta(index, series::REQUESTS),
                instances_created: delta(index, series::INSTANCES_CREATED),
                instances_dropped: delta(index, series::INSTANCES_DROPPED),
                peak_live_instances: sampled.fold(live_before.max(live_after), u64::max),
                live_instances_before: live_before,
                live_instances_after: live_after,
                rss_bytes_before: rss(&before[index]),
                rss_bytes_after: rss(&after[index]),
                failed_samples: timeline
                    .iter()
                    .filter(|point| point.live_instances.get(index).is_some_and(Option::is_none))
                    .count() as u64,
            }
        })
        .collect();

    tally.latencies_ms.sort_by(f64::total_cmp);
    tally.kv_values.sort_unstable();
    let sent: u64 = tally.hosts.iter().map(|host| host.sent).sum();
    let ok: u64 = tally.hosts.iter().map(|host| host.ok).sum();
    let elapsed_seconds = elapsed.as_secs_f64();
    StressReport {
        function: config.function.clone(),
        method: plan.method.to_string(),
        path: config.path.clone(),
        concurrency: plan.concurrency,
        elapsed_seconds,
        requests: RequestCounts {
            sent,
            ok,
            failed: sent - ok,
            by_status: tally.by_status,
            transport_errors: tally.transport_errors,
            error_examples: tally.error_examples,
        },
        throughput_rps: if elapsed_seconds > 0.0 {
            sent as f64 / elapsed_seconds
        } else {
            0.0
        },
        latency: LatencySummary::from_sorted(&tally.latencies_ms),
        latency_histogram: report::latency_histogram(&tally.latencies_ms, LATENCY_BUCKETS),
        freshness: Freshness {
            checked: tally.kv_values.len() as u64,
            reused_instances: tally.reused_instances,
            unreadable: tally.unreadable,
            repeated_kv_values: report::repeated_values(&tally.kv_values),
            ..Freshness::default()
        },
        hosts,
        timeline,
        failures: Vec::new(),
    }
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

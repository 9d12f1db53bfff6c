//! The load of `goldfish stress`: the workers that send the requests and tally what came back
//! (statuses, latencies, the probe's answers), and the progress bar they advance.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Client;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::sampler::{RawSample, error_chain, example_text, sample};
use super::{
    CONNECT_TIMEOUT, MAX_BODY_BYTES, MAX_ERROR_EXAMPLES, MAX_REQUESTS, Plan, REQUEST_TIMEOUT,
};

/// The load's HTTP client: hyper's own pooled client, not reqwest. reqwest turns its `Url` back
/// into a `Uri` (a parse, with IDNA) and clones its default headers on every request; with
/// those gone the generator spends less CPU per request, which on a small machine is CPU the
/// hosts under test get. (The sampler and the counter reads, a few requests a second, keep
/// reqwest.)
pub(super) type LoadClient = HyperClient<HttpConnector, Empty<Bytes>>;

/// A [`LoadClient`] that keeps up to `concurrency` idle connections per host.
pub(super) fn load_client(concurrency: usize) -> LoadClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build(connector)
}

/// The probe's answer to every other call.
#[derive(Deserialize)]
struct ProbeAnswer {
    /// Calls this instance has served, this one included: 1 on a fresh instance.
    global: u64,
    /// The kv counter after this call's atomic increment.
    kv: u64,
}

pub(super) fn progress_bar(enabled: bool, plan: &Plan) -> ProgressBar {
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
pub(super) struct Progress {
    /// The next request's index; a worker claims one with `fetch_add` and stops past the limit,
    /// so exactly `limit` requests are sent and index `i` goes to target `i % targets`.
    next: AtomicU64,
    /// Requests finished, answered or not.
    pub(super) completed: AtomicU64,
    /// Requests that did not end in a 200.
    pub(super) failed: AtomicU64,
}

/// What one worker saw; merged after the load.
pub(super) struct Tally {
    /// Per target, same order as the plan's.
    pub(super) hosts: Vec<HostTally>,
    pub(super) by_status: BTreeMap<u16, u64>,
    pub(super) transport_errors: u64,
    pub(super) error_examples: Vec<String>,
    /// Milliseconds, of every request that got an HTTP response.
    pub(super) latencies_ms: Vec<f64>,
    /// The probe's `kv` of every readable 200.
    pub(super) kv_values: Vec<u64>,
    pub(super) reused_instances: u64,
    pub(super) unreadable: u64,
}

#[derive(Clone, Copy, Default)]
pub(super) struct HostTally {
    pub(super) sent: u64,
    pub(super) answered: u64,
    pub(super) ok: u64,
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

/// The load phase's results.
pub(super) struct Load {
    pub(super) started: Instant,
    pub(super) elapsed: Duration,
    pub(super) tally: Tally,
    pub(super) samples: Vec<RawSample>,
}

/// Runs [`StressConfig::concurrency`](super::StressConfig::concurrency) workers and the sampler
/// until the request limit or the deadline, and merges what the workers saw.
pub(super) async fn run_load(
    client: &Client,
    load_client: &LoadClient,
    plan: &Plan,
    bar: &ProgressBar,
) -> anyhow::Result<Load> {
    let progress = Arc::new(Progress::default());
    let load_urls = Arc::clone(&plan.load_urls);
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
            load_client.clone(),
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
pub(super) async fn work(
    client: LoadClient,
    method: Method,
    load_urls: Arc<[Uri]>,
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
        let ok = match call(&client, &method, &load_urls[host]).await {
            Ok((status, body)) => {
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
                tally.add_example(error);
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

/// One load request within [`REQUEST_TIMEOUT`]: its status and its body (at most
/// [`MAX_BODY_BYTES`]; an `Err` body is a response whose body could not be read), or, when no
/// response came, why.
async fn call(
    client: &LoadClient,
    method: &Method,
    uri: &Uri,
) -> Result<(u16, anyhow::Result<Vec<u8>>), String> {
    let mut request = Request::new(Empty::new());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes().to_vec())
            .map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                Some(_) => anyhow::anyhow!("response body larger than {MAX_BODY_BYTES} bytes"),
                None => anyhow::anyhow!("response body: {}", error_chain(&*e)),
            });
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error_that_says_so() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let uri = Uri::try_from(format!("http://{closed}/fn/probe")).expect("URI");
        let error = call(&load_client(1), &Method::POST, &uri)
            .await
            .expect_err("nothing listens there");
        assert!(error.to_lowercase().contains("connect"), "{error}");
    }

    #[tokio::test]
    async fn a_body_past_the_bound_is_an_unreadable_answer_not_a_transport_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route(
                "/small",
                axum::routing::post(|| async { "{\"global\":1,\"kv\":7}" }),
            )
            .route(
                "/large",
                axum::routing::post(|| async { vec![b'x'; MAX_BODY_BYTES + 1] }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = load_client(1);
        let uri = |path: &str| Uri::try_from(format!("http://{address}{path}")).expect("URI");

        let (status, body) = call(&client, &Method::POST, &uri("/small"))
            .await
            .expect("answered");
        assert_eq!(status, 200);
        assert_eq!(body.expect("read"), b"{\"global\":1,\"kv\":7}");

        let (status, body) = call(&client, &Method::POST, &uri("/large"))
            .await
            .expect("answered");
        assert_eq!(status, 200);
        let error = body.expect_err("past the bound").to_string();
        assert!(error.contains("response body larger than"), "{error}");
    }
}

//! Whether `goldfish stress` itself limited a run: after the load, the same workers (same client,
//! concurrency, method, answer parsing and tallies) drive a trivial native server for a short
//! while, and what they reach there is the generator's ceiling on this machine. A run whose
//! throughput comes within a third of that ceiling may have measured the generator rather than
//! the hosts, and the report says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::http::header;
use http::{Method, Uri};
use indicatif::ProgressBar;

use super::MAX_REQUESTS;
use super::load::{LoadClient, Progress, work};
use super::report::GeneratorCheck;

/// The headroom a run needs over its own throughput for the generator not to be the bottleneck.
pub const MIN_HEADROOM: f64 = 3.0;

/// Drives a trivial native server with `concurrency` workers for `duration` and returns the
/// generator's ceiling, set against `throughput_rps` (the run's).
pub(super) async fn check(
    client: &LoadClient,
    method: &Method,
    concurrency: usize,
    duration: Duration,
    throughput_rps: f64,
) -> anyhow::Result<GeneratorCheck> {
    let server = TrivialServer::start()?;
    let uri = Uri::try_from(format!("http://{}/", server.address)).context("baseline URI")?;
    let urls: Arc<[Uri]> = vec![uri].into();
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let deadline = Some(started + duration);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(work(
            client.clone(),
            method.clone(),
            Arc::clone(&urls),
            MAX_REQUESTS,
            deadline,
            Arc::clone(&progress),
            ProgressBar::hidden(),
        ));
    }
    let mut ok = 0;
    while let Some(tally) = workers.join_next().await {
        ok += tally.context("a baseline worker failed")?.hosts[0].ok;
    }
    let seconds = started.elapsed().as_secs_f64();
    let completed = progress.completed.load(Ordering::Relaxed);
    drop(server);
    if ok == 0 || ok < completed {
        anyhow::bail!(
            "the trivial baseline server answered {ok} of {completed} requests with 200; \
             the generator's ceiling is unknown"
        );
    }
    Ok(GeneratorCheck::new(
        completed as f64 / seconds,
        throughput_rps,
        seconds,
    ))
}

/// The trivial native server: axum on a runtime of its own (threads apart from the
/// generator's, like a separate server's), answering every request with a probe-shaped JSON
/// body whose `kv` never repeats, so the workers parse and tally exactly as in the run.
struct TrivialServer {
    address: std::net::SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TrivialServer {
    fn start() -> anyhow::Result<TrivialServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding the baseline server to a free port on 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("stress-baseline")
            .enable_all()
            .build()
            .context("starting the baseline server's runtime")?;
        let counter = Arc::new(AtomicU64::new(0));
        let app = Router::new().fallback(move || {
            let kv = counter.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    format!("{{\"global\":1,\"kv\":{kv}}}"),
                )
            }
        });
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(TrivialServer {
            address,
            runtime: Some(runtime),
        })
    }
}

impl Drop for TrivialServer {
    fn drop(&mut self) {
        // A runtime may not be dropped from async code; this one holds nothing worth waiting for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

//! `cargo bench`: the per-request cost of a fresh instance — new `Store`, instantiate, call
//! `handle`, drop — with Goldfish's pooling configuration against wasmtime's default on-demand
//! allocator, in one run, reported as ratios. Everything else (guest, kv backend, request) is
//! identical between the two, so the ratio isolates the allocator configuration.
//!
//! Two guests: `misbehave` on `/` (no kv call: pure instance churn) and `recycle-probe`
//! (one kv `increment` on the in-memory backend, to include a host import round trip).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use goldfish::backend::Backend;
use goldfish::backend::memory::MemoryBackend;
use goldfish::engine::{Allocation, RequestLimits, Runtime};
use goldfish::guest_log::GuestLog;
use goldfish::kv::KvSession;
use goldfish::metrics::Metrics;
use goldfish::worlds::GuestRequest;

/// The allocator the `goldfish` binary runs with (host/src/main.rs), so the cycle measured here
/// allocates as a serving host does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Calls per configuration and guest; enough for a stable p50 in a couple of seconds.
const CALLS: usize = 20_000;
/// Calls before measuring, so one-time costs (first slot use, lazy init) are not counted.
const WARMUP: usize = 2_000;

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

async fn measure(allocation: Allocation, component: &[u8], path: &str) -> Stats {
    let runtime = Runtime::with_allocation(64 << 20, 16, allocation).expect("runtime");
    let compiled = runtime.compile(component).expect("component compiles");
    let backend = Backend::Memory(MemoryBackend::new());
    let metrics = Metrics::new().expect("metrics");
    let series = metrics.function("bench");
    let limits = RequestLimits {
        max_memory_bytes: 64 << 20,
        timeout: Duration::from_secs(10),
        cpu_budget: Some(Duration::from_secs(5)),
    };
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let request = GuestRequest {
            method: http::Method::POST,
            path: path.into(),
            query: String::new(),
            authority: "localhost".into(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let log = GuestLog::new("bench", "r");
        let kv = KvSession::new(backend.clone(), "bench", Arc::clone(&metrics));
        let started = Instant::now();
        let response = runtime
            .call(&series, &compiled, kv, &log, &limits, &metrics, request)
            .await
            .expect("call");
        let elapsed = started.elapsed();
        assert_eq!(response.status(), 200);
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    samples.sort_unstable();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo test --benches` runs this with `--test`-style flags; only do the work for `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "fresh instance per call: Store::new + instantiate + handle + drop, {CALLS} calls each, one thread"
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10}   {:>22}",
        "guest / allocator", "p50 µs", "p99 µs", "mean µs", "on-demand ÷ goldfish"
    );
    for (guest, path) in [("misbehave", "/"), ("recycle-probe", "/")] {
        let component = support::guest(guest);
        let goldfish = measure(Allocation::Pooling, &component, path).await;
        let baseline = measure(Allocation::OnDemand, &component, path).await;
        for (name, stats) in [
            ("pooling (goldfish)", &goldfish),
            ("on-demand (baseline)", &baseline),
        ] {
            println!(
                "{:<40} {:>10.1} {:>10.1} {:>10.1}",
                format!("{guest} / {name}"),
                us(stats.p50),
                us(stats.p99),
                us(stats.mean)
            );
        }
        println!(
            "{:<40} {:>10} {:>10} {:>10}   p50 ×{:.2}, mean ×{:.2}",
            format!("{guest} ratio"),
            "",
            "",
            "",
            us(baseline.p50) / us(goldfish.p50),
            us(baseline.mean) / us(goldfish.mean)
        );
    }
}

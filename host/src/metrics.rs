//! Prometheus metrics, served at `GET /metrics`: instance churn, requests, kv operations,
//! deploys, and the standard `process_*` figures of the host process.
//!
//! One [`Metrics`] per host (not a global registry), so several hosts in one process (tests)
//! keep separate books.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 50 µs (a warm instantiate) to 10 s (the default deadline).
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// The `function` label for requests naming no deployed function, so random names cannot blow
/// up the number of series.
pub const UNKNOWN_FUNCTION: &str = "_unknown";

pub struct Metrics {
    registry: Registry,
    pub instances_created: IntCounterVec,
    pub instances_dropped: IntCounterVec,
    pub instances_live: IntGauge,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub instantiate_duration: Histogram,
    pub kv_operations: IntCounterVec,
    pub kv_duration: HistogramVec,
    pub deploys: IntCounter,
    pub compiled_components: IntGauge,
    /// Each function's series, resolved once (see [`FunctionSeries`]).
    functions: RwLock<HashMap<Box<str>, Arc<FunctionSeries>>>,
}

/// One function's per-request series with their label values already looked up: the hot path
/// then finds them with one map lookup instead of hashing label values for each of four
/// metrics. Only names that resolved to a deployed function (or [`UNKNOWN_FUNCTION`]) get one.
struct FunctionSeries {
    instances_created: IntCounter,
    instances_dropped: IntCounter,
    request_duration: Histogram,
    /// Status → its counter, added as statuses occur (a function answers a handful).
    requests: RwLock<Vec<(u16, IntCounter)>>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Arc<Self>> {
        let registry = Registry::new();
        let buckets = LATENCY_BUCKETS.to_vec();
        let metrics = Metrics {
            instances_created: IntCounterVec::new(
                Opts::new(
                    "goldfish_instances_created_total",
                    "Wasm instances created (one per request that reached the guest)",
                ),
                &["function"],
            )?,
            instances_dropped: IntCounterVec::new(
                Opts::new(
                    "goldfish_instances_dropped_total",
                    "Wasm instances dropped with their store",
                ),
                &["function"],
            )?,
            instances_live: IntGauge::new(
                "goldfish_instances_live",
                "Wasm instances alive right now",
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "goldfish_requests_total",
                    "Invocation requests by function and response status",
                ),
                &["function", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "goldfish_request_duration_seconds",
                    "Invocation latency, request received to response built",
                )
                .buckets(buckets.clone()),
                &["function"],
            )?,
            instantiate_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "goldfish_instantiate_duration_seconds",
                    "New Store + instantiate: the per-request overhead",
                )
                .buckets(buckets.clone()),
            )?,
            kv_operations: IntCounterVec::new(
                Opts::new(
                    "goldfish_kv_operations_total",
                    "kv calls made by guests, by operation and outcome",
                ),
                &["op", "outcome"],
            )?,
            kv_duration: HistogramVec::new(
                HistogramOpts::new(
                    "goldfish_kv_duration_seconds",
                    "kv call latency as the guest sees it",
                )
                .buckets(buckets),
                &["op"],
            )?,
            deploys: IntCounter::new(
                "goldfish_deploys_total",
                "Successful deploys through this host",
            )?,
            compiled_components: IntGauge::new(
                "goldfish_compiled_components",
                "Compiled component digests cached on this host",
            )?,
            registry,
            functions: RwLock::default(),
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.instances_created.clone()))?;
        r.register(Box::new(metrics.instances_dropped.clone()))?;
        r.register(Box::new(metrics.instances_live.clone()))?;
        r.register(Box::new(metrics.requests.clone()))?;
        r.register(Box::new(metrics.request_duration.clone()))?;
        r.register(Box::new(metrics.instantiate_duration.clone()))?;
        r.register(Box::new(metrics.kv_operations.clone()))?;
        r.register(Box::new(metrics.kv_duration.clone()))?;
        r.register(Box::new(metrics.deploys.clone()))?;
        r.register(Box::new(metrics.compiled_components.clone()))?;
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Arc::new(metrics))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for I/O reasons; a failure would be a bug in a metric.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding metrics failed: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Counts one instance as created and live until the returned guard is dropped.
    pub fn instance_created(
        self: &Arc<Self>,
        function: &str,
        instantiate: Duration,
    ) -> InstanceGuard {
        let series = self.series(function);
        series.instances_created.inc();
        self.instances_live.inc();
        self.instantiate_duration.observe(instantiate.as_secs_f64());
        InstanceGuard {
            metrics: self.clone(),
            series,
        }
    }

    /// `function`'s series, created on first use.
    fn series(&self, function: &str) -> Arc<FunctionSeries> {
        let read = self.functions.read().unwrap_or_else(|p| p.into_inner());
        if let Some(series) = read.get(function) {
            return series.clone();
        }
        drop(read);
        let mut write = self.functions.write().unwrap_or_else(|p| p.into_inner());
        write
            .entry(function.into())
            .or_insert_with(|| {
                Arc::new(FunctionSeries {
                    instances_created: self.instances_created.with_label_values(&[function]),
                    instances_dropped: self.instances_dropped.with_label_values(&[function]),
                    request_duration: self.request_duration.with_label_values(&[function]),
                    requests: RwLock::default(),
                })
            })
            .clone()
    }

    pub fn kv_call(&self, op: &str, outcome: &str, elapsed: Duration) {
        self.kv_operations.with_label_values(&[op, outcome]).inc();
        self.kv_duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
    }

    pub fn request(&self, function: &str, status: u16, elapsed: Duration) {
        let series = self.series(function);
        series.request_duration.observe(elapsed.as_secs_f64());
        let known = series.requests.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, counter)) = known.iter().find(|(s, _)| *s == status) {
            counter.inc();
            return;
        }
        drop(known);
        let status_label = status.to_string();
        let counter = self
            .requests
            .with_label_values(&[function, status_label.as_str()]);
        counter.inc();
        let mut known = series.requests.write().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|(s, _)| *s == status) {
            known.push((status, counter));
        }
    }
}

/// Marks an instance live; dropping it (after the instance's store is gone) counts the drop.
pub struct InstanceGuard {
    metrics: Arc<Metrics>,
    series: Arc<FunctionSeries>,
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.series.instances_dropped.inc();
        self.metrics.instances_live.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_balances_created_and_dropped() {
        let metrics = Metrics::new().expect("metrics");
        let guard = metrics.instance_created("f", Duration::from_micros(10));
        assert_eq!(metrics.instances_live.get(), 1);
        drop(guard);
        assert_eq!(metrics.instances_live.get(), 0);
        assert_eq!(metrics.instances_created.with_label_values(&["f"]).get(), 1);
        assert_eq!(metrics.instances_dropped.with_label_values(&["f"]).get(), 1);
        assert!(
            metrics
                .render()
                .contains("goldfish_instances_created_total{function=\"f\"} 1")
        );
    }
}

//! Prometheus metrics, served at `GET /metrics`: instance churn, requests, kv operations,
//! deploys, and the standard `process_*` figures of the host process.
//!
//! One [`Metrics`] per host (not a global registry), so several hosts in one process (tests)
//! keep separate books.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
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
    /// Each kv operation's series, resolved on first use (see [`KvSeries`]).
    kv_series: [KvSeries; KvOp::COUNT],
}

/// A fieldless enum whose variants each carry a label, with `COUNT` and `label()` generated
/// from one list: a variant added to the list is counted, so indexing a `[_; COUNT]` array by
/// `variant as usize` stays in bounds.
macro_rules! labelled {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// How many there are.
            const COUNT: usize = [$($label),+].len();

            /// Its label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

labelled! {
    /// The kv operations counted in `goldfish_kv_operations_total{op}`.
    KvOp {
        Get => "get",
        Set => "set",
        Delete => "delete",
        Exists => "exists",
        Increment => "increment",
        CompareAndSwap => "compare_and_swap",
        ListKeys => "list_keys",
    }
}

labelled! {
    /// How a kv call ended, counted in `goldfish_kv_operations_total{outcome}`.
    KvOutcome {
        Ok => "ok",
        InvalidKey => "invalid_key",
        ValueTooLarge => "value_too_large",
        NotAnInteger => "not_an_integer",
        InvalidCursor => "invalid_cursor",
        Unavailable => "unavailable",
        Refused => "refused",
        BudgetExceeded => "budget_exceeded",
    }
}

/// One kv operation's series, each looked up on its first use and kept: a kv call then costs
/// no label hashing (two `with_label_values` lookups per call before). Lazily, so `/metrics`
/// shows only series that happened, as before.
#[derive(Default)]
struct KvSeries {
    duration: OnceLock<Histogram>,
    outcomes: [OnceLock<IntCounter>; KvOutcome::COUNT],
}

/// One function's per-request series with their label values already looked up: a request
/// finds them with one map lookup ([`Metrics::function`]) instead of hashing label values for
/// each of four metrics. Only names that resolved to a deployed function (or
/// [`UNKNOWN_FUNCTION`]) get one.
pub struct FunctionSeries {
    name: Box<str>,
    instances_created: IntCounter,
    instances_dropped: IntCounter,
    request_duration: Histogram,
    /// `goldfish_requests_total{status}` for statuses 100 to 599, each looked up on its first
    /// use: reading one is a plain load, no lock shared between threads.
    statuses: Box<[OnceLock<IntCounter>]>,
}

/// The statuses [`FunctionSeries::statuses`] holds a place for.
const STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

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
            kv_series: Default::default(),
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

    /// Counts one instance of `series`' function as created and live until the returned guard
    /// is dropped.
    pub fn instance_created(
        self: &Arc<Self>,
        series: &Arc<FunctionSeries>,
        instantiate: Duration,
    ) -> InstanceGuard {
        series.instances_created.inc();
        self.instances_live.inc();
        self.instantiate_duration.observe(instantiate.as_secs_f64());
        InstanceGuard {
            metrics: self.clone(),
            series: series.clone(),
        }
    }

    /// `function`'s series, created on first use: look it up once per request.
    pub fn function(&self, function: &str) -> Arc<FunctionSeries> {
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
                    name: function.into(),
                    instances_created: self.instances_created.with_label_values(&[function]),
                    instances_dropped: self.instances_dropped.with_label_values(&[function]),
                    request_duration: self.request_duration.with_label_values(&[function]),
                    statuses: STATUSES.map(|_| OnceLock::new()).collect(),
                })
            })
            .clone()
    }

    /// Counts one kv call of `op` that ended with `outcome`.
    pub fn kv_call(&self, op: KvOp, outcome: KvOutcome, elapsed: Duration) {
        let series = &self.kv_series[op as usize];
        series.outcomes[outcome as usize]
            .get_or_init(|| {
                self.kv_operations
                    .with_label_values(&[op.label(), outcome.label()])
            })
            .inc();
        series
            .duration
            .get_or_init(|| self.kv_duration.with_label_values(&[op.label()]))
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one request to `series`' function answered with `status`.
    pub fn request(&self, series: &FunctionSeries, status: u16, elapsed: Duration) {
        series.request_duration.observe(elapsed.as_secs_f64());
        let resolve = || {
            let status = status.to_string();
            self.requests
                .with_label_values(&[&*series.name, status.as_str()])
        };
        let slot = status
            .checked_sub(*STATUSES.start())
            .and_then(|index| series.statuses.get(usize::from(index)));
        match slot {
            Some(slot) => slot.get_or_init(resolve).inc(),
            None => resolve().inc(),
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
    fn kv_calls_and_statuses_are_counted_under_their_own_labels() {
        let metrics = Metrics::new().expect("metrics");
        let took = Duration::from_micros(50);
        metrics.kv_call(KvOp::CompareAndSwap, KvOutcome::Ok, took);
        metrics.kv_call(KvOp::CompareAndSwap, KvOutcome::Ok, took);
        metrics.kv_call(KvOp::CompareAndSwap, KvOutcome::Unavailable, took);
        metrics.kv_call(KvOp::Get, KvOutcome::Ok, took);
        let count =
            |counters: &IntCounterVec, labels: &[&str]| counters.with_label_values(labels).get();
        let ops = |op: &str, outcome: &str| count(&metrics.kv_operations, &[op, outcome]);
        assert_eq!(ops("compare_and_swap", "ok"), 2);
        assert_eq!(ops("compare_and_swap", "unavailable"), 1);
        assert_eq!(ops("get", "ok"), 1);
        assert_eq!(ops("get", "unavailable"), 0);
        let calls = |op: &str| {
            metrics
                .kv_duration
                .with_label_values(&[op])
                .get_sample_count()
        };
        assert_eq!((calls("compare_and_swap"), calls("get")), (3, 1));

        let (f, g) = (metrics.function("f"), metrics.function("g"));
        for status in [201, 201, 503] {
            metrics.request(&f, status, took);
        }
        metrics.request(&g, 201, took);
        // Outside 100-599 (no HTTP answer has one) still counted, by label lookup.
        metrics.request(&g, 999, took);
        let requests = |function: &str, status: &str| count(&metrics.requests, &[function, status]);
        assert_eq!(requests("f", "201"), 2);
        assert_eq!(requests("f", "503"), 1);
        assert_eq!(requests("g", "201"), 1);
        assert_eq!(requests("g", "999"), 1);
        assert_eq!(requests("g", "503"), 0);
        assert!(
            Arc::ptr_eq(&f, &metrics.function("f")),
            "one series per function"
        );
    }

    #[test]
    fn a_guard_balances_created_and_dropped() {
        let metrics = Metrics::new().expect("metrics");
        let guard = metrics.instance_created(&metrics.function("f"), Duration::from_micros(10));
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

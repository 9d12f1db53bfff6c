//! This host's figures per function, read from its Prometheus metrics: requests, errors,
//! instances, and the latency histogram with its quantiles.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{HistogramVec, IntCounterVec};

use crate::metrics::Metrics;

/// One function's figures on this host since it started, read from its metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionFigures {
    pub requests: u64,
    /// Requests answered with a 5xx.
    pub errors: u64,
    pub instances_created: u64,
    /// Instances created and not yet dropped.
    pub instances_live: u64,
    /// The request latency histogram: (upper bound in seconds, cumulative count), ascending.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Every latency observation (the `+Inf` bucket).
    pub latency_count: u64,
}

/// A latency quantile read from a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quantile {
    /// Interpolated within its bucket.
    Within(Duration),
    /// Past the last bucket's bound: the histogram cannot say by how much.
    Above(Duration),
}

impl FunctionFigures {
    /// The `q` quantile (0..=1) of the request latency, interpolated linearly within its bucket
    /// as Prometheus' `histogram_quantile` does. `None` before the first request.
    pub fn latency_quantile(&self, q: f64) -> Option<Quantile> {
        if self.latency_count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.latency_count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(upper, cumulative) in &self.latency_buckets {
            if cumulative as f64 >= rank && cumulative > below {
                let within = (rank - below as f64) / (cumulative - below) as f64;
                let seconds = lower + (upper - lower) * within.clamp(0.0, 1.0);
                return Some(Quantile::Within(Duration::from_secs_f64(seconds)));
            }
            (lower, below) = (upper, cumulative);
        }
        Some(Quantile::Above(Duration::from_secs_f64(lower)))
    }
}

/// Each function's figures on this host, by function name, from its metrics. Includes
/// [`crate::metrics::UNKNOWN_FUNCTION`], the requests that named no deployed function.
pub fn figures(metrics: &Metrics) -> BTreeMap<String, FunctionFigures> {
    let mut figures: BTreeMap<String, FunctionFigures> = BTreeMap::new();
    for (labels, count) in counters(&metrics.requests) {
        let figure = figures.entry(label(&labels, "function")).or_default();
        figure.requests += count;
        if label(&labels, "status").starts_with('5') {
            figure.errors += count;
        }
    }
    for (labels, count) in counters(&metrics.instances_created) {
        let figure = figures.entry(label(&labels, "function")).or_default();
        figure.instances_created += count;
        figure.instances_live += count;
    }
    for (labels, count) in counters(&metrics.instances_dropped) {
        let figure = figures.entry(label(&labels, "function")).or_default();
        // Saturating: created and dropped are read one after the other, not atomically.
        figure.instances_live = figure.instances_live.saturating_sub(count);
    }
    for series in histograms(&metrics.request_duration) {
        let figure = figures
            .entry(label(&series.labels, "function"))
            .or_default();
        figure.latency_buckets = series.buckets;
        figure.latency_count = series.count;
    }
    figures
}

type Labels = Vec<(String, String)>;

fn label(labels: &Labels, name: &str) -> String {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn labels_of(metric: &prometheus::proto::Metric) -> Labels {
    metric
        .get_label()
        .iter()
        .map(|pair| (pair.name().to_owned(), pair.value().to_owned()))
        .collect()
}

/// Every series of a counter vector, with its labels.
fn counters(vector: &IntCounterVec) -> Vec<(Labels, u64)> {
    vector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| (labels_of(m), m.get_counter().get_value() as u64))
        .collect()
}

/// One series of a histogram vector.
struct HistogramSeries {
    labels: Labels,
    /// (upper bound, cumulative count), ascending.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

/// Every series of a histogram vector.
fn histograms(vector: &HistogramVec) -> Vec<HistogramSeries> {
    vector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| {
            let histogram = m.get_histogram();
            let buckets = histogram
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect();
            HistogramSeries {
                labels: labels_of(m),
                buckets,
                count: histogram.get_sample_count(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_latencies(buckets: &[(f64, u64)], count: u64) -> FunctionFigures {
        FunctionFigures {
            latency_buckets: buckets.to_vec(),
            latency_count: count,
            ..FunctionFigures::default()
        }
    }

    #[test]
    fn a_quantile_is_interpolated_within_its_bucket() {
        // 100 requests: 50 under 1 ms, 40 between 1 and 2 ms, 10 between 2 and 4 ms.
        let figures = with_latencies(&[(0.001, 50), (0.002, 90), (0.004, 100)], 100);
        let ms = |q| match figures.latency_quantile(q) {
            Some(Quantile::Within(d)) => d.as_secs_f64() * 1000.0,
            other => panic!("{other:?}"),
        };
        assert!((ms(0.5) - 1.0).abs() < 1e-9);
        assert!((ms(0.7) - 1.5).abs() < 1e-9);
        assert!((ms(0.99) - 3.8).abs() < 1e-9);
    }

    #[test]
    fn a_quantile_past_the_last_bucket_says_only_above_it() {
        let figures = with_latencies(&[(0.001, 1), (10.0, 1)], 2);
        assert_eq!(
            figures.latency_quantile(0.99),
            Some(Quantile::Above(Duration::from_secs(10)))
        );
        assert_eq!(with_latencies(&[], 0).latency_quantile(0.5), None);
    }

    #[test]
    fn figures_count_requests_errors_and_live_instances_per_function() {
        let metrics = Metrics::new().expect("metrics");
        let (a, b) = (metrics.function("a"), metrics.function("b"));
        metrics.request(&a, 200, Duration::from_millis(1));
        metrics.request(&a, 503, Duration::from_millis(1));
        metrics.request(&b, 404, Duration::from_millis(1));
        let guard = metrics.instance_created(&a, Duration::from_micros(10));
        drop(metrics.instance_created(&a, Duration::from_micros(10)));
        let figures = figures(&metrics);
        let a = &figures["a"];
        assert_eq!((a.requests, a.errors), (2, 1));
        assert_eq!((a.instances_created, a.instances_live), (2, 1));
        assert_eq!(a.latency_count, 2);
        assert_eq!((figures["b"].requests, figures["b"].errors), (1, 0));
        drop(guard);
    }
}

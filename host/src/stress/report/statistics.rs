//! The statistics a run's figures are computed with: nearest-rank percentiles, the latency
//! summary and histogram, and repeated values.

use super::{LatencyBucket, LatencySummary};

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

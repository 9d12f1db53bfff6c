//! The text report a person reads, ending with the verdict line.

use std::fmt::Write as _;

use super::{GeneratorCeiling, RequestCounts, StressReport};
use crate::stress::generator::MIN_HEADROOM;

impl StressReport {
    /// The report as a person reads it, ending with the verdict line
    /// (`recycling: OK` or `recycling: FAILED: ...`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason only.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        let requests = &self.requests;
        writeln!(
            out,
            "goldfish stress: {} {}{} on {} host(s), concurrency {}, {:.2} s",
            self.method,
            self.function,
            if self.path == "/" { "" } else { &self.path },
            self.hosts.len(),
            self.concurrency,
            self.elapsed_seconds
        )?;
        writeln!(
            out,
            "requests    sent {}, ok {}, failed {}{}",
            requests.sent,
            requests.ok,
            requests.failed,
            failure_breakdown(requests)
                .map(|b| format!(" ({b})"))
                .unwrap_or_default()
        )?;
        writeln!(out, "throughput  {:.1} req/s", self.throughput_rps)?;
        let latency = &self.latency;
        writeln!(
            out,
            "latency     p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms)",
            latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms, latency.mean_ms
        )?;
        let fresh = &self.freshness;
        writeln!(
            out,
            "freshness   {} answers checked, {} from a reused instance, {} unreadable, {} repeated kv values",
            fresh.checked, fresh.reused_instances, fresh.unreadable, fresh.repeated_kv_values
        )?;
        match fresh.kv_advanced() {
            Some(advanced) => writeln!(
                out,
                "kv counter  {} -> {}: advanced {advanced} for {} ok requests",
                fresh.kv_before.unwrap_or_default(),
                fresh.kv_after.unwrap_or_default(),
                requests.ok
            )?,
            None => writeln!(out, "kv counter  not read: {}", fresh.kv_errors.join("; "))?,
        }
        for host in &self.hosts {
            writeln!(out, "host {}", host.target)?;
            writeln!(
                out,
                "  sent {}, answered {}, ok {}; host served {}, instances created {}, dropped {}",
                host.sent,
                host.answered,
                host.ok,
                host.served,
                host.instances_created,
                host.instances_dropped
            )?;
            writeln!(
                out,
                "  live instances: before {}, peak >= {} (sampled), after {}",
                host.live_instances_before, host.peak_live_instances, host.live_instances_after
            )?;
            writeln!(
                out,
                "  RSS {} -> {}",
                mebibytes(host.rss_bytes_before),
                mebibytes(host.rss_bytes_after)
            )?;
            if host.failed_samples > 0 {
                writeln!(
                    out,
                    "  {} metrics samples could not be read",
                    host.failed_samples
                )?;
            }
        }
        match &self.generator {
            GeneratorCeiling::Skipped => {}
            GeneratorCeiling::Failed { error } => {
                writeln!(out, "generator   ceiling not measured: {error}")?;
            }
            GeneratorCeiling::Measured(check) => {
                let verdict = match check.headroom {
                    Some(headroom) if check.saturated => format!(
                        "{headroom:.2}x this run's throughput, below {MIN_HEADROOM}x: the \
                         generator may have limited this run, so its throughput is a floor \
                         (run the load from another machine, or with fewer --concurrency)"
                    ),
                    Some(headroom) => {
                        format!("{headroom:.2}x this run's throughput: not the bottleneck")
                    }
                    None => "nothing was answered in the run to compare it with".to_owned(),
                };
                writeln!(
                    out,
                    "generator   {:.1} req/s against a trivial native server ({:.1} s): {verdict}",
                    check.ceiling_rps, check.seconds
                )?;
            }
        }
        for example in &requests.error_examples {
            writeln!(out, "error example: {example}")?;
        }
        if self.passed() {
            writeln!(out, "recycling: OK")
        } else {
            writeln!(out, "recycling: FAILED: {}", self.failures.join("; "))
        }
    }
}

/// "status 500: 3, transport errors: 2", or `None` when nothing failed.
pub(super) fn failure_breakdown(requests: &RequestCounts) -> Option<String> {
    let mut parts: Vec<String> = requests
        .by_status
        .iter()
        .filter(|(status, _)| **status != 200)
        .map(|(status, count)| format!("status {status}: {count}"))
        .collect();
    if requests.transport_errors > 0 {
        parts.push(format!("transport errors: {}", requests.transport_errors));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn mebibytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(bytes) => format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20)),
        None => "unknown".to_owned(),
    }
}

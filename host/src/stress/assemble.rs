//! One `goldfish stress` run's measurements (the load's tallies and samples, the snapshots before
//! and after) turned into a [`StressReport`].

use super::load::Load;
use super::prometheus::Scrape;
use super::report;
use super::sampler::{RawSample, as_count, live_instances};
use super::{
    Freshness, HostReport, LATENCY_BUCKETS, LatencySummary, Plan, RequestCounts, StressConfig,
    StressReport, TimelinePoint, series,
};

/// Turns the load and the two snapshots into the report; the kv readings and the checks are
/// filled in by the caller.
pub(super) fn assemble(
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
        generator: super::GeneratorCeiling::Skipped,
        failures: Vec::new(),
    }
}

//! The checks of a run that decide its verdict, each failure a sentence naming what failed.

use super::StressReport;
use super::text::failure_breakdown;

impl StressReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Every check of the run, as sentences naming what failed; empty when all pass.
///
/// Checks: every request answered 200; every answer from a fresh instance (`global == 1`) and
/// readable; no kv value twice; the kv counter advanced by exactly the number of 200s; per host,
/// instances created == requests served == responses the tool got, created == dropped, and no
/// instance live after the run.
pub fn find_failures(report: &StressReport) -> Vec<String> {
    let mut failures = Vec::new();
    let requests = &report.requests;
    if requests.sent == 0 {
        failures.push("no request was sent".to_owned());
    }
    if requests.failed > 0 {
        failures.push(format!(
            "{} of {} requests failed ({})",
            requests.failed,
            requests.sent,
            failure_breakdown(requests).unwrap_or_else(|| "no status recorded".to_owned())
        ));
    }
    let fresh = &report.freshness;
    if fresh.reused_instances > 0 {
        failures.push(format!(
            "{} answers came from a reused instance (global != 1)",
            fresh.reused_instances
        ));
    }
    if fresh.unreadable > 0 {
        failures.push(format!(
            "{} answers were not the recycle-probe's JSON",
            fresh.unreadable
        ));
    }
    if fresh.repeated_kv_values > 0 {
        failures.push(format!(
            "{} kv values were returned more than once",
            fresh.repeated_kv_values
        ));
    }
    match fresh.kv_advanced() {
        Some(advanced) if advanced != i128::from(requests.ok) => {
            failures.push(format!(
                "kv counter advanced by {advanced}, expected {} (the number of 200s)",
                requests.ok
            ));
        }
        Some(_) => {}
        None => failures.push(format!(
            "kv counter could not be read: {}",
            fresh.kv_errors.join("; ")
        )),
    }
    for host in &report.hosts {
        let target = &host.target;
        if host.instances_created != host.served {
            failures.push(format!(
                "{target}: {} instances created for {} requests served",
                host.instances_created, host.served
            ));
        }
        if host.served != host.answered {
            failures.push(format!(
                "{target}: host counted {} requests served but answered {} of the {} sent",
                host.served, host.answered, host.sent
            ));
        }
        if host.instances_dropped != host.instances_created {
            failures.push(format!(
                "{target}: {} instances created but {} dropped",
                host.instances_created, host.instances_dropped
            ));
        }
        if host.live_instances_after != 0 {
            failures.push(format!(
                "{target}: {} instances still live after the run",
                host.live_instances_after
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stress::report::{
        Freshness, GeneratorCeiling, GeneratorCheck, HostReport, LatencySummary, RequestCounts,
        latency_histogram,
    };

    /// A run of 100 requests over two hosts where every check passes.
    fn passing_run() -> StressReport {
        let host = |target: &str| HostReport {
            target: target.to_owned(),
            sent: 50,
            answered: 50,
            ok: 50,
            served: 50,
            instances_created: 50,
            instances_dropped: 50,
            peak_live_instances: 7,
            live_instances_before: 0,
            live_instances_after: 0,
            rss_bytes_before: Some(40 << 20),
            rss_bytes_after: Some(42 << 20),
            failed_samples: 0,
        };
        StressReport {
            function: "probe".into(),
            method: "POST".into(),
            path: "/".into(),
            concurrency: 8,
            elapsed_seconds: 2.0,
            requests: RequestCounts {
                sent: 100,
                ok: 100,
                failed: 0,
                by_status: BTreeMap::from([(200, 100)]),
                transport_errors: 0,
                error_examples: Vec::new(),
            },
            throughput_rps: 50.0,
            latency: LatencySummary::from_sorted(&[1.0, 2.0, 3.0]),
            latency_histogram: latency_histogram(&[1.0, 2.0, 3.0], 4),
            freshness: Freshness {
                checked: 100,
                kv_before: Some(10),
                kv_after: Some(110),
                ..Freshness::default()
            },
            hosts: vec![host("http://127.0.0.1:1"), host("http://127.0.0.1:2")],
            timeline: Vec::new(),
            generator: GeneratorCeiling::Skipped,
            failures: Vec::new(),
        }
    }

    fn verdict(report: &mut StressReport) -> Vec<String> {
        report.failures = find_failures(report);
        report.failures.clone()
    }

    #[test]
    fn a_clean_run_passes_and_says_ok() {
        let mut report = passing_run();
        assert_eq!(verdict(&mut report), Vec::<String>::new());
        assert!(report.passed());
        assert!(
            report.render().ends_with("recycling: OK\n"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn a_generator_within_three_times_the_run_is_called_saturated_but_does_not_fail_it() {
        let mut report = passing_run();
        // The run's throughput is 50 req/s.
        report.generator = GeneratorCeiling::Measured(GeneratorCheck::new(140.0, 50.0, 1.0));
        assert_eq!(verdict(&mut report), Vec::<String>::new());
        let text = report.render();
        assert!(
            text.contains("2.80x this run's throughput, below 3x: the generator may have limited"),
            "{text}"
        );
        // Just under 3x reads as under it (one decimal printed "3.0x ... below 3x").
        report.generator = GeneratorCeiling::Measured(GeneratorCheck::new(149.6, 50.0, 1.0));
        let text = report.render();
        assert!(
            text.contains("2.99x this run's throughput, below 3x"),
            "{text}"
        );
        report.generator = GeneratorCeiling::Measured(GeneratorCheck::new(160.0, 50.0, 1.0));
        let text = report.render();
        assert!(
            text.contains("3.20x this run's throughput: not the bottleneck"),
            "{text}"
        );
        assert!(!GeneratorCheck::new(160.0, 50.0, 1.0).saturated);
        assert_eq!(GeneratorCheck::new(160.0, 0.0, 1.0).headroom, None);
    }

    #[test]
    fn a_reused_instance_fails_the_run() {
        let mut report = passing_run();
        report.freshness.reused_instances = 1;
        assert_eq!(
            verdict(&mut report),
            ["1 answers came from a reused instance (global != 1)"]
        );
        assert!(
            report
                .render()
                .contains("recycling: FAILED: 1 answers came from a reused instance")
        );
    }

    #[test]
    fn kv_counter_must_advance_by_exactly_the_number_of_200s() {
        let mut report = passing_run();
        report.freshness.kv_after = Some(109);
        assert_eq!(
            verdict(&mut report),
            ["kv counter advanced by 99, expected 100 (the number of 200s)"]
        );
        report.freshness.kv_after = None;
        report.freshness.kv_errors = vec!["connection refused".into()];
        assert_eq!(
            verdict(&mut report),
            ["kv counter could not be read: connection refused"]
        );
    }

    #[test]
    fn instances_must_match_requests_and_all_be_dropped() {
        let mut report = passing_run();
        report.hosts[1].instances_created = 49;
        report.hosts[1].live_instances_after = 1;
        assert_eq!(
            verdict(&mut report),
            [
                "http://127.0.0.1:2: 49 instances created for 50 requests served",
                "http://127.0.0.1:2: 49 instances created but 50 dropped",
                "http://127.0.0.1:2: 1 instances still live after the run",
            ]
        );
    }

    #[test]
    fn host_must_count_every_answer_the_tool_got() {
        let mut report = passing_run();
        report.hosts[0].served = 51;
        report.hosts[0].instances_created = 51;
        report.hosts[0].instances_dropped = 51;
        assert_eq!(
            verdict(&mut report),
            ["http://127.0.0.1:1: host counted 51 requests served but answered 50 of the 50 sent"]
        );
    }

    #[test]
    fn failed_requests_fail_the_run_with_their_statuses() {
        let mut report = passing_run();
        report.requests.ok = 97;
        report.requests.failed = 3;
        report.requests.by_status = BTreeMap::from([(200, 97), (503, 2)]);
        report.requests.transport_errors = 1;
        report.freshness.kv_after = Some(107);
        assert_eq!(
            verdict(&mut report),
            ["3 of 100 requests failed (status 503: 2, transport errors: 1)"]
        );
        assert!(
            report
                .render()
                .contains("failed 3 (status 503: 2, transport errors: 1)")
        );
    }
}

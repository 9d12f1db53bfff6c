//! `goldfish stress` end to end: real load at two real hosts sharing one real Redis, with every
//! recycling check held exactly; and the report's JSON and SVG outputs.

mod support;

use goldfish::stress::{self, GeneratorCeiling, StressConfig, StressReport};
use support::{Host, Redis};

/// Load of the end-to-end run: enough requests that reuse or a leak would show, few enough for a
/// two-core machine.
const REQUESTS: u64 = 2_000;
const CONCURRENCY: usize = 32;

fn config(targets: &[&Host], requests: u64) -> StressConfig {
    StressConfig {
        targets: targets.iter().map(|host| host.url.clone()).collect(),
        function: "probe".into(),
        path: "/".into(),
        method: "POST".into(),
        requests: Some(requests),
        duration: None,
        concurrency: CONCURRENCY,
        generator_check: Some(std::time::Duration::from_secs(1)),
        progress: false,
    }
}

/// Two hosts on one Redis with the recycle-probe deployed (through the first; the second picks
/// it up from the shared registry).
async fn probe_hosts(redis: &Redis) -> (Host, Host) {
    let a = Host::start(redis);
    let b = Host::start(redis);
    a.deploy_ok("probe", None, "recycle-probe").await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_over_two_hosts_each_run_on_a_fresh_instance_that_is_dropped() {
    let redis = Redis::start();
    let (a, b) = probe_hosts(&redis).await;

    let report = stress::run(&config(&[&a, &b], REQUESTS))
        .await
        .expect("the run is measurable");
    let text = report.render();

    assert_eq!(report.requests.sent, REQUESTS, "{text}");
    assert_eq!(
        report.requests.ok, REQUESTS,
        "every request is 200:\n{text}"
    );
    assert_eq!(
        report.requests.by_status.get(&200),
        Some(&REQUESTS),
        "{text}"
    );
    assert_eq!(report.requests.transport_errors, 0, "{text}");
    assert_eq!(report.freshness.checked, REQUESTS, "{text}");
    assert_eq!(
        report.freshness.reused_instances, 0,
        "no answer from a used instance:\n{text}"
    );
    assert_eq!(report.freshness.unreadable, 0, "{text}");
    assert_eq!(report.freshness.repeated_kv_values, 0, "{text}");
    assert_eq!(
        report.freshness.kv_advanced(),
        Some(i128::from(REQUESTS)),
        "kv advanced once per 200:\n{text}"
    );
    assert_eq!(report.hosts.len(), 2);
    for host in &report.hosts {
        // Round robin: exactly half each.
        assert_eq!(host.sent, REQUESTS / 2, "{text}");
        assert_eq!(host.answered, host.sent, "{text}");
        assert_eq!(
            host.served, host.sent,
            "{}: host counted every request the tool sent:\n{text}",
            host.target
        );
        assert_eq!(
            host.instances_created, host.served,
            "{}: one instance per request:\n{text}",
            host.target
        );
        assert_eq!(
            host.instances_dropped, host.instances_created,
            "{}: every instance dropped:\n{text}",
            host.target
        );
        assert_eq!(
            host.live_instances_after, 0,
            "{}: nothing live after the run:\n{text}",
            host.target
        );
        assert!(
            host.rss_bytes_after.is_some(),
            "{}: RSS is exported:\n{text}",
            host.target
        );
    }
    assert_eq!(report.failures, Vec::<String>::new(), "{text}");
    assert!(report.passed());
    assert!(text.ends_with("recycling: OK\n"), "{text}");
    assert!(
        report.timeline.len() >= 2,
        "sampled during the run and at the end:\n{text}"
    );
    assert_eq!(
        report.timeline.last().map(|point| point.completed),
        Some(REQUESTS)
    );
    // The generator's own ceiling was measured after the run, and the saturation call follows
    // from the two figures.
    let GeneratorCeiling::Measured(check) = report.generator else {
        panic!("the generator's ceiling was not measured:\n{text}");
    };
    assert!(check.ceiling_rps > 0.0 && check.seconds >= 1.0, "{text}");
    assert_eq!(
        check.saturated,
        check.ceiling_rps < 3.0 * report.throughput_rps,
        "{text}"
    );
    assert!(text.contains("against a trivial native server"), "{text}");
}

#[tokio::test]
async fn report_serialises_to_json_and_draws_an_svg() {
    let redis = Redis::start();
    let (a, b) = probe_hosts(&redis).await;
    let report = stress::run(&config(&[&a, &b], 50))
        .await
        .expect("the run is measurable");
    let dir = std::env::temp_dir().join(format!("goldfish-stress-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let svg = dir.join("run.svg");
    stress::write_svg(&report, &svg).unwrap();
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("<svg"), "{drawn}");
    assert!(drawn.contains(&a.url), "the legend names each host");

    let json_file = dir.join("run.json");
    stress::write_json(&report, &json_file).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert_eq!(json["requests"]["sent"], 50);
    assert_eq!(json["hosts"][1]["target"], b.url.as_str());
    assert_eq!(json["failures"], serde_json::json!(report.failures));
    assert!(json["latency"]["p99_ms"].is_number());
    assert!(json["timeline"].is_array());
    assert_eq!(json["generator"]["outcome"], "measured", "{json}");
    assert!(
        json["generator"]["ceiling_rps"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_host_that_is_not_there_is_an_error_not_a_verdict() {
    // A port nothing listens on: the run cannot read metrics, so it cannot judge recycling.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = StressConfig {
        targets: vec![format!("http://{closed}")],
        function: "probe".into(),
        path: "/".into(),
        method: "POST".into(),
        requests: Some(1),
        duration: None,
        concurrency: 1,
        generator_check: None,
        progress: false,
    };
    let error = stress::run(&config)
        .await
        .map(|report: StressReport| report.render())
        .unwrap_err();
    assert!(format!("{error:#}").contains("metrics"), "{error:#}");
}

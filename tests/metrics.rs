//! `/metrics` moves by exactly what a known sequence of calls should move it by, traps
//! included.

mod support;

use goldfish::stress::prometheus::Scrape;
use support::{Host, Redis, client, get_status, post_status};

async fn scrape(host: &Host) -> Scrape {
    let page = client()
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(&page).unwrap()
}

#[tokio::test]
async fn counters_move_by_exactly_the_calls_made_including_a_trap() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("probe", None, "recycle-probe").await;
    host.deploy_ok("mb", None, "misbehave").await;
    let before = scrape(&host).await;

    for _ in 0..5 {
        assert_eq!(post_status(&host.fn_url("probe")).await, 200);
    }
    assert_eq!(get_status(&host.fn_url("mb/trap")).await, 500);
    assert_eq!(get_status(&host.fn_url("nobody")).await, 404);
    let after = scrape(&host).await;

    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let probe = [("function", "probe")];
    let mb = [("function", "mb")];
    assert_eq!(delta("goldfish_instances_created_total", &probe), 5.0);
    assert_eq!(delta("goldfish_instances_dropped_total", &probe), 5.0);
    assert_eq!(
        delta("goldfish_instances_created_total", &mb),
        1.0,
        "the trapping call had an instance"
    );
    assert_eq!(
        delta("goldfish_instances_dropped_total", &mb),
        1.0,
        "and it was dropped"
    );
    assert_eq!(after.value("goldfish_instances_live", &[]), Some(0.0));
    assert_eq!(
        delta(
            "goldfish_requests_total",
            &[("function", "probe"), ("status", "200")]
        ),
        5.0
    );
    assert_eq!(
        delta(
            "goldfish_requests_total",
            &[("function", "mb"), ("status", "500")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "goldfish_requests_total",
            &[("function", "_unknown"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        delta("goldfish_request_duration_seconds_count", &probe),
        5.0
    );
    assert_eq!(
        delta("goldfish_instantiate_duration_seconds_count", &[]),
        6.0
    );
    assert_eq!(
        delta(
            "goldfish_kv_operations_total",
            &[("op", "increment"), ("outcome", "ok")]
        ),
        5.0
    );
    assert_eq!(
        delta("goldfish_kv_duration_seconds_count", &[("op", "increment")]),
        5.0
    );
    assert_eq!(after.value("goldfish_deploys_total", &[]), Some(2.0));
    assert_eq!(after.value("goldfish_compiled_components", &[]), Some(2.0));
    assert!(
        after
            .value("process_resident_memory_bytes", &[])
            .is_some_and(|rss| rss > 1e6)
    );
}

#[tokio::test]
async fn timed_out_calls_still_balance_created_and_dropped() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--timeout-ms", "300"]);
    host.deploy_ok("mb", None, "misbehave").await;
    assert_eq!(get_status(&host.fn_url("mb/spin")).await, 504);
    let after = scrape(&host).await;
    let mb = [("function", "mb")];
    assert_eq!(after.sum("goldfish_instances_created_total", &mb), 1.0);
    assert_eq!(after.sum("goldfish_instances_dropped_total", &mb), 1.0);
    assert_eq!(after.value("goldfish_instances_live", &[]), Some(0.0));
    assert_eq!(
        after.sum(
            "goldfish_requests_total",
            &[("function", "mb"), ("status", "504")]
        ),
        1.0
    );
}

//! Redis faults, end to end: a hung Redis becomes a quick 503 (not a request stuck until its
//! deadline), `/readyz` says so, and service returns by itself once Redis answers again.

mod support;

use std::time::{Duration, Instant};

use support::{Host, Redis, get_status, post_json};

#[tokio::test]
async fn a_frozen_redis_is_a_503_within_a_second_and_service_returns_when_it_thaws() {
    let redis = Redis::start();
    // The production default, stated: the test is about what it promises.
    let host = Host::start_tuned(&redis, &["--redis-timeout-ms", "500"]);
    host.deploy_ok("probe", None, "recycle-probe").await;
    assert_eq!(post_json(&host.fn_url("probe")).await.0, 200);

    redis.freeze();
    let started = Instant::now();
    let (status, body) = post_json(&host.fn_url("probe")).await;
    let first = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(first < Duration::from_secs(1), "the 503 took {first:?}");
    // While Redis is known to be down, requests fail fast instead of each waiting a timeout.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(post_json(&host.fn_url("probe")).await.0, 503);
    }
    let five = started.elapsed();
    assert!(five < Duration::from_secs(2), "five 503s took {five:?}");
    let started = Instant::now();
    assert_eq!(get_status(&format!("{}/readyz", host.url)).await, 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    println!("frozen Redis: first 503 after {first:?}, five more in {five:?}");

    redis.thaw();
    let thawed = Instant::now();
    let back = support::eventually(Duration::from_secs(5), || async {
        post_json(&host.fn_url("probe")).await.0 == 200
    })
    .await;
    let recovery = thawed.elapsed();
    assert!(back, "service did not return after Redis thawed");
    assert!(
        recovery < Duration::from_secs(2),
        "recovery took {recovery:?}"
    );
    assert_eq!(get_status(&format!("{}/readyz", host.url)).await, 200);
    println!("service returned {recovery:?} after Redis thawed");
}

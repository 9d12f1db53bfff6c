//! Noisy neighbours: a CPU budget per call apart from the deadline, a cap on each function's
//! concurrent calls, and guests that run where they cannot starve `/healthz` or other functions.

mod support;

use std::time::{Duration, Instant};

use support::{Host, Redis, client, get_json, get_status};

#[tokio::test]
async fn a_busy_loop_is_stopped_by_its_cpu_budget_before_the_deadline() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--cpu-ms", "300", "--timeout-ms", "10000"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let started = Instant::now();
    let (status, body) = get_json(&host.fn_url("mb/spin")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("CPU budget"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped by the budget, not the deadline"
    );
    // Waiting is not CPU: a call that sleeps longer than the budget answers.
    let (status, body) = get_json(&host.fn_url("mb/sleep?ms=600")).await;
    assert_eq!(status, 200, "{body}");

    // A function may lower its own budget at deploy, never raise it past the host's.
    let url = format!("{}/v1/functions/tight?cpu_ms=50", host.url);
    let (status, entry) =
        support::json(host.deploy_to(&url, support::guest("misbehave")).await).await;
    assert_eq!(
        (status, entry["cpu_ms"].clone()),
        (201, serde_json::json!(50))
    );
    let (status, body) = get_json(&host.fn_url("tight/spin")).await;
    assert_eq!(status, 500);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("50ms"),
        "{body}"
    );
}

#[tokio::test]
async fn many_short_waits_are_not_charged_to_the_cpu_budget() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let url = format!("{}/v1/functions/tight?cpu_ms=50", host.url);
    let (status, _) = support::json(host.deploy_to(&url, support::guest("misbehave")).await).await;
    assert_eq!(status, 201);
    // 100 waits of 3 ms span ~60 epoch ticks (5 ms each), nearly all while the guest waits.
    // Each of those used to be charged when the guest resumed, so this call failed its 50 ms
    // budget (10 ticks) though it ran for microseconds.
    let (status, body) = get_json(&host.fn_url("tight/sleep?ms=3&times=100")).await;
    assert_eq!(
        (status, &body["slept_ms"]),
        (200, &serde_json::json!(300)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_function_at_its_concurrency_cap_waits_while_others_are_served() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--max-concurrency-per-function", "2"]);
    host.deploy_ok("hot", None, "misbehave").await;
    host.deploy_ok("cold", None, "misbehave").await;
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client().get(host.fn_url("hot/sleep?ms=3000")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The hot function holds both of its places; the cold one is not affected.
    assert_eq!(get_status(&host.fn_url("cold/")).await, 200);
    let mut statuses = Vec::new();
    for call in slow {
        let response = call.await.expect("task").expect("response");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status == 503 {
            assert!(body.contains("concurrency limit of 2"), "{body}");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 200, 503],
        "the third call waited its 2 s, then 503"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_a_light_function_stay_quick_beside_cpu_bound_guests() {
    let waits = beside_cpu_bound_guests(&[]).await;
    // Not a speed target: guests share their threads round-robin, so a light call never waits
    // for the spinners' whole deadline.
    assert!(
        waits.light_worst < Duration::from_secs(1),
        "a light call waited {:?}",
        waits.light_worst
    );
    // Connections are served on the guest threads: each request waits for one round of the
    // spinners there (4 x 5 ms; p99 12-16 ms quiet, 30-180 ms while cargo built on both cores).
    // A thread that polled for I/O only every 61st guest slice (as tokio does while tasks stay
    // runnable) held every request at least 61 x 5 ms (317 ms measured), so the median tells
    // the two apart where a loaded machine's tail would not.
    for (what, median) in [
        ("/healthz", waits.health_median),
        ("a light call", waits.light_median),
    ] {
        assert!(
            median < Duration::from_millis(150),
            "{what} waited {median:?} (median) beside CPU-bound guests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_separate_http_threads_health_stays_quick_beside_cpu_bound_guests() {
    let waits = beside_cpu_bound_guests(&["--separate-http-threads"]).await;
    assert!(
        waits.light_worst < Duration::from_secs(1),
        "a light call waited {:?}",
        waits.light_worst
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_low_priority_guests_health_stays_quick_beside_cpu_bound_guests() {
    // Guests at the lowest priority yield to every other process on the machine too, so only
    // the front's promptness is asserted here; the light function's figure is printed.
    beside_cpu_bound_guests(&["--low-priority-guests"]).await;
}

/// How long `/healthz` and a light function waited beside CPU-bound guests.
struct Waits {
    health_median: Duration,
    light_median: Duration,
    light_worst: Duration,
}

/// Eight guests spin for their whole deadline while `/healthz` and a light function are called
/// over and over; `/healthz` must keep answering promptly.
async fn beside_cpu_bound_guests(extra: &[&str]) -> Waits {
    let redis = Redis::start();
    let mut args = vec!["--timeout-ms", "4000", "--cpu-ms", "0"];
    args.extend_from_slice(extra);
    let host = Host::start_tuned(&redis, &args);
    host.deploy_ok("busy", None, "misbehave").await;
    host.deploy_ok("light", None, "misbehave").await;
    let spinners: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client().get(host.fn_url("busy/spin")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut health = Vec::new();
    let mut light = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let started = Instant::now();
        assert_eq!(get_status(&format!("{}/healthz", host.url)).await, 200);
        health.push(started.elapsed());
        let started = Instant::now();
        assert_eq!(get_status(&host.fn_url("light/")).await, 200);
        light.push(started.elapsed());
    }
    for spinner in spinners {
        let status = spinner.await.expect("task").expect("response").status();
        assert_eq!(status, 504);
    }
    let quantile = |samples: &mut Vec<Duration>, q: usize| {
        samples.sort();
        samples[(samples.len() * q / 100).min(samples.len() - 1)]
    };
    let (health_worst, light_worst) = (
        *health.iter().max().expect("samples"),
        *light.iter().max().expect("samples"),
    );
    let (health_median, light_median) = (quantile(&mut health, 50), quantile(&mut light, 50));
    let (health_p99, light_p99) = (quantile(&mut health, 99), quantile(&mut light, 99));
    println!(
        "{extra:?} beside 8 CPU-bound guests: /healthz median {health_median:?}, p99 {health_p99:?}, \
         worst {health_worst:?} ({} samples); light function median {light_median:?}, p99 \
         {light_p99:?}, worst {light_worst:?}",
        health.len()
    );
    // Not a speed target: a starved front would take the spinners' whole deadline.
    assert!(
        health_worst < Duration::from_secs(1),
        "/healthz waited {health_worst:?}"
    );
    Waits {
        health_median,
        light_median,
        light_worst,
    }
}

#[tokio::test]
async fn a_body_that_trickles_in_is_408_and_the_host_keeps_serving() {
    use std::io::{Read, Write};
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--body-timeout-ms", "500"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let address = host.url.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // Promises 100 bytes, sends one, then nothing.
        stream
            .write_all(b"POST /fn/mb/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\na")
            .expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("the slow client finishes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout-ms"), "{answer}");
    assert_eq!(get_status(&host.fn_url("mb/")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_cap_the_host_sheds_load_at_once() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--max-in-flight", "1"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let slow = tokio::spawn(client().get(host.fn_url("mb/sleep?ms=1500")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, body) = get_json(&host.fn_url("mb/")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("in flight"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed at once, not after a wait"
    );
    assert_eq!(slow.await.expect("task").expect("response").status(), 200);
    assert_eq!(get_status(&host.fn_url("mb/")).await, 200);
}

#[tokio::test]
async fn a_request_past_its_kv_budget_gets_an_error_saying_so_and_a_metric_counts_it() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--kv-ops", "50"]);
    // A function may lower its own budget at deploy.
    let url = format!("{}/v1/functions/mb?kv_ops=5", host.url);
    let (status, entry) =
        support::json(host.deploy_to(&url, support::guest("misbehave")).await).await;
    assert_eq!(
        (status, entry["kv_ops"].clone()),
        (201, serde_json::json!(5))
    );
    for i in 0..8 {
        let put = client()
            .put(host.fn_url(&format!("mb/kv?key=k{i}")))
            .body("v")
            .send()
            .await
            .expect("PUT");
        assert_eq!(
            put.status(),
            200,
            "one kv call per request is within budget"
        );
    }
    // Listing eight keys one per page takes more than five kv calls in one request.
    let response = client()
        .get(host.fn_url("mb/kv-list?limit=1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response.status(),
        503,
        "the guest answered with the error it got"
    );
    let body = response.text().await.expect("body");
    assert!(body.contains("kv budget exceeded"), "{body}");
    assert!(body.contains("5 kv operations"), "{body}");
    let metrics = client()
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("outcome=\"budget_exceeded\""),
        "a metric counts refused calls"
    );
    // The next request starts with a fresh budget.
    let (status, _) = get_json(&host.fn_url("mb/kv?key=k0")).await;
    assert_eq!(status, 200);
}

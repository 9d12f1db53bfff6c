//! Invocation over real HTTP: fresh instances, key isolation, and a host that survives
//! misbehaving guests with a precise status for each.

mod support;

use support::{Host, Redis, TOKEN, client, get_json, get_status, json, post_json, post_status};

#[tokio::test]
async fn every_call_gets_a_fresh_instance_while_kv_state_accumulates() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("probe", None, "recycle-probe").await;
    const CALLS: u64 = 120;
    for i in 1..=CALLS {
        let (status, body) = post_json(&host.fn_url("probe")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["global"].as_u64(),
            Some(1),
            "call {i} saw a global from an earlier call: {body}"
        );
        assert_eq!(body["kv"].as_u64(), Some(i), "{body}");
    }
    let (_, count) = get_json(&host.fn_url("probe/count")).await;
    assert_eq!(count["kv"].as_u64(), Some(CALLS));
    let mut conn = redis.client();
    let stored: u64 = redis::cmd("GET")
        .arg("gf:kv:{probe}:probe:calls")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        stored, CALLS,
        "the counter lives in Redis under the app's namespace"
    );
}

#[tokio::test]
async fn apps_cannot_see_each_others_keys() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("alice", Some("app-a"), "misbehave").await;
    host.deploy_ok("alice-too", Some("app-a"), "misbehave")
        .await;
    host.deploy_ok("mallory", Some("app-b"), "misbehave").await;
    let put = client()
        .put(host.fn_url("alice/kv?key=secret"))
        .body("42")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    // Same app, other function: visible.
    let same_app = client()
        .get(host.fn_url("alice-too/kv?key=secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(same_app.text().await.unwrap(), "42");
    // Other app, with the same key and with keys that try to reach outside the namespace.
    for key in [
        "secret",
        "gf:kv:{app-a}:secret",
        "../app-a/secret",
        "{app-a}:secret",
    ] {
        let status = client()
            .get(host.fn_url(&format!("mallory/kv?key={key}")))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "app-b read {key:?}");
    }
    let (_, listed) = get_json(&host.fn_url("mallory/kv-list?prefix=")).await;
    assert_eq!(
        listed,
        serde_json::json!([]),
        "app-b lists no keys of app-a"
    );
    let (_, listed) = get_json(&host.fn_url("alice/kv-list?prefix=sec")).await;
    assert_eq!(listed, serde_json::json!(["secret"]));
}

#[tokio::test]
async fn guest_sees_path_query_method_headers_and_body() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client()
        .patch(host.fn_url("mb/echo/a%20b?x=1&y=2"))
        .header("X-Thing", "yes")
        .body("payload")
        .send()
        .await
        .unwrap();
    let (status, echo) = json(response).await;
    assert_eq!(status, 200);
    assert_eq!(echo["method"], "PATCH");
    assert_eq!(
        echo["path"], "/echo/a%20b",
        "the path below /fn/{{name}}, not decoded"
    );
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["body"], "payload");
    let headers = echo["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-thing" && h[1] == "yes"),
        "{echo}"
    );
}

#[tokio::test]
async fn unknown_function_is_404_json() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let (status, body) = get_json(&host.fn_url("nobody/here")).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("PUT /v1/functions/nobody"),
        "{body}"
    );
    // A name that cannot be a function's: still JSON, and the body carries the request id the
    // header has, as every other invoke failure's does.
    let response = client()
        .get(host.fn_url("Not_A_Name"))
        .send()
        .await
        .unwrap();
    let id = support::request_id(&response);
    let (status, body) = json(response).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("names are 1 to 63 lowercase letters"),
        "{body}"
    );
    assert_eq!(body["request_id"], id.as_str(), "{body}");
}

#[tokio::test]
async fn trapping_guest_is_500_naming_the_trap_and_the_next_call_succeeds() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client().get(host.fn_url("mb/trap")).send().await.unwrap();
    let id = support::request_id(&response);
    let (status, body) = json(response).await;
    assert_eq!(status, 500);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("trapped"), "{message}");
    // The operator reads the trap and the guest's panic message.
    let record = support::recorded_failure(&host, "mb", &id).await;
    let detail = record["detail"].as_str().unwrap();
    assert!(
        detail.contains("trapped") && detail.contains("unreachable"),
        "{detail}"
    );
    assert!(
        detail.contains("deliberate trap"),
        "the guest's panic message is passed on: {detail}"
    );
    let ok = client().get(host.fn_url("mb/echo")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn looping_guest_is_504_and_the_host_keeps_serving() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--timeout-ms", "500"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let spinning = tokio::spawn(client().get(host.fn_url("mb/spin")).send());
    // While it spins, others are served.
    let ok = client().get(host.fn_url("mb/echo")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let (status, body) = json(spinning.await.unwrap().unwrap()).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{body}"
    );
}

#[tokio::test]
async fn guest_over_its_memory_limit_is_500_saying_memory_limit() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--memory-mib", "16"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let fits = client()
        .get(host.fn_url("mb/alloc?mb=4"))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    let (status, body) = get_json(&host.fn_url("mb/alloc?mb=32")).await;
    assert_eq!(status, 500);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("memory limit of 16 MiB"),
        "{body}"
    );
    assert_eq!(get_status(&host.fn_url("mb/alloc?mb=4")).await, 200);
}

#[tokio::test]
async fn invalid_status_or_header_from_the_guest_is_502() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    for (path, detail) in [
        ("mb/bad-status", "invalid status 42"),
        ("mb/bad-header", "invalid value for header `x-injected`"),
    ] {
        let response = client().get(host.fn_url(path)).send().await.unwrap();
        let id = support::request_id(&response);
        let (status, body) = json(response).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("invalid HTTP"),
            "{path}: {body}"
        );
        let record = support::recorded_failure(&host, "mb", &id).await;
        assert!(
            record["detail"].as_str().unwrap().contains(detail),
            "{path}: {record}"
        );
    }
}

#[tokio::test]
async fn oversized_request_body_is_413_before_the_guest_runs() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let big = vec![b'x'; (1 << 20) + 1];
    let (status, body) = json(
        client()
            .post(host.fn_url("mb/echo"))
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap().contains("--max-body-bytes"),
        "{body}"
    );
    let just_fits = vec![b'x'; 1 << 20];
    assert_eq!(
        client()
            .post(host.fn_url("mb/echo"))
            .body(just_fits)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A body far past the limit, larger than the socket buffers: the host reads and discards it
/// before answering, so the client sees the 413 and its message rather than a broken pipe
/// (answering at once and closing would reset the connection mid-send). Declared and chunked,
/// several times on one pooled client.
#[tokio::test]
async fn a_body_far_past_the_limit_still_gets_its_413() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let client = client();
    for round in 0..3 {
        let declared = client
            .post(host.fn_url("mb/echo"))
            .body(vec![b'x'; 16 << 20])
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}, declared length: {e:?}"));
        let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 256 << 10]));
        let chunked = client
            .post(host.fn_url("mb/echo"))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}, chunked: {e:?}"));
        for response in [declared, chunked] {
            let (status, body) = json(response).await;
            assert_eq!(status, 413, "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("--max-body-bytes"),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn guest_stdout_and_stderr_reach_the_host_log_tagged() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client().get(host.fn_url("mb/stdout")).send().await.unwrap();
    let request_id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.status(), 200);
    let found = support::eventually(std::time::Duration::from_secs(2), || async {
        let log = host.log_contents();
        log.lines().any(|l| {
            l.contains("hello from misbehave")
                && l.contains(&request_id)
                && l.contains("function=mb")
        })
    })
    .await;
    assert!(
        found,
        "guest output not in the log:\n{}",
        host.log_contents()
    );
}

#[tokio::test]
async fn redis_going_away_gives_503_and_service_resumes_when_it_returns() {
    let dir = std::env::temp_dir().join(format!("goldfish-aof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = Redis::start_persisting(Some(&dir));
    let port = redis.port;
    // Two guest threads, each with a Redis connection of its own, whatever the machine's cores.
    let host = Host::start_tuned(&redis, &["--guest-threads", "2"]);
    host.deploy_ok("probe", None, "recycle-probe").await;
    assert_eq!(post_status(&host.fn_url("probe")).await, 200);
    redis.stop();
    let (status, body) = post_json(&host.fn_url("probe")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get_status(&format!("{}/readyz", host.url)).await, 503);
    assert_eq!(get_status(&format!("{}/healthz", host.url)).await, 200);
    let _back = Redis::start_on(port, Some(&dir)).expect("redis restarts on its port");
    let recovered = support::eventually(std::time::Duration::from_secs(10), || async {
        client()
            .post(host.fn_url("probe"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(recovered, "the host did not recover after Redis came back");
    // Once one request has got through, every guest thread's connection serves: calls go to
    // each thread in turn, and none fails on a connection that has not reconnected yet.
    let mut counts = Vec::new();
    for _ in 0..4 {
        let (status, body) = post_json(&host.fn_url("probe")).await;
        assert_eq!(status, 200, "a request after Redis came back: {body}");
        counts.push(body["kv"].as_u64());
    }
    assert!(
        counts[0] >= Some(3),
        "acknowledged increments survived the outage: {counts:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn memory_store_serves_a_single_dev_host() {
    let host = Host::start_with(&["--store", "memory", "--admin-token", TOKEN]);
    host.deploy_ok("probe", None, "recycle-probe").await;
    for i in 1..=3u64 {
        let (_, body) = post_json(&host.fn_url("probe")).await;
        assert_eq!(
            (body["global"].as_u64(), body["kv"].as_u64()),
            (Some(1), Some(i))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_exits_cleanly() {
    let redis = Redis::start();
    let mut host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let slow = tokio::spawn(client().get(host.fn_url("mb/sleep?ms=600")).send());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let exit = tokio::task::block_in_place(|| host.terminate());
    let (status, body) = json(slow.await.unwrap().unwrap()).await;
    assert_eq!(
        (status, body["slept_ms"].as_u64()),
        (200, Some(600)),
        "{body}"
    );
    assert!(exit.success(), "goldfish exited with {exit}");
}

#[tokio::test]
async fn a_host_at_its_instance_limit_answers_503_instead_of_queueing_forever() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--max-instances", "1"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let busy = tokio::spawn(client().get(host.fn_url("mb/sleep?ms=3000")).send());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = get_json(&host.fn_url("mb/echo")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("instance limit"),
        "{body}"
    );
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        get_status(&host.fn_url("mb/echo")).await,
        200,
        "the slot is free again"
    );
}

/// HGET calls Redis has served (the registry's per-name lookup), from INFO commandstats.
fn hget_calls(redis: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_flood_of_requests_for_an_unknown_name_costs_one_redis_lookup() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let before = hget_calls(&redis);
    for _ in 0..50 {
        assert_eq!(get_status(&host.fn_url("ghost")).await, 404);
    }
    assert_eq!(hget_calls(&redis) - before, 1);
    // Deploying the name (through any host) makes it servable at once.
    host.deploy_ok("ghost", None, "recycle-probe").await;
    assert_eq!(post_status(&host.fn_url("ghost")).await, 200);
}

/// The workspace builds Rust guests with a 64 KiB stack (`.cargo/config.toml`), so their linear
/// memory starts at a couple of wasm pages instead of Rust's 17 (a 1 MiB stack): the host walks
/// and resets that memory after every request, and its cost follows the size. A build that lost
/// the setting would still pass every other test, only slower.
#[test]
fn rust_guests_start_with_a_small_memory() {
    const PAGE: u64 = 64 << 10;
    for name in ["cart", "checkout", "recycle-probe", "misbehave"] {
        let bytes = support::guest(name);
        let mut initial = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
            if let Ok(wasmparser::Payload::MemorySection(memories)) = payload {
                for memory in memories.into_iter().flatten() {
                    initial.push(memory.initial);
                }
            }
        }
        assert!(!initial.is_empty(), "{name} defines no memory");
        for pages in initial {
            assert!(
                pages <= 4,
                "{name} starts with {pages} wasm pages ({} KiB); with the workspace's 64 KiB \
                 stack it should be a few (check .cargo/config.toml's rustflags)",
                pages * PAGE / 1024
            );
        }
    }
}

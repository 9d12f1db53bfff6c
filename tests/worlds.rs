//! The second world and the key-value dialects, end to end with real hosts and a real Redis:
//! `wasi:http/proxy` components, `wasi:keyvalue` 0.2.0-draft2 semantics, Spin's key-value,
//! capabilities that are linked but grant nothing, and per-function memory limits.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Host, Redis, client, get_json, guest, post_json};

/// Sends one `keyvalue-ops` command and returns its JSON answer (asserting 200).
async fn op(host: &Host, name: &str, command: Value) -> Value {
    let response = client()
        .post(host.fn_url(name))
        .json(&command)
        .send()
        .await
        .expect("POST");
    let (status, body) = support::json(response).await;
    assert_eq!(status, 200, "{command} → {body}");
    body
}

/// The WIT error case a `keyvalue-ops` answer carries, if any.
fn error_case(answer: &Value) -> Option<&str> {
    answer["error"]["case"].as_str()
}

#[tokio::test]
async fn a_wasi_http_component_is_told_apart_and_runs_on_a_fresh_instance_per_request() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let entry = host.deploy_bytes_ok("hp", None, guest("http-probe")).await;
    assert_eq!(entry["world"], "wasi-http", "{entry}");
    for n in 1..=3 {
        let (status, body) = post_json(&host.fn_url("hp")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"global": 1, "kv": n}));
    }
    let (status, body) = get_json(&host.fn_url("hp/count")).await;
    assert_eq!((status, body), (200, json!({"kv": 3})));
    // The goldfish world is still told apart as such.
    let entry = host
        .deploy_bytes_ok("rs", None, guest("recycle-probe"))
        .await;
    assert_eq!(entry["world"], "goldfish", "{entry}");
}

#[tokio::test]
async fn wasi_keyvalue_draft2_get_set_delete_exists_and_buckets() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("kv", Some("shop"), "keyvalue-ops").await;
    host.deploy_ok("gf", Some("shop"), "misbehave").await;

    assert_eq!(
        op(&host, "kv", json!({"op": "get", "key": "k"})).await["value"],
        Value::Null
    );
    assert_eq!(
        op(&host, "kv", json!({"op": "exists", "key": "k"})).await["exists"],
        false
    );
    op(&host, "kv", json!({"op": "set", "key": "k", "value": "v1"})).await;
    assert_eq!(
        op(&host, "kv", json!({"op": "get", "key": "k"})).await["value"],
        "v1"
    );
    assert_eq!(
        op(&host, "kv", json!({"op": "exists", "key": "k"})).await["exists"],
        true
    );

    // Bucket `default` is the keyspace goldfish:function/kv sees, in both directions.
    let (status, body) = get_json(&host.fn_url("gf/kv?key=k")).await;
    assert_eq!((status, body), (200, Value::String("v1".into())));
    let put = client()
        .put(host.fn_url("gf/kv?key=from-goldfish"))
        .body("hello")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 200);
    let answer = op(&host, "kv", json!({"op": "get", "key": "from-goldfish"})).await;
    assert_eq!(answer["value"], "hello");

    // Any other bucket is a keyspace of its own.
    let answer = op(
        &host,
        "kv",
        json!({"op": "get", "bucket": "other", "key": "k"}),
    )
    .await;
    assert_eq!(answer["value"], Value::Null, "{answer}");
    op(
        &host,
        "kv",
        json!({"op": "set", "bucket": "other", "key": "k", "value": "v2"}),
    )
    .await;
    assert_eq!(
        op(&host, "kv", json!({"op": "get", "key": "k"})).await["value"],
        "v1"
    );
    // A name that could spell another keyspace's prefix is no store at all.
    let answer = op(&host, "kv", json!({"op": "open", "bucket": "a:b"})).await;
    assert_eq!(error_case(&answer), Some("no-such-store"), "{answer}");

    op(&host, "kv", json!({"op": "delete", "key": "k"})).await;
    assert_eq!(
        op(&host, "kv", json!({"op": "exists", "key": "k"})).await["exists"],
        false
    );
    // Deleting a missing key is not an error.
    let answer = op(&host, "kv", json!({"op": "delete", "key": "k"})).await;
    assert_eq!(error_case(&answer), None, "{answer}");
    // Keys are checked as for goldfish kv.
    let answer = op(&host, "kv", json!({"op": "set", "key": "", "value": "x"})).await;
    assert_eq!(error_case(&answer), Some("other"), "{answer}");
}

#[tokio::test]
async fn wasi_keyvalue_draft2_lists_every_key_across_pages_with_cursors() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("kv", None, "keyvalue-ops").await;
    let total = 2_500;
    let keys: Vec<String> = (0..total).map(|i| format!("page:{i:05}")).collect();
    for chunk in keys.chunks(1000) {
        let pairs: Vec<(String, String)> = chunk.iter().map(|k| (k.clone(), "x".into())).collect();
        let answer = op(&host, "kv", json!({"op": "set-many", "pairs": pairs})).await;
        assert_eq!(error_case(&answer), None, "{answer}");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let page = op(&host, "kv", json!({"op": "list", "cursor": cursor})).await;
        pages += 1;
        for key in page["keys"].as_array().expect("keys") {
            seen.insert(key.as_str().expect("a string key").to_owned());
        }
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            break;
        }
        assert!(pages < 100, "the listing must end");
    }
    assert!(
        pages >= 3,
        "2,500 keys take at least three pages of 1,000, took {pages}"
    );
    assert_eq!(
        seen.len(),
        total,
        "every key exactly once in the union of pages"
    );
    assert!(keys.iter().all(|k| seen.contains(k)));
    let answer = op(
        &host,
        "kv",
        json!({"op": "list", "cursor": "no-such-cursor"}),
    )
    .await;
    assert_eq!(error_case(&answer), Some("other"), "{answer}");
}

#[tokio::test]
async fn wasi_keyvalue_draft2_increment_and_batches() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("kv", None, "keyvalue-ops").await;
    let n = op(
        &host,
        "kv",
        json!({"op": "increment", "key": "n", "delta": 5}),
    )
    .await;
    assert_eq!(n["value"], 5);
    let n = op(
        &host,
        "kv",
        json!({"op": "increment", "key": "n", "delta": -7}),
    )
    .await;
    assert_eq!(n["value"], -2);
    // Stored as decimal text, exactly as goldfish kv's increment does.
    assert_eq!(
        op(&host, "kv", json!({"op": "get", "key": "n"})).await["value"],
        "-2"
    );
    op(
        &host,
        "kv",
        json!({"op": "set", "key": "word", "value": "abc"}),
    )
    .await;
    let answer = op(
        &host,
        "kv",
        json!({"op": "increment", "key": "word", "delta": 1}),
    )
    .await;
    assert_eq!(error_case(&answer), Some("other"), "{answer}");

    let answer = op(
        &host,
        "kv",
        json!({"op": "set-many", "pairs": [["a", "1"], ["b", "2"], ["c", "3"]]}),
    )
    .await;
    assert_eq!(error_case(&answer), None, "{answer}");
    let answer = op(
        &host,
        "kv",
        json!({"op": "get-many", "keys": ["a", "missing", "c"]}),
    )
    .await;
    assert_eq!(
        answer["values"],
        json!([["a", "1"], ["missing", null], ["c", "3"]])
    );
    op(
        &host,
        "kv",
        json!({"op": "delete-many", "keys": ["a", "b"]}),
    )
    .await;
    let answer = op(
        &host,
        "kv",
        json!({"op": "get-many", "keys": ["a", "b", "c"]}),
    )
    .await;
    assert_eq!(
        answer["values"],
        json!([["a", null], ["b", null], ["c", "3"]])
    );
    // A batch over the limit is refused whole, with a message that says so.
    let pairs: Vec<(String, String)> = (0..1001).map(|i| (format!("k{i}"), "v".into())).collect();
    let answer = op(&host, "kv", json!({"op": "set-many", "pairs": pairs})).await;
    assert_eq!(error_case(&answer), Some("other"), "{answer}");
    assert!(answer.to_string().contains("limit is 1000"), "{answer}");
}

#[tokio::test]
async fn wasi_keyvalue_draft2_compare_and_swap_wins_alone_and_fails_against_a_writer() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("kv", None, "keyvalue-ops").await;

    let answer = op(&host, "kv", json!({"op": "cas", "key": "c", "value": "v1"})).await;
    assert_eq!(answer["swapped"], true, "{answer}");
    assert_eq!(answer["previous"], Value::Null);
    let answer = op(&host, "kv", json!({"op": "cas", "key": "c", "value": "v2"})).await;
    assert_eq!(
        (answer["swapped"].clone(), answer["previous"].clone()),
        (json!(true), json!("v1"))
    );

    // The guest writes the key itself between reading and swapping: a lost race.
    let answer = op(
        &host,
        "kv",
        json!({"op": "cas-interleaved", "key": "c", "value": "mine"}),
    )
    .await;
    assert_eq!(error_case(&answer), Some("cas-failed"), "{answer}");
    assert_eq!(
        op(&host, "kv", json!({"op": "get", "key": "c"})).await["value"],
        "interloper"
    );

    // A real concurrent writer: another request writes while the swap is pending.
    op(
        &host,
        "kv",
        json!({"op": "set", "key": "race", "value": "a"}),
    )
    .await;
    let slow = {
        let url = host.fn_url("kv");
        tokio::spawn(async move {
            let response = client()
                .post(url)
                .json(&json!({"op": "cas", "key": "race", "value": "slow", "sleep_ms": 1500}))
                .send()
                .await
                .expect("POST");
            support::json(response).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    op(
        &host,
        "kv",
        json!({"op": "set", "key": "race", "value": "b"}),
    )
    .await;
    let (status, answer) = slow.await.expect("the slow swap answers");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(error_case(&answer), Some("cas-failed"), "{answer}");
    assert_eq!(
        op(&host, "kv", json!({"op": "get", "key": "race"})).await["value"],
        "b"
    );
}

#[tokio::test]
async fn every_capability_is_linked_and_denied_inside_the_guest() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("denied", None, "denied").await;
    for what in ["fs", "connect", "bind", "http"] {
        let (status, body) = get_json(&host.fn_url(&format!("denied/{what}"))).await;
        assert_eq!(status, 200, "{what}: the function still answers: {body}");
        assert_eq!(body["denied"], true, "{what}: {body}");
        assert!(
            !body["error"].as_str().unwrap_or_default().is_empty(),
            "{what}: the guest saw an error: {body}"
        );
    }
    let (status, body) = get_json(&host.fn_url("denied/env")).await;
    assert_eq!((status, body["vars"].clone()), (200, json!(0)), "{body}");
    let (status, body) = get_json(&host.fn_url("denied/stdin")).await;
    assert_eq!((status, body["bytes"].clone()), (200, json!(0)), "{body}");
}

/// `wasi:random` is served from the host thread's generator, not the request's WASI context
/// (`engine::wasi_parts`): every interface answers, with fresh values on every call and
/// instance.
#[tokio::test]
async fn wasi_random_gives_every_instance_fresh_values() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("denied", None, "denied").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let (status, body) = get_json(&host.fn_url("denied/random")).await;
        assert_eq!(status, 200, "{body}");
        for field in ["bytes", "insecure_bytes"] {
            let hex = body[field].as_str().unwrap_or_default();
            assert_eq!(hex.len(), 32, "{field}: 16 bytes: {body}");
            assert!(seen.insert(hex.to_owned()), "{field} repeated: {body}");
        }
        for value in [&body["u64"], &body["insecure_u64"], &body["seed"]] {
            assert!(seen.insert(value.to_string()), "{value} repeated: {body}");
        }
    }
}

/// `wasi:clocks` has a context of its own (`engine::wasi_parts`): the wall clock is the host's,
/// and a wait on the monotonic clock (a pollable in the request's table, waited on through
/// wasi:io) lasts at least as long as asked.
#[tokio::test]
async fn wasi_clocks_tell_the_time_and_wait() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("denied", None, "denied").await;
    let (status, body) = get_json(&host.fn_url("denied/time")).await;
    assert_eq!(status, 200, "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let wall = body["wall_seconds"].as_u64().unwrap_or_default();
    assert!(
        wall.abs_diff(now) <= 60,
        "guest wall clock {wall}, host {now}: {body}"
    );
    let before = body["before"].as_u64().unwrap_or(u64::MAX);
    let after = body["after"].as_u64().unwrap_or_default();
    assert!(
        after >= before.saturating_add(2_000_000),
        "a 2 ms wait lasted {} ns: {body}",
        after.wrapping_sub(before)
    );
}

/// `wasi:cli/exit` (`engine::wasi_parts`) ends the call: the caller gets a 500, the operator's
/// failure record names the exit status, and the host keeps serving.
#[tokio::test]
async fn a_guest_calling_exit_fails_its_request_and_the_host_keeps_serving() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("denied", None, "denied").await;
    let response = client()
        .get(host.fn_url("denied/exit"))
        .send()
        .await
        .expect("GET /exit");
    let id = support::request_id(&response);
    assert_eq!(response.status(), 500);
    let record = support::recorded_failure(&host, "denied", &id).await;
    let detail = record["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("exited with status 1 (wasi:cli/exit) before answering"),
        "{record}"
    );
    let (status, body) = get_json(&host.fn_url("denied/env")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_goldfish_function_importing_the_filesystem_deploys_and_finds_no_files() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("fs", None, "uses-fs").await;
    let response = client().get(host.fn_url("fs")).send().await.expect("GET");
    // The guest's own 500 with the error it saw, not a trap.
    assert_eq!(response.status(), 500);
    let body = response.text().await.expect("body");
    assert!(!body.contains("root:"), "no file is readable: {body}");
    assert!(
        !body.contains("\"error\""),
        "the guest answered, not the host: {body}"
    );
}

#[tokio::test]
async fn spin_key_value_opens_default_only_and_shares_the_app_keyspace() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("spin", Some("shared"), "spin-kv").await;
    host.deploy_ok("rs", Some("shared"), "recycle-probe").await;
    let (status, body) = post_json(&host.fn_url("spin")).await;
    assert_eq!((status, body), (200, json!({"global": 1, "kv": 1})));
    let (status, body) = post_json(&host.fn_url("rs")).await;
    assert_eq!((status, body), (200, json!({"global": 1, "kv": 2})));
    let (status, body) = get_json(&host.fn_url("spin/count")).await;
    assert_eq!((status, body), (200, json!({"kv": 2})));
    let (status, body) = get_json(&host.fn_url("spin/open/secrets")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["opened"], false, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("AccessDenied"),
        "{body}"
    );
}

#[tokio::test]
async fn a_function_memory_limit_set_at_deploy_applies_and_is_capped_by_the_host() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let url = format!("{}/v1/functions/small?memory_mib=16", host.url);
    let (status, entry) = support::json(host.deploy_to(&url, guest("misbehave")).await).await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(entry["memory_mib"], 16);
    assert_eq!(get_json(&host.fn_url("small/alloc?mb=4")).await.0, 200);
    let (status, body) = get_json(&host.fn_url("small/alloc?mb=32")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("16 MiB"),
        "{body}"
    );
    // Another function keeps the host's limit.
    host.deploy_ok("big", None, "misbehave").await;
    assert_eq!(get_json(&host.fn_url("big/alloc?mb=32")).await.0, 200);
    // More than the host allows is refused, saying the range.
    let url = format!("{}/v1/functions/huge?memory_mib=100000", host.url);
    let (status, body) = support::json(host.deploy_to(&url, guest("misbehave")).await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("1 to 64 MiB"),
        "{body}"
    );
}

#[tokio::test]
async fn an_empty_upload_is_400_saying_so() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let (status, body) = support::json(host.deploy("empty", None, Vec::new()).await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the upload is empty"),
        "{body}"
    );
}

#[tokio::test]
async fn a_wasi_http_guest_sees_the_path_below_its_route_the_query_and_the_client_host() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("shape", None, "denied").await;
    let response = client()
        .post(host.fn_url("shape/echo/a%20b?x=1&y=two"))
        .body("hello")
        .send()
        .await
        .expect("POST");
    let (status, body) = support::json(response).await;
    assert_eq!(status, 200, "{body}");
    let authority = host.url.trim_start_matches("http://");
    assert_eq!(
        body,
        json!({
            "method": "Method::Post",
            "path_with_query": "/echo/a%20b?x=1&y=two",
            "authority": authority,
            "scheme": "http",
            "body_bytes": 5,
        })
    );
}

#[tokio::test]
async fn a_wasi_http_body_streams_whole_and_one_past_the_functions_limit_is_refused() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    // The response body may be as large as the function's memory limit, 4 MiB here.
    let url = format!("{}/v1/functions/body?memory_mib=4", host.url);
    let (status, entry) = support::json(host.deploy_to(&url, guest("http-body")).await).await;
    assert_eq!(status, 201, "{entry}");

    // 3 MiB in 768 writes of 4 KiB arrives whole.
    let three_mib = 3 << 20;
    let response = client()
        .get(host.fn_url(&format!("body/?bytes={three_mib}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), three_mib);
    assert!(body.iter().all(|&b| b == b'x'));

    // One byte past the limit: a 502 for the caller, the reason for the operator.
    let response = client()
        .get(host.fn_url(&format!("body/?bytes={}", (4 << 20) + 1)))
        .send()
        .await
        .expect("GET");
    let id = support::request_id(&response);
    let (status, answer) = support::json(response).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid HTTP")),
        "{answer}"
    );
    let record = support::recorded_failure(&host, "body", &id).await;
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("larger than its limit of 4194304 bytes")),
        "{record}"
    );

    // The host goes on serving, the same function included.
    let response = client()
        .get(host.fn_url("body/?bytes=5"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "xxxxx");
}

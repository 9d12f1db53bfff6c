//! What an invoke caller is told when the host answers for a failed function, and where the
//! operator finds the rest: anyone gets the class and the request id, never the trap, the
//! guest's backtrace or stderr, or Redis' words; `GET /v1/functions/{name}/errors` has every
//! detail, from any host sharing the store.

mod support;

use support::{
    Host, Redis, TOKEN, client, function, get_json, json, post_json, recorded_failure, request_id,
};

/// Words that must never reach an anonymous caller: the guest's panic message (its stderr),
/// the wasm trap's text, a backtrace frame, and what Redis or the OS say.
const PRIVATE: &[&str] = &[
    "deliberate trap",
    "unreachable",
    "wasm trap",
    "(in ",
    "stderr",
    "misbehave::",
    "Connection refused",
    "os error",
    "store unavailable:",
];

fn assert_nothing_private(body: &serde_json::Value) {
    let text = body.to_string();
    for word in PRIVATE {
        assert!(!text.contains(word), "{word:?} reached the caller: {text}");
    }
}

/// `GET /v1/functions/{function}/errors` on `host` with the admin token: the status and the list.
async fn failure_list(host: &Host, function: &str) -> (u16, serde_json::Value) {
    json(
        client()
            .get(format!("{}/v1/functions/{function}/errors", host.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET"),
    )
    .await
}

#[tokio::test]
async fn a_trap_tells_the_caller_its_class_and_request_id_and_the_operator_everything() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client()
        .get(host.fn_url("mb/trap"))
        .send()
        .await
        .expect("GET");
    let id = request_id(&response);
    let (status, body) = json(response).await;
    assert_eq!(status, 500, "{body}");
    assert_nothing_private(&body);
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("trapped"), "{body}");
    assert!(
        message.contains(&id),
        "the message names the request: {body}"
    );
    assert!(
        message.contains("goldfish errors mb"),
        "says where the detail is: {body}"
    );
    assert_eq!(body["request_id"], id.as_str(), "{body}");

    let record = recorded_failure(&host, "mb", &id).await;
    assert_eq!(record["status"], 500, "{record}");
    assert_eq!(record["class"], "trapped", "{record}");
    let detail = record["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("unreachable") && detail.contains("deliberate trap"),
        "the trap and the guest's last stderr line: {record}"
    );
    assert!(record["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(record["at_ms"].as_u64().is_some_and(|at| at > 0));
}

#[tokio::test]
async fn an_operator_on_another_host_reads_the_failures_of_every_host_newest_first() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    a.deploy_ok("mb", None, "misbehave").await;
    let first = request_id(&client().get(a.fn_url("mb/trap")).send().await.expect("GET"));
    // Records are written after the answer: the first must be in before the second happens for
    // "newest first" to have one right answer.
    recorded_failure(&b, "mb", &first).await;
    let second = request_id(
        &client()
            .get(a.fn_url("mb/bad-status"))
            .send()
            .await
            .expect("GET"),
    );
    let record = recorded_failure(&b, "mb", &second).await;
    assert_eq!(record["class"], "invalid-http", "{record}");
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("invalid status 42")),
        "{record}"
    );
    recorded_failure(&b, "mb", &first).await;
    let (status, list) = failure_list(&b, "mb").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["name"], "mb");
    assert_eq!(list["errors"][0]["request_id"], second.as_str(), "{list}");
    assert_eq!(list["errors"][1]["request_id"], first.as_str(), "{list}");
    // The admin token is needed, and unknown functions are 404.
    let anonymous = client()
        .get(format!("{}/v1/functions/mb/errors", b.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), 401);
    let ghost = client()
        .get(format!("{}/v1/functions/ghost/errors", b.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(ghost.status(), 404);
}

#[tokio::test]
async fn a_function_that_answers_keeps_an_empty_failure_list() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    assert_eq!(get_json(&host.fn_url("mb/echo")).await.0, 200);
    // A 4xx of the host's (the body is too large) is the caller's to fix, not a failure.
    let big = client()
        .post(host.fn_url("mb/echo"))
        .body(vec![b'x'; (1 << 20) + 1])
        .send()
        .await
        .expect("POST");
    assert_eq!(big.status(), 413);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, list) = failure_list(&host, "mb").await;
    assert_eq!(
        (status, list["errors"].clone()),
        (200, serde_json::json!([]))
    );
}

#[tokio::test]
async fn a_function_deleted_and_deployed_again_starts_with_no_failures() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let id = request_id(
        &client()
            .get(host.fn_url("mb/trap"))
            .send()
            .await
            .expect("GET"),
    );
    recorded_failure(&host, "mb", &id).await;
    let deleted = client()
        .delete(format!("{}/v1/functions/mb", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    host.deploy_ok("mb", None, "misbehave").await;
    let (status, list) = failure_list(&host, "mb").await;
    assert_eq!(
        (status, list["errors"].clone()),
        (200, serde_json::json!([])),
        "the old function's failures outlived its delete"
    );
}

#[tokio::test]
async fn a_failure_that_cannot_be_recorded_is_answered_all_the_same_and_at_once() {
    let redis = Redis::start();
    // Two seconds per Redis command: an answer that waited for the record would take that long.
    let host = Host::start_tuned(&redis, &["--redis-timeout-ms", "2000"]);
    host.deploy_ok("mb", None, "misbehave").await;
    assert_eq!(get_json(&host.fn_url("mb/trap")).await.0, 500);
    redis.freeze();
    let started = std::time::Instant::now();
    let (status, body) = get_json(&host.fn_url("mb/trap")).await;
    let took = started.elapsed();
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("trapped"),
        "{body}"
    );
    assert!(
        took < std::time::Duration::from_secs(1),
        "the answer waited for the record: {took:?}"
    );
    let logged = support::eventually(std::time::Duration::from_secs(5), || async {
        host.log_contents()
            .contains("could not record the failure in the store")
    })
    .await;
    redis.thaw();
    assert!(logged, "{}", host.log_contents());
}

#[tokio::test]
async fn without_redis_the_caller_is_told_storage_is_unavailable_not_what_redis_said() {
    let mut redis = Redis::start();
    let host = Host::start(&redis);
    redis.stop();
    let response = client()
        .get(host.fn_url("never-seen/x"))
        .send()
        .await
        .expect("GET");
    let id = request_id(&response);
    assert!(
        response.headers().contains_key("retry-after"),
        "a 503 says when to retry"
    );
    let (status, body) = json(response).await;
    assert_eq!(status, 503, "{body}");
    assert_nothing_private(&body);
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("storage is unavailable") && message.contains(&id),
        "{body}"
    );
    assert!(message.contains("host log"), "{body}");
    // The log has Redis' own words, with the request id.
    let log = host.log_contents();
    assert!(
        log.lines()
            .any(|line| line.contains(&id) && line.contains("store unavailable")),
        "{log}"
    );
}

/// A Python instance holds more core instances (between 9 and 16) than the 8 per slot the pool
/// of a `--max-instances 2` host reserves on average: alone it fits, but while another function
/// holds the other slot the pool has no room, though an instance slot is free. The pool, not
/// the guest, refused: a 503 to retry, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_instance_pool_is_a_503_with_a_retry_hint_not_a_500() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--max-instances", "2"]);
    host.deploy_bytes_ok("py", None, function("python-probe"))
        .await;
    host.deploy_ok("mb", None, "misbehave").await;
    assert_eq!(post_json(&host.fn_url("py")).await.0, 200, "alone it fits");

    let holding = tokio::spawn(client().get(host.fn_url("mb/sleep?ms=3000")).send());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let response = client().post(host.fn_url("py")).send().await.expect("POST");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = json(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("instance pool") && message.contains("retry"),
        "{body}"
    );
    assert!(body["request_id"].is_string(), "{body}");

    let held = holding.await.expect("task").expect("response");
    assert_eq!(held.status(), 200, "the holder was not disturbed");
    assert_eq!(
        post_json(&host.fn_url("py")).await.0,
        200,
        "the pool has room again"
    );
}

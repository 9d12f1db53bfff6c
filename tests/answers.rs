//! Clear answers everywhere: every status the host itself produces is JSON with a next step, and
//! the routes a new user types by hand do what they expect.

mod support;

use support::{Host, Redis, TOKEN, client, get_json};

#[tokio::test]
async fn unknown_paths_answer_json_404_saying_where_to_go() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    // `/` is the status page.
    for path in ["/fn", "/fn/", "/v1/functions/", "/nope/deeper"] {
        let (status, body) = get_json(&format!("{}{path}", host.url)).await;
        assert_eq!(status, 404, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("/fn/NAME"), "{path}: {body}");
    }
}

#[tokio::test]
async fn a_wrong_method_answers_json_405_with_allow_and_a_hint() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let response = client()
        .post(format!("{}/v1/functions/cart", host.url))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 405);
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(allow.contains("PUT"), "Allow: {allow}");
    let (_, body) = support::json(response).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("use PUT"),
        "{body}"
    );
}

#[tokio::test]
async fn a_trailing_slash_reaches_the_function_and_head_is_served_like_get() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client().get(host.fn_url("mb/")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "misbehave");

    let (status, echoed) = get_json(&host.fn_url("mb/echo/")).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["path"], "/echo/");

    let response = client()
        .head(host.fn_url("mb/echo"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "", "HEAD has no body");
}

#[tokio::test]
async fn invalid_or_encoded_names_are_404_without_a_lookup_or_a_metric_series() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("cart", None, "misbehave").await;
    // `%63art` decodes to `cart`, but names are never decoded: the guest would otherwise get
    // the wrong path.
    for path in ["%63art/echo", "Cart", "a_b", &"x".repeat(200)] {
        let (status, body) = get_json(&host.fn_url(path)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let metrics = client()
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(!metrics.contains("function=\"Cart\""), "{metrics}");
    assert!(!metrics.contains("%63art"), "{metrics}");
    assert!(
        metrics.contains("goldfish_requests_total{function=\"_unknown\",status=\"404\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unbounded_recursion_is_500_naming_a_stack_overflow() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client()
        .get(host.fn_url("mb/recurse"))
        .send()
        .await
        .expect("GET");
    let id = support::request_id(&response);
    let (status, body) = support::json(response).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stack overflow"),
        "{body}"
    );
    // The operator sees which trap it was.
    let record = support::recorded_failure(&host, "mb", &id).await;
    assert_eq!(record["class"], "stack-overflow", "{record}");
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("stack overflow: the function recursed")),
        "{record}"
    );
    // The host keeps serving.
    assert_eq!(get_json(&host.fn_url("mb/")).await.0, 200);
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_request_id() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--log-format", "json"]);
    host.deploy_ok("mb", None, "misbehave").await;
    let response = client()
        .get(host.fn_url("mb/trap"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 500);
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_owned();
    // The trap's warning and the guest's panic line (stderr) both name the request.
    let lines: Vec<serde_json::Value> = host
        .log_contents()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line.to_string().contains("deliberate trap"))
        .collect();
    assert!(
        lines.len() >= 2,
        "the trap is logged and the guest's stderr too: {lines:?}"
    );
    for line in &lines {
        assert!(
            line.to_string().contains(&id),
            "a line without the request id: {line}"
        );
    }
}

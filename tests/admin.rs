//! The admin API over real HTTP against a real Redis: deploys, listing, deletion, and every way
//! an upload or a caller can be wrong.

mod support;

use std::time::Duration;

use support::{
    Host, Redis, TOKEN, client, eventually, get_json, get_status, guest, json, post_json,
    post_status,
};

#[tokio::test]
async fn both_reference_functions_deploy_and_are_listed() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let response = host.deploy("cart", Some("pizza"), guest("cart")).await;
    let (status, entry) = json(response).await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(entry["name"], "cart");
    assert_eq!(entry["app"], "pizza");
    assert_eq!(entry["digest"].as_str().map(str::len), Some(64));
    assert_eq!(entry["size"].as_u64(), Some(guest("cart").len() as u64));
    host.deploy_ok("checkout", Some("pizza"), "checkout").await;

    let (status, list) = json(
        client()
            .get(format!("{}/v1/functions", host.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["cart", "checkout"]);

    let (status, one) = json(
        client()
            .get(format!("{}/v1/functions/checkout", host.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, one["app"].as_str()), (200, Some("pizza")));
}

#[tokio::test]
async fn component_bytes_are_stored_content_addressed_in_redis() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let (_, entry) = json(host.deploy("probe", None, guest("recycle-probe")).await).await;
    let digest = entry["digest"].as_str().unwrap().to_owned();
    let mut conn = redis.client();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("gf:component:{digest}"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored, guest("recycle-probe"));
    assert_eq!(entry["app"], "probe", "app defaults to the function name");
}

#[tokio::test]
async fn deleted_function_answers_404() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("probe", None, "recycle-probe").await;
    assert_eq!(get_status(&host.fn_url("probe")).await, 200);
    let status = client()
        .delete(format!("{}/v1/functions/probe", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (status, body) = get_json(&host.fn_url("probe")).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("probe"), "{body}");
    let status = client()
        .delete(format!("{}/v1/functions/probe", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "deleting twice");
}

#[tokio::test]
async fn redeploy_through_one_host_is_served_by_another_within_a_second() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    a.deploy_ok("thing", None, "recycle-probe").await;
    // B has never heard of `thing` and serves it at once.
    let (status, body) = get_json(&b.fn_url("thing")).await;
    assert_eq!((status, body["global"].as_u64()), (200, Some(1)), "{body}");

    a.deploy_ok("thing", None, "misbehave").await;
    let switched = eventually(Duration::from_secs(1), || async {
        let text = client()
            .get(b.fn_url("thing"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text == "misbehave"
    })
    .await;
    assert!(
        switched,
        "host B still serves the old version a second after the redeploy"
    );

    let status = client()
        .delete(format!("{}/v1/functions/thing", a.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let gone = eventually(Duration::from_secs(1), || async {
        get_status(&b.fn_url("thing")).await == 404
    })
    .await;
    assert!(
        gone,
        "host B still serves a deleted function a second later"
    );
}

async fn expect_refused(host: &Host, name: &str, bytes: Vec<u8>, status: u16, message_part: &str) {
    let (got, body) = json(host.deploy(name, None, bytes).await).await;
    let message = body["error"].as_str().unwrap_or_default().to_owned();
    assert_eq!(got, status, "{body}");
    assert!(
        message.contains(message_part),
        "message {message:?} should mention {message_part:?}"
    );
}

#[tokio::test]
async fn garbage_upload_is_400_not_webassembly() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    expect_refused(
        &host,
        "junk",
        b"this is not wasm".to_vec(),
        400,
        "not WebAssembly",
    )
    .await;
}

#[tokio::test]
async fn core_module_is_400_saying_it_is_not_a_component() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    // The smallest valid core module: magic + version 1.
    expect_refused(
        &host,
        "core",
        b"\0asm\x01\0\0\0".to_vec(),
        400,
        "core WebAssembly module",
    )
    .await;
}

#[tokio::test]
async fn component_of_another_world_is_422_naming_the_missing_export() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    expect_refused(
        &host,
        "cli",
        guest("wrong-world"),
        422,
        "exports neither `handle`",
    )
    .await;
}

#[tokio::test]
async fn component_importing_an_interface_nobody_defines_is_422_naming_the_import() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    expect_refused(
        &host,
        "llm",
        guest("imports-unknown"),
        422,
        "imports `fermyon:spin/llm@2.0.0`",
    )
    .await;
}

#[tokio::test]
async fn truncated_component_is_422_with_the_compiler_reason() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let mut bytes = guest("recycle-probe");
    bytes.truncate(bytes.len() / 2);
    expect_refused(&host, "half", bytes, 422, "does not compile").await;
}

#[tokio::test]
async fn oversized_component_is_413() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--max-component-bytes", "1000"]);
    expect_refused(
        &host,
        "big",
        guest("recycle-probe"),
        413,
        "--max-component-bytes",
    )
    .await;
    // Far past the limit and the socket buffers: the host reads it before refusing, so the
    // client sees the 413 rather than a broken pipe.
    expect_refused(
        &host,
        "huge",
        vec![0; 16 << 20],
        413,
        "--max-component-bytes",
    )
    .await;
    // The same without a Content-Length (chunked): refused once past the limit, the rest read.
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![0u8; 256 << 10]));
    let (status, body) = json(
        client()
            .put(format!("{}/v1/functions/chunked", host.url))
            .bearer_auth(TOKEN)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .expect("the 413 arrives, not a broken pipe"),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-component-bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_names_are_400() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    for name in ["Cart", "-cart", "cart_1", &"x".repeat(64)] {
        expect_refused(
            &host,
            name,
            guest("recycle-probe"),
            400,
            "invalid function name",
        )
        .await;
    }
    // A large upload refused for its name is read first: the message still arrives.
    expect_refused(
        &host,
        "Cart",
        vec![0; 16 << 20],
        400,
        "invalid function name",
    )
    .await;
    let (status, body) = json(
        host.deploy("ok", Some("Bad.App"), guest("recycle-probe"))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("invalid app"));
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_nothing_is_deployed() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let url = format!("{}/v1/functions/probe", host.url);
    let response = client()
        .put(&url)
        .body(guest("recycle-probe"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let (status, body) = json(response).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("Authorization"),
        "{body}"
    );

    let (status, body) = json(
        client()
            .put(&url)
            .bearer_auth("nope")
            .body(guest("recycle-probe"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("wrong admin token"),
        "{body}"
    );

    let status = get_status(&format!("{}/v1/functions", host.url)).await;
    assert_eq!(status, 401, "listing needs the token too");
    assert_eq!(get_status(&host.fn_url("probe")).await, 404);
}

#[tokio::test]
async fn admin_api_without_a_configured_token_is_403_saying_how_to_set_one() {
    let redis = Redis::start();
    let host = Host::start_with(&["--redis", &redis.url()]);
    let response = client()
        .put(format!("{}/v1/functions/probe", host.url))
        .bearer_auth("anything")
        .body(guest("recycle-probe"))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("--admin-token"),
        "{body}"
    );
}

#[tokio::test]
async fn host_refuses_to_start_without_redis_and_names_the_url() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_goldfish"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("--store memory"),
        "{stderr}"
    );
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_version_they_started_with() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("thing", None, "misbehave").await;
    let slow = tokio::spawn(client().get(host.fn_url("thing/sleep?ms=700")).send());
    // Let the slow request reach its instance, then swap the code under it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.deploy_ok("thing", None, "recycle-probe").await;
    let (status, body) = post_json(&host.fn_url("thing")).await;
    assert_eq!(
        (status, body["global"].as_u64()),
        (200, Some(1)),
        "new requests get the new version: {body}"
    );
    let (status, body) = json(slow.await.unwrap().unwrap()).await;
    assert_eq!(
        (status, body["slept_ms"].as_u64()),
        (200, Some(700)),
        "the old request finished on the old version: {body}"
    );
}

#[tokio::test]
async fn a_name_that_was_missing_is_served_within_a_second_of_its_deploy_elsewhere() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    assert_eq!(
        get_status(&b.fn_url("late")).await,
        404,
        "B remembers the miss"
    );
    a.deploy_ok("late", None, "recycle-probe").await;
    let served = eventually(Duration::from_secs(1), || async {
        post_status(&b.fn_url("late")).await == 200
    })
    .await;
    assert!(
        served,
        "B still answers 404 a second after the deploy through A"
    );
}

#[tokio::test]
async fn a_registry_entry_whose_bytes_do_not_compile_is_a_500_saying_redeploy() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    // What a host would find after, say, an engine change: the name points at bytes it cannot
    // compile. Written straight into Redis, as no deploy would accept them.
    let digest = "0".repeat(64);
    let entry = serde_json::json!({"name": "stale", "app": "stale", "digest": digest, "size": 4, "deployed_at": 0});
    let mut conn = redis.client();
    let _: () = redis::cmd("SET")
        .arg(format!("gf:component:{digest}"))
        .arg("\0asm\r\0\x01\0garbage")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("gf:{registry}:functions")
        .arg("stale")
        .arg(entry.to_string())
        .query(&mut conn)
        .unwrap();
    let response = client().get(host.fn_url("stale")).send().await.unwrap();
    let id = support::request_id(&response);
    let (status, body) = json(response).await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("cannot be loaded") && message.contains("redeploy"),
        "{message}"
    );
    // Why it cannot be loaded (the compiler's words) is the operator's to read.
    assert!(!message.contains("does not compile"), "{message}");
    let record = support::recorded_failure(&host, "stale", &id).await;
    assert_eq!(record["class"], "cannot-load", "{record}");
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not compile or link")),
        "{record}"
    );
    for _ in 0..3 {
        assert_eq!(get_status(&host.fn_url("stale")).await, 500);
    }
    let attempts = host
        .log_contents()
        .matches("component does not compile on this host")
        .count();
    assert_eq!(
        attempts, 1,
        "a broken digest is compiled once, not once per request"
    );
    host.deploy_ok("stale", None, "recycle-probe").await;
    assert_eq!(
        post_status(&host.fn_url("stale")).await,
        200,
        "a redeploy fixes it"
    );
}

#[tokio::test]
async fn with_admin_listen_the_admin_api_lives_only_on_its_own_address() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--admin-listen", "127.0.0.1:0"]);
    let admin = host.admin_url.clone().expect("admin address");
    let deployed = client()
        .put(format!("{admin}/v1/functions/probe"))
        .bearer_auth(TOKEN)
        .body(guest("recycle-probe"))
        .send()
        .await
        .expect("PUT");
    assert_eq!(deployed.status(), 201);
    // The public address serves the function but has no admin API at all.
    assert_eq!(post_json(&host.fn_url("probe")).await.0, 200);
    let response = client()
        .get(format!("{}/v1/functions", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    // And the admin address runs no functions.
    assert_eq!(get_status(&format!("{admin}/fn/probe")).await, 404);
    assert_eq!(get_status(&format!("{admin}/healthz")).await, 200);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address_and_tokens_never_reach_the_log() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let list = || {
        client()
            .get(format!("{}/v1/functions", host.url))
            .bearer_auth("wrong-guess")
            .send()
    };
    for _ in 0..10 {
        assert_eq!(list().await.expect("GET").status(), 401);
    }
    let refused = list().await.expect("GET");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    // Even the right token waits out the window from that address.
    let response = client()
        .get(format!("{}/v1/functions", host.url))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 429);
    let log = host.log_contents();
    assert!(
        !log.contains(TOKEN),
        "the admin token appears in the log:\n{log}"
    );
    assert!(
        !log.contains("wrong-guess"),
        "a guessed token appears in the log"
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let response = client()
        .get(format!("{}/v1/functions", host.url))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
}

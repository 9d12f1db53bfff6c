//! Functions in other languages, end to end: Python (componentize-py, goldfish world) and
//! JavaScript (componentize-js, a wasi:http fetch handler using wasi:keyvalue), built by
//! `scripts/build-functions` with the pinned toolchains, deployed with default settings on real
//! hosts sharing a real Redis. Also what big components need: background compiles on every host,
//! the disk cache across a restart, and a 40 MB upload.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Host, Redis, function, get_json, guest, post_json, post_json_compiling};

/// Runs `request` once and returns its JSON answer and how long it took.
async fn timed_post(url: &str) -> ((u16, serde_json::Value), Duration) {
    let started = Instant::now();
    let answer = post_json(url).await;
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_deploy_with_defaults_and_answer_on_another_host() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    for (name, language) in [("py", "python-probe"), ("js", "js-probe")] {
        let entry = a.deploy_bytes_ok(name, None, function(language)).await;
        let expected_world = if name == "py" {
            "goldfish"
        } else {
            "wasi-http"
        };
        assert_eq!(entry["world"], expected_world, "{entry}");
        let digest = entry["digest"].as_str().expect("digest").to_owned();
        // Host B compiles (or loads) it in the background, before any request reaches it.
        assert!(
            b.wait_until_ready(&digest).await,
            "host B never readied {name}:\n{}",
            b.log_contents()
        );
        let ((status, body), first) = timed_post(&b.fn_url(name)).await;
        assert_eq!(
            (status, body.clone()),
            (200, json!({"global": 1, "kv": 1})),
            "{name}"
        );
        let ((status, body), second) = timed_post(&a.fn_url(name)).await;
        assert_eq!(
            (status, body),
            (200, json!({"global": 1, "kv": 2})),
            "{name}"
        );
        let (status, body) = get_json(&b.fn_url(&format!("{name}/count"))).await;
        assert_eq!((status, body), (200, json!({"kv": 2})), "{name}");
        println!(
            "{language}: {} bytes; first request on the second host {first:?}, a request on the deploying host {second:?}",
            entry["size"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_counter_through_every_dialect_reads_the_sum_and_no_other_app_sees_it() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let functions = [
        ("rust", guest("recycle-probe")),     // goldfish kv, Rust
        ("python", function("python-probe")), // goldfish kv, Python
        ("js", function("js-probe")),         // wasi:keyvalue draft2, JavaScript, wasi:http
        ("http", guest("http-probe")),        // wasi:keyvalue draft, Rust, wasi:http
        ("spin", guest("spin-kv")),           // fermyon:spin/key-value, Spin SDK 3.1.1
    ];
    for (name, bytes) in &functions {
        host.deploy_bytes_ok(name, Some("shared"), bytes.clone())
            .await;
    }
    for (n, (name, _)) in functions.iter().enumerate() {
        let (status, body) = post_json(&host.fn_url(name)).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            body,
            json!({"global": 1, "kv": n + 1}),
            "{name} adds to the shared counter"
        );
    }
    for (name, _) in &functions {
        let (status, body) = get_json(&host.fn_url(&format!("{name}/count"))).await;
        assert_eq!(
            (status, body),
            (200, json!({"kv": functions.len()})),
            "{name} reads the sum"
        );
    }
    host.deploy_ok("outsider", Some("elsewhere"), "recycle-probe")
        .await;
    let (status, body) = get_json(&host.fn_url("outsider/count")).await;
    assert_eq!(
        (status, body),
        (200, json!({"kv": 0})),
        "another app sees nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_instances_are_fresh_on_every_request_under_load() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    for (name, language) in [("py", "python-probe"), ("js", "js-probe")] {
        let entry = a.deploy_bytes_ok(name, None, function(language)).await;
        assert!(
            b.wait_until_ready(entry["digest"].as_str().expect("digest"))
                .await
        );
        let report = support::assert_fresh_under_load(&[&a, &b], name, "/", 200, 8).await;
        println!("{language} under load:\n{}", report.render());
    }
}

/// Appends a custom section of `padding` bytes: still the same valid component, just bigger.
fn pad_component(mut bytes: Vec<u8>, padding: usize) -> Vec<u8> {
    let name = b"goldfish-test-padding";
    let mut payload = Vec::with_capacity(padding + name.len() + 1);
    payload.push(name.len() as u8);
    payload.extend_from_slice(name);
    payload.resize(payload.len() + padding, 0xAB);
    bytes.push(0); // custom section id
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_megabyte_component_uploads_and_compiles_with_default_limits() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let python = function("python-probe");
    let target = 40 << 20;
    let bytes = pad_component(python.clone(), target - python.len());
    assert!(bytes.len() >= target);
    let entry = host.deploy_bytes_ok("big", None, bytes.clone()).await;
    assert_eq!(entry["size"], bytes.len());
    let (status, body) = post_json(&host.fn_url("big")).await;
    assert_eq!((status, body), (200, json!({"global": 1, "kv": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_serves_python_from_its_disk_cache_without_compiling() {
    let redis = Redis::start();
    let cache = tempdir("restart-cache");
    let cache_arg = cache.to_str().expect("utf-8 path");
    let mut first = Host::start_tuned(&redis, &["--compile-cache", cache_arg]);
    let entry = first
        .deploy_bytes_ok("py", None, function("python-probe"))
        .await;
    assert!(first.log_contents().contains("compile finished"));
    first.kill();

    let second = Host::start_tuned(&redis, &["--compile-cache", cache_arg]);
    let ((status, body), elapsed) = timed_post(&second.fn_url("py")).await;
    assert_eq!((status, body), (200, json!({"global": 1, "kv": 1})));
    let log = second.log_contents();
    assert!(
        log.contains("machine code loaded from the disk cache"),
        "{log}"
    );
    assert!(
        !log.contains("compile finished"),
        "nothing compiled after the restart:\n{log}"
    );
    println!(
        "python-probe ({} bytes): first request after a restart with a warm disk cache took {elapsed:?}",
        entry["size"]
    );

    // A corrupt cache file is ignored and rebuilt.
    drop(second);
    for file in std::fs::read_dir(&cache).expect("cache dir").flatten() {
        let mut bytes = std::fs::read(file.path()).expect("cache file");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(file.path(), bytes).expect("corrupt it");
    }
    let third = Host::start_tuned(&redis, &["--compile-cache", cache_arg]);
    // This request waits for the recompile.
    let (status, body) = post_json_compiling(&third.fn_url("py")).await;
    assert_eq!((status, body), (200, json!({"global": 1, "kv": 2})));
    let log = third.log_contents();
    assert!(
        log.contains("ignoring a corrupt compile cache file"),
        "{log}"
    );
    assert!(log.contains("compile finished"), "{log}");
    std::fs::remove_dir_all(&cache).ok();
}

/// A fresh directory under the system temp dir, unique to this process and `what`.
fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("goldfish-{what}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_past_the_bound_is_422_and_the_host_keeps_serving() {
    let redis = Redis::start();
    // A private cache, so the Python runtime really compiles (several seconds) against a 1 s
    // bound; a small function compiles well within it.
    let cache = tempdir("compile-bound-cache");
    let cache_arg = cache.to_str().expect("utf-8 path");
    let host = Host::start_tuned(
        &redis,
        &["--compile-cache", cache_arg, "--compile-timeout-secs", "1"],
    );
    host.deploy_ok("probe", None, "recycle-probe").await;
    let (status, body) =
        support::json(host.deploy("py", None, function("python-probe")).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did not compile within"),
        "{body}"
    );
    assert_eq!(post_json(&host.fn_url("probe")).await.0, 200);
    std::fs::remove_dir_all(&cache).ok();
}

//! The status page (`GET /`) on real hosts sharing a real Redis: it lists every host it sees
//! through their heartbeats and every deployed function with its version and figures, drops a
//! host stopped politely, marks one that was killed, still answers with Redis down, works on
//! Redis Cluster, and renders in headless Chromium. Also `--log-format json`: one JSON object
//! per log line.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Host, Redis, RedisCluster, TOKEN, client, workspace};

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Status and HTML of the status page of `host`.
async fn page(host: &Host) -> (u16, String) {
    let response = client()
        .get(format!("{}/", host.url))
        .send()
        .await
        .expect("GET /");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Fetches `host`'s page every 100 ms until `check` accepts it or `within` passes; whether it
/// did, and the last page.
async fn page_until(host: &Host, within: Duration, check: impl Fn(&str) -> bool) -> (bool, String) {
    let deadline = Instant::now() + within;
    loop {
        let (status, html) = page(host).await;
        assert_eq!(status, 200, "{html}");
        if check(&html) {
            return (true, html);
        }
        if Instant::now() >= deadline {
            return (false, html);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The table row carrying `attribute="value"` (e.g. `data-function="probe"`), up to its `</tr>`.
fn row<'a>(html: &'a str, attribute: &str, value: &str) -> Option<&'a str> {
    let start = html.find(&format!(r#"{attribute}="{value}""#))?;
    let rest = &html[start..];
    Some(&rest[..rest.find("</tr>")?])
}

/// The text of the cell `data-field="name"` in `row`.
fn field<'a>(row: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!(r#"data-field="{name}">"#);
    let rest = &row[row.find(&marker)? + marker.len()..];
    Some(&rest[..rest.find('<')?])
}

/// The `host:port` a host advertises in its heartbeat.
fn address(host: &Host) -> &str {
    host.url.trim_start_matches("http://")
}

/// POSTs to `path` on `host`'s functions `times` times; returns the statuses.
async fn call(host: &Host, path: &str, times: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..times {
        let response = client()
            .post(host.fn_url(path))
            .send()
            .await
            .expect("invoke");
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn the_page_lists_every_host_and_each_function_with_its_version_and_requests() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    a.deploy_ok("probe", None, "recycle-probe").await;
    // A second deploy: the page must show the current version, not the first.
    a.deploy_ok("probe", None, "recycle-probe").await;
    assert_eq!(call(&a, "probe", 5).await, [200; 5]);
    assert_eq!(call(&b, "probe", 3).await, [200; 3]);

    // b's figures reach a's page with b's next heartbeat.
    let (complete, html) = page_until(&a, Duration::from_secs(10), |html| {
        row(html, "data-function", "probe")
            .and_then(|r| field(r, "fleet-requests"))
            .is_some_and(|n| n == "8")
    })
    .await;
    assert!(complete, "all hosts' requests never added up to 8:\n{html}");

    let this = row(&html, "data-address", address(&a)).expect("this host's row");
    assert!(this.contains(r#"class="this""#), "{this}");
    assert_eq!(field(this, "requests"), Some("5"), "{this}");
    let other = row(&html, "data-address", address(&b)).expect("the other host's row");
    assert!(other.contains(r#"class="live""#), "{other}");
    assert_eq!(field(other, "requests"), Some("3"), "{other}");

    let probe = row(&html, "data-function", "probe").expect("the function's row");
    assert_eq!(field(probe, "version"), Some("2"), "{probe}");
    assert_eq!(field(probe, "requests"), Some("5"), "{probe}");
    assert_eq!(field(probe, "errors"), Some("0 %"), "{probe}");
    assert_eq!(field(probe, "instances-created"), Some("5"), "{probe}");
    assert_eq!(field(probe, "instances-live"), Some("0"), "{probe}");
    assert_ne!(field(probe, "rate"), Some("0"), "{probe}");
    assert_ne!(field(probe, "p50"), Some("—"), "{probe}");
    assert!(html.contains(r#"data-store="up""#), "{html}");
    assert!(html.contains(r#"href="/metrics""#));
    assert!(html.contains(r#"href="/v1/openapi.json""#));
}

#[tokio::test]
async fn on_redis_cluster_too_every_host_sees_the_others() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let args = [
        "--store",
        "redis-cluster",
        "--redis",
        &urls,
        "--admin-token",
        TOKEN,
    ];
    let a = Host::start_with(&args);
    let b = Host::start_with(&args);
    let b_address = address(&b).to_owned();
    let (listed, html) = page_until(&a, Duration::from_secs(10), |html| {
        row(html, "data-address", &b_address).is_some() && html.contains(r#"data-store="up""#)
    })
    .await;
    assert!(listed, "the other host is not listed:\n{html}");
}

#[tokio::test]
async fn a_host_stopped_politely_leaves_every_page_at_once() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let mut b = Host::start(&redis);
    let b_address = address(&b).to_owned();
    let sees_b = |html: &str| row(html, "data-address", &b_address).is_some();
    assert!(page_until(&a, Duration::from_secs(5), sees_b).await.0);
    assert!(b.terminate().success());
    let (_, html) = page(&a).await;
    assert!(
        row(&html, "data-address", address(&b)).is_none(),
        "a host that stopped is still listed:\n{html}"
    );
}

#[tokio::test]
async fn a_killed_host_is_marked_stale_once_it_misses_its_heartbeats() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let mut b = Host::start(&redis);
    let b_address = address(&b).to_owned();
    let b_is = |class: &'static str| {
        let b_address = b_address.clone();
        move |html: &str| {
            row(html, "data-address", &b_address)
                .is_some_and(|r| r.contains(&format!(r#"class="{class}""#)))
        }
    };
    assert!(page_until(&a, Duration::from_secs(5), b_is("live")).await.0);
    let killed = Instant::now();
    b.kill();
    // Stale after 6 s without a heartbeat (written every 2 s).
    let (stale, html) = page_until(&a, Duration::from_secs(15), b_is("stale")).await;
    assert!(stale, "a killed host was never marked stale:\n{html}");
    assert!(
        killed.elapsed() >= Duration::from_secs(4),
        "marked too early"
    );
}

#[tokio::test]
async fn with_redis_down_the_page_still_answers_200_saying_so() {
    let mut redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("probe", None, "recycle-probe").await;
    assert_eq!(call(&host, "probe", 2).await, [200; 2]);
    redis.stop();

    let asked = Instant::now();
    let (status, html) = page(&host).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the page waited on Redis"
    );
    assert!(html.contains("Redis is down"), "{html}");
    assert!(html.contains(r#"data-store="down""#), "{html}");
    // What the host knows by itself is still there.
    let this = row(&html, "data-address", address(&host)).expect("this host's row");
    assert_eq!(field(this, "requests"), Some("2"), "{this}");
    let probe = row(&html, "data-function", "probe").expect("the function's row");
    assert_eq!(field(probe, "requests"), Some("2"), "{probe}");
}

#[tokio::test]
async fn headless_chromium_renders_the_status_page() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "SKIPPED: {CHROMIUM} is missing; install Debian's `chromium` package to run this test"
        );
        return;
    }
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    let _c = Host::start(&redis);
    a.deploy_ok("probe", None, "recycle-probe").await;
    a.deploy_ok("probe", None, "recycle-probe").await;
    a.deploy_ok("misbehave", None, "misbehave").await;
    call(&a, "probe", 40).await;
    call(&b, "probe", 25).await;
    call(&a, "misbehave/echo", 9).await;
    assert_eq!(call(&a, "misbehave/trap", 1).await, [500]);
    // Every host's figures in the fleet columns: wait for the heartbeats.
    let (all_in, html) = page_until(&a, Duration::from_secs(10), |html| {
        row(html, "data-function", "probe")
            .and_then(|r| field(r, "fleet-requests"))
            .is_some_and(|n| n == "65")
    })
    .await;
    assert!(all_in, "the fleet figures never added up:\n{html}");

    let url = format!("{}/", a.url);
    let chromium = |args: &[&str]| {
        let output = Command::new(CHROMIUM)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .args(["--hide-scrollbars", "--window-size=1000,800"])
            .args(args)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(
            output.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    for expected in [
        address(&a),
        address(&b),
        r#"data-function="probe""#,
        r#"data-function="misbehave""#,
        "store up",
    ] {
        assert!(
            dom.contains(expected),
            "the rendered page lacks {expected}:\n{dom}"
        );
    }
    let probe = row(&dom, "data-function", "probe").expect("probe row");
    assert_eq!(field(probe, "version"), Some("2"), "{probe}");
    let misbehave = row(&dom, "data-function", "misbehave").expect("misbehave row");
    assert_eq!(field(misbehave, "errors"), Some("10 %"), "{misbehave}");

    let screenshot = workspace().join("target").join("status-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(&[&format!("--screenshot={}", screenshot.display())]);
    let written = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        written > 10_000,
        "no screenshot at {}",
        screenshot.display()
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--log-format", "json"]);
    host.deploy_ok("probe", None, "recycle-probe").await;
    assert_eq!(call(&host, "probe", 1).await, [200]);
    let log = host.log_contents();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "no `{key}` in {line}");
        }
    }
    let ready = lines
        .iter()
        .find(|line| line["message"] == "goldfish host ready")
        .unwrap_or_else(|| panic!("no start-up line in:\n{log}"));
    assert!(ready["store"].as_str().is_some_and(|s| s.contains("redis")));
}

//! The chat reference app (`functions/chat`, JavaScript) end to end: real hosts sharing a real
//! Redis, users hopping between hosts. Messages, the long poll, gapless sequence numbers under
//! concurrency, unread counts, typing and presence with their real TTLs, retention, a host
//! killed mid-conversation, a writer that died between claiming a seq and writing it, freshness
//! under load, and two headless Chromium pages chatting through the HTML page.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use support::{Host, Redis, client, function, get_json, json as response_json, workspace};

/// The function name (and so the app whose kv namespace holds the chat's keys).
const CHAT: &str = "chat";
/// The browser driver's one dependency, pinned, installed under target/tools/ like the other
/// tools. 24.x is the last line that runs on Node 20.
const PUPPETEER_CORE_VERSION: &str = "24.43.1";
/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Deploys the chat on the first host and waits until every other host has it compiled (or
/// loaded from the shared disk cache), so no request waits on a compile.
async fn deploy_chat(hosts: &[&Host]) {
    let entry = hosts[0].deploy_bytes_ok(CHAT, None, function(CHAT)).await;
    let digest = entry["digest"].as_str().expect("digest").to_owned();
    for host in &hosts[1..] {
        assert!(
            host.wait_until_ready(&digest).await,
            "a host never readied the chat:\n{}",
            host.log_contents()
        );
    }
}

/// POSTs `body` as JSON to `url`; status and JSON answer.
async fn post(url: &str, body: Value) -> (u16, Value) {
    response_json(client().post(url).json(&body).send().await.expect("POST")).await
}

/// Posts `text` as `user` to `room` through `host`, asserts 201 and returns the seq.
async fn say(host: &Host, room: &str, user: &str, text: &str) -> u64 {
    let (status, body) = post(
        &host.fn_url(&format!("{CHAT}/rooms/{room}/messages")),
        json!({"user": user, "text": text}),
    )
    .await;
    assert_eq!(status, 201, "posting {text:?}: {body}");
    body["seq"].as_u64().expect("seq")
}

async fn join(host: &Host, room: &str, user: &str) {
    let (status, body) = post(
        &host.fn_url(&format!("{CHAT}/rooms/{room}/join")),
        json!({"user": user}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Reads `room` through `host` with the raw `query`; asserts 200.
async fn read(host: &Host, room: &str, query: &str) -> Value {
    let (status, body) =
        get_json(&host.fn_url(&format!("{CHAT}/rooms/{room}/messages?{query}"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Every message of `room` after `after`, page by page, spreading the pages over `hosts`.
async fn read_all(hosts: &[&Host], room: &str, mut after: u64) -> Vec<Value> {
    let mut messages = Vec::new();
    for page in 0.. {
        let body = read(hosts[page % hosts.len()], room, &format!("after={after}")).await;
        let next = body["next"].as_u64().expect("next");
        messages.extend(
            body["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .cloned(),
        );
        if next == after {
            return messages;
        }
        after = next;
    }
    unreachable!()
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

async fn unread(host: &Host, user: &str) -> Value {
    let (status, body) = get_json(&host.fn_url(&format!("{CHAT}/users/{user}/unread"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The chat's key as the host stores it in Redis (the app's namespace, then the key).
fn redis_key(key: &str) -> String {
    format!("gf:kv:{{{CHAT}}}:{key}")
}

fn redis_ttl(redis: &Redis, key: &str) -> i64 {
    redis::cmd("TTL")
        .arg(redis_key(key))
        .query(&mut redis.client())
        .expect("TTL")
}

/// `goldfish_instances_live` on `host`: 1 while a long poll is waiting there.
async fn live_instances(host: &Host) -> u64 {
    let text = client()
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix("goldfish_instances_live "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_on_one_host_reaches_a_long_poll_waiting_on_another_within_a_second() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    join(&a, "lobby", "ada").await;
    join(&b, "lobby", "bob").await;

    let poll_url = b.fn_url(&format!(
        "{CHAT}/rooms/lobby/messages?after=0&wait=9000&user=bob"
    ));
    let poll = tokio::spawn(async move {
        let answer = get_json(&poll_url).await;
        (answer, Instant::now())
    });
    // The poll is waiting once its instance is alive on B.
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            live_instances(&b).await == 1
        })
        .await
    );
    let posted = Instant::now();
    let seq = say(&a, "lobby", "ada", "hello from A").await;
    let ((status, body), answered) = poll.await.expect("poll task");
    let latency = answered.duration_since(posted);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["text"], "hello from A", "{body}");
    assert_eq!(body["messages"][0]["user"], "ada");
    assert_eq!(body["next"], seq);
    assert!(
        latency < Duration::from_secs(1),
        "the long poll answered {latency:?} after the post"
    );
    println!("post on A → long poll on B answered in {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_with_nothing_to_say_answers_before_the_hosts_deadline() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy_chat(&[&host]).await;
    let started = Instant::now();
    // Asking for a minute gets the cap (9 s), inside the host's 10 s deadline: a 200, not a 504.
    let body = read(&host, "quiet", "after=0&wait=60000").await;
    let waited = started.elapsed();
    assert_eq!(body, json!({"messages": [], "next": 0}));
    assert!(
        waited >= Duration::from_millis(8900) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_posts_from_three_hosts_get_gapless_seqs_and_read_back_in_order() {
    let redis = Redis::start();
    let hosts = [
        Host::start(&redis),
        Host::start(&redis),
        Host::start(&redis),
    ];
    let hosts: Vec<&Host> = hosts.iter().collect();
    deploy_chat(&hosts).await;
    let posts = 200;
    let mut seqs_by_text: BTreeMap<String, u64> = futures::stream::iter(0..posts)
        .map(|n| {
            let host = hosts[n % hosts.len()];
            async move {
                let text = format!("message {n}");
                let seq = say(host, "busy", &format!("user{}", n % 5), &text).await;
                (text, seq)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut claimed: Vec<u64> = seqs_by_text.values().copied().collect();
    claimed.sort_unstable();
    assert_eq!(
        claimed,
        (1..=posts as u64).collect::<Vec<_>>(),
        "200 distinct gapless seqs"
    );

    let messages = read_all(&hosts, "busy", 0).await;
    assert_eq!(
        seqs(&messages),
        (1..=posts as u64).collect::<Vec<_>>(),
        "read back in order"
    );
    for message in &messages {
        let text = message["text"].as_str().expect("text");
        assert_eq!(
            seqs_by_text.remove(text),
            message["seq"].as_u64(),
            "{message}"
        );
    }
    assert!(seqs_by_text.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_are_exact_after_concurrent_posts_and_reading_clears_only_the_reader() {
    let redis = Redis::start();
    let hosts = [
        Host::start(&redis),
        Host::start(&redis),
        Host::start(&redis),
    ];
    let hosts: Vec<&Host> = hosts.iter().collect();
    deploy_chat(&hosts).await;
    let posters = [("ada", 10), ("bob", 20), ("cy", 5)];
    for (user, _) in posters {
        join(hosts[0], "team", user).await;
    }
    join(hosts[1], "other", "ada").await;
    // Dee joins and never posts; every post counts for her.
    join(hosts[2], "team", "dee").await;
    let jobs: Vec<(usize, &str)> = posters
        .iter()
        .flat_map(|&(user, count)| (0..count).map(move |n| (n, user)))
        .collect();
    futures::stream::iter(jobs.into_iter().enumerate())
        .map(|(i, (n, user))| {
            let host = hosts[i % hosts.len()];
            async move { say(host, "team", user, &format!("{user} {n}")).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(
        unread(hosts[0], "ada").await,
        json!({"team": 25, "other": 0})
    );
    assert_eq!(unread(hosts[1], "bob").await, json!({"team": 15}));
    assert_eq!(unread(hosts[2], "cy").await, json!({"team": 30}));
    assert_eq!(unread(hosts[0], "dee").await, json!({"team": 35}));

    read(hosts[1], "team", "after=0&user=bob").await;
    assert_eq!(unread(hosts[2], "bob").await, json!({"team": 0}));
    assert_eq!(
        unread(hosts[2], "ada").await,
        json!({"team": 25, "other": 0})
    );
    assert_eq!(unread(hosts[0], "nobody").await, json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_shows_for_five_seconds_then_expires() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    join(&a, "lobby", "ada").await;
    let typing_url = b.fn_url(&format!("{CHAT}/rooms/lobby/typing"));
    assert_eq!(get_json(&typing_url).await, (200, json!({"typing": []})));

    let started = Instant::now();
    let (status, _) = post(
        &a.fn_url(&format!("{CHAT}/rooms/lobby/typing")),
        json!({"user": "bob"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get_json(&typing_url).await,
        (200, json!({"typing": ["bob"]}))
    );
    let ttl = redis_ttl(&redis, "typing:lobby:bob");
    assert!((1..=5).contains(&ttl), "typing key TTL {ttl}");
    assert!(
        support::eventually(Duration::from_secs(8), || async {
            get_json(&typing_url).await.1 == json!({"typing": []})
        })
        .await,
        "bob still shows as typing"
    );
    let shown = started.elapsed();
    assert!(
        shown >= Duration::from_secs(4),
        "typing vanished after only {shown:?}"
    );
    println!("typing showed for {shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_heartbeat_keeps_a_user_online_for_thirty_seconds() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    let (status, body) = post(
        &a.fn_url(&format!("{CHAT}/presence")),
        json!({"user": "ada"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"online": true, "seconds": 30}))
    );
    let (status, body) = get_json(&b.fn_url(&format!("{CHAT}/presence?users=ada,bob"))).await;
    assert_eq!((status, body), (200, json!({"ada": true, "bob": false})));
    // The 30 s expiry is Redis's: check the TTL rather than wait half a minute.
    let ttl = redis_ttl(&redis, "presence:ada");
    assert!((25..=30).contains(&ttl), "presence key TTL {ttl}");
    assert_eq!(
        redis_ttl(&redis, "presence:bob"),
        -2,
        "no key for a user never seen"
    );
    let (status, _) = get_json(&b.fn_url(&format!("{CHAT}/presence?users=ada,NOT_A_NAME"))).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_between_a_post_and_the_read_loses_nothing() {
    let redis = Redis::start();
    let mut a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    join(&b, "lobby", "bob").await;
    for n in 1..=5 {
        assert_eq!(
            say(&a, "lobby", "ada", &format!("before the crash {n}")).await,
            n
        );
    }
    a.kill();
    let messages = read_all(&[&b], "lobby", 0).await;
    assert_eq!(seqs(&messages), [1, 2, 3, 4, 5]);
    assert_eq!(messages[4]["text"], "before the crash 5");
    assert_eq!(unread(&b, "bob").await, json!({"lobby": 5}));
    assert_eq!(say(&b, "lobby", "ada", "after the crash").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_claimed_by_a_writer_that_died_holds_readers_back_until_it_is_settled() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy_chat(&[&host]).await;
    say(&host, "lobby", "ada", "one").await;
    // A writer claims seq 2 and dies before writing it: the claim is the increment, alone.
    let claimed: i64 = redis::cmd("INCR")
        .arg(redis_key("room:lobby:seq"))
        .query(&mut redis.client())
        .expect("INCR");
    assert_eq!(claimed, 2);
    let posted = Instant::now();
    assert_eq!(say(&host, "lobby", "bob", "three").await, 3);

    // Seq 2 may still be written, so readers stop before it rather than skip it.
    let body = read(&host, "lobby", "after=1").await;
    assert_eq!(body, json!({"messages": [], "next": 1}));
    // Once a later message is older than any writer can be (15 s), the hole is settled with a
    // tombstone and the reader moves on; a long poll notices by itself.
    let body = read(&host, "lobby", "after=1&wait=9000").await;
    let body = if body["messages"].as_array().expect("messages").is_empty() {
        read(&host, "lobby", "after=1&wait=9000").await
    } else {
        body
    };
    assert_eq!(
        seqs(body["messages"].as_array().expect("messages")),
        [3],
        "{body}"
    );
    assert_eq!(body["next"], 3);
    assert!(posted.elapsed() >= Duration::from_secs(15));
    let tombstone: String = redis::cmd("GET")
        .arg(redis_key("room:lobby:msg:2"))
        .query(&mut redis.client())
        .expect("GET");
    assert!(tombstone.contains(r#""lost":true"#), "{tombstone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_keeps_its_last_thousand_messages_each_for_seven_days() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    let posts = 1005u64;
    futures::stream::iter(0..posts)
        .map(|n| say(if n % 2 == 0 { &a } else { &b }, "archive", "ada", "x"))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let messages = read_all(&[&a, &b], "archive", 0).await;
    assert_eq!(seqs(&messages), (6..=posts).collect::<Vec<_>>());
    let mut redis_client = redis.client();
    let exists = |key: &str, conn: &mut redis::Connection| -> bool {
        redis::cmd("EXISTS")
            .arg(redis_key(key))
            .query(conn)
            .expect("EXISTS")
    };
    assert!(
        !exists("room:archive:msg:5", &mut redis_client),
        "the 1,001st newest is deleted"
    );
    assert!(exists("room:archive:msg:6", &mut redis_client));
    let ttl = redis_ttl(&redis, "room:archive:msg:1005");
    let week = 7 * 24 * 3600;
    assert!((week - 60..=week).contains(&ttl), "message TTL {ttl}");
    // Without `after`, the latest page.
    let latest = read(&a, "archive", "limit=3").await;
    assert_eq!(
        seqs(latest["messages"].as_array().expect("messages")),
        [1003, 1004, 1005]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_long_texts_are_refused_with_400() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy_chat(&[&host]).await;
    let url = host.fn_url(&format!("{CHAT}/rooms/lobby/messages"));
    // 2,000 characters of a three-byte character is fine: the limit counts characters.
    let longest = "語".repeat(2000);
    assert_eq!(
        post(&url, json!({"user": "ada", "text": longest})).await.0,
        201
    );
    for body in [
        json!({"user": "ada", "text": "語".repeat(2001)}),
        json!({"user": "Ada", "text": "hi"}),
        json!({"user": "a".repeat(33), "text": "hi"}),
        json!({"user": "ada:evil", "text": "hi"}),
        json!({"text": "hi"}),
        json!({"user": "ada", "text": ""}),
        json!({"user": "ada", "text": 5}),
    ] {
        let (status, answer) = post(&url, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, _) = get_json(&host.fn_url(&format!("{CHAT}/rooms/Lobby!/messages"))).await;
    assert_eq!(status, 400);
    let (status, _) =
        get_json(&host.fn_url(&format!("{CHAT}/rooms/lobby/messages?after=-1"))).await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&host.fn_url(&format!("{CHAT}/nowhere"))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_keeps_nothing_in_memory_under_load() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    support::assert_fresh_under_load(&[&a, &b], CHAT, "/probe", 200, 8).await;
}

/// Installs the pinned puppeteer-core under target/tools/puppeteer unless it is there.
fn ensure_puppeteer() -> std::path::PathBuf {
    let dir = workspace().join("target").join("tools").join("puppeteer");
    let installed = std::fs::read_to_string(dir.join("node_modules/puppeteer-core/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|package| package["version"] == PUPPETEER_CORE_VERSION);
    if !installed {
        let status = Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&dir)
            .args([
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--save-exact",
            ])
            .arg(format!("puppeteer-core@{PUPPETEER_CORE_VERSION}"))
            .status()
            .expect("npm runs");
        assert!(status.success(), "installing puppeteer-core failed");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromium_pages_on_two_hosts_chat_through_the_html_page() {
    if !Path::new(CHROMIUM).exists() {
        println!(
            "SKIPPED: {CHROMIUM} is missing; install Debian's `chromium` package to run this test"
        );
        return;
    }
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    deploy_chat(&[&a, &b]).await;
    let tools = ensure_puppeteer();
    let screenshot = workspace().join("target").join("chat-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = tokio::task::spawn_blocking({
        let (page_a, page_b) = (a.fn_url(&format!("{CHAT}/")), b.fn_url(&format!("{CHAT}/")));
        let screenshot = screenshot.clone();
        move || {
            Command::new("node")
                .arg(workspace().join("tests").join("chat-browser.mjs"))
                .args([CHROMIUM, &page_a, &page_b])
                .arg(&screenshot)
                .env("PUPPETEER_TOOLS", &tools)
                .output()
                .expect("node runs")
        }
    })
    .await
    .expect("driver task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser driver failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    // What the pages did is in Redis: two members, ada's reply after bob's hello.
    let messages = read_all(&[&a], "lobby", 0).await;
    let said: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap_or(""),
                m["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("bob", "hello from host B"),
            ("ada", "hi bob, ada here on host A")
        ]
    );
}

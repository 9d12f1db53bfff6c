//! Versions and rollback over real HTTP against a real Redis: every deploy is a numbered version,
//! the last N are kept with their bytes, a rollback repoints the name atomically on every host,
//! and component bytes no kept version uses are deleted.

mod support;

use std::time::Duration;

use goldfish::backend::redis::RedisBackend;
use goldfish::backend::{Claim, FunctionRecord};
use serde_json::Value;
use support::{Host, Redis, RedisCluster, TOKEN, client, eventually, guest, json, post_json};

/// `bytes` with a custom section appended: the same component, another digest. Lets a test
/// deploy as many distinct versions as it likes.
fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"goldfish-test";
    let payload = n.to_string();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one LEB128 byte");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}

async fn versions(host: &Host, name: &str) -> (u16, Value) {
    let url = format!("{}/v1/functions/{name}/versions", host.url);
    json(
        client()
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET"),
    )
    .await
}

async fn rollback(host: &Host, name: &str, to: Option<&str>) -> (u16, Value) {
    let mut url = format!("{}/v1/functions/{name}/rollback", host.url);
    if let Some(to) = to {
        url.push_str(&format!("?to={to}"));
    }
    json(
        client()
            .post(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("POST"),
    )
    .await
}

fn listed_numbers(list: &Value) -> Vec<u64> {
    list["versions"]
        .as_array()
        .expect("versions array")
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect()
}

fn component_stored(redis: &Redis, digest: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("gf:component:{digest}"))
        .query::<bool>(&mut redis.client())
        .expect("EXISTS")
}

/// What the function answers at its root: the probe's JSON, or misbehave's text.
async fn served(host: &Host, name: &str) -> String {
    let response = client().get(host.fn_url(name)).send().await.expect("GET");
    response.text().await.expect("body")
}

#[tokio::test]
async fn each_deploy_is_a_numbered_version_listed_newest_first_with_the_current_marked() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let first = host
        .deploy_bytes_ok("thing", None, guest("recycle-probe"))
        .await;
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["by"], "admin");
    let second = host
        .deploy_bytes_ok("thing", Some("other"), guest("misbehave"))
        .await;
    assert_eq!(second["version"], 2);
    let third = host.deploy_bytes_ok("thing", None, guest("cart")).await;
    assert_eq!(third["version"], 3);

    let (status, list) = versions(&host, "thing").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["name"], "thing");
    assert_eq!(list["current"], 3);
    assert_eq!(listed_numbers(&list), [3, 2, 1]);
    let listed = list["versions"].as_array().expect("array");
    let marked: Vec<bool> = listed.iter().map(|v| v["current"] == true).collect();
    assert_eq!(marked, [true, false, false]);
    // Each version is the entry it was deployed as.
    assert_eq!(listed[1]["digest"], second["digest"]);
    assert_eq!(listed[1]["app"], "other");
    assert_eq!(listed[2]["size"], guest("recycle-probe").len() as u64);
    for version in listed {
        assert_eq!(version["by"], "admin");
        assert_eq!(version["world"], "goldfish");
        assert!(version["deployed_at"].as_u64().is_some_and(|t| t > 0));
    }
    let (status, entry) = get_json_admin(&host, "/v1/functions/thing").await;
    assert_eq!((status, entry["version"].as_u64()), (200, Some(3)));
}

async fn get_json_admin(host: &Host, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", host.url);
    json(
        client()
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET"),
    )
    .await
}

#[tokio::test]
async fn rollback_goes_to_the_previous_version_by_default_and_to_any_kept_one_with_to() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("thing", None, "recycle-probe").await;
    host.deploy_ok("thing", None, "misbehave").await;
    host.deploy_ok("thing", None, "recycle-probe").await;

    let (status, entry) = rollback(&host, "thing", None).await;
    assert_eq!(
        (status, entry["version"].as_u64()),
        (200, Some(2)),
        "{entry}"
    );
    assert_eq!(served(&host, "thing").await, "misbehave");
    let (_, list) = versions(&host, "thing").await;
    assert_eq!(list["current"], 2);
    assert_eq!(
        listed_numbers(&list),
        [3, 2, 1],
        "a rollback keeps every version"
    );

    let (status, entry) = rollback(&host, "thing", Some("1")).await;
    assert_eq!(
        (status, entry["version"].as_u64()),
        (200, Some(1)),
        "{entry}"
    );
    assert!(served(&host, "thing").await.contains("global"));

    let (status, body) = rollback(&host, "thing", None).await;
    assert_eq!(status, 409, "nothing older than version 1: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("oldest")));

    let (status, entry) = rollback(&host, "thing", Some("3")).await;
    assert_eq!(
        (status, entry["version"].as_u64()),
        (200, Some(3)),
        "forward again"
    );
    let (status, entry) = rollback(&host, "thing", Some("3")).await;
    assert_eq!(
        (status, entry["version"].as_u64()),
        (200, Some(3)),
        "to the current version: no change"
    );

    let (status, body) = rollback(&host, "thing", Some("9")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("3, 2, 1"))
    );
    assert_eq!(rollback(&host, "thing", Some("two")).await.0, 400);
    assert_eq!(rollback(&host, "thing", Some("0")).await.0, 400);
    assert_eq!(rollback(&host, "ghost", None).await.0, 404);
    assert_eq!(versions(&host, "ghost").await.0, 404);
    assert_eq!(versions(&host, "Bad_Name").await.0, 400);

    // A deploy after a rollback is numbered after the newest version, and is current.
    let entry = host.deploy_bytes_ok("thing", None, guest("cart")).await;
    assert_eq!(entry["version"], 4);
}

#[tokio::test]
async fn a_rollback_through_one_host_is_served_by_another_within_a_second() {
    let redis = Redis::start();
    let a = Host::start(&redis);
    let b = Host::start(&redis);
    a.deploy_ok("thing", None, "misbehave").await;
    a.deploy_ok("thing", None, "recycle-probe").await;
    let switched = eventually(Duration::from_secs(1), || async {
        served(&b, "thing").await.contains("global")
    })
    .await;
    assert!(switched, "B serves version 2");

    let (status, _) = rollback(&a, "thing", None).await;
    assert_eq!(status, 200);
    let rolled_back = eventually(Duration::from_secs(1), || async {
        served(&b, "thing").await == "misbehave"
    })
    .await;
    assert!(
        rolled_back,
        "host B still serves version 2 a second after the rollback through A"
    );
}

#[tokio::test]
async fn requests_in_flight_during_a_rollback_finish_on_their_version() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("thing", None, "recycle-probe").await;
    host.deploy_ok("thing", None, "misbehave").await;
    let slow = tokio::spawn(client().get(host.fn_url("thing/sleep?ms=700")).send());
    // Let the slow request reach its instance, then roll the name back under it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rollback(&host, "thing", None).await.0, 200);
    let (status, body) = post_json(&host.fn_url("thing")).await;
    assert_eq!(
        (status, body["global"].as_u64()),
        (200, Some(1)),
        "new requests get version 1: {body}"
    );
    let (status, body) = json(slow.await.expect("join").expect("GET")).await;
    assert_eq!(
        (status, body["slept_ms"].as_u64()),
        (200, Some(700)),
        "the request in flight finished on version 2: {body}"
    );
}

#[tokio::test]
async fn eleven_deploys_keep_ten_versions_and_delete_the_oldest_bytes() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let probe = guest("recycle-probe");
    let mut digests = Vec::new();
    for n in 1..=11 {
        let entry = host
            .deploy_bytes_ok("thing", None, variant(&probe, n))
            .await;
        assert_eq!(entry["version"], u64::from(n));
        digests.push(entry["digest"].as_str().expect("digest").to_owned());
    }
    let (_, list) = versions(&host, "thing").await;
    assert_eq!(listed_numbers(&list), (2..=11).rev().collect::<Vec<u64>>());
    assert!(
        !component_stored(&redis, &digests[0]),
        "version 1's bytes are still in Redis"
    );
    for digest in &digests[1..] {
        assert!(
            component_stored(&redis, digest),
            "a kept version lost its bytes"
        );
    }
    let tracked: Vec<String> = redis::cmd("SMEMBERS")
        .arg("gf:{registry}:components")
        .query(&mut redis.client())
        .expect("SMEMBERS");
    assert_eq!(tracked.len(), 10, "{tracked:?}");
    assert_eq!(rollback(&host, "thing", Some("1")).await.0, 404);
    // The oldest kept version still runs.
    assert_eq!(rollback(&host, "thing", Some("2")).await.0, 200);
    assert!(served(&host, "thing").await.contains("global"));
}

#[tokio::test]
async fn keep_versions_sets_how_many_are_kept() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--keep-versions", "2"]);
    let probe = guest("recycle-probe");
    for n in 1..=3 {
        host.deploy_bytes_ok("thing", None, variant(&probe, n))
            .await;
    }
    let (_, list) = versions(&host, "thing").await;
    assert_eq!(listed_numbers(&list), [3, 2]);
}

#[tokio::test]
async fn bytes_two_functions_share_stay_until_neither_uses_them() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let a = host
        .deploy_bytes_ok("a", None, guest("recycle-probe"))
        .await;
    host.deploy_ok("b", None, "recycle-probe").await;
    let digest = a["digest"].as_str().expect("digest").to_owned();
    let delete = |name: &'static str| {
        client()
            .delete(format!("{}/v1/functions/{name}", host.url))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(delete("a").await.expect("DELETE").status(), 204);
    assert!(component_stored(&redis, &digest), "b still uses the bytes");
    assert_eq!(
        versions(&host, "a").await.0,
        404,
        "a deleted function's versions go with it"
    );
    assert_eq!(delete("b").await.expect("DELETE").status(), 204);
    assert!(!component_stored(&redis, &digest), "nothing uses the bytes");
    // Deploying the same bytes again stores them again.
    host.deploy_ok("a", None, "recycle-probe").await;
    assert!(component_stored(&redis, &digest));
    assert_eq!(
        versions(&host, "a").await.1["current"],
        1,
        "numbering restarts"
    );
}

#[tokio::test]
async fn an_entry_deployed_before_versions_existed_is_version_one() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    // How a host from before versions left a function: an entry without a version, its bytes,
    // and no history.
    let bytes = guest("recycle-probe");
    let first = host.deploy_bytes_ok("old", None, bytes).await;
    let digest = first["digest"].as_str().expect("digest");
    let legacy = serde_json::json!({"name": "old", "app": "old", "digest": digest,
        "size": first["size"], "deployed_at": 1});
    let mut conn = redis.client();
    let _: () = redis::pipe()
        .hset("gf:{registry}:functions", "old", legacy.to_string())
        .hdel("gf:{registry}:history", "old")
        .incr("gf:{registry}:version", 1)
        .query(&mut conn)
        .expect("write a legacy entry");
    let (status, list) = versions(&host, "old").await;
    assert_eq!((status, listed_numbers(&list)), (200, vec![1]), "{list}");
    let next = host.deploy_bytes_ok("old", None, guest("misbehave")).await;
    assert_eq!(next["version"], 2);
    let (status, entry) = rollback(&host, "old", None).await;
    assert_eq!((status, entry["digest"].as_str()), (200, Some(digest)));
    let served_again = eventually(Duration::from_secs(1), || async {
        served(&host, "old").await.contains("global")
    })
    .await;
    assert!(served_again);
}

#[tokio::test]
async fn the_memory_store_keeps_versions_and_rolls_back_too() {
    let host = Host::start_with(&["--store", "memory", "--admin-token", TOKEN]);
    host.deploy_ok("thing", None, "recycle-probe").await;
    host.deploy_ok("thing", None, "misbehave").await;
    assert_eq!(listed_numbers(&versions(&host, "thing").await.1), [2, 1]);
    assert_eq!(rollback(&host, "thing", None).await.0, 200);
    assert!(served(&host, "thing").await.contains("global"));
    assert_eq!(rollback(&host, "thing", None).await.0, 409);
}

#[tokio::test]
async fn on_a_redis_cluster_versions_roll_back_and_old_bytes_are_deleted_from_their_node() {
    let cluster = RedisCluster::start();
    let host = Host::start_with(&[
        "--store",
        "redis-cluster",
        "--redis",
        &cluster.urls(),
        "--admin-token",
        TOKEN,
        "--keep-versions",
        "2",
    ]);
    let probe = guest("recycle-probe");
    let mut digests = Vec::new();
    for n in 1..=3 {
        let entry = host
            .deploy_bytes_ok("thing", None, variant(&probe, n))
            .await;
        digests.push(entry["digest"].as_str().expect("digest").to_owned());
    }
    // Each component key lives on whichever node owns its slot.
    let stored = |digest: &str| {
        cluster.nodes.iter().any(|node| {
            redis::cmd("EXISTS")
                .arg(format!("gf:component:{digest}"))
                .query::<bool>(&mut node.client())
                .unwrap_or(false)
        })
    };
    assert!(!stored(&digests[0]), "version 1's bytes survived");
    assert!(stored(&digests[1]) && stored(&digests[2]));
    let (status, entry) = rollback(&host, "thing", None).await;
    assert_eq!(
        (status, entry["version"].as_u64()),
        (200, Some(2)),
        "{entry}"
    );
    assert_eq!(listed_numbers(&versions(&host, "thing").await.1), [3, 2]);
}

/// The Redis collector's protocol, driven directly: what it may and may not delete.
#[tokio::test]
async fn the_collector_spares_claimed_bytes_and_a_deploy_waits_out_a_deletion() {
    let redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), Duration::from_secs(2))
        .await
        .expect("connect");
    let now = 1_000_000;
    let digest = "ab".repeat(32);
    assert_eq!(
        backend
            .claim_component("c1", &digest, now, 60_000)
            .await
            .ok(),
        Some(Claim::Held)
    );
    backend.put_component(&digest, b"bytes").await.expect("SET");
    let deleted = backend
        .collect_components(now, 30_000)
        .await
        .expect("collect");
    assert!(deleted.is_empty(), "a claimed digest was collected");
    // Once the claim expires, nothing references the bytes: they go.
    let later = now + 60_001;
    let deleted = backend
        .collect_components(later, 30_000)
        .await
        .expect("collect");
    assert_eq!(deleted, [digest.as_str()]);
    assert!(!component_stored(&redis, &digest));

    // A collector that marked a digest and has not finished makes a deploy of it wait.
    backend
        .claim_component("c2", &digest, later, 1)
        .await
        .expect("claim");
    backend.put_component(&digest, b"bytes").await.expect("SET");
    let mark: Vec<String> = redis::cmd("EVAL")
        .arg("redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return {}")
        .arg(1)
        .arg("gf:{registry}:deleting")
        .arg(&digest)
        .arg(later + 30_000)
        .query(&mut redis.client())
        .expect("mark");
    assert!(mark.is_empty());
    assert_eq!(
        backend
            .claim_component("c3", &digest, later, 60_000)
            .await
            .ok(),
        Some(Claim::Wait(30_000))
    );
    // A committed claim is a version: its bytes stay.
    let record = FunctionRecord {
        entry: Some(format!(
            r#"{{"name":"f","app":"f","digest":"{digest}","size":5,"deployed_at":1}}"#
        )),
        history: None,
    };
    let after_mark = later + 30_001;
    assert_eq!(
        backend
            .claim_component("c4", &digest, after_mark, 60_000)
            .await
            .ok(),
        Some(Claim::Held),
        "an expired mark no longer blocks"
    );
    assert!(
        backend
            .swap_function(
                "f",
                &FunctionRecord::default(),
                &record,
                Some("c4"),
                &[&digest]
            )
            .await
            .expect("swap")
    );
    let far = after_mark + 3_600_000;
    assert!(
        backend
            .collect_components(far, 30_000)
            .await
            .expect("collect")
            .is_empty()
    );
    assert!(component_stored(&redis, &digest));
    assert!(
        !backend
            .swap_function("f", &FunctionRecord::default(), &record, None, &[])
            .await
            .expect("swap"),
        "a swap against a stale record changes nothing"
    );
}

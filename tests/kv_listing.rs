//! `list-keys` on Redis against its contract, with the backend talking to a real Redis: every key
//! that exists for the whole listing is returned at least once whatever others write and delete
//! meanwhile, a listing costs work in proportion to its own app's keys (not the whole keyspace),
//! expired keys are neither listed nor kept in the index, and keys written before the index
//! existed are still listed.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use goldfish::backend::redis::RedisBackend;
use goldfish::backend::{Backend, keys};
use support::{Redis, RedisCluster};

async fn backend(redis: &Redis) -> Backend {
    let backend = RedisBackend::connect(&redis.url(), Duration::from_secs(5))
        .await
        .expect("connect");
    Backend::Redis(backend)
}

/// The cluster's node addresses.
fn node_urls(cluster: &RedisCluster) -> Vec<String> {
    cluster.nodes.iter().map(Redis::url).collect()
}

/// A backend on the whole cluster.
async fn cluster_backend(cluster: &RedisCluster) -> Backend {
    let nodes = node_urls(cluster);
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let backend = RedisBackend::connect_cluster(&nodes, Duration::from_secs(5))
        .await
        .expect("connect");
    Backend::Redis(backend)
}

/// Every key under `namespace` with `prefix`, `limit` at a time, and the number of pages.
async fn list_all(
    backend: &Backend,
    namespace: &str,
    prefix: &str,
    limit: u32,
) -> (Vec<String>, u32) {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = backend
            .list(namespace, prefix, cursor.as_deref(), limit)
            .await
            .expect("list");
        pages += 1;
        assert!(
            page.keys.len() <= limit as usize,
            "a page holds at most `limit` keys"
        );
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return (keys, pages),
        }
        assert!(pages < 1_000_000, "the listing must end");
    }
}

/// Writes `keys` (full storage keys) through the backend, many at a time.
async fn write_all(backend: &Backend, keys: impl Iterator<Item = String>, ttl: Option<u32>) {
    futures::stream::iter(keys)
        .for_each_concurrent(256, |key| async move {
            backend.set(&key, b"v", ttl).await.expect("set");
        })
        .await;
}

/// Each key created with a compare-and-swap that expects no value (which must succeed).
async fn create_all(backend: &Backend, keys: impl Iterator<Item = String>, ttl: Option<u32>) {
    futures::stream::iter(keys)
        .for_each_concurrent(256, |key| async move {
            let created = backend
                .compare_and_swap(&key, None, b"v", ttl)
                .await
                .expect("create");
            assert!(created, "{key} was absent");
        })
        .await;
}

/// `calls` of each command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
fn command_calls(redis: &Redis) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client())
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_with_concurrent_writers_and_deleters_never_misses_a_key_present_throughout() {
    let redis = Redis::start();
    let backend = backend(&redis).await;
    let namespace = keys::kv_namespace("steady");
    let steady: BTreeSet<String> = (0..3_000).map(|i| format!("steady:{i:05}")).collect();
    write_all(
        &backend,
        steady.iter().map(|k| format!("{namespace}{k}")),
        None,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    // Writers and deleters in the same app, keys sorting before, between and after the steady
    // ones, some with an expiry.
    let churned = Arc::new(AtomicU64::new(0));
    let app_churn = {
        let (backend, stop, churned, namespace) = (
            backend.clone(),
            stop.clone(),
            churned.clone(),
            namespace.clone(),
        );
        tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<String> = (0..2_000)
                    .map(|i| match i % 3 {
                        0 => format!("{namespace}a:{round}:{i}"),
                        1 => format!("{namespace}steady:{i:05}:{round}"),
                        _ => format!("{namespace}z:{round}:{i}"),
                    })
                    .collect();
                let ttl = round.is_multiple_of(2).then_some(1);
                write_all(&backend, batch.iter().cloned(), ttl).await;
                futures::stream::iter(batch.iter())
                    .for_each_concurrent(256, |key| {
                        let backend = backend.clone();
                        async move {
                            backend.delete(key).await.expect("delete");
                        }
                    })
                    .await;
                churned.fetch_add(batch.len() as u64, Ordering::Relaxed);
                round += 1;
            }
        })
    };
    // Growth and shrinkage of Redis' main table (what made resumed SCAN batches skip keys):
    // tens of thousands of other keys written and deleted again, over and over.
    let table_churn = {
        let stop = stop.clone();
        let mut conn = redis.client();
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<String> = (0..60_000).map(|i| format!("other:{round}:{i}")).collect();
                let mut set = redis::pipe();
                for key in &keys {
                    set.set(key, 1).ignore();
                }
                let _: () = set.query(&mut conn).expect("SET batch");
                for chunk in keys.chunks(10_000) {
                    let _: () = redis::cmd("DEL").arg(chunk).query(&mut conn).expect("DEL");
                }
                round += 1;
            }
        })
    };

    let started = Instant::now();
    let mut listings = 0;
    let mut misses = Vec::new();
    while started.elapsed() < Duration::from_secs(8) || listings < 3 {
        let (keys, _) = list_all(&backend, &namespace, "", 10).await;
        let seen: BTreeSet<String> = keys.into_iter().collect();
        let missed: Vec<&String> = steady.iter().filter(|k| !seen.contains(*k)).collect();
        if !missed.is_empty() {
            misses.push(format!(
                "listing {listings} missed {} keys, e.g. {:?}",
                missed.len(),
                &missed[..missed.len().min(3)]
            ));
        }
        listings += 1;
    }
    stop.store(true, Ordering::Relaxed);
    app_churn.await.expect("app churn");
    table_churn.join().expect("table churn");
    assert!(
        churned.load(Ordering::Relaxed) > 0,
        "the writers ran during the listings"
    );
    assert!(misses.is_empty(), "{listings} listings: {misses:#?}");
}

#[tokio::test]
async fn listing_an_app_costs_its_own_keys_not_another_apps() {
    let redis = Redis::start();
    let backend = backend(&redis).await;
    // 100,000 keys of another app, written straight to Redis (fast); the app listed has 50.
    let mut conn = redis.client();
    let big = keys::kv_namespace("big");
    for chunk in (0..100_000).collect::<Vec<u32>>().chunks(10_000) {
        let mut set = redis::pipe();
        for i in chunk {
            set.set(format!("{big}k:{i}"), 1).ignore();
        }
        let _: () = set.query(&mut conn).expect("SET batch");
    }
    let small = keys::kv_namespace("small");
    let own: BTreeSet<String> = (0..50).map(|i| format!("item:{i}")).collect();
    write_all(&backend, own.iter().map(|k| format!("{small}{k}")), None).await;

    for limit in [1000, 7] {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut conn)
            .expect("RESETSTAT");
        let (listed, pages) = list_all(&backend, &small, "", limit).await;
        assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), own);
        let calls = command_calls(&redis);
        let scans: u64 = calls
            .iter()
            .filter(|(c, _)| c == "scan")
            .map(|(_, n)| n)
            .sum();
        let total: u64 = calls.iter().map(|(_, n)| n).sum();
        assert_eq!(scans, 0, "no walk of the keyspace: {calls:?}");
        // Per page one script and its range read; per key one existence check; a few more for
        // loading the script once, CONFIG and INFO.
        let bound = 2 * u64::from(pages) + own.len() as u64 + 6;
        assert!(
            total <= bound,
            "listing 50 keys in {pages} pages of {limit} took {total} commands (bound {bound}): {calls:?}"
        );
    }
}

#[tokio::test]
async fn keys_written_before_the_index_existed_are_listed() {
    let redis = Redis::start();
    let mut conn = redis.client();
    let default = keys::kv_namespace("legacy");
    let bucket = keys::bucket_namespace("legacy", "sessions");
    for key in [
        format!("{default}a"),
        format!("{default}b:1"),
        format!("{bucket}s1"),
        format!("{}x", keys::kv_namespace("other")),
    ] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("old")
            .query(&mut conn)
            .expect("SET");
    }
    // The first host of this version to start adds them to their apps' indexes.
    let backend = backend(&redis).await;
    let (listed, _) = list_all(&backend, &default, "", 100).await;
    assert_eq!(listed, ["a", "b:1"]);
    let (listed, _) = list_all(&backend, &bucket, "", 100).await;
    assert_eq!(listed, ["s1"]);
    let migrated: bool = redis::cmd("EXISTS")
        .arg(keys::KV_INDEX_MIGRATED)
        .query(&mut conn)
        .expect("EXISTS");
    assert!(migrated, "done once, recorded for every later host");
}

#[tokio::test]
async fn keys_written_before_the_index_existed_are_listed_on_every_node_of_a_cluster() {
    let cluster = RedisCluster::start();
    let apps: Vec<String> = (0..8).map(|i| format!("app-{i}")).collect();
    for app in &apps {
        for key in ["x", "y"] {
            let status = std::process::Command::new("redis-cli")
                .args(["-c", "-p", &cluster.nodes[0].port.to_string(), "SET"])
                .arg(format!("{}{key}", keys::kv_namespace(app)))
                .arg("old")
                .stdout(std::process::Stdio::null())
                .status()
                .expect("redis-cli");
            assert!(status.success());
        }
    }
    let holding = cluster
        .nodes
        .iter()
        .filter(|node| {
            redis::cmd("DBSIZE")
                .query::<u64>(&mut node.client())
                .expect("DBSIZE")
                > 0
        })
        .count();
    assert!(
        holding >= 2,
        "the apps' keys are spread over several primaries"
    );
    let backend = cluster_backend(&cluster).await;
    for app in &apps {
        let (listed, _) = list_all(&backend, &keys::kv_namespace(app), "", 10).await;
        assert_eq!(listed, ["x", "y"], "{app}");
    }
}

#[tokio::test]
async fn expired_keys_are_not_listed_and_leave_the_index() {
    let redis = Redis::start();
    let backend = backend(&redis).await;
    let namespace = keys::kv_namespace("ttl");
    let index = keys::kv_index("ttl");
    write_all(
        &backend,
        (0..20).map(|i| format!("{namespace}keep:{i}")),
        None,
    )
    .await;
    write_all(
        &backend,
        (0..50).map(|i| format!("{namespace}gone:{i}")),
        Some(1),
    )
    .await;
    create_all(
        &backend,
        (50..100).map(|i| format!("{namespace}gone:{i}")),
        Some(1),
    )
    .await;
    let card = |redis: &Redis| -> u64 {
        redis::cmd("ZCARD")
            .arg(keys::kv_index("ttl"))
            .query(&mut redis.client())
            .expect("ZCARD")
    };
    assert_eq!(card(&redis), 120);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // More expiring writes prune the index as they go, without anyone listing (here creates:
    // the `set`s of the test below prune too).
    create_all(
        &backend,
        (0..100).map(|i| format!("{namespace}later:{i}")),
        Some(60),
    )
    .await;
    assert_eq!(
        card(&redis),
        120,
        "writes with an expiry removed the expired entries"
    );
    let (listed, _) = list_all(&backend, &namespace, "", 1000).await;
    assert_eq!(listed.len(), 120, "{listed:?}");
    assert!(listed.iter().all(|k| !k.starts_with("gone:")));
    assert_eq!(card(&redis), 120, "{index} holds the live keys");
}

/// Rewriting a key that already expires (with `set` or a compare-and-swap) moves no entry of the
/// expiry set: every entry keeps its score through the rewrites.
/// When the old entry falls due, an expiring write's prune finds the key alive and moves the
/// entry to the key's new time, so the key stays listed past its first expiry time; a key
/// rewritten with a shorter expiry is gone at its new time and leaves the index all the same.
#[tokio::test]
async fn rewriting_an_expiring_key_moves_its_expiry_entry_only_when_it_falls_due() {
    let redis = Redis::start();
    let backend = backend(&redis).await;
    let app = "renew";
    let namespace = keys::kv_namespace(app);
    let (index, expiries) = (keys::kv_index(app), keys::kv_expiries(app));
    let key = |name: &str, i: u32| format!("{namespace}{name}:{i}");
    let mut conn = redis.client();
    // First expiries of 2 and 4 s leave the rewrites below a second and more before any entry
    // falls due, however slow the machine.
    write_all(&backend, (0..50).map(|i| key("renewed", i)), Some(2)).await;
    write_all(&backend, (0..10).map(|i| key("shortened", i)), Some(4)).await;
    let score = |conn: &mut redis::Connection, member: &str| -> f64 {
        redis::cmd("ZSCORE")
            .arg(&expiries)
            .arg(member)
            .query(conn)
            .expect("ZSCORE")
    };
    let first_due = score(&mut conn, &key("renewed", 0));
    let entries = |conn: &mut redis::Connection| -> Vec<(String, f64)> {
        redis::cmd("ZRANGE")
            .arg(&expiries)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)
            .expect("ZRANGE")
    };
    let before = entries(&mut conn);
    assert_eq!(before.len(), 60);

    for i in 0..50 {
        let renewed = key("renewed", i);
        if i % 2 == 0 {
            backend.set(&renewed, b"w", Some(60)).await.expect("set");
        } else {
            let swapped = backend
                .compare_and_swap(&renewed, Some(b"v"), b"w", Some(60))
                .await
                .expect("compare-and-swap");
            assert!(swapped, "{renewed} held the expected value");
        }
    }
    for i in 0..10 {
        backend
            .set(&key("shortened", i), b"w", Some(1))
            .await
            .expect("set");
    }
    assert_eq!(
        entries(&mut conn),
        before,
        "the rewrites left every expiry entry where it was"
    );

    // Past the first expiry time and the shortened keys' new one: expiring writes prune.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    write_all(&backend, (0..60).map(|i| key("later", i)), Some(60)).await;
    let moved = score(&mut conn, &key("renewed", 0));
    assert!(
        moved >= first_due + 50_000.0,
        "the prune moved the renewed key's entry to its new time ({first_due} -> {moved})"
    );
    let card = |conn: &mut redis::Connection| -> u64 {
        redis::cmd("ZCARD").arg(&index).query(conn).expect("ZCARD")
    };
    assert_eq!(
        card(&mut conn),
        120,
        "the shortened keys' entries are not due yet"
    );
    // The shortened keys' entries fall due at their first time (4 s): then they leave.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    write_all(&backend, (0..10).map(|i| key("last", i)), Some(60)).await;
    assert_eq!(
        card(&mut conn),
        120,
        "{index} holds the live keys, no shortened one"
    );
    let gone: Option<f64> = redis::cmd("ZSCORE")
        .arg(&expiries)
        .arg(key("shortened", 0))
        .query(&mut conn)
        .expect("ZSCORE");
    assert_eq!(gone, None, "the shortened key left the expiry set");
    let (listed, _) = list_all(&backend, &namespace, "", 1000).await;
    let listed: BTreeSet<String> = listed.into_iter().collect();
    let expected: BTreeSet<String> = (0..50)
        .map(|i| format!("renewed:{i}"))
        .chain((0..60).map(|i| format!("later:{i}")))
        .chain((0..10).map(|i| format!("last:{i}")))
        .collect();
    assert_eq!(
        listed, expected,
        "renewed keys stay listed past their first expiry time"
    );
}

/// A compare-and-swap that expects no value writes only a key that is absent, with or without
/// an expiry, and indexes what it writes; one that finds the key changes nothing, neither its
/// value nor its expiry. On a single Redis and on a cluster.
#[tokio::test]
async fn a_create_writes_only_an_absent_key_and_indexes_it() {
    let redis = Redis::start();
    creates_on(&backend(&redis).await, &mut redis.client()).await;
    let cluster = RedisCluster::start();
    let backend = cluster_backend(&cluster).await;
    let mut conn = redis::cluster::ClusterClient::new(node_urls(&cluster))
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection");
    creates_on(&backend, &mut conn).await;
}

async fn creates_on(backend: &Backend, conn: &mut impl redis::ConnectionLike) {
    for app in ["create-a", "create-b"] {
        let namespace = keys::kv_namespace(app);
        let key = |name: &str| format!("{namespace}{name}");
        let create = |name: &'static str, value: &'static [u8], ttl: Option<u32>| {
            let key = key(name);
            async move {
                backend
                    .compare_and_swap(&key, None, value, ttl)
                    .await
                    .expect("create")
            }
        };
        assert!(create("cart", b"one", Some(600)).await, "absent: created");
        assert!(!create("cart", b"two", Some(5)).await, "present: refused");
        assert!(create("plain", b"one", None).await, "absent: created");
        assert!(!create("plain", b"two", Some(5)).await, "present: refused");
        for (name, value) in [("cart", b"one"), ("plain", b"one")] {
            assert_eq!(
                backend.get(&key(name)).await.expect("get").as_deref(),
                Some(&value[..]),
                "{app} {name} kept its first value"
            );
        }
        let ttl = |conn: &mut dyn redis::ConnectionLike, name: &str| -> i64 {
            redis::cmd("TTL").arg(key(name)).query(conn).expect("TTL")
        };
        assert!(ttl(conn, "cart") > 5, "the refused create left the expiry");
        assert_eq!(ttl(conn, "plain"), -1, "the refused create set no expiry");
        let expiry: Option<f64> = redis::cmd("ZSCORE")
            .arg(keys::kv_expiries(app))
            .arg(key("cart"))
            .query(conn)
            .expect("ZSCORE");
        assert!(
            expiry.is_some(),
            "{app}: the created cart has its expiry entry"
        );
        let (listed, _) = list_all(backend, &namespace, "", 10).await;
        assert_eq!(listed, ["cart", "plain"], "{app}");
    }
}

/// An increment creates and indexes its key in one step; one Redis refuses (a value that is not
/// an integer, a result that would overflow) is `NotAnInteger` and changes nothing, on a single
/// Redis and on a cluster.
#[tokio::test]
async fn an_increment_indexes_its_key_and_a_refused_one_changes_nothing() {
    let redis = Redis::start();
    increments_on(&backend(&redis).await).await;
    let cluster = RedisCluster::start();
    let backend = cluster_backend(&cluster).await;
    increments_on(&backend).await;
}

async fn increments_on(backend: &Backend) {
    use goldfish::backend::BackendError;
    for app in ["counters-a", "counters-b", "counters-c"] {
        let namespace = keys::kv_namespace(app);
        let key = |name: &str| format!("{namespace}{name}");
        assert_eq!(backend.increment(&key("hits"), 5).await.expect("incr"), 5);
        assert_eq!(backend.increment(&key("hits"), -2).await.expect("incr"), 3);
        backend.set(&key("word"), b"abc", None).await.expect("set");
        backend
            .set(&key("max"), i64::MAX.to_string().as_bytes(), None)
            .await
            .expect("set");
        assert!(matches!(
            backend.increment(&key("word"), 1).await,
            Err(BackendError::NotAnInteger)
        ));
        assert!(matches!(
            backend.increment(&key("max"), 1).await,
            Err(BackendError::NotAnInteger)
        ));
        assert_eq!(
            backend.get(&key("word")).await.expect("get").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            backend.get(&key("max")).await.expect("get"),
            Some(i64::MAX.to_string().into_bytes())
        );
        assert_eq!(backend.increment(&key("hits"), 1).await.expect("incr"), 4);
        let (listed, _) = list_all(backend, &namespace, "", 10).await;
        assert_eq!(listed, ["hits", "max", "word"], "{app}");
    }
}

//! Redis Cluster as the shared store: two hosts on a real three-primary cluster serve the pizza
//! journey, and an app's keys can still be listed (they share one slot through the `{app}` tag).

mod support;

use futures::future::join_all;
use serde_json::json as j;
use support::{Host, RedisCluster, TOKEN, client, get_json, json};

fn cluster_host(cluster: &RedisCluster) -> Host {
    Host::start_with(&[
        "--store",
        "redis-cluster",
        "--redis",
        &cluster.urls(),
        "--admin-token",
        TOKEN,
    ])
}

/// Checks out the session in `cookie` with one fixed idempotency key.
async fn checkout(host: &Host, cookie: &str) -> (u16, serde_json::Value) {
    let request = client()
        .post(host.fn_url("checkout"))
        .header("cookie", cookie);
    json(request.header("idempotency-key", "k").send().await.unwrap()).await
}

#[tokio::test]
async fn pizza_journey_runs_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let a = cluster_host(&cluster);
    let b = cluster_host(&cluster);
    a.deploy_ok("cart", Some("pizza"), "cart").await;
    a.deploy_ok("checkout", Some("pizza"), "checkout").await;

    let opened = client().get(b.fn_url("cart")).send().await.unwrap();
    let cookie = opened
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let adds = (0..20).map(|i| {
        let host = if i % 2 == 0 { &a } else { &b };
        let request = client()
            .post(host.fn_url("cart/items"))
            .header("cookie", &cookie);
        async move {
            request
                .json(&j!({"item": "coke", "qty": 1}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    assert!(join_all(adds).await.iter().all(|s| *s == 201));

    let (status, order) = checkout(&a, &cookie).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["lines"].as_array().map(Vec::len), Some(20));
    let id = order["id"].as_str().unwrap();
    let (status, read_back) = get_json(&b.fn_url(&format!("checkout/orders/{id}"))).await;
    assert_eq!((status, &read_back), (200, &order));
    let (status, again) = checkout(&b, &cookie).await;
    assert_eq!((status, &again["id"]), (200, &order["id"]));
}

#[tokio::test]
async fn keys_of_an_app_are_listed_on_a_cluster() {
    let cluster = RedisCluster::start();
    let host = cluster_host(&cluster);
    host.deploy_ok("mb", None, "misbehave").await;
    for key in ["user:1", "user:2", "user:3", "session:9"] {
        let status = client()
            .put(host.fn_url(&format!("mb/kv?key={key}")))
            .body("x")
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }
    let (status, listed) = get_json(&host.fn_url("mb/kv-list?prefix=user:&limit=2")).await;
    assert_eq!(status, 200);
    assert_eq!(listed, j!(["user:1", "user:2", "user:3"]));
}

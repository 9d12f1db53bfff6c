//! The pizza shop across several real hosts sharing one real Redis: the stateless-server
//! pattern end to end.

mod support;

use futures::future::join_all;
use serde_json::{Value, json as j};
use support::{Host, Redis, client, get_json, get_status, json, post_json};

/// Unit price from the shop's own menu (the `pizza` library both guests are built from).
fn price(item: &str, size: Option<&str>) -> u64 {
    pizza::menu::price(item, size)
        .expect("on the menu")
        .unit_price_cents
}

async fn pizza_hosts(redis: &Redis, n: usize) -> Vec<Host> {
    let hosts: Vec<Host> = (0..n).map(|_| Host::start(redis)).collect();
    hosts[0].deploy_ok("cart", Some("pizza"), "cart").await;
    hosts[0]
        .deploy_ok("checkout", Some("pizza"), "checkout")
        .await;
    hosts
}

/// Opens a cart and returns its session id (from the Set-Cookie the cart hands out).
async fn new_session(host: &Host) -> String {
    let response = client().get(host.fn_url("cart")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("a new visitor gets a cookie")
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie
        .strip_prefix("pizza.goldfish_session=")
        .expect("the session cookie is scoped to app pizza")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn cookie(session: &str) -> String {
    format!("pizza.goldfish_session={session}")
}

async fn add(host: &Host, session: &str, item: Value) -> (u16, Value) {
    json(
        client()
            .post(host.fn_url("cart/items"))
            .header("cookie", cookie(session))
            .json(&item)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn view(host: &Host, session: &str) -> Value {
    let (status, cart) = json(
        client()
            .get(host.fn_url("cart"))
            .header("cookie", cookie(session))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{cart}");
    cart
}

async fn checkout(host: &Host, session: &str, idempotency_key: Option<&str>) -> (u16, Value) {
    let mut request = client()
        .post(host.fn_url("checkout"))
        .header("cookie", cookie(session));
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    json(request.send().await.unwrap()).await
}

fn lines(cart: &Value) -> &Vec<Value> {
    cart["lines"].as_array().expect("lines")
}

#[tokio::test]
async fn cart_built_across_three_hosts_checks_out_into_an_order() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 3).await;
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let session = new_session(a).await;

    let (status, _) = add(
        a,
        &session,
        j!({"item": "pepperoni", "size": "large", "qty": 1}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = add(b, &session, j!({"item": "coke", "qty": 1})).await;
    assert_eq!(status, 201);
    let cart = view(c, &session).await;
    let items: Vec<&str> = lines(&cart)
        .iter()
        .filter_map(|l| l["item"].as_str())
        .collect();
    assert_eq!(items, ["pepperoni", "coke"]);

    let expected_total = price("pepperoni", Some("large")) + price("coke", None);
    let (status, order) = checkout(a, &session, None).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["total_cents"].as_u64(), Some(expected_total));
    assert_eq!(order["lines"].as_array().map(Vec::len), Some(2));
    assert!(
        lines(&view(a, &session).await).is_empty(),
        "the cart is empty after checkout"
    );

    let id = order["id"].as_str().unwrap();
    let (status, read_back) = get_json(&b.fn_url(&format!("checkout/orders/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(read_back, order);
}

#[tokio::test]
async fn killing_the_host_that_made_the_cart_loses_nothing() {
    let redis = Redis::start();
    let mut hosts = pizza_hosts(&redis, 2).await;
    let session = new_session(&hosts[0]).await;
    let (status, _) = add(
        &hosts[0],
        &session,
        j!({"item": "margherita", "size": "small", "qty": 2}),
    )
    .await;
    assert_eq!(status, 201);
    hosts[0].kill();
    let survivor = &hosts[1];
    let cart = view(survivor, &session).await;
    assert_eq!(lines(&cart).len(), 1);
    assert_eq!(
        cart["total_cents"].as_u64(),
        Some(2 * price("margherita", Some("small")))
    );
    let (status, _) = add(survivor, &session, j!({"item": "water", "qty": 1})).await;
    assert_eq!(status, 201);
    let (status, order) = checkout(survivor, &session, None).await;
    assert_eq!(
        (status, order["lines"].as_array().map(Vec::len)),
        (201, Some(2))
    );
}

#[tokio::test]
async fn fifty_concurrent_adds_through_two_hosts_all_land() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 2).await;
    let session = new_session(&hosts[0]).await;
    let adds = (0..50).map(|i| {
        let host = &hosts[i % 2];
        let session = session.clone();
        async move {
            add(
                host,
                &session,
                j!({"item": "veggie", "size": "medium", "qty": 1}),
            )
            .await
            .0
        }
    });
    let statuses = join_all(adds).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let cart = view(&hosts[1], &session).await;
    assert_eq!(lines(&cart).len(), 50);
    let mut ids: Vec<u64> = lines(&cart)
        .iter()
        .filter_map(|l| l["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "every line has its own id");
    assert_eq!(
        cart["total_cents"].as_u64(),
        Some(50 * price("veggie", Some("medium")))
    );
}

#[tokio::test]
async fn checkout_retried_with_one_idempotency_key_makes_exactly_one_order() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 2).await;
    let session = new_session(&hosts[0]).await;
    add(
        &hosts[0],
        &session,
        j!({"item": "hawaiian", "size": "large", "qty": 1}),
    )
    .await;
    let (first_status, first) = checkout(&hosts[0], &session, Some("order-attempt-1")).await;
    assert_eq!(first_status, 201, "{first}");
    for host in [&hosts[1], &hosts[0], &hosts[1]] {
        let (status, again) = checkout(host, &session, Some("order-attempt-1")).await;
        assert_eq!(status, 200, "a retry answers 200 with the same order");
        assert_eq!(again["id"], first["id"]);
    }
    let mut conn = redis.client();
    let orders: Vec<String> = redis::cmd("KEYS")
        .arg("gf:kv:{pizza}:order:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(orders.len(), 1, "exactly one order stored: {orders:?}");
}

#[tokio::test]
async fn concurrent_checkouts_of_one_cart_make_one_order() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 2).await;
    let session = new_session(&hosts[0]).await;
    add(
        &hosts[0],
        &session,
        j!({"item": "pepperoni", "size": "small", "qty": 3}),
    )
    .await;
    let attempts = (0..10).map(|i| {
        let host = &hosts[i % 2];
        let session = session.clone();
        async move { checkout(host, &session, None).await.0 }
    });
    let mut statuses = join_all(attempts).await;
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let mut conn = redis.client();
    let orders: Vec<String> = redis::cmd("KEYS")
        .arg("gf:kv:{pizza}:order:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(orders.len(), 1);
}

#[tokio::test]
async fn empty_or_missing_cart_cannot_check_out() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 1).await;
    let (status, body) = post_json(&hosts[0].fn_url("checkout")).await;
    assert_eq!(status, 409, "{body}");
    let session = new_session(&hosts[0]).await;
    let (status, body) = checkout(&hosts[0], &session, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn bad_cart_input_is_400_with_a_message() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 1).await;
    let session = new_session(&hosts[0]).await;
    for bad in [
        j!({"item": "sushi", "size": "large", "qty": 1}),
        j!({"item": "pepperoni", "size": "enormous", "qty": 1}),
        j!({"item": "pepperoni", "size": "large", "qty": 0}),
        j!({"item": "pepperoni", "size": "large", "qty": 21}),
    ] {
        let (status, body) = add(&hosts[0], &session, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let malformed = client()
        .post(hosts[0].fn_url("cart/items"))
        .header("cookie", cookie(&session))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(lines(&view(&hosts[0], &session).await).is_empty());
}

#[tokio::test]
async fn removing_a_line_updates_the_cart_and_unknown_lines_are_404() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 2).await;
    let session = new_session(&hosts[0]).await;
    let (_, cart) = add(
        &hosts[0],
        &session,
        j!({"item": "veggie", "size": "large", "qty": 1}),
    )
    .await;
    let (_, cart2) = add(&hosts[0], &session, j!({"item": "lemonade", "qty": 1})).await;
    assert_eq!(lines(&cart).len(), 1);
    let id = lines(&cart)[0]["id"].as_u64().unwrap();
    let url = hosts[1].fn_url(&format!("cart/items/{id}"));
    let (status, after) = json(
        client()
            .delete(&url)
            .header("cookie", cookie(&session))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(lines(&after).len(), 1);
    assert_eq!(after["total_cents"].as_u64(), Some(price("lemonade", None)));
    assert_eq!(lines(&cart2).len(), 2);
    let status = client()
        .delete(&url)
        .header("cookie", cookie(&session))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn carts_expire_a_day_after_the_last_write() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 1).await;
    let session = new_session(&hosts[0]).await;
    add(&hosts[0], &session, j!({"item": "coke", "qty": 1})).await;
    let mut conn = redis.client();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("gf:kv:{{pizza}}:cart:{session}"))
        .query(&mut conn)
        .unwrap();
    assert!((86_390..=86_400).contains(&ttl), "cart TTL is {ttl}s");
}

#[tokio::test]
async fn unknown_order_is_404() {
    let redis = Redis::start();
    let hosts = pizza_hosts(&redis, 1).await;
    let status = get_status(&hosts[0].fn_url("checkout/orders/does-not-exist")).await;
    assert_eq!(status, 404);
}

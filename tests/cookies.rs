//! Cookies are scoped per app, end to end: the pizza cart's session reaches the client as
//! `pizza.goldfish_session`, a function of another app never receives it even when the browser
//! sends its whole cookie jar, and what that function sets never reaches pizza's guests.

mod support;

use serde_json::{Value, json};
use support::{Host, Redis, client, json as json_of};

/// The `name=value` of every `set-cookie` of `response`.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let v = v.to_str().expect("ascii set-cookie");
            v.split(';').next().unwrap_or_default().trim().to_owned()
        })
        .collect()
}

/// The `cookie` headers a misbehave `/echo` received, joined.
fn cookies_seen(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| {
            h[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("cookie"))
        })
        .map(|h| h[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// GETs `path` on `host` with the browser's cookie jar split over two `Cookie` headers.
async fn get_with_jar(host: &Host, path: &str, jar: &[String]) -> reqwest::Response {
    let (first, second) = jar.split_at(jar.len() / 2);
    client()
        .get(host.fn_url(path))
        .header("cookie", first.join("; "))
        .header("cookie", second.join("; "))
        .send()
        .await
        .expect("GET")
}

#[tokio::test]
async fn another_app_never_sees_pizzas_session_and_cannot_plant_one() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    host.deploy_ok("cart", Some("pizza"), "cart").await;
    host.deploy_ok("checkout", Some("pizza"), "checkout").await;
    // What a guest of pizza receives, and a hostile function in app `evil`.
    host.deploy_ok("pizza-peek", Some("pizza"), "misbehave")
        .await;
    host.deploy_ok("evil", Some("evil"), "misbehave").await;

    let opened = client().get(host.fn_url("cart")).send().await.expect("GET");
    assert_eq!(opened.status(), 200);
    let session_cookie = set_cookies(&opened);
    assert_eq!(session_cookie.len(), 1, "{session_cookie:?}");
    let session = session_cookie[0]
        .strip_prefix("pizza.goldfish_session=")
        .unwrap_or_else(|| panic!("the session cookie is in pizza's scope: {session_cookie:?}"))
        .to_owned();
    let raw = opened.headers()["set-cookie"].to_str().expect("ascii");
    assert!(raw.contains("HttpOnly") && raw.contains("Path=/"), "{raw}");

    // Evil tries to plant a session pizza would trust, under every name it might use.
    let planted = client()
        .get(host.fn_url(
            "evil/set-cookie?c=goldfish_session%3Dforged%3B+Path%3D%2F\
             &c=pizza.goldfish_session%3Dforged%3B+Domain%3Dexample.com\
             &c=__Host-pizza.goldfish_session%3Dforged%3B+Path%3D%2F%3B+Secure",
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(planted.status(), 200);
    let planted = set_cookies(&planted);
    assert_eq!(planted.len(), 3, "{planted:?}");
    for cookie in &planted {
        let name = cookie.split('=').next().unwrap_or_default();
        assert!(
            name.trim_start_matches("__Host-").starts_with("evil."),
            "evil's cookie stays in evil's scope: {cookie}"
        );
    }

    // The browser sends everything it holds for the origin to every function.
    let mut jar = vec!["theme=dark".to_owned()];
    jar.extend(session_cookie.iter().cloned());
    jar.extend(planted.iter().cloned());

    let (status, evil_saw) = json_of(get_with_jar(&host, "evil/echo", &jar).await).await;
    assert_eq!(status, 200, "{evil_saw}");
    let evil_cookies = cookies_seen(&evil_saw);
    assert!(
        !evil_saw.to_string().contains(&session),
        "evil received pizza's session: {evil_cookies:?}"
    );
    assert_eq!(
        evil_cookies,
        [
            "goldfish_session=forged; pizza.goldfish_session=forged; __Host-pizza.goldfish_session=forged"
        ],
        "evil sees its own cookies under the names it set, nothing else"
    );

    let (status, pizza_saw) = json_of(get_with_jar(&host, "pizza-peek/echo", &jar).await).await;
    assert_eq!(status, 200, "{pizza_saw}");
    assert_eq!(
        cookies_seen(&pizza_saw),
        [format!("goldfish_session={session}")],
        "pizza's guests see their session and nothing evil set"
    );

    // Cart and checkout (one app) share the session; the jar still works as a whole.
    let cart = get_with_jar(&host, "cart", &jar).await;
    assert_eq!(cart.status(), 200);
    assert!(
        set_cookies(&cart).is_empty(),
        "the session is recognised, no new one"
    );
    let added = client()
        .post(host.fn_url("cart/items"))
        .header("cookie", jar.join("; "))
        .json(&json!({"item": "coke", "qty": 2}))
        .send()
        .await
        .expect("POST");
    assert_eq!(added.status(), 201);
    let (status, order) = json_of(
        client()
            .post(host.fn_url("checkout"))
            .header("cookie", jar.join("; "))
            .header("idempotency-key", "k1")
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["lines"].as_array().map(Vec::len), Some(1), "{order}");
}

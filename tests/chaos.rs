//! Hosts die, nothing is lost: three real hosts behind a load balancer take 10,000 cart adds and
//! 1,000 checkouts, every one with an `Idempotency-Key`, while one host is killed with SIGKILL
//! (and later started again) and another is restarted with SIGTERM.
//!
//! # The load balancer
//!
//! nginx, when `nginx` is on `PATH` or at `/usr/sbin/nginx` (Debian: `apt-get install nginx`),
//! started by the test with a generated config in a temporary prefix (`daemon off`, one process,
//! its error log there). Otherwise the small TCP round-robin proxy of `tests/support/proxy.rs`.
//! `GOLDFISH_CHAOS_LB=proxy` (or `nginx`) forces one; the test prints which one ran.
//!
//! nginx keeps its default `proxy_next_upstream error timeout`, without `non_idempotent`: a POST
//! moves to another host only if connecting to the first one failed, before anything was sent.
//! Once a POST has reached a host that then dies, nginx answers 502 and the *client* retries with
//! the same key. That is deliberate: retrying a sent POST inside the balancer would hide exactly
//! the case the keys exist for, and would double any POST sent without a key. (nginx does retry a
//! sent DELETE, which it considers idempotent; a keyed remove replays, an unkeyed one may get
//! 404 for a line it did remove.)
//!
//! The upstream list is fixed in the config, so a host always comes back on its own port: these
//! hosts are started here with `--listen 127.0.0.1:PORT` rather than through `support::Host`,
//! which listens on port 0.
//!
//! # What the shoppers do
//!
//! [`SHOPPERS`] concurrent clients, each its own session, each adding [`ADDS_PER_SHOPPER`] lines
//! and checking out after adds 5, 15, ..., 95 (so ten orders each, and five lines left in the
//! cart). Every add and checkout carries a key unique to it; on a connection error, a timeout,
//! 502, 503 or 504 the client sends the same request with the same key again (through the
//! balancer, so usually to another host) until it gets an answer. Meanwhile: host 0 is SIGKILLed
//! when a quarter of the adds are acknowledged, host 1 is restarted (SIGTERM, then started again)
//! at half, and host 0 is started again at three quarters.
//!
//! # What is checked
//!
//! Through the API and straight from Redis: every acknowledged add is in its cart or in the
//! order of the checkout that followed it, with its item and quantity, and no line exists that
//! was not acknowledged (so none was applied twice); Redis holds exactly one order per checkout
//! key, each answered to its client, and no other order; no cart is left with a pending order.
//! The figures (acknowledged, retried, replayed, orders, time) are printed.

#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Redis, TOKEN};

/// Concurrent shoppers, one session each.
const SHOPPERS: usize = 100;

/// Adds per shopper: 100 × 100 = 10,000 adds, the figure the issue asks for.
const ADDS_PER_SHOPPER: usize = 100;

/// A shopper checks out after every tenth add, starting with the fifth: ten checkouts each,
/// 1,000 in all, and the last five adds stay in the cart.
fn checks_out_after(add: usize) -> bool {
    add % 10 == 4
}

/// How long one request may keep being retried before the test gives up on it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// The whole load, chaos included, must finish within this on a busy two-core machine.
const LOAD_DEADLINE: Duration = Duration::from_secs(300);

/// The Redis key prefix of app `pizza` (see the README's architecture section).
const PIZZA_KEYS: &str = "gf:kv:{pizza}:";

/// What the menu offers, cycled through so every line has a known item and quantity.
const ITEMS: [(&str, Option<&str>); 5] = [
    ("pepperoni", Some("large")),
    ("margherita", Some("small")),
    ("coke", None),
    ("veggie", Some("medium")),
    ("water", None),
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `check` every 20 ms until it holds or `within` passes.
fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A `goldfish serve` on a port of its own that it keeps across restarts.
struct FixedHost {
    port: u16,
    redis_url: String,
    child: Option<Child>,
    /// stderr of every run of this host, appended.
    log: PathBuf,
}

impl FixedHost {
    fn start(redis: &Redis, log_dir: &Path, name: &str) -> FixedHost {
        let mut host = FixedHost {
            port: 0,
            redis_url: redis.url(),
            child: None,
            log: log_dir.join(format!("{name}.log")),
        };
        for _ in 0..20 {
            host.port = free_port();
            if let Some(child) = host.launch() {
                host.child = Some(child);
                return host;
            }
        }
        panic!("{name} did not start:\n{}", host.log_contents());
    }

    /// Starts the process on `self.port` and waits for its `listening on` line; `None` if it
    /// exits first (the port was taken).
    fn launch(&self) -> Option<Child> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("host log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_goldfish"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--redis", &self.redis_url, "--admin-token", TOKEN])
            .arg("--compile-cache")
            .arg(support::shared_compile_cache())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn goldfish");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.starts_with("listening on ") {
            Some(child)
        } else {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }

    /// Starts the host again on its port, as an orchestrator would.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "host {} is still running", self.port);
        let child = self.launch().unwrap_or_else(|| {
            panic!(
                "host did not come back on port {}:\n{}",
                self.port,
                self.log_contents()
            )
        });
        self.child = Some(child);
    }

    /// SIGKILL: the process dies mid-request, like a crashed machine.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the host to drain and exit.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
            child.wait().expect("goldfish exits");
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FixedHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The balancer in front of the hosts.
enum Balancer {
    Nginx { child: Child, port: u16 },
    Proxy(proxy::Proxy),
}

impl Balancer {
    async fn start(upstreams: &[SocketAddr], dir: &Path) -> Balancer {
        let choice = std::env::var("GOLDFISH_CHAOS_LB").unwrap_or_default();
        let nginx = ["nginx", "/usr/sbin/nginx"].into_iter().find(|binary| {
            Command::new(binary)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        match (choice.as_str(), nginx) {
            ("proxy", _) | ("", None) => {
                Balancer::Proxy(proxy::Proxy::start(upstreams.to_vec()).await)
            }
            (_, Some(nginx)) => Balancer::start_nginx(nginx, upstreams, dir),
            (choice, None) => panic!("GOLDFISH_CHAOS_LB={choice} but nginx is not installed"),
        }
    }

    fn start_nginx(nginx: &str, upstreams: &[SocketAddr], dir: &Path) -> Balancer {
        for _ in 0..20 {
            let port = free_port();
            let config = dir.join("nginx.conf");
            std::fs::write(&config, nginx_config(port, upstreams, dir)).expect("nginx.conf");
            let mut child = Command::new(nginx)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&config)
                // Before it reads the config, nginx opens its compiled-in error log unless told.
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let exited = |child: &mut Child| matches!(child.try_wait(), Ok(Some(_)));
            let up = wait_until(Duration::from_secs(5), || {
                exited(&mut child) || TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up && !exited(&mut child) {
                return Balancer::Nginx { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "nginx did not start:\n{}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    fn name(&self) -> &'static str {
        match self {
            Balancer::Nginx { .. } => "nginx",
            Balancer::Proxy(_) => "tests/support/proxy.rs (TCP round-robin)",
        }
    }

    fn url(&self) -> String {
        match self {
            Balancer::Nginx { port, .. } => format!("http://127.0.0.1:{port}"),
            Balancer::Proxy(proxy) => proxy.url(),
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Balancer::Nginx { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The nginx config: one process in the foreground, everything under `dir`, round-robin over
/// `upstreams`. See the module documentation for why `proxy_next_upstream` is left as it is.
fn nginx_config(port: u16, upstreams: &[SocketAddr], dir: &Path) -> String {
    let dir = dir.display();
    let servers: String = upstreams
        .iter()
        // After one failure a host is skipped for a second, then tried again: the killed host
        // costs one refused connect per second, and the restarted one is back within a second.
        .map(|upstream| format!("        server {upstream} max_fails=1 fail_timeout=1s;\n"))
        .collect();
    format!(
        r#"daemon off;
# One process, run as the invoking user: no worker switching to another user who could not
# write the temporary prefix.
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream goldfish {{
{servers}        keepalive 64;
        # Below the hosts' header timeout, which also closes idle connections (as deploy/).
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://goldfish;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"#
    )
}

/// Counts of what the clients saw, for the assertions and the printed figures.
#[derive(Default)]
struct Tally {
    adds_acked: AtomicU64,
    /// Adds sent again with the same key after a connection error, timeout, 502, 503 or 504.
    add_retries: AtomicU64,
    /// Adds answered 200 `idempotent-replayed`: an earlier try had made the change.
    add_replays: AtomicU64,
    checkouts_acked: AtomicU64,
    checkout_retries: AtomicU64,
    /// Checkouts answered 200: an earlier try with the key had placed the order.
    checkout_replays: AtomicU64,
    /// Why requests were retried: "connection", "502", ...
    transient: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn transient(&self, why: String) {
        *self.transient.lock().unwrap().entry(why).or_default() += 1;
    }
}

/// An answer that is not a transient failure.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    retries: u64,
}

/// Sends the request `build` makes until an answer other than a connection error, a timeout,
/// 502, 503 or 504 arrives; the same request each time, so the same `Idempotency-Key`.
async fn send_until_answered(
    build: impl Fn() -> reqwest::RequestBuilder,
    tally: &Tally,
    what: &str,
) -> Answer {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut retries = 0;
    loop {
        let why = match build().send().await {
            Ok(response) if ![502, 503, 504].contains(&response.status().as_u16()) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                match response.text().await {
                    Ok(text) => {
                        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                        return Answer {
                            status,
                            headers,
                            body,
                            retries,
                        };
                    }
                    // The host died while sending the body: as good as no answer.
                    Err(_) => "connection".to_owned(),
                }
            }
            Ok(response) => response.status().as_u16().to_string(),
            Err(error) if error.is_timeout() => "timeout".to_owned(),
            Err(_) => "connection".to_owned(),
        };
        tally.transient(why.clone());
        assert!(
            Instant::now() < deadline,
            "{what}: still {why} after {retries} retries"
        );
        retries += 1;
        // Backs off a little so a retry does not hit the balancer before it noticed the host is
        // gone; this paces a retry, it does not wait for anything to happen.
        tokio::time::sleep(Duration::from_millis(20 * retries.min(10))).await;
    }
}

/// One acknowledged add, as its client knows it.
#[derive(Debug, Clone)]
struct AckedAdd {
    line_id: u64,
    item: &'static str,
    qty: u64,
}

/// One acknowledged checkout: its key, its order id, and the adds it should hold.
#[derive(Debug, Clone)]
struct AckedCheckout {
    key: String,
    order_id: String,
    lines: Vec<AckedAdd>,
}

/// Everything one shopper was told.
#[derive(Debug)]
struct Receipts {
    cookie: String,
    session: String,
    checkouts: Vec<AckedCheckout>,
    /// The adds after the last checkout, which should still be in the cart.
    in_cart: Vec<AckedAdd>,
}

/// Opens a session through the balancer: the `name=value` of the cookie the cart hands out.
async fn open_session(
    http: &reqwest::Client,
    base: &str,
    tally: &Tally,
    shopper: usize,
) -> (String, String) {
    let answer = send_until_answered(
        || http.get(format!("{base}/fn/cart")),
        tally,
        &format!("shopper {shopper} opening a session"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let set_cookie = answer
        .headers
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .expect("a new shopper gets a session cookie");
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
    let session = cookie
        .split_once('=')
        .map(|(_, value)| value.to_owned())
        .expect("name=value");
    (cookie, session)
}

/// One shopper's whole visit: adds with keys, checkouts with keys, retrying through the balancer.
async fn shop(http: reqwest::Client, base: String, tally: Arc<Tally>, shopper: usize) -> Receipts {
    let (cookie, session) = open_session(&http, &base, &tally, shopper).await;
    let mut since_checkout = Vec::new();
    let mut checkouts = Vec::new();
    for add in 0..ADDS_PER_SHOPPER {
        let (item, size) = ITEMS[(shopper + add) % ITEMS.len()];
        let qty = 1 + (add % 5) as u64;
        let key = format!("shopper{shopper}-add{add}");
        let body = match size {
            Some(size) => json!({"item": item, "size": size, "qty": qty}),
            None => json!({"item": item, "qty": qty}),
        };
        let answer = send_until_answered(
            || {
                http.post(format!("{base}/fn/cart/items"))
                    .header("cookie", &cookie)
                    .header("idempotency-key", &key)
                    .json(&body)
            },
            &tally,
            &key,
        )
        .await;
        let replayed = answer.headers.contains_key("idempotent-replayed");
        match (answer.status, replayed) {
            (201, false) => {}
            (200, true) => {
                tally.add_replays.fetch_add(1, Ordering::Relaxed);
            }
            (status, _) => panic!("{key}: {status} {}", answer.body),
        }
        let line_id = answer
            .headers
            .get("line-id")
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .unwrap_or_else(|| panic!("{key}: no line-id header"));
        tally
            .add_retries
            .fetch_add(answer.retries, Ordering::Relaxed);
        tally.adds_acked.fetch_add(1, Ordering::Relaxed);
        since_checkout.push(AckedAdd { line_id, item, qty });

        if checks_out_after(add) {
            let key = format!("shopper{shopper}-checkout{}", checkouts.len());
            let answer = send_until_answered(
                || {
                    http.post(format!("{base}/fn/checkout"))
                        .header("cookie", &cookie)
                        .header("idempotency-key", &key)
                },
                &tally,
                &key,
            )
            .await;
            match answer.status {
                201 => {}
                200 => {
                    tally.checkout_replays.fetch_add(1, Ordering::Relaxed);
                }
                status => panic!("{key}: {status} {}", answer.body),
            }
            tally
                .checkout_retries
                .fetch_add(answer.retries, Ordering::Relaxed);
            tally.checkouts_acked.fetch_add(1, Ordering::Relaxed);
            let order_id = answer.body["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: no order id in {}", answer.body))
                .to_owned();
            checkouts.push(AckedCheckout {
                key,
                order_id,
                lines: std::mem::take(&mut since_checkout),
            });
        }
    }
    Receipts {
        cookie,
        session,
        checkouts,
        in_cart: since_checkout,
    }
}

/// Kills, restarts and revives hosts as the adds progress; returns the hosts and what it did.
fn chaos(
    mut hosts: Vec<FixedHost>,
    tally: Arc<Tally>,
    load_done: Arc<AtomicBool>,
) -> (Vec<FixedHost>, Vec<String>) {
    let total = (SHOPPERS * ADDS_PER_SHOPPER) as u64;
    let started = Instant::now();
    let mut events = Vec::new();
    // Waits for `share` of the adds to be acknowledged; false if the load ended first.
    let reached = |share: u64| {
        wait_until(LOAD_DEADLINE, || {
            load_done.load(Ordering::Relaxed)
                || tally.adds_acked.load(Ordering::Relaxed) >= total * share / 4
        }) && !load_done.load(Ordering::Relaxed)
    };
    let mut note = |what: &str| {
        events.push(format!(
            "{:>6.1}s at {} adds acknowledged: {what}",
            started.elapsed().as_secs_f64(),
            tally.adds_acked.load(Ordering::Relaxed)
        ))
    };
    if reached(1) {
        hosts[0].kill();
        note("host 0 SIGKILLed");
    }
    if reached(2) {
        hosts[1].terminate();
        note("host 1 stopped with SIGTERM (drained)");
        hosts[1].restart();
        note("host 1 started again on its port");
    }
    if reached(3) {
        hosts[0].restart();
        note("host 0 started again on its port");
    }
    (hosts, events)
}

/// Tells the chaos thread the load is over when dropped, so a failing load (a panic, the
/// deadline) does not leave it polling and holding up the runtime's shutdown.
struct LoadOver(Arc<AtomicBool>);

impl Drop for LoadOver {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A stored value of app `pizza`, decoded.
fn stored_json(redis: &mut redis::Connection, key: &str) -> Value {
    let bytes: Vec<u8> = redis::cmd("GET").arg(key).query(redis).expect("GET");
    serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("{key}: {error}"))
}

fn keys(redis: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{PIZZA_KEYS}{pattern}"))
        .query(redis)
        .expect("KEYS")
}

/// `(line id, item, qty)` of every line of a cart or order.
fn lines_of(record: &Value) -> Vec<(u64, String, u64)> {
    record["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| {
            (
                line["id"].as_u64().expect("id"),
                line["item"].as_str().expect("item").to_owned(),
                line["qty"].as_u64().expect("qty"),
            )
        })
        .collect()
}

fn expected(adds: &[AckedAdd]) -> Vec<(u64, String, u64)> {
    adds.iter()
        .map(|add| (add.line_id, add.item.to_owned(), add.qty))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_hosts_lose_no_acknowledged_add_and_duplicate_no_order() {
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!(
        "goldfish-chaos-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hosts: Vec<FixedHost> = (0..3)
        .map(|n| FixedHost::start(&redis, &dir, &format!("host{n}")))
        .collect();
    for (name, guest) in [("cart", "cart"), ("checkout", "checkout")] {
        let response = reqwest::Client::new()
            .put(format!("{}/v1/functions/{name}?app=pizza", hosts[0].url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(support::guest(guest))
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("deploy");
        assert_eq!(response.status(), 201, "deploying {name}");
    }
    let upstreams: Vec<SocketAddr> = hosts.iter().map(FixedHost::addr).collect();
    let balancer = Balancer::start(&upstreams, &dir).await;
    let base = balancer.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("client");

    let tally = Arc::new(Tally::default());
    let load_done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let chaos = {
        let (tally, load_done) = (Arc::clone(&tally), Arc::clone(&load_done));
        tokio::task::spawn_blocking(move || chaos(hosts, tally, load_done))
    };
    let shoppers: Vec<_> = (0..SHOPPERS)
        .map(|shopper| {
            tokio::spawn(shop(
                http.clone(),
                base.clone(),
                Arc::clone(&tally),
                shopper,
            ))
        })
        .collect();
    let load_over = LoadOver(Arc::clone(&load_done));
    let receipts = tokio::time::timeout(LOAD_DEADLINE, futures::future::join_all(shoppers))
        .await
        .expect("the load finishes in time");
    let load_time = started.elapsed();
    drop(load_over);
    let receipts: Vec<Receipts> = receipts
        .into_iter()
        .map(|shopper| shopper.expect("a shopper failed"))
        .collect();
    let (hosts, events) = chaos.await.expect("chaos ran");

    let adds_acked = tally.adds_acked.load(Ordering::Relaxed);
    let checkouts_acked = tally.checkouts_acked.load(Ordering::Relaxed);
    println!("load balancer: {}", balancer.name());
    for event in &events {
        println!("{event}");
    }
    println!(
        "adds acknowledged {adds_acked} (retried {} times, {} answered as replays); \
         checkouts acknowledged {checkouts_acked} (retried {} times, {} answered as replays); \
         transient failures seen {:?}; load took {:.1}s",
        tally.add_retries.load(Ordering::Relaxed),
        tally.add_replays.load(Ordering::Relaxed),
        tally.checkout_retries.load(Ordering::Relaxed),
        tally.checkout_replays.load(Ordering::Relaxed),
        tally.transient.lock().unwrap(),
        load_time.as_secs_f64(),
    );
    assert_eq!(
        events.len(),
        4,
        "every chaos step ran during the load: {events:?}"
    );
    assert_eq!(adds_acked, (SHOPPERS * ADDS_PER_SHOPPER) as u64);
    assert_eq!(checkouts_acked, (SHOPPERS * 10) as u64);
    assert!(
        tally.add_retries.load(Ordering::Relaxed) + tally.checkout_retries.load(Ordering::Relaxed)
            > 0,
        "the kill and the restart should have cost some request its answer"
    );

    // Through the API: each cart holds exactly the adds since its last checkout, and each order
    // exactly the adds before it.
    for shopper in &receipts {
        let cart = send_until_answered(
            || {
                http.get(format!("{base}/fn/cart"))
                    .header("cookie", &shopper.cookie)
            },
            &tally,
            "reading a cart",
        )
        .await;
        assert_eq!(cart.status, 200);
        assert_eq!(
            lines_of(&cart.body),
            expected(&shopper.in_cart),
            "cart {}",
            shopper.session
        );
        for checkout in &shopper.checkouts {
            let order = send_until_answered(
                || http.get(format!("{base}/fn/checkout/orders/{}", checkout.order_id)),
                &tally,
                "reading an order",
            )
            .await;
            assert_eq!(order.status, 200, "{}: {}", checkout.key, order.body);
            assert_eq!(order.body["idempotency_key"], checkout.key.as_str());
            assert_eq!(
                lines_of(&order.body),
                expected(&checkout.lines),
                "{}",
                checkout.key
            );
        }
    }

    // From Redis: exactly the acknowledged orders exist, one per key, and every stored line
    // was acknowledged once.
    let mut conn = redis.client();
    let acked_orders: HashMap<&str, &AckedCheckout> = receipts
        .iter()
        .flat_map(|shopper| &shopper.checkouts)
        .map(|checkout| (checkout.order_id.as_str(), checkout))
        .collect();
    assert_eq!(
        acked_orders.len(),
        checkouts_acked as usize,
        "two keys got one order id"
    );
    let order_keys = keys(&mut conn, "order:*");
    let mut keys_seen = BTreeSet::new();
    let mut stored_lines = 0;
    let mut stored_qty = 0;
    for key in &order_keys {
        let order = stored_json(&mut conn, key);
        let id = key.trim_start_matches(&format!("{PIZZA_KEYS}order:")[..]);
        let acked = acked_orders
            .get(id)
            .unwrap_or_else(|| panic!("order {id} was never answered to a client: {order}"));
        assert!(
            keys_seen.insert(
                order["idempotency_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            ),
            "two orders for key {}",
            acked.key
        );
        stored_lines += lines_of(&order).len();
        stored_qty += lines_of(&order).iter().map(|line| line.2).sum::<u64>();
    }
    assert_eq!(
        order_keys.len(),
        acked_orders.len(),
        "an acknowledged order is missing"
    );
    let cart_keys = keys(&mut conn, "cart:*");
    assert_eq!(cart_keys.len(), SHOPPERS);
    for key in &cart_keys {
        let cart = stored_json(&mut conn, key);
        assert!(
            cart["pending"].is_null(),
            "{key} kept a pending order: {cart}"
        );
        stored_lines += lines_of(&cart).len();
        stored_qty += lines_of(&cart).iter().map(|line| line.2).sum::<u64>();
    }
    let acked_qty: u64 = receipts
        .iter()
        .flat_map(|shopper| {
            shopper
                .checkouts
                .iter()
                .flat_map(|c| &c.lines)
                .chain(&shopper.in_cart)
        })
        .map(|add| add.qty)
        .sum();
    println!(
        "Redis holds {} orders ({} checkout keys) and {stored_lines} lines \
         ({stored_qty} items; {acked_qty} acknowledged) in orders and {} carts",
        order_keys.len(),
        keys_seen.len(),
        cart_keys.len(),
    );
    assert_eq!(
        stored_lines as u64, adds_acked,
        "a line was lost or added twice"
    );
    assert_eq!(stored_qty, acked_qty);

    drop(balancer);
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}

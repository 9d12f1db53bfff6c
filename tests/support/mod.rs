//! Shared test harness: a private `redis-server` per test, real `goldfish` hosts on port 0, the
//! guest components (built once by cargo), and small HTTP helpers.
//!
//! Nothing here touches the Redis on 6379: every test starts its own server on a free port and
//! kills it when the test ends.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token";

/// The workspace root (the parent of `host/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Every guest the tests use, built once per test process with the same command the README and
/// the demo use. Cargo's own lock makes concurrent test processes wait for one build.
pub fn guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target_dir = workspace().join("target").join("wasm");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--target", "wasm32-wasip2", "--profile", "guest"])
            .args(["-p", "cart", "-p", "checkout", "-p", "recycle-probe"])
            .args(["-p", "misbehave", "-p", "wrong-world", "-p", "uses-fs"])
            .args([
                "-p",
                "imports-unknown",
                "-p",
                "http-probe",
                "-p",
                "keyvalue-ops",
            ])
            .args(["-p", "denied", "-p", "spin-kv", "-p", "http-body"])
            .arg("--target-dir")
            .arg(&target_dir)
            // The outer cargo's flags are for the host target, not wasm.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the guest components failed");
        target_dir.join("wasm32-wasip2").join("guest")
    });
    // Libraries (cdylib) get underscores in their file name, binaries keep the package name.
    let library = dir.join(format!("{}.wasm", name.replace('-', "_")));
    let file = if library.exists() {
        library
    } else {
        dir.join(format!("{name}.wasm"))
    };
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// A reference function from `scripts/build-functions` (any language), built once per test
/// process; the script takes a lock and skips what is up to date, so concurrent test processes
/// share one build.
pub fn function(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(workspace().join("scripts").join("build-functions"))
            .current_dir(workspace())
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("scripts/build-functions runs");
        assert!(status.success(), "scripts/build-functions failed");
    });
    let file = workspace()
        .join("target")
        .join("functions")
        .join(format!("{name}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// The compile cache the tests' hosts share (unless a test passes its own): each component is
/// compiled once per test run, not once per host, which matters for 15 MB language runtimes.
pub fn shared_compile_cache() -> PathBuf {
    workspace().join("target").join("test-compile-cache")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A `redis-server` of our own, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_persisting(None)
    }

    /// With `dir`, every write is fsynced to an append-only file there, so a server restarted
    /// on the same port and dir comes back with every acknowledged write.
    pub fn start_persisting(dir: Option<&Path>) -> Redis {
        for _ in 0..20 {
            let port = free_port();
            if let Some(redis) = Redis::start_on(port, dir) {
                return redis;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts on a given port (also used to bring Redis back after `stop`).
    pub fn start_on(port: u16, dir: Option<&Path>) -> Option<Redis> {
        Redis::launch(port, |command| match dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(dir),
            None => command.args(["--appendonly", "no"]),
        })
    }

    /// Spawns `redis-server` on `port` with the arguments `configure` adds, and waits until it
    /// answers PING. `None` if it exits first (port taken) or stays silent for 5 s.
    fn launch(port: u16, configure: impl FnOnce(&mut Command) -> &mut Command) -> Option<Redis> {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        configure(&mut command);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let mut redis = Redis { port, child };
        let exited = |redis: &mut Redis| matches!(redis.child.try_wait(), Ok(Some(_)));
        let up = wait_until(Duration::from_secs(5), || {
            exited(&mut redis) || redis.ping()
        });
        // On a reused port another test's server may be the one answering: only ours will do.
        (up && !exited(&mut redis) && redis.server_pid() == Some(redis.child.id())).then_some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id of the server answering on our port (`INFO server`'s `process_id`).
    fn server_pid(&self) -> Option<u32> {
        let mut client = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut client).ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// A synchronous client for assertions on what Redis holds.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection()
            .expect("connect to test redis")
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers, like a hung Redis.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server (simulating Redis going away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A frozen server would ignore nothing, but let it run so it dies promptly either way.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.stop();
    }
}

/// A three-primary Redis Cluster of our own (no replicas), killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "goldfish-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut nodes = Vec::new();
        let mut attempts = 0;
        while nodes.len() < 3 {
            attempts += 1;
            assert!(attempts < 100, "could not find free ports for the cluster");
            // The cluster bus listens on port + 10000, so stay below 55536 and check both.
            let port = 20_000 + (rand_u16() % 30_000);
            let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
            if !free(port) || !free(port + 10_000) {
                continue;
            }
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let launched = Redis::launch(port, |command| {
                command
                    .args(["--appendonly", "no", "--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .arg("--dir")
                    .arg(&node_dir)
            });
            nodes.extend(launched);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let ready = wait_until(Duration::from_secs(10), || {
            nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.client())
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            })
        });
        assert!(ready, "the cluster did not reach cluster_state:ok");
        RedisCluster { nodes, dir }
    }

    /// The `--redis` value for `--store redis-cluster`: every node, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish() as u16
}

fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A `goldfish serve` process, killed on drop.
pub struct Host {
    pub url: String,
    /// The admin API's own address, when started with `--admin-listen`.
    pub admin_url: Option<String>,
    child: Child,
    pub log: PathBuf,
}

impl Host {
    /// Starts a host on port 0 against `redis` with the test admin token.
    pub fn start(redis: &Redis) -> Host {
        Host::start_with(&["--redis", &redis.url(), "--admin-token", TOKEN])
    }

    /// Starts a host on port 0 against `redis` with the test admin token and `extra` flags.
    pub fn start_tuned(redis: &Redis, extra: &[&str]) -> Host {
        let url = redis.url();
        let mut args = vec!["--redis", url.as_str(), "--admin-token", TOKEN];
        args.extend_from_slice(extra);
        Host::start_with(&args)
    }

    pub fn start_with(args: &[&str]) -> Host {
        let log = std::env::temp_dir().join(format!(
            "goldfish-test-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        let cache = shared_compile_cache();
        let mut command = Command::new(env!("CARGO_BIN_EXE_goldfish"));
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        if !args.contains(&"--compile-cache") {
            command.arg("--compile-cache").arg(&cache);
        }
        // A loaded two-core CI machine running many hosts at once can stall one Redis answer
        // past the production default of 500 ms; tests of anything but Redis faults should not
        // fail on that. tests/faults.rs passes its own.
        if !args.contains(&"--redis-timeout-ms") {
            command.args(["--redis-timeout-ms", "3000"]);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn goldfish");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read goldfish stdout");
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            panic!(
                "goldfish did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let admin_url = args.contains(&"--admin-listen").then(|| {
            let mut admin = String::new();
            stdout.read_line(&mut admin).expect("read goldfish stdout");
            admin
                .trim()
                .strip_prefix("admin listening on ")
                .unwrap_or_else(|| panic!("no admin address: {admin:?}"))
                .to_owned()
        });
        Host {
            url: url.to_owned(),
            admin_url,
            child,
            log,
        }
    }

    /// Kills the process at once (SIGKILL), like a crashed machine.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a polite stop, as an orchestrator would) and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("goldfish exits")
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn fn_url(&self, path: &str) -> String {
        format!("{}/fn/{}", self.url, path.trim_start_matches('/'))
    }

    pub async fn deploy(&self, name: &str, app: Option<&str>, bytes: Vec<u8>) -> reqwest::Response {
        let mut url = format!("{}/v1/functions/{name}", self.url);
        if let Some(app) = app {
            url.push_str(&format!("?app={app}"));
        }
        self.deploy_to(&url, bytes).await
    }

    /// PUTs `bytes` to a deploy `url` (with whatever query the test wants). Compiling a 15 MB
    /// language runtime takes tens of seconds on a busy two-core machine: no short timeout.
    pub async fn deploy_to(&self, url: &str, bytes: Vec<u8>) -> reqwest::Response {
        compile_wait_client()
            .put(url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("deploy request")
    }

    /// Deploys and asserts 201.
    pub async fn deploy_ok(&self, name: &str, app: Option<&str>, guest_name: &str) {
        self.deploy_bytes_ok(name, app, guest(guest_name)).await;
    }

    /// Waits until this host's log says it has `digest` compiled (or loaded from its disk
    /// cache), which a host does by itself in the background once it sees a deploy made
    /// elsewhere. False if that takes more than three minutes.
    pub async fn wait_until_ready(&self, digest: &str) -> bool {
        eventually(Duration::from_secs(180), || async {
            self.log_contents().lines().any(|line| {
                line.contains(digest)
                    && (line.contains("compile finished")
                        || line.contains("machine code loaded from the disk cache"))
            })
        })
        .await
    }

    /// Deploys `bytes`, asserts 201 and returns the registry entry.
    pub async fn deploy_bytes_ok(
        &self,
        name: &str,
        app: Option<&str>,
        bytes: Vec<u8>,
    ) -> serde_json::Value {
        let (status, body) = json(self.deploy(name, app, bytes).await).await;
        assert_eq!(status, 201, "deploying {name}: {body}");
        body
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Drives `requests` calls of `path` on `function` at `hosts` (round robin, `concurrency` at
/// once) with `goldfish stress`, and asserts its probe check: every answer 200 from a fresh
/// instance, and the function's kv counter advanced by exactly the number of calls.
pub async fn assert_fresh_under_load(
    hosts: &[&Host],
    function: &str,
    path: &str,
    requests: u64,
    concurrency: usize,
) -> goldfish::stress::StressReport {
    let report = goldfish::stress::run(&goldfish::stress::StressConfig {
        targets: hosts.iter().map(|host| host.url.clone()).collect(),
        function: function.into(),
        path: path.into(),
        method: "POST".into(),
        requests: Some(requests),
        duration: None,
        concurrency,
        generator_check: None,
        progress: false,
    })
    .await
    .expect("the run is measurable");
    let text = report.render();
    assert_eq!(report.requests.ok, requests, "{function}: {text}");
    assert_eq!(report.freshness.checked, requests, "{function}: {text}");
    assert_eq!(report.freshness.reused_instances, 0, "{function}: {text}");
    assert_eq!(
        report.freshness.kv_advanced(),
        Some(i128::from(requests)),
        "{function}: {text}"
    );
    assert!(report.passed(), "{function}: {text}");
    report
}

/// One shared HTTP client per test; no cookie store (tests pass the session cookie by hand so
/// the same session can hop between hosts).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Polls `check` every 20 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of a plain GET.
pub async fn get_status(url: &str) -> u16 {
    client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .status()
        .as_u16()
}

/// The status of a bodiless POST.
pub async fn post_status(url: &str) -> u16 {
    client()
        .post(url)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

/// Status and JSON body of a plain GET.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    json(client().get(url).send().await.expect("GET")).await
}

/// Status and JSON body of a bodiless POST.
pub async fn post_json(url: &str) -> (u16, serde_json::Value) {
    json(client().post(url).send().await.expect("POST")).await
}

/// Like [`post_json`] for a request whose answer waits for a compile (a host that has not
/// compiled the function yet, or whose cache was corrupt): a 15 MB language runtime takes tens
/// of seconds to compile on a busy two-core machine, so the deploy's timeout, not 30 s.
pub async fn post_json_compiling(url: &str) -> (u16, serde_json::Value) {
    json(compile_wait_client().post(url).send().await.expect("POST")).await
}

/// A client for requests that may wait for a compile (deploys, a first call that compiles):
/// 300 s, where [`client`] gives up after 30.
pub fn compile_wait_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client")
}

/// JSON body of a response, with the status.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// The `x-request-id` of an answer.
pub fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every invocation answer has an x-request-id")
        .to_owned()
}

/// The record of request `request_id` in `GET /v1/functions/{function}/errors` on `host`,
/// waiting up to 5 s for it (records are written in the background, after the answer).
pub async fn recorded_failure(host: &Host, function: &str, request_id: &str) -> serde_json::Value {
    let url = format!("{}/v1/functions/{function}/errors", host.url);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = client()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET errors");
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "{body}");
        let record = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|record| record["request_id"] == request_id)
            .cloned();
        if let Some(record) = record {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no failure recorded for request {request_id} of {function}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

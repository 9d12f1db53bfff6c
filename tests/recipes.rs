//! The README's recipes, run for real: `scripts/cluster 3` (three hosts, a private Redis and nginx)
//! driven with the `goldfish` CLI through its balancer, and the production files in `deploy/`
//! checked by the programs that will read them (nginx, redis-server, the host itself, a YAML
//! parser).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{TOKEN, client, guest, shared_compile_cache, workspace};

const GOLDFISH: &str = env!("CARGO_BIN_EXE_goldfish");

/// nginx as `scripts/cluster` finds it, or `None` (the script would install it as root; a test
/// does not).
fn nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.is_file().then_some(sbin)
    })
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("goldfish-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether process `pid` still exists. A zombie waiting to be reaped counts as gone once all its
/// threads have exited: its main thread turns zombie first, while the others may still hold its
/// sockets open.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name in parentheses: "123 (nginx) S ...".
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |dir| dir.count());
    !zombie || threads > 1
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}

fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// `scripts/cluster N` running as a child, with what its `cluster ready:` line said. Dropping it
/// stops the script with SIGINT, as Ctrl-C would, and as a last resort kills what it started.
struct Cluster {
    script: Child,
    ready: HashMap<String, String>,
    /// Everything the script printed on stdout so far (read by a thread so it never blocks).
    output: mpsc::Receiver<String>,
    logs: TempDir,
}

impl Cluster {
    fn start(hosts: usize) -> Cluster {
        let logs = TempDir::new("cluster-logs");
        let mut command = Command::new(workspace().join("scripts").join("cluster"));
        // Settings the hosts would otherwise take from this environment.
        for (name, _) in std::env::vars() {
            if name.starts_with("GOLDFISH_") {
                command.env_remove(name);
            }
        }
        let mut script = command
            .arg(hosts.to_string())
            .current_dir(workspace())
            // This test's own build: the same dev-profile binary the script would build.
            .env("GOLDFISH_BIN", GOLDFISH)
            .env("GOLDFISH_ADMIN_TOKEN", TOKEN)
            .env("GOLDFISH_CLUSTER_LOGS", &logs.0)
            // Passed through to the hosts, as support::Host does for every test host.
            .env("GOLDFISH_COMPILE_CACHE", shared_compile_cache())
            .env("GOLDFISH_REDIS_TIMEOUT_MS", "3000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(logs.0.join("script.err")).expect("log file"))
            .spawn()
            .expect("scripts/cluster runs");
        let stdout = script.stdout.take().expect("piped stdout");
        let (lines, output) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cluster = Cluster {
            script,
            ready: HashMap::new(),
            output,
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut printed = String::new();
        while cluster.ready.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match cluster.output.recv_timeout(left) {
                Ok(line) => {
                    if let Some(fields) = line.strip_prefix("cluster ready: ") {
                        cluster.ready = fields
                            .split(' ')
                            .filter_map(|field| field.split_once('='))
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect();
                    }
                    printed.push_str(&line);
                    printed.push('\n');
                }
                Err(_) => panic!(
                    "scripts/cluster did not print its `cluster ready:` line within 180 s:\n\
                     {printed}\n{}",
                    cluster.stderr()
                ),
            }
        }
        cluster
    }

    fn field(&self, name: &str) -> &str {
        self.ready
            .get(name)
            .unwrap_or_else(|| panic!("no {name}= in the ready line: {:?}", self.ready))
    }

    /// The process ids in field `name` of the ready line (none if it has no such field).
    fn pids(&self, name: &str) -> Vec<u32> {
        self.ready
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// Every process the script said it started.
    fn started(&self) -> Vec<u32> {
        let mut pids = self.pids("host_pids");
        pids.extend(self.pids("nginx_pid"));
        pids.extend(self.pids("redis_pid"));
        pids
    }

    fn lb(&self) -> &str {
        self.field("lb")
    }

    fn stderr(&self) -> String {
        self.log("script.err")
    }

    /// One of the logs the script writes (`nginx-error.log`, `host1.log`, ...).
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.0.join(name)).unwrap_or_default()
    }

    /// Ctrl-C: SIGINT to the script, then its exit status (`None` if it is still running after
    /// 60 s: it waits for the hosts, which drain for at most 10 s).
    fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        signal(self.script.id(), "-INT");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.script.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if matches!(self.script.try_wait(), Ok(None)) {
            let _ = self.interrupt();
            let _ = self.script.kill();
            let _ = self.script.wait();
        }
        for pid in self.started() {
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Runs the CLI against the cluster's balancer; stdout on success, panics with stderr otherwise.
fn cli(cluster: &Cluster, args: &[&str]) -> String {
    let out = Command::new(GOLDFISH)
        .args(args)
        .env("GOLDFISH_URL", cluster.lb())
        .env("GOLDFISH_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("goldfish runs");
    assert!(
        out.status.success(),
        "goldfish {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many calls of `function` a host's `/metrics` counts.
async fn calls_counted(host: &str, function: &str) -> u64 {
    let text = client()
        .get(format!("{host}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let series = format!("goldfish_requests_total{{function=\"{function}\"");
    text.lines()
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One probe call through the balancer: its status and the kv counter it answered.
async fn probe(lb: &str) -> (u16, Option<u64>) {
    let response = client()
        .post(format!("{lb}/fn/probe"))
        .body("go")
        .send()
        .await
        .expect("POST through the balancer");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["kv"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_script_balances_survives_a_killed_host_and_stops_everything_it_started() {
    if nginx().is_none() {
        eprintln!(
            "SKIPPED: nginx is not installed (apt-get install -y nginx; .ci/run installs it), so \
             scripts/cluster cannot put a balancer in front of its hosts"
        );
        return;
    }
    let mut cluster = Cluster::start(3);
    let hosts: Vec<String> = cluster
        .field("hosts")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(hosts.len(), 3, "{:?}", cluster.ready);
    assert_eq!(cluster.pids("host_pids").len(), 3);
    let lb = cluster.lb().to_owned();

    // Deploy through the balancer with the CLI, as the README shows.
    let wasm = cluster.logs.0.join("recycle-probe.wasm");
    std::fs::write(&wasm, guest("recycle-probe")).expect("write the component");
    let wasm = wasm.to_str().expect("a UTF-8 path");
    let deployed = cli(&cluster, &["deploy", wasm, "--name", "probe"]);
    assert!(deployed.contains("deployed probe"), "{deployed}");
    let answer = cli(&cluster, &["invoke", "probe", "-d", "go"]);
    assert!(answer.contains(r#""global":1"#), "{answer}");

    // One shared counter whichever host answers, and more than one host answers.
    let mut expected = 1;
    for _ in 0..9 {
        expected += 1;
        assert_eq!(probe(&lb).await, (200, Some(expected)));
    }
    let mut serving = 0;
    for host in &hosts {
        if calls_counted(host, "probe").await > 0 {
            serving += 1;
        }
    }
    assert!(
        serving >= 2,
        "10 calls through nginx all reached one host of 3"
    );

    // A host dies (SIGKILL): the balancer serves on with the other two.
    let victim = cluster.pids("host_pids")[0];
    signal(victim, "-KILL");
    let victim_address = hosts[0].trim_start_matches("http://").to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || {
            !alive(victim) && std::net::TcpStream::connect(&victim_address).is_err()
        }),
        "host {victim} survived SIGKILL"
    );
    for _ in 0..9 {
        expected += 1;
        let answer = probe(&lb).await;
        assert_eq!(
            answer,
            (200, Some(expected)),
            "a call through nginx after host {victim} was killed; nginx said:\n{}\n{}",
            cluster.log("nginx-error.log"),
            cluster.log("nginx-access.log")
        );
    }

    // Ctrl-C stops everything the script started, and frees the balancer's and Redis' ports.
    let started = cluster.started();
    assert_eq!(
        started.len(),
        5,
        "3 hosts, nginx, redis: {:?}",
        cluster.ready
    );
    let exit = cluster.interrupt();
    assert!(
        exit.is_some(),
        "scripts/cluster did not exit within 60 s of SIGINT"
    );
    let leaked: Vec<u32> = started.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(
        leaked.is_empty(),
        "processes left running after scripts/cluster stopped: {leaked:?}\n{}",
        cluster.stderr()
    );
    let port = |url: &str| url.rsplit(':').next().unwrap_or_default().to_owned();
    for (what, url) in [("nginx", lb.as_str()), ("redis", cluster.field("redis"))] {
        let address = format!("127.0.0.1:{}", port(url));
        assert!(
            std::net::TcpStream::connect(&address).is_err(),
            "{what} still accepts connections on {address}"
        );
    }
}

#[test]
fn deploy_nginx_conf_passes_nginx_t() {
    let Some(nginx) = nginx() else {
        eprintln!("SKIPPED: nginx is not installed (apt-get install -y nginx)");
        return;
    };
    // deploy/nginx.conf is included from an `http` block; everything nginx writes goes here.
    let prefix = TempDir::new("nginx-t");
    let p = prefix.0.display();
    let config = prefix.0.join("nginx.conf");
    std::fs::create_dir_all(prefix.0.join("logs")).expect("logs dir");
    std::fs::write(
        &config,
        format!(
            "pid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{}}\nhttp {{\n\
             access_log {p}/access.log;\nclient_body_temp_path {p}/body;\n\
             proxy_temp_path {p}/proxy;\nfastcgi_temp_path {p}/fastcgi;\n\
             uwsgi_temp_path {p}/uwsgi;\nscgi_temp_path {p}/scgi;\ninclude {};\n}}\n",
            workspace().join("deploy").join("nginx.conf").display()
        ),
    )
    .expect("write the wrapper config");
    let out = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(&prefix.0)
        .arg("-c")
        .arg(&config)
        .arg("-e")
        .arg(prefix.0.join("error.log"))
        .output()
        .expect("nginx runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {said}");
    assert!(said.contains("test is successful"), "{said}");
}

/// deploy/docker-compose.yml, parsed by a real YAML parser (PyYAML), as JSON.
fn compose() -> serde_json::Value {
    let file = workspace().join("deploy").join("docker-compose.yml");
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import yaml"])
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .expect("python3 with PyYAML (Debian: apt-get install -y python3-yaml)");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML printed JSON")
}

/// A redis-server started for one test, killed on drop.
struct RedisProcess(Child);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deploy_redis_conf_started_as_compose_starts_it_fsyncs_every_write() {
    let compose = compose();
    let redis = &compose["services"]["redis"];
    let command: Vec<&str> = redis["command"]
        .as_array()
        .expect("services.redis.command is a list")
        .iter()
        .map(|arg| arg.as_str().expect("a string argument"))
        .collect();
    assert_eq!(command.first(), Some(&"redis-server"), "{command:?}");
    // The config the command names is deploy/redis.conf, mounted read-only.
    let config_path = command.get(1).copied().expect("a config file argument");
    let volumes: Vec<&str> = redis["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.contains(&format!("./redis.conf:{config_path}:ro").as_str()),
        "{config_path} is not deploy/redis.conf: {volumes:?}"
    );
    let data_volume = volumes
        .iter()
        .find_map(|v| v.strip_prefix("redis-data:"))
        .expect("a named volume for the data");

    // Start it as compose would, with the data directory and the address made local.
    let dir = TempDir::new("redis-conf");
    let conf = workspace().join("deploy").join("redis.conf");
    let password = std::fs::read_to_string(&conf)
        .expect("deploy/redis.conf")
        .lines()
        .find_map(|line| line.strip_prefix("requirepass ").map(str::to_owned))
        .expect("deploy/redis.conf sets requirepass");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let rest: Vec<String> = command[2..]
        .iter()
        .map(|arg| {
            if *arg == data_volume {
                dir.0.display().to_string()
            } else {
                (*arg).to_owned()
            }
        })
        .collect();
    let log = dir.0.join("redis.log");
    let server = Command::new("redis-server")
        .arg(&conf)
        .args(&rest)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let mut server = RedisProcess(server);
    let url = format!("redis://:{password}@127.0.0.1:{port}");
    let mut connection = None;
    let up = wait_until(Duration::from_secs(10), || {
        if matches!(server.0.try_wait(), Ok(Some(_))) {
            return true;
        }
        connection = redis::Client::open(url.as_str())
            .ok()
            .and_then(|c| c.get_connection().ok());
        connection.is_some()
    });
    let Some(mut connection) = connection.filter(|_| up) else {
        panic!(
            "redis-server did not start with deploy/redis.conf: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let config = |name: &str, connection: &mut redis::Connection| -> String {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(connection)
            .expect("CONFIG GET");
        pair.get(1).cloned().unwrap_or_default()
    };
    assert_eq!(config("appendonly", &mut connection), "yes");
    assert_eq!(config("appendfsync", &mut connection), "always");
    assert_eq!(config("maxmemory-policy", &mut connection), "noeviction");
    assert_eq!(
        Path::new(&config("dir", &mut connection)),
        dir.0.as_path(),
        "the data goes where compose's volume is"
    );
    drop(server);
}

#[test]
fn deploy_systemd_unit_configures_a_host_that_starts() {
    let deploy = workspace().join("deploy");
    let unit = std::fs::read_to_string(deploy.join("goldfish.service")).expect("the unit");
    let help = Command::new(GOLDFISH)
        .args(["serve", "--help"])
        .output()
        .expect("goldfish serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();

    // Flags on the ExecStart line are flags `serve` takes.
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec.split_whitespace().skip(1);
    assert_eq!(words.next(), Some("serve"), "{exec}");
    for flag in words.filter(|w| w.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            help.contains(flag),
            "ExecStart passes {flag}, which `serve` does not take"
        );
    }

    // Every GOLDFISH_ variable, in the unit and its EnvironmentFile, is one `serve` reads.
    let example =
        std::fs::read_to_string(deploy.join("goldfish.env.example")).expect("the env file");
    let settings: Vec<(String, String)> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .chain(example.lines().filter(|line| !line.starts_with('#')))
        .filter_map(|assignment| assignment.split_once('='))
        .filter(|(name, _)| name.starts_with("GOLDFISH_"))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert!(settings.len() >= 5, "{settings:?}");
    for (name, _) in &settings {
        assert!(
            help.contains(&format!("env: {name}")),
            "the unit sets {name}, which `goldfish serve` does not read"
        );
    }

    // And a host started with exactly those settings (addresses made local) starts, serving
    // the admin API on its own address and logging JSON.
    let redis = support::Redis::start();
    let cache = TempDir::new("unit-cache");
    let local: HashMap<&str, String> = HashMap::from([
        ("GOLDFISH_LISTEN", "127.0.0.1:0".to_owned()),
        ("GOLDFISH_ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("GOLDFISH_REDIS_URL", redis.url()),
        ("GOLDFISH_COMPILE_CACHE", cache.0.display().to_string()),
    ]);
    let mut command = Command::new(GOLDFISH);
    command.arg("serve");
    for (name, _) in std::env::vars() {
        if name.starts_with("GOLDFISH_") {
            command.env_remove(name);
        }
    }
    for (name, value) in &settings {
        let value = local.get(name.as_str()).cloned().unwrap_or_else(|| {
            // Only settings without an address come through unchanged.
            assert!(
                !value.contains(':'),
                "{name}={value} needs a local stand-in"
            );
            value.clone()
        });
        command.env(name, value);
    }
    let log = cache.0.join("host.log");
    let mut host = command
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("goldfish serve");
    let mut stdout = BufReader::new(host.stdout.take().expect("piped stdout"));
    let mut printed = String::new();
    for _ in 0..2 {
        let _ = stdout.read_line(&mut printed);
    }
    let _ = host.kill();
    let _ = host.wait();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        printed.contains("listening on http://127.0.0.1:")
            && printed.contains("admin listening on http://127.0.0.1:"),
        "a host with the unit's settings did not start: {printed}\n{logged}"
    );
    let first = logged.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "GOLDFISH_LOG_FORMAT=json, yet the log is not JSON: {first}"
    );
}

//! The client commands of the real `goldfish` binary against a real host and Redis: what a
//! person sees, what a script gets with `--json`, and how failures read and exit.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use support::{Host, Redis, TOKEN, guest};

/// Runs `goldfish ARGS` against `host`, with the token in the environment as an operator would
/// set it.
fn goldfish(host: &Host, args: &[&str]) -> Output {
    goldfish_with(host, Some(TOKEN), args)
}

fn goldfish_with(host: &Host, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_goldfish"));
    command.args(args).env("GOLDFISH_URL", &host.url);
    match token {
        Some(token) => command.env("GOLDFISH_ADMIN_TOKEN", token),
        None => command.env_remove("GOLDFISH_ADMIN_TOKEN"),
    };
    command.output().expect("goldfish runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts failure and returns stderr.
fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure\nstdout: {}",
        stdout(&output)
    );
    stderr(&output)
}

/// A file of the test's own in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A guest written to a file of its own, as an operator's build would leave it.
fn wasm_file(bytes: &[u8]) -> TempFile {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "goldfish-cli-{}-{}.wasm",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).expect("write the component");
    TempFile(path)
}

fn deploy(host: &Host, guest_name: &str, name: &str) -> String {
    let file = wasm_file(&guest(guest_name));
    ok(goldfish(host, &["deploy", file.path(), "--name", name]))
}

#[test]
fn deploy_prints_the_new_version_and_ls_lists_functions_in_an_aligned_table() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let out = deploy(&host, "recycle-probe", "probe");
    assert!(
        out.starts_with("deployed probe version 1 (app probe"),
        "{out}"
    );
    let file = wasm_file(&guest("cart"));
    let path = file.path();
    let out = ok(goldfish(
        &host,
        &[
            "deploy",
            path,
            "--name",
            "cart",
            "--app",
            "pizza",
            "--memory-mib",
            "32",
        ],
    ));
    assert!(out.contains("deployed cart version 1 (app pizza"), "{out}");

    let table = ok(goldfish(&host, &["ls"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("cart ") && lines[1].contains("pizza"));
    assert!(lines[2].starts_with("probe "));
    // Aligned: every column starts at the same offset on every line.
    let column = |line: &str, header: &str| {
        let at = lines[0].find(header).expect("header");
        line.get(at..).map(|rest| !rest.starts_with(' '))
    };
    for header in ["APP", "VERSION", "DIGEST"] {
        assert!(
            lines.iter().all(|l| column(l, header) == Some(true)),
            "{header} is not aligned:\n{table}"
        );
    }

    let listed: Value =
        serde_json::from_str(&ok(goldfish(&host, &["ls", "--json"]))).expect("ls --json is JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
}

#[test]
fn show_prints_the_entry_for_people_and_the_api_json_for_scripts() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy(&host, "recycle-probe", "probe");
    let out = ok(goldfish(&host, &["show", "probe"]));
    for expected in [
        "name:", "probe", "version:", "world:", "goldfish", "digest:", "sha256:", "by admin",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    let entry: Value =
        serde_json::from_str(&ok(goldfish(&host, &["show", "probe", "--json"]))).expect("JSON");
    assert_eq!(entry["name"], "probe");
    assert_eq!(entry["version"], 1);
    assert_eq!(entry["size"], guest("recycle-probe").len() as u64);
}

#[test]
fn versions_mark_the_current_one_and_rollback_moves_it() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy(&host, "recycle-probe", "thing");
    deploy(&host, "misbehave", "thing");
    let out = deploy(&host, "cart", "thing");
    assert!(out.contains("version 3"), "{out}");

    let table = ok(goldfish(&host, &["versions", "thing"]));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with('*') && rows[0].contains(" 3 "),
        "{table}"
    );
    assert!(
        rows[1].starts_with(' ') && rows[1].contains(" 2 "),
        "{table}"
    );

    let out = ok(goldfish(&host, &["rollback", "thing"]));
    assert!(out.contains("thing is now at version 2"), "{out}");
    let out = ok(goldfish(&host, &["rollback", "thing", "--to", "1"]));
    assert!(out.contains("version 1"), "{out}");
    let list: Value =
        serde_json::from_str(&ok(goldfish(&host, &["versions", "thing", "--json"]))).expect("JSON");
    assert_eq!(list["current"], 1);
    let current: Vec<bool> = list["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["current"] == true)
        .collect();
    assert_eq!(current, [false, false, true]);

    let err = fails(goldfish(&host, &["rollback", "thing"]));
    assert!(
        err.contains("oldest kept version") && err.contains("409"),
        "{err}"
    );
    let err = fails(goldfish(&host, &["rollback", "thing", "--to", "7"]));
    assert!(err.contains("no version 7"), "{err}");
}

#[test]
fn invoke_sends_method_body_and_headers_and_prints_the_answer() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy(&host, "misbehave", "mis");
    let out = ok(goldfish(&host, &["invoke", "mis"]));
    assert_eq!(out, "misbehave");

    let out = ok(goldfish(
        &host,
        &[
            "invoke",
            "mis",
            "/echo/x?a=1",
            "-X",
            "put",
            "-d",
            "hello",
            "-H",
            "X-Thing: 42",
        ],
    ));
    let echo: Value = serde_json::from_str(&out).expect("echo JSON");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/x");
    assert_eq!(echo["query"], "a=1");
    assert_eq!(echo["body"], "hello");
    assert!(
        echo["headers"].to_string().contains(r#"["x-thing","42"]"#),
        "{echo}"
    );

    // -d alone means POST, and @FILE reads the body from a file.
    let body = wasm_file(b"from a file");
    let at_file = format!("@{}", body.path());
    let out = ok(goldfish(&host, &["invoke", "mis", "echo", "-d", &at_file]));
    let echo: Value = serde_json::from_str(&out).expect("echo JSON");
    assert_eq!(
        (echo["method"].as_str(), echo["body"].as_str()),
        (Some("POST"), Some("from a file"))
    );

    let out = ok(goldfish(&host, &["invoke", "mis", "-i"]));
    assert!(out.starts_with("HTTP 200 OK\n"), "{out}");
    assert!(out.contains("x-request-id: "), "{out}");
    assert!(out.ends_with("\n\nmisbehave"), "{out}");

    let answer: Value =
        serde_json::from_str(&ok(goldfish(&host, &["invoke", "mis", "--json"]))).expect("JSON");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], "misbehave");
}

#[test]
fn a_failed_invocation_prints_the_hosts_message_and_exits_non_zero() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy(&host, "misbehave", "mis");
    let err = fails(goldfish(&host, &["invoke", "nope"]));
    assert!(
        err.contains("HTTP 404") && err.contains("no function named `nope`"),
        "{err}"
    );
    let output = goldfish(&host, &["invoke", "mis", "/trap"]);
    let err = fails(output);
    assert!(err.contains("HTTP 500") && err.contains("trap"), "{err}");
    assert!(err.contains("goldfish errors mis"), "{err}");
}

#[test]
fn errors_lists_a_functions_failures_with_the_detail_callers_do_not_see() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy(&host, "misbehave", "mis");
    assert_eq!(
        ok(goldfish(&host, &["errors", "mis"])),
        "no failures recorded for mis\n"
    );
    fails(goldfish(&host, &["invoke", "mis", "/trap"]));
    // Recorded in the background, just after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let table = loop {
        let out = ok(goldfish(&host, &["errors", "mis"]));
        if out.lines().count() > 1 || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("WHEN"), "{table}");
    assert!(
        lines[1].contains(" 500 ")
            && lines[1].contains("trapped")
            && lines[1].contains("deliberate trap"),
        "{table}"
    );
    let list: Value =
        serde_json::from_str(&ok(goldfish(&host, &["errors", "mis", "--json"]))).expect("JSON");
    assert_eq!(list["errors"][0]["class"], "trapped", "{list}");
    assert!(fails(goldfish(&host, &["errors", "ghost"])).contains("404"));
}

#[test]
fn admin_errors_print_the_hosts_message_and_exit_non_zero() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let err = fails(goldfish(&host, &["show", "ghost"]));
    assert!(
        err.starts_with("error: no function named `ghost` is deployed (HTTP 404)"),
        "{err}"
    );
    let err = fails(goldfish_with(&host, None, &["ls"]));
    assert!(
        err.contains("missing `Authorization: Bearer TOKEN`") && err.contains("--token"),
        "{err}"
    );
    let err = fails(goldfish_with(&host, Some("wrong"), &["ls"]));
    assert!(err.contains("wrong admin token"), "{err}");
    let err = fails(goldfish(&host, &["ls", "--token", "also-wrong"]));
    assert!(
        err.contains("wrong admin token"),
        "--token overrides the environment: {err}"
    );

    let file = wasm_file(b"not wasm at all");
    let path = file.path();
    let err = fails(goldfish(&host, &["deploy", path, "--name", "junk"]));
    assert!(
        err.contains("not WebAssembly") && err.contains("400"),
        "{err}"
    );
    let err = fails(goldfish(
        &host,
        &["deploy", "/no/such/file.wasm", "--name", "x"],
    ));
    assert!(err.contains("/no/such/file.wasm"), "{err}");

    let nobody = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", nobody.local_addr().expect("addr"));
    drop(nobody);
    let err = fails(goldfish(&host, &["ls", "--url", &url]));
    assert!(
        err.contains("cannot reach a host") && err.contains(&url),
        "{err}"
    );
}

#[test]
fn rm_deletes_the_function_with_its_versions() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    deploy(&host, "recycle-probe", "probe");
    let out = ok(goldfish(&host, &["rm", "probe"]));
    assert!(out.contains("deleted probe"), "{out}");
    assert!(fails(goldfish(&host, &["show", "probe"])).contains("404"));
    assert!(fails(goldfish(&host, &["versions", "probe"])).contains("404"));
    assert!(fails(goldfish(&host, &["rm", "probe"])).contains("404"));
    assert_eq!(ok(goldfish(&host, &["ls"])), "no functions deployed\n");
}

#[test]
fn help_never_shows_the_token_from_the_environment() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    for command in ["deploy", "ls", "invoke", "rollback"] {
        let output = goldfish_with(&host, Some("very-secret-value"), &[command, "--help"]);
        let help = ok(output);
        assert!(help.contains("GOLDFISH_ADMIN_TOKEN"), "{help}");
        assert!(
            !help.contains("very-secret-value"),
            "{command} --help shows the token"
        );
    }
}

/// `bytes` with a custom section of `padding` bytes appended: the same component, larger.
fn padded(bytes: &[u8], padding: usize) -> Vec<u8> {
    let name = b"padding";
    let size = 1 + name.len() + padding;
    let mut out = bytes.to_vec();
    out.push(0);
    let mut rest = size;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + padding, 0);
    out
}

#[test]
fn a_large_deploy_at_a_terminal_shows_upload_progress() {
    let redis = Redis::start();
    let host = Host::start(&redis);
    let file = wasm_file(&padded(&guest("recycle-probe"), 3 << 20));
    // `script` gives the command a terminal, as a person at a shell would have.
    let command = format!(
        "{} deploy {} --name big",
        env!("CARGO_BIN_EXE_goldfish"),
        file.path()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("GOLDFISH_URL", &host.url)
        .env("GOLDFISH_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("script runs");
    let out = ok(output);
    assert!(out.contains("uploading"), "no progress bar:\n{out}");
    assert!(out.contains("deployed big version 1"), "{out}");
    let entry: Value =
        serde_json::from_str(&ok(goldfish(&host, &["show", "big", "--json"]))).expect("JSON");
    assert_eq!(
        entry["size"],
        std::fs::metadata(file.path()).expect("file").len()
    );
}

#[test]
fn an_oversized_component_is_refused_with_the_hosts_message() {
    let redis = Redis::start();
    let host = Host::start_tuned(&redis, &["--max-component-bytes", "100000"]);
    let file = wasm_file(&padded(&guest("recycle-probe"), 2 << 20));
    let path = file.path();
    let err = fails(goldfish(&host, &["deploy", path, "--name", "big"]));
    assert!(
        err.contains("--max-component-bytes") && err.contains("413"),
        "{err}"
    );
    // Refused from its headers alone, before the body is read: the message still arrives.
    let err = fails(goldfish_with(
        &host,
        Some("wrong"),
        &["deploy", path, "--name", "big"],
    ));
    assert!(
        err.contains("wrong admin token") && err.contains("401"),
        "{err}"
    );
}

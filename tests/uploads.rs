//! Hostile and random uploads, end to end: `wasm-smith` core modules and components, core modules
//! wrapped in components, and mutated copies of the reference functions, PUT to a real host over
//! HTTP. Every answer must be 2xx, or 4xx with a JSON error; never a 5xx, never a dropped
//! connection; and the host must serve a normal function afterwards. Then pathological
//! components (a huge function count, deep nesting) must get their 422 within the compile bound
//! while the host keeps answering other requests. Inputs come from a fixed seed: a failure
//! names the input's index and kind and keeps its bytes, and the same run reproduces it.

mod support;

#[path = "uploads/inputs.rs"]
mod inputs;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use futures::StreamExt;
use support::{Host, Redis, TOKEN, function, post_json};

/// The seed every input derives from; `GOLDFISH_UPLOADS_SEED` explores others.
const SEED: u64 = 0x60_1d_f1_54;

/// Inputs of each kind.
const CORE_MODULES: usize = 150;
const WRAPPED_MODULES: usize = 300;
const SMITH_COMPONENTS: usize = 100;
const MUTANTS: usize = 150;

/// Uploads in flight at once.
const CONCURRENT_UPLOADS: usize = 4;

/// The two tests of this file each load both cores; one at a time keeps their timings honest.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    CoreModule,
    WrappedModule,
    SmithComponent,
    Mutant,
}

/// splitmix64: a tiny, stable generator, so the inputs do not depend on any crate's RNG.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random bytes input `index` of `kind` is generated from: a few KiB, fixed by the seed.
fn entropy(seed: u64, kind: Kind, index: usize) -> Vec<u8> {
    let mut state = seed ^ ((kind as u64) << 56) ^ (index as u64).wrapping_mul(0x1000_0000_01b3);
    let len = 512 + (splitmix(&mut state) % 8192) as usize;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    bytes
}

/// Every input of this run: (kind, index, bytes). wasm-smith gives up on a few byte strings
/// (too short for what it chose to build); those are skipped and counted.
fn inputs(seed: u64, references: &[Vec<u8>]) -> (Vec<(Kind, usize, Vec<u8>)>, usize) {
    let mut all = Vec::new();
    let mut skipped = 0;
    let plan = [
        (Kind::CoreModule, CORE_MODULES),
        (Kind::WrappedModule, WRAPPED_MODULES),
        (Kind::SmithComponent, SMITH_COMPONENTS),
        (Kind::Mutant, MUTANTS),
    ];
    for (kind, count) in plan {
        for index in 0..count {
            let entropy = entropy(seed, kind, index);
            let mut u = Unstructured::new(&entropy);
            let bytes = match kind {
                Kind::CoreModule => inputs::core_module(&mut u),
                Kind::WrappedModule => inputs::wrapped_module(&mut u),
                Kind::SmithComponent => inputs::smith_component(&mut u),
                Kind::Mutant => inputs::mutant(&mut u, references),
            };
            match bytes {
                Ok(bytes) => all.push((kind, index, bytes)),
                Err(_) => skipped += 1,
            }
        }
    }
    (all, skipped)
}

/// What one upload got: its status, or why there was none.
#[derive(Debug)]
enum Answer {
    Status(u16, serde_json::Value),
    Dropped(String),
}

async fn upload(client: &reqwest::Client, url: &str, bytes: Vec<u8>) -> Answer {
    let sent = client
        .put(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text) => Answer::Status(
                    status,
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
                ),
                Err(e) => Answer::Dropped(format!("the body broke off: {e}")),
            }
        }
        Err(e) => Answer::Dropped(format!("{e:?}")),
    }
}

/// Why an answer breaks the contract, if it does: 5xx, no answer, a 4xx without a JSON error,
/// a 2xx that is not the deployed entry.
fn broken(answer: &Answer) -> Option<String> {
    match answer {
        Answer::Dropped(e) => Some(format!("no answer: {e}")),
        Answer::Status(status, body) => match status {
            200..=299 if body["digest"].is_string() => None,
            400..=499 if body["error"].as_str().is_some_and(|e| !e.is_empty()) => None,
            _ => Some(format!("{status} {body}")),
        },
    }
}

/// The Rust reference functions, the ones small enough that a mutant that still compiles does
/// not cost seconds.
fn references() -> Vec<Vec<u8>> {
    ["cart", "checkout", "recycle-probe", "http-probe"]
        .into_iter()
        .map(function)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_uploads_get_2xx_or_4xx_with_a_json_error_never_5xx() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = std::env::var("GOLDFISH_UPLOADS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let references = references();
    let (all, skipped) = inputs(seed, &references);
    let redis = Redis::start();
    // No disk cache: mutants that compile would only litter the shared one.
    let host = Host::start_tuned(&redis, &["--compile-cache", "off"]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let started = Instant::now();
    let total = all.len();
    let answers: Vec<_> = futures::stream::iter(all)
        .map(|(kind, index, bytes)| {
            let (client, host) = (&client, &host);
            async move {
                // A handful of names, so versions pile up and old bytes get collected too.
                let url = format!("{}/v1/functions/upload-{}", host.url, index % 5);
                let answer = upload(client, &url, bytes.clone()).await;
                (kind, index, bytes, answer)
            }
        })
        .buffer_unordered(CONCURRENT_UPLOADS)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut tally: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (kind, index, bytes, answer) in &answers {
        let outcome = match answer {
            Answer::Status(status, _) => status.to_string(),
            Answer::Dropped(_) => "dropped".to_owned(),
        };
        *tally.entry((*kind, outcome)).or_default() += 1;
        if let Some(why) = broken(answer) {
            let file = std::env::temp_dir().join(format!("goldfish-upload-{kind:?}-{index}.wasm"));
            std::fs::write(&file, bytes).ok();
            failures.push(format!(
                "{kind:?} #{index} ({} bytes, kept at {}): {why}",
                bytes.len(),
                file.display()
            ));
        }
    }
    println!(
        "{total} uploads (seed {seed:#x}, {skipped} inputs wasm-smith gave up on) in {elapsed:?}:"
    );
    for ((kind, outcome), count) in &tally {
        println!("  {kind:?} {outcome}: {count}");
    }
    assert!(
        failures.is_empty(),
        "{} of {total} uploads broke the contract:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        host.log_contents()
    );
    let smith = answers
        .iter()
        .filter(|(kind, ..)| *kind != Kind::Mutant)
        .count();
    assert!(smith >= 500, "only {smith} wasm-smith inputs");
    // Each kind reached the host's deeper checks, not only its header check.
    for kind in [Kind::WrappedModule, Kind::SmithComponent, Kind::Mutant] {
        let kinds_422 = tally.get(&(kind, "422".to_owned())).copied().unwrap_or(0);
        assert!(kinds_422 > 0, "no {kind:?} got as far as a 422: {tally:?}");
    }

    // Still a working host: a normal function deploys and answers.
    host.deploy_bytes_ok("probe", None, function("recycle-probe"))
        .await;
    let (status, body) = post_json(&host.fn_url("probe")).await;
    assert_eq!(status, 200, "{body}");
}

/// Latencies of requests made while something else runs.
#[derive(Default)]
struct Probes {
    healthz: Vec<Duration>,
    calls: Vec<(u16, Duration)>,
}

impl Probes {
    fn summary(&self) -> String {
        let mut healthz = self.healthz.clone();
        healthz.sort();
        let median = healthz.get(healthz.len() / 2).copied().unwrap_or_default();
        let max = healthz.last().copied().unwrap_or_default();
        let call_max = self.calls.iter().map(|(_, d)| *d).max().unwrap_or_default();
        format!(
            "{} /healthz (median {median:?}, max {max:?}), {} calls (max {call_max:?})",
            healthz.len(),
            self.calls.len()
        )
    }
}

/// Probes `host` (`/healthz` every 50 ms, a function call every 250 ms) until `stop` is set.
async fn probe_until(host: &Host, stop: &std::sync::atomic::AtomicBool) -> Probes {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut probes = Probes::default();
    let mut tick = 0u32;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let started = Instant::now();
        let healthz = client.get(format!("{}/healthz", host.url)).send().await;
        assert!(
            healthz.is_ok_and(|r| r.status() == 200),
            "/healthz failed during a compile"
        );
        probes.healthz.push(started.elapsed());
        if tick.is_multiple_of(5) {
            let started = Instant::now();
            let status = client
                .post(host.fn_url("probe"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            probes.calls.push((status, started.elapsed()));
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probes
}

/// What a pathological upload must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Refused before any compile: a 422 at once (and no compile left running).
    Refused,
    /// A 422 within the compile bound, whether refused or timed out.
    WithinBound,
}

/// The host's resident memory, from its own `/metrics`.
async fn resident_bytes(host: &Host) -> f64 {
    let text = reqwest::get(format!("{}/metrics", host.url))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_components_get_422_within_the_compile_bound_while_the_host_serves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bound = Duration::from_secs(2);
    let redis = Redis::start();
    let probe = function("recycle-probe");
    let cases: [(&str, Vec<u8>, Expect); 7] = [
        // Over wasmparser's limit of 1,000,000 functions: refused while validating.
        (
            "1,000,001 functions",
            inputs::many_functions(1_000_001),
            Expect::Refused,
        ),
        // Within it, but past Goldfish's 100,000: a compile of 40 s and a gigabyte, refused.
        (
            "300,000 functions",
            inputs::many_functions(300_000),
            Expect::Refused,
        ),
        // Within both, and a little more than compiles in the bound on two cores.
        (
            "90,000 functions",
            inputs::many_functions(90_000),
            Expect::WithinBound,
        ),
        // Cranelift's time grows with the square of the depth: minutes for this one.
        (
            "1,000,000 nested blocks",
            inputs::nested_blocks(1_000_000),
            Expect::WithinBound,
        ),
        // Wasmtime's inliner needs memory quadratic in the depth: gigabytes at 3,000 levels.
        (
            "10,000 nested components",
            inputs::nested_components(10_000, 1),
            Expect::Refused,
        ),
        (
            "100,000 nested components",
            inputs::nested_components(100_000, 1),
            Expect::Refused,
        ),
        // 100^4 instances once inlined, from 1.3 KB: memory grows until the host is killed.
        (
            "4 levels of 100 instantiations",
            inputs::nested_components(4, 100),
            Expect::Refused,
        ),
    ];
    for (what, bytes, expect) in cases {
        // A host per case: a compile past the bound goes on in the background (wasmtime cannot
        // stop one), holding its compile slot, until it ends or its host does.
        let host = Host::start_tuned(&redis, &["--compile-timeout-secs", "2"]);
        host.deploy_bytes_ok("probe", None, probe.clone()).await;
        let size = bytes.len();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let deploy = async {
            let started = Instant::now();
            let answer = upload(
                &reqwest::Client::new(),
                &format!("{}/v1/functions/pathological", host.url),
                bytes,
            )
            .await;
            let took = started.elapsed();
            // A little longer: probes while an abandoned compile still runs.
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (answer, took)
        };
        let ((answer, took), probes) = tokio::join!(deploy, probe_until(&host, &stop));
        let resident = resident_bytes(&host).await;
        let line = format!(
            "{what} ({size} bytes): {answer:?} after {took:?}; meanwhile {}; then {:.0} MiB resident",
            probes.summary(),
            resident / f64::from(1 << 20)
        );
        println!("{line}");
        let Answer::Status(status, body) = &answer else {
            panic!("{line}\n{}", host.log_contents());
        };
        assert!(
            matches!(status, 413 | 422) && body["error"].is_string(),
            "{line}"
        );
        let timed_out = body["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not compile within"));
        assert!(
            expect == Expect::WithinBound || !timed_out,
            "{what} should be refused before compiling: {line}"
        );
        // The bound, plus the upload and a loaded machine's slack.
        assert!(took < bound + Duration::from_secs(3), "{line}");
        // Whatever still compiles in the background stays within ordinary memory.
        assert!(resident < f64::from(1 << 30), "{line}");
        assert!(
            probes.calls.iter().all(|(status, _)| *status == 200),
            "{line}"
        );
        let slowest = probes.healthz.iter().max().copied().unwrap_or_default();
        assert!(slowest < Duration::from_secs(1), "{line}");
        let (status, body) = post_json(&host.fn_url("probe")).await;
        assert_eq!(status, 200, "{line}: {body}");
    }
}

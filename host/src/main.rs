//! The `goldfish` command: `serve` runs a host, `stress` proves instance recycling under load,
//! and the client commands (`deploy`, `ls`, `show`, `invoke`, `rm`, `versions`, `rollback`)
//! drive a running host's API.
#![forbid(unsafe_code)]

/// mimalloc rather than glibc's malloc: fewer lock waits across the runtime's threads (measured
/// by scripts/bench; the README's Performance section has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use goldfish::backend::Backend;
use goldfish::backend::memory::MemoryBackend;
use goldfish::backend::redis::RedisBackend;
use goldfish::engine::RequestLimits;
use goldfish::registry::CompileSettings;
use goldfish::server::{self, AppState, Settings};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "goldfish",
    version,
    about = "A serverless WebAssembly function host: a fresh instance per request, all state in Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One line per event: time, level, spans with their fields, target, message, fields.
    Text,
    /// One JSON object per event: `timestamp`, `level`, `message` and the event's fields at the
    /// top level, `target`, and the spans with their fields (`span`, `spans`).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a host.
    Serve(ServeArgs),
    /// Drive load at one or more hosts and check that every request got a fresh instance.
    Stress(goldfish::stress::StressArgs),
    #[command(flatten)]
    Client(goldfish::cli::ClientCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// Redis at --redis, shared by every host.
    Redis,
    /// A Redis Cluster; --redis lists one or more of its nodes, comma-separated.
    RedisCluster,
    /// An embedded in-memory store: development only, not shared, lost on exit.
    Memory,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on http://ADDR`).
    #[arg(long, env = "GOLDFISH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Redis URL (redis://[:password@]host:port[/db]); with `--store redis-cluster`, one or more
    /// cluster node URLs, comma-separated.
    #[arg(
        long,
        env = "GOLDFISH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// Where state lives.
    #[arg(long, value_enum, env = "GOLDFISH_STORE", default_value = "redis")]
    store: StoreKind,
    /// Serve the admin API (`/v1/`) on this address only, e.g. 127.0.0.1:8081 or an internal
    /// interface; the public address then answers 404 for `/v1/`. Port 0 picks a free one
    /// (printed as `admin listening on http://ADDR`).
    #[arg(long, env = "GOLDFISH_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Bearer token for the admin API; without one the admin API refuses every request.
    #[arg(long, env = "GOLDFISH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Largest request body passed to a function, in bytes.
    #[arg(long, env = "GOLDFISH_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// kv operations one request may make (each key of a batch counts); past it the guest's kv
    /// calls fail, saying so.
    #[arg(long, env = "GOLDFISH_KV_OPS", default_value_t = goldfish::kv::DEFAULT_KV_OPS,
          value_parser = clap::value_parser!(u64).range(1..))]
    kv_ops: u64,
    /// Bytes one request may move through kv (keys and values sent, values read).
    #[arg(long, env = "GOLDFISH_KV_BYTES", default_value_t = goldfish::kv::DEFAULT_KV_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    kv_bytes: u64,
    /// Longest a request body may take to arrive, in milliseconds (408 beyond).
    #[arg(long, env = "GOLDFISH_BODY_TIMEOUT_MS", default_value_t = server::DEFAULT_BODY_TIMEOUT.as_millis() as u64)]
    body_timeout_ms: u64,
    /// Longest a client may take to send a request's line and headers, in milliseconds (also how
    /// long an idle kept-alive connection stays open); past it the connection is closed.
    #[arg(long, env = "GOLDFISH_HEADER_TIMEOUT_MS", default_value_t = goldfish::connections::DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Connections open at once on each listener; past it new connections wait until one closes.
    #[arg(long, env = "GOLDFISH_MAX_CONNECTIONS", default_value_t = goldfish::connections::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Invocations in flight at once, before their bodies are read; past it 503 at once.
    /// Default: twice --max-instances.
    #[arg(long, env = "GOLDFISH_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Largest component accepted by the admin API, in bytes.
    #[arg(long, env = "GOLDFISH_MAX_COMPONENT_BYTES", default_value_t = server::DEFAULT_MAX_COMPONENT_BYTES)]
    max_component_bytes: usize,
    /// Wall-clock limit of one invocation, in milliseconds.
    #[arg(long, env = "GOLDFISH_TIMEOUT_MS", default_value_t = server::DEFAULT_TIMEOUT.as_millis() as u64)]
    timeout_ms: u64,
    /// Instances this host may run at once; each pooled slot reserves address space up front.
    #[arg(long, env = "GOLDFISH_MAX_INSTANCES", default_value_t = goldfish::engine::DEFAULT_MAX_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_instances: u32,
    /// CPU one invocation may use, in milliseconds (500 beyond); counted while the guest runs
    /// wasm, not while it waits. 0 turns the budget off (the deadline still applies).
    #[arg(long, env = "GOLDFISH_CPU_MS", default_value_t = server::DEFAULT_CPU_BUDGET.as_millis() as u64)]
    cpu_ms: u64,
    /// Concurrent calls one function may have on this host (more wait up to 2 s, then 503).
    /// Default: half of --max-instances.
    #[arg(long, env = "GOLDFISH_MAX_CONCURRENCY_PER_FUNCTION")]
    max_concurrency_per_function: Option<usize>,
    /// Threads that run guests and serve the public listener's connections (see
    /// --separate-http-threads). Default: one per core.
    #[arg(long, env = "GOLDFISH_GUEST_THREADS")]
    guest_threads: Option<usize>,
    /// Run guest threads at the lowest CPU priority (SCHED_BATCH, nice 19): health checks and
    /// the admin API stay quick on a saturated host, at a large cost in throughput.
    #[arg(long, env = "GOLDFISH_LOW_PRIORITY_GUESTS")]
    low_priority_guests: bool,
    /// Serve HTTP on threads of its own, apart from the guest threads (implied by
    /// --low-priority-guests): a host saturated by CPU-bound guests then answers /healthz and
    /// the admin API sooner, at up to a third more CPU per request.
    #[arg(long, env = "GOLDFISH_SEPARATE_HTTP_THREADS")]
    separate_http_threads: bool,
    /// Linear memory limit of one instance, in MiB.
    #[arg(long, env = "GOLDFISH_MEMORY_MIB", default_value_t = server::DEFAULT_MAX_MEMORY_BYTES >> 20)]
    memory_mib: usize,
    /// How long one Redis command may take before the guest gets `unavailable` (a 503), in
    /// milliseconds; after one times out, commands fail at once for that long.
    #[arg(long, env = "GOLDFISH_REDIS_TIMEOUT_MS", default_value_t = goldfish::backend::redis::DEFAULT_RESPONSE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    redis_timeout_ms: u64,
    /// Directory for compiled machine code, so a restarted host does not compile again;
    /// `off` disables it. Default: $XDG_CACHE_HOME/goldfish (or ~/.cache/goldfish).
    #[arg(long, env = "GOLDFISH_COMPILE_CACHE")]
    compile_cache: Option<String>,
    /// Compiles this host runs at once (deploys and background compiles of new functions).
    #[arg(long, env = "GOLDFISH_MAX_COMPILES", default_value_t = goldfish::registry::DEFAULT_MAX_CONCURRENT_COMPILES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    max_compiles: usize,
    /// Versions kept per function, with their component bytes, for rollback; older ones and
    /// bytes no kept version uses are deleted on the next deploy.
    #[arg(long, env = "GOLDFISH_KEEP_VERSIONS", default_value_t = goldfish::registry::DEFAULT_KEEP_VERSIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    keep_versions: usize,
    /// Longest one compile may take, in seconds (a deploy answers 422 beyond).
    #[arg(long, env = "GOLDFISH_COMPILE_TIMEOUT_SECS", default_value_t = goldfish::registry::DEFAULT_COMPILE_TIMEOUT.as_secs())]
    compile_timeout_secs: u64,
    /// How log lines are written to stderr: `text` for people, `json` for log collectors (one
    /// JSON object per line, with the same fields).
    #[arg(long, value_enum, env = "GOLDFISH_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// Where compiled code is cached: `--compile-cache`, else the user's cache directory, else none.
fn compile_cache_dir(flag: Option<&str>) -> Option<PathBuf> {
    match flag {
        Some("off") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("goldfish")),
    }
}

/// Logs go to stderr at the level `RUST_LOG` sets (default `info`), in `format`.
fn init_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, never in log files or collectors.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level, where collectors (Loki, Elasticsearch, jq) look first.
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only a host has logs worth collecting; the other commands talk to people.
    init_logging(match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Stress(args) => match runtime.block_on(goldfish::stress::command(args)) {
            Ok(true) => Ok(()),
            // The report has already said which check failed.
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Client(command) => match runtime.block_on(goldfish::cli::run(command)) {
            Ok(true) => Ok(()),
            // The command has already said what failed.
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let unreachable = |e| {
        anyhow::anyhow!(
            "cannot reach Redis at {}: {e}\n  start Redis (e.g. `redis-server --port 6379`), pass the right URL with \
             --redis / GOLDFISH_REDIS_URL, or use `--store memory` for a single-node development host",
            args.redis
        )
    };
    let redis_timeout = Duration::from_millis(args.redis_timeout_ms);
    let backend = match args.store {
        StoreKind::Redis => Backend::Redis(
            RedisBackend::connect(&args.redis, redis_timeout)
                .await
                .map_err(unreachable)?,
        ),
        StoreKind::RedisCluster => {
            let nodes: Vec<&str> = args
                .redis
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect();
            Backend::Redis(
                RedisBackend::connect_cluster(&nodes, redis_timeout)
                    .await
                    .map_err(unreachable)?,
            )
        }
        StoreKind::Memory => {
            tracing::warn!(
                "using the embedded memory store: state is not shared with other hosts and is lost on exit"
            );
            Backend::Memory(MemoryBackend::new())
        }
    };
    if args.admin_token.is_none() {
        tracing::warn!(
            "no admin token configured: the admin API will refuse every request (set --admin-token)"
        );
    }
    let settings = Settings {
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        max_body_bytes: args.max_body_bytes,
        kv_budget: goldfish::kv::KvBudget {
            max_ops: args.kv_ops,
            max_bytes: args.kv_bytes,
        },
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_in_flight: args
            .max_in_flight
            .unwrap_or(args.max_instances as usize * 2)
            .max(1),
        max_component_bytes: args.max_component_bytes,
        max_instances: args.max_instances,
        max_concurrency_per_function: args
            .max_concurrency_per_function
            .unwrap_or(args.max_instances as usize / 2)
            .max(1),
        guest_threads: args
            .guest_threads
            .unwrap_or_else(server::default_guest_threads),
        low_priority_guests: args.low_priority_guests,
        http_on_guest_threads: !(args.separate_http_threads || args.low_priority_guests),
        limits: RequestLimits {
            max_memory_bytes: args.memory_mib << 20,
            timeout: Duration::from_millis(args.timeout_ms),
            cpu_budget: (args.cpu_ms > 0).then(|| Duration::from_millis(args.cpu_ms)),
        },
        compile: CompileSettings {
            max_concurrent: args.max_compiles,
            timeout: Duration::from_secs(args.compile_timeout_secs),
            cache_dir: compile_cache_dir(args.compile_cache.as_deref()),
        },
        connections: goldfish::connections::ConnectionLimits {
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            max_connections: args.max_connections,
        },
    };
    match &settings.compile.cache_dir {
        Some(dir) => tracing::info!(dir = %dir.display(), "compiled code is cached on disk"),
        None => tracing::info!("the compile cache is off"),
    }
    let state = AppState::new(backend.clone(), settings).await?;
    state.registry.set_keep_versions(args.keep_versions);
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(store = %backend.describe(), "goldfish host ready");
    // Scripts and tests read this line to find the port.
    println!("listening on http://{addr}");
    let admin_listener = match &args.admin_listen {
        Some(admin) => {
            let admin_listener = TcpListener::bind(admin)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {admin} (--admin-listen): {e}"))?;
            // Scripts and tests read this line to find the admin port.
            println!("admin listening on http://{}", admin_listener.local_addr()?);
            Some(admin_listener)
        }
        None => None,
    };
    server::run(listener, admin_listener, state, shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

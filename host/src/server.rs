//! The HTTP server: state shared by handlers, the router, health endpoints, and `run` with
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Request;
use axum::routing::{any, get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

use crate::auth_failures::AuthFailures;
use crate::backend::Backend;
use crate::connections::{self, ConnectionLimits};
use crate::engine::{DEFAULT_MAX_INSTANCES, RequestLimits, Runtime};
use crate::error::HostError;
use crate::guests::Guests;
use crate::kv::KvBudget;
use crate::metrics::Metrics;
use crate::registry::{CompileSettings, FunctionEntry, Registry};
use crate::{admin, fleet, invoke, openapi, status};

/// Default largest request body a function receives (413 beyond).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default for [`Settings::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest component an operator may upload (413 beyond).
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Default wall-clock limit of one invocation (504 beyond).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default CPU budget of one invocation (500 beyond): well under the deadline, so a busy loop is
/// stopped for what it is rather than by the clock.
pub const DEFAULT_CPU_BUDGET: Duration = Duration::from_secs(5);
/// Default linear memory limit of one instance.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 << 20;
/// How long shutdown waits for in-flight requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `serve` needs besides the socket. Its `Debug` never shows the admin token.
#[derive(Clone)]
pub struct Settings {
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub max_component_bytes: usize,
    /// Instances this host may hold at once (pooled slots).
    pub max_instances: u32,
    /// Concurrent calls of one function on this host; more wait (then 503).
    pub max_concurrency_per_function: usize,
    /// Worker threads of the guest runtime.
    pub guest_threads: usize,
    /// Run guest threads at the lowest scheduling priority.
    pub low_priority_guests: bool,
    /// Longest a request body may take to arrive (408 beyond): a slow client cannot hold a
    /// connection, a buffer and an in-flight place for long.
    pub body_timeout: Duration,
    /// Invocations in flight at once, counted before the body is read; past it the host
    /// answers 503 at once (load shedding) instead of buffering more bodies.
    pub max_in_flight: usize,
    /// Host-wide per-request bounds; `max_memory_bytes` is also the most a function may ask
    /// for at deploy (`?memory_mib=`).
    pub limits: RequestLimits,
    /// What one request may do through kv (operations, bytes).
    pub kv_budget: KvBudget,
    /// How compiles run: how many at once, how long each may take, where machine code is cached.
    pub compile: CompileSettings,
    /// How each listener treats connections: header deadline, how many may be open.
    pub connections: ConnectionLimits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_component_bytes", &self.max_component_bytes)
            .field("max_instances", &self.max_instances)
            .field(
                "max_concurrency_per_function",
                &self.max_concurrency_per_function,
            )
            .field("guest_threads", &self.guest_threads)
            .field("low_priority_guests", &self.low_priority_guests)
            .field("limits", &self.limits)
            .field("kv_budget", &self.kv_budget)
            .field("compile", &self.compile)
            .field("connections", &self.connections)
            .finish()
    }
}

impl Settings {
    /// The kv budget of one call of `entry`: the host's, or the function's own when it set a
    /// smaller one at deploy.
    pub fn kv_budget_for(&self, entry: &FunctionEntry) -> KvBudget {
        KvBudget {
            max_ops: entry.kv_ops.map_or(self.kv_budget.max_ops, |own| {
                own.min(self.kv_budget.max_ops)
            }),
            max_bytes: entry.kv_bytes.map_or(self.kv_budget.max_bytes, |own| {
                own.min(self.kv_budget.max_bytes)
            }),
        }
    }

    /// The bounds for one call of `entry`: the host's, with the function's own memory limit
    /// when it set one at deploy (never above the host's).
    pub fn limits_for(&self, entry: &FunctionEntry) -> RequestLimits {
        let mut limits = self.limits.clone();
        if let Some(mib) = entry.memory_mib {
            limits.max_memory_bytes = limits.max_memory_bytes.min((mib as usize) << 20);
        }
        if let Some(ms) = entry.cpu_ms {
            let own = Duration::from_millis(ms.into());
            limits.cpu_budget = Some(limits.cpu_budget.map_or(own, |host| host.min(own)));
        }
        limits
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            admin_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_in_flight: DEFAULT_MAX_INSTANCES as usize * 2,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_concurrency_per_function: DEFAULT_MAX_INSTANCES as usize / 2,
            guest_threads: default_guest_threads(),
            low_priority_guests: false,
            limits: RequestLimits {
                max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
                timeout: DEFAULT_TIMEOUT,
                cpu_budget: Some(DEFAULT_CPU_BUDGET),
            },
            kv_budget: KvBudget::default(),
            compile: CompileSettings::default(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Shared by every handler: one `Arc`, so the clone axum makes for each request is one atomic
/// increment rather than a dozen (and no allocation).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub backend: Backend,
    /// The same store through a connection whose I/O runs on the guest runtime: what guests'
    /// kv calls use (see [`Backend::another_connection`]).
    pub kv_backend: Backend,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// One permit per pooled instance slot: a request holds one while its instance exists, so
    /// the pool is never asked for more slots than it has.
    pub instance_slots: Arc<Semaphore>,
    /// Failed admin logins per client address.
    pub auth_failures: Arc<AuthFailures>,
    /// One permit per invocation in flight ([`Settings::max_in_flight`]).
    pub in_flight: Arc<Semaphore>,
    /// The runtime guests run on, and each function's concurrency cap.
    pub guests: Arc<Guests>,
    /// This host's identity and recent figures, for its heartbeat and the status page.
    pub fleet: Arc<fleet::Fleet>,
}

impl AppState {
    /// Builds the engine and registry over `backend`, and the guest runtime with a connection
    /// of its own to the same store.
    pub async fn new(backend: Backend, settings: Settings) -> anyhow::Result<Self> {
        let runtime = Runtime::new(settings.limits.max_memory_bytes, settings.max_instances)?;
        let registry = Registry::new(backend.clone(), runtime.clone(), settings.compile.clone())?;
        let guests = Arc::new(Guests::new(
            settings.guest_threads,
            settings.max_concurrency_per_function,
            settings.max_instances as usize,
            settings.low_priority_guests,
        )?);
        let store = backend.clone();
        let kv_backend = guests
            .run(async move { store.another_connection().await })
            .await??;
        Ok(AppState(Arc::new(Shared {
            backend,
            kv_backend,
            runtime,
            registry,
            instance_slots: Arc::new(Semaphore::new(settings.max_instances as usize)),
            auth_failures: Arc::default(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            guests,
            settings: Arc::new(settings),
            metrics: Metrics::new()?,
            fleet: Arc::new(fleet::Fleet::new()),
        })))
    }
}

/// One guest worker per core: guests are CPU work, more threads than cores only adds switching.
pub fn default_guest_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The router with everything on one address: admin API, invocation, health, metrics.
pub fn app(state: AppState) -> Router {
    with_layers(admin_routes().merge(public_routes()), state)
}

/// The public router when the admin API has an address of its own (`--admin-listen`): no
/// `/v1/` routes at all (they answer the JSON 404).
pub fn public_app(state: AppState) -> Router {
    with_layers(public_routes(), state)
}

/// The admin API alone, for `--admin-listen` (with health, so probes can check it).
pub fn admin_app(state: AppState) -> Router {
    with_layers(
        admin_routes()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz)),
        state,
    )
}

fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/functions", get(admin::list))
        .route(
            "/v1/functions/{name}",
            get(admin::show).put(admin::deploy).delete(admin::remove),
        )
        .route("/v1/functions/{name}/versions", get(admin::versions))
        .route("/v1/functions/{name}/rollback", post(admin::rollback))
        .route("/v1/functions/{name}/errors", get(admin::errors))
        .route("/v1/openapi.json", get(openapi::document))
}

fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(status::page))
        .route("/fn/{name}", any(invoke::invoke))
        .route("/fn/{name}/", any(invoke::invoke))
        .route("/fn/{name}/{*path}", any(invoke::invoke))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read with explicit limits in the handlers (see `read_body`), which answer
        // 413 with a JSON message rather than axum's plain-text default.
        .layer(DefaultBodyLimit::disable())
        // Failures are logged once, by `HostError`, with their reason.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

/// Serves `state` on `listener` (and the admin API on `admin_listener` when given, then not on
/// `listener`) until `shutdown` resolves, then drains in-flight requests for up to
/// [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Load the registry before the first request, so that request and the refresher see the
    // same snapshot (a miss remembered in a placeholder snapshot would be lost a moment later).
    match state.registry.refresh().await {
        // Functions deployed before this host started are compiled (or loaded from the disk
        // cache) in the background right away.
        Ok(_) => state.registry.precompile(),
        Err(e) => tracing::warn!("could not load the function registry yet (will retry): {e}"),
    }
    // Aborted once serving ends; until then it keeps this host's view of the registry fresh.
    let refresher = tokio::spawn(state.registry.clone().keep_fresh());
    // Writes this host into the store every few seconds until serving ends.
    let heartbeat = fleet::HeartbeatTask::start(
        state.fleet.clone(),
        state.backend.clone(),
        state.metrics.clone(),
        listener.local_addr()?,
    );
    let (stop_tx, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = {
        let stopped = stopped.clone();
        move || {
            let mut stopped = stopped.clone();
            async move {
                stopped.wait_for(|s| *s).await.ok();
            }
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        stop_tx.send(true).ok();
    });
    let limits = state.settings.connections.clone();
    let serve = |listener: TcpListener, router: Router| {
        connections::serve(listener, router, limits.clone(), stop_signal())
    };
    let server = async {
        match admin_listener {
            Some(admin_listener) => {
                tokio::join!(
                    serve(listener, public_app(state.clone())),
                    serve(admin_listener, admin_app(state))
                );
            }
            None => serve(listener, app(state)).await,
        }
    };
    let mut stopped = stopped;
    tokio::select! {
        () = server => {}
        _ = async {
            stopped.wait_for(|s| *s).await.ok();
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    };
    refresher.abort();
    heartbeat.stop().await;
    Ok(())
}

/// Every path the router does not know: JSON, with where to go instead.
async fn not_found(uri: axum::http::Uri) -> HostError {
    HostError::NotFound(format!(
        "nothing at `{}`: functions are invoked at /fn/NAME/..., managed at /v1/functions/NAME \
         (PUT to deploy, GET, DELETE; /versions, POST /rollback), listed at GET /v1/functions, \
         described at /v1/openapi.json; the status page at /, health at /healthz and /readyz, \
         metrics at /metrics",
        uri.path()
    ))
}

/// A known path with the wrong method: JSON saying which methods the path takes (axum adds the
/// `Allow` header).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> HostError {
    let is_function = uri
        .path()
        .strip_prefix("/v1/functions/")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    let hint = if is_function && method == axum::http::Method::POST {
        " (to deploy, use PUT)"
    } else {
        ""
    };
    HostError::MethodNotAllowed(format!(
        "`{method}` is not allowed on `{}`{hint}; the Allow header lists what is",
        uri.path()
    ))
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, HostError> {
    state.backend.ping().await?;
    Ok("ready\n")
}

/// `GET /metrics`: Prometheus text format. Unauthenticated, like most exporters: keep the port
/// internal or filter the path at the load balancer.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    state
        .metrics
        .compiled_components
        .set(state.registry.compiled_count() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// Reads a request body of at most `limit` bytes within `deadline`; `what` names it in the 413
/// and 408 messages.
pub async fn read_body(
    request: Request<Body>,
    limit: usize,
    deadline: Duration,
    what: &str,
    flag: &str,
) -> Result<Bytes, HostError> {
    let too_large = || {
        HostError::PayloadTooLarge(format!(
            "the {what} is larger than the limit of {limit} bytes (host option {flag})"
        ))
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // Most requests (GET, HEAD, DELETE) carry no body: nothing to wait for, so no timer.
    if axum::body::HttpBody::is_end_stream(request.body()) {
        return Ok(Bytes::new());
    }
    let collected = tokio::time::timeout(
        deadline,
        Limited::new(request.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| {
        HostError::RequestTimeout(format!(
            "the {what} did not arrive within {deadline:?} (host option --body-timeout-ms); \
                 send it at once"
        ))
    })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(HostError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

//! The routers (everything on one address, or the public and admin APIs apart), their layers,
//! the health and metrics endpoints, and the JSON answers for unknown paths and wrong methods.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{any, get, post};
use tower_http::trace::TraceLayer;

use super::AppState;
use crate::error::HostError;
use crate::{admin, invoke, openapi, status};

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

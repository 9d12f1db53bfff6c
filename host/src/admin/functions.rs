//! Deploying a function (with its upload streamed and hashed), listing, showing and deleting
//! functions, and a function's recent failures.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::auth::authorize;
use super::{bad_query, check_name};
use crate::error::HostError;
use crate::failures::{self, FailureList};
use crate::openapi::{AdminFailures, ErrorBody, WasmComponent};
use crate::registry::{FunctionEntry, FunctionLimits};
use crate::server::{AppState, declared_length, drain};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// The app whose key-value namespace the function shares; defaults to the function name.
    app: Option<String>,
    /// This function's linear memory limit, at most the host's `--memory-mib`.
    memory_mib: Option<u32>,
    /// This function's CPU budget per call in milliseconds, at most the host's `--cpu-ms`.
    cpu_ms: Option<u32>,
    /// This function's kv operations per call, at most the host's `--kv-ops`.
    kv_ops: Option<u64>,
    /// This function's kv bytes per call, at most the host's `--kv-bytes`.
    kv_bytes: Option<u64>,
}

/// `PUT /v1/functions/{name}?app={app}`: validate, store and serve a component as the name's
/// newest version.
#[utoipa::path(
    put,
    path = "/v1/functions/{name}",
    tag = "admin",
    operation_id = "deploy",
    summary = "Deploy (or atomically redeploy) a function as its newest version",
    params(("name" = String, Path, description = "Function name: `[a-z0-9][a-z0-9-]{0,62}`"), DeployQuery),
    request_body(content = WasmComponent, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Deployed: the entry now current, with its version number", body = FunctionEntry),
        (status = 400, description = "Invalid name or app, an out-of-range limit, an empty upload, not WebAssembly, or a core module rather than a component", body = ErrorBody),
        (status = 413, description = "The component is larger than `--max-component-bytes`", body = ErrorBody),
        (status = 422, description = "Does not export a handler Goldfish runs, imports something Goldfish does not provide, or does not compile", body = ErrorBody),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, QueryRejection>,
    request: Request<Body>,
) -> Result<impl IntoResponse, HostError> {
    let by = authorize(&state, request.headers(), request.extensions().get())?;
    // A refusal of an authorized caller's upload reads the body first, so the caller sees the
    // message rather than a connection reset mid-send (see `drain`).
    let (app, limits) = match deploy_settings(&state, &name, query) {
        Ok(settings) => settings,
        Err(e) => {
            drain(request.into_body()).await;
            return Err(e);
        }
    };
    let (bytes, digest) = read_component(request, state.settings.max_component_bytes).await?;
    let entry = state
        .registry
        .deploy(&name, &app, bytes, digest, limits, by)
        .await?;
    state.metrics.deploys.inc();
    tracing::info!(function = %entry.name, version = entry.version, app = %entry.app, digest = %entry.digest, size = entry.size, by, "deployed");
    Ok((StatusCode::CREATED, Json(entry)))
}

/// A deploy's app and limits from its query, each checked against the host's settings.
fn deploy_settings(
    state: &AppState,
    name: &str,
    query: Result<Query<DeployQuery>, QueryRejection>,
) -> Result<(String, FunctionLimits), HostError> {
    let Query(query) = query.map_err(bad_query)?;
    check_name("function name", name)?;
    let app = query.app.unwrap_or_else(|| name.to_owned());
    check_name("app", &app)?;
    let host_mib = (state.settings.limits.max_memory_bytes >> 20) as u32;
    if let Some(mib) = query.memory_mib
        && !(1..=host_mib).contains(&mib)
    {
        return Err(HostError::BadRequest(format!(
            "memory_mib={mib} is out of range: this host allows 1 to {host_mib} MiB per instance \
             (host option --memory-mib)"
        )));
    }
    if query.kv_ops == Some(0) || query.kv_bytes == Some(0) {
        return Err(HostError::BadRequest(
            "kv_ops and kv_bytes must be at least 1 (the host's --kv-ops and --kv-bytes cap them)"
                .into(),
        ));
    }
    if query.cpu_ms == Some(0) {
        return Err(HostError::BadRequest(
            "cpu_ms=0 is out of range: give the CPU budget per call in milliseconds, at least 1 \
             (the host's --cpu-ms caps it)"
                .into(),
        ));
    }
    Ok((
        app,
        FunctionLimits {
            memory_mib: query.memory_mib,
            cpu_ms: query.cpu_ms,
            kv_ops: query.kv_ops,
            kv_bytes: query.kv_bytes,
        },
    ))
}

/// `GET /v1/functions`: every deployed function.
#[utoipa::path(
    get,
    path = "/v1/functions",
    tag = "admin",
    operation_id = "list",
    summary = "List every deployed function (its current entry)",
    responses(
        (status = 200, description = "Every deployed function", body = Vec<FunctionEntry>),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Json<Vec<FunctionEntry>>, HostError> {
    authorize(&state, request.headers(), request.extensions().get())?;
    Ok(Json(state.registry.list().await?))
}

/// `GET /v1/functions/{name}`.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    tag = "admin",
    operation_id = "show",
    summary = "Show one function's current entry",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "The function's current entry", body = FunctionEntry),
        (status = 400, description = "Invalid function name", body = ErrorBody),
        (status = 404, description = "No function of that name is deployed", body = ErrorBody),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Json<FunctionEntry>, HostError> {
    authorize(&state, request.headers(), request.extensions().get())?;
    check_name("function name", &name)?;
    let entry = state.registry.get(&name).await?;
    entry
        .map(Json)
        .ok_or_else(|| HostError::NotFound(format!("no function named `{name}` is deployed")))
}

/// `DELETE /v1/functions/{name}`: 204; later invocations get 404.
#[utoipa::path(
    delete,
    path = "/v1/functions/{name}",
    tag = "admin",
    operation_id = "remove",
    summary = "Delete a function with all its versions",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 204, description = "Deleted; its versions, its recent failures and any bytes nothing else uses are gone"),
        (status = 400, description = "Invalid function name", body = ErrorBody),
        (status = 404, description = "No function of that name is deployed", body = ErrorBody),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<StatusCode, HostError> {
    authorize(&state, request.headers(), request.extensions().get())?;
    check_name("function name", &name)?;
    if state.registry.delete(&name).await? {
        tracing::info!(function = %name, "deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HostError::NotFound(format!(
            "no function named `{name}` is deployed"
        )))
    }
}

/// `GET /v1/functions/{name}/errors`: the function's recent failures, newest first, from every
/// host, with the detail its callers were not shown.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/errors",
    tag = "admin",
    operation_id = "errors",
    summary = "List a function's recent failures (its 5xx answers), newest first",
    description = "Every host records the server-side failures of invocations in the store: \
        when, the request id the caller got, the status, the class, the whole detail (trap and \
        guest function, the guest's last stderr line, Redis' words) and the host. The last 50 \
        per function are kept, for 7 days after the latest. Answers at a host's capacity \
        limits (503 that say which limit) are not recorded.",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "The recent failures, newest first (none: an empty list)", body = FailureList),
        (status = 400, description = "Invalid function name", body = ErrorBody),
        (status = 404, description = "No function of that name is deployed", body = ErrorBody),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn errors(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Json<FailureList>, HostError> {
    authorize(&state, request.headers(), request.extensions().get())?;
    check_name("function name", &name)?;
    if state.registry.get(&name).await?.is_none() {
        return Err(HostError::NotFound(format!(
            "no function named `{name}` is deployed"
        )));
    }
    let errors = failures::recent(&state.backend, &name).await?;
    Ok(Json(FailureList { name, errors }))
}

/// Streams an upload of at most `limit` bytes into one buffer, hashing it on the way: the bytes
/// are held once, and the SHA-256 that names them is ready when the last frame arrives.
async fn read_component(
    request: Request<Body>,
    limit: usize,
) -> Result<(Bytes, String), HostError> {
    let too_large = || {
        HostError::PayloadTooLarge(format!(
            "the component is larger than the limit of {limit} bytes (host option --max-component-bytes)"
        ))
    };
    let declared = declared_length(request.headers());
    let mut body = request.into_body();
    if declared.is_some_and(|len| len > limit as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| HostError::BadRequest(format!("could not read the upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                drain(body).await;
                return Err(too_large());
            }
            hasher.update(&data);
            bytes.extend_from_slice(&data);
        }
    }
    if bytes.is_empty() {
        return Err(HostError::BadRequest(
            "the upload is empty; send the component as the body (curl: --data-binary @file.wasm, \
             and check the file name)"
                .into(),
        ));
    }
    Ok((Bytes::from(bytes), hex::encode(hasher.finalize())))
}

//! The admin API: deploy, list, show and delete functions, list their versions and roll back,
//! read their recent failures.
//! Every route needs `Authorization: Bearer TOKEN`; without a configured token the whole API
//! answers 403. Each handler's `#[utoipa::path]` is its entry in `GET /v1/openapi.json`
//! ([`crate::openapi`]): statuses and bodies are documented where they are produced.

use axum::Json;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::error::HostError;
use crate::failures::{self, FailureList};
use crate::openapi::{AdminFailures, ErrorBody, WasmComponent};
use crate::registry::{FunctionEntry, FunctionLimits, is_valid_name};
use crate::server::AppState;

/// Who a deploy is recorded as (`by`): the label of the one admin token there is today.
pub const ADMIN_TOKEN_LABEL: &str = "admin";

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
    let Query(query) = query.map_err(bad_query)?;
    check_name("function name", &name)?;
    let app = query.app.unwrap_or_else(|| name.clone());
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
    let (bytes, digest) = read_component(request, state.settings.max_component_bytes).await?;
    let entry = state
        .registry
        .deploy(
            &name,
            &app,
            bytes,
            digest,
            FunctionLimits {
                memory_mib: query.memory_mib,
                cpu_ms: query.cpu_ms,
                kv_ops: query.kv_ops,
                kv_bytes: query.kv_bytes,
            },
            by,
        )
        .await?;
    state.metrics.deploys.inc();
    tracing::info!(function = %entry.name, version = entry.version, app = %entry.app, digest = %entry.digest, size = entry.size, by, "deployed");
    Ok((StatusCode::CREATED, Json(entry)))
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
        (status = 204, description = "Deleted; its versions and any bytes nothing else uses are gone"),
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

/// `GET /v1/functions/{name}/versions`: what a rollback can go back to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    pub name: String,
    /// The version serving now.
    pub current: u64,
    /// Every kept version, newest first.
    pub versions: Vec<ListedVersion>,
}

/// One kept version: the entry it was deployed as, and whether it is the one serving now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListedVersion {
    #[serde(flatten)]
    pub entry: FunctionEntry,
    pub current: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RollbackQuery {
    /// The kept version to make current; default: the newest version older than the current
    /// one.
    #[param(value_type = Option<u64>, minimum = 1)]
    to: Option<String>,
}

/// `GET /v1/functions/{name}/versions`: the kept versions, newest first, the current one marked.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/versions",
    tag = "admin",
    operation_id = "versions",
    summary = "List a function's kept versions, newest first",
    params(("name" = String, Path, description = "Function name")),
    responses(
        (status = 200, description = "The kept versions, newest first, the current one marked", body = VersionList),
        (status = 400, description = "Invalid function name", body = ErrorBody),
        (status = 404, description = "No function of that name is deployed", body = ErrorBody),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Json<VersionList>, HostError> {
    authorize(&state, request.headers(), request.extensions().get())?;
    check_name("function name", &name)?;
    let (current, history) = state.registry.versions(&name).await?;
    let versions = history
        .into_iter()
        .map(|entry| ListedVersion {
            current: entry.version == current.version,
            entry,
        })
        .collect();
    Ok(Json(VersionList {
        name,
        current: current.version,
        versions,
    }))
}

/// `POST /v1/functions/{name}/rollback?to={version}`: point the name at a kept version, as
/// atomically as a deploy.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/rollback",
    tag = "admin",
    operation_id = "rollback",
    summary = "Point a function back at one of its kept versions",
    description = "Atomic like a deploy: every host serves the version within a second, and \
        requests already running finish on the version they started with. Rolling back to the \
        current version changes nothing.",
    params(("name" = String, Path, description = "Function name"), RollbackQuery),
    responses(
        (status = 200, description = "The entry now current", body = FunctionEntry),
        (status = 400, description = "Invalid function name or `to`", body = ErrorBody),
        (status = 404, description = "No function of that name, or no kept version `to`", body = ErrorBody),
        (status = 409, description = "No `to` given and the current version is the oldest kept", body = ErrorBody),
        AdminFailures,
    ),
    security(("admin_token" = []))
)]
pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RollbackQuery>, QueryRejection>,
    request: Request<Body>,
) -> Result<Json<FunctionEntry>, HostError> {
    let by = authorize(&state, request.headers(), request.extensions().get())?;
    let Query(query) = query.map_err(bad_query)?;
    check_name("function name", &name)?;
    let to = match query.to.as_deref() {
        None => None,
        Some(to) => match to.parse::<u64>() {
            Ok(version) if version > 0 => Some(version),
            _ => {
                return Err(HostError::BadRequest(format!(
                    "invalid version `{to}`: give a version number from GET \
                     /v1/functions/{name}/versions, or leave `to` out for the previous one"
                )));
            }
        },
    };
    let entry = state.registry.rollback(&name, to).await?;
    tracing::info!(function = %name, version = entry.version, digest = %entry.digest, by, "rolled back");
    Ok(Json(entry))
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

/// A query string that does not parse, as the JSON 400 every other error is.
fn bad_query(rejection: QueryRejection) -> HostError {
    HostError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
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
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut body = request.into_body();
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| HostError::BadRequest(format!("could not read the upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
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

fn check_name(what: &str, name: &str) -> Result<(), HostError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(HostError::BadRequest(format!(
            "invalid {what} `{name}`: use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit"
        )))
    }
}

/// Checks the bearer token and returns the label it is recorded under. A client address that
/// failed too often recently is refused (429) before its token is even looked at; every failure
/// counts against its address.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<&ConnectInfo<SocketAddr>>,
) -> Result<&'static str, HostError> {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Err(HostError::AdminDisabled);
    };
    let address = client.map(|ConnectInfo(addr)| addr.ip());
    if let Some(address) = address {
        state.auth_failures.check(address)?;
    }
    let outcome = check_token(headers, expected);
    if outcome.is_err()
        && let Some(address) = address
    {
        state.auth_failures.record(address);
    }
    outcome.map(|()| ADMIN_TOKEN_LABEL)
}

fn check_token(headers: &HeaderMap, expected: &str) -> Result<(), HostError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            HostError::Unauthorized("missing `Authorization: Bearer TOKEN` header".into())
        })?
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            HostError::Unauthorized("the Authorization header must be `Bearer TOKEN`".into())
        })?;
    if tokens_match(value, expected) {
        Ok(())
    } else {
        Err(HostError::Unauthorized("wrong admin token".into()))
    }
}

/// Compares SHA-256 digests without an early exit: timing reveals neither how much of a guessed
/// token was right nor how long the real one is.
fn tokens_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secret", "secreT"));
        assert!(!tokens_match("secret", "secret2"));
        assert!(!tokens_match("", "secret"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert!(check_token(&headers, "s3cret").is_ok(), "{value}");
        }
        headers.insert(
            header::AUTHORIZATION,
            "Basic s3cret".parse().expect("header"),
        );
        assert!(check_token(&headers, "s3cret").is_err());
    }
}

//! The admin API: deploy, list, show and delete functions. Every route needs
//! `Authorization: Bearer TOKEN`; without a configured token the whole API answers 403.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::HostError;
use crate::registry::{FunctionEntry, is_valid_name};
use crate::server::AppState;

#[derive(Deserialize)]
pub struct DeployQuery {
    app: Option<String>,
    /// This function's linear memory limit, at most the host's `--memory-mib`.
    memory_mib: Option<u32>,
}

/// `PUT /v1/functions/{name}?app={app}`: validate, store and serve a component.
pub async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DeployQuery>,
    request: Request<Body>,
) -> Result<impl IntoResponse, HostError> {
    authorize(&state, request.headers())?;
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
    let (bytes, digest) = read_component(request, state.settings.max_component_bytes).await?;
    let entry = state
        .registry
        .deploy(&name, &app, bytes, digest, query.memory_mib)
        .await?;
    state.metrics.deploys.inc();
    tracing::info!(function = %entry.name, app = %entry.app, digest = %entry.digest, size = entry.size, "deployed");
    Ok((StatusCode::CREATED, Json(entry)))
}

/// `GET /v1/functions`: every deployed function.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<FunctionEntry>>, HostError> {
    authorize(&state, &headers)?;
    Ok(Json(state.registry.list().await?))
}

/// `GET /v1/functions/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<FunctionEntry>, HostError> {
    authorize(&state, &headers)?;
    check_name("function name", &name)?;
    let entry = state.registry.get(&name).await?;
    entry
        .map(Json)
        .ok_or_else(|| HostError::NotFound(format!("no function named `{name}` is deployed")))
}

/// `DELETE /v1/functions/{name}`: 204; later invocations get 404.
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, HostError> {
    authorize(&state, &headers)?;
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

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), HostError> {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Err(HostError::AdminDisabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            HostError::Unauthorized("missing `Authorization: Bearer TOKEN` header".into())
        })?
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            HostError::Unauthorized("the Authorization header must be `Bearer TOKEN`".into())
        })?;
    if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(HostError::Unauthorized("wrong admin token".into()))
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}

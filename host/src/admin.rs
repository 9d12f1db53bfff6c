//! The admin API: deploy, list, show and delete functions. Every route needs
//! `Authorization: Bearer TOKEN`; without a configured token the whole API answers 403.

use axum::Json;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
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
    authorize(&state, request.headers(), request.extensions().get())?;
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
    request: Request<Body>,
) -> Result<Json<Vec<FunctionEntry>>, HostError> {
    authorize(&state, request.headers(), request.extensions().get())?;
    Ok(Json(state.registry.list().await?))
}

/// `GET /v1/functions/{name}`.
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

/// Checks the bearer token. A client address that failed too often recently is refused (429)
/// before its token is even looked at; every failure counts against its address.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<&ConnectInfo<SocketAddr>>,
) -> Result<(), HostError> {
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
    outcome
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

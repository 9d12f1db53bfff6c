//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the admin and invoke APIs, derived at
//! compile time from the `#[utoipa::path]` annotations on the handlers and the `ToSchema` types
//! they answer with, so it cannot drift from the code. Served without auth: it is documentation.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::admin::{self, ListedVersion, VersionList};
use crate::error::{FailureClass, HostError};
use crate::failures::{FailureList, FailureRecord};
use crate::registry::FunctionEntry;

/// Every error the host answers with.
// Built by `HostError`'s `IntoResponse` and `into_invoke_response`; a unit test keeps them in
// step.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it. For a failure of an invocation: its class
    /// only (the function trapped, ran out of memory, ...) and where the operator finds the
    /// detail.
    pub error: String,
    /// Invocations only: the request id, as in the `x-request-id` header, to find the
    /// failure in `GET /v1/functions/{name}/errors` and the host log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A WebAssembly component's bytes, as uploaded.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct WasmComponent(pub Vec<u8>);

/// The failures every admin route can answer with, whatever it does.
#[derive(IntoResponses)]
pub enum AdminFailures {
    /// Missing or wrong bearer token.
    #[response(
        status = 401,
        description = "Missing or wrong `Authorization: Bearer TOKEN`"
    )]
    Unauthorized(ErrorBody),
    /// The host has no admin token configured.
    #[response(
        status = 403,
        description = "The admin API is disabled: the host has no `--admin-token`"
    )]
    Disabled(ErrorBody),
    /// Too many failed logins from this address.
    #[response(
        status = 429,
        description = "Too many failed logins from this address; wait `Retry-After` seconds"
    )]
    TooManyFailures(ErrorBody),
    /// The store is unreachable, or the host is busy.
    #[response(
        status = 503,
        description = "Redis is unreachable, or the host is busy (compile slots, contention); retry"
    )]
    Unavailable(ErrorBody),
}

/// The OpenAPI document. Every admin handler is listed here; the invoke API, whose handler
/// serves every method, is described by [`invoke_function`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Goldfish",
        description = "A serverless WebAssembly function host: every request runs on a fresh \
            instance, all state lives in Redis. The admin API (`/v1/`) needs \
            `Authorization: Bearer TOKEN`; functions are invoked at `/fn/{name}/...`."
    ),
    paths(
        admin::deploy,
        admin::list,
        admin::show,
        admin::remove,
        admin::versions,
        admin::rollback,
        admin::errors,
        invoke_function,
        document,
    ),
    components(schemas(
        ErrorBody,
        FunctionEntry,
        VersionList,
        ListedVersion,
        FailureList,
        FailureRecord,
        FailureClass
    )),
    modifiers(&AdminToken, &UniqueOperationIds),
    tags(
        (name = "admin", description = "Deploy, inspect, delete and roll back functions, read their failures"),
        (name = "invoke", description = "Call a deployed function"),
    )
)]
pub struct ApiDoc;

/// Declares the `admin_token` bearer scheme the admin operations refer to.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The host's `--admin-token` (env `GOLDFISH_ADMIN_TOKEN`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Suffixes an operation id that several methods share with its method (`invoke_get`, ...):
/// OpenAPI wants every id unique, and `#[utoipa::path(method(...))]` repeats it.
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in openapi.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                if let Some(id) = &operation.operation_id {
                    *seen.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for item in openapi.paths.paths.values_mut() {
            for (method, operation) in operations(item) {
                if let Some(id) = &mut operation.operation_id
                    && seen.get(id.as_str()).is_some_and(|n| *n > 1)
                {
                    *id = format!("{id}_{method}");
                }
            }
        }
    }
}

/// The operations of a path item, with their method names.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}

/// The document as JSON, built once: it only changes with the code.
fn document_json() -> Result<&'static str, HostError> {
    static JSON: OnceLock<Result<String, String>> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| HostError::Internal(format!("cannot serialize the OpenAPI document: {e}")))
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "admin",
    operation_id = "openapi",
    summary = "This document (no token needed)",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn document() -> Result<Response, HostError> {
    let json = document_json()?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Documentation only: the handler, [`crate::invoke::invoke`], is routed for every method (and
/// for `/fn/{name}` too), which a `#[utoipa::path]` on it could not say. `/fn/{name}` is not a
/// path of its own here: it answers exactly as `/fn/{name}/` does, with the same statuses.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/fn/{name}/{path}",
    tag = "invoke",
    operation_id = "invoke",
    summary = "Invoke a function (any method)",
    description = "Any method. The guest receives the method, the path below `/fn/{name}` \
        (raw, not percent-decoded; `/fn/{name}` and `/fn/{name}/` reach it as `/`), the raw \
        query, the headers and the body, on a fresh instance. Every answer carries an \
        `x-request-id` header, which tags the guest's output in the host log. A failure the \
        host answers for says only its class (trapped, stack overflow, memory limit, CPU \
        budget, invalid HTTP, storage unavailable, at capacity, time limit) and the request \
        id; the detail is in `GET /v1/functions/{name}/errors` and the host log.",
    params(
        ("name" = String, Path, description = "Function name"),
        ("path" = String, Path, description = "The path the function sees, below `/fn/{name}`; may contain slashes"),
    ),
    request_body(content = String, content_type = "application/octet-stream", description = "Passed to the function as is"),
    responses(
        (status = "default", description = "The function's own answer"),
        (status = 404, description = "No function of that name is deployed", body = ErrorBody),
        (status = 413, description = "The body is larger than `--max-body-bytes`; the function never ran", body = ErrorBody),
        (status = 500, description = "The function trapped, overflowed its stack, hit its memory limit or CPU budget, or cannot be loaded", body = ErrorBody),
        (status = 502, description = "The function answered with an invalid status, header or body", body = ErrorBody),
        (status = 503, description = "The host is at capacity (requests in flight, instance slots or pool, the function's concurrency) or Redis is unreachable; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 504, description = "The function ran past `--timeout-ms`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn invoke_function() {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_host_error_body_is_the_documented_error_body() {
        let invoke_failure = HostError::Failed {
            class: FailureClass::Trapped,
            detail: "x".into(),
        };
        for response in [
            HostError::BadRequest("x".into()).into_response(),
            HostError::Conflict("x".into()).into_response(),
            HostError::Internal("secret detail".into()).into_response(),
            invoke_failure.into_invoke_response("0123", Some("f")),
        ] {
            let body = response.into_body().collect().await;
            let bytes = body.map(|b| b.to_bytes()).unwrap_or_default();
            let parsed: Result<ErrorBody, _> = serde_json::from_slice(&bytes);
            assert!(parsed.is_ok(), "{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_admin_and_invoke_path() {
        let json = document_json().map(str::to_owned).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        for path in [
            "/v1/functions",
            "/v1/functions/{name}",
            "/v1/functions/{name}/versions",
            "/v1/functions/{name}/rollback",
            "/v1/functions/{name}/errors",
            "/v1/openapi.json",
            "/fn/{name}/{path}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
        }
    }
}

//! A function's kept versions, and rolling back to one of them.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::Request;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::authorize;
use super::{bad_query, check_name};
use crate::error::HostError;
use crate::openapi::{AdminFailures, ErrorBody};
use crate::registry::FunctionEntry;
use crate::server::AppState;

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

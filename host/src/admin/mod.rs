//! The admin API: deploy, list, show and delete functions, list their versions and roll back,
//! read their recent failures.
//! Every route needs `Authorization: Bearer TOKEN`; without a configured token the whole API
//! answers 403. Each handler's `#[utoipa::path]` is its entry in `GET /v1/openapi.json`
//! ([`crate::openapi`]): statuses and bodies are documented where they are produced.
//!
//! Split by responsibility: [`functions`] (deploy with its upload, list, show, delete, recent
//! failures), [`versions`] (the kept versions and rollback), [`auth`] (the bearer token and
//! failed logins); this file holds the checks every handler shares.

mod auth;
mod functions;
mod versions;

use axum::extract::rejection::QueryRejection;

use crate::error::HostError;
use crate::registry::is_valid_name;

pub use auth::ADMIN_TOKEN_LABEL;
// Globs, because `#[utoipa::path]` puts each handler's OpenAPI entry beside it as a `__path_*`
// item, which `crate::openapi` names through this module.
pub use functions::*;
pub use versions::*;

/// A query string that does not parse, as the JSON 400 every other error is.
fn bad_query(rejection: QueryRejection) -> HostError {
    HostError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
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

//! Who may call the admin API: the bearer token, compared in constant time, and failed logins
//! counted against the client's address.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::error::HostError;
use crate::server::AppState;

/// Who a deploy is recorded as (`by`): the label of the one admin token there is today.
pub const ADMIN_TOKEN_LABEL: &str = "admin";

/// Checks the bearer token and returns the label it is recorded under. A client address that
/// failed too often recently is refused (429) before its token is even looked at; every failure
/// counts against its address.
pub(super) fn authorize(
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

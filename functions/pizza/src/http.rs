//! The HTTP edges both functions share: the [`Reply`] they build, the session cookie, and the
//! `Idempotency-Key` header.
//!
//! [`Reply`] mirrors the WIT `response` record so that this crate needs no bindings; each guest
//! turns it into its generated `Response` field by field.

use serde::Serialize;

use crate::ApiError;

/// The cookie that carries a client's session id.
pub const SESSION_COOKIE: &str = "goldfish_session";

/// How long an `Idempotency-Key` may be, in bytes.
const IDEMPOTENCY_KEY_LEN: std::ops::RangeInclusive<usize> = 1..=128;

/// A response, before the guest converts it to the WIT `response` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON reply with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body,
            },
            // Only maps with non-string keys or failing `Serialize` impls can get here, and none of
            // this crate's types has either; answer rather than trap if one ever does.
            Err(error) => ApiError::Internal(format!("serializing a reply: {error}")).into_reply(),
        }
    }

    /// This reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// `path` without one trailing slash, so `/items/` routes like `/items`; the root stays `/`.
pub fn route_path(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// Accepts `method` only if it is `allowed`; anything else is a 405 naming `allowed`.
pub fn require_method(method: &str, allowed: &'static str) -> Result<(), ApiError> {
    if method == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed { allow: allowed })
    }
}

/// Every value of header `name` (lower case, as the host delivers names), in order.
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The session id from the first valid `goldfish_session` cookie, if any.
///
/// Reads every `cookie` header (a client may send several) as `name=value` pairs separated by `;`.
/// The id becomes part of kv keys, so a value that is not [`crate::ids::is_well_formed`] counts as
/// no session at all.
pub fn session_from_cookies(headers: &[(String, String)]) -> Option<String> {
    header_values(headers, "cookie")
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| name.trim() == SESSION_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .find(|value| crate::ids::is_well_formed(value))
        .map(str::to_owned)
}

/// The `set-cookie` value that gives a client the session `id`.
pub fn session_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; HttpOnly; Path=/; SameSite=Lax")
}

/// The request's `Idempotency-Key`, if it sent one.
///
/// A key is 1 to 128 visible ASCII characters (`!` to `~`); anything else, or more than one
/// such header, is a 400 rather than being silently ignored, because ignoring it could create a
/// second order.
pub fn idempotency_key(headers: &[(String, String)]) -> Result<Option<String>, ApiError> {
    let mut values = header_values(headers, "idempotency-key");
    let Some(key) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "send at most one Idempotency-Key header".to_owned(),
        ));
    }
    let visible = key.bytes().all(|byte| byte.is_ascii_graphic());
    if !IDEMPOTENCY_KEY_LEN.contains(&key.len()) || !visible {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 128 visible ASCII characters (no spaces)".to_owned(),
        ));
    }
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_trailing_slash_routes_like_none() {
        assert_eq!(route_path("/items/"), "/items");
        assert_eq!(route_path("/items"), "/items");
        assert_eq!(route_path("/"), "/");
    }

    #[test]
    fn only_the_allowed_method_passes() {
        assert_eq!(require_method("POST", "POST"), Ok(()));
        assert_eq!(
            require_method("GET", "POST"),
            Err(ApiError::MethodNotAllowed { allow: "POST" })
        );
    }

    #[test]
    fn finds_the_session_among_other_cookies() {
        let cookie = format!("theme=dark; goldfish_session={ID}; lang=en");
        assert_eq!(
            session_from_cookies(&headers(&[("cookie", &cookie)])),
            Some(ID.to_owned())
        );
    }

    #[test]
    fn finds_the_session_in_a_second_cookie_header() {
        let cookie = format!("goldfish_session={ID}");
        let request = headers(&[("cookie", "theme=dark"), ("cookie", &cookie)]);
        assert_eq!(session_from_cookies(&request), Some(ID.to_owned()));
    }

    #[test]
    fn no_cookie_is_no_session() {
        assert_eq!(session_from_cookies(&headers(&[("accept", "*/*")])), None);
        assert_eq!(
            session_from_cookies(&headers(&[("cookie", "goldfish_sessionx=abc")])),
            None
        );
    }

    #[test]
    fn a_malformed_session_id_is_no_session() {
        for bad in [
            "short",
            "has:colon:0123456789abcdef",
            &"a".repeat(65),
            "",
            "0123456789abcdef\u{7f}",
        ] {
            let cookie = format!("goldfish_session={bad}");
            assert_eq!(
                session_from_cookies(&headers(&[("cookie", &cookie)])),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_set_cookie_value_is_http_only_and_site_wide() {
        assert_eq!(
            session_cookie("abc"),
            "goldfish_session=abc; HttpOnly; Path=/; SameSite=Lax"
        );
    }

    #[test]
    fn no_idempotency_key_is_none() {
        assert_eq!(idempotency_key(&headers(&[])), Ok(None));
    }

    #[test]
    fn a_visible_ascii_idempotency_key_is_accepted() {
        let request = headers(&[("idempotency-key", "order-42_!~")]);
        assert_eq!(
            idempotency_key(&request),
            Ok(Some("order-42_!~".to_owned()))
        );
        let longest = "k".repeat(128);
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", &longest)])),
            Ok(Some(longest))
        );
    }

    #[test]
    fn a_bad_idempotency_key_is_a_400() {
        for bad in ["", "has space", "caf\u{e9}", &"k".repeat(129)] {
            let result = idempotency_key(&headers(&[("idempotency-key", bad)]));
            assert!(
                matches!(result, Err(ApiError::BadRequest(_))),
                "{bad:?}: {result:?}"
            );
        }
    }

    #[test]
    fn two_idempotency_keys_are_a_400() {
        let request = headers(&[("idempotency-key", "a"), ("idempotency-key", "b")]);
        assert!(matches!(
            idempotency_key(&request),
            Err(ApiError::BadRequest(_))
        ));
    }
}

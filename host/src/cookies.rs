//! Cookies scoped per app. Every function is served from one origin, so a browser sends all of
//! its cookies for that origin to every function; without this, a function of any app could
//! read (and replay) another app's session cookie, and set cookies another app then trusts.
//!
//! The host renames what guests set and filters what they receive:
//! - a `Set-Cookie: sid=...` from a guest of app `pizza` reaches the client as `pizza.sid=...`
//!   (`__Host-sid` as `__Host-pizza.sid`, so the browser still enforces the prefix); a `Domain`
//!   attribute is dropped, so no cookie reaches beyond this host; other attributes stay as set;
//! - on a request to a function of `pizza`, the guest gets only the cookies named `pizza.*`,
//!   with the prefix removed, in one `Cookie` header; every other cookie is withheld.
//!
//! App names are `[a-z0-9-]`, never containing `.`, so `pizza.` is no other app's prefix. Guests
//! see exactly the names they set; functions of one app share their cookies.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

/// Cookie-name prefixes the browser gives meaning to; they must stay at the front of the name.
const BROWSER_PREFIXES: [&[u8]; 2] = [b"__Host-", b"__Secure-"];

/// Replaces the request's `Cookie` headers with one holding only `app`'s cookies, under the
/// names its guests set. Does nothing (and allocates nothing) when there is no `Cookie` header.
pub fn scope_request(app: &str, headers: &mut HeaderMap) {
    if !headers.contains_key(COOKIE) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            let Some((browser_prefix, name)) = unscoped(app, trim(&pair[..eq])) else {
                continue;
            };
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(browser_prefix);
            kept.extend_from_slice(name);
            kept.extend_from_slice(&pair[eq..]);
        }
    }
    headers.remove(COOKIE);
    if kept.is_empty() {
        return;
    }
    // Built from pieces of valid header values, so it is a valid value too.
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        headers.insert(COOKIE, value);
    }
}

/// Renames every cookie the guest of `app` sets into the app's scope and drops `Domain`. A
/// `Set-Cookie` a browser would ignore anyway (no `name=`, an invalid name) is removed. Does
/// nothing when there is no `Set-Cookie` header.
pub fn scope_response(app: &str, headers: &mut HeaderMap) {
    if !headers.contains_key(SET_COOKIE) {
        return;
    }
    let scoped: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| scoped_set_cookie(app, value.as_bytes()))
        .collect();
    headers.remove(SET_COOKIE);
    for value in scoped {
        headers.append(SET_COOKIE, value);
    }
}

/// One `Set-Cookie` value with its name in `app`'s scope and without `Domain`.
fn scoped_set_cookie(app: &str, set_cookie: &[u8]) -> Option<HeaderValue> {
    let mut parts = set_cookie.split(|b| *b == b';');
    let pair = parts.next()?;
    let eq = pair.iter().position(|b| *b == b'=')?;
    let name = trim(&pair[..eq]);
    if !is_token(name) {
        return None;
    }
    let (browser_prefix, name) = split_browser_prefix(name);
    if name.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(set_cookie.len() + app.len() + 1);
    out.extend_from_slice(browser_prefix);
    out.extend_from_slice(app.as_bytes());
    out.push(b'.');
    out.extend_from_slice(name);
    out.push(b'=');
    out.extend_from_slice(trim(&pair[eq + 1..]));
    for attribute in parts.map(trim).filter(|a| !a.is_empty()) {
        let attribute_name = attribute.split(|b| *b == b'=').next().map(trim);
        if attribute_name.is_some_and(|n| n.eq_ignore_ascii_case(b"domain")) {
            continue;
        }
        out.extend_from_slice(b"; ");
        out.extend_from_slice(attribute);
    }
    HeaderValue::from_bytes(&out).ok()
}

/// `(browser prefix, name)` of a cookie the client sent under `app`'s scope, with the app's
/// prefix removed; `None` for any other cookie.
fn unscoped<'a>(app: &str, scoped: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let (browser_prefix, rest) = split_browser_prefix(scoped);
    let name = rest
        .strip_prefix(app.as_bytes())?
        .strip_prefix(b".".as_slice())?;
    (!name.is_empty()).then_some((browser_prefix, name))
}

/// Splits `__Host-`/`__Secure-` (any case, as browsers match them) off the front of a name.
fn split_browser_prefix(name: &[u8]) -> (&[u8], &[u8]) {
    for prefix in BROWSER_PREFIXES {
        if name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return name.split_at(prefix.len());
        }
    }
    (&[], name)
}

/// An RFC 9110 token: what a cookie name must be.
fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(app: &str, cookies: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(COOKIE, HeaderValue::from_str(cookie).expect("valid"));
        }
        scope_request(app, &mut headers);
        assert!(
            headers.get_all(COOKIE).iter().count() <= 1,
            "one Cookie header"
        );
        headers
            .get(COOKIE)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    fn response(app: &str, set_cookies: &[&[u8]]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        for set_cookie in set_cookies {
            headers.append(
                SET_COOKIE,
                HeaderValue::from_bytes(set_cookie).expect("valid"),
            );
        }
        scope_response(app, &mut headers);
        assert!(headers.contains_key("content-type"), "other headers stay");
        headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn a_guest_sees_only_its_apps_cookies_under_the_names_it_set() {
        let jar =
            "theme=dark; pizza.goldfish_session=abc; evil.goldfish_session=zzz; pizza.lang=en";
        assert_eq!(
            request("pizza", &[jar]).as_deref(),
            Some("goldfish_session=abc; lang=en")
        );
        assert_eq!(
            request("evil", &[jar]).as_deref(),
            Some("goldfish_session=zzz")
        );
        assert_eq!(
            request("shop", &[jar]),
            None,
            "no cookie of its own, no header"
        );
    }

    #[test]
    fn another_apps_prefix_inside_a_name_is_still_the_other_app() {
        // What app `evil` gets back after setting `pizza.goldfish_session`.
        let jar = "evil.pizza.goldfish_session=forged; pizza-2.x=1; pizzax=1; pizza.=1";
        assert_eq!(request("pizza", &[jar]), None);
        assert_eq!(
            request("evil", &[jar]).as_deref(),
            Some("pizza.goldfish_session=forged")
        );
    }

    #[test]
    fn several_cookie_headers_become_one_and_malformed_pairs_are_dropped() {
        let sent = [
            "pizza.a=1;;  pizza.b = 2 ",
            "junk; =x; pizza.c=; pizza.d=x=y",
            "pizza.e=\"quoted\"",
        ];
        assert_eq!(
            request("pizza", &sent).as_deref(),
            Some("a=1; b= 2; c=; d=x=y; e=\"quoted\"")
        );
    }

    #[test]
    fn no_cookie_header_is_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("*/*"));
        scope_request("pizza", &mut headers);
        scope_response("pizza", &mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn a_set_cookie_is_renamed_into_the_apps_scope_with_its_attributes() {
        assert_eq!(
            response(
                "pizza",
                &[b"goldfish_session=abc; HttpOnly; Path=/; SameSite=Lax"]
            ),
            ["pizza.goldfish_session=abc; HttpOnly; Path=/; SameSite=Lax"]
        );
    }

    #[test]
    fn a_guest_cannot_set_a_cookie_another_app_receives() {
        let set = response("evil", &[b"pizza.goldfish_session=forged; Path=/"]);
        assert_eq!(set, ["evil.pizza.goldfish_session=forged; Path=/"]);
        let name_value = set[0].split(';').next().expect("a pair");
        assert_eq!(request("pizza", &[name_value]), None);
    }

    #[test]
    fn domain_is_dropped_and_browser_prefixes_stay_in_front() {
        assert_eq!(
            response(
                "pizza",
                &[
                    b"sid=1; Domain=example.com; Secure; domain = .evil.test",
                    b"__Host-sid=2; Path=/; Secure",
                    b"__secure-x=3; Secure",
                ]
            ),
            [
                "pizza.sid=1; Secure",
                "__Host-pizza.sid=2; Path=/; Secure",
                "__secure-pizza.x=3; Secure",
            ]
        );
        assert_eq!(
            request("pizza", &["__Host-pizza.sid=2; __Secure-evil.x=1"]).as_deref(),
            Some("__Host-sid=2")
        );
    }

    #[test]
    fn set_cookies_a_browser_would_ignore_are_removed() {
        assert!(
            response(
                "pizza",
                &[b"no-equals-sign", b"=nameless", b"bad name=1", b"__Host-=1"]
            )
            .is_empty()
        );
        // Bytes beyond ASCII in a value are kept as they were.
        assert_eq!(
            response("pizza", &[b"v=caf\xc3\xa9; Path=/"]),
            ["pizza.v=caf\u{e9}; Path=/"]
        );
    }
}

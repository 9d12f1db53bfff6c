//! The `goldfish:function/function` world: the request becomes the WIT `request` record, one
//! call to `handle`, and the WIT `response` is checked before it becomes HTTP.

use http::{HeaderName, HeaderValue, StatusCode};
use wasmtime::Store;

use crate::bindings::goldfish::{FunctionPre, Request, Response};
use crate::engine::HostState;
use crate::worlds::{GuestRequest, GuestResponse};

/// The name of the one export the goldfish world has.
pub const HANDLE_EXPORT: &str = "handle";

/// Instantiates `pre` in `store`, calls `on_instance` once the instance exists, and runs
/// `handle`. The outer `Err` is a trap; the inner one says why the answer is not valid HTTP.
pub async fn run(
    pre: &FunctionPre<HostState>,
    store: &mut Store<HostState>,
    request: GuestRequest,
    on_instance: impl FnOnce(),
) -> wasmtime::Result<Result<GuestResponse, String>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    on_instance();
    let response = instance.call_handle(&mut *store, &to_wit(request)).await?;
    Ok(from_wit(response))
}

/// Header values that are not UTF-8 reach the guest with replacement characters (the WIT type is
/// `string`). Public for the `conversion` fuzz target (`fuzz/`), as is [`from_wit`].
pub fn to_wit(request: GuestRequest) -> Request {
    Request {
        method: request.method.as_str().to_owned(),
        path: request.path,
        query: request.query,
        headers: request
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: request.body.into(),
    }
}

/// The guest's WIT response as HTTP, or why it is not valid HTTP.
pub fn from_wit(guest: Response) -> Result<GuestResponse, String> {
    let status = StatusCode::from_u16(guest.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("the function answered with invalid status {}", guest.status))?;
    let mut response = http::Response::new(guest.body.into());
    *response.status_mut() = status;
    for (name, value) in guest.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("the function answered with invalid header name {name:?}"))?;
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            format!("the function answered with an invalid value for header `{name}`")
        })?;
        response.headers_mut().append(header_name, header_value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"hi".to_vec(),
        }
    }

    #[test]
    fn invalid_status_or_headers_are_refused() {
        assert!(from_wit(guest(200, &[("content-type", "text/plain")])).is_ok());
        assert!(from_wit(guest(42, &[])).is_err());
        assert!(from_wit(guest(1000, &[])).is_err());
        assert!(from_wit(guest(200, &[("bad name", "x")])).is_err());
        assert!(from_wit(guest(200, &[("x", "a\r\nb")])).is_err());
    }
}

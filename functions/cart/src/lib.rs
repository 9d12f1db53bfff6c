//! The cart function (`/fn/cart`): routes requests to the shared pizza logic and owns the session
//! cookie.
//!
//! | request              | answer                                              |
//! |----------------------|-----------------------------------------------------|
//! | `GET /`              | 200, the cart `{"lines":[...],"total_cents","currency"}` |
//! | `POST /items`        | 201, the cart after adding `{"item","size","qty"}`  |
//! | `DELETE /items/{id}` | 200, the cart after removing line `id`; 404 if none |
//! | `GET /menu`          | 200, the menu                                       |
//!
//! A cart request without a valid `goldfish_session` cookie gets a new session, and the answer
//! sets the cookie. Every cart read or write goes through [`pizza::store`], which completes a
//! checkout a crashed host left pending before acting (see [`pizza::checkout`]), so this function
//! must be deployed in the same app as `checkout`.

use pizza::cart::NewLine;
use pizza::http::{self, Reply};
use pizza::{ApiError, ids, menu, retry, store};

/// The bindings generated from `wit/function.wit`.
mod bindings {
    // The generated export shim takes one parameter per flattened field of `request`.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ path: "../../wit", world: "function" });
}

use bindings::{Guest, Request, Response};
pizza::impl_kv!(HostKv => bindings::goldfish::function::kv);

/// The exported component.
struct CartFunction;

impl Guest for CartFunction {
    fn handle(request: Request) -> Response {
        let Reply {
            status,
            headers,
            body,
        } = respond(&request).unwrap_or_else(ApiError::into_reply);
        Response {
            status,
            headers,
            body,
        }
    }
}

bindings::export!(CartFunction with_types_in bindings);

/// The routes that act on the session's cart.
enum CartRoute<'a> {
    Show,
    Add,
    Remove(&'a str),
}

fn respond(request: &Request) -> Result<Reply, ApiError> {
    // Routes and methods are checked before a session is made up, so a 404 or 405 never sets a
    // cookie.
    let (route, allowed) = match http::route_path(&request.path) {
        "/menu" => {
            http::require_method(&request.method, "GET")?;
            return Ok(Reply::json(200, &menu::view()));
        }
        "/" => (CartRoute::Show, "GET"),
        "/items" => (CartRoute::Add, "POST"),
        path => match path.strip_prefix("/items/") {
            Some(id) => (CartRoute::Remove(id), "DELETE"),
            None => {
                return Err(ApiError::NotFound(format!(
                    "no route {path}; try GET /, POST /items, DELETE /items/{{id}} or GET /menu"
                )));
            }
        },
    };
    http::require_method(&request.method, allowed)?;

    let (session, is_new) = match http::session_from_cookies(&request.headers) {
        Some(session) => (session, false),
        None => (ids::random_id()?, true),
    };
    let reply = match route {
        CartRoute::Show => show(&session, is_new),
        CartRoute::Add => add(&session, &request.body),
        CartRoute::Remove(id) => remove(&session, id),
    };
    // Even a refused request keeps the session it was given, so the client's next try uses it.
    let reply = reply.unwrap_or_else(ApiError::into_reply);
    Ok(if is_new {
        reply.with_header("set-cookie", &http::session_cookie(&session))
    } else {
        reply
    })
}

/// `GET /`: the cart, with any pending checkout completed first.
fn show(session: &str, is_new: bool) -> Result<Reply, ApiError> {
    if is_new {
        // Nobody has written under an id made up just now: skip the read.
        return Ok(Reply::json(200, &pizza::cart::Cart::default().view()));
    }
    let cart = store::load(&HostKv, session, &retry::jittered_pause)?;
    Ok(Reply::json(200, &cart.view()))
}

/// `POST /items`: validates the line before touching storage, then adds it.
fn add(session: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let line = NewLine::parse(body)?;
    let (cart, _id) = store::update(&HostKv, session, &retry::jittered_pause, |cart| {
        cart.add(&line)
    })?;
    Ok(Reply::json(201, &cart.view()))
}

/// `DELETE /items/{id}`.
fn remove(session: &str, id: &str) -> Result<Reply, ApiError> {
    let Ok(id) = id.parse::<u64>() else {
        return Err(ApiError::NotFound(format!(
            "the cart has no line {id:?}; line ids are numbers"
        )));
    };
    let (cart, _line) = store::update(&HostKv, session, &retry::jittered_pause, |cart| {
        cart.remove(id)
    })?;
    Ok(Reply::json(200, &cart.view()))
}

//! The cart function (`/fn/cart`): routes requests to the shared pizza logic and owns the session
//! cookie.
//!
//! | request              | answer                                              |
//! |----------------------|-----------------------------------------------------|
//! | `GET /`              | 200, the cart `{"lines":[...],"total_cents","currency"}` |
//! | `POST /items`        | 201, the cart after adding `{"item","size","qty"}`, header `line-id` |
//! | `DELETE /items/{id}` | 200, the cart after removing line `id`; 404 if none |
//! | `GET /menu`          | 200, the menu                                       |
//!
//! Adds and removes take an optional `Idempotency-Key` header (1 to 128 visible ASCII
//! characters), as checkout does. The first request with a key makes the change and answers as
//! above. A retry with the same key on the same session, from any host, changes nothing and
//! answers 200, `idempotent-replayed: true`, the same `line-id`, and the cart as it is now (which
//! may have moved on: the line since removed or checked out). The same key sent for a different
//! change is 422. A request that failed (400, 404, 409, 503) recorded nothing, so its retry is
//! tried afresh. See [`pizza::cart`] for how the key and the change are written together.
//!
//! A cart request without a valid `goldfish_session` cookie gets a new session, and the answer
//! sets the cookie. Every cart read or write goes through [`pizza::store`], which completes a
//! checkout a crashed host left pending before acting (see [`pizza::checkout`]), so this function
//! must be deployed in the same app as `checkout`.

use pizza::cart::{Change, Changed, NewLine};
use pizza::http::{self, Reply};
use pizza::store::{self, Session};
use pizza::{ApiError, ids, menu, retry};

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

    let (session, known) = match http::session_from_cookies(&request.headers) {
        Some(session) => (session, Session::Known),
        None => (ids::random_id()?, Session::New),
    };
    let reply = match route {
        CartRoute::Show => show(&session, known),
        CartRoute::Add => add(&session, known, request),
        CartRoute::Remove(id) => remove(&session, id, request),
    };
    // Even a refused request keeps the session it was given, so the client's next try uses it.
    let reply = reply.unwrap_or_else(ApiError::into_reply);
    Ok(if known == Session::New {
        reply.with_header("set-cookie", &http::session_cookie(&session))
    } else {
        reply
    })
}

/// `GET /`: the cart, with any pending checkout completed first.
fn show(session: &str, known: Session) -> Result<Reply, ApiError> {
    if known == Session::New {
        // Nobody has written under an id made up just now: skip the read.
        return Ok(Reply::json(200, &pizza::cart::Cart::default().view()));
    }
    let cart = store::load(&HostKv, session, &retry::jittered_pause)?;
    Ok(Reply::json(200, &cart.view()))
}

/// `POST /items`: validates the line and the key before touching storage, then adds it. A new
/// shopper's cart is not read first: nobody has written under an id made up just now.
fn add(session: &str, known: Session, request: &Request) -> Result<Reply, ApiError> {
    let key = http::idempotency_key(&request.headers)?;
    let change = Change::Add(NewLine::parse(&request.body)?);
    let (cart, changed) = store::change(
        &HostKv,
        session,
        known,
        &retry::jittered_pause,
        &change,
        key.as_deref(),
    )?;
    Ok(answer(&cart, changed, 201))
}

/// `DELETE /items/{id}`.
fn remove(session: &str, id: &str, request: &Request) -> Result<Reply, ApiError> {
    let key = http::idempotency_key(&request.headers)?;
    let Ok(id) = id.parse::<u64>() else {
        return Err(ApiError::NotFound(format!(
            "the cart has no line {id:?}; line ids are numbers"
        )));
    };
    let (cart, changed) = store::change(
        &HostKv,
        session,
        Session::Known,
        &retry::jittered_pause,
        &Change::Remove(id),
        key.as_deref(),
    )?;
    Ok(answer(&cart, changed, 200))
}

/// The answer to a change: `status` when this request made it, 200 and `idempotent-replayed`
/// when an earlier request with the same key did; `line-id` names the line either way.
fn answer(cart: &pizza::cart::Cart, changed: Changed, status: u16) -> Reply {
    match changed {
        Changed::Applied(line) => {
            Reply::json(status, &cart.view()).with_header("line-id", &line.to_string())
        }
        Changed::Replayed(line) => Reply::json(200, &cart.view())
            .with_header("line-id", &line.to_string())
            .with_header("idempotent-replayed", "true"),
    }
}

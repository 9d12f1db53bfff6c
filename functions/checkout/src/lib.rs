//! The checkout function (`/fn/checkout`): turns the session's cart into an order, exactly once,
//! and serves placed orders.
//!
//! | request              | answer                                                        |
//! |----------------------|---------------------------------------------------------------|
//! | `POST /`             | 201, the new order; 200, the order an earlier request with the same `Idempotency-Key` placed; 409 if the cart is empty |
//! | `GET /orders/{id}`   | 200, the order; 404 if none                                   |
//!
//! The protocol that keeps cart and order consistent is in [`pizza::checkout`]. The session comes
//! from the cart's `goldfish_session` cookie, so this function must be deployed in the same app as
//! `cart`.

use std::time::SystemTime;

use pizza::checkout::{Checkout, CheckoutRequest};
use pizza::http::{self, Reply};
use pizza::{ApiError, checkout, ids, order, retry, store};

/// The bindings generated from `wit/function.wit`.
mod bindings {
    // The generated export shim takes one parameter per flattened field of `request`.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ path: "../../wit", world: "function" });
}

use bindings::{Guest, Request, Response};
pizza::impl_kv!(HostKv => bindings::goldfish::function::kv);

/// The exported component.
struct CheckoutFunction;

impl Guest for CheckoutFunction {
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

bindings::export!(CheckoutFunction with_types_in bindings);

fn respond(request: &Request) -> Result<Reply, ApiError> {
    match http::route_path(&request.path) {
        "/" => {
            http::require_method(&request.method, "POST")?;
            place_order(request)
        }
        path => match path.strip_prefix("/orders/") {
            Some(id) => {
                http::require_method(&request.method, "GET")?;
                show_order(id)
            }
            None => Err(ApiError::NotFound(format!(
                "no route {path}; try POST / or GET /orders/{{id}}"
            ))),
        },
    }
}

/// `POST /`.
fn place_order(request: &Request) -> Result<Reply, ApiError> {
    // A malformed key is refused before anything else, even on an empty cart, so a client learns
    // about it on its first try.
    let idempotency_key = http::idempotency_key(&request.headers)?;
    // Without a session there is no cart, so nothing to order.
    let session = http::session_from_cookies(&request.headers).ok_or(ApiError::CartEmpty)?;
    let request = CheckoutRequest {
        session,
        order_id: ids::random_id()?,
        created_at: order::rfc3339(SystemTime::now()),
        idempotency_key,
    };
    Ok(
        match checkout::checkout(&HostKv, &retry::jittered_pause, &request)? {
            Checkout::Created(order) => Reply::json(201, &order),
            Checkout::Replayed(order) => Reply::json(200, &order),
        },
    )
}

/// `GET /orders/{id}`. Anyone holding an order id may read it: ids are 128 random bits.
fn show_order(id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::NotFound(format!("no order {id:?}"));
    // Only ids we could have made reach kv, so a client cannot make us build an invalid key.
    if !ids::is_well_formed(id) {
        return Err(not_found());
    }
    let order = store::read_order(&HostKv, id)?.ok_or_else(not_found)?;
    Ok(Reply::json(200, &order))
}

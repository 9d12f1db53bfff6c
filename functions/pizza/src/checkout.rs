//! Turning a cart into an order exactly once, whatever runs concurrently and wherever a host dies.
//!
//! # The protocol
//!
//! kv offers atomicity per key only, yet a checkout must create `order:<id>` *and* empty
//! `cart:<session>`. The guarantee: no interleaving of requests, including a host crashing between
//! any two kv calls, creates an order and leaves its lines in the cart, or empties the cart without
//! an order. It works by making the order part of the cart record first:
//!
//! 1. **Read** the cart bytes `V`. If the cart has a `pending` order, *complete* it (below) and
//!    read again; if that pending order carries this request's idempotency key, it is this
//!    request's order: answer it with 200.
//! 2. **Idempotency**: with an `Idempotency-Key`, if `idem:<session>:<key>` exists, answer the
//!    order it names with 200 and change nothing.
//! 3. **Empty** cart: 409.
//! 4. **Commit**: build the order (fresh random id, the lines, total, `created_at`, idempotency
//!    key) and compare-and-swap the cart from `V` to `{lines: [], next_line_id and applied keys
//!    unchanged, pending: order}`. This single atomic write is the commit point: the lines leave the cart and
//!    the order comes into existence together. If the swap loses, go back to 1.
//! 5. **Complete** and answer 201.
//!
//! *Completing* a pending order: `set order:<id>` to it (a plain set: the order's bytes were fixed
//! at commit, so completing twice writes the same value), then `set idem:<session>:<key>` to its id
//! if it has a key, then compare-and-swap the cart from the bytes that held it to the same cart
//! with `pending: null`. If that swap loses, someone else completed it or changed the cart since,
//! and the order is already written either way.
//!
//! Why it holds:
//!
//! - Before the commit nothing was written; after it the order exists, in `pending` until it is
//!   written out. A crash anywhere leaves one of the two.
//! - `pending` is cleared only after the order and idempotency keys are written, so whoever sees a
//!   cart without `pending` also sees every order committed from it. In particular, step 2 sees
//!   the record of an earlier checkout with the same key unless its order is still pending, which
//!   step 1 catches: a key never yields two orders.
//! - Every reader of a cart (the cart function included, see [`crate::store`]) completes a
//!   pending order before acting, so a crash after the commit is repaired at the next touch, and
//!   a cart never shows lines that are in an order.
//! - A cart holding a pending order is written without expiry (see [`crate::store`]), so the order
//!   cannot vanish with an abandoned cart.
//! - A stored cart never returns to an earlier value (`next_line_id` only grows and a pending order
//!   has a fresh id), so a compare-and-swap that succeeds really did see the latest cart.
//!
//! If the store fails after the commit, the client gets 503 although its order exists; retrying
//! with the same `Idempotency-Key` returns it. Without a key there is no way to find it again,
//! which is what the key is for.

use crate::cart::Cart;
use crate::order::Order;
use crate::retry::{self, Attempt};
use crate::store::{self, Snapshot};
use crate::{ApiError, Kv};

/// What a checkout request asks for, fixed before the first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub session: String,
    /// The id the order gets if this request creates one; random, so unused ids cost nothing.
    pub order_id: String,
    /// RFC 3339 time of the request, the order's `created_at`.
    pub created_at: String,
    /// The validated `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

/// How a checkout succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkout {
    /// This request created the order: 201.
    Created(Order),
    /// An earlier request with the same idempotency key created it: 200.
    Replayed(Order),
}

/// Runs the checkout protocol described in this module's documentation.
pub fn checkout(
    kv: &dyn Kv,
    pause: &dyn Fn(u32),
    request: &CheckoutRequest,
) -> Result<Checkout, ApiError> {
    let session = request.session.as_str();
    let key = request.idempotency_key.as_deref();
    retry::bounded(pause, || {
        // 1. Read, completing a pending order first.
        let snapshot = store::read_cart(kv, session)?;
        if let Some(pending) = &snapshot.cart.pending {
            complete(kv, session, &snapshot)?;
            if key.is_some() && pending.idempotency_key.as_deref() == key {
                return Ok(Attempt::Done(Checkout::Replayed(pending.clone())));
            }
            return Ok(Attempt::Again);
        }

        // 2. An earlier checkout with this key.
        if let Some(key) = key
            && let Some(order) = replay(kv, session, key)?
        {
            return Ok(Attempt::Done(Checkout::Replayed(order)));
        }

        // 3. Nothing to order.
        if snapshot.cart.lines.is_empty() {
            return Err(ApiError::CartEmpty);
        }

        // 4. Commit: the order moves into the cart record in one compare-and-swap.
        let order = Order::new(
            request.order_id.clone(),
            snapshot.cart.lines.clone(),
            request.created_at.clone(),
            request.idempotency_key.clone(),
        );
        // The applied idempotency keys stay: a retried add must replay, not put an ordered line
        // back into the emptied cart.
        let committed = Cart {
            lines: Vec::new(),
            pending: Some(order.clone()),
            ..snapshot.cart.clone()
        };
        let committed_bytes = store::encode(&committed)?;
        let cart_key = store::cart_key(session);
        let ttl = store::cart_ttl(&committed);
        if !kv.compare_and_swap(&cart_key, snapshot.bytes.as_deref(), &committed_bytes, ttl)? {
            return Ok(Attempt::Again);
        }

        // 5. Write the order out.
        complete(
            kv,
            session,
            &Snapshot {
                bytes: Some(committed_bytes),
                cart: committed,
            },
        )?;
        Ok(Attempt::Done(Checkout::Created(order)))
    })
}

/// The order an earlier checkout of `session` placed with idempotency key `key`, if any.
fn replay(kv: &dyn Kv, session: &str, key: &str) -> Result<Option<Order>, ApiError> {
    let record_key = store::idempotency_record_key(session, key);
    let Some(id) = kv.get(&record_key)? else {
        return Ok(None);
    };
    let id = String::from_utf8(id)
        .map_err(|_| ApiError::Internal(format!("{record_key} does not hold an order id")))?;
    match store::read_order(kv, &id)? {
        Some(order) => Ok(Some(order)),
        // The record is written only after the order, and orders are never deleted.
        None => Err(ApiError::Internal(format!(
            "{record_key} names order {id}, which is missing"
        ))),
    }
}

/// Completes the pending order of `snapshot`, if it has one: writes the order and its idempotency
/// record, then clears `pending` if the cart is still exactly `snapshot`.
///
/// Safe to run any number of times, by anyone, concurrently: see the module documentation.
pub fn complete(kv: &dyn Kv, session: &str, snapshot: &Snapshot) -> Result<(), ApiError> {
    let Some(order) = &snapshot.cart.pending else {
        return Ok(());
    };
    kv.set(&store::order_key(&order.id), &store::encode(order)?, None)?;
    if let Some(key) = &order.idempotency_key {
        let record_key = store::idempotency_record_key(session, key);
        kv.set(
            &record_key,
            order.id.as_bytes(),
            Some(store::IDEMPOTENCY_TTL_SECONDS),
        )?;
    }
    let cleared = Cart {
        pending: None,
        ..snapshot.cart.clone()
    };
    let cart_key = store::cart_key(session);
    let ttl = store::cart_ttl(&cleared);
    // Losing this swap means the cart moved on after someone else completed the order; the order is
    // written either way, so the outcome does not matter.
    kv.compare_and_swap(
        &cart_key,
        snapshot.bytes.as_deref(),
        &store::encode(&cleared)?,
        ttl,
    )?;
    Ok(())
}

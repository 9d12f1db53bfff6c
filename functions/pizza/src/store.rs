//! Where carts, orders and idempotency records live in kv, and how a cart is read and changed.
//!
//! | key                      | value                      | expiry                          |
//! |--------------------------|----------------------------|---------------------------------|
//! | `cart:<session>`         | [`Cart`] JSON              | 24 h after the last write, none while a checkout is pending |
//! | `order:<id>`             | [`Order`] JSON             | never                           |
//! | `idem:<session>:<key>`   | the order id               | 24 h                            |
//!
//! (The idempotency keys of cart adds and removes live inside the cart record itself, see
//! [`crate::cart`], because the change and its key must be written by one compare-and-swap.)
//!
//! Every change to a cart is a compare-and-swap against the exact bytes read (or against no cart
//! at all, unread, for a session made up just now: [`Session::New`]), retried a bounded number of
//! times, so concurrent requests on any host never lose each other's lines. Every read
//! first completes a pending checkout (see [`crate::checkout`]), so no caller ever acts on a cart
//! whose order is committed but not yet written out.

use serde::Serialize;

use crate::cart::{Cart, Change, Changed};
use crate::checkout;
use crate::order::Order;
use crate::retry::{self, Attempt};
use crate::{ApiError, Kv};

/// Carts expire this long after their last write, so abandoned carts clean themselves up.
pub const CART_TTL_SECONDS: u32 = 86_400;

/// How long a retry with the same `Idempotency-Key` returns the same order.
pub const IDEMPOTENCY_TTL_SECONDS: u32 = 86_400;

/// The key of the cart of `session`.
pub fn cart_key(session: &str) -> String {
    format!("cart:{session}")
}

/// The key of the order `id`.
pub fn order_key(id: &str) -> String {
    format!("order:{id}")
}

/// The key recording which order `session` placed with `Idempotency-Key: key`.
pub fn idempotency_record_key(session: &str, key: &str) -> String {
    format!("idem:{session}:{key}")
}

/// The expiry a cart is written with.
///
/// A cart holding a pending checkout holds the only copy of an order the client may already have
/// been promised, so it must not expire before the checkout is completed; it gets the usual
/// expiry back when the pending order is cleared.
pub(crate) fn cart_ttl(cart: &Cart) -> Option<u32> {
    match cart.pending {
        Some(_) => None,
        None => Some(CART_TTL_SECONDS),
    }
}

/// A cart as read: the exact stored bytes, which are the `expected` of the next compare-and-swap,
/// and the record they decode to (an empty cart when there are none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: Option<Vec<u8>>,
    pub cart: Cart,
}

/// Reads the cart of `session` as it is, pending checkout and all.
pub fn read_cart(kv: &dyn Kv, session: &str) -> Result<Snapshot, ApiError> {
    let key = cart_key(session);
    let bytes = kv.get(&key)?;
    let cart = match &bytes {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|error| ApiError::Internal(format!("{key} is not a cart: {error}")))?,
        None => Cart::default(),
    };
    Ok(Snapshot { bytes, cart })
}

/// The order `id`, if it exists.
pub fn read_order(kv: &dyn Kv, id: &str) -> Result<Option<Order>, ApiError> {
    let key = order_key(id);
    match kv.get(&key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| ApiError::Internal(format!("{key} is not an order: {error}"))),
        None => Ok(None),
    }
}

/// `value` as the JSON bytes to store.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|error| ApiError::Internal(format!("encoding: {error}")))
}

/// The cart of `session`, after completing any pending checkout.
pub fn load(kv: &dyn Kv, session: &str, pause: &dyn Fn(u32)) -> Result<Cart, ApiError> {
    retry::bounded(pause, || {
        let snapshot = read_cart(kv, session)?;
        if snapshot.cart.pending.is_some() {
            checkout::complete(kv, session, &snapshot)?;
            return Ok(Attempt::Again);
        }
        Ok(Attempt::Done(snapshot.cart))
    })
}

/// Applies `change` to the cart of `session` and stores the result, completing any pending
/// checkout first. Returns the stored cart and what `change` returned.
///
/// `change` may run several times, each time on a freshly read cart, until one compare-and-swap
/// wins; an error from it aborts without writing.
pub fn update<T>(
    kv: &dyn Kv,
    session: &str,
    pause: &dyn Fn(u32),
    mut change: impl FnMut(&mut Cart) -> Result<T, ApiError>,
) -> Result<(Cart, T), ApiError> {
    modify(kv, session, Session::Known, pause, |cart| {
        change(cart).map(Write::Store)
    })
}

/// What the caller knows of a session's cart before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// A session a client sent: its cart may be anything, so every attempt reads it first.
    Known,
    /// An id made up for this request, under which nobody can have written yet: the first
    /// attempt takes the cart as empty without reading it (saving a kv round trip on a new
    /// shopper's first add). Its compare-and-swap still expects no cart, so were the id ever
    /// taken after all, the swap would fail and the next attempt read the cart as usual.
    New,
}

/// Makes a client's `change` to the cart of `session`, at most once per idempotency `key`: see
/// [`Cart::apply`]. `known` says whether the session is one the client sent or one made up just
/// now ([`Session::New`], whose first attempt skips the read). A replay writes nothing and
/// returns the cart as it is now, which may have moved on since the change was made (the line
/// since removed or checked out).
pub fn change(
    kv: &dyn Kv,
    session: &str,
    known: Session,
    pause: &dyn Fn(u32),
    change: &Change,
    key: Option<&str>,
) -> Result<(Cart, Changed), ApiError> {
    modify(kv, session, known, pause, |cart| {
        Ok(match cart.apply(change, key)? {
            changed @ Changed::Applied(_) => Write::Store(changed),
            changed @ Changed::Replayed(_) => Write::Keep(changed),
        })
    })
}

/// Whether [`modify`] stores the cart its closure saw.
enum Write<T> {
    /// The closure changed the cart: store it.
    Store(T),
    /// The closure left the cart as read: nothing to write.
    Keep(T),
}

/// The read-modify-compare-and-swap loop behind [`update`] and [`change`].
fn modify<T>(
    kv: &dyn Kv,
    session: &str,
    known: Session,
    pause: &dyn Fn(u32),
    mut change: impl FnMut(&mut Cart) -> Result<Write<T>, ApiError>,
) -> Result<(Cart, T), ApiError> {
    let key = cart_key(session);
    let mut unread = known == Session::New;
    retry::bounded(pause, || {
        let Snapshot { bytes, mut cart } = if std::mem::take(&mut unread) {
            Snapshot {
                bytes: None,
                cart: Cart::default(),
            }
        } else {
            read_cart(kv, session)?
        };
        if cart.pending.is_some() {
            checkout::complete(kv, session, &Snapshot { bytes, cart })?;
            return Ok(Attempt::Again);
        }
        let outcome = match change(&mut cart)? {
            Write::Keep(outcome) => return Ok(Attempt::Done((cart, outcome))),
            Write::Store(outcome) => outcome,
        };
        let new = encode(&cart)?;
        if kv.compare_and_swap(&key, bytes.as_deref(), &new, cart_ttl(&cart))? {
            Ok(Attempt::Done((cart, outcome)))
        } else {
            Ok(Attempt::Again)
        }
    })
}

//! The pizza shop's domain, shared by the `cart` and `checkout` functions.
//!
//! This crate knows nothing of the generated WIT bindings: it talks to storage through the small
//! [`Kv`] trait, which each guest implements over its `goldfish:function/kv` import with
//! [`impl_kv!`], and which the tests implement over a `HashMap`. That keeps every rule about carts
//! and orders testable with `cargo test -p pizza` on the host.
//!
//! # Layout
//!
//! - [`menu`]: what can be ordered, in which sizes, at which price.
//! - [`cart`]: the cart record (lines, line ids, the pending checkout, the idempotency keys of
//!   recent adds and removes), what a client may add, and applying a change at most once per key.
//! - [`order`]: the order record and its RFC 3339 timestamp.
//! - [`store`]: the key names, their TTLs, and reading and changing a cart with compare-and-swap.
//! - [`checkout`]: turning a cart into an order exactly once; the protocol is documented there.
//! - [`retry`]: the bounded read-modify-CAS loop and its jittered pause.
//! - [`kv`]: the storage trait and its error, plus the `impl_kv!` macro for guests.
//! - [`http`]: replies, cookies and headers.
//! - [`error`]: [`ApiError`], the only place that chooses a status code.
//! - [`ids`]: random identifiers for sessions and orders.

pub mod cart;
pub mod checkout;
pub mod error;
pub mod http;
pub mod ids;
pub mod kv;
pub mod menu;
pub mod order;
pub mod retry;
pub mod store;

pub use error::ApiError;
pub use kv::{Kv, KvError};

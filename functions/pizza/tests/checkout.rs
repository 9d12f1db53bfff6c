//! The checkout protocol, one request at a time and with a host crashing at every kv call.

mod support;

use pizza::cart::Cart;
use pizza::checkout::{self, Checkout, CheckoutRequest};
use pizza::order::Order;
use pizza::store::{self, CART_TTL_SECONDS, IDEMPOTENCY_TTL_SECONDS};
use pizza::{ApiError, Kv};
use support::{Crash, Crashing, MemoryKv, new_line, no_pause};

const SESSION: &str = "0123456789abcdef0123456789abcdef";

fn request(order_id: &str, key: Option<&str>) -> CheckoutRequest {
    CheckoutRequest {
        session: SESSION.to_owned(),
        order_id: order_id.to_owned(),
        created_at: "2025-03-01T12:00:00Z".to_owned(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn add(kv: &dyn Kv, body: &str) -> u64 {
    let line = new_line(body);
    store::update(kv, SESSION, &no_pause, |cart| cart.add(&line))
        .unwrap()
        .1
}

/// A store holding a cart with a large pepperoni and two cokes.
fn full_cart() -> MemoryKv {
    let kv = MemoryKv::default();
    add(&kv, r#"{"item":"pepperoni","size":"large"}"#);
    add(&kv, r#"{"item":"coke","qty":2}"#);
    kv
}

fn created(result: Result<Checkout, ApiError>) -> Order {
    match result {
        Ok(Checkout::Created(order)) => order,
        other => panic!("expected a created order, got {other:?}"),
    }
}

fn replayed(result: Result<Checkout, ApiError>) -> Order {
    match result {
        Ok(Checkout::Replayed(order)) => order,
        other => panic!("expected a replayed order, got {other:?}"),
    }
}

#[test]
fn checking_out_a_missing_cart_is_cart_empty() {
    let kv = MemoryKv::default();
    assert_eq!(
        checkout::checkout(&kv, &no_pause, &request("o1", None)),
        Err(ApiError::CartEmpty)
    );
    assert_eq!(kv.orders(), []);
}

#[test]
fn checkout_moves_the_lines_into_a_stored_order() {
    let kv = full_cart();
    let lines = kv.cart(SESSION).unwrap().lines;
    let order = created(checkout::checkout(&kv, &no_pause, &request("o1", None)));
    assert_eq!(order.id, "o1");
    assert_eq!(order.lines, lines);
    assert_eq!(order.total_cents, 1499 + 2 * 249);
    assert_eq!(order.currency, "USD");
    assert_eq!(order.created_at, "2025-03-01T12:00:00Z");
    assert_eq!(kv.orders(), [order]);
    assert_eq!(
        kv.cart(SESSION),
        Some(Cart {
            lines: Vec::new(),
            next_line_id: 3,
            pending: None,
            ..Cart::default()
        })
    );
}

#[test]
fn orders_never_expire_and_the_emptied_cart_does() {
    let kv = full_cart();
    created(checkout::checkout(
        &kv,
        &no_pause,
        &request("o1", Some("k1")),
    ));
    assert_eq!(kv.entry("order:o1").unwrap().ttl_seconds, None);
    assert_eq!(
        kv.entry(&store::cart_key(SESSION)).unwrap().ttl_seconds,
        Some(CART_TTL_SECONDS)
    );
    let record = kv
        .entry(&store::idempotency_record_key(SESSION, "k1"))
        .unwrap();
    assert_eq!(
        (record.value.as_slice(), record.ttl_seconds),
        (&b"o1"[..], Some(IDEMPOTENCY_TTL_SECONDS))
    );
}

#[test]
fn the_order_json_has_the_documented_fields() {
    let kv = full_cart();
    let order = created(checkout::checkout(
        &kv,
        &no_pause,
        &request("o1", Some("k1")),
    ));
    let json = serde_json::to_value(&order).unwrap();
    let mut fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "currency",
            "id",
            "idempotency_key",
            "lines",
            "total_cents"
        ]
    );
    let without_key = serde_json::to_value(Order {
        idempotency_key: None,
        ..order
    })
    .unwrap();
    assert!(without_key.get("idempotency_key").is_none());
}

#[test]
fn a_second_checkout_without_a_key_finds_the_cart_empty() {
    let kv = full_cart();
    created(checkout::checkout(&kv, &no_pause, &request("o1", None)));
    assert_eq!(
        checkout::checkout(&kv, &no_pause, &request("o2", None)),
        Err(ApiError::CartEmpty)
    );
    assert_eq!(kv.orders().len(), 1);
}

#[test]
fn a_retry_with_the_same_key_replays_the_order_and_leaves_new_lines_alone() {
    let kv = full_cart();
    let first = created(checkout::checkout(
        &kv,
        &no_pause,
        &request("o1", Some("k1")),
    ));
    add(&kv, r#"{"item":"water"}"#);
    let again = replayed(checkout::checkout(
        &kv,
        &no_pause,
        &request("o2", Some("k1")),
    ));
    assert_eq!(again, first);
    assert_eq!(kv.orders(), [first]);
    assert_eq!(
        kv.cart(SESSION).unwrap().lines.len(),
        1,
        "the water stays in the cart"
    );
}

#[test]
fn a_different_key_places_a_new_order() {
    let kv = full_cart();
    created(checkout::checkout(
        &kv,
        &no_pause,
        &request("o1", Some("k1")),
    ));
    add(&kv, r#"{"item":"water"}"#);
    let second = created(checkout::checkout(
        &kv,
        &no_pause,
        &request("o2", Some("k2")),
    ));
    assert_eq!(second.lines.len(), 1);
    assert_eq!(kv.orders().len(), 2);
}

#[test]
fn a_new_key_on_an_empty_cart_is_cart_empty() {
    let kv = full_cart();
    created(checkout::checkout(
        &kv,
        &no_pause,
        &request("o1", Some("k1")),
    ));
    assert_eq!(
        checkout::checkout(&kv, &no_pause, &request("o2", Some("k2"))),
        Err(ApiError::CartEmpty)
    );
}

/// Where the lines of a cart that started with `lines` ended up.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Still in the cart, no order.
    InCart,
    /// In exactly one order (written out or still pending), and out of the cart.
    Ordered(String),
}

/// Checks the invariant on the raw stored state, without completing anything.
fn outcome(kv: &MemoryKv, lines: usize) -> Outcome {
    let cart = kv.cart(SESSION).unwrap();
    let orders = kv.orders();
    match (&cart.pending, orders.as_slice()) {
        (None, []) => {
            assert_eq!(
                cart.lines.len(),
                lines,
                "no order, so every line must still be in the cart"
            );
            Outcome::InCart
        }
        (Some(pending), []) => {
            assert!(cart.lines.is_empty());
            assert_eq!(pending.lines.len(), lines);
            Outcome::Ordered(pending.id.clone())
        }
        (pending, [order]) => {
            assert!(
                cart.lines.is_empty(),
                "an order exists, so the cart must be empty"
            );
            assert_eq!(order.lines.len(), lines);
            if let Some(pending) = pending {
                assert_eq!(
                    pending, order,
                    "a pending order being written out is the same order"
                );
            }
            Outcome::Ordered(order.id.clone())
        }
        (_, orders) => panic!("one checkout made {} orders", orders.len()),
    }
}

/// Crashes a checkout at every kv call in turn, in both ways a call can fail, and checks that the
/// stored state is always "lines in the cart" or "lines in one order", never neither nor both.
/// Then a retry with the same idempotency key must end with exactly that one order.
#[test]
fn a_crash_at_any_kv_call_leaves_either_the_cart_or_one_order() {
    let clean_run = {
        let kv = full_cart();
        let counting = Crashing::new(&kv, Crash::Before(usize::MAX));
        created(checkout::checkout(
            &counting,
            &no_pause,
            &request("o1", Some("k1")),
        ));
        counting.calls()
    };
    assert!(
        clean_run >= 5,
        "read, idem lookup, commit, order, idem record, clear: {clean_run}"
    );

    for at in 0..clean_run {
        for crash in [Crash::Before(at), Crash::After(at)] {
            let kv = full_cart();
            let result = checkout::checkout(
                &Crashing::new(&kv, crash),
                &no_pause,
                &request("o1", Some("k1")),
            );
            assert!(
                matches!(result, Err(ApiError::Unavailable(_))),
                "{crash:?}: {result:?}"
            );
            let before_retry = outcome(&kv, 2);

            let retried = checkout::checkout(&kv, &no_pause, &request("o2", Some("k1")));
            let order = match (&before_retry, retried) {
                (Outcome::InCart, Ok(Checkout::Created(order))) => order,
                (Outcome::Ordered(id), Ok(Checkout::Replayed(order))) if order.id == *id => order,
                (before, after) => panic!("{crash:?}: {before:?} then retry gave {after:?}"),
            };
            assert_eq!(kv.orders(), [order], "{crash:?}");
            assert_eq!(kv.cart(SESSION).unwrap().pending, None, "{crash:?}");
            assert!(kv.cart(SESSION).unwrap().lines.is_empty(), "{crash:?}");
        }
    }
}

/// The same crashes, but the next thing to touch the cart is the cart function, not a retry.
#[test]
fn a_crash_after_the_commit_is_repaired_by_the_next_cart_read() {
    for at in 0..8 {
        let kv = full_cart();
        let _ = checkout::checkout(
            &Crashing::new(&kv, Crash::After(at)),
            &no_pause,
            &request("o1", None),
        );
        let before = outcome(&kv, 2);
        let cart = store::load(&kv, SESSION, &no_pause).unwrap();
        assert_eq!(cart.pending, None);
        match before {
            Outcome::InCart => {
                assert_eq!(cart.lines.len(), 2);
                assert_eq!(kv.orders(), []);
            }
            Outcome::Ordered(id) => {
                assert!(cart.lines.is_empty());
                assert_eq!(
                    kv.orders()
                        .iter()
                        .map(|order| order.id.clone())
                        .collect::<Vec<_>>(),
                    [id]
                );
            }
        }
    }
}

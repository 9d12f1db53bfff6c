//! Reading and changing carts in kv: expiry, compare-and-swap retries, and pending checkouts.

mod support;

use std::cell::Cell;

use pizza::cart::{Cart, Change, Changed};
use pizza::order::Order;
use pizza::retry::MAX_ATTEMPTS;
use pizza::store::{self, CART_TTL_SECONDS, Session};
use pizza::{ApiError, Kv, KvError};
use support::{MemoryKv, new_line, no_pause};

const SESSION: &str = "0123456789abcdef0123456789abcdef";

fn add(kv: &dyn Kv, body: &str) -> Result<(Cart, u64), ApiError> {
    let line = new_line(body);
    store::update(kv, SESSION, &no_pause, |cart| cart.add(&line))
}

#[test]
fn a_missing_cart_loads_as_empty_without_writing() {
    let kv = MemoryKv::default();
    assert_eq!(store::load(&kv, SESSION, &no_pause), Ok(Cart::default()));
    assert_eq!(kv.entry(&store::cart_key(SESSION)), None);
}

#[test]
fn an_update_stores_the_cart_for_24_hours() {
    let kv = MemoryKv::default();
    let (cart, id) = add(&kv, r#"{"item":"coke"}"#).unwrap();
    assert_eq!(id, 1);
    assert_eq!(kv.cart(SESSION), Some(cart));
    assert_eq!(
        kv.entry("cart:0123456789abcdef0123456789abcdef")
            .unwrap()
            .ttl_seconds,
        Some(CART_TTL_SECONDS)
    );
}

#[test]
fn a_failed_change_writes_nothing() {
    let kv = MemoryKv::default();
    add(&kv, r#"{"item":"coke"}"#).unwrap();
    let before = kv.entry(&store::cart_key(SESSION));
    let result = store::update(&kv, SESSION, &no_pause, |cart| cart.remove(42));
    assert!(matches!(result, Err(ApiError::NotFound(_))));
    assert_eq!(kv.entry(&store::cart_key(SESSION)), before);
}

/// Lets another request add a line between this request's read and its first compare-and-swap.
struct RacedOnce {
    store: MemoryKv,
    raced: Cell<bool>,
}

impl Kv for RacedOnce {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        self.store.set(key, value, ttl_seconds)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, KvError> {
        if !self.raced.replace(true) {
            add(&self.store, r#"{"item":"water"}"#).unwrap();
        }
        self.store.compare_and_swap(key, expected, new, ttl_seconds)
    }
}

#[test]
fn a_concurrent_add_is_not_lost() {
    let kv = RacedOnce {
        store: MemoryKv::default(),
        raced: Cell::new(false),
    };
    let (cart, id) = add(&kv, r#"{"item":"coke"}"#).unwrap();
    assert_eq!(id, 2, "the racing water got line 1");
    let items: Vec<&str> = cart.lines.iter().map(|line| line.item.as_str()).collect();
    assert_eq!(items, ["water", "coke"]);
    assert_eq!(kv.store.cart(SESSION), Some(cart));
}

fn add_coke(kv: &dyn Kv, known: Session) -> (Cart, Changed) {
    let change = Change::Add(new_line(r#"{"item":"coke"}"#));
    store::change(kv, SESSION, known, &no_pause, &change, None).unwrap()
}

#[test]
fn a_new_sessions_first_add_writes_without_reading() {
    let kv = MemoryKv::default();
    let (cart, changed) = add_coke(&kv, Session::New);
    assert_eq!(changed, Changed::Applied(1));
    assert_eq!(kv.reads(), 0);
    assert_eq!(kv.cart(SESSION), Some(cart));
    // A session the client sent is read first.
    add_coke(&kv, Session::Known);
    assert_eq!(kv.reads(), 1);
}

#[test]
fn a_new_session_whose_cart_exists_after_all_keeps_its_lines() {
    let kv = MemoryKv::default();
    add(&kv, r#"{"item":"water"}"#).unwrap();
    let before = kv.reads();
    let (cart, changed) = add_coke(&kv, Session::New);
    assert_eq!(
        changed,
        Changed::Applied(2),
        "the swap expecting no cart failed, and the retry read the water's"
    );
    assert_eq!(kv.reads() - before, 1);
    let items: Vec<&str> = cart.lines.iter().map(|line| line.item.as_str()).collect();
    assert_eq!(items, ["water", "coke"]);
    assert_eq!(kv.cart(SESSION), Some(cart));
}

/// A store where every compare-and-swap loses, as under endless contention.
struct AlwaysContended {
    store: MemoryKv,
    swaps: Cell<u32>,
}

impl Kv for AlwaysContended {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        self.store.set(key, value, ttl_seconds)
    }

    fn compare_and_swap(
        &self,
        _: &str,
        _: Option<&[u8]>,
        _: &[u8],
        _: Option<u32>,
    ) -> Result<bool, KvError> {
        self.swaps.set(self.swaps.get() + 1);
        Ok(false)
    }
}

#[test]
fn endless_contention_gives_up_as_busy() {
    let kv = AlwaysContended {
        store: MemoryKv::default(),
        swaps: Cell::new(0),
    };
    assert_eq!(add(&kv, r#"{"item":"coke"}"#), Err(ApiError::CartBusy));
    assert_eq!(kv.swaps.get(), MAX_ATTEMPTS);
}

/// A store that cannot be reached.
struct Down;

impl Kv for Down {
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        Err(KvError::Unavailable("connection refused".into()))
    }

    fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), KvError> {
        Err(KvError::Unavailable("connection refused".into()))
    }

    fn compare_and_swap(
        &self,
        _: &str,
        _: Option<&[u8]>,
        _: &[u8],
        _: Option<u32>,
    ) -> Result<bool, KvError> {
        Err(KvError::Unavailable("connection refused".into()))
    }
}

#[test]
fn an_unreachable_store_is_unavailable() {
    assert_eq!(
        add(&Down, r#"{"item":"coke"}"#),
        Err(ApiError::Unavailable("connection refused".into()))
    );
    assert!(matches!(
        store::load(&Down, SESSION, &no_pause),
        Err(ApiError::Unavailable(_))
    ));
}

#[test]
fn a_corrupt_cart_is_an_internal_error() {
    let kv = MemoryKv::default();
    kv.set(&store::cart_key(SESSION), b"{not json", None)
        .unwrap();
    assert!(matches!(
        store::load(&kv, SESSION, &no_pause),
        Err(ApiError::Internal(_))
    ));
}

/// Stores a cart whose checkout committed `order` but crashed before writing it out.
fn crashed_checkout(kv: &MemoryKv) -> Order {
    let mut cart = Cart::default();
    cart.add(&new_line(r#"{"item":"veggie","size":"large"}"#))
        .unwrap();
    let order = Order::new(
        "feedface".into(),
        cart.lines.clone(),
        "2025-01-01T00:00:00Z".into(),
        Some("k".into()),
    );
    let committed = Cart {
        lines: Vec::new(),
        next_line_id: cart.next_line_id,
        pending: Some(order.clone()),
        ..Cart::default()
    };
    kv.set(
        &store::cart_key(SESSION),
        &serde_json::to_vec(&committed).unwrap(),
        None,
    )
    .unwrap();
    order
}

#[test]
fn loading_a_cart_completes_its_pending_checkout() {
    let kv = MemoryKv::default();
    let order = crashed_checkout(&kv);
    let cart = store::load(&kv, SESSION, &no_pause).unwrap();
    assert_eq!(
        cart,
        Cart {
            lines: Vec::new(),
            next_line_id: 2,
            pending: None,
            ..Cart::default()
        }
    );
    assert_eq!(kv.orders(), [order]);
    assert_eq!(
        kv.entry(&store::idempotency_record_key(SESSION, "k"))
            .unwrap()
            .value,
        b"feedface"
    );
    assert_eq!(
        kv.entry(&store::cart_key(SESSION)).unwrap().ttl_seconds,
        Some(CART_TTL_SECONDS)
    );
}

#[test]
fn updating_a_cart_completes_its_pending_checkout_first() {
    let kv = MemoryKv::default();
    let order = crashed_checkout(&kv);
    let (cart, id) = add(&kv, r#"{"item":"coke"}"#).unwrap();
    assert_eq!(id, 2, "line ids continue after the ordered line");
    assert_eq!(cart.lines.len(), 1);
    assert_eq!(cart.pending, None);
    assert_eq!(kv.orders(), [order]);
}

//! The cart record stored under `cart:<session>`, the lines in it, what a client may add, and the
//! idempotency keys of the changes already applied to it.
//!
//! # Idempotent adds and removes
//!
//! A client whose `POST /items` or `DELETE /items/{id}` got no answer (the host died, the load
//! balancer said 502) cannot tell whether the change was made. Sent with an `Idempotency-Key`, the
//! retry is safe: [`Cart::apply`] records the key, with what it was used for and the line it
//! added or removed, *inside the cart record*, so the change and its record are one value written
//! by one compare-and-swap ([`crate::store::change`]). There is no moment, on any host, at which
//! the line is in the cart but the key is not recorded, or the other way round. A request that
//! finds its key already recorded changes nothing and answers [`Changed::Replayed`].
//!
//! The record keeps the last [`MAX_APPLIED`] keys of the cart, kept across checkouts (a retried
//! add must not put an ordered line back), and lives as long as the cart (24 h after its last
//! write). A retry is therefore recognised as long as fewer than [`MAX_APPLIED`] other keyed
//! changes were made to the same cart since; keys are per session, and separate from checkout's.

use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::menu::{self, CURRENCY};
use crate::order::Order;

/// The most lines a cart may hold; keeps the record far below the store's 1 MiB value limit.
pub const MAX_LINES: usize = 100;

/// How many applied idempotency keys a cart remembers; the oldest is forgotten first.
///
/// A retry comes within seconds of its first try, and one shopper rarely has more than a few
/// changes in flight, so 32 leaves a wide margin while keeping the record small (about 100 bytes
/// per key, against a 1 MiB value limit).
pub const MAX_APPLIED: usize = 32;

/// How many of one item a single line may order.
pub const QTY: std::ops::RangeInclusive<i64> = 1..=20;

/// One line of a cart or order. The price is fixed when the line is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Unique within the cart, never reused (see [`Cart::next_line_id`]).
    pub id: u64,
    pub item: String,
    pub size: String,
    pub qty: u32,
    pub unit_price_cents: u64,
    pub line_total_cents: u64,
}

/// A cart as stored. Clients see a [`CartView`] instead, which leaves out the bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub lines: Vec<Line>,
    /// The id the next added line gets. It only grows, even across checkouts, so a line id is
    /// never reused and a stored cart never returns to an earlier value, which is what makes
    /// compare-and-swap on the whole record safe.
    pub next_line_id: u64,
    /// An order committed by a checkout but not yet written under its own key; see
    /// [`crate::checkout`].
    pub pending: Option<Order>,
    /// The idempotency keys of the last [`MAX_APPLIED`] keyed changes, oldest first. Absent in
    /// carts written before keys existed (hence `default`), and left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<Applied>,
}

/// A change made with an `Idempotency-Key`, as recorded in the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub key: String,
    /// What the key was used for ([`Change::describe`]), so that reusing a key for a different
    /// change is refused instead of answering the wrong result.
    pub change: String,
    /// The line the change added or removed.
    pub line_id: u64,
}

/// A change a client asks of its cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `POST /items`.
    Add(NewLine),
    /// `DELETE /items/{id}`.
    Remove(u64),
}

impl Change {
    /// A canonical description, equal for two requests exactly when they ask the same change
    /// (whatever the JSON's spacing or field order), e.g. `add 2 pepperoni large`.
    pub fn describe(&self) -> String {
        match self {
            Change::Add(line) => {
                format!("add {} {} {}", line.qty, line.priced.item, line.priced.size)
            }
            Change::Remove(id) => format!("remove line {id}"),
        }
    }
}

/// What [`Cart::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// This request made the change to the line with this id.
    Applied(u64),
    /// An earlier request with the same idempotency key made it, to the line with this id; the
    /// cart was not touched.
    Replayed(u64),
}

impl Default for Cart {
    fn default() -> Cart {
        Cart {
            lines: Vec::new(),
            next_line_id: 1,
            pending: None,
            applied: Vec::new(),
        }
    }
}

impl Cart {
    /// Makes `change`, unless a change with the same idempotency `key` was already made to this
    /// cart, in which case nothing changes and the earlier outcome is returned.
    ///
    /// With a key, the change and the record of the key are made together, so storing the cart
    /// stores both. A key recorded for a different change is refused as
    /// [`ApiError::IdempotencyKeyReused`]. A change that fails records nothing, so its retry is
    /// tried afresh.
    pub fn apply(&mut self, change: &Change, key: Option<&str>) -> Result<Changed, ApiError> {
        let description = change.describe();
        if let Some(key) = key
            && let Some(earlier) = self.applied.iter().find(|applied| applied.key == key)
        {
            return if earlier.change == description {
                Ok(Changed::Replayed(earlier.line_id))
            } else {
                Err(ApiError::IdempotencyKeyReused {
                    earlier: earlier.change.clone(),
                })
            };
        }
        let line_id = match change {
            Change::Add(line) => self.add(line)?,
            Change::Remove(id) => self.remove(*id)?.id,
        };
        if let Some(key) = key {
            if self.applied.len() >= MAX_APPLIED {
                self.applied.remove(0);
            }
            self.applied.push(Applied {
                key: key.to_owned(),
                change: description,
                line_id,
            });
        }
        Ok(Changed::Applied(line_id))
    }

    /// Adds `line` with the next line id and returns that id.
    pub fn add(&mut self, line: &NewLine) -> Result<u64, ApiError> {
        if self.lines.len() >= MAX_LINES {
            return Err(ApiError::CartFull);
        }
        let id = self.next_line_id;
        self.next_line_id += 1;
        self.lines.push(Line {
            id,
            item: line.priced.item.to_owned(),
            size: line.priced.size.to_owned(),
            qty: line.qty,
            unit_price_cents: line.priced.unit_price_cents,
            line_total_cents: line.priced.unit_price_cents * u64::from(line.qty),
        });
        Ok(id)
    }

    /// Removes the line with `id`, or says there is none.
    pub fn remove(&mut self, id: u64) -> Result<Line, ApiError> {
        match self.lines.iter().position(|line| line.id == id) {
            Some(index) => Ok(self.lines.remove(index)),
            None => Err(ApiError::NotFound(format!("the cart has no line {id}"))),
        }
    }

    /// What clients see of this cart.
    pub fn view(&self) -> CartView<'_> {
        CartView {
            lines: &self.lines,
            total_cents: total_cents(&self.lines),
            currency: CURRENCY,
        }
    }
}

/// The sum of the lines' totals, in cents.
pub fn total_cents(lines: &[Line]) -> u64 {
    // At most MAX_LINES lines of at most 20 items of a few thousand cents: far from overflow.
    lines.iter().map(|line| line.line_total_cents).sum()
}

/// The cart as `GET /fn/cart` shows it.
#[derive(Debug, Serialize)]
pub struct CartView<'a> {
    pub lines: &'a [Line],
    pub total_cents: u64,
    pub currency: &'static str,
}

/// The body of `POST /fn/cart/items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    item: String,
    /// Optional for drinks, which come in one size.
    size: Option<String>,
    /// Defaults to 1. Signed so that `0` and `-1` get the range message, not a type error.
    qty: Option<i64>,
}

/// A validated line to add: on the menu, with a quantity in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLine {
    pub priced: menu::Priced,
    pub qty: u32,
}

impl NewLine {
    /// Parses and validates a `POST /fn/cart/items` body such as
    /// `{"item":"pepperoni","size":"large","qty":1}`.
    pub fn parse(body: &[u8]) -> Result<NewLine, ApiError> {
        let request: AddItem = serde_json::from_slice(body).map_err(|error| {
            ApiError::BadRequest(format!(
                "expected a JSON body like {{\"item\":\"pepperoni\",\"size\":\"large\",\"qty\":1}}: {error}"
            ))
        })?;
        let priced = menu::price(&request.item, request.size.as_deref())?;
        let qty = request.qty.unwrap_or(1);
        let qty = match u32::try_from(qty) {
            Ok(qty) if QTY.contains(&i64::from(qty)) => qty,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "qty must be between {} and {}, got {qty}",
                    QTY.start(),
                    QTY.end()
                )));
            }
        };
        Ok(NewLine { priced, qty })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(body: &str) -> NewLine {
        NewLine::parse(body.as_bytes()).unwrap()
    }

    fn refusal(body: &str) -> String {
        match NewLine::parse(body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn parses_an_item_size_and_quantity() {
        let new = line(r#"{"item":"pepperoni","size":"large","qty":2}"#);
        assert_eq!(
            (
                new.priced.item,
                new.priced.size,
                new.priced.unit_price_cents
            ),
            ("pepperoni", "large", 1499)
        );
        assert_eq!(new.qty, 2);
    }

    #[test]
    fn quantity_defaults_to_one_and_drink_size_to_regular() {
        let new = line(r#"{"item":"lemonade"}"#);
        assert_eq!((new.priced.size, new.qty), ("regular", 1));
    }

    #[test]
    fn quantity_outside_one_to_twenty_is_refused() {
        for qty in ["0", "-1", "21", "4294967297"] {
            let message = refusal(&format!(r#"{{"item":"water","qty":{qty}}}"#));
            assert!(message.contains("between 1 and 20"), "{qty}: {message}");
        }
        assert_eq!(line(r#"{"item":"water","qty":20}"#).qty, 20);
    }

    #[test]
    fn malformed_json_is_refused_with_an_example() {
        for body in [
            "",
            "not json",
            r#"{"item":3}"#,
            r#"{"size":"large"}"#,
            r#"{"item":"coke","qty":1.5}"#,
        ] {
            let message = refusal(body);
            assert!(
                message.contains(r#"{"item":"pepperoni""#),
                "{body}: {message}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_rather_than_ignored() {
        let message = refusal(r#"{"item":"coke","quantity":3}"#);
        assert!(message.contains("quantity"), "{message}");
    }

    #[test]
    fn unknown_items_and_sizes_are_refused() {
        assert!(refusal(r#"{"item":"sushi"}"#).contains("margherita"));
        assert!(refusal(r#"{"item":"margherita","size":"xl"}"#).contains("small, medium, large"));
    }

    #[test]
    fn adding_gives_each_line_the_next_id_and_prices_it() {
        let mut cart = Cart::default();
        assert_eq!(
            cart.add(&line(r#"{"item":"pepperoni","size":"large","qty":2}"#)),
            Ok(1)
        );
        assert_eq!(cart.add(&line(r#"{"item":"coke"}"#)), Ok(2));
        assert_eq!(cart.next_line_id, 3);
        assert_eq!(cart.lines[0].line_total_cents, 2998);
        assert_eq!(cart.view().total_cents, 2998 + 249);
    }

    #[test]
    fn removed_line_ids_are_not_reused() {
        let mut cart = Cart::default();
        let water = line(r#"{"item":"water"}"#);
        cart.add(&water).unwrap();
        cart.add(&water).unwrap();
        assert_eq!(cart.remove(2).map(|line| line.id), Ok(2));
        assert_eq!(cart.add(&water), Ok(3));
    }

    #[test]
    fn removing_a_missing_line_is_not_found() {
        let mut cart = Cart::default();
        assert!(matches!(cart.remove(7), Err(ApiError::NotFound(_))));
    }

    #[test]
    fn a_full_cart_refuses_more_lines() {
        let mut cart = Cart::default();
        let water = line(r#"{"item":"water"}"#);
        for _ in 0..MAX_LINES {
            cart.add(&water).unwrap();
        }
        assert_eq!(cart.add(&water), Err(ApiError::CartFull));
        assert_eq!(cart.lines.len(), MAX_LINES);
    }

    #[test]
    fn the_view_has_lines_total_and_currency_but_no_bookkeeping() {
        let mut cart = Cart::default();
        cart.add(&line(r#"{"item":"pepperoni","size":"large","qty":1}"#))
            .unwrap();
        let json = serde_json::to_value(cart.view()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "lines": [{"id": 1, "item": "pepperoni", "size": "large", "qty": 1,
                           "unit_price_cents": 1499, "line_total_cents": 1499}],
                "total_cents": 1499,
                "currency": "USD"
            })
        );
    }

    fn add_coke() -> Change {
        Change::Add(line(r#"{"item":"coke","qty":2}"#))
    }

    #[test]
    fn a_keyed_add_applied_twice_adds_one_line_and_replays_its_id() {
        let mut cart = Cart::default();
        assert_eq!(cart.apply(&add_coke(), Some("k1")), Ok(Changed::Applied(1)));
        let after_first = cart.clone();
        assert_eq!(
            cart.apply(&add_coke(), Some("k1")),
            Ok(Changed::Replayed(1))
        );
        assert_eq!(cart, after_first, "a replay changes nothing");
        assert_eq!(cart.lines.len(), 1);
    }

    #[test]
    fn the_same_add_without_a_key_or_with_another_key_adds_again() {
        let mut cart = Cart::default();
        assert_eq!(cart.apply(&add_coke(), None), Ok(Changed::Applied(1)));
        assert_eq!(cart.apply(&add_coke(), None), Ok(Changed::Applied(2)));
        assert_eq!(cart.apply(&add_coke(), Some("k1")), Ok(Changed::Applied(3)));
        assert_eq!(cart.apply(&add_coke(), Some("k2")), Ok(Changed::Applied(4)));
        assert_eq!(cart.lines.len(), 4);
        assert_eq!(cart.applied.len(), 2, "only keyed changes are recorded");
    }

    #[test]
    fn the_same_body_spelled_differently_is_the_same_change() {
        let mut cart = Cart::default();
        cart.apply(&add_coke(), Some("k1")).unwrap();
        let respelled = Change::Add(line(r#"{ "qty" : 2, "size": "regular", "item": "coke" }"#));
        assert_eq!(cart.apply(&respelled, Some("k1")), Ok(Changed::Replayed(1)));
    }

    #[test]
    fn a_key_reused_for_a_different_change_is_refused_and_changes_nothing() {
        let mut cart = Cart::default();
        cart.apply(&add_coke(), Some("k1")).unwrap();
        let before = cart.clone();
        let water = Change::Add(line(r#"{"item":"water"}"#));
        assert_eq!(
            cart.apply(&water, Some("k1")),
            Err(ApiError::IdempotencyKeyReused {
                earlier: "add 2 coke regular".into()
            })
        );
        assert!(matches!(
            cart.apply(&Change::Remove(1), Some("k1")),
            Err(ApiError::IdempotencyKeyReused { .. })
        ));
        assert_eq!(cart, before);
    }

    #[test]
    fn a_keyed_remove_replays_instead_of_answering_not_found() {
        let mut cart = Cart::default();
        cart.apply(&add_coke(), None).unwrap();
        assert_eq!(
            cart.apply(&Change::Remove(1), Some("r1")),
            Ok(Changed::Applied(1))
        );
        assert_eq!(
            cart.apply(&Change::Remove(1), Some("r1")),
            Ok(Changed::Replayed(1))
        );
        assert!(matches!(
            cart.apply(&Change::Remove(1), Some("r2")),
            Err(ApiError::NotFound(_))
        ));
    }

    #[test]
    fn a_failed_change_records_no_key_so_its_retry_is_tried_afresh() {
        let mut cart = Cart::default();
        assert!(matches!(
            cart.apply(&Change::Remove(1), Some("r1")),
            Err(ApiError::NotFound(_))
        ));
        assert!(cart.applied.is_empty());
        cart.apply(&add_coke(), None).unwrap();
        assert_eq!(
            cart.apply(&Change::Remove(1), Some("r1")),
            Ok(Changed::Applied(1))
        );

        let mut full = Cart::default();
        let water = Change::Add(line(r#"{"item":"water"}"#));
        for _ in 0..MAX_LINES {
            full.apply(&water, None).unwrap();
        }
        assert_eq!(full.apply(&water, Some("w")), Err(ApiError::CartFull));
        assert!(full.applied.is_empty());
    }

    #[test]
    fn the_cart_remembers_the_last_max_applied_keys_and_forgets_the_oldest() {
        let mut cart = Cart::default();
        let water = Change::Add(line(r#"{"item":"water"}"#));
        for n in 0..=MAX_APPLIED {
            cart.apply(&water, Some(&format!("k{n}"))).unwrap();
            cart.lines.clear(); // stay far from MAX_LINES; only the keys matter here
        }
        assert_eq!(cart.applied.len(), MAX_APPLIED);
        assert_eq!(cart.applied[0].key, "k1", "k0 was the oldest");
        let newest = format!("k{MAX_APPLIED}");
        assert!(matches!(
            cart.apply(&water, Some(&newest)),
            Ok(Changed::Replayed(_))
        ));
        assert!(
            matches!(cart.apply(&water, Some("k0")), Ok(Changed::Applied(_))),
            "a key older than the window is new again"
        );
    }

    #[test]
    fn a_cart_stored_before_keys_existed_still_reads_and_omits_an_empty_key_list() {
        let old: Cart =
            serde_json::from_str(r#"{"lines":[],"next_line_id":4,"pending":null}"#).unwrap();
        assert_eq!(old.next_line_id, 4);
        assert!(old.applied.is_empty());
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("applied").is_none(), "{json}");
    }

    #[test]
    fn the_stored_record_round_trips() {
        let mut cart = Cart::default();
        cart.add(&line(r#"{"item":"veggie","size":"small"}"#))
            .unwrap();
        let json = serde_json::to_value(&cart).unwrap();
        assert_eq!(json["next_line_id"], 2);
        assert_eq!(json["pending"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Cart>(json).unwrap(), cart);

        cart.apply(&Change::Remove(1), Some("r1")).unwrap();
        let json = serde_json::to_value(&cart).unwrap();
        assert_eq!(
            json["applied"],
            serde_json::json!([{"key": "r1", "change": "remove line 1", "line_id": 1}])
        );
        assert_eq!(serde_json::from_value::<Cart>(json).unwrap(), cart);
    }
}

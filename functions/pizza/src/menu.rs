//! The menu: what can be ordered, in which sizes, at which price.
//!
//! Prices are integer cents so that totals are exact; the shop has one currency.

use serde::Serialize;

use crate::ApiError;

/// The currency every price and total is in.
pub const CURRENCY: &str = "USD";

/// The only size a drink comes in; a drink ordered without a size gets it.
pub const DRINK_SIZE: &str = "regular";

/// The pizza sizes, smallest first.
const PIZZA_SIZES: [&str; 3] = ["small", "medium", "large"];

/// What kind of thing an item is; decides which sizes it comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pizza,
    Drink,
}

/// One thing on the menu and its price in each size it comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MenuItem {
    pub name: &'static str,
    pub kind: Kind,
    /// Price in cents for each size, in the order of `PIZZA_SIZES` for a pizza; one price for a
    /// drink.
    prices_cents: &'static [u64],
}

impl MenuItem {
    const fn pizza(name: &'static str, prices_cents: &'static [u64; 3]) -> MenuItem {
        MenuItem {
            name,
            kind: Kind::Pizza,
            prices_cents,
        }
    }

    const fn drink(name: &'static str, price_cents: &'static [u64; 1]) -> MenuItem {
        MenuItem {
            name,
            kind: Kind::Drink,
            prices_cents: price_cents,
        }
    }

    /// The sizes this item comes in, each with its price in cents.
    pub fn sizes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let names: &'static [&'static str] = match self.kind {
            Kind::Pizza => &PIZZA_SIZES,
            Kind::Drink => &[DRINK_SIZE],
        };
        names.iter().copied().zip(self.prices_cents.iter().copied())
    }
}

/// Everything the shop sells.
pub const MENU: &[MenuItem] = &[
    MenuItem::pizza("margherita", &[899, 1149, 1399]),
    MenuItem::pizza("pepperoni", &[999, 1249, 1499]),
    MenuItem::pizza("hawaiian", &[1049, 1299, 1549]),
    MenuItem::pizza("veggie", &[999, 1249, 1499]),
    MenuItem::pizza("quattro-formaggi", &[1099, 1349, 1599]),
    MenuItem::drink("coke", &[249]),
    MenuItem::drink("lemonade", &[299]),
    MenuItem::drink("water", &[149]),
];

/// An item and size that are on the menu, with the unit price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    pub item: &'static str,
    pub size: &'static str,
    pub unit_price_cents: u64,
}

/// Prices `item` in `size`. A drink without a size is [`DRINK_SIZE`]; a pizza needs one.
///
/// The error is a 400 whose message lists what would have been valid.
pub fn price(item: &str, size: Option<&str>) -> Result<Priced, ApiError> {
    let Some(entry) = MENU.iter().find(|entry| entry.name == item) else {
        let names: Vec<&str> = MENU.iter().map(|entry| entry.name).collect();
        return Err(ApiError::BadRequest(format!(
            "unknown item {item:?}; the menu has: {}",
            names.join(", ")
        )));
    };
    let size = match (size, entry.kind) {
        (Some(size), _) => size,
        (None, Kind::Drink) => DRINK_SIZE,
        (None, Kind::Pizza) => {
            return Err(ApiError::BadRequest(format!(
                "{item} needs a size: one of {}",
                PIZZA_SIZES.join(", ")
            )));
        }
    };
    match entry.sizes().find(|(name, _)| *name == size) {
        Some((size, unit_price_cents)) => Ok(Priced {
            item: entry.name,
            size,
            unit_price_cents,
        }),
        None => {
            let sizes: Vec<&str> = entry.sizes().map(|(name, _)| name).collect();
            Err(ApiError::BadRequest(format!(
                "{item} does not come in size {size:?}; it comes in: {}",
                sizes.join(", ")
            )))
        }
    }
}

/// The menu as served by `GET /fn/cart/menu`.
#[derive(Debug, Serialize)]
pub struct MenuView {
    pub currency: &'static str,
    pub items: Vec<MenuItemView>,
}

/// One item of [`MenuView`].
#[derive(Debug, Serialize)]
pub struct MenuItemView {
    pub name: &'static str,
    pub kind: Kind,
    pub sizes: Vec<SizeView>,
}

/// One size of [`MenuItemView`].
#[derive(Debug, Serialize)]
pub struct SizeView {
    pub size: &'static str,
    pub price_cents: u64,
}

/// The whole menu, ready to serialize.
pub fn view() -> MenuView {
    let items = MENU
        .iter()
        .map(|entry| MenuItemView {
            name: entry.name,
            kind: entry.kind,
            sizes: entry
                .sizes()
                .map(|(size, price_cents)| SizeView { size, price_cents })
                .collect(),
        })
        .collect();
    MenuView {
        currency: CURRENCY,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_request_message(result: Result<Priced, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn every_pizza_comes_in_three_sizes_and_every_drink_in_one() {
        for entry in MENU {
            let expected = match entry.kind {
                Kind::Pizza => 3,
                Kind::Drink => 1,
            };
            assert_eq!(entry.sizes().count(), expected, "{}", entry.name);
        }
    }

    #[test]
    fn prices_a_pizza_in_a_size() {
        let priced = price("pepperoni", Some("large")).unwrap();
        assert_eq!(
            priced,
            Priced {
                item: "pepperoni",
                size: "large",
                unit_price_cents: 1499
            }
        );
    }

    #[test]
    fn a_drink_without_size_is_regular() {
        let priced = price("coke", None).unwrap();
        assert_eq!(priced.size, "regular");
        assert_eq!(price("coke", Some("regular")).unwrap(), priced);
    }

    #[test]
    fn a_pizza_without_size_is_refused_with_the_sizes() {
        let message = bad_request_message(price("veggie", None));
        assert!(message.contains("small, medium, large"), "{message}");
    }

    #[test]
    fn an_unknown_item_is_refused_with_the_menu() {
        let message = bad_request_message(price("calzone", Some("large")));
        assert!(message.contains("calzone"), "{message}");
        assert!(
            message.contains("margherita") && message.contains("water"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_size_is_refused_with_the_item_sizes() {
        let message = bad_request_message(price("water", Some("large")));
        assert!(message.contains("regular"), "{message}");
        let message = bad_request_message(price("hawaiian", Some("huge")));
        assert!(message.contains("small, medium, large"), "{message}");
    }

    #[test]
    fn the_menu_view_lists_every_item() {
        let json = serde_json::to_value(view()).unwrap();
        assert_eq!(json["currency"], "USD");
        assert_eq!(json["items"].as_array().unwrap().len(), MENU.len());
        assert_eq!(json["items"][0]["kind"], "pizza");
        assert_eq!(
            json["items"][0]["sizes"][2],
            serde_json::json!({"size": "large", "price_cents": 1399})
        );
    }
}

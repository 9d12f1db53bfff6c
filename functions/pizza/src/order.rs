//! The order record: what a checkout turns a cart into, stored for good under `order:<id>`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cart::Line;
use crate::menu::CURRENCY;

/// A placed order. Its JSON is both what is stored and what clients get.
///
/// Every field is fixed when the order is built, before the checkout commits it, so that whoever
/// completes a pending checkout writes exactly the same bytes (see [`crate::checkout`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub lines: Vec<Line>,
    pub total_cents: u64,
    pub currency: String,
    /// When the order was placed, RFC 3339 in UTC to the second.
    pub created_at: String,
    /// The `Idempotency-Key` the order was placed with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl Order {
    /// An order of `lines`, totalled.
    pub fn new(
        id: String,
        lines: Vec<Line>,
        created_at: String,
        idempotency_key: Option<String>,
    ) -> Order {
        let total_cents = crate::cart::total_cents(&lines);
        Order {
            id,
            lines,
            total_cents,
            currency: CURRENCY.to_owned(),
            created_at,
            idempotency_key,
        }
    }
}

/// `time` as RFC 3339 in UTC to the second, e.g. `2025-03-01T12:34:56Z`; times before 1970 are
/// clamped to the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian (year, month, day) of `days` after 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`, restricted to days after the epoch: it counts in 400-year
/// eras starting on March 1st, so the leap day is the last day of its year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch from 1970-01-01 to 0000-03-01, which is 719,468 days earlier.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn formats_the_epoch() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn ignores_sub_second_precision() {
        let time = UNIX_EPOCH + Duration::from_millis(1_735_689_600_999);
        assert_eq!(rfc3339(time), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn clamps_times_before_the_epoch() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walks 1970..2400 (leap centuries included) and checks each date is the day after the last.
        let mut previous = civil_from_days(0);
        for days in 1..157_000 {
            let (year, month, day) = civil_from_days(days);
            let (prev_year, prev_month, prev_day) = previous;
            let next_day = (year, month, day) == (prev_year, prev_month, prev_day + 1);
            let next_month = (year, month, day) == (prev_year, prev_month + 1, 1);
            let next_year = (year, month, day) == (prev_year + 1, 1, 1) && prev_month == 12;
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {:?}",
                (year, month, day)
            );
            previous = (year, month, day);
        }
    }

    #[test]
    fn february_has_29_days_exactly_in_leap_years() {
        let day_after_feb_28 = |year: u64| {
            let mut days = 0;
            while civil_from_days(days) != (year, 2, 28) {
                days += 1;
            }
            civil_from_days(days + 1)
        };
        assert_eq!(day_after_feb_28(2000), (2000, 2, 29));
        assert_eq!(day_after_feb_28(2024), (2024, 2, 29));
        assert_eq!(day_after_feb_28(2100), (2100, 3, 1));
        assert_eq!(day_after_feb_28(2025), (2025, 3, 1));
    }
}

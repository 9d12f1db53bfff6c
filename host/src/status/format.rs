//! Text as the status page prints it: escaped for HTML, and figures, durations and ages written
//! the way people write them.

use std::time::Duration;

use crate::fleet::Quantile;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How long ago `then` was, both in seconds since the epoch: `3 s`, `12 min`, `5 h`, `2 d`.
pub(super) fn ago(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// `1234567` → `1,234,567`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub(super) fn rate(per_second: f64) -> String {
    if per_second <= 0.0 {
        "0".to_owned()
    } else if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

/// `errors` out of `total` as a percentage; `—` with no requests.
pub(super) fn share(errors: u64, total: u64) -> String {
    if total == 0 {
        return "—".to_owned();
    }
    let percent = errors as f64 * 100.0 / total as f64;
    if errors == 0 {
        "0 %".to_owned()
    } else if percent < 10.0 {
        format!("{percent:.1} %")
    } else {
        format!("{percent:.0} %")
    }
}

pub(super) fn latency(quantile: Option<Quantile>) -> String {
    match quantile {
        None => "—".to_owned(),
        Some(Quantile::Within(d)) => duration(d),
        Some(Quantile::Above(d)) => format!("&gt; {}", duration(d)),
    }
}

/// `85 µs`, `1.2 ms`, `340 ms`, `2.50 s`.
pub(super) fn duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 100_000.0 {
        format!("{:.1} ms", micros / 1000.0)
    } else if micros < 1e6 {
        format!("{:.0} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(share(1, 200), "0.5 %");
        assert_eq!(share(0, 0), "—");
        assert_eq!(duration(Duration::from_micros(85)), "85 µs");
        assert_eq!(duration(Duration::from_micros(1_250)), "1.2 ms");
        assert_eq!(duration(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(ago(1000, 1000 - 125), "2 min");
    }
}

//! Random identifiers for sessions and orders.
//!
//! 128 random bits, so ids can neither collide nor be guessed: an order id is all it takes to read
//! that order.

use crate::ApiError;

/// Random bytes in an id; the id is twice as many hex digits.
const ID_BYTES: usize = 16;

/// How long an id from a client may be. Ours are 32 digits; the range leaves room to change that
/// without logging everyone out.
const ID_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// A fresh id of 32 lower-case hex digits, from `wasi:random` in a guest.
pub fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|error| ApiError::Internal(format!("no random bytes: {error}")))?;
    Ok(hex(&bytes))
}

/// Whether `id`, taken from a client, could be one of our ids: 16 to 64 ASCII letters and digits.
///
/// Ids become part of kv keys; checking the shape first keeps empty, huge or punctuated input,
/// control characters included, away from the store.
pub fn is_well_formed(id: &str) -> bool {
    ID_LEN.contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// `bytes` as lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes_every_nibble() {
        assert_eq!(hex(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
    }

    #[test]
    fn ids_of_the_wrong_shape_are_refused() {
        assert!(is_well_formed("0123456789abcdefABCDEF"));
        for bad in [
            "",
            "short",
            "0123456789abcdef:",
            &"a".repeat(65),
            "0123456789abcdef\u{7f}",
        ] {
            assert!(!is_well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn random_ids_are_well_formed_and_differ() {
        let first = random_id().unwrap();
        let second = random_id().unwrap();
        assert_eq!(first.len(), 32);
        assert!(is_well_formed(&first));
        assert_ne!(first, second);
    }
}

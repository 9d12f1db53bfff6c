//! The one place that checks a guest's key and value and turns a key into a storage key: a
//! bucket is its storage prefix, and every key is checked before it gets one.

use std::sync::Arc;

use super::KvError;

/// Longest key a guest may use, in bytes (documented in the WIT).
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value a guest may store, in bytes (documented in the WIT).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest bucket name, in bytes; names are `[A-Za-z0-9_.-]`, so no bucket can spell another's
/// prefix.
pub const MAX_BUCKET_BYTES: usize = 64;

/// The bucket (wasi:keyvalue) and label (Spin) that name the app's own keyspace.
pub const DEFAULT_BUCKET: &str = "default";

/// An open keyspace: the storage prefix every key of it gets. The representation of a
/// `wasi:keyvalue` bucket and of a Spin store in the request's resource table.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub(super) namespace: Arc<str>,
}

/// The storage key of `key` in `bucket`, after checking the key.
pub(super) fn storage_key(bucket: &Bucket, key: &str) -> Result<String, KvError> {
    validate_key(key)?;
    Ok(format!("{}{key}", bucket.namespace))
}

fn validate_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::InvalidKey("key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidKey(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(KvError::InvalidKey(
            "key contains a control character".into(),
        ));
    }
    Ok(())
}

pub(super) fn validate_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge(MAX_VALUE_BYTES as u64));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_before_they_reach_the_store() {
        assert!(validate_key("cart:abc").is_ok());
        assert!(matches!(validate_key(""), Err(KvError::InvalidKey(_))));
        assert!(matches!(
            validate_key(&"k".repeat(MAX_KEY_BYTES + 1)),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(validate_key("a\nb"), Err(KvError::InvalidKey(_))));
        assert!(validate_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(matches!(
            validate_value(&vec![0; MAX_VALUE_BYTES + 1]),
            Err(KvError::ValueTooLarge(_))
        ));
    }
}

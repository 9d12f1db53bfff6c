//! Guests' keys: reads and writes with expiry, atomic increment and compare-and-swap, and
//! listings in key order.

use std::ops::Bound;
use std::time::{Duration, Instant};

use super::{MemoryBackend, Stored};
use crate::backend::{BackendError, KeyPage};

fn expiry(ttl_seconds: Option<u32>) -> Option<Instant> {
    ttl_seconds.map(|ttl| Instant::now() + Duration::from_secs(u64::from(ttl.max(1))))
}

impl MemoryBackend {
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().live(key).map(|s| s.value.clone()))
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), BackendError> {
        let stored = Stored {
            value: value.to_vec(),
            expires_at: expiry(ttl_seconds),
        };
        self.lock().kv.insert(key.to_owned(), stored);
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let existed = state.live(key).is_some();
        state.kv.remove(key);
        Ok(existed)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.lock().live(key).is_some())
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, BackendError> {
        let mut state = self.lock();
        match state.live(key) {
            Some(stored) => {
                let current: i64 = std::str::from_utf8(&stored.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(BackendError::NotAnInteger)?;
                let next = current
                    .checked_add(delta)
                    .ok_or(BackendError::NotAnInteger)?;
                stored.value = next.to_string().into_bytes();
                Ok(next)
            }
            None => {
                let stored = Stored {
                    value: delta.to_string().into_bytes(),
                    expires_at: None,
                };
                state.kv.insert(key.to_owned(), stored);
                Ok(delta)
            }
        }
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let current = state.live(key).map(|s| s.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        let stored = Stored {
            value: new.to_vec(),
            expires_at: expiry(ttl_seconds),
        };
        state.kv.insert(key.to_owned(), stored);
        Ok(true)
    }

    /// Keys in order; the cursor is the last key returned.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, BackendError> {
        let full_prefix = format!("{namespace}{prefix}");
        let start = match cursor {
            Some(after) if after.starts_with(prefix) => {
                Bound::Excluded(format!("{namespace}{after}"))
            }
            Some(_) => return Err(BackendError::InvalidCursor),
            None => Bound::Included(full_prefix.clone()),
        };
        let now = Instant::now();
        let state = self.lock();
        let mut keys = Vec::new();
        let mut more = false;
        let live = state
            .kv
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&full_prefix))
            .filter(|(_, s)| s.expires_at.is_none_or(|at| at > now));
        for (key, _) in live {
            if keys.len() == limit as usize {
                more = true;
                break;
            }
            keys.push(key[namespace.len()..].to_owned());
        }
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap_writes_only_on_match() {
        let m = MemoryBackend::new();
        assert!(
            m.compare_and_swap("k", None, b"a", None)
                .await
                .is_ok_and(|w| w)
        );
        assert!(
            m.compare_and_swap("k", None, b"b", None)
                .await
                .is_ok_and(|w| !w)
        );
        assert!(
            m.compare_and_swap("k", Some(b"x"), b"b", None)
                .await
                .is_ok_and(|w| !w)
        );
        assert!(
            m.compare_and_swap("k", Some(b"a"), b"b", None)
                .await
                .is_ok_and(|w| w)
        );
        assert_eq!(m.get("k").await.ok().flatten(), Some(b"b".to_vec()));
    }

    #[tokio::test]
    async fn increment_counts_from_zero_and_refuses_text() {
        let m = MemoryBackend::new();
        assert_eq!(m.increment("n", 5).await.ok(), Some(5));
        assert_eq!(m.increment("n", -2).await.ok(), Some(3));
        m.set("t", b"pizza", None).await.ok();
        assert!(matches!(
            m.increment("t", 1).await,
            Err(BackendError::NotAnInteger)
        ));
    }

    #[tokio::test]
    async fn listing_pages_through_a_prefix_in_order() {
        let m = MemoryBackend::new();
        for k in ["ns:a1", "ns:a2", "ns:a3", "ns:b1", "other:a1"] {
            m.set(k, b"v", None).await.ok();
        }
        let first = m.list("ns:", "a", None, 2).await.ok();
        assert_eq!(
            first,
            Some(KeyPage {
                keys: vec!["a1".into(), "a2".into()],
                cursor: Some("a2".into())
            })
        );
        let second = m.list("ns:", "a", Some("a2"), 2).await.ok();
        assert_eq!(
            second,
            Some(KeyPage {
                keys: vec!["a3".into()],
                cursor: None
            })
        );
    }
}

//! One request's view of the store ([`KvSession`]): the app's buckets, and every single-key
//! operation and listing, each checked, charged to the budget and measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::namespace::{storage_key, validate_value};
use super::{Bucket, DEFAULT_BUCKET, KvBudget, KvError, MAX_BUCKET_BYTES, MAX_KEY_BYTES};
use crate::backend::{Backend, KeyPage, keys};
use crate::metrics::{KvOp, Metrics};

/// Most keys one `list-keys` page may hold (documented in the WIT).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// One request's view of the store: the backend, the function's app, and its default bucket.
pub struct KvSession {
    backend: Backend,
    app: Arc<str>,
    /// `gf:kv:{app}:` — the app's own keyspace; guests never see or choose it.
    default: Bucket,
    pub(super) metrics: Arc<Metrics>,
    /// Backend cursors handed to `wasi:keyvalue@0.2.0-draft` guests, whose cursors are `u64`:
    /// the guest gets an index into this list. Valid for the request that made them, which is
    /// the whole life of the instance that can use them.
    pub(crate) draft_cursors: Vec<String>,
    pub(super) budget: KvBudget,
    /// Operations and bytes used so far. Atomics only because the session is shared by
    /// reference across `.await`s; one request uses it from one task.
    pub(super) ops_used: AtomicU64,
    pub(super) bytes_used: AtomicU64,
}

impl KvSession {
    /// A session with the default [`KvBudget`].
    pub fn new(backend: Backend, app: &str, metrics: Arc<Metrics>) -> Self {
        Self::with_budget(backend, app, metrics, KvBudget::default())
    }

    pub fn with_budget(
        backend: Backend,
        app: &str,
        metrics: Arc<Metrics>,
        budget: KvBudget,
    ) -> Self {
        KvSession {
            budget,
            ops_used: AtomicU64::new(0),
            bytes_used: AtomicU64::new(0),
            backend,
            app: app.into(),
            default: Bucket {
                namespace: keys::kv_namespace(app).into(),
            },
            metrics,
            draft_cursors: Vec::new(),
        }
    }

    /// The app's own keyspace (`goldfish:function/kv`, bucket `default`).
    pub fn default_bucket(&self) -> &Bucket {
        &self.default
    }

    /// The keyspace a `wasi:keyvalue` guest names `identifier`: `default` is the app's own,
    /// any other valid name a separate keyspace of the same app. `None` for a name that is not
    /// `[A-Za-z0-9_.-]{1,64}`.
    pub fn open(&self, identifier: &str) -> Option<Bucket> {
        if identifier == DEFAULT_BUCKET {
            return Some(self.default.clone());
        }
        let valid = !identifier.is_empty()
            && identifier.len() <= MAX_BUCKET_BYTES
            && identifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        valid.then(|| Bucket {
            namespace: keys::bucket_namespace(&self.app, identifier).into(),
        })
    }

    pub async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let value = self
            .measured(KvOp::Get, key.len(), async {
                Ok(self.backend.get(&storage_key(bucket, key)?).await?)
            })
            .await?;
        // What a read brings back counts too (charged after, so the next call sees it).
        if let Some(value) = &value {
            self.bytes_used
                .fetch_add(value.len() as u64, Ordering::Relaxed);
        }
        Ok(value)
    }

    pub async fn set(
        &self,
        bucket: &Bucket,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), KvError> {
        self.measured(KvOp::Set, key.len() + value.len(), async {
            let key = storage_key(bucket, key)?;
            validate_value(value)?;
            Ok(self.backend.set(&key, value, ttl_seconds).await?)
        })
        .await
    }

    pub async fn delete(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        self.measured(KvOp::Delete, key.len(), async {
            Ok(self.backend.delete(&storage_key(bucket, key)?).await?)
        })
        .await
    }

    pub async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        self.measured(KvOp::Exists, key.len(), async {
            Ok(self.backend.exists(&storage_key(bucket, key)?).await?)
        })
        .await
    }

    pub async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        self.measured(KvOp::Increment, key.len(), async {
            Ok(self
                .backend
                .increment(&storage_key(bucket, key)?, delta)
                .await?)
        })
        .await
    }

    pub async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, KvError> {
        let sent = key.len() + new.len() + expected.map_or(0, <[u8]>::len);
        self.measured(KvOp::CompareAndSwap, sent, async {
            let key = storage_key(bucket, key)?;
            validate_value(new)?;
            // `expected` travels to Redis too: no value can be larger than the limit, so a larger
            // `expected` could never match and is refused before it costs the shared connection.
            if let Some(expected) = expected {
                validate_value(expected)?;
            }
            Ok(self
                .backend
                .compare_and_swap(&key, expected, new, ttl_seconds)
                .await?)
        })
        .await
    }

    /// One page of the keys in `bucket` starting with `prefix`; `limit` is clamped to
    /// 1..=[`MAX_LIST_LIMIT`].
    pub async fn list(
        &self,
        bucket: &Bucket,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, KvError> {
        self.measured(KvOp::ListKeys, prefix.len(), async {
            if prefix.len() > MAX_KEY_BYTES || prefix.chars().any(char::is_control) {
                return Err(KvError::InvalidKey(
                    "prefix is too long or contains a control character".into(),
                ));
            }
            let limit = limit.clamp(1, MAX_LIST_LIMIT);
            Ok(self
                .backend
                .list(&bucket.namespace, prefix, cursor, limit)
                .await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MAX_VALUE_BYTES;

    fn session(app: &str) -> KvSession {
        let metrics = Metrics::new().expect("metrics");
        KvSession::new(Backend::Memory(Default::default()), app, metrics)
    }

    #[test]
    fn every_key_lands_in_the_app_namespace() {
        let session = session("pizza");
        assert_eq!(
            storage_key(session.default_bucket(), "gf:kv:{other}:x")
                .ok()
                .as_deref(),
            Some("gf:kv:{pizza}:gf:kv:{other}:x")
        );
    }

    #[tokio::test]
    async fn compare_and_swap_refuses_an_expected_value_larger_than_any_value() {
        let session = session("pizza");
        let huge = vec![0u8; MAX_VALUE_BYTES + 1];
        let swapped = session
            .compare_and_swap(session.default_bucket(), "k", Some(&huge), b"new", None)
            .await;
        assert!(matches!(swapped, Err(KvError::ValueTooLarge(_))));
    }

    #[test]
    fn buckets_are_separate_keyspaces_of_the_same_app() {
        let session = session("pizza");
        let default = session.open("default").expect("default opens");
        assert_eq!(&*default.namespace, "gf:kv:{pizza}:");
        let other = session.open("sessions").expect("a plain name opens");
        assert_eq!(
            storage_key(&other, "k").ok().as_deref(),
            Some("gf:kvb:{pizza}:sessions:k")
        );
        // Names that could spell another bucket's (or app's) prefix never open.
        for bad in [
            "",
            "a:b",
            "{evil}",
            "a b",
            &"b".repeat(MAX_BUCKET_BYTES + 1),
        ] {
            assert!(session.open(bad).is_none(), "{bad:?} must not open");
        }
    }
}

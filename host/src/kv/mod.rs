//! Guest key-value access. [`KvSession`] is the one place that checks a guest's key and turns it
//! into a storage key inside the function's app; the dialects guests import are thin adapters
//! onto it, so every dialect sees exactly the same keyspace and limits:
//! - [`goldfish`]: `goldfish:function/kv` (TTL, increment, compare-and-swap, listing);
//! - [`keyvalue_draft`]: `wasi:keyvalue@0.2.0-draft` (wasmCloud's);
//! - [`keyvalue_draft2`]: `wasi:keyvalue@0.2.0-draft2` (Spin's, with `cas`/`swap`);
//! - [`spin`]: `fermyon:spin/key-value@2.0.0` (Spin SDK apps).
//!
//! Bucket `default` (and Spin's label `default`) *is* the keyspace `goldfish:function/kv` sees.
//! Any other bucket name is a separate keyspace inside the same app; no name reaches another app.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::backend::{Backend, BackendError, KeyPage, keys};
use crate::metrics::Metrics;

/// Longest key a guest may use, in bytes (documented in the WIT).
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value a guest may store, in bytes (documented in the WIT).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` page may hold (documented in the WIT).
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Longest bucket name, in bytes; names are `[A-Za-z0-9_.-]`, so no bucket can spell another's
/// prefix.
pub const MAX_BUCKET_BYTES: usize = 64;
/// Most keys one batch call (`get-many`, `set-many`, `delete-many`) may name.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Default for [`KvBudget::max_ops`].
pub const DEFAULT_KV_OPS: u64 = 1000;
/// Default for [`KvBudget::max_bytes`].
pub const DEFAULT_KV_BYTES: u64 = 16 << 20;

/// What one request may do through kv: a guest looping on kv cannot flood the shared Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvBudget {
    /// Operations (each key of a batch counts).
    pub max_ops: u64,
    /// Bytes of keys and values sent plus values read.
    pub max_bytes: u64,
}

impl Default for KvBudget {
    fn default() -> Self {
        KvBudget {
            max_ops: DEFAULT_KV_OPS,
            max_bytes: DEFAULT_KV_BYTES,
        }
    }
}

/// The bucket (wasi:keyvalue) and label (Spin) that name the app's own keyspace.
pub const DEFAULT_BUCKET: &str = "default";

/// An open keyspace: the storage prefix every key of it gets. The representation of a
/// `wasi:keyvalue` bucket and of a Spin store in the request's resource table.
#[derive(Clone, Debug)]
pub struct Bucket {
    namespace: Arc<str>,
}

/// A `wasi:keyvalue@0.2.0-draft2` compare-and-swap handle: the key and the value read when the
/// handle was made; `swap` writes only if the key still holds exactly that value.
#[derive(Debug)]
pub struct Cas {
    bucket: Bucket,
    key: String,
    current: Option<Vec<u8>>,
}

/// Why a key-value operation failed, before each dialect maps it onto its own WIT error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("value is larger than the limit of {0} bytes")]
    ValueTooLarge(u64),
    #[error("value is not a decimal 64-bit integer, or the result overflows")]
    NotAnInteger,
    #[error("the cursor was not returned by an earlier listing")]
    InvalidCursor,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Not a storage failure: the guest asked for more than one call may do.
    #[error("{0}")]
    Refused(String),
    /// The request has used up its kv budget; the call had no effect.
    #[error("{0}")]
    BudgetExceeded(String),
}

impl From<BackendError> for KvError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(reason) => KvError::Unavailable(reason),
            BackendError::NotAnInteger => KvError::NotAnInteger,
            BackendError::InvalidCursor => KvError::InvalidCursor,
        }
    }
}

impl crate::engine::HostState {
    /// The keyspace behind a guest's bucket (or Spin store) handle.
    pub(crate) fn bucket(
        &self,
        handle: &wasmtime::component::Resource<Bucket>,
    ) -> wasmtime::Result<Bucket> {
        Ok(self.table.get(handle)?.clone())
    }
}

/// `get`, `set`, `delete` and `exists` on a bucket handle, the same in both `wasi:keyvalue`
/// drafts (only the generated `Result` and `other` error types differ); expanded inside each
/// draft's `impl store::HostBucket`.
macro_rules! bucket_basics {
    () => {
        async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>> {
            let bucket = self.bucket(&bucket)?;
            Ok(self.kv.get(&bucket, &key).await.map_err(other))
        }

        async fn set(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
            value: Vec<u8>,
        ) -> Result<()> {
            let bucket = self.bucket(&bucket)?;
            Ok(self
                .kv
                .set(&bucket, &key, &value, None)
                .await
                .map_err(other))
        }

        async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<()> {
            let bucket = self.bucket(&bucket)?;
            Ok(self.kv.delete(&bucket, &key).await.map(drop).map_err(other))
        }

        async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool> {
            let bucket = self.bucket(&bucket)?;
            Ok(self.kv.exists(&bucket, &key).await.map_err(other))
        }
    };
}
pub(crate) use bucket_basics;

pub mod goldfish;
pub mod keyvalue_draft;
pub mod keyvalue_draft2;
pub mod spin;

/// One request's view of the store: the backend, the function's app, and its default bucket.
pub struct KvSession {
    backend: Backend,
    app: Arc<str>,
    /// `gf:kv:{app}:` — the app's own keyspace; guests never see or choose it.
    default: Bucket,
    metrics: Arc<Metrics>,
    /// Backend cursors handed to `wasi:keyvalue@0.2.0-draft` guests, whose cursors are `u64`:
    /// the guest gets an index into this list. Valid for the request that made them, which is
    /// the whole life of the instance that can use them.
    pub(crate) draft_cursors: Vec<String>,
    budget: KvBudget,
    /// Operations and bytes used so far. Atomics only because the session is shared by
    /// reference across `.await`s; one request uses it from one task.
    ops_used: AtomicU64,
    bytes_used: AtomicU64,
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

    /// Charges one operation sending `bytes` to the budget, or refuses it if the budget is
    /// used up.
    fn charge(&self, bytes: usize) -> Result<(), KvError> {
        let ops = self.ops_used.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.bytes_used.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if ops > self.budget.max_ops {
            return Err(KvError::BudgetExceeded(format!(
                "kv budget exceeded: this request may make {} kv operations (host option \
                 --kv-ops, ?kv_ops= at deploy)",
                self.budget.max_ops
            )));
        }
        if total > self.budget.max_bytes {
            return Err(KvError::BudgetExceeded(format!(
                "kv budget exceeded: this request may move {} bytes through kv (host option \
                 --kv-bytes, ?kv_bytes= at deploy)",
                self.budget.max_bytes
            )));
        }
        Ok(())
    }

    /// Runs one operation sending `bytes` (after charging it to the budget) and records its
    /// outcome and latency.
    async fn measured<T>(
        &self,
        op: &'static str,
        bytes: usize,
        call: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = match self.charge(bytes) {
            Ok(()) => call.await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(KvError::InvalidKey(_)) => "invalid_key",
            Err(KvError::ValueTooLarge(_)) => "value_too_large",
            Err(KvError::NotAnInteger) => "not_an_integer",
            Err(KvError::InvalidCursor) => "invalid_cursor",
            Err(KvError::Unavailable(_)) => "unavailable",
            Err(KvError::Refused(_)) => "refused",
            Err(KvError::BudgetExceeded(_)) => "budget_exceeded",
        };
        self.metrics.kv_call(op, outcome, started.elapsed());
        result
    }

    pub async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let value = self
            .measured("get", key.len(), async {
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
        self.measured("set", key.len() + value.len(), async {
            let key = storage_key(bucket, key)?;
            validate_value(value)?;
            Ok(self.backend.set(&key, value, ttl_seconds).await?)
        })
        .await
    }

    pub async fn delete(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        self.measured("delete", key.len(), async {
            Ok(self.backend.delete(&storage_key(bucket, key)?).await?)
        })
        .await
    }

    pub async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        self.measured("exists", key.len(), async {
            Ok(self.backend.exists(&storage_key(bucket, key)?).await?)
        })
        .await
    }

    pub async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        self.measured("increment", key.len(), async {
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
        self.measured("compare_and_swap", sent, async {
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
        self.measured("list_keys", prefix.len(), async {
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

    /// The values of `keys`, in order (`None` for a missing key). At most [`MAX_BATCH_KEYS`].
    pub async fn get_many(
        &self,
        bucket: &Bucket,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        check_batch(keys.len())?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(bucket, &key).await?;
            values.push((key, value));
        }
        Ok(values)
    }

    /// Sets every pair, in order, stopping at the first failure. At most [`MAX_BATCH_KEYS`].
    pub async fn set_many(
        &self,
        bucket: &Bucket,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        check_batch(pairs.len())?;
        for (key, value) in pairs {
            self.set(bucket, &key, &value, None).await?;
        }
        Ok(())
    }

    /// Deletes every key, in order, stopping at the first failure. At most [`MAX_BATCH_KEYS`].
    pub async fn delete_many(&self, bucket: &Bucket, keys: Vec<String>) -> Result<(), KvError> {
        check_batch(keys.len())?;
        for key in keys {
            self.delete(bucket, &key).await?;
        }
        Ok(())
    }
}

/// Refuses a batch naming more than [`MAX_BATCH_KEYS`] keys.
fn check_batch(len: usize) -> Result<(), KvError> {
    if len > MAX_BATCH_KEYS {
        return Err(KvError::Refused(format!(
            "a batch call names {len} keys; the limit is {MAX_BATCH_KEYS}: split it"
        )));
    }
    Ok(())
}

/// The storage key of `key` in `bucket`, after checking the key.
fn storage_key(bucket: &Bucket, key: &str) -> Result<String, KvError> {
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

fn validate_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge(MAX_VALUE_BYTES as u64));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(app: &str) -> KvSession {
        let metrics = Metrics::new().expect("metrics");
        KvSession::new(Backend::Memory(Default::default()), app, metrics)
    }

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
    async fn past_its_budget_a_request_gets_an_error_saying_so_and_nothing_happens() {
        let metrics = Metrics::new().expect("metrics");
        let budget = KvBudget {
            max_ops: 3,
            max_bytes: 1 << 20,
        };
        let session = KvSession::with_budget(
            Backend::Memory(Default::default()),
            "pizza",
            metrics,
            budget,
        );
        let bucket = session.default_bucket().clone();
        for _ in 0..3 {
            assert!(session.increment(&bucket, "n", 1).await.is_ok());
        }
        let refused = session.increment(&bucket, "n", 1).await;
        assert!(
            matches!(&refused, Err(KvError::BudgetExceeded(m)) if m.contains("3 kv operations")),
            "{refused:?}"
        );
        let backend = Backend::Memory(Default::default());
        let small = KvBudget {
            max_ops: 100,
            max_bytes: 10,
        };
        let bytes =
            KvSession::with_budget(backend.clone(), "pizza", Metrics::new().expect("m"), small);
        let bucket = bytes.default_bucket().clone();
        let refused = bytes.set(&bucket, "k", b"more than ten bytes", None).await;
        assert!(
            matches!(refused, Err(KvError::BudgetExceeded(_))),
            "{refused:?}"
        );
        let fresh = KvSession::new(backend, "pizza", Metrics::new().expect("m"));
        assert_eq!(
            fresh.get(&bucket, "k").await,
            Ok(None),
            "the refused write had no effect"
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

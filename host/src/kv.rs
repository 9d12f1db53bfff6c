//! The `kv` interface as guests see it: key validation, the app namespace, and the mapping of
//! backend failures onto the WIT error variant. The one place where access to storage is checked.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, BackendError, keys};
use crate::engine::HostState;
use crate::engine::goldfish::function::kv::{Error, Host, KeyPage};
use crate::metrics::Metrics;

/// Longest key a guest may use, in bytes (documented in the WIT).
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value a guest may store, in bytes (documented in the WIT).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` page may hold (documented in the WIT).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// One request's view of the store: the backend plus the namespace of the function's app.
pub struct KvSession {
    backend: Backend,
    /// `gf:kv:{app}:` — prepended to every guest key; guests never see or choose it.
    namespace: String,
    metrics: Arc<Metrics>,
}

impl KvSession {
    pub fn new(backend: Backend, app: &str, metrics: Arc<Metrics>) -> Self {
        KvSession {
            backend,
            namespace: keys::kv_namespace(app),
            metrics,
        }
    }

    /// Runs one operation and records its outcome and latency.
    async fn measured<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::InvalidKey(_)) => "invalid_key",
            Err(Error::ValueTooLarge(_)) => "value_too_large",
            Err(Error::NotAnInteger) => "not_an_integer",
            Err(Error::InvalidCursor) => "invalid_cursor",
            Err(Error::Unavailable(_)) => "unavailable",
        };
        self.metrics.kv_call(op, outcome, started.elapsed());
        result
    }

    fn key(&self, key: &str) -> Result<String, Error> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.namespace))
    }
}

fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidKey("key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(Error::InvalidKey("key contains a control character".into()));
    }
    Ok(())
}

fn validate_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::ValueTooLarge(MAX_VALUE_BYTES as u64));
    }
    Ok(())
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(reason) => Error::Unavailable(reason),
            BackendError::NotAnInteger => Error::NotAnInteger,
            BackendError::InvalidCursor => Error::InvalidCursor,
        }
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let kv = &self.kv;
        kv.measured("get", async { Ok(kv.backend.get(&kv.key(&key)?).await?) })
            .await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), Error> {
        let kv = &self.kv;
        kv.measured("set", async {
            let key = kv.key(&key)?;
            validate_value(&value)?;
            Ok(kv.backend.set(&key, &value, ttl_seconds).await?)
        })
        .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        let kv = &self.kv;
        kv.measured("delete", async {
            Ok(kv.backend.delete(&kv.key(&key)?).await?)
        })
        .await
    }

    async fn exists(&mut self, key: String) -> Result<bool, Error> {
        let kv = &self.kv;
        kv.measured("exists", async {
            Ok(kv.backend.exists(&kv.key(&key)?).await?)
        })
        .await
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        let kv = &self.kv;
        kv.measured("increment", async {
            Ok(kv.backend.increment(&kv.key(&key)?, delta).await?)
        })
        .await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<bool, Error> {
        let kv = &self.kv;
        kv.measured("compare_and_swap", async {
            let key = kv.key(&key)?;
            validate_value(&new)?;
            Ok(kv
                .backend
                .compare_and_swap(&key, expected.as_deref(), &new, ttl_seconds)
                .await?)
        })
        .await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        let kv = &self.kv;
        kv.measured("list_keys", async {
            if prefix.len() > MAX_KEY_BYTES || prefix.chars().any(char::is_control) {
                return Err(Error::InvalidKey(
                    "prefix is too long or contains a control character".into(),
                ));
            }
            let limit = limit.clamp(1, MAX_LIST_LIMIT);
            let page = kv
                .backend
                .list(&kv.namespace, &prefix, cursor.as_deref(), limit)
                .await?;
            Ok(KeyPage {
                keys: page.keys,
                cursor: page.cursor,
            })
        })
        .await
    }
}

impl crate::engine::goldfish::function::types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_before_they_reach_the_store() {
        assert!(validate_key("cart:abc").is_ok());
        assert!(matches!(validate_key(""), Err(Error::InvalidKey(_))));
        assert!(matches!(
            validate_key(&"k".repeat(MAX_KEY_BYTES + 1)),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(validate_key("a\nb"), Err(Error::InvalidKey(_))));
        assert!(validate_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(matches!(
            validate_value(&vec![0; MAX_VALUE_BYTES + 1]),
            Err(Error::ValueTooLarge(_))
        ));
    }

    #[test]
    fn every_key_lands_in_the_app_namespace() {
        let metrics = Metrics::new().expect("metrics");
        let session = KvSession::new(Backend::Memory(Default::default()), "pizza", metrics);
        assert_eq!(
            session.key("gf:kv:{other}:x").ok().as_deref(),
            Some("gf:kv:{pizza}:gf:kv:{other}:x")
        );
    }
}

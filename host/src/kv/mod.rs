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
//!
//! Split by responsibility: `namespace` (key and value checks, the storage prefix of a
//! bucket), `session` (one request's [`KvSession`] and its operations), `budget` (what one
//! request may do, charged per operation), `batch` (the `*-many` calls); this file holds the
//! error every dialect maps and what the dialects share.

mod batch;
mod budget;
mod namespace;
mod session;

use crate::backend::BackendError;

pub use batch::MAX_BATCH_KEYS;
pub use budget::{DEFAULT_KV_BYTES, DEFAULT_KV_OPS, KvBudget};
pub use namespace::{Bucket, DEFAULT_BUCKET, MAX_BUCKET_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use session::{KvSession, MAX_LIST_LIMIT};

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

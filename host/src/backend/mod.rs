//! Where Goldfish keeps everything that outlives a request: guest key-value data and the function
//! registry (deployed names and component bytes).
//!
//! Two backends, chosen at start-up and invisible to guests: [`redis`], shared by every host, and
//! [`memory`], an embedded single-node store for development that no other host can see.
//! Callers pass *full* storage keys; namespacing guest keys by app is the job of [`crate::kv`].

pub mod memory;
pub mod redis;

use self::memory::MemoryBackend;
use self::redis::RedisBackend;

/// Storage key layout, in one place so that no two parts of the host can disagree on it.
pub mod keys {
    /// Prefix of every key of a guest app. The app name sits in a Redis Cluster hash tag so that
    /// all of one app's keys share a slot (and so one node): scripts and scans stay single-node.
    pub fn kv_namespace(app: &str) -> String {
        format!("gf:kv:{{{app}}}:")
    }
    /// Prefix of the keys of a named `wasi:keyvalue` bucket other than `default` in `app`: a
    /// keyspace of its own, still under the app's hash tag. Bucket names never contain `:`
    /// (see [`crate::kv::KvSession::open`]), so no two buckets share a prefix.
    pub fn bucket_namespace(app: &str, bucket: &str) -> String {
        format!("gf:kvb:{{{app}}}:{bucket}:")
    }
    /// Hash of function name → JSON [`crate::registry::FunctionEntry`]. Shares a hash tag with
    /// [`FUNCTIONS_VERSION`] so both change in one MULTI, on Redis Cluster too.
    pub const FUNCTIONS: &str = "gf:{registry}:functions";
    /// Counter bumped on every deploy or delete, so hosts notice changes with one cheap GET.
    pub const FUNCTIONS_VERSION: &str = "gf:{registry}:version";
    /// Component bytes, content-addressed by lowercase hex SHA-256.
    pub fn component(digest: &str) -> String {
        format!("gf:component:{digest}")
    }
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The store could not be reached, refused the command, or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// `increment` found a non-integer value, or the sum overflowed.
    #[error("value is not an integer or the result overflows")]
    NotAnInteger,
    /// A `list` cursor that this backend did not produce.
    #[error("invalid cursor")]
    InvalidCursor,
}

/// One page of a key listing: keys relative to the namespace, and the cursor for the next page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// The configured backend. An enum rather than a trait object: there are exactly two, and the
/// async methods stay plain `async fn`.
#[derive(Clone)]
pub enum Backend {
    Redis(RedisBackend),
    Memory(MemoryBackend),
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Backend::Redis(b) => b.$method($($arg),*).await,
            Backend::Memory(b) => b.$method($($arg),*).await,
        }
    };
}

impl Backend {
    /// A short name for logs and `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Redis(b) => b.describe(),
            Backend::Memory(_) => "embedded memory store (single node, not shared)".to_string(),
        }
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<(), BackendError> {
        dispatch!(self.ping())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        dispatch!(self.get(key))
    }

    /// `ttl_seconds: None` stores without expiry, clearing any previous one.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), BackendError> {
        dispatch!(self.set(key, value, ttl_seconds))
    }

    /// Returns whether the key existed.
    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        dispatch!(self.delete(key))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        dispatch!(self.exists(key))
    }

    /// Adds `delta` to the decimal integer at `key` (missing = 0), keeping its expiry.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, BackendError> {
        dispatch!(self.increment(key, delta))
    }

    /// Writes `new` only if the current value equals `expected` (`None`: only if absent).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, BackendError> {
        dispatch!(self.compare_and_swap(key, expected, new, ttl_seconds))
    }

    /// Lists keys under `namespace` that start with `prefix`, returned relative to `namespace`.
    /// `limit` must already be clamped by the caller.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, BackendError> {
        dispatch!(self.list(namespace, prefix, cursor, limit))
    }

    /// Stores component bytes under their digest. Idempotent: the same digest is the same bytes.
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), BackendError> {
        dispatch!(self.put_component(digest, bytes))
    }

    pub async fn get_component(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        dispatch!(self.get_component(digest))
    }

    /// Points `name` at `entry_json` (replacing any previous entry atomically) and bumps the
    /// registry version.
    pub async fn put_function(&self, name: &str, entry_json: &str) -> Result<(), BackendError> {
        dispatch!(self.put_function(name, entry_json))
    }

    /// Removes `name` and bumps the registry version. Returns whether it existed.
    pub async fn delete_function(&self, name: &str) -> Result<bool, BackendError> {
        dispatch!(self.delete_function(name))
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<String>, BackendError> {
        dispatch!(self.get_function(name))
    }

    /// Every deployed function as `(name, entry_json)`, with the registry version read in the same
    /// atomic step.
    pub async fn list_functions(&self) -> Result<(u64, Vec<(String, String)>), BackendError> {
        dispatch!(self.list_functions())
    }

    pub async fn functions_version(&self) -> Result<u64, BackendError> {
        dispatch!(self.functions_version())
    }
}

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
    /// Sorted set of the full storage key of every kv key of `app`, all its buckets, every
    /// score 0 so that members sort by name: how the Redis backend lists an app's keys without
    /// walking anyone else's. Each write changes it in the same script as the key itself, and a
    /// listing drops members whose key is gone (expired). Same hash tag as the keys it indexes,
    /// so index and keys live on one node of a cluster.
    pub fn kv_index(app: &str) -> String {
        format!("gf:kvidx:{{{app}}}")
    }
    /// Sorted set of the keys of `app` written with an expiry, scored by when they expire (ms
    /// since the epoch, the writing host's clock): lets each such write drop a few index
    /// members of keys that have expired, so an index of expiring keys does not grow without
    /// bound when nobody lists it.
    pub fn kv_expiries(app: &str) -> String {
        format!("gf:kvexp:{{{app}}}")
    }
    /// Set once every kv key written before [`kv_index`] existed has been added to its app's
    /// index (one walk of the keyspace, the first time a host of this version starts). Until
    /// then listings are refused as unavailable rather than miss keys.
    pub const KV_INDEX_MIGRATED: &str = "gf:kvidx:migrated";
    /// The app whose kv keyspace `full_key` (or a namespace) belongs to: the hash tag of a key
    /// under [`kv_namespace`] or [`bucket_namespace`]; `None` for any other key.
    pub fn kv_app(full_key: &str) -> Option<&str> {
        let rest = full_key
            .strip_prefix("gf:kv:{")
            .or_else(|| full_key.strip_prefix("gf:kvb:{"))?;
        let (app, after) = rest.split_once('}')?;
        (!app.is_empty() && after.starts_with(':')).then_some(app)
    }
    /// Hash of function name → JSON [`crate::registry::FunctionEntry`]. Shares a hash tag with
    /// [`FUNCTIONS_VERSION`] so both change in one MULTI, on Redis Cluster too.
    pub const FUNCTIONS: &str = "gf:{registry}:functions";
    /// Counter bumped on every deploy or delete, so hosts notice changes with one cheap GET.
    pub const FUNCTIONS_VERSION: &str = "gf:{registry}:version";
    /// Hash of function name → JSON array of its kept versions, newest first (each a
    /// [`crate::registry::FunctionEntry`]). Same hash tag as [`FUNCTIONS`]: a deploy or rollback
    /// changes both in one atomic step.
    pub const HISTORY: &str = "gf:{registry}:history";
    /// Set of every digest stored under [`component`]. Component keys are spread over the
    /// cluster's slots, so this set is how garbage collection finds them without a cluster-wide
    /// SCAN.
    pub const COMPONENTS: &str = "gf:{registry}:components";
    /// Hash of claim id → `"<expiry ms> <digest>"`: deploys that have stored (or are storing)
    /// bytes but not yet pointed a name at them. A claimed digest is never collected.
    pub const CLAIMS: &str = "gf:{registry}:claims";
    /// Hash of digest → `<expiry ms>`: digests a collector is deleting right now. A deploy of
    /// such a digest waits for the deletion to finish before storing the bytes again.
    pub const DELETING: &str = "gf:{registry}:deleting";
    /// Component bytes, content-addressed by lowercase hex SHA-256.
    pub fn component(digest: &str) -> String {
        format!("gf:component:{digest}")
    }
    /// Sorted set of host id → when that host last wrote its heartbeat (ms since the epoch):
    /// how the status page finds every host without a SCAN. Every heartbeat prunes the ids
    /// older than the heartbeat TTL and renews the set's own expiry, so a fleet that is gone
    /// leaves nothing behind.
    pub const HOSTS: &str = "gf:{registry}:hosts";
    /// One host's latest heartbeat (JSON [`crate::fleet::Heartbeat`]), with a TTL so a host
    /// that stops beating disappears by itself. Same hash tag as [`HOSTS`]: a heartbeat and its
    /// index entry are written in one MULTI, on Redis Cluster too.
    pub fn host(id: &str) -> String {
        format!("gf:{{registry}}:host:{id}")
    }
    /// List of one function's recent failures, newest first (JSON
    /// [`crate::failures::FailureRecord`]), capped and expiring a while after the latest.
    pub fn failures(function: &str) -> String {
        format!("gf:failures:{function}")
    }
}

/// One function as the registry stores it: its current entry and its version history, both
/// JSON whose format belongs to [`crate::registry`]. `None` when absent. Compared as strings by
/// [`Backend::swap_function`], so a change anyone made in between is always noticed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionRecord {
    pub entry: Option<String>,
    pub history: Option<String>,
}

/// What [`Backend::claim_component`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The digest is claimed: no collector will delete its bytes until the claim is committed
    /// (then a version references it) or expires.
    Held,
    /// A collector is deleting these bytes right now; ask again after this many milliseconds.
    Wait(u64),
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

    /// The same store through a connection of its own whose I/O runs on the calling runtime
    /// (see [`RedisBackend::another_connection`]); the memory store is simply shared.
    pub async fn another_connection(&self) -> Result<Backend, BackendError> {
        match self {
            Backend::Redis(b) => Ok(Backend::Redis(b.another_connection().await?)),
            Backend::Memory(b) => Ok(Backend::Memory(b.clone())),
        }
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<(), BackendError> {
        dispatch!(self.ping())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        dispatch!(self.get(key))
    }

    /// `ttl_seconds: None` stores without expiry, clearing any previous one. Keys under a kv
    /// namespace are indexed for [`Backend::list`] by this write and every other kv write.
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

    /// Lists keys under `namespace` (a [`keys::kv_namespace`] or [`keys::bucket_namespace`])
    /// that start with `prefix`, returned relative to `namespace`, at most `limit` per page
    /// (`limit` must already be clamped by the caller). A key that exists for the whole listing
    /// is returned at least once; a page costs work in proportion to its own app's keys, never
    /// another app's.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, BackendError> {
        dispatch!(self.list(namespace, prefix, cursor, limit))
    }

    /// Stores component bytes under their digest, overwriting: the same digest is the same
    /// bytes, and writing them again restores bytes that went missing. Claim the digest first
    /// ([`Backend::claim_component`]) or a collector may delete them.
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), BackendError> {
        dispatch!(self.put_component(digest, bytes))
    }

    /// Protects `digest`'s bytes from collection under `claim_id` until `now_ms + lease_ms` (or
    /// until [`Backend::swap_function`] commits the claim), and records the digest as stored.
    pub async fn claim_component(
        &self,
        claim_id: &str,
        digest: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, BackendError> {
        dispatch!(self.claim_component(claim_id, digest, now_ms, lease_ms))
    }

    /// Drops a claim whose deploy failed, so its bytes can be collected at once.
    pub async fn release_claim(&self, claim_id: &str) -> Result<(), BackendError> {
        dispatch!(self.release_claim(claim_id))
    }

    /// Deletes the bytes of every stored digest that no function's entry or kept version
    /// references and no live claim protects. Returns the digests deleted. Refuses to delete
    /// anything while any registry JSON is unreadable. `delete_lease_ms` bounds how long a
    /// deploy of a digest being deleted waits, should this collector stop half-way.
    pub async fn collect_components(
        &self,
        now_ms: u64,
        delete_lease_ms: u64,
    ) -> Result<Vec<String>, BackendError> {
        dispatch!(self.collect_components(now_ms, delete_lease_ms))
    }

    pub async fn get_component(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        dispatch!(self.get_component(digest))
    }

    /// Removes `name`, its version history and its failure list, and bumps the registry
    /// version. Returns whether it existed.
    pub async fn delete_function(&self, name: &str) -> Result<bool, BackendError> {
        dispatch!(self.delete_function(name))
    }

    /// `name`'s entry and history, read in one atomic step.
    pub async fn get_record(&self, name: &str) -> Result<FunctionRecord, BackendError> {
        dispatch!(self.get_record(name))
    }

    /// If `name`'s record still equals `expected`, replaces it with `new` (a `None` field is
    /// removed), adds `digests` to the stored set, commits `claim_id` (when given) and bumps
    /// the registry version, all in one atomic step. Returns `false`, changing nothing, when
    /// someone changed the record in between.
    pub async fn swap_function(
        &self,
        name: &str,
        expected: &FunctionRecord,
        new: &FunctionRecord,
        claim_id: Option<&str>,
        digests: &[&str],
    ) -> Result<bool, BackendError> {
        dispatch!(self.swap_function(name, expected, new, claim_id, digests))
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

    /// Stores host `id`'s `heartbeat` (JSON) for `ttl_seconds`, records it as seen at `now_ms`
    /// in the host index, and drops from the index every host not seen for `ttl_seconds`, in
    /// one atomic step.
    pub async fn put_host(
        &self,
        id: &str,
        heartbeat: &str,
        now_ms: u64,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        dispatch!(self.put_host(id, heartbeat, now_ms, ttl_seconds))
    }

    /// The heartbeats (JSON) of the hosts that wrote one within its TTL, at most `limit`, in
    /// no particular order.
    pub async fn list_hosts(&self, limit: usize) -> Result<Vec<String>, BackendError> {
        dispatch!(self.list_hosts(limit))
    }

    /// Removes host `id`'s heartbeat at once (a host stopping politely).
    pub async fn remove_host(&self, id: &str) -> Result<(), BackendError> {
        dispatch!(self.remove_host(id))
    }

    /// Puts `record` (JSON) at the head of `function`'s failure list, keeps only the newest
    /// `keep`, and has the list expire `ttl_seconds` after this write, in one atomic step.
    pub async fn push_failure(
        &self,
        function: &str,
        record: &str,
        keep: usize,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        dispatch!(self.push_failure(function, record, keep, ttl_seconds))
    }

    /// The newest `limit` records of `function`'s failure list, newest first.
    pub async fn failures(
        &self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        dispatch!(self.failures(function, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::keys;

    #[test]
    fn the_index_belongs_to_the_app_in_the_keys_hash_tag() {
        let key = format!("{}cart:1", keys::kv_namespace("pizza"));
        assert_eq!(keys::kv_app(&key), Some("pizza"));
        let bucket = format!("{}x", keys::bucket_namespace("pizza", "sessions"));
        assert_eq!(keys::kv_app(&bucket), Some("pizza"));
        assert_eq!(keys::kv_app(&keys::kv_namespace("a-1")), Some("a-1"));
        for other in [
            keys::kv_index("pizza"),
            keys::kv_expiries("pizza"),
            keys::KV_INDEX_MIGRATED.to_owned(),
            keys::component("abc"),
            keys::FUNCTIONS.to_owned(),
            "gf:kv:{}:x".to_owned(),
            "gf:kv:{pizza}x".to_owned(),
        ] {
            assert_eq!(keys::kv_app(&other), None, "{other}");
        }
    }
}

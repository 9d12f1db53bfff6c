//! The Redis backend: what every host sharing one Redis sees.
//!
//! One multiplexed connection per host carries every command: a [`ConnectionManager`] for a single
//! server, or a [`ClusterConnection`] that routes each command by its key's slot for Redis
//! Cluster. Both reconnect by themselves when Redis comes back. Each command is bounded by the
//! response timeout ([`DEFAULT_RESPONSE_TIMEOUT`], `--redis-timeout-ms`), so a guest waiting on a
//! hung Redis gets `unavailable` rather than hanging until its deadline; and once commands keep
//! timing out or losing their connection, they fail at once for one timeout's length
//! ([`Health`]) instead of each waiting the whole timeout again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value};

use super::{BackendError, Claim, FunctionRecord, KeyPage, keys};

/// Default for how long one command may wait for Redis' answer before it fails as
/// `unavailable` (and so how fast a hung Redis becomes a 503).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnection attempts per failed connection before commands fail fast; the manager tries
/// again on the next command, so this bounds latency, not availability.
const RECONNECT_ATTEMPTS: usize = 2;
/// SCAN COUNT hint of the one-time walk that adds keys written before the kv index existed
/// ([`RedisBackend::migrate_index`]).
const MIGRATION_SCAN_COUNT: u32 = 1000;
/// How long `connect` waits for that walk before the host starts serving; past it the walk
/// goes on in the background and listings are refused as unavailable until it is done.
const MIGRATION_WAIT: Duration = Duration::from_secs(5);

/// Lua function `prune(index, expiries, now)`: looks at up to two keys that [`keys::kv_expiries`]
/// says were due to expire by `now` and drops the index entries of those that are gone (a key
/// rewritten without expiry leaves the expiry set; one with a later expiry gets its new time).
/// Every write with an expiry calls it, so entries of expired keys are removed at least as fast
/// as expiring keys are written.
macro_rules! prune_lua {
    () => {
        r"
local function prune(index, expiries, now)
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 2)) do
    local left = redis.call('PTTL', key)
    if left == -2 then
      redis.call('ZREM', index, key)
      redis.call('ZREM', expiries, key)
    elseif left == -1 then
      redis.call('ZREM', expiries, key)
    else
      redis.call('ZADD', expiries, now + left, key)
    end
  end
end
"
    };
}

/// A write with an expiry and its index entries in one step. KEYS: key, index, expiries.
/// ARGV: value, ttl seconds, now ms.
const SET_EX_SCRIPT: &str = concat!(
    prune_lua!(),
    r"
local now = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], 0, KEYS[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]) * 1000, KEYS[1])
prune(KEYS[2], KEYS[3], now)
return 1
"
);

/// INCRBY and its index entry in one step. KEYS: key, index. ARGV: delta. A refused INCRBY
/// ("not an integer", "would overflow") is answered as the same error reply, indexing nothing.
const INCREMENT_SCRIPT: &str = r"
local value = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(value) == 'table' then return value end
redis.call('ZADD', KEYS[2], 0, KEYS[1])
return value
";

/// One page of an app's index: members between ARGV[1] and ARGV[2] (ZRANGEBYLEX bounds), at
/// most ARGV[3]; members whose key no longer exists (expired) are dropped from the index and
/// not returned. KEYS: index. Returns `{members read, last member read or '', live keys}`.
const LIST_SCRIPT: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
local live = {}
for _, key in ipairs(members) do
  if redis.call('EXISTS', key) == 1 then
    live[#live + 1] = key
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return {#members, members[#members] or '', live}
";

/// Compare-and-swap in one atomic step. KEYS[1]: key; for a kv key also KEYS[2], KEYS[3]: its
/// index and expiries. ARGV: expect-present flag ("1"/"0"), expected value, new value, ttl
/// seconds ("" for none), now ms.
const CAS_SCRIPT: &str = concat!(
    prune_lua!(),
    r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
else
  if current then return 0 end
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
end
if KEYS[2] then
  redis.call('ZADD', KEYS[2], 0, KEYS[1])
  if ARGV[4] ~= '' then
    local now = tonumber(ARGV[5])
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]) * 1000, KEYS[1])
    prune(KEYS[2], KEYS[3], now)
  end
end
return 1
"
);

/// Replaces one function's entry and history if both are still what the caller read.
/// KEYS: functions, history, version, components, claims. ARGV: name, expected entry, expected
/// history, new entry, new history (each "" for absent), claim id ("" for none), digests....
const SWAP_FUNCTION_SCRIPT: &str = r"
local entry = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local history = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if entry ~= ARGV[2] or history ~= ARGV[3] then return 0 end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) end
if ARGV[5] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[5]) end
for i = 7, #ARGV do redis.call('SADD', KEYS[4], ARGV[i]) end
if ARGV[6] ~= '' then redis.call('HDEL', KEYS[5], ARGV[6]) end
redis.call('INCR', KEYS[3])
return 1
";

/// Claims a digest unless a collector is deleting it. KEYS: claims, deleting, components.
/// ARGV: claim id, digest, now ms, lease ms. Returns 0 when claimed, else milliseconds to wait.
const CLAIM_SCRIPT: &str = r"
local now = tonumber(ARGV[3])
local deleting = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') or 0
if deleting > now then return deleting - now end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %s', now + tonumber(ARGV[4]), ARGV[2]))
redis.call('SADD', KEYS[3], ARGV[2])
return 0
";

/// Marks for deletion every stored digest that no entry, kept version or live claim
/// references, and returns `[digest, mark]` pairs. KEYS: components, functions, history,
/// claims, deleting. ARGV: now ms, delete lease ms. Expired claims are dropped on the way.
/// Any unreadable JSON stops it before it marks anything: better to keep garbage than to
/// delete bytes a version needs.
const COLLECT_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local keep = {}
for _, json in ipairs(redis.call('HVALS', KEYS[2])) do
  local ok, entry = pcall(cjson.decode, json)
  if not ok or type(entry) ~= 'table' or type(entry.digest) ~= 'string' then
    return redis.error_reply('unreadable function entry; collecting nothing')
  end
  keep[entry.digest] = true
end
for _, json in ipairs(redis.call('HVALS', KEYS[3])) do
  local ok, versions = pcall(cjson.decode, json)
  if not ok or type(versions) ~= 'table' then
    return redis.error_reply('unreadable version history; collecting nothing')
  end
  for _, version in ipairs(versions) do
    if type(version) ~= 'table' or type(version.digest) ~= 'string' then
      return redis.error_reply('unreadable version history; collecting nothing')
    end
    keep[version.digest] = true
  end
end
local claims = redis.call('HGETALL', KEYS[4])
for i = 1, #claims, 2 do
  local expiry, digest = string.match(claims[i + 1], '^(%d+) (%S+)$')
  if expiry and tonumber(expiry) > now then
    keep[digest] = true
  else
    redis.call('HDEL', KEYS[4], claims[i])
  end
end
local doomed = {}
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local marked = tonumber(redis.call('HGET', KEYS[5], digest) or '0') or 0
  if not keep[digest] and marked <= now then
    local mark = string.format('%d', now + tonumber(ARGV[2]))
    redis.call('HSET', KEYS[5], digest, mark)
    doomed[#doomed + 1] = digest
    doomed[#doomed + 1] = mark
  end
end
return doomed
";

/// Forgets a digest whose bytes were deleted, if the deletion mark is still this collector's
/// (a deploy that waited out an expired mark has claimed the digest again). KEYS: components,
/// deleting. ARGV: digest, mark.
const FORGET_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 0
";

#[derive(Clone)]
pub struct RedisBackend {
    /// For logs: what this is connected to, passwords removed.
    description: Arc<str>,
    connection: Connection,
    /// Behind an `Arc`: the backend is cloned for every request, the scripts never change.
    scripts: Arc<Scripts>,
    /// How this backend connected, to open [`RedisBackend::another_connection`].
    origin: Arc<Origin>,
    /// Whether the kv index can be trusted to hold every key (see [`keys::KV_INDEX_MIGRATED`]).
    /// Shared by every connection of one host.
    index: Arc<IndexState>,
}

/// Where a [`RedisBackend`] connects, and each command's bound.
enum Origin {
    Single {
        url: String,
        timeout: Duration,
    },
    Cluster {
        nodes: Vec<String>,
        timeout: Duration,
    },
}

/// What every connection of one host shares (see [`RedisBackend::another_connection`]).
struct Shared {
    index: Arc<IndexState>,
    health: Arc<Health>,
}

/// This host's view of the one-time kv index migration. Atomics: read on every listing,
/// written by the migration task.
#[derive(Default)]
struct IndexState {
    /// Seen [`keys::KV_INDEX_MIGRATED`] once: from then on no listing checks it again.
    ready: AtomicBool,
    /// A migration task of this host is running; a second one would only repeat its work.
    migrating: AtomicBool,
}

/// The Lua scripts, each with its SHA-1 computed once (sent by hash, the source only when
/// Redis does not know it yet).
struct Scripts {
    cas: Script,
    set_ex: Script,
    increment: Script,
    list: Script,
    swap_function: Script,
    claim: Script,
    collect: Script,
    forget: Script,
}

/// One Redis server, or a Redis Cluster, with the shared record of whether it is answering.
/// Multiplexed, reconnecting by itself, cheap to clone.
#[derive(Clone)]
struct Connection {
    inner: Inner,
    health: Arc<Health>,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether Redis is known to be down. A command that times out or loses its connection makes
/// Redis *suspect*; a second such failure with no success in between makes it *down*: every
/// command then fails at once until `window` has passed, and the next one tries again (and the
/// connection reconnects). A hung Redis then costs about two timeouts per window, not one per
/// command, while one slow answer on a busy machine (with successes around it) changes nothing.
struct Health {
    started: Instant,
    /// Milliseconds since `started` before which commands fail fast; 0 when healthy.
    down_until_ms: AtomicU64,
    /// Failures (timeouts, lost connections) since the last success.
    failures: AtomicU64,
    window: Duration,
}

/// Failures in a row, with no success between, that make Redis down.
const FAILURES_TO_FAIL_FAST: u64 = 2;

impl Health {
    fn new(window: Duration) -> Self {
        Health {
            started: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            window,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn is_down(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Records the outcome of a command that was sent.
    fn observe<T>(&self, result: &redis::RedisResult<T>) {
        match result {
            Err(e)
                if e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_FAIL_FAST {
                    let until = self.now_ms() + self.window.as_millis() as u64;
                    self.down_until_ms.store(until, Ordering::Relaxed);
                }
            }
            // Any answer from Redis, even an error reply, means it is up.
            _ => self.failures.store(0, Ordering::Relaxed),
        }
    }
}

/// The error every command gets while Redis is known to be down.
fn failing_fast() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "Redis did not answer a moment ago; failing fast until it does",
    ))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if self.health.is_down() {
            return Box::pin(async { Err(failing_fast()) });
        }
        let health = self.health.clone();
        let sent = match &mut self.inner {
            Inner::Single(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        };
        Box::pin(async move {
            let result = sent.await;
            health.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if self.health.is_down() {
            return Box::pin(async { Err(failing_fast()) });
        }
        let health = self.health.clone();
        let sent = match &mut self.inner {
            Inner::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        };
        Box::pin(async move {
            let result = sent.await;
            health.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisBackend {
    /// Connects to one Redis server and checks it answers; fails if it cannot be reached now.
    /// `timeout` bounds each command (and each reconnection).
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, BackendError> {
        let origin = Origin::Single {
            url: url.to_owned(),
            timeout,
        };
        Self::open(origin, None).await
    }

    /// Connects to a Redis Cluster through any of its `nodes` (the others are discovered) and
    /// checks it answers. `timeout` bounds each command (and each reconnection).
    pub async fn connect_cluster(nodes: &[&str], timeout: Duration) -> Result<Self, BackendError> {
        let origin = Origin::Cluster {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            timeout,
        };
        Self::open(origin, None).await
    }

    /// A second, independent connection to the same Redis (or Cluster), whose I/O runs on the
    /// runtime this is called from. Guests get one on the guest runtime, so a kv call and the
    /// connection's reader and writer wake each other on the same threads instead of bouncing
    /// between the guest runtime and the one serving HTTP. It shares this one's record of
    /// whether Redis answers (an answer on either connection means it is up) and its view of
    /// the kv index migration (and starts none of its own).
    pub async fn another_connection(&self) -> Result<Self, BackendError> {
        let origin = match &*self.origin {
            Origin::Single { url, timeout } => Origin::Single {
                url: url.clone(),
                timeout: *timeout,
            },
            Origin::Cluster { nodes, timeout } => Origin::Cluster {
                nodes: nodes.clone(),
                timeout: *timeout,
            },
        };
        let shared = Shared {
            index: self.index.clone(),
            health: self.connection.health.clone(),
        };
        Self::open(origin, Some(shared)).await
    }

    /// Connects to `origin` and checks it answers. Without `shared` state this is a host's
    /// first connection: it makes sure the kv index migration has run.
    async fn open(origin: Origin, shared: Option<Shared>) -> Result<Self, BackendError> {
        let (description, inner, timeout) = match &origin {
            Origin::Single { url, timeout } => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(*timeout))
                    .set_response_timeout(Some(*timeout))
                    .set_number_of_retries(RECONNECT_ATTEMPTS);
                let connection = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(unavailable)?;
                let description = format!("redis at {}", redacted(url));
                (description, Inner::Single(connection), *timeout)
            }
            Origin::Cluster { nodes, timeout } => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(*timeout)
                    .response_timeout(*timeout)
                    .retries(RECONNECT_ATTEMPTS as u32)
                    .build()
                    .map_err(unavailable)?;
                let connection = client.get_async_connection().await.map_err(unavailable)?;
                let shown: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
                let description = format!("redis cluster via {}", shown.join(","));
                (description, Inner::Cluster(connection), *timeout)
            }
        };
        let first = shared.is_none();
        let Shared { index, health } = shared.unwrap_or_else(|| Shared {
            index: Arc::default(),
            health: Arc::new(Health::new(timeout)),
        });
        let backend = RedisBackend {
            origin: Arc::new(origin),
            description: description.into(),
            connection: Connection { inner, health },
            scripts: Arc::new(Scripts {
                cas: Script::new(CAS_SCRIPT),
                set_ex: Script::new(SET_EX_SCRIPT),
                increment: Script::new(INCREMENT_SCRIPT),
                list: Script::new(LIST_SCRIPT),
                swap_function: Script::new(SWAP_FUNCTION_SCRIPT),
                claim: Script::new(CLAIM_SCRIPT),
                collect: Script::new(COLLECT_SCRIPT),
                forget: Script::new(FORGET_SCRIPT),
            }),
            index,
        };
        backend.ping().await?;
        if first && let Some(migration) = backend.start_migration() {
            // Usually instant (a store written by this version is already indexed); a long walk
            // goes on in the background.
            let _ = tokio::time::timeout(MIGRATION_WAIT, migration).await;
        }
        Ok(backend)
    }

    /// What this backend is connected to, without passwords, for logs.
    pub fn describe(&self) -> String {
        self.description.to_string()
    }

    fn conn(&self) -> Connection {
        // Cheap: a handle onto the shared multiplexed connection(s).
        self.connection.clone()
    }

    pub async fn ping(&self) -> Result<(), BackendError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Where the migration walks: `None` for a single server, else one slot of each cluster
    /// primary (a SCAN routed to a slot walks the whole keyspace of the node owning it).
    async fn scan_targets(&self) -> Result<Vec<Option<u16>>, BackendError> {
        let mut conn = self.conn();
        if !matches!(conn.inner, Inner::Cluster(_)) {
            return Ok(vec![None]);
        }
        let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut by_node: BTreeMap<String, u16> = BTreeMap::new();
        for range in ranges {
            let mut fields = range.into_iter();
            let (Some(start), _, Some(node)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let slot: u16 = redis::from_redis_value(start)
                .map_err(|e| BackendError::Unavailable(format!("unreadable CLUSTER SLOTS: {e}")))?;
            by_node.entry(format!("{node:?}")).or_insert(slot);
        }
        Ok(by_node.into_values().map(Some).collect())
    }

    /// One SCAN step on `target` (see [`RedisBackend::scan_targets`]).
    async fn scan(
        &self,
        target: Option<u16>,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Vec<String>), BackendError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let mut conn = self.conn();
        match (&mut conn.inner, target) {
            (Inner::Cluster(c), Some(slot)) => {
                let route = Route::new(slot, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = c.route_command(cmd, routing).await.map_err(unavailable)?;
                redis::from_redis_value(value).map_err(|e| BackendError::Unavailable(e.to_string()))
            }
            _ => cmd.query_async(&mut conn).await.map_err(unavailable),
        }
    }

    /// Starts [`RedisBackend::migrate_index`] in the background unless this host already runs
    /// it; the handle ends when it does.
    fn start_migration(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.index.migrating.swap(true, Ordering::AcqRel) {
            return None;
        }
        let backend = self.clone();
        Some(tokio::spawn(async move {
            match backend.migrate_index().await {
                Ok(0) => {}
                Ok(indexed) => tracing::info!(
                    indexed,
                    "added kv keys written before the key index existed to it (once per store)"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not finish indexing existing kv keys; list-keys answers unavailable \
                     until a later attempt does"
                ),
            }
            backend.index.migrating.store(false, Ordering::Release);
        }))
    }

    /// Adds every kv key in the store to its app's index with one SCAN of each node, then
    /// records that it is done. Idempotent: hosts starting together may each run it. Keys
    /// written meanwhile are indexed by their writes; keys deleted meanwhile may leave a member
    /// behind, which listings skip and drop. Returns how many keys it added.
    pub async fn migrate_index(&self) -> Result<u64, BackendError> {
        if self.index_migrated().await? {
            return Ok(0);
        }
        let mut indexed = 0;
        for target in self.scan_targets().await? {
            let mut cursor = 0;
            loop {
                let (next, batch) = self
                    .scan(target, cursor, "gf:kv*", MIGRATION_SCAN_COUNT)
                    .await?;
                let mut by_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for key in &batch {
                    if let Some(app) = keys::kv_app(key) {
                        by_app.entry(app).or_default().push(key);
                    }
                }
                for (app, members) in by_app {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(keys::kv_index(app));
                    for member in &members {
                        zadd.arg(0).arg(*member);
                    }
                    let _: u64 = zadd
                        .query_async(&mut self.conn())
                        .await
                        .map_err(unavailable)?;
                    indexed += members.len() as u64;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        self.conn()
            .set::<_, _, ()>(keys::KV_INDEX_MIGRATED, "1")
            .await
            .map_err(unavailable)?;
        self.index.ready.store(true, Ordering::Release);
        Ok(indexed)
    }

    /// Whether every key written before the index existed is in it (checked in the store until
    /// it once says yes).
    async fn index_migrated(&self) -> Result<bool, BackendError> {
        if self.index.ready.load(Ordering::Acquire) {
            return Ok(true);
        }
        let migrated: bool = self
            .conn()
            .exists(keys::KV_INDEX_MIGRATED)
            .await
            .map_err(unavailable)?;
        if migrated {
            self.index.ready.store(true, Ordering::Release);
        }
        Ok(migrated)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.conn().get(key).await.map_err(unavailable)
    }

    /// A kv key is written together with its index entry (and, with an expiry, its expiry
    /// entry) in one atomic step and one round trip; any other key is written alone.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), BackendError> {
        let mut conn = self.conn();
        match (keys::kv_app(key), ttl_seconds) {
            (Some(app), None) => {
                redis::pipe()
                    .atomic()
                    .set(key, value)
                    .ignore()
                    .zadd(keys::kv_index(app), key, 0)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            }
            (Some(app), Some(ttl)) => {
                self.scripts
                    .set_ex
                    .key(key)
                    .key(keys::kv_index(app))
                    .key(keys::kv_expiries(app))
                    .arg(value)
                    .arg(ttl.max(1))
                    .arg(now_ms())
                    .invoke_async::<()>(&mut conn)
                    .await
            }
            (None, None) => conn.set::<_, _, ()>(key, value).await,
            (None, Some(ttl)) => {
                conn.set_ex::<_, _, ()>(key, value, u64::from(ttl.max(1)))
                    .await
            }
        }
        .map_err(unavailable)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let mut conn = self.conn();
        let removed: u64 = match keys::kv_app(key) {
            Some(app) => {
                let (removed,): (u64,) = redis::pipe()
                    .atomic()
                    .del(key)
                    .zrem(keys::kv_index(app), key)
                    .ignore()
                    .zrem(keys::kv_expiries(app), key)
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                removed
            }
            None => conn.del(key).await.map_err(unavailable)?,
        };
        Ok(removed > 0)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.conn().exists(key).await.map_err(unavailable)
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, BackendError> {
        let mut conn = self.conn();
        let result = match keys::kv_app(key) {
            Some(app) => {
                self.scripts
                    .increment
                    .key(key)
                    .key(keys::kv_index(app))
                    .arg(delta)
                    .invoke_async(&mut conn)
                    .await
            }
            None => conn.incr(key, delta).await,
        };
        match result {
            Ok(value) => Ok(value),
            // Redis answers "ERR value is not an integer or out of range" and
            // "ERR increment or decrement would overflow".
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                Err(BackendError::NotAnInteger)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, BackendError> {
        let ttl = ttl_seconds
            .map(|t| t.max(1).to_string())
            .unwrap_or_default();
        let mut invocation = self.scripts.cas.key(key);
        if let Some(app) = keys::kv_app(key) {
            invocation
                .key(keys::kv_index(app))
                .key(keys::kv_expiries(app));
        }
        let written: i64 = invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .arg(ttl)
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    /// Lists from the app's index ([`keys::kv_index`]) in name order, never walking another
    /// app's keys: one script reads at most `limit` members after the cursor and drops those
    /// whose key has expired. The cursor is `k/<last key read>`, so a key that exists for the
    /// whole listing sorts after the cursor until it is returned, whatever others write.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, BackendError> {
        let app = keys::kv_app(namespace).ok_or_else(|| {
            BackendError::Unavailable(format!("`{namespace}` is not a kv namespace"))
        })?;
        let after = parse_cursor(cursor)?;
        if after.is_some_and(|after| !after.starts_with(prefix)) {
            return Err(BackendError::InvalidCursor);
        }
        if !self.index_migrated().await? {
            self.start_migration();
            return Err(BackendError::Unavailable(
                "the key index behind list-keys is still being built (once, after an upgrade); \
                 retry in a moment"
                    .into(),
            ));
        }
        let from = match after {
            Some(after) => lex_bound(b'(', namespace, after, &[]),
            None => lex_bound(b'[', namespace, prefix, &[]),
        };
        // No UTF-8 key contains the byte 0xFF, so this is above every key with the prefix.
        let to = lex_bound(b'(', namespace, prefix, &[0xFF]);
        let (read, last, live): (u32, String, Vec<String>) = self
            .scripts
            .list
            .key(keys::kv_index(app))
            .arg(from)
            .arg(to)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let keys = live
            .into_iter()
            .filter_map(|key| key.strip_prefix(namespace).map(str::to_owned))
            .collect();
        let cursor = match last.strip_prefix(namespace) {
            Some(last) if read >= limit => Some(format!("{CURSOR_TAG}{last}")),
            _ => None,
        };
        Ok(KeyPage { keys, cursor })
    }

    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.conn()
            .set::<_, _, ()>(keys::component(digest), bytes)
            .await
            .map_err(unavailable)
    }

    pub async fn get_component(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.conn()
            .get(keys::component(digest))
            .await
            .map_err(unavailable)
    }

    pub async fn claim_component(
        &self,
        claim_id: &str,
        digest: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, BackendError> {
        let wait: u64 = self
            .scripts
            .claim
            .key(keys::CLAIMS)
            .key(keys::DELETING)
            .key(keys::COMPONENTS)
            .arg(claim_id)
            .arg(digest)
            .arg(now_ms)
            .arg(lease_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(if wait == 0 {
            Claim::Held
        } else {
            Claim::Wait(wait)
        })
    }

    pub async fn release_claim(&self, claim_id: &str) -> Result<(), BackendError> {
        self.conn()
            .hdel::<_, _, ()>(keys::CLAIMS, claim_id)
            .await
            .map_err(unavailable)
    }

    /// Marks the garbage in one atomic step on the registry's slot, then deletes each digest's
    /// bytes (wherever their slot lives) and only then forgets the digest: a collector that
    /// stops half-way leaves digests the next collection finds again.
    pub async fn collect_components(
        &self,
        now_ms: u64,
        delete_lease_ms: u64,
    ) -> Result<Vec<String>, BackendError> {
        let doomed: Vec<(String, String)> = self
            .scripts
            .collect
            .key(keys::COMPONENTS)
            .key(keys::FUNCTIONS)
            .key(keys::HISTORY)
            .key(keys::CLAIMS)
            .key(keys::DELETING)
            .arg(now_ms)
            .arg(delete_lease_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut deleted = Vec::with_capacity(doomed.len());
        for (digest, mark) in doomed {
            // UNLINK: a component can be tens of MB; Redis frees it off its main thread.
            let _: u64 = redis::cmd("UNLINK")
                .arg(keys::component(&digest))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let _: i64 = self
                .scripts
                .forget
                .key(keys::COMPONENTS)
                .key(keys::DELETING)
                .arg(&digest)
                .arg(&mark)
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            deleted.push(digest);
        }
        Ok(deleted)
    }

    pub async fn delete_function(&self, name: &str) -> Result<bool, BackendError> {
        let (removed,): (u64,) = redis::pipe()
            .atomic()
            .hdel(keys::FUNCTIONS, name)
            .hdel(keys::HISTORY, name)
            .ignore()
            .incr(keys::FUNCTIONS_VERSION, 1)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    pub async fn get_record(&self, name: &str) -> Result<FunctionRecord, BackendError> {
        let (entry, history): (Option<String>, Option<String>) = redis::pipe()
            .atomic()
            .hget(keys::FUNCTIONS, name)
            .hget(keys::HISTORY, name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(FunctionRecord { entry, history })
    }

    pub async fn swap_function(
        &self,
        name: &str,
        expected: &FunctionRecord,
        new: &FunctionRecord,
        claim_id: Option<&str>,
        digests: &[&str],
    ) -> Result<bool, BackendError> {
        let field = |value: &Option<String>| value.clone().unwrap_or_default();
        let mut invocation = self.scripts.swap_function.prepare_invoke();
        invocation
            .key(keys::FUNCTIONS)
            .key(keys::HISTORY)
            .key(keys::FUNCTIONS_VERSION)
            .key(keys::COMPONENTS)
            .key(keys::CLAIMS)
            .arg(name)
            .arg(field(&expected.entry))
            .arg(field(&expected.history))
            .arg(field(&new.entry))
            .arg(field(&new.history))
            .arg(claim_id.unwrap_or_default());
        for digest in digests {
            invocation.arg(*digest);
        }
        let swapped: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(swapped == 1)
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<String>, BackendError> {
        self.conn()
            .hget(keys::FUNCTIONS, name)
            .await
            .map_err(unavailable)
    }

    pub async fn list_functions(&self) -> Result<(u64, Vec<(String, String)>), BackendError> {
        let (version, entries): (Option<u64>, Vec<(String, String)>) = redis::pipe()
            .atomic()
            .get(keys::FUNCTIONS_VERSION)
            .hgetall(keys::FUNCTIONS)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((version.unwrap_or(0), entries))
    }

    pub async fn functions_version(&self) -> Result<u64, BackendError> {
        let version: Option<u64> = self
            .conn()
            .get(keys::FUNCTIONS_VERSION)
            .await
            .map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }

    pub async fn put_host(
        &self,
        id: &str,
        heartbeat: &str,
        now_ms: u64,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        let ttl = u64::from(ttl_seconds.max(1));
        redis::pipe()
            .atomic()
            .set_ex(keys::host(id), heartbeat, ttl)
            .ignore()
            .zadd(keys::HOSTS, id, now_ms)
            .ignore()
            .zrembyscore(keys::HOSTS, "-inf", now_ms.saturating_sub(ttl * 1000))
            .ignore()
            .expire(keys::HOSTS, ttl as i64)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// The index first, then one MGET: every host key shares the index's slot, so both go to
    /// one node on a cluster. An id whose heartbeat expired in between is skipped.
    pub async fn list_hosts(&self, limit: usize) -> Result<Vec<String>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let ids: Vec<String> = conn
            .zrange(keys::HOSTS, 0, limit as isize - 1)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let host_keys: Vec<String> = ids.iter().map(|id| keys::host(id)).collect();
        let heartbeats: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&host_keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(heartbeats.into_iter().flatten().collect())
    }

    pub async fn remove_host(&self, id: &str) -> Result<(), BackendError> {
        redis::pipe()
            .atomic()
            .del(keys::host(id))
            .ignore()
            .zrem(keys::HOSTS, id)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub async fn push_failure(
        &self,
        function: &str,
        record: &str,
        keep: usize,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        let key = keys::failures(function);
        redis::pipe()
            .atomic()
            .lpush(&key, record)
            .ignore()
            .ltrim(&key, 0, keep.max(1) as isize - 1)
            .ignore()
            .expire(&key, i64::from(ttl_seconds.max(1)))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub async fn failures(
        &self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.conn()
            .lrange(keys::failures(function), 0, limit as isize - 1)
            .await
            .map_err(unavailable)
    }
}

fn unavailable(e: redis::RedisError) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

/// Marks a cursor of this version (`k/<last key read>`, relative to the namespace); the SCAN
/// cursors of earlier versions were digits, so they are refused rather than misread.
const CURSOR_TAG: &str = "k/";

/// The last key read, from a cursor `list` returned.
fn parse_cursor(cursor: Option<&str>) -> Result<Option<&str>, BackendError> {
    match cursor {
        None => Ok(None),
        Some(cursor) => match cursor.strip_prefix(CURSOR_TAG) {
            Some(after) if !after.is_empty() => Ok(Some(after)),
            _ => Err(BackendError::InvalidCursor),
        },
    }
}

/// A ZRANGEBYLEX bound: `[` (inclusive) or `(` (exclusive), then the bytes of the key.
fn lex_bound(kind: u8, namespace: &str, key: &str, suffix: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(1 + namespace.len() + key.len() + suffix.len());
    bound.push(kind);
    bound.extend_from_slice(namespace.as_bytes());
    bound.extend_from_slice(key.as_bytes());
    bound.extend_from_slice(suffix);
    bound
}

/// Milliseconds since the epoch by this host's clock: when a key written now with a TTL
/// expires, for [`keys::kv_expiries`] (a hint only; pruning checks the key itself).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `redis://user:secret@host/` → `redis://user:***@host/`.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(parse_cursor(None).ok(), Some(None));
        assert_eq!(parse_cursor(Some("k/a/b")).ok(), Some(Some("a/b")));
        for bad in ["nope", "42", "7/a", "k/", ""] {
            assert!(
                matches!(parse_cursor(Some(bad)), Err(BackendError::InvalidCursor)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lex_bounds_are_the_kind_then_the_full_key() {
        assert_eq!(lex_bound(b'[', "gf:kv:{a}:", "x", &[]), b"[gf:kv:{a}:x");
        assert_eq!(
            lex_bound(b'(', "gf:kv:{a}:", "", &[0xFF]),
            b"(gf:kv:{a}:\xFF"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}

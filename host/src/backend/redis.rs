//! The Redis backend: what every host sharing one Redis sees.
//!
//! One multiplexed connection per host carries every command: a [`ConnectionManager`] for a single
//! server, or a [`ClusterConnection`] that routes each command by its key's slot for Redis
//! Cluster. Both reconnect by themselves when Redis comes back. Each command is bounded by the
//! response timeout ([`DEFAULT_RESPONSE_TIMEOUT`], `--redis-timeout-ms`), so a guest waiting on a
//! hung Redis gets `unavailable` rather than hanging until its deadline; and once commands keep
//! timing out or losing their connection, they fail at once for one timeout's length
//! ([`Health`]) instead of each waiting the whole timeout again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value};

use super::{BackendError, Claim, FunctionRecord, KeyPage, keys};

/// Default for how long one command may wait for Redis' answer before it fails as
/// `unavailable` (and so how fast a hung Redis becomes a 503).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnection attempts per failed connection before commands fail fast; the manager tries
/// again on the next command, so this bounds latency, not availability.
const RECONNECT_ATTEMPTS: usize = 2;
/// SCAN calls one `list` page may make: keeps a page's work bounded on a large keyspace, at the
/// price of pages that can come back short (the contract allows that).
const MAX_SCANS_PER_PAGE: usize = 16;
/// The smallest SCAN COUNT hint; small hints make Redis walk the keyspace in tiny steps.
const MIN_SCAN_COUNT: u32 = 100;

/// Compare-and-swap in one atomic step. KEYS[1]: key. ARGV: expect-present flag ("1"/"0"),
/// expected value, new value, ttl seconds ("" for none).
const CAS_SCRIPT: &str = r"
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
return 1
";

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
    description: String,
    connection: Connection,
    /// Behind an `Arc`: the backend is cloned for every request, the scripts never change.
    scripts: Arc<Scripts>,
}

/// The Lua scripts, each with its SHA-1 computed once (sent by hash, the source only when
/// Redis does not know it yet).
struct Scripts {
    cas: Script,
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
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        let description = format!("redis at {}", redacted(url));
        RedisBackend::checked(description, Inner::Single(connection), timeout).await
    }

    /// Connects to a Redis Cluster through any of its `nodes` (the others are discovered) and
    /// checks it answers. `timeout` bounds each command (and each reconnection).
    pub async fn connect_cluster(nodes: &[&str], timeout: Duration) -> Result<Self, BackendError> {
        let client = ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(RECONNECT_ATTEMPTS as u32)
            .build()
            .map_err(unavailable)?;
        let connection = client.get_async_connection().await.map_err(unavailable)?;
        let nodes: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
        let description = format!("redis cluster via {}", nodes.join(","));
        RedisBackend::checked(description, Inner::Cluster(connection), timeout).await
    }

    async fn checked(
        description: String,
        inner: Inner,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let backend = RedisBackend {
            description,
            connection: Connection {
                inner,
                health: Arc::new(Health::new(timeout)),
            },
            scripts: Arc::new(Scripts {
                cas: Script::new(CAS_SCRIPT),
                swap_function: Script::new(SWAP_FUNCTION_SCRIPT),
                claim: Script::new(CLAIM_SCRIPT),
                collect: Script::new(COLLECT_SCRIPT),
                forget: Script::new(FORGET_SCRIPT),
            }),
        };
        backend.ping().await?;
        Ok(backend)
    }

    /// What this backend is connected to, without passwords, for logs.
    pub fn describe(&self) -> String {
        self.description.clone()
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

    /// One SCAN step. On a cluster it goes to the primary owning the namespace's slot: every key
    /// of an app shares that slot through the `{app}` hash tag, so one node holds them all.
    async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: u32,
        namespace: &str,
    ) -> Result<(u64, Vec<String>), BackendError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let mut conn = self.conn();
        match &mut conn.inner {
            Inner::Single(_) => cmd.query_async(&mut conn).await.map_err(unavailable),
            Inner::Cluster(c) => {
                let route = Route::with_slot(Slot::for_key(namespace), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = c.route_command(cmd, routing).await.map_err(unavailable)?;
                redis::from_redis_value(value).map_err(|e| BackendError::Unavailable(e.to_string()))
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.conn().get(key).await.map_err(unavailable)
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), BackendError> {
        let mut conn = self.conn();
        match ttl_seconds {
            None => conn.set::<_, _, ()>(key, value).await,
            Some(ttl) => {
                conn.set_ex::<_, _, ()>(key, value, u64::from(ttl.max(1)))
                    .await
            }
        }
        .map_err(unavailable)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let removed: u64 = self.conn().del(key).await.map_err(unavailable)?;
        Ok(removed > 0)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.conn().exists(key).await.map_err(unavailable)
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, BackendError> {
        match self.conn().incr(key, delta).await {
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
        let written: i64 = self
            .scripts
            .cas
            .key(key)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .arg(ttl)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    /// SCAN-based listing. The cursor is `"<scan cursor>"` or `"<scan cursor>/<last key>"`: when
    /// one SCAN batch holds more keys than fit on the page, the next page re-reads the same batch
    /// and skips keys up to the last one returned (batches are sorted for that).
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, BackendError> {
        let (mut scan_cursor, mut after) = parse_cursor(cursor)?;
        let pattern = format!("{}*", escape_glob(&format!("{namespace}{prefix}")));
        let limit = limit as usize;
        let mut keys: Vec<String> = Vec::new();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let count = (limit as u32).max(MIN_SCAN_COUNT);
            let (next, batch) = self.scan(scan_cursor, &pattern, count, namespace).await?;
            let mut batch: Vec<String> = batch
                .into_iter()
                .filter_map(|k| k.strip_prefix(namespace).map(str::to_owned))
                .collect();
            batch.sort_unstable();
            batch.dedup();
            if let Some(after) = after.take() {
                batch.retain(|k| *k > after);
            }
            let room = limit - keys.len();
            if batch.len() > room {
                keys.extend(batch.into_iter().take(room));
                let last = keys.last().cloned().unwrap_or_default();
                return Ok(KeyPage {
                    keys,
                    cursor: Some(format!("{scan_cursor}/{last}")),
                });
            }
            keys.extend(batch);
            scan_cursor = next;
            if next == 0 {
                return Ok(KeyPage { keys, cursor: None });
            }
            if keys.len() == limit {
                break;
            }
        }
        Ok(KeyPage {
            keys,
            cursor: Some(scan_cursor.to_string()),
        })
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

fn parse_cursor(cursor: Option<&str>) -> Result<(u64, Option<String>), BackendError> {
    let Some(cursor) = cursor else {
        return Ok((0, None));
    };
    let (number, after) = match cursor.split_once('/') {
        Some((number, after)) => (number, Some(after.to_owned())),
        None => (cursor, None),
    };
    let number = number.parse().map_err(|_| BackendError::InvalidCursor)?;
    Ok((number, after))
}

/// Escapes Redis glob metacharacters so a prefix matches literally.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
    fn glob_metacharacters_are_escaped() {
        assert_eq!(
            escape_glob("gf:kv:{a}:x*?[y]\\"),
            "gf:kv:{a}:x\\*\\?\\[y\\]\\\\"
        );
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(parse_cursor(None).ok(), Some((0, None)));
        assert_eq!(parse_cursor(Some("42")).ok(), Some((42, None)));
        assert_eq!(
            parse_cursor(Some("7/a/b")).ok(),
            Some((7, Some("a/b".to_owned())))
        );
        assert!(matches!(
            parse_cursor(Some("nope")),
            Err(BackendError::InvalidCursor)
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}

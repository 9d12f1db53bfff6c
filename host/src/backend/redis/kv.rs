//! Guests' keys: reads and writes that keep the per-app key index in step, the index's one-time
//! migration, and listings read from it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncCommands, Value};

use super::*;
use crate::backend::KeyPage;

impl RedisBackend {
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
    pub(super) fn start_migration(&self) -> Option<tokio::task::JoinHandle<()>> {
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
                let now = now_ms();
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .set_ex(key, value, u64::from(ttl.max(1)))
                    .ignore();
                index_expiring(&mut pipe, app, key, ttl, now);
                let (due,): (u64,) = pipe.query_async(&mut conn).await.map_err(unavailable)?;
                self.prune_if_due(app, due, now).await;
                Ok(())
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
            // MULTI rather than a Lua script: Redis spends ~2 µs on MULTI+EXEC where EVALSHA
            // of the same two commands took ~7 µs (commit c5bfc72). Inside the
            // transaction a refused INCRBY still lets the ZADD run, which is harmless: INCRBY
            // only refuses a key that exists, so the key is already indexed.
            Some(app) => redis::pipe()
                .atomic()
                .incr(key, delta)
                .zadd(keys::kv_index(app), key, 0)
                .ignore()
                .query_async::<(i64,)>(&mut conn)
                .await
                .map(|(value,)| value),
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
        if let (None, Some(app)) = (expected, keys::kv_app(key)) {
            return self.create(app, key, new, ttl_seconds).await;
        }
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

    /// A compare-and-swap that expects no value: `SET NX` and the key's index entries in one
    /// `MULTI`, no Lua. Redis' own time per cart create was 23.8–30.3 µs for the
    /// compare-and-swap script against 19.1–19.8 µs for this (README, Performance); the host
    /// parses six replies instead of one for it. When the key exists, nothing is written and
    /// the index entries it already has are added again, which changes nothing (an expiry
    /// entry for a key without expiry is dropped when it falls due).
    async fn create(
        &self,
        app: &str,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, BackendError> {
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg(key).arg(value).arg("NX");
        let (written, due) = match ttl_seconds {
            Some(ttl) => {
                pipe.arg("EX").arg(ttl.max(1));
                index_expiring(&mut pipe, app, key, ttl, now);
                pipe.query_async::<(Option<String>, u64)>(&mut self.conn())
                    .await
                    .map_err(unavailable)?
            }
            None => {
                pipe.zadd(keys::kv_index(app), key, 0).ignore();
                let (written,): (Option<String>,) = pipe
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                (written, 0)
            }
        };
        self.prune_if_due(app, due, now).await;
        Ok(written.is_some())
    }

    /// Runs the prune script when a write's `MULTI` counted expiry entries due by `now`. The write
    /// is done whatever happens here: a failed prune leaves the entries due, and the app's
    /// next write with an expiry tries again.
    async fn prune_if_due(&self, app: &str, due: u64, now: u64) {
        if due == 0 {
            return;
        }
        let pruned = self
            .scripts
            .prune
            .key(keys::kv_index(app))
            .key(keys::kv_expiries(app))
            .arg(now)
            .invoke_async::<()>(&mut self.conn())
            .await;
        if let Err(e) = pruned {
            tracing::debug!(app, error = %e, "could not prune the key index; the next write retries");
        }
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
}

/// Queues, after the write of a kv key with an expiry, what indexes it: the index entry; an
/// expiry entry unless the key has one (`ZADD NX`: a key that already expires keeps the entry it
/// has, which `prune` moves to the key's new time when it falls due, so rewriting a cart or a
/// session moves no sorted-set entry); and a count of the entries due by `now` (the one reply
/// not ignored: an integer, cheaper for the host to read than the entries), for
/// [`RedisBackend::prune_if_due`].
fn index_expiring(pipe: &mut redis::Pipeline, app: &str, key: &str, ttl_seconds: u32, now: u64) {
    let expiries = keys::kv_expiries(app);
    let expires_at = now + u64::from(ttl_seconds.max(1)) * 1000;
    pipe.zadd(keys::kv_index(app), key, 0)
        .ignore()
        .cmd("ZADD")
        .arg(&expiries)
        .arg("NX")
        .arg(expires_at)
        .arg(key)
        .ignore()
        .cmd("ZCOUNT")
        .arg(&expiries)
        .arg("-inf")
        .arg(now);
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
}

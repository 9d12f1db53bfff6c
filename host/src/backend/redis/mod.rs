//! The Redis backend: what every host sharing one Redis sees.
//!
//! One multiplexed connection per host carries every command: a [`ConnectionManager`] for a single
//! server, or a [`ClusterConnection`] that routes each command by its key's slot for Redis
//! Cluster. Both reconnect by themselves when Redis comes back. Each command is bounded by the
//! response timeout ([`DEFAULT_RESPONSE_TIMEOUT`], `--redis-timeout-ms`), so a guest waiting on a
//! hung Redis gets `unavailable` rather than hanging until its deadline; and once commands keep
//! timing out or losing their connection, they fail at once for one timeout's length
//! ([`Health`]) instead of each waiting the whole timeout again.
//!
//! Split by responsibility: [`connection`] (the multiplexed connection and its health record),
//! [`scripts`] (every Lua script), [`kv`] (guests' keys, the per-app index and listing) and
//! [`registry`] (components, deployed functions, host heartbeats, failure lists).

mod connection;
mod kv;
mod registry;
mod scripts;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;

use super::{BackendError, keys};
use connection::{Connection, Health, Inner};
use scripts::Scripts;

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
#[derive(Clone)]
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
    /// runtime this is called from. Each guest thread gets one, so a kv call and the
    /// connection's reader and writer wake each other on that thread instead of bouncing
    /// between threads. It shares this one's record of
    /// whether Redis answers (an answer on either connection means it is up) and its view of
    /// the kv index migration (and starts none of its own).
    pub async fn another_connection(&self) -> Result<Self, BackendError> {
        let origin = (*self.origin).clone();
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
            connection: Connection::new(inner, health),
            scripts: Arc::new(Scripts::new()),
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
}

fn unavailable(e: redis::RedisError) -> BackendError {
    BackendError::Unavailable(e.to_string())
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
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}

//! The function registry: which names are deployed, in which app, at which digest; and this
//! host's cache of compiled components.
//!
//! The source of truth is the backend (Redis): a hash of name → entry, a version counter bumped
//! on every change, and component bytes content-addressed by SHA-256. Each host keeps a snapshot
//! of the names, re-read whenever the version moves ([`REFRESH_INTERVAL`]), and compiles each
//! digest once on first use. Compiled machine code is never stored or loaded: only the bytes the
//! operator uploaded, compiled by this host's own engine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::backend::{Backend, BackendError};
use crate::engine::{Compiled, Runtime, ValidationError};

/// How often a host checks the registry version. A deploy, redeploy or delete through any host
/// is served by every host within this interval (the contract is one second).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// A deployed function, as stored in the backend and returned by the admin API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionEntry {
    pub name: String,
    pub app: String,
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    /// Component size in bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("compilation did not finish: {0}")]
    Internal(String),
}

/// Why a function could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no function named `{0}` is deployed")]
    NotFound(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The entry points at bytes that are missing or no longer compile (e.g. after an engine
    /// upgrade); the operator must redeploy.
    #[error("function `{name}` cannot be loaded: {reason}; redeploy it")]
    Broken { name: String, reason: String },
}

/// A function ready to instantiate: its entry and compiled component. Requests hold this for
/// their whole duration, so a redeploy never swaps the code under a running request.
#[derive(Clone)]
pub struct Ready {
    pub entry: Arc<FunctionEntry>,
    pub compiled: Arc<Compiled>,
}

struct Snapshot {
    version: u64,
    /// Entries behind `Arc`s: each request takes one without copying its strings.
    functions: BTreeMap<String, Arc<FunctionEntry>>,
    /// Names looked up in the backend and found missing at this version. A flood of requests
    /// for an undeployed name then costs one backend lookup, not one per request; a new version
    /// (any deploy or delete, anywhere) brings a fresh snapshot with no misses.
    misses: HashSet<String>,
}

/// Most missing names remembered per snapshot; past it the set starts over.
const MAX_REMEMBERED_MISSES: usize = 10_000;

/// The outcome of compiling one digest on this host. A compile error is kept too: the bytes
/// behind a digest never change, so neither does the answer, and a broken function must not cost
/// a compilation per request. Failures to fetch the bytes are not kept (they may be transient).
type CompiledCell = OnceCell<Result<Arc<Compiled>, String>>;

pub struct Registry {
    backend: Backend,
    runtime: Arc<Runtime>,
    /// `std::sync::RwLock`: replaced wholesale by the refresher, read by every request; never
    /// held across an `.await`.
    snapshot: RwLock<Snapshot>,
    /// Digest → compiled component, one cell per digest so concurrent first requests compile
    /// once. Pruned to the digests the snapshot references after each refresh.
    compiled: Mutex<HashMap<String, Arc<CompiledCell>>>,
}

impl Registry {
    pub fn new(backend: Backend, runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Registry {
            backend,
            runtime,
            snapshot: RwLock::new(Snapshot {
                version: u64::MAX,
                functions: BTreeMap::new(),
                misses: HashSet::new(),
            }),
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Validates, compiles and stores a component, then points `name` at it.
    pub async fn deploy(
        &self,
        name: &str,
        app: &str,
        bytes: Vec<u8>,
    ) -> Result<FunctionEntry, DeployError> {
        let bytes = Arc::new(bytes);
        let runtime = self.runtime.clone();
        let to_compile = bytes.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&to_compile))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))??;
        let digest = hex::encode(Sha256::digest(bytes.as_slice()));
        let entry = FunctionEntry {
            name: name.to_owned(),
            app: app.to_owned(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            deployed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        // Bytes first, then the name: a host that sees the name can always fetch the bytes.
        self.backend.put_component(&digest, &bytes).await?;
        let json =
            serde_json::to_string(&entry).map_err(|e| DeployError::Internal(e.to_string()))?;
        self.backend.put_function(name, &json).await?;
        self.cell(&digest).set(Ok(Arc::new(compiled))).ok();
        self.refresh().await.ok();
        Ok(entry)
    }

    /// Removes `name`. Returns whether it was deployed.
    pub async fn delete(&self, name: &str) -> Result<bool, BackendError> {
        let existed = self.backend.delete_function(name).await?;
        self.refresh().await.ok();
        Ok(existed)
    }

    /// Every deployed function, straight from the backend.
    pub async fn list(&self) -> Result<Vec<FunctionEntry>, BackendError> {
        let (_, entries) = self.backend.list_functions().await?;
        Ok(entries
            .iter()
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect())
    }

    /// One function's entry, straight from the backend.
    pub async fn get(&self, name: &str) -> Result<Option<FunctionEntry>, BackendError> {
        let json = self.backend.get_function(name).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The function `name`, compiled and ready. Uses this host's snapshot; a name it does not
    /// know yet (deployed through another host since the last refresh) is looked up directly.
    pub async fn resolve(&self, name: &str) -> Result<Ready, ResolveError> {
        let (known, missed) = {
            let snapshot = self.read_snapshot();
            (
                snapshot.functions.get(name).cloned(),
                snapshot.misses.contains(name),
            )
        };
        let entry = match known {
            Some(entry) => entry,
            None if missed => return Err(ResolveError::NotFound(name.to_owned())),
            None => match self.get(name).await? {
                Some(entry) => Arc::new(entry),
                None => {
                    self.remember_miss(name);
                    return Err(ResolveError::NotFound(name.to_owned()));
                }
            },
        };
        let cell = self.cell(&entry.digest);
        let compiled = cell
            .get_or_try_init(|| async {
                let bytes = self
                    .backend
                    .get_component(&entry.digest)
                    .await?
                    .ok_or_else(|| ResolveError::Broken {
                        name: name.to_owned(),
                        reason: format!("component {} is missing from the store", entry.digest),
                    })?;
                let runtime = self.runtime.clone();
                let started = std::time::Instant::now();
                let compiled = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
                    .await
                    .map_err(|e| ResolveError::Broken {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    })?;
                let digest = &entry.digest;
                match &compiled {
                    Ok(_) => {
                        tracing::info!(%digest, elapsed = ?started.elapsed(), "compiled component")
                    }
                    Err(e) => {
                        tracing::warn!(%digest, "component does not compile on this host: {e}")
                    }
                }
                Ok::<_, ResolveError>(compiled.map(Arc::new).map_err(|e| e.to_string()))
            })
            .await?;
        match compiled {
            Ok(compiled) => Ok(Ready {
                entry,
                compiled: compiled.clone(),
            }),
            Err(reason) => Err(ResolveError::Broken {
                name: name.to_owned(),
                reason: reason.clone(),
            }),
        }
    }

    /// Number of compiled components cached on this host.
    pub fn compiled_count(&self) -> usize {
        self.lock_compiled()
            .values()
            .filter(|c| matches!(c.get(), Some(Ok(_))))
            .count()
    }

    /// Re-reads the registry if its version moved, and forgets compiled digests no longer used.
    pub async fn refresh(&self) -> Result<(), BackendError> {
        let version = self.backend.functions_version().await?;
        if version == self.read_snapshot().version {
            return Ok(());
        }
        let (version, entries) = self.backend.list_functions().await?;
        let functions: BTreeMap<String, Arc<FunctionEntry>> = entries
            .iter()
            .filter_map(|(name, json)| match serde_json::from_str(json) {
                Ok(entry) => Some((name.clone(), Arc::new(entry))),
                Err(e) => {
                    tracing::error!(function = %name, "ignoring unreadable registry entry: {e}");
                    None
                }
            })
            .collect();
        self.lock_compiled()
            .retain(|digest, _| functions.values().any(|e| &e.digest == digest));
        *self.write_snapshot() = Snapshot {
            version,
            functions,
            misses: HashSet::new(),
        };
        Ok(())
    }

    /// Refreshes every [`REFRESH_INTERVAL`], for as long as the task runs.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.refresh().await {
                tracing::warn!("registry refresh failed (serving the last known functions): {e}");
            }
        }
    }

    fn remember_miss(&self, name: &str) {
        let mut snapshot = self.write_snapshot();
        if snapshot.misses.len() >= MAX_REMEMBERED_MISSES {
            snapshot.misses.clear();
        }
        snapshot.misses.insert(name.to_owned());
    }

    fn write_snapshot(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        // The snapshot is replaced whole, so a poisoned lock still holds a consistent value.
        self.snapshot.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_snapshot(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        // The snapshot is replaced whole, so a poisoned lock still holds a consistent value.
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CompiledCell>>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cell(&self, digest: &str) -> Arc<CompiledCell> {
        let mut compiled = self.lock_compiled();
        // Looked up first so the hot path does not allocate a key for a digest already cached.
        if let Some(cell) = compiled.get(digest) {
            return cell.clone();
        }
        compiled.entry(digest.to_owned()).or_default().clone()
    }
}

/// Whether `s` is a valid function or app name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_valid_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        assert!(is_valid_name("cart"));
        assert!(is_valid_name("0-pizza-2"));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-cart"));
        assert!(!is_valid_name("Cart"));
        assert!(!is_valid_name("cart_2"));
        assert!(!is_valid_name("a/b"));
    }
}

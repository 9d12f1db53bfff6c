//! The function registry: which names are deployed, in which app, at which digest; and this
//! host's cache of compiled components.
//!
//! The source of truth is the backend (Redis): a hash of name → entry, a version counter bumped
//! on every change, and component bytes content-addressed by SHA-256. Each host keeps a snapshot
//! of the names, re-read whenever the version moves ([`REFRESH_INTERVAL`]), and compiles each
//! digest it has not compiled yet in the background as soon as it sees it, so the first request
//! on this host rarely waits. Compiles run on blocking threads, at most
//! [`CompileSettings::max_concurrent`] at once and each bounded in time. Machine code is never
//! read from the backend: only the bytes the operator uploaded, compiled by this host's own
//! engine, and kept in this host's [`CompileCache`] on local disk for restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore};

use crate::backend::{Backend, BackendError};
use crate::compile_cache::CompileCache;
use crate::engine::{Compiled, Runtime, ValidationError};
use crate::worlds::World;

/// Default for [`CompileSettings::timeout`]: a 20 MB language runtime compiles in 10–20 s on
/// two cores.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default for [`CompileSettings::max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT_COMPILES: usize = 2;

/// How this host compiles components.
#[derive(Clone, Debug)]
pub struct CompileSettings {
    /// Compiles running at once; more wait their turn (each compile is parallel inside
    /// already, so more would only slow every one down and starve requests of CPU).
    pub max_concurrent: usize,
    /// Longest a compile may take (422 beyond), and longest a deploy waits for its turn
    /// (503 beyond).
    pub timeout: Duration,
    /// Where compiled machine code is cached on local disk; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
}

impl Default for CompileSettings {
    fn default() -> Self {
        CompileSettings {
            max_concurrent: DEFAULT_MAX_CONCURRENT_COMPILES,
            timeout: DEFAULT_COMPILE_TIMEOUT,
            cache_dir: None,
        }
    }
}

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
    /// The component's world (absent in entries written before worlds existed: `goldfish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<World>,
    /// Linear memory limit set at deploy (`?memory_mib=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Every compile slot stayed busy for the whole compile timeout.
    #[error("{0}")]
    Busy(String),
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
    /// One permit per compile allowed at once; a permit moves into the blocking thread, so a
    /// compile that outlives its timeout still holds its slot until it really ends.
    compile_slots: Arc<Semaphore>,
    compile_timeout: Duration,
    /// Compiled machine code on local disk, when enabled.
    cache: Option<Arc<CompileCache>>,
}

impl Registry {
    /// The registry over `backend`; opens (creating) the compile cache directory if one is set.
    pub fn new(
        backend: Backend,
        runtime: Arc<Runtime>,
        compile: CompileSettings,
    ) -> anyhow::Result<Arc<Self>> {
        let cache = match &compile.cache_dir {
            Some(dir) => Some(Arc::new(
                CompileCache::open(dir, runtime.engine()).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot use {} as the compile cache: {e}; pick another --compile-cache \
                         directory or turn it off with --compile-cache off",
                        dir.display()
                    )
                })?,
            )),
            None => None,
        };
        Ok(Arc::new(Registry {
            backend,
            runtime,
            snapshot: RwLock::new(Snapshot {
                version: u64::MAX,
                functions: BTreeMap::new(),
                misses: HashSet::new(),
            }),
            compiled: Mutex::new(HashMap::new()),
            compile_slots: Arc::new(Semaphore::new(compile.max_concurrent.max(1))),
            compile_timeout: compile.timeout,
            cache,
        }))
    }

    /// Validates, compiles and stores a component whose SHA-256 is `digest` (computed while
    /// the upload streamed in), then points `name` at it.
    pub async fn deploy(
        &self,
        name: &str,
        app: &str,
        bytes: Bytes,
        digest: String,
        memory_mib: Option<u32>,
    ) -> Result<FunctionEntry, DeployError> {
        let compiled = self.compile(&digest, bytes.clone()).await?;
        let entry = FunctionEntry {
            name: name.to_owned(),
            app: app.to_owned(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            deployed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            world: Some(compiled.world()),
            memory_mib,
        };
        // Bytes first, then the name: a host that sees the name can always fetch the bytes.
        self.backend.put_component(&digest, &bytes).await?;
        let json =
            serde_json::to_string(&entry).map_err(|e| DeployError::Internal(e.to_string()))?;
        self.backend.put_function(name, &json).await?;
        self.cell(&digest).set(Ok(compiled)).ok();
        self.refresh().await.ok();
        Ok(entry)
    }

    /// Compiles `bytes` (whose digest is `digest`) on a blocking thread: from this host's disk
    /// cache when it has the machine code, else by compiling and then caching it. Waits at most
    /// the compile timeout for a slot (then [`DeployError::Busy`]) and for the compile itself
    /// (then [`ValidationError::CompileTimeout`]).
    async fn compile(&self, digest: &str, bytes: Bytes) -> Result<Arc<Compiled>, DeployError> {
        let timeout = self.compile_timeout;
        let permit = tokio::time::timeout(timeout, self.compile_slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                DeployError::Busy(format!(
                    "every compile slot stayed busy for {timeout:?}; retry the deploy shortly"
                ))
            })?
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        let runtime = self.runtime.clone();
        let cache = self.cache.clone();
        let digest_owned = digest.to_owned();
        let started = Instant::now();
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            compile_cached(&runtime, cache.as_deref(), &digest_owned, &bytes)
        });
        let (compiled, cached) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ValidationError::CompileTimeout(timeout))?
            .map_err(|e| DeployError::Internal(e.to_string()))??;
        let elapsed = started.elapsed();
        if cached {
            tracing::info!(%digest, ?elapsed, "machine code loaded from the disk cache");
        } else {
            tracing::info!(%digest, ?elapsed, "compile finished");
        }
        Ok(Arc::new(compiled))
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
        let compiled = self.compiled(&entry).await?;
        match compiled {
            Ok(compiled) => Ok(Ready { entry, compiled }),
            Err(reason) => Err(ResolveError::Broken {
                name: name.to_owned(),
                reason,
            }),
        }
    }

    /// The compiled component behind `entry`, compiling it (once per digest, however many ask
    /// at once) if this host has not yet. A compile error is kept; a failure to fetch the bytes
    /// is not (it may be transient).
    async fn compiled(
        &self,
        entry: &FunctionEntry,
    ) -> Result<Result<Arc<Compiled>, String>, ResolveError> {
        let cell = self.cell(&entry.digest);
        let broken = |reason: String| ResolveError::Broken {
            name: entry.name.clone(),
            reason,
        };
        let compiled = cell
            .get_or_try_init(|| async {
                // The bytes are fetched even when the disk cache has the machine code: one GET,
                // and a corrupt cache file then costs a compile, not a failed request.
                let bytes = self.backend.get_component(&entry.digest).await?;
                if let Some(bytes) = bytes {
                    return match self.compile(&entry.digest, Bytes::from(bytes)).await {
                        Ok(compiled) => Ok(Ok(compiled)),
                        Err(DeployError::Invalid(e)) => {
                            let digest = &entry.digest;
                            tracing::warn!(%digest, "component does not compile on this host: {e}");
                            Ok(Err(e.to_string()))
                        }
                        Err(DeployError::Backend(e)) => Err(ResolveError::Backend(e)),
                        Err(e) => Err(broken(e.to_string())),
                    };
                }
                Err(broken(format!(
                    "component {} is missing from the store",
                    entry.digest
                )))
            })
            .await?;
        Ok(compiled.clone())
    }

    /// Compiles, in the background, every digest of the current snapshot this host has not
    /// compiled yet, so a function deployed through another host is ready here before its
    /// first request. At most [`CompileSettings::max_concurrent`] run at once, like every
    /// compile.
    pub fn precompile(self: &Arc<Self>) {
        let entries: Vec<Arc<FunctionEntry>> =
            self.read_snapshot().functions.values().cloned().collect();
        for entry in entries {
            if self.cell(&entry.digest).initialized() {
                continue;
            }
            let registry = self.clone();
            tokio::spawn(async move {
                if let Err(e) = registry.compiled(&entry).await {
                    tracing::warn!(function = %entry.name, "background compile failed: {e}");
                }
            });
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
    /// Returns whether it moved.
    pub async fn refresh(&self) -> Result<bool, BackendError> {
        let version = self.backend.functions_version().await?;
        if version == self.read_snapshot().version {
            return Ok(false);
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
        Ok(true)
    }

    /// Refreshes every [`REFRESH_INTERVAL`], for as long as the task runs.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.refresh().await {
                Ok(true) => self.precompile(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(
                        "registry refresh failed (serving the last known functions): {e}"
                    )
                }
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

/// Loads `digest`'s machine code from `cache`, or compiles `bytes` and caches the result; then
/// links it. Returns whether it came from the cache. Blocking: run on a blocking thread.
fn compile_cached(
    runtime: &Runtime,
    cache: Option<&CompileCache>,
    digest: &str,
    bytes: &[u8],
) -> Result<(Compiled, bool), ValidationError> {
    if let Some(component) = cache.and_then(|c| c.load(runtime.engine(), digest)) {
        return Ok((runtime.link(component)?, true));
    }
    let component = runtime.compile_component(bytes)?;
    // Link first: a component that does not link is refused, and not worth caching.
    let compiled = runtime.link(component.clone())?;
    if let Some(cache) = cache
        && let Err(e) = cache.store(digest, &component)
    {
        tracing::warn!(dir = %cache.dir().display(), "could not write the compile cache: {e:#}");
    }
    Ok((compiled, false))
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

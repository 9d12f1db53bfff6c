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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore};

use crate::backend::{Backend, BackendError, Claim, FunctionRecord};
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

/// Default for how many versions of each function are kept, with their bytes
/// (`--keep-versions`).
pub const DEFAULT_KEEP_VERSIONS: usize = 10;
/// How long a deploy's claim protects its bytes from collection between storing them and
/// pointing the name at them: far longer than writing 64 MiB to Redis takes, and a claim whose
/// deploy died only delays collecting its bytes by this much.
const CLAIM_LEASE: Duration = Duration::from_secs(600);
/// How long a deploy waits for a collector to finish deleting the same digest's bytes (one
/// UNLINK); past it the deletion mark has expired and the deploy goes ahead.
const DELETE_LEASE: Duration = Duration::from_secs(30);
/// How often a deploy waiting on a deletion asks again.
const CLAIM_POLL: Duration = Duration::from_millis(50);
/// Attempts at an atomic read-modify-write of one function's record before giving up: each
/// failed attempt means another deploy or rollback of the same name won in between.
const MAX_SWAP_ATTEMPTS: usize = 16;

/// How often a host checks the registry version. A deploy, redeploy or delete through any host
/// is served by every host within this interval (the contract is one second).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// A deployed function, as stored in the backend and returned by the admin API; also one kept
/// version of it (a version list holds whole entries, so a rollback restores every setting the
/// version was deployed with).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FunctionEntry {
    pub name: String,
    pub app: String,
    /// This deploy's number among the name's deploys: 1, 2, 3… (0 in entries written before
    /// versions existed). A rollback makes an older number current again.
    #[serde(default)]
    #[schema(required = true)]
    pub version: u64,
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    /// Component size in bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
    /// The component's world (absent in entries written before worlds existed: `goldfish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "goldfish")]
    pub world: Option<World>,
    /// Linear memory limit set at deploy (`?memory_mib=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// CPU budget per call set at deploy (`?cpu_ms=`), in milliseconds; `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u32>,
    /// kv operations per call set at deploy (`?kv_ops=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_ops: Option<u64>,
    /// kv bytes per call set at deploy (`?kv_bytes=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes: Option<u64>,
    /// Who deployed it: the label of the admin token used (absent before versions existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Limits a function sets for itself at deploy, each capped by the host's.
#[derive(Clone, Copy, Debug, Default)]
pub struct FunctionLimits {
    pub memory_mib: Option<u32>,
    pub cpu_ms: Option<u32>,
    pub kv_ops: Option<u64>,
    pub kv_bytes: Option<u64>,
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

/// Why a version list or a rollback failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("no function named `{0}` is deployed")]
    NotFound(String),
    #[error("function `{name}` has no version {version}; kept versions: {kept}")]
    UnknownVersion {
        name: String,
        version: u64,
        kept: String,
    },
    #[error(
        "function `{name}` is at its oldest kept version ({current}): there is nothing older to roll back to"
    )]
    NoPrevious { name: String, current: u64 },
    /// Others kept changing the function during every attempt.
    #[error("function `{0}` kept changing during the rollback; retry")]
    Contended(String),
    #[error("the registry entry of `{name}` is unreadable: {reason}")]
    Unreadable { name: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
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
    /// Versions kept per function. Atomic only so it can be set after construction (the
    /// settings that build the registry do not carry it); read once per deploy.
    keep_versions: AtomicUsize,
    /// Held for a whole refresh (a tokio mutex: held across the reads from the store).
    refreshing: tokio::sync::Mutex<()>,
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
            refreshing: tokio::sync::Mutex::new(()),
            compile_slots: Arc::new(Semaphore::new(compile.max_concurrent.max(1))),
            compile_timeout: compile.timeout,
            cache,
            keep_versions: AtomicUsize::new(DEFAULT_KEEP_VERSIONS),
        }))
    }

    /// How many versions of each function deploys through this host keep (at least 1: the
    /// current one). Start-up configuration (`--keep-versions`).
    pub fn set_keep_versions(&self, keep: usize) {
        self.keep_versions.store(keep.max(1), Ordering::Relaxed);
    }

    /// Validates, compiles and stores a component whose SHA-256 is `digest` (computed while
    /// the upload streamed in), then makes it `name`'s newest version and points `name` at it;
    /// keeps the newest [`DEFAULT_KEEP_VERSIONS`] (or `--keep-versions`) and deletes bytes no
    /// version needs any more. `by` labels who deployed it.
    pub async fn deploy(
        &self,
        name: &str,
        app: &str,
        bytes: Bytes,
        digest: String,
        limits: FunctionLimits,
        by: &str,
    ) -> Result<FunctionEntry, DeployError> {
        let compiled = self.compile(&digest, bytes.clone()).await?;
        let mut entry = FunctionEntry {
            name: name.to_owned(),
            app: app.to_owned(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            deployed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            world: Some(compiled.world()),
            memory_mib: limits.memory_mib,
            cpu_ms: limits.cpu_ms,
            kv_ops: limits.kv_ops,
            kv_bytes: limits.kv_bytes,
            // Numbered when committed, against the history as it is then.
            version: 0,
            by: Some(by.to_owned()),
        };
        // Bytes first, then the name: a host that sees the name can always fetch the bytes.
        // The claim keeps a collector from deleting them in between.
        let claim_id = format!("{:016x}", rand::random::<u64>());
        self.claim(&claim_id, &digest).await?;
        let stored = async {
            self.backend.put_component(&digest, &bytes).await?;
            self.commit_new_version(&mut entry, &claim_id).await
        }
        .await;
        if let Err(e) = stored {
            // Best effort: an unreleased claim only delays collecting these bytes.
            self.backend.release_claim(&claim_id).await.ok();
            return Err(e);
        }
        self.cell(&digest).set(Ok(compiled)).ok();
        self.collect_garbage().await;
        self.refresh().await.ok();
        Ok(entry)
    }

    /// Claims `digest` for a deploy, first waiting (boundedly) for a collector that is deleting
    /// the same bytes right now to finish.
    async fn claim(&self, claim_id: &str, digest: &str) -> Result<(), DeployError> {
        let deadline = Instant::now() + DELETE_LEASE + CLAIM_POLL;
        loop {
            let lease = CLAIM_LEASE.as_millis() as u64;
            match self
                .backend
                .claim_component(claim_id, digest, now_ms(), lease)
                .await?
            {
                Claim::Held => return Ok(()),
                Claim::Wait(_) if Instant::now() >= deadline => {
                    return Err(DeployError::Busy(
                        "the same component's bytes are being deleted by another host; retry \
                         the deploy shortly"
                            .into(),
                    ));
                }
                Claim::Wait(ms) => {
                    tokio::time::sleep(CLAIM_POLL.min(Duration::from_millis(ms.max(1)))).await
                }
            }
        }
    }

    /// Makes `entry` its name's newest version (numbering it) and the current entry, in one
    /// atomic step against the record as read; retried when another change wins in between.
    async fn commit_new_version(
        &self,
        entry: &mut FunctionEntry,
        claim_id: &str,
    ) -> Result<(), DeployError> {
        let keep = self.keep_versions.load(Ordering::Relaxed).max(1);
        fn to_json<T: Serialize>(value: &T) -> Result<String, DeployError> {
            serde_json::to_string(value).map_err(|e| DeployError::Internal(e.to_string()))
        }
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let record = self.backend.get_record(&entry.name).await?;
            let (current, mut history) = match read_versions(&entry.name, &record) {
                Ok(versions) => versions,
                Err(e) => {
                    // A deploy is how an operator repairs a broken record: start it afresh.
                    tracing::warn!(function = %entry.name, "{e}; starting its version history afresh");
                    (None, Vec::new())
                }
            };
            let newest = history.first().map_or(0, |v| v.version);
            let current = current.map_or(0, |c| c.version);
            entry.version = newest.max(current) + 1;
            history.insert(0, entry.clone());
            history.truncate(keep);
            let new = FunctionRecord {
                entry: Some(to_json(&*entry)?),
                history: Some(to_json(&history)?),
            };
            let digests: Vec<&str> = history.iter().map(|v| v.digest.as_str()).collect();
            if self
                .backend
                .swap_function(&entry.name, &record, &new, Some(claim_id), &digests)
                .await?
            {
                return Ok(());
            }
        }
        Err(DeployError::Busy(format!(
            "`{}` kept changing while this deploy tried to commit; retry the deploy",
            entry.name
        )))
    }

    /// `name`'s current entry and kept versions (newest first).
    pub async fn versions(
        &self,
        name: &str,
    ) -> Result<(FunctionEntry, Vec<FunctionEntry>), VersionError> {
        let record = self.backend.get_record(name).await?;
        match read_versions(name, &record)? {
            (Some(current), history) => Ok((current, history)),
            (None, _) => Err(VersionError::NotFound(name.to_owned())),
        }
    }

    /// Points `name` back at kept version `to` (default: the newest version older than the
    /// current one) in one atomic step, like a deploy: every host serves it within
    /// [`REFRESH_INTERVAL`], and requests already running finish on the version they started
    /// with. Rolling back to the current version changes nothing. Returns the entry now current.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u64>,
    ) -> Result<FunctionEntry, VersionError> {
        for _ in 0..MAX_SWAP_ATTEMPTS {
            let record = self.backend.get_record(name).await?;
            let (current, history) = match read_versions(name, &record)? {
                (Some(current), history) => (current, history),
                (None, _) => return Err(VersionError::NotFound(name.to_owned())),
            };
            let target = match to {
                Some(version) => {
                    history
                        .iter()
                        .find(|v| v.version == version)
                        .ok_or_else(|| VersionError::UnknownVersion {
                            name: name.to_owned(),
                            version,
                            kept: kept_list(&history),
                        })?
                }
                None => history
                    .iter()
                    .filter(|v| v.version < current.version)
                    .max_by_key(|v| v.version)
                    .ok_or_else(|| VersionError::NoPrevious {
                        name: name.to_owned(),
                        current: current.version,
                    })?,
            };
            if target.version == current.version {
                return Ok(current);
            }
            let json = serde_json::to_string(target).map_err(|e| VersionError::Unreadable {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
            let new = FunctionRecord {
                entry: Some(json),
                history: record.history.clone(),
            };
            if self
                .backend
                .swap_function(name, &record, &new, None, &[])
                .await?
            {
                self.refresh().await.ok();
                return Ok(target.clone());
            }
        }
        Err(VersionError::Contended(name.to_owned()))
    }

    /// Deletes component bytes that no kept version references any more. A failure only costs
    /// storage until the next deploy or delete collects again, so it is logged, not returned.
    async fn collect_garbage(&self) {
        let lease = DELETE_LEASE.as_millis() as u64;
        match self.backend.collect_components(now_ms(), lease).await {
            Ok(deleted) => {
                for digest in deleted {
                    tracing::info!(%digest, "deleted component bytes no kept version uses");
                }
            }
            Err(e) => tracing::warn!(
                "could not collect unused component bytes (they stay stored until the next \
                 deploy or delete): {e}"
            ),
        }
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

    /// Removes `name` with all its versions, and deletes bytes nothing else uses. Returns
    /// whether it was deployed.
    pub async fn delete(&self, name: &str) -> Result<bool, BackendError> {
        let existed = self.backend.delete_function(name).await?;
        if existed {
            self.collect_garbage().await;
        }
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
        // The miss cache is only consulted for names the snapshot does not hold.
        let (known, missed) = {
            let snapshot = self.read_snapshot();
            match snapshot.functions.get(name) {
                Some(entry) => (Some(entry.clone()), false),
                None => (None, snapshot.misses.contains(name)),
            }
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
    ///
    /// Single-flight: refreshes (the ticker's, a deploy's, a delete's) take turns, so each reads
    /// the store after the one before it installed its snapshot, and an older snapshot can never
    /// be installed over a newer one.
    pub async fn refresh(&self) -> Result<bool, BackendError> {
        let _turn = self.refreshing.lock().await;
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

/// Milliseconds since the Unix epoch, for leases shared between hosts (their clocks agree far
/// more closely than the leases are long).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A function's current entry and its kept versions, newest first, from its stored record. An
/// entry written before versions existed counts as version 1, its only version.
fn read_versions(
    name: &str,
    record: &FunctionRecord,
) -> Result<(Option<FunctionEntry>, Vec<FunctionEntry>), VersionError> {
    let unreadable = |e: serde_json::Error| VersionError::Unreadable {
        name: name.to_owned(),
        reason: e.to_string(),
    };
    let current: Option<FunctionEntry> = match &record.entry {
        Some(json) => {
            let mut entry: FunctionEntry = serde_json::from_str(json).map_err(unreadable)?;
            entry.version = entry.version.max(1);
            Some(entry)
        }
        None => None,
    };
    let mut history: Vec<FunctionEntry> = match (&record.history, &current) {
        (Some(json), _) => serde_json::from_str(json).map_err(unreadable)?,
        (None, Some(current)) => vec![current.clone()],
        (None, None) => Vec::new(),
    };
    history.sort_by_key(|v| std::cmp::Reverse(v.version));
    Ok((current, history))
}

/// "3, 2, 1": the kept version numbers, for messages.
fn kept_list(history: &[FunctionEntry]) -> String {
    let numbers: Vec<String> = history.iter().map(|v| v.version.to_string()).collect();
    numbers.join(", ")
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

    fn record(entry: Option<&str>, history: Option<&str>) -> FunctionRecord {
        FunctionRecord {
            entry: entry.map(str::to_owned),
            history: history.map(str::to_owned),
        }
    }

    #[test]
    fn an_entry_from_before_versions_is_version_one_and_its_own_history() {
        let legacy = r#"{"name":"f","app":"f","digest":"d","size":1,"deployed_at":2}"#;
        let (current, history) = read_versions("f", &record(Some(legacy), None)).ok().unzip();
        assert_eq!(current.flatten().map(|c| c.version), Some(1));
        let history = history.unwrap_or_default();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].digest, "d");
    }

    #[test]
    fn history_reads_newest_first_and_garbage_is_unreadable() {
        let entry = |v: u64| {
            format!(
                r#"{{"name":"f","app":"f","digest":"d{v}","size":1,"deployed_at":2,"version":{v}}}"#
            )
        };
        let history = format!("[{},{},{}]", entry(1), entry(3), entry(2));
        let versions = read_versions("f", &record(Some(&entry(2)), Some(&history)));
        let numbers: Vec<u64> = versions
            .map(|(_, h)| h.iter().map(|v| v.version).collect())
            .unwrap_or_default();
        assert_eq!(numbers, [3, 2, 1]);
        assert!(matches!(
            read_versions("f", &record(Some("{"), None)),
            Err(VersionError::Unreadable { .. })
        ));
    }

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

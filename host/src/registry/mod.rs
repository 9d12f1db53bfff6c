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
//!
//! # Layout
//! - this file: the [`Registry`]'s state and construction, and its settings ([`CompileSettings`],
//!   the defaults, [`REFRESH_INTERVAL`]).
//! - `entries.rs`: [`FunctionEntry`], [`FunctionLimits`], the name rule, reading entries and
//!   versions from the backend ([`VersionError`]).
//! - `deploy.rs`: deploy, rollback and delete ([`DeployError`]), with the claims and leases that
//!   keep bytes safe from collection, and collecting unused bytes.
//! - `compile.rs`: bounded compiles, the per-digest cells, the disk cache, background precompiles.
//! - `resolve.rs`: the hot path: the snapshot, its refresh, [`Registry::resolve`] ([`Ready`],
//!   [`ResolveError`]).

mod compile;
mod deploy;
mod entries;
mod resolve;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::compile_cache::CompileCache;
use crate::engine::Runtime;
use compile::CompiledCell;
pub use deploy::DeployError;
pub use entries::{FunctionEntry, FunctionLimits, VersionError, is_valid_name};
use resolve::Snapshot;
pub use resolve::{Ready, ResolveError};

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

/// How often a host checks the registry version. A deploy, redeploy or delete through any host
/// is served by every host within this interval (the contract is one second).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

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
}

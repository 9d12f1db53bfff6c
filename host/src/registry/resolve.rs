//! The hot path: this host's snapshot of what is deployed, refreshed whenever the registry
//! version moves, and [`Registry::resolve`], which turns a name into a [`Ready`] function.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::entries::FunctionEntry;
use super::{REFRESH_INTERVAL, Registry};
use crate::backend::BackendError;
use crate::engine::Compiled;

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

pub(super) struct Snapshot {
    pub(super) version: u64,
    /// Entries behind `Arc`s: each request takes one without copying its strings.
    pub(super) functions: BTreeMap<String, Arc<FunctionEntry>>,
    /// Names looked up in the backend and found missing at this version. A flood of requests
    /// for an undeployed name then costs one backend lookup, not one per request; a new version
    /// (any deploy or delete, anywhere) brings a fresh snapshot with no misses.
    pub(super) misses: HashSet<String>,
}

/// Most missing names remembered per snapshot; past it the set starts over.
const MAX_REMEMBERED_MISSES: usize = 10_000;

impl Registry {
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
            // Boxed: the cold path's future would otherwise sit inside every request's.
            None => match Box::pin(self.get(name)).await? {
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

    pub(super) fn read_snapshot(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        // The snapshot is replaced whole, so a poisoned lock still holds a consistent value.
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }
}

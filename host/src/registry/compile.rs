//! Compiling on this host: one compile per digest however many ask at once, in a bounded number
//! of slots and bounded in time, through the disk cache; and compiling in the background every
//! digest the snapshot names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::Registry;
use super::deploy::DeployError;
use super::entries::FunctionEntry;
use super::resolve::ResolveError;
use crate::compile_cache::CompileCache;
use crate::engine::{Compiled, Runtime, ValidationError};

/// The outcome of compiling one digest on this host. A compile error is kept too: the bytes
/// behind a digest never change, so neither does the answer, and a broken function must not cost
/// a compilation per request. Failures to fetch the bytes are not kept (they may be transient).
pub(super) type CompiledCell = OnceCell<Result<Arc<Compiled>, String>>;

impl Registry {
    /// Compiles `bytes` (whose digest is `digest`) on a blocking thread: from this host's disk
    /// cache when it has the machine code, else by compiling and then caching it. Waits at most
    /// the compile timeout for a slot (then [`DeployError::Busy`]) and for the compile itself
    /// (then [`ValidationError::CompileTimeout`]).
    pub(super) async fn compile(
        &self,
        digest: &str,
        bytes: Bytes,
    ) -> Result<Arc<Compiled>, DeployError> {
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

    /// The compiled component behind `entry`, compiling it (once per digest, however many ask
    /// at once) if this host has not yet. A compile error is kept; a failure to fetch the bytes
    /// is not (it may be transient).
    pub(super) async fn compiled(
        &self,
        entry: &FunctionEntry,
    ) -> Result<Result<Arc<Compiled>, String>, ResolveError> {
        let cell = self.cell(&entry.digest);
        let broken = |reason: String| ResolveError::Broken {
            name: entry.name.clone(),
            reason,
        };
        let compiled = cell
            // Boxed, as the miss path in `resolve`: a fetch and a compile are large futures.
            .get_or_try_init(|| Box::pin(async {
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
            }))
            .await?;
        Ok(compiled.clone())
    }

    /// Compiles, in the background, every digest of the current snapshot this host has not
    /// compiled yet, so a function deployed through another host is ready here before its
    /// first request. At most
    /// [`CompileSettings::max_concurrent`](super::CompileSettings::max_concurrent) run at once,
    /// like every compile.
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

    pub(super) fn lock_compiled(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CompiledCell>>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn cell(&self, digest: &str) -> Arc<CompiledCell> {
        let mut compiled = self.lock_compiled();
        // Looked up first so the hot path does not allocate a key for a digest already cached.
        if let Some(cell) = compiled.get(digest) {
            return cell.clone();
        }
        compiled.entry(digest.to_owned()).or_default().clone()
    }
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

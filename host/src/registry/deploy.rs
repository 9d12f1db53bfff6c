//! Changes to what is deployed: a deploy (claiming the bytes, storing them, committing the new
//! version), a rollback, a delete, and collecting the bytes that no kept version uses.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::Registry;
use super::entries::{FunctionEntry, FunctionLimits, VersionError, read_versions};
use crate::backend::{BackendError, Claim, FunctionRecord};
use crate::engine::ValidationError;

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

impl Registry {
    /// Validates, compiles and stores a component whose SHA-256 is `digest` (computed while
    /// the upload streamed in), then makes it `name`'s newest version and points `name` at it;
    /// keeps the newest [`DEFAULT_KEEP_VERSIONS`](super::DEFAULT_KEEP_VERSIONS) (or
    /// `--keep-versions`) and deletes bytes no version needs any more. `by` labels who deployed
    /// it.
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

    /// Points `name` back at kept version `to` (default: the newest version older than the
    /// current one) in one atomic step, like a deploy: every host serves it within
    /// [`REFRESH_INTERVAL`](super::REFRESH_INTERVAL), and requests already running finish on
    /// the version they started with. Rolling back to the current version changes nothing.
    /// Returns the entry now current.
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

    /// Removes `name` with all its versions and its failure list, and deletes bytes nothing
    /// else uses. Returns whether it was deployed.
    pub async fn delete(&self, name: &str) -> Result<bool, BackendError> {
        let existed = self.backend.delete_function(name).await?;
        if existed {
            self.collect_garbage().await;
        }
        self.refresh().await.ok();
        Ok(existed)
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

/// "3, 2, 1": the kept version numbers, for messages.
fn kept_list(history: &[FunctionEntry]) -> String {
    let numbers: Vec<String> = history.iter().map(|v| v.version.to_string()).collect();
    numbers.join(", ")
}

//! What hosts share besides guests' keys, as the Redis backend keeps it: component bytes and
//! their claims and collection, the deployed functions and their versions, host heartbeats, and
//! each function's failures.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::MemoryBackend;
use crate::backend::{BackendError, Claim, FunctionRecord};

/// The `digest` field of a registry JSON entry.
fn digest_of(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["digest"].as_str().map(str::to_owned)
}

/// Collection stops at unreadable registry JSON rather than risk deleting bytes a version needs.
fn unreadable() -> BackendError {
    BackendError::Unavailable("unreadable registry entry; collecting nothing".into())
}

impl MemoryBackend {
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.lock()
            .components
            .insert(digest.to_owned(), Arc::new(bytes.to_vec()));
        Ok(())
    }

    pub async fn get_component(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .lock()
            .components
            .get(digest)
            .map(|b| b.as_ref().clone()))
    }

    pub async fn claim_component(
        &self,
        claim_id: &str,
        digest: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, BackendError> {
        self.lock().claims.insert(
            claim_id.to_owned(),
            (now_ms.saturating_add(lease_ms), digest.to_owned()),
        );
        Ok(Claim::Held)
    }

    pub async fn release_claim(&self, claim_id: &str) -> Result<(), BackendError> {
        self.lock().claims.remove(claim_id);
        Ok(())
    }

    /// The same rule as Redis' collector, in one step under the lock.
    pub async fn collect_components(
        &self,
        now_ms: u64,
        _delete_lease_ms: u64,
    ) -> Result<Vec<String>, BackendError> {
        let mut state = self.lock();
        state.claims.retain(|_, (expiry, _)| *expiry > now_ms);
        let mut keep: HashSet<String> = state
            .claims
            .values()
            .map(|(_, digest)| digest.clone())
            .collect();
        for json in state.functions.values() {
            keep.insert(digest_of(json).ok_or_else(unreadable)?);
        }
        for json in state.history.values() {
            let versions: Vec<serde_json::Value> =
                serde_json::from_str(json).map_err(|_| unreadable())?;
            for version in versions {
                let digest = version["digest"].as_str().ok_or_else(unreadable)?;
                keep.insert(digest.to_owned());
            }
        }
        let doomed: Vec<String> = state
            .components
            .keys()
            .filter(|digest| !keep.contains(*digest))
            .cloned()
            .collect();
        for digest in &doomed {
            state.components.remove(digest);
        }
        Ok(doomed)
    }

    pub async fn delete_function(&self, name: &str) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let existed = state.functions.remove(name).is_some();
        state.history.remove(name);
        state.failures.remove(name);
        state.functions_version += 1;
        Ok(existed)
    }

    pub async fn get_record(&self, name: &str) -> Result<FunctionRecord, BackendError> {
        let state = self.lock();
        Ok(FunctionRecord {
            entry: state.functions.get(name).cloned(),
            history: state.history.get(name).cloned(),
        })
    }

    pub async fn swap_function(
        &self,
        name: &str,
        expected: &FunctionRecord,
        new: &FunctionRecord,
        claim_id: Option<&str>,
        // The digests' bytes are already in `components`, which is the stored set here.
        _digests: &[&str],
    ) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let current = FunctionRecord {
            entry: state.functions.get(name).cloned(),
            history: state.history.get(name).cloned(),
        };
        if current != *expected {
            return Ok(false);
        }
        match &new.entry {
            Some(entry) => state.functions.insert(name.to_owned(), entry.clone()),
            None => state.functions.remove(name),
        };
        match &new.history {
            Some(history) => state.history.insert(name.to_owned(), history.clone()),
            None => state.history.remove(name),
        };
        if let Some(claim_id) = claim_id {
            state.claims.remove(claim_id);
        }
        state.functions_version += 1;
        Ok(true)
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<String>, BackendError> {
        Ok(self.lock().functions.get(name).cloned())
    }

    pub async fn list_functions(&self) -> Result<(u64, Vec<(String, String)>), BackendError> {
        let state = self.lock();
        let entries = state
            .functions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((state.functions_version, entries))
    }

    pub async fn functions_version(&self) -> Result<u64, BackendError> {
        Ok(self.lock().functions_version)
    }

    pub async fn put_host(
        &self,
        id: &str,
        heartbeat: &str,
        _now_ms: u64,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.hosts.retain(|_, (_, expires_at)| *expires_at > now);
        let expires_at = now + Duration::from_secs(u64::from(ttl_seconds.max(1)));
        state
            .hosts
            .insert(id.to_owned(), (heartbeat.to_owned(), expires_at));
        Ok(())
    }

    pub async fn list_hosts(&self, limit: usize) -> Result<Vec<String>, BackendError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .hosts
            .values()
            .filter(|(_, expires_at)| *expires_at > now)
            .take(limit)
            .map(|(heartbeat, _)| heartbeat.clone())
            .collect())
    }

    pub async fn remove_host(&self, id: &str) -> Result<(), BackendError> {
        self.lock().hosts.remove(id);
        Ok(())
    }

    pub async fn push_failure(
        &self,
        function: &str,
        record: &str,
        keep: usize,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut state = self.lock();
        state
            .failures
            .retain(|_, (_, expires_at)| *expires_at > now);
        let expires_at = now + Duration::from_secs(u64::from(ttl_seconds.max(1)));
        let (records, expiry) = state
            .failures
            .entry(function.to_owned())
            .or_insert_with(|| (VecDeque::new(), expires_at));
        records.push_front(record.to_owned());
        records.truncate(keep.max(1));
        *expiry = expires_at;
        Ok(())
    }

    pub async fn failures(
        &self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .failures
            .get(function)
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(records, _)| records.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collection_deletes_only_bytes_no_entry_version_or_live_claim_uses() {
        let m = MemoryBackend::new();
        for digest in ["current", "kept", "claimed", "orphan"] {
            m.put_component(digest, b"bytes").await.ok();
        }
        let record = FunctionRecord {
            entry: Some(r#"{"digest":"current"}"#.into()),
            history: Some(r#"[{"digest":"current"},{"digest":"kept"}]"#.into()),
        };
        let swapped = m
            .swap_function("f", &FunctionRecord::default(), &record, None, &[])
            .await;
        assert!(swapped.is_ok_and(|s| s));
        m.claim_component("c", "claimed", 1_000, 500).await.ok();
        let deleted = m.collect_components(1_000, 0).await.ok();
        assert_eq!(deleted, Some(vec!["orphan".to_owned()]));
        // Once its claim expires, the claimed digest goes too.
        let deleted = m.collect_components(1_500, 0).await.ok();
        assert_eq!(deleted, Some(vec!["claimed".to_owned()]));
        let mut left: Vec<String> = m.lock().components.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["current", "kept"]);
    }

    #[tokio::test]
    async fn a_swap_against_a_stale_record_changes_nothing() {
        let m = MemoryBackend::new();
        let first = FunctionRecord {
            entry: Some("1".into()),
            history: Some("[1]".into()),
        };
        let empty = FunctionRecord::default();
        assert!(
            m.swap_function("f", &empty, &first, None, &[])
                .await
                .is_ok_and(|s| s)
        );
        assert!(
            m.swap_function("f", &empty, &first, None, &[])
                .await
                .is_ok_and(|s| !s)
        );
        assert_eq!(m.get_record("f").await.ok(), Some(first));
        assert_eq!(m.functions_version().await.ok(), Some(1));
    }

    #[tokio::test]
    async fn deleting_a_function_forgets_its_failures() {
        let m = MemoryBackend::new();
        let record = FunctionRecord {
            entry: Some(r#"{"digest":"d"}"#.into()),
            history: Some(r#"[{"digest":"d"}]"#.into()),
        };
        let swapped = m
            .swap_function("f", &FunctionRecord::default(), &record, None, &[])
            .await;
        assert!(swapped.is_ok_and(|s| s));
        m.push_failure("f", "{}", 50, 60).await.ok();
        assert_eq!(m.failures("f", 50).await.ok().map(|f| f.len()), Some(1));
        assert!(m.delete_function("f").await.is_ok_and(|existed| existed));
        assert_eq!(m.failures("f", 50).await.ok(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn a_host_is_listed_until_it_is_removed() {
        let m = MemoryBackend::new();
        m.put_host("a", "{}", 0, 30).await.ok();
        m.put_host("b", "{}", 0, 30).await.ok();
        assert_eq!(m.list_hosts(10).await.ok().map(|h| h.len()), Some(2));
        assert_eq!(m.list_hosts(1).await.ok().map(|h| h.len()), Some(1));
        m.remove_host("a").await.ok();
        assert_eq!(m.list_hosts(10).await.ok().map(|h| h.len()), Some(1));
    }
}

//! The embedded memory backend: a development store for a single host.
//!
//! Nothing here is shared with other hosts or survives a restart; `goldfish serve --store memory`
//! says so at start. It honours the same contract as Redis (expiry, atomic compare-and-swap,
//! prefix listing), so a function behaves the same on both.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{BackendError, Claim, FunctionRecord, KeyPage};

#[derive(Clone, Default)]
pub struct MemoryBackend {
    /// A `std::sync::Mutex`, not a Tokio one: no `.await` happens while it is held, and every
    /// critical section is a few map operations.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Full key → value. A `BTreeMap` so that prefix listing is a range scan.
    kv: BTreeMap<String, Stored>,
    functions: BTreeMap<String, String>,
    /// Function name → JSON version history, as [`super::keys::HISTORY`] holds it in Redis.
    history: BTreeMap<String, String>,
    functions_version: u64,
    components: HashMap<String, Arc<Vec<u8>>>,
    /// Claim id → (expiry ms, digest), as [`super::keys::CLAIMS`]. Collection here happens
    /// under the lock in one step, so there is no deletion in progress for a deploy to wait on.
    claims: HashMap<String, (u64, String)>,
    /// Host id → its heartbeat JSON and when it expires, as [`super::keys::host`] in Redis.
    /// With this backend only the host itself is ever here.
    hosts: BTreeMap<String, (String, Instant)>,
    /// Function name → its failure records, newest first, and when the list expires, as
    /// [`super::keys::failures`] in Redis.
    failures: HashMap<String, (VecDeque<String>, Instant)>,
}

struct Stored {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl State {
    /// The live value at `key`, dropping it first if it has expired.
    fn live(&mut self, key: &str) -> Option<&mut Stored> {
        let expired = self
            .kv
            .get(key)
            .is_some_and(|s| s.expires_at.is_some_and(|at| at <= Instant::now()));
        if expired {
            self.kv.remove(key);
        }
        self.kv.get_mut(key)
    }
}

/// The `digest` field of a registry JSON entry.
fn digest_of(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["digest"].as_str().map(str::to_owned)
}

/// Collection stops at unreadable registry JSON rather than risk deleting bytes a version needs.
fn unreadable() -> BackendError {
    BackendError::Unavailable("unreadable registry entry; collecting nothing".into())
}

fn expiry(ttl_seconds: Option<u32>) -> Option<Instant> {
    ttl_seconds.map(|ttl| Instant::now() + Duration::from_secs(u64::from(ttl.max(1))))
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a map half-updated (each section is one
        // map operation), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().live(key).map(|s| s.value.clone()))
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<(), BackendError> {
        let stored = Stored {
            value: value.to_vec(),
            expires_at: expiry(ttl_seconds),
        };
        self.lock().kv.insert(key.to_owned(), stored);
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let existed = state.live(key).is_some();
        state.kv.remove(key);
        Ok(existed)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.lock().live(key).is_some())
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, BackendError> {
        let mut state = self.lock();
        match state.live(key) {
            Some(stored) => {
                let current: i64 = std::str::from_utf8(&stored.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(BackendError::NotAnInteger)?;
                let next = current
                    .checked_add(delta)
                    .ok_or(BackendError::NotAnInteger)?;
                stored.value = next.to_string().into_bytes();
                Ok(next)
            }
            None => {
                let stored = Stored {
                    value: delta.to_string().into_bytes(),
                    expires_at: None,
                };
                state.kv.insert(key.to_owned(), stored);
                Ok(delta)
            }
        }
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let current = state.live(key).map(|s| s.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        let stored = Stored {
            value: new.to_vec(),
            expires_at: expiry(ttl_seconds),
        };
        state.kv.insert(key.to_owned(), stored);
        Ok(true)
    }

    /// Keys in order; the cursor is the last key returned.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, BackendError> {
        let full_prefix = format!("{namespace}{prefix}");
        let start = match cursor {
            Some(after) if after.starts_with(prefix) => {
                Bound::Excluded(format!("{namespace}{after}"))
            }
            Some(_) => return Err(BackendError::InvalidCursor),
            None => Bound::Included(full_prefix.clone()),
        };
        let now = Instant::now();
        let state = self.lock();
        let mut keys = Vec::new();
        let mut more = false;
        let live = state
            .kv
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&full_prefix))
            .filter(|(_, s)| s.expires_at.is_none_or(|at| at > now));
        for (key, _) in live {
            if keys.len() == limit as usize {
                more = true;
                break;
            }
            keys.push(key[namespace.len()..].to_owned());
        }
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

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
    async fn compare_and_swap_writes_only_on_match() {
        let m = MemoryBackend::new();
        assert!(
            m.compare_and_swap("k", None, b"a", None)
                .await
                .is_ok_and(|w| w)
        );
        assert!(
            m.compare_and_swap("k", None, b"b", None)
                .await
                .is_ok_and(|w| !w)
        );
        assert!(
            m.compare_and_swap("k", Some(b"x"), b"b", None)
                .await
                .is_ok_and(|w| !w)
        );
        assert!(
            m.compare_and_swap("k", Some(b"a"), b"b", None)
                .await
                .is_ok_and(|w| w)
        );
        assert_eq!(m.get("k").await.ok().flatten(), Some(b"b".to_vec()));
    }

    #[tokio::test]
    async fn increment_counts_from_zero_and_refuses_text() {
        let m = MemoryBackend::new();
        assert_eq!(m.increment("n", 5).await.ok(), Some(5));
        assert_eq!(m.increment("n", -2).await.ok(), Some(3));
        m.set("t", b"pizza", None).await.ok();
        assert!(matches!(
            m.increment("t", 1).await,
            Err(BackendError::NotAnInteger)
        ));
    }

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
    async fn a_host_is_listed_until_it_is_removed() {
        let m = MemoryBackend::new();
        m.put_host("a", "{}", 0, 30).await.ok();
        m.put_host("b", "{}", 0, 30).await.ok();
        assert_eq!(m.list_hosts(10).await.ok().map(|h| h.len()), Some(2));
        assert_eq!(m.list_hosts(1).await.ok().map(|h| h.len()), Some(1));
        m.remove_host("a").await.ok();
        assert_eq!(m.list_hosts(10).await.ok().map(|h| h.len()), Some(1));
    }

    #[tokio::test]
    async fn listing_pages_through_a_prefix_in_order() {
        let m = MemoryBackend::new();
        for k in ["ns:a1", "ns:a2", "ns:a3", "ns:b1", "other:a1"] {
            m.set(k, b"v", None).await.ok();
        }
        let first = m.list("ns:", "a", None, 2).await.ok();
        assert_eq!(
            first,
            Some(KeyPage {
                keys: vec!["a1".into(), "a2".into()],
                cursor: Some("a2".into())
            })
        );
        let second = m.list("ns:", "a", Some("a2"), 2).await.ok();
        assert_eq!(
            second,
            Some(KeyPage {
                keys: vec!["a3".into()],
                cursor: None
            })
        );
    }
}

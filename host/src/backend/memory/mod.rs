//! The embedded memory backend: a development store for a single host.
//!
//! Nothing here is shared with other hosts or survives a restart; `goldfish serve --store memory`
//! says so at start. It honours the same contract as Redis (expiry, atomic compare-and-swap,
//! prefix listing), so a function behaves the same on both.
//!
//! Split by responsibility like [`super::redis`]: this file holds the one lock and what it
//! guards; [`kv`] guests' keys and listing; [`registry`] components, deployed functions, host
//! heartbeats and failure lists.

mod kv;
mod registry;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::BackendError;

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
}

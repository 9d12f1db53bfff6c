//! Test doubles for [`pizza::Kv`]: an in-memory store, a store that crashes after a number of
//! calls, and a scheduler that interleaves several clients' calls in a seeded random order.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use pizza::cart::{Cart, NewLine};
use pizza::order::Order;
use pizza::{Kv, KvError};

/// A pause that does not sleep.
pub fn no_pause(_attempts: u32) {}

/// A validated line of `body`, e.g. `{"item":"coke"}`.
pub fn new_line(body: &str) -> NewLine {
    NewLine::parse(body.as_bytes()).expect("a valid line")
}

/// One stored value and the expiry it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub ttl_seconds: Option<u32>,
}

/// A [`Kv`] in a `HashMap`; expiry is recorded, never applied. Counts the reads made of it.
#[derive(Debug, Default)]
pub struct MemoryKv {
    entries: Mutex<HashMap<String, Entry>>,
    reads: AtomicU32,
}

impl MemoryKv {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panicking test thread poisons the lock; the other threads' view is still consistent
        // because every operation completes under the lock.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many `get`s it has answered.
    pub fn reads(&self) -> u32 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn entry(&self, key: &str) -> Option<Entry> {
        self.entries().get(key).cloned()
    }

    /// The decoded cart stored under `cart:<session>`, if any.
    pub fn cart(&self, session: &str) -> Option<Cart> {
        self.entry(&format!("cart:{session}"))
            .map(|entry| serde_json::from_slice(&entry.value).unwrap())
    }

    /// Every stored order, sorted by id.
    pub fn orders(&self) -> Vec<Order> {
        let mut orders: Vec<Order> = self
            .entries()
            .iter()
            .filter(|(key, _)| key.starts_with("order:"))
            .map(|(_, entry)| serde_json::from_slice(&entry.value).unwrap())
            .collect();
        orders.sort_by(|a, b| a.id.cmp(&b.id));
        orders
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.entries().get(key).map(|entry| entry.value.clone()))
    }

    fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        self.entries().insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                ttl_seconds,
            },
        );
        Ok(())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, KvError> {
        let mut entries = self.entries();
        if entries.get(key).map(|entry| entry.value.as_slice()) != expected {
            return Ok(false);
        }
        entries.insert(
            key.to_owned(),
            Entry {
                value: new.to_vec(),
                ttl_seconds,
            },
        );
        Ok(true)
    }
}

/// How a [`Crashing`] store's host dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Call number `n` (from 0) never reaches the store.
    Before(usize),
    /// Call number `n` takes effect but its answer is lost.
    After(usize),
}

/// A [`MemoryKv`] seen from a host that dies at a given call: that call and every later one fail
/// as `unavailable`, so the code under test stops where a crash would stop it.
pub struct Crashing<'a> {
    pub store: &'a MemoryKv,
    pub crash: Crash,
    calls: Mutex<usize>,
}

impl<'a> Crashing<'a> {
    pub fn new(store: &'a MemoryKv, crash: Crash) -> Crashing<'a> {
        Crashing {
            store,
            crash,
            calls: Mutex::new(0),
        }
    }

    /// How many calls were made, the failed ones included.
    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }

    fn call<T>(
        &self,
        operation: impl FnOnce(&MemoryKv) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let mut calls = self.calls.lock().unwrap();
        let n = *calls;
        *calls += 1;
        let crashed = || Err(KvError::Unavailable("host crashed".to_owned()));
        match self.crash {
            Crash::Before(at) if n >= at => crashed(),
            Crash::After(at) if n > at => crashed(),
            Crash::After(at) if n == at => {
                let _ = operation(self.store);
                crashed()
            }
            _ => operation(self.store),
        }
    }
}

impl Kv for Crashing<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.call(|store| store.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        self.call(|store| store.set(key, value, ttl_seconds))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, KvError> {
        self.call(|store| store.compare_and_swap(key, expected, new, ttl_seconds))
    }
}

/// Runs clients on threads but lets exactly one of them touch the store at a time, choosing who
/// goes next after every kv call with a seeded random generator: a reproducible interleaving of
/// concurrent requests at kv-call granularity.
pub struct Scheduler {
    state: Mutex<Turns>,
    changed: Condvar,
}

struct Turns {
    /// The client allowed to make the next kv call.
    current: Option<usize>,
    /// Clients that have not finished.
    running: Vec<usize>,
    /// xorshift64 state.
    rng: u64,
}

impl Turns {
    fn pick(&mut self) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.current = match self.running.len() {
            0 => None,
            n => Some(self.running[(self.rng % n as u64) as usize]),
        };
    }
}

impl Scheduler {
    pub fn new(clients: usize, seed: u64) -> Scheduler {
        let mut turns = Turns {
            current: None,
            running: (0..clients).collect(),
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        };
        turns.pick();
        Scheduler {
            state: Mutex::new(turns),
            changed: Condvar::new(),
        }
    }

    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for `client`'s turn, runs `operation`, and hands the turn to a random running client.
    fn step<T>(&self, client: usize, operation: impl FnOnce() -> T) -> T {
        let mut turns = self.turns();
        while turns.current != Some(client) {
            turns = self
                .changed
                .wait(turns)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let result = operation();
        turns.pick();
        self.changed.notify_all();
        result
    }

    /// Marks `client` finished, passing its turn on if it held it.
    pub fn finish(&self, client: usize) {
        let mut turns = self.turns();
        turns.running.retain(|&running| running != client);
        if turns.current == Some(client) || turns.current.is_none() {
            turns.pick();
        }
        self.changed.notify_all();
    }

    /// The store as client `client` sees it.
    pub fn client<'a>(&'a self, store: &'a MemoryKv, client: usize) -> Scheduled<'a> {
        Scheduled {
            scheduler: self,
            store,
            client,
        }
    }
}

/// One client's view of a store shared under a [`Scheduler`].
pub struct Scheduled<'a> {
    scheduler: &'a Scheduler,
    store: &'a MemoryKv,
    client: usize,
}

impl Drop for Scheduled<'_> {
    /// Finishing on drop means a panicking client cannot leave the others waiting forever.
    fn drop(&mut self) {
        self.scheduler.finish(self.client);
    }
}

impl Kv for Scheduled<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.scheduler.step(self.client, || self.store.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        self.scheduler
            .step(self.client, || self.store.set(key, value, ttl_seconds))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, KvError> {
        self.scheduler.step(self.client, || {
            self.store.compare_and_swap(key, expected, new, ttl_seconds)
        })
    }
}

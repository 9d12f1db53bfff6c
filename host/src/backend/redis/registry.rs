//! What hosts share besides guests' keys: component bytes and their claims and collection,
//! the deployed functions and their versions, host heartbeats, and each function's failures.

use redis::AsyncCommands;

use super::*;
use crate::backend::{Claim, FunctionRecord};

impl RedisBackend {
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.conn()
            .set::<_, _, ()>(keys::component(digest), bytes)
            .await
            .map_err(unavailable)
    }

    pub async fn get_component(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.conn()
            .get(keys::component(digest))
            .await
            .map_err(unavailable)
    }

    pub async fn claim_component(
        &self,
        claim_id: &str,
        digest: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, BackendError> {
        let wait: u64 = self
            .scripts
            .claim
            .key(keys::CLAIMS)
            .key(keys::DELETING)
            .key(keys::COMPONENTS)
            .arg(claim_id)
            .arg(digest)
            .arg(now_ms)
            .arg(lease_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(if wait == 0 {
            Claim::Held
        } else {
            Claim::Wait(wait)
        })
    }

    pub async fn release_claim(&self, claim_id: &str) -> Result<(), BackendError> {
        self.conn()
            .hdel::<_, _, ()>(keys::CLAIMS, claim_id)
            .await
            .map_err(unavailable)
    }

    /// Marks the garbage in one atomic step on the registry's slot, then deletes each digest's
    /// bytes (wherever their slot lives) and only then forgets the digest: a collector that
    /// stops half-way leaves digests the next collection finds again.
    pub async fn collect_components(
        &self,
        now_ms: u64,
        delete_lease_ms: u64,
    ) -> Result<Vec<String>, BackendError> {
        let doomed: Vec<(String, String)> = self
            .scripts
            .collect
            .key(keys::COMPONENTS)
            .key(keys::FUNCTIONS)
            .key(keys::HISTORY)
            .key(keys::CLAIMS)
            .key(keys::DELETING)
            .arg(now_ms)
            .arg(delete_lease_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut deleted = Vec::with_capacity(doomed.len());
        for (digest, mark) in doomed {
            // UNLINK: a component can be tens of MB; Redis frees it off its main thread.
            let _: u64 = redis::cmd("UNLINK")
                .arg(keys::component(&digest))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let _: i64 = self
                .scripts
                .forget
                .key(keys::COMPONENTS)
                .key(keys::DELETING)
                .arg(&digest)
                .arg(&mark)
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            deleted.push(digest);
        }
        Ok(deleted)
    }

    /// The failure list goes first, in a command of its own: its key carries no hash tag, so on
    /// Redis Cluster it cannot join the registry's MULTI. Should that MULTI then fail, the
    /// function is still deployed and deleting it again finishes the job.
    pub async fn delete_function(&self, name: &str) -> Result<bool, BackendError> {
        let _: u64 = self
            .conn()
            .del(keys::failures(name))
            .await
            .map_err(unavailable)?;
        let (removed,): (u64,) = redis::pipe()
            .atomic()
            .hdel(keys::FUNCTIONS, name)
            .hdel(keys::HISTORY, name)
            .ignore()
            .incr(keys::FUNCTIONS_VERSION, 1)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    pub async fn get_record(&self, name: &str) -> Result<FunctionRecord, BackendError> {
        let (entry, history): (Option<String>, Option<String>) = redis::pipe()
            .atomic()
            .hget(keys::FUNCTIONS, name)
            .hget(keys::HISTORY, name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(FunctionRecord { entry, history })
    }

    pub async fn swap_function(
        &self,
        name: &str,
        expected: &FunctionRecord,
        new: &FunctionRecord,
        claim_id: Option<&str>,
        digests: &[&str],
    ) -> Result<bool, BackendError> {
        let field = |value: &Option<String>| value.clone().unwrap_or_default();
        let mut invocation = self.scripts.swap_function.prepare_invoke();
        invocation
            .key(keys::FUNCTIONS)
            .key(keys::HISTORY)
            .key(keys::FUNCTIONS_VERSION)
            .key(keys::COMPONENTS)
            .key(keys::CLAIMS)
            .arg(name)
            .arg(field(&expected.entry))
            .arg(field(&expected.history))
            .arg(field(&new.entry))
            .arg(field(&new.history))
            .arg(claim_id.unwrap_or_default());
        for digest in digests {
            invocation.arg(*digest);
        }
        let swapped: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(swapped == 1)
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<String>, BackendError> {
        self.conn()
            .hget(keys::FUNCTIONS, name)
            .await
            .map_err(unavailable)
    }

    pub async fn list_functions(&self) -> Result<(u64, Vec<(String, String)>), BackendError> {
        let (version, entries): (Option<u64>, Vec<(String, String)>) = redis::pipe()
            .atomic()
            .get(keys::FUNCTIONS_VERSION)
            .hgetall(keys::FUNCTIONS)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((version.unwrap_or(0), entries))
    }

    pub async fn functions_version(&self) -> Result<u64, BackendError> {
        let version: Option<u64> = self
            .conn()
            .get(keys::FUNCTIONS_VERSION)
            .await
            .map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }

    pub async fn put_host(
        &self,
        id: &str,
        heartbeat: &str,
        now_ms: u64,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        let ttl = u64::from(ttl_seconds.max(1));
        redis::pipe()
            .atomic()
            .set_ex(keys::host(id), heartbeat, ttl)
            .ignore()
            .zadd(keys::HOSTS, id, now_ms)
            .ignore()
            .zrembyscore(keys::HOSTS, "-inf", now_ms.saturating_sub(ttl * 1000))
            .ignore()
            .expire(keys::HOSTS, ttl as i64)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// The index first, then one MGET: every host key shares the index's slot, so both go to
    /// one node on a cluster. An id whose heartbeat expired in between is skipped.
    pub async fn list_hosts(&self, limit: usize) -> Result<Vec<String>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let ids: Vec<String> = conn
            .zrange(keys::HOSTS, 0, limit as isize - 1)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let host_keys: Vec<String> = ids.iter().map(|id| keys::host(id)).collect();
        let heartbeats: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&host_keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(heartbeats.into_iter().flatten().collect())
    }

    pub async fn remove_host(&self, id: &str) -> Result<(), BackendError> {
        redis::pipe()
            .atomic()
            .del(keys::host(id))
            .ignore()
            .zrem(keys::HOSTS, id)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub async fn push_failure(
        &self,
        function: &str,
        record: &str,
        keep: usize,
        ttl_seconds: u32,
    ) -> Result<(), BackendError> {
        let key = keys::failures(function);
        redis::pipe()
            .atomic()
            .lpush(&key, record)
            .ignore()
            .ltrim(&key, 0, keep.max(1) as isize - 1)
            .ignore()
            .expire(&key, i64::from(ttl_seconds.max(1)))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub async fn failures(
        &self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.conn()
            .lrange(keys::failures(function), 0, limit as isize - 1)
            .await
            .map_err(unavailable)
    }
}

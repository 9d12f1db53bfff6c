//! `goldfish:function/kv`: the app's default keyspace, with TTLs, compare-and-swap and listing.

use crate::bindings::goldfish::goldfish::function::kv::{Error, Host, KeyPage};
use crate::engine::HostState;
use crate::kv::KvError;

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::InvalidKey(reason) => Error::InvalidKey(reason),
            KvError::ValueTooLarge(limit) => Error::ValueTooLarge(limit),
            KvError::NotAnInteger => Error::NotAnInteger,
            KvError::InvalidCursor => Error::InvalidCursor,
            KvError::Unavailable(reason) => Error::Unavailable(reason),
            // 0.1.0 has no case for a refusal: `unavailable` says what happened (its doc covers
            // it: the call had no effect, retrying in the same request will not help).
            KvError::Refused(reason) | KvError::BudgetExceeded(reason) => {
                Error::Unavailable(reason)
            }
        }
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let kv = &self.kv;
        Ok(kv.get(kv.default_bucket(), &key).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), Error> {
        let kv = &self.kv;
        Ok(kv
            .set(kv.default_bucket(), &key, &value, ttl_seconds)
            .await?)
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        let kv = &self.kv;
        Ok(kv.delete(kv.default_bucket(), &key).await?)
    }

    async fn exists(&mut self, key: String) -> Result<bool, Error> {
        let kv = &self.kv;
        Ok(kv.exists(kv.default_bucket(), &key).await?)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        let kv = &self.kv;
        Ok(kv.increment(kv.default_bucket(), &key, delta).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<bool, Error> {
        let kv = &self.kv;
        Ok(kv
            .compare_and_swap(
                kv.default_bucket(),
                &key,
                expected.as_deref(),
                &new,
                ttl_seconds,
            )
            .await?)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        let kv = &self.kv;
        let page = kv
            .list(kv.default_bucket(), &prefix, cursor.as_deref(), limit)
            .await?;
        Ok(KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }
}

impl crate::bindings::goldfish::goldfish::function::types::Host for HostState {}

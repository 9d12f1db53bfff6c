//! `wasi:keyvalue@0.2.0-draft2` (what Spin serves): buckets, `increment`, compare-and-swap
//! through `cas` handles, batches. A lost compare-and-swap race comes back as `cas-failed` with
//! a fresh handle, as the WIT says, so the guest can read `current` again and retry.

use wasmtime::component::Resource;

use crate::bindings::keyvalue_draft2::wasi::keyvalue::{atomics, batch, store};
use crate::engine::HostState;
use crate::kv::{Bucket, Cas, KvError, MAX_LIST_LIMIT};

type Result<T, E = store::Error> = wasmtime::Result<std::result::Result<T, E>>;

fn other(e: KvError) -> store::Error {
    store::Error::Other(e.to_string())
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>> {
        match self.kv.open(&identifier) {
            Some(bucket) => Ok(Ok(self.table.push(bucket)?)),
            None => Ok(Err(store::Error::NoSuchStore)),
        }
    }
}

impl store::HostBucket for HostState {
    crate::kv::bucket_basics!();

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse> {
        let bucket = self.bucket(&bucket)?;
        Ok(self
            .kv
            .list(&bucket, "", cursor.as_deref(), MAX_LIST_LIMIT)
            .await
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(other))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64> {
        let bucket = self.bucket(&bucket)?;
        Ok(self.kv.increment(&bucket, &key, delta).await.map_err(other))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let cas = self.table.delete(cas)?;
        let swapped = self
            .kv
            .compare_and_swap(&cas.bucket, &cas.key, cas.current.as_deref(), &value, None)
            .await;
        match swapped {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // Lost the race: hand back a handle on what the key holds now.
                match self.kv.get(&cas.bucket, &cas.key).await {
                    Ok(current) => {
                        let fresh = self.table.push(Cas { current, ..cas })?;
                        Ok(Err(atomics::CasError::CasFailed(fresh)))
                    }
                    Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
                }
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Resource<Cas>> {
        let bucket = self.bucket(&bucket)?;
        let current = match self.kv.get(&bucket, &key).await {
            Ok(current) => current,
            Err(e) => return Ok(Err(other(e))),
        };
        Ok(Ok(self.table.push(Cas {
            bucket,
            key,
            current,
        })?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let bucket = self.bucket(&bucket)?;
        Ok(self.kv.get_many(&bucket, keys).await.map_err(other))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let bucket = self.bucket(&bucket)?;
        Ok(self.kv.set_many(&bucket, key_values).await.map_err(other))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Result<()> {
        let bucket = self.bucket(&bucket)?;
        Ok(self.kv.delete_many(&bucket, keys).await.map_err(other))
    }
}

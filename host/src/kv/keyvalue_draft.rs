//! `wasi:keyvalue@0.2.0-draft` (what wasmCloud and `wasmtime-wasi-keyvalue` serve): buckets,
//! `increment`, batches. Its cursors are `u64`: each is an index into the request's list of
//! backend cursors, so a cursor is valid for the rest of the request (the instance's whole life).

use wasmtime::component::Resource;

use crate::bindings::keyvalue_draft::wasi::keyvalue::{atomics, batch, store};
use crate::engine::HostState;
use crate::kv::{Bucket, KvError, MAX_LIST_LIMIT};

type Result<T> = wasmtime::Result<std::result::Result<T, store::Error>>;

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
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse> {
        let bucket = self.bucket(&bucket)?;
        let backend_cursor = match cursor {
            None => None,
            Some(index) => match self.kv.draft_cursors.get(index as usize) {
                Some(cursor) => Some(cursor.clone()),
                None => return Ok(Err(other(KvError::InvalidCursor))),
            },
        };
        let page = match self
            .kv
            .list(&bucket, "", backend_cursor.as_deref(), MAX_LIST_LIMIT)
            .await
        {
            Ok(page) => page,
            Err(e) => return Ok(Err(other(e))),
        };
        let cursor = page.cursor.map(|next| {
            self.kv.draft_cursors.push(next);
            (self.kv.draft_cursors.len() - 1) as u64
        });
        Ok(Ok(store::KeyResponse {
            keys: page.keys,
            cursor,
        }))
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
        delta: u64,
    ) -> Result<u64> {
        let bucket = self.bucket(&bucket)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(other(KvError::NotAnInteger)));
        };
        Ok(match self.kv.increment(&bucket, &key, delta).await {
            Ok(value) => u64::try_from(value).map_err(|_| {
                store::Error::Other(format!(
                    "the value is {value}, which this interface's u64 cannot carry"
                ))
            }),
            Err(e) => Err(other(e)),
        })
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>> {
        let bucket = self.bucket(&bucket)?;
        let values = self.kv.get_many(&bucket, keys).await.map_err(other);
        // This draft answers a missing key with `none` in place of the pair.
        Ok(values.map(|values| {
            values
                .into_iter()
                .map(|(key, value)| value.map(|v| (key, v)))
                .collect()
        }))
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

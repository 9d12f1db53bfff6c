//! `fermyon:spin/key-value@2.0.0`, what Spin SDK apps import for `Store::open_default()`. Label
//! `default` is the app's own keyspace; any other label answers `access-denied`, as Spin does for
//! a label its manifest does not grant.

use wasmtime::component::Resource;

use crate::bindings::spin_key_value::fermyon::spin::key_value::{Error, Host, HostStore};
use crate::engine::HostState;
use crate::kv::{Bucket, DEFAULT_BUCKET, KvError, MAX_LIST_LIMIT};

/// Most keys `get-keys` returns; it has no cursor, so a larger app gets an error saying so
/// rather than an unbounded answer.
pub const MAX_GET_KEYS: usize = 10_000;

type Result<T> = wasmtime::Result<std::result::Result<T, Error>>;

fn other(e: KvError) -> Error {
    Error::Other(e.to_string())
}

impl Host for HostState {}

impl HostStore for HostState {
    async fn open(&mut self, label: String) -> Result<Resource<Bucket>> {
        if label != DEFAULT_BUCKET {
            return Ok(Err(Error::AccessDenied));
        }
        let bucket = self.kv.default_bucket().clone();
        Ok(Ok(self.table.push(bucket)?))
    }

    async fn get(&mut self, store: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>> {
        let bucket = self.bucket(&store)?;
        Ok(self.kv.get(&bucket, &key).await.map_err(other))
    }

    async fn set(&mut self, store: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<()> {
        let bucket = self.bucket(&store)?;
        Ok(self
            .kv
            .set(&bucket, &key, &value, None)
            .await
            .map_err(other))
    }

    async fn delete(&mut self, store: Resource<Bucket>, key: String) -> Result<()> {
        let bucket = self.bucket(&store)?;
        Ok(self.kv.delete(&bucket, &key).await.map(drop).map_err(other))
    }

    async fn exists(&mut self, store: Resource<Bucket>, key: String) -> Result<bool> {
        let bucket = self.bucket(&store)?;
        Ok(self.kv.exists(&bucket, &key).await.map_err(other))
    }

    async fn get_keys(&mut self, store: Resource<Bucket>) -> Result<Vec<String>> {
        let bucket = self.bucket(&store)?;
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = match self
                .kv
                .list(&bucket, "", cursor.as_deref(), MAX_LIST_LIMIT)
                .await
            {
                Ok(page) => page,
                Err(e) => return Ok(Err(other(e))),
            };
            keys.extend(page.keys);
            if keys.len() > MAX_GET_KEYS {
                return Ok(Err(Error::Other(format!(
                    "the store holds more than {MAX_GET_KEYS} keys; get-keys has no paging, so \
                     use wasi:keyvalue list-keys with cursors"
                ))));
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // A key listed twice (the contract allows repeats) is still one key.
        keys.sort_unstable();
        keys.dedup();
        Ok(Ok(keys))
    }

    async fn drop(&mut self, store: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

//! The batch calls (`get-many`, `set-many`, `delete-many`): each key in turn through the
//! single-key operations, with a bound on how many keys one call may name.

use super::{Bucket, KvError, KvSession};

/// Most keys one batch call (`get-many`, `set-many`, `delete-many`) may name.
pub const MAX_BATCH_KEYS: usize = 1000;

impl KvSession {
    /// The values of `keys`, in order (`None` for a missing key). At most [`MAX_BATCH_KEYS`].
    pub async fn get_many(
        &self,
        bucket: &Bucket,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        check_batch(keys.len())?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(bucket, &key).await?;
            values.push((key, value));
        }
        Ok(values)
    }

    /// Sets every pair, in order, stopping at the first failure. At most [`MAX_BATCH_KEYS`].
    pub async fn set_many(
        &self,
        bucket: &Bucket,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        check_batch(pairs.len())?;
        for (key, value) in pairs {
            self.set(bucket, &key, &value, None).await?;
        }
        Ok(())
    }

    /// Deletes every key, in order, stopping at the first failure. At most [`MAX_BATCH_KEYS`].
    pub async fn delete_many(&self, bucket: &Bucket, keys: Vec<String>) -> Result<(), KvError> {
        check_batch(keys.len())?;
        for key in keys {
            self.delete(bucket, &key).await?;
        }
        Ok(())
    }
}

/// Refuses a batch naming more than [`MAX_BATCH_KEYS`] keys.
fn check_batch(len: usize) -> Result<(), KvError> {
    if len > MAX_BATCH_KEYS {
        return Err(KvError::Refused(format!(
            "a batch call names {len} keys; the limit is {MAX_BATCH_KEYS}: split it"
        )));
    }
    Ok(())
}

//! What one request may do through kv ([`KvBudget`]), charged as each operation is made, and the
//! per-operation metrics.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{KvError, KvSession};
use crate::metrics::{KvOp, KvOutcome};

/// Default for [`KvBudget::max_ops`].
pub const DEFAULT_KV_OPS: u64 = 1000;
/// Default for [`KvBudget::max_bytes`].
pub const DEFAULT_KV_BYTES: u64 = 16 << 20;

/// What one request may do through kv: a guest looping on kv cannot flood the shared Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvBudget {
    /// Operations (each key of a batch counts).
    pub max_ops: u64,
    /// Bytes of keys and values sent plus values read.
    pub max_bytes: u64,
}

impl Default for KvBudget {
    fn default() -> Self {
        KvBudget {
            max_ops: DEFAULT_KV_OPS,
            max_bytes: DEFAULT_KV_BYTES,
        }
    }
}

impl KvSession {
    /// Charges one operation sending `bytes` to the budget, or refuses it if the budget is
    /// used up.
    fn charge(&self, bytes: usize) -> Result<(), KvError> {
        let ops = self.ops_used.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.bytes_used.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if ops > self.budget.max_ops {
            return Err(KvError::BudgetExceeded(format!(
                "kv budget exceeded: this request may make {} kv operations (host option \
                 --kv-ops, ?kv_ops= at deploy)",
                self.budget.max_ops
            )));
        }
        if total > self.budget.max_bytes {
            return Err(KvError::BudgetExceeded(format!(
                "kv budget exceeded: this request may move {} bytes through kv (host option \
                 --kv-bytes, ?kv_bytes= at deploy)",
                self.budget.max_bytes
            )));
        }
        Ok(())
    }

    /// Runs one operation sending `bytes` (after charging it to the budget) and records its
    /// outcome and latency.
    pub(super) async fn measured<T>(
        &self,
        op: KvOp,
        bytes: usize,
        call: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = match self.charge(bytes) {
            Ok(()) => call.await,
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => KvOutcome::Ok,
            Err(KvError::InvalidKey(_)) => KvOutcome::InvalidKey,
            Err(KvError::ValueTooLarge(_)) => KvOutcome::ValueTooLarge,
            Err(KvError::NotAnInteger) => KvOutcome::NotAnInteger,
            Err(KvError::InvalidCursor) => KvOutcome::InvalidCursor,
            Err(KvError::Unavailable(_)) => KvOutcome::Unavailable,
            Err(KvError::Refused(_)) => KvOutcome::Refused,
            Err(KvError::BudgetExceeded(_)) => KvOutcome::BudgetExceeded,
        };
        self.metrics.kv_call(op, outcome, started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::Backend;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn past_its_budget_a_request_gets_an_error_saying_so_and_nothing_happens() {
        let metrics = Metrics::new().expect("metrics");
        let budget = KvBudget {
            max_ops: 3,
            max_bytes: 1 << 20,
        };
        let session = KvSession::with_budget(
            Backend::Memory(Default::default()),
            "pizza",
            metrics,
            budget,
        );
        let bucket = session.default_bucket().clone();
        for _ in 0..3 {
            assert!(session.increment(&bucket, "n", 1).await.is_ok());
        }
        let refused = session.increment(&bucket, "n", 1).await;
        assert!(
            matches!(&refused, Err(KvError::BudgetExceeded(m)) if m.contains("3 kv operations")),
            "{refused:?}"
        );
        let backend = Backend::Memory(Default::default());
        let small = KvBudget {
            max_ops: 100,
            max_bytes: 10,
        };
        let bytes =
            KvSession::with_budget(backend.clone(), "pizza", Metrics::new().expect("m"), small);
        let bucket = bytes.default_bucket().clone();
        let refused = bytes.set(&bucket, "k", b"more than ten bytes", None).await;
        assert!(
            matches!(refused, Err(KvError::BudgetExceeded(_))),
            "{refused:?}"
        );
        let fresh = KvSession::new(backend, "pizza", Metrics::new().expect("m"));
        assert_eq!(
            fresh.get(&bucket, "k").await,
            Ok(None),
            "the refused write had no effect"
        );
    }
}

//! The storage the shop needs, as a trait: the subset of `goldfish:function/kv` that carts and
//! orders use, so the logic runs against the real import in a guest and a `HashMap` in tests.

/// Why a storage operation failed; mirrors the WIT `kv.error` variant case for case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("value larger than the limit of {0} bytes")]
    ValueTooLarge(u64),
    #[error("value is not a 64-bit integer")]
    NotAnInteger,
    #[error("invalid list-keys cursor")]
    InvalidCursor,
    /// The store could not be reached; for a write, whether it took effect is unknown.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A key-value store with the contract of the WIT `kv` interface: each call is atomic on its key.
pub trait Kv {
    /// The value at `key`, or `None` if it does not exist or has expired.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    /// Stores `value` at `key`; with `ttl_seconds` it expires that long after this write, with
    /// `None` it never expires.
    fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError>;

    /// Writes `new` at `key` only if the current value equals `expected` (`None`: only if the key
    /// does not exist). Returns whether it wrote. `ttl_seconds` is as for [`Kv::set`].
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_seconds: Option<u32>,
    ) -> Result<bool, KvError>;
}

/// Defines a unit struct implementing [`Kv`] over a guest's generated `kv` import.
///
/// Used at the root of a guest next to `wit_bindgen::generate!`, naming the generated module:
///
/// ```ignore
/// wit_bindgen::generate!({ path: "../../wit", world: "function" });
/// pizza::impl_kv!(HostKv => goldfish::function::kv);
/// ```
///
/// It is a macro because the generated module lives in each guest crate, and this crate must not
/// depend on bindings.
#[macro_export]
macro_rules! impl_kv {
    ($name:ident => $($kv:ident)::+) => {
        /// The host's `kv` import, as a [`pizza::Kv`].
        struct $name;

        impl $name {
            fn error(error: $($kv)::+::Error) -> $crate::KvError {
                use $($kv)::+::Error;
                match error {
                    Error::InvalidKey(detail) => $crate::KvError::InvalidKey(detail),
                    Error::ValueTooLarge(limit) => $crate::KvError::ValueTooLarge(limit),
                    Error::NotAnInteger => $crate::KvError::NotAnInteger,
                    Error::InvalidCursor => $crate::KvError::InvalidCursor,
                    Error::Unavailable(detail) => $crate::KvError::Unavailable(detail),
                }
            }
        }

        impl $crate::Kv for $name {
            fn get(&self, key: &str) -> Result<Option<Vec<u8>>, $crate::KvError> {
                $($kv)::+::get(key).map_err(Self::error)
            }

            fn set(
                &self,
                key: &str,
                value: &[u8],
                ttl_seconds: Option<u32>,
            ) -> Result<(), $crate::KvError> {
                $($kv)::+::set(key, value, ttl_seconds).map_err(Self::error)
            }

            fn compare_and_swap(
                &self,
                key: &str,
                expected: Option<&[u8]>,
                new: &[u8],
                ttl_seconds: Option<u32>,
            ) -> Result<bool, $crate::KvError> {
                $($kv)::+::compare_and_swap(key, expected, new, ttl_seconds).map_err(Self::error)
            }
        }
    };
}

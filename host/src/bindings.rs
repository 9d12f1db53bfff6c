//! Every `bindgen!` of the host in one leaf module: the guest-facing worlds and interfaces Goldfish
//! implements itself. `wasi:http` and the rest of WASI 0.2 come with their implementations from
//! `wasmtime-wasi-http` and `wasmtime-wasi`.
//!
//! Each package is generated from its own folder so that two drafts of `wasi:keyvalue` can live
//! side by side; the WIT lives in `wit/` (ours) and `wit/vendor/` (copied, see its README).

/// `goldfish:function@0.1.0`: world `function` (export `handle`) and interface `kv`.
pub mod goldfish {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "function",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `wasi:keyvalue@0.2.0-draft` (wasmCloud, `wasmtime-wasi-keyvalue`): store, atomics
/// (`increment` only), batch.
pub mod keyvalue_draft {
    wasmtime::component::bindgen!({
        path: "../wit/vendor/keyvalue-draft",
        world: "imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": crate::kv::Bucket },
    });
}

/// `wasi:keyvalue@0.2.0-draft2` (Spin): store, atomics (`cas`, `swap`, `increment`), batch.
pub mod keyvalue_draft2 {
    wasmtime::component::bindgen!({
        path: "../wit/vendor/keyvalue-draft2",
        world: "imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::kv::Bucket,
            "wasi:keyvalue/atomics.cas": crate::kv::Cas,
        },
    });
}

/// `fermyon:spin/key-value@2.0.0`: what Spin SDK 2.x/3.x apps import for `Store::open_default()`.
pub mod spin_key_value {
    wasmtime::component::bindgen!({
        path: "../wit/vendor/spin-key-value",
        world: "key-value-imports",
        imports: { default: async | trappable },
        with: { "fermyon:spin/key-value.store": crate::kv::Bucket },
    });
}

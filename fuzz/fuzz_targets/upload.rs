//! Upload validation: whatever bytes an admin PUTs, [`Runtime::compile`] (what a deploy runs:
//! header, wasmtime's validation and compile, imports, exports, linking against the host) answers
//! `Ok` or a [`ValidationError`], and never panics. Input that starts with `\0asm` is uploaded as
//! is (so real components make good seeds); anything else drives the generators the end-to-end
//! test uses (`tests/uploads/inputs.rs`): wasm-smith modules and components, and core modules
//! wrapped in components.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use goldfish::engine::{Runtime, ValidationError};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/uploads/inputs.rs"]
mod inputs;

fn runtime() -> &'static Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(64 << 20, 4).expect("the engine starts"))
}

fuzz_target!(|data: &[u8]| {
    let generated;
    let bytes = if data.starts_with(b"\0asm") {
        data
    } else {
        let mut u = Unstructured::new(data);
        let made = match u.int_in_range(0..=2u8) {
            Ok(0) => inputs::core_module(&mut u),
            Ok(1) => inputs::smith_component(&mut u),
            _ => inputs::wrapped_module(&mut u),
        };
        let Ok(made) = made else { return };
        generated = made;
        &generated
    };
    match runtime().compile(bytes) {
        Ok(_) => {}
        // Each refusal is a 422 (or the header's own message); none may be empty.
        Err(
            e @ (ValidationError::NotWasm
            | ValidationError::CoreModule
            | ValidationError::UnsupportedImport(_)
            | ValidationError::MissingExport(_)
            | ValidationError::CompileTimeout(_)
            | ValidationError::Invalid(_)),
        ) => assert!(!e.to_string().is_empty()),
    }
});

//! What a failed call is told: a trap's reason and innermost named function, a stack overflow
//! told apart from a wild pointer, and which limit of a full instance pool was reached.

use super::CallError;

/// Fewest captured frames (wasmtime keeps the innermost 20) that can show deep recursion.
const RECURSION_MIN_FRAMES: usize = 16;

/// Whether the innermost frames are mostly one function calling itself.
fn is_deep_recursion(frames: &[wasmtime::FrameInfo]) -> bool {
    let Some(top) = frames.first() else {
        return false;
    };
    let repeats = frames
        .iter()
        .filter(|f| f.func_index() == top.func_index() && f.module().name() == top.module().name())
        .count();
    frames.len() >= RECURSION_MIN_FRAMES && repeats * 2 >= frames.len()
}

/// Which limit of the pool was reached, in wasmtime's words ("maximum concurrent limit of 16
/// for core instances reached").
pub(super) fn pool_limit(e: &wasmtime::Error) -> String {
    e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// The trap as a [`CallError`]: its reason first (e.g. "wasm trap: wasm `unreachable`
/// instruction executed"), then the guest backtrace's innermost named function if any, on one
/// line for the log and the operator; a stack overflow is told apart.
pub(super) fn describe_trap(e: &wasmtime::Error) -> CallError {
    let trap = e.downcast_ref::<wasmtime::Trap>();
    let recursing = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .is_some_and(|backtrace| is_deep_recursion(backtrace.frames()));
    let (mut reason, overflow) = match trap {
        Some(wasmtime::Trap::StackOverflow) => (
            "stack overflow: the function recursed too deeply for the host's wasm stack".to_owned(),
            true,
        ),
        // Languages that keep their own stack in linear memory (Rust, C, ...) overflow it as an
        // out-of-bounds access; a backtrace of one function calling itself tells that apart from
        // a wild pointer.
        Some(wasmtime::Trap::MemoryOutOfBounds) if recursing => (
            "stack overflow: the function recursed until it ran out of its stack \
             (wasm trap: out of bounds memory access)"
                .to_owned(),
            true,
        ),
        Some(trap) => (trap.to_string(), false),
        // Not a trap but an error a host function returned (`wasi:cli/exit`, a refused
        // argument): wasmtime wraps it in "error while executing at wasm backtrace", so the
        // cause is the innermost error.
        None => match e
            .chain()
            .find_map(|cause| cause.downcast_ref::<wasmtime_wasi::I32Exit>())
        {
            Some(exit) => (
                format!(
                    "it exited with status {} (wasi:cli/exit) before answering",
                    exit.0
                ),
                false,
            ),
            None => (e.root_cause().to_string(), false),
        },
    };
    if let Some(frame) = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|backtrace| backtrace.frames().iter().find_map(|f| f.func_name()))
    {
        reason.push_str(&format!(" (in {frame})"));
    }
    if overflow {
        CallError::StackOverflow(reason)
    } else {
        CallError::Trap(reason)
    }
}

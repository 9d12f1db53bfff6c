//! Deploy-time validation: what a component must be to be accepted (a component, importing only
//! what the linker provides, exporting one world's entry point), and compiling and linking it.

use std::time::Duration;

use wasmtime::component::{Component, types::ComponentItem};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::{Compiled, Pre, Runtime, inlining};
use crate::bindings;
use crate::worlds::{self, World};

/// Interfaces (package and interface, without version) the linker defines. A component importing
/// anything else is refused at deploy with the import named. The versions are whatever
/// `wasmtime-wasi` and `wasmtime-wasi-http` define; any semver-compatible 0.2.x import links.
///
/// What each one *grants* is set in [`HostState::new`](super::HostState::new): filesystem
/// without preopens, sockets that refuse every address, outbound HTTP that fails with
/// `HTTP-request-denied`, empty environment, arguments and stdin; stdout and stderr go to the
/// host log.
pub const PROVIDED_INTERFACES: &[&str] = &[
    "goldfish:function/types",
    "goldfish:function/kv",
    "wasi:keyvalue/store",
    "wasi:keyvalue/atomics",
    "wasi:keyvalue/batch",
    "fermyon:spin/key-value",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Why a component was refused at deploy time.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// Not WebAssembly at all.
    #[error(
        "the upload is not WebAssembly (no `\\0asm` header); upload a component built for wasm32-wasip2"
    )]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "the upload is a core WebAssembly module, not a component; build with `--target wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// Imports an interface Goldfish does not provide.
    #[error(
        "the component imports `{0}`, which Goldfish does not provide; functions may import \
         goldfish:function/kv, wasi:keyvalue (0.2.0-draft, 0.2.0-draft2), fermyon:spin/key-value, \
         wasi:http and the rest of WASI 0.2"
    )]
    UnsupportedImport(String),
    /// Exports neither world's entry point.
    #[error(
        "the component exports neither `handle` (world goldfish:function/function) nor \
         `wasi:http/incoming-handler` (world wasi:http/proxy); its exports: {0}"
    )]
    MissingExport(String),
    /// Compiling took longer than the host allows.
    #[error(
        "the component did not compile within {0:?} (host option --compile-timeout-secs); make it \
         smaller or raise the limit"
    )]
    CompileTimeout(Duration),
    /// wasmtime could not compile or link it.
    #[error("the component does not compile or link: {0}")]
    Invalid(String),
}

impl Runtime {
    /// Validates and compiles a component: header, imports, exports, compilation and linking.
    /// CPU-heavy (tens of milliseconds for a small Rust function, seconds for a language
    /// runtime): call from a blocking thread.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, ValidationError> {
        self.link(self.compile_component(bytes)?)
    }

    /// The compiling half of [`Runtime::compile`]: machine code, not yet checked against the
    /// linker. The result may be cached with [`Component::serialize`].
    pub fn compile_component(&self, bytes: &[u8]) -> Result<Component, ValidationError> {
        check_header(bytes)?;
        // Before wasmtime's inliner gets to a component bomb (see `inlining`).
        inlining::check(bytes).map_err(ValidationError::Invalid)?;
        Component::new(&self.engine, bytes).map_err(|e| ValidationError::Invalid(format!("{e:#}")))
    }

    /// The checking half of [`Runtime::compile`]: imports, world, linking.
    pub fn link(&self, component: Component) -> Result<Compiled, ValidationError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            let interface = name.split('@').next().unwrap_or(name);
            if !PROVIDED_INTERFACES.contains(&interface) {
                return Err(ValidationError::UnsupportedImport(name.to_owned()));
            }
        }
        let exports: Vec<(String, bool)> = ty
            .exports(&self.engine)
            .map(|(name, item)| {
                (
                    name.to_owned(),
                    matches!(item.ty, ComponentItem::ComponentFunc(_)),
                )
            })
            .collect();
        let world = if exports
            .iter()
            .any(|(name, is_func)| name == worlds::goldfish::HANDLE_EXPORT && *is_func)
        {
            World::Goldfish
        } else if exports.iter().any(|(name, is_func)| {
            !is_func && name.split('@').next() == Some(worlds::wasi_http::INCOMING_HANDLER)
        }) {
            World::WasiHttp
        } else {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            let names = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            return Err(ValidationError::MissingExport(names));
        };
        let invalid = |e: wasmtime::Error| ValidationError::Invalid(format!("{e:#}"));
        let instance_pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = match world {
            World::Goldfish => {
                Pre::Goldfish(bindings::goldfish::FunctionPre::new(instance_pre).map_err(invalid)?)
            }
            World::WasiHttp => Pre::WasiHttp(ProxyPre::new(instance_pre).map_err(invalid)?),
        };
        Ok(Compiled { world, pre })
    }
}

/// Distinguishes garbage and core modules from components by the preamble: `\0asm`, then a
/// version and layer (core: 1,0 / 0,0; component: 0x0d,0 / 1,0).
fn check_header(bytes: &[u8]) -> Result<(), ValidationError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Err(ValidationError::CoreModule),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err(ValidationError::NotWasm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_garbage_core_modules_and_components_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(ValidationError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(ValidationError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"\0as"),
            Err(ValidationError::NotWasm)
        ));
    }
}

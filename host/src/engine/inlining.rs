//! A bound on what wasmtime's component inliner would build, checked before compiling.
//!
//! Wasmtime flattens a component by "inlining" every component instantiation, recursively: a
//! component that instantiates a child 100 times, whose child instantiates its own child 100
//! times, ... is 100^depth instances after inlining, from an upload of a few hundred bytes. And a
//! plain chain of nested components costs time and memory quadratic in its depth (3,000 levels,
//! 53 KB: 4.4 GB; 10,000 levels: more memory than the machine has). Neither stops at the compile
//! timeout: the compile goes on in the background until the host runs out of memory. This pass
//! walks the component's structure once (no validation, no compile) and refuses it when nesting
//! or the inlined instance count is past anything a real component has; the pooling allocator
//! would refuse such a component anyway, but only after inlining it.

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind,
    ComponentTypeRef, Parser, Payload,
};

/// Components nested in components, counted from the top one. Toolchains and composers
/// produce a handful of levels.
pub const MAX_COMPONENT_NESTING: usize = 100;

/// Component and core instances after inlining every instantiation. The pool allows 32 core
/// instances per component, so nothing past this could run anyway.
pub const MAX_INLINED_INSTANCES: u64 = 10_000;

/// Core functions defined across every module of a component. Language runtimes define tens of
/// thousands (CPython, SpiderMonkey); a compile of 300,000 takes about 40 s and a gigabyte that
/// the compile timeout cannot take back.
pub const MAX_FUNCTIONS: u64 = 100_000;

/// One component being read: what instantiating each of its component indices costs, and what
/// instantiating it costs so far (itself, its core instances, its inlined children).
struct Frame {
    components: Vec<u64>,
    cost: u64,
}

impl Frame {
    fn new() -> Frame {
        Frame {
            components: Vec::new(),
            cost: 1,
        }
    }
}

/// `Err` with the reason when `bytes` nests components too deep or inlines into too many
/// instances. Bytes that do not parse pass: the validator that runs next says what is wrong.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let mut frames = vec![Frame::new()];
    // Inside a nested core module: its payloads count for nothing here (modules nest nothing).
    let mut in_module = false;
    let mut functions: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        if in_module {
            if let Payload::FunctionSection(reader) = &payload {
                functions += u64::from(reader.count());
                if functions > MAX_FUNCTIONS {
                    return Err(format!(
                        "the component's modules define more than {MAX_FUNCTIONS} functions; \
                         Goldfish allows at most {MAX_FUNCTIONS}"
                    ));
                }
            }
            in_module = !matches!(payload, Payload::End(_));
            continue;
        }
        let depth = frames.len();
        let frame = top(&mut frames);
        match payload {
            Payload::ModuleSection { .. } => in_module = true,
            Payload::ComponentSection { .. } => {
                frames.push(Frame::new());
                if frames.len() > MAX_COMPONENT_NESTING {
                    return Err(format!(
                        "components are nested more than {MAX_COMPONENT_NESTING} levels deep; \
                         Goldfish allows at most {MAX_COMPONENT_NESTING}"
                    ));
                }
            }
            // The end of a nested component: its parent now knows what instantiating it costs.
            Payload::End(_) if depth > 1 => {
                if let Some(done) = frames.pop() {
                    top(&mut frames).components.push(done.cost);
                }
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader.into_iter().flatten() {
                    if let ComponentTypeRef::Component(_) = import.ty {
                        frame.components.push(1);
                    }
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader.into_iter().flatten() {
                    let cost = match alias {
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::Component,
                            count,
                            index,
                        } => frames
                            .len()
                            .checked_sub(1 + count as usize)
                            .and_then(|f| frames[f].components.get(index as usize).copied())
                            .unwrap_or(1),
                        // A component exported by an instance: assume the dearest one in sight.
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Component,
                            ..
                        } => frames
                            .iter()
                            .flat_map(|f| f.components.iter().copied())
                            .max()
                            .unwrap_or(1),
                        _ => continue,
                    };
                    top(&mut frames).components.push(cost);
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader.into_iter().flatten() {
                    if export.kind == ComponentExternalKind::Component {
                        let cost = frame.components.get(export.index as usize).copied();
                        frame.components.push(cost.unwrap_or(1));
                    }
                }
            }
            Payload::ComponentInstanceSection(reader) => {
                for instance in reader.into_iter().flatten() {
                    if let ComponentInstance::Instantiate {
                        component_index, ..
                    } = instance
                    {
                        let child = frame.components.get(component_index as usize).copied();
                        frame.cost = frame.cost.saturating_add(child.unwrap_or(1));
                    }
                }
            }
            Payload::InstanceSection(reader) => {
                frame.cost = frame.cost.saturating_add(u64::from(reader.count()));
            }
            _ => {}
        }
        if top(&mut frames).cost > MAX_INLINED_INSTANCES {
            return Err(format!(
                "instantiating it would create more than {MAX_INLINED_INSTANCES} component and \
                 core instances, counting those its nested components create; Goldfish allows \
                 at most {MAX_INLINED_INSTANCES}"
            ));
        }
    }
    Ok(())
}

fn top(frames: &mut [Frame]) -> &mut Frame {
    let last = frames.len() - 1;
    &mut frames[last]
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        Component, ComponentExportKind, ComponentInstanceSection, InstanceSection, Module,
        ModuleArg, ModuleSection, NestedComponentSection,
    };

    /// `depth` components in one another; each level instantiates its child `width` times
    /// and holds one core module instantiated once.
    fn tree(depth: u32, width: u32) -> Vec<u8> {
        let mut inner = Component::new();
        for _ in 0..depth {
            let mut outer = Component::new();
            outer.section(&ModuleSection(&Module::new()));
            let mut core = InstanceSection::new();
            core.instantiate(0, Vec::<(&str, ModuleArg)>::new());
            outer.section(&core);
            outer.section(&NestedComponentSection(&inner));
            let mut instances = ComponentInstanceSection::new();
            for _ in 0..width {
                instances.instantiate(0, Vec::<(&str, ComponentExportKind, u32)>::new());
            }
            outer.section(&instances);
            inner = outer;
        }
        inner.finish()
    }

    #[test]
    fn ordinary_shapes_pass() {
        assert_eq!(check(&tree(1, 1)), Ok(()));
        assert_eq!(check(&tree(5, 3)), Ok(()));
        // 99 nested levels under the top one, each instantiated once: 100 levels.
        assert_eq!(check(&tree(99, 1)), Ok(()));
        // Not WebAssembly: for the validator to describe.
        assert_eq!(check(b"\0asm\x0d\0\x01\0\x04\xff"), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let error = check(&tree(101, 1)).err().unwrap_or_default();
        assert!(error.contains("nested more than 100"), "{error}");
    }

    #[test]
    fn an_instantiation_bomb_is_refused() {
        // 10 instantiations of 10 of 10 of 10: 10^4 components, each with a core instance.
        let error = check(&tree(4, 10)).err().unwrap_or_default();
        assert!(error.contains("more than 10000"), "{error}");
        // 10^3 components and 10^3 core instances: fine.
        assert_eq!(check(&tree(3, 10)), Ok(()));
    }
}

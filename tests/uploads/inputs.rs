//! What gets uploaded to a host to see that it never answers 5xx: `wasm-smith` core modules and
//! components, core modules wrapped in components (embedded, instantiated, or with an export
//! lifted as `handle`), mutated copies of real components, and pathological components (huge
//! function counts, deep nesting). Every generator reads its choices from an [`Unstructured`],
//! so `tests/uploads.rs` drives it from a seeded byte stream and the `upload` fuzz target
//! (`fuzz/fuzz_targets/upload.rs`, which includes this file) from libFuzzer.
#![allow(dead_code)]

use arbitrary::{Result, Unstructured};
use wasm_encoder::{
    Alias, CanonicalFunctionSection, CodeSection, Component, ComponentAliasSection,
    ComponentExportKind, ComponentExportSection, ComponentInstanceSection, ComponentSectionId,
    ComponentTypeSection, ComponentValType, ExportKind, Function, FunctionSection, InstanceSection,
    Instruction, ModuleArg, NestedComponentSection, PrimitiveValType, RawSection, TypeSection,
    ValType,
};

/// A `wasm-smith` configuration: the default (what wasmtime supports, mostly) or an arbitrary
/// one (any proposal, often one the host refuses), kept small so compiles stay quick.
fn config(u: &mut Unstructured) -> Result<wasm_smith::Config> {
    let mut config: wasm_smith::Config = if u.ratio(1, 3)? {
        u.arbitrary()?
    } else {
        // What the host's engine accepts, so most of these get through validation to the
        // compiler and the linker.
        wasm_smith::Config {
            gc_enabled: false,
            exceptions_enabled: false,
            threads_enabled: false,
            // externref needs wasmtime's `gc` feature, which the host leaves out.
            reference_types_enabled: false,
            max_memories: 1,
            max_memory32_bytes: 16 << 20,
            max_memory64_bytes: 16 << 20,
            max_tables: 2,
            max_table_elements: 1000,
            ..wasm_smith::Config::default()
        }
    };
    config.max_funcs = config.max_funcs.min(24);
    config.max_instructions = config.max_instructions.min(200);
    config.max_types = config.max_types.min(32);
    config.max_imports = config.max_imports.min(8);
    config.max_exports = config.max_exports.min(16);
    config.max_data_segments = config.max_data_segments.min(8);
    config.max_element_segments = config.max_element_segments.min(8);
    config.max_elements = config.max_elements.min(64);
    config.max_globals = config.max_globals.min(16);
    Ok(config)
}

/// A `wasm-smith` core module (the host refuses core modules: a 422 saying to build a component).
pub fn core_module(u: &mut Unstructured) -> Result<Vec<u8>> {
    let config = config(u)?;
    Ok(wasm_smith::Module::new(config, u)?.to_bytes())
}

/// A `wasm-smith` component (its component support is a work in progress: many are invalid,
/// which is as good an upload as any).
pub fn smith_component(u: &mut Unstructured) -> Result<Vec<u8>> {
    let config = config(u)?;
    Ok(wasm_smith::Component::new(config, u)?.to_bytes())
}

/// How a core module becomes a component.
#[derive(Clone, Copy, Debug)]
pub enum Wrap {
    /// Only embedded: wasmtime still validates and compiles it.
    Embed,
    /// Embedded and instantiated with no imports.
    Instantiate,
    /// Instantiated, and one exported function lifted and exported under a world's name.
    Lift,
}

/// A `wasm-smith` core module wrapped in a component, so it reaches wasmtime's compiler.
pub fn wrapped_module(u: &mut Unstructured) -> Result<Vec<u8>> {
    let wrap = *u.choose(&[Wrap::Embed, Wrap::Instantiate, Wrap::Lift, Wrap::Lift])?;
    let mut config = config(u)?;
    if !matches!(wrap, Wrap::Embed) {
        // Instantiated with no arguments: mostly modules that import nothing.
        config.max_imports = usize::from(u.ratio(1, 8)?);
        config.min_exports = 1;
        config.export_everything = true;
    }
    let module = wasm_smith::Module::new(config, u)?.to_bytes();
    wrap_module(u, &module, wrap)
}

/// `module` inside a component, as `wrap` says.
pub fn wrap_module(u: &mut Unstructured, module: &[u8], wrap: Wrap) -> Result<Vec<u8>> {
    let mut component = Component::new();
    component.section(&RawSection {
        id: ComponentSectionId::CoreModule.into(),
        data: module,
    });
    if matches!(wrap, Wrap::Embed) {
        return Ok(component.finish());
    }
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    component.section(&instances);
    let liftable = liftable_exports(module);
    if !matches!(wrap, Wrap::Lift) || liftable.is_empty() {
        return Ok(component.finish());
    }
    let (name, params, result) = u.choose(&liftable)?.clone();
    let names: Vec<String> = (0..params.len()).map(|i| format!("p{i}")).collect();
    let mut types = ComponentTypeSection::new();
    types
        .function()
        .params(
            names
                .iter()
                .zip(&params)
                .map(|(name, ty)| (name.as_str(), ComponentValType::Primitive(*ty))),
        )
        .result(result.map(ComponentValType::Primitive));
    component.section(&types);
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport {
        instance: 0,
        kind: ExportKind::Func,
        name: &name,
    });
    component.section(&aliases);
    let mut canon = CanonicalFunctionSection::new();
    canon.lift(0, 0, []);
    component.section(&canon);
    // The goldfish world's export name (its type is wrong: the host must say so, not fail),
    // or names no world uses.
    let export = *u.choose(&[
        "handle",
        "handle",
        "run",
        "wasi:http/incoming-handler@0.2.0",
    ])?;
    let mut exports = ComponentExportSection::new();
    exports.export(export, ComponentExportKind::Func, 0, None);
    component.section(&exports);
    Ok(component.finish())
}

/// Exported functions of `module` whose core signature lifts without a memory: at most 16
/// numeric parameters and at most one numeric result, as (name, params, result).
type Liftable = (String, Vec<PrimitiveValType>, Option<PrimitiveValType>);

fn liftable_exports(module: &[u8]) -> Vec<Liftable> {
    use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, TypeRef};
    let mut types: Vec<Option<wasmparser::FuncType>> = Vec::new();
    let mut functions: Vec<u32> = Vec::new();
    let mut exports: Vec<(String, u32)> = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let Ok(payload) = payload else {
            return Vec::new();
        };
        match payload {
            Payload::TypeSection(reader) => {
                for group in reader.into_iter().flatten() {
                    for sub in group.into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports().flatten() {
                    if let TypeRef::Func(ty) = import.ty {
                        functions.push(ty);
                    }
                }
            }
            Payload::FunctionSection(reader) => functions.extend(reader.into_iter().flatten()),
            Payload::ExportSection(reader) => {
                for export in reader.into_iter().flatten() {
                    if export.kind == ExternalKind::Func {
                        exports.push((export.name.to_owned(), export.index));
                    }
                }
            }
            _ => {}
        }
    }
    let primitive = |ty: &wasmparser::ValType| match ty {
        wasmparser::ValType::I32 => Some(PrimitiveValType::S32),
        wasmparser::ValType::I64 => Some(PrimitiveValType::S64),
        wasmparser::ValType::F32 => Some(PrimitiveValType::F32),
        wasmparser::ValType::F64 => Some(PrimitiveValType::F64),
        _ => None,
    };
    exports
        .into_iter()
        .filter_map(|(name, index)| {
            let ty = functions.get(index as usize)?;
            let ty = types.get(*ty as usize)?.as_ref()?;
            let params: Option<Vec<_>> = ty.params().iter().map(primitive).collect();
            let params = params.filter(|p| p.len() <= 16)?;
            let result = match ty.results() {
                [] => None,
                [one] => Some(primitive(one)?),
                _ => return None,
            };
            Some((name, params, result))
        })
        .collect()
}

/// The top-level sections of a component or module: byte ranges, header included. Stops at
/// the first section that does not parse.
pub fn sections(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let start = at;
        at += 1;
        let mut size: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = bytes.get(at) else {
                return ranges;
            };
            at += 1;
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 || shift > 35 {
                break;
            }
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return ranges;
        };
        if end > bytes.len() {
            return ranges;
        }
        ranges.push(start..end);
        at = end;
    }
    ranges
}

/// A mutated copy of one of `originals` (real components): flipped bytes, a truncation, a
/// dropped, duplicated, swapped or foreign section, or a section whose size lies.
pub fn mutant(u: &mut Unstructured, originals: &[Vec<u8>]) -> Result<Vec<u8>> {
    let original = u.choose(originals)?;
    let mut bytes = original.clone();
    let ranges = sections(&bytes);
    match u.int_in_range(0..=6)? {
        0 => {
            for _ in 0..u.int_in_range(1..=8)? {
                let at = u.choose_index(bytes.len())?;
                bytes[at] ^= u.int_in_range(1..=255)?;
            }
        }
        1 => bytes.truncate(u.choose_index(bytes.len())?),
        2 if !ranges.is_empty() => {
            let section = u.choose(&ranges)?.clone();
            bytes.drain(section);
        }
        3 if !ranges.is_empty() => {
            let section = u.choose(&ranges)?.clone();
            let copy = bytes[section.clone()].to_vec();
            bytes.splice(section.end..section.end, copy);
        }
        4 if ranges.len() >= 2 => {
            let i = u.choose_index(ranges.len() - 1)?;
            let (a, b) = (ranges[i].clone(), ranges[i + 1].clone());
            let mut swapped = bytes[b.clone()].to_vec();
            swapped.extend_from_slice(&bytes[a.clone()]);
            bytes.splice(a.start..b.end, swapped);
        }
        5 => {
            let donor = u.choose(originals)?;
            let donor_ranges = sections(donor);
            if !donor_ranges.is_empty() {
                let section = donor[u.choose(&donor_ranges)?.clone()].to_vec();
                let at = match ranges.is_empty() {
                    true => bytes.len(),
                    false => u.choose(&ranges)?.start,
                };
                bytes.splice(at..at, section);
            }
        }
        _ if !ranges.is_empty() => {
            // The size of one section, rewritten as a padded LEB of another value.
            let section = u.choose(&ranges)?.clone();
            let header_end = (section.start + 1..section.end)
                .find(|&i| bytes[i] & 0x80 == 0)
                .map_or(section.start + 2, |i| i + 1);
            let size: u32 = u.arbitrary()?;
            let leb = [
                (size & 0x7f) as u8 | 0x80,
                ((size >> 7) & 0x7f) as u8 | 0x80,
                ((size >> 14) & 0x7f) as u8 | 0x80,
                ((size >> 21) & 0x7f) as u8 | 0x80,
                ((size >> 28) & 0x0f) as u8,
            ];
            bytes.splice(section.start + 1..header_end.min(bytes.len()), leb);
        }
        _ => bytes.truncate(bytes.len() / 2),
    }
    Ok(bytes)
}

/// One core module in a component, with `count` functions `(func (result i32) i32.const i)`.
/// wasmparser allows at most 1,000,000 functions in a module.
pub fn many_functions(count: u32) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    for i in 0..count {
        functions.function(0);
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(i as i32));
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    let mut module = wasm_encoder::Module::new();
    module.section(&types).section(&functions).section(&code);
    embed(&module.finish())
}

/// One core module in a component whose one function nests `depth` blocks.
pub fn nested_blocks(depth: u32) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut body = Function::new([]);
    for _ in 0..depth {
        body.instruction(&Instruction::Block(wasm_encoder::BlockType::Empty));
    }
    for _ in 0..=depth {
        body.instruction(&Instruction::End);
    }
    let mut code = CodeSection::new();
    code.function(&body);
    let mut module = wasm_encoder::Module::new();
    module.section(&types).section(&functions).section(&code);
    embed(&module.finish())
}

/// `depth` components nested one in another, each instantiating the one inside it `width`
/// times: `width^depth` instances once wasmtime inlines them, from a few bytes per level.
pub fn nested_components(depth: u32, width: u32) -> Vec<u8> {
    let mut inner = Component::new();
    for _ in 0..depth {
        let mut outer = Component::new();
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

fn embed(module: &[u8]) -> Vec<u8> {
    let mut component = Component::new();
    component.section(&RawSection {
        id: ComponentSectionId::CoreModule.into(),
        data: module,
    });
    component.finish()
}

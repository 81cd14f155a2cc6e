//! Owns the step from a guest's core WebAssembly module to a Concierge plugin component: encode
//! with `wit-component`, validate, check the `factor` export, and report the imports.
//!
//! ```text
//! componentize encode CORE.wasm OUT.wasm   # write OUT only when its bytes change
//! componentize inspect COMPONENT.wasm      # print imports and exports
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wit_component::{ComponentEncoder, DecodedWasm};
use wit_parser::{Resolve, WorldId, WorldItem};

/// The export every plugin must provide (plugins/wit/mfa.wit).
const FACTOR_EXPORT: &str = "concierge:mfa/factor@0.1.0";
/// The export a waiting factor adds (contract 0.2, plugins/wit/0.2).
const WAITING_EXPORT: &str = "concierge:mfa/waiting@0.2.0";
/// The prefix of the contract's capability interfaces.
const CONTRACT_PREFIX: &str = "concierge:mfa/";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["encode", input, output] => encode(Path::new(input), Path::new(output)),
        ["inspect", input] => inspect(Path::new(input)),
        _ => {
            eprintln!(
                "usage: componentize encode CORE.wasm OUT.wasm | componentize inspect COMPONENT.wasm"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("componentize: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Encodes a core module into a component and writes it if it differs from what is there.
fn encode(input: &Path, output: &Path) -> Result<()> {
    let module = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let component = ComponentEncoder::default()
        .module(&module)
        .with_context(|| {
            format!(
                "{}: no usable component-type section (built with wit-bindgen?)",
                input.display()
            )
        })?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {}", input.display()))?;
    let summary = Summary::of(&component)?;
    summary.check()?;
    let unchanged = std::fs::read(output).is_ok_and(|old| old == component);
    if !unchanged {
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let partial = output.with_extension("wasm.partial");
        std::fs::write(&partial, &component)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, output)
            .with_context(|| format!("moving {} into place", output.display()))?;
    }
    println!("imports: {}", summary.short_imports());
    Ok(())
}

/// Prints a component's imports and exports, one per line.
fn inspect(input: &Path) -> Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let summary = Summary::of(&bytes)?;
    for (name, functions) in &summary.imports {
        println!("import {name} ({})", describe_functions(functions));
    }
    for (name, functions) in &summary.exports {
        println!("export {name} ({})", describe_functions(functions));
    }
    summary.check()
}

fn describe_functions(functions: &[String]) -> String {
    if functions.is_empty() {
        "types only".to_owned()
    } else {
        functions.join(", ")
    }
}

/// The interfaces a component imports and exports, with their functions.
struct Summary {
    imports: Vec<(String, Vec<String>)>,
    exports: Vec<(String, Vec<String>)>,
}

impl Summary {
    fn of(component: &[u8]) -> Result<Self> {
        let (resolve, world) =
            match wit_component::decode(component).context("decoding the component")? {
                DecodedWasm::Component(resolve, world) => (resolve, world),
                DecodedWasm::WitPackage(..) => bail!("this is a WIT package, not a component"),
            };
        Ok(Self {
            imports: items(&resolve, world, true),
            exports: items(&resolve, world, false),
        })
    }

    /// A plugin exports the contract's `factor` (and, a waiting factor, `waiting`) and nothing
    /// else, and imports nothing outside the contract.
    fn check(&self) -> Result<()> {
        let mut exports: Vec<&str> = self.exports.iter().map(|(name, _)| name.as_str()).collect();
        exports.sort_unstable();
        if exports != [FACTOR_EXPORT] && exports != [FACTOR_EXPORT, WAITING_EXPORT] {
            bail!(
                "a plugin must export {FACTOR_EXPORT} (and, waiting, {WAITING_EXPORT}) only; this one exports {exports:?}"
            );
        }
        for (name, _) in &self.imports {
            if !name.starts_with(CONTRACT_PREFIX) {
                bail!(
                    "imports {name}, which is not part of the plugin contract ({CONTRACT_PREFIX}*)"
                );
            }
        }
        Ok(())
    }

    /// The capability imports by short name (`clock, random, state`); type-only ones left out.
    fn short_imports(&self) -> String {
        let names: Vec<&str> = self
            .imports
            .iter()
            .filter(|(_, functions)| !functions.is_empty())
            .map(|(name, _)| {
                let short = name.strip_prefix(CONTRACT_PREFIX).unwrap_or(name);
                short.split('@').next().unwrap_or(short)
            })
            .collect();
        if names.is_empty() {
            "(none)".to_owned()
        } else {
            names.join(", ")
        }
    }
}

fn items(resolve: &Resolve, world: WorldId, imports: bool) -> Vec<(String, Vec<String>)> {
    let world = &resolve.worlds[world];
    let map = if imports {
        &world.imports
    } else {
        &world.exports
    };
    map.iter()
        .filter_map(|(key, item)| match item {
            WorldItem::Interface { id, .. } => {
                let functions = resolve.interfaces[*id].functions.keys().cloned().collect();
                Some((resolve.name_world_key(key), functions))
            }
            WorldItem::Function(function) => Some((function.name.clone(), Vec::new())),
            WorldItem::Type { .. } => None,
        })
        .collect()
}

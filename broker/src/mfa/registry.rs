//! Owns the loaded plugins: the wasmtime engine (pooling allocator, fuel, epoch deadlines), each
//! component compiled once after its sha256 pin matched and its imports were checked against
//! the manifest's grants, and the swap to a new version on hot reload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use super::MfaError;
use super::host::v02w::WaitingFactorPluginPre;
use super::host::{CallState, Description, FactorPlugin, FactorPluginPre, concierge};
use super::outbound::PluginHttp;
use crate::config::http::TrustAnchors;
use crate::config::mfa::{Capability, PluginManifest, valid_plugin_id};

/// One epoch tick; a call's wall-time deadline is counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Concurrent plugin instances (pool slots); a call beyond them fails closed.
const POOL_INSTANCES: u32 = 128;
/// The largest memory any manifest may ask for (settings enforce it too).
const MAX_MEMORY: usize = 256 << 20;
/// How much of a pool slot's linear memory, and of its tables, stays resident between calls.
/// Only used where the kernel reports which pages a call wrote (Linux 6.7+ `PAGEMAP_SCAN`):
/// those pages are then reset with `memset` instead of `madvise`, so the next instance takes
/// no page faults on them and no TLB flush (host overhead per verify about halved, see
/// BENCHMARKS.md). Without that ioctl wasmtime would `memset` the whole amount on every call.
const KEEP_RESIDENT: usize = 256 << 10;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// A plugin ready to be called.
pub struct Loaded {
    pub manifest: PluginManifest,
    pub description: Description,
    pub pre: FactorPluginPre<CallState>,
    /// A waiting factor (contract 0.2, it exports `waiting`): how its instances are made.
    pub waiting: Option<WaitingFactorPluginPre<CallState>>,
    pub config: Arc<BTreeMap<String, String>>,
    /// The `http` capability (contract 0.2), when granted.
    pub http: Option<Arc<PluginHttp>>,
    /// What the file looked like when it was loaded (hot reload compares).
    pub stamp: FileStamp,
}

impl Loaded {
    /// The methods a session gains when this factor is proven: the plugin's own, and `mfa`.
    pub fn proven_amr(&self) -> Vec<String> {
        let mut amr = self.description.amr.clone();
        if !amr.iter().any(|m| m == crate::domain::auth::AMR_MFA) {
            amr.push(crate::domain::auth::AMR_MFA.to_owned());
        }
        amr
    }
}

/// A plugin that is configured but not usable, and why (fails closed).
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub manifest: PluginManifest,
    pub error: String,
    pub stamp: Option<FileStamp>,
}

#[derive(Clone)]
pub enum Slot {
    Ready(Arc<Loaded>),
    Failed(Arc<Unavailable>),
}

impl Slot {
    pub fn manifest(&self) -> &PluginManifest {
        match self {
            Slot::Ready(l) => &l.manifest,
            Slot::Failed(f) => &f.manifest,
        }
    }
}

/// Size and modification time of a plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// The engine and the current plugins.
pub struct Registry {
    engine: PluginEngine,
    slots: RwLock<BTreeMap<String, Slot>>,
    /// The broker's trust settings, for the plugins' `http` capability.
    trust: TrustAnchors,
}

/// The engine plugins run on, with the epoch ticker that makes wall-time deadlines real. Guest
/// code (instantiation, `describe` at load and in the CLI, every call) only gets the engine
/// through [`PluginEngine::running`], which starts the ticker first: without it an epoch
/// deadline never arrives and a looping plugin is bounded by its fuel alone.
pub struct PluginEngine {
    engine: Engine,
    /// Whether the ticker thread runs (set on the first `running`).
    ticker: OnceLock<bool>,
}

impl PluginEngine {
    /// The engine for compiling and linking (no guest code runs).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine for running guest code, with the epoch ticker started. Fails closed if the
    /// ticker cannot run: no deadline could be enforced.
    pub fn running(&self) -> Result<&Engine, MfaError> {
        if *self.ticker.get_or_init(|| spawn_epoch_ticker(&self.engine)) {
            Ok(&self.engine)
        } else {
            Err(MfaError::Engine(
                "the epoch ticker is not running: plugin calls cannot be bounded".into(),
            ))
        }
    }
}

/// The engine every plugin runs on: component model, fuel, epoch interruption, pooling. The
/// ticker starts with the first guest call.
pub fn engine() -> Result<PluginEngine, MfaError> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 2)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 2)
        .max_memory_size(MAX_MEMORY);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| MfaError::Engine(e.to_string()))?;
    Ok(PluginEngine {
        engine,
        ticker: OnceLock::new(),
    })
}

/// A linker offering exactly the granted capabilities (and `types`, `config` and `claims`,
/// always).
fn linker(
    engine: &Engine,
    grants: &std::collections::BTreeSet<Capability>,
) -> Result<Linker<CallState>, MfaError> {
    use wasmtime::component::HasSelf;
    type D = HasSelf<CallState>;
    let mut l = Linker::new(engine);
    let err = |e: wasmtime::Error| MfaError::Engine(e.to_string());
    concierge::mfa::types::add_to_linker::<CallState, D>(&mut l, |s| s).map_err(err)?;
    concierge::mfa::config::add_to_linker::<CallState, D>(&mut l, |s| s).map_err(err)?;
    // Contract 0.2's `claims` gives only the names the manifest lists (none by default).
    super::host::claims::add_to_linker::<CallState, D>(&mut l, |s| s).map_err(err)?;
    for g in grants {
        match g {
            Capability::Clock => {
                concierge::mfa::clock::add_to_linker::<CallState, D>(&mut l, |s| s)
            }
            Capability::Random => {
                concierge::mfa::random::add_to_linker::<CallState, D>(&mut l, |s| s)
            }
            Capability::State => {
                concierge::mfa::state::add_to_linker::<CallState, D>(&mut l, |s| s)
            }
            Capability::Email => {
                concierge::mfa::email::add_to_linker::<CallState, D>(&mut l, |s| s)
            }
            Capability::Sms => concierge::mfa::sms::add_to_linker::<CallState, D>(&mut l, |s| s),
            Capability::Log => concierge::mfa::log::add_to_linker::<CallState, D>(&mut l, |s| s),
            Capability::Http => super::host::http::add_to_linker::<CallState, D>(&mut l, |s| s),
        }
        .map_err(err)?;
    }
    Ok(l)
}

/// What `concierge plugins check` reports about a file.
#[derive(Debug, Clone)]
pub struct Checked {
    pub sha256: [u8; 32],
    pub imports: Vec<String>,
    pub description: Description,
}

/// Reads, pins, compiles and links one plugin, and asks it who it is. `trust` checks the https
/// peers of its `http` capability. Blocking (file, compile).
pub fn load(
    engine: &PluginEngine,
    manifest: &PluginManifest,
    trust: &TrustAnchors,
) -> Result<Loaded, MfaError> {
    let stamp = FileStamp::of(&manifest.path);
    let bytes = std::fs::read(&manifest.path).map_err(|e| MfaError::Load {
        plugin: manifest.id.clone(),
        reason: format!("cannot read {}: {e}", manifest.path.display()),
    })?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if digest != manifest.sha256 {
        return Err(MfaError::Load {
            plugin: manifest.id.clone(),
            reason: format!(
                "sha256 of {} is {}, the manifest pins {}",
                manifest.path.display(),
                hex::encode(digest),
                hex::encode(manifest.sha256)
            ),
        });
    }
    let checked = inspect(engine, &bytes, Some(manifest))?;
    let engine = engine.engine();
    let component = Component::new(engine, &bytes).map_err(|e| MfaError::Load {
        plugin: manifest.id.clone(),
        reason: format!("not a valid component: {e}"),
    })?;
    let (pre, waiting) = link(engine, &component, manifest)?;
    if checked.description.id != manifest.id {
        return Err(MfaError::Load {
            plugin: manifest.id.clone(),
            reason: format!(
                "describe() says its id is `{}`",
                checked.description.id.escape_debug()
            ),
        });
    }
    let http = match &manifest.http {
        None => None,
        Some(grant) => Some(Arc::new(
            PluginHttp::new(&manifest.id, grant.clone(), trust).map_err(|e| MfaError::Load {
                plugin: manifest.id.clone(),
                reason: format!("http client: {e}"),
            })?,
        )),
    };
    Ok(Loaded {
        manifest: manifest.clone(),
        description: checked.description,
        pre,
        waiting,
        config: Arc::new(manifest.config.clone()),
        http,
        stamp: stamp.unwrap_or(FileStamp {
            len: 0,
            modified: None,
        }),
    })
}

fn link(
    engine: &Engine,
    component: &Component,
    manifest: &PluginManifest,
) -> Result<
    (
        FactorPluginPre<CallState>,
        Option<WaitingFactorPluginPre<CallState>>,
    ),
    MfaError,
> {
    let fail = |reason: String| MfaError::Load {
        plugin: manifest.id.clone(),
        reason,
    };
    // Imports the manifest does not grant are named before wasmtime's own (less clear) error.
    let ungranted: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            Capability::ALL
                .iter()
                .any(|c| c.interface() == *name && !manifest.grants.contains(c))
        })
        .collect();
    if !ungranted.is_empty() {
        return Err(fail(format!(
            "imports {} but the manifest does not grant it",
            ungranted.join(", ")
        )));
    }
    let linker = linker(engine, &manifest.grants)?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| fail(format!("cannot be linked: {e:#}")))?;
    // A component that exports `waiting` is a waiting factor; its `waiting` must then be the
    // contract's (a malformed one is refused, not silently treated as an ordinary factor).
    let waits = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == WAITING_EXPORT);
    let waiting = if waits {
        Some(
            WaitingFactorPluginPre::new(pre.clone())
                .map_err(|e| fail(format!("exports a malformed `waiting`: {e:#}")))?,
        )
    } else {
        None
    };
    let pre = FactorPluginPre::new(pre)
        .map_err(|e| fail(format!("does not export the factor world: {e:#}")))?;
    Ok((pre, waiting))
}

/// The export that makes a plugin a waiting factor (contract 0.2).
pub const WAITING_EXPORT: &str = "concierge:mfa/waiting@0.2.0";

/// Checks a component file without a manifest (all capabilities offered): its imports and what
/// `describe` returns. Used by `concierge plugins check` and at load.
pub fn inspect(
    plugin_engine: &PluginEngine,
    bytes: &[u8],
    manifest: Option<&PluginManifest>,
) -> Result<Checked, MfaError> {
    let id = manifest.map(|m| m.id.clone()).unwrap_or_else(|| "?".into());
    let fail = |reason: String| MfaError::Load {
        plugin: id.clone(),
        reason,
    };
    let engine = plugin_engine.engine();
    let component =
        Component::new(engine, bytes).map_err(|e| fail(format!("not a valid component: {e}")))?;
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let all: std::collections::BTreeSet<Capability> = Capability::ALL.into_iter().collect();
    let pre = linker(engine, &all)?
        .instantiate_pre(&component)
        .map_err(|e| fail(format!("cannot be linked: {e:#}")))?;
    let pre = FactorPluginPre::new(pre)
        .map_err(|e| fail(format!("does not export the factor world: {e:#}")))?;
    // describe() runs under the same budget as any call (the manifest's, or a default without
    // one), with no state and no config.
    let limits = manifest.map_or((Duration::from_millis(500), 50_000_000, 16 << 20), |m| {
        (m.timeout, m.fuel, m.memory_bytes)
    });
    // The epoch ticker runs before describe() starts, so the deadline is real.
    let mut store = Store::new(
        plugin_engine.running()?,
        CallState::new(
            &id,
            0,
            Arc::new(crate::clock::OsEntropy),
            Arc::new(BTreeMap::new()),
            BTreeMap::new(),
            limits.2,
        ),
    );
    store.limiter(|s| s.limiter());
    store
        .set_fuel(limits.1)
        .map_err(|e| fail(format!("fuel: {e}")))?;
    store.set_epoch_deadline(ticks(limits.0));
    store.epoch_deadline_trap();
    let outcome = pre
        .instantiate(&mut store)
        .and_then(|plugin: FactorPlugin| plugin.concierge_mfa_factor().call_describe(&mut store));
    let description = outcome.map_err(|e| {
        let why = match super::error::classify(&id, &e, store.data().memory_refused) {
            MfaError::Budget { budget: "time", .. } => {
                format!("did not return within its timeout ({:?})", limits.0)
            }
            MfaError::Budget { budget, .. } => format!("ran out of {budget}"),
            MfaError::Trap { reason, .. } => format!("trapped: {reason}"),
            other => other.to_string(),
        };
        fail(format!("describe() {why}"))
    })?;
    check_description(&description).map_err(&fail)?;
    Ok(Checked {
        sha256: Sha256::digest(bytes).into(),
        imports,
        description,
    })
}

/// Epoch ticks for a wall-time budget (at least two, so a call never starts past its deadline).
pub fn ticks(timeout: Duration) -> u64 {
    let t = timeout.as_micros() / EPOCH_TICK.as_micros().max(1);
    u64::try_from(t)
        .unwrap_or(u64::MAX)
        .saturating_add(1)
        .max(2)
}

fn check_description(d: &Description) -> Result<(), String> {
    if !valid_plugin_id(&d.id) {
        return Err(format!(
            "describe() returned a malformed id `{}`",
            d.id.chars().take(40).collect::<String>().escape_debug()
        ));
    }
    super::check_localized(&d.name).map_err(|e| format!("describe() name: {e}"))?;
    if d.amr.len() > 8
        || d.amr
            .iter()
            .any(|a| a.is_empty() || a.len() > 32 || !a.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err("describe() returned malformed amr values".into());
    }
    // Phishing resistance is proven only by a built-in WebAuthn factor (domain::auth::AMR_PHR).
    if d.amr.iter().any(|a| a == crate::domain::auth::AMR_PHR) {
        return Err(format!(
            "describe() claims the amr `{}`, which only a built-in factor proves",
            crate::domain::auth::AMR_PHR
        ));
    }
    Ok(())
}

impl Registry {
    pub fn new(engine: PluginEngine, trust: TrustAnchors) -> Self {
        Self {
            engine,
            slots: RwLock::new(BTreeMap::new()),
            trust,
        }
    }

    /// The engine, for compiling and inspecting; guest code goes through `plugin_engine()`.
    pub fn engine(&self) -> &Engine {
        self.engine.engine()
    }

    /// The engine with its epoch ticker (see [`PluginEngine::running`]).
    pub fn plugin_engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Loads every manifest; a plugin that fails stays listed as unavailable. Blocking.
    pub fn load_all(&self, manifests: &[PluginManifest]) {
        let mut next = BTreeMap::new();
        for m in manifests {
            next.insert(m.id.clone(), self.load_slot(m));
        }
        if let Ok(mut slots) = self.slots.write() {
            *slots = next;
        }
    }

    fn load_slot(&self, m: &PluginManifest) -> Slot {
        match load(&self.engine, m, &self.trust) {
            Ok(l) => {
                tracing::info!(plugin = %m.id, file = %m.path.display(), "MFA plugin loaded");
                Slot::Ready(Arc::new(l))
            }
            Err(e) => {
                tracing::error!(plugin = %m.id, error = %e, "MFA plugin unavailable");
                Slot::Failed(Arc::new(Unavailable {
                    manifest: m.clone(),
                    error: e.to_string(),
                    stamp: FileStamp::of(&m.path),
                }))
            }
        }
    }

    /// Reloads the plugins whose manifest or file changed (or all, with `force`); drops the
    /// ones no longer configured. Returns the ids reloaded. Blocking.
    pub fn reload(&self, manifests: &[PluginManifest], force: bool) -> Vec<String> {
        let current = self.snapshot();
        let mut next = BTreeMap::new();
        let mut changed = Vec::new();
        for m in manifests {
            let unchanged = current.get(&m.id).is_some_and(|slot| {
                let stamp = match slot {
                    Slot::Ready(l) => Some(l.stamp),
                    Slot::Failed(f) => f.stamp,
                };
                slot.manifest() == m && stamp == FileStamp::of(&m.path)
            });
            if unchanged && !force {
                if let Some(slot) = current.get(&m.id) {
                    next.insert(m.id.clone(), slot.clone());
                }
                continue;
            }
            changed.push(m.id.clone());
            next.insert(m.id.clone(), self.load_slot(m));
        }
        let removed = current.keys().any(|k| !next.contains_key(k));
        if (!changed.is_empty() || removed)
            && let Ok(mut slots) = self.slots.write()
        {
            *slots = next;
        }
        changed
    }

    pub fn snapshot(&self) -> BTreeMap<String, Slot> {
        self.slots.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether some slot is as `f` says, read in place (no copy of the registry).
    pub fn any(&self, f: impl Fn(&Slot) -> bool) -> bool {
        self.slots.read().is_ok_and(|s| s.values().any(f))
    }

    pub fn get(&self, id: &str) -> Option<Slot> {
        self.slots.read().ok().and_then(|s| s.get(id).cloned())
    }

    /// The plugins that can be called, in id order.
    pub fn ready(&self) -> Vec<Arc<Loaded>> {
        self.snapshot()
            .into_values()
            .filter_map(|s| match s {
                Slot::Ready(l) => Some(l),
                Slot::Failed(_) => None,
            })
            .collect()
    }
}

/// Advances the engine's epoch once per elapsed tick, for as long as the engine lives; a late
/// wake-up (a busy machine) catches up, so deadlines stay in wall time. Returns whether the
/// thread started (without it no call could ever time out: `PluginEngine::running` refuses).
fn spawn_epoch_ticker(engine: &Engine) -> bool {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("mfa-epoch".into())
        .spawn(move || {
            let start = Instant::now();
            let tick = EPOCH_TICK.as_micros().max(1);
            let mut done: u128 = 0;
            while let Some(engine) = weak.upgrade() {
                let due = start.elapsed().as_micros() / tick;
                while done < due {
                    engine.increment_epoch();
                    done += 1;
                }
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the MFA epoch ticker");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mfa::host::{FactorKind, Localized};

    fn described(amr: &[&str]) -> Description {
        Description {
            id: "otp-like".into(),
            name: Localized {
                en: "A factor".into(),
                ko: "인증".into(),
            },
            kind: FactorKind::Totp,
            needs_enrollment: true,
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_plugin_may_not_claim_phishing_resistance() {
        assert!(check_description(&described(&["otp"])).is_ok());
        assert!(check_description(&described(&["hwk"])).is_ok());
        let refused = check_description(&described(&["hwk", "phr"])).unwrap_err();
        assert!(refused.contains("phr"), "{refused}");
    }
}

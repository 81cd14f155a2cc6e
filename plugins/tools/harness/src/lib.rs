//! Owns a minimal wasmtime host for the plugin components: in-memory capabilities (a settable
//! clock, a deterministic random source, one user's state, captured email and SMS, log lines),
//! a fresh store per call with a fuel budget and a memory cap, and only granted imports linked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::error::Context;
use wasmtime::{Config, Engine, Result, Store, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "factor-plugin",
});

pub use concierge::mfa::types::{
    Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError, User,
    Verdict,
};

/// Fuel per call (the manifest example's budget).
pub const FUEL: u64 = 50_000_000;
/// Linear memory cap per call.
pub const MEMORY: usize = 4 << 20;

/// The capabilities a test can grant (`config` is always linked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    Clock,
    Random,
    State,
    Email,
    Sms,
    Log,
}

/// Everything the host side keeps between calls.
pub struct HostState {
    pub now: i64,
    pub config: HashMap<String, String>,
    pub state: HashMap<String, Vec<u8>>,
    pub emails: Vec<(String, String)>,
    pub sms: Vec<(String, String)>,
    pub logs: Vec<String>,
    /// When set, email and SMS sending fail with this message.
    pub send_failure: Option<String>,
    rng: u64,
    limits: StoreLimits,
}

impl Default for HostState {
    fn default() -> Self {
        Self {
            now: 1_700_000_000,
            config: HashMap::new(),
            state: HashMap::new(),
            emails: Vec::new(),
            sms: Vec::new(),
            logs: Vec::new(),
            send_failure: None,
            rng: 0x9E37_79B9_7F4A_7C15,
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY)
                .instances(4)
                .build(),
        }
    }
}

impl concierge::mfa::types::Host for HostState {}

impl concierge::mfa::clock::Host for HostState {
    fn now(&mut self) -> i64 {
        self.now
    }
}

impl concierge::mfa::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl concierge::mfa::random::Host for HostState {
    fn bytes(&mut self, len: u32) -> Vec<u8> {
        (0..len.min(1024))
            .map(|_| {
                // xorshift64*: deterministic, good enough for tests.
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }
}

impl concierge::mfa::state::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).cloned()
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.len() > 64 || value.len() > 4096 {
            return Err("state: key or value too long".into());
        }
        if !self.state.contains_key(&key) && self.state.len() >= 32 {
            return Err("state: too many keys".into());
        }
        self.state.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) {
        self.state.remove(&key);
    }
}

impl concierge::mfa::email::Host for HostState {
    fn send_email(&mut self, subject: String, body: String) -> Result<(), String> {
        if let Some(failure) = &self.send_failure {
            return Err(failure.clone());
        }
        self.emails.push((subject, body));
        Ok(())
    }
}

impl concierge::mfa::sms::Host for HostState {
    fn send_sms(&mut self, to: String, body: String) -> Result<(), String> {
        if let Some(failure) = &self.send_failure {
            return Err(failure.clone());
        }
        self.sms.push((to, body));
        Ok(())
    }
}

impl concierge::mfa::log::Host for HostState {
    fn log(&mut self, level: concierge::mfa::log::Level, message: String) {
        self.logs.push(format!("{level:?}: {message}"));
    }
}

/// A loaded plugin and the host state its calls share.
pub struct Plugin {
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
    pub host: HostState,
}

/// The repository's `plugins/dist` folder.
pub fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

impl Plugin {
    /// Loads `plugins/dist/<relative>` with `grants` linked (and `config`, always).
    pub fn load(relative: &str, grants: &[Grant]) -> Result<Self> {
        let engine = engine()?;
        let component = compiled(&engine, relative)?;
        let mut linker = Linker::new(&engine);
        type Data = HasSelf<HostState>;
        concierge::mfa::types::add_to_linker::<_, Data>(&mut linker, |s| s)?;
        concierge::mfa::config::add_to_linker::<_, Data>(&mut linker, |s| s)?;
        for grant in grants {
            match grant {
                Grant::Clock => {
                    concierge::mfa::clock::add_to_linker::<_, Data>(&mut linker, |s| s)?
                }
                Grant::Random => {
                    concierge::mfa::random::add_to_linker::<_, Data>(&mut linker, |s| s)?
                }
                Grant::State => {
                    concierge::mfa::state::add_to_linker::<_, Data>(&mut linker, |s| s)?
                }
                Grant::Email => {
                    concierge::mfa::email::add_to_linker::<_, Data>(&mut linker, |s| s)?
                }
                Grant::Sms => concierge::mfa::sms::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::Log => concierge::mfa::log::add_to_linker::<_, Data>(&mut linker, |s| s)?,
            }
        }
        // Fail at load, as the broker does, when an import is not granted.
        linker.instantiate_pre(&component)?;
        Ok(Self {
            engine,
            component,
            linker,
            host: HostState::default(),
        })
    }

    /// Runs one call in a fresh store (fuel and memory capped), keeping the host state.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&exports::concierge::mfa::factor::Guest, &mut Store<HostState>) -> Result<R>,
    ) -> Result<R> {
        let mut store = Store::new(&self.engine, std::mem::take(&mut self.host));
        store.limiter(|host| &mut host.limits);
        store.set_fuel(FUEL)?;
        let result = FactorPlugin::instantiate(&mut store, &self.component, &self.linker)
            .and_then(|plugin| f(plugin.concierge_mfa_factor(), &mut store));
        self.host = std::mem::take(store.data_mut());
        result
    }

    pub fn describe(&mut self) -> Result<Description> {
        self.call(|factor, store| factor.call_describe(store))
    }

    pub fn is_enrolled(&mut self, user: &User) -> Result<bool> {
        self.call(|factor, store| factor.call_is_enrolled(store, user))
    }

    pub fn enroll_begin(&mut self, user: &User) -> Result<Result<Form, PluginError>> {
        self.call(|factor, store| factor.call_enroll_begin(store, user))
    }

    pub fn enroll_finish(
        &mut self,
        user: &User,
        answer: &[(&str, &str)],
    ) -> Result<Result<EnrollStep, PluginError>> {
        let answer = owned(answer);
        self.call(|factor, store| factor.call_enroll_finish(store, user, &answer))
    }

    pub fn challenge_begin(&mut self, user: &User) -> Result<Result<Form, PluginError>> {
        self.call(|factor, store| factor.call_challenge_begin(store, user))
    }

    pub fn verify(
        &mut self,
        user: &User,
        answer: &[(&str, &str)],
    ) -> Result<Result<Verdict, PluginError>> {
        let answer = owned(answer);
        self.call(|factor, store| factor.call_verify(store, user, &answer))
    }
}

/// One engine for every test (fuel on), so compiled components can be shared.
fn engine() -> Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let mut config = Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config)?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

/// `plugins/dist/<relative>` compiled once per test binary (compiling dominates test time).
fn compiled(engine: &Engine, relative: &str) -> Result<Component> {
    static CACHE: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(component) = cache.lock().ok().and_then(|c| c.get(relative).cloned()) {
        return Ok(component);
    }
    let path = dist().join(relative);
    let component = Component::from_file(engine, &path)
        .with_context(|| format!("loading {} (run plugins/build.sh first)", path.display()))?;
    if let Ok(mut cache) = cache.lock() {
        cache.insert(relative.to_owned(), component.clone());
    }
    Ok(component)
}

fn owned(answer: &[(&str, &str)]) -> Vec<(String, String)> {
    answer
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A test user.
pub fn user(locale: &str) -> User {
    User {
        id: "u-1".into(),
        email: "ana@example.com".into(),
        locale: locale.into(),
    }
}

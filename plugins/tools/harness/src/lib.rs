//! Owns a minimal wasmtime host for plugin components, for the plugins' end-to-end tests and for
//! an integrator's own: load any component (contract 0.1 or 0.2) with the grants you choose,
//! drive its `factor` export, and control the capabilities from the test (a settable clock, a
//! deterministic random source, one user's state, captured email and SMS and log lines, and a
//! fake `http` that records each request and answers with the responses the test queued). Each
//! call gets a fresh store with a fuel budget and a memory cap; only granted imports are linked,
//! so a component that imports more than it was granted fails to load, as in the broker.
//!
//! ```no_run
//! use concierge_plugin_harness::{Grant, Plugin, Verdict, user};
//!
//! let mut p = Plugin::from_file("my-factor.wasm", &[Grant::Clock, Grant::State]).unwrap();
//! let ana = user("en");
//! p.host.now += 60; // the clock is yours
//! let verdict = p.verify(&ana, &[("code", "123456")]).unwrap().unwrap();
//! assert!(matches!(verdict, Verdict::Rejected(_)));
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::error::Context;
use wasmtime::{Config, Engine, Result, Store, StoreLimits, StoreLimitsBuilder};

// The 0.2 world: 0.1's imports and export plus `http` and `claims`. A 0.1 component instantiates with it too
// (it simply imports no `http`), so one host runs both contracts, as the broker does.
wasmtime::component::bindgen!({
    path: ["../../wit/mfa.wit", "../../wit/0.2"],
    world: "concierge:mfa/factor-plugin@0.2.0",
});

use concierge::mfa0_1_0 as v1;
use concierge::mfa0_2_0::{claims, http};

pub use http::{
    Body as HttpBody, HttpError, Request as HttpRequest, Response as HttpResponse, SecretRef,
};
pub use v1::types::{
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
    /// Contract 0.2's `http`, answered by the fake in `HostState` (`http_responses`).
    Http,
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
    /// Every `http` request the plugin made, as it made it (secrets by name, never a value).
    pub http_requests: Vec<HttpRequest>,
    /// What the next `http` requests get, in order; when empty, `failed("no canned response")`.
    pub http_responses: VecDeque<Result<HttpResponse, HttpError>>,
    /// The user's upstream claims the plugin may read (contract 0.2's `claims`, always linked as
    /// in the broker: what the manifest's `claims` lists and the user's upstream kept).
    pub claims: HashMap<String, String>,
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
            http_requests: Vec::new(),
            http_responses: VecDeque::new(),
            claims: HashMap::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY)
                .instances(4)
                .build(),
        }
    }
}

impl v1::types::Host for HostState {}

impl v1::clock::Host for HostState {
    fn now(&mut self) -> i64 {
        self.now
    }
}

impl v1::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl v1::random::Host for HostState {
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

impl v1::state::Host for HostState {
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

impl v1::email::Host for HostState {
    fn send_email(&mut self, subject: String, body: String) -> Result<(), String> {
        if let Some(failure) = &self.send_failure {
            return Err(failure.clone());
        }
        self.emails.push((subject, body));
        Ok(())
    }
}

impl v1::sms::Host for HostState {
    fn send_sms(&mut self, to: String, body: String) -> Result<(), String> {
        if let Some(failure) = &self.send_failure {
            return Err(failure.clone());
        }
        self.sms.push((to, body));
        Ok(())
    }
}

impl v1::log::Host for HostState {
    fn log(&mut self, level: v1::log::Level, message: String) {
        self.logs.push(format!("{level:?}: {message}"));
    }
}

impl http::Host for HostState {
    fn send(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.http_requests.push(request);
        self.http_responses
            .pop_front()
            .unwrap_or_else(|| Err(HttpError::Failed("harness: no canned response".into())))
    }
}

impl claims::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.claims.get(&name).cloned()
    }
}

/// A canned `http` response: `status`, no headers, `body`.
pub fn http_response(status: u16, body: &str) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    })
}

/// A loaded plugin and the host state its calls share.
pub struct Plugin {
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
    pub host: HostState,
    /// Fuel the last call used (instantiation included), against the budget `FUEL`.
    pub last_fuel: u64,
}

/// The repository's `plugins/dist` folder (for this repository's tests).
pub fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

impl Plugin {
    /// Loads `plugins/dist/<relative>` (this repository's build) with `grants` linked (and
    /// `config`, always).
    pub fn load(relative: &str, grants: &[Grant]) -> Result<Self> {
        Self::from_file(dist().join(relative), grants)
    }

    /// Loads the component at `path` with `grants` linked (and `config`, always). Fails, as
    /// the broker does, when the component imports a capability that is not granted.
    pub fn from_file(path: impl AsRef<Path>, grants: &[Grant]) -> Result<Self> {
        let engine = engine()?;
        let component = compiled(&engine, path.as_ref())?;
        let mut linker = Linker::new(&engine);
        type Data = HasSelf<HostState>;
        v1::types::add_to_linker::<_, Data>(&mut linker, |s| s)?;
        v1::config::add_to_linker::<_, Data>(&mut linker, |s| s)?;
        claims::add_to_linker::<_, Data>(&mut linker, |s| s)?;
        for grant in grants {
            match grant {
                Grant::Clock => v1::clock::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::Random => v1::random::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::State => v1::state::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::Email => v1::email::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::Sms => v1::sms::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::Log => v1::log::add_to_linker::<_, Data>(&mut linker, |s| s)?,
                Grant::Http => http::add_to_linker::<_, Data>(&mut linker, |s| s)?,
            }
        }
        // Fail at load, as the broker does, when an import is not granted.
        linker.instantiate_pre(&component)?;
        Ok(Self {
            engine,
            component,
            linker,
            host: HostState::default(),
            last_fuel: 0,
        })
    }

    /// Runs one call in a fresh store (fuel and memory capped), keeping the host state.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&exports::concierge::mfa0_1_0::factor::Guest, &mut Store<HostState>) -> Result<R>,
    ) -> Result<R> {
        let mut store = Store::new(&self.engine, std::mem::take(&mut self.host));
        store.limiter(|host| &mut host.limits);
        store.set_fuel(FUEL)?;
        let result = FactorPlugin::instantiate(&mut store, &self.component, &self.linker)
            .and_then(|plugin| f(plugin.concierge_mfa0_1_0_factor(), &mut store));
        self.last_fuel = FUEL.saturating_sub(store.get_fuel().unwrap_or(0));
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

/// The component at `path`, compiled once per test binary (compiling dominates test time).
fn compiled(engine: &Engine, path: &Path) -> Result<Component> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(component) = cache.lock().ok().and_then(|c| c.get(path).cloned()) {
        return Ok(component);
    }
    let component = Component::from_file(engine, path)
        .with_context(|| format!("loading {} (build it first)", path.display()))?;
    if let Ok(mut cache) = cache.lock() {
        cache.insert(path.to_owned(), component.clone());
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

//! MFA plugin host (issue #5): what one second-factor `verify` costs through the wasmtime host.
//!
//! 1. Host overhead, no storage: the steps of `Mfa::call` around a plugin call (fresh wasmtime
//!    `Store` with the call's data, memory limiter, fuel, epoch deadline, instantiate through the
//!    linked `InstancePre`, the `verify` call, the store's data and outcome read back), with the
//!    stateless test factor (`test-factor-v1`, accepts 111111) and with TOTP on an in-memory
//!    state; plus instantiate alone, a call on a live instance, and the fuel one verify burns.
//! 2. `Mfa::verify` end to end on SQLite (and PostgreSQL with `CONCIERGE_BENCH_PG_URL`): lockout
//!    check, state read and decrypt, plugin, state encrypt and compare-and-swap write. TOTP codes stay fresh: a `ManualClock` moves to the next 30 s time step
//!    before each verify and the code for that step is computed here (RFC 6238, outside the timed
//!    part), so every timed verify is a success that writes state.
//!
//! ```sh
//! taskset -c 1 cargo bench -p concierge --bench mfa_verify
//! ```
//!
//! `bench/mfa.sh` builds the plugins if needed and runs it pinned. Progress goes to stderr, a
//! Markdown table to stdout. Environment: `CONCIERGE_BENCH_PLUGIN_DIR` (default: plugins/dist,
//! or `CONCIERGE_TEST_PLUGIN_DIR`), `CONCIERGE_BENCH_PG_URL`, `CONCIERGE_BENCH_HOST_ITERS`
//! (100000), `CONCIERGE_BENCH_DB_ITERS` (20000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::clock::{Clock, Entropy, ManualClock, OsEntropy};
use concierge::config::DatabaseUrl;
use concierge::config::mfa::{RawMfa, RawPlugin};
use concierge::domain::auth::AMR_MFA;
use concierge::domain::kek::KeyEncryptionKey;
use concierge::domain::policy::MfaRequirement;
use concierge::domain::{Email, Locale, UserId};
use concierge::mfa::host::{CallState, EnrollStep, FactorPlugin, PluginError, User as WitUser};
use concierge::mfa::host::{Form, Verdict};
use concierge::mfa::registry::{self, Loaded, Slot};
use concierge::mfa::{EnrollOutcome, FactorUser, Mfa, VerifyOutcome};
use concierge::storage::{DieselStore, Store, User};
use sha2::{Digest, Sha256};
use wasmtime::Store as WasmStore;

/// Broker time at the start (any fixed instant; TOTP steps count from here).
const START: i64 = 1_800_000_000;
const TEST_FACTOR_ANSWER: &str = "111111";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a count"))
        })
        .unwrap_or(default)
}

fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("CONCIERGE_BENCH_PLUGIN_DIR")
        .or_else(|| std::env::var_os("CONCIERGE_TEST_PLUGIN_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist"));
    assert!(
        dir.join("totp.wasm").is_file() && dir.join("test/test-factor-v1.wasm").is_file(),
        "no built plugins in {}: run plugins/build.sh or set CONCIERGE_BENCH_PLUGIN_DIR",
        dir.display()
    );
    dir
}

/// The two plugins as an operator would configure them (default limits: 100 ms, 50M fuel,
/// 4 MiB), validated like the config file.
fn settings(dir: &Path) -> concierge::config::mfa::MfaSettings {
    let plugin = |id: &str, file: &str, grants: &[&str]| {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        let mut raw: RawPlugin = toml::from_str(&format!(
            "id = {id:?}\npath = {:?}\nsha256 = {:?}",
            path.display().to_string(),
            hex::encode(Sha256::digest(&bytes))
        ))
        .unwrap();
        raw.grants = grants.iter().map(|g| (*g).to_owned()).collect();
        raw
    };
    let raw = RawMfa {
        required: MfaRequirement::Optional,
        plugins: vec![
            plugin("totp", "totp.wasm", &["clock", "random", "state", "log"]),
            plugin("test-factor", "test/test-factor-v1.wasm", &["clock"]),
        ],
        ..RawMfa::default()
    };
    raw.validate(|key, msg| format!("{key}: {msg}")).unwrap()
}

fn new_mfa(url: &DatabaseUrl, dir: &Path) -> (Mfa, FactorUser, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let store: Arc<dyn Store> =
        Arc::new(DieselStore::open(url, 4, Duration::from_secs(5)).unwrap());
    store.migrate().unwrap();
    let user = User {
        id: UserId::new_random(&OsEntropy),
        email: Email::parse(&format!(
            "mfa-bench-{}@example.com",
            hex::encode(&OsEntropy.bytes32()[..8])
        ))
        .unwrap(),
        name: String::new(),
        password_hash: None,
        disabled: false,
        created_at: START,
        updated_at: START,
        tokens_valid_after: 0,
    };
    store.insert_user(&user).unwrap();
    let mfa = Mfa::new(
        settings(dir),
        Arc::clone(&store),
        Arc::clone(&clock) as Arc<dyn Clock>,
        Arc::new(OsEntropy),
        Arc::new(KeyEncryptionKey::new([7u8; 32]).into()),
        None,
    )
    .unwrap();
    for id in ["totp", "test-factor"] {
        assert!(
            matches!(mfa.registry().get(id), Some(Slot::Ready(_))),
            "plugin {id} did not load"
        );
    }
    let fu = FactorUser {
        id: user.id.clone(),
        email: user.email.as_str().to_owned(),
        locale: Locale::En,
        hardware_only: false,
        claims: Default::default(),
    };
    (mfa, fu, clock)
}

// --- RFC 6238 (SHA-1, 6 digits, 30 s), to answer like an authenticator app -------------------

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .expect("base32 secret") as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

fn totp(secret: &[u8], at: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let counter = u64::try_from(at / 30).unwrap().to_be_bytes();
    let mac = ring::hmac::sign(&key, &counter);
    let h = mac.as_ref();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", bin % 1_000_000)
}

/// The next time step after `now` whose code differs from both neighbours', moving `now` there.
/// (About one step in 500,000 shares its 6-digit code with a neighbour; the plugin, which accepts
/// one step of skew, could then take it for the neighbouring step and later see a replay.)
fn next_code(secret: &[u8], now: &mut i64) -> String {
    loop {
        *now += 30;
        let code = totp(secret, *now);
        if code != totp(secret, *now - 30) && code != totp(secret, *now + 30) {
            return code;
        }
    }
}

fn code_answer(code: &str) -> Vec<(String, String)> {
    vec![("code".to_owned(), code.to_owned())]
}

// --- the host path without storage ------------------------------------------------------------

/// The steps of `Mfa::call` with the state passed in and out as a map (no storage, no crypto):
/// fresh store and call data, limiter, fuel, epoch deadline, instantiate, call, data back.
/// Returns the call's value, the store data, and the fuel the call burnt.
fn host_call<R>(
    mfa: &Mfa,
    loaded: &Loaded,
    now: i64,
    state: BTreeMap<String, Vec<u8>>,
    user: &FactorUser,
    f: impl FnOnce(&FactorPlugin, &mut WasmStore<CallState>, &WitUser) -> wasmtime::Result<R>,
) -> (R, CallState, u64) {
    let m = &loaded.manifest;
    let mut store = WasmStore::new(
        mfa.registry().engine(),
        CallState::new(
            &m.id,
            now,
            Arc::new(OsEntropy),
            Arc::clone(&loaded.config),
            state,
            m.memory_bytes,
        ),
    );
    store.limiter(|s| s.limiter());
    store.set_fuel(m.fuel).unwrap();
    store.set_epoch_deadline(registry::ticks(m.timeout));
    store.epoch_deadline_trap();
    let wit_user = WitUser {
        id: user.id.as_str().to_owned(),
        email: user.email.clone(),
        locale: user.locale.as_str().to_owned(),
    };
    let value = loaded
        .pre
        .instantiate(&mut store)
        .and_then(|plugin| f(&plugin, &mut store, &wit_user))
        .expect("plugin call");
    let fuel = m.fuel - store.get_fuel().unwrap();
    (value, store.into_data(), fuel)
}

/// What `Mfa::verify` does with a verdict that passed (the amr the session gets).
fn accepted_amr(loaded: &Loaded, r: Result<Verdict, PluginError>) -> Vec<String> {
    match r {
        Ok(Verdict::Accepted) => {
            let mut amr = loaded.description.amr.clone();
            amr.push(AMR_MFA.to_owned());
            amr
        }
        Ok(Verdict::Rejected(m)) => panic!("rejected: {}", m.en),
        Err(e) => panic!("plugin error: {e:?}"),
    }
}

fn loaded(mfa: &Mfa, id: &str) -> Arc<Loaded> {
    match mfa.registry().get(id) {
        Some(Slot::Ready(l)) => l,
        _ => panic!("{id} not loaded"),
    }
}

/// Enrols TOTP through the host path with an in-memory state; returns the state and secret.
fn enrol_in_memory(
    mfa: &Mfa,
    l: &Loaded,
    user: &FactorUser,
) -> (BTreeMap<String, Vec<u8>>, Vec<u8>) {
    let (form, data, _) = host_call(mfa, l, START, BTreeMap::new(), user, |p, s, u| {
        p.concierge_mfa_factor().call_enroll_begin(s, u)
    });
    let form: Form = form.expect("enroll_begin");
    let secret = base32_decode(form.secret.as_deref().expect("the form shows the secret"));
    let answer = code_answer(&totp(&secret, START));
    let (step, data, _) = host_call(mfa, l, START, data.state, user, |p, s, u| {
        p.concierge_mfa_factor().call_enroll_finish(s, u, &answer)
    });
    assert!(matches!(step, Ok(EnrollStep::Done)), "enrolment finished");
    (data.state, secret)
}

// --- measuring ----------------------------------------------------------------------------------

struct Row {
    what: String,
    ns: Vec<u64>,
}

impl Row {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.ns.len() as f64 * p).ceil() as usize).clamp(1, self.ns.len()) - 1;
        self.ns[i] as f64 / 1000.0
    }
    fn mean(&self) -> f64 {
        self.ns.iter().sum::<u64>() as f64 / self.ns.len() as f64 / 1000.0
    }
    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.0} |",
            self.what,
            self.ns.len(),
            self.pct(0.50),
            self.pct(0.99),
            self.pct(0.999),
            self.mean(),
            1e6 / self.mean(),
        )
    }
}

/// Runs `warmup` untimed then `n` timed iterations of `f`; `prepare` runs before each one,
/// outside the timed part, and hands `f` its input.
fn measure<I>(
    what: &str,
    n: usize,
    mut prepare: impl FnMut(usize) -> I,
    mut f: impl FnMut(I),
) -> Row {
    let warmup = (n / 10).max(100);
    eprintln!("==> {what}: {warmup} untimed, {n} timed");
    for i in 0..warmup {
        let input = prepare(i);
        f(input);
    }
    let mut ns = Vec::with_capacity(n);
    for i in 0..n {
        let input = prepare(warmup + i);
        let t = Instant::now();
        f(input);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    Row {
        what: what.to_owned(),
        ns,
    }
}

fn host_rows(mfa: &Mfa, user: &FactorUser, n: usize, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let tf = loaded(mfa, "test-factor");
    let totp_l = loaded(mfa, "totp");
    let answer = code_answer(TEST_FACTOR_ANSWER);

    // Instantiate alone: fresh store and data, limiter, fuel, deadline, instantiate, drop.
    for (name, l) in [("test factor", &tf), ("TOTP", &totp_l)] {
        rows.push(measure(
            &format!("instantiate only ({name}): store + instantiate + drop"),
            n,
            |_| (),
            |()| {
                let m = &l.manifest;
                let mut store = WasmStore::new(
                    mfa.registry().engine(),
                    CallState::new(
                        &m.id,
                        START,
                        Arc::new(OsEntropy),
                        Arc::clone(&l.config),
                        BTreeMap::new(),
                        m.memory_bytes,
                    ),
                );
                store.limiter(|s| s.limiter());
                store.set_fuel(m.fuel).unwrap();
                store.set_epoch_deadline(registry::ticks(m.timeout));
                store.epoch_deadline_trap();
                let plugin = l.pre.instantiate(&mut store).expect("instantiate");
                std::hint::black_box(&plugin);
            },
        ));
    }

    // (a) The host overhead: one verify of the stateless factor through the host.
    let (_, _, fuel_tf) = host_call(mfa, &tf, START, BTreeMap::new(), user, |p, s, u| {
        p.concierge_mfa_factor().call_verify(s, u, &answer)
    });
    rows.push(measure(
        "**(a) host overhead**: verify, test factor (store + instantiate + call + outcome)",
        n,
        |_| answer.clone(),
        |answer| {
            let (r, data, _) = host_call(mfa, &tf, START, BTreeMap::new(), user, |p, s, u| {
                p.concierge_mfa_factor().call_verify(s, u, &answer)
            });
            assert!(!data.dirty);
            std::hint::black_box(accepted_amr(&tf, r));
        },
    ));

    // A call on a live instance (what instantiating per call adds is the difference).
    {
        let m = &tf.manifest;
        let mut store = WasmStore::new(
            mfa.registry().engine(),
            CallState::new(
                &m.id,
                START,
                Arc::new(OsEntropy),
                Arc::clone(&tf.config),
                BTreeMap::new(),
                m.memory_bytes,
            ),
        );
        store.limiter(|s| s.limiter());
        store.epoch_deadline_trap();
        let plugin = tf.pre.instantiate(&mut store).expect("instantiate");
        let wit_user = WitUser {
            id: user.id.as_str().to_owned(),
            email: user.email.clone(),
            locale: "en".into(),
        };
        rows.push(measure(
            "call on a live instance, test factor (reference, not how the host runs)",
            n,
            |_| (),
            |()| {
                store.set_fuel(m.fuel).unwrap();
                store.set_epoch_deadline(registry::ticks(m.timeout));
                let r = plugin
                    .concierge_mfa_factor()
                    .call_verify(&mut store, &wit_user, &answer)
                    .expect("call");
                assert!(matches!(r, Ok(Verdict::Accepted)));
            },
        ));
    }

    // TOTP through the host with an in-memory state: the plugin's own work on top of (a).
    let (state, secret) = enrol_in_memory(mfa, &totp_l, user);
    let mut state = Some(state);
    let mut fuel_totp = 0;
    let mut now = START;
    rows.push(measure(
        "verify, TOTP, state in memory (host + plugin; no storage, no crypto)",
        n,
        |_| {
            let code = next_code(&secret, &mut now);
            (now, code_answer(&code))
        },
        |(now, answer)| {
            let (r, data, fuel) =
                host_call(mfa, &totp_l, now, state.take().unwrap(), user, |p, s, u| {
                    p.concierge_mfa_factor().call_verify(s, u, &answer)
                });
            std::hint::black_box(accepted_amr(&totp_l, r));
            assert!(data.dirty, "an accepted code records its time step");
            fuel_totp = fuel;
            state = Some(data.state);
        },
    ));
    notes.push(format!(
        "fuel per verify: test factor {fuel_tf}, TOTP {fuel_totp} (manifest default budget 50,000,000)"
    ));
    if let Some(p) = mfa.registry().engine().pooling_allocator_metrics() {
        notes.push(format!(
            "pool after the host runs: {} warm unused memory slots holding {} KiB resident, {} warm tables holding {} KiB",
            p.unused_warm_memories(),
            p.unused_memory_bytes_resident() >> 10,
            p.unused_warm_tables(),
            p.unused_table_bytes_resident() >> 10,
        ));
    }
}

fn db_rows(
    backend: &str,
    (mfa, user, clock): &(Mfa, FactorUser, Arc<ManualClock>),
    n: usize,
    rows: &mut Vec<Row>,
) {
    // TOTP enrolment through the service, as the enrolment page does it.
    let (form, _) = mfa.enroll_begin("totp", user).unwrap();
    let secret = base32_decode(form.secret.as_deref().expect("the form shows the secret"));
    let (done, _) = mfa
        .enroll_finish("totp", user, code_answer(&totp(&secret, clock.now())))
        .unwrap();
    assert!(matches!(done, EnrollOutcome::Done { .. }), "enrolled");

    rows.push(measure(
        &format!("**(b) `Mfa::verify`, TOTP, {backend}** (lockout check, read + decrypt, plugin, encrypt + CAS write)"),
        n,
        |_| {
            let mut now = clock.now();
            let code = next_code(&secret, &mut now);
            clock.set(now);
            code_answer(&code)
        },
        |answer| match mfa.verify("totp", user, answer).unwrap() {
            VerifyOutcome::Accepted { amr } => {
                std::hint::black_box(amr);
            }
            other => panic!("TOTP verify: {other:?}"),
        },
    ));
    rows.push(measure(
        &format!("`Mfa::verify`, test factor, {backend} (the same around a stateless plugin)"),
        n,
        |_| code_answer(TEST_FACTOR_ANSWER),
        |answer| match mfa.verify("test-factor", user, answer).unwrap() {
            VerifyOutcome::Accepted { amr } => {
                std::hint::black_box(amr);
            }
            other => panic!("test factor verify: {other:?}"),
        },
    ));
}

fn main() {
    let dir = plugin_dir();
    let host_iters = env_usize("CONCIERGE_BENCH_HOST_ITERS", 100_000);
    let db_iters = env_usize("CONCIERGE_BENCH_DB_ITERS", 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let sqlite = new_mfa(&DatabaseUrl::Sqlite(tmp.path().join("bench.db")), &dir);
    host_rows(&sqlite.0, &sqlite.1, host_iters, &mut rows, &mut notes);
    if db_iters > 0 {
        db_rows("SQLite", &sqlite, db_iters, &mut rows);
    }
    if let Some(url) = std::env::var("CONCIERGE_BENCH_PG_URL")
        .ok()
        .filter(|_| db_iters > 0)
    {
        let pg = new_mfa(&DatabaseUrl::Postgres(url), &dir);
        db_rows("PostgreSQL", &pg, db_iters, &mut rows);
    }

    println!(
        "| what is timed | iterations | p50 (µs) | p99 (µs) | p99.9 (µs) | mean (µs) | per second, one core (1 / mean) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.markdown());
    }
    println!();
    for n in &notes {
        println!("- {n}");
    }
}

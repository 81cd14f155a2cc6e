//! Passkeys (issue #19): the server-side time of one WebAuthn authentication verification.
//!
//! A software authenticator here (P-256 through OpenSSL; authenticatorData, clientDataJSON and
//! the COSE key laid out by hand as WebAuthn L3 §6.1 and RFC 9053 say) registers one credential
//! through the factor's own enrolment, then answers one fresh challenge per iteration; only the
//! broker's check is timed:
//!
//! 1. `verify`: the passkey as a second factor (`NativeFactor::verify`): the answer's JSON
//!    parsed, webauthn-rs's checks (client data, rpIdHash, flags, the ES256 signature, the
//!    counter), the user's credentials read and the use recorded (compare-and-set) on SQLite.
//! 2. `identify`: the passkey without a password (`Passwordless::identify`): the same, plus the
//!    owner found by credential id, the user handle and the account checked.
//! 3. `p256 verify`: one ECDSA P-256 signature check through OpenSSL alone, the floor under both.
//!
//! ```sh
//! taskset -c 1 cargo bench -p concierge --bench passkey_verify
//! ```
//!
//! Progress goes to stderr, a Markdown table to stdout. `CONCIERGE_BENCH_ITERS` (default 3000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use concierge::audit::Auditor;
use concierge::clock::{Clock, Entropy, ManualClock, OsEntropy};
use concierge::config::DatabaseUrl;
use concierge::config::mfa::PasskeySettings;
use concierge::domain::{Email, Locale, UserId};
use concierge::mfa::factor::{
    FirstFactorChallenge, Identified, NativeEnrolled, NativeFactor, NativeVerdict, Passwordless,
    Prompt,
};
use concierge::mfa::{FactorUser, passkey};
use concierge::storage::{DieselStore, Store, User};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::Private;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const START: i64 = 1_800_000_000;
const ORIGIN: &str = "http://localhost:8080";

/// A CBOR head (RFC 8949 §3): major type and length.
fn head(major: u8, len: usize) -> Vec<u8> {
    match len {
        0..=23 => vec![major << 5 | len as u8],
        24..=255 => vec![major << 5 | 24, len as u8],
        _ => vec![major << 5 | 25, (len >> 8) as u8, len as u8],
    }
}

fn text(s: &str) -> Vec<u8> {
    let mut out = head(3, s.len());
    out.extend_from_slice(s.as_bytes());
    out
}

fn bytes(b: &[u8]) -> Vec<u8> {
    let mut out = head(2, b.len());
    out.extend_from_slice(b);
    out
}

/// The software authenticator: one P-256 key, its credential id, its counter.
struct Authenticator {
    key: EcKey<Private>,
    id: Vec<u8>,
    counter: u32,
}

impl Authenticator {
    fn new() -> Self {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Self {
            key: EcKey::generate(&group).unwrap(),
            id: OsEntropy.bytes32().to_vec(),
            counter: 0,
        }
    }

    /// The COSE_Key (RFC 9053 §7.1.1, EC2, ES256) of the public key.
    fn cose_key(&self) -> Vec<u8> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = self
            .key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let mut out = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        out.extend(bytes(&point[1..33]));
        out.push(0x22);
        out.extend(bytes(&point[33..65]));
        out
    }

    fn auth_data(&self, rp_id: &str, flags: u8, attested: bool) -> Vec<u8> {
        let mut d = Sha256::digest(rp_id.as_bytes()).to_vec();
        d.push(flags);
        d.extend_from_slice(&self.counter.to_be_bytes());
        if attested {
            d.extend_from_slice(&[0; 16]);
            d.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
            d.extend_from_slice(&self.id);
            d.extend(self.cose_key());
        }
        d
    }

    fn client_data(kind: &str, challenge: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": ORIGIN, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    /// A `none`-attested registration for `options` (the page's `publicKey` wrapper).
    fn create(&self, options: &Value) -> String {
        let pk = &options["publicKey"];
        let cdj = Self::client_data("webauthn.create", pk["challenge"].as_str().unwrap());
        let data = self.auth_data(pk["rp"]["id"].as_str().unwrap(), 0x45, true);
        let mut att = vec![0xa3];
        att.extend(text("fmt"));
        att.extend(text("none"));
        att.extend(text("attStmt"));
        att.push(0xa0);
        att.extend(text("authData"));
        att.extend(bytes(&data));
        json!({
            "id": B64.encode(&self.id), "rawId": B64.encode(&self.id), "type": "public-key",
            "extensions": {},
            "response": {"clientDataJSON": B64.encode(&cdj), "attestationObject": B64.encode(&att),
                         "transports": ["internal"]},
        })
        .to_string()
    }

    /// An assertion for `options`, signed with the next counter.
    fn get(&mut self, options: &Value, user_handle: &str) -> String {
        self.counter += 1;
        let pk = &options["publicKey"];
        let cdj = Self::client_data("webauthn.get", pk["challenge"].as_str().unwrap());
        let data = self.auth_data(pk["rpId"].as_str().unwrap(), 0x05, false);
        let mut signed = data.clone();
        signed.extend_from_slice(&Sha256::digest(&cdj));
        let digest = Sha256::digest(&signed);
        let sig = EcdsaSig::sign(&digest, &self.key)
            .unwrap()
            .to_der()
            .unwrap();
        json!({
            "id": B64.encode(&self.id), "rawId": B64.encode(&self.id), "type": "public-key",
            "extensions": {},
            "response": {"clientDataJSON": B64.encode(&cdj), "authenticatorData": B64.encode(&data),
                         "signature": B64.encode(&sig), "userHandle": user_handle},
        })
        .to_string()
    }
}

fn options_of(prompt: &Prompt) -> Value {
    let Prompt::Native { data, .. } = prompt else {
        panic!("not a native prompt")
    };
    serde_json::from_str(data["options"].as_str().unwrap()).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

fn row(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
    println!(
        "| {what} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        times.len(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 99.9),
        mean * 1e6,
        1.0 / mean
    );
}

fn main() {
    let iters: usize = std::env::var("CONCIERGE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        DieselStore::open(
            &DatabaseUrl::Sqlite(dir.path().join("p.db")),
            2,
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    store.migrate().unwrap();
    let user = User {
        id: UserId::new_random(&OsEntropy),
        email: Email::parse("passkey-bench@example.com").unwrap(),
        name: String::new(),
        password_hash: None,
        disabled: false,
        created_at: START,
        updated_at: START,
        tokens_valid_after: 0,
    };
    store.insert_user(&user).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(START));
    let dyn_store: Arc<dyn Store> = store.clone();
    let audit = Arc::new(Auditor::new(Arc::clone(&dyn_store), Arc::clone(&clock)).unwrap());
    let passkeys = passkey::offer(
        &PasskeySettings {
            enabled: true,
            hardware: Vec::new(),
        },
        &url::Url::parse(ORIGIN).unwrap(),
        "Bench",
        dyn_store,
        clock,
        audit,
    )
    .expect("passkeys on localhost");
    let fu = FactorUser {
        id: user.id.clone(),
        email: user.email.as_str().to_owned(),
        locale: Locale::En,
        hardware_only: false,
        claims: Default::default(),
    };

    // Registration through the factor's own enrolment.
    let mut auth = Authenticator::new();
    let reg = passkeys.begin(&fu, true).unwrap();
    let reg_options = options_of(&reg);
    let user_handle = reg_options["publicKey"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = auth.create(&reg_options);
    match passkeys
        .enroll_finish(&fu, &reg, &[("credential".to_owned(), created)])
        .unwrap()
    {
        NativeEnrolled::Done { .. } => {}
        NativeEnrolled::Retry(m) => panic!("registration refused: {}", m.en),
    }

    eprintln!("timing {iters} second-factor verifications");
    let mut verify = Vec::with_capacity(iters);
    for _ in 0..iters {
        let prompt = passkeys.begin(&fu, false).unwrap();
        let answer = vec![(
            "credential".to_owned(),
            auth.get(&options_of(&prompt), &user_handle),
        )];
        let t = Instant::now();
        let verdict = passkeys.verify(&fu, &prompt, &answer).unwrap();
        verify.push(t.elapsed());
        assert!(
            matches!(verdict, NativeVerdict::Accepted { .. }),
            "{verdict:?}"
        );
    }

    eprintln!("timing {iters} passwordless identifications");
    let mut identify = Vec::with_capacity(iters);
    for _ in 0..iters {
        let challenge: FirstFactorChallenge = passkeys.challenge().unwrap();
        let options: Value = serde_json::from_str(&challenge.options).unwrap();
        let answer = auth.get(&options, &user_handle);
        let t = Instant::now();
        let who = passkeys.identify(&challenge, &answer).unwrap();
        identify.push(t.elapsed());
        assert!(matches!(who, Identified::User { .. }), "{who:?}");
    }

    eprintln!("timing {iters} P-256 verifications through OpenSSL");
    let digest = Sha256::digest(b"floor");
    let sig = EcdsaSig::sign(&digest, &auth.key).unwrap();
    let public = EcKey::from_public_key(auth.key.group(), auth.key.public_key()).unwrap();
    let mut floor = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        assert!(sig.verify(&digest, &public).unwrap());
        floor.push(t.elapsed());
    }

    println!(
        "| what is timed | iterations | p50 (µs) | p99 (µs) | p99.9 (µs) | mean (µs) | per second, one core (1 / mean) |"
    );
    println!("|---|---|---|---|---|---|---|");
    row(
        "second factor: `NativeFactor::verify` (parse, webauthn-rs, read + record on SQLite)",
        verify,
    );
    row(
        "passwordless: `Passwordless::identify` (owner by credential id, handle, account, read + record on SQLite)",
        identify,
    );
    row("floor: one ECDSA P-256 verify (OpenSSL)", floor);
}

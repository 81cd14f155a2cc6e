//! Owns the provider's signing keys: generation (RS256, ES256, EdDSA), encryption of private keys
//! at rest (AES-256-GCM under the configured key-encryption key), rotation that publishes a key
//! before it signs and keeps retired keys published while their tokens live, and the JWKS.

use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use serde_json::{Value, json};

use crate::clock::{Entropy, UnixTime};
use crate::domain::jose::Alg;
use crate::domain::kek::{KeyEncryptionKeys, SealError};
use crate::jwt::{JwtError, Signer, Verifier};
use crate::storage::{SigningKeyRecord, StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("private key of {kid} cannot be decrypted: wrong key_encryption_key or corrupt data")]
    Decrypt { kid: String },
    #[error("key {kid}: {source}")]
    Parse { kid: String, source: JwtError },
    #[error("no signing key for {0}")]
    NoKey(&'static str),
    #[error(transparent)]
    Seal(#[from] crate::domain::kek::SealError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A key loaded for use.
pub struct LoadedKey {
    pub kid: String,
    pub alg: Alg,
    pub signer: Signer,
    pub verifier: Verifier,
    pub public_jwk: Value,
    pub active_at: UnixTime,
    pub retired_at: Option<UnixTime>,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn verifier_from_jwk(jwk: &Value) -> Option<Verifier> {
    let field = |k: &str| {
        jwk.get(k)
            .and_then(Value::as_str)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
    };
    match jwk.get("kty").and_then(Value::as_str)? {
        "RSA" => Some(Verifier::Rsa {
            n: field("n")?,
            e: field("e")?,
        }),
        "EC" => {
            let mut point = vec![4u8];
            point.extend(field("x")?);
            point.extend(field("y")?);
            Some(Verifier::Ec { point })
        }
        "OKP" => Some(Verifier::Ed {
            public: field("x")?,
        }),
        _ => None,
    }
}

/// Creates a new key pair; returns the PKCS#8 private key and the public JWK.
fn generate(alg: Alg, kid: &str) -> Result<(Vec<u8>, Value), KeyError> {
    let rng = SystemRandom::new();
    let gen_err = |e: String| KeyError::Generate(e);
    match alg {
        Alg::RS256 => {
            let rsa = openssl::rsa::Rsa::generate(2048).map_err(|e| gen_err(e.to_string()))?;
            let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
            let der = openssl::pkey::PKey::from_rsa(rsa)
                .and_then(|k| k.private_key_to_pkcs8())
                .map_err(|e| gen_err(e.to_string()))?;
            Ok((der, jwk))
        }
        Alg::ES256 => {
            let der =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| gen_err("P-256".into()))?;
            let signer =
                Signer::from_pkcs8(alg, der.as_ref()).map_err(|e| gen_err(e.to_string()))?;
            let point = signer.public_bytes();
            let jwk = json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                "x": b64(&point[1..33]), "y": b64(&point[33..65])});
            Ok((der.as_ref().to_vec(), jwk))
        }
        Alg::EdDSA => {
            let der =
                Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| gen_err("Ed25519".into()))?;
            let signer =
                Signer::from_pkcs8(alg, der.as_ref()).map_err(|e| gen_err(e.to_string()))?;
            let jwk = json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "kid": kid, "crv": "Ed25519",
                "x": b64(&signer.public_bytes())});
            Ok((der.as_ref().to_vec(), jwk))
        }
    }
}

/// The keys in memory, reloaded from storage so that every instance serves the same set.
pub struct KeyRing {
    kek: KeyEncryptionKeys,
    keys: RwLock<Vec<LoadedKey>>,
}

impl KeyRing {
    pub fn new(kek: impl Into<KeyEncryptionKeys>) -> Self {
        Self {
            kek: kek.into(),
            keys: RwLock::new(Vec::new()),
        }
    }

    /// Creates and stores a new key for `alg` that may sign from `active_at`.
    pub fn create(
        &self,
        store: &dyn Store,
        entropy: &dyn Entropy,
        alg: Alg,
        now: UnixTime,
        active_at: UnixTime,
    ) -> Result<String, KeyError> {
        let record = self.new_record(entropy, alg, now, active_at)?;
        store.insert_signing_key(&record)?;
        Ok(record.kid)
    }

    fn new_record(
        &self,
        entropy: &dyn Entropy,
        alg: Alg,
        now: UnixTime,
        active_at: UnixTime,
    ) -> Result<SigningKeyRecord, KeyError> {
        let mut id = [0u8; 12];
        entropy.fill(&mut id);
        let kid = format!("{}-{}", alg.as_str().to_ascii_lowercase(), b64(&id));
        let (der, jwk) = generate(alg, &kid)?;
        Ok(SigningKeyRecord {
            private_key_enc: self.kek.seal(&kid, &der, entropy)?,
            kid,
            alg: alg.as_str().into(),
            public_jwk: jwk.to_string(),
            created_at: now,
            active_at,
            retired_at: None,
        })
    }

    /// Loads every stored key (decrypting private keys) into memory.
    pub fn reload(&self, store: &dyn Store) -> Result<(), KeyError> {
        let mut loaded = Vec::new();
        for r in store.signing_keys()? {
            let Some(alg) = Alg::parse(&r.alg) else {
                continue;
            };
            let der = self
                .kek
                .open(&r.kid, &r.private_key_enc)
                .map_err(|e| match e {
                    e @ SealError::UnknownKey { .. } => KeyError::Seal(e),
                    _ => KeyError::Decrypt { kid: r.kid.clone() },
                })?;
            let signer = Signer::from_pkcs8(alg, &der).map_err(|source| KeyError::Parse {
                kid: r.kid.clone(),
                source,
            })?;
            let public_jwk: Value =
                serde_json::from_str(&r.public_jwk).map_err(|_| KeyError::Parse {
                    kid: r.kid.clone(),
                    source: JwtError::Malformed,
                })?;
            let verifier = verifier_from_jwk(&public_jwk).ok_or_else(|| KeyError::Parse {
                kid: r.kid.clone(),
                source: JwtError::Malformed,
            })?;
            loaded.push(LoadedKey {
                kid: r.kid,
                alg,
                signer,
                verifier,
                public_jwk,
                active_at: r.active_at,
                retired_at: r.retired_at,
            });
        }
        match self.keys.write() {
            Ok(mut g) => *g = loaded,
            Err(p) => *p.into_inner() = loaded,
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<LoadedKey>> {
        match self.keys.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Makes sure each algorithm in `algs` has a key that may sign now.
    pub fn ensure(
        &self,
        store: &dyn Store,
        entropy: &dyn Entropy,
        algs: &[Alg],
        now: UnixTime,
    ) -> Result<(), KeyError> {
        self.reload(store)?;
        let mut created = false;
        for alg in algs {
            if self.with_signer(*alg, now, |_, _| ()).is_err() {
                // Another instance may be doing the same right now: one first key wins, and
                // everyone loads it below.
                let record = self.new_record(entropy, *alg, now, now)?;
                store.insert_first_signing_key(&record)?;
                created = true;
            }
        }
        if created {
            self.reload(store)?;
        }
        Ok(())
    }

    /// Rotation: a new key for `alg`, published now, signing from `now + publish_delay`; the
    /// current keys of `alg` stop signing then.
    pub fn rotate(
        &self,
        store: &dyn Store,
        entropy: &dyn Entropy,
        alg: Alg,
        now: UnixTime,
        publish_delay: i64,
    ) -> Result<String, KeyError> {
        // Decrypt what is stored first: a wrong key-encryption key must fail before anything is
        // written or retired.
        self.reload(store)?;
        let active_at = now.saturating_add(publish_delay);
        let kid = self.create(store, entropy, alg, now, active_at)?;
        store.retire_signing_keys(alg.as_str(), &kid, active_at)?;
        self.reload(store)?;
        Ok(kid)
    }

    /// Calls `f` with the key that signs for `alg` now: the newest active, unretired one.
    pub fn with_signer<T>(
        &self,
        alg: Alg,
        now: UnixTime,
        f: impl FnOnce(&str, &Signer) -> T,
    ) -> Result<T, KeyError> {
        let keys = self.read();
        let key = keys
            .iter()
            .filter(|k| k.alg == alg && k.active_at <= now && k.retired_at.is_none_or(|r| r > now))
            .max_by_key(|k| (k.active_at, k.kid.clone()))
            .ok_or(KeyError::NoKey(alg.as_str()))?;
        Ok(f(&key.kid, &key.signer))
    }

    pub fn verifier(&self, kid: &str) -> Option<(Alg, Verifier)> {
        self.read()
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| (k.alg, k.verifier.clone()))
    }

    /// The published keys: every key not retired for longer than `max_token_ttl`.
    pub fn jwks(&self, now: UnixTime, max_token_ttl: i64) -> Value {
        let keys: Vec<Value> = self
            .read()
            .iter()
            .filter(|k| {
                k.retired_at
                    .is_none_or(|r| r.saturating_add(max_token_ttl) > now)
            })
            .map(|k| k.public_jwk.clone())
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OsEntropy;
    use crate::domain::kek::KeyEncryptionKey;

    #[test]
    fn sealing_binds_the_kid_and_needs_the_key() {
        let kek = KeyEncryptionKey::new([7; 32]);
        let sealed = kek.seal("kid-1", b"secret der", &OsEntropy).unwrap();
        assert_eq!(kek.open("kid-1", &sealed).unwrap(), b"secret der");
        assert!(kek.open("kid-2", &sealed).is_err(), "moved to another kid");
        assert!(
            KeyEncryptionKey::new([8; 32])
                .open("kid-1", &sealed)
                .is_err(),
            "wrong key"
        );
        assert!(kek.open("kid-1", &sealed[..5]).is_err());
    }

    #[test]
    fn generated_keys_sign_and_their_jwk_verifies() {
        for alg in [Alg::RS256, Alg::ES256, Alg::EdDSA] {
            let (der, jwk) = generate(alg, "k").unwrap();
            let signer = Signer::from_pkcs8(alg, &der).unwrap();
            let v = verifier_from_jwk(&jwk).unwrap();
            let t = crate::jwt::sign(&signer, alg, "k", "JWT", &json!({"a": 1})).unwrap();
            crate::jwt::verify(&t, |_| Some((alg, v.clone()))).unwrap();
        }
    }
}

//! Owns `[provider]` parsed: the lifetimes and defaults the OpenID provider works with.

use std::time::Duration;

use crate::domain::jose::Alg;

/// Lifetimes and defaults of the provider.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub issuer: String,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub code_ttl: Duration,
    pub refresh_idle_ttl: Duration,
    pub refresh_absolute_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub signing_alg: Alg,
    pub jwks_max_age: Duration,
    pub key_reload_interval: Duration,
    /// How long the previous root secret still opens journeys and CSRF tokens after a rotation.
    pub root_overlap: Duration,
    /// Passkeys are enabled (`[mfa.passkey]`): the phishing-resistant level is offered.
    pub phishing_resistant: bool,
}

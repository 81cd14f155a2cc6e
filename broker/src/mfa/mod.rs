//! Owns multi-factor authentication: running factor plugins (WebAssembly components, contract in
//! `plugins/wit/mfa.wit`) under hard limits, their encrypted per-user state, the attempt limits
//! and lockout the host enforces, enrolment records and recovery codes. Fails closed: any plugin
//! failure is a failed factor.
//!
//! [`Mfa`] (the service, its reload) is here; one file per role: `call` (one plugin call, its
//! state and [`Outbox`]), `operations` (list, enrol, challenge, verify), `recovery` (recovery
//! codes), `checks` (what a plugin returns), `values`, `error`; and `host`, `registry`,
//! `delivery`, `factor` (the one trait the journey uses; native factors), `passkey` (the built-in
//! passkey factor, ADR 15).

mod call;
mod checks;
pub mod delivery;
mod error;
pub mod factor;
pub mod host;
mod operations;
pub mod outbound;
pub mod passkey;
pub mod passkey_hardware;
pub mod passkey_list;
mod recovery;
pub mod registry;
mod values;
mod waiting;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock::{Clock, Entropy};
use crate::config::mfa::{MfaSettings, PluginManifest};
use crate::domain::kek::KeyEncryptionKeys;
use crate::domain::limits::LockoutPolicy;
use crate::ratelimit::Lockout;
use crate::storage::Store;
use delivery::Delivery;
use registry::Registry;

pub use call::Outbox;
pub use checks::{check_form, check_localized};
pub use error::MfaError;
pub use values::{EnrollOutcome, FactorStatus, FactorUser, VerifyOutcome};

/// Where hot reload reads the current manifests from (the caller's configuration, as at boot:
/// file plus environment); `Err` is the reason it is not valid, and the loaded plugins stay.
pub type ManifestSource = Box<dyn Fn() -> Result<Vec<PluginManifest>, String> + Send + Sync>;

/// The pseudo-factor id of recovery codes (not a plugin; ADR 0009).
pub const RECOVERY_ID: &str = "recovery-code";
/// The AAD a plugin's state for a user is sealed under (the record it belongs to).
pub fn state_aad(plugin: &str, user: &str) -> String {
    format!("mfa-state/{plugin}/{user}")
}

/// The signal `concierge plugins reload` raises.
pub const RELOAD_SIGNAL: &str = "mfa_plugins_reload";

/// The MFA service: plugins, their state, limits and lockout.
pub struct Mfa {
    registry: Registry,
    settings: MfaSettings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    kek: Arc<KeyEncryptionKeys>,
    pub delivery: Delivery,
    lockout: Lockout,
    manifests: Option<ManifestSource>,
    reload_generation: AtomicI64,
    /// Factors built into the broker (`factor::NativeFactor`), beside the plugins.
    native: Vec<Arc<dyn factor::NativeFactor>>,
    /// A first factor without a password (passkeys), when offered.
    passwordless: Option<Arc<dyn factor::Passwordless>>,
    /// Where plugins' outbound requests are audited (`plugin_http`).
    audit: Option<Arc<crate::audit::Auditor>>,
}

impl Mfa {
    /// Builds the engine and loads every configured plugin (a failing one is listed as
    /// unavailable). Blocking: compiles the plugins.
    pub fn new(
        settings: MfaSettings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        kek: Arc<KeyEncryptionKeys>,
        manifests: Option<ManifestSource>,
    ) -> Result<Self, MfaError> {
        let engine = registry::engine()?;
        let registry = Registry::new(engine, settings.trust.clone());
        registry.load_all(&settings.plugins);
        let delivery = Delivery::new(
            settings.smtp.as_ref(),
            settings.sms.as_ref(),
            Arc::clone(&entropy),
        )?;
        let window = settings.lockout;
        let lockout = Lockout::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            LockoutPolicy {
                after: settings.max_attempts,
                delay: window,
                max_delay: window,
                window,
            },
            "mfa:",
        );
        let generation = store.signal_generation(RELOAD_SIGNAL)?;
        Ok(Self {
            registry,
            settings,
            store,
            clock,
            entropy,
            kek,
            delivery,
            lockout,
            manifests,
            reload_generation: AtomicI64::new(generation),
            native: Vec::new(),
            passwordless: None,
            audit: None,
        })
    }

    /// Audits the plugins' outbound requests (`plugin_http`) to `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: Arc<crate::audit::Auditor>) -> Self {
        self.audit = Some(audit);
        self
    }

    pub fn settings(&self) -> &MfaSettings {
        &self.settings
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether any factor (a plugin or a built-in one) is configured at all.
    pub fn configured(&self) -> bool {
        !self.registry.snapshot().is_empty() || !self.native.is_empty()
    }

    /// Reloads changed plugins; re-reads the manifests first (from the [`ManifestSource`] given
    /// at start), so a new pin takes effect with its file. With `force`, every plugin is
    /// reloaded. Blocking.
    pub fn reload(&self, force: bool) -> Vec<String> {
        let manifests = match &self.manifests {
            Some(source) => match source() {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "plugin reload: the configuration is not valid; keeping the loaded plugins");
                    return Vec::new();
                }
            },
            None => self.settings.plugins.clone(),
        };
        self.registry.reload(&manifests, force)
    }

    /// Reloads if a file changed or `concierge plugins reload` raised the signal. Blocking.
    pub fn poll_reload(&self) -> Result<Vec<String>, MfaError> {
        let generation = self.store.signal_generation(RELOAD_SIGNAL)?;
        let forced = generation != self.reload_generation.swap(generation, Ordering::Relaxed);
        Ok(self.reload(forced))
    }

    /// Removes a factor from a user (its state too). Blocking.
    pub fn remove(&self, plugin: &str, user: &crate::domain::UserId) -> Result<bool, MfaError> {
        Ok(self.store.delete_mfa_enrollment(user, plugin)?)
    }

    /// Whether some loaded plugin may read upstream claims (its manifest lists any): only then
    /// are a user's claims read for a factor call.
    pub fn reads_claims(&self) -> bool {
        self.registry.any(|s| !s.manifest().claims.is_empty())
    }

    /// The plugin manifests as configured (for `plugins list`).
    pub fn manifests(&self) -> Vec<PluginManifest> {
        self.registry
            .snapshot()
            .values()
            .map(|s| s.manifest().clone())
            .collect()
    }
}

fn lock_key(plugin: &str, user: &FactorUser) -> String {
    format!("{plugin}:{}", user.id.as_str())
}

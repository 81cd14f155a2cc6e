//! Owns multi-factor authentication: running factor plugins (WebAssembly components, contract in
//! `plugins/wit/mfa.wit`) under hard limits, their encrypted per-user state, the attempt limits
//! and lockout the host enforces, enrolment records and recovery codes. Fails closed: any plugin
//! failure is a failed factor.

pub mod delivery;
pub mod factor;
pub mod host;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};
use wasmtime::Store as WasmStore;

use crate::clock::{Clock, Entropy};
use crate::config::mfa::{Capability, MfaSettings, PluginManifest};
use crate::domain::auth::AMR_MFA;
use crate::domain::kek::KeyEncryptionKeys;
use crate::domain::limits::LockoutPolicy;
use crate::ratelimit::{Limited, Lockout};
use crate::storage::{StorageError, Store};
use delivery::Delivery;
use host::{CallState, EnrollStep, FactorPlugin, Form, Localized, Outgoing, PluginError, Verdict};
use registry::{Loaded, Registry, Slot};

/// Where hot reload reads the current manifests from (the caller's configuration, as at boot:
/// file plus environment); `Err` is the reason it is not valid, and the loaded plugins stay.
pub type ManifestSource = Box<dyn Fn() -> Result<Vec<PluginManifest>, String> + Send + Sync>;

/// A plugin's key-value state for one user, as the plugin sees it.
type PluginState = BTreeMap<String, Vec<u8>>;

/// What a plugin call asked to send, and the state it left: the state is written only after
/// every message was accepted ([`Mfa::deliver`]), so a failed or timed-out send leaves no
/// challenge behind and the next attempt sends again.
#[must_use = "an outbox holds unwritten state: deliver it"]
pub struct Outbox {
    messages: Vec<Outgoing>,
    pending: Option<PendingState>,
}

/// A state change waiting for its messages to be sent.
struct PendingState {
    plugin: String,
    user: crate::domain::UserId,
    version: Option<i64>,
    state: PluginState,
}

impl Outbox {
    fn empty() -> Self {
        Self {
            messages: Vec::new(),
            pending: None,
        }
    }

    /// Nothing to send (and so nothing pending).
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("messages", &self.messages.len())
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

/// The pseudo-factor id of recovery codes (not a plugin; ADR 0009).
pub const RECOVERY_ID: &str = "recovery-code";
/// The signal `concierge plugins reload` raises.
pub const RELOAD_SIGNAL: &str = "mfa_plugins_reload";

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}` cannot be loaded: {reason}")]
    Load { plugin: String, reason: String },
    #[error("factor `{0}` is not available")]
    Unavailable(String),
    #[error("plugin `{plugin}` ran out of {budget}")]
    Budget {
        plugin: String,
        budget: &'static str,
    },
    #[error("plugin `{plugin}` trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin `{plugin}` returned a malformed answer: {reason}")]
    Malformed { plugin: String, reason: String },
    #[error("plugin `{plugin}` failed: {reason}")]
    Failed { plugin: String, reason: String },
    #[error("another attempt changed this factor at the same time")]
    Conflict,
    #[error("the factor's stored state cannot be read")]
    State,
    #[error(transparent)]
    Delivery(#[from] delivery::DeliveryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MfaError {
    /// A short code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(_) | Self::Load { .. } | Self::Unavailable(_) => "unavailable",
            Self::Budget { budget, .. } => budget,
            Self::Trap { .. } => "trap",
            Self::Malformed { .. } => "malformed",
            Self::Failed { .. } => "plugin_error",
            Self::Conflict => "conflict",
            Self::State => "state",
            Self::Delivery(_) => "delivery",
            Self::Storage(_) => "storage",
        }
    }
}

/// A text in both languages, checked for size.
pub fn check_localized(l: &Localized) -> Result<(), String> {
    if l.en.len() > 2048 || l.ko.len() > 2048 {
        return Err("texts are at most 2048 bytes".into());
    }
    Ok(())
}

/// A form as a plugin returned it, checked before the pages render it.
pub fn check_form(f: &Form) -> Result<(), String> {
    check_localized(&f.intro)?;
    if f.fields.is_empty() || f.fields.len() > 8 {
        return Err("a form has 1 to 8 fields".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for field in &f.fields {
        let ok = (1..=32).contains(&field.name.len())
            && field
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !matches!(
                field.name.as_str(),
                "csrf_token" | "journey" | "ticket" | "factor"
            );
        if !ok || !names.insert(field.name.as_str()) {
            return Err(format!(
                "field name `{}` is not 1-32 of a-z, 0-9, _ (or is reserved or repeated)",
                field
                    .name
                    .chars()
                    .take(40)
                    .collect::<String>()
                    .escape_debug()
            ));
        }
        check_localized(&field.label)?;
        if let Some(h) = &field.hint {
            check_localized(h)?;
        }
        if field.max_length == 0 || field.max_length > 256 {
            return Err("max-length is 1 to 256".into());
        }
    }
    if f.qr.as_ref().is_some_and(|q| q.len() > 1024) {
        return Err("qr is at most 1024 bytes".into());
    }
    if f.secret.as_ref().is_some_and(|s| s.len() > 256) {
        return Err("secret is at most 256 bytes".into());
    }
    Ok(())
}

/// Who a plugin call is about.
#[derive(Debug, Clone)]
pub struct FactorUser {
    pub id: crate::domain::UserId,
    pub email: String,
    pub locale: crate::domain::Locale,
}

impl FactorUser {
    fn wit(&self) -> host::User {
        host::User {
            id: self.id.as_str().to_owned(),
            email: self.email.clone(),
            locale: self.locale.as_str().to_owned(),
        }
    }
}

/// A factor as the pages list it for one user.
#[derive(Clone)]
pub struct FactorStatus {
    pub id: String,
    pub name: Localized,
    pub kind: host::FactorKind,
    pub needs_enrollment: bool,
    pub enrolled: bool,
    /// Configured and enrolled, but its plugin cannot run now.
    pub available: bool,
    /// Its challenge may send something (an email, an SMS; later a push): it starts only on a
    /// POST from the broker's own page, never on a GET.
    pub sends: bool,
}

/// What checking an answer found.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    /// The factor is proven; these amr values go into the session.
    Accepted { amr: Vec<String> },
    /// Wrong, expired or reused (the message, if the plugin gave one).
    Rejected { message: Option<Localized> },
    /// Too many wrong answers: the factor is locked for the user.
    Locked(Limited),
}

/// The result of one enrolment step.
#[derive(Debug, Clone)]
pub enum EnrollOutcome {
    Done {
        /// The methods the session gains: setting the factor up proved it.
        amr: Vec<String>,
        /// Recovery codes handed out now (first enrolment only), to show once.
        recovery_codes: Vec<String>,
    },
    Next(Form),
    /// The answer was not accepted; the message is shown on the same page.
    Retry(Localized),
}

/// The AAD a plugin's state for a user is sealed under (the record it belongs to).
pub fn state_aad(plugin: &str, user: &str) -> String {
    format!("mfa-state/{plugin}/{user}")
}

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
        let registry = Registry::new(engine);
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
        })
    }

    pub fn settings(&self) -> &MfaSettings {
        &self.settings
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether any factor plugin is configured at all.
    pub fn configured(&self) -> bool {
        !self.registry.snapshot().is_empty()
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

    fn loaded(&self, plugin: &str) -> Result<Arc<Loaded>, MfaError> {
        match self.registry.get(plugin) {
            Some(Slot::Ready(l)) => Ok(l),
            _ => Err(MfaError::Unavailable(plugin.to_owned())),
        }
    }

    fn aad(plugin: &str, user: &crate::domain::UserId) -> String {
        state_aad(plugin, user.as_str())
    }

    fn read_state(
        &self,
        plugin: &str,
        user: &crate::domain::UserId,
    ) -> Result<(Option<i64>, PluginState), MfaError> {
        let Some(row) = self.store.mfa_state(plugin, user)? else {
            return Ok((None, BTreeMap::new()));
        };
        let plain = self
            .kek
            .open(&Self::aad(plugin, user), &row.data)
            .map_err(|_| MfaError::State)?;
        let encoded: BTreeMap<String, String> =
            serde_json::from_slice(&plain).map_err(|_| MfaError::State)?;
        let mut map = BTreeMap::new();
        for (k, v) in encoded {
            map.insert(k, STANDARD_NO_PAD.decode(v).map_err(|_| MfaError::State)?);
        }
        Ok((Some(row.version), map))
    }

    fn write_state(
        &self,
        plugin: &str,
        user: &crate::domain::UserId,
        version: Option<i64>,
        state: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), MfaError> {
        let encoded: BTreeMap<&String, String> = state
            .iter()
            .map(|(k, v)| (k, STANDARD_NO_PAD.encode(v)))
            .collect();
        let plain = serde_json::to_vec(&encoded).map_err(|_| MfaError::State)?;
        let sealed = self
            .kek
            .seal(&Self::aad(plugin, user), &plain, self.entropy.as_ref())
            .map_err(|_| MfaError::State)?;
        if self
            .store
            .put_mfa_state(plugin, user, version, &sealed, self.clock.now())?
        {
            Ok(())
        } else {
            Err(MfaError::Conflict)
        }
    }

    /// One call into a plugin: a fresh instance with the user's state, under the manifest's
    /// fuel, wall-time and memory limits. Only a call that completed changes anything: its state
    /// is written (compare-and-swap) now if it sends nothing, else it travels in the returned
    /// [`Outbox`] and is written once the messages are sent. Blocking.
    fn call<R>(
        &self,
        loaded: &Loaded,
        user: &FactorUser,
        f: impl FnOnce(&FactorPlugin, &mut WasmStore<CallState>, &host::User) -> wasmtime::Result<R>,
    ) -> Result<(R, Outbox), MfaError> {
        let m = &loaded.manifest;
        let (version, state) = self.read_state(&m.id, &user.id)?;
        let mut store = WasmStore::new(
            self.registry.plugin_engine().running()?,
            CallState::new(
                &m.id,
                self.clock.now(),
                Arc::clone(&self.entropy),
                Arc::clone(&loaded.config),
                state,
                m.memory_bytes,
            ),
        );
        store.limiter(|s| s.limiter());
        let engine_err = |e: wasmtime::Error| MfaError::Engine(e.to_string());
        store.set_fuel(m.fuel).map_err(engine_err)?;
        store.set_epoch_deadline(registry::ticks(m.timeout));
        store.epoch_deadline_trap();
        let outcome = loaded
            .pre
            .instantiate(&mut store)
            .and_then(|plugin| f(&plugin, &mut store, &user.wit()));
        let value = match outcome {
            Ok(v) => v,
            Err(e) => return Err(classify(&m.id, &e, store.data().memory_refused)),
        };
        let data = store.into_data();
        if data.outbox.is_empty() {
            if data.dirty {
                self.write_state(&m.id, &user.id, version, &data.state)?;
            }
            return Ok((value, Outbox::empty()));
        }
        let pending = data.dirty.then(|| PendingState {
            plugin: m.id.clone(),
            user: user.id.clone(),
            version,
            state: data.state,
        });
        Ok((
            value,
            Outbox {
                messages: data.outbox,
                pending,
            },
        ))
    }

    /// Writes an outbox's state without sending its messages (calls whose messages are not
    /// sent, such as verification). Blocking.
    fn settle(&self, outbox: Outbox) -> Result<(), MfaError> {
        match outbox.pending {
            Some(p) => self.write_state(&p.plugin, &p.user, p.version, &p.state),
            None => Ok(()),
        }
    }

    /// Sends an outbox's messages to the user (email to `email_to`), then, only if every one
    /// was accepted by the mail server or the SMS gateway, writes the state the call left (the
    /// challenge, its resend window). A failed or timed-out send writes nothing, so pressing
    /// again runs the plugin from the same state and really sends. Each send is bounded by its
    /// transport's `timeout`.
    pub async fn deliver(self: &Arc<Self>, email_to: &str, outbox: Outbox) -> Result<(), MfaError> {
        let Outbox { messages, pending } = outbox;
        self.delivery.send_all(email_to, messages).await?;
        let Some(p) = pending else {
            return Ok(());
        };
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            this.write_state(&p.plugin, &p.user, p.version, &p.state)
        })
        .await
        .map_err(|e| MfaError::Engine(format!("state write did not finish: {e}")))?
    }

    /// The factors this user can use or set up, in id order. Blocking.
    /// Whether `plugin`'s challenge may send something (it is granted email or SMS): such a
    /// challenge starts only on a POST, within the per-user send rate.
    pub fn sends(&self, plugin: &str) -> bool {
        self.registry.get(plugin).is_some_and(|slot| {
            slot.manifest()
                .grants
                .iter()
                .any(|g| matches!(g, Capability::Email | Capability::Sms))
        })
    }

    pub fn factors(&self, user: &FactorUser) -> Result<Vec<FactorStatus>, MfaError> {
        let enrolled: std::collections::BTreeSet<String> = self
            .store
            .mfa_enrollments(&user.id)?
            .into_iter()
            .map(|e| e.plugin_id)
            .collect();
        let mut out = Vec::new();
        for (id, slot) in self.registry.snapshot() {
            match slot {
                Slot::Ready(l) => {
                    let d = &l.description;
                    let is_enrolled = if d.needs_enrollment {
                        enrolled.contains(&id)
                    } else {
                        // Factors without enrolment (email) say whether they can reach the user.
                        self.call(&l, user, |p, s, u| {
                            p.concierge_mfa_factor().call_is_enrolled(s, u)
                        })
                        .and_then(|(b, outbox)| self.settle(outbox).map(|()| b))
                        .unwrap_or(false)
                    };
                    out.push(FactorStatus {
                        id,
                        name: d.name.clone(),
                        kind: d.kind,
                        needs_enrollment: d.needs_enrollment,
                        enrolled: is_enrolled,
                        available: true,
                        sends: l
                            .manifest
                            .grants
                            .iter()
                            .any(|g| matches!(g, Capability::Email | Capability::Sms)),
                    });
                }
                Slot::Failed(_) if enrolled.contains(&id) => out.push(FactorStatus {
                    name: Localized {
                        en: id.clone(),
                        ko: id.clone(),
                    },
                    id,
                    kind: host::FactorKind::Other,
                    needs_enrollment: true,
                    enrolled: true,
                    available: false,
                    sends: false,
                }),
                Slot::Failed(_) => {}
            }
        }
        Ok(out)
    }

    /// The first enrolment page of a factor. Blocking.
    pub fn enroll_begin(
        &self,
        plugin: &str,
        user: &FactorUser,
    ) -> Result<(Form, Outbox), MfaError> {
        self.form_call(plugin, user, |p, s, u| {
            p.concierge_mfa_factor().call_enroll_begin(s, u)
        })
    }

    /// Starts a challenge: the page to show and the messages to send (with the challenge's
    /// state, written by [`Mfa::deliver`] once they are sent). Blocking.
    pub fn challenge_begin(
        &self,
        plugin: &str,
        user: &FactorUser,
    ) -> Result<(Form, Outbox), MfaError> {
        self.form_call(plugin, user, |p, s, u| {
            p.concierge_mfa_factor().call_challenge_begin(s, u)
        })
    }

    /// A call that answers with a page: the form, checked, and the messages to send.
    fn form_call(
        &self,
        plugin: &str,
        user: &FactorUser,
        f: impl FnOnce(
            &FactorPlugin,
            &mut WasmStore<CallState>,
            &host::User,
        ) -> wasmtime::Result<Result<Form, PluginError>>,
    ) -> Result<(Form, Outbox), MfaError> {
        let l = self.loaded(plugin)?;
        let (r, outbox) = self.call(&l, user, f)?;
        let form = plugin_result(plugin, r)?;
        check_form(&form).map_err(|reason| malformed(plugin, reason))?;
        Ok((form, outbox))
    }

    /// Handles an enrolment answer. When the factor is done it is recorded, and a user's first
    /// factor comes with fresh recovery codes. Blocking.
    pub fn enroll_finish(
        &self,
        plugin: &str,
        user: &FactorUser,
        answer: Vec<(String, String)>,
    ) -> Result<(EnrollOutcome, Outbox), MfaError> {
        let l = self.loaded(plugin)?;
        let (r, outbox) = self.call(&l, user, |p, s, u| {
            p.concierge_mfa_factor().call_enroll_finish(s, u, &answer)
        })?;
        let step = match r {
            Ok(step) => step,
            Err(PluginError::BadInput(msg)) => {
                check_localized(&msg).map_err(|reason| malformed(plugin, reason))?;
                return Ok((EnrollOutcome::Retry(msg), outbox));
            }
            Err(e) => return Err(plugin_error(plugin, e)),
        };
        match step {
            EnrollStep::Next(form) => {
                check_form(&form).map_err(|reason| malformed(plugin, reason))?;
                Ok((EnrollOutcome::Next(form), outbox))
            }
            EnrollStep::Done => {
                let first = self.store.mfa_enrollments(&user.id)?.is_empty();
                self.store
                    .insert_mfa_enrollment(&user.id, plugin, self.clock.now())?;
                let recovery_codes = if first {
                    self.new_recovery_codes(&user.id)?
                } else {
                    Vec::new()
                };
                let amr = l.proven_amr();
                Ok((
                    EnrollOutcome::Done {
                        amr,
                        recovery_codes,
                    },
                    outbox,
                ))
            }
        }
    }

    /// Whether the factor is locked for the user now. Blocking.
    pub fn locked(&self, plugin: &str, user: &FactorUser) -> Result<Option<Limited>, MfaError> {
        Ok(self.lockout.check(&lock_key(plugin, user))?.locked)
    }

    /// Checks an answer, within the attempt limit: a wrong answer or any plugin failure counts
    /// as a failed attempt; too many lock the factor for the user. Blocking.
    pub fn verify(
        &self,
        plugin: &str,
        user: &FactorUser,
        answer: Vec<(String, String)>,
    ) -> Result<VerifyOutcome, MfaError> {
        let key = lock_key(plugin, user);
        let lock = self.lockout.check(&key)?;
        if let Some(l) = lock.locked {
            return Ok(VerifyOutcome::Locked(l));
        }
        let outcome = self.loaded(plugin).and_then(|l| {
            let (r, outbox) = self.call(&l, user, |p, s, u| {
                p.concierge_mfa_factor().call_verify(s, u, &answer)
            })?;
            // Verification sends nothing; its state (a spent code) is written at once.
            self.settle(outbox)?;
            Ok((l, r))
        });
        let rejected = |message: Option<Localized>| -> Result<VerifyOutcome, MfaError> {
            match self.lockout.failed(&key)? {
                Some(l) => Ok(VerifyOutcome::Locked(l)),
                None => Ok(VerifyOutcome::Rejected { message }),
            }
        };
        match outcome {
            Ok((l, Ok(Verdict::Accepted))) => {
                if lock.has_failures {
                    self.lockout.succeeded(&key)?;
                }
                Ok(VerifyOutcome::Accepted {
                    amr: l.proven_amr(),
                })
            }
            Ok((_, Ok(Verdict::Rejected(msg)))) => {
                rejected(check_localized(&msg).ok().map(|()| msg))
            }
            Ok((_, Err(PluginError::BadInput(msg)))) => {
                rejected(check_localized(&msg).ok().map(|()| msg))
            }
            Ok((_, Err(e))) => {
                // Not the user's fault, but still not a pass; it counts against the limit so a
                // plugin that can be made to fail cannot be used to probe for free.
                let _ = rejected(None)?;
                Err(plugin_error(plugin, e))
            }
            Err(e) => {
                let _ = rejected(None)?;
                Err(e)
            }
        }
    }

    /// Hands out fresh recovery codes (replacing any), returning them to show once. Blocking.
    pub fn new_recovery_codes(
        &self,
        user: &crate::domain::UserId,
    ) -> Result<Vec<String>, MfaError> {
        let n = self.settings.recovery_codes;
        let mut codes = Vec::new();
        let mut hashes = Vec::new();
        for _ in 0..n {
            let code = recovery_code(self.entropy.as_ref());
            hashes.push(hash_recovery(&code));
            codes.push(code);
        }
        if n > 0 {
            self.store
                .replace_recovery_codes(user, &hashes, self.clock.now())?;
        }
        Ok(codes)
    }

    pub fn recovery_codes_left(&self, user: &crate::domain::UserId) -> Result<i64, MfaError> {
        Ok(self.store.recovery_codes_left(user)?)
    }

    /// Checks a recovery code (single use), under the same attempt limit as a factor. Blocking.
    pub fn verify_recovery(
        &self,
        user: &FactorUser,
        code: &str,
    ) -> Result<VerifyOutcome, MfaError> {
        let key = lock_key(RECOVERY_ID, user);
        let lock = self.lockout.check(&key)?;
        if let Some(l) = lock.locked {
            return Ok(VerifyOutcome::Locked(l));
        }
        let hash = hash_recovery(&normalize_recovery(code));
        if self
            .store
            .use_recovery_code(&user.id, &hash, self.clock.now())?
        {
            if lock.has_failures {
                self.lockout.succeeded(&key)?;
            }
            return Ok(VerifyOutcome::Accepted {
                amr: vec![AMR_MFA.to_owned()],
            });
        }
        match self.lockout.failed(&key)? {
            Some(l) => Ok(VerifyOutcome::Locked(l)),
            None => Ok(VerifyOutcome::Rejected { message: None }),
        }
    }

    /// Removes a factor from a user (its state too). Blocking.
    pub fn remove(&self, plugin: &str, user: &crate::domain::UserId) -> Result<bool, MfaError> {
        Ok(self.store.delete_mfa_enrollment(user, plugin)?)
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

fn malformed(plugin: &str, reason: String) -> MfaError {
    MfaError::Malformed {
        plugin: plugin.to_owned(),
        reason,
    }
}

fn plugin_error(plugin: &str, e: PluginError) -> MfaError {
    let reason = match e {
        PluginError::BadInput(_) => "bad input".to_owned(),
        PluginError::NotEnrolled => "not enrolled".to_owned(),
        // Logged by the pages when the factor fails: one line, like the plugin's own log.
        PluginError::Unavailable(s) | PluginError::Internal(s) => host::one_log_line(&s, 200),
    };
    MfaError::Failed {
        plugin: plugin.to_owned(),
        reason,
    }
}

fn plugin_result<T>(plugin: &str, r: Result<T, PluginError>) -> Result<T, MfaError> {
    r.map_err(|e| plugin_error(plugin, e))
}

/// Why a call did not complete: budget (fuel, time, memory) or a trap.
fn classify(plugin: &str, e: &wasmtime::Error, memory_refused: bool) -> MfaError {
    let budget = |budget| MfaError::Budget {
        plugin: plugin.to_owned(),
        budget,
    };
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => budget("fuel"),
        Some(wasmtime::Trap::Interrupt) => budget("time"),
        _ if memory_refused => budget("memory"),
        Some(t) => MfaError::Trap {
            plugin: plugin.to_owned(),
            reason: t.to_string(),
        },
        // The backtrace names the plugin's own functions: one line.
        None => MfaError::Trap {
            plugin: plugin.to_owned(),
            reason: host::one_log_line(&format!("{e:#}"), 300),
        },
    }
}

/// A recovery code: 10 characters of an unambiguous alphabet, shown as `xxxxx-xxxxx`.
fn recovery_code(entropy: &dyn Entropy) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut out = String::with_capacity(11);
    let mut i = 0;
    while i < 10 {
        let mut b = [0u8; 1];
        entropy.fill(&mut b);
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - (256 % ALPHABET.len());
        if usize::from(b[0]) >= limit {
            continue;
        }
        if i == 5 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(b[0]) % ALPHABET.len()]));
        i += 1;
    }
    out
}

fn normalize_recovery(code: &str) -> String {
    let compact: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if compact.len() == 10 {
        format!("{}-{}", &compact[..5], &compact[5..])
    } else {
        compact
    }
}

fn hash_recovery(code: &str) -> [u8; 32] {
    Sha256::digest(format!("concierge-recovery:{code}").as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_normalised_before_hashing() {
        let e = crate::clock::SeededEntropy::new(7);
        let code = recovery_code(&e);
        assert_eq!(code.len(), 11);
        assert_eq!(&code[5..6], "-");
        assert_eq!(
            normalize_recovery(&code.to_uppercase().replace('-', " ")),
            code
        );
        assert_ne!(recovery_code(&e), code);
    }

    #[test]
    fn forms_are_checked() {
        let l = |s: &str| Localized {
            en: s.into(),
            ko: s.into(),
        };
        let field = |name: &str| host::Field {
            name: name.into(),
            kind: host::FieldKind::Code,
            label: l("Code"),
            hint: None,
            max_length: 6,
        };
        let mut f = Form {
            intro: l("Enter"),
            fields: vec![field("code")],
            qr: None,
            secret: None,
        };
        assert!(check_form(&f).is_ok());
        f.fields = vec![field("BAD NAME")];
        assert!(check_form(&f).is_err());
        f.fields = vec![field("csrf_token")];
        assert!(check_form(&f).is_err());
        f.fields = vec![field("a"), field("a")];
        assert!(check_form(&f).is_err());
        f.fields = vec![];
        assert!(check_form(&f).is_err());
        f.fields = vec![field("code")];
        f.intro = l(&"x".repeat(5000));
        assert!(check_form(&f).is_err());
    }
}

//! Owns one call into a plugin and what it leaves behind: a fresh instance under the manifest's
//! limits with the user's state (sealed with the key-encryption key, written compare-and-swap),
//! and the [`Outbox`] of messages whose state is written only once they are sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use wasmtime::Store as WasmStore;

use super::Mfa;
use super::error::{MfaError, classify};
use super::host::v02w::WaitingFactorPlugin;
use super::host::{self, CallState, FactorPlugin, Outgoing};
use super::registry::{self, Loaded, Slot};
use super::values::FactorUser;

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
    pub(super) fn empty() -> Self {
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

impl Mfa {
    pub(super) fn loaded(&self, plugin: &str) -> Result<Arc<Loaded>, MfaError> {
        match self.registry.get(plugin) {
            Some(Slot::Ready(l)) => Ok(l),
            _ => Err(MfaError::Unavailable(plugin.to_owned())),
        }
    }

    fn aad(plugin: &str, user: &crate::domain::UserId) -> String {
        super::state_aad(plugin, user.as_str())
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
    pub(super) fn call<R>(
        &self,
        loaded: &Loaded,
        user: &FactorUser,
        f: impl FnOnce(&FactorPlugin, &mut WasmStore<CallState>, &host::User) -> wasmtime::Result<R>,
    ) -> Result<(R, Outbox), MfaError> {
        self.run(loaded, user, |store, u| {
            let plugin = loaded.pre.instantiate(&mut *store)?;
            f(&plugin, store, u)
        })
    }

    /// [`Self::call`] into a waiting factor's `waiting` export (contract 0.2).
    pub(super) fn call_waiting<R>(
        &self,
        loaded: &Loaded,
        user: &FactorUser,
        f: impl FnOnce(
            &WaitingFactorPlugin,
            &mut WasmStore<CallState>,
            &host::User,
        ) -> wasmtime::Result<R>,
    ) -> Result<(R, Outbox), MfaError> {
        let Some(pre) = &loaded.waiting else {
            return Err(MfaError::Unavailable(loaded.manifest.id.clone()));
        };
        self.run(loaded, user, |store, u| {
            let plugin = pre.instantiate(&mut *store)?;
            f(&plugin, store, u)
        })
    }

    fn run<R>(
        &self,
        loaded: &Loaded,
        user: &FactorUser,
        go: impl FnOnce(&mut WasmStore<CallState>, &host::User) -> wasmtime::Result<R>,
    ) -> Result<(R, Outbox), MfaError> {
        let m = &loaded.manifest;
        let (version, state) = self.read_state(&m.id, &user.id)?;
        let deadline = std::time::Instant::now() + m.timeout;
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
        store.data_mut().http = loaded.http.as_ref().map(|http| host::HttpCall {
            http: Arc::clone(http) as Arc<dyn host::HttpSender>,
            deadline,
            audit: self.audit.clone(),
            user: user.id.as_str().to_owned(),
        });
        store.data_mut().claims = user
            .claims
            .iter()
            .filter(|(name, _)| m.claims.contains(*name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        store.limiter(|s| s.limiter());
        let engine_err = |e: wasmtime::Error| MfaError::Engine(e.to_string());
        store.set_fuel(m.fuel).map_err(engine_err)?;
        store.set_epoch_deadline(registry::ticks(m.timeout));
        store.epoch_deadline_trap();
        let outcome = go(&mut store, &user.wit());
        let value = match outcome {
            Ok(v) => v,
            Err(e) => return Err(classify(&m.id, &e, store.data().memory_refused)),
        };
        let data = store.into_data();
        // A request the host refused by policy fails the call, whatever the plugin made of it.
        if let Some(why) = data.http_refused {
            return Err(MfaError::Failed {
                plugin: m.id.clone(),
                reason: format!("http request refused: {why}"),
            });
        }
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
    pub(super) fn settle(&self, outbox: Outbox) -> Result<(), MfaError> {
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
}

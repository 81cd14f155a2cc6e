//! Owns the client registry: clients from the config file (parsed at boot into
//! [`Client`]) and from `concierge clients add` (stored, parsed when looked up), and what a
//! client's grants mean at the provider's endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::client::{Client, ClientConfig, ClientConfigError, Grant};
use crate::storage::{StorageError, Store};

impl Client {
    /// `unauthorized_client` unless this client may use grant `g`.
    pub fn require(&self, g: Grant) -> Result<(), super::OAuthError> {
        if self.allows(g) {
            Ok(())
        } else {
            Err(super::OAuthError::UnauthorizedClient(
                "grant not allowed for this client".into(),
            ))
        }
    }
}

/// Stores a client registered at run time after checking it like a configured one.
pub fn register(
    store: &dyn Store,
    cfg: &ClientConfig,
    now: crate::clock::UnixTime,
) -> Result<Client, RegisterError> {
    let client = Client::parse(cfg)?;
    let json = serde_json::to_string(cfg)
        .map_err(|e| RegisterError::Storage(StorageError::Corrupt(e.to_string())))?;
    store
        .insert_client(&cfg.id, &json, now)
        .map_err(|e| match e {
            StorageError::Conflict(_) => RegisterError::Exists(cfg.id.clone()),
            other => RegisterError::Storage(other),
        })?;
    Ok(client)
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Invalid(#[from] ClientConfigError),
    #[error("a client `{0}` already exists")]
    Exists(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Clients from the config file (in memory) and from storage (looked up on demand).
pub struct ClientRegistry {
    configured: HashMap<String, Arc<Client>>,
    store: Arc<dyn Store>,
}

impl ClientRegistry {
    pub fn new(configured: Vec<Client>, store: Arc<dyn Store>) -> Self {
        Self {
            configured: configured
                .into_iter()
                .map(|c| (c.id.clone(), Arc::new(c)))
                .collect(),
            store,
        }
    }

    /// Blocking when the client is not from the config file.
    pub fn get(&self, id: &str) -> Result<Option<Arc<Client>>, StorageError> {
        if let Some(c) = self.configured.get(id) {
            return Ok(Some(Arc::clone(c)));
        }
        let Some(json) = self.store.client_config(id)? else {
            return Ok(None);
        };
        let cfg: ClientConfig = serde_json::from_str(&json)
            .map_err(|e| StorageError::Corrupt(format!("clients.config of {id}: {e}")))?;
        Client::parse(&cfg)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| StorageError::Corrupt(e.to_string()))
    }

    pub fn configured(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.configured.values()
    }
}

//! Owns the service providers registered at run time (`concierge saml-apps add`): built from
//! their metadata (a file's, or a URL's) and their options (a `[[saml_apps]]` table without
//! endpoints, kept as JSON), stored in `saml_apps`; and the background refresh of a URL's
//! metadata (a fetch that fails, does not parse or is past its `validUntil` keeps the last good
//! copy). Nothing here runs
//! on a request's path: [`SamlIdp::app`](super::SamlIdp::app) reads only storage.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use url::Url;

use crate::clock::UnixTime;
use crate::config::saml_apps::{RawSamlApp, SamlApp};
use crate::domain::sp_metadata::{MAX_SP_METADATA, SpMetadata, SpMetadataError};
use crate::storage::{SamlAppRecord, StorageError, Store};

/// How long a failed refresh waits before the next try (at most the refresh interval).
const RETRY: UnixTime = 300;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the SP's metadata: {0}")]
    Metadata(#[from] SpMetadataError),
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("`{0}` is in the config file ([[saml_apps]])")]
    Configured(String),
    #[error("`{0}` is registered already")]
    Exists(String),
    #[error("fetching the metadata: {0}")]
    Fetch(String),
    #[error("the fetched metadata is of `{got}`, not `{want}`")]
    OtherEntity { want: String, got: String },
    #[error(transparent)]
    Storage(StorageError),
}

/// What a stored SP was parsed from: when it changes, it is parsed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    config: String,
    fetched_at: UnixTime,
    metadata: [u8; 32],
}

impl Source {
    pub fn of(r: &SamlAppRecord) -> Self {
        Self {
            config: r.config.clone(),
            fetched_at: r.fetched_at,
            metadata: Sha256::digest(r.metadata.as_bytes()).into(),
        }
    }
}

/// The SP of a stored record.
pub fn app_of(r: &SamlAppRecord) -> Result<SamlApp, String> {
    let options: RawSamlApp =
        serde_json::from_str(&r.config).map_err(|e| format!("config: {e}"))?;
    let md = SpMetadata::parse(&r.metadata).map_err(|e| format!("metadata: {e}"))?;
    SamlApp::from_metadata(&options, &md).map_err(|(k, m)| format!("{k}: {m}"))
}

/// Stores the SP of `metadata` with `options` (their endpoint keys empty, `metadata_file`
/// unset), after checking it like a configured one. `configured`: is this entity ID in
/// `[[saml_apps]]` (those win; registering one again is refused).
pub fn register(
    store: &dyn Store,
    configured: impl Fn(&str) -> bool,
    options: &RawSamlApp,
    metadata: &str,
    metadata_url: Option<&Url>,
    now: UnixTime,
) -> Result<SamlApp, RegistryError> {
    let md = SpMetadata::parse(metadata)?;
    md.check_current(now)?;
    if configured(&md.entity_id) {
        return Err(RegistryError::Configured(md.entity_id));
    }
    let mut options = options.clone();
    options.metadata_file = None;
    let app =
        SamlApp::from_metadata(&options, &md).map_err(|(k, m)| RegistryError::Invalid(k, m))?;
    options.entity_id = md.entity_id.clone();
    let config = serde_json::to_string(&options)
        .map_err(|e| RegistryError::Storage(StorageError::Corrupt(e.to_string())))?;
    store
        .insert_saml_app(&SamlAppRecord {
            entity_id: md.entity_id.clone(),
            config,
            metadata: metadata.to_owned(),
            metadata_url: metadata_url.map(Url::to_string),
            fetched_at: now,
            created_at: now,
        })
        .map_err(|e| match e {
            StorageError::Conflict(_) => RegistryError::Exists(md.entity_id.clone()),
            other => RegistryError::Storage(other),
        })?;
    Ok(app)
}

/// An SP's metadata from `url` (at most 1 MiB), checked to parse.
pub async fn fetch(http: &reqwest::Client, url: &Url) -> Result<String, RegistryError> {
    let res = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| RegistryError::Fetch(format!("{url}: {}", crate::http::describe(&e))))?;
    if !res.status().is_success() {
        return Err(RegistryError::Fetch(format!("{url}: {}", res.status())));
    }
    let body = match crate::http::read_capped(res, MAX_SP_METADATA).await {
        Ok(b) => b,
        Err(crate::http::ReadError::TooLarge(_)) => return Err(SpMetadataError::TooLarge.into()),
        Err(e) => return Err(RegistryError::Fetch(format!("{url}: {e}"))),
    };
    let text =
        String::from_utf8(body).map_err(|_| RegistryError::Fetch(format!("{url}: not UTF-8")))?;
    SpMetadata::parse(&text)?;
    Ok(text)
}

/// A stored copy is fetched again once older than `every`, or sooner when its `validUntil`
/// comes within `every` (so that a renewed copy is there before the old one stops serving).
fn due(r: &SamlAppRecord, now: UnixTime, every: UnixTime) -> bool {
    if now.saturating_sub(r.fetched_at) >= every {
        return true;
    }
    SpMetadata::parse(&r.metadata)
        .ok()
        .and_then(|m| m.valid_until)
        .is_some_and(|t| t.saturating_sub(now) < every)
}

/// The background refresh of the SPs registered from a URL.
pub struct Refresher {
    pub store: std::sync::Arc<dyn Store>,
    pub http: reqwest::Client,
    /// How old a copy may get before it is fetched again.
    pub every: Duration,
    /// After a failure, when each SP is tried again.
    retry_at: HashMap<String, UnixTime>,
}

impl Refresher {
    pub fn new(store: std::sync::Arc<dyn Store>, http: reqwest::Client, every: Duration) -> Self {
        Self {
            store,
            http,
            every,
            retry_at: HashMap::new(),
        }
    }

    /// Fetches again each URL-registered SP whose copy is [`due`] (and whose retry, after a
    /// failure, is due): a good answer of the same entity ID replaces the copy; anything else
    /// leaves it (a warning). How many were replaced.
    pub async fn run_once(&mut self, now: UnixTime) -> Result<usize, StorageError> {
        let store = std::sync::Arc::clone(&self.store);
        let every = i64::try_from(self.every.as_secs()).unwrap_or(i64::MAX);
        // Listed and judged due off the async threads (`due` may parse a stored copy).
        let records = tokio::task::spawn_blocking(move || {
            store.list_saml_apps().map(|all| {
                all.into_iter()
                    .filter(|r| r.metadata_url.is_some() && due(r, now, every))
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| StorageError::Unavailable(e.to_string()))??;
        let mut replaced = 0;
        for r in records {
            let Some(url) = r.metadata_url.as_deref().and_then(|u| Url::parse(u).ok()) else {
                continue;
            };
            if self.retry_at.get(&r.entity_id).is_some_and(|t| now < *t) {
                continue;
            }
            match self.refreshed(&r, &url, now).await {
                Ok(xml) => {
                    let (store, id) = (std::sync::Arc::clone(&self.store), r.entity_id.clone());
                    tokio::task::spawn_blocking(move || {
                        store.update_saml_app_metadata(&id, &xml, now)
                    })
                    .await
                    .map_err(|e| StorageError::Unavailable(e.to_string()))??;
                    self.retry_at.remove(&r.entity_id);
                    replaced += 1;
                }
                Err(e) => {
                    tracing::warn!(sp = %r.entity_id, error = %e, "SP metadata refresh failed; the last good copy serves");
                    self.retry_at
                        .insert(r.entity_id.clone(), now.saturating_add(RETRY.min(every)));
                }
            }
        }
        Ok(replaced)
    }

    /// The URL's metadata, if it is good for this SP with its options.
    async fn refreshed(
        &self,
        r: &SamlAppRecord,
        url: &Url,
        now: UnixTime,
    ) -> Result<String, RegistryError> {
        let xml = fetch(&self.http, url).await?;
        SpMetadata::parse(&xml)?.check_current(now)?;
        let fresh = SamlAppRecord {
            metadata: xml,
            ..r.clone()
        };
        let app = app_of(&fresh).map_err(|m| RegistryError::Invalid("metadata", m))?;
        if app.entity_id != r.entity_id {
            return Err(RegistryError::OtherEntity {
                want: r.entity_id.clone(),
                got: app.entity_id,
            });
        }
        Ok(fresh.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metadata: &str, fetched_at: UnixTime) -> SamlAppRecord {
        SamlAppRecord {
            entity_id: "https://sp.example/meta".into(),
            config: "{}".into(),
            metadata: metadata.into(),
            metadata_url: Some("https://sp.example/meta".into()),
            fetched_at,
            created_at: fetched_at,
        }
    }

    fn metadata(valid_until: &str) -> String {
        format!(
            concat!(
                r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" {valid} entityID="https://sp.example/meta">"#,
                r#"<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
                r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs" index="0"/>"#,
                r#"</md:SPSSODescriptor></md:EntityDescriptor>"#
            ),
            valid = valid_until
        )
    }

    #[test]
    fn a_copy_is_due_when_old_or_when_its_valid_until_nears() {
        // 2026-12-07T00:00:00Z
        let until = 1_796_601_600;
        let day = 86_400;
        let fetched = until - 3 * day;
        let plain = record(&metadata(""), fetched);
        assert!(!due(&plain, fetched + day - 1, day), "under a day old");
        assert!(due(&plain, fetched + day, day), "a day old");
        let ending = |fetched_at| {
            record(
                &metadata(r#"validUntil="2026-12-07T00:00:00Z""#),
                fetched_at,
            )
        };
        assert!(
            !due(&ending(fetched), fetched + 60, day),
            "fresh, days left"
        );
        // Fetched a minute ago, but less than a day left.
        let late = until - day + 1;
        assert!(due(&ending(late - 60), late, day), "less than a day left");
    }
}

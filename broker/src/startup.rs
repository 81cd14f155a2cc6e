//! Owns wiring: builds the store, pages, connectors, session manager and HTTP server from
//! settings, and runs the background tasks. No logic of its own.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::audit::Auditor;
use crate::clock::{Clock, Entropy, OsEntropy, SystemClock};
use crate::config::Settings;
use crate::domain::kek::{KeyEncryptionKey, KeyEncryptionKeys};
use crate::domain::{Email, SecretString, UserId};
use crate::pages::Pages;
use crate::provider::Provider;
use crate::provider::clients::ClientRegistry;
use crate::provider::keys::KeyRing;
use crate::ratelimit::{Lockout, RateLimiter};
use crate::session::SessionManager;
use crate::storage::{DieselStore, PoolSettings, Store, User};
use crate::upstream::local::{self, LOCAL_UPSTREAM_ID, LocalAccounts};
use crate::upstream::oidc::OidcConnector;
use crate::upstream::saml::SamlConnector;
use crate::upstream::{Connector, Upstream, Upstreams};
use crate::web::{self as webmod, AppState, cookies::CookieNames, csrf::Csrf, metrics::Metrics};

pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_PASSWORD: &str = "demo";

/// The capabilities injected into the broker: production uses the wall clock and the OS RNG.
#[derive(Clone)]
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
}

impl Default for Deps {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
        }
    }
}

/// Opens the configured database and applies pending migrations.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<DieselStore>> {
    let store = DieselStore::open_with(
        &settings.database,
        &PoolSettings {
            size: settings.pool_size,
            busy_timeout: settings.busy_timeout,
            pool_timeout: settings.pool_timeout,
            statement_timeout: settings.statement_timeout,
        },
    )
    .with_context(|| format!("opening database {}", settings.database.redacted()))?;
    let applied = store.migrate().context("applying migrations")?;
    for v in &applied {
        tracing::info!(version = %v, "migration applied");
    }
    Ok(Arc::new(store))
}

/// Creates the demo user of the embedded default if it does not exist yet.
pub fn ensure_demo_user(store: &dyn Store, deps: &Deps) -> anyhow::Result<()> {
    let email = Email::parse(DEMO_EMAIL).map_err(|e| anyhow::anyhow!("{e}"))?;
    if store.user_by_email(&email)?.is_some() {
        return Ok(());
    }
    let now = deps.clock.now();
    let hash = local::hash_password(
        &SecretString::new(DEMO_PASSWORD.into()),
        deps.entropy.as_ref(),
    )?;
    store.insert_user(&User {
        id: UserId::new_random(deps.entropy.as_ref()),
        email,
        name: "Demo User".into(),
        password_hash: Some(hash),
        disabled: false,
        created_at: now,
        updated_at: now,
        tokens_valid_after: 0,
    })?;
    Ok(())
}

/// The key-encryption key: from the config, else a key file in data_dir (created 0600).
pub fn key_encryption_key(settings: &Settings, deps: &Deps) -> anyhow::Result<KeyEncryptionKey> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    if let Some(k) = &settings.key_encryption_key {
        return Ok(KeyEncryptionKey::new(
            *secrecy::ExposeSecret::expose_secret(&**k),
        ));
    }
    let path = settings.data_dir.join("key-encryption.key");
    let read = |path: &std::path::Path| -> anyhow::Result<KeyEncryptionKey> {
        let text = std::fs::read_to_string(path)?;
        let bytes = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| anyhow::anyhow!("{} does not hold 32 base64 bytes", path.display()))?;
        Ok(KeyEncryptionKey::new(bytes))
    };
    if path.exists() {
        if !settings.demo {
            tracing::warn!(path = %path.display(), "the key-encryption key is read from a file next to the data (a backup of data_dir then holds the key to everything in it): set provider.key_encryption_key_file to a file kept elsewhere");
        }
        return read(&path);
    }
    // Outside demo mode the key is the operator's to keep apart from the data: none is made.
    if !settings.demo {
        anyhow::bail!(
            "no key-encryption key: set provider.key_encryption_key_file (a file kept apart from              data_dir) or CONCIERGE__PROVIDER__KEY_ENCRYPTION_KEY, e.g. from `openssl rand -base64 32`;              a key file next to the data is made only in demo mode"
        );
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let key = deps.entropy.bytes32();
    // Written whole under a private name, then linked into place: of several processes starting
    // at once, one key wins and every other reads that one, never a half-written file.
    let tmp = settings.data_dir.join(format!(
        ".key-encryption.key.{}",
        crate::flow::signin::random_token(deps.entropy.as_ref())
    ));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        writeln!(f, "{}", STANDARD.encode(key))?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "created a key-encryption key file; back it up, or set provider.key_encryption_key");
            Ok(KeyEncryptionKey::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The key-encryption keys: the current one ([`key_encryption_key`]), which seals, and
/// `provider.previous_key_encryption_keys`, which only open.
pub fn key_encryption_keys(settings: &Settings, deps: &Deps) -> anyhow::Result<KeyEncryptionKeys> {
    let current = key_encryption_key(settings, deps)?;
    let previous = settings
        .previous_key_encryption_keys
        .iter()
        .map(|k| KeyEncryptionKey::new(*secrecy::ExposeSecret::expose_secret(&**k)))
        .filter(|k| k.kid() != current.kid())
        .collect();
    Ok(KeyEncryptionKeys::new(current, previous))
}

/// Builds the OpenID provider and makes sure every algorithm in use has a signing key.
pub fn build_provider(
    settings: &Settings,
    deps: &Deps,
    store: Arc<dyn Store>,
) -> anyhow::Result<Provider> {
    let keys = KeyRing::new(key_encryption_keys(settings, deps)?);
    let clients = ClientRegistry::new(settings.clients.clone(), Arc::clone(&store));
    let audit = Arc::new(Auditor::new(Arc::clone(&store), Arc::clone(&deps.clock))?);
    let provider = Provider::new(
        settings.provider.clone(),
        clients,
        keys,
        Arc::clone(&store),
        Arc::clone(&deps.clock),
        Arc::clone(&deps.entropy),
        audit,
    );
    provider
        .keys
        .ensure(
            store.as_ref(),
            deps.entropy.as_ref(),
            &provider.algorithms(),
            deps.clock.now(),
        )
        .context("preparing signing keys")?;
    Ok(provider)
}

pub struct Application {
    port: u16,
    server: Server,
    sessions: Arc<SessionManager>,
    provider: Arc<Provider>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Checks what only connector code can parse, so a bad file is refused naming its key (at boot
/// and by `concierge config check`) rather than when the connector is built: a SAML upstream's
/// metadata file.
pub fn check_connectors(settings: &Settings) -> Result<(), crate::config::ConfigError> {
    let origin = match &settings.config_path {
        Some(p) => format!("config file {}", p.display()),
        None => "the embedded default configuration".to_owned(),
    };
    for (i, u) in settings.upstreams.iter().enumerate() {
        if let crate::config::UpstreamKind::Saml(cfg) = &u.kind
            && let crate::config::SamlMetadataSource::File { xml, .. } = &cfg.metadata
        {
            crate::upstream::saml::metadata::IdpMetadata::parse(xml).map_err(|e| {
                crate::config::ConfigError::Invalid {
                    origin: origin.clone(),
                    key: format!("upstreams[{i}].metadata_file"),
                    message: e.to_string(),
                }
            })?;
        }
    }
    Ok(())
}

impl Application {
    /// Builds everything and binds the listener; call inside a Tokio runtime.
    pub fn build(settings: Settings, deps: Deps) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = open_store(&settings)?;
        Self::build_with_store(settings, deps, store)
    }

    pub fn build_with_store(
        settings: Settings,
        deps: Deps,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        check_connectors(&settings)?;
        if settings.demo {
            ensure_demo_user(store.as_ref(), &deps)?;
        }
        let pages = Pages::load(
            settings.ui.templates_dir.as_deref(),
            &settings.ui.product_name,
        )
        .context("loading page templates")?;
        let kek = Arc::new(key_encryption_keys(&settings, &deps)?);
        let roots = crate::secrets::RootSecrets::load(
            store.as_ref(),
            &kek,
            deps.entropy.as_ref(),
            deps.clock.now(),
            i64::try_from(settings.provider.root_overlap.as_secs()).unwrap_or(i64::MAX),
        )
        .context("opening the root secret")?;
        let csrf = match roots.derive(crate::secrets::Purpose::Csrf)? {
            (current, None) => Csrf::new(*current.bytes()),
            (current, Some((previous, until))) => Csrf::new(*current.bytes()).with_previous(
                *previous.bytes(),
                until,
                Arc::clone(&deps.clock),
            ),
        };
        let journey_seal = roots.journey_keys()?;
        let local_accounts = Arc::new(LocalAccounts::new(
            Arc::clone(&store),
            deps.entropy.as_ref(),
        )?);
        let mut list = vec![Upstream {
            id: LOCAL_UPSTREAM_ID.into(),
            display_name: "Local account".into(),
            connector: Connector::Password(Arc::new(local_accounts)),
        }];
        for u in &settings.upstreams {
            let connector = match &u.kind {
                crate::config::UpstreamKind::Oidc(cfg) => {
                    Connector::Redirect(Arc::new(OidcConnector::new(
                        &u.id,
                        cfg,
                        &settings.http,
                        Arc::clone(&deps.clock),
                        Arc::clone(&deps.entropy),
                    )?))
                }
                crate::config::UpstreamKind::Saml(cfg) => {
                    Connector::Post(Arc::new(SamlConnector::new(
                        &u.id,
                        cfg,
                        &settings.public_url,
                        &settings.http,
                        Arc::clone(&store),
                        Arc::clone(&deps.clock),
                        Arc::clone(&deps.entropy),
                    )?))
                }
            };
            list.push(Upstream {
                id: u.id.clone(),
                display_name: u.name.clone().unwrap_or_else(|| u.id.clone()),
                connector,
            });
        }
        let upstreams = Upstreams::new(list);
        let provider = Arc::new(build_provider(&settings, &deps, Arc::clone(&store))?);
        let sessions = Arc::new(
            SessionManager::new(
                Arc::clone(&store),
                Arc::clone(&deps.clock),
                Arc::clone(&deps.entropy),
                &settings.session,
            )
            .with_audit(Arc::clone(&provider.audit)),
        );
        let metrics = Metrics::new()?;
        provider.audit.register(metrics.registry())?;
        let limiter = Arc::new(RateLimiter::new(
            settings.limits.clone(),
            Arc::clone(&deps.clock),
        ));
        let login_lockout = Arc::new(Lockout::new(
            Arc::clone(&store),
            Arc::clone(&deps.clock),
            settings.limits.lockout,
            "login:",
        ));
        let passkeys = crate::mfa::passkey::offer(
            &settings.mfa.passkey,
            &settings.public_url,
            &settings.ui.product_name,
            Arc::clone(&store),
            Arc::clone(&deps.clock),
            Arc::clone(&provider.audit),
        );
        let mfa = Arc::new(
            crate::mfa::Mfa::new(
                settings.mfa.clone(),
                Arc::clone(&store),
                Arc::clone(&deps.clock),
                Arc::clone(&deps.entropy),
                Arc::clone(&kek),
                settings.config_path.clone().map(plugin_manifests),
            )
            .context("starting the MFA plugin host")?
            .with_audit(Arc::clone(&provider.audit))
            .with_native(
                passkeys
                    .clone()
                    .map(|p| p as Arc<dyn crate::mfa::factor::NativeFactor>),
            )
            .with_passwordless(passkeys.map(|p| p as Arc<dyn crate::mfa::factor::Passwordless>)),
        );
        // A sign-in journey lives as long as a second-factor step may take (each step extends it).
        let journey_ttl = i64::try_from(settings.mfa.step_ttl.as_secs())
            .unwrap_or(600)
            .max(300);
        let saml = Arc::new(
            crate::saml_idp::SamlIdp::load(
                &settings.public_url,
                settings.saml_apps.clone(),
                Arc::clone(&store),
                &kek,
                Arc::clone(&deps.clock),
                Arc::clone(&deps.entropy),
            )
            .context("preparing the SAML IdP key")?
            .requiring_signed_requests(settings.saml_idp_want_authn_requests_signed),
        );
        // The SAML SPs of an ending session are told through the provider's logout outbox.
        let _ =
            provider
                .other_parties
                .set(Arc::new(crate::flow::saml_backchannel::SamlParties::new(
                    Arc::clone(&saml),
                    Arc::clone(&provider.audit),
                )));
        let saml_key_reload =
            spawn_saml_key_reload(&saml, &kek, settings.provider.key_reload_interval);
        let signin = Arc::new(crate::flow::signin::SignIn {
            store: Arc::clone(&store),
            sessions: Arc::clone(&sessions),
            provider: Arc::clone(&provider),
            saml,
            mfa: Arc::clone(&mfa),
            upstreams: upstreams.clone(),
            journeys: crate::flow::journey::Journeys::new(
                Arc::clone(&store),
                Arc::clone(&deps.clock),
                Arc::clone(&deps.entropy),
                journey_ttl,
                journey_seal,
            )
            .with_max_age(i64::try_from(settings.mfa.journey_max_age.as_secs()).unwrap_or(3600)),
            limiter: Arc::clone(&limiter),
            lockout: Arc::clone(&login_lockout),
            clock: Arc::clone(&deps.clock),
            entropy: Arc::clone(&deps.entropy),
            settings: crate::flow::signin::SignInSettings {
                public_url: settings.public_url.clone(),
                mfa_default: settings.mfa.required,
                optional_counts_implicit_factors: settings.mfa.optional_counts_implicit_factors,
                session: settings.session.clone(),
                upstreams: settings.upstreams.clone(),
            },
        });
        // The routed upstreams' sign-in endpoints, for the login page's CSP: found in the
        // background (now, then every minute), never while a page renders.
        let routed = crate::upstream::RoutedEndpoints::default();
        let routed_task = {
            let (routed, upstreams) = (routed.clone(), upstreams.clone());
            let ids = crate::web::routed_upstreams(&settings.upstreams);
            (!ids.is_empty()).then(|| {
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        routed.refresh(&upstreams, &ids).await;
                    }
                })
            })
        };
        let state = web::Data::new(AppState {
            cookies: CookieNames::new(&settings.session.cookie_name, settings.https()),
            settings: settings.clone(),
            store: Arc::clone(&store),
            sessions: Arc::clone(&sessions),
            pages: Arc::new(pages),
            upstreams,
            csrf,
            clock: Arc::clone(&deps.clock),
            entropy: Arc::clone(&deps.entropy),
            metrics,
            provider: Arc::clone(&provider),
            limiter,
            login_lockout: Arc::clone(&login_lockout),
            mfa: Arc::clone(&mfa),
            signin,
            routed: routed.clone(),
        });

        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let max_form = settings.max_form_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(webmod::observe))
                .configure(|cfg| webmod::routes(cfg, max_form))
        })
        .listen(listener)?;
        if let Some(w) = settings.workers {
            server = server.workers(w);
        }
        // Blocking work is database work: more threads than connections only wait on the pool,
        // and on a busy core each extra thread costs context switches (ADR 5).
        let blocking = usize::try_from(settings.pool_size).unwrap_or(8).max(2);
        server = server.worker_max_blocking_threads(blocking);
        let server = server.run();
        let mut tasks = spawn_background(&sessions, &provider, &store, &login_lockout, &settings);
        tasks.extend(routed_task);
        tasks.push(saml_key_reload);
        if let Some(t) = spawn_plugin_reload(&mfa, &provider) {
            tasks.push(t);
        }
        tasks.push(spawn_saml_metadata_refresh(&store, &settings, &deps.clock)?);
        Ok(Self {
            port,
            server,
            sessions,
            provider,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM), then writes pending last-seen updates.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for t in &self.tasks {
            t.abort();
        }
        let sessions = self.sessions;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || sessions.flush_touches()).await {
            tracing::warn!(error = %e, "final last-seen flush failed");
        }
        let provider = self.provider;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || provider.audit.flush()).await {
            tracing::warn!(error = %e, "final audit flush failed");
        }
        result
    }
}

/// Where hot reload re-reads the plugin manifests: the config file (plus the environment, as
/// at boot), parsed and validated whole, so an invalid edit keeps the loaded plugins.
fn plugin_manifests(path: std::path::PathBuf) -> crate::mfa::ManifestSource {
    Box::new(move || {
        Settings::load(Some(&path), std::env::vars())
            .map(|s| s.mfa.plugins)
            .map_err(|e| e.to_string())
    })
}

/// The metadata of SPs registered from a URL, fetched again once older than
/// `saml_apps_metadata_refresh` (checked every minute at most): a failure keeps the last good
/// copy.
fn spawn_saml_metadata_refresh(
    store: &Arc<dyn Store>,
    settings: &Settings,
    clock: &Arc<dyn crate::clock::Clock>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let every = settings.saml_apps_metadata_refresh;
    let http = crate::http::client(std::time::Duration::from_secs(10), &settings.http)?;
    let mut refresher = crate::saml_idp::registry::Refresher::new(Arc::clone(store), http, every);
    let clock = Arc::clone(clock);
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.min(std::time::Duration::from_secs(60)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match refresher.run_once(clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(replaced = n, "SP metadata refreshed"),
                Err(e) => {
                    tracing::warn!(error = %e, "SP metadata refresh: storage failed; will retry")
                }
            }
        }
    }))
}

/// Hot reload: plugin files, their pins, and `concierge plugins reload` are checked every
/// `mfa.reload_interval`.
fn spawn_plugin_reload(
    mfa: &Arc<crate::mfa::Mfa>,
    provider: &Arc<Provider>,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = mfa.settings().reload_interval;
    if every.is_zero() {
        return None;
    }
    let (mfa, provider) = (Arc::clone(mfa), Arc::clone(provider));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let m = Arc::clone(&mfa);
            match tokio::task::spawn_blocking(move || m.poll_reload()).await {
                Ok(Ok(reloaded)) => {
                    for id in reloaded {
                        let outcome = match mfa.registry().get(&id) {
                            Some(crate::mfa::registry::Slot::Ready(_)) => "loaded",
                            _ => "unavailable",
                        };
                        provider.audit.record(
                            crate::audit::Event::new(crate::audit::EventKind::PluginReloaded)
                                .reason(format!("{id}:{outcome}")),
                        );
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "plugin reload check failed"),
                Err(_) => {}
            }
        }
    }))
}

/// The SAML IdP's keys rotated by the CLI are picked up within the provider's key reload
/// interval, as the provider's keys are (a rotation publishes at least twice that before the
/// new key signs: ADR 23).
fn spawn_saml_key_reload(
    saml: &Arc<crate::saml_idp::SamlIdp>,
    kek: &Arc<KeyEncryptionKeys>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let (saml, kek) = (Arc::clone(saml), Arc::clone(kek));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (s, k) = (Arc::clone(&saml), Arc::clone(&kek));
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.reload_keys(&k)).await {
                tracing::warn!(error = %e, "SAML IdP key reload failed");
            }
        }
    })
}

fn spawn_background(
    sessions: &Arc<SessionManager>,
    provider: &Arc<Provider>,
    store: &Arc<dyn Store>,
    login_lockout: &Arc<Lockout>,
    settings: &Settings,
) -> Vec<tokio::task::JoinHandle<()>> {
    let audit_writer = {
        let provider = Arc::clone(provider);
        let every = settings.audit.flush_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let p = Arc::clone(&provider);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.audit.flush()).await {
                    tracing::warn!(error = %e, "audit write failed; will retry");
                }
            }
        })
    };
    let flusher = {
        let sessions = Arc::clone(sessions);
        let every = settings.session.touch_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = Arc::clone(&sessions);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush_touches()).await {
                    tracing::warn!(error = %e, "last-seen flush failed; will retry");
                }
            }
        })
    };
    // Keys rotated by another instance (or the CLI) are picked up within the reload interval;
    // a new key is published `jwks_max_age` (at least twice that) before it signs.
    let key_reload = {
        let provider = Arc::clone(provider);
        let store = Arc::clone(store);
        let every = settings.provider.key_reload_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (p, s) = (Arc::clone(&provider), Arc::clone(&store));
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || p.keys.reload(s.as_ref())).await
                {
                    tracing::warn!(error = %e, "signing key reload failed");
                }
            }
        })
    };
    let sweeper = {
        let provider = Arc::clone(provider);
        let store = Arc::clone(store);
        let sessions = Arc::clone(sessions);
        let lockout = Arc::clone(login_lockout);
        let every = settings.session.sweep_interval;
        let retention = i64::try_from(settings.audit.retention.as_secs()).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = Arc::clone(&sessions);
                match tokio::task::spawn_blocking(move || s.sweep()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(deleted = n, "expired sessions swept"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "session sweep failed"),
                    _ => {}
                }
                let st = Arc::clone(&store);
                let now = sessions.now();
                match tokio::task::spawn_blocking(move || st.delete_expired_grants(now)).await {
                    Ok(Ok(n)) if n > 0 => {
                        tracing::info!(deleted = n, "expired codes and tokens swept")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "grant sweep failed"),
                    _ => {}
                }
                // Keys retired for longer than any token they signed can live, plus a day.
                let (st, cutoff) = (Arc::clone(&store), now - provider.max_token_ttl() - 86_400);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || {
                    st.delete_signing_keys_retired_before(cutoff)
                })
                .await
                {
                    tracing::warn!(error = %e, "retired key cleanup failed");
                }
                let (p, l) = (Arc::clone(&provider), Arc::clone(&lockout));
                match tokio::task::spawn_blocking(move || {
                    Ok::<_, crate::storage::StorageError>((p.audit.sweep(retention)?, l.sweep()?))
                })
                .await
                {
                    Ok(Ok((audit, _))) if audit > 0 => {
                        tracing::info!(deleted = audit, "audit rows past retention deleted")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "audit or lockout sweep failed"),
                    _ => {}
                }
            }
        })
    };
    let logout_sender = {
        let provider = Arc::clone(provider);
        let sender = crate::provider::logout::LogoutSender::new(&settings.http);
        tokio::spawn(async move {
            let sender = match sender {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "no HTTP client for back-channel logout");
                    return;
                }
            };
            loop {
                provider.deliver_logouts(&sender).await;
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    provider.logout_wakeup.notified(),
                )
                .await;
            }
        })
    };
    vec![flusher, audit_writer, sweeper, key_reload, logout_sender]
}

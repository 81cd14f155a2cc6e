//! Owns wiring: builds the store, pages, connectors, session manager and HTTP server from
//! settings, and runs the background tasks. No logic of its own.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::clock::{Clock, Entropy, OsEntropy, SystemClock};
use crate::config::Settings;
use crate::domain::{Email, SecretString, UserId};
use crate::pages::Pages;
use crate::session::SessionManager;
use crate::storage::{DieselStore, Store, User};
use crate::upstream::local::{self, LOCAL_UPSTREAM_ID, LocalAccounts};
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
    let store = DieselStore::open(
        &settings.database,
        settings.pool_size,
        settings.busy_timeout,
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
    })?;
    Ok(())
}

pub struct Application {
    port: u16,
    server: Server,
    sessions: Arc<SessionManager>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        if settings.demo {
            ensure_demo_user(store.as_ref(), &deps)?;
        }
        let pages = Pages::load(
            settings.ui.templates_dir.as_deref(),
            &settings.ui.product_name,
        )
        .context("loading page templates")?;
        let csrf_key =
            store.secret_or_insert("csrf_key", &deps.entropy.bytes32(), deps.clock.now())?;
        let csrf_key: [u8; 32] = csrf_key
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored csrf_key is not 32 bytes"))?;
        let local_accounts = Arc::new(LocalAccounts::new(
            Arc::clone(&store),
            deps.entropy.as_ref(),
        )?);
        let upstreams = Upstreams::new(vec![Upstream {
            id: LOCAL_UPSTREAM_ID.into(),
            display_name: "Local account".into(),
            connector: Connector::Password(Arc::new(local_accounts)),
        }]);
        let sessions = Arc::new(SessionManager::new(
            Arc::clone(&store),
            Arc::clone(&deps.clock),
            Arc::clone(&deps.entropy),
            &settings.session,
        ));
        let state = web::Data::new(AppState {
            cookies: CookieNames::new(&settings.session.cookie_name, settings.https()),
            settings: settings.clone(),
            store: Arc::clone(&store),
            sessions: Arc::clone(&sessions),
            pages: Arc::new(pages),
            upstreams,
            csrf: Csrf::new(csrf_key),
            clock: Arc::clone(&deps.clock),
            entropy: Arc::clone(&deps.entropy),
            metrics: Metrics::new()?,
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
        let server = server.run();
        let tasks = spawn_background(&sessions, &settings);
        Ok(Self {
            port,
            server,
            sessions,
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
        result
    }
}

fn spawn_background(
    sessions: &Arc<SessionManager>,
    settings: &Settings,
) -> Vec<tokio::task::JoinHandle<()>> {
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
    let sweeper = {
        let sessions = Arc::clone(sessions);
        let every = settings.session.sweep_interval;
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
            }
        })
    };
    vec![flusher, sweeper]
}

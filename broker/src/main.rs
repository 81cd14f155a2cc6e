//! Owns the `concierge` command line: parses arguments and wires the library; no logic.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use concierge::audit::{Event, EventKind};
use concierge::clock::{Clock, SystemClock};
use concierge::config::{ConfigError, Settings};
use concierge::domain::{Email, SecretString};
use concierge::flow::admin as admin_flow;
use concierge::startup::{self, Application, DEMO_EMAIL, DEMO_PASSWORD, Deps};
use concierge::storage::{MfaStore, Store};
use concierge::telemetry;
use concierge::upstream::local::admin;

#[derive(Parser)]
#[command(
    name = "concierge",
    version,
    about = "Identity broker and OpenID provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker. Without --config: the embedded default (demo mode, SQLite, 127.0.0.1:8080).
    Serve {
        #[arg(long, env = "CONCIERGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, env = "CONCIERGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage OpenID clients registered in the database (clients in the config file are listed too).
    Clients {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Manage SAML service providers registered in the database from their metadata (those in
    /// the config file are listed too).
    SamlApps {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: SamlAppsCommand,
    },
    /// Manage signing keys.
    Keys {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// See and end first-party sessions.
    Sessions {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// MFA plugins: list the configured ones, check a component file, reload running brokers.
    Plugins {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Manage local accounts. Passwords are read from standard input.
    Users {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Subcommand)]
enum SamlAppsCommand {
    /// Register an SP from its metadata (its ACS URLs, logout endpoint and keys are the
    /// metadata's); one from a URL is fetched again in the background.
    Add {
        #[arg(
            long,
            conflicts_with = "metadata_url",
            required_unless_present = "metadata_url"
        )]
        metadata_file: Option<PathBuf>,
        #[arg(long)]
        metadata_url: Option<url::Url>,
        #[arg(long)]
        name: Option<String>,
        /// email, persistent or transient.
        #[arg(long, default_value = "email")]
        name_id_format: String,
        /// assertion, response or both.
        #[arg(long, default_value = "both")]
        sign: String,
        /// The sign-in policy: required, optional or off (default: mfa.required).
        #[arg(long)]
        mfa: Option<String>,
        /// The SP accepts unsolicited Responses (IdP-initiated sign-in).
        #[arg(long)]
        idp_initiated: bool,
    },
    /// List SPs.
    List,
    /// Remove a registered SP.
    Remove { entity_id: String },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// The configured plugins: pin, grants, limits, and whether each loads.
    List,
    /// Check a component file: its sha256 (the pin to configure), the capabilities it imports
    /// (the grants it needs) and what it says about itself.
    Check { file: PathBuf },
    /// Ask every running broker on this database to reload its plugins now.
    Reload,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with CONCIERGE__* overrides applied) and exit.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum ClientsCommand {
    /// Register a client. A confidential client's secret is printed once.
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// web, mobile or api.
        #[arg(long, default_value = "web")]
        channel: String,
        /// A public client (mobile app, SPA): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// Grants (default: authorization_code refresh_token).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Allowed scopes (default: openid profile email offline_access).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// client_secret_basic (default) or client_secret_post.
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// RS256, ES256 or EdDSA (default: provider.signing_alg).
        #[arg(long)]
        signing_alg: Option<String>,
    },
    /// List clients.
    List,
    /// Remove a registered client.
    Remove { id: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Publish a new key now; it signs after provider.jwks_max_age, when caches have it. The old
    /// key stays published until every token it signed has expired.
    Rotate {
        #[arg(long, default_value = "RS256")]
        alg: String,
    },
    /// Rotate the SAML IdP's signing key: a new key pair is published in the IdP metadata now
    /// and signs from --publish-for later; the current key signs until then and stays published
    /// as long again (ADR 23). The pairwise NameID key is never rotated.
    RotateSaml {
        /// How long SPs have to load the new certificate from the metadata before it signs
        /// (at least twice provider.key_reload_interval).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        publish_for: std::time::Duration,
    },
    /// List signing keys (the OpenID provider's, then the SAML IdP's with their SHA-256
    /// certificate fingerprints).
    List,
    /// Replace the root secret (sealed in the database) that every CSRF and journey-state key
    /// is derived from. Restart every instance afterwards; forms and sign-ins begun before keep
    /// working for provider.root_overlap.
    RotateRoot,
    /// Re-seal every sealed value in the database (root secrets, signing keys, plugin states)
    /// under the current key-encryption key, so that the previous ones can be removed.
    Rewrap,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List sessions, oldest first: all of them, a user's, or those a client took part in.
    List {
        #[arg(long, conflicts_with = "client")]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
    /// End sessions everywhere: their refresh tokens go and every app that took part gets a
    /// back-channel logout. `--user` also revokes every token the user holds (revoke-all).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["sid", "user", "client", "all"])))]
    Revoke {
        #[arg(long)]
        sid: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a local account.
    Add {
        email: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Set a new password (ends the user's sessions).
    Passwd { email: String },
    /// Disable an account (ends the user's sessions).
    Disable { email: String },
    /// Re-enable a disabled account.
    Enable { email: String },
    /// List a user's passkeys (id, name, added, last used).
    Passkeys { email: String },
    /// Remove one of a user's passkeys, by the id `passkeys` lists (audited).
    RemovePasskey { email: String, id: String },
}

fn load(config: Option<&Path>) -> Result<Settings, ConfigError> {
    Settings::load(config, std::env::vars())
}

fn read_password() -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == second, "passwords do not match");
        return Ok(SecretString::new(first));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(SecretString::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

fn parse_email(raw: &str) -> anyhow::Result<Email> {
    Email::parse(raw).map_err(|e| anyhow::anyhow!("{raw}: {e}"))
}

fn demo_banner(settings: &Settings) {
    let lines = [
        "Concierge is running in DEMO MODE (no config file given).".to_owned(),
        format!("Database: {}", settings.database.redacted()),
        format!("Sign in at {}login", settings.public_url),
        format!("as {DEMO_EMAIL} / {DEMO_PASSWORD}"),
        "Not for production: write a config file (docs/config.md).".to_owned(),
    ];
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let rule = "─".repeat(width + 2);
    let mut out = format!("\n  ┌{rule}┐\n");
    for l in &lines {
        out.push_str(&format!("  │ {l:<width$} │\n"));
    }
    out.push_str(&format!("  └{rule}┘\n"));
    eprintln!("{out}");
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load(config.as_deref())?;
    telemetry::init(settings.log.format, &settings.log.level);
    if settings.demo {
        demo_banner(&settings);
    }
    let app = Application::build(settings.clone(), Deps::default())?;
    tracing::info!(
        "listening on http://{}:{} ({})",
        settings.bind.ip(),
        app.port(),
        settings.database.redacted()
    );
    app.run_until_stopped().await.context("server failed")
}

fn users(config: Option<PathBuf>, command: UsersCommand) -> anyhow::Result<()> {
    let settings = load(config.as_deref())?;
    let store = startup::open_store(&settings)?;
    let deps = Deps::default();
    let now = SystemClock.now();
    // Revocations go through the provider, so that the apps hear of them (back-channel logout,
    // delivered by the running broker instances from the outbox).
    let provider = startup::build_provider(&settings, &deps, store.clone())?;
    let revoke = |user: &concierge::domain::UserId, reason: &str| {
        provider.audit.record(
            Event::new(EventKind::AdminAction)
                .user(user.as_str())
                .reason(format!("{reason} by cli")),
        );
        provider
            .revoke_user(user, reason)
            .map(|n| n as u64)
            .map_err(|e| admin::AdminError::Revoke(e.to_string()))
    };
    match command {
        UsersCommand::Add { email, name } => {
            let email = parse_email(&email)?;
            let password = read_password()?;
            let user = admin::add_user(
                store.as_ref(),
                deps.entropy.as_ref(),
                now,
                email,
                name,
                &password,
            )?;
            println!("created {} ({})", user.email, user.id);
        }
        UsersCommand::Passwd { email } => {
            let email = parse_email(&email)?;
            let password = read_password()?;
            let ended = admin::set_password(
                store.as_ref(),
                &revoke,
                deps.entropy.as_ref(),
                now,
                &email,
                &password,
            )?;
            println!("password changed for {email}; {ended} session(s) ended");
        }
        UsersCommand::Disable { email } => {
            let email = parse_email(&email)?;
            let ended = admin::set_disabled(store.as_ref(), &revoke, now, &email, true)?;
            println!("disabled {email}; {ended} session(s) ended");
        }
        UsersCommand::Enable { email } => {
            let email = parse_email(&email)?;
            admin::set_disabled(store.as_ref(), &revoke, now, &email, false)?;
            println!("enabled {email}");
        }
        UsersCommand::Passkeys { email } => {
            let user = user_by_email(store.as_ref(), &email)?;
            let when = |t: i64| {
                let secs = u64::try_from(t).unwrap_or(0);
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
                )
                .to_string()
            };
            for p in admin_flow::passkeys(store.as_ref(), &user.id)? {
                println!(
                    "{}\t{}\tadded {}\tlast used {}\t{}",
                    p.id,
                    p.name,
                    when(p.created_at),
                    p.last_used_at.map_or_else(|| "never".to_owned(), when),
                    if p.backup_eligible {
                        "synced"
                    } else {
                        "device-bound"
                    },
                );
            }
        }
        UsersCommand::RemovePasskey { email, id } => {
            let user = user_by_email(store.as_ref(), &email)?;
            let left = admin_flow::remove_passkey(store.as_ref(), &provider, &user.id, &id, "cli")?;
            println!(
                "removed the passkey of {}; {left} left; the user's sessions ended",
                user.email
            );
        }
    }
    provider.audit.flush()?;
    Ok(())
}

fn user_by_email(store: &dyn Store, raw: &str) -> anyhow::Result<concierge::storage::User> {
    let email = parse_email(raw)?;
    store
        .user_by_email(&email)?
        .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))
}

fn sessions(config: Option<PathBuf>, command: SessionsCommand) -> anyhow::Result<()> {
    let settings = load(config.as_deref())?;
    let store = startup::open_store(&settings)?;
    match command {
        SessionsCommand::List { user, client } => {
            let list = match (user, client) {
                (Some(u), _) => admin_flow::Target::User(user_by_email(store.as_ref(), &u)?.id),
                (None, Some(c)) => admin_flow::Target::Client(c),
                (None, None) => admin_flow::Target::All,
            };
            let list = admin_flow::list(store.as_ref(), &list, 100_000)?;
            println!("sid\tuser\tchannel\tip\tupstream\tsigned_in\tlast_seen\tuser_agent");
            for s in list {
                let email = store
                    .user_by_id(&s.user_id)?
                    .map(|u| u.email.to_string())
                    .unwrap_or_default();
                println!(
                    "{}\t{email}\t{}\t{}\t{}\t{}\t{}\t{}",
                    s.sid,
                    s.channel.as_str(),
                    s.ip,
                    s.upstream,
                    concierge::web::format_time(s.auth_time),
                    concierge::web::format_time(s.last_seen),
                    s.user_agent
                );
            }
        }
        SessionsCommand::Revoke {
            sid,
            user,
            client,
            all,
        } => {
            let provider = startup::build_provider(&settings, &Deps::default(), store.clone())?;
            let target = if let Some(u) = user {
                admin_flow::Target::User(user_by_email(store.as_ref(), &u)?.id)
            } else if let Some(sid) = sid {
                admin_flow::Target::Sid(sid)
            } else if let Some(c) = client {
                admin_flow::Target::Client(c)
            } else {
                debug_assert!(all);
                admin_flow::Target::All
            };
            let ended = admin_flow::revoke(store.as_ref(), &provider, &target, "cli")?;
            provider.audit.flush()?;
            println!("{ended} session(s) ended; the apps are told by back-channel logout");
        }
    }
    Ok(())
}

fn clients(config: Option<PathBuf>, command: ClientsCommand) -> anyhow::Result<()> {
    use concierge::domain::client::{self, ClientConfig};
    use concierge::provider::clients;
    let settings = load(config.as_deref())?;
    let store = startup::open_store(&settings)?;
    let now = SystemClock.now();
    match command {
        ClientsCommand::Add {
            id,
            name,
            channel,
            public,
            redirect_uris,
            post_logout_redirect_uris,
            backchannel_logout_uri,
            grants,
            scopes,
            auth_method,
            signing_alg,
        } => {
            anyhow::ensure!(
                !settings.clients.iter().any(|c| c.id == id),
                "client `{id}` is defined in the config file"
            );
            let secret = (!public).then(|| {
                use base64::Engine;
                let mut b = [0u8; 32];
                concierge::clock::Entropy::fill(&concierge::clock::OsEntropy, &mut b);
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
            });
            let mut cfg: ClientConfig = serde_json::from_value(serde_json::json!({ "id": id }))?;
            cfg.name = name.unwrap_or_default();
            cfg.channel = concierge::domain::Channel::parse(&channel)
                .map_err(|e| anyhow::anyhow!("--channel: {e}"))?;
            cfg.public = public;
            cfg.secret_sha256 = secret.as_deref().map(client::hash_secret);
            cfg.auth_method = auth_method;
            cfg.redirect_uris = redirect_uris;
            cfg.post_logout_redirect_uris = post_logout_redirect_uris;
            cfg.backchannel_logout_uri = backchannel_logout_uri;
            if !grants.is_empty() {
                cfg.grant_types = grants;
            }
            if !scopes.is_empty() {
                cfg.scopes = scopes;
            }
            cfg.signing_alg = signing_alg;
            client::Client::parse(&cfg)?.check_admin_scope(&settings.admin.scope)?;
            clients::register(store.as_ref(), &cfg, now)?;
            println!("registered client {}", cfg.id);
            if let Some(s) = secret {
                println!("client_secret: {s}");
                println!("(shown once; only its SHA-256 is stored)");
            }
        }
        ClientsCommand::List => {
            for c in &settings.clients {
                println!(
                    "{}\tconfig\t{}\t{}",
                    c.id,
                    c.channel.as_str(),
                    if c.is_public() {
                        "public"
                    } else {
                        "confidential"
                    }
                );
            }
            for (id, json) in store.list_clients()? {
                let cfg: ClientConfig = serde_json::from_str(&json)?;
                println!(
                    "{id}\tdatabase\t{}\t{}",
                    cfg.channel.as_str(),
                    if cfg.public { "public" } else { "confidential" }
                );
            }
        }
        ClientsCommand::Remove { id } => {
            anyhow::ensure!(store.delete_client(&id)?, "no registered client `{id}`");
            println!("removed client {id}");
        }
    }
    Ok(())
}

fn saml_apps(config: Option<PathBuf>, command: SamlAppsCommand) -> anyhow::Result<()> {
    use concierge::config::saml_apps::RawSamlApp;
    use concierge::saml_idp::registry;
    let settings = load(config.as_deref())?;
    let store = startup::open_store(&settings)?;
    match command {
        SamlAppsCommand::Add {
            metadata_file,
            metadata_url,
            name,
            name_id_format,
            sign,
            mfa,
            idp_initiated,
        } => {
            let metadata = match (&metadata_file, &metadata_url) {
                (Some(f), _) => concierge::config::saml_apps::read_metadata_file(f)
                    .map_err(|m| anyhow::anyhow!("--metadata-file: {m}"))?,
                (None, Some(u)) => {
                    let http = concierge::http::client(
                        std::time::Duration::from_secs(10),
                        &settings.http,
                    )?;
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(registry::fetch(&http, u))?
                }
                (None, None) => anyhow::bail!("--metadata-file or --metadata-url"),
            };
            let mut options: RawSamlApp = serde_json::from_value(serde_json::json!({
                "name_id_format": name_id_format,
                "sign": sign,
                "mfa": mfa,
            }))
            .map_err(|e| anyhow::anyhow!("--name-id-format, --sign or --mfa: {e}"))?;
            options.name = name;
            options.idp_initiated = idp_initiated;
            if settings.saml_idp_want_authn_requests_signed {
                let md = concierge::domain::sp_metadata::SpMetadata::parse(&metadata)?;
                anyhow::ensure!(
                    !md.signing_certs.is_empty(),
                    "{}: its metadata has no signing certificate, and \
                     saml_idp_want_authn_requests_signed is true",
                    md.entity_id
                );
            }
            let app = registry::register(
                store.as_ref(),
                |id| settings.saml_apps.iter().any(|a| a.entity_id == id),
                &options,
                &metadata,
                metadata_url.as_ref(),
                SystemClock.now(),
            )?;
            println!("registered SAML service provider {}", app.entity_id);
            for u in &app.acs_urls {
                println!("  ACS {u}");
            }
        }
        SamlAppsCommand::List => {
            for a in &settings.saml_apps {
                println!("{}	config	{}", a.entity_id, a.name);
            }
            for r in store.list_saml_apps()? {
                let name =
                    registry::app_of(&r).map_or_else(|e| format!("(unreadable: {e})"), |a| a.name);
                println!(
                    "{}	database	{name}	{}",
                    r.entity_id,
                    r.metadata_url.as_deref().unwrap_or("(file)")
                );
            }
        }
        SamlAppsCommand::Remove { entity_id } => {
            anyhow::ensure!(
                store.delete_saml_app(&entity_id)?,
                "no registered SAML service provider `{entity_id}`"
            );
            println!("removed SAML service provider {entity_id}");
        }
    }
    Ok(())
}

fn keys(config: Option<PathBuf>, command: KeysCommand) -> anyhow::Result<()> {
    let settings = load(config.as_deref())?;
    let store = startup::open_store(&settings)?;
    let deps = Deps::default();
    match command {
        KeysCommand::Rotate { alg } => {
            let alg = concierge::domain::jose::Alg::parse(&alg)
                .ok_or_else(|| anyhow::anyhow!("--alg: use RS256, ES256 or EdDSA"))?;
            let ring = concierge::provider::keys::KeyRing::new(startup::key_encryption_keys(
                &settings, &deps,
            )?);
            let delay = i64::try_from(settings.provider.jwks_max_age.as_secs()).unwrap_or(i64::MAX);
            let kid = ring.rotate(
                store.as_ref(),
                deps.entropy.as_ref(),
                alg,
                deps.clock.now(),
                delay,
            )?;
            println!(
                "new key {kid} is published now and signs from {}s from now",
                delay
            );
        }
        KeysCommand::RotateSaml { publish_for } => {
            let min = settings.provider.key_reload_interval * 2;
            anyhow::ensure!(
                publish_for >= min,
                "--publish-for must be at least twice provider.key_reload_interval ({}), so that \
                 every instance publishes the new certificate before any signs with it",
                humantime::format_duration(min)
            );
            if publish_for < std::time::Duration::from_secs(3600) {
                eprintln!(
                    "warning: the IdP metadata is served with max-age=3600; an SP or a proxy \
                     may keep the old copy for up to an hour, longer than --publish-for"
                );
            }
            let delay = i64::try_from(publish_for.as_secs()).unwrap_or(i64::MAX);
            let now = deps.clock.now();
            let schedule = concierge::saml_idp::keys::rotate(
                store.as_ref(),
                &startup::key_encryption_keys(&settings, &deps)?,
                deps.entropy.as_ref(),
                now,
                delay,
            )?;
            print_saml_keys(&schedule, now);
            println!(
                "the new SAML key is published now and signs from {} ({} from now); SPs must \
                 load the IdP metadata again before then",
                rfc3339(now.saturating_add(delay)),
                humantime::format_duration(publish_for)
            );
        }
        KeysCommand::RotateRoot => {
            concierge::secrets::RootSecret::rotate(
                store.as_ref(),
                &startup::key_encryption_keys(&settings, &deps)?,
                deps.entropy.as_ref(),
                deps.clock.now(),
            )?;
            println!(
                "new root secret stored; restart every instance to use it (forms and sign-ins \
                 begun before keep working for provider.root_overlap, {})",
                humantime::format_duration(settings.provider.root_overlap)
            );
        }
        KeysCommand::Rewrap => {
            let ring = startup::key_encryption_keys(&settings, &deps)?;
            let report = concierge::rewrap::rewrap(store.as_ref(), &ring, deps.entropy.as_ref())?;
            for (kind, c) in &report.kinds {
                println!(
                    "{kind}: {} rewrapped, {} already current, {} changed meanwhile, {} failed",
                    c.rewrapped, c.current, c.changed, c.failed
                );
            }
            for (at, e) in &report.failures {
                eprintln!("{at:?}: {e}");
            }
            if !report.complete() {
                anyhow::bail!(
                    "not every value is sealed under the current key {} yet: keep the previous \
                     keys configured and run `concierge keys rewrap` again",
                    ring.current().kid()
                );
            }
            println!(
                "every sealed value is under key {}; the previous keys may be removed",
                ring.current().kid()
            );
        }
        KeysCommand::List => {
            for k in store.signing_keys()? {
                let retired = k
                    .retired_at
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}\t{}\tactive_at={}\tretired_at={retired}",
                    k.kid, k.alg, k.active_at
                );
            }
            let now = deps.clock.now();
            let schedule = concierge::saml_idp::keys::peek(
                store.as_ref(),
                &startup::key_encryption_keys(&settings, &deps)?,
            )?;
            if let Some(schedule) = schedule {
                print_saml_keys(&schedule, now);
            }
        }
    }
    Ok(())
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

/// One line per SAML IdP key: `saml`, its role now, the certificate's SHA-256, from when it
/// signs and until when it is published.
fn print_saml_keys(
    schedule: &concierge::saml_idp::keys::Schedule<concierge::saml_idp::keys::SigningKey>,
    now: i64,
) {
    use concierge::saml_idp::keys::Role;
    for (role, k) in schedule.roles(now) {
        let role = match role {
            Role::Signing => "signing",
            Role::Next => "next",
            Role::Previous => "previous",
            Role::Retired => "retired",
        };
        println!(
            "saml\t{role}\tsha256={}\tsigns_from={}\tpublished_until={}",
            k.key.fingerprint,
            if k.signs_from <= 0 {
                "-".into()
            } else {
                rfc3339(k.signs_from)
            },
            k.published_until.map_or_else(|| "-".into(), rfc3339)
        );
    }
}

fn plugins(config: Option<PathBuf>, command: PluginsCommand) -> anyhow::Result<()> {
    use concierge::mfa::registry;
    match command {
        PluginsCommand::Check { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let engine = registry::engine()?;
            let checked = registry::inspect(&engine, &bytes, None)?;
            let d = &checked.description;
            println!("file      {}", file.display());
            println!("sha256    {}", hex_string(&checked.sha256));
            println!("id        {}", d.id);
            println!("name      {} / {}", d.name.en, d.name.ko);
            println!("kind      {:?}", d.kind);
            println!(
                "enrolment {}",
                if d.needs_enrollment {
                    "needed"
                } else {
                    "not needed"
                }
            );
            println!("amr       {}", d.amr.join(" "));
            let grants: Vec<&str> = concierge::config::mfa::Capability::ALL
                .iter()
                .filter(|c| checked.imports.iter().any(|i| *i == c.interface()))
                .map(|c| c.as_str())
                .collect();
            println!("imports   {}", checked.imports.join(", "));
            println!(
                "grants    [{}]",
                grants
                    .iter()
                    .map(|g| format!("\"{g}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        PluginsCommand::List => {
            let settings = load(config.as_deref())?;
            let engine = registry::engine()?;
            for m in &settings.mfa.plugins {
                let status = match registry::load(&engine, m, &settings.http) {
                    Ok(l) => format!("ok ({})", l.description.name.en),
                    Err(e) => format!("UNAVAILABLE: {e}"),
                };
                let grants: Vec<&str> = m.grants.iter().map(|g| g.as_str()).collect();
                println!(
                    "{}\t{}\tsha256={}\tgrants={}\ttimeout={:?}\tfuel={}\tmemory={}\t{status}",
                    m.id,
                    m.path.display(),
                    hex_string(&m.sha256),
                    grants.join(","),
                    m.timeout,
                    m.fuel,
                    m.memory_bytes
                );
            }
        }
        PluginsCommand::Reload => {
            let settings = load(config.as_deref())?;
            let store = startup::open_store(&settings)?;
            let g = store.raise_signal(concierge::mfa::RELOAD_SIGNAL, SystemClock.now())?;
            println!(
                "reload requested (generation {g}); running brokers reload within mfa.reload_interval ({:?})",
                settings.mfa.reload_interval
            );
        }
    }
    Ok(())
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(config))
        }
        Command::Migrate { config } => {
            let settings = load(config.as_deref())?;
            telemetry::init(settings.log.format, &settings.log.level);
            startup::open_store(&settings)?;
            println!("database {} is up to date", settings.database.redacted());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let settings = load(Some(&file))?;
            startup::check_connectors(&settings)?;
            println!(
                "{}: ok (listens on {}, database {})",
                file.display(),
                settings.bind,
                settings.database.redacted()
            );
            Ok(())
        }
        Command::Users { config, command } => users(config, command),
        Command::Clients { config, command } => clients(config, command),
        Command::SamlApps { config, command } => saml_apps(config, command),
        Command::Sessions { config, command } => sessions(config, command),
        Command::Keys { config, command } => keys(config, command),
        Command::Plugins { config, command } => plugins(config, command),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // libxmlsec1 is locked down (no URI opened, only the SAML profile's transforms) here, before
    // any runtime or thread exists: its lists are not locked (ADR 7). The SAML code calls it
    // again (a no-op) as a second guard.
    if let Err(e) = xmlsec_lockdown::lock_down() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = e.downcast_ref::<ConfigError>().is_some();
            eprintln!("error: {e:#}");
            if config_error {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

//! Owns the `concierge` command line: parses arguments and wires the library; no logic.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use concierge::clock::{Clock, SystemClock};
use concierge::config::{ConfigError, Settings};
use concierge::domain::{Email, SecretString};
use concierge::startup::{self, Application, DEMO_EMAIL, DEMO_PASSWORD, Deps};
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
    /// Manage local accounts. Passwords are read from standard input.
    Users {
        #[arg(long, env = "CONCIERGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with CONCIERGE__* overrides applied) and exit.
    Check { file: PathBuf },
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
                deps.entropy.as_ref(),
                now,
                &email,
                &password,
            )?;
            println!("password changed for {email}; {ended} session(s) ended");
        }
        UsersCommand::Disable { email } => {
            let email = parse_email(&email)?;
            let ended = admin::set_disabled(store.as_ref(), now, &email, true)?;
            println!("disabled {email}; {ended} session(s) ended");
        }
        UsersCommand::Enable { email } => {
            let email = parse_email(&email)?;
            admin::set_disabled(store.as_ref(), now, &email, false)?;
            println!("enabled {email}");
        }
    }
    Ok(())
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
            println!(
                "{}: ok (listens on {}, database {})",
                file.display(),
                settings.bind,
                settings.database.redacted()
            );
            Ok(())
        }
        Command::Users { config, command } => users(config, command),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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

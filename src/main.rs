//! The `sashad` command: `serve`, `config check`, `rotate-key`, and `user add|disable|enable|list`.
//!
//! This file only parses the command line, loads the config, starts logging and calls the
//! library. Operator commands work on the data directory of a stopped daemon: sled admits one
//! process, and while the daemon runs they fail with "database in use".

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sashad::config::{FlagOverrides, Settings};
use sashad::crypto::MasterKey;
use sashad::daemon::{self, KeyOptions};
use sashad::store::{Admission, CreateUser, Role, Store};

/// Runs Claude Code for a web app's users.
#[derive(Debug, Parser)]
#[command(name = "sashad", version, about)]
struct Cli {
    /// Config file (default: config/sashad.toml if it exists).
    #[arg(long, global = true, env = "SASHAD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (storage.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Master key file: 32 bytes, raw or as 64 hex digits, mode 0600.
    #[arg(long, global = true)]
    master_key_file: Option<PathBuf>,
    /// Log filter (log.level), e.g. `debug` or `sashad=debug,info`.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Address to bind (server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Re-seal every stored credential under a new master key (daemon stopped).
    RotateKey {
        /// The new key file (create it with `openssl rand -hex 32 > FILE && chmod 600 FILE`).
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Manage accounts (daemon stopped; the admin API does the same online).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective config (secrets as [redacted]); exit 1 if it is invalid.
    Check,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from stdin (one line), never from the command line.
    Add {
        /// Username.
        username: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: their tokens stop working at once.
    Disable {
        /// Username.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Username.
        username: String,
    },
    /// List users.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sashad: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        _ => None,
    };
    let flags = FlagOverrides {
        listen,
        data_dir: cli.data_dir.clone(),
        log_level: cli.log_level.clone(),
    };
    let settings = Settings::load(cli.config.as_deref(), std::env::vars(), &flags)?;
    let key_options = KeyOptions::from_env(cli.master_key_file.clone());
    match cli.command {
        Command::Serve { .. } => {
            let reload = daemon::ReloadSource {
                config_path: cli.config.clone(),
                flags,
            };
            serve(settings, key_options, reload)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            print!("{}", settings.to_toml());
            Ok(())
        }
        Command::RotateKey { new_key_file } => rotate_key(settings, key_options, new_key_file),
        Command::User { command } => user(settings, key_options, command),
    }
}

fn serve(
    settings: Settings,
    key_options: KeyOptions,
    reload: daemon::ReloadSource,
) -> anyhow::Result<()> {
    let log = sashad::logging::init(&settings.log);
    for name in sashad::config::unknown_sashad_env(std::env::vars()) {
        tracing::warn!(variable = %name, "unknown SASHAD_ variable (config keys are SASHAD__SECTION__KEY)");
    }
    let prepared = daemon::prepare(settings, &key_options)?;
    let listener = daemon::bind(&prepared.settings)?;
    actix_rt::System::new().block_on(daemon::run(prepared, listener, Some(log), reload))
}

fn rotate_key(
    settings: Settings,
    key_options: KeyOptions,
    new_key_file: PathBuf,
) -> anyhow::Result<()> {
    let prepared = daemon::prepare(settings, &key_options)?;
    let current_path = prepared.key_source.path().to_path_buf();
    let current = MasterKey::load(&current_path)?;
    let new_key = MasterKey::load(&new_key_file)?;
    if new_key.kid() == current.kid() {
        bail!(
            "the new key file holds the key already in use (id {})",
            current.kid()
        );
    }
    let report = sashad::keys::rotate(&prepared.store, current, new_key, &current_path)?;
    println!(
        "re-sealed {} record(s): key id {} -> {}. Start sashad with --master-key-file {} from now on, \
         and keep the old key until you have checked that it starts.",
        report.resealed,
        report.from,
        report.to,
        new_key_file.display()
    );
    Ok(())
}

fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.storage.data_dir).with_context(|| {
        format!(
            "cannot open the store in {}",
            settings.storage.data_dir.display()
        )
    })
}

fn user(settings: Settings, _key_options: KeyOptions, command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(&settings)?;
    match command {
        UserCommand::Add { username, admin } => {
            sashad::accounts::validate_username(&username).map_err(anyhow::Error::msg)?;
            let password = read_password()?;
            sashad::accounts::validate_password(&password, settings.auth.min_password_length)
                .map_err(anyhow::Error::msg)?;
            let hash =
                sashad::accounts::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
            let role = if admin { Role::Admin } else { Role::User };
            let slots = settings.isolation.uid_count;
            match store.create_user(&username, &hash, role, Admission::Admin, slots)? {
                CreateUser::Created(user) => {
                    println!(
                        "created {} ({:?}, id {})",
                        user.username, user.role, user.id
                    )
                }
                CreateUser::Taken => bail!("username {username} is taken"),
                CreateUser::Closed => bail!("cannot create users"),
                CreateUser::Full => bail!(
                    "every uid in isolation.uid_base..+uid_count has been handed out; raise \
                     isolation.uid_count"
                ),
            }
        }
        UserCommand::Disable { username } => set_disabled(&store, &username, true)?,
        UserCommand::Enable { username } => set_disabled(&store, &username, false)?,
        UserCommand::List => {
            println!("{:<32}  {:<24}  {:<5}  STATUS", "ID", "USERNAME", "ROLE");
            for u in store.list_users()? {
                let role = match u.role {
                    Role::Admin => "admin",
                    Role::User => "user",
                };
                let status = if u.disabled { "disabled" } else { "active" };
                println!("{:<32}  {:<24}  {:<5}  {}", u.id, u.username, role, status);
            }
        }
    }
    Ok(())
}

fn set_disabled(store: &Store, username: &str, disabled: bool) -> anyhow::Result<()> {
    let Some(user) = store.user_by_name(username)? else {
        bail!("no user named {username}")
    };
    store.set_disabled(&user.id, disabled)?;
    println!(
        "{} {}",
        if disabled { "disabled" } else { "enabled" },
        user.username
    );
    Ok(())
}

/// One line from stdin, without its line ending. Prompts when stdin is a terminal.
fn read_password() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (input is visible; pipe it in to avoid that): ");
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        bail!("no password on stdin: pipe it in, e.g. `printf '%s\\n' \"$PW\" | sashad user add NAME`");
    }
    Ok(trimmed)
}

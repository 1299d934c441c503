//! The command line: `run`, `validate`, `config` (export, diff, apply
//! against a running node), `hash-password`, `version`.

mod config_cmd;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::gateway::{ConfigSource, Gateway};
use crate::{config, observability, reload, QUICKSTART};

/// Portcullis, an API gateway.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. Without --config it serves the bundled quickstart.
    Run {
        /// Configuration file (YAML); watched for changes, reloaded on SIGHUP.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Log format.
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Check a configuration file and print every error with its location.
    Validate {
        /// Configuration file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Read a password from standard input and print its bcrypt hash, for
    /// `consumers[].credentials.basic[].password`.
    HashPassword,
    /// Print the version.
    Version,
    /// Declarative sync with a running node's Admin API.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: config_cmd::ConfigAction,
        /// The node's admin listener.
        #[arg(long, global = true, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Bearer token (default: the PORTCULLIS_ADMIN_TOKEN variable).
        #[arg(long, global = true)]
        token: Option<String>,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Validate { config: path } => validate(&path),
        Command::HashPassword => hash_password(),
        Command::Config {
            action,
            admin,
            token,
        } => config_cmd::run(action, &admin, token),
        Command::Run { config, log_format } => {
            observability::init_logging(matches!(log_format, LogFormat::Json));
            run(config)
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the password from standard input: {e}");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!(
            "the password is empty; pipe it in, like `echo -n 's3cret' | portcullis hash-password`"
        );
        return ExitCode::from(1);
    }
    match crate::plugins::credentials::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash the password: {e}");
            ExitCode::from(1)
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    let loaded = match config::load_file(path) {
        Ok(l) => l,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(1);
        }
    };
    let pools = crate::upstream::UpstreamRegistry::default();
    let state = crate::plugins::StateStore::inert();
    match crate::snapshot::compile(&loaded, 1, 1, &pools, &state) {
        Ok(s) => {
            println!(
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                path.display(),
                s.listeners.len(),
                loaded.doc.upstreams.len(),
                s.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!(
                "{}",
                config::ConfigErrors {
                    source_name: path.display().to_string(),
                    errors
                }
            );
            ExitCode::from(1)
        }
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let source = match &path {
        Some(p) => ConfigSource::File(p.clone()),
        None => {
            tracing::info!(
                "no --config given; serving the bundled quickstart (examples/quickstart.yaml)"
            );
            ConfigSource::Inline(QUICKSTART.to_string())
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the control runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let gw = match Gateway::start(source) {
            Ok(gw) => Arc::new(gw),
            Err(e) => {
                eprintln!("portcullis: {e}");
                return ExitCode::from(1);
            }
        };
        tokio::spawn(reload::reopen_logs_on_sigusr1());
        if let Some(p) = path {
            tokio::spawn(reload::watch_file(gw.clone(), p));
            tokio::spawn(reload::reload_on_sighup(gw.clone()));
        }
        reload::shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests (a second signal stops at once)");
        tokio::select! {
            drained = gw.shutdown() => {
                tracing::info!(drained, "stopped");
                ExitCode::SUCCESS
            }
            _ = reload::shutdown_signal() => {
                tracing::warn!(open = gw.active_connections(), "second signal: stopping without waiting for in-flight requests");
                ExitCode::from(1)
            }
        }
    })
}

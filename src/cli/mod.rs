//! The admin commands of the `hookd` binary: a small client of the admin API that prints
//! aligned tables for people and JSON for scripts.
//!
//! Each command group has its file, with its clap arguments, its requests and its output:
//! [`send`], [`deliveries`], [`subscriptions`], [`owners`], [`stats`], [`audit`]. This file has what they share: the
//! flags that say how to reach hookd ([`ClientArgs`]), the errors and their exit codes, and
//! [`admin`] / [`with_client`], which run one command and print its result; `http.rs` sends
//! the requests, `output.rs` draws the tables.
//!
//! Exit codes: 0 success; 1 the API answered with an error (404, 409, ...); 2 bad usage or
//! config; 3 hookd could not be reached.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{Config, Scope};

pub mod audit;
pub mod deliveries;
mod http;
pub mod listen;
mod output;
pub mod owners;
pub mod send;
pub mod stats;
pub mod subscriptions;
pub mod verify;

pub use http::{call, encode_query};
pub use output::{cell, count, full_cell, table};

/// `--config`: the TOML configuration file (every command that reads one).
#[derive(Args)]
pub struct ConfigArg {
    /// The TOML configuration file.
    #[arg(
        long,
        short = 'c',
        default_value = "/etc/hookd/hookd.toml",
        env = "HOOKD_CONFIG"
    )]
    pub config: PathBuf,
}

/// How the admin commands reach hookd.
#[derive(Args)]
pub struct ClientArgs {
    /// The config file gives the API address and token when they are not set below.
    #[command(flatten)]
    pub config: ConfigArg,
    /// The API's base URL, e.g. http://127.0.0.1:8080 (default: from the config's api.listen).
    #[arg(long, env = "HOOKD_URL")]
    pub url: Option<String>,
    /// The API token (default: the config's first api.tokens entry with the admin scope).
    #[arg(long, env = "HOOKD_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    pub token: Option<String>,
}

/// A failed command, with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    /// The API answered with an error status.
    Api {
        status: u16,
        message: String,
    },
    Usage(String),
    Unreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Api { .. } => ExitCode::from(1),
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Unreachable(_) => ExitCode::from(3),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Api { status, message } => write!(f, "hookd answered {status}: {message}"),
            CliError::Usage(m) => f.write_str(m),
            CliError::Unreachable(m) => write!(f, "cannot reach hookd: {m}"),
        }
    }
}

/// Resolves the target, runs `work` on a small runtime, prints its output, maps errors to exit
/// codes.
pub fn admin<F, Fut>(client: &ClientArgs, work: F) -> ExitCode
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = Result<String, CliError>>,
{
    with_client(client, Scope::Admin, work)
}

/// Sends one admin request and prints its answer: the API's JSON with `--json`, else what
/// `render` makes of it for people.
pub fn admin_call(
    client: &ClientArgs,
    method: reqwest::Method,
    path: String,
    body: Option<Vec<u8>>,
    render: impl FnOnce(&serde_json::Value) -> String,
) -> ExitCode {
    let json_out = client.json;
    admin(client, |target| async move {
        let (_, value) = call(&target, method, &path, body).await?;
        Ok(if json_out {
            value.to_string()
        } else {
            render(&value)
        })
    })
}

/// Like [`admin`], with a token of `scope` taken from the config when none is given.
pub fn with_client<F, Fut>(client: &ClientArgs, scope: Scope, work: F) -> ExitCode
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = Result<String, CliError>>,
{
    let result = resolve_target(client, scope).and_then(|target| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Usage(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(work(target))
    });
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookd: {e}");
            e.exit_code()
        }
    }
}

/// The API's address and token: the flags, else the config file's `api.listen` and its first
/// token with `scope`.
fn resolve_target(client: &ClientArgs, scope: Scope) -> Result<Target, CliError> {
    let config = if client.url.is_none() || client.token.is_none() {
        match Config::load(&client.config.config) {
            Ok(c) => Some(c),
            Err(e) if client.url.is_none() => {
                return Err(CliError::Usage(format!(
                    "{e}\n(pass --url to reach hookd without its config file)"
                )))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let base = match (&client.url, &config) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(c)) if c.api.listen.port() == 0 => {
            return Err(CliError::Usage(format!(
                "{} sets api.listen to port 0 (hookd picks a free port when it starts and logs it: \"hookd started api=...\"); pass --url http://<that address>",
                client.config.config.display()
            )))
        }
        (None, Some(c)) => format!("http://{}", c.api.listen),
        (None, None) => unreachable!("the config loaded when no --url was given"),
    };
    let token = client.token.clone().or_else(|| {
        config
            .as_ref()
            .and_then(|c| c.api.tokens.iter().find(|t| t.allows(scope)))
            .map(|t| t.secret.expose().to_string())
    });
    Ok(Target { base, token })
}

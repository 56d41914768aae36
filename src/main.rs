//! The `hookd` command: thin over the library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookd::config::{Config, ConfigError};
use hookd::telemetry::{self, LogFormat};
use hookd::Application;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "hookd",
    version,
    about = "Webhook delivery daemon: durable queue, signed deliveries, retries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML configuration file.
    #[arg(
        long,
        short = 'c',
        default_value = "/etc/hookd/hookd.toml",
        env = "HOOKD_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Log format: text for people, json for log shippers.
        #[arg(long, value_enum, default_value = "text", env = "HOOKD_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Validate a configuration file and print a summary, or every error with file, line and key.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Submit events (one JSON object or an array) from a file or stdin to a running hookd.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// The file to send; `-` or nothing reads stdin.
        file: Option<PathBuf>,
        /// The API token, when the API requires one.
        #[arg(long, env = "HOOKD_API_TOKEN")]
        token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config.config) {
            Ok(c) => {
                println!(
                    "{}: config looks good\n{}",
                    config.config.display(),
                    c.summary()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_config_error(&e);
                ExitCode::from(2)
            }
        },
        Command::Run { config, log_format } => {
            telemetry::init(log_format);
            let loaded = match Config::load(&config.config) {
                Ok(c) => c,
                Err(e) => {
                    report_config_error(&e);
                    return ExitCode::from(2);
                }
            };
            match run(loaded) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Send {
            config,
            file,
            token,
        } => match send(&config.config, file, token) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("hookd send: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn report_config_error(e: &ConfigError) {
    match e {
        ConfigError::Invalid(diagnostics) => {
            for d in diagnostics {
                eprintln!("error: {d}");
            }
            eprintln!(
                "{} error(s); hookd will not start with this file",
                diagnostics.len()
            );
        }
        other => eprintln!("error: {other}"),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Application::build(config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        app.run_until_stopped(shutdown).await
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

fn send(
    config_path: &std::path::Path,
    file: Option<PathBuf>,
    token: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut body = Vec::new();
    match file.as_deref() {
        None => std::io::stdin()
            .read_to_end(&mut body)
            .context("reading stdin")?,
        Some(p) if p.as_os_str() == "-" => std::io::stdin()
            .read_to_end(&mut body)
            .context("reading stdin")?,
        Some(p) => {
            body = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            body.len()
        }
    };
    let url = format!("http://{}/v1/events", config.api.listen);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!("{text}");
        Ok(if status.is_success() {
            ExitCode::SUCCESS
        } else {
            eprintln!("hookd send: {status}");
            ExitCode::from(1)
        })
    })
}

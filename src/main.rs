//! The `hookd` command: thin over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookd::cli::{self, ConfigArg};
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
    /// Validate a configuration file: a summary, or every error with file, line and key.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move a store between engines or machines: export it as JSON lines, import them into a
    /// new store. hookd must not be running on either store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Apply the PostgreSQL engine's schema migrations and exit (`hookd run` applies them
    /// too, under the same advisory lock; this is for operators who migrate separately).
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Submit events (one JSON object or an array) from a file or stdin to a running hookd.
    Send(cli::send::SendArgs),
    /// List, show and retry deliveries.
    Deliveries {
        #[command(subcommand)]
        command: cli::deliveries::DeliveriesCommand,
    },
    /// List, pause and resume subscriptions.
    Subscriptions {
        #[command(subcommand)]
        command: cli::subscriptions::SubscriptionsCommand,
    },
    /// Deliveries, failures and latency over the last hour, day or week (the dashboard's
    /// charts), in all and by subscription.
    Stats(cli::stats::StatsArgs),
    /// Owners (the provider's customers): erase one.
    Owners {
        #[command(subcommand)]
        command: cli::owners::OwnersCommand,
    },
    /// Who changed what, and when: the audit log, newest first (filters: --subscription,
    /// --owner, --actor, --since, --until).
    Audit(cli::audit::AuditArgs),
    /// Check a webhook's signature offline and say why it does not verify (exit 0: it
    /// verifies; 1: it does not; 2: bad usage).
    Verify(cli::verify::VerifyArgs),
    /// Forward a portal link's owner's events to a local URL, signed with a session secret
    /// (the development loop, instead of a tunnel): docs/receiving-webhooks.md.
    Listen(cli::listen::ListenArgs),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Write everything the config's store holds (events, deliveries with their attempts,
    /// subscriptions created through the API, their states, the dashboard's keys).
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// The file to write; `-` (the default) is stdout.
        #[arg(long, short = 'o', default_value = "-")]
        output: PathBuf,
    },
    /// Read an export into the config's store, which must be empty.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The file to read; `-` (the default) is stdin.
        #[arg(long, short = 'i', default_value = "-")]
        input: PathBuf,
    },
}

/// mimalloc rather than glibc's malloc: under load glibc's allocator (`_int_malloc`,
/// `malloc_consolidate`, `_int_free`, ...) took about a fifth of hookd's CPU samples
/// (docs/benchmarks.md). Built without transparent huge pages, which would round its arenas up
/// to 2 MiB pages of resident memory on kernels that enable them always.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Store { command } => store_command(command),
        Command::Migrate { config } => match load_config(&config.config) {
            Ok(loaded) => migrate(&loaded),
            Err(code) => code,
        },
        Command::Run { config, log_format } => {
            telemetry::init(log_format);
            let loaded = match load_config(&config.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match run(loaded, config.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Send(send) => cli::send::run(send),
        Command::Deliveries { command } => cli::deliveries::run(command),
        Command::Subscriptions { command } => cli::subscriptions::run(command),
        Command::Owners { command } => cli::owners::run(command),
        Command::Stats(args) => cli::stats::run(args),
        Command::Audit(args) => cli::audit::run(args),
        Command::Verify(args) => cli::verify::run(args),
        Command::Listen(args) => cli::listen::run(args),
    }
}

/// The config at `path`, or the exit code of a bad one (its errors are printed).
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        report_config_error(&e);
        ExitCode::from(2)
    })
}

/// The runtime of a one-shot command (`migrate`, `store`), or the exit code when it cannot start.
fn command_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("hookd: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `hookd store export|import`.
fn store_command(command: StoreCommand) -> ExitCode {
    let (path, exporting) = match &command {
        StoreCommand::Export { config, .. } => (&config.config, true),
        StoreCommand::Import { config, .. } => (&config.config, false),
    };
    let loaded = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let engine = loaded.storage.engine.name();
    let runtime = match command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let (store, _) = hookd::app::open_store(&loaded).await?;
        let mut progress = |s: &hookd::transfer::Summary| eprint!("\r{s}");
        let done = match command {
            StoreCommand::Export { output, .. } => {
                let mut out: Box<dyn std::io::Write> = if output.as_os_str() == "-" {
                    Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
                } else {
                    Box::new(std::io::BufWriter::new(
                        std::fs::File::create(&output).map_err(|e| {
                            anyhow::anyhow!("cannot create {}: {e}", output.display())
                        })?,
                    ))
                };
                hookd::transfer::export(store.as_ref(), engine, &mut out, &mut progress).await
            }
            StoreCommand::Import { input, .. } => {
                let mut reader: Box<dyn std::io::BufRead> = if input.as_os_str() == "-" {
                    Box::new(std::io::BufReader::new(std::io::stdin().lock()))
                } else {
                    Box::new(std::io::BufReader::new(
                        std::fs::File::open(&input)
                            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", input.display()))?,
                    ))
                };
                hookd::transfer::import(store.as_ref(), &mut reader, &mut progress).await
            }
        };
        let closed = store.close().await;
        let summary = done?;
        closed?;
        anyhow::Ok(summary)
    });
    eprintln!();
    match result {
        Ok(summary) => {
            eprintln!(
                "{} {summary} ({engine} store)",
                if exporting { "exported" } else { "imported" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `hookd migrate`: the PostgreSQL schema brought up to date.
fn migrate(config: &Config) -> ExitCode {
    let hookd::config::Engine::Postgres { url, .. } = &config.storage.engine else {
        println!(
            "storage.engine is \"{}\": its store is converted when hookd opens it; nothing to migrate",
            config.storage.engine.name()
        );
        return ExitCode::SUCCESS;
    };
    let runtime = match command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(hookd::store::postgres::migrate(url.expose())) {
        Ok((before, after)) if before == after => {
            println!("schema version {after}: up to date");
            ExitCode::SUCCESS
        }
        Ok((before, after)) => {
            println!("schema version {before} -> {after}: migrated");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookd: {e}");
            ExitCode::FAILURE
        }
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

fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    // Everything hookd creates (the store holds per-request secrets) is owner-only, whatever
    // umask it was started with. SAFETY: umask only sets the process's file mode mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before the store opens, so that an early signal is not lost.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let app = Application::build(config).await?;
        let shared = app.shared();
        let restart = shared.clone();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = hup.recv() => {
                        tracing::info!(config = %path.display(), "SIGHUP received: reloading the configuration");
                        // A bad file is logged and changes nothing.
                        let _ = hookd::systemd::reload(&shared, &path);
                        continue;
                    }
                }
                stop.cancel();
                return;
            }
        });
        app.run_until_stopped(shutdown).await?;
        anyhow::Ok(restart.restart.load(std::sync::atomic::Ordering::SeqCst))
    })
    .and_then(|again| if again { restart_in_place() } else { Ok(()) })
}

/// Executes this binary again with the same arguments, in this process (systemd keeps
/// supervising the same process id). Every file and socket hookd opened is close-on-exec, so
/// the new image finds the store unlocked and the ports free. Returns only if that fails.
fn restart_in_place() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "hookd".into());
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
    Err(anyhow::anyhow!("cannot restart hookd in place: {error}"))
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own checks: unique argument names, valid defaults, and so on.
        Cli::command().debug_assert();
    }
}

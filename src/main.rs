//! The `hookd` command: thin over the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hookd::cli::{self, CliError, Target};
use hookd::config::{Config, ConfigError, Scope};
use hookd::telemetry::{self, LogFormat};
use hookd::Application;
use reqwest::Method;
use serde_json::json;
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

#[derive(Args)]
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

/// How the admin commands reach hookd.
#[derive(Args)]
struct ClientArgs {
    /// The config file gives the API address and token when they are not set below.
    #[command(flatten)]
    config: ConfigArg,
    /// The API's base URL, e.g. http://127.0.0.1:8080 (default: from the config's api.listen).
    #[arg(long, env = "HOOKD_URL")]
    url: Option<String>,
    /// The API token (default: the config's first api.tokens entry with the admin scope).
    #[arg(long, env = "HOOKD_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
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
    Send {
        #[command(flatten)]
        client: ClientArgs,
        /// The file to send; `-` or nothing reads stdin.
        file: Option<PathBuf>,
        /// The owner (the provider's customer id) of every event sent: each goes to that
        /// owner's subscriptions and to those without an owner. An event that names another
        /// owner is an error.
        #[arg(long)]
        owner: Option<String>,
    },
    /// List, show and retry deliveries.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// List, pause and resume subscriptions.
    Subscriptions {
        #[command(subcommand)]
        command: SubscriptionsCommand,
    },
    /// Owners (the provider's customers): erase one.
    Owners {
        #[command(subcommand)]
        command: OwnersCommand,
    },
}

#[derive(Subcommand)]
enum OwnersCommand {
    /// Erase one owner: their subscriptions, their events, and every delivery and attempt of
    /// those, pending or finished (a GDPR-style request; docs/operations.md). Prints the counts.
    Erase {
        #[command(flatten)]
        client: ClientArgs,
        owner: String,
    },
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

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// scheduled, in_flight, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        /// A subscription id (or adhoc).
        #[arg(long)]
        subscription: Option<String>,
        /// e.g. job.failed
        #[arg(long)]
        event_type: Option<String>,
        /// Only the deliveries of this owner's events.
        #[arg(long)]
        owner: Option<String>,
        /// Created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Created before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Most deliveries to list (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from a previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one delivery with every attempt and its event.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Retry one delivery now, or with --dead every dead delivery of a subscription since a time.
    Retry {
        #[command(flatten)]
        client: ClientArgs,
        /// The delivery to retry.
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<String>,
        /// Retry dead deliveries in bulk (with --since, and optionally --subscription).
        #[arg(long, requires = "since")]
        dead: bool,
        #[arg(long, requires = "dead")]
        subscription: Option<String>,
        /// RFC 3339 time: dead deliveries that finished at or after it.
        #[arg(long, requires = "dead")]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum SubscriptionsCommand {
    /// List subscriptions with their health.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a subscription: its deliveries wait in the queue.
    Pause {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Resume a paused subscription.
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Enable a subscription its circuit breaker disabled: its waiting deliveries go out again.
    Enable {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Create a subscription at run time (kept in the store; the config file's rules apply).
    Add(Box<AddSubscription>),
    /// Delete a subscription created at run time.
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Send a job.test event to one subscription and print its delivery id.
    Test {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Give a subscription created at run time a new secret (printed once); the old one keeps
    /// signing beside it for 24 hours.
    RotateSecret {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Print a signed, expiring link to the dashboard limited to one owner's subscriptions and
    /// deliveries (the customer portal, docs/dashboard.md).
    PortalLink {
        #[command(flatten)]
        client: ClientArgs,
        /// The owner (customer id) whose subscriptions the link shows.
        #[arg(long)]
        owner: String,
        /// How long the link works: "15m", "1h" (the default), up to "30d".
        #[arg(long)]
        expires_in: Option<String>,
    },
}

/// A `--header` argument, "Name: value": the name and the value, trimmed. The API judges the
/// name (hop-by-hop and signature headers are refused there, naming it).
fn header_arg(arg: &str) -> Result<(String, String), String> {
    match arg.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected \"Name: value\", got {arg:?}")),
    }
}

/// `hookd subscriptions add`: the API's keys as flags.
#[derive(Args)]
struct AddSubscription {
    #[command(flatten)]
    client: ClientArgs,
    /// Where deliveries go (the receiver's URL; --url is hookd's own address).
    #[arg(long)]
    endpoint: String,
    /// Event types, comma-separated (job.completed,job.failed), or '*'.
    #[arg(long, value_delimiter = ',', required = true)]
    events: Vec<String>,
    /// Its id (generated when left out).
    #[arg(long)]
    id: Option<String>,
    /// The provider's customer it belongs to.
    #[arg(long)]
    owner: Option<String>,
    /// Its signing secret (generated when left out, and printed once).
    #[arg(long)]
    secret: Option<String>,
    /// Signature headers: abstrakt, standard or both.
    #[arg(long)]
    signature: Option<String>,
    /// Its own retry schedule, comma-separated delays ("0s,1m,5m").
    #[arg(long, value_delimiter = ',')]
    retry_schedule: Option<Vec<String>>,
    /// Its own attempt timeout ("10s").
    #[arg(long)]
    timeout: Option<String>,
    /// At most this many attempts to it at once.
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// At most this many attempts per second, smoothed.
    #[arg(long)]
    rate_limit: Option<f64>,
    /// A header sent with each delivery, "Name: value"; repeat for more.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header_arg)]
    headers: Vec<(String, String)>,
    /// The same for a secret value (never logged, shown as [REDACTED]).
    #[arg(long = "secret-header", value_name = "NAME: VALUE", value_parser = header_arg)]
    secret_headers: Vec<(String, String)>,
    /// Failed attempts in a row that open its circuit breaker (0: never).
    #[arg(long)]
    breaker_failures: Option<u32>,
    /// While its breaker is open, the least time between probes ("30s").
    #[arg(long)]
    breaker_probe_interval: Option<String>,
    /// Failing this long disables it ("5d"; "0s": never).
    #[arg(long)]
    disable_after: Option<String>,
    /// This many failed attempts in a row disable it (0: never).
    #[arg(long)]
    disable_after_failures: Option<u32>,
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
        Command::Send {
            client,
            file,
            owner,
        } => with_client(&client, Scope::Ingest, |target| async move {
            let mut body = read_input(file.as_deref())?;
            if let Some(owner) = owner {
                body = cli::with_owner(&body, &owner)?;
            }
            let (_, value) = cli::call(&target, Method::POST, "/v1/events", Some(body)).await?;
            Ok(value.to_string())
        }),
        Command::Deliveries { command } => deliveries(command),
        Command::Subscriptions { command } => subscriptions(command),
        Command::Owners {
            command: OwnersCommand::Erase { client, owner },
        } => {
            let json_out = client.json;
            admin(&client, |target| async move {
                let (_, value) = cli::call(
                    &target,
                    Method::DELETE,
                    &format!("/v1/owners/{}", path_segment(&owner)),
                    None,
                )
                .await?;
                Ok(if json_out {
                    value.to_string()
                } else {
                    cli::erased_summary(&value)
                })
            })
        }
    }
}

fn deliveries(command: DeliveriesCommand) -> ExitCode {
    match command {
        DeliveriesCommand::List {
            client,
            status,
            subscription,
            event_type,
            owner,
            since,
            until,
            limit,
            cursor,
        } => {
            let json_out = client.json;
            admin(&client, |target| async move {
                let query = cli::encode_query(&[
                    ("status", status),
                    ("subscription", subscription),
                    ("event_type", event_type),
                    ("owner", owner),
                    ("since", since),
                    ("until", until),
                    ("limit", Some(limit.to_string())),
                    ("cursor", cursor),
                ]);
                let (_, value) = cli::call(
                    &target,
                    Method::GET,
                    &format!("/v1/deliveries{query}"),
                    None,
                )
                .await?;
                if json_out {
                    return Ok(value.to_string());
                }
                let items = value["deliveries"].as_array().cloned().unwrap_or_default();
                let mut out = cli::deliveries_table(&items);
                out.push_str(&cli::count(items.len(), "delivery", "deliveries"));
                if let Some(next) = value["next_cursor"].as_str() {
                    out.push_str(&format!("; more with --cursor {next}"));
                }
                Ok(out)
            })
        }
        DeliveriesCommand::Show { client, id } => {
            let json_out = client.json;
            admin(&client, |target| async move {
                let (_, value) = cli::call(
                    &target,
                    Method::GET,
                    &format!("/v1/deliveries/{}", path_segment(&id)),
                    None,
                )
                .await?;
                Ok(if json_out {
                    value.to_string()
                } else {
                    cli::delivery_details(&value)
                })
            })
        }
        DeliveriesCommand::Retry {
            client,
            id,
            dead: _,
            subscription,
            since,
        } => {
            let json_out = client.json;
            admin(&client, |target| async move {
                let value = match (id, since) {
                    (Some(id), _) => {
                        cli::call(
                            &target,
                            Method::POST,
                            &format!("/v1/deliveries/{}/retry", path_segment(&id)),
                            None,
                        )
                        .await?
                        .1
                    }
                    (None, Some(since)) => {
                        let body = json!({ "subscription": subscription, "since": since })
                            .to_string()
                            .into_bytes();
                        cli::call(&target, Method::POST, "/v1/deliveries/retry", Some(body))
                            .await?
                            .1
                    }
                    (None, None) => {
                        return Err(CliError::Usage(
                            "give a delivery id, or --dead --since TIME".into(),
                        ))
                    }
                };
                Ok(if json_out {
                    value.to_string()
                } else if let Some(n) = value["requeued"].as_u64() {
                    format!(
                        "requeued {}",
                        cli::count(
                            usize::try_from(n).unwrap_or(usize::MAX),
                            "dead delivery",
                            "dead deliveries"
                        )
                    )
                } else {
                    format!(
                        "{} requeued (was {})",
                        cli::cell(&value["id"]),
                        cli::cell(&value["previous_state"])
                    )
                })
            })
        }
    }
}

fn subscriptions(command: SubscriptionsCommand) -> ExitCode {
    let (client, path, method, body) = match &command {
        SubscriptionsCommand::List { client } => {
            (client, "/v1/subscriptions".to_string(), Method::GET, None)
        }
        SubscriptionsCommand::Pause { client, id } => (
            client,
            format!("/v1/subscriptions/{}/pause", path_segment(id)),
            Method::POST,
            None,
        ),
        SubscriptionsCommand::Resume { client, id } => (
            client,
            format!("/v1/subscriptions/{}/resume", path_segment(id)),
            Method::POST,
            None,
        ),
        SubscriptionsCommand::Enable { client, id } => (
            client,
            format!("/v1/subscriptions/{}/enable", path_segment(id)),
            Method::POST,
            None,
        ),
        SubscriptionsCommand::Add(add) => {
            let AddSubscription {
                client,
                endpoint,
                events,
                id,
                owner,
                secret,
                signature,
                retry_schedule,
                timeout,
                max_in_flight,
                rate_limit,
                headers,
                secret_headers,
                breaker_failures,
                breaker_probe_interval,
                disable_after,
                disable_after_failures,
            } = add.as_ref();
            use serde_json::{json, Value};
            let mut body = json!({ "url": endpoint, "events": events });
            for (key, value) in [
                ("id", id),
                ("owner", owner),
                ("secret", secret),
                ("signature", signature),
                ("timeout", timeout),
                ("breaker_probe_interval", breaker_probe_interval),
                ("disable_after", disable_after),
            ] {
                if let Some(value) = value {
                    body[key] = Value::String(value.clone());
                }
            }
            for (key, value) in [
                ("max_in_flight", max_in_flight),
                ("breaker_failures", breaker_failures),
                ("disable_after_failures", disable_after_failures),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            if let Some(schedule) = retry_schedule {
                body["retry_schedule"] = json!(schedule);
            }
            if let Some(rate) = rate_limit {
                body["rate_limit"] = json!(rate);
            }
            if !headers.is_empty() || !secret_headers.is_empty() {
                let mut set = serde_json::Map::new();
                for (name, value) in headers {
                    set.insert(name.clone(), json!(value));
                }
                for (name, value) in secret_headers {
                    set.insert(name.clone(), json!({ "secret": value }));
                }
                body["headers"] = Value::Object(set);
            }
            (
                client,
                "/v1/subscriptions".to_string(),
                Method::POST,
                Some(body.to_string().into_bytes()),
            )
        }
        SubscriptionsCommand::Remove { client, id } => (
            client,
            format!("/v1/subscriptions/{}", path_segment(id)),
            Method::DELETE,
            None,
        ),
        SubscriptionsCommand::Test { client, id } => (
            client,
            format!("/v1/subscriptions/{}/test", path_segment(id)),
            Method::POST,
            None,
        ),
        SubscriptionsCommand::RotateSecret { client, id } => (
            client,
            format!("/v1/subscriptions/{}/rotate-secret", path_segment(id)),
            Method::POST,
            None,
        ),
        SubscriptionsCommand::PortalLink {
            client,
            owner,
            expires_in,
        } => {
            let mut body = serde_json::json!({ "owner": owner });
            if let Some(expires_in) = expires_in {
                body["expires_in"] = serde_json::Value::String(expires_in.clone());
            }
            (
                client,
                "/v1/portal-links".to_string(),
                Method::POST,
                Some(body.to_string().into_bytes()),
            )
        }
    };
    let json_out = client.json;
    let removed = match &command {
        SubscriptionsCommand::Remove { id, .. } => Some(id.clone()),
        _ => None,
    };
    admin(client, |target| async move {
        let (_, value) = cli::call(&target, method, &path, body).await?;
        Ok(if json_out {
            value.to_string()
        } else if let Some(id) = removed {
            format!("removed {id}")
        } else if let Some(items) = value["subscriptions"].as_array() {
            cli::subscriptions_table(items).trim_end().to_string()
        } else if let Some(secret) = value["secret"].as_str() {
            format!(
                "{} secret {secret} (shown this once: give it to the receiver now)",
                cli::cell(&value["id"])
            )
        } else if let Some(url) = value["url"]
            .as_str()
            .filter(|_| value["expires_at"].is_string())
        {
            format!(
                "{url}\n(the portal of {}, until {})",
                cli::cell(&value["owner"]),
                cli::cell(&value["expires_at"])
            )
        } else if let Some(delivery) = value["delivery_id"].as_str() {
            format!("sent job.test: {delivery} (hookd deliveries show {delivery})")
        } else if let Some(state) = value["state"].as_str() {
            format!("{} {state}", cli::cell(&value["id"]))
        } else {
            format!(
                "{} {}",
                cli::cell(&value["id"]),
                if value["paused"].as_bool() == Some(true) {
                    "paused"
                } else {
                    "resumed"
                }
            )
        })
    })
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
    let engine = match loaded.storage.engine {
        hookd::config::Engine::Sled => "sled",
        hookd::config::Engine::Postgres { .. } => "postgres",
    };
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
        println!("storage.engine is \"sled\": its store is converted when hookd opens it; nothing to migrate");
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

/// Escapes a path segment (ids are plain, but a typo must not turn into another route).
fn path_segment(text: &str) -> String {
    cli::encode_query(&[("x", Some(text.to_string()))])
        .trim_start_matches("?x=")
        .to_string()
}

/// Resolves the target, runs `work` on a small runtime, prints its output, maps errors to exit codes.
fn admin<F, Fut>(client: &ClientArgs, work: F) -> ExitCode
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = Result<String, CliError>>,
{
    with_client(client, Scope::Admin, work)
}

/// Like [`admin`], with a token of `scope` taken from the config when none is given.
fn with_client<F, Fut>(client: &ClientArgs, scope: Scope, work: F) -> ExitCode
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = Result<String, CliError>>,
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

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let mut body = Vec::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            body = std::fs::read(p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        }
    }
    Ok(body)
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

//! hookd: a webhook delivery daemon.
//!
//! Job runners post events to `POST /v1/events`; hookd stores each event and one delivery per
//! matching subscription durably (embedded in sled or fjall, or PostgreSQL for several nodes),
//! answers `202`, then POSTs the signed body to each target and retries failures on a schedule until delivered or
//! dead. ARCHITECTURE.md draws the layers; `tests/tidy.rs` holds the modules to them.
//!
//! # Layout
//! Bottom layer first.
//! - [`canonical`]: writes JSON as `JSON.stringify(JSON.parse(..))` would; pure.
//! - [`clock`]: the injected clock.
//! - [`erasure`]: the registry of attempts sending now, which erasing an owner waits for.
//! - [`guard`]: the target guard (SSRF): which addresses hookd may connect to.
//! - [`stats`]: delivery statistics over a window (buckets, percentiles) for the charts; pure.
//! - [`signing`]: the HMAC-SHA256 signatures and a constant-time comparison; pure.
//! - [`telemetry`]: logging setup.
//! - [`event`]: ingest validation; builds the delivered body once per event.
//! - [`verify`]: why a webhook's signature does or does not verify, in words; pure.
//! - [`catalogue`]: the event types hookd sends, each with an example body and its signed
//!   headers.
//! - [`store`]: the store traits ([`store::QueueStore`], [`store::AdminStore`]), their
//!   vocabulary ([`store::Outcome`], [`store::DeliveryState`]), the in-memory due-time index,
//!   and the engines: [`store::embedded`] (in `storage.path`, on sled, the default, or fjall)
//!   and [`store::postgres`].
//! - [`config`]: the TOML file, its defaults (the compiled-in example), validation, and a
//!   subscription's settable fields ([`config::SUBSCRIPTION_FIELDS`]).
//! - [`transfer`]: `hookd store export|import`, a store as JSON lines.
//! - [`breaker`]: the circuit breaker and auto-disable.
//! - [`delivery`]: one HTTP attempt and its outcome; [`delivery::retry`] is the pure retry rule.
//! - [`session`]: dashboard sessions and portal links, signed with the store's key.
//! - [`listen`]: `hookd listen` sessions: the in-memory hub that copies each owner's events to them.
//! - [`metrics`]: the Prometheus registry.
//! - [`settings`]: the running config and the run-time switches, as the scheduler reads them.
//! - [`traces`]: OpenTelemetry spans (`[traces]`).
//! - [`admission`]: whether ingest may take more (backlog limit, free-space reserve).
//! - [`scheduler`]: claims due deliveries from the store and runs their attempts.
//! - [`state`]: what the API, the scheduler and the background tasks share.
//! - [`api`]: the axum routes of both listeners.
//! - [`operator`]: operator events and durable disabling.
//! - [`systemd`]: sd_notify (READY, RELOADING, STOPPING, STATUS) and the watchdog.
//! - [`ui`]: the dashboard and the customer portal.
//! - [`app`]: wires it together: `Application::build(config)` then `run_until_stopped(token)`.
//! - [`cli`]: the admin commands' client of the admin API (tables, `--json`, exit codes).

pub mod admission;
pub mod api;
pub mod app;
pub mod breaker;
pub mod canonical;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod erasure;
pub mod event;
pub mod guard;
pub mod listen;
pub mod metrics;
pub mod operator;
pub mod scheduler;
pub mod session;
pub mod settings;
pub mod signing;
pub mod state;
pub mod stats;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod traces;
pub mod transfer;
pub mod ui;
pub mod verify;

pub use app::Application;
pub use config::Config;

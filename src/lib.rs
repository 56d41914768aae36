//! hookd: a webhook delivery daemon.
//!
//! Job runners post events to `POST /v1/events`; hookd stores each event and one delivery per
//! matching subscription durably (sled), answers `202`, then POSTs the signed body to each
//! target and retries failures on a schedule until delivered or dead.
//!
//! # Layout
//! - [`config`]: the TOML file, its defaults (the compiled-in example) and validation.
//! - [`event`]: ingest validation; builds the canonical body ([`canonical`]) once per event.
//! - [`signing`]: the HMAC-SHA256 signature; pure.
//! - [`store`]: the store traits ([`store::QueueStore`], [`store::AdminStore`]), the in-memory
//!   due-time index, and the sled engine (the only module that imports sled).
//! - [`scheduler`]: claims due deliveries from the store and runs their attempts.
//! - [`clock`]: the injected clock.
//! - [`delivery`]: one HTTP attempt and its outcome; [`delivery::retry`] is the pure retry rule.
//! - [`guard`]: the target guard (SSRF): which addresses hookd may connect to.
//! - [`api`]: the axum routes of both listeners.
//! - [`metrics`]: the Prometheus registry.
//! - [`state`]: what the API, the scheduler and the background tasks share.
//! - [`app`]: wires it together: `Application::build(config)` then `run_until_stopped(token)`.
//! - [`systemd`]: sd_notify (READY, RELOADING, STOPPING, STATUS) and the watchdog.
//! - [`telemetry`]: tracing setup.
//! - [`cli`]: the admin commands' client of the admin API (tables, `--json`, exit codes).

pub mod admission;
pub mod api;
pub mod app;
pub mod breaker;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod erasure;
pub mod event;
pub mod guard;
pub mod metrics;
pub mod operator;
pub mod scheduler;
pub mod session;
pub mod settings;
pub mod signing;
pub mod state;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod traces;
pub mod transfer;
pub mod ui;

pub use app::Application;
pub use config::Config;

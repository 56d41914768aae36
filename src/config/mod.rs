//! Configuration: the TOML file, its defaults and its validation.
//!
//! `config/hookd.example.toml` is compiled in and is the source of every default: a file is
//! read into [`RawConfig`] (every key optional, unknown keys refused), the example is read the
//! same way, and [`Config::from_toml`] takes each key from the file or else from the example.
//! Every error names the file, line and key.
//!
//! The parts: `raw` (the TOML as written), `secret`, `token` and `duration` (the values that
//! read themselves), `diagnostic` (errors with lines), `validate` (raw to resolved), `sections`
//! and `subscription` (the resolved types), and `fields` (a subscription's settable fields,
//! defined once).

mod diagnostic;
mod duration;
mod fields;
mod raw;
mod secret;
mod sections;
mod subscription;
mod token;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use diagnostic::{ConfigError, Diagnostic};
pub use duration::{HumanDuration, MAX_INTERVAL, MAX_RETENTION, MAX_TIMEOUT};
pub use fields::{field_names, FieldValue, Home, Settable, SubscriptionField, SUBSCRIPTION_FIELDS};
pub use raw::RawConfig;
pub use secret::{Secret, SecretSource};
pub use sections::{
    ApiConfig, Backend, BreakerPolicy, DeliveryConfig, DeliveryPolicy, Engine, Logo, MetricsConfig,
    PortalConfig, Proxy, StorageConfig, TargetsConfig, TracesConfig, UiConfig,
};
pub use subscription::{
    CustomHeader, EventFilter, PreviousSecret, SignatureScheme, Subscription, ADHOC_SUBSCRIPTION,
    MAX_CUSTOM_HEADERS, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, OPERATOR_EVENTS,
    OPERATOR_SUBSCRIPTION,
};
pub use token::{ApiToken, Scope};

use validate::Validator;

/// The example configuration, which is also the source of the defaults.
pub const EXAMPLE: &str = include_str!("../../config/hookd.example.toml");

/// The validated configuration hookd runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub storage: StorageConfig,
    pub delivery: DeliveryConfig,
    pub targets: TargetsConfig,
    pub subscriptions: Vec<Subscription>,
    pub traces: TracesConfig,
    pub portal: PortalConfig,
    pub ui: UiConfig,
}

/// A reloaded config with the keys that need a restart set back to their running values.
pub struct Kept {
    pub config: Config,
    /// The keys whose new values were not applied.
    pub keys: Vec<String>,
}

impl Config {
    /// Takes what a running hookd cannot change from `running`: the listeners, the store, the
    /// global attempt limit and the header prefix. Everything else (subscriptions, schedules,
    /// timeouts, tokens, limits) applies at once.
    pub fn keep_restart_only(mut self, running: &Config) -> Kept {
        let mut keys = Vec::new();
        macro_rules! keep {
            ($($field:ident).+, $name:literal) => {
                if self.$($field).+ != running.$($field).+ {
                    keys.push($name.to_string());
                    self.$($field).+ = running.$($field).+.clone();
                }
            };
        }
        keep!(api.listen, "api.listen");
        keep!(metrics.listen, "metrics.listen");
        keep!(storage.path, "storage.path");
        keep!(storage.cache_capacity_bytes, "storage.cache_capacity_bytes");
        keep!(delivery.max_in_flight, "delivery.max_in_flight");
        keep!(delivery.header_prefix, "delivery.header_prefix");
        keep!(delivery.proxy, "delivery.proxy");
        keep!(traces, "traces");
        Kept { config: self, keys }
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `file` names it in errors. Every problem is reported,
    /// each with its line and key.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let (raw, errors) = diagnostic::read_raw(text, file)?;
        // The example is compiled in and covered by a test, so it always parses.
        let defaults: RawConfig =
            toml::from_str(EXAMPLE).expect("the built-in example config parses");
        Validator::new(text, file, errors).resolve(raw, defaults)
    }

    /// A short summary for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "api listen {} ({}), metrics listen {}, storage {}, retry schedule [{}], timeout {}\n{} subscription(s)",
            self.api.listen,
            if self.api.tokens.is_empty() { "open: loopback only".to_string() } else { format!("{} token(s)", self.api.tokens.len()) },
            self.metrics.listen,
            match &self.storage.engine {
                Engine::Embedded(backend) => format!("{} ({})", self.storage.path.display(), backend.name()),
                Engine::Postgres { pool_size, .. } => format!("postgres (pool of {pool_size})"),
            },
            self.delivery.policy.retry_schedule.iter().map(|d| humantime::format_duration(*d).to_string()).collect::<Vec<_>>().join(", "),
            humantime::format_duration(self.delivery.policy.timeout),
            self.subscriptions.len(),
        );
        for s in &self.subscriptions {
            let events = match &s.events {
                EventFilter::All => "*".to_string(),
                EventFilter::Only(types) => types.join(", "),
            };
            out.push_str(&format!("\n  {}: {} [{}]", s.id, s.url, events));
        }
        out
    }
}

//! The TOML as written, before validation: every key of a section optional (so that the
//! built-in example can fill the gaps) and unknown keys refused. The validator
//! ([`super::validate`]) turns these into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::duration::HumanDuration;
use super::secret::{HeaderSource, SecretSource};
use super::subscription::SignatureScheme;
use super::token::RawToken;

/// The file as written: every key optional so that defaults can fill the gaps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub(super) api: RawApi,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) targets: RawTargets,
    #[serde(default)]
    pub(super) subscription: Vec<RawSubscription>,
    pub(super) operator: Option<RawOperator>,
    #[serde(default)]
    pub(super) traces: RawTraces,
    #[serde(default)]
    pub(super) portal: RawPortal,
    #[serde(default)]
    pub(super) ui: RawUi,
}

/// `[ui]`: how the dashboard and the portal present themselves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUi {
    pub(super) title: Option<String>,
    /// A PNG or SVG file, read at start and at each reload.
    pub(super) logo: Option<Spanned<String>>,
    /// `#rgb` or `#rrggbb`.
    pub(super) accent: Option<Spanned<String>>,
}

/// `[portal]`: what a customer may do through a portal link.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPortal {
    pub(super) max_subscriptions_per_owner: Option<usize>,
    pub(super) max_listen_sessions: Option<usize>,
}

/// `[traces]`: OpenTelemetry spans, exported over OTLP/HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraces {
    pub(super) otlp_endpoint: Option<Spanned<String>>,
    pub(super) otlp_headers: Option<Spanned<BTreeMap<String, HeaderSource>>>,
    pub(super) sample_ratio: Option<Spanned<f64>>,
    pub(super) service_name: Option<Spanned<String>>,
    pub(super) traceparent: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTargets {
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) tokens: Option<Vec<Spanned<RawToken>>>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) max_batch: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) header_read_timeout: Option<Spanned<HumanDuration>>,
    pub(super) idle_timeout: Option<Spanned<HumanDuration>>,
    pub(super) body_read_timeout: Option<Spanned<HumanDuration>>,
    pub(super) ui_session_ttl: Option<Spanned<HumanDuration>>,
    pub(super) public_url: Option<Spanned<String>>,
    pub(super) ui_frame_ancestors: Option<Vec<Spanned<String>>>,
    pub(super) require_owner: Option<bool>,
    pub(super) allowed_hosts: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) path: Option<String>,
    pub(super) retention: Option<Spanned<HumanDuration>>,
    pub(super) cache_capacity_bytes: Option<u64>,
    pub(super) max_pending: Option<u64>,
    pub(super) min_free_bytes: Option<u64>,
    pub(super) engine: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<SecretSource>>,
    pub(super) pool_size: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) retry_schedule: Option<Spanned<Vec<HumanDuration>>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) max_in_flight: Option<Spanned<usize>>,
    pub(super) max_in_flight_per_subscription: Option<Spanned<usize>>,
    pub(super) max_in_flight_adhoc: Option<Spanned<usize>>,
    pub(super) retry_after_cap: Option<Spanned<HumanDuration>>,
    pub(super) jitter: Option<Spanned<f64>>,
    pub(super) header_prefix: Option<Spanned<String>>,
    pub(super) allow_adhoc_targets: Option<bool>,
    pub(super) shutdown_grace: Option<Spanned<HumanDuration>>,
    pub(super) proxy: Option<Spanned<SecretSource>>,
    pub(super) breaker_failures: Option<u32>,
    pub(super) breaker_probe_interval: Option<Spanned<HumanDuration>>,
    pub(super) disable_after: Option<Spanned<HumanDuration>>,
    pub(super) disable_after_failures: Option<u32>,
    pub(super) adhoc_rate_limit: Option<Spanned<f64>>,
}

/// One `[[subscription]]`: its keys are the [`Home::Table`] ones of [`SUBSCRIPTION_FIELDS`]
/// (a unit test checks).
///
/// [`Home::Table`]: super::Home::Table
/// [`SUBSCRIPTION_FIELDS`]: super::SUBSCRIPTION_FIELDS
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscription {
    pub(super) id: Spanned<String>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) description: Option<Spanned<String>>,
    pub(super) url: Spanned<String>,
    pub(super) secret: Spanned<SecretSource>,
    pub(super) events: Spanned<Vec<String>>,
    pub(super) retry_schedule: Option<Spanned<Vec<HumanDuration>>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) max_in_flight: Option<Spanned<usize>>,
    pub(super) signature: Option<SignatureScheme>,
    pub(super) previous_secret: Option<Spanned<SecretSource>>,
    pub(super) previous_secret_expires: Option<Spanned<String>>,
    pub(super) headers: Option<Spanned<BTreeMap<String, HeaderSource>>>,
    pub(super) breaker_failures: Option<u32>,
    pub(super) breaker_probe_interval: Option<Spanned<HumanDuration>>,
    pub(super) disable_after: Option<Spanned<HumanDuration>>,
    pub(super) disable_after_failures: Option<u32>,
    pub(super) rate_limit: Option<Spanned<f64>>,
}

/// `[operator]`: where hookd sends the events about itself (operator events).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperator {
    pub(super) url: Spanned<String>,
    pub(super) secret: Spanned<SecretSource>,
    pub(super) events: Option<Spanned<Vec<String>>>,
    pub(super) signature: Option<SignatureScheme>,
    pub(super) headers: Option<Spanned<BTreeMap<String, HeaderSource>>>,
}

/// A document of `[[subscription]]` tables only: what a stored subscription holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscriptions {
    pub(super) subscription: Vec<RawSubscription>,
}

/// A key of a raw section, or else the built-in example's (which sets every key: a unit test
/// checks).
macro_rules! pick {
    ($raw:ident, $d:ident, $key:ident) => {
        $raw.$key
            .or($d.$key)
            .expect(concat!("the example config sets ", stringify!($key)))
    };
}
pub(super) use pick;

//! The validated sections of a [`super::Config`], one type each: `[api]`, `[metrics]`,
//! `[storage]`, `[delivery]` (with the policies subscriptions start from), `[targets]`,
//! `[traces]` and `[portal]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;
use super::token::ApiToken;
pub use crate::store::embedded::Backend;

/// `[portal]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// Subscriptions one owner may have before a portal refuses the next; the admin API is not
    /// limited.
    pub max_subscriptions_per_owner: usize,
    /// `hookd listen` sessions one owner may have open at once; the next is refused.
    pub max_listen_sessions: usize,
}

/// `[ui]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// The name the portal shows its customers in its header and page titles: the provider's.
    pub title: String,
    /// The logo the dashboard and the portal show in their header (`logo`), read from its
    /// file at start and at each reload.
    pub logo: Option<Logo>,
    /// The colour of buttons and links (`accent`): `#rgb` or `#rrggbb`, in lower case.
    pub accent: Option<String>,
}

/// A logo file, read: its bytes and its media type (`image/png` or `image/svg+xml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
}

/// `[traces]`, validated (see [`crate::traces`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TracesConfig {
    /// Where spans are POSTed (OTLP/HTTP, protobuf): `otlp_endpoint` with `/v1/traces`
    /// appended; `None`: no spans are made.
    pub endpoint: Option<url::Url>,
    /// Sent with each export (a collector's API key, say): secrets.
    pub headers: Vec<(String, Secret)>,
    /// The share of traces kept, 0 to 1, decided by trace id.
    pub sample_ratio: f64,
    pub service_name: String,
    /// Each attempt carries a W3C `traceparent` header naming its span.
    pub traceparent: bool,
}

/// Where hookd may send deliveries (the target guard, see [`crate::guard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetsConfig {
    /// Ranges opened although the guard refuses them by default (private, loopback, ...).
    pub allow: Vec<ipnet::IpNet>,
    /// Whether per-request `webhook_url`s may be `http://` (they must be `https://` otherwise).
    pub allow_http: bool,
}

impl TargetsConfig {
    pub fn guard(&self) -> crate::guard::Guard {
        crate::guard::Guard::new(self.allow.clone())
    }
}

/// `[api]`, validated: the API's listener, tokens and limits, and the dashboard's.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection (on both listeners) may wait for its next request.
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    /// How long a dashboard sign-in lasts.
    pub ui_session_ttl: Duration,
    /// Where clients reach this API (`https://hooks.example.com`), for portal links; `None`:
    /// the request's `Host`.
    pub public_url: Option<url::Url>,
    /// Origins allowed to frame the customer portal (CSP `frame-ancestors`).
    pub ui_frame_ancestors: Vec<String>,
    /// Ingest refuses an event without an `owner` (422): for operators whose subscriptions
    /// belong to customers.
    pub require_owner: bool,
    /// Host names an open (token-less) listener answers to besides its own address and
    /// localhost, lowercased (`src/api/origin.rs`).
    pub allowed_hosts: Vec<String>,
}

/// `[metrics]`, validated.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `[storage]`, validated.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub retention: Duration,
    pub cache_capacity_bytes: u64,
    /// Ingest answers 503 while this many deliveries are unfinished; 0: no limit.
    pub max_pending: u64,
    /// Ingest answers 503 while the store's filesystem has less free space than this.
    pub min_free_bytes: u64,
    pub engine: Engine,
}

/// Which store engine holds the queue.
#[derive(Debug, Clone)]
pub enum Engine {
    /// Embedded, in `storage.path`: one node. sled (the default) or fjall.
    Embedded(Backend),
    /// A PostgreSQL database that several hookd nodes may share.
    Postgres {
        /// `postgres://user@host/db?sslmode=...` (or the key=value form): a secret, as it may
        /// hold a password.
        url: Secret,
        /// Connections this node keeps open at most.
        pool_size: usize,
    },
}

impl Engine {
    /// Whether the store is in `storage.path`, this node's alone.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Engine::Embedded(_))
    }

    /// Its name in `[storage] engine`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Embedded(backend) => backend.name(),
            Engine::Postgres { .. } => "postgres",
        }
    }
}

/// `[delivery]`, validated: the limits of all deliveries, and the policies every subscription
/// starts from.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub policy: DeliveryPolicy,
    pub max_in_flight: usize,
    pub max_in_flight_per_subscription: usize,
    /// All per-request targets together.
    pub max_in_flight_adhoc: usize,
    pub retry_after_cap: Duration,
    pub jitter: f64,
    pub header_prefix: String,
    pub allow_adhoc_targets: bool,
    pub shutdown_grace: Duration,
    /// The circuit breaker every subscription starts from.
    pub breaker: BreakerPolicy,
    /// Attempts per second to each per-request host, at most; 0: no limit.
    pub adhoc_rate_limit: f64,
    /// Every attempt goes through this HTTP(S) proxy (`delivery.proxy`); the environment's
    /// proxy variables are never used. A secret: its URL may hold credentials.
    pub proxy: Option<Proxy>,
}

/// When a failing subscription is probed one attempt at a time, and when it is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failed attempts in a row that open the breaker (one probe at a time); 0: never.
    pub failures: u32,
    /// While open, the least time between a failed probe and the next one.
    pub probe_interval: Duration,
    /// Failing for this long (since the first failure after the last success) disables the
    /// subscription; zero: never.
    pub disable_after: Duration,
    /// This many failed attempts in a row disable it; 0: never.
    pub disable_after_failures: u32,
}

/// `delivery.proxy`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// The whole URL, credentials included.
    pub url: Secret,
    /// Its host (a name or an address), which the target guard does not judge: the operator
    /// chose it.
    pub host: String,
}

impl Proxy {
    /// The URL without its credentials, for logs and pages.
    pub fn shown(&self) -> String {
        match reqwest::Url::parse(self.url.expose()) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => "[REDACTED]".to_string(),
        }
    }
}

/// What decides the attempts of one delivery: global, or overridden per subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    pub retry_schedule: Vec<Duration>,
    pub timeout: Duration,
}

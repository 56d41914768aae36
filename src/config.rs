//! Configuration: the TOML file, its defaults and its validation.
//!
//! `config/hookd.example.toml` is compiled in and is the source of every default: a file is
//! read into [`RawConfig`] (every key optional, unknown keys refused), the example is read the
//! same way, and [`Config::from_toml`] takes each key from the file or else from the example.
//! Every error names the file, line and key.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The example configuration, which is also the source of the defaults.
pub const EXAMPLE: &str = include_str!("../config/hookd.example.toml");

/// The `X-Abstrakt-` style header prefix, the subscription id label of per-request targets.
pub const ADHOC_SUBSCRIPTION: &str = "adhoc";

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The secret itself: call only where it is used (signing, comparing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Literal(String),
    Env { env: String },
    File { file: PathBuf },
    Credential { credential: String },
}

const SECRET_FORMS: &str =
    "a secret is a string, { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }";

// Written by hand rather than derived (untagged), so that a mistake is named plainly instead of
// "data did not match any variant".
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(SecretSource::Literal(s)),
            toml::Value::Table(table) => {
                let mut entries = table.into_iter();
                let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                    return Err(D::Error::custom(format!(
                        "expected exactly one key: {SECRET_FORMS}"
                    )));
                };
                let toml::Value::String(value) = value else {
                    return Err(D::Error::custom(format!(
                        "`{key}` must be a string: {SECRET_FORMS}"
                    )));
                };
                match key.as_str() {
                    "env" => Ok(SecretSource::Env { env: value }),
                    "file" => Ok(SecretSource::File {
                        file: PathBuf::from(value),
                    }),
                    "credential" => Ok(SecretSource::Credential { credential: value }),
                    other => Err(D::Error::custom(format!(
                        "unknown key `{other}`: {SECRET_FORMS}"
                    ))),
                }
            }
            other => Err(D::Error::custom(format!(
                "found a {}: {SECRET_FORMS}",
                other.type_str()
            ))),
        }
    }
}

impl SecretSource {
    fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Literal(s) => s.clone(),
            SecretSource::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} is not set (or not UTF-8)"))?,
            SecretSource::File { file } => read_secret_file(file)?,
            SecretSource::Credential { credential } => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("credential {credential}: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)")
                })?;
                read_secret_file(&Path::new(&dir).join(credential))?
            }
        };
        if value.is_empty() {
            return Err("secret is empty".to_string());
        }
        Ok(Secret(value))
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    // Files written by `echo` end in a newline that is not part of the secret.
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// A custom header's value as written: a plain string (shown by the API and the dashboard), or a
/// secret: `{ secret = "..." }`, `{ env = "NAME" }`, `{ file = "/path" }` or
/// `{ credential = "NAME" }` (never shown, never logged).
#[derive(Debug, Clone)]
enum HeaderSource {
    Plain(String),
    Secret(SecretSource),
}

impl<'de> Deserialize<'de> for HeaderSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IntoDeserializer};
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(HeaderSource::Plain(s)),
            toml::Value::Table(table) if table.len() == 1 && table.contains_key("secret") => {
                match table.get("secret") {
                    Some(toml::Value::String(s)) => {
                        Ok(HeaderSource::Secret(SecretSource::Literal(s.clone())))
                    }
                    _ => Err(D::Error::custom("`secret` must be a string")),
                }
            }
            toml::Value::Table(table) => SecretSource::deserialize(
                toml::Value::Table(table).into_deserializer(),
            )
            .map(HeaderSource::Secret)
            .map_err(|e| D::Error::custom(format!("{e}, or {{ secret = \"...\" }}"))),
            other => Err(D::Error::custom(format!(
                "found a {}: a header value is a string or a secret ({SECRET_FORMS}, or {{ secret = \"...\" }})",
                other.type_str()
            ))),
        }
    }
}

/// One header a subscription adds to each of its deliveries.
#[derive(Debug, Clone)]
pub struct CustomHeader {
    pub name: reqwest::header::HeaderName,
    pub value: Secret,
    /// Given as a secret: shown nowhere, redacted like every other secret.
    pub secret: bool,
}

impl CustomHeader {
    /// The value as the API and the pages show it: a secret one as `mask`.
    pub fn shown<'a>(&'a self, mask: &'a str) -> &'a str {
        if self.secret {
            mask
        } else {
            self.value.expose()
        }
    }
}

/// Headers a subscription may not set: hop-by-hop headers, what hookd itself decides (the body's
/// type and length, the host), and the headers under hookd's prefix and Standard Webhooks'
/// `webhook-` (the signatures, ids and attempt numbers) or the trace context.
fn reserved_header(name: &str, prefix: &str) -> bool {
    const RESERVED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        "traceparent",
        "tracestate",
    ];
    let name = name.to_ascii_lowercase();
    RESERVED.contains(&name.as_str())
        || name.starts_with("webhook-")
        || name.starts_with(&format!("{}-", prefix.to_ascii_lowercase()))
}

/// Whether a custom header's name keeps to letters, digits, `-`, `_` and `.`: the part of RFC
/// 9110's token characters that real header names use, and that means nothing to a shell, a
/// log reader or a template (a name like ``X-`hostname` `` is a valid token, and was a command
/// in the dashboard's "Copy as curl").
fn plain_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Custom headers per subscription, at most.
pub const MAX_CUSTOM_HEADERS: usize = 32;
/// The longest custom header value, in bytes.
const MAX_HEADER_VALUE: usize = 4096;

/// An API token as written: a secret, or `{ secret = <secret>, scopes = [...] }`.
#[derive(Debug, Clone)]
enum RawToken {
    Any(SecretSource),
    Scoped(ScopedToken),
}

impl<'de> Deserialize<'de> for RawToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = toml::Value::deserialize(d)?;
        let scoped = value
            .as_table()
            .is_some_and(|t| t.contains_key("secret") || t.contains_key("scopes"));
        if scoped {
            ScopedToken::deserialize(value)
                .map(RawToken::Scoped)
                .map_err(|e| D::Error::custom(e.message()))
        } else {
            SecretSource::deserialize(value)
                .map(RawToken::Any)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "{} (or {{ secret = ..., scopes = [\"ingest\", \"admin\"] }})",
                        e.message()
                    ))
                })
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopedToken {
    secret: SecretSource,
    scopes: Vec<Scope>,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// The admin API: deliveries and subscriptions.
    Admin,
}

/// A bearer token of the API and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub secret: Secret,
    pub scopes: Vec<Scope>,
}

impl ApiToken {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A duration written as in the example ("250ms", "1m", "7d").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The longest retry delay, `Retry-After` cap, breaker interval and dashboard sign-in: 30
/// days. Longer is a config error (or a 422): nothing is meant to wait that long, and every
/// duration stays far from what the time arithmetic can hold.
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 86_400);

/// The longest timeout: an attempt's, a request's reads, a connection's idle time and the
/// shutdown's grace: 1 hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest retention of finished work: 10 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

/// What every duration error ends with: the accepted form.
const DURATION_FORM: &str =
    "a duration is a string of numbers with units, like \"250ms\", \"10s\", \"1m\", \"1h 30m\" or \"7d\"";

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(DURATION_FORM)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(text)
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!("invalid duration {text:?}: {e}; {DURATION_FORM}"))
                    })
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {n}: a number needs a unit, e.g. \"{n}s\"; {DURATION_FORM}"
                )))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {n}: a number needs a unit, e.g. \"{n}s\"; {DURATION_FORM}"
                )))
            }

            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {n}: write it as a string with units, e.g. \"1s 500ms\"; {DURATION_FORM}"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The file as written: every key optional so that defaults can fill the gaps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    targets: RawTargets,
    #[serde(default)]
    subscription: Vec<RawSubscription>,
    operator: Option<RawOperator>,
    #[serde(default)]
    traces: RawTraces,
    #[serde(default)]
    portal: RawPortal,
}

/// `[portal]`: what a customer may do through a portal link.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    max_subscriptions_per_owner: Option<usize>,
}

/// `[traces]`: OpenTelemetry spans, exported over OTLP/HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraces {
    otlp_endpoint: Option<Spanned<String>>,
    otlp_headers: Option<Spanned<std::collections::BTreeMap<String, HeaderSource>>>,
    sample_ratio: Option<Spanned<f64>>,
    service_name: Option<Spanned<String>>,
    traceparent: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    allow: Option<Vec<Spanned<String>>>,
    allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    tokens: Option<Vec<Spanned<RawToken>>>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    max_header_bytes: Option<usize>,
    header_read_timeout: Option<Spanned<HumanDuration>>,
    idle_timeout: Option<Spanned<HumanDuration>>,
    body_read_timeout: Option<Spanned<HumanDuration>>,
    ui_session_ttl: Option<Spanned<HumanDuration>>,
    public_url: Option<Spanned<String>>,
    ui_frame_ancestors: Option<Vec<Spanned<String>>>,
    require_owner: Option<bool>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: Option<String>,
    retention: Option<Spanned<HumanDuration>>,
    cache_capacity_bytes: Option<u64>,
    max_pending: Option<u64>,
    min_free_bytes: Option<u64>,
    engine: Option<Spanned<String>>,
    url: Option<Spanned<SecretSource>>,
    pool_size: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    retry_schedule: Option<Spanned<Vec<HumanDuration>>>,
    timeout: Option<Spanned<HumanDuration>>,
    max_in_flight: Option<Spanned<usize>>,
    max_in_flight_per_subscription: Option<Spanned<usize>>,
    max_in_flight_adhoc: Option<Spanned<usize>>,
    retry_after_cap: Option<Spanned<HumanDuration>>,
    jitter: Option<Spanned<f64>>,
    header_prefix: Option<Spanned<String>>,
    allow_adhoc_targets: Option<bool>,
    shutdown_grace: Option<Spanned<HumanDuration>>,
    proxy: Option<Spanned<SecretSource>>,
    breaker_failures: Option<u32>,
    breaker_probe_interval: Option<Spanned<HumanDuration>>,
    disable_after: Option<Spanned<HumanDuration>>,
    disable_after_failures: Option<u32>,
    adhoc_rate_limit: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscription {
    id: Spanned<String>,
    url: Spanned<String>,
    secret: Spanned<SecretSource>,
    events: Spanned<Vec<String>>,
    retry_schedule: Option<Spanned<Vec<HumanDuration>>>,
    timeout: Option<Spanned<HumanDuration>>,
    max_in_flight: Option<Spanned<usize>>,
    signature: Option<SignatureScheme>,
    previous_secret: Option<Spanned<SecretSource>>,
    previous_secret_expires: Option<Spanned<String>>,
    headers: Option<Spanned<std::collections::BTreeMap<String, HeaderSource>>>,
    breaker_failures: Option<u32>,
    breaker_probe_interval: Option<Spanned<HumanDuration>>,
    disable_after: Option<Spanned<HumanDuration>>,
    disable_after_failures: Option<u32>,
    rate_limit: Option<Spanned<f64>>,
}

/// `[operator]`: where hookd sends the events about itself (operator events).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    url: Spanned<String>,
    secret: Spanned<SecretSource>,
    events: Option<Spanned<Vec<String>>>,
    signature: Option<SignatureScheme>,
    headers: Option<Spanned<std::collections::BTreeMap<String, HeaderSource>>>,
}

/// The id of the subscription `[operator]` becomes: its deliveries are signed, retried and
/// guarded like every other.
pub const OPERATOR_SUBSCRIPTION: &str = "operator";

/// The operator events hookd sends.
pub const OPERATOR_EVENTS: [&str; 3] = [
    "subscription.disabled",
    "subscription.recovered",
    "delivery.dead",
];

/// A document of `[[subscription]]` tables only: what a stored subscription holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscriptions {
    subscription: Vec<RawSubscription>,
}

/// Which signature headers a subscription's deliveries carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// `X-Abstrakt-Signature` only: what the seed's receivers verify.
    #[default]
    Abstrakt,
    /// Standard Webhooks only: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// Both sets of headers.
    Both,
}

/// A secret being rotated out: still signed with (Standard Webhooks) until `expires_ms`.
#[derive(Debug, Clone)]
pub struct PreviousSecret {
    pub secret: Secret,
    pub expires_ms: u64,
}

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
}

/// `[portal]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfig {
    /// Subscriptions one owner may have before a portal refuses the next; the admin API is not
    /// limited.
    pub max_subscriptions_per_owner: usize,
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

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

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
    /// Embedded, in `storage.path`: one node.
    Sled,
    /// A PostgreSQL database that several hookd nodes may share.
    Postgres {
        /// `postgres://user@host/db?sslmode=...` (or the key=value form): a secret, as it may
        /// hold a password.
        url: Secret,
        /// Connections this node keeps open at most.
        pool_size: usize,
    },
}

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

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub url: reqwest::Url,
    pub secret: Secret,
    pub events: EventFilter,
    pub policy: DeliveryPolicy,
    pub max_in_flight: usize,
    pub signature: SignatureScheme,
    /// The secret before the current one, during a rotation.
    pub previous_secret: Option<PreviousSecret>,
    /// Headers added to each delivery (`headers`), in name order.
    pub headers: Vec<CustomHeader>,
    /// Its circuit breaker: `[delivery]`'s, with its own overrides.
    pub breaker: BreakerPolicy,
    /// Attempts per second at most (`rate_limit`), smoothed; `None`: no limit.
    pub rate_limit: Option<f64>,
    /// The provider's customer it belongs to (subscriptions made through the API or a portal
    /// may have one; the config file's have none): it receives only that owner's events.
    pub owner: Option<String>,
}

impl Subscription {
    /// The keys to sign with at `now_ms`: the Abstrakt secret (the newest), and the Standard
    /// Webhooks keys, newest first, while a previous secret has not expired.
    pub fn signing_keys(&self, now_ms: u64) -> crate::signing::SigningKeys {
        let standard = match self.signature {
            SignatureScheme::Abstrakt => Vec::new(),
            SignatureScheme::Standard | SignatureScheme::Both => {
                let previous = self
                    .previous_secret
                    .as_ref()
                    .filter(|p| now_ms < p.expires_ms);
                std::iter::once(&self.secret)
                    .chain(previous.map(|p| &p.secret))
                    // Validated at load time: only whsec_ secrets reach here.
                    .filter_map(|s| crate::signing::standard_key(s.expose()).ok())
                    .collect()
            }
        };
        let abstrakt = match self.signature {
            SignatureScheme::Standard => None,
            SignatureScheme::Abstrakt | SignatureScheme::Both => {
                Some(self.secret.expose().to_string())
            }
        };
        crate::signing::SigningKeys { abstrakt, standard }
    }
}

/// Which event types a subscription wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(Vec<String>),
}

impl EventFilter {
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Only(types) => types.iter().any(|t| t == event_type),
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
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

    /// Parses and validates `text`; `file` names it in errors.
    ///
    /// A syntax error is reported alone. Otherwise every key that is unknown or of the wrong
    /// type is reported: after each such error the key's lines are set aside and the file is
    /// read again, and the rest is then validated as usual.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        if let Err(e) = text.parse::<toml::Table>() {
            let span = e.span().unwrap_or(0..0);
            return Err(ConfigError::Invalid(vec![diagnostic(
                text,
                file,
                span,
                None,
                e.message(),
            )]));
        }
        let mut working = text.to_string();
        let mut errors = Vec::new();
        let raw: RawConfig = loop {
            match toml::from_str(&working) {
                Ok(raw) => break raw,
                Err(e) => {
                    let span = e.span().unwrap_or(0..0);
                    // An error on a table header (a missing field) after lines were set
                    // aside is most likely caused by the setting aside: stop there.
                    if !errors.is_empty() && starts_on_header(&working, span.start) {
                        errors.sort_by_key(|d: &Diagnostic| (d.line, d.column));
                        return Err(ConfigError::Invalid(errors));
                    }
                    errors.push(diagnostic(text, file, span.clone(), None, e.message()));
                    let header = starts_on_header(&working, span.start);
                    if span.is_empty()
                        || header
                        || errors.len() >= 50
                        || !blank_lines(&mut working, span)
                    {
                        errors.sort_by_key(|d| (d.line, d.column));
                        return Err(ConfigError::Invalid(errors));
                    }
                }
            }
        };
        // The example is compiled in and covered by a test, so it always parses.
        let defaults: RawConfig =
            toml::from_str(EXAMPLE).expect("the built-in example config parses");
        Validator { text, file, errors }.resolve(raw, defaults)
    }

    /// Validates one `[[subscription]]` table, `text`, by exactly the config file's rules,
    /// against this config's `[delivery]` defaults and target guard. `taken` holds the ids in
    /// use elsewhere. Errors name the key as the file would (`subscription[0].url`).
    pub fn subscription_from_toml(
        &self,
        text: &str,
        taken: &HashSet<String>,
    ) -> Result<Subscription, Vec<Diagnostic>> {
        const FILE: &str = "subscription";
        let raw: RawSubscriptions = toml::from_str(text).map_err(|e| {
            vec![diagnostic(
                text,
                FILE,
                e.span().unwrap_or(0..0),
                None,
                e.message(),
            )]
        })?;
        let [one] = raw.subscription.as_slice() else {
            return Err(vec![diagnostic(
                text,
                FILE,
                0..0,
                None,
                "exactly one [[subscription]] table",
            )]);
        };
        let mut validator = Validator {
            text,
            file: FILE,
            errors: Vec::new(),
        };
        let mut ids = taken.clone();
        let subscription = validator.subscription(
            "subscription[0]",
            one,
            &self.delivery,
            &self.targets.guard(),
            &mut ids,
        );
        match subscription {
            Some(s) if validator.errors.is_empty() => Ok(s),
            _ => Err(validator.errors),
        }
    }

    /// This config with `stored` subscriptions added after the file's. One that no longer
    /// validates (its range was taken out of `targets.allow`, its id is now in the file) is
    /// left out and returned with why, so that it can be logged.
    pub fn with_stored(
        &self,
        stored: &[crate::store::StoredSubscription],
    ) -> (Config, Vec<(String, String)>) {
        let mut config = self.clone();
        let mut skipped = Vec::new();
        let mut taken: HashSet<String> = self.subscriptions.iter().map(|s| s.id.clone()).collect();
        for s in stored {
            match self.subscription_from_toml(&s.toml, &taken) {
                Ok(mut subscription) => {
                    taken.insert(subscription.id.clone());
                    subscription.owner = s.owner.clone();
                    config.subscriptions.push(subscription);
                }
                Err(errors) => {
                    let why: Vec<String> = errors.iter().map(|d| d.message.clone()).collect();
                    skipped.push((s.id.clone(), why.join("; ")));
                }
            }
        }
        (config, skipped)
    }

    /// The subscriptions that receive an event of `event_type` owned by `owner`: those that
    /// want the type and either have no owner (the provider's own) or have that owner. An
    /// event without an owner goes to the subscriptions without one only.
    pub fn subscriptions_for<'a>(
        &'a self,
        event_type: &'a str,
        owner: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.subscriptions.iter().filter(move |s| {
            s.events.matches(event_type) && (s.owner.is_none() || s.owner.as_deref() == owner)
        })
    }

    /// Whether any subscription in force has an owner.
    pub fn has_owned_subscriptions(&self) -> bool {
        self.subscriptions.iter().any(|s| s.owner.is_some())
    }

    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }

    /// A short summary for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "api listen {} ({}), metrics listen {}, storage {}, retry schedule [{}], timeout {}\n{} subscription(s)",
            self.api.listen,
            if self.api.tokens.is_empty() { "open: loopback only".to_string() } else { format!("{} token(s)", self.api.tokens.len()) },
            self.metrics.listen,
            match &self.storage.engine {
                Engine::Sled => self.storage.path.display().to_string(),
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

/// Whether the line holding byte `at` is a table header (`[x]` or `[[x]]`).
fn starts_on_header(text: &str, at: usize) -> bool {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..].trim_start().starts_with('[')
}

/// Replaces the whole lines that `span` touches with spaces (line breaks stay, so later spans
/// keep their line numbers). Returns false when there was nothing left to blank.
fn blank_lines(text: &mut String, span: Range<usize>) -> bool {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    if blanked == text[start..end] {
        return false;
    }
    text.replace_range(start..end, &blanked);
    true
}

/// Turns a byte span into a line/column diagnostic, naming the key written on that line.
fn diagnostic(
    text: &str,
    file: &str,
    span: Range<usize>,
    key: Option<&str>,
    message: &str,
) -> Diagnostic {
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let key = key.map(str::to_string).unwrap_or_else(|| {
        let line_text = text[line_start..].lines().next().unwrap_or("");
        match line_text.split_once('=') {
            Some((k, _)) => match table_path(&text[..line_start]) {
                Some(table) => format!("{table}.{}", k.trim()),
                None => k.trim().to_string(),
            },
            None => line_text.trim().to_string(),
        }
    });
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        key,
        message: message.trim().to_string(),
    }
}

/// The table that the text after `before` is in, named as validation errors name keys:
/// `delivery`, or `subscription[2]` for the third `[[subscription]]`.
fn table_path(before: &str) -> Option<String> {
    let mut current = None;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in before.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            current = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = Some(name.trim().to_string());
        }
    }
    current
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

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let d = diagnostic(self.text, self.file, span, Some(key), &message.into());
        self.errors.push(d);
    }

    fn addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    value.span(),
                    key,
                    format!(
                        "{:?} is not an address like \"127.0.0.1:8080\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn schedule(&mut self, value: &Spanned<Vec<HumanDuration>>, key: &str) -> Vec<Duration> {
        // An empty schedule is valid: one attempt, no retries.
        if value.get_ref().len() > 100 {
            self.error(value.span(), key, "at most 100 retries");
        }
        let delays: Vec<Duration> = value.get_ref().iter().map(|d| d.0).collect();
        if let Some((i, long)) = delays.iter().enumerate().find(|(_, d)| **d > MAX_INTERVAL) {
            self.error(
                value.span(),
                key,
                format!(
                    "retry {} waits {}, longer than the most a delay may be ({})",
                    i + 1,
                    humantime::format_duration(*long),
                    humantime::format_duration(MAX_INTERVAL)
                ),
            );
        }
        delays.into_iter().map(|d| d.min(MAX_INTERVAL)).collect()
    }

    /// A duration at most `max`: longer is an error (and `max` is used meanwhile), so that no
    /// later arithmetic on it overflows.
    fn duration(&mut self, value: &Spanned<HumanDuration>, key: &str, max: Duration) -> Duration {
        let duration = value.get_ref().0;
        if duration > max {
            self.error(
                value.span(),
                key,
                format!(
                    "{} is longer than the most allowed ({})",
                    humantime::format_duration(duration),
                    humantime::format_duration(max)
                ),
            );
            return max;
        }
        duration
    }

    fn positive(&mut self, value: &Spanned<usize>, key: &str) -> usize {
        if *value.get_ref() == 0 {
            self.error(value.span(), key, "must be at least 1");
        }
        *value.get_ref()
    }

    /// `storage.engine` and, for PostgreSQL, its `url` and `pool_size`.
    fn engine(&mut self, raw: &RawStorage, d: &RawStorage) -> Engine {
        let Some(engine) = raw.engine.as_ref().or(d.engine.as_ref()) else {
            return Engine::Sled;
        };
        match engine.get_ref().as_str() {
            "sled" => Engine::Sled,
            "postgres" => {
                let url = match raw.url.as_ref() {
                    Some(url) => self.secret(url, "storage.url"),
                    None => {
                        self.error(
                            engine.span(),
                            "storage.url",
                            "engine \"postgres\" needs storage.url, like { env = \"HOOKD_DATABASE_URL\" }",
                        );
                        Secret(String::new())
                    }
                };
                if !url.expose().is_empty() {
                    if let Err(e) = url.expose().parse::<tokio_postgres::Config>() {
                        let span = raw.url.as_ref().map_or(0..0, Spanned::span);
                        self.error(
                            span,
                            "storage.url",
                            format!("not a PostgreSQL connection string: {e}"),
                        );
                    }
                }
                let pool_size = match raw.pool_size.as_ref().or(d.pool_size.as_ref()) {
                    Some(n) => self.positive(n, "storage.pool_size"),
                    None => 16,
                };
                Engine::Postgres { url, pool_size }
            }
            other => {
                self.error(
                    engine.span(),
                    "storage.engine",
                    format!("unknown engine {other:?}: \"sled\" or \"postgres\""),
                );
                Engine::Sled
            }
        }
    }

    fn secret(&mut self, value: &Spanned<SecretSource>, key: &str) -> Secret {
        value.get_ref().resolve().unwrap_or_else(|message| {
            self.error(value.span(), key, message);
            Secret(String::new())
        })
    }

    /// A rate limit in attempts per second: 0.001 to 100000 (or 0, "none", where `zero_is_none`).
    fn rate(&mut self, value: &Spanned<f64>, key: &str, zero_is_none: bool) -> Option<f64> {
        let rate = *value.get_ref();
        if zero_is_none && rate == 0.0 {
            return None;
        }
        if !(0.001..=100_000.0).contains(&rate) {
            self.error(
                value.span(),
                key,
                if zero_is_none {
                    "attempts per second, from 0.001 to 100000, or 0 for no limit"
                } else {
                    "attempts per second, from 0.001 to 100000 (leave it out for no limit)"
                },
            );
            return None;
        }
        Some(rate)
    }

    /// `[operator]` as the subscription `operator`: its breaker never opens (hookd's own news
    /// must not wait behind it) and its events are operator events only.
    fn operator(
        &mut self,
        op: &RawOperator,
        delivery: &DeliveryConfig,
        guard: &crate::guard::Guard,
        ids: &mut HashSet<String>,
    ) -> Option<Subscription> {
        let events = match &op.events {
            Some(events) => {
                if let Some(bad) = events
                    .get_ref()
                    .iter()
                    .find(|e| !OPERATOR_EVENTS.contains(&e.as_str()))
                {
                    self.error(
                        events.span(),
                        "operator.events",
                        format!(
                            "{bad:?} is not an operator event: {}",
                            OPERATOR_EVENTS.join(", ")
                        ),
                    );
                }
                events.clone()
            }
            None => Spanned::new(
                0..0,
                OPERATOR_EVENTS.iter().map(|e| e.to_string()).collect(),
            ),
        };
        let raw = RawSubscription {
            id: Spanned::new(0..0, OPERATOR_SUBSCRIPTION.to_string()),
            url: op.url.clone(),
            secret: op.secret.clone(),
            events,
            retry_schedule: None,
            timeout: None,
            max_in_flight: None,
            signature: op.signature,
            previous_secret: None,
            previous_secret_expires: None,
            headers: op.headers.clone(),
            breaker_failures: Some(0),
            breaker_probe_interval: None,
            disable_after: Some(Spanned::new(0..0, HumanDuration(Duration::ZERO))),
            disable_after_failures: Some(0),
            rate_limit: None,
        };
        self.subscription("operator", &raw, delivery, guard, ids)
    }

    /// A header's value from its source, and whether it is a secret: 1 to 4 KiB of visible
    /// ASCII, spaces and tabs. `None` when it is not (reported, without the value: it may be a
    /// secret).
    fn header_value(
        &mut self,
        source: &HeaderSource,
        span: &Range<usize>,
        here: &str,
    ) -> Option<(Secret, bool)> {
        let (value, secret) = match source {
            HeaderSource::Plain(v) => (Secret(v.clone()), false),
            HeaderSource::Secret(source) => match source.resolve() {
                Ok(v) => (v, true),
                Err(message) => {
                    self.error(span.clone(), here, message);
                    return None;
                }
            },
        };
        let bytes = value.expose().len();
        if bytes == 0 || bytes > MAX_HEADER_VALUE {
            self.error(
                span.clone(),
                here,
                format!("a header value is 1 to {MAX_HEADER_VALUE} bytes"),
            );
            return None;
        }
        if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
            self.error(
                span.clone(),
                here,
                "a header value is visible ASCII, spaces and tabs only (no line breaks)",
            );
            return None;
        }
        Some((value, secret))
    }

    /// A subscription's `headers`: valid names and values, none reserved ([`reserved_header`]).
    fn headers(
        &mut self,
        raw: &Spanned<std::collections::BTreeMap<String, HeaderSource>>,
        key: &str,
        prefix: &str,
    ) -> Vec<CustomHeader> {
        let span = raw.span();
        if raw.get_ref().len() > MAX_CUSTOM_HEADERS {
            self.error(
                span.clone(),
                key,
                format!("at most {MAX_CUSTOM_HEADERS} headers"),
            );
        }
        let mut headers = Vec::new();
        for (name, source) in raw.get_ref() {
            let here = format!("{key}.{name}");
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|_| plain_header_name(name));
            let Some(header) = header else {
                self.error(
                    span.clone(),
                    &here,
                    format!(
                        "{name:?} is not a header name: letters, digits, '-', '_' and '.' only"
                    ),
                );
                continue;
            };
            if reserved_header(name, prefix) {
                self.error(
                    span.clone(),
                    &here,
                    format!("{name} is reserved: hop-by-hop headers, Host, Content-Type/-Length/-Encoding, Expect, the trace context and every {prefix}-* and webhook-* header (the signatures) are hookd's"),
                );
                continue;
            }
            let Some((value, secret)) = self.header_value(source, &span, &here) else {
                continue;
            };
            headers.push(CustomHeader {
                name: header,
                value,
                secret,
            });
        }
        headers
    }

    fn resolve(mut self, raw: RawConfig, d: RawConfig) -> Result<Config, ConfigError> {
        // `d` is the built-in example: every key of it is present (a unit test checks).
        let RawConfig {
            api,
            metrics,
            storage,
            delivery,
            targets,
            subscription,
            operator,
            traces,
            portal,
        } = raw;
        let RawConfig {
            api: d_api,
            metrics: d_metrics,
            storage: d_storage,
            delivery: d_delivery,
            targets: d_targets,
            traces: d_traces,
            portal: d_portal,
            ..
        } = d;
        let traces = self.traces(traces, d_traces);
        let api = self.api(api, d_api);
        let metrics_listen = self.addr(&pick!(metrics, d_metrics, listen), "metrics.listen");
        let delivery = self.delivery(delivery, d_delivery);
        let targets = self.targets(targets, d_targets);
        let guard = targets.guard();
        let mut ids = HashSet::new();
        let subscriptions: Vec<Subscription> = subscription
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                self.subscription(
                    &format!("subscription[{i}]"),
                    s,
                    &delivery,
                    &guard,
                    &mut ids,
                )
            })
            .collect();
        let mut subscriptions = subscriptions;
        if let Some(op) = &operator {
            if let Some(s) = self.operator(op, &delivery, &guard, &mut ids) {
                subscriptions.push(s);
            }
        }
        let engine = self.engine(&storage, &d_storage);
        if let Some(retention) = &storage.retention {
            self.duration(retention, "storage.retention", MAX_RETENTION);
        }
        let mut storage = storage_config(storage, d_storage);
        storage.engine = engine;

        if !self.errors.is_empty() {
            self.errors.sort_by_key(|d| (d.line, d.column));
            return Err(ConfigError::Invalid(self.errors));
        }
        let (Some(api), Some(metrics_listen)) = (api, metrics_listen) else {
            unreachable!("address errors were reported above");
        };
        Ok(Config {
            api,
            metrics: MetricsConfig {
                listen: metrics_listen,
            },
            storage,
            delivery,
            targets,
            subscriptions,
            traces,
            portal: PortalConfig {
                max_subscriptions_per_owner: pick!(portal, d_portal, max_subscriptions_per_owner),
            },
        })
    }

    /// `[traces]`: an http(s) endpoint (or none), valid headers, a ratio in 0..=1.
    fn traces(&mut self, raw: RawTraces, d: RawTraces) -> TracesConfig {
        let endpoint_text = pick!(raw, d, otlp_endpoint);
        let endpoint = match endpoint_text.get_ref().trim() {
            "" => None,
            text => match url::Url::parse(text) {
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    // Not repeated: it holds a password.
                    self.error(
                        endpoint_text.span(),
                        "traces.otlp_endpoint",
                        "credentials do not belong in the URL, which is logged: give them as otlp_headers (\"Authorization\" = { env = \"...\" })",
                    );
                    None
                }
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host_str().is_some()
                        && url.query().is_none() =>
                {
                    Some(otlp_traces_url(url))
                }
                _ => {
                    self.error(
                        endpoint_text.span(),
                        "traces.otlp_endpoint",
                        format!("{text:?} is not an OTLP/HTTP endpoint like \"http://127.0.0.1:4318\" (an http:// or https:// URL; /v1/traces is appended)"),
                    );
                    None
                }
            },
        };
        let raw_headers = pick!(raw, d, otlp_headers);
        let mut headers = Vec::new();
        for (name, source) in raw_headers.get_ref() {
            let here = format!("traces.otlp_headers.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.error(
                    raw_headers.span(),
                    &here,
                    format!("{name:?} is not a header name"),
                );
                continue;
            }
            let Some((value, _)) = self.header_value(source, &raw_headers.span(), &here) else {
                continue;
            };
            headers.push((name.clone(), value));
        }
        let ratio = pick!(raw, d, sample_ratio);
        if !(0.0..=1.0).contains(ratio.get_ref()) {
            self.error(
                ratio.span(),
                "traces.sample_ratio",
                "must be from 0 (no trace kept) to 1 (every trace)",
            );
        }
        let service_name = pick!(raw, d, service_name);
        if service_name.get_ref().trim().is_empty() {
            self.error(
                service_name.span(),
                "traces.service_name",
                "must not be empty",
            );
        }
        TracesConfig {
            endpoint,
            headers,
            sample_ratio: ratio.get_ref().clamp(0.0, 1.0),
            service_name: service_name.get_ref().clone(),
            traceparent: pick!(raw, d, traceparent),
        }
    }

    /// `[api]`: `None` when the listen address is invalid (reported).
    fn api(&mut self, raw: RawApi, d: RawApi) -> Option<ApiConfig> {
        let api_listen = pick!(raw, d, listen);
        let listen = self.addr(&api_listen, "api.listen");
        let tokens: Vec<ApiToken> = pick!(raw, d, tokens)
            .iter()
            .map(|t| {
                let (source, scopes) = match t.get_ref() {
                    RawToken::Any(source) => (source.clone(), vec![Scope::Ingest, Scope::Admin]),
                    RawToken::Scoped(scoped) => (scoped.secret.clone(), scoped.scopes.clone()),
                };
                if scopes.is_empty() {
                    self.error(
                        t.span(),
                        "api.tokens",
                        "scopes is empty: give [\"ingest\"], [\"admin\"] or both",
                    );
                }
                let secret = self.secret(&Spanned::new(t.span(), source), "api.tokens");
                ApiToken { secret, scopes }
            })
            .collect();
        if let Some(addr) = listen {
            if tokens.is_empty() && !addr.ip().is_loopback() {
                self.error(api_listen.span(), "api.listen", format!("{addr} is not a loopback address and api.tokens is empty: an open API is allowed only on loopback"));
            }
        }
        let public_url = pick!(raw, d, public_url);
        let public_url = match public_url.get_ref().as_str() {
            "" => None,
            text => match url::Url::parse(text) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.has_host()
                        && u.query().is_none() =>
                {
                    Some(u)
                }
                _ => {
                    self.error(
                        public_url.span(),
                        "api.public_url",
                        "must be an http(s) URL without a query, like \"https://hooks.example.com\"",
                    );
                    None
                }
            },
        };
        let ui_frame_ancestors: Vec<String> = pick!(raw, d, ui_frame_ancestors)
            .into_iter()
            .filter_map(|origin| {
                let ok = url::Url::parse(origin.get_ref()).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.has_host() && u.path() == "/"
                }) && !origin.get_ref().contains([';', ',', ' ', '\'']);
                if !ok {
                    self.error(
                        origin.span(),
                        "api.ui_frame_ancestors",
                        "each must be an origin like \"https://app.example.com\"",
                    );
                }
                ok.then(|| origin.get_ref().trim_end_matches('/').to_string())
            })
            .collect();
        let allowed_hosts: Vec<String> = pick!(raw, d, allowed_hosts)
            .into_iter()
            .filter_map(|name| {
                let text = name.get_ref().trim().to_ascii_lowercase();
                let ok = !text.is_empty() && url::Host::parse(&text).is_ok();
                if !ok {
                    self.error(
                        name.span(),
                        "api.allowed_hosts",
                        "each must be a host name or IP address without a port, like \"hookd.internal\"",
                    );
                }
                ok.then_some(text)
            })
            .collect();
        let idle = pick!(raw, d, idle_timeout);
        let idle_timeout = self.duration(&idle, "api.idle_timeout", MAX_TIMEOUT);
        if idle_timeout < Duration::from_secs(1) {
            // `Keep-Alive: timeout=N` counts whole seconds.
            self.error(idle.span(), "api.idle_timeout", "must be at least 1s");
        }
        let ttl = pick!(raw, d, ui_session_ttl);
        let ui_session_ttl = self.duration(&ttl, "api.ui_session_ttl", MAX_INTERVAL);
        if ui_session_ttl.is_zero() {
            self.error(ttl.span(), "api.ui_session_ttl", "must be longer than 0s");
        }
        Some(ApiConfig {
            ui_session_ttl,
            public_url,
            ui_frame_ancestors,
            allowed_hosts,
            listen: listen?,
            tokens,
            max_body_bytes: pick!(raw, d, max_body_bytes),
            max_batch: pick!(raw, d, max_batch),
            max_header_bytes: pick!(raw, d, max_header_bytes),
            header_read_timeout: self.duration(
                &pick!(raw, d, header_read_timeout),
                "api.header_read_timeout",
                MAX_TIMEOUT,
            ),
            idle_timeout,
            body_read_timeout: self.duration(
                &pick!(raw, d, body_read_timeout),
                "api.body_read_timeout",
                MAX_TIMEOUT,
            ),
            require_owner: pick!(raw, d, require_owner),
        })
    }

    /// `[delivery]`: the defaults every subscription starts from.
    fn delivery(&mut self, raw: RawDelivery, d: RawDelivery) -> DeliveryConfig {
        let policy = DeliveryPolicy {
            retry_schedule: self
                .schedule(&pick!(raw, d, retry_schedule), "delivery.retry_schedule"),
            timeout: self.duration(&pick!(raw, d, timeout), "delivery.timeout", MAX_TIMEOUT),
        };
        let jitter = pick!(raw, d, jitter);
        if !(0.0..=1.0).contains(jitter.get_ref()) {
            self.error(jitter.span(), "delivery.jitter", "must be between 0 and 1");
        }
        let prefix = pick!(raw, d, header_prefix);
        let prefix_ok = !prefix.get_ref().is_empty()
            && prefix
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !prefix_ok {
            self.error(
                prefix.span(),
                "delivery.header_prefix",
                "must be letters, digits and '-' only, like \"X-Abstrakt\"",
            );
        }
        DeliveryConfig {
            policy,
            max_in_flight: self.positive(&pick!(raw, d, max_in_flight), "delivery.max_in_flight"),
            max_in_flight_per_subscription: self.positive(
                &pick!(raw, d, max_in_flight_per_subscription),
                "delivery.max_in_flight_per_subscription",
            ),
            max_in_flight_adhoc: self.positive(
                &pick!(raw, d, max_in_flight_adhoc),
                "delivery.max_in_flight_adhoc",
            ),
            retry_after_cap: self.duration(
                &pick!(raw, d, retry_after_cap),
                "delivery.retry_after_cap",
                MAX_INTERVAL,
            ),
            jitter: *jitter.get_ref(),
            header_prefix: prefix.into_inner(),
            allow_adhoc_targets: pick!(raw, d, allow_adhoc_targets),
            shutdown_grace: self.duration(
                &pick!(raw, d, shutdown_grace),
                "delivery.shutdown_grace",
                MAX_TIMEOUT,
            ),
            proxy: raw.proxy.as_ref().and_then(|p| self.proxy(p)),
            adhoc_rate_limit: {
                let rate = pick!(raw, d, adhoc_rate_limit);
                self.rate(&rate, "delivery.adhoc_rate_limit", true)
                    .unwrap_or(0.0)
            },
            breaker: BreakerPolicy {
                failures: pick!(raw, d, breaker_failures),
                probe_interval: self.duration(
                    &pick!(raw, d, breaker_probe_interval),
                    "delivery.breaker_probe_interval",
                    MAX_INTERVAL,
                ),
                disable_after: self.duration(
                    &pick!(raw, d, disable_after),
                    "delivery.disable_after",
                    MAX_INTERVAL,
                ),
                disable_after_failures: pick!(raw, d, disable_after_failures),
            },
        }
    }

    /// `delivery.proxy`: an http:// or https:// URL with a host, and no path.
    fn proxy(&mut self, raw: &Spanned<SecretSource>) -> Option<Proxy> {
        let url = self.secret(raw, "delivery.proxy");
        if url.expose().is_empty() {
            return None;
        }
        // The value is not repeated in an error: it may hold a password.
        let parsed = match reqwest::Url::parse(url.expose()) {
            Ok(u) => u,
            Err(e) => {
                self.error(raw.span(), "delivery.proxy", format!("not a URL: {e}"));
                return None;
            }
        };
        let host = parsed.host_str().map(str::to_string);
        match host {
            Some(host)
                if matches!(parsed.scheme(), "http" | "https")
                    && matches!(parsed.path(), "" | "/")
                    && parsed.query().is_none() =>
            {
                Some(Proxy { url, host })
            }
            _ => {
                self.error(
                    raw.span(),
                    "delivery.proxy",
                    "must be an http:// or https:// proxy URL with a host and no path, like \"http://proxy.internal:3128\"",
                );
                None
            }
        }
    }

    /// `[targets]`: the guard's allow list.
    fn targets(&mut self, raw: RawTargets, d: RawTargets) -> TargetsConfig {
        let mut allow = Vec::new();
        for net in pick!(raw, d, allow) {
            let text = net.get_ref();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => allow.push(n.trunc()),
                Err(_) => self.error(
                    net.span(),
                    "targets.allow",
                    format!("{text:?} is not a CIDR range like \"10.1.0.0/16\" or an address"),
                ),
            }
        }
        TargetsConfig {
            allow,
            allow_http: pick!(raw, d, allow_http),
        }
    }

    /// One `[[subscription]]` (the `i`th), against the `[delivery]` defaults, the target guard
    /// and the ids seen so far. `None` when its URL is unusable (reported).
    fn subscription(
        &mut self,
        at: &str,
        s: &RawSubscription,
        delivery: &DeliveryConfig,
        guard: &crate::guard::Guard,
        ids: &mut HashSet<String>,
    ) -> Option<Subscription> {
        let key = |name: &str| format!("{at}.{name}");
        let id = s.id.get_ref();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !id_ok {
            self.error(
                s.id.span(),
                &key("id"),
                format!("{id:?} must match [a-z0-9_-]{{1,64}}"),
            );
        } else if id == ADHOC_SUBSCRIPTION {
            self.error(
                s.id.span(),
                &key("id"),
                "\"adhoc\" is reserved for per-request webhook_url targets",
            );
        } else if id == OPERATOR_SUBSCRIPTION && at != "operator" {
            self.error(
                s.id.span(),
                &key("id"),
                "\"operator\" is reserved for the [operator] endpoint (operator events)",
            );
        } else if !ids.insert(id.clone()) {
            self.error(
                s.id.span(),
                &key("id"),
                format!("duplicate subscription id {id:?}"),
            );
        }
        let url = match reqwest::Url::parse(s.url.get_ref()) {
            Ok(url) if guard.check_url(&url).is_err() => {
                self.error(s.url.span(), &key("url"), format!("{} is a blocked address (loopback, private, link-local, ...); open its range in targets.allow to send there", url.host_str().unwrap_or("")));
                None
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(_) => {
                self.error(
                    s.url.span(),
                    &key("url"),
                    "must be an http:// or https:// URL with a host",
                );
                None
            }
            Err(e) => {
                self.error(s.url.span(), &key("url"), format!("invalid URL: {e}"));
                None
            }
        };
        let secret = self.secret(&s.secret, &key("secret"));
        let parsed = if at == "operator" {
            // Checked by `operator`: operator event types, not jobs'.
            Ok(EventFilter::Only(s.events.get_ref().clone()))
        } else {
            parse_events(s.events.get_ref())
        };
        let events = match parsed {
            Ok(events) => events,
            Err(message) => {
                self.error(s.events.span(), &key("events"), message);
                EventFilter::All
            }
        };
        let policy = DeliveryPolicy {
            retry_schedule: match &s.retry_schedule {
                Some(rs) => self.schedule(rs, &key("retry_schedule")),
                None => delivery.policy.retry_schedule.clone(),
            },
            timeout: match &s.timeout {
                Some(t) => self.duration(t, &key("timeout"), MAX_TIMEOUT),
                None => delivery.policy.timeout,
            },
        };
        let max_in_flight = match &s.max_in_flight {
            Some(m) => self.positive(m, &key("max_in_flight")),
            None => delivery.max_in_flight_per_subscription,
        };
        let signature = s.signature.unwrap_or_default();
        if signature != SignatureScheme::Abstrakt {
            if let Err(e) = crate::signing::standard_key(secret.expose()) {
                self.error(
                    s.secret.span(),
                    &key("secret"),
                    format!("signature = \"standard\" or \"both\" needs a whsec_ secret: {e}"),
                );
            }
        }
        let previous_secret = match (&s.previous_secret, &s.previous_secret_expires) {
            (None, None) => None,
            (Some(source), Some(expires)) => {
                let secret = self.secret(source, &key("previous_secret"));
                if signature != SignatureScheme::Abstrakt {
                    if let Err(e) = crate::signing::standard_key(secret.expose()) {
                        self.error(
                            source.span(),
                            &key("previous_secret"),
                            format!("needs a whsec_ secret: {e}"),
                        );
                    }
                }
                match parse_rfc3339_ms(expires.get_ref()) {
                    Some(expires_ms) => Some(PreviousSecret { secret, expires_ms }),
                    None => {
                        self.error(
                            expires.span(),
                            &key("previous_secret_expires"),
                            "must be an RFC 3339 date-time like \"2026-12-01T00:00:00Z\"",
                        );
                        None
                    }
                }
            }
            (Some(source), None) => {
                self.error(
                    source.span(),
                    &key("previous_secret"),
                    "needs previous_secret_expires: until when the old secret still signs",
                );
                None
            }
            (None, Some(expires)) => {
                self.error(
                    expires.span(),
                    &key("previous_secret_expires"),
                    "is set without previous_secret",
                );
                None
            }
        };
        let headers = match &s.headers {
            Some(h) => self.headers(h, &key("headers"), &delivery.header_prefix),
            None => Vec::new(),
        };
        let d = delivery.breaker;
        let breaker = BreakerPolicy {
            failures: s.breaker_failures.unwrap_or(d.failures),
            probe_interval: match &s.breaker_probe_interval {
                Some(t) => self.duration(t, &key("breaker_probe_interval"), MAX_INTERVAL),
                None => d.probe_interval,
            },
            disable_after: match &s.disable_after {
                Some(t) => self.duration(t, &key("disable_after"), MAX_INTERVAL),
                None => d.disable_after,
            },
            disable_after_failures: s.disable_after_failures.unwrap_or(d.disable_after_failures),
        };
        let rate_limit = s
            .rate_limit
            .as_ref()
            .and_then(|r| self.rate(r, &key("rate_limit"), false));
        url.map(|url| Subscription {
            id: id.clone(),
            url,
            secret,
            events,
            policy,
            max_in_flight,
            signature,
            previous_secret,
            headers,
            breaker,
            rate_limit,
            owner: None,
        })
    }
}

/// `[storage]`; an empty path is `$STATE_DIRECTORY` (systemd) or `./hookd-data`.
/// `otlp_endpoint` is the collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` is: spans go
/// to its `/v1/traces`, unless the URL already ends so.
fn otlp_traces_url(mut url: url::Url) -> url::Url {
    if !url.path().ends_with("/v1/traces") {
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url
}

fn storage_config(raw: RawStorage, d: RawStorage) -> StorageConfig {
    let path = pick!(raw, d, path);
    let path = if !path.is_empty() {
        PathBuf::from(path)
    } else if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        let dir = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        PathBuf::from(dir)
    } else {
        PathBuf::from("hookd-data")
    };

    StorageConfig {
        path,
        // Longer is reported by `Validator::resolve`.
        retention: pick!(raw, d, retention).into_inner().0.min(MAX_RETENTION),
        cache_capacity_bytes: pick!(raw, d, cache_capacity_bytes),
        engine: Engine::Sled,
        max_pending: pick!(raw, d, max_pending),
        min_free_bytes: pick!(raw, d, min_free_bytes),
    }
}

fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn parse_events(events: &[String]) -> Result<EventFilter, String> {
    if events.is_empty() {
        return Err("list at least one event type, or [\"*\"] for all".to_string());
    }
    if events.iter().any(|e| e == "*") {
        return Ok(EventFilter::All);
    }
    for e in events {
        let valid = e
            .strip_prefix("job.")
            .is_some_and(crate::event::valid_status);
        if !valid {
            return Err(format!("{e:?} is not an event type like \"job.completed\" (job.<status>, status [a-z_]{{1,32}}) or \"*\""));
        }
    }
    Ok(EventFilter::Only(events.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> Vec<Diagnostic> {
        match Config::from_toml(text, "t.toml") {
            Err(ConfigError::Invalid(d)) => d,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn example_sets_every_key_and_is_valid() {
        let raw: RawConfig = toml::from_str(EXAMPLE).unwrap();
        assert!(
            raw.api.listen.is_some()
                && raw.api.tokens.is_some()
                && raw.api.max_body_bytes.is_some()
                && raw.api.max_batch.is_some()
                && raw.api.max_header_bytes.is_some()
                && raw.api.header_read_timeout.is_some()
                && raw.api.body_read_timeout.is_some()
        );
        assert!(raw.metrics.listen.is_some());
        let t = &raw.traces;
        assert!(
            t.otlp_endpoint.is_some()
                && t.otlp_headers.is_some()
                && t.sample_ratio.is_some()
                && t.service_name.is_some()
                && t.traceparent.is_some()
        );
        assert!(raw.targets.allow.is_some() && raw.targets.allow_http.is_some());
        assert!(
            raw.storage.path.is_some()
                && raw.storage.retention.is_some()
                && raw.storage.cache_capacity_bytes.is_some()
                && raw.storage.max_pending.is_some()
                && raw.storage.min_free_bytes.is_some()
        );
        let d = &raw.delivery;
        assert!(
            d.retry_schedule.is_some()
                && d.timeout.is_some()
                && d.max_in_flight.is_some()
                && d.max_in_flight_per_subscription.is_some()
                && d.max_in_flight_adhoc.is_some()
                && d.retry_after_cap.is_some()
                && d.jitter.is_some()
                && d.header_prefix.is_some()
                && d.allow_adhoc_targets.is_some()
                && d.shutdown_grace.is_some()
                && d.breaker_failures.is_some()
                && d.breaker_probe_interval.is_some()
                && d.disable_after.is_some()
                && d.disable_after_failures.is_some()
                && d.adhoc_rate_limit.is_some()
        );
        let config = Config::from_toml(EXAMPLE, "example").unwrap();
        assert_eq!(
            config.delivery.policy.retry_schedule,
            [0, 60, 300, 900, 3600].map(Duration::from_secs)
        );
        assert_eq!(config.delivery.policy.timeout, Duration::from_secs(10));
        assert_eq!(config.delivery.header_prefix, "X-Abstrakt");
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_key() {
        let d =
            err("[api]\nlisten = \"127.0.0.1:1\"\n\n[delivery]\ntimeout = \"1s\"\nretries = 3\n");
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].key.as_str()), (6, "delivery.retries"));
        assert!(
            d[0].message.contains("unknown field `retries`"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn bad_duration_names_its_line() {
        let d = err("[delivery]\n\ntimeout = \"ten seconds\"\n");
        assert_eq!((d[0].line, d[0].key.as_str()), (3, "delivery.timeout"));
        assert!(
            d[0].message.contains("invalid duration"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn duration_errors_show_the_accepted_form() {
        let d = err("[delivery]\ntimeout = \"10 seconds please\"\n");
        assert!(
            d[0].message.contains("\"10s\"") && d[0].message.contains("\"1h 30m\""),
            "{}",
            d[0].message
        );
        let d = err("[delivery]\ntimeout = 10\n");
        assert_eq!((d[0].line, d[0].key.as_str()), (2, "delivery.timeout"));
        assert!(
            d[0].message.contains("a number needs a unit, e.g. \"10s\""),
            "{}",
            d[0].message
        );
        let d = err("[delivery]\nretry_schedule = [\"0s\", 60]\n");
        assert!(d[0].message.contains("\"60s\""), "{}", d[0].message);
    }

    #[test]
    fn every_semantic_error_is_reported() {
        let text = r#"
[api]
listen = "0.0.0.0:8080"

[[subscription]]
id = "a"
url = "ftp://x"
secret = { env = "HOOKD_TEST_SURELY_UNSET_VAR" }
events = ["completed"]

[[subscription]]
id = "a"
url = "https://example.invalid/"
secret = "s"
events = ["*"]
"#;
        let d = err(text);
        let keys: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                (3, "api.listen"),
                (7, "subscription[0].url"),
                (8, "subscription[0].secret"),
                (9, "subscription[0].events"),
                (12, "subscription[1].id"),
            ]
        );
        assert!(d[2].message.contains("HOOKD_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn subscription_overrides_and_secret_sources() {
        let dir = std::env::temp_dir().join(format!("hookd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "from-file\n").unwrap();
        let text = format!(
            "[[subscription]]\nid = \"x\"\nurl = \"https://example.invalid/h\"\nsecret = {{ file = \"{}\" }}\nevents = [\"job.completed\"]\nretry_schedule = [\"0s\", \"200ms\"]\ntimeout = \"2s\"\n",
            dir.join("s").display()
        );
        let config = Config::from_toml(&text, "t").unwrap();
        let s = &config.subscriptions[0];
        assert_eq!(s.secret.expose(), "from-file");
        assert_eq!(
            format!("{:?} {}", s.secret, s.secret),
            "[REDACTED] [REDACTED]"
        );
        assert_eq!(
            s.policy.retry_schedule,
            [Duration::ZERO, Duration::from_millis(200)]
        );
        assert_eq!(s.policy.timeout, Duration::from_secs(2));
        assert!(s.events.matches("job.completed") && !s.events.matches("job.failed"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn standard_signatures_need_whsec_secrets_and_rotation_expires() {
        let d = err("[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"plain\"\nevents = [\"*\"]\nsignature = \"standard\"\n");
        assert_eq!(
            (d[0].line, d[0].key.as_str()),
            (4, "subscription[0].secret")
        );
        let d = err("[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"whsec_AAEC\"\nevents = [\"*\"]\nprevious_secret = \"whsec_AwQF\"\n");
        assert_eq!(d[0].key, "subscription[0].previous_secret");
        assert!(d[0].message.contains("previous_secret_expires"));

        let text = "[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"whsec_AAEC\"\nevents = [\"*\"]\nsignature = \"both\"\nprevious_secret = \"whsec_AwQF\"\nprevious_secret_expires = \"2026-12-01T00:00:00Z\"\n";
        let config = Config::from_toml(text, "t").unwrap();
        let s = &config.subscriptions[0];
        let expires = s.previous_secret.as_ref().unwrap().expires_ms;
        let during = s.signing_keys(expires - 1);
        assert_eq!(during.abstrakt.as_deref(), Some("whsec_AAEC"));
        assert_eq!(during.standard, [vec![0, 1, 2], vec![3, 4, 5]]);
        let after = s.signing_keys(expires);
        assert_eq!(after.standard, [vec![0, 1, 2]]);
    }
}

//! The sections besides the subscriptions: `[traces]`, `[api]`, `[delivery]`, `[targets]` and
//! `[storage]`, each against the built-in example's keys (`d`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::duration::{HumanDuration, MAX_INTERVAL, MAX_RETENTION, MAX_TIMEOUT};
use crate::config::raw::{pick, RawApi, RawDelivery, RawStorage, RawTargets, RawTraces};
use crate::config::secret::{HeaderSource, Secret, SecretSource};
use crate::config::token::{ApiToken, RawToken, Scope};
use crate::config::{
    ApiConfig, Backend, BreakerPolicy, DeliveryConfig, DeliveryPolicy, Engine, Proxy,
    StorageConfig, TargetsConfig, TracesConfig,
};

impl Validator<'_> {
    /// `[traces]`: an http(s) endpoint (or none), valid headers, a ratio in 0..=1.
    pub(super) fn traces(&mut self, raw: RawTraces, d: RawTraces) -> TracesConfig {
        let endpoint = self.otlp_endpoint(&pick!(raw, d, otlp_endpoint));
        let headers = self.otlp_headers(&pick!(raw, d, otlp_headers));
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
            service_name: service_name.into_inner(),
            traceparent: pick!(raw, d, traceparent),
        }
    }

    /// `traces.otlp_endpoint`: empty (no spans), or an http(s) URL without credentials or a
    /// query, to which `/v1/traces` is appended ([`otlp_traces_url`]).
    fn otlp_endpoint(&mut self, endpoint: &Spanned<String>) -> Option<url::Url> {
        let problem = match endpoint.get_ref().trim() {
            "" => return None,
            text => match url::Url::parse(text) {
                // Not repeated: it holds a password.
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    "credentials do not belong in the URL, which is logged: give them as otlp_headers (\"Authorization\" = { env = \"...\" })".to_string()
                }
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host_str().is_some()
                        && url.query().is_none() =>
                {
                    return Some(otlp_traces_url(url));
                }
                _ => format!("{text:?} is not an OTLP/HTTP endpoint like \"http://127.0.0.1:4318\" (an http:// or https:// URL; /v1/traces is appended)"),
            },
        };
        self.error(endpoint.span(), "traces.otlp_endpoint", problem);
        None
    }

    /// `traces.otlp_headers`: header names, each with a valid value (a secret always).
    fn otlp_headers(
        &mut self,
        raw: &Spanned<BTreeMap<String, HeaderSource>>,
    ) -> Vec<(String, Secret)> {
        let mut headers = Vec::new();
        for (name, source) in raw.get_ref() {
            let here = format!("traces.otlp_headers.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.error(raw.span(), &here, format!("{name:?} is not a header name"));
                continue;
            }
            if let Some((value, _)) = self.header_value(source, &raw.span(), &here) {
                headers.push((name.clone(), value));
            }
        }
        headers
    }

    /// `[api]`: `None` when the listen address is invalid (reported).
    pub(super) fn api(&mut self, raw: RawApi, d: RawApi) -> Option<ApiConfig> {
        let listen_text = pick!(raw, d, listen);
        let listen = self.addr(&listen_text, "api.listen");
        let tokens = self.tokens(&pick!(raw, d, tokens));
        if let Some(addr) = listen {
            self.open_only_on_loopback(&listen_text, addr, &tokens);
        }
        let public_url = self.public_url(&pick!(raw, d, public_url));
        let ui_frame_ancestors = self.frame_ancestors(pick!(raw, d, ui_frame_ancestors));
        let allowed_hosts = self.allowed_hosts(pick!(raw, d, allowed_hosts));
        let idle_timeout = self.idle_timeout(&pick!(raw, d, idle_timeout));
        let ui_session_ttl = self.session_ttl(&pick!(raw, d, ui_session_ttl));
        let header_read_timeout = pick!(raw, d, header_read_timeout);
        let header_read_timeout =
            self.duration(&header_read_timeout, "api.header_read_timeout", MAX_TIMEOUT);
        let body_read_timeout = pick!(raw, d, body_read_timeout);
        let body_read_timeout =
            self.duration(&body_read_timeout, "api.body_read_timeout", MAX_TIMEOUT);
        Some(ApiConfig {
            listen: listen?,
            tokens,
            max_body_bytes: pick!(raw, d, max_body_bytes),
            max_batch: pick!(raw, d, max_batch),
            max_header_bytes: pick!(raw, d, max_header_bytes),
            header_read_timeout,
            idle_timeout,
            body_read_timeout,
            ui_session_ttl,
            public_url,
            ui_frame_ancestors,
            require_owner: pick!(raw, d, require_owner),
            allowed_hosts,
        })
    }

    /// `api.tokens`: each a secret, with at least one scope (a bare secret has both).
    fn tokens(&mut self, raw: &[Spanned<RawToken>]) -> Vec<ApiToken> {
        let mut names = std::collections::HashSet::new();
        raw.iter()
            .enumerate()
            .map(|(i, t)| {
                let (source, scopes, name) = match t.get_ref() {
                    RawToken::Any(source) => {
                        (source.clone(), vec![Scope::Ingest, Scope::Admin], None)
                    }
                    RawToken::Scoped(scoped) => (
                        scoped.secret.clone(),
                        scoped.scopes.clone(),
                        scoped.name.clone(),
                    ),
                };
                let name = name.unwrap_or_else(|| format!("token-{}", i + 1));
                if !valid_token_name(&name) {
                    self.error(
                        t.span(),
                        "api.tokens",
                        format!("name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
                    );
                } else if !names.insert(name.clone()) {
                    self.error(
                        t.span(),
                        "api.tokens",
                        format!("name {name:?} is given to two tokens: each needs its own"),
                    );
                }
                if scopes.is_empty() {
                    self.error(
                        t.span(),
                        "api.tokens",
                        "scopes is empty: give [\"ingest\"], [\"admin\"] or both",
                    );
                }
                let secret = self.secret(&Spanned::new(t.span(), source), "api.tokens");
                ApiToken {
                    secret,
                    scopes,
                    name,
                }
            })
            .collect()
    }

    /// An API without tokens listens on loopback only.
    fn open_only_on_loopback(
        &mut self,
        listen: &Spanned<String>,
        addr: SocketAddr,
        tokens: &[ApiToken],
    ) {
        if tokens.is_empty() && !addr.ip().is_loopback() {
            self.error(listen.span(), "api.listen", format!("{addr} is not a loopback address and api.tokens is empty: an open API is allowed only on loopback"));
        }
    }

    /// `api.public_url`: empty (the request's `Host`), or an http(s) URL without a query.
    fn public_url(&mut self, public_url: &Spanned<String>) -> Option<url::Url> {
        match public_url.get_ref().as_str() {
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
        }
    }

    /// `api.ui_frame_ancestors`: origins, each safe to write into a CSP header.
    fn frame_ancestors(&mut self, origins: Vec<Spanned<String>>) -> Vec<String> {
        origins
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
            .collect()
    }

    /// `api.allowed_hosts`: host names or addresses without a port, lowercased.
    fn allowed_hosts(&mut self, names: Vec<Spanned<String>>) -> Vec<String> {
        names
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
            .collect()
    }

    /// `api.idle_timeout`: 1s to [`MAX_TIMEOUT`] (`Keep-Alive: timeout=N` counts whole seconds).
    fn idle_timeout(&mut self, idle: &Spanned<HumanDuration>) -> Duration {
        let idle_timeout = self.duration(idle, "api.idle_timeout", MAX_TIMEOUT);
        if idle_timeout < Duration::from_secs(1) {
            self.error(idle.span(), "api.idle_timeout", "must be at least 1s");
        }
        idle_timeout
    }

    /// `api.ui_session_ttl`: longer than 0s, at most [`MAX_INTERVAL`].
    fn session_ttl(&mut self, ttl: &Spanned<HumanDuration>) -> Duration {
        let ui_session_ttl = self.duration(ttl, "api.ui_session_ttl", MAX_INTERVAL);
        if ui_session_ttl.is_zero() {
            self.error(ttl.span(), "api.ui_session_ttl", "must be longer than 0s");
        }
        ui_session_ttl
    }

    /// `[delivery]`: the defaults every subscription starts from.
    pub(super) fn delivery(&mut self, raw: RawDelivery, d: RawDelivery) -> DeliveryConfig {
        let policy = DeliveryPolicy {
            retry_schedule: self
                .schedule(&pick!(raw, d, retry_schedule), "delivery.retry_schedule"),
            timeout: self.duration(&pick!(raw, d, timeout), "delivery.timeout", MAX_TIMEOUT),
        };
        let jitter = pick!(raw, d, jitter);
        if !(0.0..=1.0).contains(jitter.get_ref()) {
            self.error(jitter.span(), "delivery.jitter", "must be between 0 and 1");
        }
        let header_prefix = self.header_prefix(pick!(raw, d, header_prefix));
        let adhoc_rate_limit = pick!(raw, d, adhoc_rate_limit);
        let breaker = BreakerPolicy {
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
        };
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
            header_prefix,
            allow_adhoc_targets: pick!(raw, d, allow_adhoc_targets),
            shutdown_grace: self.duration(
                &pick!(raw, d, shutdown_grace),
                "delivery.shutdown_grace",
                MAX_TIMEOUT,
            ),
            proxy: raw.proxy.as_ref().and_then(|p| self.proxy(p)),
            adhoc_rate_limit: self
                .rate(&adhoc_rate_limit, "delivery.adhoc_rate_limit", true)
                .unwrap_or(0.0),
            breaker,
        }
    }

    /// `delivery.header_prefix`: letters, digits and '-'.
    fn header_prefix(&mut self, prefix: Spanned<String>) -> String {
        let ok = !prefix.get_ref().is_empty()
            && prefix
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            self.error(
                prefix.span(),
                "delivery.header_prefix",
                "must be letters, digits and '-' only, like \"X-Abstrakt\"",
            );
        }
        prefix.into_inner()
    }

    /// `delivery.proxy`: an http:// or https:// URL with a host, and no path.
    pub(super) fn proxy(&mut self, raw: &Spanned<SecretSource>) -> Option<Proxy> {
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
    pub(super) fn targets(&mut self, raw: RawTargets, d: RawTargets) -> TargetsConfig {
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

    /// `[storage]`: its engine, and a retention of at most [`MAX_RETENTION`].
    pub(super) fn storage(&mut self, raw: RawStorage, d: RawStorage) -> StorageConfig {
        let engine = self.engine(&raw, &d);
        if let Some(retention) = &raw.retention {
            self.duration(retention, "storage.retention", MAX_RETENTION);
        }
        storage_config(raw, d, engine)
    }

    /// `storage.engine` and, for PostgreSQL, its `url` and `pool_size`.
    fn engine(&mut self, raw: &RawStorage, d: &RawStorage) -> Engine {
        let Some(engine) = raw.engine.as_ref().or(d.engine.as_ref()) else {
            return Engine::Embedded(Backend::Sled);
        };
        match engine.get_ref().as_str() {
            "sled" => Engine::Embedded(Backend::Sled),
            "fjall" => Engine::Embedded(Backend::Fjall),
            "postgres" => self.postgres(engine, raw, d),
            other => {
                self.error(
                    engine.span(),
                    "storage.engine",
                    format!("unknown engine {other:?}: \"sled\", \"fjall\" or \"postgres\""),
                );
                Engine::Embedded(Backend::Sled)
            }
        }
    }

    /// `engine = "postgres"`: a connection string in `storage.url`, and a pool size.
    fn postgres(&mut self, engine: &Spanned<String>, raw: &RawStorage, d: &RawStorage) -> Engine {
        let url = match raw.url.as_ref() {
            Some(url) => self.secret(url, "storage.url"),
            None => {
                self.error(
                    engine.span(),
                    "storage.url",
                    "engine \"postgres\" needs storage.url, like { env = \"HOOKD_DATABASE_URL\" }",
                );
                Secret::new(String::new())
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
}

/// `otlp_endpoint` is the collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` is: spans go
/// to its `/v1/traces`, unless the URL already ends so.
fn otlp_traces_url(mut url: url::Url) -> url::Url {
    if !url.path().ends_with("/v1/traces") {
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url
}

/// `[storage]` with `engine`; an empty path is `$STATE_DIRECTORY` (systemd) or `./hookd-data`.
fn storage_config(raw: RawStorage, d: RawStorage, engine: Engine) -> StorageConfig {
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
        // Longer is reported by `Validator::storage`.
        retention: pick!(raw, d, retention).into_inner().0.min(MAX_RETENTION),
        cache_capacity_bytes: pick!(raw, d, cache_capacity_bytes),
        engine,
        max_pending: pick!(raw, d, max_pending),
        min_free_bytes: pick!(raw, d, min_free_bytes),
    }
}

/// A token's name: what the audit log shows, so short and plain.
fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

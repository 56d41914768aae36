//! Validation: [`RawConfig`] (with the built-in example's keys filling the gaps) becomes a
//! [`Config`], or every problem is reported with its line and key.
//!
//! [`Validator`] holds the file's text and the errors so far. This file has the whole file's
//! story ([`Validator::resolve`]) and the checks of single values; `sections` checks `[api]`,
//! `[delivery]`, `[storage]`, `[targets]` and `[traces]`, `subscription` one subscription, and
//! `headers` the custom headers, `ui` the `[ui]` table (its logo file is read there).

mod headers;
mod sections;
mod subscription;
mod ui;

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::diagnostic::{diagnostic, invalid, Diagnostic};
use super::duration::{HumanDuration, MAX_INTERVAL};
use super::raw::{pick, RawConfig};
use super::secret::{Secret, SecretSource};
use super::{Config, ConfigError, MetricsConfig, PortalConfig};

pub(super) use subscription::Origin;

/// Checks a file's values, keeping every problem found.
pub(super) struct Validator<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    /// A validator of `text` (named `file` in errors) that has found `errors` already.
    pub(super) fn new(text: &'a str, file: &'a str, errors: Vec<Diagnostic>) -> Self {
        Validator { text, file, errors }
    }

    /// The problems found, in the order they were found.
    pub(super) fn into_errors(self) -> Vec<Diagnostic> {
        self.errors
    }
}

impl Validator<'_> {
    /// The whole file: each section against the built-in example `d`, which sets every key (a
    /// unit test checks), then the subscriptions against `[delivery]` and `[targets]`.
    pub(super) fn resolve(mut self, raw: RawConfig, d: RawConfig) -> Result<Config, ConfigError> {
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
            ui,
        } = raw;
        let RawConfig {
            api: d_api,
            metrics: d_metrics,
            storage: d_storage,
            delivery: d_delivery,
            targets: d_targets,
            traces: d_traces,
            portal: d_portal,
            ui: d_ui,
            ..
        } = d;
        let traces = self.traces(traces, d_traces);
        let api = self.api(api, d_api);
        let metrics_listen = self.addr(&pick!(metrics, d_metrics, listen), "metrics.listen");
        let delivery = self.delivery(delivery, d_delivery);
        let targets = self.targets(targets, d_targets);
        let subscriptions = self.subscriptions(
            &subscription,
            operator.as_ref(),
            &delivery,
            &targets.guard(),
        );
        let storage = self.storage(storage, d_storage);
        let ui = self.ui(ui, d_ui);
        if !self.errors.is_empty() {
            return Err(invalid(self.errors));
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
                max_listen_sessions: pick!(portal, d_portal, max_listen_sessions),
            },
            ui,
        })
    }

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

    /// `value`'s duration at most `max` (as [`Validator::duration`]), or `default` without one.
    fn duration_or(
        &mut self,
        value: &Option<Spanned<HumanDuration>>,
        key: &str,
        max: Duration,
        default: Duration,
    ) -> Duration {
        match value {
            Some(value) => self.duration(value, key, max),
            None => default,
        }
    }

    fn positive(&mut self, value: &Spanned<usize>, key: &str) -> usize {
        if *value.get_ref() == 0 {
            self.error(value.span(), key, "must be at least 1");
        }
        *value.get_ref()
    }

    fn secret(&mut self, value: &Spanned<SecretSource>, key: &str) -> Secret {
        value.get_ref().resolve().unwrap_or_else(|message| {
            self.error(value.span(), key, message);
            Secret::new(String::new())
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
}

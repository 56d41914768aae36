//! One subscription, by the same rules wherever it comes from ([`Origin`]): the config file's
//! `[[subscription]]`s, the `[operator]` table, and the stored ones made through the API or a
//! portal. Its keys are named from [`SUBSCRIPTION_FIELDS`](crate::config::SUBSCRIPTION_FIELDS).

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::duration::{HumanDuration, MAX_INTERVAL, MAX_TIMEOUT};
use crate::config::fields::SubscriptionField as Field;
use crate::config::raw::{RawOperator, RawSubscription};
use crate::config::secret::{Secret, SecretSource};
use crate::config::{
    BreakerPolicy, DeliveryConfig, DeliveryPolicy, EventFilter, PreviousSecret, SignatureScheme,
    Subscription, ADHOC_SUBSCRIPTION, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, OPERATOR_EVENTS,
    OPERATOR_SUBSCRIPTION,
};
use crate::guard::Guard;

/// Where a subscription being validated comes from: it names the subscription's keys in
/// errors, and decides which id and which event types it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::config) enum Origin {
    /// The config file's `[[subscription]]` at this index.
    File(usize),
    /// A stored one, made through the API or a portal: a document of one `[[subscription]]`,
    /// so its keys are named as a file's first (`subscription[0].url`).
    Stored,
    /// The `[operator]` table: the subscription [`OPERATOR_SUBSCRIPTION`], of operator events.
    Operator,
}

impl Origin {
    /// The table the subscription's keys are in, as errors name it.
    fn table(self) -> String {
        match self {
            Origin::File(index) => format!("subscription[{index}]"),
            Origin::Stored => "subscription[0]".to_string(),
            Origin::Operator => "operator".to_string(),
        }
    }

    /// `field`'s key, as errors name it: `subscription[2].url`, `operator.url`.
    fn key(self, field: Field) -> String {
        format!("{}.{}", self.table(), field.name)
    }
}

impl Validator<'_> {
    /// The file's `[[subscription]]`s, then `[operator]`'s, against the `[delivery]` defaults
    /// and the target guard; each id once.
    pub(super) fn subscriptions(
        &mut self,
        file: &[RawSubscription],
        operator: Option<&RawOperator>,
        delivery: &DeliveryConfig,
        guard: &Guard,
    ) -> Vec<Subscription> {
        let mut ids = HashSet::new();
        let mut subscriptions: Vec<Subscription> = file
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.subscription(Origin::File(i), s, delivery, guard, &mut ids))
            .collect();
        if let Some(operator) = operator {
            subscriptions.extend(self.operator(operator, delivery, guard, &mut ids));
        }
        subscriptions
    }

    /// `[operator]` as the subscription `operator`: its breaker never opens (hookd's own news
    /// must not wait behind it) and its events are operator events, all of them unless it
    /// names some.
    fn operator(
        &mut self,
        op: &RawOperator,
        delivery: &DeliveryConfig,
        guard: &Guard,
        ids: &mut HashSet<String>,
    ) -> Option<Subscription> {
        let every_operator_event = || {
            let all = OPERATOR_EVENTS.iter().map(|e| e.to_string()).collect();
            Spanned::new(0..0, all)
        };
        let raw = RawSubscription {
            id: Spanned::new(0..0, OPERATOR_SUBSCRIPTION.to_string()),
            name: None,
            description: None,
            url: op.url.clone(),
            secret: op.secret.clone(),
            events: op.events.clone().unwrap_or_else(every_operator_event),
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
        self.subscription(Origin::Operator, &raw, delivery, guard, ids)
    }

    /// One subscription from `origin`, against the `[delivery]` defaults, the target guard and
    /// the ids taken so far (its own is added). `None` when its URL is unusable (reported).
    pub(in crate::config) fn subscription(
        &mut self,
        origin: Origin,
        s: &RawSubscription,
        delivery: &DeliveryConfig,
        guard: &Guard,
        ids: &mut HashSet<String>,
    ) -> Option<Subscription> {
        self.subscription_id(origin, &s.id, ids);
        let name = self.label_text(origin, &s.name, Field::NAME, MAX_NAME_CHARS);
        let description = self.label_text(
            origin,
            &s.description,
            Field::DESCRIPTION,
            MAX_DESCRIPTION_CHARS,
        );
        let url = self.target(origin, &s.url, guard);
        let secret = self.secret(&s.secret, &origin.key(Field::SECRET));
        let events = self.events(origin, &s.events);
        let policy = self.policy(origin, s, &delivery.policy);
        let max_in_flight = match &s.max_in_flight {
            Some(m) => self.positive(m, &origin.key(Field::MAX_IN_FLIGHT)),
            None => delivery.max_in_flight_per_subscription,
        };
        let signature = s.signature.unwrap_or_default();
        if signature != SignatureScheme::Abstrakt {
            let key = origin.key(Field::SECRET);
            let needs = "signature = \"standard\" or \"both\" needs";
            self.whsec(&s.secret, &secret, &key, needs);
        }
        let previous_secret = self.previous_secret(origin, s, signature);
        let headers = match &s.headers {
            Some(h) => self.headers(h, &origin.key(Field::HEADERS), &delivery.header_prefix),
            None => Vec::new(),
        };
        let breaker = self.breaker(origin, s, delivery.breaker);
        let rate_limit = s
            .rate_limit
            .as_ref()
            .and_then(|r| self.rate(r, &origin.key(Field::RATE_LIMIT), false));
        Some(Subscription {
            id: s.id.get_ref().clone(),
            name,
            description,
            url: url?,
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

    /// The id: `[a-z0-9_-]{1,64}`, not one reserved for another origin, and not taken (it is
    /// added to `ids`).
    fn subscription_id(&mut self, origin: Origin, id: &Spanned<String>, ids: &mut HashSet<String>) {
        let text = id.get_ref();
        let problem = if !valid_id(text) {
            format!("{text:?} must match [a-z0-9_-]{{1,64}}")
        } else if text == ADHOC_SUBSCRIPTION {
            "\"adhoc\" is reserved for per-request webhook_url targets".to_string()
        } else if text == OPERATOR_SUBSCRIPTION && origin != Origin::Operator {
            "\"operator\" is reserved for the [operator] endpoint (operator events)".to_string()
        } else if !ids.insert(text.clone()) {
            format!("duplicate subscription id {text:?}")
        } else {
            return;
        };
        self.error(id.span(), &origin.key(Field::ID), problem);
    }

    /// Its `name` or `description`: at most `max` characters, no control characters (a
    /// description may break lines); an empty one is none.
    fn label_text(
        &mut self,
        origin: Origin,
        text: &Option<Spanned<String>>,
        field: Field,
        max: usize,
    ) -> Option<String> {
        let given = text.as_ref()?;
        let value = given.get_ref();
        let problem = match text_problem(value, max, field == Field::DESCRIPTION) {
            None if value.trim().is_empty() => return None,
            None => return Some(value.clone()),
            Some(problem) => problem,
        };
        self.error(given.span(), &origin.key(field), problem);
        None
    }

    /// The URL its deliveries go to: http(s), with a host that the target guard allows.
    /// `None` when it is not (reported).
    fn target(
        &mut self,
        origin: Origin,
        url: &Spanned<String>,
        guard: &Guard,
    ) -> Option<reqwest::Url> {
        let problem = match reqwest::Url::parse(url.get_ref()) {
            Ok(parsed) if guard.check_url(&parsed).is_err() => format!(
                "{} is a blocked address (loopback, private, link-local, ...); open its range in targets.allow to send there",
                parsed.host_str().unwrap_or("")
            ),
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
                return Some(parsed);
            }
            Ok(_) => "must be an http:// or https:// URL with a host".to_string(),
            Err(e) => format!("invalid URL: {e}"),
        };
        self.error(url.span(), &origin.key(Field::URL), problem);
        None
    }

    /// The event types it wants: operator events for `[operator]`, job events (or `*`) for
    /// every other.
    fn events(&mut self, origin: Origin, events: &Spanned<Vec<String>>) -> EventFilter {
        let parsed = match origin {
            Origin::Operator => operator_events(events.get_ref()),
            Origin::File(_) | Origin::Stored => job_events(events.get_ref()),
        };
        parsed.unwrap_or_else(|message| {
            self.error(events.span(), &origin.key(Field::EVENTS), message);
            EventFilter::All
        })
    }

    /// Its retry schedule and attempt timeout: its own, else `[delivery]`'s.
    fn policy(
        &mut self,
        origin: Origin,
        s: &RawSubscription,
        defaults: &DeliveryPolicy,
    ) -> DeliveryPolicy {
        DeliveryPolicy {
            retry_schedule: match &s.retry_schedule {
                Some(rs) => self.schedule(rs, &origin.key(Field::RETRY_SCHEDULE)),
                None => defaults.retry_schedule.clone(),
            },
            timeout: self.duration_or(
                &s.timeout,
                &origin.key(Field::TIMEOUT),
                MAX_TIMEOUT,
                defaults.timeout,
            ),
        }
    }

    /// Reports `secret` unless it is a Standard Webhooks key (`whsec_...`), as a `signature`
    /// other than "abstrakt" needs; `needs` begins the message.
    fn whsec(&mut self, source: &Spanned<SecretSource>, secret: &Secret, key: &str, needs: &str) {
        if let Err(e) = crate::signing::standard_key(secret.expose()) {
            self.error(source.span(), key, format!("{needs} a whsec_ secret: {e}"));
        }
    }

    /// The secret being rotated out and until when it still signs: both given, or neither.
    fn previous_secret(
        &mut self,
        origin: Origin,
        s: &RawSubscription,
        signature: SignatureScheme,
    ) -> Option<PreviousSecret> {
        let key = origin.key(Field::PREVIOUS_SECRET);
        let expires_key = origin.key(Field::PREVIOUS_SECRET_EXPIRES);
        match (&s.previous_secret, &s.previous_secret_expires) {
            (None, None) => None,
            (Some(source), Some(expires)) => {
                let secret = self.secret(source, &key);
                if signature != SignatureScheme::Abstrakt {
                    self.whsec(source, &secret, &key, "needs");
                }
                let Some(expires_ms) = parse_rfc3339_ms(expires.get_ref()) else {
                    self.error(
                        expires.span(),
                        &expires_key,
                        "must be an RFC 3339 date-time like \"2026-12-01T00:00:00Z\"",
                    );
                    return None;
                };
                Some(PreviousSecret { secret, expires_ms })
            }
            (Some(source), None) => {
                self.error(
                    source.span(),
                    &key,
                    "needs previous_secret_expires: until when the old secret still signs",
                );
                None
            }
            (None, Some(expires)) => {
                self.error(
                    expires.span(),
                    &expires_key,
                    "is set without previous_secret",
                );
                None
            }
        }
    }

    /// Its circuit breaker: its own keys, else `[delivery]`'s.
    fn breaker(&mut self, origin: Origin, s: &RawSubscription, d: BreakerPolicy) -> BreakerPolicy {
        BreakerPolicy {
            failures: s.breaker_failures.unwrap_or(d.failures),
            probe_interval: self.duration_or(
                &s.breaker_probe_interval,
                &origin.key(Field::BREAKER_PROBE_INTERVAL),
                MAX_INTERVAL,
                d.probe_interval,
            ),
            disable_after: self.duration_or(
                &s.disable_after,
                &origin.key(Field::DISABLE_AFTER),
                MAX_INTERVAL,
                d.disable_after,
            ),
            disable_after_failures: s.disable_after_failures.unwrap_or(d.disable_after_failures),
        }
    }
}

/// What is wrong with a name or a description, `text`: longer than `max` characters, or a
/// control character (a line break too, unless `lines`).
fn text_problem(text: &str, max: usize, lines: bool) -> Option<String> {
    let length = text.chars().count();
    if length > max {
        return Some(format!(
            "is {length} characters long; at most {max} are allowed"
        ));
    }
    let bad = text
        .chars()
        .find(|c| c.is_control() && !(lines && matches!(c, '\n' | '\r' | '\t')))?;
    Some(if bad == '\n' || bad == '\r' {
        "must be one line (it has a line break)".to_string()
    } else {
        format!("has a control character ({:?}); use printable text", bad)
    })
}

/// Whether `id` is 1 to 64 of `[a-z0-9_-]`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Event types of jobs (`job.<status>`), or `*` for all.
fn job_events(events: &[String]) -> Result<EventFilter, String> {
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

/// Operator events ([`OPERATOR_EVENTS`]) only.
fn operator_events(events: &[String]) -> Result<EventFilter, String> {
    match events
        .iter()
        .find(|e| !OPERATOR_EVENTS.contains(&e.as_str()))
    {
        Some(bad) => Err(format!(
            "{bad:?} is not an operator event: {}",
            OPERATOR_EVENTS.join(", ")
        )),
        None => Ok(EventFilter::Only(events.to_vec())),
    }
}

fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

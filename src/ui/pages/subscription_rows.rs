//! Subscriptions as the pages show them: one row each, with their health, breaker and headers
//! (never a secret), limited to what the visitor may see.

use std::collections::HashSet;

use axum::response::Response;

use super::{owned, truncate, when, CELL_CHARS};
use crate::api::admin::secret_fingerprint;
use crate::api::subscriptions::BREAKER_KEYS;
use crate::config::{BreakerPolicy, CustomHeader, EventFilter, SignatureScheme, Subscription};
use crate::state::Shared;
use crate::store::{StoredSubscription, SubscriptionState};
use crate::ui::{store_down, Scope, Viewer};

/// One subscription as the pages show it (never its secret).
#[derive(Debug, Clone)]
pub struct SubRow {
    pub id: String,
    /// Its name for people (empty: none).
    pub name: String,
    /// What it is for (empty: nothing said).
    pub description: String,
    pub url: String,
    pub events: String,
    pub owner: String,
    pub managed_by: &'static str,
    pub paused: bool,
    pub last_success: String,
    pub last_failure: String,
    pub failures: u32,
    pub last_error: String,
    pub fingerprint: String,
    pub signature: SignatureScheme,
    /// Custom headers as shown: a secret's value is masked.
    pub headers: Vec<(String, String)>,
    /// The plain (not secret) headers as the edit form's lines.
    pub plain_headers: String,
    /// Disabled by its circuit breaker: when and why (empty when it is not).
    pub disabled: String,
    /// Its circuit breaker: closed, open or disabled.
    pub breaker: &'static str,
    /// Its rate limit, as shown ("20/s"; empty: none).
    pub rate_limit: String,
    /// Its circuit breaker's settings in effect (its own, else `[delivery]`'s), labelled.
    pub breaker_settings: Vec<(&'static str, String)>,
}

impl SubRow {
    /// Its signature scheme as people name it: the headers its deliveries carry.
    pub fn signature_label(&self) -> &'static str {
        match self.signature {
            SignatureScheme::Abstrakt => "X-Abstrakt-Signature",
            SignatureScheme::Standard => "Standard Webhooks (webhook-signature)",
            SignatureScheme::Both => "X-Abstrakt-Signature and Standard Webhooks",
        }
    }
}

/// The circuit breaker's keys ([`BREAKER_KEYS`], in that order) as the form and the
/// subscription page name them, and what each means.
pub(super) const BREAKER_LABELS: [(&str, &str); 4] = [
    (
        "Breaker opens after",
        "Failed attempts in a row; while open, one attempt at a time until one succeeds. 0: never.",
    ),
    (
        "Breaker probe interval",
        "While open, the least time from a failed probe to the next, like 30s or 5m.",
    ),
    (
        "Disabled after failing for",
        "From the first failure after the last success, like 5d; a disabled subscription's deliveries wait until an admin enables it. 0s: never.",
    ),
    ("Disabled after", "Failed attempts in a row. 0: never."),
];

/// A breaker policy as the form writes its keys: "5", "30s", "5days", "0".
pub(super) fn breaker_texts(policy: &BreakerPolicy) -> [String; 4] {
    [
        policy.failures.to_string(),
        humantime::format_duration(policy.probe_interval).to_string(),
        humantime::format_duration(policy.disable_after).to_string(),
        policy.disable_after_failures.to_string(),
    ]
}

/// A breaker policy as the subscription page shows it, labelled.
fn breaker_settings(policy: &BreakerPolicy) -> Vec<(&'static str, String)> {
    BREAKER_KEYS
        .iter()
        .zip(BREAKER_LABELS)
        .zip(breaker_texts(policy))
        .map(|((key, (label, _)), text)| {
            let count = key.ends_with("_failures");
            let shown = match text.as_str() {
                "0" | "0s" if *key != "breaker_probe_interval" => "never".to_string(),
                _ if count => format!("{text} failed attempts in a row"),
                _ => text,
            };
            (label, shown)
        })
        .collect()
}

/// Custom headers as a page shows them: a secret one's value masked.
pub(super) fn shown_headers(custom: &[CustomHeader]) -> Vec<(String, String)> {
    custom
        .iter()
        .map(|h| (h.name.to_string(), h.shown("•••••••• (secret)").to_string()))
        .collect()
}

/// The plain (not secret) headers as the edit form's lines, `Name: value`.
fn plain_headers(custom: &[CustomHeader]) -> String {
    custom
        .iter()
        .filter(|h| !h.secret)
        .map(|h| format!("{}: {}", h.name.as_str(), h.value.expose()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn events_text(events: &EventFilter) -> String {
    match events {
        EventFilter::All => "*".to_string(),
        EventFilter::Only(types) => types.join(", "),
    }
}

/// A signature scheme as the form's `signature` field and the config name it.
pub(super) fn signature_name(s: SignatureScheme) -> &'static str {
    match s {
        SignatureScheme::Abstrakt => "abstrakt",
        SignatureScheme::Standard => "standard",
        SignatureScheme::Both => "both",
    }
}

/// Since when and why the circuit breaker disabled a subscription; empty when it did not.
fn disabled_text(state: &SubscriptionState) -> String {
    match (state.disabled_ms, &state.disabled_reason) {
        (Some(at), reason) => format!(
            "since {}: {}",
            when(Some(at)),
            reason.as_deref().unwrap_or("")
        ),
        _ => String::new(),
    }
}

/// The subscriptions `viewer` may see, with their health.
pub(super) async fn rows(shared: &Shared, viewer: &Viewer) -> Result<Vec<SubRow>, Response> {
    let states = shared
        .store
        .subscription_states()
        .await
        .map_err(|_| store_down())?;
    let config = shared.config();
    let stored = shared.settings.stored();
    let mine: Option<HashSet<String>> = match &viewer.scope {
        Scope::Admin => None,
        Scope::Owner(owner) => Some(owned(shared, owner).into_iter().collect()),
    };
    Ok(config
        .subscriptions
        .iter()
        .filter(|s| mine.as_ref().is_none_or(|m| m.contains(&s.id)))
        .map(|s| {
            let st = stored.iter().find(|st| st.id == s.id);
            let state = states.get(&s.id).cloned().unwrap_or_default();
            row(shared, s, st, &state)
        })
        .collect())
}

/// Subscription `s` as a row: `stored` is what the API stored of it (`None`: the config file
/// holds it), `state` its health.
fn row(
    shared: &Shared,
    s: &Subscription,
    stored: Option<&StoredSubscription>,
    state: &SubscriptionState,
) -> SubRow {
    SubRow {
        id: s.id.clone(),
        name: s.name.clone().unwrap_or_default(),
        description: s.description.clone().unwrap_or_default(),
        url: s.url.to_string(),
        events: events_text(&s.events),
        owner: stored.and_then(|st| st.owner.clone()).unwrap_or_default(),
        managed_by: if stored.is_some() { "api" } else { "config" },
        paused: shared.is_paused(&s.id),
        last_success: when(state.last_success_ms),
        last_failure: when(state.last_failure_ms),
        failures: state.consecutive_failures,
        // The error of a failure that is over (a success came since) is no longer news.
        last_error: if state.consecutive_failures == 0 {
            String::new()
        } else {
            truncate(state.last_error.as_deref().unwrap_or(""), CELL_CHARS)
        },
        fingerprint: secret_fingerprint(s.secret.expose()),
        signature: s.signature,
        headers: shown_headers(&s.headers),
        disabled: disabled_text(state),
        breaker: shared.settings.gate(&s.id, shared.clock.now_ms()).name(),
        rate_limit: s.rate_limit.map(|r| format!("{r}/s")).unwrap_or_default(),
        breaker_settings: breaker_settings(&s.breaker),
        plain_headers: plain_headers(&s.headers),
    }
}

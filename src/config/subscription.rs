//! A subscription: what the config file's `[[subscription]]`, the `[operator]` table and the
//! stored ones (made through the API or a portal) become, and how a [`Config`] finds them.

use std::collections::HashSet;

use serde::Deserialize;

use super::diagnostic::{diagnostic, Diagnostic};
use super::raw::RawSubscriptions;
use super::secret::Secret;
use super::validate::{Origin, Validator};
use super::{BreakerPolicy, Config, DeliveryPolicy};

/// The subscription id label of per-request targets (`webhook_url`).
pub const ADHOC_SUBSCRIPTION: &str = "adhoc";

/// The id of the subscription `[operator]` becomes: its deliveries are signed, retried and
/// guarded like every other.
pub const OPERATOR_SUBSCRIPTION: &str = "operator";

/// The operator events hookd sends.
pub const OPERATOR_EVENTS: [&str; 3] = [
    "subscription.disabled",
    "subscription.recovered",
    "delivery.dead",
];

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    /// A name for people (`name`): one line, at most [`MAX_NAME_CHARS`] characters.
    pub name: Option<String>,
    /// What it is for (`description`): at most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: Option<String>,
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
    /// The keys to sign with at `now_ms`: the Abstrakt secret (the previous one while a
    /// rotation is unfinished and unexpired, else the current one), and the Standard Webhooks
    /// keys, newest first, while a previous secret has not expired.
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
        // One signature only: the previous secret keeps signing it until the rotation is
        // finished or expires (`signing::abstrakt_secret`).
        let abstrakt = match self.signature {
            SignatureScheme::Standard => None,
            SignatureScheme::Abstrakt | SignatureScheme::Both => {
                let previous = self
                    .previous_secret
                    .as_ref()
                    .map(|p| (p.secret.expose(), p.expires_ms));
                let secret =
                    crate::signing::abstrakt_secret(self.secret.expose(), previous, now_ms);
                Some(secret.to_string())
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

/// A secret being rotated out: still signing until `expires_ms` or until the rotation is
/// finished (the only signature of `X-Abstrakt-Signature`, beside the new one in Standard
/// Webhooks' header).
#[derive(Debug, Clone)]
pub struct PreviousSecret {
    pub secret: Secret,
    pub expires_ms: u64,
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

/// The longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

impl Subscription {
    /// How people read it: its name with its id, `Nightly builds (sub_01h…)`, or its id alone.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.id),
            None => self.id.clone(),
        }
    }
}

/// Custom headers per subscription, at most.
pub const MAX_CUSTOM_HEADERS: usize = 32;
/// The longest custom header value, in bytes.
pub(super) const MAX_HEADER_VALUE: usize = 4096;

impl Config {
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
        let mut validator = Validator::new(text, FILE, Vec::new());
        let mut ids = taken.clone();
        let subscription = validator.subscription(
            Origin::Stored,
            one,
            &self.delivery,
            &self.targets.guard(),
            &mut ids,
        );
        match (subscription, validator.into_errors()) {
            (Some(s), errors) if errors.is_empty() => Ok(s),
            (_, errors) => Err(errors),
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
}

//! A subscription's settable fields, defined once: each one's key, where it is kept, when it
//! may be set, what its value is and what it does. The validator names its errors' keys from
//! here, and a unit test holds the `[[subscription]]` table ([`super::raw`]) to it; the API's
//! messages, the dashboard's form and the CLI read it too.

/// One settable field of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionField {
    /// Its key: the same in a `[[subscription]]` table, in the API's JSON and in the
    /// dashboard's form.
    pub name: &'static str,
    /// Where it is kept.
    pub home: Home,
    /// When it may be set.
    pub settable: Settable,
    /// What its value is.
    pub value: FieldValue,
    /// What it does, in one line.
    pub about: &'static str,
}

/// Where a subscription's field is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// A key of its `[[subscription]]` table: in the config file, and in the TOML that a
    /// stored subscription is kept as.
    Table,
    /// Beside the table, in the store's record: only subscriptions made through the API or a
    /// portal have it (`owner`).
    Record,
}

/// When a subscription's field may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settable {
    /// When the subscription is made, and by any change afterwards.
    Always,
    /// When it is made only: it names the subscription (`id`).
    AtCreation,
    /// When it is made; afterwards only by a rotation (`POST /v1/subscriptions/{id}/rotate-secret`):
    /// `secret`.
    AtCreationThenByRotation,
    /// Never given to the API: a rotation writes it (the config file may set it):
    /// `previous_secret` and `previous_secret_expires`.
    ByRotation,
}

/// What a subscription's field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue {
    /// A string whose form the field's `about` gives.
    Text,
    /// An http:// or https:// URL.
    Url,
    /// A secret: never shown once stored.
    Secret,
    /// A list of event types.
    EventTypes,
    /// A list of durations, like `["0s", "1m"]`.
    Durations,
    /// A duration, like `"30s"` or `"5d"`.
    Duration,
    /// A whole number.
    Count,
    /// A number with a fraction.
    Rate,
    /// `"abstrakt"`, `"standard"` or `"both"`.
    Signature,
    /// Header names with their values, each plain or a secret.
    Headers,
    /// An RFC 3339 date-time, like `"2026-12-01T00:00:00Z"`.
    DateTime,
}

impl SubscriptionField {
    pub const ID: SubscriptionField = SubscriptionField {
        name: "id",
        home: Home::Table,
        settable: Settable::AtCreation,
        value: FieldValue::Text,
        about: "Its name: [a-z0-9_-]{1,64}, unique; \"adhoc\" and \"operator\" are reserved.",
    };
    pub const NAME: SubscriptionField = SubscriptionField {
        name: "name",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Text,
        about: "A name for people, shown beside its id: one line of at most 100 characters.",
    };
    pub const DESCRIPTION: SubscriptionField = SubscriptionField {
        name: "description",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Text,
        about: "What it is for, in at most 1,000 characters (line breaks allowed).",
    };
    pub const OWNER: SubscriptionField = SubscriptionField {
        name: "owner",
        home: Home::Record,
        settable: Settable::Always,
        value: FieldValue::Text,
        about: "The provider's customer it belongs to: it receives only that owner's events.",
    };
    pub const URL: SubscriptionField = SubscriptionField {
        name: "url",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Url,
        about: "Where its deliveries are POSTed: an http(s) URL that the target guard allows.",
    };
    pub const SECRET: SubscriptionField = SubscriptionField {
        name: "secret",
        home: Home::Table,
        settable: Settable::AtCreationThenByRotation,
        value: FieldValue::Secret,
        about: "Signs its deliveries; Standard Webhooks signatures need a whsec_ secret.",
    };
    pub const PREVIOUS_SECRET: SubscriptionField = SubscriptionField {
        name: "previous_secret",
        home: Home::Table,
        settable: Settable::ByRotation,
        value: FieldValue::Secret,
        about: "The secret before the current one, still signing until previous_secret_expires.",
    };
    pub const PREVIOUS_SECRET_EXPIRES: SubscriptionField = SubscriptionField {
        name: "previous_secret_expires",
        home: Home::Table,
        settable: Settable::ByRotation,
        value: FieldValue::DateTime,
        about: "Until when previous_secret still signs.",
    };
    pub const EVENTS: SubscriptionField = SubscriptionField {
        name: "events",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::EventTypes,
        about: "The event types it receives, like \"job.completed\", or \"*\" for all.",
    };
    pub const RETRY_SCHEDULE: SubscriptionField = SubscriptionField {
        name: "retry_schedule",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Durations,
        about: "Its own delays before each retry; else [delivery]'s.",
    };
    pub const TIMEOUT: SubscriptionField = SubscriptionField {
        name: "timeout",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Duration,
        about: "Its own time limit of one attempt; else [delivery]'s.",
    };
    pub const MAX_IN_FLIGHT: SubscriptionField = SubscriptionField {
        name: "max_in_flight",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Count,
        about: "Attempts to it at once, at most; else [delivery]'s max_in_flight_per_subscription.",
    };
    pub const SIGNATURE: SubscriptionField = SubscriptionField {
        name: "signature",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Signature,
        about: "Which signature headers its deliveries carry: abstrakt (the default), standard or both.",
    };
    pub const HEADERS: SubscriptionField = SubscriptionField {
        name: "headers",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Headers,
        about: "Headers added to each of its deliveries, by name; a secret one is never shown.",
    };
    pub const RATE_LIMIT: SubscriptionField = SubscriptionField {
        name: "rate_limit",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Rate,
        about: "Attempts per second to it, at most, smoothed; no limit when left out.",
    };
    pub const BREAKER_FAILURES: SubscriptionField = SubscriptionField {
        name: "breaker_failures",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Count,
        about:
            "Failed attempts in a row that open its circuit breaker (0: never); else [delivery]'s.",
    };
    pub const BREAKER_PROBE_INTERVAL: SubscriptionField = SubscriptionField {
        name: "breaker_probe_interval",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Duration,
        about: "While its breaker is open, the least time between probes; else [delivery]'s.",
    };
    pub const DISABLE_AFTER: SubscriptionField = SubscriptionField {
        name: "disable_after",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Duration,
        about: "Failing for this long disables it (0s: never); else [delivery]'s.",
    };
    pub const DISABLE_AFTER_FAILURES: SubscriptionField = SubscriptionField {
        name: "disable_after_failures",
        home: Home::Table,
        settable: Settable::Always,
        value: FieldValue::Count,
        about: "This many failed attempts in a row disable it (0: never); else [delivery]'s.",
    };

    /// The circuit breaker's fields: two counts of failed attempts in a row and two durations.
    pub const BREAKER: [SubscriptionField; 4] = [
        SubscriptionField::BREAKER_FAILURES,
        SubscriptionField::BREAKER_PROBE_INTERVAL,
        SubscriptionField::DISABLE_AFTER,
        SubscriptionField::DISABLE_AFTER_FAILURES,
    ];

    /// The circuit breaker's keys, in [`SubscriptionField::BREAKER`]'s order.
    pub const BREAKER_KEYS: [&'static str; 4] = [
        Self::BREAKER[0].name,
        Self::BREAKER[1].name,
        Self::BREAKER[2].name,
        Self::BREAKER[3].name,
    ];

    /// Whether the API takes it when a subscription is made.
    pub fn at_creation(&self) -> bool {
        self.settable != Settable::ByRotation
    }

    /// Whether a change (`PATCH /v1/subscriptions/{id}`, the dashboard's edit form) may set it.
    pub fn changeable(&self) -> bool {
        self.settable == Settable::Always
    }

    /// The field whose key is `name`.
    pub fn named(name: &str) -> Option<&'static SubscriptionField> {
        SUBSCRIPTION_FIELDS.iter().find(|f| f.name == name)
    }
}

/// Every settable field of a subscription, in the order messages and forms list them.
pub const SUBSCRIPTION_FIELDS: &[SubscriptionField] = &[
    SubscriptionField::ID,
    SubscriptionField::NAME,
    SubscriptionField::DESCRIPTION,
    SubscriptionField::OWNER,
    SubscriptionField::URL,
    SubscriptionField::SECRET,
    SubscriptionField::EVENTS,
    SubscriptionField::RETRY_SCHEDULE,
    SubscriptionField::TIMEOUT,
    SubscriptionField::MAX_IN_FLIGHT,
    SubscriptionField::SIGNATURE,
    SubscriptionField::HEADERS,
    SubscriptionField::RATE_LIMIT,
    SubscriptionField::BREAKER_FAILURES,
    SubscriptionField::BREAKER_PROBE_INTERVAL,
    SubscriptionField::DISABLE_AFTER,
    SubscriptionField::DISABLE_AFTER_FAILURES,
    SubscriptionField::PREVIOUS_SECRET,
    SubscriptionField::PREVIOUS_SECRET_EXPIRES,
];

/// The names of `fields`, comma-separated: for the messages that list what may be given, like
/// `field_names(SUBSCRIPTION_FIELDS.iter().filter(|f| f.changeable()))`.
pub fn field_names<'a>(fields: impl IntoIterator<Item = &'a SubscriptionField>) -> String {
    let names: Vec<&str> = fields.into_iter().map(|f| f.name).collect();
    names.join(", ")
}

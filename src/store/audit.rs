//! The audit log's records: who changed what, and when ([`AuditEntry`]), and which of them a
//! listing wants ([`AuditFilter`]). Both engines keep them beside the deliveries
//! ([`AdminStore::record_audit`](crate::store::AdminStore::record_audit)), ordered by time:
//! an id is `aud_` + a ULID whose time part is the entry's time.

use serde::{Deserialize, Serialize};

/// One change made through the API, the dashboard or a portal link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `aud_<ULID>`: sorts by time ([`new_audit_id`]).
    pub id: String,
    pub at_ms: u64,
    /// Who: an API token's name, `dashboard` (or `dashboard:<token name>`), `portal:<owner>`.
    pub actor: String,
    /// What was done: an [`Action`]'s name (`created`, `paused`, ...).
    pub action: String,
    /// The kind of object: `subscription`, `delivery`, `owner`, `portal_link`.
    pub kind: String,
    /// The object's id (a subscription's, a delivery's, an owner's); empty for a bulk action
    /// across subscriptions.
    pub object: String,
    /// The subscription the action concerns, if any.
    #[serde(default)]
    pub subscription: Option<String>,
    /// The owner of the object, if it has one.
    #[serde(default)]
    pub owner: Option<String>,
    /// A short note: which fields changed, how many deliveries; never a secret.
    #[serde(default)]
    pub detail: String,
}

/// Which audit entries a listing wants. Times are Unix milliseconds: `since` inclusive,
/// `until` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub subscription: Option<String>,
    pub owner: Option<String>,
    pub actor: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.subscription
            .as_ref()
            .is_none_or(|s| e.subscription.as_ref() == Some(s))
            && self
                .owner
                .as_ref()
                .is_none_or(|o| e.owner.as_ref() == Some(o))
            && self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.since_ms.is_none_or(|t| e.at_ms >= t)
            && self.until_ms.is_none_or(|t| e.at_ms < t)
    }
}

/// What was done: the `action` of an entry, by its wire name ([`Action::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
    Paused,
    Resumed,
    Enabled,
    /// By hookd: the circuit breaker disabled the subscription.
    Disabled,
    Rotated,
    RotationFinished,
    TestSent,
    Retried,
    Resent,
    PortalLinkCreated,
    OwnerErased,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::Created,
        Action::Updated,
        Action::Deleted,
        Action::Paused,
        Action::Resumed,
        Action::Enabled,
        Action::Disabled,
        Action::Rotated,
        Action::RotationFinished,
        Action::TestSent,
        Action::Retried,
        Action::Resent,
        Action::PortalLinkCreated,
        Action::OwnerErased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Paused => "paused",
            Action::Resumed => "resumed",
            Action::Enabled => "enabled",
            Action::Disabled => "disabled",
            Action::Rotated => "secret_rotated",
            Action::RotationFinished => "rotation_finished",
            Action::TestSent => "test_sent",
            Action::Retried => "retried",
            Action::Resent => "resent",
            Action::PortalLinkCreated => "portal_link_created",
            Action::OwnerErased => "owner_erased",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// A new entry id for `now_ms`: ids of one millisecond still increase (the delivery ids'
/// sequence).
pub fn new_audit_id(now_ms: u64) -> String {
    format!("aud_{}", super::new_delivery_id(now_ms))
}

/// Parses `aud_<ULID>`; `None` for anything else.
pub fn parse_audit_id(id: &str) -> Option<ulid::Ulid> {
    ulid::Ulid::from_string(id.strip_prefix("aud_")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64, actor: &str, owner: Option<&str>) -> AuditEntry {
        AuditEntry {
            id: new_audit_id(at_ms),
            at_ms,
            actor: actor.into(),
            action: "paused".into(),
            kind: "subscription".into(),
            object: "s".into(),
            subscription: Some("s".into()),
            owner: owner.map(Into::into),
            detail: String::new(),
        }
    }

    #[test]
    fn actions_have_one_name_each_and_parse_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        let names: std::collections::HashSet<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len());
        assert_eq!(Action::parse("exploded"), None);
    }

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let (a, b) = (new_audit_id(1_000), new_audit_id(2_000));
        assert!(a < b);
        assert_eq!(parse_audit_id(&a).map(|u| u.timestamp_ms()), Some(1_000));
        assert_eq!(parse_audit_id("dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV"), None);
    }

    #[test]
    fn the_filter_takes_each_condition() {
        let e = entry(5_000, "ci", Some("acme"));
        assert!(AuditFilter::default().matches(&e));
        let f = |f: AuditFilter| f.matches(&e);
        assert!(f(AuditFilter {
            owner: Some("acme".into()),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            owner: Some("other".into()),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            actor: Some("dashboard".into()),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            subscription: Some("s".into()),
            ..Default::default()
        }));
        assert!(f(AuditFilter {
            since_ms: Some(5_000),
            until_ms: Some(5_001),
            ..Default::default()
        }));
        assert!(!f(AuditFilter {
            until_ms: Some(5_000),
            ..Default::default()
        }));
    }
}

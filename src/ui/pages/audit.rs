//! The Audit page: who changed what, and when, newest first (`GET /v1/audit`'s entries). An
//! operator sees every entry and filters them; a portal sees its owner's entries about its
//! own subscriptions (and its links), in its words: "You" or the provider, never a token's
//! name, and what happened in plain words.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::deliveries::{nonempty, parse_when};
use super::owned;
use crate::api::audit::{self, Action, Actor, Change};
use crate::state::Shared;
use crate::store::audit::parse_audit_id;
use crate::store::{AuditEntry, AuditFilter};
use crate::ui::{html, store_down, Nav, Scope, Viewer};

const PAGE: usize = 50;

/// What a notice adds when a change was made but its audit entry was not kept.
const NOT_KEPT: &str =
    " (It is not in the audit log: the store could not keep the entry; see hookd's log.)";

/// [`NOT_KEPT`] if an API answer's body says its audit entry was not kept, else nothing.
pub fn note(body: &Value) -> &'static str {
    if body.get("audit").is_some() {
        NOT_KEPT
    } else {
        ""
    }
}

/// Records that `viewer` gave `n` of subscription `id`'s deliveries (or, with `None`, of the
/// deliveries a filter matched) an attempt now; what a notice adds if that fails.
pub async fn resent(
    shared: &Shared,
    viewer: &Viewer,
    id: Option<&str>,
    n: usize,
    what: &str,
) -> &'static str {
    let owner = id
        .and_then(|id| audit::owner_of(shared, id))
        .or(match &viewer.scope {
            Scope::Owner(owner) => Some(owner.clone()),
            Scope::Admin => None,
        });
    let change = Change {
        action: Action::Resent,
        kind: "deliveries",
        object: id.unwrap_or_default().to_string(),
        subscription: id.map(str::to_string),
        owner,
        detail: format!("{n} {what}"),
    };
    match audit::record(shared, &viewer.actor, change).await {
        Ok(()) => "",
        Err(_) => NOT_KEPT,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    subscription: Option<String>,
    owner: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
}

/// One entry as the page shows it.
struct Row {
    at: String,
    who: String,
    what: String,
    object: String,
    owner: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    rows: Vec<Row>,
    subscription: String,
    owner: String,
    actor: String,
    since: String,
    until: String,
    problem: Option<String>,
    /// The query of the next (older) page.
    next: Option<String>,
}

/// What happened, in a customer's words.
fn customer_words(e: &AuditEntry) -> String {
    let what = match Action::parse(&e.action) {
        Some(Action::Created) => "Subscription created",
        Some(Action::Updated) => "Settings changed",
        Some(Action::Deleted) => "Subscription deleted",
        Some(Action::Paused) => "Deliveries paused",
        Some(Action::Resumed) => "Deliveries resumed",
        Some(Action::Enabled) => "Turned back on",
        Some(Action::Disabled) => "Turned off after failing deliveries",
        Some(Action::Rotated) => "New signing secret made",
        Some(Action::RotationFinished) => "Old signing secret retired",
        Some(Action::TestSent) => "Test event sent",
        Some(Action::Retried) | Some(Action::Resent) => "Deliveries sent again",
        Some(Action::PortalLinkCreated) => "Link to this page made",
        Some(Action::OwnerErased) => "Your data erased",
        None => "Changed",
    };
    what.to_string()
}

fn row(e: AuditEntry, viewer: &Viewer) -> Row {
    let at = crate::event::rfc3339_millis(e.at_ms);
    match &viewer.scope {
        Scope::Admin => Row {
            at,
            who: e.actor,
            what: e.action.replace('_', " "),
            object: if e.object.is_empty() {
                e.kind
            } else {
                format!("{} {}", e.kind.replace('_', " "), e.object)
            },
            owner: e.owner.unwrap_or_default(),
            detail: e.detail,
        },
        Scope::Owner(owner) => Row {
            at,
            who: if Actor::portal_owner(&e.actor) == Some(owner.as_str()) {
                "You".to_string()
            } else {
                viewer.title.clone()
            },
            what: customer_words(&e),
            object: e.subscription.clone().unwrap_or_default(),
            owner: String::new(),
            detail: String::new(),
        },
    }
}

/// The filter the query asks for, or the sentence saying what is wrong with it. A portal's is
/// its owner's, whatever the query says.
fn filter_of(viewer: &Viewer, q: &AuditQuery) -> Result<AuditFilter, String> {
    let time = |field: &str, v: &Option<String>| match nonempty(v) {
        None => Ok(None),
        Some(t) => parse_when(t)
            .map(Some)
            .ok_or_else(|| format!("{field} must be a date and time like 2026-11-30T13:05.")),
    };
    let mut filter = AuditFilter {
        subscription: nonempty(&q.subscription).map(str::to_string),
        owner: nonempty(&q.owner).map(str::to_string),
        actor: nonempty(&q.actor).map(str::to_string),
        since_ms: time("Since", &q.since)?,
        until_ms: time("Until", &q.until)?,
    };
    if let Scope::Owner(owner) = &viewer.scope {
        filter.owner = Some(owner.clone());
        filter.actor = None;
    }
    if let Some(c) = nonempty(&q.cursor) {
        if parse_audit_id(c).is_none() {
            return Err("That page link is not valid: start again from the first page.".into());
        }
    }
    Ok(filter)
}

/// `GET /ui/audit` and `/ui/portal/<token>/audit`.
pub async fn audit_page(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Response {
    let mut page = AuditPage {
        nav: viewer.nav("audit", None),
        rows: Vec::new(),
        subscription: q.subscription.clone().unwrap_or_default(),
        owner: q.owner.clone().unwrap_or_default(),
        actor: q.actor.clone().unwrap_or_default(),
        since: q.since.clone().unwrap_or_default(),
        until: q.until.clone().unwrap_or_default(),
        problem: None,
        next: None,
    };
    let filter = match filter_of(&viewer, &q) {
        Ok(f) => f,
        Err(problem) => {
            page.problem = Some(problem);
            return html(StatusCode::BAD_REQUEST, &page);
        }
    };
    let cursor = nonempty(&q.cursor);
    let Ok((entries, next)) = shared.store.list_audit(&filter, cursor, PAGE).await else {
        return store_down();
    };
    // A portal sees the entries of the subscriptions its owner has now, and its own links:
    // never an id that is (or became) another owner's.
    let mine = match &viewer.scope {
        Scope::Owner(owner) => Some(owned(&shared, owner)),
        Scope::Admin => None,
    };
    page.rows = entries
        .into_iter()
        .filter(|e| match (&mine, &e.subscription) {
            (Some(mine), Some(s)) => mine.contains(s),
            _ => true,
        })
        .map(|e| row(e, &viewer))
        .collect();
    page.next = next.map(|cursor| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("subscription", &page.subscription),
            ("owner", &page.owner),
            ("actor", &page.actor),
            ("since", &page.since),
            ("until", &page.until),
        ] {
            if !v.is_empty() && viewer.scope == Scope::Admin {
                query.append_pair(k, v);
            }
        }
        query.append_pair("cursor", &cursor).finish()
    });
    html(StatusCode::OK, &page)
}

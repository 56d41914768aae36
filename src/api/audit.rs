//! The audit log's API side: who acts ([`Actor`]), what they did ([`Action`]), recording an
//! entry after a change ([`after`], [`record`]), and `GET /v1/audit`.
//!
//! An entry is written after its change succeeded. If the store cannot keep it, the change
//! stands (undoing it could fail too) and its answer says so: the header
//! `Hookd-Audit: not-recorded`, and in a JSON object body an `"audit"` field with the reason;
//! hookd's log has the error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{parse_time, DEFAULT_PAGE, MAX_PAGE};
use super::error;
use crate::event::rfc3339_millis;
use crate::state::Shared;
pub use crate::store::audit::Action;
use crate::store::audit::{new_audit_id, parse_audit_id};
use crate::store::{AuditEntry, AuditFilter};

/// The header that says a change's audit entry was not kept.
pub const NOT_RECORDED: &str = "hookd-audit";

/// Who made a change, as the audit log names them: an API token's name, `dashboard` (or
/// `dashboard:<token name>`), `portal:<owner>`; `anonymous` on an API without tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    pub fn token(name: &str) -> Actor {
        Actor(name.to_string())
    }

    pub fn dashboard(token: Option<&str>) -> Actor {
        Actor(token.map_or_else(|| "dashboard".to_string(), |t| format!("dashboard:{t}")))
    }

    pub fn portal(owner: &str) -> Actor {
        Actor(format!("portal:{owner}"))
    }

    /// The owner of a portal actor.
    pub fn portal_owner(actor: &str) -> Option<&str> {
        actor.strip_prefix("portal:")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Actor, Self::Rejection> {
        // The token check puts the token's actor there; an open API has none.
        Ok(parts
            .extensions
            .get::<Actor>()
            .cloned()
            .unwrap_or_else(|| Actor("anonymous".to_string())))
    }
}

/// An entry before it has an id, a time and an actor.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub kind: &'static str,
    pub object: String,
    pub subscription: Option<String>,
    pub owner: Option<String>,
    pub detail: String,
}

impl Change {
    /// A change to subscription `id`, of `owner`.
    pub fn subscription(action: Action, id: &str, owner: Option<String>) -> Change {
        Change {
            action,
            kind: "subscription",
            object: id.to_string(),
            subscription: Some(id.to_string()),
            owner,
            detail: String::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Change {
        self.detail = detail.into();
        self
    }
}

/// The owner of subscription `id`, as the running config has it.
pub fn owner_of(shared: &Shared, id: &str) -> Option<String> {
    shared
        .config()
        .subscription(id)
        .and_then(|s| s.owner.clone())
}

/// Writes the entry of `change` by `actor`, now. Logs and returns the error if it fails.
pub async fn record(shared: &Shared, actor: &Actor, change: Change) -> Result<(), String> {
    let now = shared.clock.now_ms();
    let entry = AuditEntry {
        id: new_audit_id(now),
        at_ms: now,
        actor: actor.0.clone(),
        action: change.action.as_str().to_string(),
        kind: change.kind.to_string(),
        object: change.object,
        subscription: change.subscription,
        owner: change.owner,
        detail: change.detail,
    };
    shared.store.record_audit(entry).await.map_err(|e| {
        tracing::error!(error = %e, action = change.action.as_str(), "cannot record an audit log entry; the change stands");
        "the store could not keep the audit log entry; the change was made".to_string()
    })
}

/// A change's answer, with its audit entry recorded if the answer is a success: `change`
/// reads what it needs from the answer's JSON body (`Value::Null` when it has none) and
/// returns `None` to record nothing.
pub async fn after(
    shared: &Shared,
    actor: &Actor,
    response: Response,
    change: impl FnOnce(&Value) -> Option<Change>,
) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer could not be read",
        );
    };
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let Some(change) = change(&value) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    match record(shared, actor, change).await {
        Ok(()) => Response::from_parts(parts, Body::from(bytes)),
        Err(reason) => {
            parts
                .headers
                .insert(NOT_RECORDED, HeaderValue::from_static("not-recorded"));
            let body = match &mut value {
                Value::Object(map) => {
                    map.insert(
                        "audit".into(),
                        Value::String(format!("not recorded: {reason}")),
                    );
                    Body::from(value.to_string())
                }
                _ => Body::from(bytes),
            };
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, body)
        }
    }
}

/// Whether a change's answer says its audit entry was not kept ([`after`]).
pub fn not_recorded(response: &Response) -> bool {
    response.headers().contains_key(NOT_RECORDED)
}

pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339_millis(e.at_ms),
        "actor": e.actor,
        "action": e.action,
        "kind": e.kind,
        "object": e.object,
        "subscription": e.subscription,
        "owner": e.owner,
        "detail": e.detail,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    subscription: Option<String>,
    owner: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The filter, page size and cursor of an audit query; the error is the answer to send.
fn parse_query(q: AuditQuery) -> Result<(AuditFilter, usize, Option<String>), Box<Response>> {
    let since_ms = q
        .since
        .as_deref()
        .map(|t| parse_time("since", t))
        .transpose()?;
    let until_ms = q
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_PAGE}"),
        )));
    }
    if let Some(c) = &q.cursor {
        if parse_audit_id(c).is_none() {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "cursor must be the next_cursor of an earlier page (aud_...)",
            )));
        }
    }
    let empty = |field: &str, v: &Option<String>| {
        v.as_ref().is_some_and(|v| v.is_empty()).then(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("{field} is empty: leave it out to match any"),
            ))
        })
    };
    for (field, v) in [
        ("subscription", &q.subscription),
        ("owner", &q.owner),
        ("actor", &q.actor),
    ] {
        if let Some(refusal) = empty(field, v) {
            return Err(refusal);
        }
    }
    let filter = AuditFilter {
        subscription: q.subscription,
        owner: q.owner,
        actor: q.actor,
        since_ms,
        until_ms,
    };
    Ok((filter, limit, q.cursor))
}

/// `GET /v1/audit?subscription=&owner=&actor=&since=&until=&limit=&cursor=`: newest first.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad query: {}", e.body_text()),
            )
        }
    };
    let (filter, limit, cursor) = match parse_query(q) {
        Ok(parsed) => parsed,
        Err(refusal) => return *refusal,
    };
    match shared
        .store
        .list_audit(&filter, cursor.as_deref(), limit)
        .await
    {
        Ok((page, next)) => {
            let items: Vec<Value> = page.iter().map(entry_json).collect();
            Json(json!({ "entries": items, "next_cursor": next })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "audit API: store error");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not answer; see hookd's log",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_named_as_the_log_shows_them() {
        assert_eq!(Actor::dashboard(None).0, "dashboard");
        assert_eq!(Actor::dashboard(Some("ops")).0, "dashboard:ops");
        assert_eq!(Actor::portal("acme").0, "portal:acme");
        assert_eq!(Actor::portal_owner("portal:acme"), Some("acme"));
        assert_eq!(Actor::portal_owner("ci"), None);
    }

    #[tokio::test]
    async fn bad_filters_are_refused_naming_the_field() {
        let q = serde_urlencoded_query;
        for (query, field) in [
            ("since=yesterday", "since"),
            ("until=2026-13-01", "until"),
            ("limit=0", "limit"),
            ("cursor=dlv_x", "cursor"),
            ("owner=", "owner"),
            ("actor=", "actor"),
        ] {
            let refusal = parse_query(q(query)).expect_err(query);
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST, "{query}");
            let body = axum::body::to_bytes(refusal.into_body(), 10_000)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(field), "{query}: {text}");
        }
        let (filter, limit, _) = parse_query(q("owner=acme&since=2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(filter.owner.as_deref(), Some("acme"));
        assert_eq!(filter.since_ms, Some(1_767_225_600_000));
        assert_eq!(limit, DEFAULT_PAGE);
    }

    fn serde_urlencoded_query(s: &str) -> AuditQuery {
        let uri: axum::http::Uri = format!("/v1/audit?{s}").parse().unwrap();
        Query::<AuditQuery>::try_from_uri(&uri).unwrap().0
    }
}

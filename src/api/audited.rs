//! The API's changes, each with its audit log entry: every mutating route of the admin API
//! (and the dashboard, which calls these) goes through one of these, which runs the change's
//! own handler and records what it did ([`audit::after`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;

use super::audit::{self, owner_of, Action, Actor, Change};
use super::{admin, owners, portal, subscriptions, JsonBody};
use crate::state::Shared;

/// The fields a JSON body gives, by name (never their values), sorted: `url, events`.
fn given_fields(body: &[u8]) -> String {
    let mut names: Vec<String> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    names.sort();
    names.join(", ")
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `POST /v1/subscriptions`.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = given_fields(&body);
    let r = subscriptions::create(State(shared.clone()), JsonBody(body)).await;
    audit::after(&shared, &actor, r, |v| {
        let id = text(v, "id")?;
        Some(Change::subscription(Action::Created, &id, text(v, "owner")).detail(fields))
    })
    .await
}

/// `PATCH /v1/subscriptions/{id}`.
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = given_fields(&body);
    let r = subscriptions::update(State(shared.clone()), Path(id.clone()), JsonBody(body)).await;
    audit::after(&shared, &actor, r, |v| {
        let change = Change::subscription(Action::Updated, &id, text(v, "owner"));
        Some(change.detail(format!("changed: {fields}")))
    })
    .await
}

/// `DELETE /v1/subscriptions/{id}`.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
) -> Response {
    let owner = owner_of(&shared, &id);
    let r = subscriptions::delete(State(shared.clone()), Path(id.clone())).await;
    audit::after(&shared, &actor, r, |_| {
        Some(Change::subscription(Action::Deleted, &id, owner))
    })
    .await
}

/// `POST /v1/subscriptions/{id}/rotate-secret`: the entry says until when the previous
/// secret signs, never a secret.
pub async fn rotate_secret(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
    JsonBody(body): JsonBody,
) -> Response {
    let r =
        subscriptions::rotate_secret(State(shared.clone()), Path(id.clone()), JsonBody(body)).await;
    audit::after(&shared, &actor, r, |v| {
        let until = text(v, "previous_secret_expires").unwrap_or_default();
        let change = Change::subscription(Action::Rotated, &id, text(v, "owner"));
        Some(change.detail(format!("the previous secret signs until {until}")))
    })
    .await
}

/// `POST /v1/subscriptions/{id}/finish-rotation`.
pub async fn finish_rotation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
) -> Response {
    let r = subscriptions::finish_rotation(State(shared.clone()), Path(id.clone())).await;
    audit::after(&shared, &actor, r, |v| {
        let change = Change::subscription(Action::RotationFinished, &id, text(v, "owner"));
        Some(change.detail("the previous secret no longer signs"))
    })
    .await
}

/// `POST /v1/subscriptions/{id}/test`.
pub async fn send_test(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
    body: JsonBody,
) -> Response {
    let owner = owner_of(&shared, &id);
    let r = subscriptions::send_test(State(shared.clone()), Path(id.clone()), body).await;
    audit::after(&shared, &actor, r, |v| {
        let delivery = text(v, "delivery_id").unwrap_or_default();
        let event_type = text(v, "event_type").unwrap_or_else(|| "job.test".to_string());
        let change = Change::subscription(Action::TestSent, &id, owner);
        Some(change.detail(format!("{event_type}, delivery {delivery}")))
    })
    .await
}

/// `POST /v1/subscriptions/{id}/pause`.
pub async fn pause(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
) -> Response {
    let owner = owner_of(&shared, &id);
    let r = admin::pause(State(shared.clone()), Path(id.clone())).await;
    audit::after(&shared, &actor, r, |_| {
        Some(Change::subscription(Action::Paused, &id, owner))
    })
    .await
}

/// `POST /v1/subscriptions/{id}/resume`.
pub async fn resume(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
) -> Response {
    let owner = owner_of(&shared, &id);
    let r = admin::resume(State(shared.clone()), Path(id.clone())).await;
    audit::after(&shared, &actor, r, |_| {
        Some(Change::subscription(Action::Resumed, &id, owner))
    })
    .await
}

/// `POST /v1/subscriptions/{id}/enable`.
pub async fn enable(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
) -> Response {
    let owner = owner_of(&shared, &id);
    let was_disabled = shared.settings.state(&id).disabled_ms.is_some();
    let r = admin::enable(State(shared.clone()), Path(id.clone())).await;
    audit::after(&shared, &actor, r, |_| {
        let change = Change::subscription(Action::Enabled, &id, owner);
        Some(if was_disabled {
            change
        } else {
            change.detail("it was not disabled: nothing changed")
        })
    })
    .await
}

/// `POST /v1/deliveries/{id}/retry`.
pub async fn retry_delivery(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    actor: Actor,
) -> Response {
    let delivery = shared.store.delivery(&id).await.ok().flatten();
    let r = admin::retry_delivery(State(shared.clone()), Path(id.clone())).await;
    audit::after(&shared, &actor, r, |v| {
        let was = text(v, "previous_state").unwrap_or_default();
        Some(Change {
            action: Action::Retried,
            kind: "delivery",
            object: id.clone(),
            subscription: delivery.as_ref().map(|d| d.subscription.clone()),
            owner: delivery.and_then(|d| d.owner),
            detail: format!("1 delivery, {was} before"),
        })
    })
    .await
}

/// `POST /v1/deliveries/retry`.
pub async fn retry_dead(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    JsonBody(body): JsonBody,
) -> Response {
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (subscription, since) = (text(&asked, "subscription"), text(&asked, "since"));
    let r = admin::retry_dead(State(shared.clone()), JsonBody(body)).await;
    audit::after(&shared, &actor, r, |v| {
        // A dry run changes nothing: nothing to record.
        if v.get("dry_run") == Some(&Value::Bool(true)) {
            return None;
        }
        let n = v.get("requeued").and_then(Value::as_u64).unwrap_or(0);
        let detail = match v.get("retrying").and_then(Value::as_u64) {
            Some(retrying) => format!(
                "{n} failed deliveries since {} ({} dead, {retrying} still retrying)",
                since.unwrap_or_default(),
                n.saturating_sub(retrying)
            ),
            None => format!("{n} dead deliveries since {}", since.unwrap_or_default()),
        };
        Some(Change {
            action: Action::Retried,
            kind: "deliveries",
            object: subscription.clone().unwrap_or_default(),
            owner: subscription.as_deref().and_then(|s| owner_of(&shared, s)),
            subscription,
            detail,
        })
    })
    .await
}

/// `POST /v1/portal-links`.
pub async fn portal_link(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let r = portal::create(State(shared.clone()), headers, JsonBody(body)).await;
    audit::after(&shared, &actor, r, |v| {
        let owner = text(v, "owner")?;
        Some(Change {
            action: Action::PortalLinkCreated,
            kind: "portal_link",
            object: owner.clone(),
            subscription: None,
            owner: Some(owner),
            detail: format!("expires {}", text(v, "expires_at").unwrap_or_default()),
        })
    })
    .await
}

/// `DELETE /v1/owners/{owner}`: the owner's entries go with the rest of its data, and the
/// erasure's own entry has the counts removed, not the owner's id (as hookd's log line).
pub async fn erase_owner(
    State(shared): State<Arc<Shared>>,
    Path(owner): Path<String>,
    actor: Actor,
) -> Response {
    let r = owners::erase(State(shared.clone()), Path(owner.clone())).await;
    if r.status().is_success() {
        if let Err(e) = shared.store.erase_audit_owner(&owner).await {
            tracing::error!(error = %e, "erasure: cannot remove the owner's audit log entries");
            return super::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the owner's data was erased, but not its audit log entries: retry (erasing is safe to repeat)",
            );
        }
    }
    audit::after(&shared, &actor, r, |v| {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(Change {
            action: Action::OwnerErased,
            kind: "owner",
            object: String::new(),
            subscription: None,
            owner: None,
            detail: format!(
                "{} subscriptions, {} events, {} deliveries removed",
                n("subscriptions"),
                n("events"),
                n("deliveries")
            ),
        })
    })
    .await
}

//! What the scheduler asks of the daemon off the attempt path ([`Control`]): a subscription its
//! breaker disabled is disabled durably, and the operator is told, by operator events.
//!
//! Operator events (`subscription.disabled`, `subscription.recovered`, `delivery.dead`) are
//! events like any other, stored durably and delivered to the subscription `operator` that
//! `[operator]` becomes: the same signing, retries, target guard and history as every delivery.
//! The operator's own dead deliveries raise no event (that could loop).

use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::config::{ADHOC_SUBSCRIPTION, OPERATOR_SUBSCRIPTION};
use crate::event::{rfc3339_millis, NewEvent};
use crate::settings::Control;
use crate::state::Shared;
use crate::store::audit::{new_audit_id, Action};
use crate::store::{AuditEntry, Target};

/// The audit log's entry of a subscription its breaker disabled: by `hookd`, with why.
async fn record_disabled(shared: &Shared, subscription: &str, reason: &str, now: u64) {
    let entry = AuditEntry {
        id: new_audit_id(now),
        at_ms: now,
        actor: "hookd".to_string(),
        action: Action::Disabled.as_str().to_string(),
        kind: "subscription".to_string(),
        object: subscription.to_string(),
        subscription: Some(subscription.to_string()),
        owner: shared
            .config()
            .subscription(subscription)
            .and_then(|s| s.owner.clone()),
        detail: reason.to_string(),
    };
    if let Err(e) = shared.store.record_audit(entry).await {
        tracing::error!(subscription, error = %e, "cannot record in the audit log that the subscription is disabled");
    }
}

/// Serves the scheduler's requests until `stop`, then those already sent.
pub async fn serve(
    shared: Arc<Shared>,
    mut requests: UnboundedReceiver<Control>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => handle(&shared, request).await,
                None => return,
            },
            () = stop.cancelled() => {
                while let Ok(request) = requests.try_recv() {
                    handle(&shared, request).await;
                }
                return;
            }
        }
    }
}

async fn handle(shared: &Shared, request: Control) {
    let now = shared.clock.now_ms();
    match request {
        Control::Disabled {
            subscription,
            reason,
        } => {
            if let Err(e) = shared
                .set_disabled(&subscription, Some(reason.clone()))
                .await
            {
                // In effect on this node already; the store keeps it at the next outcome's
                // fold at the latest, or the next failure disables it again.
                tracing::error!(subscription = subscription.as_str(), error = %e, "cannot store that the subscription is disabled");
            }
            record_disabled(shared, &subscription, &reason, now).await;
            emit(
                shared,
                "subscription.disabled",
                json!({
                    "subscription": subscription,
                    "reason": reason,
                    "disabled_at": rfc3339_millis(now),
                }),
            )
            .await;
        }
        Control::Recovered { subscription } => {
            // The closed breaker's limits are in force, but the scheduler may be asleep: on an
            // engine that hands each freed slot on (PostgreSQL) no slot comes free to wake it,
            // and the backlog would go one at a time until its next turn. A turn now claims
            // at the subscription's full `max_in_flight`.
            shared.wake.notify_one();
            emit(
                shared,
                "subscription.recovered",
                json!({ "subscription": subscription, "recovered_at": rfc3339_millis(now) }),
            )
            .await;
        }
        Control::Dead {
            delivery,
            attempts,
            error,
        } => {
            if delivery.subscription == OPERATOR_SUBSCRIPTION {
                return;
            }
            let subscription = if delivery.adhoc.is_some() {
                ADHOC_SUBSCRIPTION.to_string()
            } else {
                delivery.subscription.clone()
            };
            emit(
                shared,
                "delivery.dead",
                json!({
                    "delivery_id": delivery.id,
                    "event_id": delivery.event_id,
                    "event_type": delivery.event_type,
                    "subscription": subscription,
                    "attempts": attempts,
                    "last_error": error,
                    "dead_at": rfc3339_millis(now),
                }),
            )
            .await;
        }
    }
}

/// Stores operator event `event_type` for the `operator` subscription, if there is one and it
/// wants that type.
async fn emit(shared: &Shared, event_type: &str, data: Value) {
    let config = shared.config();
    let Some(operator) = config.subscription(OPERATOR_SUBSCRIPTION) else {
        return;
    };
    if !operator.events.matches(event_type) {
        return;
    }
    let now = shared.clock.now_ms();
    let id = format!(
        "op_{}",
        ulid::Ulid::from_parts(now, rand::random())
            .to_string()
            .to_ascii_lowercase()
    );
    let body = json!({
        "id": id,
        "type": event_type,
        "created_at": rfc3339_millis(now),
        "data": data,
    })
    .to_string()
    .into_bytes();
    let event = NewEvent {
        request_id: id,
        status: event_type.rsplit('.').next().unwrap_or("event").to_string(),
        event_type: event_type.to_string(),
        fingerprint: Sha256::digest(&body).into(),
        body,
        adhoc: None,
        owner: None,
    };
    let target = Target {
        subscription: OPERATOR_SUBSCRIPTION.to_string(),
        bucket: OPERATOR_SUBSCRIPTION.to_string(),
        adhoc: None,
    };
    match shared.store.ingest(vec![(event, vec![target])], now).await {
        Ok(_) => {
            shared.wake.notify_one();
            tracing::info!(event_type, "operator event queued");
        }
        Err(e) => tracing::error!(event_type, error = %e, "cannot store an operator event"),
    }
}

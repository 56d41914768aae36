//! `DELETE /v1/owners/{owner}`: erases one owner (the provider's customer) for a request to
//! forget them: their subscriptions, their events and every delivery and attempt of those
//! (docs/operations.md, "Erasing a customer").

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error;
use crate::event::{valid_owner, OWNER_RULE};
use crate::state::Shared;

/// Beyond the longest attempt timeout: how long an erasure waits for the attempts of what it
/// removed that were already sending.
const SENDING_MARGIN: Duration = Duration::from_secs(5);

/// Erases `owner` and answers with what was removed:
/// `200 {"owner", "subscriptions", "events", "deliveries", "attempts"}`. A second call finds
/// nothing (zeros). The answer comes once no removed delivery can still be sent by this node.
pub async fn erase(State(shared): State<Arc<Shared>>, Path(owner): Path<String>) -> Response {
    if !valid_owner(&owner) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": format!("owner must be {OWNER_RULE}"), "field": "owner" })),
        )
            .into_response();
    }
    let erased = {
        let _turn = shared.writes.lock().await;
        let erased = match shared.store.erase_owner(&owner).await {
            Ok(erased) => erased,
            Err(e) => {
                tracing::error!(error = %e, "cannot erase an owner");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store could not erase the owner; nothing or part of it was removed, retry (erasing is safe to repeat)",
                );
            }
        };
        let mut stored = shared.settings.stored();
        stored.retain(|s| s.owner.as_deref() != Some(owner.as_str()));
        shared.settings.set_stored(stored);
        shared.apply_limits();
        erased
    };
    // The paused and health records of the removed subscriptions leave the settings too.
    if let Err(e) = shared.sync_from_store().await {
        tracing::warn!(error = %e, "erasure: cannot read the store back; the next sync will");
    }
    let config = shared.config();
    let longest = config
        .subscriptions
        .iter()
        .map(|s| s.policy.timeout)
        .chain(std::iter::once(config.delivery.policy.timeout))
        .max()
        .unwrap_or_default();
    let still = shared
        .sending
        .cancel_and_wait(&erased.unfinished, longest + SENDING_MARGIN)
        .await;
    if still > 0 {
        tracing::warn!(
            still,
            "erasure: attempts of erased deliveries were still sending at the end of the wait"
        );
    }
    tracing::info!(
        subscriptions = erased.subscriptions,
        events = erased.events,
        deliveries = erased.deliveries,
        attempts = erased.attempts,
        "owner erased"
    );
    (
        StatusCode::OK,
        Json(json!({
            "owner": owner,
            "subscriptions": erased.subscriptions,
            "events": erased.events,
            "deliveries": erased.deliveries,
            "attempts": erased.attempts,
        })),
    )
        .into_response()
}

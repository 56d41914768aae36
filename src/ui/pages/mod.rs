//! The dashboard's pages and actions, one file per page, and what they share: the visitor's
//! reach, the API's answers read back, notices and the cuts of long text. Reads go to the
//! store and the running config; changes go through the API's handlers (one validator, one
//! log line, one place for the rules), and their JSON answer is shown as a page. A portal
//! visitor sees only the subscriptions of its owner and their deliveries: everything else is
//! answered as if it did not exist (404).

mod audit;
mod charts;
pub mod check;
mod deliveries;
mod delivery;
mod draft;
pub mod events;
mod overview;
mod recovery;
mod rotation;
mod sign_in;
mod subscription;
mod subscription_rows;
mod subscriptions;

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{message, Scope, Viewer};
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::store::DeliveryFilter;

pub use audit::audit_page;
pub use deliveries::{deliveries, retry_matching};
pub use delivery::{delivery, retry_one};
pub use overview::overview;
pub use rotation::subscription_step;
pub use sign_in::{login, login_form, logout};
pub use subscription::{subscription, subscription_action, update_subscription};
pub use subscriptions::{create_subscription, new_subscription, subscriptions};

/// Characters of an error shown in a table cell.
const CELL_CHARS: usize = 160;

/// `text` cut to `max` characters, with an ellipsis when cut. (Escaping is the templates'.)
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn when(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".to_string(), rfc3339_millis)
}

fn not_found(what: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no {what} here."),
    )
}

/// The ids of the subscriptions `owner` has, among those in force.
fn owned(shared: &Shared, owner: &str) -> Vec<String> {
    let config = shared.config();
    shared
        .settings
        .stored()
        .into_iter()
        .filter(|s| s.owner.as_deref() == Some(owner) && config.subscription(&s.id).is_some())
        .map(|s| s.id)
        .collect()
}

/// Whether `viewer` may see subscription `id` (which exists).
fn may_see(shared: &Shared, viewer: &Viewer, id: &str) -> bool {
    match &viewer.scope {
        Scope::Admin => shared.config().subscription(id).is_some(),
        Scope::Owner(owner) => owned(shared, owner).iter().any(|s| s == id),
    }
}

/// The subscription the path names (`{id}`), if `viewer` may see it.
fn visible_subscription(
    shared: &Shared,
    viewer: &Viewer,
    params: &HashMap<String, String>,
) -> Option<String> {
    params
        .get("id")
        .filter(|id| may_see(shared, viewer, id))
        .cloned()
}

/// The delivery filter that limits a listing to what `viewer` may see.
fn scoped(shared: &Shared, viewer: &Viewer, mut filter: DeliveryFilter) -> DeliveryFilter {
    if let Scope::Owner(owner) = &viewer.scope {
        // Its subscriptions, and its events only: never another owner's event, even one that
        // reached a subscription of the same id before it was this owner's.
        filter.any_subscription = Some(owned(shared, owner));
        filter.owner = Some(owner.clone());
    }
    filter
}

/// The status and JSON of an API handler's answer.
async fn answer(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

fn error_text(body: &Value) -> String {
    body.get("error")
        .and_then(Value::as_str)
        .unwrap_or("the request failed")
        .to_string()
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    /// The key of a flashed notice (`Viewer::redirect_with`).
    notice: Option<String>,
    lang: Option<String>,
    /// The charts' window: `hour`, `day` or `week`.
    window: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
    }
}

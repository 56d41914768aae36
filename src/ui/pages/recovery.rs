//! Recovery in one click: "Resend failed deliveries" on a subscription's page. A GET counts
//! the deliveries that failed since a time (dead, and still retrying after a failed attempt)
//! and asks to confirm; the confirmed POST gives each one attempt now, and says how many.
//! A portal visitor counts and resends its own owner's only.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::deliveries::parse_when;
use super::scoped;
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::store::scan::{failed as failed_since, Failed};
use crate::store::DeliveryFilter;
use crate::ui::{html, store_down, Nav, Viewer};

/// Deliveries one press resends at most.
const RESEND_CAP: usize = 10_000;
/// How far back the form looks unless told: a day.
const DEFAULT_SINCE_MS: u64 = 24 * 3600 * 1000;

/// The time the form starts with, as `datetime-local` writes it (UTC): a day before `now_ms`.
pub fn default_since(now_ms: u64) -> String {
    rfc3339_millis(now_ms.saturating_sub(DEFAULT_SINCE_MS))
        .chars()
        .take(16)
        .collect()
}

/// The deliveries of subscription `id` created at or after `since_ms` that failed and that
/// `viewer` may see: dead ones, and scheduled ones that have had a failed attempt.
pub async fn failed(
    shared: &Shared,
    viewer: &Viewer,
    id: &str,
    since_ms: u64,
) -> Result<Failed, Response> {
    let filter = scoped(
        shared,
        viewer,
        DeliveryFilter {
            subscription: Some(id.to_string()),
            since_ms: Some(since_ms),
            ..Default::default()
        },
    );
    failed_since(shared.store.as_ref(), &filter, RESEND_CAP)
        .await
        .map_err(|_| store_down())
}

#[derive(Template)]
#[template(path = "resend.html")]
struct ResendPage {
    nav: Nav,
    id: String,
    since: String,
    dead: usize,
    retrying: usize,
    problem: Option<String>,
}

/// `GET .../subscriptions/{id}/resend?since=`: how many would be resent, and the button.
pub async fn confirm(shared: &Shared, viewer: &Viewer, id: String, since: &str) -> Response {
    let nav = viewer.nav("subscriptions", None);
    let Some(since_ms) = parse_when(since) else {
        let page = ResendPage {
            nav,
            id,
            since: since.to_string(),
            dead: 0,
            retrying: 0,
            problem: Some("Give a date and time like 2026-11-30T13:05 (UTC).".to_string()),
        };
        return html(StatusCode::BAD_REQUEST, &page);
    };
    let found = match failed(shared, viewer, &id, since_ms).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    html(
        StatusCode::OK,
        &ResendPage {
            nav,
            id,
            since: since.to_string(),
            dead: found.dead.len(),
            retrying: found.retrying.len(),
            problem: None,
        },
    )
}

/// The confirmed resend: each failed delivery since `since` gets an attempt now; the notice
/// says how many.
pub async fn resend(shared: &Shared, viewer: &Viewer, id: &str, since: &str) -> String {
    let Some(since_ms) = parse_when(since) else {
        return "Not resent: give a date and time like 2026-11-30T13:05 (UTC).".to_string();
    };
    let found = match failed(shared, viewer, id, since_ms).await {
        Ok(found) => found,
        Err(_) => return "Not resent: the store could not answer; try again.".to_string(),
    };
    let now = shared.clock.now_ms();
    let mut requeued = 0;
    for delivery in found.dead.iter().chain(&found.retrying) {
        if shared.store.requeue(delivery, now).await.is_ok() {
            requeued += 1;
        }
    }
    shared.wake.notify_one();
    tracing::info!(
        subscription = id,
        requeued,
        "failed deliveries resent from the dashboard"
    );
    let what = format!("of {} failed deliveries since {since}", found.total());
    let note = super::audit::resent(shared, viewer, Some(id), requeued, &what).await;
    format!(
        "{requeued} of {} failed deliveries resent: each has an attempt due now.{note}",
        found.total()
    )
}

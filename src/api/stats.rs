//! `GET /v1/stats?window=hour|day|week[&subscription=ID][&owner=OWNER]`: the figures the
//! dashboard's charts draw ([`crate::stats`]), for scripts; and [`summarize`], which reads
//! them from the store within bounds for both.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error;
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::stats::{SubscriptionFigures, Summary, Window};
use crate::store::{DeliveryFilter, StoreError};

/// Deliveries one summary reads at most: past it, the figures are those of the newest ones
/// and the summary says it was sampled.
pub const SAMPLE_CAP: usize = 20_000;

/// The statistics of `window` at `now_ms` over the deliveries `filter` matches, within
/// [`SAMPLE_CAP`] ([`crate::store::AdminStore::summary`]).
pub async fn summarize(
    shared: &Shared,
    filter: DeliveryFilter,
    window: Window,
    now_ms: u64,
) -> Result<Summary, StoreError> {
    shared
        .store
        .summary(&filter, window, now_ms, SAMPLE_CAP)
        .await
}

/// The window a query names; the error names the field and the values it may take.
pub fn window_of(text: Option<&str>) -> Result<Window, String> {
    match text {
        None => Ok(Window::Day),
        Some(t) => Window::parse(t)
            .ok_or_else(|| format!("window must be one of hour, day, week (not {t:?})")),
    }
}

fn figures_json(f: &SubscriptionFigures) -> Value {
    json!({
        "deliveries": f.deliveries,
        "delivered": f.delivered,
        "dead": f.dead,
        "attempts": f.attempts,
        "failed_attempts": f.failed_attempts,
        "success_rate": f.success_percent.map(|p| (p * 10.0).round() / 1000.0),
        "p50_ms": f.p50_ms,
        "p95_ms": f.p95_ms,
    })
}

/// A summary as the API answers it.
pub fn summary_json(s: &Summary) -> Value {
    let buckets: Vec<Value> = s
        .buckets
        .iter()
        .map(|b| {
            json!({
                "start": rfc3339_millis(b.start_ms),
                "deliveries": b.deliveries,
                "delivered": b.delivered,
                "failed_attempts": b.failed_attempts,
                "dead": b.dead,
                "attempts": b.attempts,
                "p50_ms": b.p50_ms,
                "p95_ms": b.p95_ms,
            })
        })
        .collect();
    let subscriptions: Vec<Value> = s
        .subscriptions
        .iter()
        .map(|(id, f)| {
            let mut v = figures_json(f);
            v["id"] = json!(id);
            v
        })
        .collect();
    json!({
        "window": s.window.as_str(),
        "start": rfc3339_millis(s.start_ms),
        "end": rfc3339_millis(s.end_ms),
        "bucket_seconds": s.window.bucket_ms() / 1000,
        "sampled": s.sampled,
        "total": figures_json(&s.total),
        "buckets": buckets,
        "subscriptions": subscriptions,
    })
}

/// `GET /v1/stats`.
pub async fn stats(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(key) = q
        .keys()
        .find(|k| !["window", "subscription", "owner"].contains(&k.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown query parameter {key:?}; use window, subscription or owner"),
        );
    }
    let window = match window_of(q.get("window").map(String::as_str)) {
        Ok(w) => w,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let filter = DeliveryFilter {
        subscription: q.get("subscription").cloned(),
        owner: q.get("owner").cloned(),
        ..Default::default()
    };
    match summarize(&shared, filter, window, shared.clock.now_ms()).await {
        Ok(summary) => Json(summary_json(&summary)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "stats API: store error");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not answer; see hookd's log",
            )
        }
    }
}

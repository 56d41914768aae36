//! The admin API: list, show and retry deliveries; list, pause and resume subscriptions
//! (creating and deleting them is `subscriptions.rs`).
//! Every error is `{"error": "..."}`; unknown ids are 404.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error;
use crate::config::ADHOC_SUBSCRIPTION;
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::store::scan;
use crate::store::{Delivery, DeliveryFilter, DeliveryState, RequeueError, StoreError, Switch};

pub(crate) const DEFAULT_PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 1000;

/// A short, stable fingerprint of a secret: enough to tell two secrets apart, useless to an
/// attacker.
pub fn secret_fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", hex::encode(&digest[..4]))
}

fn time(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(rfc3339_millis(ms)))
}

fn store_failed(e: &StoreError) -> Response {
    tracing::error!(error = %e, "admin API: store error");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store could not answer; see hookd's log",
    )
}

/// Parses an RFC 3339 query or body field; the error is the response to send.
pub(crate) fn parse_time(field: &str, text: &str) -> Result<u64, Box<Response>> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("{field} must be an RFC 3339 date-time like 2026-01-12T10:30:00Z"),
            ))
        })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("{field} is before 1970"),
        ))
    })
}

/// A per-request URL without what may carry credentials: user info and the query.
pub(crate) fn redacted_url(text: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(text) else {
        return "(invalid URL)".to_string();
    };
    let had_query = url.query().is_some();
    // Clearing these on an http(s) URL cannot fail; ignore the Result for other schemes.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    let mut out = url.to_string();
    if had_query {
        out.push_str("?…");
    }
    out
}

/// Whether a delivery waits only because its subscription (or `adhoc`) is paused: it is
/// scheduled, and is sent once the subscription is resumed.
fn is_held_by_pause(shared: &Shared, d: &Delivery) -> bool {
    d.state == DeliveryState::Scheduled && shared.is_paused(&d.subscription)
}

fn delivery_json(shared: &Shared, d: &Delivery) -> Value {
    let url = match &d.adhoc {
        Some(adhoc) => Some(redacted_url(&adhoc.url)),
        None => shared
            .config()
            .subscription(&d.subscription)
            .map(|s| s.url.to_string()),
    };
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "subscription": d.subscription,
        "owner": d.owner,
        "url": url,
        "state": d.state.as_str(),
        "paused": is_held_by_pause(shared, d),
        "attempts": d.attempts,
        "created_at": time(Some(d.created_ms)),
        "next_attempt_at": time(d.due_ms),
        "finished_at": time(d.finished_ms),
        "last_error": d.last_error,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    subscription: Option<String>,
    event_type: Option<String>,
    owner: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/deliveries?status=&subscription=&event_type=&owner=&since=&until=&limit=&cursor=`
pub async fn list_deliveries(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad query: {}", e.body_text()),
            )
        }
    };
    let state = match q.status.as_deref().map(|s| (s, DeliveryState::parse(s))) {
        None => None,
        Some((_, Some(state))) => Some(state),
        Some((s, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("status {s:?} is not one of scheduled, in_flight, delivered, dead"),
            )
        }
    };
    let since_ms = match q
        .since
        .as_deref()
        .map(|t| parse_time("since", t))
        .transpose()
    {
        Ok(t) => t,
        Err(response) => return *response,
    };
    let until_ms = match q
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()
    {
        Ok(t) => t,
        Err(response) => return *response,
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_PAGE}"),
        );
    }
    let filter = DeliveryFilter {
        state,
        subscription: q.subscription,
        any_subscription: None,
        event_type: q.event_type,
        owner: q.owner,
        since_ms,
        until_ms,
    };
    match shared
        .store
        .list_deliveries(&filter, q.cursor.as_deref(), limit)
        .await
    {
        Ok((page, next)) => {
            let items: Vec<Value> = page.iter().map(|d| delivery_json(&shared, d)).collect();
            Json(json!({ "deliveries": items, "next_cursor": next })).into_response()
        }
        Err(e) => store_failed(&e),
    }
}

/// `GET /v1/deliveries/{id}`: the delivery, every attempt, and its event.
pub async fn show_delivery(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let delivery = match shared.store.delivery(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
        Err(e) => return store_failed(&e),
    };
    let attempts = match shared.store.attempts(&id).await {
        Ok(a) => a,
        Err(e) => return store_failed(&e),
    };
    let body = match shared.store.event_body(&delivery.event_id).await {
        Ok(body) => body.and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
        Err(e) => return store_failed(&e),
    };
    let mut out = delivery_json(&shared, &delivery);
    out["attempt_history"] = attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.number,
                "started_at": time(Some(a.started_ms)),
                "duration_ms": a.duration_ms,
                "outcome": a.outcome.as_str(),
                "status_code": a.status_code,
                "error": a.error,
                "response_excerpt": a.response_excerpt,
                "response_headers": a
                    .response_headers
                    .iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect::<Vec<Value>>(),
            })
        })
        .collect();
    out["event"] = body.unwrap_or(Value::Null);
    if let Some(adhoc) = &delivery.adhoc {
        out["secret_fingerprint"] = Value::String(secret_fingerprint(&adhoc.secret));
    }
    Json(out).into_response()
}

/// `POST /v1/deliveries/{id}/retry`: due now (one more attempt for a dead or delivered one).
pub async fn retry_delivery(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.store.requeue(&id, shared.clock.now_ms()).await {
        Ok(was) => {
            shared.wake.notify_one();
            tracing::info!(delivery_id = %id, was = was.as_str(), "delivery requeued by the admin API");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "id": id, "previous_state": was.as_str(), "state": "scheduled" })),
            )
                .into_response()
        }
        Err(RequeueError::NotFound(_)) => error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
        Err(e @ RequeueError::InFlight(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(RequeueError::Store(e)) => store_failed(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    /// Only this subscription's deliveries; all subscriptions when absent.
    subscription: Option<String>,
    /// Only deliveries that died at or after this time (RFC 3339); with `include_retrying`,
    /// also those still retrying that were created at or after it.
    since: String,
    /// Also bring forward the deliveries still retrying after a failed attempt.
    #[serde(default)]
    include_retrying: bool,
    /// Count what would be requeued, and requeue nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Deliveries a bulk retry examines at most for the ones still retrying, and for a dry run's
/// count of dead ones.
const BULK_SCAN_CAP: usize = 25_000;

/// `POST /v1/deliveries/retry` with `{"subscription": "acme", "since": "...",
/// "include_retrying": false, "dry_run": false}`: requeues the dead deliveries of a
/// subscription that died since a time, and with `include_retrying` brings forward those still
/// retrying; with `dry_run`, only counts them.
pub async fn retry_dead(
    State(shared): State<Arc<Shared>>,
    super::JsonBody(body): super::JsonBody,
) -> Response {
    let req: BulkRetry = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"subscription\": \"..\", \"since\": \"RFC 3339\", \
                     \"include_retrying\": false, \"dry_run\": false}}: {e}"
                ),
            )
        }
    };
    if let Some(sub) = &req.subscription {
        if sub != ADHOC_SUBSCRIPTION && shared.config().subscription(sub).is_none() {
            return error(StatusCode::NOT_FOUND, format!("no subscription {sub:?}"));
        }
    }
    let since = match parse_time("since", &req.since) {
        Ok(t) => t,
        Err(response) => return *response,
    };
    if req.dry_run {
        return match bulk_retry_count(&shared, &req, since).await {
            Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
            Err(e) => store_failed(&e),
        };
    }
    // The ones still retrying are found before the dead ones are requeued: those become
    // scheduled after a failed attempt too, and would be counted twice.
    let retrying = if req.include_retrying {
        match failed_retrying(&shared, &req, since).await {
            Ok(found) => found.retrying,
            Err(e) => return store_failed(&e),
        }
    } else {
        Vec::new()
    };
    let now = shared.clock.now_ms();
    let dead = match shared
        .store
        .requeue_dead(req.subscription.as_deref(), since, now)
        .await
    {
        Ok(n) => n,
        Err(RequeueError::Store(e)) => return store_failed(&e),
        Err(e) => return error(StatusCode::CONFLICT, e.to_string()),
    };
    let mut brought_forward = 0;
    for id in &retrying {
        match shared.store.requeue(id, now).await {
            Ok(_) => brought_forward += 1,
            // Delivered, dead or in flight since the walk: its own attempt decides.
            Err(RequeueError::NotFound(_) | RequeueError::InFlight(_)) => {}
            Err(RequeueError::Store(e)) => return store_failed(&e),
        }
    }
    shared.wake.notify_one();
    tracing::info!(
        requeued = dead,
        brought_forward,
        subscription = req.subscription.as_deref(),
        "failed deliveries requeued by the admin API"
    );
    let answer = if req.include_retrying {
        json!({ "requeued": dead + brought_forward, "dead": dead, "retrying": brought_forward })
    } else {
        json!({ "requeued": dead })
    };
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// The deliveries of the bulk retry's subscription, created since `since`, still retrying.
async fn failed_retrying(
    shared: &Shared,
    req: &BulkRetry,
    since: u64,
) -> Result<scan::Failed, StoreError> {
    let filter = DeliveryFilter {
        state: Some(DeliveryState::Scheduled),
        subscription: req.subscription.clone(),
        since_ms: Some(since),
        ..Default::default()
    };
    scan::failed(shared.store.as_ref(), &filter, BULK_SCAN_CAP).await
}

/// A dry run's answer: how many dead deliveries died since `since` and, when asked, how many
/// are still retrying; `complete: false` when a walk stopped at its bound (the counts are then
/// at least these).
async fn bulk_retry_count(
    shared: &Shared,
    req: &BulkRetry,
    since: u64,
) -> Result<Value, StoreError> {
    let filter = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        subscription: req.subscription.clone(),
        ..Default::default()
    };
    let mut dead = 0u64;
    let mut complete = scan::scan(shared.store.as_ref(), &filter, BULK_SCAN_CAP, |d| {
        if d.finished_ms.is_some_and(|t| t >= since) {
            dead += 1;
        }
        true
    })
    .await?;
    let mut answer = json!({ "dry_run": true, "dead": dead });
    if req.include_retrying {
        let found = failed_retrying(shared, req, since).await?;
        complete &= found.complete;
        answer["retrying"] = json!(found.retrying.len());
    }
    answer["complete"] = json!(complete);
    Ok(answer)
}

/// `GET /v1/subscriptions`: each configured subscription with its health.
/// One subscription as the API shows it: never its secret, only a fingerprint of it.
pub fn subscription_json(
    shared: &Shared,
    s: &crate::config::Subscription,
    state: &crate::store::SubscriptionState,
    stored: Option<&crate::store::StoredSubscription>,
) -> Value {
    let events: Vec<String> = match &s.events {
        crate::config::EventFilter::All => vec!["*".to_string()],
        crate::config::EventFilter::Only(types) => types.clone(),
    };
    json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "url": s.url.to_string(),
        "events": events,
        "secret_fingerprint": secret_fingerprint(s.secret.expose()),
        "managed_by": if stored.is_some() { "api" } else { "config" },
        "owner": stored.and_then(|st| st.owner.clone()),
        "created_at": time(stored.map(|st| st.created_ms)),
        "paused": shared.is_paused(&s.id),
        "state": if state.disabled_ms.is_some() { "disabled" } else if shared.is_paused(&s.id) { "paused" } else { "active" },
        "disabled_at": time(state.disabled_ms),
        "disabled_reason": state.disabled_reason,
        "breaker": shared.settings.gate(&s.id, shared.clock.now_ms()).name(),
        "rate_limit": s.rate_limit,
        // The breaker's settings in effect: the subscription's own, else [delivery]'s.
        "breaker_failures": s.breaker.failures,
        "breaker_probe_interval": humantime::format_duration(s.breaker.probe_interval).to_string(),
        "disable_after": humantime::format_duration(s.breaker.disable_after).to_string(),
        "disable_after_failures": s.breaker.disable_after_failures,
        "last_success_at": time(state.last_success_ms),
        "last_failure_at": time(state.last_failure_ms),
        "consecutive_failures": state.consecutive_failures,
        "last_error": state.last_error,
        "headers": s
            .headers
            .iter()
            .map(|h| (h.name.to_string(), Value::from(h.shown("[REDACTED]"))))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionQuery {
    /// Only the subscriptions of this owner (created through the API with it).
    owner: Option<String>,
}

/// `GET /v1/subscriptions[?owner=]`: the config file's and the API's subscriptions, then
/// `adhoc` (per-request URLs; left out when filtering by owner).
pub async fn list_subscriptions(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<SubscriptionQuery>,
) -> Response {
    let states = match shared.store.subscription_states().await {
        Ok(s) => s,
        Err(e) => return store_failed(&e),
    };
    let config = shared.config();
    let stored = shared.settings.stored();
    let mut items: Vec<Value> = config
        .subscriptions
        .iter()
        .filter_map(|s| {
            let st = stored.iter().find(|st| st.id == s.id);
            if let Some(owner) = &q.owner {
                if st.and_then(|st| st.owner.as_ref()) != Some(owner) {
                    return None;
                }
            }
            let state = states.get(&s.id).cloned().unwrap_or_default();
            Some(subscription_json(&shared, s, &state, st))
        })
        .collect();
    if q.owner.is_none() {
        let adhoc = states.get(ADHOC_SUBSCRIPTION).cloned().unwrap_or_default();
        items.push(json!({
            "id": ADHOC_SUBSCRIPTION,
            "url": null,
            "events": ["*"],
            "secret_fingerprint": null,
            "managed_by": "config",
            "owner": null,
            "created_at": null,
            "paused": shared.is_paused(ADHOC_SUBSCRIPTION),
            "last_success_at": time(adhoc.last_success_ms),
            "last_failure_at": time(adhoc.last_failure_ms),
            "consecutive_failures": adhoc.consecutive_failures,
            "last_error": adhoc.last_error,
        }));
    }
    Json(json!({ "subscriptions": items })).into_response()
}

async fn switch(shared: &Shared, id: &str, switch: Switch) -> Response {
    if id != ADHOC_SUBSCRIPTION && shared.config().subscription(id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no subscription {id:?}"));
    }
    match shared.switch(id, switch).await {
        Ok(()) => {
            let paused = switch.paused();
            tracing::info!(
                subscription = id,
                paused,
                "subscription {} by the admin API",
                if paused { "paused" } else { "resumed" }
            );
            Json(json!({ "id": id, "paused": paused })).into_response()
        }
        Err(e) => store_failed(&e),
    }
}

/// `POST /v1/subscriptions/{id}/pause`: its deliveries wait in the queue.
pub async fn pause(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    switch(&shared, &id, Switch::Pause).await
}

/// `POST /v1/subscriptions/{id}/resume`.
pub async fn resume(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    switch(&shared, &id, Switch::Resume).await
}

/// `POST /v1/subscriptions/{id}/enable`: a subscription its circuit breaker disabled takes
/// deliveries again, its health started afresh. `200` with the subscription; one that was not
/// disabled is left as it is.
pub async fn enable(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let config = shared.config();
    let Some(s) = config.subscription(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no subscription {id:?}"));
    };
    let was = shared.settings.state(&id);
    if was.disabled_ms.is_some() {
        if let Err(e) = shared.set_disabled(&id, None).await {
            return store_failed(&e);
        }
        tracing::info!(
            subscription = id.as_str(),
            "subscription enabled by the admin API"
        );
    }
    let state = shared.settings.state(&id);
    let stored = shared.settings.stored().into_iter().find(|st| st.id == id);
    Json(subscription_json(&shared, s, &state, stored.as_ref())).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn adhoc_urls_lose_credentials_and_queries() {
        assert_eq!(
            super::redacted_url("https://u:p@h.example/x?token=abc"),
            "https://h.example/x?…"
        );
        assert_eq!(
            super::redacted_url("https://h.example:8443/x"),
            "https://h.example:8443/x"
        );
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let f = super::secret_fingerprint("your_secret_here");
        assert_eq!(f.len(), "sha256:".len() + 8);
        assert_eq!(f, super::secret_fingerprint("your_secret_here"));
        assert!(!f.contains("secret"));
    }
}

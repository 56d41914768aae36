//! `POST /v1/events`: validate, fan out, commit durably, answer.
//!
//! Each step returns the response that refuses the request as its error: built once, on the
//! way out, so its size costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{error, require_json};
use crate::config::{Config, ADHOC_SUBSCRIPTION};
use crate::event::{parse_event, rfc3339_millis, IngestRules, NewEvent};
use crate::state::Shared;
use crate::store::{IngestError, Ingested, Target};
use crate::traces::{AcceptedEvent, IngestSpan};

pub async fn ingest(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let mut span = shared.traces.ingest(
        headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok()),
    );
    let response = match require_json(&headers, "events are JSON") {
        Err(response) => *response,
        Ok(()) => handle(&shared, body, &mut span).await,
    };
    span.end(response.status().as_u16());
    response
}

/// The steps of one ingest request; each refuses with the response to send.
async fn handle(shared: &Shared, body: Body, span: &mut IngestSpan) -> Response {
    match accept(shared, body, span).await {
        Ok(response) | Err(response) => response,
    }
}

async fn accept(shared: &Shared, body: Body, span: &mut IngestSpan) -> Result<Response, Response> {
    let config = shared.config();
    let bytes = read_body(&config, body).await?;
    let value = parse_json(&bytes)?;
    let (items, batch) = split_batch(&config, value)?;
    let now = shared.clock.now_ms();
    let events = validate_and_fan_out(&config, items, batch, now)?;
    let types: Vec<String> = events.iter().map(|(e, _)| e.event_type.clone()).collect();
    let unowned: Vec<bool> = events.iter().map(|(e, _)| e.owner.is_none()).collect();
    // The owners are copied for the spans only, when spans are made.
    let owners: Vec<Option<String>> = if span.is_on() {
        events.iter().map(|(e, _)| e.owner.clone()).collect()
    } else {
        Vec::new()
    };
    admit(shared, &config)?;
    let copies = super::listen::copies(shared, &events);
    let ingested = commit(shared, events, batch, now).await?;
    super::listen::publish(shared, copies, &ingested);
    count_unowned(shared, &config, &ingested, &unowned);
    if span.is_on() {
        span.events(
            &ingested
                .iter()
                .zip(&types)
                .zip(&owners)
                .map(|((answer, event_type), owner)| AcceptedEvent {
                    event_id: &answer.event_id,
                    event_type,
                    owner: owner.as_deref(),
                    deliveries: answer.deliveries,
                    duplicate: answer.duplicate,
                })
                .collect::<Vec<_>>(),
        );
    }
    Ok(answer(shared, &ingested, &types, batch))
}

/// The body, within `api.max_body_bytes` and `api.body_read_timeout`.
async fn read_body(config: &Config, body: Body) -> Result<bytes::Bytes, Response> {
    let limit = config.api.max_body_bytes;
    match tokio::time::timeout(config.api.body_read_timeout, to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds api.max_body_bytes ({limit} bytes)"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within api.body_read_timeout ({})",
                humantime::format_duration(config.api.body_read_timeout)
            ),
        )),
    }
}

/// The JSON value: 400 when malformed, 422 for what JSON allows but a delivery cannot carry.
fn parse_json(bytes: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => Err(unprocessable(
            format!("the event nests deeper than 128 levels ({e})"),
            "",
        )),
        Err(e)
            if e.to_string().contains("surrogate")
                || (e.to_string().contains("hex escape") && has_surrogate_escape(bytes)) =>
        {
            Err(unprocessable(
                format!("strings with unpaired UTF-16 surrogates cannot be delivered ({e})"),
                "",
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        )),
    }
}

/// One event or a batch (an array) of at most `api.max_batch`; says which it was.
fn split_batch(config: &Config, value: Value) -> Result<(Vec<Value>, bool), Response> {
    let (items, batch) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if batch && items.is_empty() {
        return Err(unprocessable(
            "an empty array holds no events".to_string(),
            "",
        ));
    }
    if items.len() > config.api.max_batch {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a batch holds at most {} events (api.max_batch); this one has {}",
                config.api.max_batch,
                items.len()
            ),
        ));
    }
    Ok((items, batch))
}

/// Validates each event and lists its targets: every matching subscription, and its
/// `webhook_url` when it has one.
fn validate_and_fan_out(
    config: &Config,
    items: Vec<Value>,
    batch: bool,
    now_ms: u64,
) -> Result<Vec<(NewEvent, Vec<Target>)>, Response> {
    let accepted_at = rfc3339_millis(now_ms);
    let rules = IngestRules {
        allow_adhoc_targets: config.delivery.allow_adhoc_targets,
        allow_http: config.targets.allow_http,
        guard: config.targets.guard(),
    };
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |field: &str| {
            if batch {
                let dot = if field.is_empty() { "" } else { "." };
                format!("[{i}]{dot}{field}")
            } else {
                field.to_string()
            }
        };
        let event = parse_event(item, &rules, &accepted_at)
            .map_err(|e| unprocessable(e.error, &at(&e.field)))?;
        if config.api.require_owner && event.owner.is_none() {
            return Err(unprocessable(
                "is required: this server routes events by owner (api.require_owner); name the provider's customer the job belongs to".to_string(),
                &at("owner"),
            ));
        }
        let targets = targets(config, &event);
        events.push((event, targets));
    }
    Ok(events)
}

/// The targets of one event: the subscriptions that want its type and its owner's (see
/// [`Config::subscriptions_for`]), then its `webhook_url`, whoever owns it.
fn targets(config: &Config, event: &NewEvent) -> Vec<Target> {
    let mut targets: Vec<Target> = config
        .subscriptions_for(&event.event_type, event.owner.as_deref())
        .map(|s| Target {
            subscription: s.id.clone(),
            bucket: s.id.clone(),
            adhoc: None,
        })
        .collect();
    if let Some(adhoc) = &event.adhoc {
        let bucket = adhoc.bucket();
        targets.push(Target {
            subscription: ADHOC_SUBSCRIPTION.to_string(),
            bucket,
            adhoc: Some(adhoc.clone()),
        });
    }
    targets
}

/// Counts the new events that named no owner while owned subscriptions are in force: a job
/// runner that does not send owners shows in `hookd_events_without_owner_total`.
fn count_unowned(shared: &Shared, config: &Config, ingested: &[Ingested], unowned: &[bool]) {
    if !config.has_owned_subscriptions() {
        return;
    }
    let unowned = ingested
        .iter()
        .zip(unowned)
        .filter(|(answer, unowned)| !answer.duplicate && **unowned)
        .count();
    if unowned > 0 {
        shared.metrics.events_without_owner.inc_by(unowned as u64);
    }
}

/// 503 with `Retry-After` past the backlog limit or with too little free disk space.
fn admit(shared: &Shared, config: &Config) -> Result<(), Response> {
    shared
        .admission
        .check(shared.store.unfinished(), &config.storage, &shared.metrics)
        .map_err(|refusal| unavailable(refusal.message()))
}

/// A 503 that tells the client when to come back.
fn unavailable(message: impl Into<String>) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(crate::admission::RETRY_AFTER_SECS),
    );
    response
}

/// Stores the events durably: 409 for a conflicting repeat, 503 when the store fails.
async fn commit(
    shared: &Shared,
    events: Vec<(NewEvent, Vec<Target>)>,
    batch: bool,
    now_ms: u64,
) -> Result<Vec<Ingested>, Response> {
    match shared.store.ingest(events, now_ms).await {
        Ok(ingested) => Ok(ingested),
        Err(IngestError::Conflict {
            index,
            request_id,
            status,
            event_id,
        }) => {
            let message = format!("request_id {request_id:?} with status {status:?} was already accepted as {event_id} with a different body");
            // `field` names the batch entry; for a single event the whole event conflicts.
            let mut body = json!({ "error": message, "event_id": event_id });
            if batch {
                body["field"] = Value::String(format!("[{index}]"));
            }
            Err((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(IngestError::Store(e)) => {
            tracing::error!(error = %e, "ingest commit failed");
            shared
                .metrics
                .ingest_refused
                .with_label_values(&["store"])
                .inc();
            Err(unavailable(
                "the store could not commit the event; retry later",
            ))
        }
    }
}

/// 202 with each event's id when anything is new (200 when all were repeats); counts the new
/// events and wakes the scheduler for them.
fn answer(shared: &Shared, ingested: &[Ingested], types: &[String], batch: bool) -> Response {
    let mut any_new = false;
    for (answer, event_type) in ingested.iter().zip(types) {
        if !answer.duplicate {
            any_new = true;
            shared
                .metrics
                .events_received
                .with_label_values(&[event_type])
                .inc();
        }
    }
    if any_new {
        shared.wake.notify_one();
    }
    let status = if any_new {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let answers: Vec<Value> = ingested
        .iter()
        .map(|a| {
            let mut v = json!({ "event_id": a.event_id, "deliveries": a.deliveries });
            if a.duplicate {
                v["duplicate"] = Value::Bool(true);
            }
            v
        })
        .collect();
    let body = if batch {
        Value::Array(answers)
    } else {
        answers.into_iter().next().unwrap_or(Value::Null)
    };
    (status, Json(body)).into_response()
}

/// A 422 naming the field at fault; without `field` when the whole body is (an empty one is
/// no name).
fn unprocessable(message: String, field: &str) -> Response {
    let mut body = json!({ "error": message });
    if !field.is_empty() {
        body["field"] = Value::String(field.to_string());
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// Whether `body` has a `\uD800`..`\uDFFF` escape: serde_json refuses an unpaired one (which
/// JavaScript would keep) with a message that does not always say "surrogate".
fn has_surrogate_escape(body: &[u8]) -> bool {
    body.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

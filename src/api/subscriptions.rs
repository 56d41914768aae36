//! Subscriptions as data: `POST /v1/subscriptions` creates one, `GET` and `DELETE
//! /v1/subscriptions/{id}` read and remove one. A subscription created this way is kept in
//! the store as the `[[subscription]]` table it amounts to, is validated by exactly the config
//! file's rules (`Config::subscription_from_toml`), applies at once everywhere (ingest, the
//! scheduler, the admin API) and survives restarts. Subscriptions of the config file are
//! listed as `"managed_by": "config"` and are read-only here.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::subscription_json;
use super::error;
use crate::config::{Diagnostic, ADHOC_SUBSCRIPTION};
use crate::state::Shared;
use crate::store::StoredSubscription;

/// What `POST /v1/subscriptions` takes. The keys are the config file's, plus `owner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    id: Option<String>,
    owner: Option<String>,
    url: String,
    /// Generated (`whsec_` + 32 random bytes) when left out; shown once, in the answer.
    secret: Option<String>,
    events: Vec<String>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    max_in_flight: Option<u64>,
    signature: Option<String>,
}

/// The longest owner id: the provider's customer id, not a document.
const MAX_OWNER: usize = 128;

/// A 422 naming the field (the config key without its `subscription[0].` prefix), with every
/// error found.
fn invalid(errors: &[Diagnostic]) -> Response {
    let field = |d: &Diagnostic| {
        d.key
            .strip_prefix("subscription[0].")
            .unwrap_or(&d.key)
            .to_string()
    };
    let all: Vec<Value> = errors
        .iter()
        .map(|d| json!({ "field": field(d), "error": d.message }))
        .collect();
    let first = errors.first();
    let mut body = json!({
        "error": first.map_or_else(|| "invalid subscription".to_string(), |d| d.message.clone()),
        "errors": all,
    });
    if let Some(d) = first.filter(|d| !d.key.is_empty()) {
        body["field"] = Value::String(field(d));
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `[[subscription]]` table for `new`, with its id and secret decided.
fn toml_table(new: &NewSubscription, id: &str, secret: &str) -> String {
    let mut table = toml::Table::new();
    table.insert("id".into(), id.into());
    table.insert("url".into(), new.url.as_str().into());
    table.insert("secret".into(), secret.into());
    table.insert(
        "events".into(),
        toml::Value::Array(new.events.iter().map(|e| e.as_str().into()).collect()),
    );
    if let Some(schedule) = &new.retry_schedule {
        table.insert(
            "retry_schedule".into(),
            toml::Value::Array(schedule.iter().map(|d| d.as_str().into()).collect()),
        );
    }
    if let Some(timeout) = &new.timeout {
        table.insert("timeout".into(), timeout.as_str().into());
    }
    if let Some(n) = new.max_in_flight {
        table.insert(
            "max_in_flight".into(),
            toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
        );
    }
    if let Some(signature) = &new.signature {
        table.insert("signature".into(), signature.as_str().into());
    }
    let mut doc = toml::Table::new();
    doc.insert(
        "subscription".into(),
        toml::Value::Array(vec![toml::Value::Table(table)]),
    );
    // A table of strings, integers and arrays of strings always serializes.
    toml::to_string(&doc).unwrap_or_default()
}

/// `POST /v1/subscriptions`: 201 with the subscription and its secret (shown this once).
pub async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let new: NewSubscription = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not a subscription: {e} (fields: id, owner, url, secret, events, retry_schedule, timeout, max_in_flight, signature)"),
            )
        }
    };
    if let Some(owner) = &new.owner {
        if owner.is_empty() || owner.len() > MAX_OWNER || owner.chars().any(char::is_control) {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": format!("owner must be 1 to {MAX_OWNER} printable characters"), "field": "owner" })),
            )
                .into_response();
        }
    }
    let id = new
        .id
        .clone()
        .unwrap_or_else(|| format!("sub_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()));
    let config = shared.config();
    if id == ADHOC_SUBSCRIPTION || config.subscription(&id).is_some() {
        return (
            StatusCode::CONFLICT,
            Json(
                json!({ "error": format!("a subscription {id:?} exists already"), "field": "id" }),
            ),
        )
            .into_response();
    }
    let secret = new.secret.clone().unwrap_or_else(new_secret);
    let text = toml_table(&new, &id, &secret);
    let taken: HashSet<String> = config.subscriptions.iter().map(|s| s.id.clone()).collect();
    if let Err(errors) = config.subscription_from_toml(&text, &taken) {
        return invalid(&errors);
    }
    let now = shared.clock.now_ms();
    let stored = StoredSubscription {
        id: id.clone(),
        owner: new.owner.clone(),
        toml: text,
        created_ms: now,
        updated_ms: now,
    };
    if let Err(e) = shared.store.put_subscription(stored.clone()).await {
        tracing::error!(error = %e, "cannot store a new subscription");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not keep the subscription; retry later",
        );
    }
    let mut all = shared.settings.stored();
    all.push(stored);
    shared.settings.set_stored(all);
    shared.metrics.init_subscriptions([id.as_str()]);
    shared.apply_limits();
    shared.wake.notify_one();
    tracing::info!(
        subscription = id.as_str(),
        owner = new.owner.as_deref(),
        "subscription created through the API"
    );
    let mut body = match one(&shared, &id).await {
        Some(body) => body,
        None => json!({ "id": id }),
    };
    body["secret"] = Value::String(secret);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// The JSON of subscription `id` with its health, or `None` when there is none.
async fn one(shared: &Shared, id: &str) -> Option<Value> {
    let config = shared.config();
    let s = config.subscription(id)?;
    let state = shared
        .store
        .subscription_states()
        .await
        .ok()
        .and_then(|states| states.get(id).cloned())
        .unwrap_or_default();
    let stored = shared.settings.stored().into_iter().find(|st| st.id == id);
    Some(subscription_json(shared, s, &state, stored.as_ref()))
}

/// `GET /v1/subscriptions/{id}`.
pub async fn show(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match one(&shared, &id).await {
        Some(body) => Json(body).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no subscription {id:?}")),
    }
}

/// `DELETE /v1/subscriptions/{id}`: 204. Its queued deliveries wait, as those of a
/// subscription removed from the config file do, until a subscription of that id returns.
pub async fn delete(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut stored = shared.settings.stored();
    let Some(at) = stored.iter().position(|s| s.id == id) else {
        return if shared.config().subscription(&id).is_some() {
            error(
                StatusCode::CONFLICT,
                format!("{id:?} is managed by the config file: remove it there and reload"),
            )
        } else {
            error(StatusCode::NOT_FOUND, format!("no subscription {id:?}"))
        };
    };
    if let Err(e) = shared.store.delete_subscription(&id).await {
        tracing::error!(error = %e, "cannot delete a subscription");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not delete the subscription; retry later",
        );
    }
    stored.remove(at);
    shared.settings.set_stored(stored);
    shared.apply_limits();
    tracing::info!(
        subscription = id.as_str(),
        "subscription deleted through the API"
    );
    StatusCode::NO_CONTENT.into_response()
}

//! Subscriptions as data: `POST /v1/subscriptions` creates one; `GET`, `PATCH` and `DELETE
//! /v1/subscriptions/{id}` read, change and remove one; `.../rotate-secret` rotates its
//! secret and `.../finish-rotation` switches to the new one. A subscription created this way is kept in the store as the `[[subscription]]`
//! table it amounts to, is validated by exactly the config file's rules
//! (`Config::subscription_from_toml`), applies at once everywhere (ingest, the scheduler, the
//! admin API) and survives restarts. Subscriptions of the config file are listed as
//! `"managed_by": "config"` and are read-only here.
//!
//! A step that refuses returns the response to send as its error: built once, on the way
//! out, so its size costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::subscription_json;
use super::{error, JsonBody};
use crate::config::{
    field_names, Diagnostic, SubscriptionField, ADHOC_SUBSCRIPTION, SUBSCRIPTION_FIELDS,
};
use crate::state::Shared;
use crate::store::StoredSubscription;

/// What `POST /v1/subscriptions` takes. The keys are the config file's, plus `owner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    owner: Option<String>,
    url: String,
    /// Generated (`whsec_` + 32 random bytes) when left out; shown once, in the answer.
    secret: Option<String>,
    events: Vec<String>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    max_in_flight: Option<u64>,
    signature: Option<String>,
    headers: Option<BTreeMap<String, HeaderInput>>,
    rate_limit: Option<f64>,
    breaker_failures: Option<Value>,
    breaker_probe_interval: Option<Value>,
    disable_after: Option<Value>,
    disable_after_failures: Option<Value>,
}

/// The circuit breaker's keys, as in `[[subscription]]`: two counts of failed attempts in a
/// row (`..._failures`) and two durations. Absent or `null` leaves one as it is; `""`
/// removes it, so that the subscription follows `[delivery]`'s; `0` (`"0s"`) means never,
/// as in the config file.
/// The fields a new subscription takes, as the 422 for a body of the wrong shape lists them
/// (from [`SUBSCRIPTION_FIELDS`]), with the two shapes of `headers`.
fn creatable_fields() -> String {
    SUBSCRIPTION_FIELDS
        .iter()
        .filter(|f| f.at_creation())
        .map(|f| match f.name {
            "headers" => "headers ({\"Name\": \"value\"} or {\"Name\": {\"secret\": \"value\"}})",
            name => name,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub const BREAKER_KEYS: [&str; 4] = SubscriptionField::BREAKER_KEYS;

/// A custom header's value as the API takes it: a string (shown when the subscription is
/// read), or `{"secret": "..."}` (kept like the signing secret: never shown again).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderInput {
    Plain(String),
    Secret { secret: String },
}

/// A 422 naming the field (the config key without its `subscription[0].` prefix), with every
/// error found.
fn invalid(errors: &[Diagnostic]) -> Response {
    invalid_all(
        errors
            .iter()
            .map(|d| (field_of(d), d.message.clone()))
            .collect(),
    )
}

/// A JSON body as `T` (`what` and `fields` name it in the 422), or the 422 to answer.
pub(super) fn body_as<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
    fields: &str,
) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not {what}: {e} (fields: {fields})"),
        )
    })
}

/// A 422 for one field the config file's rules do not see (they see the TOML only).
fn refused(field: &str, message: String) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": message, "field": field })),
    )
        .into_response()
}

/// `owner` is the provider's customer id, as an event's `owner` names it
/// ([`crate::event::valid_owner`]).
fn check_owner(owner: Option<&String>) -> Result<(), Response> {
    match owner {
        Some(o) if !crate::event::valid_owner(o) => Err(refused(
            "owner",
            format!("owner must be {}", crate::event::OWNER_RULE),
        )),
        _ => Ok(()),
    }
}

/// A circuit-breaker key's JSON value as its TOML value, or `None` for `""` (remove it).
/// Checked here, as the answer must name the key: a count is a whole number of attempts, a
/// duration is parsed as the config file parses it.
fn breaker_value(key: &str, value: &Value) -> Result<Option<toml::Value>, String> {
    let count = key.ends_with("_failures");
    match value {
        Value::String(text) if text.is_empty() => Ok(None),
        Value::Number(n) if count => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| Some(toml::Value::Integer(i64::from(n))))
            .ok_or_else(|| {
                format!("{key}: {n} is not a count of failed attempts in a row from 0 (never) to {}", u32::MAX)
            }),
        Value::String(text) if !count => match humantime::parse_duration(text) {
            Ok(_) => Ok(Some(text.as_str().into())),
            Err(e) => Err(format!("{key}: invalid duration {text:?}: {e} (a duration like \"30s\", \"5m\" or \"5d\"; \"0s\": never)")),
        },
        _ if count => Err(format!("{key}: {value} is not a count of failed attempts in a row (a whole number; 0: never; \"\": the default)")),
        _ => Err(format!("{key}: {value} is not a duration (a string like \"30s\", \"5m\" or \"5d\"; \"0s\": never; \"\": the default)")),
    }
}

fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `[[subscription]]` table for `new`, with its id and secret decided, and the errors of
/// the breaker keys it could not take (field, message).
fn toml_table(new: &NewSubscription, id: &str, secret: &str) -> (String, Vec<(String, String)>) {
    let mut table = toml::Table::new();
    table.insert("id".into(), id.into());
    table.insert("url".into(), new.url.as_str().into());
    table.insert("secret".into(), secret.into());
    table.insert("events".into(), strings(&new.events));
    let changes = Changes {
        name: new.name.clone(),
        description: new.description.clone(),
        owner: None,
        url: None,
        events: None,
        retry_schedule: new.retry_schedule.clone(),
        timeout: new.timeout.clone(),
        max_in_flight: new.max_in_flight,
        signature: new.signature.clone(),
        headers: new.headers.clone(),
        rate_limit: new.rate_limit,
        breaker_failures: new.breaker_failures.clone(),
        breaker_probe_interval: new.breaker_probe_interval.clone(),
        disable_after: new.disable_after.clone(),
        disable_after_failures: new.disable_after_failures.clone(),
    };
    let errors = changes.apply(&mut table);
    (document(table), errors)
}

/// A 422 listing every error (field, message), the first also as `error` and `field`.
fn invalid_all(errors: Vec<(String, String)>) -> Response {
    let all: Vec<Value> = errors
        .iter()
        .map(|(field, message)| json!({ "field": field, "error": message }))
        .collect();
    let mut body = json!({
        "error": errors.first().map_or("invalid subscription", |(_, m)| m.as_str()),
        "errors": all,
    });
    if let Some((field, _)) = errors.first().filter(|(f, _)| !f.is_empty()) {
        body["field"] = Value::String(field.clone());
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// A config error's field: its key without the `subscription[0].` prefix.
fn field_of(d: &Diagnostic) -> String {
    d.key
        .strip_prefix("subscription[0].")
        .unwrap_or(&d.key)
        .to_string()
}

/// A new subscription checked by every rule, ready to store, with its secret; or the answer
/// that lists every error found (a 409 for an id in use).
fn prepare(shared: &Shared, body: &[u8]) -> Result<(StoredSubscription, String), Response> {
    let new: NewSubscription = body_as(body, "a subscription", &creatable_fields())?;
    check_owner(new.owner.as_ref())?;
    let id = new
        .id
        .clone()
        .unwrap_or_else(|| format!("sub_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()));
    let config = shared.config();
    if id == ADHOC_SUBSCRIPTION || config.subscription(&id).is_some() {
        return Err((
            StatusCode::CONFLICT,
            Json(
                json!({ "error": format!("a subscription {id:?} exists already"), "field": "id" }),
            ),
        )
            .into_response());
    }
    let secret = new.secret.clone().unwrap_or_else(new_secret);
    let (text, mut errors) = toml_table(&new, &id, &secret);
    let taken: HashSet<String> = config.subscriptions.iter().map(|s| s.id.clone()).collect();
    if let Err(found) = config.subscription_from_toml(&text, &taken) {
        errors.extend(found.iter().map(|d| (field_of(d), d.message.clone())));
    }
    if !errors.is_empty() {
        return Err(invalid_all(errors));
    }
    let now = shared.clock.now_ms();
    let stored = StoredSubscription {
        id,
        owner: new.owner.clone(),
        toml: text,
        created_ms: now,
        updated_ms: now,
    };
    Ok((stored, secret))
}

/// What `POST /v1/subscriptions` would refuse `body` with, every error at once, without
/// creating anything; `None` when it would create it. The dashboard's form asks, so that
/// its own errors and the API's show together.
pub fn check_new(shared: &Shared, body: &[u8]) -> Option<Response> {
    prepare(shared, body).err()
}

/// `POST /v1/subscriptions`: 201 with the subscription and its secret (shown this once).
pub async fn create(State(shared): State<Arc<Shared>>, JsonBody(body): JsonBody) -> Response {
    let (stored, secret) = match prepare(&shared, &body) {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    let id = stored.id.clone();
    let owner = stored.owner.clone();
    let _turn = shared.writes.lock().await;
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
        owner = owner.as_deref(),
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
    let mut body = subscription_json(shared, s, &state, stored.as_ref());
    body["rotation"] = rotation_json(s, shared.clock.now_ms());
    Some(body)
}

/// A rotation in progress, as `GET /v1/subscriptions/{id}` shows it: until when the previous
/// secret signs, and which header each secret signs; `null` when there is none.
pub fn rotation_json(s: &crate::config::Subscription, now_ms: u64) -> Value {
    use crate::config::SignatureScheme;
    let Some(previous) = s.previous_secret.as_ref().filter(|p| now_ms < p.expires_ms) else {
        return Value::Null;
    };
    let mut rotation = json!({
        "previous_secret_expires": crate::event::rfc3339_millis(previous.expires_ms),
    });
    if s.signature != SignatureScheme::Standard {
        rotation["x_abstrakt_signature"] = json!("previous_secret");
    }
    if s.signature != SignatureScheme::Abstrakt {
        rotation["webhook_signature"] = json!("both");
    }
    rotation
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
    let _turn = shared.writes.lock().await;
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
    let paused = shared.settings.forget(&id);
    shared
        .metrics
        .subscriptions_paused
        .set(i64::try_from(paused).unwrap_or(i64::MAX));
    shared.apply_limits();
    // Its queued deliveries end, once no claim can take them (the limits above no longer name
    // it): a later subscription of the same id, another owner's perhaps, never inherits them.
    let reason = format!("not sent: subscription {id:?} was deleted");
    let ended = match shared
        .store
        .end_queued(&id, &reason, shared.clock.now_ms())
        .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, subscription = id.as_str(), "cannot end a deleted subscription's queued deliveries; they wait, and never go to another owner's subscription");
            0
        }
    };
    tracing::info!(
        subscription = id.as_str(),
        ended,
        "subscription deleted through the API"
    );
    StatusCode::NO_CONTENT.into_response()
}

/// What `PATCH /v1/subscriptions/{id}` may change; the secret changes by rotation only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    /// Its name for people; `""` removes it.
    name: Option<String>,
    /// What it is for; `""` removes it.
    description: Option<String>,
    owner: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    max_in_flight: Option<u64>,
    signature: Option<String>,
    /// Replaces every custom header; `{}` removes them all.
    headers: Option<BTreeMap<String, HeaderInput>>,
    /// Attempts per second at most; 0 removes the limit.
    rate_limit: Option<f64>,
    /// The circuit breaker's keys ([`BREAKER_KEYS`]); `""` removes one.
    breaker_failures: Option<Value>,
    breaker_probe_interval: Option<Value>,
    disable_after: Option<Value>,
    disable_after_failures: Option<Value>,
}

impl Changes {
    /// The breaker keys given, with their values.
    fn breaker(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        let values = [
            &self.breaker_failures,
            &self.breaker_probe_interval,
            &self.disable_after,
            &self.disable_after_failures,
        ];
        BREAKER_KEYS
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
    }

    /// Writes the given keys into a `[[subscription]]` table; the errors (field, message) of
    /// the breaker keys that are not a count or a duration, left out (the config file's rules
    /// check the rest).
    fn apply(&self, table: &mut toml::Table) -> Vec<(String, String)> {
        for (key, text) in [("name", &self.name), ("description", &self.description)] {
            match text {
                Some(text) if text.is_empty() => {
                    table.remove(key);
                }
                Some(text) => {
                    table.insert(key.into(), text.as_str().into());
                }
                None => {}
            }
        }
        if let Some(url) = &self.url {
            table.insert("url".into(), url.as_str().into());
        }
        if let Some(events) = &self.events {
            table.insert("events".into(), strings(events));
        }
        if let Some(schedule) = &self.retry_schedule {
            table.insert("retry_schedule".into(), strings(schedule));
        }
        if let Some(timeout) = &self.timeout {
            table.insert("timeout".into(), timeout.as_str().into());
        }
        if let Some(n) = self.max_in_flight {
            table.insert(
                "max_in_flight".into(),
                toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
            );
        }
        if let Some(signature) = &self.signature {
            table.insert("signature".into(), signature.as_str().into());
        }
        if let Some(rate) = self.rate_limit {
            if rate == 0.0 {
                table.remove("rate_limit");
            } else {
                table.insert("rate_limit".into(), toml::Value::Float(rate));
            }
        }
        match &self.headers {
            Some(headers) if headers.is_empty() => {
                table.remove("headers");
            }
            Some(headers) => {
                let headers: toml::Table = headers
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            HeaderInput::Plain(v) => v.as_str().into(),
                            HeaderInput::Secret { secret } => {
                                let mut t = toml::Table::new();
                                t.insert("secret".into(), secret.as_str().into());
                                toml::Value::Table(t)
                            }
                        };
                        (name.clone(), value)
                    })
                    .collect();
                table.insert("headers".into(), toml::Value::Table(headers));
            }
            None => {}
        }
        let mut errors = Vec::new();
        for (key, value) in self.breaker() {
            match breaker_value(key, value) {
                Ok(Some(value)) => {
                    table.insert(key.into(), value);
                }
                Ok(None) => {
                    table.remove(key);
                }
                Err(message) => errors.push((key.to_string(), message)),
            }
        }
        errors
    }
}

/// The stored subscription `id`, or the answer for why there is none to change.
fn stored_or_refusal(shared: &Shared, id: &str) -> Result<StoredSubscription, Response> {
    if let Some(stored) = shared.settings.stored().into_iter().find(|s| s.id == id) {
        return Ok(stored);
    }
    Err(if shared.config().subscription(id).is_some() {
        error(
            StatusCode::CONFLICT,
            format!("{id:?} is managed by the config file: change it there and reload"),
        )
    } else {
        error(StatusCode::NOT_FOUND, format!("no subscription {id:?}"))
    })
}

/// The one `[[subscription]]` table of a stored subscription, to change.
fn table_of(stored: &StoredSubscription) -> toml::Table {
    stored
        .toml
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut doc| match doc.remove("subscription") {
            Some(toml::Value::Array(mut tables)) if !tables.is_empty() => match tables.remove(0) {
                toml::Value::Table(t) => Some(t),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default()
}

/// The breaker keys ([`BREAKER_KEYS`]) a stored subscription sets itself, as the edit form
/// shows them ("5", "30s"); empty where it follows `[delivery]`'s.
pub fn own_breaker(stored: &StoredSubscription) -> [String; 4] {
    let table = table_of(stored);
    BREAKER_KEYS.map(|key| match table.get(key) {
        Some(toml::Value::String(text)) => text.clone(),
        Some(toml::Value::Integer(n)) => n.to_string(),
        _ => String::new(),
    })
}

fn document(table: toml::Table) -> String {
    let mut doc = toml::Table::new();
    doc.insert(
        "subscription".into(),
        toml::Value::Array(vec![toml::Value::Table(table)]),
    );
    // A table of strings, integers and arrays of strings always serializes.
    toml::to_string(&doc).unwrap_or_default()
}

fn strings(values: &[String]) -> toml::Value {
    toml::Value::Array(values.iter().map(|v| v.as_str().into()).collect())
}

/// `text` checked by the config file's rules as the new table of subscription `id`.
fn validate(shared: &Shared, id: &str, text: &str) -> Result<(), Vec<Diagnostic>> {
    let config = shared.config();
    let taken: HashSet<String> = config
        .subscriptions
        .iter()
        .map(|s| s.id.clone())
        .filter(|taken| taken != id)
        .collect();
    config.subscription_from_toml(text, &taken).map(|_| ())
}

/// Validates `text` for subscription `stored.id`, stores it and applies it at once; the
/// answer is the subscription as shown, plus `extra` fields.
async fn replace(
    shared: &Shared,
    mut stored: StoredSubscription,
    text: String,
    extra: Value,
) -> Response {
    if let Err(errors) = validate(shared, &stored.id, &text) {
        return invalid(&errors);
    }
    stored.toml = text;
    stored.updated_ms = shared.clock.now_ms();
    let _turn = shared.writes.lock().await;
    if let Err(e) = shared.store.put_subscription(stored.clone()).await {
        tracing::error!(error = %e, "cannot store a changed subscription");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not keep the change; retry later",
        );
    }
    let all = shared
        .settings
        .stored()
        .into_iter()
        .map(|s| if s.id == stored.id { stored.clone() } else { s })
        .collect();
    shared.settings.set_stored(all);
    shared.apply_limits();
    shared.wake.notify_one();
    let mut body = one(shared, &stored.id)
        .await
        .unwrap_or_else(|| json!({ "id": stored.id }));
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    Json(body).into_response()
}

/// `PATCH /v1/subscriptions/{id}`: changes what is given, by the same rules as a creation.
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let (stored, text) = match prepare_update(&shared, &id, &body) {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal,
    };
    tracing::info!(
        subscription = id.as_str(),
        "subscription changed through the API"
    );
    replace(&shared, stored, text, json!({})).await
}

/// What `PATCH /v1/subscriptions/{id}` would refuse `body` with, every error at once, without
/// changing anything; `None` when it would take it. The dashboard's edit form asks.
pub fn check_update(shared: &Shared, id: &str, body: &[u8]) -> Option<Response> {
    prepare_update(shared, id, body).err()
}

/// Subscription `id` with the changes of `body`, checked by every rule, and its new table;
/// or the answer that lists every error found.
fn prepare_update(
    shared: &Shared,
    id: &str,
    body: &[u8],
) -> Result<(StoredSubscription, String), Response> {
    let mut stored = stored_or_refusal(shared, id)?;
    let changes: Changes = body_as(
        body,
        "a change",
        &format!(
            "{}; the secret changes by POST .../rotate-secret",
            field_names(SUBSCRIPTION_FIELDS.iter().filter(|f| f.changeable()))
        ),
    )?;
    check_owner(changes.owner.as_ref())?;
    let mut table = table_of(&stored);
    let mut errors = changes.apply(&mut table);
    let text = document(table);
    if let Err(found) = validate(shared, &stored.id, &text) {
        errors.extend(found.iter().map(|d| (field_of(d), d.message.clone())));
    }
    if !errors.is_empty() {
        return Err(invalid_all(errors));
    }
    if let Some(owner) = changes.owner {
        stored.owner = Some(owner);
    }
    Ok((stored, text))
}

/// What `POST /v1/subscriptions/{id}/rotate-secret` takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// The new secret; generated when left out.
    secret: Option<String>,
    /// How long the old secret keeps signing beside the new one ("24h" when left out).
    previous_expires_in: Option<String>,
}

/// `POST /v1/subscriptions/{id}/rotate-secret`: a new secret, shown this once. The old one
/// keeps signing until the rotation is finished (`.../finish-rotation`) or
/// `previous_expires_in` has passed, as `previous_secret` does in the config file: alone in
/// `X-Abstrakt-Signature`, beside the new one in Standard Webhooks' header. 409 while an
/// earlier rotation is in progress.
pub async fn rotate_secret(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let found = stored_or_refusal(&shared, &id).and_then(|stored| {
        let rotation: Rotation = if body.is_empty() {
            Rotation::default()
        } else {
            body_as(&body, "a rotation", "secret, previous_expires_in")?
        };
        Ok((stored, rotation))
    });
    let (stored, rotation) = match found {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let keep =
        match humantime::parse_duration(rotation.previous_expires_in.as_deref().unwrap_or("24h")) {
            Ok(d) => d,
            Err(e) => {
                return refused(
                    "previous_expires_in",
                    format!("previous_expires_in: {e} (a duration like \"24h\")"),
                )
            }
        };
    let pending = shared
        .config()
        .subscription(&id)
        .and_then(|s| s.previous_secret.as_ref().map(|p| p.expires_ms))
        .filter(|expires_ms| shared.clock.now_ms() < *expires_ms);
    if let Some(expires_ms) = pending {
        // A second rotation would drop the secret receivers may still hold.
        return error(
            StatusCode::CONFLICT,
            format!(
                "a rotation of {id:?} is in progress until {}: finish it first (POST .../finish-rotation)",
                crate::event::rfc3339_millis(expires_ms)
            ),
        );
    }
    let mut table = table_of(&stored);
    let Some(old) = table.get("secret").cloned() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored subscription has no secret",
        );
    };
    let secret = rotation.secret.unwrap_or_else(new_secret);
    let expires_ms = shared
        .clock
        .now_ms()
        .saturating_add(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
    table.insert("secret".into(), secret.as_str().into());
    table.insert("previous_secret".into(), old);
    table.insert(
        "previous_secret_expires".into(),
        crate::event::rfc3339_millis(expires_ms).into(),
    );
    tracing::info!(
        subscription = id.as_str(),
        "subscription secret rotated through the API"
    );
    let extra = json!({
        "secret": secret,
        "previous_secret_expires": crate::event::rfc3339_millis(expires_ms),
    });
    replace(&shared, stored, document(table), extra).await
}

/// `POST /v1/subscriptions/{id}/finish-rotation`: the second step of a rotation, once the
/// receiver holds the new secret: the previous secret stops signing at once (it would
/// anyway at `previous_secret_expires`). 409 when no rotation is in progress.
pub async fn finish_rotation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    let stored = match stored_or_refusal(&shared, &id) {
        Ok(stored) => stored,
        Err(refusal) => return refusal,
    };
    let mut table = table_of(&stored);
    let removed = table.remove("previous_secret").is_some();
    table.remove("previous_secret_expires");
    if !removed {
        return error(
            StatusCode::CONFLICT,
            format!("no rotation of {id:?} is in progress: nothing to finish"),
        );
    }
    tracing::info!(
        subscription = id.as_str(),
        "subscription secret rotation finished through the API"
    );
    replace(&shared, stored, document(table), json!({})).await
}

/// What `POST /v1/subscriptions/{id}/test` may take: the type of the test event.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// One of the catalogue's types ([`crate::catalogue::EVENT_TYPES`]); `job.test` when left
    /// out.
    event_type: Option<String>,
}

/// The catalogue's type a test asks for in `body` (empty: `job.test`), or the 422 to answer.
fn test_type(body: &[u8]) -> Result<&'static crate::catalogue::EventType, Response> {
    let request: TestRequest = if body.is_empty() {
        TestRequest::default()
    } else {
        body_as(body, "a test", "event_type")?
    };
    let name = request.event_type.as_deref().unwrap_or("job.test");
    crate::catalogue::named(name).ok_or_else(|| {
        refused(
            "event_type",
            format!(
                "event_type {name:?} has no example to send: one of {}",
                crate::catalogue::names()
            ),
        )
    })
}

/// `POST /v1/subscriptions/{id}/test`: a test event (`request_id` `test_…`) for this
/// subscription alone, whatever events it asked for; `202 {"event_id", "delivery_id"}`. Its
/// type is `job.test` unless the body asks for another of the catalogue's
/// (`{"event_type": "job.completed"}`), whose example's fields it then carries. Its attempt
/// shows at `GET /v1/deliveries/{delivery_id}`. For the config file's subscriptions too.
pub async fn send_test(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let config = shared.config();
    let Some(subscription) = config.subscription(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no subscription {id:?}"));
    };
    let event_type = match test_type(&body) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    // The subscription's own owner's event, as any event it receives.
    let owner = subscription.owner.clone();
    let now = shared.clock.now_ms();
    let request_id = format!(
        "test_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let rules = crate::event::IngestRules {
        allow_adhoc_targets: false,
        allow_http: config.targets.allow_http,
        guard: config.targets.guard(),
    };
    let accepted_at = crate::event::rfc3339_millis(now);
    let event = match event_type.test_event(&request_id, owner.as_deref(), &rules, &accepted_at) {
        Ok(event) => event,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the test event is invalid: {e}"),
            )
        }
    };
    let target = crate::store::Target {
        subscription: id.clone(),
        bucket: id.clone(),
        adhoc: None,
    };
    let ingested = match shared.store.ingest(vec![(event, vec![target])], now).await {
        Ok(mut ingested) if !ingested.is_empty() => ingested.remove(0),
        Ok(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the store took no event"),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a test event");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not take the test event; retry later",
            );
        }
    };
    shared.wake.notify_one();
    let delivery_id = match shared.store.event_meta(&ingested.event_id).await {
        Ok(Some(meta)) => meta.deliveries.into_iter().next(),
        _ => None,
    };
    tracing::info!(
        subscription = id.as_str(),
        event_id = ingested.event_id.as_str(),
        "test event sent through the API"
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({ "event_id": ingested.event_id, "delivery_id": delivery_id, "request_id": request_id })),
    )
        .into_response()
}

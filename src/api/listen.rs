//! The routes of `hookd listen` (docs/api.md, "Listen sessions"), authenticated by a portal
//! link's token (`Authorization: Bearer <token>`), outside the API tokens' check: a customer
//! holds a link, not a token.
//!
//! - `POST /v1/listen/sessions` opens a session (or resumes one) and answers its secret;
//! - `GET /v1/listen/sessions/{id}/events` streams its deliveries as server-sent events;
//! - `POST /v1/listen/sessions/{id}/answers` records what the local receiver answered;
//! - `POST /v1/listen/trigger` sends the owner's test event through its open sessions;
//! - `DELETE /v1/listen/sessions/{id}` ends it.
//!
//! Server-sent events rather than a WebSocket: the stream goes one way (answers are small
//! POSTs), it is plain HTTP that any proxy passes (`HTTPS_PROXY` works as for any request), and
//! `Last-Event-ID` is its own resume protocol.
//!
//! Each step refuses with the response to send as its error, built once on the way out (as in
//! `ingest.rs`), so its size costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error;
use super::subscriptions::body_as;
use crate::event::NewEvent;
use crate::listen::{Copy, Refusal, Session};
use crate::session::{PortalRefusal, Sessions};
use crate::signing;
use crate::state::Shared;
use crate::store::{Ingested, Target};

/// The routes, for [`super::router`] to merge outside the token check.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/listen/sessions", post(open))
        .route("/v1/listen/sessions/{id}", delete(close))
        .route("/v1/listen/sessions/{id}/events", get(stream))
        .route("/v1/listen/sessions/{id}/answers", post(answer))
        .route("/v1/listen/trigger", post(trigger))
}

/// The copies ingest hands the sessions once the events are stored: one per owned event whose
/// owner has somewhere to send it (none when nobody listens, so ingest copies nothing).
pub(super) fn copies(
    shared: &Shared,
    events: &[(NewEvent, Vec<Target>)],
) -> Vec<Option<(String, Copy)>> {
    let now = shared.clock.now_ms();
    let mut any = false;
    let copies: Vec<_> = events
        .iter()
        .map(|(event, _)| {
            let owner = event
                .owner
                .as_ref()
                .filter(|o| shared.listen.wants(o, now))?;
            any = true;
            Some((
                owner.clone(),
                Copy {
                    event_id: String::new(),
                    event_type: event.event_type.clone(),
                    body: bytes::Bytes::from(event.body.clone()),
                },
            ))
        })
        .collect();
    if any {
        copies
    } else {
        Vec::new()
    }
}

/// Hands the stored events' copies to their owners' sessions (repeats are not new events).
pub(super) fn publish(shared: &Shared, copies: Vec<Option<(String, Copy)>>, ingested: &[Ingested]) {
    let now = shared.clock.now_ms();
    for (copy, answer) in copies.into_iter().zip(ingested) {
        if let (Some((owner, mut copy)), false) = (copy, answer.duplicate) {
            copy.event_id = answer.event_id.clone();
            shared.listen.publish(&owner, copy, now);
        }
    }
    shared.listen.forget_recent(now);
}

/// The owner of the request's portal token, or the 401 that ends the CLI.
async fn owner_of(shared: &Shared, headers: &HeaderMap) -> Result<(String, String), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string())
        .unwrap_or_default();
    let Ok(key) = shared.sessions.key(shared.store.as_ref()).await else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not answer; retry later",
        ));
    };
    match Sessions::portal(key, &token, shared.clock.now_ms()) {
        Ok(owner) => Ok((owner, token)),
        Err(refusal) => Err(error(StatusCode::UNAUTHORIZED, refused(refusal))),
    }
}

fn refused(refusal: PortalRefusal) -> &'static str {
    match refusal {
        PortalRefusal::Expired => "the portal link expired: ask the provider for a new one",
        PortalRefusal::Invalid => "the portal link is not valid (mistyped, tampered with, or made by another hookd): ask the provider for a new one",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    #[serde(default)]
    events: Vec<String>,
    secret: Option<String>,
    /// The session to resume, after a dropped connection.
    session: Option<String>,
    /// The last event the CLI got, after a restart of hookd.
    last_event_id: Option<String>,
}

/// `POST /v1/listen/sessions`: `201 {session, owner, secret, replayed, missed}`; 200 when it
/// resumed an open session; 429 past `[portal] max_listen_sessions`.
async fn open(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: super::JsonBody,
) -> Response {
    let (owner, _) = match owner_of(&shared, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let request: OpenRequest = if body.0.is_empty() {
        OpenRequest::default()
    } else {
        match body_as(
            &body.0,
            "a listen session request",
            "events, secret, session, last_event_id",
        ) {
            Ok(r) => r,
            Err(response) => return response,
        }
    };
    let now = shared.clock.now_ms();
    if let Some(session) = request
        .session
        .as_deref()
        .and_then(|id| shared.listen.find(id, Some(&owner), now))
    {
        return opened(StatusCode::OK, &session, 0, 0);
    }
    if let Some(bad) = request.events.iter().find(|e| !valid_event_type(e)) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{bad:?} is not an event type (job.<status>, e.g. job.completed)"),
        );
    }
    let secret = request.secret.clone().unwrap_or_else(new_secret);
    if secret.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "the secret is empty");
    }
    let max = shared.config().portal.max_listen_sessions;
    match shared.listen.open(&owner, request.events, secret, max, now) {
        Ok(session) => {
            let resumed = request
                .last_event_id
                .as_deref()
                .map(|last| shared.listen.resume(&session, last))
                .unwrap_or_default();
            tracing::info!(owner = owner.as_str(), session = session.id.as_str(), "listen session opened");
            opened(StatusCode::CREATED, &session, resumed.replayed, resumed.missed)
        }
        Err(Refusal::TooMany { max }) => error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{owner} has {max} listen sessions open already ([portal] max_listen_sessions): quit one first"),
        ),
    }
}

fn opened(status: StatusCode, session: &Session, replayed: usize, missed: u64) -> Response {
    (
        status,
        Json(json!({
            "session": session.id,
            "owner": session.owner,
            "events": session.events,
            "secret": session.secret,
            "replayed": replayed,
            "missed": missed,
        })),
    )
        .into_response()
}

fn valid_event_type(event_type: &str) -> bool {
    event_type
        .strip_prefix("job.")
        .is_some_and(crate::event::valid_status)
}

/// A `whsec_` secret of 24 random bytes: it signs `X-Abstrakt-Signature` as it is, and the
/// Standard Webhooks headers with its decoded key.
fn new_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    )
}

/// The session `id` of the token's owner, or the answer to give instead.
async fn session_of(
    shared: &Shared,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Arc<Session>, String), Response> {
    let (owner, token) = owner_of(shared, headers).await?;
    shared
        .listen
        .find(id, Some(&owner), shared.clock.now_ms())
        .map(|s| (s, token))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no listen session {id:?}: it ended (hookd restarted, or it was gone longer than the grace period)")))
}

/// `DELETE /v1/listen/sessions/{id}`: 204.
async fn close(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match session_of(&shared, &headers, &id).await {
        Ok((session, _)) => {
            shared.listen.close(&session.id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    delivery_id: String,
    event_type: String,
    status: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
}

/// `POST /v1/listen/sessions/{id}/answers`: 204; the dashboard shows it.
async fn answer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: super::JsonBody,
) -> Response {
    let (session, _) = match session_of(&shared, &headers, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let request: AnswerRequest = match body_as(
        &body.0,
        "an answer",
        "delivery_id, event_type, status, error, duration_ms",
    ) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let truncate = |s: String| s.chars().take(256).collect::<String>();
    session.record(crate::listen::Answer {
        delivery_id: truncate(request.delivery_id),
        event_type: truncate(request.event_type),
        status: request.status,
        error: request.error.map(truncate),
        duration_ms: request.duration_ms,
        at_ms: shared.clock.now_ms(),
    });
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    event_type: String,
}

/// `POST /v1/listen/trigger {"event_type": "job.completed"}`: the owner's test event of that
/// type (`request_id` `test_…`), through the owner's open listen sessions alone (not its
/// subscriptions); nothing is stored. `202 {"event_id", "request_id", "sessions"}`.
async fn trigger(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: super::JsonBody,
) -> Response {
    let (owner, _) = match owner_of(&shared, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let request: TriggerRequest = match body_as(&body.0, "a trigger", "event_type") {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Some(status) = request
        .event_type
        .strip_prefix("job.")
        .filter(|s| crate::event::valid_status(s))
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{:?} is not an event type (job.<status>, e.g. job.completed)",
                request.event_type
            ),
        );
    };
    let now = shared.clock.now_ms();
    let request_id = format!(
        "test_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let config = shared.config();
    let rules = crate::event::IngestRules {
        allow_adhoc_targets: false,
        allow_http: config.targets.allow_http,
        guard: config.targets.guard(),
    };
    let event = json!({ "request_id": request_id, "status": status, "owner": owner });
    let event = match crate::event::parse_event(event, &rules, &crate::event::rfc3339_millis(now)) {
        Ok(event) => event,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the test event is invalid: {}", e.error),
            )
        }
    };
    let event_id = format!("evt_{}", ulid::Ulid::new());
    let copy = Arc::new(Copy {
        event_id: event_id.clone(),
        event_type: event.event_type,
        body: bytes::Bytes::from(event.body),
    });
    let sessions = shared.listen.list(Some(&owner), now);
    for session in &sessions {
        session.offer(copy.clone());
    }
    let sessions = sessions.len();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "event_id": event_id, "request_id": request_id, "sessions": sessions })),
    )
        .into_response()
}

/// `GET /v1/listen/sessions/{id}/events`: the session's deliveries as server-sent events.
async fn stream(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (session, token) = match session_of(&shared, &headers, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(receiver) = attach_or_take_over(&session).await else {
        return error(
            StatusCode::CONFLICT,
            "this session is streaming to another connection, which did not let go",
        );
    };
    let attached = Attached {
        shared: shared.clone(),
        generation: session.generation(),
        session,
        receiver: Some(receiver),
        token,
        told_ready: false,
        ended: false,
    };
    Sse::new(events(attached))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The session's queue, taken over from a stream still holding it (whose connection may be
/// dead without hookd knowing yet): it lets go within a [`TICK`]; `None` if it does not.
async fn attach_or_take_over(session: &Session) -> Option<mpsc::Receiver<Arc<Copy>>> {
    if let Some(receiver) = session.attach() {
        return Some(receiver);
    }
    session.supersede();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(receiver) = session.attach() {
            return Some(receiver);
        }
    }
    None
}

/// A stream's hold on its session's queue, given back when the stream ends (the CLI went away,
/// or hookd is stopping): the grace period starts then.
struct Attached {
    shared: Arc<Shared>,
    session: Arc<Session>,
    receiver: Option<mpsc::Receiver<Arc<Copy>>>,
    /// The session's generation when this stream attached: another means let go.
    generation: u64,
    token: String,
    told_ready: bool,
    ended: bool,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            self.session.detach(receiver, self.shared.clock.now_ms());
        }
    }
}

/// How often a stream looks at the link's expiry, hookd's shutdown and the dropped count.
const TICK: Duration = Duration::from_millis(250);

fn events(attached: Attached) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures_util::stream::unfold(attached, |mut at| async move {
        let event = next_event(&mut at).await?;
        Some((Ok(event), at))
    })
}

/// The stream's next event; `None` ends it.
async fn next_event(at: &mut Attached) -> Option<Event> {
    if at.ended {
        return None;
    }
    if !at.told_ready {
        at.told_ready = true;
        return Some(
            Event::default()
                .event("ready")
                .data(json!({ "session": at.session.id }).to_string()),
        );
    }
    loop {
        let dropped = at.session.take_dropped();
        if dropped > 0 {
            return Some(
                Event::default()
                    .event("dropped")
                    .data(json!({ "count": dropped }).to_string()),
            );
        }
        if let Some(reason) = end_reason(at).await {
            at.ended = true;
            return Some(
                Event::default()
                    .event("end")
                    .data(json!({ "reason": reason }).to_string()),
            );
        }
        if at.session.generation() != at.generation {
            return None;
        }
        let receiver = at.receiver.as_mut()?;
        if let Ok(Some(copy)) = tokio::time::timeout(TICK, receiver.recv()).await {
            at.session.taken(&copy);
            return Some(delivery_event(&at.shared, &at.session, &copy));
        }
    }
}

/// Why the stream must end now: the link expired (the CLI stops) or hookd is stopping (the CLI
/// reconnects).
async fn end_reason(at: &Attached) -> Option<&'static str> {
    if at.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Some("restart");
    }
    let key = at
        .shared
        .sessions
        .key(at.shared.store.as_ref())
        .await
        .ok()?;
    match Sessions::portal(key, &at.token, at.shared.clock.now_ms()) {
        Ok(_) => None,
        Err(refusal) => Some(refused(refusal)),
    }
}

/// One delivery of the session: hookd's headers, signed with the session secret, and the body.
fn delivery_event(shared: &Shared, session: &Session, copy: &Copy) -> Event {
    let delivery_id = format!("dlv_{}", ulid::Ulid::new());
    let prefix = shared.config().delivery.header_prefix.clone();
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/json".into()),
        (
            "User-Agent".into(),
            concat!("hookd/", env!("CARGO_PKG_VERSION")).into(),
        ),
        (
            format!("{prefix}-Signature"),
            signing::abstrakt_signature(session.secret.as_bytes(), &copy.body),
        ),
        (format!("{prefix}-Event"), copy.event_type.clone()),
        (format!("{prefix}-Delivery"), delivery_id.clone()),
        (format!("{prefix}-Attempt"), "1".into()),
    ];
    if let Ok(key) = signing::standard_key(&session.secret) {
        // The wall clock, as every delivery's: receivers compare it with theirs.
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        headers.push(("webhook-id".into(), delivery_id.clone()));
        headers.push(("webhook-timestamp".into(), timestamp.to_string()));
        headers.push((
            "webhook-signature".into(),
            signing::standard_signature(&[key], &delivery_id, timestamp, &copy.body),
        ));
    }
    let data: Value = json!({
        "delivery_id": delivery_id,
        "event_type": copy.event_type,
        "headers": headers,
        "body": String::from_utf8_lossy(&copy.body),
    });
    Event::default()
        .event("delivery")
        .id(copy.event_id.clone())
        .data(data.to_string())
}

//! The dashboard's pages and actions. Reads go to the store and the running config; changes
//! go through the API's handlers (one validator, one log line, one place for the rules), and
//! their JSON answer is shown as a page. A portal visitor sees only the subscriptions of its
//! owner and their deliveries: everything else is answered as if it did not exist (404).

use std::collections::HashSet;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::{UiState, COOKIE};
use super::{html, message, see_other, store_down, Action, Nav, Params, Scope, Viewer};
use crate::api::admin::secret_fingerprint;
use crate::api::subscriptions::{own_breaker, BREAKER_KEYS};
use crate::api::JsonBody;
use crate::config::{
    ApiToken, BreakerPolicy, CustomHeader, EventFilter, Scope as TokenScope, SignatureScheme,
    Subscription,
};
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::store::{Attempt, Delivery, DeliveryFilter, DeliveryState};

/// Rows on a page of deliveries.
const PAGE: usize = 50;
/// Deliveries the overview counts at most, per figure.
const COUNT_CAP: usize = 20_000;
/// Listing calls one overview figure makes at most (an engine examines a bounded number of
/// records per call): the overview stays cheap on a store of millions.
const COUNT_CALLS: usize = 25;
/// Dead deliveries one "retry all" requeues at most.
const RETRY_CAP: usize = 10_000;
/// Characters of a receiver's answer shown.
const EXCERPT_CHARS: usize = 2048;
/// Characters of an event body shown.
const BODY_CHARS: usize = 64 * 1024;
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

/// `base + path` with `notice` in the query.
fn with_notice(location: &str, notice: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("notice", notice)
        .finish();
    format!("{location}{sep}{q}")
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
    lang: Option<String>,
}

// ---------------------------------------------------------------- sign-in

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    open: bool,
    error: Option<String>,
}

pub async fn login_form(State(shared): State<Arc<Shared>>) -> Response {
    let open = shared.config().api.tokens.is_empty();
    html(StatusCode::OK, &LoginPage { open, error: None })
}

fn admin_token(tokens: &[ApiToken], presented: &str) -> bool {
    // Every token is compared, so the time taken does not tell which one matched.
    tokens
        .iter()
        .filter(|t| {
            crate::api::constant_time_eq(t.secret.expose().as_bytes(), presented.as_bytes())
        })
        .fold(false, |ok, t| ok | t.allows(TokenScope::Admin))
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so).
fn over_tls(headers: &HeaderMap, shared: &Shared) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
        || shared
            .config()
            .api
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https")
}

pub async fn login(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !super::same_origin(&headers, &shared) {
        return super::cross_origin();
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let presented = fields
        .iter()
        .find(|(k, _)| k == "token")
        .map_or("", |(_, v)| v.trim());
    let config = shared.config();
    let open = config.api.tokens.is_empty();
    if !open && !admin_token(&config.api.tokens, presented) {
        tracing::warn!("dashboard: sign-in refused (not an admin token)");
        return html(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                open,
                error: Some("That is not an admin token.".to_string()),
            },
        );
    }
    let Ok(key) = shared.ui.key(shared.store.as_ref()).await else {
        return store_down();
    };
    let ttl = config.api.ui_session_ttl;
    let expires = shared
        .clock
        .now_ms()
        .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    // The session names the token that opened it, and ends when that token is removed.
    let value = UiState::new_session(key, expires, if open { "" } else { presented });
    let secure = if over_tls(&headers, &shared) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs().max(1)
    );
    tracing::info!("dashboard: signed in");
    let mut response = see_other("/ui");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    // Extracted for its checks only: same origin, and the session's CSRF token.
    _checked: Action,
) -> Response {
    let now = shared.clock.now_ms();
    let Ok(key) = shared.ui.key(shared.store.as_ref()).await else {
        return store_down();
    };
    let session = super::cookie(&headers, COOKIE)
        .and_then(|c| UiState::session(key, c, now, &shared.config().api.tokens));
    if let Some(session) = session {
        if let Err(e) = shared.ui.revoke(shared.store.as_ref(), &session, now).await {
            tracing::error!(error = %e, "dashboard: sign-out could not be stored");
            return store_down();
        }
    }
    let mut response = see_other("/ui/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hookd_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

// ---------------------------------------------------------------- subscriptions as rows

/// One subscription as the pages show it (never its secret).
#[derive(Debug, Clone)]
pub struct SubRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub owner: String,
    pub managed_by: &'static str,
    pub paused: bool,
    pub last_success: String,
    pub last_failure: String,
    pub failures: u32,
    pub last_error: String,
    pub fingerprint: String,
    pub signature: &'static str,
    /// Custom headers as shown: a secret's value is masked.
    pub headers: Vec<(String, String)>,
    /// The plain (not secret) headers as the edit form's lines.
    pub plain_headers: String,
    /// Disabled by its circuit breaker: when and why (empty when it is not).
    pub disabled: String,
    /// Its circuit breaker: closed, open or disabled.
    pub breaker: &'static str,
    /// Its rate limit, as shown ("20/s"; empty: none).
    pub rate_limit: String,
    /// Its circuit breaker's settings in effect (its own, else `[delivery]`'s), labelled.
    pub breaker_settings: Vec<(&'static str, String)>,
}

/// The circuit breaker's keys ([`BREAKER_KEYS`], in that order) as the form and the
/// subscription page name them, and what each means.
const BREAKER_LABELS: [(&str, &str); 4] = [
    (
        "Breaker opens after",
        "Failed attempts in a row; while open, one attempt at a time until one succeeds. 0: never.",
    ),
    (
        "Breaker probe interval",
        "While open, the least time from a failed probe to the next, like 30s or 5m.",
    ),
    (
        "Disabled after failing for",
        "From the first failure after the last success, like 5d; a disabled subscription's deliveries wait until an admin enables it. 0s: never.",
    ),
    ("Disabled after", "Failed attempts in a row. 0: never."),
];

/// A breaker policy as the form writes its keys: "5", "30s", "5days", "0".
fn breaker_texts(policy: &BreakerPolicy) -> [String; 4] {
    [
        policy.failures.to_string(),
        humantime::format_duration(policy.probe_interval).to_string(),
        humantime::format_duration(policy.disable_after).to_string(),
        policy.disable_after_failures.to_string(),
    ]
}

/// A breaker policy as the subscription page shows it, labelled.
fn breaker_settings(policy: &BreakerPolicy) -> Vec<(&'static str, String)> {
    BREAKER_KEYS
        .iter()
        .zip(BREAKER_LABELS)
        .zip(breaker_texts(policy))
        .map(|((key, (label, _)), text)| {
            let count = key.ends_with("_failures");
            let shown = match text.as_str() {
                "0" | "0s" if *key != "breaker_probe_interval" => "never".to_string(),
                _ if count => format!("{text} failed attempts in a row"),
                _ => text,
            };
            (label, shown)
        })
        .collect()
}

/// Custom headers as a page shows them: a secret one's value masked.
fn shown_headers(custom: &[CustomHeader]) -> Vec<(String, String)> {
    custom
        .iter()
        .map(|h| (h.name.to_string(), h.shown("•••••••• (secret)").to_string()))
        .collect()
}

fn events_text(events: &EventFilter) -> String {
    match events {
        EventFilter::All => "*".to_string(),
        EventFilter::Only(types) => types.join(", "),
    }
}

fn signature_name(s: SignatureScheme) -> &'static str {
    match s {
        SignatureScheme::Abstrakt => "abstrakt",
        SignatureScheme::Standard => "standard",
        SignatureScheme::Both => "both",
    }
}

/// The subscriptions `viewer` may see, with their health.
async fn rows(shared: &Shared, viewer: &Viewer) -> Result<Vec<SubRow>, Response> {
    let states = shared
        .store
        .subscription_states()
        .await
        .map_err(|_| store_down())?;
    let config = shared.config();
    let stored = shared.settings.stored();
    let mine: Option<HashSet<String>> = match &viewer.scope {
        Scope::Admin => None,
        Scope::Owner(owner) => Some(owned(shared, owner).into_iter().collect()),
    };
    Ok(config
        .subscriptions
        .iter()
        .filter(|s| mine.as_ref().is_none_or(|m| m.contains(&s.id)))
        .map(|s| {
            let st = stored.iter().find(|st| st.id == s.id);
            let state = states.get(&s.id).cloned().unwrap_or_default();
            SubRow {
                id: s.id.clone(),
                url: s.url.to_string(),
                events: events_text(&s.events),
                owner: st.and_then(|st| st.owner.clone()).unwrap_or_default(),
                managed_by: if st.is_some() { "api" } else { "config" },
                paused: shared.is_paused(&s.id),
                last_success: when(state.last_success_ms),
                last_failure: when(state.last_failure_ms),
                failures: state.consecutive_failures,
                last_error: truncate(state.last_error.as_deref().unwrap_or(""), CELL_CHARS),
                fingerprint: secret_fingerprint(s.secret.expose()),
                signature: signature_name(s.signature),
                headers: shown_headers(&s.headers),
                disabled: match (state.disabled_ms, &state.disabled_reason) {
                    (Some(at), reason) => format!(
                        "since {}: {}",
                        when(Some(at)),
                        reason.as_deref().unwrap_or("")
                    ),
                    _ => String::new(),
                },
                breaker: shared.settings.gate(&s.id, shared.clock.now_ms()).name(),
                rate_limit: s.rate_limit.map(|r| format!("{r}/s")).unwrap_or_default(),
                breaker_settings: breaker_settings(&s.breaker),
                plain_headers: s
                    .headers
                    .iter()
                    .filter(|h| !h.secret)
                    .map(|h| format!("{}: {}", h.name.as_str(), h.value.expose()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        })
        .collect())
}

// ---------------------------------------------------------------- overview

#[derive(Debug, Default)]
struct Counts {
    created: usize,
    delivered: usize,
    retrying: usize,
    dead: usize,
    pending: usize,
    /// The count stopped at [`COUNT_CAP`].
    capped: bool,
}

/// Counts the deliveries `filter` matches, by state, up to [`COUNT_CAP`].
async fn count(shared: &Shared, filter: &DeliveryFilter) -> Result<Counts, Response> {
    let mut counts = Counts::default();
    let mut cursor: Option<String> = None;
    for _ in 0..COUNT_CALLS {
        let (page, next) = shared
            .store
            .list_deliveries(filter, cursor.as_deref(), 1000)
            .await
            .map_err(|_| store_down())?;
        for d in &page {
            counts.created += 1;
            match d.state {
                DeliveryState::Delivered => counts.delivered += 1,
                DeliveryState::Dead => counts.dead += 1,
                DeliveryState::Scheduled | DeliveryState::InFlight => {
                    counts.pending += 1;
                    if d.attempts > 0 {
                        counts.retrying += 1;
                    }
                }
            }
        }
        if counts.created >= COUNT_CAP {
            counts.capped = next.is_some();
            return Ok(counts);
        }
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(counts),
        }
    }
    // A filter that matches little in a big store: what was examined is all that is counted.
    counts.capped = true;
    Ok(counts)
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

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    day: Counts,
    pending: String,
    dead: String,
    subs: Vec<SubRow>,
    failing: Vec<SubRow>,
}

fn capped(n: usize, capped: bool) -> String {
    if capped {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

pub async fn overview(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let now = shared.clock.now_ms();
    let day_filter = scoped(
        &shared,
        &viewer,
        DeliveryFilter {
            since_ms: Some(now.saturating_sub(24 * 3600 * 1000)),
            ..Default::default()
        },
    );
    let day = match count(&shared, &day_filter).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let dead_filter = scoped(
        &shared,
        &viewer,
        DeliveryFilter {
            state: Some(DeliveryState::Dead),
            ..Default::default()
        },
    );
    let dead = match count(&shared, &dead_filter).await {
        Ok(c) => capped(c.dead, c.capped),
        Err(r) => return r,
    };
    let pending = match &viewer.scope {
        Scope::Admin => match shared.store.pending_stats(now).await {
            Ok(p) => (p.ready + p.scheduled + p.in_flight).to_string(),
            Err(_) => return store_down(),
        },
        Scope::Owner(_) => {
            let mut total = 0;
            let mut over = false;
            for state in [DeliveryState::Scheduled, DeliveryState::InFlight] {
                let filter = DeliveryFilter {
                    state: Some(state),
                    ..Default::default()
                };
                match count(&shared, &scoped(&shared, &viewer, filter)).await {
                    Ok(c) => {
                        total += c.pending;
                        over |= c.capped;
                    }
                    Err(r) => return r,
                }
            }
            capped(total, over)
        }
    };
    let subs = match rows(&shared, &viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let failing = subs.iter().filter(|s| s.failures > 0).cloned().collect();
    html(
        StatusCode::OK,
        &OverviewPage {
            nav: viewer.nav("overview", q.notice),
            day,
            pending,
            dead,
            subs,
            failing,
        },
    )
}

// ---------------------------------------------------------------- deliveries

#[derive(Debug, Default, Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
    subscription: Option<String>,
    event_type: Option<String>,
    /// Operators only: the deliveries of one owner's events.
    owner: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A time from the filter form: `datetime-local` (`2026-11-30T13:05`, read as UTC) or
/// RFC 3339.
fn parse_when(text: &str) -> Option<u64> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .or_else(|| {
            let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
            let fmt_s =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            time::PrimitiveDateTime::parse(text, &fmt)
                .or_else(|_| time::PrimitiveDateTime::parse(text, &fmt_s))
                .ok()
                .map(time::PrimitiveDateTime::assume_utc)
        })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The filter the query asks for, or the sentence saying what is wrong with it.
fn filter_of(
    shared: &Shared,
    viewer: &Viewer,
    q: &DeliveriesQuery,
) -> Result<DeliveryFilter, String> {
    let state = match nonempty(&q.status) {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| format!("Unknown status {s:?}."))?),
    };
    let subscription = nonempty(&q.subscription).map(str::to_string);
    if let Some(s) = &subscription {
        let adhoc = viewer.scope == Scope::Admin && s == crate::store::ADHOC;
        if !(adhoc || may_see(shared, viewer, s)) {
            return Err(format!("There is no subscription {s:?}."));
        }
    }
    let time = |field: &str, v: &Option<String>| match nonempty(v) {
        None => Ok(None),
        Some(t) => parse_when(t)
            .map(Some)
            .ok_or_else(|| format!("{field} must be a date and time like 2026-11-30T13:05.")),
    };
    Ok(scoped(
        shared,
        viewer,
        DeliveryFilter {
            state,
            subscription,
            any_subscription: None,
            event_type: nonempty(&q.event_type).map(str::to_string),
            owner: nonempty(&q.owner).map(str::to_string),
            since_ms: time("Since", &q.since)?,
            until_ms: time("Until", &q.until)?,
        },
    ))
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub event_type: String,
    pub subscription: String,
    pub owner: String,
    pub state: &'static str,
    pub attempts: u32,
    pub created: String,
    pub last_error: String,
}

fn row(d: &Delivery) -> DeliveryRow {
    DeliveryRow {
        id: d.id.clone(),
        event_type: d.event_type.clone(),
        subscription: d.subscription.clone(),
        owner: d.owner.clone().unwrap_or_default(),
        state: d.state.as_str(),
        attempts: d.attempts,
        created: rfc3339_millis(d.created_ms),
        last_error: truncate(d.last_error.as_deref().unwrap_or(""), CELL_CHARS),
    }
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    nav: Nav,
    status: String,
    subscription: String,
    event_type: String,
    owner: String,
    since: String,
    until: String,
    q: String,
    subscriptions: Vec<String>,
    rows: Vec<DeliveryRow>,
    problem: Option<String>,
    /// The query of the next page, when there may be one.
    next: Option<String>,
    /// The filter as a query string, for "first page" and retry's return.
    query: String,
}

impl DeliveriesPage {
    fn is_status(&self, s: &str) -> bool {
        self.status == s
    }

    fn is_subscription(&self, s: &str) -> bool {
        self.subscription == s
    }
}

fn filter_query(q: &DeliveriesQuery) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("status", &q.status),
        ("subscription", &q.subscription),
        ("event_type", &q.event_type),
        ("owner", &q.owner),
        ("since", &q.since),
        ("until", &q.until),
        ("q", &q.q),
    ] {
        if let Some(v) = nonempty(v) {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// Whether `viewer` may see delivery `d`.
fn may_see_delivery(shared: &Shared, viewer: &Viewer, d: &Delivery) -> bool {
    match &viewer.scope {
        Scope::Admin => true,
        Scope::Owner(owner) => {
            d.adhoc.is_none()
                && d.owner.as_ref() == Some(owner)
                && may_see(shared, viewer, &d.subscription)
        }
    }
}

/// The statuses a request id is looked up with: the usual job statuses, the test event's,
/// and every status a subscription names.
fn statuses(shared: &Shared) -> Vec<String> {
    let mut out: Vec<String> = [
        "completed",
        "failed",
        "succeeded",
        "cancelled",
        "canceled",
        "queued",
        "processing",
        "running",
        "started",
        "timeout",
        "test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for s in &shared.config().subscriptions {
        if let EventFilter::Only(types) = &s.events {
            for t in types {
                if let Some(status) = t.strip_prefix("job.") {
                    if !out.iter().any(|o| o == status) {
                        out.push(status.to_string());
                    }
                }
            }
        }
    }
    out
}

/// The deliveries of events found by id or request id, that `viewer` may see.
async fn search(shared: &Shared, viewer: &Viewer, q: &str) -> Result<Vec<Delivery>, Response> {
    let mut events = Vec::new();
    if q.starts_with("evt_") {
        events.push(q.to_string());
    } else {
        for status in statuses(shared) {
            match shared.store.event_by_request(q, &status).await {
                Ok(Some(id)) => events.push(id),
                Ok(None) => {}
                Err(_) => return Err(store_down()),
            }
        }
    }
    let mut out = Vec::new();
    for event in events {
        let Ok(meta) = shared.store.event_meta(&event).await else {
            return Err(store_down());
        };
        for id in meta.map(|m| m.deliveries).unwrap_or_default() {
            match shared.store.delivery(&id).await {
                Ok(Some(d)) if may_see_delivery(shared, viewer, &d) => out.push(d),
                Ok(_) => {}
                Err(_) => return Err(store_down()),
            }
        }
    }
    out.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(out)
}

pub async fn deliveries(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    let mut page = DeliveriesPage {
        nav: viewer.nav("deliveries", q.notice.clone()),
        status: nonempty(&q.status).unwrap_or("").to_string(),
        subscription: nonempty(&q.subscription).unwrap_or("").to_string(),
        event_type: nonempty(&q.event_type).unwrap_or("").to_string(),
        owner: nonempty(&q.owner).unwrap_or("").to_string(),
        since: nonempty(&q.since).unwrap_or("").to_string(),
        until: nonempty(&q.until).unwrap_or("").to_string(),
        q: nonempty(&q.q).unwrap_or("").to_string(),
        subscriptions: match &viewer.scope {
            Scope::Admin => shared
                .config()
                .subscriptions
                .iter()
                .map(|s| s.id.clone())
                .collect(),
            Scope::Owner(owner) => owned(&shared, owner),
        },
        rows: Vec::new(),
        problem: None,
        next: None,
        query: filter_query(&q),
    };
    if let Some(term) = nonempty(&q.q) {
        if term.starts_with("dlv_") {
            return match shared.store.delivery(term).await {
                Ok(Some(d)) if may_see_delivery(&shared, &viewer, &d) => {
                    see_other(&format!("{}/deliveries/{}", viewer.base, d.id))
                }
                Ok(_) => {
                    page.problem = Some(format!("No delivery {term}."));
                    html(StatusCode::NOT_FOUND, &page)
                }
                Err(_) => store_down(),
            };
        }
        return match search(&shared, &viewer, term).await {
            Ok(found) => {
                if found.is_empty() {
                    page.problem = Some(format!("No event or request {term:?} found."));
                }
                page.rows = found.iter().map(row).collect();
                html(StatusCode::OK, &page)
            }
            Err(r) => r,
        };
    }
    let filter = match filter_of(&shared, &viewer, &q) {
        Ok(f) => f,
        Err(problem) => {
            page.problem = Some(problem);
            return html(StatusCode::BAD_REQUEST, &page);
        }
    };
    match shared
        .store
        .list_deliveries(&filter, nonempty(&q.cursor), PAGE)
        .await
    {
        Ok((found, next)) => {
            page.rows = found.iter().map(row).collect();
            page.next = next.map(|cursor| {
                let mut s = url::form_urlencoded::Serializer::new(page.query.clone());
                s.append_pair("cursor", &cursor);
                s.finish()
            });
            html(StatusCode::OK, &page)
        }
        Err(_) => store_down(),
    }
}

/// `POST .../deliveries/retry`: requeues the dead deliveries the filter matches.
pub async fn retry_matching(State(shared): State<Arc<Shared>>, action: Action) -> Response {
    let f = &action.fields;
    let q = DeliveriesQuery {
        status: f.get("status").map(str::to_string),
        subscription: f.get("subscription").map(str::to_string),
        event_type: f.get("event_type").map(str::to_string),
        since: f.get("since").map(str::to_string),
        until: f.get("until").map(str::to_string),
        ..Default::default()
    };
    let back = format!("{}/deliveries?{}", action.viewer.base, filter_query(&q));
    let mut filter = match filter_of(&shared, &action.viewer, &q) {
        Ok(f) => f,
        Err(problem) => return see_other(&with_notice(&back, &problem)),
    };
    if filter.state.is_some_and(|s| s != DeliveryState::Dead) {
        return see_other(&with_notice(
            &back,
            "Only dead deliveries are retried: 0 requeued.",
        ));
    }
    filter.state = Some(DeliveryState::Dead);
    let now = shared.clock.now_ms();
    let mut requeued = 0;
    let mut cursor: Option<String> = None;
    let mut calls = 0;
    while requeued < RETRY_CAP && calls < 10 * COUNT_CALLS {
        calls += 1;
        let Ok((page, next)) = shared
            .store
            .list_deliveries(&filter, cursor.as_deref(), 500)
            .await
        else {
            return store_down();
        };
        for d in page {
            if shared.store.requeue(&d.id, now).await.is_ok() {
                requeued += 1;
            }
        }
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    shared.wake.notify_one();
    tracing::info!(requeued, "dead deliveries requeued from the dashboard");
    see_other(&with_notice(
        &back,
        &format!("{requeued} dead deliveries requeued."),
    ))
}

#[derive(Debug)]
pub struct AttemptRow {
    pub number: u32,
    pub started: String,
    pub status: String,
    pub duration_ms: u64,
    pub outcome: &'static str,
    pub error: String,
    pub excerpt: String,
}

fn attempt_row(a: &Attempt) -> AttemptRow {
    AttemptRow {
        number: a.number,
        started: rfc3339_millis(a.started_ms),
        status: a
            .status_code
            .map_or_else(|| "—".to_string(), |c| c.to_string()),
        duration_ms: a.duration_ms,
        outcome: a.outcome.as_str(),
        error: a.error.clone().unwrap_or_default(),
        excerpt: truncate(a.response_excerpt.as_deref().unwrap_or(""), EXCERPT_CHARS),
    }
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    nav: Nav,
    d: DeliveryRow,
    url: String,
    next_attempt: String,
    finished: String,
    headers: Vec<(String, String)>,
    body: String,
    attempts: Vec<AttemptRow>,
    curl: String,
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The headers a delivery is sent with, signatures and secret custom headers masked.
fn sent_headers(
    prefix: &str,
    d: &Delivery,
    scheme: SignatureScheme,
    custom: &[CustomHeader],
) -> Vec<(String, String)> {
    let mut out = shown_headers(custom);
    out.extend([
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "User-Agent".to_string(),
            concat!("hookd/", env!("CARGO_PKG_VERSION")).to_string(),
        ),
        (format!("{prefix}-Event"), d.event_type.clone()),
        (format!("{prefix}-Delivery"), d.id.clone()),
        (
            format!("{prefix}-Attempt"),
            "the attempt's number, from 1".to_string(),
        ),
    ]);
    if scheme != SignatureScheme::Standard {
        out.push((
            format!("{prefix}-Signature"),
            "•••••••• (hex HMAC-SHA256 of the body with the secret; masked)".to_string(),
        ));
    }
    if scheme != SignatureScheme::Abstrakt {
        out.push(("webhook-id".to_string(), d.id.clone()));
        out.push((
            "webhook-timestamp".to_string(),
            "the attempt's Unix time".to_string(),
        ));
        out.push((
            "webhook-signature".to_string(),
            "v1,•••••••• (masked)".to_string(),
        ));
    }
    out
}

/// The shell variable a secret custom header's value is taken from in [`curl`].
fn header_variable(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HEADER_{name}")
}

/// A shell snippet that sends the delivery again as hookd would, signing with
/// `$WEBHOOK_SECRET` (never filled in here); secret custom headers come from variables too.
fn curl(
    prefix: &str,
    url: &str,
    d: &Delivery,
    scheme: SignatureScheme,
    body: &str,
    custom: &[CustomHeader],
) -> String {
    let mut out = String::from(
        "# Set WEBHOOK_SECRET to the subscription's secret first: it is never shown here.\n",
    );
    for h in custom.iter().filter(|h| h.secret) {
        out.push_str(&format!(
            "# Set {} to the value of the secret header {} too.\n",
            header_variable(h.name.as_str()),
            h.name
        ));
    }
    out.push_str(&format!("printf '%s' {} > body.json\n", shell_quote(body)));
    let mut headers: Vec<String> = custom
        .iter()
        .map(|h| {
            if h.secret {
                format!(
                    "-H {}\"${}\"",
                    shell_quote(&format!("{}: ", h.name)),
                    header_variable(h.name.as_str())
                )
            } else {
                format!(
                    "-H {}",
                    shell_quote(&format!("{}: {}", h.name, h.value.expose()))
                )
            }
        })
        .collect();
    headers.extend([
        "-H 'Content-Type: application/json'".to_string(),
        format!(
            "-H {}",
            shell_quote(&format!("{prefix}-Event: {}", d.event_type))
        ),
        format!(
            "-H {}",
            shell_quote(&format!("{prefix}-Delivery: {}", d.id))
        ),
        format!(
            "-H {}",
            shell_quote(&format!("{prefix}-Attempt: {}", d.attempts + 1))
        ),
    ]);
    if scheme != SignatureScheme::Standard {
        out.push_str(
            "signature=$(openssl dgst -sha256 -hmac \"$WEBHOOK_SECRET\" -hex < body.json | sed 's/^.*= //')\n",
        );
        headers.push(format!(
            "-H {}\"$signature\"",
            shell_quote(&format!("{prefix}-Signature: "))
        ));
    }
    if scheme != SignatureScheme::Abstrakt {
        out.push_str("timestamp=$(date +%s)\n");
        out.push_str("key=$(printf '%s' \"${WEBHOOK_SECRET#whsec_}\" | base64 -d | od -An -tx1 | tr -d ' \\n')\n");
        out.push_str(&format!(
            "standard=$( (printf '%s.%s.' {} \"$timestamp\"; cat body.json) | openssl dgst -sha256 -mac HMAC -macopt \"hexkey:$key\" -binary | base64)\n",
            shell_quote(&d.id)
        ));
        headers.push(format!(
            "-H {}",
            shell_quote(&format!("webhook-id: {}", d.id))
        ));
        headers.push("-H 'webhook-timestamp: '\"$timestamp\"".to_string());
        headers.push("-H 'webhook-signature: v1,'\"$standard\"".to_string());
    }
    out.push_str(&format!("curl -sS -X POST {} \\\n", shell_quote(url)));
    for h in headers {
        out.push_str(&format!("  {h} \\\n"));
    }
    out.push_str("  --data-binary @body.json\n");
    out
}

pub async fn delivery(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    let d = match shared.store.delivery(&id).await {
        Ok(Some(d)) if may_see_delivery(&shared, &viewer, &d) => d,
        Ok(_) => return not_found("such delivery"),
        Err(_) => return store_down(),
    };
    let (Ok(attempts), Ok(body)) = (
        shared.store.attempts(&id).await,
        shared.store.event_body(&d.event_id).await,
    ) else {
        return store_down();
    };
    let config = shared.config();
    let sub: Option<&Subscription> = config.subscription(&d.subscription);
    let (url, scheme) = match (&d.adhoc, sub) {
        (Some(adhoc), _) => (
            crate::api::admin::redacted_url(&adhoc.url),
            SignatureScheme::Abstrakt,
        ),
        (None, Some(s)) => (s.url.to_string(), s.signature),
        (None, None) => (
            "(the subscription no longer exists)".to_string(),
            SignatureScheme::Abstrakt,
        ),
    };
    let body = body
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let prefix = &config.delivery.header_prefix;
    let custom: &[CustomHeader] = match (&d.adhoc, sub) {
        (None, Some(s)) => &s.headers,
        _ => &[],
    };
    let page = DeliveryPage {
        nav: viewer.nav("deliveries", q.notice),
        d: row(&d),
        headers: sent_headers(prefix, &d, scheme, custom),
        curl: curl(prefix, &url, &d, scheme, &body, custom),
        body: truncate(&body, BODY_CHARS),
        url,
        next_attempt: when(d.due_ms.filter(|_| d.state == DeliveryState::Scheduled)),
        finished: when(d.finished_ms),
        attempts: attempts.iter().map(attempt_row).collect(),
    };
    html(StatusCode::OK, &page)
}

/// `POST .../deliveries/{id}/retry`: the admin API's retry, for a delivery the viewer may see.
pub async fn retry_one(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    action: Action,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    match shared.store.delivery(&id).await {
        Ok(Some(d)) if may_see_delivery(&shared, &action.viewer, &d) => {}
        Ok(_) => return not_found("such delivery"),
        Err(_) => return store_down(),
    }
    let (status, body) =
        answer(crate::api::admin::retry_delivery(State(shared.clone()), Path(id.clone())).await)
            .await;
    let notice = if status.is_success() {
        "Requeued: the next attempt is due now.".to_string()
    } else {
        error_text(&body)
    };
    see_other(&with_notice(
        &format!("{}/deliveries/{id}", action.viewer.base),
        &notice,
    ))
}

// ---------------------------------------------------------------- subscriptions

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct SubscriptionsPage {
    nav: Nav,
    subs: Vec<SubRow>,
}

pub async fn subscriptions(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    match rows(&shared, &viewer).await {
        Ok(subs) => html(
            StatusCode::OK,
            &SubscriptionsPage {
                nav: viewer.nav("subscriptions", q.notice),
                subs,
            },
        ),
        Err(r) => r,
    }
}

/// The create form's values and its errors by field.
#[derive(Debug, Default)]
pub struct Draft {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub other_events: String,
    pub signature: String,
    pub owner: String,
    /// Custom headers, one `Name: value` per line.
    pub headers: String,
    /// Attempts per second, as typed; empty: no limit.
    pub rate_limit: String,
    /// The circuit breaker's keys ([`BREAKER_KEYS`]), as typed; empty: `[delivery]`'s.
    pub breaker: [String; 4],
    /// `[delivery]`'s breaker keys: what an empty field means.
    pub breaker_defaults: [String; 4],
    pub errors: Vec<(String, String)>,
}

/// One circuit-breaker field of the subscription form.
#[derive(Debug)]
pub struct BreakerInput<'a> {
    pub key: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    /// A count of attempts (else a duration).
    pub count: bool,
    pub value: &'a str,
    pub default: &'a str,
}

impl Draft {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, e)| e.as_str())
    }

    /// How an event type's box is labelled.
    pub fn label(event: &str) -> &str {
        if event == "*" {
            "every event (*)"
        } else {
            event
        }
    }

    pub fn has(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// The circuit breaker's fields, with their values.
    pub fn breaker_inputs(&self) -> Vec<BreakerInput<'_>> {
        BREAKER_KEYS
            .iter()
            .zip(BREAKER_LABELS)
            .zip(self.breaker.iter().zip(&self.breaker_defaults))
            .map(|((key, (label, hint)), (value, default))| BreakerInput {
                key,
                label,
                hint,
                count: key.ends_with("_failures"),
                value,
                default,
            })
            .collect()
    }

    /// Errors that belong to no field of the form.
    pub fn general(&self) -> Vec<&str> {
        const FIELDS: [&str; 8] = [
            "id",
            "url",
            "events",
            "secret",
            "signature",
            "owner",
            "headers",
            "rate_limit",
        ];
        self.errors
            .iter()
            .filter(|(f, _)| !FIELDS.contains(&f.as_str()) && !BREAKER_KEYS.contains(&f.as_str()))
            .map(|(_, e)| e.as_str())
            .collect()
    }

    fn from_fields(f: &super::Fields) -> Draft {
        Draft {
            id: f.get("id").unwrap_or("").to_string(),
            url: f.get("url").unwrap_or("").to_string(),
            events: f.all("events").into_iter().map(str::to_string).collect(),
            other_events: f.get("other_events").unwrap_or("").to_string(),
            signature: f.get("signature").unwrap_or("abstrakt").to_string(),
            owner: f.get("owner").unwrap_or("").to_string(),
            headers: f.get("headers").unwrap_or("").to_string(),
            rate_limit: f.get("rate_limit").unwrap_or("").trim().to_string(),
            breaker: BREAKER_KEYS.map(|key| f.get(key).unwrap_or("").to_string()),
            breaker_defaults: Default::default(),
            errors: Vec::new(),
        }
    }

    /// The breaker fields the form sent, as the API takes them: a count as a number, a
    /// duration (or what is neither, for the API to refuse) as typed, and an emptied field as
    /// `""`, which removes the subscription's own value.
    fn breaker_json(&self, fields: &super::Fields, body: &mut Value) {
        for (key, text) in BREAKER_KEYS.iter().zip(&self.breaker) {
            if !fields.has(key) {
                continue;
            }
            body[*key] = text
                .parse::<u64>()
                .map_or_else(|_| json!(text), |n| json!(n));
        }
    }

    /// The rate limit as the API takes it: `0` (none) when empty; `None`, with an error of the
    /// field, when it is not a number (the API checks its range).
    fn rate_limit_value(&mut self) -> Option<Value> {
        if self.rate_limit.is_empty() {
            return Some(json!(0));
        }
        match self.rate_limit.parse::<f64>() {
            Ok(rate) if rate.is_finite() => Some(json!(rate)),
            _ => {
                self.errors.push((
                    "rate_limit".to_string(),
                    format!(
                        "{:?} is not a number of attempts per second, like 20 or 0.5",
                        self.rate_limit
                    ),
                ));
                None
            }
        }
    }

    /// The header lines as the API's `headers` object; a line without a colon is an error of
    /// the `headers` field.
    fn header_map(&mut self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        for line in self
            .headers
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            match line.split_once(':') {
                Some((name, value)) => {
                    map.insert(name.trim().to_string(), json!(value.trim()));
                }
                None => self.errors.push((
                    "headers".to_string(),
                    format!("{line:?}: write each header as Name: value"),
                )),
            }
        }
        map
    }

    /// Every event type asked for: the boxes ticked and the others typed.
    fn all_events(&self) -> Vec<String> {
        let mut out = self.events.clone();
        for e in self
            .other_events
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if !out.iter().any(|o| o == e) {
                out.push(e.to_string());
            }
        }
        out
    }

    /// The API's 422 (or 409) as errors by field.
    fn take_errors(&mut self, body: &Value) {
        if let Some(all) = body.get("errors").and_then(Value::as_array) {
            for e in all {
                let field = e.get("field").and_then(Value::as_str).unwrap_or("");
                let field = field.split(['[', '.']).next().unwrap_or(field);
                let text = e.get("error").and_then(Value::as_str).unwrap_or("invalid");
                self.errors.push((field.to_string(), text.to_string()));
            }
        }
        if self.errors.is_empty() {
            let field = body.get("field").and_then(Value::as_str).unwrap_or("");
            self.errors.push((field.to_string(), error_text(body)));
        }
    }
}

/// The event types offered as boxes; others are typed.
const COMMON_EVENTS: [&str; 3] = ["job.completed", "job.failed", "*"];

#[derive(Template)]
#[template(path = "subscription_form.html")]
struct FormPage {
    nav: Nav,
    draft: Draft,
    common: [&'static str; 3],
}

pub async fn new_subscription(viewer: Viewer, State(shared): State<Arc<Shared>>) -> Response {
    html(
        StatusCode::OK,
        &FormPage {
            nav: viewer.nav("subscriptions", None),
            draft: Draft {
                signature: "abstrakt".to_string(),
                events: vec!["job.completed".to_string(), "job.failed".to_string()],
                breaker_defaults: breaker_texts(&shared.config().delivery.breaker),
                ..Default::default()
            },
            common: COMMON_EVENTS,
        },
    )
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    nav: Nav,
    title: &'static str,
    id: String,
    secret: String,
    note: String,
}

pub async fn create_subscription(State(shared): State<Arc<Shared>>, action: Action) -> Response {
    let mut draft = Draft::from_fields(&action.fields);
    let owner = match &action.viewer.scope {
        Scope::Admin => (!draft.owner.is_empty()).then(|| draft.owner.clone()),
        Scope::Owner(o) => Some(o.clone()),
    };
    let mut body = json!({ "url": draft.url, "events": draft.all_events() });
    if !draft.id.is_empty() {
        body["id"] = json!(draft.id);
    }
    if let Some(secret) = action.fields.get("secret") {
        body["secret"] = json!(secret);
    }
    if !draft.signature.is_empty() {
        body["signature"] = json!(draft.signature);
    }
    if let Some(owner) = owner {
        body["owner"] = json!(owner);
    }
    let headers = draft.header_map();
    if !headers.is_empty() {
        body["headers"] = Value::Object(headers);
    }
    if !draft.rate_limit.is_empty() {
        if let Some(rate) = draft.rate_limit_value() {
            body["rate_limit"] = rate;
        }
    }
    draft.breaker_json(&action.fields, &mut body);
    let nav = action.viewer.nav("subscriptions", None);
    if let Scope::Owner(o) = &action.viewer.scope {
        let max = shared.config().portal.max_subscriptions_per_owner;
        let has = shared
            .settings
            .stored()
            .iter()
            .filter(|s| s.owner.as_deref() == Some(o.as_str()))
            .count();
        if has >= max {
            draft.errors.push((
                String::new(),
                format!("You have {has} subscriptions, the most this portal allows ({max}): delete one before adding another, or ask your provider to raise the limit."),
            ));
        }
    }
    let (status, answer) = if draft.errors.is_empty() {
        let request = JsonBody(Bytes::from(body.to_string()));
        answer(crate::api::subscriptions::create(State(shared.clone()), request).await).await
    } else {
        (StatusCode::UNPROCESSABLE_ENTITY, Value::Null)
    };
    if status != StatusCode::CREATED {
        if !answer.is_null() {
            draft.take_errors(&answer);
        }
        draft.breaker_defaults = breaker_texts(&shared.config().delivery.breaker);
        let code = if status.is_server_error() {
            status
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return html(
            code,
            &FormPage {
                nav,
                draft,
                common: COMMON_EVENTS,
            },
        );
    }
    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    html(
        StatusCode::OK,
        &SecretPage {
            nav,
            title: "Subscription created",
            secret: answer
                .get("secret")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            note: "Copy this secret into your receiver now: it is shown only this once."
                .to_string(),
            id,
        },
    )
}

#[derive(Debug)]
pub struct Snippet {
    pub lang: &'static str,
    pub label: &'static str,
    pub text: &'static str,
}

/// The verification snippets of docs/snippets, embedded.
const SNIPPETS: [Snippet; 6] = [
    Snippet {
        lang: "express",
        label: "Node.js (Express)",
        text: include_str!("../../docs/snippets/express_raw.js"),
    },
    Snippet {
        lang: "flask",
        label: "Python (Flask)",
        text: include_str!("../../docs/snippets/flask_receiver.py"),
    },
    Snippet {
        lang: "go",
        label: "Go",
        text: include_str!("../../docs/snippets/go_receiver.go"),
    },
    Snippet {
        lang: "rust",
        label: "Rust",
        text: include_str!("../../docs/snippets/rust_verify.rs"),
    },
    Snippet {
        lang: "node-standard",
        label: "Node.js (Standard Webhooks)",
        text: include_str!("../../docs/snippets/node_standard.js"),
    },
    Snippet {
        lang: "python-standard",
        label: "Python (Standard Webhooks)",
        text: include_str!("../../docs/snippets/python_standard.py"),
    },
];

#[derive(Template)]
#[template(path = "subscription.html")]
struct SubscriptionPage {
    nav: Nav,
    s: SubRow,
    draft: Draft,
    common: [&'static str; 3],
    recent: Vec<DeliveryRow>,
    snippets: &'static [Snippet],
    snippet: &'static Snippet,
}

pub async fn subscription(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    if !may_see(&shared, &viewer, &id) {
        return not_found("such subscription");
    }
    let rows = match rows(&shared, &viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(s) = rows.into_iter().find(|r| r.id == id) else {
        return not_found("such subscription");
    };
    let filter = DeliveryFilter {
        subscription: Some(id.clone()),
        ..Default::default()
    };
    let recent = match shared.store.list_deliveries(&filter, None, 10).await {
        Ok((found, _)) => found.iter().map(row).collect(),
        Err(_) => return store_down(),
    };
    let default_lang = if s.signature == "standard" {
        "node-standard"
    } else {
        "express"
    };
    let lang = q.lang.as_deref().unwrap_or(default_lang);
    let snippet = SNIPPETS
        .iter()
        .find(|sn| sn.lang == lang)
        .unwrap_or(&SNIPPETS[0]);
    let mut events: Vec<String> = s.events.split(", ").map(str::to_string).collect();
    let other: Vec<String> = events
        .iter()
        .filter(|e| !COMMON_EVENTS.contains(&e.as_str()))
        .cloned()
        .collect();
    events.retain(|e| COMMON_EVENTS.contains(&e.as_str()));
    let own = shared
        .settings
        .stored()
        .iter()
        .find(|st| st.id == id)
        .map(own_breaker)
        .unwrap_or_default();
    let draft = Draft {
        id: s.id.clone(),
        url: s.url.clone(),
        events,
        other_events: other.join(", "),
        signature: s.signature.to_string(),
        owner: s.owner.clone(),
        headers: s.plain_headers.clone(),
        rate_limit: s.rate_limit.trim_end_matches("/s").to_string(),
        breaker: own,
        breaker_defaults: breaker_texts(&shared.config().delivery.breaker),
        errors: Vec::new(),
    };
    html(
        StatusCode::OK,
        &SubscriptionPage {
            nav: viewer.nav("subscriptions", q.notice),
            s,
            draft,
            common: COMMON_EVENTS,
            recent,
            snippets: &SNIPPETS,
            snippet,
        },
    )
}

impl SubscriptionPage {
    fn is_lang(&self, lang: &str) -> bool {
        self.snippet.lang == lang
    }
}

/// `POST .../subscriptions/{id}`: the edit form (endpoint and events), through `PATCH`.
pub async fn update_subscription(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    action: Action,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    if !may_see(&shared, &action.viewer, &id) {
        return not_found("such subscription");
    }
    let mut draft = Draft::from_fields(&action.fields);
    let mut body = json!({ "url": draft.url, "events": draft.all_events() });
    if action.fields.has("headers") {
        // The form shows the plain headers only: the secret ones are kept as they are.
        let mut headers = draft.header_map();
        if let Some(current) = shared.config().subscription(&id) {
            for h in current.headers.iter().filter(|h| h.secret) {
                headers.insert(
                    h.name.as_str().to_string(),
                    json!({ "secret": h.value.expose() }),
                );
            }
        }
        if let Some((_, e)) = draft.errors.first() {
            return see_other(&with_notice(
                &format!("{}/subscriptions/{id}", action.viewer.base),
                &format!("Not saved: {e}"),
            ));
        }
        body["headers"] = Value::Object(headers);
    }
    if action.fields.has("rate_limit") {
        match draft.rate_limit_value() {
            Some(rate) => body["rate_limit"] = rate,
            None => {
                let e = draft
                    .errors
                    .first()
                    .map(|(_, e)| e.clone())
                    .unwrap_or_default();
                return see_other(&with_notice(
                    &format!("{}/subscriptions/{id}", action.viewer.base),
                    &format!("Not saved: {e}"),
                ));
            }
        }
    }
    draft.breaker_json(&action.fields, &mut body);
    let (status, answer) = answer(
        crate::api::subscriptions::update(
            State(shared.clone()),
            Path(id.clone()),
            JsonBody(Bytes::from(body.to_string())),
        )
        .await,
    )
    .await;
    let notice = if status.is_success() {
        "Saved.".to_string()
    } else {
        format!("Not saved: {}", error_text(&answer))
    };
    see_other(&with_notice(
        &format!("{}/subscriptions/{id}", action.viewer.base),
        &notice,
    ))
}

/// `POST .../subscriptions/{id}/{test|pause|resume|rotate-secret|delete}`.
pub async fn subscription_action(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    action: Action,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    let what = params.get("action").cloned().unwrap_or_default();
    if !may_see(&shared, &action.viewer, &id) {
        return not_found("such subscription");
    }
    let base = action.viewer.base.clone();
    let page = format!("{base}/subscriptions/{id}");
    let s = State(shared.clone());
    let p = Path(id.clone());
    match what.as_str() {
        "test" => {
            let (status, body) = answer(crate::api::subscriptions::send_test(s, p).await).await;
            match body.get("delivery_id").and_then(Value::as_str) {
                Some(d) if status.is_success() => see_other(&with_notice(
                    &format!("{base}/deliveries/{d}"),
                    "Test event sent: reload to see its attempt.",
                )),
                _ => see_other(&with_notice(&page, &error_text(&body))),
            }
        }
        "pause" | "resume" => {
            let response = if what == "pause" {
                crate::api::admin::pause(s, p).await
            } else {
                crate::api::admin::resume(s, p).await
            };
            let (status, body) = answer(response).await;
            let notice = if !status.is_success() {
                error_text(&body)
            } else if what == "pause" {
                "Paused: its deliveries wait until it is resumed.".to_string()
            } else {
                "Resumed.".to_string()
            };
            see_other(&with_notice(&page, &notice))
        }
        "enable" if matches!(action.viewer.scope, Scope::Admin) => {
            let (status, body) = answer(crate::api::admin::enable(s, p).await).await;
            let notice = if status.is_success() {
                "Enabled: its waiting deliveries go out again.".to_string()
            } else {
                error_text(&body)
            };
            see_other(&with_notice(&page, &notice))
        }
        "rotate-secret" => {
            let (status, body) = answer(
                crate::api::subscriptions::rotate_secret(s, p, JsonBody(Bytes::new())).await,
            )
            .await;
            if !status.is_success() {
                return see_other(&with_notice(&page, &error_text(&body)));
            }
            let expires = body
                .get("previous_secret_expires")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            html(
                StatusCode::OK,
                &SecretPage {
                    nav: action.viewer.nav("subscriptions", None),
                    title: "Secret rotated",
                    secret: body
                        .get("secret")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    note: format!(
                        "Copy this secret into your receiver now: it is shown only this once. \
                         The previous secret keeps signing too until {expires}."
                    ),
                    id,
                },
            )
        }
        "delete" => {
            if action.fields.get("confirm").is_none() {
                return see_other(&with_notice(
                    &page,
                    "Not deleted: tick \"Yes, delete this subscription\" first.",
                ));
            }
            let (status, body) = answer(crate::api::subscriptions::delete(s, p).await).await;
            if status.is_success() {
                see_other(&with_notice(
                    &format!("{base}/subscriptions"),
                    &format!("Subscription {id} deleted."),
                ))
            } else {
                see_other(&with_notice(&page, &error_text(&body)))
            }
        }
        _ => not_found("such action"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether every backtick and `$` of `line` (a shell command) sits inside single quotes,
    /// apart from `"$name"` variable expansions the snippet makes itself.
    fn nothing_runs_outside_single_quotes(line: &str) -> bool {
        let (mut single, mut double) = (false, false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                // Outside quotes, a backslash makes the next character literal (`'\''`).
                '\\' if !single && !double => {
                    chars.next();
                }
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '`' if !single => return false,
                // Only `$name` or `${name...}` expansions, never `$(`.
                '$' if !single
                    && !chars
                        .peek()
                        .is_some_and(|n| n.is_ascii_alphabetic() || *n == '{') =>
                {
                    return false;
                }
                _ => {}
            }
        }
        !single && !double
    }

    #[test]
    fn copy_as_curl_quotes_header_names_and_values_for_the_shell() {
        let header = |name: &str, value: &str, secret: bool| CustomHeader {
            // Built here past validation, which refuses such names today.
            name: reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a token"),
            value: crate::config::Secret::new(value.to_string()),
            secret,
        };
        let custom = [
            header("X-`hostname`", "v", true),
            header("X-Plain`id`", "it's `id` $(id)", false),
        ];
        let d = Delivery {
            id: "dlv_1".to_string(),
            event_id: "evt_1".to_string(),
            event_type: "job.completed".to_string(),
            subscription: "s".to_string(),
            bucket: "s".to_string(),
            adhoc: None,
            state: DeliveryState::Dead,
            attempts: 1,
            created_ms: 0,
            due_ms: None,
            finished_ms: None,
            last_error: None,
            owner: None,
        };
        for scheme in [
            SignatureScheme::Abstrakt,
            SignatureScheme::Standard,
            SignatureScheme::Both,
        ] {
            let snippet = curl(
                "X-Abstrakt",
                "https://example.com/$(id)",
                &d,
                scheme,
                "{\"a\":\"`id`\"}",
                &custom,
            );
            // The lines that carry what the delivery holds: the body, the URL, the headers.
            let carrying = snippet.lines().filter(|l| {
                l.starts_with("printf") || l.starts_with("curl") || l.starts_with("  ")
            });
            for line in carrying {
                assert!(
                    nothing_runs_outside_single_quotes(line),
                    "{line}\n{snippet}"
                );
            }
            assert!(
                snippet.contains(r#"-H 'x-`hostname`: '"$HEADER_X__HOSTNAME_""#),
                "{snippet}"
            );
            assert!(
                snippet.contains(r"-H 'x-plain`id`: it'\''s `id` $(id)'"),
                "{snippet}"
            );
        }
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
    }

    #[test]
    fn form_times_are_utc() {
        assert_eq!(parse_when("1970-01-01T00:01"), Some(60_000));
        assert_eq!(parse_when("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(parse_when("yesterday"), None);
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}

//! The deliveries page: the filter form, a page of deliveries, the search by delivery, event or
//! request id, and "retry all" of the dead deliveries a filter matches.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::overview::COUNT_CALLS;
use super::{may_see, not_found, owned, scoped, truncate, CELL_CHARS};
use crate::config::{Config, EventFilter};
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::store::{Delivery, DeliveryFilter, DeliveryState};
use crate::ui::{html, see_other, store_down, Action, Nav, Scope, Viewer};

/// Rows on a page of deliveries.
const PAGE: usize = 50;
/// Dead deliveries one "retry all" requeues at most.
const RETRY_CAP: usize = 10_000;
/// Deliveries a list's total counts at most, and a search examines at most (newest first).
const SCAN_CAP: usize = 20_000;
/// Rows a search lists at most.
const SEARCH_ROWS: usize = 200;
/// Deliveries a search compares with its term, newest first (each may cost a read of its
/// event, for the request id).
const SEARCH_SCAN: usize = 5_000;

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
    /// The cursors of the pages before this one, oldest first, space-separated (the first
    /// page's is empty): what "Previous page" goes back through.
    back: Option<String>,
    notice: Option<String>,
    /// Reload the page every this many seconds ([`refresh_seconds`]); absent: never.
    refresh: Option<String>,
}

/// The refresh the "on" link asks for, in seconds.
pub const DEFAULT_REFRESH: u64 = 10;
/// The shortest and the longest automatic refresh, in seconds.
pub const REFRESH_RANGE: std::ops::RangeInclusive<u64> = 5..=300;

/// The automatic refresh `?refresh=` asks for, within [`REFRESH_RANGE`] (a shorter or longer
/// one is brought inside it); `None` when absent or not a whole number of seconds.
fn refresh_seconds(q: &DeliveriesQuery) -> Option<u64> {
    let seconds = nonempty(&q.refresh)?.parse::<u64>().ok()?;
    Some(seconds.clamp(*REFRESH_RANGE.start(), *REFRESH_RANGE.end()))
}

pub(super) fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A time from the filter form: `datetime-local` (`2026-11-30T13:05`, read as UTC) or
/// RFC 3339.
pub(super) fn parse_when(text: &str) -> Option<u64> {
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

/// The subscriptions `viewer` may filter by: each id with its label (its name and id).
fn labelled(shared: &Shared, viewer: &Viewer) -> Vec<(String, String)> {
    let config = shared.config();
    let ids = match &viewer.scope {
        Scope::Admin => config.subscriptions.iter().map(|s| s.id.clone()).collect(),
        Scope::Owner(owner) => owned(shared, owner),
    };
    ids.into_iter()
        .map(|id| {
            let label = config
                .subscription(&id)
                .map_or_else(|| id.clone(), |s| s.label());
            (id, label)
        })
        .collect()
}

/// One delivery as the pages list it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub event_type: String,
    pub subscription: String,
    /// Its subscription's name for people (empty: none, or the subscription is gone).
    pub subscription_name: String,
    pub owner: String,
    pub state: &'static str,
    pub attempts: u32,
    pub created: String,
    pub last_error: String,
}

/// Delivery `d` as a row; `config` names its subscription.
pub(super) fn delivery_row(config: &Config, d: &Delivery) -> DeliveryRow {
    DeliveryRow {
        id: d.id.clone(),
        event_type: d.event_type.clone(),
        subscription: d.subscription.clone(),
        subscription_name: config
            .subscription(&d.subscription)
            .and_then(|s| s.name.clone())
            .unwrap_or_default(),
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
    /// The subscriptions to filter by: each id with how people read it.
    subscriptions: Vec<(String, String)>,
    rows: Vec<DeliveryRow>,
    problem: Option<String>,
    /// The query of the next page, when there may be one.
    next: Option<String>,
    /// The query of the previous page, after the first.
    previous: Option<String>,
    /// How many deliveries match, as shown ("1,234", or "more than 20,000").
    total: String,
    /// Which page this is, from 1.
    number: usize,
    /// The filter as a query string, for "first page" and retry's return.
    query: String,
    /// Reload every this many seconds (a `<meta http-equiv="refresh">`); `None`: off.
    refresh: Option<u64>,
}

impl DeliveriesPage {
    /// The page of query `q` as `viewer` sees it, with its form filled in and no rows yet.
    fn new(shared: &Shared, viewer: &Viewer, q: &DeliveriesQuery) -> DeliveriesPage {
        let typed = |v: &Option<String>| nonempty(v).unwrap_or("").to_string();
        DeliveriesPage {
            nav: viewer.nav("deliveries", q.notice.clone()),
            status: typed(&q.status),
            subscription: typed(&q.subscription),
            event_type: typed(&q.event_type),
            owner: typed(&q.owner),
            since: typed(&q.since),
            until: typed(&q.until),
            q: typed(&q.q),
            subscriptions: labelled(shared, viewer),
            rows: Vec::new(),
            problem: None,
            next: None,
            previous: None,
            total: String::new(),
            number: 1,
            query: filter_query(q),
            refresh: refresh_seconds(q),
        }
    }

    /// The link that turns the automatic refresh on: this filter, from its first page.
    fn refresh_on(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(self.query.clone());
        s.append_pair("refresh", &DEFAULT_REFRESH.to_string());
        s.finish()
    }

    /// How often the page reloads when on: its own, else the "on" link's.
    fn refresh_every(&self) -> u64 {
        self.refresh.unwrap_or(DEFAULT_REFRESH)
    }

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
pub(super) fn may_see_delivery(shared: &Shared, viewer: &Viewer, d: &Delivery) -> bool {
    match &viewer.scope {
        Scope::Admin => true,
        Scope::Owner(owner) => {
            d.adhoc.is_none()
                && d.owner.as_ref() == Some(owner)
                && may_see(shared, viewer, &d.subscription)
        }
    }
}

/// Delivery `id`, if `viewer` may see it; else the page that says there is none, or that the
/// store did not answer.
pub(super) async fn visible_delivery(
    shared: &Shared,
    viewer: &Viewer,
    id: &str,
) -> Result<Delivery, Response> {
    match shared.store.delivery(id).await {
        Ok(Some(d)) if may_see_delivery(shared, viewer, &d) => Ok(d),
        Ok(_) => Err(not_found("such delivery")),
        Err(_) => Err(store_down()),
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
    let mut page = DeliveriesPage::new(&shared, &viewer, &q);
    let filter = match filter_of(&shared, &viewer, &q) {
        Ok(f) => f,
        Err(problem) => {
            page.problem = Some(problem);
            return html(StatusCode::BAD_REQUEST, &page);
        }
    };
    if let Some(term) = nonempty(&q.q) {
        return looked_up(&shared, &viewer, page, term, &filter).await;
    }
    let (found, next) = match shared
        .store
        .list_deliveries(&filter, nonempty(&q.cursor), PAGE)
        .await
    {
        Ok(listed) => listed,
        Err(_) => return store_down(),
    };
    let config = shared.config();
    page.rows = found.iter().map(|d| delivery_row(&config, d)).collect();
    let trail: Vec<&str> = q
        .back
        .as_deref()
        .map_or_else(Vec::new, |b| b.split(' ').collect());
    let here = nonempty(&q.cursor).unwrap_or("");
    let at = |cursor: &str, back: &[&str]| {
        let mut s = url::form_urlencoded::Serializer::new(page.query.clone());
        if !cursor.is_empty() {
            s.append_pair("cursor", cursor);
        }
        if !back.is_empty() {
            s.append_pair("back", &back.join(" "));
        }
        if let Some(seconds) = page.refresh {
            s.append_pair("refresh", &seconds.to_string());
        }
        s.finish()
    };
    if here.is_empty() {
        page.number = 1;
    } else {
        page.number = trail.len() + 1;
        let (last, before) = trail.split_last().map_or(("", &[][..]), |(l, b)| (*l, b));
        page.previous = Some(at(last, before));
    }
    if let Some(cursor) = next {
        let mut back = if here.is_empty() {
            Vec::new()
        } else {
            trail.clone()
        };
        back.push(here);
        page.next = Some(at(&cursor, &back));
    }
    page.total = match total(&shared, &filter).await {
        Ok(total) => total,
        Err(r) => return r,
    };
    html(StatusCode::OK, &page)
}

/// How many deliveries `filter` matches, as shown, counting up to [`SCAN_CAP`].
async fn total(shared: &Shared, filter: &DeliveryFilter) -> Result<String, Response> {
    let mut n = 0;
    let complete = scan(shared, filter, SCAN_CAP, |_| {
        n += 1;
        true
    })
    .await?;
    Ok(if complete {
        n.to_string()
    } else {
        format!("more than {n}")
    })
}

/// Calls `each` on the deliveries `filter` matches, newest first, until it answers false, up
/// to `cap` of them ([`crate::store::scan::scan`]); whether every one was seen.
pub(super) async fn scan(
    shared: &Shared,
    filter: &DeliveryFilter,
    cap: usize,
    each: impl FnMut(&Delivery) -> bool,
) -> Result<bool, Response> {
    crate::store::scan::scan(shared.store.as_ref(), filter, cap, each)
        .await
        .map_err(|_| store_down())
}

/// What the search box finds for `term` among the deliveries `filter` matches: a delivery id
/// leads to its page; otherwise the deliveries whose id, event id or event's request id
/// starts with `term`, whatever its case (an exact request id is found however old).
async fn looked_up(
    shared: &Shared,
    viewer: &Viewer,
    mut page: DeliveriesPage,
    term: &str,
    filter: &DeliveryFilter,
) -> Response {
    let lower = term.to_lowercase();
    if let Some(ulid) = lower.strip_prefix("dlv_").filter(|u| u.len() == 26) {
        let id = format!("dlv_{}", ulid.to_uppercase());
        match shared.store.delivery(&id).await {
            Ok(Some(d)) if may_see_delivery(shared, viewer, &d) && filter.matches(&d) => {
                return see_other(&format!("{}/deliveries/{}", viewer.base, d.id));
            }
            Ok(_) => {}
            Err(_) => return store_down(),
        }
    }
    let mut found = match search(shared, viewer, term).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    found.retain(|d| filter.matches(d));
    let mut requests: std::collections::HashMap<String, String> = Default::default();
    let mut candidates = Vec::new();
    if let Err(r) = scan(shared, filter, SEARCH_SCAN, |d| {
        candidates.push(d.clone());
        true
    })
    .await
    {
        return r;
    }
    for d in candidates {
        if found.len() >= SEARCH_ROWS {
            break;
        }
        if !requests.contains_key(&d.event_id) {
            let request = match shared.store.event_meta(&d.event_id).await {
                Ok(meta) => meta
                    .map(|m| m.request_id.to_lowercase())
                    .unwrap_or_default(),
                Err(_) => return store_down(),
            };
            requests.insert(d.event_id.clone(), request);
        }
        let hit = d.id.to_lowercase().starts_with(&lower)
            || d.event_id.to_lowercase().starts_with(&lower)
            || requests[&d.event_id].starts_with(&lower);
        if hit && may_see_delivery(shared, viewer, &d) && !found.iter().any(|f| f.id == d.id) {
            found.push(d);
        }
    }
    found.sort_by(|a, b| b.id.cmp(&a.id));
    if found.is_empty() {
        page.problem = Some(format!("Nothing matches {term:?} with these filters."));
    }
    page.total = found.len().to_string();
    let config = shared.config();
    page.rows = found.iter().map(|d| delivery_row(&config, d)).collect();
    html(StatusCode::OK, &page)
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
        Err(problem) => return action.viewer.redirect_with(&back, &problem),
    };
    if filter.state.is_some_and(|s| s != DeliveryState::Dead) {
        return action
            .viewer
            .redirect_with(&back, "Only dead deliveries are retried: 0 requeued.");
    }
    filter.state = Some(DeliveryState::Dead);
    let requeued = match requeue(&shared, &filter).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    shared.wake.notify_one();
    tracing::info!(requeued, "dead deliveries requeued from the dashboard");
    let subscription = filter.subscription.as_deref();
    let note = super::audit::resent(
        &shared,
        &action.viewer,
        subscription,
        requeued,
        "dead deliveries requeued from the deliveries page",
    )
    .await;
    action.viewer.redirect_with(
        &back,
        &format!("{requeued} dead deliveries requeued.{note}"),
    )
}

/// Requeues the deliveries `filter` matches, up to [`RETRY_CAP`] and within a bounded number
/// of listing calls; how many were.
async fn requeue(shared: &Shared, filter: &DeliveryFilter) -> Result<usize, Response> {
    let now = shared.clock.now_ms();
    let mut requeued = 0;
    let mut cursor: Option<String> = None;
    let mut calls = 0;
    while requeued < RETRY_CAP && calls < 10 * COUNT_CALLS {
        calls += 1;
        let (page, next) = shared
            .store
            .list_deliveries(filter, cursor.as_deref(), 500)
            .await
            .map_err(|_| store_down())?;
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
    Ok(requeued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_utc() {
        assert_eq!(parse_when("1970-01-01T00:01"), Some(60_000));
        assert_eq!(parse_when("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(parse_when("yesterday"), None);
    }

    #[test]
    fn the_refresh_is_whole_seconds_within_five_and_three_hundred() {
        let q = |r: &str| DeliveriesQuery {
            refresh: Some(r.to_string()),
            ..DeliveriesQuery::default()
        };
        assert_eq!(refresh_seconds(&q("10")), Some(10));
        assert_eq!(refresh_seconds(&q("1")), Some(5));
        assert_eq!(refresh_seconds(&q("0")), Some(5));
        assert_eq!(refresh_seconds(&q("86400")), Some(300));
        assert_eq!(refresh_seconds(&q("ten")), None);
        assert_eq!(refresh_seconds(&q("-5")), None);
        assert_eq!(refresh_seconds(&q("")), None);
        assert_eq!(refresh_seconds(&DeliveriesQuery::default()), None);
    }
}

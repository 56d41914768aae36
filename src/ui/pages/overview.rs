//! The overview page: the last day's deliveries by state, the dead and pending ones, and the
//! subscriptions with those failing apart; every figure is counted within bounds, even on a
//! store of millions.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::charts::{charts, Charts};
use super::subscription_rows::{rows, SubRow};
use super::{scoped, NoticeQuery};
use crate::state::Shared;
use crate::store::{DeliveryFilter, DeliveryState};
use crate::ui::{html, store_down, Nav, Scope, Viewer};

/// Deliveries the overview counts at most, per figure.
const COUNT_CAP: usize = 20_000;
/// Listing calls one overview figure makes at most: the overview stays cheap on a store of
/// millions.
pub(super) const COUNT_CALLS: usize = crate::store::scan::SCAN_CALLS;

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
    let complete = super::deliveries::scan(shared, filter, COUNT_CAP, |d| {
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
        true
    })
    .await?;
    // A filter that matches little in a big store: what was examined is all that is counted.
    counts.capped = !complete;
    Ok(counts)
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
    charts: Charts,
}

fn capped(n: usize, capped: bool) -> String {
    if capped {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

/// The deliveries of the last 24 hours that `viewer` may see, by state.
async fn last_day(shared: &Shared, viewer: &Viewer, now: u64) -> Result<Counts, Response> {
    let filter = DeliveryFilter {
        since_ms: Some(now.saturating_sub(24 * 3600 * 1000)),
        ..Default::default()
    };
    count(shared, &scoped(shared, viewer, filter)).await
}

/// How many dead deliveries `viewer` may see, as shown.
async fn dead(shared: &Shared, viewer: &Viewer) -> Result<String, Response> {
    let filter = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        ..Default::default()
    };
    let c = count(shared, &scoped(shared, viewer, filter)).await?;
    Ok(capped(c.dead, c.capped))
}

/// How many deliveries wait or are in flight, as shown: the store's own figure for an
/// operator, a count of the owner's for a portal.
async fn pending(shared: &Shared, viewer: &Viewer, now: u64) -> Result<String, Response> {
    if viewer.scope == Scope::Admin {
        let p = shared
            .store
            .pending_stats(now)
            .await
            .map_err(|_| store_down())?;
        return Ok((p.ready + p.scheduled + p.in_flight).to_string());
    }
    let mut total = 0;
    let mut over = false;
    for state in [DeliveryState::Scheduled, DeliveryState::InFlight] {
        let filter = DeliveryFilter {
            state: Some(state),
            ..Default::default()
        };
        let c = count(shared, &scoped(shared, viewer, filter)).await?;
        total += c.pending;
        over |= c.capped;
    }
    Ok(capped(total, over))
}

pub async fn overview(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    match overview_page(&shared, &viewer, q.notice, q.window.as_deref()).await {
        Ok(page) => html(StatusCode::OK, &page),
        Err(r) => r,
    }
}

/// The overview as `viewer` may see it, or the page that says the store could not answer.
async fn overview_page(
    shared: &Shared,
    viewer: &Viewer,
    notice: Option<String>,
    window: Option<&str>,
) -> Result<OverviewPage, Response> {
    let charts = charts(shared, viewer, None, window, &viewer.base).await?;
    let now = shared.clock.now_ms();
    let day = last_day(shared, viewer, now).await?;
    let dead = dead(shared, viewer).await?;
    let pending = pending(shared, viewer, now).await?;
    let subs = rows(shared, viewer).await?;
    Ok(OverviewPage {
        nav: viewer.nav("overview", notice),
        day,
        pending,
        dead,
        failing: subs.iter().filter(|s| s.failures > 0).cloned().collect(),
        subs,
        charts,
    })
}

//! [`AdminStore::summary`](super::AdminStore::summary) for any engine: the statistics of a
//! window ([`crate::stats`]) from the timed listing, newest first, within bounds.

use super::{AdminStore, DeliveryFilter, DeliveryState, StoreError};
use crate::stats::{Fate, Sample, Summary, Tally, Window};

/// Listing calls one summary makes at most (an engine examines a bounded number of records
/// per call): a filter that matches little in a big store stops early, sampled.
pub const SUMMARY_CALLS: usize = super::scan::SCAN_CALLS;
/// Deliveries per listing call.
const PAGE: usize = 1000;

/// The statistics of `window` at `now_ms` over the deliveries `filter` matches (its time
/// range is the window's), reading at most `cap` of them in [`SUMMARY_CALLS`] calls; sampled
/// when it stopped before the window's start.
pub async fn summarize<S: AdminStore + ?Sized>(
    store: &S,
    filter: &DeliveryFilter,
    window: Window,
    now_ms: u64,
    cap: usize,
) -> Result<Summary, StoreError> {
    let mut tally = Tally::new(window, now_ms);
    let filter = DeliveryFilter {
        since_ms: Some(tally.start_ms()),
        until_ms: None,
        ..filter.clone()
    };
    let mut cursor: Option<String> = None;
    let mut read = 0;
    for _ in 0..SUMMARY_CALLS {
        let room = PAGE.min(cap.saturating_sub(read));
        if room == 0 {
            break;
        }
        let (page, next) = store.list_timed(&filter, cursor.as_deref(), room).await?;
        for t in &page {
            let d = &t.delivery;
            tally.add(&Sample {
                subscription: &d.subscription,
                created_ms: d.created_ms,
                finished_ms: d.finished_ms,
                fate: match d.state {
                    DeliveryState::Delivered => Fate::Delivered,
                    DeliveryState::Dead => Fate::Dead,
                    DeliveryState::Scheduled | DeliveryState::InFlight => Fate::Open,
                },
                attempts: &t.attempts,
            });
        }
        read += page.len();
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(tally.finish(false)),
        }
    }
    Ok(tally.finish(true))
}

//! Walking a listing within bounds, and what failed since a time: what the admin API's bulk
//! retry and the dashboard's "Resend failed deliveries" both count and requeue.
//!
//! An engine examines a bounded number of records per listing call; a walk makes at most
//! [`SCAN_CALLS`] calls, so that no request costs more than that on a store of millions. A
//! walk that stopped early says so, and whoever shows its figures says "at least".

use super::{AdminStore, Delivery, DeliveryFilter, DeliveryState, StoreError};

/// Listing calls one walk makes at most.
pub const SCAN_CALLS: usize = 25;
/// Deliveries one listing call asks for.
const PAGE: usize = 1000;

/// Calls `each` on the deliveries `filter` matches, newest first, until it answers false, up
/// to `cap` of them and [`SCAN_CALLS`] listing calls; whether every one was seen.
pub async fn scan<S: AdminStore + ?Sized>(
    store: &S,
    filter: &DeliveryFilter,
    cap: usize,
    mut each: impl FnMut(&Delivery) -> bool,
) -> Result<bool, StoreError> {
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    for _ in 0..SCAN_CALLS {
        let (found, next) = store
            .list_deliveries(filter, cursor.as_deref(), PAGE)
            .await?;
        for d in &found {
            seen += 1;
            if !each(d) || seen >= cap {
                return Ok(false);
            }
        }
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// Whether a delivery is still retrying after a failure: waiting for a later attempt after at
/// least one was made.
pub fn retrying(d: &Delivery) -> bool {
    d.state == DeliveryState::Scheduled && d.attempts > 0
}

/// Failed deliveries found by a walk, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Dead ones.
    pub dead: Vec<String>,
    /// Scheduled ones after a failed attempt.
    pub retrying: Vec<String>,
    /// The walk saw every delivery that could match (else the lists are the first found).
    pub complete: bool,
}

impl Failed {
    pub fn total(&self) -> usize {
        self.dead.len() + self.retrying.len()
    }
}

/// The deliveries `filter` matches that are dead, or still retrying after a failed attempt,
/// up to `cap` examined.
pub async fn failed<S: AdminStore + ?Sized>(
    store: &S,
    filter: &DeliveryFilter,
    cap: usize,
) -> Result<Failed, StoreError> {
    let mut found = Failed::default();
    found.complete = scan(store, filter, cap, |d| {
        if d.state == DeliveryState::Dead {
            found.dead.push(d.id.clone());
        } else if retrying(d) {
            found.retrying.push(d.id.clone());
        }
        true
    })
    .await?;
    Ok(found)
}

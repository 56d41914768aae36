//! What the store keeps in memory beside sled: the due-time index with the deliveries just
//! ingested, the subscriptions' health, and the records skipped because they cannot be decoded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::layout::printable_key;
use super::writer::Done;
use super::{lock, FRESH_BYTES};
use crate::store::index::{Id, Index};
use crate::store::{parse_delivery_id, Claimed, DeliveryState, SubscriptionState};

/// What the index and the fresh-delivery cache share, under one lock.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) index: Index,
    /// Deliveries just ingested, with their bodies: their first attempt needs no read.
    pub(super) fresh: Fresh,
}

/// The deliveries just ingested, kept whole for their first attempt, within [`FRESH_BYTES`]
/// (their bodies, a fixed allowance for each delivery's strings, and the hash table itself, at
/// the size it will have): a burst is delivered from memory, and a backlog past the budget is
/// read from disk when its turn comes.
#[derive(Default)]
pub(super) struct Fresh {
    deliveries: HashMap<Id, Claimed>,
    bytes: usize,
}

/// What a delivery kept in [`Fresh`] costs on the heap beside its body and its slot in the
/// table: its id, event id, type, subscription and bucket strings.
const FRESH_OVERHEAD: usize = 160;

/// One slot of the table: the entry, and its control byte.
const FRESH_SLOT: usize = std::mem::size_of::<(Id, Claimed)>() + 1;

/// The bytes of a table that has room for `capacity` entries: it keeps an eighth of its slots
/// free, in a power-of-two number of slots.
fn table_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    (capacity * 8 / 7).next_power_of_two() * FRESH_SLOT
}

impl Fresh {
    fn cost(claim: &Claimed) -> usize {
        claim.body.len() + FRESH_OVERHEAD
    }

    /// The table's bytes once it holds one more entry: twice the slots when it is full.
    fn table_after_one_more(&self) -> usize {
        let (len, capacity) = (self.deliveries.len(), self.deliveries.capacity());
        table_bytes(if len < capacity { capacity } else { len + 1 })
    }

    /// Keeps `claim` if the budget has room for it, the table's growth included.
    fn offer(&mut self, id: Id, claim: Claimed) {
        let cost = Fresh::cost(&claim);
        if self.bytes + cost + self.table_after_one_more() <= FRESH_BYTES {
            if let Some(old) = self.deliveries.insert(id, claim) {
                self.bytes -= Fresh::cost(&old);
            }
            self.bytes += cost;
        }
    }

    pub(super) fn remove(&mut self, id: &Id) -> Option<Claimed> {
        let claim = self.deliveries.remove(id)?;
        self.bytes -= Fresh::cost(&claim);
        self.shrink_when_drained();
        Some(claim)
    }

    /// Gives back the table a backlog made large once it has drained: a hash map keeps its
    /// largest capacity, and after a burst that filled the budget the empty table alone held
    /// about 10 MiB (docs/benchmarks.md, the heap profile). It shrinks when a quarter or less
    /// of it is used, to twice what it holds, so each shrink follows at least as many removals
    /// as it moves entries: linear in all.
    fn shrink_when_drained(&mut self) {
        let capacity = self.deliveries.capacity();
        if capacity > FRESH_MIN_CAPACITY && self.deliveries.len() <= capacity / 4 {
            self.deliveries
                .shrink_to((self.deliveries.len() * 2).max(FRESH_MIN_CAPACITY));
        }
    }

    /// The bytes held, as the budget counts them: the entries and the table.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes + table_bytes(self.deliveries.capacity())
    }

    /// The deliveries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.deliveries.len()
    }

    /// The entries the table has room for now.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.deliveries.capacity()
    }
}

/// The fresh cache's table is not shrunk below this many entries: a steady trickle of
/// deliveries keeps it this size without rehashing.
const FRESH_MIN_CAPACITY: usize = 1024;

impl Queue {
    /// Puts deliveries just ingested (and durable) in the index, due at `now_ms`, and in the
    /// fresh cache while it has room.
    pub(super) fn add_fresh(&mut self, fresh: Vec<Claimed>, now_ms: u64) {
        for claim in fresh {
            let id = parse_delivery_id(&claim.delivery.id).map_or(0, |u| u.0);
            self.index.insert(&claim.delivery.bucket, now_ms, id);
            self.fresh.offer(id, claim);
        }
    }

    /// Leases up to `max` deliveries due at `now_ms`: those the fresh cache holds come whole,
    /// the others as ids whose records are still to be read. Also the index's next due time.
    pub(super) fn claim(
        &mut self,
        now_ms: u64,
        max: usize,
    ) -> (Vec<Claimed>, Vec<Id>, Option<u64>) {
        let (taken, next) = self.index.claim(now_ms, max);
        let mut claims = Vec::with_capacity(taken.len());
        let mut missing = Vec::new();
        for t in taken {
            match self.take_fresh(t.id) {
                Ok(c) => claims.push(c),
                Err(id) => missing.push(id),
            }
        }
        (claims, missing, next)
    }

    /// A delivered attempt's slot freed and handed on ([`Index::finish_and_follow`]): the
    /// delivery that follows in it, whole if the fresh cache holds it, else its id to read.
    ///
    /// [`Index::finish_and_follow`]: crate::store::index::Index::finish_and_follow
    pub(super) fn finish_and_follow(&mut self, id: Id, now_ms: u64) -> Option<Result<Claimed, Id>> {
        let t = self.index.finish_and_follow(id, now_ms)?;
        Some(self.take_fresh(t.id))
    }

    /// A delivery just leased, from the fresh cache; its id if the cache does not hold it.
    fn take_fresh(&mut self, id: Id) -> Result<Claimed, Id> {
        let mut c = self.fresh.remove(&id).ok_or(id)?;
        c.delivery.state = DeliveryState::InFlight;
        c.delivery.due_ms = None;
        Ok(c)
    }
}

/// Deliveries moved back to the queue (or out of it): bucket, due time, id.
pub(super) type Reopened = Vec<(String, u64, Id)>;

/// What to do once removed deliveries are durably gone: the index and the fresh cache let go of
/// them. One in flight frees its slot with its outcome (or release), which finds no record.
pub(super) fn unqueued(queue: &Arc<Mutex<Queue>>, gone: Reopened) -> Done {
    let queue = queue.clone();
    Box::new(move |_| {
        let mut q = lock(&queue);
        for (bucket, due, id) in gone {
            q.fresh.remove(&id);
            q.index.remove(&bucket, due, id);
        }
    })
}

/// What to do once deliveries moved back to the queue are durable: the index learns of them.
pub(super) fn requeued(queue: &Arc<Mutex<Queue>>, reopened: Reopened) -> Done {
    let queue = queue.clone();
    Box::new(move |_| {
        let mut q = lock(&queue);
        for (bucket, due, id) in reopened {
            q.index.insert(&bucket, due, id);
        }
    })
}

/// Subscriptions' stored state, in memory; the writer writes it back.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub(super) states: HashMap<String, SubscriptionState>,
    /// When each record was last written.
    pub(super) written: HashMap<String, Instant>,
    /// Records changed since they were last written.
    pub(super) dirty: HashSet<String>,
}

impl Health {
    /// Forgets a deleted subscription's state.
    pub(super) fn forget(&mut self, id: &str) {
        self.states.remove(id);
        self.dirty.remove(id);
        self.written.remove(id);
    }
}

/// Records hookd cannot decode (damaged bytes, or written by a later format version), by key:
/// each is logged once with its key and left where it is; everything else keeps flowing.
#[derive(Default)]
pub(super) struct Skipped(Mutex<HashSet<Vec<u8>>>);

impl Skipped {
    pub(super) fn skip(&self, key: &[u8], why: impl std::fmt::Display) {
        if lock(&self.0).insert(key.to_vec()) {
            tracing::error!(
                key = %printable_key(key),
                error = %why,
                "store record cannot be decoded; skipping it (counted in hookd_store_skipped_records)"
            );
        }
    }

    pub(super) fn count(&self) -> u64 {
        lock(&self.0).len() as u64
    }
}

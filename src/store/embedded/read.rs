//! Reads: each on a blocking thread; on sled, under the lock every sled access takes
//! ([`Kv::exclusive`](super::kv::Kv::exclusive)).

use super::codec::{DeliveryRecord, EventRecord};
use super::layout::{corrupt, delivery_key, event_key, id_of};
use super::{lock, EmbeddedStore, DONE, LIST_SCAN_LIMIT, PENDING};
use crate::store::index::Id;
use crate::store::{
    delivery_id_at, delivery_id_string, event_id_string, Attempt, Claimed, Delivery,
    DeliveryFilter, DeliveryState, StoreError, Timed,
};

/// A page of a listing, each delivery with what was made of its attempts, and the cursor of
/// the next page.
type Listed<T> = (Vec<(Delivery, T)>, Option<String>);

impl EmbeddedStore {
    /// Runs a read on a blocking thread: sled reads may touch the disk.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self
            .reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            // Dropped last: the store's handle goes first.
            let _permit = permit;
            let store = store;
            let _sled = store.kv.exclusive();
            read(&store)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// A delivery's record, and whether it is finished.
    pub(super) fn record(&self, id: Id) -> Result<Option<(DeliveryRecord, bool)>, StoreError> {
        for (prefix, finished) in [(PENDING, false), (DONE, true)] {
            let k = delivery_key(prefix, id);
            if let Some(v) = self.kv.get(&k)? {
                return Ok(Some((
                    DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?,
                    finished,
                )));
            }
        }
        Ok(None)
    }

    /// The event with ULID `event`, its body if `body`.
    pub(super) fn event(&self, event: u128, body: bool) -> Result<Option<EventRecord>, StoreError> {
        let k = event_key(event);
        match self.kv.get(&k)? {
            Some(v) => {
                let record = EventRecord::decode(&v, body).map_err(|e| corrupt(&k, e))?;
                // A later event of the same (request_id, status) after retention removed this
                // one has the same key and another id.
                Ok((record.id == event).then_some(record))
            }
            None => Ok(None),
        }
    }

    /// The delivery a record holds, in flight if leased.
    pub(super) fn to_delivery(&self, id: Id, r: DeliveryRecord) -> Delivery {
        let leased = r.state == DeliveryState::Scheduled && lock(&self.queue).index.is_leased(id);
        to_delivery(id, r, leased)
    }

    /// Reads what the attempts of claimed deliveries need that the fresh cache did not hold.
    pub(super) fn load_claims(&self, ids: &[Id]) -> Vec<Result<Claimed, (Id, String)>> {
        ids.iter().map(|&id| self.load_claim(id)).collect()
    }

    fn load_claim(&self, id: Id) -> Result<Claimed, (Id, String)> {
        let k = delivery_key(PENDING, id);
        let record = match self.kv.get(&k) {
            Ok(Some(v)) => DeliveryRecord::decode(&v).map_err(|e| {
                self.skipped.skip(&k, &e);
                (id, e.to_string())
            })?,
            Ok(None) => return Err((id, "no record".to_string())),
            Err(e) => return Err((id, e.to_string())),
        };
        let event = match self.event(record.event, true) {
            Ok(Some(e)) => e,
            Ok(None) => return Err((id, "no event".to_string())),
            Err(e) => {
                self.skipped.skip(&event_key(record.event), &e);
                return Err((id, e.to_string()));
            }
        };
        Ok(Claimed {
            delivery: to_delivery(id, record, true),
            body: event.body,
        })
    }

    /// [`AdminStore::list_deliveries`](crate::store::AdminStore::list_deliveries): the `P` and
    /// `D` records of the filter's time range, merged newest first, at most
    /// [`LIST_SCAN_LIMIT`] of them examined.
    pub(super) fn list(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<Id>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let (page, next) = self.list_as(filter, cursor, limit, |_| ())?;
        Ok((page.into_iter().map(|(d, ())| d).collect(), next))
    }

    /// [`EmbeddedStore::list`], each delivery with its attempts' times and results.
    pub(super) fn list_timed(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<Id>,
        limit: usize,
    ) -> Result<(Vec<Timed>, Option<String>), StoreError> {
        let (page, next) = self.list_as(filter, cursor, limit, |attempts| {
            attempts.iter().map(Attempt::timing).collect()
        })?;
        let timed = page
            .into_iter()
            .map(|(delivery, attempts)| Timed { delivery, attempts })
            .collect();
        Ok((timed, next))
    }

    /// The listing of [`EmbeddedStore::list`], each match with what `of_attempts` makes of its
    /// record's attempts.
    fn list_as<T>(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<Id>,
        limit: usize,
        of_attempts: impl Fn(&[Attempt]) -> T,
    ) -> Result<Listed<T>, StoreError> {
        let low = delivery_id_at(filter.since_ms.unwrap_or(0)).0;
        let mut high = match filter.until_ms {
            Some(until) => delivery_id_at(until).0,
            None => Id::MAX,
        };
        if let Some(cursor) = cursor {
            high = high.min(cursor);
        }
        let mut page = Vec::new();
        if low >= high {
            return Ok((page, None));
        }
        let range = |prefix| {
            self.kv
                .range(delivery_key(prefix, low)..delivery_key(prefix, high))
                .rev()
                .peekable()
        };
        // Unfinished and finished deliveries, merged newest first.
        let (mut pending, mut done) = (range(PENDING), range(DONE));
        let mut examined = 0;
        loop {
            let take_pending = match (pending.peek(), done.peek()) {
                (Some(Ok((p, _))), Some(Ok((d, _)))) => p[1..] > d[1..],
                (Some(_), _) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_pending {
                pending.next()
            } else {
                done.next()
            };
            let Some(entry) = next else { break };
            let (k, v) = entry?;
            examined += 1;
            let decoded = id_of(&k)
                .and_then(|id| Ok((id, DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?)));
            let (id, record) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            let extra = of_attempts(&record.attempts);
            let delivery = self.to_delivery(id, record);
            let last = delivery.id.clone();
            if filter.matches(&delivery) {
                page.push((delivery, extra));
            }
            if page.len() >= limit || examined >= LIST_SCAN_LIMIT {
                return Ok((page, Some(last)));
            }
        }
        Ok((page, None))
    }

    /// Counts of the index, for tests and benchmarks: (queued, in flight, buckets).
    pub fn index_counts(&self) -> (usize, usize, usize) {
        let q = lock(&self.queue);
        (q.index.queued(), q.index.in_flight(), q.index.buckets())
    }
}

/// The delivery a record holds; `leased`: in flight.
pub(super) fn to_delivery(id: Id, r: DeliveryRecord, leased: bool) -> Delivery {
    let state = if leased {
        DeliveryState::InFlight
    } else {
        r.state
    };
    Delivery {
        id: delivery_id_string(ulid::Ulid(id)),
        event_id: event_id_string(ulid::Ulid(r.event)),
        event_type: r.event_type,
        subscription: r.subscription,
        bucket: r.bucket,
        adhoc: r.adhoc,
        state,
        attempts: r.attempts.last().map_or(0, |a| a.number),
        created_ms: r.created_ms,
        due_ms: (state == DeliveryState::Scheduled).then_some(r.due_ms),
        finished_ms: r.finished_ms,
        last_error: r.attempts.last().and_then(|a| a.error.clone()),
        owner: r.owner,
    }
}

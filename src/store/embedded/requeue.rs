//! An operator's moves between the queue and the finished deliveries, on the writer: requeue
//! one delivery, requeue the dead ones, end a subscription's queued ones.

use super::codec::DeliveryRecord;
use super::kv::Batch;
use super::layout::{corrupt, delivery_key, id_of};
use super::memory::Reopened;
use super::writer::{Done, Writer};
use super::{lock, BULK_CHUNK, DONE, PENDING};
use crate::store::index::Id;
use crate::store::{delivery_id_string, Attempt, DeliveryState, Outcome, RequeueError, StoreError};

impl Writer {
    /// Moves a finished delivery back to the queue, due at `now_ms`, in `batch`.
    fn reopen(
        &self,
        batch: &mut Batch,
        id: Id,
        mut r: DeliveryRecord,
        now_ms: u64,
    ) -> (String, u64) {
        batch.remove(delivery_key(DONE, id));
        r.state = DeliveryState::Scheduled;
        r.finished_ms = None;
        r.due_ms = now_ms;
        batch.insert(delivery_key(PENDING, id), r.encode());
        (r.bucket, now_ms)
    }

    /// [`AdminStore::requeue`](crate::store::AdminStore::requeue)'s write: a queued delivery
    /// is brought forward, a finished one reopened. Returns the state it had, and what the
    /// index must learn.
    pub(super) fn requeue(
        &self,
        id: Id,
        now_ms: u64,
    ) -> Result<(DeliveryState, Option<Done>), RequeueError> {
        let name = delivery_id_string(ulid::Ulid(id));
        if lock(&self.queue).index.is_leased(id) {
            return Err(RequeueError::InFlight(name));
        }
        if let Some(r) = self.pending(id)? {
            return Ok((
                DeliveryState::Scheduled,
                Some(self.bring_forward(id, r, now_ms)?),
            ));
        }
        let k = delivery_key(DONE, id);
        let Some(v) = self.kv.get(&k)? else {
            return Err(RequeueError::NotFound(name));
        };
        let r = DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?;
        let was = r.state;
        let mut batch = Batch::default();
        let (bucket, due) = self.reopen(&mut batch, id, r, now_ms);
        self.kv.apply_batch(batch)?;
        let queue = self.queue.clone();
        let after: Done = Box::new(move |_| lock(&queue).index.insert(&bucket, due, id));
        Ok((was, Some(after)))
    }

    /// Makes the queued delivery `id` (record `r`) due at `now_ms`.
    fn bring_forward(
        &self,
        id: Id,
        mut r: DeliveryRecord,
        now_ms: u64,
    ) -> Result<Done, StoreError> {
        let (bucket, old_due) = (r.bucket.clone(), r.due_ms);
        r.due_ms = now_ms;
        let mut batch = Batch::default();
        batch.insert(delivery_key(PENDING, id), r.encode());
        self.kv.apply_batch(batch)?;
        let queue = self.queue.clone();
        Ok(Box::new(move |_| {
            let mut q = lock(&queue);
            // Claimed meanwhile: the attempt under way is the retry.
            if q.index.remove(&bucket, old_due, id) {
                q.index.insert(&bucket, now_ms, id);
            }
        }))
    }

    /// Requeues dead deliveries among up to [`BULK_CHUNK`] finished ones from `from` on.
    /// Returns how many, and where to continue.
    pub(super) fn requeue_dead_chunk(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        from: Vec<u8>,
        now_ms: u64,
    ) -> Result<(usize, Option<Vec<u8>>, Reopened), StoreError> {
        let mut batch = Batch::default();
        let mut reopened = Vec::new();
        let mut next = None;
        for (i, entry) in self.kv.range(from..vec![DONE + 1]).enumerate() {
            let (k, v) = entry?;
            if i >= BULK_CHUNK {
                next = Some(k.to_vec());
                break;
            }
            let r = DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?;
            let wanted = r.state == DeliveryState::Dead
                && r.finished_ms.is_some_and(|t| t >= since_ms)
                && subscription.is_none_or(|s| s == r.subscription);
            if wanted {
                let id = id_of(&k)?;
                let (bucket, due) = self.reopen(&mut batch, id, r, now_ms);
                reopened.push((bucket, due, id));
            }
        }
        self.kv.apply_batch(batch)?;
        Ok((reopened.len(), next, reopened))
    }

    /// [`AdminStore::end_queued`](crate::store::AdminStore::end_queued)'s writes, as one
    /// batch: the subscription's unfinished deliveries that are not leased move to `D`, dead.
    /// Returns how many, and what the index must forget.
    pub(super) fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(u64, Reopened), StoreError> {
        let mut batch = Batch::default();
        let mut unqueue = Vec::new();
        for entry in self.kv.scan_prefix([PENDING]) {
            let (k, v) = entry?;
            let Ok(mut r) = DeliveryRecord::decode(&v) else {
                continue;
            };
            if r.subscription != subscription || r.adhoc.is_some() {
                continue;
            }
            // In flight: its attempt records its own outcome. (The caller took the
            // subscription out of the limits first, so no claim leases one meanwhile.)
            let id = id_of(&k)?;
            if lock(&self.queue).index.is_leased(id) {
                continue;
            }
            let due = r.due_ms;
            end(&mut r, reason, now_ms);
            batch.remove(k.to_vec());
            batch.insert(delivery_key(DONE, id), r.encode());
            unqueue.push((r.bucket, due, id));
        }
        self.kv.apply_batch(batch)?;
        Ok((unqueue.len() as u64, unqueue))
    }
}

/// Makes `r` dead at `now_ms`, with an attempt that made no request and says `reason`.
fn end(r: &mut DeliveryRecord, reason: &str, now_ms: u64) {
    r.attempts.push(Attempt {
        number: r.attempts.last().map_or(1, |a| a.number + 1),
        started_ms: now_ms,
        duration_ms: 0,
        outcome: Outcome::Other,
        status_code: None,
        error: Some(reason.to_string()),
        response_excerpt: None,
        response_headers: Vec::new(),
    });
    r.state = DeliveryState::Dead;
    r.due_ms = 0;
    r.finished_ms = Some(now_ms);
}

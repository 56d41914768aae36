//! The retention sweep, on the writer: finished deliveries past the cutoff, the events they
//! leave with nothing, and old events that matched no target.

use std::collections::HashSet;

use super::codec::{DeliveryRecord, EventRecord};
use super::kv::Batch;
use super::layout::{delivery_key, event_key, id_of, remove_event, unmatched_event};
use super::writer::Writer;
use super::{DONE, ZERO};
use crate::store::delivery_id_at;
use crate::store::index::Id;
use crate::store::StoreError;

impl Writer {
    /// [`QueueStore::sweep`](crate::store::QueueStore::sweep)'s writes, as one batch. Returns
    /// how many records it removed.
    pub(super) fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut batch = Batch::default();
        let (removed, events) = self.sweep_finished(&mut batch, cutoff_ms, limit)?;
        let mut count = removed.len();
        count += self.sweep_emptied(&mut batch, events, &removed)?;
        count += self.sweep_unmatched(&mut batch, cutoff_ms, limit)?;
        self.kv.apply_batch(batch)?;
        Ok(count)
    }

    /// Removes up to `limit` deliveries finished before `cutoff_ms`. Returns their ids and
    /// their events.
    fn sweep_finished(
        &self,
        batch: &mut Batch,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<(HashSet<Id>, Vec<u128>), StoreError> {
        let mut removed = HashSet::new();
        let mut events = Vec::new();
        // Finished deliveries were created before they finished: only ids older than the
        // cutoff can qualify. Those that finished later are looked at again next time.
        let end = delivery_key(DONE, delivery_id_at(cutoff_ms).0);
        for entry in self
            .kv
            .range(vec![DONE]..end)
            .take(limit.saturating_mul(10))
        {
            let (k, v) = entry?;
            let r = match DeliveryRecord::decode(&v) {
                Ok(r) => r,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            if r.finished_ms.is_none_or(|t| t >= cutoff_ms) {
                continue;
            }
            batch.remove(k.to_vec());
            removed.insert(id_of(&k)?);
            events.push(r.event);
            if removed.len() >= limit {
                break;
            }
        }
        Ok((removed, events))
    }

    /// Removes the `events` left with no delivery once the `removed` ones are gone. Returns
    /// how many.
    fn sweep_emptied(
        &self,
        batch: &mut Batch,
        mut events: Vec<u128>,
        removed: &HashSet<Id>,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        events.sort_unstable();
        events.dedup();
        for event in events {
            let k = event_key(event);
            let Some(v) = self.kv.get(&k)? else {
                continue;
            };
            let e = match EventRecord::decode(&v, false) {
                Ok(e) => e,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            if e.id == event && !self.any_left(&e.deliveries, removed)? {
                remove_event(&self.kv, batch, event)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Removes up to `limit` events created before `cutoff_ms` that matched no target, with
    /// their retention keys. Returns how many keys it removed.
    fn sweep_unmatched(
        &self,
        batch: &mut Batch,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut end = vec![ZERO];
        end.extend_from_slice(&cutoff_ms.to_be_bytes());
        for entry in self.kv.range(vec![ZERO]..end).take(limit) {
            let (k, _) = entry?;
            let event = unmatched_event(&k)?;
            batch.remove(k.to_vec());
            let ek = event_key(event);
            if let Some(v) = self.kv.get(&ek)? {
                if EventRecord::decode(&v, false).is_ok_and(|e| e.id == event) {
                    remove_event(&self.kv, batch, event)?;
                }
            }
            count += 1;
        }
        Ok(count)
    }
}

//! Erasing an owner, on the writer: its stored subscriptions, its events, and every delivery
//! of either, in one batch.

use std::collections::HashSet;

use super::codec::{DeliveryRecord, EventRecord};
use super::kv::Batch;
use super::layout::{event_key, id_of, key, remove_event, unmatched_key};
use super::memory::Reopened;
use super::writer::Writer;
use super::{lock, DONE, EVENT, PENDING, SUBSCRIPTION, USER_SUBSCRIPTION};
use crate::store::index::Id;
use crate::store::{delivery_id_string, Erased, StoreError, StoredSubscription};

/// The deliveries an erasure removes, and what follows from them.
#[derive(Default)]
struct Removed {
    ids: HashSet<Id>,
    /// The unfinished ones, for the index to forget.
    unqueue: Reopened,
    /// Other events that lose deliveries (unowned ones, from before owners, that went to the
    /// owner's subscriptions): removed too when nothing of them is left.
    touched: HashSet<u128>,
}

impl Writer {
    /// [`AdminStore::erase_owner`](crate::store::AdminStore::erase_owner)'s writes, as one
    /// batch: reads every subscription, event and delivery record (erasure is rare; its cost is
    /// a scan of the store). Returns the counts and the unfinished deliveries the index must
    /// forget.
    pub(super) fn erase_owner(&self, owner: &str) -> Result<(Erased, Reopened), StoreError> {
        let mut batch = Batch::default();
        let mut erased = Erased::default();
        let subscriptions = self.erase_subscriptions(&mut batch, owner)?;
        erased.subscriptions = subscriptions.len() as u64;
        let events = self.erase_events(&mut batch, owner)?;
        erased.events = events.len() as u64;
        let removed =
            self.erase_deliveries(&mut batch, owner, &subscriptions, &events, &mut erased)?;
        self.remove_emptied(&mut batch, &removed)?;
        self.kv.apply_batch(batch)?;
        let mut health = lock(&self.health);
        for id in &subscriptions {
            health.forget(id);
        }
        Ok((erased, removed.unqueue))
    }

    /// Removes the owner's stored subscriptions and their states. Returns their ids.
    fn erase_subscriptions(
        &self,
        batch: &mut Batch,
        owner: &str,
    ) -> Result<HashSet<String>, StoreError> {
        let mut subscriptions = HashSet::new();
        for entry in self.kv.scan_prefix([USER_SUBSCRIPTION]) {
            let (k, v) = entry?;
            let Ok(sub) = serde_json::from_slice::<StoredSubscription>(&v) else {
                continue;
            };
            if sub.owner.as_deref() == Some(owner) {
                batch.remove(k.to_vec());
                batch.remove(key(SUBSCRIPTION, sub.id.as_bytes()));
                subscriptions.insert(sub.id);
            }
        }
        Ok(subscriptions)
    }

    /// Removes the owner's events (and the retention key of those that matched no target).
    /// Returns their ids.
    fn erase_events(&self, batch: &mut Batch, owner: &str) -> Result<HashSet<u128>, StoreError> {
        let mut events = HashSet::new();
        for entry in self.kv.scan_prefix([EVENT]) {
            let (k, v) = entry?;
            let Ok(e) = EventRecord::decode(&v, false) else {
                continue;
            };
            if e.owner.as_deref() == Some(owner) {
                batch.remove(k.to_vec());
                remove_event(&self.kv, batch, e.id)?;
                if e.deliveries.is_empty() {
                    batch.remove(unmatched_key(e.created_ms, e.id));
                }
                events.insert(e.id);
            }
        }
        Ok(events)
    }

    /// Removes every delivery of the owner, of its events, or to its subscriptions (per-request
    /// ones aside), counting them and their attempts in `erased`.
    fn erase_deliveries(
        &self,
        batch: &mut Batch,
        owner: &str,
        subscriptions: &HashSet<String>,
        events: &HashSet<u128>,
        erased: &mut Erased,
    ) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        for prefix in [PENDING, DONE] {
            for entry in self.kv.scan_prefix([prefix]) {
                let (k, v) = entry?;
                let Ok(r) = DeliveryRecord::decode(&v) else {
                    continue;
                };
                let owned = r.owner.as_deref() == Some(owner)
                    || events.contains(&r.event)
                    || (r.adhoc.is_none() && subscriptions.contains(&r.subscription));
                if !owned {
                    continue;
                }
                if !events.contains(&r.event) {
                    removed.touched.insert(r.event);
                }
                let id = id_of(&k)?;
                removed.ids.insert(id);
                batch.remove(k.to_vec());
                erased.deliveries += 1;
                erased.attempts += r.attempts.len() as u64;
                if prefix == PENDING {
                    erased.unfinished.push(delivery_id_string(ulid::Ulid(id)));
                    removed.unqueue.push((r.bucket, r.due_ms, id));
                }
            }
        }
        Ok(removed)
    }

    /// Removes the touched events left with no delivery.
    fn remove_emptied(&self, batch: &mut Batch, removed: &Removed) -> Result<(), StoreError> {
        for &event in &removed.touched {
            let k = event_key(event);
            let Some(e) = self
                .kv
                .get(&k)?
                .and_then(|v| EventRecord::decode(&v, false).ok())
                .filter(|e| e.id == event)
            else {
                continue;
            };
            if !self.any_left(&e.deliveries, &removed.ids)? {
                remove_event(&self.kv, batch, event)?;
            }
        }
        Ok(())
    }
}

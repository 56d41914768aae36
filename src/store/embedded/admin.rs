//! [`AdminStore`] for the sled engine: the operator side.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::codec::EventRecord;
use super::kv::Batch;
use super::layout::{
    corrupt, encode_json, event_by_hash, event_hash, event_key, id_of, key, ms_of,
};
use super::memory::{requeued, unqueued};
use super::transfer::export_start;
use super::writer::{Done, Job, Writer};
use super::{
    lock, EmbeddedStore, DONE, EVENT, KEY, MAX_READS, PENDING, REVOKED, SUBSCRIPTION,
    USER_SUBSCRIPTION,
};
use crate::store::{
    delivery_id_string, event_id_string, parse_delivery_id, parse_event_id, AdminStore, Attempt,
    AuditEntry, AuditFilter, Delivery, DeliveryFilter, DeliveryState, Erased, EventMeta,
    PendingStats, Portable, RequeueError, StoreError, StoredSubscription, SubscriptionState,
    Switch, Timed,
};

#[async_trait]
impl AdminStore for EmbeddedStore {
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let Some(id) = parse_delivery_id(id).map(|u| u.0) else {
            return Ok(None);
        };
        self.read(move |s| Ok(s.record(id)?.map(|(r, _)| s.to_delivery(id, r))))
            .await
    }

    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Ok(Vec::new());
        };
        self.read(move |s| Ok(s.record(id)?.map(|(r, _)| r.attempts).unwrap_or_default()))
            .await
    }

    async fn event_meta(&self, event_id: &str) -> Result<Option<EventMeta>, StoreError> {
        let Some(event) = parse_event_id(event_id).map(|u| u.0) else {
            return Ok(None);
        };
        self.read(move |s| {
            Ok(s.event(event, false)?.map(|e| EventMeta {
                request_id: e.request_id,
                status: e.status,
                event_type: e.event_type,
                owner: e.owner,
                fingerprint: hex::encode(e.fingerprint),
                created_ms: e.created_ms,
                deliveries: e
                    .deliveries
                    .iter()
                    .map(|d| delivery_id_string(ulid::Ulid(*d)))
                    .collect(),
            }))
        })
        .await
    }

    async fn event_by_request(
        &self,
        request_id: &str,
        status: &str,
    ) -> Result<Option<String>, StoreError> {
        let hash = event_hash(request_id, status);
        let (request_id, status) = (request_id.to_string(), status.to_string());
        self.read(move |s| {
            let Some((id, v)) = event_by_hash(&s.kv, hash)? else {
                return Ok(None);
            };
            let e = EventRecord::decode(&v, false).map_err(|e| corrupt(&event_key(id), e))?;
            Ok((e.request_id == request_id && e.status == status)
                .then(|| event_id_string(ulid::Ulid(e.id))))
        })
        .await
    }

    async fn export(
        &self,
        after: Option<String>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError> {
        let first = after.is_none();
        let start = export_start(after)?;
        self.read(move |s| s.export_page(first, start, events))
            .await
    }

    async fn import(&self, records: Vec<Portable>) -> Result<(), StoreError> {
        let (batch, audit) = self.import_batch(records)?;
        let (tree, audit) = (self.audit.clone(), Self::audit_batch(audit)?);
        // The index learns of imported deliveries when the store is next opened.
        self.write(move |w: &Writer| {
            w.kv.apply_batch(batch)?;
            tree.apply_batch(audit)?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn signing_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let k = key(KEY, name.as_bytes());
        self.write(move |w: &Writer| {
            // The writer is the only one to write: a get then an insert cannot race.
            if let Some(v) = w.kv.get(&k)? {
                return Ok::<_, StoreError>((v.to_vec(), None::<Done>));
            }
            let fresh: [u8; 32] = rand::random();
            w.kv.insert(k, &fresh[..])?;
            Ok((fresh.to_vec(), None))
        })
        .await
    }

    async fn revoke_session(&self, nonce: &str, until: u64, now: u64) -> Result<(), StoreError> {
        let k = key(REVOKED, nonce.as_bytes());
        self.write(move |w: &Writer| {
            let mut batch = Batch::default();
            for entry in w.kv.scan_prefix([REVOKED]) {
                let (old, expires) = entry?;
                let ended = <[u8; 8]>::try_from(expires.as_ref())
                    .map_or(true, |e| u64::from_be_bytes(e) <= now);
                if ended {
                    batch.remove(old);
                }
            }
            batch.insert(k, &until.to_be_bytes()[..]);
            w.kv.apply_batch(batch)?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.audit_record(entry).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        self.audit_page(filter, cursor, limit).await
    }

    async fn erase_audit_owner(&self, owner: &str) -> Result<u64, StoreError> {
        self.audit_erase_owner(owner).await
    }

    async fn prune_audit(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.audit_prune(cutoff_ms, limit).await
    }

    async fn session_revoked(&self, nonce: &str) -> Result<bool, StoreError> {
        let k = key(REVOKED, nonce.as_bytes());
        self.read(move |s| s.kv.contains_key(k)).await
    }

    async fn event_body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(event) = parse_event_id(event_id).map(|u| u.0) else {
            return Ok(None);
        };
        self.read(move |s| Ok(s.event(event, true)?.map(|e| e.body)))
            .await
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let filter = filter.clone();
        let Some(cursor) = cursor_id(cursor) else {
            return Ok((Vec::new(), None));
        };
        self.read(move |s| s.list(&filter, cursor, limit)).await
    }

    async fn list_timed(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Timed>, Option<String>), StoreError> {
        let filter = filter.clone();
        let Some(cursor) = cursor_id(cursor) else {
            return Ok((Vec::new(), None));
        };
        self.read(move |s| s.list_timed(&filter, cursor, limit))
            .await
    }

    async fn requeue(&self, delivery_id: &str, now_ms: u64) -> Result<DeliveryState, RequeueError> {
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Err(RequeueError::NotFound(delivery_id.to_string()));
        };
        self.write(move |w: &Writer| w.requeue(id, now_ms)).await
    }

    async fn requeue_dead(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError> {
        let mut from = vec![DONE];
        let mut total = 0;
        loop {
            let sub = subscription.map(str::to_string);
            let start = from.clone();
            let (n, next) = self
                .write(move |w: &Writer| {
                    let (n, next, reopened) =
                        w.requeue_dead_chunk(sub.as_deref(), since_ms, start, now_ms)?;
                    Ok::<_, RequeueError>(((n, next), Some(requeued(&w.queue, reopened))))
                })
                .await?;
            total += n;
            match next {
                Some(next) => from = next,
                None => return Ok(total),
            }
        }
    }

    async fn set_disabled(
        &self,
        subscription: &str,
        disabled: Option<(u64, String)>,
    ) -> Result<(), StoreError> {
        let id = subscription.to_string();
        self.write(move |w: &Writer| {
            w.write_state(&id, |state| state.set_disabled(disabled))?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn switch(&self, subscription: &str, switch: Switch) -> Result<(), StoreError> {
        let paused = switch.paused();
        let id = subscription.to_string();
        self.write(move |w: &Writer| {
            w.write_state(&id, |state| state.paused = paused)?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        self.read(|s| {
            let mut all = Vec::new();
            for entry in s.kv.scan_prefix([USER_SUBSCRIPTION]) {
                let (k, v) = entry?;
                match serde_json::from_slice(&v) {
                    Ok(subscription) => all.push(subscription),
                    Err(e) => s.skipped.skip(&k, e),
                }
            }
            Ok(all)
        })
        .await
    }

    async fn put_subscription(&self, subscription: StoredSubscription) -> Result<(), StoreError> {
        self.write(move |w: &Writer| {
            w.kv.insert(
                key(USER_SUBSCRIPTION, subscription.id.as_bytes()),
                encode_json(&subscription),
            )?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn erase_owner(&self, owner: &str) -> Result<Erased, StoreError> {
        let owner = owner.to_string();
        self.write(move |w: &Writer| {
            let (erased, unqueue) = w.erase_owner(&owner)?;
            Ok::<_, StoreError>((erased, Some(unqueued(&w.queue, unqueue))))
        })
        .await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |w: &Writer| {
            let mut batch = Batch::default();
            let existed = w.kv.contains_key(key(USER_SUBSCRIPTION, id.as_bytes()))?;
            batch.remove(key(USER_SUBSCRIPTION, id.as_bytes()));
            batch.remove(key(SUBSCRIPTION, id.as_bytes()));
            w.kv.apply_batch(batch)?;
            lock(&w.health).forget(&id);
            Ok::<_, StoreError>((existed, None::<Done>))
        })
        .await
    }

    async fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (subscription, reason) = (subscription.to_string(), reason.to_string());
        self.write(move |w: &Writer| {
            let (ended, unqueue) = w.end_queued(&subscription, &reason, now_ms)?;
            Ok::<_, StoreError>((ended, Some(unqueued(&w.queue, unqueue))))
        })
        .await
    }

    async fn subscription_states(&self) -> Result<HashMap<String, SubscriptionState>, StoreError> {
        Ok(lock(&self.health).states.clone())
    }

    async fn pending_stats(&self, now_ms: u64) -> Result<PendingStats, StoreError> {
        let mut stats = lock(&self.queue).index.stats(now_ms);
        stats.oldest_created_ms = self
            .read(|s| {
                Ok(match s.kv.scan_prefix([PENDING]).next() {
                    Some(entry) => Some(ms_of(id_of(&entry?.0)?)),
                    None => None,
                })
            })
            .await?;
        Ok(stats)
    }

    async fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.read(|s| {
            let events = s.kv.scan_prefix([EVENT]).keys().count() as u64;
            // A delivery that finishes during the walk moves from P to D: count ids, not keys.
            let mut ids = HashSet::new();
            for prefix in [PENDING, DONE] {
                for k in s.kv.scan_prefix([prefix]).keys() {
                    ids.insert(id_of(&k?)?);
                }
            }
            Ok((events, ids.len() as u64))
        })
        .await
    }

    fn skipped_records(&self) -> u64 {
        self.skipped.count()
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.read(|s| s.kv.size_on_disk()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Work(Box::new(move |w: &Writer| {
            let _ = tx.send(lock(&w.fault).clone());
            None
        }));
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await.map_err(|_| StoreError::Closed)? {
            None => Ok(()),
            Some(fault) => Err(StoreError::Backend(format!(
                "the last flush failed: {fault}"
            ))),
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        // A closed channel means the writer has already stopped.
        let _ = self.writer.send(Job::Close).await;
        let handle = lock(&self.writer_thread).take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|_| StoreError::Closed)?
                .map_err(|_| StoreError::Closed)?;
        }
        // The writer flushed everything before its thread ended. Wait for the reads under way,
        // then refuse new ones.
        if let Ok(all) = self.reads.acquire_many(MAX_READS).await {
            all.forget();
            self.reads.close();
        }
        Ok(())
    }
}

/// A listing's cursor as an id: `Some(None)` for none, `None` for one that is no delivery id
/// (whose page is empty).
fn cursor_id(cursor: Option<&str>) -> Option<Option<crate::store::index::Id>> {
    match cursor {
        Some(c) => parse_delivery_id(c).map(|u| Some(u.0)),
        None => Some(None),
    }
}

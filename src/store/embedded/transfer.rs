//! Export and import: the store's records as [`Portable`] ones, and back.

use std::collections::HashMap;

use base64::Engine;

use super::codec::{DeliveryRecord, EventRecord};
use super::kv::Batch;
use super::layout::{delivery_key, encode_json, event_hash, insert_event, key, unmatched_key};
use super::read::to_delivery;
use super::{lock, EmbeddedStore, DONE, EVENT, KEY, PENDING, SUBSCRIPTION, USER_SUBSCRIPTION};
use crate::store::index::Id;
use crate::store::portable::{self, Imported, ImportedDelivery, ImportedEvent, Progress};
use crate::store::{
    delivery_id_string, event_id_string, AuditEntry, DeliveryState, Portable, StoreError,
};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where an export page starts: just after the cursor (the hex of the last page's last key),
/// or at the first event.
pub(super) fn export_start(after: Option<String>) -> Result<Vec<u8>, StoreError> {
    match after {
        Some(cursor) => {
            let mut k = hex::decode(&cursor)
                .map_err(|_| StoreError::Backend(format!("bad export cursor {cursor:?}")))?;
            // The smallest key after the cursor's.
            k.push(0);
            Ok(k)
        }
        None => Ok(vec![EVENT]),
    }
}

impl EmbeddedStore {
    /// One page of [`AdminStore::export`](crate::store::AdminStore::export) from the key
    /// `start` on: the keys, subscriptions and states first if `first`, then up to `events`
    /// events, each followed by its deliveries. Returns the cursor of the next page.
    pub(super) fn export_page(
        &self,
        first: bool,
        start: Vec<u8>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError> {
        let mut out = Vec::new();
        if first {
            self.export_settings(&mut out)?;
        }
        let mut n = 0;
        for entry in self.kv.range(start..vec![EVENT + 1]) {
            let (k, v) = entry?;
            let e = match EventRecord::decode(&v, true) {
                Ok(e) => e,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            out.push(portable_event(&e));
            self.export_deliveries(&e.deliveries, &mut out)?;
            n += 1;
            if n >= events {
                return Ok((out, Some(hex::encode(&k))));
            }
        }
        Ok((out, None))
    }

    /// The signing keys, stored subscriptions, subscription states and the audit log.
    fn export_settings(&self, out: &mut Vec<Portable>) -> Result<(), StoreError> {
        for entry in self.kv.scan_prefix([KEY]) {
            let (k, v) = entry?;
            out.push(Portable::Key {
                name: String::from_utf8_lossy(&k[1..]).into_owned(),
                value: BASE64.encode(&v),
            });
        }
        for entry in self.kv.scan_prefix([USER_SUBSCRIPTION]) {
            let (k, v) = entry?;
            match serde_json::from_slice(&v) {
                Ok(sub) => out.push(Portable::Subscription(sub)),
                Err(e) => self.skipped.skip(&k, e),
            }
        }
        for entry in self.kv.scan_prefix([SUBSCRIPTION]) {
            let (k, v) = entry?;
            match serde_json::from_slice(&v) {
                Ok(state) => out.push(Portable::State {
                    subscription: String::from_utf8_lossy(&k[1..]).into_owned(),
                    state,
                }),
                Err(e) => self.skipped.skip(&k, e),
            }
        }
        self.export_audit(out)
    }

    /// An event's deliveries, with their attempts.
    fn export_deliveries(
        &self,
        deliveries: &[Id],
        out: &mut Vec<Portable>,
    ) -> Result<(), StoreError> {
        for &d in deliveries {
            for prefix in [PENDING, DONE] {
                let dk = delivery_key(prefix, d);
                let Some(v) = self.kv.get(&dk)? else {
                    continue;
                };
                match DeliveryRecord::decode(&v) {
                    Ok(r) => {
                        let attempts = r.attempts.clone();
                        let delivery = to_delivery(d, r, false);
                        out.push(Portable::delivery(&delivery, &attempts));
                    }
                    Err(e) => self.skipped.skip(&dk, e),
                }
            }
        }
        Ok(())
    }

    /// [`AdminStore::import`](crate::store::AdminStore::import)'s writes, as one batch for the
    /// writer to apply; the subscription states also go to the health in memory.
    pub(super) fn import_batch(
        &self,
        records: Vec<Portable>,
    ) -> Result<(Batch, Vec<AuditEntry>), StoreError> {
        let mut batch = Batch::default();
        let mut audit = Vec::new();
        // sled names an event by its (request_id, status): an imported event gets the id that
        // names, and its deliveries follow it (an export lists them right after it).
        let mut events: HashMap<String, u128> = HashMap::new();
        for record in records {
            match portable::decode(record)? {
                Imported::Key { name, value } => batch.insert(key(KEY, name.as_bytes()), value),
                Imported::Subscription(sub) => {
                    batch.insert(key(USER_SUBSCRIPTION, sub.id.as_bytes()), encode_json(&sub));
                }
                Imported::State {
                    subscription,
                    state,
                } => {
                    batch.insert(
                        key(SUBSCRIPTION, subscription.as_bytes()),
                        encode_json(&state),
                    );
                    lock(&self.health).states.insert(subscription, state);
                }
                Imported::Event(e) => {
                    let (exported, id) = import_event(&mut batch, e);
                    events.insert(exported, id);
                }
                Imported::Delivery(d) => import_delivery(&mut batch, &events, d)?,
                Imported::Audit(entry) => audit.push(entry),
            }
        }
        Ok((batch, audit))
    }
}

/// The export record of an event.
fn portable_event(e: &EventRecord) -> Portable {
    Portable::Event {
        id: event_id_string(ulid::Ulid(e.id)),
        request_id: e.request_id.clone(),
        status: e.status.clone(),
        event_type: e.event_type.clone(),
        owner: e.owner.clone(),
        fingerprint: hex::encode(e.fingerprint),
        created_ms: e.created_ms,
        body: BASE64.encode(&e.body),
        deliveries: e
            .deliveries
            .iter()
            .map(|d| delivery_id_string(ulid::Ulid(*d)))
            .collect(),
    }
}

/// Writes an imported event under the id its `(request_id, status)` names here. Returns its
/// exported id and that one.
fn import_event(batch: &mut Batch, e: ImportedEvent) -> (String, u128) {
    let id = ulid::Ulid::from_parts(e.created_ms, event_hash(&e.request_id, &e.status)).0;
    if e.deliveries.is_empty() {
        batch.insert(unmatched_key(e.created_ms, id), []);
    }
    let record = EventRecord {
        id,
        created_ms: e.created_ms,
        fingerprint: e.fingerprint,
        request_id: e.request_id,
        status: e.status,
        event_type: e.event_type,
        deliveries: e.deliveries.iter().map(|d| d.0).collect(),
        owner: e.owner,
        body: e.body,
    };
    insert_event(batch, id, record.encode());
    (e.id, id)
}

/// Writes an imported delivery, `P` or `D`, for the event `events` maps its event id to.
fn import_delivery(
    batch: &mut Batch,
    events: &HashMap<String, u128>,
    d: ImportedDelivery,
) -> Result<(), StoreError> {
    let event = *events.get(&d.event_id).ok_or_else(|| {
        StoreError::Backend(format!(
            "import: bad order (a delivery before its event) in {}",
            delivery_id_string(d.id)
        ))
    })?;
    let (prefix, state, due_ms, finished_ms) = match d.progress {
        Progress::Unfinished { due_ms } => (PENDING, DeliveryState::Scheduled, due_ms, None),
        Progress::Finished { state, finished_ms } => (DONE, state, 0, finished_ms),
    };
    let record = DeliveryRecord {
        bucket: d.bucket,
        due_ms,
        event,
        created_ms: d.created_ms,
        state,
        finished_ms,
        subscription: d.subscription,
        event_type: d.event_type,
        adhoc: d.adhoc,
        owner: d.owner,
        attempts: d.attempts,
    };
    batch.insert(delivery_key(prefix, d.id.0), record.encode());
    Ok(())
}

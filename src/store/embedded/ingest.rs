//! Ingest on the writer: each event is looked up by its key (the idempotency check), and a new
//! one is written with its deliveries in one batch for the whole call.

use std::collections::HashMap;

use bytes::Bytes;

use super::codec::{DeliveryRecord, EventRecord};
use super::kv::Batch;
use super::layout::{delivery_key, event_by_hash, event_hash, insert_event, unmatched_key};
use super::read::to_delivery;
use super::writer::Writer;
use super::PENDING;
use crate::event::NewEvent;
use crate::store::{
    event_id_string, new_delivery_id, Claimed, DeliveryState, IngestError, Ingested, StoreError,
    Target,
};

/// An event accepted before, by this call or an earlier one: what a repeat is checked against
/// and answered with.
#[derive(Clone, Copy)]
struct Accepted {
    id: u128,
    fingerprint: [u8; 32],
    deliveries: usize,
}

impl Accepted {
    /// The answer to event number `index` of a call, a repeat of this one: the first event, or
    /// a conflict if the bodies differ.
    fn repeat(self, index: usize, event: NewEvent) -> Result<Ingested, IngestError> {
        let event_id = event_id_string(ulid::Ulid(self.id));
        if self.fingerprint != event.fingerprint {
            return Err(IngestError::Conflict {
                index,
                request_id: event.request_id,
                status: event.status,
                event_id,
            });
        }
        Ok(Ingested {
            event_id,
            deliveries: self.deliveries,
            duplicate: true,
        })
    }
}

impl Writer {
    pub(super) fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<(Vec<Ingested>, Vec<Claimed>), IngestError> {
        let mut batch = Batch::default();
        let mut answers = Vec::with_capacity(events.len());
        let mut fresh = Vec::new();
        // Events of this call by hash: a repeat inside one batch is a duplicate of the first.
        let mut added: HashMap<u128, Accepted> = HashMap::new();
        for (index, (event, targets)) in events.into_iter().enumerate() {
            let hash = event_hash(&event.request_id, &event.status);
            let id = ulid::Ulid::from_parts(now_ms, hash).0;
            let earlier = match added.get(&hash) {
                Some(&accepted) => Some(accepted),
                None => self.stored(hash, &event)?,
            };
            if let Some(earlier) = earlier {
                answers.push(earlier.repeat(index, event)?);
                continue;
            }
            let accepted = add_event(&mut batch, &mut fresh, id, event, targets, now_ms);
            added.insert(hash, accepted);
            answers.push(Ingested {
                event_id: event_id_string(ulid::Ulid(id)),
                deliveries: accepted.deliveries,
                duplicate: false,
            });
        }
        self.kv.apply_batch(batch)?;
        Ok((answers, fresh))
    }

    /// The event stored with hash `hash`, the hash of `event`, if there is one.
    fn stored(&self, hash: u128, event: &NewEvent) -> Result<Option<Accepted>, IngestError> {
        let Some((id, v)) = event_by_hash(&self.kv, hash)? else {
            return Ok(None);
        };
        let e = match EventRecord::decode(&v, false) {
            Ok(e) => e,
            // A damaged record is replaced by the new event, which takes its `H` key (its
            // own deliveries, if any, were skipped already: they cannot be read).
            Err(e) => {
                self.skipped.skip(&super::layout::event_key(id), e);
                return Ok(None);
            }
        };
        if e.request_id != event.request_id || e.status != event.status {
            // Two keys sharing 80 bits of SHA-256: never seen, but refused rather than
            // confused.
            return Err(StoreError::Backend(format!(
                "event key collision with {}",
                event_id_string(ulid::Ulid(e.id))
            ))
            .into());
        }
        Ok(Some(Accepted {
            id: e.id,
            fingerprint: e.fingerprint,
            deliveries: e.deliveries.len(),
        }))
    }
}

/// Writes a new event `id` and its deliveries, one per target and due at once, into `batch`;
/// the deliveries also go to `fresh`, for the index and their first attempt.
fn add_event(
    batch: &mut Batch,
    fresh: &mut Vec<Claimed>,
    id: u128,
    event: NewEvent,
    targets: Vec<Target>,
    now_ms: u64,
) -> Accepted {
    let body = Bytes::from(event.body);
    let mut ids = Vec::with_capacity(targets.len());
    for target in targets {
        let dlv = new_delivery_id(now_ms).0;
        let record = DeliveryRecord {
            bucket: target.bucket,
            due_ms: now_ms,
            event: id,
            created_ms: now_ms,
            state: DeliveryState::Scheduled,
            finished_ms: None,
            subscription: target.subscription,
            event_type: event.event_type.clone(),
            adhoc: target.adhoc,
            owner: event.owner.clone(),
            attempts: Vec::new(),
        };
        batch.insert(delivery_key(PENDING, dlv), record.encode());
        fresh.push(Claimed {
            delivery: to_delivery(dlv, record, false),
            body: body.clone(),
        });
        ids.push(dlv);
    }
    if ids.is_empty() {
        batch.insert(unmatched_key(now_ms, id), []);
    }
    let accepted = Accepted {
        id,
        fingerprint: event.fingerprint,
        deliveries: ids.len(),
    };
    let record = EventRecord {
        id,
        created_ms: now_ms,
        fingerprint: event.fingerprint,
        request_id: event.request_id,
        status: event.status,
        event_type: event.event_type,
        deliveries: ids,
        owner: event.owner,
        body,
    };
    insert_event(batch, id, record.encode());
    accepted
}

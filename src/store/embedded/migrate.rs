//! Conversion of a store written by hookd's first layout (tree `hookd`, JSON records, eleven
//! key kinds) into the current one, on open.
//!
//! The old tree is read whole and written into the new one in batches; the old tree is dropped
//! only after the new one is flushed. A crash half way leaves the old tree in place, and the
//! next open clears the new tree and starts again. Delivery ids, states, due times and
//! attempts are kept; deliveries that were in flight are due at once. Events get new ids (the
//! current layout derives an event's id from its `(request_id, status)`); receivers never see
//! event ids, and deduplicate on the delivery id, which is kept.

use std::collections::HashMap;

use serde::Deserialize;

use super::codec::{DeliveryRecord, EventRecord};
use super::layout::{
    corrupt, delivery_key, event_hash, event_key, key, seen_key, seen_value, unmatched_key,
};
use super::{DONE, PENDING, SUBSCRIPTION};
use crate::event::AdhocTarget;
use crate::store::Outcome;
use crate::store::{parse_delivery_id, Attempt, DeliveryState, StoreError};

const OLD_TREE: &str = "hookd";

#[derive(Deserialize)]
struct OldMeta {
    request_id: String,
    status: String,
    event_type: String,
    fingerprint: String,
    created_ms: u64,
    deliveries: Vec<String>,
}

#[derive(Deserialize)]
struct OldDelivery {
    id: String,
    subscription: String,
    bucket: String,
    #[serde(default)]
    adhoc: Option<AdhocTarget>,
    state: DeliveryState,
    created_ms: u64,
    due_ms: Option<u64>,
    finished_ms: Option<u64>,
}

#[derive(Deserialize)]
struct OldAttempt {
    number: u32,
    started_ms: u64,
    duration_ms: u64,
    outcome: String,
    status_code: Option<u16>,
    error: Option<String>,
    response_excerpt: Option<String>,
}

/// Every attempt of the old tree, by delivery id (not yet in order).
type Attempts = HashMap<String, Vec<Attempt>>;

fn json<T: for<'de> Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| corrupt(k, format!("first-layout record: {e}")))
}

/// Converts the first layout's tree, if there is one, into `tree`. Returns how many events
/// were converted.
pub fn from_v1(db: &::sled::Db, tree: &::sled::Tree) -> Result<usize, StoreError> {
    let exists = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == OLD_TREE.as_bytes());
    if !exists {
        return Ok(0);
    }
    let old = db.open_tree(OLD_TREE)?;
    if old.is_empty() {
        db.drop_tree(OLD_TREE)?;
        return Ok(0);
    }
    tracing::info!(
        records = old.len(),
        "converting the store from the first layout"
    );
    // A conversion cut short left part of the new tree: start again.
    tree.clear()?;
    let mut attempts = old_attempts(&old)?;
    let converted = convert_events(&old, tree, &mut attempts)?;
    db.flush()?;
    db.drop_tree(OLD_TREE)?;
    db.flush()?;
    tracing::info!(events = converted, "store converted to the current layout");
    Ok(converted)
}

/// The old tree's attempts (`a/` + the delivery id + a u32).
fn old_attempts(old: &::sled::Tree) -> Result<Attempts, StoreError> {
    let mut attempts = Attempts::new();
    for entry in old.scan_prefix(b"a/") {
        let (k, v) = entry?;
        let a: OldAttempt = json(&k, &v)?;
        // `a/` + the delivery id (fixed length) + a u32.
        let id = String::from_utf8_lossy(&k[2..k.len().saturating_sub(4)]).into_owned();
        attempts.entry(id).or_default().push(Attempt {
            number: a.number,
            started_ms: a.started_ms,
            duration_ms: a.duration_ms,
            outcome: Outcome::parse(&a.outcome),
            status_code: a.status_code,
            error: a.error,
            response_excerpt: a.response_excerpt,
            response_headers: Vec::new(),
        });
    }
    Ok(attempts)
}

/// Writes every old event (`m/`, its body under `e/`) with its deliveries into `tree`, a
/// thousand events a batch, and the subscription states (`s/`) after them. Returns how many
/// events.
fn convert_events(
    old: &::sled::Tree,
    tree: &::sled::Tree,
    attempts: &mut Attempts,
) -> Result<usize, StoreError> {
    let now_ms = crate::clock::system_now_ms();
    let mut converted = 0;
    let mut batch = ::sled::Batch::default();
    for entry in old.scan_prefix(b"m/") {
        let (k, v) = entry?;
        convert_event(old, &mut batch, attempts, &k, json(&k, &v)?, now_ms)?;
        converted += 1;
        if converted % 1000 == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    for entry in old.scan_prefix(b"s/") {
        let (k, v) = entry?;
        batch.insert(key(SUBSCRIPTION, &k[2..]), v.to_vec());
    }
    tree.apply_batch(batch)?;
    Ok(converted)
}

/// Writes the old event under `k` (`m/` + its old id), described by `meta`, and its deliveries
/// into `batch`.
fn convert_event(
    old: &::sled::Tree,
    batch: &mut ::sled::Batch,
    attempts: &mut Attempts,
    k: &[u8],
    meta: OldMeta,
    now_ms: u64,
) -> Result<(), StoreError> {
    let body = old
        .get([b"e/".as_slice(), &k[2..]].concat())?
        .map(|b| bytes::Bytes::copy_from_slice(&b))
        .unwrap_or_default();
    let id = ulid::Ulid::from_parts(meta.created_ms, event_hash(&meta.request_id, &meta.status)).0;
    let mut fingerprint = [0u8; 32];
    hex::decode_to_slice(&meta.fingerprint, &mut fingerprint)
        .map_err(|e| corrupt(k, format!("fingerprint: {e}")))?;
    let mut ids = Vec::new();
    for dlv in &meta.deliveries {
        let dk = [b"d/".as_slice(), dlv.as_bytes()].concat();
        let Some(v) = old.get(&dk)? else { continue };
        let d: OldDelivery = json(&dk, &v)?;
        let Some(dlv_id) = parse_delivery_id(&d.id).map(|u| u.0) else {
            continue;
        };
        let history = attempts.remove(&d.id).unwrap_or_default();
        let (prefix, record) = convert_delivery(d, id, &meta.event_type, history, now_ms);
        batch.insert(delivery_key(prefix, dlv_id), record.encode());
        ids.push(dlv_id);
    }
    if ids.is_empty() {
        batch.insert(unmatched_key(meta.created_ms, id), &[]);
    }
    let record = EventRecord {
        id,
        created_ms: meta.created_ms,
        fingerprint,
        request_id: meta.request_id,
        status: meta.status,
        event_type: meta.event_type,
        deliveries: ids,
        owner: None,
        body,
    };
    batch.insert(seen_key(id), &seen_value(id));
    batch.insert(event_key(id), record.encode());
    Ok(())
}

/// The record of an old delivery of the event `event`, and its prefix: finished ones keep
/// their state, the others are scheduled (due at `now_ms` if the old record had no due time).
fn convert_delivery(
    d: OldDelivery,
    event: u128,
    event_type: &str,
    mut history: Vec<Attempt>,
    now_ms: u64,
) -> (u8, DeliveryRecord) {
    history.sort_by_key(|a| a.number);
    let finished = matches!(d.state, DeliveryState::Delivered | DeliveryState::Dead);
    let record = DeliveryRecord {
        bucket: d.bucket,
        due_ms: if finished {
            0
        } else {
            d.due_ms.unwrap_or(now_ms)
        },
        event,
        created_ms: d.created_ms,
        state: if finished {
            d.state
        } else {
            DeliveryState::Scheduled
        },
        finished_ms: if finished { d.finished_ms } else { None },
        subscription: d.subscription,
        event_type: event_type.to_string(),
        adhoc: d.adhoc,
        // The first layout had no owners.
        owner: None,
        attempts: history,
    };
    (if finished { DONE } else { PENDING }, record)
}

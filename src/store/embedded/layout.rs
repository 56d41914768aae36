//! The layout's keys (the table in the module doc): how each kind is built and read back,
//! how JSON values are written, and the error a record that cannot be read gives.

use sha2::Digest;

use super::kv::{Batch, Kv};
use super::{EVENT, SEEN, ZERO};
use crate::store::index::Id;
use crate::store::StoreError;

pub(super) fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// The `P` or `D` key of a delivery.
pub(super) fn delivery_key(prefix: u8, id: Id) -> Vec<u8> {
    key(prefix, &id.to_be_bytes())
}

/// The 80 bits that name an event: SHA-256 over `(request_id, status)`.
pub(super) fn event_hash(request_id: &str, status: &str) -> u128 {
    let mut h = sha2::Sha256::new();
    h.update(
        u32::try_from(request_id.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(request_id.as_bytes());
    h.update(status.as_bytes());
    let digest = h.finalize();
    let mut bits = [0u8; 16];
    bits[6..].copy_from_slice(&digest[..10]);
    u128::from_be_bytes(bits)
}

/// The `E` key of the event with ULID `event`: its 16 bytes, time first.
pub(super) fn event_key(event: u128) -> Vec<u8> {
    key(EVENT, &event.to_be_bytes())
}

/// The `H` key of the event with ULID `event`: its random part, the event's hash.
pub(super) fn seen_key(event: u128) -> Vec<u8> {
    let low = ulid::Ulid(event).random();
    key(SEEN, &low.to_be_bytes()[6..])
}

/// The `H` value of the event with ULID `event`: its time, which with the hash in the key
/// makes the ULID.
pub(super) fn seen_value(event: u128) -> [u8; 8] {
    ms_of(event).to_be_bytes()
}

/// Writes event `event`'s record and its `H` key into `batch`.
pub(super) fn insert_event(batch: &mut Batch, event: u128, record: Vec<u8>) {
    batch.insert(seen_key(event), seen_value(event));
    batch.insert(event_key(event), record);
}

/// The event stored with hash `hash` (the idempotency check): its ULID and record.
pub(super) fn event_by_hash(
    kv: &Kv,
    hash: u128,
) -> Result<Option<(u128, super::kv::Value)>, StoreError> {
    let hk = seen_key(ulid::Ulid::from_parts(0, hash).0);
    let Some(v) = kv.get(&hk)? else {
        return Ok(None);
    };
    let ms: [u8; 8] = v
        .as_ref()
        .try_into()
        .map_err(|_| corrupt(&hk, "bad event time"))?;
    let id = ulid::Ulid::from_parts(u64::from_be_bytes(ms), hash).0;
    Ok(kv.get(event_key(id))?.map(|record| (id, record)))
}

/// Removes event `event`'s record and, if it names this event, its `H` key.
pub(super) fn remove_event(kv: &Kv, batch: &mut Batch, event: u128) -> Result<(), StoreError> {
    batch.remove(event_key(event));
    let hk = seen_key(event);
    if kv
        .get(&hk)?
        .is_some_and(|v| v.as_ref() == seen_value(event))
    {
        batch.remove(hk);
    }
    Ok(())
}

/// The `Z` key of an event created at `created_ms` that matched no target.
pub(super) fn unmatched_key(created_ms: u64, event: u128) -> Vec<u8> {
    let mut z = Vec::with_capacity(24);
    z.extend_from_slice(&created_ms.to_be_bytes());
    z.extend_from_slice(&event.to_be_bytes());
    key(ZERO, &z)
}

/// The event a `Z` key names.
pub(super) fn unmatched_event(k: &[u8]) -> Result<u128, StoreError> {
    k.get(9..25)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(u128::from_be_bytes)
        .ok_or_else(|| corrupt(k, "bad retention key"))
}

/// The delivery a `P` or `D` key names.
pub(super) fn id_of(k: &[u8]) -> Result<Id, StoreError> {
    let bytes: [u8; 16] = k
        .get(1..17)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(k, "bad delivery key"))?;
    Ok(u128::from_be_bytes(bytes))
}

/// When a delivery was created: the time part of its ULID.
pub(super) fn ms_of(id: Id) -> u64 {
    ulid::Ulid(id).timestamp_ms()
}

pub(super) fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    }
}

/// A key as the log shows it: its prefix letter, then the rest in hex.
pub(super) fn printable_key(key: &[u8]) -> String {
    match key.split_first() {
        Some((prefix, rest)) if prefix.is_ascii_graphic() => {
            format!("{}{}", *prefix as char, hex::encode(rest))
        }
        _ => hex::encode(key),
    }
}

pub(super) fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Subscription states and stored subscriptions are plain structs of strings and numbers:
    // serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

//! The layout's keys (the table in the module doc): how each kind is built and read back,
//! how JSON values are written, and the error a record that cannot be read gives.

use sha2::Digest;

use super::{EVENT, ZERO};
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

/// The `E` key of the event with ULID `event` (its random part is the event's hash).
pub(super) fn event_key(event: u128) -> Vec<u8> {
    let low = ulid::Ulid(event).random();
    key(EVENT, &low.to_be_bytes()[6..])
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

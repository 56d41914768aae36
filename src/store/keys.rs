//! The key layout of hookd's one sled tree. Every key starts with a one-letter prefix and `/`.
//!
//! | key | value |
//! |---|---|
//! | `e/{event_id}` | the event's canonical body, as sent |
//! | `m/{event_id}` | [`super::EventMeta`] as JSON |
//! | `k/{len(request_id) u16}{request_id}{status}` | the event id: idempotency on `(request_id, status)` |
//! | `c/{created_ms u64}{event_id}` | retention index of events |
//! | `d/{delivery_id}` | [`super::Delivery`] as JSON |
//! | `q/{bucket}\0{due_ms u64}{delivery_id}` | empty: the due-time index, one run per bucket |
//! | `l/{delivery_id}` | empty: the delivery is in flight (leased by a worker) |
//! | `p/{delivery_id}` | empty: the delivery is not finished (ids sort by creation time) |
//! | `a/{delivery_id}{attempt u32}` | [`super::Attempt`] as JSON |
//! | `f/{finished_ms u64}{delivery_id}` | empty: retention index of finished deliveries |
//! | `s/{subscription_id}` | [`super::SubscriptionState`] as JSON: paused, health |
//!
//! Integers are big-endian so that byte order is numeric order. Ids are ULID strings of fixed
//! length, so a key's parts can be split without separators.

pub const EVENT: &[u8] = b"e/";
pub const EVENT_META: &[u8] = b"m/";
pub const IDEMPOTENCY: &[u8] = b"k/";
pub const EVENT_CREATED: &[u8] = b"c/";
pub const DELIVERY: &[u8] = b"d/";
pub const QUEUE: &[u8] = b"q/";
pub const LEASE: &[u8] = b"l/";
pub const PENDING: &[u8] = b"p/";
pub const ATTEMPT: &[u8] = b"a/";
pub const FINISHED: &[u8] = b"f/";
pub const SUBSCRIPTION: &[u8] = b"s/";

pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub fn idempotency(request_id: &str, status: &str) -> Vec<u8> {
    // request_id is at most 256 bytes (checked at ingest), so the length fits in a u16.
    let len = u16::try_from(request_id.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    join(&[IDEMPOTENCY, &len, request_id.as_bytes(), status.as_bytes()])
}

/// The start of a bucket's run in the due-time index.
pub fn queue_bucket(bucket: &str) -> Vec<u8> {
    join(&[QUEUE, bucket.as_bytes(), b"\0"])
}

pub fn queue(bucket: &str, due_ms: u64, delivery_id: &str) -> Vec<u8> {
    join(&[
        &queue_bucket(bucket),
        &due_ms.to_be_bytes(),
        delivery_id.as_bytes(),
    ])
}

/// Splits a due-time key into `(bucket, due_ms, delivery_id)`.
pub fn parse_queue(key: &[u8]) -> Option<(&str, u64, &str)> {
    let rest = key.strip_prefix(QUEUE)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let bucket = std::str::from_utf8(&rest[..nul]).ok()?;
    let rest = &rest[nul + 1..];
    let due = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let id = std::str::from_utf8(rest.get(8..)?).ok()?;
    Some((bucket, due, id))
}

pub fn attempt(delivery_id: &str, number: u32) -> Vec<u8> {
    join(&[ATTEMPT, delivery_id.as_bytes(), &number.to_be_bytes()])
}

pub fn timed(prefix: &[u8], ms: u64, id: &str) -> Vec<u8> {
    join(&[prefix, &ms.to_be_bytes(), id.as_bytes()])
}

/// Splits a `c/` or `f/` key into `(ms, id)`.
pub fn parse_timed(prefix: &[u8], key: &[u8]) -> Option<(u64, String)> {
    let rest = key.strip_prefix(prefix)?;
    let ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let id = std::str::from_utf8(rest.get(8..)?).ok()?;
    Some((ms, id.to_string()))
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_round_trip_and_sort_by_due_time() {
        let a = queue("acme", 5, "dlv_A");
        let b = queue("acme", 256, "dlv_B");
        assert!(a < b);
        assert!(queue("acme", u64::MAX, "x") < queue("acme-2", 0, "x"));
        assert_eq!(parse_queue(&b), Some(("acme", 256, "dlv_B")));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"q/a\0"), b"q/a\x01");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}

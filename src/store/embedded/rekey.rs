//! Conversion of a store of the second layout, whose events were keyed by their hash (`E{h}`,
//! 11 bytes), into the third, on open: each event moves to `E{id}` (its ULID, time first) and
//! gains its `H{h}` key. It runs in atomic batches, so a crash leaves every event under one key
//! or the other, and the next opening converts the rest; the layout's version, `V`, is written
//! once every event is converted. A new store gets its version at its first opening.

use std::time::Instant;

use super::codec::EventRecord;
use super::kv::{Batch, Kv};
use super::layout::{corrupt, event_key, printable_key, seen_key, seen_value};
use super::{EVENT, LAYOUT, LAYOUT_VERSION};
use crate::store::StoreError;

/// Events converted per batch at most.
const BATCH: usize = 10_000;
/// Bytes of records per batch at most: events carry their bodies, up to megabytes each, and a
/// batch is held in memory until it is applied.
const BATCH_BYTES: usize = 16 << 20;
/// The length of a second-layout event key: the letter and 80 bits of hash.
const HASH_KEY_LEN: usize = 11;

/// Converts the events of a second-layout store, if any, and writes the layout's version.
/// Returns how many events it converted.
pub(super) fn to_v3(kv: &Kv) -> Result<u64, StoreError> {
    if let Some(v) = kv.get([LAYOUT])? {
        return match v.as_ref() {
            [LAYOUT_VERSION] => Ok(0),
            [n] if *n > LAYOUT_VERSION => Err(StoreError::Backend(format!(
                "the store was written by a newer hookd (layout {n}; this hookd reads up to \
                 {LAYOUT_VERSION}): run that hookd, or `hookd store export` with it and \
                 `hookd store import` here"
            ))),
            _ => Err(corrupt(&[LAYOUT], "bad layout version")),
        };
    }
    let _serial = kv.exclusive();
    let started = Instant::now();
    let mut converted = 0u64;
    let mut start = vec![EVENT];
    loop {
        let (batch, last, n) = next_batch(kv, &start)?;
        kv.apply_batch(batch)?;
        converted += n as u64;
        let Some(last) = last else { break };
        tracing::info!(
            events = converted,
            "converting the events to the third layout (keyed by their id)"
        );
        start = last;
        start.push(0);
    }
    kv.insert([LAYOUT], [LAYOUT_VERSION])?;
    kv.flush()?;
    if converted > 0 {
        tracing::info!(
            events = converted,
            seconds = started.elapsed().as_secs_f64(),
            "converted the events to the third layout (a store of an earlier hookd)"
        );
    }
    Ok(converted)
}

/// Up to [`BATCH`] second-layout events ([`BATCH_BYTES`]) from `start` on, rewritten under
/// their ids. Returns the batch, the last key it converted if the batch is full (more may
/// follow), and how many.
fn next_batch(kv: &Kv, start: &[u8]) -> Result<(Batch, Option<Vec<u8>>, usize), StoreError> {
    let mut batch = Batch::default();
    let mut n = 0;
    let mut bytes = 0;
    for entry in kv.range(start.to_vec()..vec![EVENT + 1]) {
        let (k, v) = entry?;
        if k.len() != HASH_KEY_LEN {
            continue;
        }
        let e = match EventRecord::decode(&v, false) {
            Ok(e) => e,
            Err(e) => {
                // Not readable under either layout: it stays where it is, read by nothing.
                tracing::warn!(key = %printable_key(&k), error = %e, "skipping an event record that cannot be read");
                continue;
            }
        };
        batch.remove(k.to_vec());
        batch.insert(seen_key(e.id), seen_value(e.id));
        bytes += v.as_ref().len();
        batch.insert(event_key(e.id), v.as_ref().to_vec());
        n += 1;
        if n == BATCH || bytes >= BATCH_BYTES {
            return Ok((batch, Some(k.to_vec()), n));
        }
    }
    Ok((batch, None, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::kv::Backend;
    use crate::store::embedded::layout::{event_by_hash, event_hash, key};
    use bytes::Bytes;

    fn record(i: u32) -> EventRecord {
        let (request_id, status) = (format!("req-{i}"), "completed".to_string());
        let created_ms = 1_700_000_000_000 + u64::from(i);
        EventRecord {
            id: ulid::Ulid::from_parts(created_ms, event_hash(&request_id, &status)).0,
            created_ms,
            fingerprint: [7; 32],
            request_id,
            status,
            event_type: "job.completed".into(),
            deliveries: vec![u128::from(i)],
            owner: None,
            body: Bytes::from(format!("{{\"n\":{i}}}")),
        }
    }

    /// A store of the second layout (events under their hash) opens with every event found by
    /// its id and by its hash, a damaged record left alone, and a second opening converts
    /// nothing; batches end at their count or their bytes.
    #[test]
    fn events_keyed_by_their_hash_are_rekeyed_by_their_id() {
        for backend in [Backend::Sled, Backend::Fjall] {
            let dir = tempfile::tempdir().unwrap();
            let kv = Kv::open(backend, dir.path(), 8 << 20).unwrap();
            let mut events: Vec<EventRecord> = (0..BATCH as u32 + 2_345).map(record).collect();
            // Events of 1 MiB too: more than one batch by their bytes.
            for i in 0..20 {
                let mut big = record(100_000 + i);
                big.body = Bytes::from(vec![b'x'; 1 << 20]);
                events.push(big);
            }
            let mut batch = Batch::default();
            for e in &events {
                let low = ulid::Ulid(e.id).random().to_be_bytes();
                batch.insert(key(EVENT, &low[6..]), e.encode());
            }
            let damaged = key(EVENT, &[9; 10]);
            batch.insert(damaged.clone(), b"not a record".to_vec());
            kv.apply_batch(batch).unwrap();

            assert_eq!(to_v3(&kv).unwrap(), events.len() as u64, "{backend:?}");
            for e in &events {
                let by_id = kv.get(event_key(e.id)).unwrap().expect("under its id");
                assert_eq!(EventRecord::decode(&by_id, true).unwrap(), *e);
                let (id, _) = event_by_hash(&kv, event_hash(&e.request_id, &e.status))
                    .unwrap()
                    .expect("found by its hash");
                assert_eq!(id, e.id);
            }
            let old: Vec<_> = kv
                .scan_prefix([EVENT])
                .map(|e| e.unwrap().0.to_vec())
                .filter(|k| k.len() == HASH_KEY_LEN)
                .collect();
            assert_eq!(old, vec![damaged], "only the damaged record stays");
            assert_eq!(to_v3(&kv).unwrap(), 0, "converted once");
        }
    }

    /// A new store is marked with the layout at once; a store of a newer layout is refused.
    #[test]
    fn the_layout_version_is_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(Backend::Sled, dir.path(), 8 << 20).unwrap();
        assert_eq!(to_v3(&kv).unwrap(), 0);
        assert_eq!(
            kv.get([LAYOUT]).unwrap().unwrap().as_ref(),
            [LAYOUT_VERSION]
        );
        kv.insert([LAYOUT], [LAYOUT_VERSION + 1]).unwrap();
        let e = to_v3(&kv).unwrap_err().to_string();
        assert!(e.contains("newer hookd"), "{e}");
    }
}

//! The binary records of the sled engine: versioned, compact, no JSON on the hot path.
//!
//! Every record starts with a format byte ([`VERSION`]); a record with another byte is refused
//! as corrupt rather than misread. Format 1 (before owners) is still read, as a record
//! without an owner, and format 2 (before the receivers' headers) as attempts without
//! headers: a store written by an older hookd opens as it is, and its records take format 3
//! when they are next written. Strings are a u16 length and UTF-8 bytes, integers
//! big-endian. The delivery record puts the bucket and due time first so that the index is
//! rebuilt at open without decoding the rest.

use bytes::Bytes;

use crate::event::AdhocTarget;
use crate::store::Outcome;
use crate::store::{Attempt, DeliveryState};

/// The format written: 2 adds the owner to events and deliveries, 3 the headers of the
/// receiver's answer to each attempt (a u8 count, then each name and value).
pub const VERSION: u8 = 3;
/// The oldest format read.
const OLDEST: u8 = 1;

/// An event as stored under `E`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: u128,
    pub created_ms: u64,
    pub fingerprint: [u8; 32],
    pub request_id: String,
    pub status: String,
    pub event_type: String,
    pub deliveries: Vec<u128>,
    /// The owner the event named (format 2).
    pub owner: Option<String>,
    pub body: Bytes,
}

/// A delivery as stored under `P` (unfinished) or `D` (finished), its attempts inline.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub bucket: String,
    /// When the next attempt is due; 0 once finished.
    pub due_ms: u64,
    pub event: u128,
    pub created_ms: u64,
    pub state: DeliveryState,
    pub finished_ms: Option<u64>,
    pub subscription: String,
    pub event_type: String,
    pub adhoc: Option<AdhocTarget>,
    /// Its event's owner (format 2).
    pub owner: Option<String>,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        // Longer strings are cut at a character boundary: every stored string is bounded
        // (ids, types, URLs, secrets, errors and excerpts) well below 64 KiB.
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("record ends early".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| DecodeError("string is not UTF-8".into()))
    }
    fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            b => Err(DecodeError(format!("bad option tag {b}"))),
        }
    }
    /// The record's format: one this hookd reads, or an error.
    fn version(&mut self) -> Result<u8, DecodeError> {
        match self.u8()? {
            v @ OLDEST..=VERSION => Ok(v),
            v => Err(DecodeError(format!(
                "record format {v}, this hookd reads formats {OLDEST} to {VERSION}"
            ))),
        }
    }
}

fn state_byte(s: DeliveryState) -> u8 {
    match s {
        DeliveryState::Scheduled | DeliveryState::InFlight => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Dead => 2,
    }
}

fn outcome_byte(o: Outcome) -> u8 {
    match o {
        Outcome::Success => 0,
        Outcome::Http4xx => 1,
        Outcome::Http5xx => 2,
        Outcome::Timeout => 3,
        Outcome::Connect => 4,
        Outcome::Other => 5,
    }
}

fn outcome_from(b: u8) -> Result<Outcome, DecodeError> {
    Ok(match b {
        0 => Outcome::Success,
        1 => Outcome::Http4xx,
        2 => Outcome::Http5xx,
        3 => Outcome::Timeout,
        4 => Outcome::Connect,
        5 => Outcome::Other,
        b => return Err(DecodeError(format!("bad outcome {b}"))),
    })
}

impl EventRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Out(Vec::with_capacity(96 + self.body.len()));
        out.u8(VERSION);
        out.u128(self.id);
        out.u64(self.created_ms);
        out.0.extend_from_slice(&self.fingerprint);
        out.str(&self.request_id);
        out.str(&self.status);
        out.str(&self.event_type);
        out.u16(u16::try_from(self.deliveries.len()).unwrap_or(u16::MAX));
        for d in self.deliveries.iter().take(u16::MAX as usize) {
            out.u128(*d);
        }
        out.opt_str(self.owner.as_deref());
        out.0.extend_from_slice(&self.body);
        out.0
    }

    /// Decodes everything but copies the body only when `body` is set.
    pub fn decode(bytes: &[u8], body: bool) -> Result<EventRecord, DecodeError> {
        let mut r = In(bytes);
        let version = r.version()?;
        let id = r.u128()?;
        let created_ms = r.u64()?;
        let fingerprint = r.array()?;
        let request_id = r.str()?;
        let status = r.str()?;
        let event_type = r.str()?;
        let n = r.u16()? as usize;
        let mut deliveries = Vec::with_capacity(n);
        for _ in 0..n {
            deliveries.push(r.u128()?);
        }
        let owner = if version >= 2 { r.opt_str()? } else { None };
        Ok(EventRecord {
            id,
            created_ms,
            fingerprint,
            request_id,
            status,
            event_type,
            deliveries,
            owner,
            body: if body {
                Bytes::copy_from_slice(r.0)
            } else {
                Bytes::new()
            },
        })
    }
}

impl DeliveryRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Out(Vec::with_capacity(128));
        out.u8(VERSION);
        out.str(&self.bucket);
        out.u64(self.due_ms);
        out.u128(self.event);
        out.u64(self.created_ms);
        out.u8(state_byte(self.state));
        out.u64(self.finished_ms.unwrap_or(0));
        out.str(&self.subscription);
        out.str(&self.event_type);
        match &self.adhoc {
            Some(a) => {
                out.u8(1);
                out.str(&a.url);
                out.str(&a.secret);
            }
            None => out.u8(0),
        }
        out.opt_str(self.owner.as_deref());
        out.u16(u16::try_from(self.attempts.len()).unwrap_or(u16::MAX));
        for a in self.attempts.iter().take(u16::MAX as usize) {
            out.u32(a.number);
            out.u64(a.started_ms);
            out.u64(a.duration_ms);
            out.u8(outcome_byte(a.outcome));
            out.u16(a.status_code.unwrap_or(0));
            out.opt_str(a.error.as_deref());
            out.opt_str(a.response_excerpt.as_deref());
            // At most MAX_RESPONSE_HEADERS (30) are kept, well under a u8's count.
            let headers = &a.response_headers[..a.response_headers.len().min(255)];
            out.u8(u8::try_from(headers.len()).unwrap_or(u8::MAX));
            for (name, value) in headers {
                out.str(name);
                out.str(value);
            }
        }
        out.0
    }

    /// The bucket and due time alone: what the index needs at open.
    pub fn decode_head(bytes: &[u8]) -> Result<(String, u64), DecodeError> {
        let mut r = In(bytes);
        r.version()?;
        Ok((r.str()?, r.u64()?))
    }

    pub fn decode(bytes: &[u8]) -> Result<DeliveryRecord, DecodeError> {
        let mut r = In(bytes);
        let version = r.version()?;
        let bucket = r.str()?;
        let due_ms = r.u64()?;
        let event = r.u128()?;
        let created_ms = r.u64()?;
        let state = match r.u8()? {
            0 => DeliveryState::Scheduled,
            1 => DeliveryState::Delivered,
            2 => DeliveryState::Dead,
            b => return Err(DecodeError(format!("bad delivery state {b}"))),
        };
        let finished_ms = Some(r.u64()?).filter(|&t| t != 0);
        let subscription = r.str()?;
        let event_type = r.str()?;
        let adhoc = match r.u8()? {
            0 => None,
            _ => Some(AdhocTarget {
                url: r.str()?,
                secret: r.str()?,
            }),
        };
        let owner = if version >= 2 { r.opt_str()? } else { None };
        let n = r.u16()? as usize;
        let mut attempts = Vec::with_capacity(n);
        for _ in 0..n {
            let mut attempt = Attempt {
                number: r.u32()?,
                started_ms: r.u64()?,
                duration_ms: r.u64()?,
                outcome: outcome_from(r.u8()?)?,
                status_code: Some(r.u16()?).filter(|&c| c != 0),
                error: r.opt_str()?,
                response_excerpt: r.opt_str()?,
                response_headers: Vec::new(),
            };
            if version >= 3 {
                for _ in 0..r.u8()? {
                    attempt.response_headers.push((r.str()?, r.str()?));
                }
            }
            attempts.push(attempt);
        }
        Ok(DeliveryRecord {
            bucket,
            due_ms,
            event,
            created_ms,
            state,
            finished_ms,
            subscription,
            event_type,
            adhoc,
            owner,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> DeliveryRecord {
        DeliveryRecord {
            bucket: "adhoc/example.com:443".into(),
            due_ms: 1234,
            event: 77,
            created_ms: 1000,
            state: DeliveryState::Scheduled,
            finished_ms: None,
            subscription: "adhoc".into(),
            event_type: "job.completed".into(),
            adhoc: Some(AdhocTarget {
                url: "https://example.com/h".into(),
                secret: "s".into(),
            }),
            owner: Some("cust-a".into()),
            attempts: vec![Attempt {
                number: 1,
                started_ms: 1001,
                duration_ms: 5,
                outcome: Outcome::Http5xx,
                status_code: Some(503),
                error: Some("HTTP 503 — é".into()),
                response_excerpt: None,
                response_headers: Vec::new(),
            }],
        }
    }

    fn event(owner: Option<&str>) -> EventRecord {
        EventRecord {
            id: 5,
            created_ms: 9,
            fingerprint: [7; 32],
            request_id: "r".into(),
            status: "completed".into(),
            event_type: "job.completed".into(),
            deliveries: vec![1, 2],
            owner: owner.map(str::to_string),
            body: Bytes::from_static(b"{\"a\":1}"),
        }
    }

    #[test]
    fn records_round_trip() {
        let d = delivery();
        assert_eq!(DeliveryRecord::decode(&d.encode()).unwrap(), d);
        assert_eq!(
            DeliveryRecord::decode_head(&d.encode()).unwrap(),
            (d.bucket.clone(), 1234)
        );
        let e = event(Some("cust-b"));
        assert_eq!(EventRecord::decode(&e.encode(), true).unwrap(), e);
        assert!(EventRecord::decode(&e.encode(), false)
            .unwrap()
            .body
            .is_empty());
    }

    /// A format 1 record (written before owners) reads as one without an owner.
    #[test]
    fn format_one_records_read_without_an_owner() {
        // Format 1 is format 2 without the owner's option byte (0 for `None`): in a delivery
        // without attempts it comes just before the attempt count (2 bytes); in an event, just
        // before the body.
        let mut d = delivery();
        d.owner = None;
        d.attempts.clear();
        let mut v2 = d.encode();
        assert_eq!(v2.remove(v2.len() - 3), 0);
        v2[0] = 1;
        assert_eq!(DeliveryRecord::decode(&v2).unwrap(), d);
        let e = event(None);
        let mut v2 = e.encode();
        assert_eq!(v2.remove(v2.len() - e.body.len() - 1), 0);
        v2[0] = 1;
        assert_eq!(EventRecord::decode(&v2, true).unwrap(), e);
    }

    /// A format 2 record (written before the receivers' headers) reads as attempts without
    /// headers; format 3 keeps them.
    #[test]
    fn format_two_records_read_as_attempts_without_headers() {
        let mut d = delivery();
        d.attempts[0].response_headers = vec![
            ("content-type".into(), "text/plain".into()),
            ("x-request-id".into(), "r-1 é".into()),
        ];
        assert_eq!(DeliveryRecord::decode(&d.encode()).unwrap(), d);
        // Format 2 is format 3 without each attempt's header count (0 here) and headers: the
        // last attempt's count is the record's last byte.
        d.attempts[0].response_headers.clear();
        let mut v2 = d.encode();
        assert_eq!(v2.pop(), Some(0));
        v2[0] = 2;
        assert_eq!(DeliveryRecord::decode(&v2).unwrap(), d);
    }

    #[test]
    fn damaged_or_future_records_are_refused() {
        let mut bytes = delivery().encode();
        bytes[0] = 4;
        let err = DeliveryRecord::decode(&bytes).unwrap_err();
        assert!(err.0.contains("format 4"), "{err}");
        let bytes = delivery().encode();
        assert!(DeliveryRecord::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn a_seed_sized_delivery_record_is_small() {
        let mut d = delivery();
        d.adhoc = None;
        d.bucket = "main".into();
        d.subscription = "main".into();
        d.attempts[0].error = None;
        d.owner = None;
        assert!(d.encode().len() < 100, "{} bytes", d.encode().len());
    }
}

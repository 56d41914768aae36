//! Reading exported records back: the decoding every engine's [`AdminStore::import`] does
//! before it writes a record its own way.
//!
//! [`AdminStore::import`]: super::AdminStore::import

use base64::Engine;
use bytes::Bytes;

use super::{
    parse_delivery_id, Attempt, DeliveryState, Portable, StoreError, StoredSubscription,
    SubscriptionState,
};
use crate::event::AdhocTarget;

/// A [`Portable`] record with its encoded fields decoded and checked ([`decode`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    /// A signing key, its value decoded from base64.
    Key {
        name: String,
        value: Vec<u8>,
    },
    Subscription(StoredSubscription),
    State {
        subscription: String,
        state: SubscriptionState,
    },
    Event(ImportedEvent),
    Delivery(ImportedDelivery),
    /// An audit log entry, its id checked.
    Audit(super::AuditEntry),
}

/// A [`Portable::Event`], decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEvent {
    /// The id the exporting store gave it, as exported: its deliveries name it by this id (an
    /// engine that names events its own way maps it to its own id).
    pub id: String,
    pub request_id: String,
    pub status: String,
    pub event_type: String,
    pub owner: Option<String>,
    /// SHA-256 of the event as posted.
    pub fingerprint: [u8; 32],
    pub created_ms: u64,
    /// The body as sent.
    pub body: Bytes,
    pub deliveries: Vec<ulid::Ulid>,
}

/// A [`Portable::Delivery`], decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedDelivery {
    pub id: ulid::Ulid,
    /// Its event's id as exported ([`ImportedEvent::id`]).
    pub event_id: String,
    pub event_type: String,
    pub subscription: String,
    pub bucket: String,
    pub adhoc: Option<AdhocTarget>,
    pub created_ms: u64,
    pub progress: Progress,
    pub last_error: Option<String>,
    pub owner: Option<String>,
    /// Oldest first, as exported.
    pub attempts: Vec<Attempt>,
}

/// Where an imported delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Scheduled or in flight when exported: due at `due_ms` (its creation time when the
    /// record gave none).
    Unfinished { due_ms: u64 },
    /// Delivered or dead (`state`), finished at `finished_ms` if the record said when.
    Finished {
        state: DeliveryState,
        finished_ms: Option<u64>,
    },
}

/// Decodes one exported record. Checks that key values and event bodies are base64 (the
/// standard alphabet, padded), that a fingerprint is 64 hex digits (32 bytes), and that every
/// delivery id (a delivery's own and those its event lists) is `dlv_<ULID>`; anything else
/// fails as [`StoreError::Backend`], `import: bad <what> in <id>`. Event ids are taken as
/// they are, and attempts' outcomes as [`Attempt::from`] reads them (an unknown one is
/// `other`); a delivery's state decides its [`Progress`], in flight counting as scheduled.
pub fn decode(record: Portable) -> Result<Imported, StoreError> {
    Ok(match record {
        Portable::Key { name, value } => Imported::Key {
            value: base64(&value).ok_or_else(|| bad("key", &name))?,
            name,
        },
        Portable::Subscription(sub) => Imported::Subscription(sub),
        Portable::Audit(entry) => {
            super::audit::parse_audit_id(&entry.id).ok_or_else(|| bad("audit id", &entry.id))?;
            Imported::Audit(entry)
        }
        Portable::State {
            subscription,
            state,
        } => Imported::State {
            subscription,
            state,
        },
        Portable::Event {
            id,
            request_id,
            status,
            event_type,
            owner,
            fingerprint,
            created_ms,
            body,
            deliveries,
        } => Imported::Event(ImportedEvent {
            fingerprint: sha256(&fingerprint).ok_or_else(|| bad("fingerprint", &id))?,
            body: Bytes::from(base64(&body).ok_or_else(|| bad("body", &id))?),
            deliveries: deliveries
                .iter()
                .map(|d| parse_delivery_id(d).ok_or_else(|| bad("delivery id", &id)))
                .collect::<Result<_, _>>()?,
            id,
            request_id,
            status,
            event_type,
            owner,
            created_ms,
        }),
        Portable::Delivery {
            id,
            event_id,
            event_type,
            subscription,
            bucket,
            adhoc,
            state,
            created_ms,
            due_ms,
            finished_ms,
            last_error,
            owner,
            attempts,
        } => Imported::Delivery(ImportedDelivery {
            id: parse_delivery_id(&id).ok_or_else(|| bad("delivery id", &id))?,
            progress: Progress::of(state, created_ms, due_ms, finished_ms),
            attempts: attempts.iter().map(Attempt::from).collect(),
            event_id,
            event_type,
            subscription,
            bucket,
            adhoc,
            created_ms,
            last_error,
            owner,
        }),
    })
}

impl Progress {
    fn of(
        state: DeliveryState,
        created_ms: u64,
        due_ms: Option<u64>,
        finished_ms: Option<u64>,
    ) -> Progress {
        match state {
            DeliveryState::Delivered | DeliveryState::Dead => {
                Progress::Finished { state, finished_ms }
            }
            DeliveryState::Scheduled | DeliveryState::InFlight => Progress::Unfinished {
                due_ms: due_ms.unwrap_or(created_ms),
            },
        }
    }
}

fn base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A SHA-256 digest from its 64 hex digits.
fn sha256(digits: &str) -> Option<[u8; 32]> {
    hex::decode(digits).ok()?.try_into().ok()
}

fn bad(what: &str, id: &str) -> StoreError {
    StoreError::Backend(format!("import: bad {what} in {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fingerprint: &str, deliveries: &[&str]) -> Portable {
        Portable::Event {
            id: "evt_01JD0000000000000000000000".into(),
            request_id: "r1".into(),
            status: "completed".into(),
            event_type: "job.completed".into(),
            owner: None,
            fingerprint: fingerprint.into(),
            created_ms: 1000,
            body: "e30=".into(),
            deliveries: deliveries.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn encoded_fields_are_decoded_and_checked() {
        let dlv = "dlv_01JD0000000000000000000001";
        let Imported::Event(e) = decode(event(&"09".repeat(32), &[dlv])).unwrap() else {
            panic!("an event");
        };
        assert_eq!(
            (e.fingerprint, &e.body[..], e.deliveries),
            ([9u8; 32], &b"{}"[..], vec![parse_delivery_id(dlv).unwrap()])
        );
        for (record, why) in [
            (event(&"09".repeat(31), &[]), "fingerprint"),
            (event(&"09".repeat(32), &["evt_x"]), "delivery id"),
        ] {
            let err = decode(record).unwrap_err().to_string();
            assert!(err.contains(&format!("import: bad {why} in evt_")), "{err}");
        }
        let key = Portable::Key {
            name: "session".into(),
            value: "not base64!".into(),
        };
        assert!(decode(key).is_err());
    }

    #[test]
    fn a_delivery_in_flight_is_due_again_and_a_finished_one_keeps_its_state() {
        let delivery = |state, due_ms, finished_ms| Portable::Delivery {
            id: "dlv_01JD0000000000000000000001".into(),
            event_id: "evt_01JD0000000000000000000000".into(),
            event_type: "job.completed".into(),
            subscription: "main".into(),
            bucket: "main".into(),
            adhoc: None,
            state,
            created_ms: 1000,
            due_ms,
            finished_ms,
            last_error: None,
            owner: None,
            attempts: Vec::new(),
        };
        let progress = |record| match decode(record).unwrap() {
            Imported::Delivery(d) => d.progress,
            _ => panic!("a delivery"),
        };
        assert_eq!(
            progress(delivery(DeliveryState::InFlight, None, None)),
            Progress::Unfinished { due_ms: 1000 }
        );
        assert_eq!(
            progress(delivery(DeliveryState::Scheduled, Some(5000), None)),
            Progress::Unfinished { due_ms: 5000 }
        );
        assert_eq!(
            progress(delivery(DeliveryState::Dead, None, Some(2000))),
            Progress::Finished {
                state: DeliveryState::Dead,
                finished_ms: Some(2000)
            }
        );
    }
}

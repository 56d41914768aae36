//! The store: what hookd keeps, behind two traits that any engine implements.
//!
//! - [`QueueStore`] is the delivery side: ingest, claim due work fairly across buckets, record
//!   an attempt's outcome, release, sweep finished work.
//! - [`AdminStore`] is the operator side: reads, listing, requeueing, pausing, statistics.
//!
//! [`Store`] is both. Nothing here names an engine's types: errors are [`StoreError`], ids are
//! strings, times are Unix milliseconds passed in by the caller (engines never read the clock).
//! The embedded engine ([`embedded::EmbeddedStore`]) keeps the records in sled (the default) or
//! fjall ([`embedded::Backend`]); the PostgreSQL engine ([`postgres::PgStore`]) in a database
//! that several nodes share. The conformance suite in `tests/it/conformance.rs` pins the behaviour every engine must have.

pub mod audit;
pub mod embedded;
pub mod index;
pub mod portable;
pub mod postgres;
pub mod scan;
mod summary;
mod vocabulary;

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::event::{AdhocTarget, NewEvent};
use crate::stats::{Summary, Timing, Window};
pub use audit::{AuditEntry, AuditFilter};
pub use vocabulary::{Outcome, Switch};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, its own error); the message is the engine's.
    #[error("store: {0}")]
    Backend(String),
    #[error("store: corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("store: the store is closed")]
    Closed,
    #[error("store: cannot create {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
}

/// Where one delivery goes: a configured subscription, or a per-request URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub subscription: String,
    /// The concurrency bucket: the subscription id, or `adhoc/<host:port>`.
    pub bucket: String,
    pub adhoc: Option<AdhocTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Scheduled,
    InFlight,
    Delivered,
    Dead,
}

/// One delivery of one event to one target.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub subscription: String,
    pub bucket: String,
    pub adhoc: Option<AdhocTarget>,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_ms: u64,
    /// When the next attempt is due, while scheduled.
    pub due_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The owner of its event (the provider's customer), if the event named one.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    pub request_id: String,
    pub status: String,
    pub event_type: String,
    pub owner: Option<String>,
    /// Hex SHA-256 of the event as posted.
    pub fingerprint: String,
    pub created_ms: u64,
    pub deliveries: Vec<String>,
}

/// The record of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub number: u32,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// The receiver's answer's headers, as [`kept_headers`] bounds them; empty without an
    /// answer (and in attempts recorded before hookd kept them).
    pub response_headers: Vec<(String, String)>,
}

/// The most headers of a receiver's answer an attempt keeps.
pub const MAX_RESPONSE_HEADERS: usize = 30;
/// The most bytes of a receiver's answer's headers (names and values) an attempt keeps.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 4096;
/// The value kept of a header that may carry a credential (`Set-Cookie`).
pub const REDACTED_HEADER: &str = "[REDACTED]";

/// A receiver's answer's headers as an attempt keeps them, in the order given: names in lower
/// case, the first [`MAX_RESPONSE_HEADERS`] that fit in [`MAX_RESPONSE_HEADER_BYTES`] (a header
/// that does not fit is left out, a later smaller one may still be kept), `Set-Cookie` values
/// redacted, and U+0000 replaced (PostgreSQL's jsonb cannot hold it).
pub fn kept_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, std::borrow::Cow<'a, str>)>,
) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for (name, value) in headers {
        if kept.len() == MAX_RESPONSE_HEADERS {
            break;
        }
        let name = name.to_ascii_lowercase();
        let value = if name == "set-cookie" {
            REDACTED_HEADER.to_string()
        } else {
            value.replace('\0', "\u{FFFD}")
        };
        if bytes + name.len() + value.len() > MAX_RESPONSE_HEADER_BYTES {
            continue;
        }
        bytes += name.len() + value.len();
        kept.push((name, value));
    }
    kept
}

impl Attempt {
    /// Its time and result, for the statistics.
    pub fn timing(&self) -> Timing {
        Timing {
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            success: self.outcome == Outcome::Success,
        }
    }
}

/// A delivery and its attempts' times and results: what the statistics read
/// ([`AdminStore::list_timed`]).
#[derive(Debug, Clone)]
pub struct Timed {
    pub delivery: Delivery,
    /// Oldest first.
    pub attempts: Vec<Timing>,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(u64),
    Dead,
}

/// The answer to one ingested event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub event_id: String,
    pub deliveries: usize,
    /// The same event was accepted before: nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("event {index}: request_id {request_id:?} with status {status:?} was already accepted as {event_id} with a different body")]
    Conflict {
        index: usize,
        request_id: String,
        status: String,
        event_id: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A delivery taken for an attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub body: Bytes,
}

/// Counts for the pending gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingStats {
    pub ready: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub oldest_created_ms: Option<u64>,
}

/// Which deliveries a listing wants. Times are creation times in Unix milliseconds.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub subscription: Option<String>,
    /// Only deliveries to one of these subscriptions (a portal's owner's).
    pub any_subscription: Option<Vec<String>>,
    pub event_type: Option<String>,
    /// Only deliveries of events of this owner.
    pub owner: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl DeliveryFilter {
    pub fn matches(&self, d: &Delivery) -> bool {
        self.state.is_none_or(|s| s == d.state)
            && self
                .subscription
                .as_ref()
                .is_none_or(|s| *s == d.subscription)
            && self
                .any_subscription
                .as_ref()
                .is_none_or(|any| any.contains(&d.subscription))
            && self.event_type.as_ref().is_none_or(|t| *t == d.event_type)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| d.owner.as_ref() == Some(o))
            && self.since_ms.is_none_or(|t| d.created_ms >= t)
            && self.until_ms.is_none_or(|t| d.created_ms < t)
    }
}

/// A subscription's pause switch and health, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub paused: bool,
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// The first failure since the last success (the failing span's start).
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// Disabled by hookd (the circuit breaker), with when and why; distinct from `paused`,
    /// which is an operator's switch. Only an admin action enables it again.
    #[serde(default)]
    pub disabled_ms: Option<u64>,
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

impl SubscriptionState {
    /// Folds one attempt's outcome at `at_ms` into the health figures.
    pub fn fold(&mut self, outcome: Outcome, error: Option<&String>, at_ms: u64) {
        if outcome == Outcome::Success {
            self.last_success_ms = Some(at_ms);
            self.consecutive_failures = 0;
            self.failing_since_ms = None;
        } else {
            self.last_failure_ms = Some(at_ms);
            if self.consecutive_failures == 0 || self.failing_since_ms.is_none() {
                self.failing_since_ms = Some(at_ms);
            }
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.last_error = error.cloned();
        }
    }

    /// Disables (`Some((at, reason))`) or enables the subscription. Enabling starts its health
    /// afresh: the failures that led to the switch do not count against it again.
    pub fn set_disabled(&mut self, disabled: Option<(u64, String)>) {
        match disabled {
            Some((at, reason)) => {
                self.disabled_ms = Some(at);
                self.disabled_reason = Some(reason);
            }
            None => {
                self.disabled_ms = None;
                self.disabled_reason = None;
                self.consecutive_failures = 0;
                self.failing_since_ms = None;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("no delivery {0}")]
    NotFound(String),
    #[error("delivery {0} is in flight; retry it once the attempt has finished")]
    InFlight(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The subscription id of per-request targets (`adhoc/<host:port>` buckets).
pub const ADHOC: &str = "adhoc";

/// How many attempts may run at once, and which buckets may run at all: the scheduler's
/// limits, which the queue applies when it hands out work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Attempts in flight, in all.
    pub global: usize,
    /// Per-request attempts in flight, all hosts together.
    pub adhoc_total: usize,
    /// Per-request attempts in flight to one host.
    pub adhoc_per_host: usize,
    /// The configured subscriptions and each one's limit. A bucket whose subscription is not
    /// here waits (it may come back with a reload).
    pub subscriptions: HashMap<String, usize>,
    /// Paused subscriptions; [`ADHOC`] pauses every per-request target.
    pub paused: HashSet<String>,
    /// Rate limits: the least time between two attempts of a subscription's bucket, in
    /// microseconds; under [`ADHOC`], of each per-request host's. Absent: no limit.
    pub rates: HashMap<String, u64>,
}

/// The delivery side of the store.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Stores events and their deliveries atomically and durably. A conflicting event rejects
    /// the whole call; an identical repeat answers with the first event. The new deliveries are
    /// due at once: the next [`QueueStore::claim`] may hand them out.
    async fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError>;

    /// Takes up to `max` deliveries due at `now_ms`, earliest due first across buckets, within
    /// the [`Limits`]: a bucket at its limit, paused, or waiting for a retry is passed over at
    /// no cost. Also returns the earliest due time among the buckets that could run now.
    async fn claim(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError>;

    /// Records an attempt of a claimed delivery and what follows it, and frees its slot. The
    /// answer may come before the record is on disk (the sled engine flushes it within half a
    /// second): a crash may forget it, and the delivery is then made again.
    async fn record_outcome(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// [`QueueStore::record_outcome`], and the slot it frees handed on: when the delivery was
    /// delivered and its subscription has another delivery due that the limits let run (not
    /// paused, not rate-limited, the node below its global limit), that one is leased in the
    /// same write and returned, for the caller to attempt at once instead of waiting for a
    /// claim. An engine may hand nothing on. An engine with a writer thread (sled, fjall) may
    /// answer a delivered outcome once it is queued for its writer, before it is applied: the
    /// slot is free (or handed on) at once, and the delivery reads as in flight (an
    /// operator's requeue finds it in flight) until the writer's next round has applied the
    /// outcome.
    async fn record_outcome_and_follow(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        self.record_outcome(delivery_id, attempt, next, now_ms)
            .await
            .map(|()| None)
    }

    /// Puts a claimed delivery back, due at `due_ms`, without an attempt.
    async fn release(&self, delivery_id: &str, due_ms: u64) -> Result<(), StoreError>;

    /// Removes up to `limit` deliveries finished before `cutoff_ms`, and the events left with
    /// no delivery. Returns how many records it removed.
    async fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError>;

    /// Replaces the limits [`QueueStore::claim`] applies.
    fn set_limits(&self, limits: Limits);

    /// How many deliveries are unfinished (queued, waiting for a retry, or in flight): what
    /// ingest's backlog limit compares. Cheap enough to call on every request; an engine that
    /// cannot count cheaply may answer a recent count.
    fn unfinished(&self) -> u64;
}

/// The operator side of the store.
#[async_trait]
pub trait AdminStore: Send + Sync {
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError>;

    /// A delivery's attempts, oldest first.
    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError>;

    async fn event_meta(&self, event_id: &str) -> Result<Option<EventMeta>, StoreError>;

    async fn event_body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError>;

    /// The id of the event stored for `(request_id, status)`, if one is kept.
    async fn event_by_request(
        &self,
        request_id: &str,
        status: &str,
    ) -> Result<Option<String>, StoreError>;

    /// A random 32-byte key named `name`, made on first use and kept with the store: what the
    /// dashboard signs its sessions and portal links with, so that they outlive a restart and
    /// hold on every node sharing the store.
    async fn signing_key(&self, name: &str) -> Result<Vec<u8>, StoreError>;

    /// Records that the dashboard session `nonce` was signed out: refused by every node, after
    /// any restart, until `until` (Unix ms, when it would have ended anyway). Durable when it
    /// returns. Signed-out sessions already past their expiry at `now` may be forgotten.
    async fn revoke_session(&self, nonce: &str, until: u64, now: u64) -> Result<(), StoreError>;

    /// Whether the dashboard session `nonce` was signed out ([`AdminStore::revoke_session`]).
    async fn session_revoked(&self, nonce: &str) -> Result<bool, StoreError>;

    /// Deliveries matching `filter`, newest first, after `cursor` (the last id of the previous
    /// page). Returns the page and the cursor of the next one, if there may be more.
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError>;

    /// [`AdminStore::list_deliveries`], each delivery with its attempts' times and results:
    /// the same order, pages, cursors and bound on the records examined per call.
    async fn list_timed(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Timed>, Option<String>), StoreError>;

    /// The statistics of `window` at `now_ms` ([`crate::stats`]) over the deliveries `filter`
    /// matches (its time range is the window's): read from [`AdminStore::list_timed`], newest
    /// first, at most `cap` deliveries and [`summary::SUMMARY_CALLS`] calls; `sampled` when
    /// that stopped before the window's start. An engine that can aggregate cheaply may answer
    /// the same figures its own way.
    async fn summary(
        &self,
        filter: &DeliveryFilter,
        window: Window,
        now_ms: u64,
        cap: usize,
    ) -> Result<Summary, StoreError> {
        summary::summarize(self, filter, window, now_ms, cap).await
    }

    /// Makes one delivery due now: a scheduled one is brought forward, a delivered or dead one
    /// gets one more attempt. Returns the state it had.
    async fn requeue(&self, delivery_id: &str, now_ms: u64) -> Result<DeliveryState, RequeueError>;

    /// Requeues the dead deliveries that finished at or after `since_ms`, of one subscription or
    /// of all. Returns how many.
    async fn requeue_dead(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError>;

    /// Pauses or resumes a subscription; durable.
    async fn switch(&self, subscription: &str, switch: Switch) -> Result<(), StoreError>;

    /// Disables a subscription (`Some((at_ms, reason))`: the circuit breaker) or enables it
    /// again ([`SubscriptionState::set_disabled`]); durable.
    async fn set_disabled(
        &self,
        subscription: &str,
        disabled: Option<(u64, String)>,
    ) -> Result<(), StoreError>;

    /// Every subscription's stored state (paused, health), by id.
    async fn subscription_states(&self) -> Result<HashMap<String, SubscriptionState>, StoreError>;

    async fn pending_stats(&self, now_ms: u64) -> Result<PendingStats, StoreError>;

    /// How many events and deliveries the store holds (finished ones included, until the
    /// retention sweep removes them). For tests and tools, not hot paths.
    async fn counts(&self) -> Result<(u64, u64), StoreError>;

    /// Bytes the store uses on disk.
    async fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// Every subscription created through the API, by id.
    async fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError>;

    /// Creates or replaces a stored subscription; durable when it returns.
    async fn put_subscription(&self, subscription: StoredSubscription) -> Result<(), StoreError>;

    /// Erases one owner (the provider's customer): its stored subscriptions and their states,
    /// every delivery to them, the events of the owner, and every delivery of those events
    /// (attempts inside), pending or finished, in one durable step. An unfinished delivery it
    /// removes is never claimed again; one already claimed is named in [`Erased::unfinished`]
    /// for the caller to hold back.
    async fn erase_owner(&self, owner: &str) -> Result<Erased, StoreError>;

    /// Deletes a stored subscription and its state (paused, health, breaker): a later
    /// subscription of the same id starts afresh. False if there was none. Its queued
    /// deliveries stay until [`AdminStore::end_queued`] ends them.
    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError>;

    /// Ends the queued deliveries of `subscription` (not those in flight, nor per-request
    /// ones): dead at `now_ms`, with an attempt that made no request and says `reason`.
    /// Returns how many.
    async fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError>;

    /// How many records the store found it cannot decode (damaged, or written by a later
    /// format version) and skips; each is logged once with its key.
    fn skipped_records(&self) -> u64;

    /// One page of everything the store holds, in a form any engine can import: on the first
    /// page (`after` = `None`) the keys, stored subscriptions, subscription states and the
    /// audit log, then
    /// events, each followed by its deliveries. Returns the cursor of the next page.
    async fn export(
        &self,
        after: Option<String>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError>;

    /// Writes exported records as they are (for `hookd store import`, into a store no node
    /// runs on). Deliveries that were in flight are due again.
    async fn import(&self, records: Vec<Portable>) -> Result<(), StoreError>;

    /// Keeps one audit log entry ([`AuditEntry`]); durable when it returns.
    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;

    /// Audit entries matching `filter`, newest first, after `cursor` (the last id of the
    /// previous page). Returns the page and the cursor of the next one, if there may be more.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError>;

    /// Removes every audit entry about `owner` (its `owner`, or the actor `portal:<owner>`),
    /// for its erasure; durable when it returns. Returns how many.
    async fn erase_audit_owner(&self, owner: &str) -> Result<u64, StoreError>;

    /// Removes up to `limit` audit entries older than `cutoff_ms` (the retention sweep's
    /// cutoff). Returns how many.
    async fn prune_audit(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError>;

    /// Figures only some engines have, for the metrics.
    async fn engine_stats(&self) -> EngineStats {
        EngineStats::default()
    }

    /// Answers once the store's writer has taken a job: proves it is not stuck.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finishes the writes already queued, makes them durable and releases the store; writes
    /// fail with [`StoreError::Closed`] afterwards.
    async fn close(&self) -> Result<(), StoreError>;
}

/// A subscription created through the subscriptions API. It is kept as the `[[subscription]]`
/// table it amounts to (TOML text, its secret included), so that one validator, the config
/// file's, decides what a subscription may be, wherever it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    pub id: String,
    /// The provider's customer this subscription belongs to, if any.
    pub owner: Option<String>,
    /// `[[subscription]]\nid = ...`: the table, as the config file would hold it.
    pub toml: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// What [`AdminStore::erase_owner`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub subscriptions: u64,
    pub events: u64,
    /// Deliveries, pending and finished.
    pub deliveries: u64,
    /// Their recorded attempts.
    pub attempts: u64,
    /// The ids of the unfinished deliveries removed (some may be in flight on this node).
    #[serde(skip)]
    pub unfinished: Vec<String>,
}

/// One attempt in an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortableAttempt {
    pub number: u32,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// Left out of exports when empty; an export without it (before hookd kept them) reads
    /// as none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<(String, String)>,
}

impl From<&Attempt> for PortableAttempt {
    fn from(a: &Attempt) -> Self {
        PortableAttempt {
            number: a.number,
            started_ms: a.started_ms,
            duration_ms: a.duration_ms,
            outcome: a.outcome.as_str().to_string(),
            status_code: a.status_code,
            error: a.error.clone(),
            response_excerpt: a.response_excerpt.clone(),
            response_headers: a.response_headers.clone(),
        }
    }
}

impl From<&PortableAttempt> for Attempt {
    fn from(a: &PortableAttempt) -> Self {
        Attempt {
            number: a.number,
            started_ms: a.started_ms,
            duration_ms: a.duration_ms,
            outcome: Outcome::parse(&a.outcome),
            status_code: a.status_code,
            error: a.error.clone(),
            response_excerpt: a.response_excerpt.clone(),
            response_headers: a.response_headers.clone(),
        }
    }
}

/// A record of `hookd store export` (one JSON line each): what moves a store between engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Portable {
    /// A signing key ([`AdminStore::signing_key`]), base64.
    Key {
        name: String,
        value: String,
    },
    Subscription(StoredSubscription),
    State {
        subscription: String,
        #[serde(flatten)]
        state: SubscriptionState,
    },
    /// An audit log entry ([`AdminStore::record_audit`]); absent in exports of stores older
    /// than the audit log.
    Audit(AuditEntry),
    Event {
        id: String,
        request_id: String,
        status: String,
        event_type: String,
        /// The event's owner; absent in exports of stores older than owners.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Hex SHA-256.
        fingerprint: String,
        created_ms: u64,
        /// Base64 of the body as sent.
        body: String,
        deliveries: Vec<String>,
    },
    Delivery {
        id: String,
        event_id: String,
        event_type: String,
        subscription: String,
        bucket: String,
        adhoc: Option<AdhocTarget>,
        /// `scheduled` (in flight is exported as scheduled), `delivered` or `dead`.
        state: DeliveryState,
        created_ms: u64,
        due_ms: Option<u64>,
        finished_ms: Option<u64>,
        last_error: Option<String>,
        /// Its event's owner; absent in exports of stores older than owners.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        attempts: Vec<PortableAttempt>,
    },
}

impl Portable {
    /// The export record of a delivery and its attempts.
    pub fn delivery(d: &Delivery, attempts: &[Attempt]) -> Portable {
        let state = match d.state {
            DeliveryState::InFlight => DeliveryState::Scheduled,
            s => s,
        };
        Portable::Delivery {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            subscription: d.subscription.clone(),
            bucket: d.bucket.clone(),
            adhoc: d.adhoc.clone(),
            state,
            created_ms: d.created_ms,
            due_ms: match state {
                DeliveryState::Scheduled => Some(d.due_ms.unwrap_or(d.created_ms)),
                _ => None,
            },
            finished_ms: d.finished_ms,
            last_error: d.last_error.clone(),
            owner: d.owner.clone(),
            attempts: attempts.iter().map(PortableAttempt::from).collect(),
        }
    }
}

/// Engine-specific figures ([`AdminStore::engine_stats`]); `None` where the engine has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Connections: open, idle, callers waiting.
    pub pool: Option<(usize, usize, usize)>,
    /// Outcomes refused because the lease had passed to another claim.
    pub stale_outcomes: u64,
    /// Dead row versions in the live queue table.
    pub dead_rows: Option<u64>,
}

/// A whole store: both sides.
pub trait Store: QueueStore + AdminStore {}

impl<T: QueueStore + AdminStore> Store for T {}

/// `dlv_` + a ULID whose time part is `now_ms`: ids sort by creation time, so a time range is
/// an id range.
///
/// Ids made in the same millisecond increase (the random part of the first one, plus one
/// each): deliveries of one batch sort in the order they were made, so the store appends them
/// to its queues and its ordered keys instead of scattering them.
pub fn new_delivery_id(now_ms: u64) -> ulid::Ulid {
    static LAST: std::sync::Mutex<IdSequence> = std::sync::Mutex::new(IdSequence::new());
    // The sequence is replaced whole: a poisoned lock still holds a valid one.
    LAST.lock().unwrap_or_else(|e| e.into_inner()).next(now_ms)
}

/// The last id made: where the next one of the same millisecond counts up from.
#[derive(Debug)]
struct IdSequence {
    ms: u64,
    random: u128,
}

impl IdSequence {
    const RANDOM_BITS: u32 = 80;

    const fn new() -> Self {
        IdSequence { ms: 0, random: 0 }
    }

    fn next(&mut self, now_ms: u64) -> ulid::Ulid {
        let next = self.random + 1;
        let random = if self.ms == now_ms && next < (1 << Self::RANDOM_BITS) {
            next
        } else {
            // Half the range: room to count up within the millisecond.
            rand::random::<u128>() & ((1 << (Self::RANDOM_BITS - 1)) - 1)
        };
        *self = IdSequence { ms: now_ms, random };
        ulid::Ulid::from_parts(now_ms, random)
    }
}

/// The string form of a delivery id.
pub fn delivery_id_string(id: ulid::Ulid) -> String {
    format!("dlv_{id}")
}

/// Parses `dlv_<ULID>`; `None` for anything else.
pub fn parse_delivery_id(id: &str) -> Option<ulid::Ulid> {
    ulid::Ulid::from_string(id.strip_prefix("dlv_")?).ok()
}

/// The string form of an event id.
pub fn event_id_string(id: ulid::Ulid) -> String {
    format!("evt_{id}")
}

/// Parses `evt_<ULID>`; `None` for anything else.
pub fn parse_event_id(id: &str) -> Option<ulid::Ulid> {
    ulid::Ulid::from_string(id.strip_prefix("evt_")?).ok()
}

/// The smallest delivery id created at `ms`.
pub fn delivery_id_at(ms: u64) -> ulid::Ulid {
    ulid::Ulid::from_parts(ms, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_of_one_millisecond_increase_and_carry_it() {
        // A sequence of its own: the process-wide one is shared with every other test that
        // ingests, at other milliseconds.
        let mut sequence = IdSequence::new();
        let ids: Vec<ulid::Ulid> = (0..1000)
            .map(|_| sequence.next(1_700_000_000_123))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id.timestamp_ms() == 1_700_000_000_123));
        let later = sequence.next(1_700_000_000_124);
        assert_eq!(later.timestamp_ms(), 1_700_000_000_124);
        assert_eq!(
            new_delivery_id(1_700_000_000_125).timestamp_ms(),
            1_700_000_000_125
        );
    }

    #[test]
    fn a_receivers_headers_are_kept_within_their_bounds() {
        use std::borrow::Cow;
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("X-H{i}"), "v".to_string()))
            .collect();
        let kept = kept_headers(
            many.iter()
                .map(|(n, v)| (n.as_str(), Cow::from(v.as_str()))),
        );
        assert_eq!(kept.len(), MAX_RESPONSE_HEADERS);
        assert_eq!(
            kept[0],
            ("x-h0".to_string(), "v".to_string()),
            "names in lower case"
        );

        let big = "b".repeat(3000);
        let given = [
            ("a", Cow::from(big.as_str())),
            ("too-big", Cow::from(big.as_str())),
            ("set-cookie", Cow::from("session=secret")),
            ("nul", Cow::from("a\0b")),
        ];
        let kept = kept_headers(given);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["a", "set-cookie", "nul"],
            "one that does not fit is left out"
        );
        assert_eq!(kept[1].1, REDACTED_HEADER);
        assert_eq!(kept[2].1, "a\u{FFFD}b");
        let bytes: usize = kept.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(bytes <= MAX_RESPONSE_HEADER_BYTES, "{bytes}");
    }

    #[test]
    fn an_export_made_before_response_headers_reads_as_attempts_without_them() {
        let old = r#"{"number":1,"started_ms":5,"duration_ms":2,"outcome":"success","status_code":200,"error":null,"response_excerpt":"ok"}"#;
        let attempt: PortableAttempt = serde_json::from_str(old).unwrap();
        assert!(attempt.response_headers.is_empty());
        let text = serde_json::to_string(&attempt).unwrap();
        assert_eq!(text, old, "an attempt without headers exports as before");
        let mut with = attempt;
        with.response_headers = vec![("x".to_string(), "1".to_string())];
        let back: PortableAttempt =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}

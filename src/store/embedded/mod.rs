//! The embedded engine: hookd's records in an ordered key-value store in `storage.path`, on
//! sled (the default) or fjall ([`Backend`]; `kv.rs` is the only file that touches either,
//! and `migrate.rs`, for sled's first layout).
//!
//! # Layout
//!
//! One tree (sled) or keyspace (fjall), `hookd.v2`; every key starts with one letter:
//!
//! | key | value |
//! |---|---|
//! | `E{id}` | [`codec::EventRecord`]: the event, its delivery ids and its body. `id` is the event's ULID (16 bytes, time first), whose random part is `h`, 80 bits of SHA-256 over `(request_id, status)` |
//! | `H{h}` | the time part of the event's ULID (Unix ms, 8 bytes big-endian): the idempotency check, which with `h` makes the event's id |
//! | `P{id}` | [`codec::DeliveryRecord`] of an unfinished delivery (`id`: the ULID's 16 bytes) |
//! | `D{id}` | [`codec::DeliveryRecord`] of a finished one (delivered or dead) |
//! | `Z{created_ms}{event}` | empty: an event that matched no target, for the retention sweep |
//! | `S{subscription}` | [`SubscriptionState`](crate::store::SubscriptionState) as JSON: paused, health (written at most once a second) |
//! | `U{id}` | a subscription created through the API, as JSON |
//! | `K{name}` | a signing key of the dashboard |
//! | `R{nonce}` | a signed-out dashboard session: its expiry, Unix ms, 8 bytes big-endian |
//! | `V` | the layout's version, [`LAYOUT_VERSION`] (one byte) |
//!
//! Every large record has a key in time order (`E`, `P`, `D`): new records land after the
//! old ones, and an LSM engine moves its tables down without rewriting them. Only `H` is
//! scattered, and its records are 19 bytes. Until layout 3 the events were keyed by `h`, and
//! merging those scattered 250-byte records capped fjall's soak at 16.5 million events
//! (docs/benchmarks.md); `rekey.rs` converts such a store at its first opening.
//!
//! On fjall, the kinds written for every delivery, `D`, `E`, `H` and `P`, each have a keyspace
//! of their own, `hookd.v2.D`, `hookd.v2.E`, `hookd.v2.H` and `hookd.v2.P`, with the same
//! keys; `kv.rs` routes each key by its letter and reads them all back as one ordered store.
//! Their keys grow differently (ULIDs kept for days, small hashes scattered over the key space,
//! ULIDs removed within seconds), and in one keyspace every compaction would rewrite them all
//! (docs/benchmarks.md); `D` and `E` are compressed as they are flushed, since their tables are
//! never rewritten. A store written before the keyspaces keeps its records in `hookd.v2`; its
//! first opening moves them.
//!
//! The audit log has a tree (keyspace) of its own, [`AUDIT_TREE`]: its key is the entry id's
//! ULID (16 bytes, so in time order), its value the [`AuditEntry`](crate::store::AuditEntry)
//! as JSON (`audit.rs`).
//!
//! An event delivered on its first attempt to one subscription costs five writes: `E`, `H` and
//! `P` at ingest, then `P` removed and `D` written with the attempt inside. A retry rewrites `P`.
//! Leases live in memory: a crash makes every unfinished delivery due again (at-least-once).
//! The due-time order lives in memory too ([`Index`](crate::store::index::Index)), rebuilt from
//! the `P` records at open.
//!
//! # Writes
//!
//! One thread, the *writer*, makes every write; jobs come over a channel. A round takes every
//! job waiting (up to [`MAX_GROUP`]), applies each as one atomic batch, then makes the round
//! durable with one flush (an fsync) and only then replies: concurrent requests share an fsync (group
//! commit), and the index learns of new deliveries only once they are durable. An attempt's
//! outcome is acknowledged once applied and reaches the disk with the next flush (at most half a
//! second later): a crash can forget the outcomes of that last second, and those deliveries are
//! made again, as at-least-once allows. A delivered attempt's slot is freed, or handed on to its
//! subscription's next due delivery, as its outcome is queued, before the writer's round
//! (`queue.rs`): the next attempt does not wait for a round that may first apply ingests and
//! their fsync, and the delivery counts as in flight until its outcome is applied.
//!
//! # Reads
//!
//! Reads run on blocking threads beside the writer. On sled, every access (a read, or a
//! writer's round) takes one lock, [`Kv::exclusive`]: sled 0.34 was seen to hang a flush when
//! reads and writes from several threads interleave. fjall needs no lock: a reader sees each
//! batch whole or not at all, and never waits for the writer.
//!
//! # Files
//!
//! This file has the layout's constants and [`EmbeddedStore`]; `layout.rs` builds and reads keys;
//! `kv.rs` is the key-value store (sled or fjall); `audit.rs` the audit log's tree; `memory.rs` holds what lives beside it (the index, health, skipped records); `open.rs`
//! opens a store; `writer.rs` is the writer thread, and the writes it runs are in `ingest.rs`,
//! `outcome.rs`, `requeue.rs`, `erase.rs` and `sweep.rs`; `read.rs` has the reads; `queue.rs`
//! and `admin.rs` implement the two traits; `transfer.rs` is export and import; `codec.rs` the
//! binary records; `migrate.rs` converts a store of the first layout, `rekey.rs` one of the
//! second.

mod admin;
mod audit;
pub mod codec;
mod erase;
mod ingest;
mod kv;
mod layout;
mod memory;
mod migrate;
mod open;
mod outcome;
mod queue;
mod read;
mod rekey;
mod requeue;
mod sweep;
mod transfer;
mod writer;

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tokio::sync::mpsc;

use super::StoreError;
pub use kv::Backend;
use kv::Kv;
use memory::{Health, Queue, Skipped};
use writer::Job;

const TREE: &str = "hookd.v2";
/// The audit log's tree (sled) or keyspace (fjall).
const AUDIT_TREE: &str = "hookd.audit";
const EVENT: u8 = b'E';
/// `H{h}`: the idempotency check, an event's hash to its time.
const SEEN: u8 = b'H';
/// `V`: the layout's version.
const LAYOUT: u8 = b'V';
/// The layout written: 3 keys events by their ULID (2 keyed them by their hash).
const LAYOUT_VERSION: u8 = 3;
const PENDING: u8 = b'P';
const DONE: u8 = b'D';
const ZERO: u8 = b'Z';
const SUBSCRIPTION: u8 = b'S';
/// `U{id}`: a subscription created through the API (JSON: not on the hot path).
const USER_SUBSCRIPTION: u8 = b'U';
/// `K{name}`: a signing key of the dashboard
/// ([`AdminStore::signing_key`](crate::store::AdminStore::signing_key)).
const KEY: u8 = b'K';
/// `R{nonce}`: a signed-out dashboard session, its expiry (Unix ms, 8 bytes big-endian) the
/// value ([`AdminStore::revoke_session`](crate::store::AdminStore::revoke_session)).
const REVOKED: u8 = b'R';

/// How often writes acknowledged before their flush (attempt outcomes, health) reach the disk.
const LAZY_FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Most jobs the writer takes into one round (one flush).
const MAX_GROUP: usize = 1024;
/// Bytes of freshly ingested deliveries kept in memory, bodies included, for their first
/// attempt ([`memory::Fresh`]): 8 MiB, about 6,000 deliveries of 1 KiB events or 13,000 of
/// seed-sized ones. It was 8,192 deliveries whatever their size: 8 GiB of 1 MiB bodies.
const FRESH_BYTES: usize = 8 << 20;
/// How often a subscription's health record is written at most.
const HEALTH_WRITE_EVERY: Duration = Duration::from_secs(1);
/// Records a listing examines at most per call: a filter that matches little returns a short
/// page with a cursor rather than walking the whole store.
const LIST_SCAN_LIMIT: usize = 10_000;
/// Finished deliveries a bulk requeue examines per writer job.
const BULK_CHUNK: usize = 1000;
/// How long `open` waits for a store another opening still holds.
const OPEN_RETRY: Duration = Duration::from_secs(5);
/// Reads under way at most (see `EmbeddedStore::reads`).
const MAX_READS: u32 = 1 << 20;

/// A handle to an embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// Read access for anyone; writes go through `writer`.
    kv: Kv,
    /// The audit log's tree ([`AUDIT_TREE`]); written by the writer too.
    audit: Kv,
    /// The writer thread's queue. It ends when the last handle is dropped, or on `close`.
    writer: mpsc::Sender<Job>,
    /// The writer thread, joined by `close` so that the database is released when it returns.
    writer_thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
    queue: Arc<Mutex<Queue>>,
    health: Arc<Mutex<Health>>,
    /// One permit per read under way: `close` takes them all, so that it returns only once no
    /// read holds the database (the next open of the same path would find it locked).
    reads: Arc<tokio::sync::Semaphore>,
    /// Records that cannot be decoded, skipped.
    skipped: Arc<Skipped>,
}

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure under these locks is left whole between statements: a panic elsewhere
    // cannot leave it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;

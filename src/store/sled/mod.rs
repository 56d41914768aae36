//! The sled engine: the embedded default, and the only module that imports sled.
//!
//! # Layout
//!
//! One tree, `hookd.v2`; every key starts with one letter:
//!
//! | key | value |
//! |---|---|
//! | `E{h}` | [`codec::EventRecord`]: the event, its delivery ids and its body. `h` is 80 bits of SHA-256 over `(request_id, status)`: the key is the idempotency check, and the event id is a ULID whose random part is `h`, so an id leads to its key |
//! | `P{id}` | [`codec::DeliveryRecord`] of an unfinished delivery (`id`: the ULID's 16 bytes) |
//! | `D{id}` | [`codec::DeliveryRecord`] of a finished one (delivered or dead) |
//! | `Z{created_ms}{event}` | empty: an event that matched no target, for the retention sweep |
//! | `S{subscription}` | [`SubscriptionState`] as JSON: paused, health (written at most once a second) |
//! | `U{id}` | a subscription created through the API, as JSON |
//! | `K{name}` | a signing key of the dashboard |
//! | `R{nonce}` | a signed-out dashboard session: its expiry, Unix ms, 8 bytes big-endian |
//!
//! An event delivered on its first attempt to one subscription costs four writes: `E` and `P`
//! at ingest, then `P` removed and `D` written with the attempt inside. A retry rewrites `P`.
//! Leases live in memory: a crash makes every unfinished delivery due again (at-least-once).
//! The due-time order lives in memory too ([`Index`]), rebuilt from the `P` records at open.
//!
//! # Writes
//!
//! One thread, the *writer*, makes every write; jobs come over a channel. A round takes every
//! job waiting (up to [`MAX_GROUP`]), applies each as one atomic batch, then makes the round
//! durable with one `flush()` and only then replies: concurrent requests share an fsync (group
//! commit), and the index learns of new deliveries only once they are durable. An attempt's
//! outcome is acknowledged once applied and reaches the disk with the next flush (at most half a
//! second later): a crash can forget the outcomes of that last second, and those deliveries are
//! made again, as at-least-once allows.

pub mod codec;
mod migrate;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};

use super::index::{Id, Index};
use super::{
    delivery_id_at, delivery_id_string, event_id_string, parse_delivery_id, parse_event_id,
    AdminStore, Attempt, Claimed, Delivery, DeliveryFilter, DeliveryState, Erased, EventMeta,
    IngestError, Ingested, Limits, Next, PendingStats, Portable, QueueStore, RequeueError,
    StoreError, StoredSubscription, SubscriptionState, Switch, Target,
};
use crate::event::NewEvent;
use crate::store::Outcome;
use codec::{DeliveryRecord, EventRecord};

const TREE: &str = "hookd.v2";
const EVENT: u8 = b'E';
const PENDING: u8 = b'P';
const DONE: u8 = b'D';
const ZERO: u8 = b'Z';
const SUBSCRIPTION: u8 = b'S';
/// `U{id}`: a subscription created through the API (JSON: not on the hot path).
const USER_SUBSCRIPTION: u8 = b'U';
/// `K{name}`: a signing key of the dashboard ([`AdminStore::signing_key`]).
const KEY: u8 = b'K';
/// `R{nonce}`: a signed-out dashboard session, its expiry (Unix ms, 8 bytes big-endian) the
/// value ([`AdminStore::revoke_session`]).
const REVOKED: u8 = b'R';

/// Held by the writer for a round (its writes and their flush) and by every read. sled 0.34
/// takes a process-wide lock of its own in batches and flushes, and a flush waits, holding it,
/// for every log reservation made before it, reads that reorganise pages included; reads and
/// writes interleaved from several threads were seen to hang a flush for ever. One sled access
/// at a time costs a read at most one round's wait, and rules that out.
static SLED: Mutex<()> = Mutex::new(());

/// How often writes acknowledged before their flush (attempt outcomes, health) reach the disk.
const LAZY_FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Most jobs the writer takes into one round (one flush).
const MAX_GROUP: usize = 1024;
/// Freshly ingested deliveries kept in memory, body included, for their first attempt.
const FRESH_MAX: usize = 8192;
/// How often a subscription's health record is written at most.
const HEALTH_WRITE_EVERY: Duration = Duration::from_secs(1);
/// Records a listing examines at most per call: a filter that matches little returns a short
/// page with a cursor rather than walking the whole store.
const LIST_SCAN_LIMIT: usize = 10_000;
/// Finished deliveries a bulk requeue examines per writer job.
const BULK_CHUNK: usize = 1000;

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    }
}

/// Records hookd cannot decode (damaged bytes, or written by a later format version), by key:
/// each is logged once with its key and left where it is; everything else keeps flowing.
#[derive(Default)]
pub(crate) struct Skipped(Mutex<HashSet<Vec<u8>>>);

impl Skipped {
    fn skip(&self, key: &[u8], why: impl std::fmt::Display) {
        if lock(&self.0).insert(key.to_vec()) {
            tracing::error!(
                key = %printable_key(key),
                error = %why,
                "store record cannot be decoded; skipping it (counted in hookd_store_skipped_records)"
            );
        }
    }

    fn count(&self) -> u64 {
        lock(&self.0).len() as u64
    }
}

/// A key as the log shows it: its prefix letter, then the rest in hex.
fn printable_key(key: &[u8]) -> String {
    match key.split_first() {
        Some((prefix, rest)) if prefix.is_ascii_graphic() => {
            format!("{}{}", *prefix as char, hex::encode(rest))
        }
        _ => hex::encode(key),
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn delivery_key(prefix: u8, id: Id) -> Vec<u8> {
    key(prefix, &id.to_be_bytes())
}

/// The 80 bits that name an event: SHA-256 over `(request_id, status)`.
fn event_hash(request_id: &str, status: &str) -> u128 {
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
fn event_key(event: u128) -> Vec<u8> {
    let low = ulid::Ulid(event).random();
    key(EVENT, &low.to_be_bytes()[6..])
}

fn ms_of(id: Id) -> u64 {
    ulid::Ulid(id).timestamp_ms()
}

/// What the index and the fresh-delivery cache share, under one lock.
#[derive(Default)]
struct Queue {
    index: Index,
    /// Deliveries just ingested, with their bodies: their first attempt needs no read.
    fresh: HashMap<Id, Claimed>,
}

/// Subscriptions' stored state, in memory; the writer writes it back.
#[derive(Debug, Default)]
struct Health {
    states: HashMap<String, SubscriptionState>,
    /// When each record was last written.
    written: HashMap<String, Instant>,
    /// Records changed since they were last written.
    dirty: HashSet<String>,
}

impl Health {
    /// Forgets a deleted subscription's state.
    fn forget(&mut self, id: &str) {
        self.states.remove(id);
        self.dirty.remove(id);
        self.written.remove(id);
    }
}

/// Deliveries moved back to the queue (or out of it): bucket, due time, id.
type Reopened = Vec<(String, u64, Id)>;

/// What to do once removed deliveries are durably gone: the index and the fresh cache let go of
/// them. One in flight frees its slot with its outcome (or release), which finds no record.
fn unqueued(queue: &Arc<Mutex<Queue>>, gone: Reopened) -> Done {
    let queue = queue.clone();
    Box::new(move |_| {
        let mut q = lock(&queue);
        for (bucket, due, id) in gone {
            q.fresh.remove(&id);
            q.index.remove(&bucket, due, id);
        }
    })
}

/// A reply to send once the round is durable.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Work run on the writer thread; it returns what to do once the round is durable, if anything.
type Work = Box<dyn FnOnce(&Writer) -> Option<Done> + Send>;

enum Job {
    Work(Work),
    /// Flush what was applied without a flush since the last one (sent every
    /// [`LAZY_FLUSH_EVERY`]).
    Tick,
    /// An attempt's outcome: the outcomes of a round are applied as one batch.
    Outcome(Box<Recorded>),
    /// Stop after this round.
    Close,
}

/// One attempt's outcome, waiting for its round.
struct Recorded {
    id: Id,
    attempt: Attempt,
    next: Next,
    now_ms: u64,
    /// Answered once applied, before the flush: the outcome reaches the disk within
    /// [`LAZY_FLUSH_EVERY`] or with the next flushed round. A crash may forget that last half
    /// second of outcomes, and those deliveries are then made again, which at-least-once
    /// allows; waiting for an fsync per outcome would cost more than the attempt.
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A handle to the sled store; cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    /// Read access for anyone; writes go through `writer`.
    tree: ::sled::Tree,
    /// Kept to flush on close and to report the size on disk.
    db: ::sled::Db,
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

/// How long `open` waits for a store another opening still holds.
const OPEN_RETRY: Duration = Duration::from_secs(5);

/// Reads under way at most (see `SledStore::reads`).
const MAX_READS: u32 = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure under these locks is left whole between statements: a panic elsewhere
    // cannot leave it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SledStore {
    /// Opens (or creates, owner-only) the database at `path`, converts a store of the previous
    /// layout, rebuilds the index from the unfinished deliveries and starts the writer thread.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SledStore, StoreError> {
        create_private_dir(path)?;
        let config = ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            // No background flusher: the writer flushes (see `Writer::run`). sled's flusher
            // takes its process-wide concurrency lock while it waits for the disk, and with
            // the writer's batches waiting for the same lock the two could deadlock.
            .flush_every_ms(None);
        // sled releases its file lock when the last handle of the previous opening is gone,
        // which can be a moment after that store's `close` returned (or after the previous
        // process exited): a store that is still locked is tried again for a few seconds.
        let deadline = Instant::now() + OPEN_RETRY;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled says so in an `Other` error's text.
                Err(::sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let tree = db.open_tree(TREE)?;
        {
            let _serial = lock(&SLED);
            migrate::from_v1(&db, &tree)?;
        }
        let skipped = Arc::new(Skipped::default());
        let mut index = Index::new(Limits::default());
        for entry in tree.scan_prefix([PENDING]) {
            let (k, v) = entry?;
            let head = id_of(&k).and_then(|id| {
                let (bucket, due) = DeliveryRecord::decode_head(&v).map_err(|e| corrupt(&k, e))?;
                Ok((id, bucket, due))
            });
            match head {
                Ok((id, bucket, due)) => index.insert(&bucket, due, id),
                Err(e) => skipped.skip(&k, e),
            }
        }
        let mut health = Health::default();
        for entry in tree.scan_prefix([SUBSCRIPTION]) {
            let (k, v) = entry?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            match serde_json::from_slice(&v) {
                Ok(state) => {
                    health.states.insert(id, state);
                }
                Err(e) => skipped.skip(&k, e),
            }
        }
        let queue = Arc::new(Mutex::new(Queue {
            index,
            fresh: HashMap::new(),
        }));
        let health = Arc::new(Mutex::new(health));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            tree: tree.clone(),
            db: db.clone(),
            queue: queue.clone(),
            health: health.clone(),
            fault: Mutex::new(None),
            skipped: skipped.clone(),
        };
        let handle = thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Create {
                path: "writer thread".into(),
                source,
            })?;
        // The writer's clock for writes acknowledged before their flush. It holds no handle:
        // it stops once the writer's queue is closed or every handle is gone.
        let ticks = tx.downgrade();
        thread::Builder::new()
            .name("hookd-store-ticker".into())
            .spawn(move || loop {
                thread::sleep(LAZY_FLUSH_EVERY);
                match ticks.upgrade() {
                    Some(tx) if tx.blocking_send(Job::Tick).is_ok() => {}
                    _ => return,
                }
            })
            .map_err(|source| StoreError::Create {
                path: "ticker thread".into(),
                source,
            })?;
        Ok(SledStore {
            tree,
            db,
            writer: tx,
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            queue,
            health,
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS as usize)),
            skipped,
        })
    }

    /// Runs `work` on the writer thread and waits for its reply, sent after the round's flush
    /// (ingest, requeue, release, pause, sweep; outcomes go as [`Job::Outcome`]).
    async fn write<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        work: impl FnOnce(&Writer) -> Result<(T, Option<Done>), E> + Send + 'static,
    ) -> Result<T, E> {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let job = Job::Work(Box::new(move |w: &Writer| match work(w) {
            Ok((value, after)) => Some(Box::new(move |flushed: Result<(), StoreError>| {
                // The memory side follows what was applied, flushed or not: a failed flush
                // is reported, and the writes may still reach the disk.
                if let Some(after) = after {
                    after(Ok(()));
                }
                let _ = tx.send(flushed.map(|()| value).map_err(E::from));
            }) as Done),
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        }));
        self.writer
            .send(job)
            .await
            .map_err(|_| E::from(StoreError::Closed))?;
        rx.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Runs a read on a blocking thread: sled reads may touch the disk.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&SledStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self
            .reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            // Dropped last: the store's handle goes first.
            let _permit = permit;
            let store = store;
            let _sled = lock(&SLED);
            read(&store)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    fn record(&self, id: Id) -> Result<Option<(DeliveryRecord, bool)>, StoreError> {
        for (prefix, finished) in [(PENDING, false), (DONE, true)] {
            let k = delivery_key(prefix, id);
            if let Some(v) = self.tree.get(&k)? {
                return Ok(Some((
                    DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?,
                    finished,
                )));
            }
        }
        Ok(None)
    }

    fn event(&self, event: u128, body: bool) -> Result<Option<EventRecord>, StoreError> {
        let k = event_key(event);
        match self.tree.get(&k)? {
            Some(v) => {
                let record = EventRecord::decode(&v, body).map_err(|e| corrupt(&k, e))?;
                // A later event of the same (request_id, status) after retention removed this
                // one has the same key and another id.
                Ok((record.id == event).then_some(record))
            }
            None => Ok(None),
        }
    }

    fn to_delivery(&self, id: Id, r: DeliveryRecord) -> Delivery {
        let leased = r.state == DeliveryState::Scheduled && lock(&self.queue).index.is_leased(id);
        to_delivery(id, r, leased)
    }

    /// Reads what the attempts of claimed deliveries need that the fresh cache did not hold.
    fn load_claims(&self, ids: &[Id]) -> Vec<Result<Claimed, (Id, String)>> {
        ids.iter()
            .map(|&id| {
                let k = delivery_key(PENDING, id);
                let record = match self.tree.get(&k) {
                    Ok(Some(v)) => DeliveryRecord::decode(&v).map_err(|e| {
                        self.skipped.skip(&k, &e);
                        (id, e.to_string())
                    })?,
                    Ok(None) => return Err((id, "no record".to_string())),
                    Err(e) => return Err((id, e.to_string())),
                };
                let event = match self.event(record.event, true) {
                    Ok(Some(e)) => e,
                    Ok(None) => return Err((id, "no event".to_string())),
                    Err(e) => {
                        self.skipped.skip(&event_key(record.event), &e);
                        return Err((id, e.to_string()));
                    }
                };
                Ok(Claimed {
                    delivery: to_delivery(id, record, true),
                    body: event.body,
                })
            })
            .collect()
    }
}

fn id_of(k: &[u8]) -> Result<Id, StoreError> {
    let bytes: [u8; 16] = k
        .get(1..17)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(k, "bad delivery key"))?;
    Ok(u128::from_be_bytes(bytes))
}

fn to_delivery(id: Id, r: DeliveryRecord, leased: bool) -> Delivery {
    let state = if leased {
        DeliveryState::InFlight
    } else {
        r.state
    };
    Delivery {
        id: delivery_id_string(ulid::Ulid(id)),
        event_id: event_id_string(ulid::Ulid(r.event)),
        event_type: r.event_type,
        subscription: r.subscription,
        bucket: r.bucket,
        adhoc: r.adhoc,
        state,
        attempts: r.attempts.last().map_or(0, |a| a.number),
        created_ms: r.created_ms,
        due_ms: (state == DeliveryState::Scheduled).then_some(r.due_ms),
        finished_ms: r.finished_ms,
        last_error: r.attempts.last().and_then(|a| a.error.clone()),
        owner: r.owner,
    }
}

fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Create {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// The writer thread's state.
struct Writer {
    tree: ::sled::Tree,
    db: ::sled::Db,
    queue: Arc<Mutex<Queue>>,
    health: Arc<Mutex<Health>>,
    /// The last flush's error, until a flush succeeds: sled stops writing after an I/O error
    /// (a full disk), and `ping` reports it so that `/readyz` fails.
    fault: Mutex<Option<String>>,
    skipped: Arc<Skipped>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        // Whether writes were applied since the last flush.
        let mut unflushed = false;
        loop {
            // `None`: every handle is gone; the store closes as on `Job::Close`.
            let first = rx.blocking_recv();
            let mut close = first.is_none();
            let mut jobs: Vec<Job> = first.into_iter().collect();
            while !close && jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let _sled = lock(&SLED);
            let mut done: Vec<Done> = Vec::new();
            let mut tick = false;
            let mut outcomes = Vec::new();
            for job in jobs {
                match job {
                    Job::Close => close = true,
                    Job::Tick => tick = true,
                    Job::Outcome(outcome) => outcomes.push(*outcome),
                    Job::Work(work) => match work(&self) {
                        Some(reply) => done.push(reply),
                        None => unflushed = true,
                    },
                }
            }
            if !outcomes.is_empty() {
                self.record_outcomes(outcomes);
                unflushed = true;
            }
            // Health changes that were not written with their outcome (successes in a row),
            // at most once a second. Not on close: a health batch flushed at once there was
            // seen to hang sled's flush for ever; what it would add is the time of the last
            // second's successes.
            match self.write_health() {
                Ok(wrote) => unflushed |= wrote,
                Err(e) => tracing::warn!(error = %e, "cannot write subscription health"),
            }
            if !done.is_empty() || (unflushed && (tick || close)) {
                let flushed = self.db.flush().map(|_| ()).map_err(|e| e.to_string());
                if let Err(e) = &flushed {
                    tracing::error!(error = %e, "store flush failed");
                } else {
                    unflushed = false;
                }
                *lock(&self.fault) = flushed.clone().err();
                for reply in done {
                    reply(flushed.clone().map_err(StoreError::Backend));
                }
            }
            if close {
                tracing::debug!("store writer stopped");
                return;
            }
        }
    }

    /// Applies a round's outcomes as one batch, answers them, then frees their slots and puts
    /// retries back in the index.
    fn record_outcomes(&self, outcomes: Vec<Recorded>) {
        let mut batch = ::sled::Batch::default();
        let mut applied = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let mut r = match self.pending(o.id) {
                Ok(Some(r)) => r,
                // Gone: only the slot is left to free.
                Ok(None) => {
                    applied.push((o.id, None, o.reply));
                    continue;
                }
                Err(e) => {
                    lock(&self.queue).index.unlease(o.id);
                    let _ = o.reply.send(Err(e));
                    continue;
                }
            };
            self.update_health(&mut batch, &r.subscription, &o.attempt, o.now_ms);
            r.attempts.push(o.attempt);
            let requeue = match o.next {
                Next::RetryAt(due) => {
                    r.due_ms = due;
                    batch.insert(delivery_key(PENDING, o.id), r.encode());
                    Some((r.bucket, due))
                }
                Next::Delivered | Next::Dead => {
                    r.state = if o.next == Next::Delivered {
                        DeliveryState::Delivered
                    } else {
                        DeliveryState::Dead
                    };
                    r.due_ms = 0;
                    r.finished_ms = Some(o.now_ms);
                    batch.remove(delivery_key(PENDING, o.id));
                    batch.insert(delivery_key(DONE, o.id), r.encode());
                    None
                }
            };
            applied.push((o.id, requeue, o.reply));
        }
        let result = self.tree.apply_batch(batch).map_err(|e| e.to_string());
        let mut q = lock(&self.queue);
        for (id, requeue, reply) in applied {
            // Not applied: the lease stays, and the delivery is attempted again after a
            // restart, as for any attempt whose outcome was not recorded.
            if result.is_ok() {
                q.index.unlease(id);
                if let Some((bucket, due)) = requeue {
                    q.index.insert(&bucket, due, id);
                }
            }
            let _ = reply.send(result.clone().map_err(StoreError::Backend));
        }
    }

    fn pending(&self, id: Id) -> Result<Option<DeliveryRecord>, StoreError> {
        let k = delivery_key(PENDING, id);
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(
                DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?,
            )),
            None => Ok(None),
        }
    }

    fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<(Vec<Ingested>, Vec<Claimed>), IngestError> {
        let mut batch = ::sled::Batch::default();
        let mut answers = Vec::with_capacity(events.len());
        let mut fresh = Vec::new();
        // Events of this call by key: a repeat inside one batch is a duplicate of the first.
        let mut added: HashMap<Vec<u8>, (u128, [u8; 32], usize)> = HashMap::new();
        for (index, (event, targets)) in events.into_iter().enumerate() {
            let hash = event_hash(&event.request_id, &event.status);
            let id = ulid::Ulid::from_parts(now_ms, hash).0;
            let k = event_key(id);
            let existing = match added.get(&k) {
                Some(&(id, fingerprint, n)) => Some((id, fingerprint, n)),
                None => match self.tree.get(&k).map_err(StoreError::from)? {
                    // A damaged record under the key is replaced by the new event (its own
                    // deliveries, if any, were skipped already: they cannot be read).
                    Some(v) if EventRecord::decode(&v, false).is_err() => {
                        if let Err(e) = EventRecord::decode(&v, false) {
                            self.skipped.skip(&k, e);
                        }
                        None
                    }
                    Some(v) => {
                        let e = EventRecord::decode(&v, false).map_err(|e| corrupt(&k, e))?;
                        if e.request_id != event.request_id || e.status != event.status {
                            // Two keys sharing 80 bits of SHA-256: never seen, but refused
                            // rather than confused.
                            return Err(StoreError::Backend(format!(
                                "event key collision with {}",
                                event_id_string(ulid::Ulid(e.id))
                            ))
                            .into());
                        }
                        Some((e.id, e.fingerprint, e.deliveries.len()))
                    }
                    None => None,
                },
            };
            if let Some((first, fingerprint, deliveries)) = existing {
                let event_id = event_id_string(ulid::Ulid(first));
                if fingerprint != event.fingerprint {
                    return Err(IngestError::Conflict {
                        index,
                        request_id: event.request_id,
                        status: event.status,
                        event_id,
                    });
                }
                answers.push(Ingested {
                    event_id,
                    deliveries,
                    duplicate: true,
                });
                continue;
            }
            let body = Bytes::from(event.body);
            let mut ids = Vec::with_capacity(targets.len());
            for target in targets {
                let dlv = super::new_delivery_id(now_ms).0;
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
                let mut z = Vec::with_capacity(24);
                z.extend_from_slice(&now_ms.to_be_bytes());
                z.extend_from_slice(&id.to_be_bytes());
                batch.insert(key(ZERO, &z), &[]);
            }
            let n = ids.len();
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
            batch.insert(k.clone(), record.encode());
            added.insert(k, (id, event.fingerprint, n));
            answers.push(Ingested {
                event_id: event_id_string(ulid::Ulid(id)),
                deliveries: n,
                duplicate: false,
            });
        }
        self.tree.apply_batch(batch).map_err(StoreError::from)?;
        Ok((answers, fresh))
    }

    /// Folds an attempt into its subscription's health. The record is written with the outcome
    /// when the failure count or the error changes; otherwise (successes in a row) at most once
    /// a second per subscription, at the end of a later round: health is for people, and
    /// rewriting it on every success cost a tenth of the writer's time.
    fn update_health(
        &self,
        batch: &mut ::sled::Batch,
        subscription: &str,
        attempt: &Attempt,
        now_ms: u64,
    ) {
        let mut health = lock(&self.health);
        let state = health.states.entry(subscription.to_string()).or_default();
        let before = (state.consecutive_failures, state.last_error.clone());
        state.fold(attempt.outcome, attempt.error.as_ref(), now_ms);
        let changed = before != (state.consecutive_failures, state.last_error.clone());
        let encoded = encode_json(state);
        let due = changed
            || health
                .written
                .get(subscription)
                .is_none_or(|at| at.elapsed() >= HEALTH_WRITE_EVERY);
        if due {
            batch.insert(key(SUBSCRIPTION, subscription.as_bytes()), encoded);
            health
                .written
                .insert(subscription.to_string(), Instant::now());
            health.dirty.remove(subscription);
        } else {
            health.dirty.insert(subscription.to_string());
        }
    }

    /// Writes the health records changed since their last write more than a second ago.
    /// Returns whether it wrote any.
    fn write_health(&self) -> Result<bool, StoreError> {
        let mut health = lock(&self.health);
        if health.dirty.is_empty() {
            return Ok(false);
        }
        let Health {
            states,
            written,
            dirty,
        } = &mut *health;
        let mut batch = ::sled::Batch::default();
        let mut writes = 0;
        dirty.retain(|id| {
            let due = written
                .get(id)
                .is_none_or(|at| at.elapsed() >= HEALTH_WRITE_EVERY);
            if due {
                if let Some(state) = states.get(id) {
                    batch.insert(key(SUBSCRIPTION, id.as_bytes()), encode_json(state));
                    writes += 1;
                }
                written.insert(id.clone(), Instant::now());
            }
            !due
        });
        if writes > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(writes > 0)
    }

    /// Moves a finished delivery back to the queue, due at `now_ms`, in `batch`.
    fn reopen(
        &self,
        batch: &mut ::sled::Batch,
        id: Id,
        mut r: DeliveryRecord,
        now_ms: u64,
    ) -> (String, u64) {
        batch.remove(delivery_key(DONE, id));
        r.state = DeliveryState::Scheduled;
        r.finished_ms = None;
        r.due_ms = now_ms;
        batch.insert(delivery_key(PENDING, id), r.encode());
        (r.bucket, now_ms)
    }

    fn requeue(&self, id: Id, now_ms: u64) -> Result<(DeliveryState, Option<Done>), RequeueError> {
        let name = delivery_id_string(ulid::Ulid(id));
        if lock(&self.queue).index.is_leased(id) {
            return Err(RequeueError::InFlight(name));
        }
        let mut batch = ::sled::Batch::default();
        if let Some(mut r) = self.pending(id)? {
            let (bucket, old_due) = (r.bucket.clone(), r.due_ms);
            r.due_ms = now_ms;
            batch.insert(delivery_key(PENDING, id), r.encode());
            self.tree.apply_batch(batch).map_err(StoreError::from)?;
            let queue = self.queue.clone();
            let after: Done = Box::new(move |_| {
                let mut q = lock(&queue);
                // Claimed meanwhile: the attempt under way is the retry.
                if q.index.remove(&bucket, old_due, id) {
                    q.index.insert(&bucket, now_ms, id);
                }
            });
            return Ok((DeliveryState::Scheduled, Some(after)));
        }
        let k = delivery_key(DONE, id);
        let Some(v) = self.tree.get(&k).map_err(StoreError::from)? else {
            return Err(RequeueError::NotFound(name));
        };
        let r = DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?;
        let was = r.state;
        let (bucket, due) = self.reopen(&mut batch, id, r, now_ms);
        self.tree.apply_batch(batch).map_err(StoreError::from)?;
        let queue = self.queue.clone();
        let after: Done = Box::new(move |_| lock(&queue).index.insert(&bucket, due, id));
        Ok((was, Some(after)))
    }

    /// Requeues dead deliveries among up to [`BULK_CHUNK`] finished ones from `from` on.
    /// Returns how many, and where to continue.
    fn requeue_dead_chunk(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        from: Vec<u8>,
        now_ms: u64,
    ) -> Result<(usize, Option<Vec<u8>>, Reopened), StoreError> {
        let mut batch = ::sled::Batch::default();
        let mut reopened = Vec::new();
        let mut next = None;
        for (i, entry) in self.tree.range(from..vec![DONE + 1]).enumerate() {
            let (k, v) = entry?;
            if i >= BULK_CHUNK {
                next = Some(k.to_vec());
                break;
            }
            let r = DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?;
            let wanted = r.state == DeliveryState::Dead
                && r.finished_ms.is_some_and(|t| t >= since_ms)
                && subscription.is_none_or(|s| s == r.subscription);
            if wanted {
                let id = id_of(&k)?;
                let (bucket, due) = self.reopen(&mut batch, id, r, now_ms);
                reopened.push((bucket, due, id));
            }
        }
        self.tree.apply_batch(batch)?;
        Ok((reopened.len(), next, reopened))
    }

    /// [`AdminStore::end_queued`]'s writes, as one batch: the subscription's unfinished
    /// deliveries that are not leased move to `D`, dead. Returns how many, and what the index
    /// must forget.
    fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(u64, Reopened), StoreError> {
        let mut batch = ::sled::Batch::default();
        let mut unqueue = Vec::new();
        for entry in self.tree.scan_prefix([PENDING]) {
            let (k, v) = entry?;
            let Ok(mut r) = DeliveryRecord::decode(&v) else {
                continue;
            };
            if r.subscription != subscription || r.adhoc.is_some() {
                continue;
            }
            // In flight: its attempt records its own outcome. (The caller took the
            // subscription out of the limits first, so no claim leases one meanwhile.)
            let id = id_of(&k)?;
            if lock(&self.queue).index.is_leased(id) {
                continue;
            }
            let due = r.due_ms;
            r.attempts.push(Attempt {
                number: r.attempts.last().map_or(1, |a| a.number + 1),
                started_ms: now_ms,
                duration_ms: 0,
                outcome: Outcome::Other,
                status_code: None,
                error: Some(reason.to_string()),
                response_excerpt: None,
            });
            r.state = DeliveryState::Dead;
            r.due_ms = 0;
            r.finished_ms = Some(now_ms);
            batch.remove(k.to_vec());
            batch.insert(delivery_key(DONE, id), r.encode());
            unqueue.push((r.bucket, due, id));
        }
        self.tree.apply_batch(batch)?;
        Ok((unqueue.len() as u64, unqueue))
    }

    /// [`AdminStore::erase_owner`]'s writes, as one batch: reads every subscription, event and
    /// delivery record (erasure is rare; its cost is a scan of the store). Returns the counts
    /// and the unfinished deliveries the index must forget.
    fn erase_owner(&self, owner: &str) -> Result<(Erased, Reopened), StoreError> {
        let mut batch = ::sled::Batch::default();
        let mut erased = Erased::default();
        let mut subscriptions = HashSet::new();
        for entry in self.tree.scan_prefix([USER_SUBSCRIPTION]) {
            let (k, v) = entry?;
            let Ok(sub) = serde_json::from_slice::<StoredSubscription>(&v) else {
                continue;
            };
            if sub.owner.as_deref() == Some(owner) {
                batch.remove(k.to_vec());
                batch.remove(key(SUBSCRIPTION, sub.id.as_bytes()));
                subscriptions.insert(sub.id);
            }
        }
        erased.subscriptions = subscriptions.len() as u64;
        let mut events = HashSet::new();
        for entry in self.tree.scan_prefix([EVENT]) {
            let (k, v) = entry?;
            let Ok(e) = EventRecord::decode(&v, false) else {
                continue;
            };
            if e.owner.as_deref() == Some(owner) {
                batch.remove(k.to_vec());
                if e.deliveries.is_empty() {
                    let mut z = e.created_ms.to_be_bytes().to_vec();
                    z.extend_from_slice(&e.id.to_be_bytes());
                    batch.remove(key(ZERO, &z));
                }
                events.insert(e.id);
            }
        }
        erased.events = events.len() as u64;
        let mut unqueue = Vec::new();
        let mut removed = HashSet::new();
        // Other events that lose deliveries (unowned ones, from before owners, that went to
        // the owner's subscriptions): removed too when nothing of them is left.
        let mut touched = HashSet::new();
        for prefix in [PENDING, DONE] {
            for entry in self.tree.scan_prefix([prefix]) {
                let (k, v) = entry?;
                let Ok(r) = DeliveryRecord::decode(&v) else {
                    continue;
                };
                let owned = r.owner.as_deref() == Some(owner)
                    || events.contains(&r.event)
                    || (r.adhoc.is_none() && subscriptions.contains(&r.subscription));
                if !owned {
                    continue;
                }
                if !events.contains(&r.event) {
                    touched.insert(r.event);
                }
                removed.insert(id_of(&k)?);
                batch.remove(k.to_vec());
                erased.deliveries += 1;
                erased.attempts += r.attempts.len() as u64;
                if prefix == PENDING {
                    let id = id_of(&k)?;
                    erased.unfinished.push(delivery_id_string(ulid::Ulid(id)));
                    unqueue.push((r.bucket, r.due_ms, id));
                }
            }
        }
        for event in touched {
            let k = event_key(event);
            let Some(e) = self
                .tree
                .get(&k)?
                .and_then(|v| EventRecord::decode(&v, false).ok())
                .filter(|e| e.id == event)
            else {
                continue;
            };
            let mut left = false;
            for d in e.deliveries.iter().filter(|d| !removed.contains(*d)) {
                left |= self.tree.contains_key(delivery_key(PENDING, *d))?
                    || self.tree.contains_key(delivery_key(DONE, *d))?;
            }
            if !left {
                batch.remove(k);
            }
        }
        self.tree.apply_batch(batch)?;
        let mut health = lock(&self.health);
        for id in &subscriptions {
            health.forget(id);
        }
        Ok((erased, unqueue))
    }

    fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut batch = ::sled::Batch::default();
        let mut removed_ids = HashSet::new();
        let mut events = Vec::new();
        // Finished deliveries were created before they finished: only ids older than the
        // cutoff can qualify. Those that finished later are looked at again next time.
        let end = delivery_key(DONE, delivery_id_at(cutoff_ms).0);
        for entry in self
            .tree
            .range(vec![DONE]..end)
            .take(limit.saturating_mul(10))
        {
            let (k, v) = entry?;
            let r = match DeliveryRecord::decode(&v) {
                Ok(r) => r,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            if r.finished_ms.is_none_or(|t| t >= cutoff_ms) {
                continue;
            }
            batch.remove(k.to_vec());
            removed_ids.insert(id_of(&k)?);
            events.push(r.event);
            if removed_ids.len() >= limit {
                break;
            }
        }
        let mut removed = removed_ids.len();
        events.sort_unstable();
        events.dedup();
        for event in events {
            let k = event_key(event);
            let Some(v) = self.tree.get(&k)? else {
                continue;
            };
            let e = match EventRecord::decode(&v, false) {
                Ok(e) => e,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            if e.id != event {
                continue;
            }
            let mut live = false;
            for d in &e.deliveries {
                live |= !removed_ids.contains(d)
                    && (self.tree.contains_key(delivery_key(PENDING, *d))?
                        || self.tree.contains_key(delivery_key(DONE, *d))?);
            }
            if !live {
                batch.remove(k);
                removed += 1;
            }
        }
        // Events that matched no target.
        let mut end = vec![ZERO];
        end.extend_from_slice(&cutoff_ms.to_be_bytes());
        for entry in self.tree.range(vec![ZERO]..end).take(limit) {
            let (k, _) = entry?;
            let event = k
                .get(9..25)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(u128::from_be_bytes)
                .ok_or_else(|| corrupt(&k, "bad retention key"))?;
            batch.remove(k.to_vec());
            let ek = event_key(event);
            if let Some(v) = self.tree.get(&ek)? {
                if EventRecord::decode(&v, false).is_ok_and(|e| e.id == event) {
                    batch.remove(ek);
                }
            }
            removed += 1;
        }
        self.tree.apply_batch(batch)?;
        Ok(removed)
    }
}

fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Subscription states and stored subscriptions are plain structs of strings and numbers:
    // serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[async_trait]
impl QueueStore for SledStore {
    async fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        let queue = self.queue.clone();
        self.write(move |w: &Writer| {
            let (answers, fresh) = w.ingest(events, now_ms)?;
            let after: Done = Box::new(move |_| {
                let mut q = lock(&queue);
                for claim in fresh {
                    let id = parse_delivery_id(&claim.delivery.id).map_or(0, |u| u.0);
                    q.index.insert(&claim.delivery.bucket, now_ms, id);
                    if q.fresh.len() < FRESH_MAX {
                        q.fresh.insert(id, claim);
                    }
                }
            });
            Ok((answers, Some(after)))
        })
        .await
    }

    async fn claim(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        let (mut claims, missing, next) = {
            let mut q = lock(&self.queue);
            let (taken, next) = q.index.claim(now_ms, max);
            let mut claims = Vec::with_capacity(taken.len());
            let mut missing = Vec::new();
            for t in taken {
                match q.fresh.remove(&t.id) {
                    Some(mut c) => {
                        c.delivery.state = DeliveryState::InFlight;
                        c.delivery.due_ms = None;
                        claims.push(c);
                    }
                    None => missing.push(t.id),
                }
            }
            (claims, missing, next)
        };
        if !missing.is_empty() {
            let loaded = self.read(move |s| Ok(s.load_claims(&missing))).await?;
            for result in loaded {
                match result {
                    Ok(c) => claims.push(c),
                    Err((id, why)) => {
                        tracing::warn!(
                            delivery_id = %delivery_id_string(ulid::Ulid(id)),
                            error = %why,
                            "queued delivery cannot be read; it is left out of the queue"
                        );
                        lock(&self.queue).index.unlease(id);
                    }
                }
            }
        }
        Ok((claims, next))
    }

    async fn record_outcome(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        let outcome = Recorded {
            id,
            attempt,
            next,
            now_ms,
            reply,
        };
        self.writer
            .send(Job::Outcome(Box::new(outcome)))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn release(&self, delivery_id: &str, due_ms: u64) -> Result<(), StoreError> {
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Ok(());
        };
        let queue = self.queue.clone();
        self.write(move |w: &Writer| {
            // The stored due time follows, so that reads and a later requeue see it.
            let exists = match w.pending(id)? {
                Some(mut r) => {
                    r.due_ms = due_ms;
                    w.tree.insert(delivery_key(PENDING, id), r.encode())?;
                    true
                }
                // Erased meanwhile: only the slot is left to free.
                None => false,
            };
            let after: Done = Box::new(move |_| {
                let mut q = lock(&queue);
                if let Some(bucket) = q.index.unlease(id) {
                    if exists {
                        q.index.insert(&bucket, due_ms, id);
                    }
                }
            });
            Ok::<_, StoreError>(((), Some(after)))
        })
        .await
    }

    async fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.write(move |w: &Writer| Ok((w.sweep(cutoff_ms, limit)?, None)))
            .await
    }

    fn set_limits(&self, limits: Limits) {
        lock(&self.queue).index.set_limits(limits);
    }

    fn unfinished(&self) -> u64 {
        let queue = lock(&self.queue);
        (queue.index.queued() + queue.index.in_flight()) as u64
    }
}

#[async_trait]
impl AdminStore for SledStore {
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let Some(id) = parse_delivery_id(id).map(|u| u.0) else {
            return Ok(None);
        };
        self.read(move |s| Ok(s.record(id)?.map(|(r, _)| s.to_delivery(id, r))))
            .await
    }

    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Ok(Vec::new());
        };
        self.read(move |s| Ok(s.record(id)?.map(|(r, _)| r.attempts).unwrap_or_default()))
            .await
    }

    async fn event_meta(&self, event_id: &str) -> Result<Option<EventMeta>, StoreError> {
        let Some(event) = parse_event_id(event_id).map(|u| u.0) else {
            return Ok(None);
        };
        self.read(move |s| {
            Ok(s.event(event, false)?.map(|e| EventMeta {
                request_id: e.request_id,
                status: e.status,
                event_type: e.event_type,
                owner: e.owner,
                fingerprint: hex::encode(e.fingerprint),
                created_ms: e.created_ms,
                deliveries: e
                    .deliveries
                    .iter()
                    .map(|d| delivery_id_string(ulid::Ulid(*d)))
                    .collect(),
            }))
        })
        .await
    }

    async fn event_by_request(
        &self,
        request_id: &str,
        status: &str,
    ) -> Result<Option<String>, StoreError> {
        let hash = event_hash(request_id, status);
        let k = event_key(ulid::Ulid::from_parts(0, hash).0);
        let (request_id, status) = (request_id.to_string(), status.to_string());
        self.read(move |s| {
            let Some(v) = s.tree.get(&k)? else {
                return Ok(None);
            };
            let e = EventRecord::decode(&v, false).map_err(|e| corrupt(&k, e))?;
            Ok((e.request_id == request_id && e.status == status)
                .then(|| event_id_string(ulid::Ulid(e.id))))
        })
        .await
    }

    async fn export(
        &self,
        after: Option<String>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let first = after.is_none();
        let start = match after {
            Some(cursor) => {
                let mut k = hex::decode(&cursor)
                    .map_err(|_| StoreError::Backend(format!("bad export cursor {cursor:?}")))?;
                // The smallest key after the cursor's.
                k.push(0);
                k
            }
            None => vec![EVENT],
        };
        self.read(move |s| {
            let mut out = Vec::new();
            if first {
                for entry in s.tree.scan_prefix([KEY]) {
                    let (k, v) = entry?;
                    out.push(Portable::Key {
                        name: String::from_utf8_lossy(&k[1..]).into_owned(),
                        value: b64.encode(&v),
                    });
                }
                for entry in s.tree.scan_prefix([USER_SUBSCRIPTION]) {
                    let (k, v) = entry?;
                    match serde_json::from_slice(&v) {
                        Ok(sub) => out.push(Portable::Subscription(sub)),
                        Err(e) => s.skipped.skip(&k, e),
                    }
                }
                for entry in s.tree.scan_prefix([SUBSCRIPTION]) {
                    let (k, v) = entry?;
                    match serde_json::from_slice(&v) {
                        Ok(state) => out.push(Portable::State {
                            subscription: String::from_utf8_lossy(&k[1..]).into_owned(),
                            state,
                        }),
                        Err(e) => s.skipped.skip(&k, e),
                    }
                }
            }
            let mut n = 0;
            for entry in s.tree.range(start..vec![EVENT + 1]) {
                let (k, v) = entry?;
                let last = hex::encode(&k);
                let e = match EventRecord::decode(&v, true) {
                    Ok(e) => e,
                    Err(e) => {
                        s.skipped.skip(&k, e);
                        continue;
                    }
                };
                out.push(Portable::Event {
                    id: event_id_string(ulid::Ulid(e.id)),
                    request_id: e.request_id.clone(),
                    status: e.status.clone(),
                    event_type: e.event_type.clone(),
                    owner: e.owner.clone(),
                    fingerprint: hex::encode(e.fingerprint),
                    created_ms: e.created_ms,
                    body: b64.encode(&e.body),
                    deliveries: e
                        .deliveries
                        .iter()
                        .map(|d| delivery_id_string(ulid::Ulid(*d)))
                        .collect(),
                });
                for &d in &e.deliveries {
                    for prefix in [PENDING, DONE] {
                        let dk = delivery_key(prefix, d);
                        if let Some(v) = s.tree.get(&dk)? {
                            match DeliveryRecord::decode(&v) {
                                Ok(r) => {
                                    let attempts = r.attempts.clone();
                                    let delivery = to_delivery(d, r, false);
                                    out.push(Portable::delivery(&delivery, &attempts));
                                }
                                Err(e) => s.skipped.skip(&dk, e),
                            }
                        }
                    }
                }
                n += 1;
                if n >= events {
                    return Ok((out, Some(last)));
                }
            }
            Ok((out, None))
        })
        .await
    }

    async fn import(&self, records: Vec<Portable>) -> Result<(), StoreError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut batch = ::sled::Batch::default();
        // sled names an event by its (request_id, status): an imported event gets the id that
        // names, and its deliveries follow it (an export lists them right after it).
        let mut events: HashMap<String, u128> = HashMap::new();
        let bad = |what: &str, id: &str| StoreError::Backend(format!("import: bad {what} in {id}"));
        for record in records {
            match record {
                Portable::Key { name, value } => {
                    let value = b64.decode(&value).map_err(|_| bad("key", &name))?;
                    batch.insert(key(KEY, name.as_bytes()), value);
                }
                Portable::Subscription(sub) => {
                    batch.insert(key(USER_SUBSCRIPTION, sub.id.as_bytes()), encode_json(&sub));
                }
                Portable::State {
                    subscription,
                    state,
                } => {
                    batch.insert(
                        key(SUBSCRIPTION, subscription.as_bytes()),
                        encode_json(&state),
                    );
                    lock(&self.health).states.insert(subscription, state);
                }
                Portable::Event {
                    id: old,
                    request_id,
                    status,
                    event_type,
                    owner,
                    fingerprint,
                    created_ms,
                    body,
                    deliveries,
                } => {
                    let id = ulid::Ulid::from_parts(created_ms, event_hash(&request_id, &status)).0;
                    let fingerprint: [u8; 32] = hex::decode(&fingerprint)
                        .ok()
                        .and_then(|f| f.try_into().ok())
                        .ok_or_else(|| bad("fingerprint", &old))?;
                    let body = Bytes::from(b64.decode(&body).map_err(|_| bad("body", &old))?);
                    let deliveries = deliveries
                        .iter()
                        .map(|d| {
                            parse_delivery_id(d)
                                .map(|u| u.0)
                                .ok_or_else(|| bad("delivery id", &old))
                        })
                        .collect::<Result<Vec<u128>, _>>()?;
                    if deliveries.is_empty() {
                        let mut z = Vec::with_capacity(24);
                        z.extend_from_slice(&created_ms.to_be_bytes());
                        z.extend_from_slice(&id.to_be_bytes());
                        batch.insert(key(ZERO, &z), &[]);
                    }
                    let record = EventRecord {
                        id,
                        created_ms,
                        fingerprint,
                        request_id,
                        status,
                        event_type,
                        deliveries,
                        owner,
                        body,
                    };
                    batch.insert(event_key(id), record.encode());
                    events.insert(old, id);
                }
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
                    last_error: _,
                    owner,
                    attempts,
                } => {
                    let dlv = parse_delivery_id(&id)
                        .map(|u| u.0)
                        .ok_or_else(|| bad("delivery id", &id))?;
                    let event = *events
                        .get(&event_id)
                        .ok_or_else(|| bad("order (a delivery before its event)", &id))?;
                    let finished = matches!(state, DeliveryState::Delivered | DeliveryState::Dead);
                    let record = DeliveryRecord {
                        bucket,
                        due_ms: if finished {
                            0
                        } else {
                            due_ms.unwrap_or(created_ms)
                        },
                        event,
                        created_ms,
                        state: if finished {
                            state
                        } else {
                            DeliveryState::Scheduled
                        },
                        finished_ms: if finished { finished_ms } else { None },
                        subscription,
                        event_type,
                        adhoc,
                        owner,
                        attempts: attempts.iter().map(Attempt::from).collect(),
                    };
                    let prefix = if finished { DONE } else { PENDING };
                    batch.insert(delivery_key(prefix, dlv), record.encode());
                }
            }
        }
        // The index learns of imported deliveries when the store is next opened.
        self.write(move |w: &Writer| {
            w.tree.apply_batch(batch)?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn signing_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let k = key(KEY, name.as_bytes());
        self.write(move |w: &Writer| {
            // The writer is the only one to write: a get then an insert cannot race.
            if let Some(v) = w.tree.get(&k)? {
                return Ok::<_, StoreError>((v.to_vec(), None::<Done>));
            }
            let fresh: [u8; 32] = rand::random();
            w.tree.insert(k, &fresh[..])?;
            Ok((fresh.to_vec(), None))
        })
        .await
    }

    async fn revoke_session(&self, nonce: &str, until: u64, now: u64) -> Result<(), StoreError> {
        let k = key(REVOKED, nonce.as_bytes());
        self.write(move |w: &Writer| {
            let mut batch = ::sled::Batch::default();
            for entry in w.tree.scan_prefix([REVOKED]) {
                let (old, expires) = entry?;
                let ended = <[u8; 8]>::try_from(expires.as_ref())
                    .map_or(true, |e| u64::from_be_bytes(e) <= now);
                if ended {
                    batch.remove(old);
                }
            }
            batch.insert(k, &until.to_be_bytes()[..]);
            w.tree.apply_batch(batch)?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn session_revoked(&self, nonce: &str) -> Result<bool, StoreError> {
        let k = key(REVOKED, nonce.as_bytes());
        self.read(move |s| Ok(s.tree.contains_key(k)?)).await
    }

    async fn event_body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(event) = parse_event_id(event_id).map(|u| u.0) else {
            return Ok(None);
        };
        self.read(move |s| Ok(s.event(event, true)?.map(|e| e.body)))
            .await
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let filter = filter.clone();
        let cursor = match cursor {
            Some(c) => match parse_delivery_id(c) {
                Some(u) => Some(u.0),
                None => return Ok((Vec::new(), None)),
            },
            None => None,
        };
        self.read(move |s| s.list(&filter, cursor, limit)).await
    }

    async fn requeue(&self, delivery_id: &str, now_ms: u64) -> Result<DeliveryState, RequeueError> {
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Err(RequeueError::NotFound(delivery_id.to_string()));
        };
        self.write(move |w: &Writer| w.requeue(id, now_ms)).await
    }

    async fn requeue_dead(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError> {
        let mut from = vec![DONE];
        let mut total = 0;
        loop {
            let sub = subscription.map(str::to_string);
            let start = from.clone();
            let queue = self.queue.clone();
            let (n, next) = self
                .write(move |w: &Writer| {
                    let (n, next, reopened) =
                        w.requeue_dead_chunk(sub.as_deref(), since_ms, start, now_ms)?;
                    let after: Done = Box::new(move |_| {
                        let mut q = lock(&queue);
                        for (bucket, due, id) in reopened {
                            q.index.insert(&bucket, due, id);
                        }
                    });
                    Ok::<_, RequeueError>(((n, next), Some(after)))
                })
                .await?;
            total += n;
            match next {
                Some(next) => from = next,
                None => return Ok(total),
            }
        }
    }

    async fn set_disabled(
        &self,
        subscription: &str,
        disabled: Option<(u64, String)>,
    ) -> Result<(), StoreError> {
        let id = subscription.to_string();
        let health = self.health.clone();
        self.write(move |w: &Writer| {
            let mut health = lock(&health);
            let state = health.states.entry(id.clone()).or_default();
            state.set_disabled(disabled);
            w.tree
                .insert(key(SUBSCRIPTION, id.as_bytes()), encode_json(state))?;
            health.dirty.remove(&id);
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn switch(&self, subscription: &str, switch: Switch) -> Result<(), StoreError> {
        let paused = switch.paused();
        let id = subscription.to_string();
        let health = self.health.clone();
        self.write(move |w: &Writer| {
            let mut health = lock(&health);
            let state = health.states.entry(id.clone()).or_default();
            state.paused = paused;
            w.tree
                .insert(key(SUBSCRIPTION, id.as_bytes()), encode_json(state))?;
            health.dirty.remove(&id);
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        self.read(|s| {
            let mut all = Vec::new();
            for entry in s.tree.scan_prefix([USER_SUBSCRIPTION]) {
                let (k, v) = entry?;
                match serde_json::from_slice(&v) {
                    Ok(subscription) => all.push(subscription),
                    Err(e) => s.skipped.skip(&k, e),
                }
            }
            Ok(all)
        })
        .await
    }

    async fn put_subscription(&self, subscription: StoredSubscription) -> Result<(), StoreError> {
        self.write(move |w: &Writer| {
            w.tree.insert(
                key(USER_SUBSCRIPTION, subscription.id.as_bytes()),
                encode_json(&subscription),
            )?;
            Ok::<_, StoreError>(((), None::<Done>))
        })
        .await
    }

    async fn erase_owner(&self, owner: &str) -> Result<Erased, StoreError> {
        let owner = owner.to_string();
        self.write(move |w: &Writer| {
            let (erased, unqueue) = w.erase_owner(&owner)?;
            Ok::<_, StoreError>((erased, Some(unqueued(&w.queue, unqueue))))
        })
        .await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |w: &Writer| {
            let mut batch = ::sled::Batch::default();
            let existed = w.tree.contains_key(key(USER_SUBSCRIPTION, id.as_bytes()))?;
            batch.remove(key(USER_SUBSCRIPTION, id.as_bytes()));
            batch.remove(key(SUBSCRIPTION, id.as_bytes()));
            w.tree.apply_batch(batch)?;
            lock(&w.health).forget(&id);
            Ok::<_, StoreError>((existed, None::<Done>))
        })
        .await
    }

    async fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (subscription, reason) = (subscription.to_string(), reason.to_string());
        self.write(move |w: &Writer| {
            let (ended, unqueue) = w.end_queued(&subscription, &reason, now_ms)?;
            Ok::<_, StoreError>((ended, Some(unqueued(&w.queue, unqueue))))
        })
        .await
    }

    async fn subscription_states(&self) -> Result<HashMap<String, SubscriptionState>, StoreError> {
        Ok(lock(&self.health).states.clone())
    }

    async fn pending_stats(&self, now_ms: u64) -> Result<PendingStats, StoreError> {
        let mut stats = lock(&self.queue).index.stats(now_ms);
        stats.oldest_created_ms = self
            .read(|s| {
                Ok(match s.tree.scan_prefix([PENDING]).next() {
                    Some(entry) => Some(ms_of(id_of(&entry?.0)?)),
                    None => None,
                })
            })
            .await?;
        Ok(stats)
    }

    async fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.read(|s| {
            let events = s.tree.scan_prefix([EVENT]).keys().count() as u64;
            // A delivery that finishes during the walk moves from P to D: count ids, not keys.
            let mut ids = HashSet::new();
            for prefix in [PENDING, DONE] {
                for k in s.tree.scan_prefix([prefix]).keys() {
                    ids.insert(id_of(&k?)?);
                }
            }
            Ok((events, ids.len() as u64))
        })
        .await
    }

    fn skipped_records(&self) -> u64 {
        self.skipped.count()
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.read(|s| Ok(s.db.size_on_disk()?)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Work(Box::new(move |w: &Writer| {
            let _ = tx.send(lock(&w.fault).clone());
            None
        }));
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await.map_err(|_| StoreError::Closed)? {
            None => Ok(()),
            Some(fault) => Err(StoreError::Backend(format!(
                "the last flush failed: {fault}"
            ))),
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        // A closed channel means the writer has already stopped.
        let _ = self.writer.send(Job::Close).await;
        let handle = lock(&self.writer_thread).take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|_| StoreError::Closed)?
                .map_err(|_| StoreError::Closed)?;
        }
        // The writer flushed everything before its thread ended. Wait for the reads under way,
        // then refuse new ones.
        if let Ok(all) = self.reads.acquire_many(MAX_READS).await {
            all.forget();
            self.reads.close();
        }
        Ok(())
    }
}

impl SledStore {
    fn list(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<Id>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let low = delivery_id_at(filter.since_ms.unwrap_or(0)).0;
        let mut high = match filter.until_ms {
            Some(until) => delivery_id_at(until).0,
            None => Id::MAX,
        };
        if let Some(cursor) = cursor {
            high = high.min(cursor);
        }
        let mut page = Vec::new();
        if low >= high {
            return Ok((page, None));
        }
        let range = |prefix| {
            self.tree
                .range(delivery_key(prefix, low)..delivery_key(prefix, high))
                .rev()
                .peekable()
        };
        // Unfinished and finished deliveries, merged newest first.
        let (mut pending, mut done) = (range(PENDING), range(DONE));
        let mut examined = 0;
        loop {
            let take_pending = match (pending.peek(), done.peek()) {
                (Some(Ok((p, _))), Some(Ok((d, _)))) => p[1..] > d[1..],
                (Some(_), _) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_pending {
                pending.next()
            } else {
                done.next()
            };
            let Some(entry) = next else { break };
            let (k, v) = entry?;
            examined += 1;
            let decoded = id_of(&k)
                .and_then(|id| Ok((id, DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?)));
            let (id, record) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    self.skipped.skip(&k, e);
                    continue;
                }
            };
            let delivery = self.to_delivery(id, record);
            let last = delivery.id.clone();
            if filter.matches(&delivery) {
                page.push(delivery);
            }
            if page.len() >= limit || examined >= LIST_SCAN_LIMIT {
                return Ok((page, Some(last)));
            }
        }
        Ok((page, None))
    }

    /// Counts of the index, for tests and benchmarks: (queued, in flight, buckets).
    pub fn index_counts(&self) -> (usize, usize, usize) {
        let q = lock(&self.queue);
        (q.index.queued(), q.index.in_flight(), q.index.buckets())
    }
}

#[cfg(test)]
mod tests;

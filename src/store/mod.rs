//! The store: the only module that imports sled.
//!
//! One sled tree holds events, deliveries, the due-time index and the attempt history (the key
//! layout is in [`keys`]). Reads happen anywhere; every write happens on one thread, the
//! *writer*, which takes jobs from a channel. Each job is applied with one atomic `apply_batch`;
//! jobs that must be durable (ingest, attempt outcomes) are acknowledged only after one
//! `flush()` that covers every job the writer took in the same round. Concurrent requests thus
//! share an fsync (group commit), and one thread doing every read-modify-write makes the
//! idempotency check and the claiming of due deliveries free of races.

mod admin;
mod keys;

use admin::Health;
pub use admin::{DeliveryFilter, RequeueError, SubscriptionState};

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::event::{AdhocTarget, NewEvent};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("store: the writer has stopped")]
    WriterGone,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub subscription: String,
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adhoc: Option<AdhocTarget>,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_ms: u64,
    /// When the next attempt is due, while scheduled.
    pub due_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub request_id: String,
    pub status: String,
    pub event_type: String,
    pub fingerprint: String,
    pub created_ms: u64,
    pub deliveries: Vec<String>,
}

/// The record of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// `success`, `http_4xx`, `http_5xx`, `timeout`, `connect` or `other`.
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
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

/// A delivery taken from the due-time index, with what its attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub body: Vec<u8>,
}

/// Counts for the pending gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingStats {
    pub ready: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub oldest_created_ms: Option<u64>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Ingest {
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
        reply: oneshot::Sender<Result<Vec<Ingested>, IngestError>>,
    },
    Claim {
        bucket: String,
        now_ms: u64,
        limit: usize,
        reply: Reply<(Vec<Claimed>, Option<u64>)>,
    },
    Outcome {
        delivery_id: String,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
        reply: Reply<()>,
    },
    Recover {
        now_ms: u64,
        reply: Reply<usize>,
    },
    Sweep {
        cutoff_ms: u64,
        limit: usize,
        reply: Reply<usize>,
    },
    /// Work defined elsewhere in this module (the admin operations); it replies by itself.
    Exec(WriterWork),
    /// Stop after this round.
    Close,
}

/// How many deliveries are queued (`q/` entries) and in flight (`l/` entries): counted once at
/// open, then kept by the writer as it applies each batch, so that the pending gauges cost
/// O(ready) instead of a walk over the whole queue.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queued: AtomicI64,
    leased: AtomicI64,
}

impl Counters {
    fn add(&self, queued: i64, leased: i64) {
        self.queued.fetch_add(queued, Ordering::Relaxed);
        self.leased.fetch_add(leased, Ordering::Relaxed);
    }

    fn get(counter: &AtomicI64) -> u64 {
        u64::try_from(counter.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// Most jobs the writer takes into one round (one flush).
const MAX_GROUP: usize = 1024;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Read access for anyone; writes go through `writer`.
    tree: sled::Tree,
    /// Kept to flush on shutdown and to report the size on disk.
    db: sled::Db,
    /// The writer thread's queue. It ends when the last handle is dropped, or on `close`.
    writer: mpsc::Sender<Job>,
    /// The writer thread, joined by `close` so that the database is released when it returns.
    writer_thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
    /// Kept up to date by the writer.
    counters: Arc<Counters>,
    /// Subscriptions' pause switch and health, in memory; the writer writes them back.
    health: Arc<Mutex<Health>>,
}

impl Store {
    /// Opens (or creates, owner-only) the database at `path` and starts the writer thread.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        create_private_dir(path)?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(Some(1000))
            .open()?;
        let tree = db.open_tree("hookd")?;
        let (tx, rx) = mpsc::channel(4096);
        let counters = Arc::new(Counters::default());
        counters.add(
            i64::try_from(tree.scan_prefix(keys::QUEUE).keys().count()).unwrap_or(i64::MAX),
            i64::try_from(tree.scan_prefix(keys::LEASE).keys().count()).unwrap_or(i64::MAX),
        );
        let health = Arc::new(Mutex::new(Health::load(&tree)?));
        let writer = Writer {
            tree: tree.clone(),
            db: db.clone(),
            counters: counters.clone(),
            health: health.clone(),
        };
        let handle = thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Create {
                path: "writer thread".into(),
                source,
            })?;
        Ok(Store {
            tree,
            db,
            writer: tx,
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            counters,
            health,
        })
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Stores events and their deliveries atomically and durably. A conflicting event rejects
    /// the whole call; an identical repeat answers with the first event.
    pub async fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        self.call(|reply| Job::Ingest {
            events,
            now_ms,
            reply,
        })
        .await?
    }

    /// Takes up to `limit` deliveries of `bucket` due at `now_ms`, marking them in flight.
    /// Also returns when the bucket's next delivery is due, if any is left.
    pub async fn claim_due(
        &self,
        bucket: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        self.call(|reply| Job::Claim {
            bucket: bucket.to_string(),
            now_ms,
            limit,
            reply,
        })
        .await?
    }

    /// Records an attempt and what follows it, durably.
    pub async fn record_outcome(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.call(|reply| Job::Outcome {
            delivery_id: delivery_id.to_string(),
            attempt,
            next,
            now_ms,
            reply,
        })
        .await?
    }

    /// Puts deliveries that were in flight when hookd last stopped back in the queue, due now.
    pub async fn recover_in_flight(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.call(|reply| Job::Recover { now_ms, reply }).await?
    }

    /// Removes up to `limit` deliveries finished before `cutoff_ms`, their attempts, and events
    /// left with no delivery. Returns how many records it removed.
    pub async fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.call(|reply| Job::Sweep {
            cutoff_ms,
            limit,
            reply,
        })
        .await?
    }

    /// The buckets that have queued deliveries: one seek per bucket.
    pub fn buckets(&self) -> Result<Vec<String>, StoreError> {
        let mut buckets = Vec::new();
        let mut from = keys::QUEUE.to_vec();
        let end = keys::prefix_end(keys::QUEUE);
        while let Some(entry) = self.tree.range(from.clone()..end.clone()).next() {
            let (key, _) = entry?;
            let Some((bucket, _, _)) = keys::parse_queue(&key) else {
                break;
            };
            buckets.push(bucket.to_string());
            from = keys::prefix_end(&keys::queue_bucket(bucket));
        }
        Ok(buckets)
    }

    pub fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        read_json(&self.tree, &keys::join(&[keys::DELIVERY, id.as_bytes()]))
    }

    pub fn event_meta(&self, id: &str) -> Result<Option<EventMeta>, StoreError> {
        read_json(&self.tree, &keys::join(&[keys::EVENT_META, id.as_bytes()]))
    }

    pub fn event_body(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(keys::join(&[keys::EVENT, id.as_bytes()]))?
            .map(|v| v.to_vec()))
    }

    pub fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let prefix = keys::join(&[keys::ATTEMPT, delivery_id.as_bytes()]);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Counts queued deliveries (due or not), those in flight, and the oldest unfinished one.
    /// Walks only the due part of each bucket's run: O(buckets + ready).
    pub fn pending_stats(&self, now_ms: u64) -> Result<PendingStats, StoreError> {
        let mut ready = 0u64;
        for bucket in self.buckets()? {
            let start = keys::queue_bucket(&bucket);
            let end = keys::join(&[&start, &now_ms.saturating_add(1).to_be_bytes()]);
            ready += self.tree.range(start..end).keys().count() as u64;
        }
        let queued = Counters::get(&self.counters.queued);
        let mut stats = PendingStats {
            ready,
            scheduled: queued.saturating_sub(ready),
            in_flight: Counters::get(&self.counters.leased),
            oldest_created_ms: None,
        };
        if let Some(entry) = self.tree.scan_prefix(keys::PENDING).next() {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[keys::PENDING.len()..]).to_string();
            stats.oldest_created_ms = self.delivery(&id)?.map(|d| d.created_ms);
        }
        Ok(stats)
    }

    /// How many events and deliveries the store holds (finished ones included, until the
    /// retention sweep removes them). Walks two key ranges: for tests and tools, not hot paths.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let events = self.tree.scan_prefix(keys::EVENT_META).keys().count() as u64;
        let deliveries = self.tree.scan_prefix(keys::DELIVERY).keys().count() as u64;
        Ok((events, deliveries))
    }

    /// Answers once the writer thread has taken a job: proves it is not stuck.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Exec(Box::new(move |_: &Writer, _: &mut Vec<Durable>| {
            let _ = tx.send(());
        }));
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Writes everything to disk; called once more on shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Stops the writer after the jobs already queued, flushes, and waits for its thread, so
    /// that the database is released once every handle is dropped. Writes through any handle
    /// fail with [`StoreError::WriterGone`] afterwards.
    pub async fn close(&self) -> Result<(), StoreError> {
        // A closed channel means the writer has already stopped.
        let _ = self.writer.send(Job::Close).await;
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|_| StoreError::WriterGone)?
                .map_err(|_| StoreError::WriterGone)?;
        }
        self.flush()
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

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).to_string(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn read_json<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match tree.get(key)? {
        Some(value) => decode(key, &value).map(Some),
        None => Ok(None),
    }
}

/// A new id: `prefix_` and a ULID whose time part is `now_ms`, the record's creation time, so
/// that ids sort by creation time and a time range is an id range.
fn new_id(prefix: &str, now_ms: u64) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::from_parts(now_ms, rand::random::<u128>())
    )
}

/// The writer thread's state.
struct Writer {
    tree: sled::Tree,
    db: sled::Db,
    /// Adjusted after every batch that adds or removes `q/` or `l/` entries.
    counters: Arc<Counters>,
    /// Shared with the `Store` handles, which read it.
    health: Arc<Mutex<Health>>,
}

/// Work run on the writer thread; it pushes a reply to send once the round is durable.
type WriterWork = Box<dyn FnOnce(&Writer, &mut Vec<Durable>) + Send>;

/// A reply to send once the round is durable.
type Durable = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut durable: Vec<Durable> = Vec::new();
            let mut close = false;
            for job in jobs {
                match job {
                    Job::Close => close = true,
                    job => self.handle(job, &mut durable),
                }
            }
            if !durable.is_empty() {
                let flushed = self.db.flush().map(|_| ()).map_err(StoreError::from);
                for reply in durable {
                    let result = match &flushed {
                        Ok(()) => Ok(()),
                        Err(e) => Err(StoreError::Sled(sled::Error::Unsupported(e.to_string()))),
                    };
                    reply(result);
                }
            }
            if close {
                break;
            }
            if let Err(e) = self.write_health(false) {
                tracing::warn!(error = %e, "cannot write subscription health");
            }
        }
        // Every handle is gone, or the store is closing: make the last writes durable before
        // the thread ends.
        if let Err(e) = self.write_health(true) {
            tracing::warn!(error = %e, "cannot write subscription health");
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }

    fn handle(&self, job: Job, durable: &mut Vec<Durable>) {
        match job {
            Job::Ingest {
                events,
                now_ms,
                reply,
            } => match self.ingest(events, now_ms) {
                Ok(result) => durable.push(Box::new(move |flushed| {
                    let _ = reply.send(flushed.map(|()| result).map_err(IngestError::from));
                })),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Job::Claim {
                bucket,
                now_ms,
                limit,
                reply,
            } => {
                let _ = reply.send(self.claim(&bucket, now_ms, limit));
            }
            Job::Outcome {
                delivery_id,
                attempt,
                next,
                now_ms,
                reply,
            } => match self.outcome(&delivery_id, attempt, next, now_ms) {
                Ok(()) => durable.push(Box::new(move |flushed| {
                    let _ = reply.send(flushed);
                })),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Job::Recover { now_ms, reply } => {
                let _ = reply.send(self.recover(now_ms));
            }
            Job::Sweep {
                cutoff_ms,
                limit,
                reply,
            } => {
                let _ = reply.send(self.sweep(cutoff_ms, limit));
            }
            Job::Exec(work) => work(self, durable),
            // Taken care of by the loop in `run`.
            Job::Close => {}
        }
    }

    fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        let mut batch = sled::Batch::default();
        // Keys this request adds, so that a repeat inside one batch is seen.
        let mut added: HashMap<Vec<u8>, (String, [u8; 32], usize)> = HashMap::new();
        let mut answers = Vec::with_capacity(events.len());
        let mut queued = 0i64;
        for (index, (event, targets)) in events.into_iter().enumerate() {
            let key = keys::idempotency(&event.request_id, &event.status);
            let existing = match added.get(&key) {
                Some((id, fingerprint, n)) => Some((id.clone(), hex::encode(fingerprint), *n)),
                None => match self.tree.get(&key).map_err(StoreError::from)? {
                    Some(id) => {
                        let id = String::from_utf8_lossy(&id).to_string();
                        let meta: Option<EventMeta> =
                            read_json(&self.tree, &keys::join(&[keys::EVENT_META, id.as_bytes()]))?;
                        meta.map(|m| (id, m.fingerprint, m.deliveries.len()))
                    }
                    None => None,
                },
            };
            if let Some((event_id, fingerprint, deliveries)) = existing {
                if fingerprint != hex::encode(event.fingerprint) {
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
            let event_id = new_id("evt", now_ms);
            let mut delivery_ids = Vec::with_capacity(targets.len());
            for target in targets {
                let delivery = Delivery {
                    id: new_id("dlv", now_ms),
                    event_id: event_id.clone(),
                    event_type: event.event_type.clone(),
                    subscription: target.subscription,
                    bucket: target.bucket,
                    adhoc: target.adhoc,
                    state: DeliveryState::Scheduled,
                    attempts: 0,
                    created_ms: now_ms,
                    due_ms: Some(now_ms),
                    finished_ms: None,
                    last_error: None,
                };
                batch.insert(
                    keys::join(&[keys::DELIVERY, delivery.id.as_bytes()]),
                    encode(&delivery),
                );
                batch.insert(keys::queue(&delivery.bucket, now_ms, &delivery.id), &[]);
                batch.insert(keys::join(&[keys::PENDING, delivery.id.as_bytes()]), &[]);
                delivery_ids.push(delivery.id);
                queued += 1;
            }
            let meta = EventMeta {
                request_id: event.request_id,
                status: event.status,
                event_type: event.event_type,
                fingerprint: hex::encode(event.fingerprint),
                created_ms: now_ms,
                deliveries: delivery_ids,
            };
            batch.insert(keys::join(&[keys::EVENT, event_id.as_bytes()]), event.body);
            batch.insert(
                keys::join(&[keys::EVENT_META, event_id.as_bytes()]),
                encode(&meta),
            );
            batch.insert(keys::timed(keys::EVENT_CREATED, now_ms, &event_id), &[]);
            batch.insert(key.clone(), event_id.as_bytes());
            added.insert(
                key,
                (event_id.clone(), event.fingerprint, meta.deliveries.len()),
            );
            answers.push(Ingested {
                event_id,
                deliveries: meta.deliveries.len(),
                duplicate: false,
            });
        }
        self.tree.apply_batch(batch).map_err(StoreError::from)?;
        self.counters.add(queued, 0);
        Ok(answers)
    }

    fn claim(
        &self,
        bucket: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        let start = keys::queue_bucket(bucket);
        let end = keys::prefix_end(&start);
        let mut claimed = Vec::new();
        let mut next_due = None;
        let mut batch = sled::Batch::default();
        let mut dequeued = 0i64;
        for entry in self.tree.range(start..end) {
            let (key, _) = entry?;
            let Some((_, due, id)) = keys::parse_queue(&key) else {
                continue;
            };
            if due > now_ms || claimed.len() >= limit {
                next_due = Some(due);
                break;
            }
            batch.remove(key.clone());
            dequeued += 1;
            let record_key = keys::join(&[keys::DELIVERY, id.as_bytes()]);
            let Some(mut delivery) = read_json::<Delivery>(&self.tree, &record_key)? else {
                tracing::warn!(
                    delivery_id = id,
                    "queued delivery has no record; dropping the index entry"
                );
                continue;
            };
            let Some(body) = self
                .tree
                .get(keys::join(&[keys::EVENT, delivery.event_id.as_bytes()]))?
            else {
                tracing::warn!(
                    delivery_id = id,
                    "queued delivery has no event body; dropping the index entry"
                );
                continue;
            };
            delivery.state = DeliveryState::InFlight;
            delivery.due_ms = None;
            batch.insert(record_key, encode(&delivery));
            batch.insert(keys::join(&[keys::LEASE, id.as_bytes()]), &[]);
            claimed.push(Claimed {
                delivery,
                body: body.to_vec(),
            });
        }
        self.tree.apply_batch(batch)?;
        self.counters
            .add(-dequeued, i64::try_from(claimed.len()).unwrap_or(0));
        Ok((claimed, next_due))
    }

    fn outcome(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let record_key = keys::join(&[keys::DELIVERY, delivery_id.as_bytes()]);
        let Some(mut delivery) = read_json::<Delivery>(&self.tree, &record_key)? else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        let lease = keys::join(&[keys::LEASE, delivery_id.as_bytes()]);
        let leased = i64::from(self.tree.contains_key(&lease)?);
        batch.remove(lease);
        batch.insert(keys::attempt(delivery_id, attempt.number), encode(&attempt));
        delivery.attempts = delivery.attempts.max(attempt.number);
        delivery.last_error = attempt.error.clone();
        match next {
            Next::RetryAt(due) => {
                delivery.state = DeliveryState::Scheduled;
                delivery.due_ms = Some(due);
                batch.insert(keys::queue(&delivery.bucket, due, delivery_id), &[]);
            }
            Next::Delivered | Next::Dead => {
                delivery.state = if next == Next::Delivered {
                    DeliveryState::Delivered
                } else {
                    DeliveryState::Dead
                };
                delivery.due_ms = None;
                delivery.finished_ms = Some(now_ms);
                batch.remove(keys::join(&[keys::PENDING, delivery_id.as_bytes()]));
                batch.insert(keys::timed(keys::FINISHED, now_ms, delivery_id), &[]);
            }
        }
        self.update_health(&mut batch, &delivery.subscription, &attempt, now_ms);
        batch.insert(record_key, encode(&delivery));
        self.tree.apply_batch(batch)?;
        self.counters
            .add(i64::from(matches!(next, Next::RetryAt(_))), -leased);
        Ok(())
    }

    fn recover(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut leases = 0i64;
        for entry in self.tree.scan_prefix(keys::LEASE) {
            let (key, _) = entry?;
            batch.remove(key.clone());
            leases += 1;
            let id = String::from_utf8_lossy(&key[keys::LEASE.len()..]).to_string();
            let record_key = keys::join(&[keys::DELIVERY, id.as_bytes()]);
            let Some(mut delivery) = read_json::<Delivery>(&self.tree, &record_key)? else {
                continue;
            };
            if matches!(
                delivery.state,
                DeliveryState::Delivered | DeliveryState::Dead
            ) {
                continue;
            }
            // The attempt that was cut short counts: its number is not reused, and a delivery
            // that keeps being interrupted still reaches the end of its schedule.
            let interrupted = Attempt {
                number: delivery.attempts + 1,
                started_ms: now_ms,
                duration_ms: 0,
                outcome: "other".to_string(),
                status_code: None,
                error: Some("interrupted: hookd stopped during this attempt".to_string()),
                response_excerpt: None,
            };
            batch.insert(keys::attempt(&id, interrupted.number), encode(&interrupted));
            delivery.attempts = interrupted.number;
            delivery.last_error = interrupted.error;
            delivery.state = DeliveryState::Scheduled;
            delivery.due_ms = Some(now_ms);
            batch.insert(keys::queue(&delivery.bucket, now_ms, &id), &[]);
            batch.insert(record_key, encode(&delivery));
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        self.counters.add(i64::try_from(n).unwrap_or(0), -leases);
        self.db.flush()?;
        Ok(n)
    }

    fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        let end = keys::timed(keys::FINISHED, cutoff_ms, "");
        for entry in self.tree.range(keys::FINISHED.to_vec()..end).take(limit) {
            let (key, _) = entry?;
            batch.remove(key.clone());
            let Some((_, id)) = keys::parse_timed(keys::FINISHED, &key) else {
                continue;
            };
            batch.remove(keys::join(&[keys::DELIVERY, id.as_bytes()]));
            for attempt in self
                .tree
                .scan_prefix(keys::join(&[keys::ATTEMPT, id.as_bytes()]))
            {
                batch.remove(attempt?.0);
            }
            removed += 1;
        }
        self.tree.apply_batch(batch)?;

        // Events whose deliveries are all gone.
        let mut batch = sled::Batch::default();
        let end = keys::timed(keys::EVENT_CREATED, cutoff_ms, "");
        for entry in self
            .tree
            .range(keys::EVENT_CREATED.to_vec()..end)
            .take(limit)
        {
            let (key, _) = entry?;
            let Some((_, event_id)) = keys::parse_timed(keys::EVENT_CREATED, &key) else {
                continue;
            };
            let meta_key = keys::join(&[keys::EVENT_META, event_id.as_bytes()]);
            let Some(meta) = read_json::<EventMeta>(&self.tree, &meta_key)? else {
                batch.remove(key.clone());
                continue;
            };
            let mut live = false;
            for d in &meta.deliveries {
                live |= self
                    .tree
                    .contains_key(keys::join(&[keys::DELIVERY, d.as_bytes()]))?;
            }
            if live {
                continue;
            }
            batch.remove(key.clone());
            batch.remove(meta_key);
            batch.remove(keys::join(&[keys::EVENT, event_id.as_bytes()]));
            batch.remove(keys::idempotency(&meta.request_id, &meta.status));
            removed += 1;
        }
        self.tree.apply_batch(batch)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, IngestRules};

    /// The pending counts the slow way: a walk over every `q/` and `l/` key.
    fn walked(store: &Store, now_ms: u64) -> (u64, u64, u64) {
        let (mut ready, mut scheduled) = (0, 0);
        for key in store.tree.scan_prefix(keys::QUEUE).keys() {
            let key = key.unwrap();
            match keys::parse_queue(&key) {
                Some((_, due, _)) if due <= now_ms => ready += 1,
                Some(_) => scheduled += 1,
                None => {}
            }
        }
        (
            ready,
            scheduled,
            store.tree.scan_prefix(keys::LEASE).keys().count() as u64,
        )
    }

    fn counted(store: &Store, now_ms: u64) -> (u64, u64, u64) {
        let s = store.pending_stats(now_ms).unwrap();
        (s.ready, s.scheduled, s.in_flight)
    }

    fn event(request_id: &str) -> NewEvent {
        let rules = IngestRules {
            allow_adhoc_targets: false,
            allow_http: false,
            guard: crate::guard::Guard::default(),
        };
        parse_event(
            serde_json::json!({"request_id": request_id, "status": "completed"}),
            &rules,
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    fn target(bucket: &str) -> Target {
        Target {
            subscription: bucket.to_string(),
            bucket: bucket.to_string(),
            adhoc: None,
        }
    }

    fn attempt(number: u32) -> Attempt {
        Attempt {
            number,
            started_ms: 0,
            duration_ms: 1,
            outcome: "http_5xx".into(),
            status_code: Some(500),
            error: None,
            response_excerpt: None,
        }
    }

    #[tokio::test]
    async fn pending_counts_follow_every_state_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let check = |now: u64, expected: (u64, u64, u64)| {
            assert_eq!(
                counted(&store, now),
                walked(&store, now),
                "counters drifted at {now}"
            );
            assert_eq!(counted(&store, now), expected);
        };
        store
            .ingest(
                vec![
                    (event("r1"), vec![target("a"), target("b")]),
                    (event("r2"), vec![target("a")]),
                ],
                1000,
            )
            .await
            .unwrap();
        check(1000, (3, 0, 0));
        check(999, (0, 3, 0));
        let (claimed, _) = store.claim_due("a", 1000, 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        check(1000, (1, 0, 2));
        let (first, second) = (&claimed[0].delivery.id, &claimed[1].delivery.id);
        store
            .record_outcome(first, attempt(1), Next::RetryAt(5000), 1000)
            .await
            .unwrap();
        check(1000, (1, 1, 1));
        check(5000, (2, 0, 1));
        store.release(second, 1000).await.unwrap();
        check(1000, (2, 1, 0));
        let (claimed, _) = store.claim_due("a", 1000, 10).await.unwrap();
        store
            .record_outcome(&claimed[0].delivery.id, attempt(1), Next::Dead, 1000)
            .await
            .unwrap();
        check(1000, (1, 1, 0));
        store.requeue(&claimed[0].delivery.id, 1000).await.unwrap();
        check(1000, (2, 1, 0));
        let (claimed, _) = store.claim_due("b", 1000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        check(1000, (1, 1, 1));
        assert_eq!(store.recover_in_flight(1000).await.unwrap(), 1);
        check(1000, (2, 1, 0));
        store.close().await.unwrap();
        drop(store);

        // Reopened, the counters start from a walk.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(counted(&store, 1000), (2, 1, 0));
    }
}

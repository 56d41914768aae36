//! The writer thread: every write comes to it as a job, and a round applies the jobs waiting,
//! flushes once, then replies (the module doc's "Writes"). The writes themselves are in the
//! files named after them; this one runs them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::{mpsc, oneshot};

use super::codec::DeliveryRecord;
use super::kv::Kv;
use super::layout::{corrupt, delivery_key};
use super::memory::{Health, Queue, Skipped};
use super::{lock, EmbeddedStore, DONE, LAZY_FLUSH_EVERY, MAX_GROUP, PENDING};
use crate::store::index::Id;
use crate::store::{Attempt, Next, StoreError};

/// A reply to send once the round is durable.
pub(super) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Work run on the writer thread; it returns what to do once the round is durable, if anything.
pub(super) type Work = Box<dyn FnOnce(&Writer) -> Option<Done> + Send>;

pub(super) enum Job {
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
pub(super) struct Recorded {
    pub(super) id: Id,
    pub(super) attempt: Attempt,
    pub(super) next: Next,
    pub(super) now_ms: u64,
    /// Answered once applied, before the flush: the outcome reaches the disk within
    /// [`LAZY_FLUSH_EVERY`] or with the next flushed round. A crash may forget that last half
    /// second of outcomes, and those deliveries are then made again, which at-least-once
    /// allows; waiting for an fsync per outcome would cost more than the attempt. `None`: no
    /// one waits (a delivered attempt's, whose slot was freed when it was sent), and a failure
    /// is logged here.
    pub(super) reply: Option<oneshot::Sender<Result<(), StoreError>>>,
}

impl Recorded {
    /// Answers the outcome's sender, or logs a failure no one waits for.
    pub(super) fn answer(
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
        id: Id,
        result: Result<(), StoreError>,
    ) {
        match reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::error!(
                        delivery_id = %crate::store::delivery_id_string(ulid::Ulid(id)),
                        error = %e,
                        "cannot record attempt outcome; the delivery will be retried after a restart"
                    );
                }
            }
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) kv: Kv,
    pub(super) queue: Arc<Mutex<Queue>>,
    pub(super) health: Arc<Mutex<Health>>,
    /// The last flush's error, until a flush succeeds: sled stops writing after an I/O error
    /// (a full disk), and `ping` reports it so that `/readyz` fails.
    pub(super) fault: Mutex<Option<String>>,
    pub(super) skipped: Arc<Skipped>,
}

/// What a round took from the queue, sorted.
#[derive(Default)]
struct Round {
    /// Replies to send once the round is flushed.
    done: Vec<Done>,
    outcomes: Vec<Recorded>,
    /// Work was applied that asks for no flush of its own.
    applied: bool,
    tick: bool,
    close: bool,
}

impl Writer {
    /// Starts the writer thread, and the ticker that sends it [`Job::Tick`] every
    /// [`LAZY_FLUSH_EVERY`]. Returns the writer's queue and its thread.
    pub(super) fn start(self) -> Result<(mpsc::Sender<Job>, thread::JoinHandle<()>), StoreError> {
        let (tx, rx) = mpsc::channel(4096);
        let handle = thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || self.run(rx))
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
        Ok((tx, handle))
    }

    fn run(self, mut rx: mpsc::Receiver<Job>) {
        // Whether writes were applied since the last flush.
        let mut unflushed = false;
        loop {
            let jobs = next_jobs(&mut rx);
            let _sled = self.kv.exclusive();
            let round = self.apply(jobs);
            unflushed |= round.applied;
            if !round.outcomes.is_empty() {
                self.record_outcomes(round.outcomes);
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
            if !round.done.is_empty() || (unflushed && (round.tick || round.close)) {
                unflushed &= !self.flush(round.done);
            }
            if round.close {
                tracing::debug!("store writer stopped");
                return;
            }
        }
    }

    /// Runs a round's work and sorts the rest of its jobs.
    fn apply(&self, jobs: Option<Vec<Job>>) -> Round {
        let mut round = Round::default();
        // `None`: every handle is gone; the store closes as on `Job::Close`.
        let Some(jobs) = jobs else {
            round.close = true;
            return round;
        };
        for job in jobs {
            match job {
                Job::Close => round.close = true,
                Job::Tick => round.tick = true,
                Job::Outcome(outcome) => round.outcomes.push(*outcome),
                Job::Work(work) => match work(self) {
                    Some(reply) => round.done.push(reply),
                    None => round.applied = true,
                },
            }
        }
        round
    }

    /// Makes the round durable, then sends its replies. Returns whether the flush succeeded.
    fn flush(&self, done: Vec<Done>) -> bool {
        let flushed = self.kv.flush().map_err(|e| e.to_string());
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "store flush failed");
        }
        *lock(&self.fault) = flushed.clone().err();
        for reply in done {
            reply(flushed.clone().map_err(StoreError::Backend));
        }
        flushed.is_ok()
    }

    /// The record of an unfinished delivery.
    pub(super) fn pending(&self, id: Id) -> Result<Option<DeliveryRecord>, StoreError> {
        let k = delivery_key(PENDING, id);
        match self.kv.get(&k)? {
            Some(v) => Ok(Some(
                DeliveryRecord::decode(&v).map_err(|e| corrupt(&k, e))?,
            )),
            None => Ok(None),
        }
    }

    /// Whether any of `deliveries` but the `removed` ones is still stored.
    pub(super) fn any_left(
        &self,
        deliveries: &[Id],
        removed: &HashSet<Id>,
    ) -> Result<bool, StoreError> {
        for d in deliveries.iter().filter(|d| !removed.contains(*d)) {
            if self.kv.contains_key(delivery_key(PENDING, *d))?
                || self.kv.contains_key(delivery_key(DONE, *d))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Waits for a job, then takes every job waiting behind it, up to [`MAX_GROUP`]. `None` once
/// every handle is gone.
fn next_jobs(rx: &mut mpsc::Receiver<Job>) -> Option<Vec<Job>> {
    let mut jobs = vec![rx.blocking_recv()?];
    while jobs.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

impl EmbeddedStore {
    /// Runs `work` on the writer thread and waits for its reply, sent after the round's flush
    /// (ingest, requeue, release, pause, sweep; outcomes go as [`Job::Outcome`]).
    pub(super) async fn write<T: Send + 'static, E: From<StoreError> + Send + 'static>(
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
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

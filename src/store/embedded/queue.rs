//! [`QueueStore`] for the sled engine: the delivery side.

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::layout::delivery_key;
use super::writer::{Done, Job, Recorded, Writer};
use super::{lock, EmbeddedStore, PENDING};
use crate::event::NewEvent;
use crate::store::index::Id;
use crate::store::{
    delivery_id_string, parse_delivery_id, Attempt, Claimed, IngestError, Ingested, Limits, Next,
    QueueStore, StoreError, Target,
};

#[async_trait]
impl QueueStore for EmbeddedStore {
    async fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        let queue = self.queue.clone();
        self.write(move |w: &Writer| {
            let (answers, fresh) = w.ingest(events, now_ms)?;
            let after: Done = Box::new(move |_| lock(&queue).add_fresh(fresh, now_ms));
            Ok((answers, Some(after)))
        })
        .await
    }

    async fn claim(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        let (mut claims, missing, next) = lock(&self.queue).claim(now_ms, max);
        if !missing.is_empty() {
            claims.extend(self.load_missing(missing).await?);
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
        self.send_outcome(id, attempt, next, now_ms, Some(reply))
            .await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// A delivered attempt's slot is freed as its outcome is handed to the writer, not once the
    /// writer's round has applied it: that round may first apply ingests and wait for their
    /// flush, and the slot's next attempt would wait with it. The slot is handed on to the
    /// subscription's next due delivery when the limits let it run
    /// ([`Index::finish_and_follow`]), which saves the scheduler a turn and a task. The answer
    /// does not wait for the round either (a failure to apply is logged by the writer, and the
    /// delivery is made again after a restart, as for any outcome a crash forgets); until that
    /// round the delivery counts as in flight. Other outcomes are recorded as
    /// [`QueueStore::record_outcome`] records them, and hand nothing on.
    ///
    /// [`Index::finish_and_follow`]: crate::store::index::Index::finish_and_follow
    async fn record_outcome_and_follow(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        if next != Next::Delivered {
            return self
                .record_outcome(delivery_id, attempt, next, now_ms)
                .await
                .map(|()| None);
        }
        let Some(id) = parse_delivery_id(delivery_id).map(|u| u.0) else {
            return Ok(None);
        };
        // Queued first: if the store is closing, nothing is let go or handed on. Should the
        // writer apply the outcome before the slot is freed here, the lease is already gone
        // and nothing is handed on.
        self.send_outcome(id, attempt, next, now_ms, None).await?;
        let missing = match lock(&self.queue).finish_and_follow(id, now_ms) {
            None => return Ok(None),
            Some(Ok(claimed)) => return Ok(Some(claimed)),
            Some(Err(missing)) => missing,
        };
        match self.load_missing(vec![missing]).await {
            Ok(mut loaded) => Ok(loaded.pop()),
            Err(e) => {
                lock(&self.queue).index.unlease(missing);
                Err(e)
            }
        }
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
                    w.kv.insert(delivery_key(PENDING, id), r.encode())?;
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

impl EmbeddedStore {
    /// Queues an attempt's outcome for the writer's next round.
    async fn send_outcome(
        &self,
        id: Id,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
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
            .map_err(|_| StoreError::Closed)
    }

    /// Reads the claimed deliveries the fresh cache did not hold. One that cannot be read is
    /// logged and left out of the queue, its lease freed.
    async fn load_missing(&self, missing: Vec<Id>) -> Result<Vec<Claimed>, StoreError> {
        let loaded = self.read(move |s| Ok(s.load_claims(&missing))).await?;
        let mut claims = Vec::with_capacity(loaded.len());
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
        Ok(claims)
    }
}

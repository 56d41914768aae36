//! The [`QueueStore`] impl: each step's story is in its own file (ingest, claim, writer,
//! retention).

use async_trait::async_trait;

use super::PgStore;
use crate::event::NewEvent;
use crate::store::{
    Attempt, Claimed, IngestError, Ingested, Limits, Next, QueueStore, StoreError, Target,
};

#[async_trait]
impl QueueStore for PgStore {
    async fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        self.ingest_events(events, now_ms).await
    }

    async fn claim(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        self.claim_due(now_ms, max).await
    }

    async fn record_outcome(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.record(delivery_id, attempt, next, now_ms, false)
            .await
            .map(|_| ())
    }

    async fn record_outcome_and_follow(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        self.record(delivery_id, attempt, next, now_ms, true).await
    }

    async fn release(&self, delivery_id: &str, due_ms: u64) -> Result<(), StoreError> {
        self.release_held(delivery_id, due_ms).await
    }

    async fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.sweep_finished(cutoff_ms, limit).await
    }

    fn set_limits(&self, limits: Limits) {
        self.apply_limits(limits);
    }

    fn unfinished(&self) -> u64 {
        self.unfinished.get()
    }
}

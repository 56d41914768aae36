//! The operator's moves of deliveries: due again now (one, or the dead of a subscription in
//! bulk), or ended as dead (the queued deliveries of a subscription).

use super::rows::finished;
use super::{ms, PgStore, DB_NOW};
use crate::store::{DeliveryState, RequeueError, StoreError};

/// Finished deliveries a bulk requeue moves per transaction.
const BULK_CHUNK: i64 = 1000;

impl PgStore {
    /// Makes a delivery due now: an unfinished one that is not in flight, or a finished one
    /// (moved back to the queue). Returns the state it was in.
    pub(super) async fn requeue_one(
        &self,
        delivery_id: &str,
        now_ms: u64,
    ) -> Result<DeliveryState, RequeueError> {
        let now_param = self.now_param(now_ms);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let live = tx
            .query_opt(
                "SELECT leased FROM hookd_queue WHERE id = $1 FOR UPDATE",
                &[&delivery_id],
            )
            .await
            .map_err(StoreError::from)?;
        if let Some(row) = live {
            if row.get::<_, bool>(0) {
                return Err(RequeueError::InFlight(delivery_id.to_string()));
            }
            tx.execute(
                &format!(
                    "UPDATE hookd_queue SET due_ms = coalesce($2::bigint, {DB_NOW}) WHERE id = $1"
                ),
                &[&delivery_id, &now_param],
            )
            .await
            .map_err(StoreError::from)?;
            tx.commit().await.map_err(StoreError::from)?;
            self.announce.notify_one();
            return Ok(DeliveryState::Scheduled);
        }
        let row = tx
            .query_opt(
                &format!(
                    "WITH back AS (DELETE FROM hookd_done WHERE id = $1 RETURNING *)
                     INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url,
                         adhoc_secret, attempts, created_ms, due_ms, last_error, history, owner)
                     SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                         attempts, created_ms, coalesce($2::bigint, {DB_NOW}), last_error, history, owner FROM back
                     RETURNING (SELECT dead FROM back LIMIT 1)"
                ),
                &[&delivery_id, &now_param],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Err(RequeueError::NotFound(delivery_id.to_string()));
        };
        tx.commit().await.map_err(StoreError::from)?;
        self.announce.notify_one();
        self.unfinished.add(None, 1);
        Ok(finished(row.get(0)))
    }

    /// Moves the dead deliveries of `subscription` (all when `None`) finished since `since_ms`
    /// back to the queue, due now, [`BULK_CHUNK`] per transaction; returns how many.
    pub(super) async fn requeue_dead_since(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError> {
        // Times people read and give back (created_at, finished_at) are the database's.
        let since = ms(since_ms);
        let now_param = self.now_param(now_ms);
        let mut total = 0usize;
        loop {
            let client = self.client().await?;
            let n = client
                .execute(
                    &format!(
                        "WITH back AS (
                             DELETE FROM hookd_done d USING (
                                 SELECT id FROM hookd_done WHERE dead AND finished_ms >= $2
                                   AND ($1::text IS NULL OR subscription = $1) LIMIT $4
                             ) x WHERE d.id = x.id RETURNING d.*
                         )
                         INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url,
                             adhoc_secret, attempts, created_ms, due_ms, last_error, history, owner)
                         SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                             attempts, created_ms, coalesce($3::bigint, {DB_NOW}), last_error, history, owner FROM back"
                    ),
                    &[&subscription, &since, &now_param, &BULK_CHUNK],
                )
                .await
                .map_err(StoreError::from)?;
            let n = usize::try_from(n).unwrap_or(0);
            total += n;
            self.unfinished.add(None, n as u64);
            if n < usize::try_from(BULK_CHUNK).unwrap_or(usize::MAX) {
                break;
            }
        }
        if total > 0 {
            self.announce.notify_one();
        }
        Ok(total)
    }

    /// Ends the queued deliveries of `subscription` that are not in flight as dead, each with
    /// an attempt that tells `reason`; returns how many.
    pub(super) async fn end_queued_of(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "WITH now AS (SELECT coalesce($3::bigint, {DB_NOW}) AS t),
                     gone AS (
                         DELETE FROM hookd_queue q USING now
                         WHERE q.subscription = $1 AND q.adhoc_url IS NULL
                           AND NOT (q.leased AND q.due_ms > now.t)
                         RETURNING q.*
                     )
                     INSERT INTO hookd_done (id, event_id, event_type, subscription, bucket, adhoc_url,
                         adhoc_secret, dead, attempts, created_ms, finished_ms, last_error, history, owner)
                     SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                         true, attempts + 1, created_ms, now.t, $2::text,
                         history || jsonb_build_array(jsonb_build_object(
                             'number', attempts + 1, 'started_ms', now.t, 'duration_ms', 0,
                             'outcome', 'other', 'status_code', NULL, 'error', $2::text,
                             'response_excerpt', NULL)),
                         owner
                     FROM gone, now"
                ),
                &[&subscription, &reason, &self.now_param(now_ms)],
            )
            .await?;
        Ok(n)
    }
}

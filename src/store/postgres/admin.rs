//! The [`AdminStore`] impl: the long stories are in their own files (listing, portable,
//! requeue, erase, health).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::rows::attempts_of;
use super::{lock, ms, unms, PgStore, DB_NOW};
use crate::store::{
    AdminStore, Attempt, AuditEntry, AuditFilter, Delivery, DeliveryFilter, DeliveryState,
    EngineStats, Erased, EventMeta, PendingStats, Portable, RequeueError, StoreError,
    StoredSubscription, SubscriptionState, Switch, Timed,
};

#[async_trait]
impl AdminStore for PgStore {
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.delivery_by_id(id).await
    }

    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT history FROM hookd_queue WHERE id = $1
                 UNION ALL SELECT history FROM hookd_done WHERE id = $1 LIMIT 1",
                &[&delivery_id],
            )
            .await?;
        Ok(row
            .map(|r| attempts_of(&r.get::<_, Value>(0)))
            .unwrap_or_default())
    }

    async fn event_meta(&self, event_id: &str) -> Result<Option<EventMeta>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT request_id, status, event_type, fingerprint, created_ms, deliveries, owner FROM hookd_events WHERE id = $1",
                &[&event_id],
            )
            .await?;
        Ok(row.map(|r| EventMeta {
            request_id: r.get(0),
            status: r.get(1),
            event_type: r.get(2),
            fingerprint: hex::encode(r.get::<_, Vec<u8>>(3)),
            created_ms: unms(r.get(4)),
            deliveries: r.get(5),
            owner: r.get(6),
        }))
    }

    async fn event_body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT body FROM hookd_events WHERE id = $1", &[&event_id])
            .await?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
    }

    async fn event_by_request(
        &self,
        request_id: &str,
        status: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id FROM hookd_events WHERE request_id = $1 AND status = $2",
                &[&request_id, &status],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn export(
        &self,
        after: Option<String>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError> {
        self.export_page(after, events).await
    }

    async fn import(&self, records: Vec<Portable>) -> Result<(), StoreError> {
        self.import_records(records).await
    }

    async fn signing_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let client = self.client().await?;
        let key = format!("key/{name}");
        let fresh: [u8; 32] = rand::random();
        client
            .execute(
                "INSERT INTO hookd_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &&fresh[..]],
            )
            .await?;
        let row = client
            .query_one("SELECT value FROM hookd_meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.get(0))
    }

    async fn revoke_session(&self, nonce: &str, until: u64, now: u64) -> Result<(), StoreError> {
        // In hookd_meta, the expiry as 8 big-endian bytes: bytea compares byte by byte, so
        // the ended ones are those below now's bytes.
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM hookd_meta WHERE key LIKE 'session-revoked/%' AND value <= $1",
                &[&&now.to_be_bytes()[..]],
            )
            .await?;
        client
            .execute(
                "INSERT INTO hookd_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[
                    &format!("session-revoked/{nonce}"),
                    &&until.to_be_bytes()[..],
                ],
            )
            .await?;
        Ok(())
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.audit_record(entry).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        self.audit_page(filter, cursor, limit).await
    }

    async fn erase_audit_owner(&self, owner: &str) -> Result<u64, StoreError> {
        self.audit_erase_owner(owner).await
    }

    async fn prune_audit(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.audit_prune(cutoff_ms, limit).await
    }

    async fn session_revoked(&self, nonce: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM hookd_meta WHERE key = $1",
                &[&format!("session-revoked/{nonce}")],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        self.delivery_page(filter, cursor, limit).await
    }

    async fn list_timed(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Timed>, Option<String>), StoreError> {
        self.timed_page(filter, cursor, limit).await
    }

    async fn requeue(&self, delivery_id: &str, now_ms: u64) -> Result<DeliveryState, RequeueError> {
        self.requeue_one(delivery_id, now_ms).await
    }

    async fn requeue_dead(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError> {
        self.requeue_dead_since(subscription, since_ms, now_ms)
            .await
    }

    async fn set_disabled(
        &self,
        subscription: &str,
        disabled: Option<(u64, String)>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let (at, reason) = match &disabled {
            Some((at, reason)) => (Some(ms(*at)), Some(reason.as_str())),
            None => (None, None),
        };
        // Enabling starts the health afresh, as on sled.
        client
            .execute(
                "INSERT INTO hookd_subscription_state (subscription, disabled_ms, disabled_reason) VALUES ($1, $2, $3)
                 ON CONFLICT (subscription) DO UPDATE SET disabled_ms = excluded.disabled_ms,
                     disabled_reason = excluded.disabled_reason,
                     consecutive_failures = CASE WHEN excluded.disabled_ms IS NULL THEN 0
                         ELSE hookd_subscription_state.consecutive_failures END,
                     failing_since_ms = CASE WHEN excluded.disabled_ms IS NULL THEN NULL
                         ELSE hookd_subscription_state.failing_since_ms END",
                &[&subscription, &at, &reason],
            )
            .await?;
        lock(&self.health)
            .states
            .entry(subscription.to_string())
            .or_default()
            .set_disabled(disabled);
        Ok(())
    }

    async fn switch(&self, subscription: &str, switch: Switch) -> Result<(), StoreError> {
        let paused = switch.paused();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hookd_subscription_state (subscription, paused) VALUES ($1, $2)
                 ON CONFLICT (subscription) DO UPDATE SET paused = excluded.paused",
                &[&subscription, &paused],
            )
            .await?;
        lock(&self.health)
            .states
            .entry(subscription.to_string())
            .or_default()
            .paused = paused;
        Ok(())
    }

    async fn subscription_states(&self) -> Result<HashMap<String, SubscriptionState>, StoreError> {
        self.merged_states().await
    }

    async fn pending_stats(&self, now_ms: u64) -> Result<PendingStats, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                &format!(
                    "WITH now AS (SELECT coalesce($1::bigint, {DB_NOW}) AS t)
                     SELECT count(*) FILTER (WHERE due_ms <= now.t),
                            count(*) FILTER (WHERE NOT leased AND due_ms > now.t),
                            count(*) FILTER (WHERE leased AND due_ms > now.t),
                            min(created_ms)
                     FROM hookd_queue, now"
                ),
                &[&self.now_param(now_ms)],
            )
            .await?;
        Ok(PendingStats {
            ready: unms(r.get(0)),
            scheduled: unms(r.get(1)),
            in_flight: unms(r.get(2)),
            oldest_created_ms: r.get::<_, Option<i64>>(3).map(|t| self.db_to_node(t)),
        })
    }

    async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM hookd_events),
                        (SELECT count(*) FROM hookd_queue) + (SELECT count(*) FROM hookd_done)",
                &[],
            )
            .await?;
        Ok((unms(r.get(0)), unms(r.get(1))))
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                 WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'hookd\\_%'",
                &[],
            )
            .await?;
        Ok(unms(r.get(0)))
    }

    async fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, owner, toml, created_ms, updated_ms FROM hookd_subscriptions ORDER BY created_ms, id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredSubscription {
                id: r.get(0),
                owner: r.get(1),
                toml: r.get(2),
                created_ms: unms(r.get(3)),
                updated_ms: unms(r.get(4)),
            })
            .collect())
    }

    async fn put_subscription(&self, s: StoredSubscription) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hookd_subscriptions (id, owner, toml, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, toml = excluded.toml,
                     created_ms = excluded.created_ms, updated_ms = excluded.updated_ms",
                &[&s.id, &s.owner, &s.toml, &ms(s.created_ms), &ms(s.updated_ms)],
            )
            .await?;
        Ok(())
    }

    async fn erase_owner(&self, owner: &str) -> Result<Erased, StoreError> {
        self.erase_owned(owner).await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM hookd_subscriptions WHERE id = $1", &[&id])
            .await?;
        tx.execute(
            "DELETE FROM hookd_subscription_state WHERE subscription = $1",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        self.forget_health(&[id]);
        Ok(n > 0)
    }

    async fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        self.end_queued_of(subscription, reason, now_ms).await
    }

    fn skipped_records(&self) -> u64 {
        0
    }

    async fn engine_stats(&self) -> EngineStats {
        EngineStats {
            pool: Some(self.pool_status()),
            stale_outcomes: self.stale_outcomes(),
            dead_rows: self.queue_dead_rows().await.ok(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let check = async {
            let client = self.client().await?;
            client.execute("SELECT 1", &[]).await?;
            Ok::<_, StoreError>(())
        };
        tokio::time::timeout(Duration::from_secs(3), check)
            .await
            .map_err(|_| StoreError::Backend("postgres: no answer within 3 s".to_string()))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.shut_down().await;
        Ok(())
    }
}

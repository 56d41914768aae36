//! Retention: finished deliveries and events older than the cutoff go, whole days of
//! `hookd_done` first.

use tokio_postgres::error::SqlState;

use super::partitions::{partition_ddl, DAY_MS};
use super::{PgStore, DB_NOW};
use crate::store::StoreError;

impl PgStore {
    /// Removes at most `limit` finished deliveries finished before `cutoff_ms`, and as many
    /// events of that age none of whose deliveries is left; returns how many went.
    pub(super) async fn sweep_finished(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let cutoff = self.to_db(cutoff_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        forget_old_rates(&client).await?;
        // Whole partitions first: a day that ended before the cutoff goes in one statement.
        let mut removed = drop_finished_days(&client, cutoff, limit).await?;
        if removed < limit {
            removed += delete_finished(&client, cutoff, limit - removed).await?;
        }
        let events = delete_events(&client, cutoff, limit).await?;
        Ok(usize::try_from(removed).unwrap_or(0) + usize::try_from(events).unwrap_or(0))
    }
}

/// Rate limits' next times long past say nothing any more (per-request hosts come and go): an
/// hour is far beyond any interval that matters.
async fn forget_old_rates(client: &deadpool_postgres::Object) -> Result<(), StoreError> {
    client
        .execute(
            &format!("DELETE FROM hookd_rate WHERE next_us < {DB_NOW} * 1000 - 3600000000"),
            &[],
        )
        .await?;
    Ok(())
}

/// Drops the partitions of days that ended before `cutoff`, while their rows stay within
/// `limit`; returns how many rows went.
async fn drop_finished_days(
    client: &deadpool_postgres::Object,
    cutoff: i64,
    limit: i64,
) -> Result<i64, StoreError> {
    let mut removed: i64 = 0;
    let parts = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'hookd_done'",
            &[],
        )
        .await?;
    for row in parts {
        let name: String = row.get(0);
        let Some(day) = name
            .strip_prefix("hookd_done_d")
            .and_then(|d| d.parse::<i64>().ok())
        else {
            continue;
        };
        if (day + 1) * DAY_MS > cutoff {
            continue;
        }
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .get(0);
        if removed + n > limit {
            continue;
        }
        match partition_ddl(client, &format!("DROP TABLE IF EXISTS {name}")).await {
            Ok(()) => removed += n,
            // The lock was not to be had: the rows go by the DELETE below, or next time.
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                tracing::info!(partition = %name, "postgres: a finished day's partition is in use; it is dropped later");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// Deletes at most `limit` finished deliveries finished before `cutoff`; returns how many.
async fn delete_finished(
    client: &deadpool_postgres::Object,
    cutoff: i64,
    limit: i64,
) -> Result<i64, StoreError> {
    let n = client
        .execute(
            "DELETE FROM hookd_done d USING (
                 SELECT id FROM hookd_done WHERE finished_ms < $1 LIMIT $2
             ) x WHERE d.id = x.id AND d.finished_ms < $1",
            &[&cutoff, &limit],
        )
        .await?;
    Ok(i64::try_from(n).unwrap_or(0))
}

/// Deletes at most `limit` events created before `cutoff` none of whose deliveries is left.
async fn delete_events(
    client: &deadpool_postgres::Object,
    cutoff: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM hookd_events WHERE id IN (
                 SELECT e.id FROM hookd_events e
                 WHERE e.created_ms < $1
                   AND NOT EXISTS (SELECT 1 FROM hookd_queue q WHERE q.id = ANY(e.deliveries))
                   AND NOT EXISTS (SELECT 1 FROM hookd_done d WHERE d.id = ANY(e.deliveries))
                 LIMIT $2)",
            &[&cutoff, &limit],
        )
        .await?)
}

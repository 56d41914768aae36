//! The partitions of `hookd_done`, one per day of finishing: made ahead of need, dropped whole
//! by retention ([`super::retention`]).

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::DB_NOW;
use crate::store::StoreError;

/// A day, the span of one `hookd_done` partition.
pub(super) const DAY_MS: i64 = 86_400_000;
/// How often the partitions of `hookd_done` are made ahead of need.
const PARTITIONS_EVERY: Duration = Duration::from_secs(600);

/// Runs `ddl`, a statement that changes the partitions of `hookd_done` and so locks the table
/// ACCESS EXCLUSIVE (every read of finished deliveries, on every node, waits behind it), in
/// one message that PostgreSQL runs and commits by itself (an implicit transaction): the lock
/// is held only while the statement runs, never across a round trip to this node, which may
/// stop at any instant (SIGSTOP, a frozen VM). A node stopped between such a statement and its
/// `COMMIT` once stalled the other nodes' API for as long as it stayed stopped. It waits a
/// second at most for the lock, so that it never queues reads behind a long transaction.
pub(super) async fn partition_ddl(
    client: &deadpool_postgres::Object,
    ddl: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SET LOCAL lock_timeout = '1s'; {ddl}"))
        .await
}

/// Creates the `hookd_done` partition of `day` (days since 1970) unless it exists, by
/// [`partition_ddl`]: when the lock is not to be had within a second, finished deliveries go
/// to the default partition until it exists. Nodes may race to create it: the loser's error
/// is the sign it exists.
async fn create_partition(client: &deadpool_postgres::Object, day: i64) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("hookd_done_d{day}")],
        )
        .await?
        .get(0);
    if exists {
        return Ok(());
    }
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS hookd_done_d{day} PARTITION OF hookd_done FOR VALUES FROM ({}) TO ({})",
        day * DAY_MS,
        (day + 1) * DAY_MS
    );
    match partition_ddl(client, &ddl).await {
        Ok(()) => Ok(()),
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Keeps the partitions of today and tomorrow (by the database's clock) made ahead of need:
/// at start, then every ten minutes. A failure (a long transaction holding the lock) is
/// logged and tried again next time; meanwhile the default partition takes the rows.
pub(super) async fn maintain_partitions(pool: Pool) {
    loop {
        let made = async {
            let client = pool.get().await?;
            let now: i64 = client
                .query_one(&format!("SELECT {DB_NOW}"), &[])
                .await?
                .get(0);
            let today = now.div_euclid(DAY_MS);
            for day in [today, today + 1] {
                create_partition(&client, day).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = made {
            tracing::warn!(error = %e, "postgres: cannot make the day's partition of hookd_done yet; finished deliveries go to its default partition meanwhile");
        }
        tokio::time::sleep(PARTITIONS_EVERY).await;
    }
}

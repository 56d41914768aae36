//! The audit log on PostgreSQL: `hookd_audit` (schema_v9.sql), one row per entry, read newest
//! first by its time-ordered id.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{ms, unms, PgStore};
use crate::store::{AuditEntry, AuditFilter, Portable, StoreError};

const COLUMNS: &str = "id, at_ms, actor, action, kind, object, subscription, owner, detail";

/// Every entry, oldest first, for an export.
pub(super) async fn export_entries(
    client: &deadpool_postgres::Object,
) -> Result<Vec<Portable>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM hookd_audit ORDER BY id"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| Portable::Audit(entry_of(r))).collect())
}

/// Writes one entry (an import); one already there is kept.
pub(super) async fn import_entry(
    client: &impl GenericClient,
    e: &AuditEntry,
) -> Result<(), StoreError> {
    insert(client, e, "ON CONFLICT (id) DO NOTHING").await
}

async fn insert(client: &impl GenericClient, e: &AuditEntry, tail: &str) -> Result<(), StoreError> {
    client
        .execute(
            &format!(
                "INSERT INTO hookd_audit ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) {tail}"
            ),
            &[
                &e.id,
                &ms(e.at_ms),
                &e.actor,
                &e.action,
                &e.kind,
                &e.object,
                &e.subscription,
                &e.owner,
                &e.detail,
            ],
        )
        .await?;
    Ok(())
}

fn entry_of(r: &Row) -> AuditEntry {
    AuditEntry {
        id: r.get(0),
        at_ms: unms(r.get(1)),
        actor: r.get(2),
        action: r.get(3),
        kind: r.get(4),
        object: r.get(5),
        subscription: r.get(6),
        owner: r.get(7),
        detail: r.get(8),
    }
}

impl PgStore {
    pub(super) async fn audit_record(&self, e: AuditEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert(&client, &e, "").await
    }

    pub(super) async fn audit_page(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM hookd_audit
                     WHERE ($1::text IS NULL OR id < $1)
                       AND ($2::text IS NULL OR subscription = $2)
                       AND ($3::text IS NULL OR owner = $3)
                       AND ($4::text IS NULL OR actor = $4)
                       AND ($5::bigint IS NULL OR at_ms >= $5)
                       AND ($6::bigint IS NULL OR at_ms < $6)
                     ORDER BY id DESC LIMIT $7"
                ),
                &[
                    &cursor,
                    &filter.subscription,
                    &filter.owner,
                    &filter.actor,
                    &filter.since_ms.map(ms),
                    &filter.until_ms.map(ms),
                    &take,
                ],
            )
            .await?;
        let more = rows.len() > limit;
        let page: Vec<AuditEntry> = rows.iter().take(limit).map(entry_of).collect();
        let next = if more {
            page.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    pub(super) async fn audit_erase_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM hookd_audit WHERE owner = $1 OR actor = $2",
                &[&owner, &format!("portal:{owner}")],
            )
            .await?)
    }

    pub(super) async fn audit_prune(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM hookd_audit WHERE id IN
                 (SELECT id FROM hookd_audit WHERE at_ms < $1 ORDER BY id LIMIT $2)",
                &[&ms(cutoff_ms), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

//! Erasure: everything of one owner, in one transaction.

use tokio_postgres::Row;

use super::PgStore;
use crate::store::{Erased, StoreError};

impl PgStore {
    /// Deletes an owner's subscriptions (and their states), events and deliveries; returns
    /// what went.
    pub(super) async fn erase_owned(&self, owner: &str) -> Result<Erased, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let subscriptions: Vec<String> = tx
            .query(
                "DELETE FROM hookd_subscriptions WHERE owner = $1 RETURNING id",
                &[&owner],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "DELETE FROM hookd_subscription_state WHERE subscription = ANY($1)",
            &[&subscriptions],
        )
        .await?;
        let events = tx
            .query(
                "DELETE FROM hookd_events WHERE owner = $1 RETURNING id",
                &[&owner],
            )
            .await?;
        let event_ids: Vec<String> = events.iter().map(|r| r.get(0)).collect();
        // Deliveries of the owner's events (owner set since schema v8, or found through the
        // event), and every delivery to the owner's subscriptions.
        let owned = "owner = $1 OR event_id = ANY($2)
                     OR (adhoc_url IS NULL AND subscription = ANY($3))";
        let live = tx
            .query(
                &format!(
                    "DELETE FROM hookd_queue WHERE {owned} RETURNING id, jsonb_array_length(history)"
                ),
                &[&owner, &event_ids, &subscriptions],
            )
            .await?;
        let done = tx
            .query(
                &format!(
                    "DELETE FROM hookd_done WHERE {owned} RETURNING id, jsonb_array_length(history)"
                ),
                &[&owner, &event_ids, &subscriptions],
            )
            .await?;
        tx.commit().await?;
        self.forget_health(&subscriptions);
        Ok(Erased {
            subscriptions: subscriptions.len() as u64,
            events: event_ids.len() as u64,
            deliveries: (live.len() + done.len()) as u64,
            attempts: attempts(&live) + attempts(&done),
            unfinished: live.iter().map(|r| r.get(0)).collect(),
        })
    }
}

/// The attempts of the deleted deliveries' rows (their second column).
fn attempts(rows: &[Row]) -> u64 {
    rows.iter()
        .map(|r| u64::try_from(r.get::<_, i32>(1)).unwrap_or(0))
        .sum()
}

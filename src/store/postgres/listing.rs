//! The admin API's reads of deliveries: one by id, and a filtered page of them.

use serde_json::Value;
use tokio_postgres::Row;

use super::rows::{attempts_of, delivery_of, finished, DELIVERY_COLUMNS};
use super::{ms, unms, PgStore, DB_NOW};
use crate::store::{Attempt, Delivery, DeliveryFilter, DeliveryState, StoreError, Timed};

/// The state a live queue row shows: in flight while its lease runs.
/// A lease that has run out shows as scheduled (due since the lease's end): the next claim, on
/// any node, takes it.
const QUEUE_STATE: &str = "CASE WHEN leased AND due_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint THEN 'in_flight' ELSE 'scheduled' END";

/// The filters of a page, on either table: `$1` the cursor, `$2`–`$6` and `$9` the filter's.
const CONDITIONS: &str = "($1::text IS NULL OR id < $1) AND ($2::text IS NULL OR subscription = $2)
            AND ($3::text[] IS NULL OR subscription = ANY($3)) AND ($4::text IS NULL OR event_type = $4)
            AND ($5::bigint IS NULL OR created_ms >= $5) AND ($6::bigint IS NULL OR created_ms < $6)
            AND ($9::text IS NULL OR owner = $9)";

impl PgStore {
    /// A delivery by id, unfinished or finished.
    pub(super) async fn delivery_by_id(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let client = self.client().await?;
        if let Some(r) = client
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, leased AND due_ms > {DB_NOW}, due_ms, owner FROM hookd_queue WHERE id = $1"
                ),
                &[&id],
            )
            .await?
        {
            let leased: bool = r.get(10);
            return Ok(Some(if leased {
                delivery_of(&r, DeliveryState::InFlight, None, None)
            } else {
                delivery_of(&r, DeliveryState::Scheduled, Some(unms(r.get(11))), None)
            }));
        }
        let r = client
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, dead, finished_ms, owner FROM hookd_done WHERE id = $1"
                ),
                &[&id],
            )
            .await?;
        Ok(r.map(|r| delivery_of(&r, finished(r.get(10)), None, Some(unms(r.get(11))))))
    }

    /// A page of the deliveries matching `filter`, newest first, after `cursor`; returns it
    /// and the cursor of the next page, if there may be more.
    pub(super) async fn delivery_page(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let (rows, next) = self.page_rows(filter, cursor, limit, false).await?;
        Ok((rows.iter().map(listed).collect(), next))
    }

    /// [`PgStore::delivery_page`], each delivery with its attempts' times and results.
    pub(super) async fn timed_page(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Timed>, Option<String>), StoreError> {
        let (rows, next) = self.page_rows(filter, cursor, limit, true).await?;
        let timed = rows
            .iter()
            .map(|r| Timed {
                delivery: listed(r),
                attempts: attempts_of(&r.get::<_, Value>("history"))
                    .iter()
                    .map(Attempt::timing)
                    .collect(),
            })
            .collect();
        Ok((timed, next))
    }

    /// The rows of a page and the cursor of the next one; with their `history` if `history`.
    async fn page_rows(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
        history: bool,
    ) -> Result<(Vec<Row>, Option<String>), StoreError> {
        let state = filter.state.map(DeliveryState::as_str);
        let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let client = self.client().await?;
        let mut rows = client
            .query(
                &page_sql(filter.state, history),
                &[
                    &cursor,
                    &filter.subscription,
                    &filter.any_subscription,
                    &filter.event_type,
                    &filter.since_ms.map(ms),
                    &filter.until_ms.map(ms),
                    &state,
                    &take,
                    &filter.owner,
                ],
            )
            .await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(|r| r.get::<_, String>(0))
        } else {
            None
        };
        Ok((rows, next))
    }
}

/// The statement of a page: the live queue's rows, the finished ones', or both, by `state`;
/// with each row's `history` (its attempts) if `history`.
fn page_sql(state: Option<DeliveryState>, history: bool) -> String {
    let history = if history { ", history" } else { "" };
    let (live, done) = match state {
        None => (true, true),
        Some(DeliveryState::Scheduled | DeliveryState::InFlight) => (true, false),
        Some(DeliveryState::Delivered | DeliveryState::Dead) => (false, true),
    };
    let mut parts = Vec::new();
    if live {
        parts.push(format!(
            "SELECT {DELIVERY_COLUMNS}, {QUEUE_STATE} AS state, CASE WHEN {QUEUE_STATE} = 'in_flight' THEN NULL ELSE due_ms END AS due, NULL::bigint AS finished, owner{history}
             FROM hookd_queue WHERE {CONDITIONS} AND ($7::text IS NULL OR {QUEUE_STATE} = $7)
             ORDER BY id DESC LIMIT $8"
        ));
    }
    if done {
        parts.push(format!(
            "SELECT {DELIVERY_COLUMNS}, CASE WHEN dead THEN 'dead' ELSE 'delivered' END AS state, NULL::bigint AS due, finished_ms AS finished, owner{history}
             FROM hookd_done WHERE {CONDITIONS} AND ($7::text IS NULL OR (CASE WHEN dead THEN 'dead' ELSE 'delivered' END) = $7)
             ORDER BY id DESC LIMIT $8"
        ));
    }
    format!(
        "SELECT * FROM ({}) x ORDER BY id DESC LIMIT $8",
        parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    )
}

/// A row of a page as its delivery.
fn listed(r: &Row) -> Delivery {
    let state = DeliveryState::parse(r.get::<_, &str>(10)).unwrap_or(DeliveryState::Scheduled);
    let due: Option<i64> = r.get(11);
    let finished: Option<i64> = r.get(12);
    delivery_of(r, state, due.map(unms), finished.map(unms))
}

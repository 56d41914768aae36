//! Export and import: the store as [`Portable`] records, a page of events at a time, and back.

use std::collections::HashMap;

use base64::Engine;
use deadpool_postgres::Transaction;
use serde_json::Value;
use tokio_postgres::Row;

use super::health::stored_states;
use super::rows::{attempt_json, attempts_of, delivery_of, finished, DELIVERY_COLUMNS};
use super::{lock, ms, unms, PgStore};
use crate::store::portable::{self, Imported, ImportedDelivery, ImportedEvent, Progress};
use crate::store::{
    delivery_id_string, AdminStore, DeliveryState, Portable, StoreError, StoredSubscription,
    SubscriptionState,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl PgStore {
    /// A page of the export: `events` events after `after` (the first page starts with the
    /// keys, the subscriptions and their states), each followed by its deliveries. Returns the
    /// records and the cursor of the next page, if there may be one.
    pub(super) async fn export_page(
        &self,
        after: Option<String>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError> {
        let client = self.client().await?;
        let mut out = Vec::new();
        if after.is_none() {
            out.extend(self.export_settings(&client).await?);
        }
        let limit = i64::try_from(events).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, request_id, status, event_type, fingerprint, created_ms, body, deliveries, owner
                 FROM hookd_events WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut by_event = export_deliveries(&client, &ids).await?;
        for r in &rows {
            let id: String = r.get(0);
            out.push(event_record(r));
            out.extend(by_event.remove(&id).unwrap_or_default());
        }
        let next = (rows.len() >= events)
            .then(|| ids.last().cloned())
            .flatten();
        Ok((out, next))
    }

    /// What is not an event: the signing keys, the subscriptions, their states, the audit log.
    async fn export_settings(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<Portable>, StoreError> {
        let mut out = Vec::new();
        for r in client
            .query(
                "SELECT key, value FROM hookd_meta WHERE key LIKE 'key/%' ORDER BY key",
                &[],
            )
            .await?
        {
            let name: String = r.get(0);
            out.push(Portable::Key {
                name: name.trim_start_matches("key/").to_string(),
                value: B64.encode(r.get::<_, Vec<u8>>(1)),
            });
        }
        out.extend(
            self.stored_subscriptions()
                .await?
                .into_iter()
                .map(Portable::Subscription),
        );
        out.extend(
            stored_states(client)
                .await?
                .into_iter()
                .map(|(subscription, state)| Portable::State {
                    subscription,
                    state,
                }),
        );
        out.extend(super::audit::export_entries(client).await?);
        Ok(out)
    }

    /// Imports records in one transaction: what exists already is kept (events, unfinished
    /// deliveries) or replaced (keys, subscriptions, states).
    pub(super) async fn import_records(&self, records: Vec<Portable>) -> Result<(), StoreError> {
        // Finished deliveries of days without a partition go to the default one.
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut added = 0u64;
        for record in records {
            added += self.import_record(&tx, record).await?;
        }
        tx.commit().await?;
        self.unfinished.add(None, added);
        Ok(())
    }

    /// Imports one record, decoded ([`portable::decode`]); returns the unfinished deliveries
    /// it added.
    async fn import_record(
        &self,
        tx: &Transaction<'_>,
        record: Portable,
    ) -> Result<u64, StoreError> {
        match portable::decode(record)? {
            Imported::Key { name, value } => import_key(tx, &name, &value).await?,
            Imported::Subscription(sub) => import_subscription(tx, &sub).await?,
            Imported::State {
                subscription,
                state,
            } => {
                import_state(tx, &subscription, &state).await?;
                lock(&self.health).states.insert(subscription, state);
            }
            Imported::Event(event) => import_event(tx, &event).await?,
            Imported::Delivery(delivery) => return import_delivery(tx, &delivery).await,
            Imported::Audit(entry) => super::audit::import_entry(tx, &entry).await?,
        }
        Ok(0)
    }
}

/// The deliveries of the events `ids`, as records, by event.
async fn export_deliveries(
    client: &deadpool_postgres::Object,
    ids: &[String],
) -> Result<HashMap<String, Vec<Portable>>, StoreError> {
    let mut by_event: HashMap<String, Vec<Portable>> = HashMap::new();
    for r in client
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS}, leased, due_ms, history, owner FROM hookd_queue
                 WHERE id IN (SELECT unnest(deliveries) FROM hookd_events WHERE id = ANY($1)) ORDER BY id"
            ),
            &[&ids],
        )
        .await?
    {
        let mut d = delivery_of(&r, DeliveryState::Scheduled, Some(unms(r.get(11))), None);
        if r.get::<_, bool>(10) {
            // In flight: due again after the move.
            d.due_ms = Some(d.created_ms);
        }
        let attempts = attempts_of(&r.get::<_, Value>(12));
        by_event.entry(d.event_id.clone()).or_default().push(Portable::delivery(&d, &attempts));
    }
    for r in client
        .query(
            &format!("SELECT {DELIVERY_COLUMNS}, dead, finished_ms, history, owner FROM hookd_done
                 WHERE id IN (SELECT unnest(deliveries) FROM hookd_events WHERE id = ANY($1)) ORDER BY id"),
            &[&ids],
        )
        .await?
    {
        let d = delivery_of(&r, finished(r.get(10)), None, Some(unms(r.get(11))));
        let attempts = attempts_of(&r.get::<_, Value>(12));
        by_event.entry(d.event_id.clone()).or_default().push(Portable::delivery(&d, &attempts));
    }
    Ok(by_event)
}

/// An event's row (the export's columns) as its record.
fn event_record(r: &Row) -> Portable {
    Portable::Event {
        id: r.get(0),
        request_id: r.get(1),
        status: r.get(2),
        event_type: r.get(3),
        fingerprint: hex::encode(r.get::<_, Vec<u8>>(4)),
        created_ms: unms(r.get(5)),
        body: B64.encode(r.get::<_, Vec<u8>>(6)),
        deliveries: r.get(7),
        owner: r.get(8),
    }
}

async fn import_key(tx: &Transaction<'_>, name: &str, value: &[u8]) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO hookd_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&format!("key/{name}"), &value],
    )
    .await?;
    Ok(())
}

async fn import_subscription(
    tx: &Transaction<'_>,
    sub: &StoredSubscription,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO hookd_subscriptions (id, owner, toml, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, toml = excluded.toml, updated_ms = excluded.updated_ms",
        &[&sub.id, &sub.owner, &sub.toml, &ms(sub.created_ms), &ms(sub.updated_ms)],
    )
    .await?;
    Ok(())
}

async fn import_state(
    tx: &Transaction<'_>,
    subscription: &str,
    state: &SubscriptionState,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO hookd_subscription_state (subscription, paused, last_success_ms, last_failure_ms,
             consecutive_failures, last_error, failing_since_ms, disabled_ms, disabled_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (subscription) DO UPDATE SET paused = excluded.paused,
             last_success_ms = excluded.last_success_ms, last_failure_ms = excluded.last_failure_ms,
             consecutive_failures = excluded.consecutive_failures, last_error = excluded.last_error,
             failing_since_ms = excluded.failing_since_ms, disabled_ms = excluded.disabled_ms,
             disabled_reason = excluded.disabled_reason",
        &[
            &subscription,
            &state.paused,
            &state.last_success_ms.map(ms),
            &state.last_failure_ms.map(ms),
            &i32::try_from(state.consecutive_failures).unwrap_or(i32::MAX),
            &state.last_error,
            &state.failing_since_ms.map(ms),
            &state.disabled_ms.map(ms),
            &state.disabled_reason,
        ],
    )
    .await?;
    Ok(())
}

/// Imports an event, unless one of its id or `(request_id, status)` exists.
async fn import_event(tx: &Transaction<'_>, event: &ImportedEvent) -> Result<(), StoreError> {
    let deliveries: Vec<String> = event
        .deliveries
        .iter()
        .map(|&d| delivery_id_string(d))
        .collect();
    let (fingerprint, body): (&[u8], &[u8]) = (&event.fingerprint, &event.body);
    tx.execute(
        "INSERT INTO hookd_events (id, request_id, status, event_type, fingerprint, created_ms, body, deliveries, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        &[&event.id, &event.request_id, &event.status, &event.event_type, &fingerprint,
          &ms(event.created_ms), &body, &deliveries, &event.owner],
    )
    .await?;
    Ok(())
}

/// Imports a delivery: a finished one into `hookd_done` (finished when the record says, else
/// when its last attempt ended, else when it was created: never queued, so never sent again, as
/// on the embedded engine), another into the queue unless it is there. Returns the unfinished
/// deliveries it added.
async fn import_delivery(tx: &Transaction<'_>, d: &ImportedDelivery) -> Result<u64, StoreError> {
    let id = delivery_id_string(d.id);
    let history = Value::Array(d.attempts.iter().map(attempt_json).collect());
    let n = i32::try_from(d.attempts.len()).unwrap_or(i32::MAX);
    let (url, secret) = match &d.adhoc {
        Some(a) => (Some(a.url.as_str()), Some(a.secret.as_str())),
        None => (None, None),
    };
    let due_ms = match d.progress {
        Progress::Finished { state, finished_ms } => {
            let at = finished_ms
                .or_else(|| {
                    d.attempts
                        .iter()
                        .map(|a| a.started_ms + a.duration_ms)
                        .max()
                })
                .unwrap_or(d.created_ms);
            tx.execute(
                "INSERT INTO hookd_done (id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                     dead, attempts, created_ms, finished_ms, last_error, history, owner)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[&id, &d.event_id, &d.event_type, &d.subscription, &d.bucket, &url, &secret,
                  &(state == DeliveryState::Dead), &n, &ms(d.created_ms), &ms(at), &d.last_error, &history, &d.owner],
            )
            .await?;
            return Ok(0);
        }
        Progress::Unfinished { due_ms } => due_ms,
    };
    tx.execute(
        "INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
             attempts, created_ms, due_ms, last_error, history, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
        &[&id, &d.event_id, &d.event_type, &d.subscription, &d.bucket, &url, &secret,
          &n, &ms(d.created_ms), &ms(due_ms), &d.last_error, &history, &d.owner],
    )
    .await?;
    Ok(1)
}

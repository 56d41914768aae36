//! The store's operator-facing half: listing deliveries, requeueing them, pausing
//! subscriptions, and the per-subscription health the attempt outcomes keep up to date.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    decode, encode, keys, read_json, Attempt, Delivery, DeliveryState, Durable, Job, Store,
    StoreError, Writer,
};

/// Which deliveries a listing wants. Times are creation times in Unix milliseconds.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub subscription: Option<String>,
    pub event_type: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl DeliveryFilter {
    fn matches(&self, d: &Delivery) -> bool {
        self.state.is_none_or(|s| s == d.state)
            && self
                .subscription
                .as_ref()
                .is_none_or(|s| *s == d.subscription)
            && self.event_type.as_ref().is_none_or(|t| *t == d.event_type)
            && self.since_ms.is_none_or(|t| d.created_ms >= t)
            && self.until_ms.is_none_or(|t| d.created_ms < t)
    }
}

/// A subscription's pause switch and health, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub paused: bool,
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("no delivery {0}")]
    NotFound(String),
    #[error("delivery {0} is in flight; retry it once the attempt has finished")]
    InFlight(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Subscriptions' stored state, kept in memory; the writer writes it back (see
/// [`Writer::update_health`]).
#[derive(Debug, Default)]
pub(crate) struct Health {
    states: HashMap<String, SubscriptionState>,
    /// When each record was last written.
    written: HashMap<String, Instant>,
    /// Records changed since they were last written.
    dirty: HashSet<String>,
}

impl Health {
    /// Reads every stored record.
    pub(super) fn load(tree: &sled::Tree) -> Result<Health, StoreError> {
        let mut states = HashMap::new();
        for entry in tree.scan_prefix(keys::SUBSCRIPTION) {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(&key[keys::SUBSCRIPTION.len()..]).to_string();
            states.insert(id, decode(&key, &value)?);
        }
        Ok(Health {
            states,
            ..Health::default()
        })
    }
}

/// How often a subscription's health record is written at most.
const HEALTH_WRITE_EVERY: Duration = Duration::from_secs(1);

/// Records a listing examines at most per call: a filter that matches little returns a short
/// page with a cursor rather than walking the whole store.
const LIST_SCAN_LIMIT: usize = 10_000;
/// Finished deliveries a bulk requeue examines per writer job.
const BULK_CHUNK: usize = 1000;

/// The smallest delivery id created at `ms`: ids are `dlv_` + a ULID, which sorts by time.
fn id_at(ms: u64) -> String {
    format!("dlv_{}", ulid::Ulid::from_parts(ms, 0))
}

/// For operations whose work only fails with a store error.
fn into_store_error(e: RequeueError) -> StoreError {
    match e {
        RequeueError::Store(e) => e,
        other => StoreError::Sled(sled::Error::Unsupported(other.to_string())),
    }
}

impl Store {
    pub(super) async fn exec_durable<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Writer) -> Result<T, RequeueError> + Send + 'static,
    ) -> Result<T, RequeueError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Exec(Box::new(
            move |writer: &Writer, durable: &mut Vec<Durable>| match work(writer) {
                Ok(value) => durable.push(Box::new(move |flushed| {
                    let _ = tx.send(flushed.map(|()| value).map_err(RequeueError::from));
                })),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
        ));
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Deliveries matching `filter`, newest first, after `cursor` (the last id of the previous
    /// page). Returns the page and the cursor of the next one, if there may be more.
    pub fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let low = keys::join(&[
            keys::DELIVERY,
            id_at(filter.since_ms.unwrap_or(0)).as_bytes(),
        ]);
        let mut high = match filter.until_ms {
            Some(until) => keys::join(&[keys::DELIVERY, id_at(until).as_bytes()]),
            None => keys::prefix_end(keys::DELIVERY),
        };
        if let Some(cursor) = cursor {
            high = high.min(keys::join(&[keys::DELIVERY, cursor.as_bytes()]));
        }
        let mut page = Vec::new();
        let mut examined = 0;
        if low >= high {
            return Ok((page, None));
        }
        for entry in self.tree.range(low..high).rev() {
            let (key, value) = entry?;
            let delivery: Delivery = decode(&key, &value)?;
            examined += 1;
            let id = delivery.id.clone();
            if filter.matches(&delivery) {
                page.push(delivery);
            }
            if page.len() >= limit || examined >= LIST_SCAN_LIMIT {
                return Ok((page, Some(id)));
            }
        }
        Ok((page, None))
    }

    /// Puts an in-flight delivery back in the queue, due at `due_ms`, without an attempt.
    pub async fn release(&self, delivery_id: &str, due_ms: u64) -> Result<(), StoreError> {
        let id = delivery_id.to_string();
        let result = self
            .exec_durable(move |w| {
                let record_key = keys::join(&[keys::DELIVERY, id.as_bytes()]);
                let Some(mut delivery) = read_json::<Delivery>(&w.tree, &record_key)? else {
                    return Ok(());
                };
                let mut batch = sled::Batch::default();
                let lease = keys::join(&[keys::LEASE, id.as_bytes()]);
                let leased = i64::from(w.tree.contains_key(&lease).map_err(StoreError::from)?);
                batch.remove(lease);
                delivery.state = DeliveryState::Scheduled;
                delivery.due_ms = Some(due_ms);
                batch.insert(keys::queue(&delivery.bucket, due_ms, &id), &[]);
                batch.insert(record_key, encode(&delivery));
                w.tree.apply_batch(batch).map_err(StoreError::from)?;
                w.counters.add(1, -leased);
                Ok(())
            })
            .await;
        result.map_err(into_store_error)
    }

    /// Every subscription's stored state (paused, health), by id.
    pub fn subscription_states(&self) -> Result<HashMap<String, SubscriptionState>, StoreError> {
        Ok(self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .states
            .clone())
    }

    /// Pauses or resumes a subscription; durable. Queued deliveries wait while it is paused.
    pub async fn set_paused(&self, subscription: &str, paused: bool) -> Result<(), StoreError> {
        let id = subscription.to_string();
        let result = self
            .exec_durable(move |w| {
                let mut health = w.health.lock().unwrap_or_else(|e| e.into_inner());
                let state = health.states.entry(id.clone()).or_default();
                state.paused = paused;
                let key = keys::join(&[keys::SUBSCRIPTION, id.as_bytes()]);
                w.tree
                    .insert(key, encode(&*state))
                    .map_err(StoreError::from)?;
                health.dirty.remove(&id);
                Ok(())
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(RequeueError::Store(e)) => Err(e),
            Err(other) => Err(StoreError::Sled(sled::Error::Unsupported(
                other.to_string(),
            ))),
        }
    }

    /// Makes one delivery due now: a scheduled one is brought forward, a delivered or dead one
    /// gets one more attempt. Returns the state it had.
    pub async fn requeue(
        &self,
        delivery_id: &str,
        now_ms: u64,
    ) -> Result<DeliveryState, RequeueError> {
        let id = delivery_id.to_string();
        self.exec_durable(move |w| w.requeue(&id, now_ms)).await
    }

    /// Requeues the dead deliveries that finished at or after `since_ms`, of one subscription or
    /// of all. Returns how many.
    pub async fn requeue_dead(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError> {
        let mut from = keys::timed(keys::FINISHED, since_ms, "");
        let mut total = 0;
        loop {
            let sub = subscription.map(str::to_string);
            let start = from.clone();
            let (n, next) = self
                .exec_durable(move |w| w.requeue_dead_chunk(sub.as_deref(), start, now_ms))
                .await?;
            total += n;
            match next {
                Some(next) => from = next,
                None => return Ok(total),
            }
        }
    }
}

impl Writer {
    /// Folds an attempt into its subscription's health record.
    /// Folds an attempt into its subscription's health. The record is written to disk at most
    /// once a second per subscription (the rest at the end of a later round, or on close):
    /// health is for people, and rewriting it on every attempt cost a tenth of the writer's
    /// time.
    pub(super) fn update_health(
        &self,
        batch: &mut sled::Batch,
        subscription: &str,
        attempt: &Attempt,
        now_ms: u64,
    ) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let state = health.states.entry(subscription.to_string()).or_default();
        if attempt.outcome == "success" {
            state.last_success_ms = Some(now_ms);
            state.consecutive_failures = 0;
        } else {
            state.last_failure_ms = Some(now_ms);
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_error = attempt.error.clone();
        }
        let encoded = encode(&*state);
        let due = health
            .written
            .get(subscription)
            .is_none_or(|at| at.elapsed() >= HEALTH_WRITE_EVERY);
        if due {
            batch.insert(
                keys::join(&[keys::SUBSCRIPTION, subscription.as_bytes()]),
                encoded,
            );
            health
                .written
                .insert(subscription.to_string(), Instant::now());
            health.dirty.remove(subscription);
        } else {
            health.dirty.insert(subscription.to_string());
        }
    }

    /// Writes the health records changed since their last write; `all` also writes those
    /// written less than a second ago (on close).
    pub(super) fn write_health(&self, all: bool) -> Result<(), StoreError> {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if health.dirty.is_empty() {
            return Ok(());
        }
        let Health {
            states,
            written,
            dirty,
        } = &mut *health;
        let mut batch = sled::Batch::default();
        let mut writes = 0;
        dirty.retain(|id| {
            let due = all
                || written
                    .get(id)
                    .is_none_or(|at| at.elapsed() >= HEALTH_WRITE_EVERY);
            if due {
                if let Some(state) = states.get(id) {
                    batch.insert(
                        keys::join(&[keys::SUBSCRIPTION, id.as_bytes()]),
                        encode(state),
                    );
                    writes += 1;
                }
                written.insert(id.clone(), Instant::now());
            }
            !due
        });
        if writes > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }

    fn requeue(&self, id: &str, now_ms: u64) -> Result<DeliveryState, RequeueError> {
        let record_key = keys::join(&[keys::DELIVERY, id.as_bytes()]);
        let Some(mut delivery) = read_json::<Delivery>(&self.tree, &record_key)? else {
            return Err(RequeueError::NotFound(id.to_string()));
        };
        let was = delivery.state;
        let mut batch = sled::Batch::default();
        match was {
            DeliveryState::InFlight => return Err(RequeueError::InFlight(id.to_string())),
            DeliveryState::Scheduled => {
                if let Some(due) = delivery.due_ms {
                    batch.remove(keys::queue(&delivery.bucket, due, id));
                }
            }
            DeliveryState::Delivered | DeliveryState::Dead => {
                if let Some(finished) = delivery.finished_ms {
                    batch.remove(keys::timed(keys::FINISHED, finished, id));
                }
                batch.insert(keys::join(&[keys::PENDING, id.as_bytes()]), &[]);
                delivery.finished_ms = None;
            }
        }
        delivery.state = DeliveryState::Scheduled;
        delivery.due_ms = Some(now_ms);
        batch.insert(keys::queue(&delivery.bucket, now_ms, id), &[]);
        batch.insert(record_key, encode(&delivery));
        self.tree.apply_batch(batch).map_err(StoreError::from)?;
        if matches!(was, DeliveryState::Delivered | DeliveryState::Dead) {
            self.counters.add(1, 0);
        }
        Ok(was)
    }

    /// Requeues dead deliveries among up to [`BULK_CHUNK`] finished ones from `from` on.
    /// Returns how many, and where to continue.
    fn requeue_dead_chunk(
        &self,
        subscription: Option<&str>,
        from: Vec<u8>,
        now_ms: u64,
    ) -> Result<(usize, Option<Vec<u8>>), RequeueError> {
        let mut ids = Vec::new();
        let mut next = None;
        for (i, entry) in self
            .tree
            .range(from..keys::prefix_end(keys::FINISHED))
            .enumerate()
        {
            let (key, _) = entry.map_err(StoreError::from)?;
            if i >= BULK_CHUNK {
                next = Some(key.to_vec());
                break;
            }
            if let Some((_, id)) = keys::parse_timed(keys::FINISHED, &key) {
                ids.push(id);
            }
        }
        let mut n = 0;
        for id in ids {
            let record_key = keys::join(&[keys::DELIVERY, id.as_bytes()]);
            let Some(d) = read_json::<Delivery>(&self.tree, &record_key)? else {
                continue;
            };
            let wanted =
                d.state == DeliveryState::Dead && subscription.is_none_or(|s| s == d.subscription);
            if wanted {
                self.requeue(&id, now_ms)?;
                n += 1;
            }
        }
        Ok((n, next))
    }
}

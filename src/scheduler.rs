//! The scheduler: takes due deliveries from the on-disk index and runs their attempts.
//!
//! Each pass walks the buckets (a subscription, or one per-request host) that have queued
//! deliveries and claims from each at most as many as it has free slots, within the global
//! limit. A bucket that is full is skipped, so a receiver that hangs holds only its own slots.
//! Memory depends on the slots, never on how many deliveries wait. Between passes the loop
//! sleeps until the earliest due time it saw, or until woken: by ingest (new work), or by a
//! finished attempt (a free slot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::Shared;
use crate::config::ADHOC_SUBSCRIPTION;
use crate::delivery::retry::{self, RetryRules};
use crate::delivery::{AttemptRequest, AttemptResult, Deliverer, Outcome};
use crate::signing::SigningKeys;
use crate::store::{Attempt, Claimed, Next};

/// The longest the loop sleeps without looking at the index again; also the period of its
/// heartbeat, which the systemd watchdog checks.
pub const MAX_IDLE: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch: the time base of the on-disk index.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

pub struct Scheduler {
    shared: Arc<Shared>,
    deliverer: Deliverer,
    /// Global limit on attempts in flight.
    global: Arc<Semaphore>,
    /// Attempts in flight per bucket; entries are removed when they reach zero.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    /// Every attempt task, so that shutdown can wait for them.
    tracker: TaskTracker,
}

impl Scheduler {
    pub fn new(shared: Arc<Shared>, deliverer: Deliverer) -> Scheduler {
        let max = shared.config().delivery.max_in_flight;
        Scheduler {
            shared,
            deliverer,
            global: Arc::new(Semaphore::new(max)),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs passes until `stop` is cancelled, then waits up to `grace` for attempts in flight.
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        match self.shared.store.recover_in_flight(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deliveries = n,
                "requeued deliveries that were in flight when hookd stopped"
            ),
            Err(e) => tracing::error!(error = %e, "cannot requeue deliveries that were in flight"),
        }
        while !stop.is_cancelled() {
            self.shared
                .scheduler_heartbeat
                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
            let sleep = match self.pass().await {
                Ok(next_due) => next_due.map_or(MAX_IDLE, |due| {
                    Duration::from_millis(due.saturating_sub(now_ms()))
                }),
                Err(e) => {
                    tracing::error!(error = %e, "scheduler pass failed; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(sleep.min(MAX_IDLE)) => {}
                () = self.shared.wake.notified() => {}
                () = stop.cancelled() => {}
            }
        }
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            tracing::info!(attempts = in_flight, grace = ?grace, "waiting for attempts in flight");
        }
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(attempts = self.tracker.len(), "attempts still in flight at the end of the grace period; they will be retried after the restart");
        }
    }

    /// One pass over the buckets. Returns the earliest due time among buckets with free slots.
    async fn pass(&self) -> anyhow::Result<Option<u64>> {
        let config = self.shared.config();
        let mut earliest: Option<u64> = None;
        for bucket in self.shared.store.buckets()? {
            let subscription = bucket_subscription(&bucket);
            if self.shared.is_paused(subscription) {
                continue;
            }
            if subscription != ADHOC_SUBSCRIPTION && config.subscription(subscription).is_none() {
                // Its subscription was removed from the config: the deliveries wait, in case
                // it comes back (see docs/configuration.md).
                continue;
            }
            let (busy, adhoc_busy) = {
                let in_flight = self.lock_in_flight();
                let adhoc: usize = in_flight
                    .iter()
                    .filter(|(b, _)| is_adhoc(b))
                    .map(|(_, n)| n)
                    .sum();
                (in_flight.get(&bucket).copied().unwrap_or(0), adhoc)
            };
            let free = match bucket_subscription(&bucket) {
                ADHOC_SUBSCRIPTION => config
                    .delivery
                    .max_in_flight_per_subscription
                    .saturating_sub(busy)
                    .min(
                        config
                            .delivery
                            .max_in_flight_adhoc
                            .saturating_sub(adhoc_busy),
                    ),
                id => config
                    .subscription(id)
                    .map_or(config.delivery.max_in_flight_per_subscription, |s| {
                        s.max_in_flight
                    })
                    .saturating_sub(busy),
            }
            .min(self.global.available_permits());
            if free == 0 {
                continue;
            }
            let (claimed, next_due) = self.shared.store.claim_due(&bucket, now_ms(), free).await?;
            for claim in claimed {
                // Only this loop takes permits, and it checked `available_permits` above.
                let Ok(permit) = self.global.clone().try_acquire_owned() else {
                    break;
                };
                *self.lock_in_flight().entry(bucket.clone()).or_insert(0) += 1;
                let task = AttemptTask {
                    shared: self.shared.clone(),
                    deliverer: self.deliverer.clone(),
                    in_flight: self.in_flight.clone(),
                    _permit: permit,
                };
                self.tracker.spawn(task.run(claim));
            }
            if let Some(due) = next_due {
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
            }
        }
        Ok(earliest)
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // The map holds plain counters: a panic elsewhere cannot leave it inconsistent.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn is_adhoc(bucket: &str) -> bool {
    bucket.starts_with("adhoc/")
}

/// The subscription a bucket belongs to: `adhoc/<host>` buckets are per-request targets.
fn bucket_subscription(bucket: &str) -> &str {
    if is_adhoc(bucket) {
        ADHOC_SUBSCRIPTION
    } else {
        bucket
    }
}

/// The concurrency bucket of a per-request URL: one per host and port.
pub fn adhoc_bucket(url: &reqwest::Url) -> String {
    format!(
        "adhoc/{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// One attempt of one claimed delivery, run as its own task.
struct AttemptTask {
    shared: Arc<Shared>,
    deliverer: Deliverer,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    /// Held for the task's life: a slot of the global limit.
    _permit: OwnedSemaphorePermit,
}

impl AttemptTask {
    async fn run(self, claim: Claimed) {
        let Claimed { delivery, body } = claim;
        let number = delivery.attempts + 1;
        let started_ms = now_ms();
        let config = self.shared.config();
        // Resolve the target now: a queued delivery follows its subscription's current URL,
        // secret and schedule.
        let target = match &delivery.adhoc {
            Some(adhoc) => match reqwest::Url::parse(&adhoc.url) {
                Ok(url) => {
                    let keys = SigningKeys {
                        abstrakt: Some(adhoc.secret.clone()),
                        standard: Vec::new(),
                    };
                    Ok((url, keys, config.delivery.policy.clone()))
                }
                Err(e) => Err(format!("invalid webhook_url: {e}")),
            },
            None => match config.subscription(&delivery.subscription) {
                Some(s) => Ok((s.url.clone(), s.signing_keys(started_ms), s.policy.clone())),
                None => {
                    // Removed by a reload after the claim: the delivery waits for the
                    // subscription to come back, without spending an attempt. Due at once:
                    // the loop skips its bucket until the subscription is configured again.
                    self.release(&delivery.id, &delivery.bucket, started_ms)
                        .await;
                    return;
                }
            },
        };
        let label = if delivery.adhoc.is_some() {
            ADHOC_SUBSCRIPTION
        } else {
            delivery.subscription.as_str()
        };
        let (result, schedule) = match target {
            Ok((url, keys, policy)) => {
                let request = AttemptRequest {
                    url: &url,
                    keys: &keys,
                    delivery_id: &delivery.id,
                    event_type: &delivery.event_type,
                    attempt: number,
                    body,
                    timeout: policy.timeout,
                };
                (self.deliverer.attempt(request).await, policy.retry_schedule)
            }
            Err(reason) => (
                AttemptResult {
                    outcome: Outcome::Other,
                    status_code: None,
                    retry_after: None,
                    error: Some(reason),
                    response_excerpt: None,
                    duration: Duration::ZERO,
                    blocked: false,
                },
                Vec::new(),
            ),
        };
        let finished_ms = now_ms();
        let metrics = &self.shared.metrics;
        metrics
            .delivery_attempts
            .with_label_values(&[label, result.outcome.as_str()])
            .inc();
        metrics
            .attempt_duration
            .with_label_values(&[label])
            .observe(result.duration.as_secs_f64());

        let next = if result.outcome == Outcome::Success {
            Next::Delivered
        } else if result.blocked {
            // Retrying cannot help: the address stays refused until the operator opens it.
            Next::Dead
        } else {
            let retry_after = result
                .retry_after
                .as_deref()
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            let rules = RetryRules {
                retry_after_cap: config.delivery.retry_after_cap,
                jitter: config.delivery.jitter,
            };
            match retry::next_delay(&schedule, number, retry_after, rules, rand::random::<f64>()) {
                Some(delay) => Next::RetryAt(
                    finished_ms + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2),
                ),
                None => Next::Dead,
            }
        };
        let attempt = Attempt {
            number,
            started_ms,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            outcome: result.outcome.as_str().to_string(),
            status_code: result.status_code,
            error: result.error.clone(),
            response_excerpt: result.response_excerpt.clone(),
        };
        match next {
            Next::Delivered => {
                metrics
                    .deliveries
                    .with_label_values(&[label, "delivered"])
                    .inc();
                let lag = finished_ms.saturating_sub(delivery.created_ms) as f64 / 1000.0;
                metrics
                    .delivery_lag
                    .with_label_values(&[label])
                    .observe(lag);
                tracing::debug!(
                    delivery_id = %delivery.id,
                    subscription = label,
                    attempt = number,
                    outcome = "success",
                    status = result.status_code,
                    duration_ms = attempt.duration_ms,
                    "delivered"
                );
            }
            Next::RetryAt(due) => {
                metrics.retries_scheduled.with_label_values(&[label]).inc();
                tracing::warn!(
                    delivery_id = %delivery.id,
                    subscription = label,
                    attempt = number,
                    outcome = result.outcome.as_str(),
                    status = result.status_code,
                    error = result.error.as_deref(),
                    duration_ms = attempt.duration_ms,
                    retry_in_ms = due.saturating_sub(finished_ms),
                    "attempt failed; retry scheduled"
                );
            }
            Next::Dead => {
                metrics.deliveries.with_label_values(&[label, "dead"]).inc();
                tracing::error!(
                    delivery_id = %delivery.id,
                    subscription = label,
                    attempt = number,
                    outcome = result.outcome.as_str(),
                    status = result.status_code,
                    error = result.error.as_deref(),
                    "delivery dead after its last attempt"
                );
            }
        }
        if let Err(e) = self
            .shared
            .store
            .record_outcome(&delivery.id, attempt, next, finished_ms)
            .await
        {
            tracing::error!(delivery_id = %delivery.id, error = %e, "cannot record attempt outcome; the delivery will be retried after a restart");
        }
        self.free_slot(&delivery.bucket);
    }

    /// Puts a claimed delivery back in the queue without an attempt.
    async fn release(self, delivery_id: &str, bucket: &str, due_ms: u64) {
        if let Err(e) = self.shared.store.release(delivery_id, due_ms).await {
            tracing::error!(delivery_id, error = %e, "cannot put a delivery back in the queue; it will be retried after a restart");
        }
        self.free_slot(bucket);
    }

    /// Gives the bucket's and the global slot back, then wakes the loop so that its next pass
    /// sees them.
    fn free_slot(self, bucket: &str) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = in_flight.get_mut(bucket) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    in_flight.remove(bucket);
                }
            }
        }
        drop(self._permit);
        self.shared.wake.notify_one();
    }
}

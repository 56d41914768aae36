//! The scheduler: takes due deliveries from the store and runs their attempts.
//!
//! Each turn asks the store for every delivery that may run now ([`QueueStore::claim`]): the
//! store hands them out earliest due first across buckets, within the limits the scheduler
//! gives it ([`limits`]), at O(log n) per delivery whatever the number of buckets. Each claimed
//! delivery runs as its own task. Between turns the loop sleeps until the earliest due time the
//! store reported, or until woken: by ingest (new work), or by a finished attempt (a free
//! slot). A store may hand a delivered attempt's slot straight on to its subscription's next
//! due delivery, in the write that records the outcome
//! ([`QueueStore::record_outcome_and_follow`]; PostgreSQL does, where a claim costs a round
//! trip and a lock; the embedded engines do from their index in memory, as soon as the outcome
//! is queued for their writer): the attempt's task then runs that one, and the loop is not
//! woken.
//!
//! [`QueueStore::claim`]: crate::store::QueueStore::claim
//! [`QueueStore::record_outcome_and_follow`]: crate::store::QueueStore::record_outcome_and_follow

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, ADHOC_SUBSCRIPTION};
use crate::delivery::retry::{self, RetryRules};
use crate::delivery::{AttemptRequest, AttemptResult, Deliverer};
use crate::metrics::Metrics;
use crate::settings::{Control, Settings};
use crate::signing::SigningKeys;
use crate::store::Outcome;
use crate::store::{Attempt, Claimed, Delivery, Next, QueueStore};

/// The longest the loop sleeps without asking the store again; also the period of its
/// heartbeat, which the systemd watchdog checks.
pub const MAX_IDLE: Duration = Duration::from_secs(1);

/// How long a delivery whose attempt panicked waits before it is due again: a panic that
/// repeats (a bug met by this delivery) must not spin.
pub const PANIC_RETRY: Duration = Duration::from_secs(60);

/// Milliseconds since the Unix epoch: the time base of the store.
pub fn now_ms() -> u64 {
    crate::clock::system_now_ms()
}

/// What the scheduler and its attempt tasks use of the daemon: the queue side of the store, the
/// clock, the metrics, the settings, the wake-up and the heartbeat the watchdog reads. Built by
/// [`crate::state::Shared::scheduler_deps`].
pub struct SchedulerDeps {
    /// Disabling a subscription and operator events, done by the daemon off the attempt path.
    pub control: tokio::sync::mpsc::UnboundedSender<Control>,
    pub queue: Arc<dyn QueueStore>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub wake: Arc<Notify>,
    pub heartbeat: Arc<AtomicU64>,
    /// A span for each attempt, when `[traces]` exports them.
    pub traces: Arc<crate::traces::Traces>,
    /// The attempts sending now: an erased delivery is not sent ([`crate::erasure`]).
    pub sending: Arc<crate::erasure::Sending>,
}

impl SchedulerDeps {
    fn apply_limits(&self) {
        let now = self.clock.now_ms();
        self.queue.set_limits(self.settings.limits(now));
        self.metrics.set_breakers(&self.settings.gates(now));
    }
}

pub struct Scheduler {
    deps: Arc<SchedulerDeps>,
    deliverer: Deliverer,
    /// Every attempt task, so that shutdown can wait for them.
    tracker: TaskTracker,
    /// Cancelled when the daemon stops: a finished attempt then takes no next delivery.
    stop: CancellationToken,
}

impl Scheduler {
    pub fn new(deps: SchedulerDeps, deliverer: Deliverer) -> Scheduler {
        Scheduler {
            deps: Arc::new(deps),
            deliverer,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Runs turns until `stop` is cancelled, then waits up to `grace` for attempts in flight.
    pub async fn run(mut self, stop: CancellationToken, grace: Duration) {
        self.stop = stop.clone();
        self.deps.apply_limits();
        while !stop.is_cancelled() {
            let now = self.deps.clock.now_ms();
            self.deps
                .heartbeat
                .store(now, std::sync::atomic::Ordering::Relaxed);
            let sleep = match self.run_once().await {
                Ok(next_due) => {
                    let now = self.deps.clock.now_ms();
                    // A breaker waiting for its next probe: look again when it is due.
                    let probe = if self.deps.settings.breaker_open(now) {
                        self.deps.settings.next_probe_ms(now)
                    } else {
                        None
                    };
                    [next_due, probe]
                        .into_iter()
                        .flatten()
                        .min()
                        .map_or(MAX_IDLE, |due| {
                            Duration::from_millis(due.saturating_sub(now))
                        })
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler turn failed; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(sleep.min(MAX_IDLE)) => {}
                () = self.deps.wake.notified() => {}
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

    /// One turn: claims what may run now and starts an attempt task for each. Returns the
    /// earliest due time of what is left, if anything may run.
    pub async fn run_once(&self) -> anyhow::Result<Option<u64>> {
        let now = self.deps.clock.now_ms();
        if self.deps.settings.breaker_open(now) {
            // An open breaker's next probe is a matter of time.
            self.deps.apply_limits();
        }
        let started = std::time::Instant::now();
        let (claimed, next_due) = self.deps.queue.claim(now, usize::MAX).await?;
        self.deps
            .metrics
            .store_claim_duration
            .with_label_values::<&str>(&[])
            .observe(started.elapsed().as_secs_f64());
        for claim in claimed {
            let task = AttemptTask {
                deps: self.deps.clone(),
                deliverer: self.deliverer.clone(),
                stop: self.stop.clone(),
            };
            self.tracker.spawn(task.run(claim));
        }
        Ok(next_due)
    }
}

/// What follows an attempt: delivered on success, dead when the address is refused or the
/// schedule is spent, else a retry at the time the schedule (or `Retry-After`) says. Pure:
/// the caller passes the time and the random draw.
pub fn decide_next(
    result: &AttemptResult,
    schedule: &[Duration],
    number: u32,
    rules: RetryRules,
    finished_ms: u64,
    now: SystemTime,
    draw: f64,
) -> Next {
    if result.outcome == Outcome::Success {
        return Next::Delivered;
    }
    if result.blocked {
        // Retrying cannot help: the address stays refused until the operator opens it.
        return Next::Dead;
    }
    let retry_after = result
        .retry_after
        .as_deref()
        .and_then(|v| retry::parse_retry_after(v, now));
    match retry::next_delay(schedule, number, retry_after, rules, draw) {
        Some(delay) => Next::RetryAt(
            finished_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2)),
        ),
        None => Next::Dead,
    }
}

/// One attempt of one claimed delivery, run as its own task; and the next one in its slot,
/// when the store hands one on with the outcome ([`QueueStore::record_outcome_and_follow`]).
struct AttemptTask {
    deps: Arc<SchedulerDeps>,
    deliverer: Deliverer,
    stop: CancellationToken,
}

/// Where an attempt goes, resolved when it starts: a queued delivery follows its subscription's
/// current URL, secret and schedule.
enum Resolved {
    Send {
        url: reqwest::Url,
        keys: SigningKeys,
        policy: crate::config::DeliveryPolicy,
        /// The subscription's custom headers (none for per-request URLs).
        headers: Vec<crate::config::CustomHeader>,
    },
    /// The per-request URL no longer parses: the attempt fails without a request.
    Invalid(String),
    /// Its subscription was removed by a reload after the claim.
    Gone,
    /// Its subscription is not the one it was made for: a subscription of the same id now
    /// belongs to another owner. It ends dead without a request.
    Ended(String),
}

impl AttemptTask {
    async fn run(self, claim: Claimed) {
        let mut claim = claim;
        loop {
            let id = claim.delivery.id.clone();
            let recorded = AtomicBool::new(false);
            let attempt = self.attempt(claim, &recorded);
            match contain_panic(&self.deps, &id, &recorded, attempt).await {
                Some(Some(next)) => claim = next,
                Some(None) | None => break,
            }
        }
        self.free_slot();
    }

    /// One attempt; returns the delivery the store handed on in its slot, if any. Sets
    /// `recorded` once the store has the outcome (and so the slot back).
    async fn attempt(&self, claim: Claimed, recorded: &AtomicBool) -> Option<Claimed> {
        let Claimed { delivery, body } = claim;
        let number = delivery.attempts + 1;
        let started_ms = self.deps.clock.now_ms();
        if delivery.adhoc.is_none() && self.deps.settings.held(&delivery.subscription, started_ms) {
            // Claimed under limits older than a pause, a disabling or an open breaker that came
            // meanwhile (a claim that began just before it): back to the queue, no attempt.
            self.release(&delivery.id, started_ms).await;
            recorded.store(true, Ordering::SeqCst);
            return None;
        }
        let config = self.deps.settings.config();
        let (mut result, schedule, span) = self
            .send(&config, &delivery, number, started_ms, body)
            .await?;
        let finished_ms = self.deps.clock.now_ms();
        let next = next_step(&config, &result, &schedule, number, finished_ms);
        let attempt = Attempt {
            number,
            started_ms,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            outcome: result.outcome,
            status_code: result.status_code,
            error: result.error.clone(),
            response_excerpt: result.response_excerpt.clone(),
            // Nothing after this reads the result's headers: moved, not copied.
            response_headers: std::mem::take(&mut result.response_headers),
        };
        self.observe(&delivery, &attempt, &result, next, finished_ms);
        span.end(&result, next);
        let error = attempt.error.clone();
        // The breaker first: a failure that opens or disables it must hold the limits back
        // before the outcome makes the delivery due again, or the store would hand it (or the
        // next one) on in this slot at once.
        if delivery.adhoc.is_none() {
            self.breaker(&delivery.subscription, &result, error.as_ref(), finished_ms);
        }
        let following = self
            .record(&delivery.id, attempt, next, finished_ms, recorded)
            .await;
        if next == Next::Dead {
            let _ = self.deps.control.send(Control::Dead {
                delivery: Box::new(delivery.clone()),
                attempts: number,
                error,
            });
        }
        following
    }

    /// Resolves where the delivery goes and sends its attempt there: the result, the retry
    /// schedule that follows from it, and the attempt's span. `None`: the attempt ends without
    /// an outcome to record (the delivery was released back to the queue, dropped for an
    /// erased owner, or ended dead).
    async fn send(
        &self,
        config: &Config,
        delivery: &Delivery,
        number: u32,
        started_ms: u64,
        body: bytes::Bytes,
    ) -> Option<(AttemptResult, Vec<Duration>, crate::traces::AttemptSpan)> {
        match resolve(config, delivery, started_ms) {
            Resolved::Send {
                url,
                keys,
                policy,
                headers,
            } => {
                let Some(_sending) = self.deps.sending.start(&delivery.id) else {
                    // Its owner was erased since the claim: nothing is sent or recorded, and
                    // the slot is freed (the store has no record left to put back).
                    self.release(&delivery.id, started_ms).await;
                    return None;
                };
                let span = self.deps.traces.attempt(delivery, number, &url);
                let request = AttemptRequest {
                    traceparent: span.traceparent.as_deref(),
                    url: &url,
                    keys: &keys,
                    headers: &headers,
                    delivery_id: &delivery.id,
                    event_type: &delivery.event_type,
                    attempt: number,
                    body,
                    timeout: policy.timeout,
                };
                let result = self.deliverer.attempt(request).await;
                Some((result, policy.retry_schedule, span))
            }
            Resolved::Invalid(reason) => Some((
                failed_without_request(reason),
                Vec::new(),
                crate::traces::AttemptSpan::default(),
            )),
            Resolved::Gone => {
                // The delivery waits for the subscription to come back, without spending an
                // attempt: the store holds its bucket back until it is configured again.
                self.release(&delivery.id, started_ms).await;
                None
            }
            Resolved::Ended(reason) => {
                self.end(delivery, number, started_ms, reason).await;
                None
            }
        }
    }

    /// Records the attempt's outcome and sets `recorded`; returns the delivery the store handed
    /// on in the freed slot, if any (none once the daemon is stopping).
    async fn record(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        finished_ms: u64,
        recorded: &AtomicBool,
    ) -> Option<Claimed> {
        let queue = &self.deps.queue;
        let outcome = if self.stop.is_cancelled() {
            queue
                .record_outcome(delivery_id, attempt, next, finished_ms)
                .await
                .map(|()| None)
        } else {
            queue
                .record_outcome_and_follow(delivery_id, attempt, next, finished_ms)
                .await
        };
        recorded.store(true, Ordering::SeqCst);
        match outcome {
            Ok(following) => following,
            Err(e) => {
                tracing::error!(delivery_id = %delivery_id, error = %e, "cannot record attempt outcome; the delivery will be retried after a restart");
                None
            }
        }
    }

    /// Folds the outcome into the subscription's breaker: a change of gate applies to the
    /// limits at once; a disabling takes effect here at once and durably through the daemon.
    fn breaker(
        &self,
        subscription: &str,
        result: &AttemptResult,
        error: Option<&String>,
        at_ms: u64,
    ) {
        let settings = &self.deps.settings;
        let observed = settings.observe(subscription, result.outcome, error, at_ms);
        if let Some(reason) = observed.disable {
            tracing::warn!(
                subscription,
                reason = reason.as_str(),
                "subscription disabled by its circuit breaker; its deliveries wait until it is enabled"
            );
            settings.disable_pending(subscription, at_ms, reason.clone());
            self.deps.apply_limits();
            let _ = self.deps.control.send(Control::Disabled {
                subscription: subscription.to_string(),
                reason,
            });
            return;
        }
        if observed.changed {
            self.deps.apply_limits();
        }
        if observed.recovered {
            tracing::info!(subscription, "circuit breaker closed: a probe succeeded");
            let _ = self.deps.control.send(Control::Recovered {
                subscription: subscription.to_string(),
            });
        }
    }

    /// Metrics and the log line of one attempt.
    fn observe(
        &self,
        delivery: &Delivery,
        attempt: &Attempt,
        result: &AttemptResult,
        next: Next,
        finished_ms: u64,
    ) {
        let label = if delivery.adhoc.is_some() {
            ADHOC_SUBSCRIPTION
        } else {
            delivery.subscription.as_str()
        };
        let metrics = &self.deps.metrics;
        metrics
            .delivery_attempts
            .with_label_values(&[label, result.outcome.as_str()])
            .inc();
        metrics
            .attempt_duration
            .with_label_values(&[label])
            .observe(result.duration.as_secs_f64());
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
                    attempt = attempt.number,
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
                    attempt = attempt.number,
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
                    attempt = attempt.number,
                    outcome = result.outcome.as_str(),
                    status = result.status_code,
                    error = result.error.as_deref(),
                    "delivery dead after its last attempt"
                );
            }
        }
    }

    /// Ends a delivery dead without a request (its error says why), and without counting
    /// against the subscription now under its id, whose breaker it is no business of.
    async fn end(&self, delivery: &Delivery, number: u32, at_ms: u64, reason: String) {
        tracing::warn!(
            delivery_id = %delivery.id,
            subscription = delivery.subscription.as_str(),
            reason = reason.as_str(),
            "delivery ended without a request"
        );
        let attempt = Attempt {
            number,
            started_ms: at_ms,
            duration_ms: 0,
            outcome: Outcome::Other,
            status_code: None,
            error: Some(reason),
            response_excerpt: None,
            response_headers: Vec::new(),
        };
        self.deps
            .metrics
            .deliveries
            .with_label_values(&[delivery.subscription.as_str(), "dead"])
            .inc();
        if let Err(e) = self
            .deps
            .queue
            .record_outcome(&delivery.id, attempt, Next::Dead, at_ms)
            .await
        {
            tracing::error!(delivery_id = %delivery.id, error = %e, "cannot record a delivery's end; it will be looked at again after a restart");
        }
    }

    /// Puts a claimed delivery back in the queue without an attempt.
    async fn release(&self, delivery_id: &str, due_ms: u64) {
        if let Err(e) = self.deps.queue.release(delivery_id, due_ms).await {
            tracing::error!(delivery_id, error = %e, "cannot put a delivery back in the queue; it will be retried after a restart");
        }
    }

    /// The store freed the slot with the outcome: wake the loop so that its next turn uses it.
    fn free_slot(self) {
        self.deps.wake.notify_one();
    }
}

/// Runs `attempt`, the attempt of the claimed delivery `delivery_id`, and contains a panic in
/// it: the panic is logged and counted (`hookd_attempt_panics_total`), and unless `recorded`
/// says the store already has the attempt's outcome, the delivery is put back in the queue,
/// due again after [`PANIC_RETRY`] without spending an attempt, which frees the slot it held.
/// `None` when it panicked.
async fn contain_panic<T>(
    deps: &SchedulerDeps,
    delivery_id: &str,
    recorded: &AtomicBool,
    attempt: impl Future<Output = T>,
) -> Option<T> {
    let panic = match AssertUnwindSafe(attempt).catch_unwind().await {
        Ok(value) => return Some(value),
        Err(panic) => panic,
    };
    let message = panic
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    deps.metrics.attempt_panics.inc();
    if recorded.load(Ordering::SeqCst) {
        tracing::error!(delivery_id, panic = %message, "attempt task panicked after its outcome was recorded");
        return None;
    }
    let due_ms = deps
        .clock
        .now_ms()
        .saturating_add(u64::try_from(PANIC_RETRY.as_millis()).unwrap_or(u64::MAX));
    tracing::error!(delivery_id, panic = %message, retry_in = ?PANIC_RETRY, "attempt task panicked; its delivery is put back in the queue and its slot freed");
    if let Err(e) = deps.queue.release(delivery_id, due_ms).await {
        tracing::error!(delivery_id, error = %e, "cannot put a delivery back in the queue after a panic; it will be retried after a restart");
    }
    None
}

fn resolve(config: &Config, delivery: &Delivery, now_ms: u64) -> Resolved {
    match &delivery.adhoc {
        Some(adhoc) => match reqwest::Url::parse(&adhoc.url) {
            Ok(url) => Resolved::Send {
                url,
                keys: SigningKeys {
                    abstrakt: Some(adhoc.secret.clone()),
                    standard: Vec::new(),
                },
                policy: config.delivery.policy.clone(),
                headers: Vec::new(),
            },
            Err(e) => Resolved::Invalid(format!("invalid webhook_url: {e}")),
        },
        None => match config.subscription(&delivery.subscription) {
            // An owned subscription takes its owner's events only: a delivery of another
            // owner's (or of none) was made for an earlier subscription of the same id.
            Some(s) if s.owner.is_some() && s.owner != delivery.owner => Resolved::Ended(format!(
                "not sent: its event's owner is not subscription {:?}'s (a deleted subscription's id taken by another owner, or an event from before owners)",
                delivery.subscription
            )),
            Some(s) => Resolved::Send {
                url: s.url.clone(),
                keys: s.signing_keys(now_ms),
                policy: s.policy.clone(),
                headers: s.headers.clone(),
            },
            None => Resolved::Gone,
        },
    }
}

/// What follows a finished attempt under the config's retry rules: delivered, a retry at a
/// time, or dead.
fn next_step(
    config: &Config,
    result: &AttemptResult,
    schedule: &[Duration],
    number: u32,
    finished_ms: u64,
) -> Next {
    let rules = RetryRules {
        retry_after_cap: config.delivery.retry_after_cap,
        jitter: config.delivery.jitter,
    };
    decide_next(
        result,
        schedule,
        number,
        rules,
        finished_ms,
        SystemTime::now(),
        rand::random::<f64>(),
    )
}

fn failed_without_request(reason: String) -> AttemptResult {
    AttemptResult {
        outcome: Outcome::Other,
        status_code: None,
        retry_after: None,
        error: Some(reason),
        response_excerpt: None,
        response_headers: Vec::new(),
        duration: Duration::ZERO,
        blocked: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, retry_after: Option<&str>, blocked: bool) -> AttemptResult {
        AttemptResult {
            outcome,
            status_code: None,
            retry_after: retry_after.map(str::to_string),
            error: None,
            response_excerpt: None,
            response_headers: Vec::new(),
            duration: Duration::from_millis(5),
            blocked,
        }
    }

    const RULES: RetryRules = RetryRules {
        retry_after_cap: Duration::from_secs(3600),
        jitter: 0.0,
    };

    fn schedule() -> Vec<Duration> {
        [0, 60, 300].map(Duration::from_secs).to_vec()
    }

    #[test]
    fn the_next_state_follows_the_schedule_on_an_injected_clock() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = 1_000_000;
        let next = |r: &AttemptResult, n| decide_next(r, &schedule(), n, RULES, at, now, 0.5);
        assert_eq!(
            next(&result(Outcome::Success, None, false), 1),
            Next::Delivered
        );
        let failed = result(Outcome::Http5xx, None, false);
        assert_eq!(next(&failed, 1), Next::RetryAt(at));
        assert_eq!(next(&failed, 2), Next::RetryAt(at + 60_000));
        assert_eq!(next(&failed, 3), Next::RetryAt(at + 300_000));
        assert_eq!(next(&failed, 4), Next::Dead, "the schedule is spent");
        assert_eq!(
            next(&result(Outcome::Connect, None, true), 1),
            Next::Dead,
            "a refused address is not retried"
        );
    }

    #[test]
    fn retry_after_postpones_within_the_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = 1_000_000;
        let slow = result(Outcome::Http4xx, Some("120"), false);
        assert_eq!(
            decide_next(&slow, &schedule(), 1, RULES, at, now, 0.5),
            Next::RetryAt(at + 120_000)
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let dated = result(Outcome::Http5xx, Some(&date), false);
        assert_eq!(
            decide_next(&dated, &schedule(), 1, RULES, at, now, 0.5),
            Next::RetryAt(at + 30_000)
        );
    }

    /// A delivery of an event of `owner` to subscription `subscription`.
    fn delivery_of(subscription: &str, owner: Option<&str>) -> Delivery {
        Delivery {
            id: "dlv_01J00000000000000000000000".to_string(),
            event_id: "evt_01J00000000000000000000000".to_string(),
            event_type: "job.completed".to_string(),
            subscription: subscription.to_string(),
            bucket: subscription.to_string(),
            adhoc: None,
            state: crate::store::DeliveryState::InFlight,
            attempts: 0,
            created_ms: 1_000,
            due_ms: Some(1_000),
            finished_ms: None,
            last_error: None,
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn an_owned_subscription_is_sent_only_its_owners_deliveries() {
        let mut config = Config::from_toml(
            r#"
[[subscription]]
id = "owned"
url = "https://owned.example/hook"
secret = "s"
events = ["*"]

[[subscription]]
id = "provider"
url = "https://provider.example/hook"
secret = "s"
events = ["*"]
"#,
            "t.toml",
        )
        .expect("a valid config");
        config.subscriptions[0].owner = Some("cust-a".to_string());
        let outcome = |subscription: &str, owner: Option<&str>| match resolve(
            &config,
            &delivery_of(subscription, owner),
            2_000,
        ) {
            Resolved::Send { url, .. } => Ok(url.host_str().unwrap_or_default().to_string()),
            Resolved::Ended(reason) => Err(reason),
            Resolved::Invalid(reason) => panic!("invalid: {reason}"),
            Resolved::Gone => panic!("gone"),
        };
        assert_eq!(
            outcome("owned", Some("cust-a")),
            Ok("owned.example".to_string())
        );
        for other in [Some("cust-b"), None] {
            let reason = outcome("owned", other).expect_err("ended, not sent");
            assert!(
                reason.contains("owner") && reason.contains("\"owned\""),
                "{other:?}: {reason}"
            );
        }
        for owner in [Some("cust-a"), Some("cust-b"), None] {
            assert_eq!(
                outcome("provider", owner),
                Ok("provider.example".to_string()),
                "a subscription without an owner takes every owner's: {owner:?}"
            );
        }
        assert!(matches!(
            resolve(&config, &delivery_of("removed", Some("cust-a")), 2_000),
            Resolved::Gone
        ));
    }

    #[test]
    fn the_longest_delays_saturate_the_due_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let failed = result(Outcome::Http5xx, Some("18446744073709551615"), false);
        let rules = RetryRules {
            retry_after_cap: Duration::MAX,
            jitter: 1.0,
        };
        for draw in [0.5, 0.999] {
            let next = decide_next(&failed, &[Duration::MAX], 1, rules, u64::MAX - 5, now, draw);
            assert_eq!(next, Next::RetryAt(u64::MAX));
        }
    }

    /// A store with two deliveries of `main` queued, at most one attempt in flight, and the
    /// scheduler's view of it.
    async fn one_slot(dir: &std::path::Path) -> SchedulerDeps {
        let text = format!(
            "[storage]\npath = {:?}\n[delivery]\nmax_in_flight = 1\n[targets]\nallow = [\"127.0.0.0/8\"]\n\n\
             [[subscription]]\nid = \"main\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"s\"\nevents = [\"*\"]\n",
            dir.join("db").display().to_string()
        );
        let config = Config::from_toml(&text, "test.toml").expect("valid config");
        let store = crate::store::embedded::EmbeddedStore::open(
            crate::store::embedded::Backend::Sled,
            &dir.join("db"),
            1 << 20,
        )
        .expect("store");
        let (control, _) = tokio::sync::mpsc::unbounded_channel();
        let deps = SchedulerDeps {
            control,
            queue: Arc::new(store),
            clock: Arc::new(crate::clock::SystemClock::new()),
            metrics: Arc::new(Metrics::new()),
            settings: Arc::new(Settings::new(config, Vec::new(), Default::default())),
            wake: Arc::new(Notify::new()),
            heartbeat: Arc::new(AtomicU64::new(0)),
            traces: Arc::new(crate::traces::Traces::off()),
            sending: Arc::default(),
        };
        deps.apply_limits();
        let rules = crate::event::IngestRules {
            allow_adhoc_targets: false,
            allow_http: false,
            guard: crate::guard::Guard::default(),
        };
        let mut events = Vec::new();
        for request_id in ["a", "b"] {
            let value = serde_json::json!({"request_id": request_id, "status": "completed"});
            let event = crate::event::parse_event(value, &rules, "2026-01-01T00:00:00Z")
                .expect("valid event");
            let target = crate::store::Target {
                subscription: "main".to_string(),
                bucket: "main".to_string(),
                adhoc: None,
            };
            events.push((event, vec![target]));
        }
        let now = deps.clock.now_ms();
        deps.queue.ingest(events, now).await.expect("ingest");
        deps
    }

    async fn claim_count(deps: &SchedulerDeps, now: u64) -> usize {
        deps.queue.claim(now, usize::MAX).await.unwrap().0.len()
    }

    #[tokio::test]
    async fn a_panicking_attempt_frees_its_slot_and_its_delivery_is_due_again_later() {
        let dir = tempfile::tempdir().expect("temp dir");
        let deps = one_slot(dir.path()).await;
        let now = deps.clock.now_ms();
        let (claimed, _) = deps.queue.claim(now, usize::MAX).await.unwrap();
        let [first] = claimed.as_slice() else {
            panic!("one slot, one claim: {}", claimed.len());
        };
        let first = first.delivery.id.clone();
        assert_eq!(claim_count(&deps, now).await, 0, "one slot, taken");

        let recorded = AtomicBool::new(false);
        let attempt = async {
            if !recorded.load(Ordering::SeqCst) {
                panic!("an injected bug");
            }
        };
        assert_eq!(contain_panic(&deps, &first, &recorded, attempt).await, None);
        assert_eq!(deps.metrics.attempt_panics.get(), 1);
        assert!(deps
            .metrics
            .render()
            .contains("hookd_attempt_panics_total 1"));

        // The slot is free: the other delivery runs at once.
        let (claimed, _) = deps.queue.claim(now, usize::MAX).await.unwrap();
        let [second] = claimed.as_slice() else {
            panic!("the freed slot takes the other delivery: {}", claimed.len());
        };
        assert_ne!(second.delivery.id, first);
        let delivered = Attempt {
            number: 1,
            started_ms: now,
            duration_ms: 1,
            outcome: Outcome::Success,
            status_code: Some(200),
            error: None,
            response_excerpt: None,
            response_headers: Vec::new(),
        };
        deps.queue
            .record_outcome(&second.delivery.id, delivered, Next::Delivered, now)
            .await
            .unwrap();
        // The one whose attempt panicked is due again after PANIC_RETRY, with no attempt spent.
        assert_eq!(
            claim_count(&deps, now).await,
            0,
            "not due before PANIC_RETRY"
        );
        // PANIC_RETRY counts from the panic, read on the clock then: on a loaded machine that
        // can be seconds after `now`.
        let later = deps.clock.now_ms() + u64::try_from(PANIC_RETRY.as_millis()).unwrap() + 1_000;
        let (claimed, _) = deps.queue.claim(later, usize::MAX).await.unwrap();
        let [again] = claimed.as_slice() else {
            panic!("the delivery is due again: {}", claimed.len());
        };
        assert_eq!(again.delivery.id, first);
        assert_eq!(again.delivery.attempts, 0);
    }
}

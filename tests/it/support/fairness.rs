//! The fairness scenario, shared by `tests/it/fairness.rs` and `benches/fairness.rs` (which
//! includes this support tree): how fast a healthy subscription is delivered while many
//! per-request hosts that refuse connections wait for their retry.
//!
//! Each phase runs the real `hookd` binary on a fresh store, with one subscription `healthy`
//! (events `job.completed`) to a [`TestReceiver`] that answers 200:
//!
//! - alone: `events` healthy events are posted and the delivered rate is measured, from the first
//!   post to the last delivery received;
//! - beside failing hosts: first `hosts` events of type `job.failed` (so `healthy` does not get
//!   them), each with its own `webhook_url` `http://127.0.X.Y:9/hook`, a distinct host and so a
//!   bucket of its own; nothing listens on port 9, so each first attempt fails at once with
//!   connection refused and its delivery waits for the retry one minute later. Once every first
//!   attempt has failed, the same healthy events are posted and measured as alone.
//!
//! Every wait has a deadline: a phase that runs out reports what it delivered by then.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::events::{delivery_toml, metric, scrape, subscription_toml};
use super::process::HookdProcess;
use super::receiver::TestReceiver;

/// The failing deliveries make one attempt, then wait a minute (with jitter, at least 54 s):
/// the shipped schedule without its immediate first retry, which would only double the
/// preparation.
const SCHEDULE: [&str; 4] = ["1m", "5m", "15m", "1h"];
/// Events per request and concurrent clients while posting the failing hosts' events.
const FAILING_BATCH: usize = 100;
const FAILING_CLIENTS: usize = 4;
/// How often the receiver's count (in this process, cheap) and hookd's `/metrics` (a scrape
/// costs hookd work) are read while waiting.
const RECEIVER_POLL: Duration = Duration::from_millis(5);
const METRICS_POLL: Duration = Duration::from_millis(200);

/// The sizes of one measurement.
#[derive(Debug, Clone)]
pub struct Fairness {
    /// Per-request hosts that refuse connections, each its own bucket.
    pub hosts: usize,
    /// Healthy events posted in each phase.
    pub events: usize,
    /// Concurrent clients posting the healthy events.
    pub clients: usize,
    /// Healthy events per request (1: single events, more: JSON arrays).
    pub batch: usize,
    /// The longest each phase (and the failing hosts' preparation) may take.
    pub deadline: Duration,
}

/// The healthy subscription's deliveries in one phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub events: usize,
    pub delivered: usize,
    /// From the first post to the last delivery, or to the deadline if it hit first.
    pub elapsed: Duration,
}

impl Phase {
    pub fn complete(&self) -> bool {
        self.delivered >= self.events
    }

    /// Delivered events per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        if self.complete() {
            write!(
                f,
                "{:.0} events/s ({} delivered in {secs:.1} s)",
                self.rate(),
                self.events
            )
        } else {
            write!(
                f,
                "{:.1} events/s (only {} of {} delivered in {secs:.0} s: deadline)",
                self.rate(),
                self.delivered,
                self.events
            )
        }
    }
}

/// The failing hosts' first attempts, before the second phase.
#[derive(Debug, Clone)]
pub struct Failing {
    pub hosts: usize,
    /// Attempts to per-request targets that failed (outcome `connect`).
    pub failed: usize,
    pub elapsed: Duration,
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} failing hosts' first attempts failed in {:.1} s",
            self.failed.min(self.hosts),
            self.hosts,
            self.elapsed.as_secs_f64()
        )?;
        if self.failed < self.hosts {
            write!(f, " (deadline)")?;
        }
        Ok(())
    }
}

/// One measurement: both phases, each on a fresh hookd.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub alone: Phase,
    pub failing: Failing,
    pub beside: Phase,
    /// Attempts to the failing hosts after their first one, made before the second phase
    /// ended: retries that came due during the measurement (none if it ended within a minute).
    pub retries_during: usize,
}

impl Measurement {
    /// The healthy rate beside the failing hosts over its rate alone.
    pub fn ratio(&self) -> f64 {
        self.beside.rate() / self.alone.rate()
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alone {}; {}; beside them {}; ratio {:.3}",
            self.alone,
            self.failing,
            self.beside,
            self.ratio()
        )?;
        if self.retries_during > 0 {
            write!(
                f,
                "; {} retries of failing hosts came due during the measurement",
                self.retries_during
            )?;
        }
        Ok(())
    }
}

/// Runs both phases, each on a fresh hookd and store.
pub async fn measure(sizes: &Fairness) -> Measurement {
    let alone = Hookd::start().await.healthy_phase(sizes).await;
    let hookd = Hookd::start().await;
    let failing = hookd.fail_hosts(sizes).await;
    let beside = hookd.healthy_phase(sizes).await;
    let retries_during = hookd.adhoc_attempts().await.saturating_sub(sizes.hosts);
    Measurement {
        alone,
        failing,
        beside,
        retries_during,
    }
}

/// The per-request URL of failing host `i`: a distinct loopback address, port 9 (closed).
pub fn failing_url(i: usize) -> String {
    assert!(i < 255 * 254, "at most {} failing hosts", 255 * 254);
    format!("http://127.0.{}.{}:9/hook", 1 + i / 254, 1 + i % 254)
}

fn failing_event(i: usize) -> Value {
    json!({
        "request_id": format!("failing-{i}"),
        "status": "failed",
        "error": {"message": "the job failed"},
        "webhook_url": failing_url(i),
        "webhook_secret": "per-request-secret",
    })
}

fn healthy_event(i: usize) -> Value {
    json!({
        "request_id": format!("healthy-{i}"),
        "status": "completed",
        "result": {"items": [{"url": format!("https://cdn.example/{i}.mp4"), "content_type": "video/mp4"}]},
        "metrics": {"inference_time": 45.2, "queue_time": 2.1},
    })
}

/// Panics unless connecting to `url`'s address is refused within a second: the failing hosts
/// must fail at once, not time out.
async fn assert_refused(url: &str) {
    let url = reqwest::Url::parse(url).expect("failing URL");
    let addr = (url.host_str().expect("host"), url.port().expect("port"));
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!(
            "connecting to {url} should be refused at once, got {other:?} after {:?}",
            started.elapsed()
        ),
    }
}

/// The hookd binary with the `healthy` subscription and its receiver. Drop kills hookd (its
/// [`super::process::ChildGuard`]), then removes the store.
struct Hookd {
    process: HookdProcess,
    receiver: TestReceiver,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Hookd {
    async fn start() -> Hookd {
        let receiver = TestReceiver::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = format!(
            "{}{}",
            delivery_toml(&SCHEDULE, ""),
            subscription_toml(
                "healthy",
                &receiver.url(),
                "healthy-secret",
                &["job.completed"],
                ""
            )
        );
        let process = HookdProcess::start(dir.path(), &extra).await;
        let client = super::client_builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Hookd {
            process,
            receiver,
            client,
            _dir: dir,
        }
    }

    /// Posts the healthy events and waits for their deliveries.
    async fn healthy_phase(&self, sizes: &Fairness) -> Phase {
        let started = Instant::now();
        let mut posts = self.post(sizes.events, sizes.clients, sizes.batch, healthy_event);
        let deadline = started + sizes.deadline;
        let complete = until(deadline, RECEIVER_POLL, &mut posts, || async {
            self.receiver.count() >= sizes.events
        })
        .await;
        let elapsed = match self.receiver.last_at() {
            Some(last) if complete => last.duration_since(started),
            _ => started.elapsed(),
        };
        Phase {
            events: sizes.events,
            delivered: self.receiver.count().min(sizes.events),
            elapsed,
        }
    }

    /// Posts the failing hosts' events and waits until each first attempt has failed.
    async fn fail_hosts(&self, sizes: &Fairness) -> Failing {
        assert_refused(&failing_url(0)).await;
        assert_refused(&failing_url(sizes.hosts.saturating_sub(1))).await;
        let started = Instant::now();
        let mut posts = self.post(sizes.hosts, FAILING_CLIENTS, FAILING_BATCH, failing_event);
        until(
            started + sizes.deadline,
            METRICS_POLL,
            &mut posts,
            || async { self.adhoc_attempts().await >= sizes.hosts },
        )
        .await;
        let text = self.metrics_text().await;
        let failed = metric(
            &text,
            "hookd_delivery_attempts_total",
            &[("subscription", "adhoc"), ("outcome", "connect")],
        )
        .unwrap_or(0.0) as usize;
        assert_eq!(
            failed,
            self.adhoc_attempts().await,
            "every attempt to a failing host should be refused (outcome connect):\n{text}"
        );
        Failing {
            hosts: sizes.hosts,
            failed,
            elapsed: started.elapsed(),
        }
    }

    /// Starts `clients` tasks posting events `0..count` made by `event`, `batch` per request.
    fn post(
        &self,
        count: usize,
        clients: usize,
        batch: usize,
        event: fn(usize) -> Value,
    ) -> JoinSet<()> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut posts = JoinSet::new();
        for _ in 0..clients {
            let (client, next) = (self.client.clone(), next.clone());
            let url = self.process.events_url();
            posts.spawn(async move {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= count {
                        return;
                    }
                    let events: Vec<Value> = (first..count.min(first + batch)).map(event).collect();
                    let body = if batch == 1 {
                        events[0].to_string()
                    } else {
                        Value::Array(events).to_string()
                    };
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("ingest request");
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    assert_eq!(status, 202, "ingest answered {status}: {text}");
                }
            });
        }
        posts
    }

    async fn metrics_text(&self) -> String {
        scrape(&self.client, self.process.metrics).await
    }

    /// Attempts made to per-request targets so far, whatever their outcome.
    async fn adhoc_attempts(&self) -> usize {
        let text = self.metrics_text().await;
        metric(
            &text,
            "hookd_delivery_attempts_total",
            &[("subscription", "adhoc")],
        )
        .unwrap_or(0.0) as usize
    }
}

/// Polls `done` every `period` until it holds (true) or `deadline` passes (false). A posting
/// client that failed fails the caller at once, with its message.
async fn until<F, Fut>(
    deadline: Instant,
    period: Duration,
    posts: &mut JoinSet<()>,
    mut done: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        while let Some(result) = posts.try_join_next() {
            if let Err(e) = result {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(period).await;
    }
}

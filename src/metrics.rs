//! The Prometheus registry and every metric hookd exports.
//!
//! Label values are bounded: event types, configured subscription ids (per-request targets are
//! `adhoc`), outcome and state names, HTTP status codes. No URL, request id or delivery id is
//! ever a label value.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::store::PendingStats;

pub struct Metrics {
    registry: Registry,
    pub events_received: IntCounterVec,
    /// Events accepted without an owner while owned subscriptions are in force.
    pub events_without_owner: prometheus::IntCounter,
    pub delivery_attempts: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub attempt_duration: HistogramVec,
    pub delivery_lag: HistogramVec,
    pub retries_scheduled: IntCounterVec,
    pub pending: IntGaugeVec,
    pub oldest_pending_age: prometheus::Gauge,
    pub ingest_requests: IntCounterVec,
    pub ingest_duration: HistogramVec,
    pub store_size: IntGauge,
    pub subscriptions_paused: IntGauge,
    pub ingest_refused: IntCounterVec,
    pub store_free: IntGauge,
    pub store_skipped_records: IntGauge,
    /// The store's connection pool, by state (`open`, `idle`, `waiting`): PostgreSQL only.
    pub store_pool: IntGaugeVec,
    pub store_claim_duration: HistogramVec,
    pub store_stale_outcomes: IntGauge,
    pub store_dead_rows: IntGauge,
    /// Attempt tasks that panicked (their deliveries are put back in the queue).
    pub attempt_panics: prometheus::IntCounter,
    /// Each subscription's circuit breaker: 0 closed, 1 open, 2 disabled.
    pub breaker: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("metric names and labels are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// Like [`counter`]: constant names, registered once at startup, so the `expect`s cannot fail
/// on a name the tests have seen.
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// A counter without labels, exported (as 0) from the start; like [`gauge`].
fn single_counter(registry: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let metric = prometheus::IntCounter::new(name, help).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// A gauge vector; like [`gauge`].
fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric =
        IntGaugeVec::new(Opts::new(name, help), labels).expect("metric names and labels are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// A gauge of seconds (a float); like [`gauge`].
fn seconds_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let metric = prometheus::Gauge::new(name, help).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// `hookd_build_info`: always 1, the version as its label.
fn register_build_info(registry: &Registry) {
    gauge_vec(
        registry,
        "hookd_build_info",
        "Always 1; the version is a label.",
        &["version"],
    )
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
}

/// What comes in: events and the `POST /v1/events` requests that carry them.
struct IngestMetrics {
    events_received: IntCounterVec,
    events_without_owner: prometheus::IntCounter,
    ingest_requests: IntCounterVec,
    ingest_duration: HistogramVec,
    ingest_refused: IntCounterVec,
}

impl IngestMetrics {
    fn register(registry: &Registry) -> IngestMetrics {
        let metrics = IngestMetrics {
            events_received: counter(
                registry,
                "hookd_events_received_total",
                "Events accepted at ingest (repeats not counted).",
                &["event_type"],
            ),
            events_without_owner: single_counter(
                registry,
                "hookd_events_without_owner_total",
                "Events accepted without an owner while subscriptions with an owner are in force: they reach only the subscriptions without one (a job runner that sends no owner shows here).",
            ),
            ingest_requests: counter(
                registry,
                "hookd_ingest_requests_total",
                "POST /v1/events requests by HTTP status code.",
                &["code"],
            ),
            ingest_duration: histogram(
                registry,
                "hookd_ingest_request_duration_seconds",
                "Time to answer POST /v1/events by HTTP status code, durable commit included.",
                &["code"],
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            ),
            ingest_refused: counter(
                registry,
                "hookd_ingest_refused_total",
                "Ingest requests answered 503 by reason: backlog (storage.max_pending reached), disk_full (less free space than storage.min_free_bytes), store (the store failed).",
                &["reason"],
            ),
        };
        for reason in ["backlog", "disk_full", "store"] {
            metrics.ingest_refused.with_label_values(&[reason]);
        }
        metrics
    }
}

/// What goes out: attempts, finished deliveries, retries, and attempt tasks that panicked.
struct DeliveryMetrics {
    delivery_attempts: IntCounterVec,
    deliveries: IntCounterVec,
    attempt_duration: HistogramVec,
    delivery_lag: HistogramVec,
    retries_scheduled: IntCounterVec,
    attempt_panics: prometheus::IntCounter,
}

impl DeliveryMetrics {
    fn register(registry: &Registry) -> DeliveryMetrics {
        let latency = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let lag = [
            0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
        ];
        DeliveryMetrics {
            delivery_attempts: counter(
                registry,
                "hookd_delivery_attempts_total",
                "Delivery attempts by outcome.",
                &["subscription", "outcome"],
            ),
            deliveries: counter(
                registry,
                "hookd_deliveries_total",
                "Deliveries finished: delivered or dead.",
                &["subscription", "result"],
            ),
            attempt_duration: histogram(
                registry,
                "hookd_delivery_attempt_duration_seconds",
                "Duration of one delivery attempt.",
                &["subscription"],
                &latency,
            ),
            delivery_lag: histogram(
                registry,
                "hookd_delivery_lag_seconds",
                "From the event's acceptance to its successful delivery.",
                &["subscription"],
                &lag,
            ),
            retries_scheduled: counter(
                registry,
                "hookd_retries_scheduled_total",
                "Failed attempts followed by a scheduled retry.",
                &["subscription"],
            ),
            attempt_panics: single_counter(
                registry,
                "hookd_attempt_panics_total",
                "Attempt tasks that panicked: a bug. Each such delivery is put back in the queue (due a minute later) and its slot freed.",
            ),
        }
    }
}

/// The unfinished deliveries, as a store walk finds them.
struct QueueMetrics {
    pending: IntGaugeVec,
    oldest_pending_age: prometheus::Gauge,
}

impl QueueMetrics {
    fn register(registry: &Registry) -> QueueMetrics {
        QueueMetrics {
            pending: gauge_vec(
                registry,
                "hookd_deliveries_pending",
                "Unfinished deliveries: ready (due), scheduled (waiting for a retry time), in_flight.",
                &["state"],
            ),
            oldest_pending_age: seconds_gauge(
                registry,
                "hookd_oldest_pending_delivery_age_seconds",
                "Age of the oldest unfinished delivery since its event was accepted; 0 when none.",
            ),
        }
    }
}

/// The store: its size and free space, what it skips, and its engine's health.
struct StoreMetrics {
    store_size: IntGauge,
    store_free: IntGauge,
    store_skipped_records: IntGauge,
    store_pool: IntGaugeVec,
    store_claim_duration: HistogramVec,
    store_stale_outcomes: IntGauge,
    store_dead_rows: IntGauge,
}

impl StoreMetrics {
    fn register(registry: &Registry) -> StoreMetrics {
        StoreMetrics {
            store_size: gauge(
                registry,
                "hookd_store_size_bytes",
                "Bytes the store uses on disk.",
            ),
            store_free: gauge(
                registry,
                "hookd_store_free_bytes",
                "Free space on the filesystem that holds the store, as last checked.",
            ),
            store_skipped_records: gauge(
                registry,
                "hookd_store_skipped_records",
                "Records the store could not decode and skips (each is logged with its key).",
            ),
            store_pool: gauge_vec(
                registry,
                "hookd_store_pool_connections",
                "Connections of the store's pool (PostgreSQL engine): open, idle, and callers waiting for one.",
                &["state"],
            ),
            store_claim_duration: histogram(
                registry,
                "hookd_store_claim_duration_seconds",
                "Time one claim of due deliveries takes in the store.",
                &[],
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            store_stale_outcomes: gauge(
                registry,
                "hookd_store_stale_outcomes",
                "Attempt outcomes this node recorded too late: its lease had passed to another claim (PostgreSQL engine), so the outcome was refused.",
            ),
            store_dead_rows: gauge(
                registry,
                "hookd_store_dead_rows",
                "Dead row versions in the live queue table as PostgreSQL's statistics count them; growing while a long transaction elsewhere holds vacuum back.",
            ),
        }
    }
}

/// The subscriptions' state: paused by an admin, and each one's circuit breaker.
struct SubscriptionMetrics {
    subscriptions_paused: IntGauge,
    breaker: IntGaugeVec,
}

impl SubscriptionMetrics {
    fn register(registry: &Registry) -> SubscriptionMetrics {
        SubscriptionMetrics {
            subscriptions_paused: gauge(
                registry,
                "hookd_subscriptions_paused",
                "Subscriptions paused through the admin API.",
            ),
            breaker: gauge_vec(
                registry,
                "hookd_subscription_breaker",
                "Each subscription's circuit breaker: 0 closed, 1 open (one probe at a time), 2 disabled (deliveries wait for an admin to enable it).",
                &["subscription"],
            ),
        }
    }
}

// The `expect`s of the constructors above run once at startup on constant names: a bad name is
// a programming error that the tests would show at once.
impl Metrics {
    /// Registers every metric family, group by group, in one registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        register_build_info(&registry);
        let IngestMetrics {
            events_received,
            events_without_owner,
            ingest_requests,
            ingest_duration,
            ingest_refused,
        } = IngestMetrics::register(&registry);
        let DeliveryMetrics {
            delivery_attempts,
            deliveries,
            attempt_duration,
            delivery_lag,
            retries_scheduled,
            attempt_panics,
        } = DeliveryMetrics::register(&registry);
        let QueueMetrics {
            pending,
            oldest_pending_age,
        } = QueueMetrics::register(&registry);
        let StoreMetrics {
            store_size,
            store_free,
            store_skipped_records,
            store_pool,
            store_claim_duration,
            store_stale_outcomes,
            store_dead_rows,
        } = StoreMetrics::register(&registry);
        let SubscriptionMetrics {
            subscriptions_paused,
            breaker,
        } = SubscriptionMetrics::register(&registry);
        Metrics {
            registry,
            events_received,
            events_without_owner,
            delivery_attempts,
            deliveries,
            attempt_duration,
            delivery_lag,
            retries_scheduled,
            pending,
            oldest_pending_age,
            ingest_requests,
            ingest_duration,
            store_size,
            subscriptions_paused,
            ingest_refused,
            store_free,
            store_skipped_records,
            store_pool,
            store_claim_duration,
            store_stale_outcomes,
            store_dead_rows,
            attempt_panics,
            breaker,
        }
    }

    /// Creates the per-subscription series at zero, so that `increase()` and ratios see a
    /// subscription's first failure or dead delivery as a change, not as a new series.
    pub fn init_subscriptions<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            for outcome in [
                "success", "http_4xx", "http_5xx", "timeout", "connect", "other",
            ] {
                self.delivery_attempts.with_label_values(&[id, outcome]);
            }
            for result in ["delivered", "dead"] {
                self.deliveries.with_label_values(&[id, result]);
            }
            self.retries_scheduled.with_label_values(&[id]);
        }
    }

    /// Sets the breaker gauge of every configured subscription.
    pub fn set_breakers(&self, gates: &[(String, crate::breaker::Gate)]) {
        for (id, gate) in gates {
            self.breaker.with_label_values(&[id]).set(gate.gauge());
        }
    }

    /// Sets the pending gauges from a store walk.
    pub fn set_pending(&self, stats: PendingStats, now_ms: u64) {
        self.pending
            .with_label_values(&["ready"])
            .set(saturating_i64(stats.ready));
        self.pending
            .with_label_values(&["scheduled"])
            .set(saturating_i64(stats.scheduled));
        self.pending
            .with_label_values(&["in_flight"])
            .set(saturating_i64(stats.in_flight));
        let age_ms = stats
            .oldest_created_ms
            .map_or(0, |created| now_ms.saturating_sub(created));
        self.oldest_pending_age.set(age_ms as f64 / 1000.0);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for metrics the registry accepted.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory");
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

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

// The `expect`s below run once at startup on constant names: a bad name is a programming error
// that the tests would show at once.
impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("hookd_build_info", "Always 1; the version is a label."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("registered once");
        let pending = IntGaugeVec::new(
            Opts::new("hookd_deliveries_pending", "Unfinished deliveries: ready (due), scheduled (waiting for a retry time), in_flight."),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(pending.clone()))
            .expect("registered once");
        let oldest_pending_age = prometheus::Gauge::new(
            "hookd_oldest_pending_delivery_age_seconds",
            "Age of the oldest unfinished delivery since its event was accepted; 0 when none.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(oldest_pending_age.clone()))
            .expect("registered once");
        let store_size = IntGauge::new("hookd_store_size_bytes", "Bytes the store uses on disk.")
            .expect("valid metric");
        registry
            .register(Box::new(store_size.clone()))
            .expect("registered once");
        let subscriptions_paused = IntGauge::new(
            "hookd_subscriptions_paused",
            "Subscriptions paused through the admin API.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(subscriptions_paused.clone()))
            .expect("registered once");
        let ingest_duration = histogram(
            &registry,
            "hookd_ingest_request_duration_seconds",
            "Time to answer POST /v1/events by HTTP status code, durable commit included.",
            &["code"],
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        );
        let latency = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let lag = [
            0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
        ];
        let metrics = Metrics {
            events_received: counter(
                &registry,
                "hookd_events_received_total",
                "Events accepted at ingest (repeats not counted).",
                &["event_type"],
            ),
            events_without_owner: {
                let metric = prometheus::IntCounter::new(
                    "hookd_events_without_owner_total",
                    "Events accepted without an owner while subscriptions with an owner are in force: they reach only the subscriptions without one (a job runner that sends no owner shows here).",
                )
                .expect("metric names are valid");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("each metric is registered once");
                metric
            },
            delivery_attempts: counter(
                &registry,
                "hookd_delivery_attempts_total",
                "Delivery attempts by outcome.",
                &["subscription", "outcome"],
            ),
            deliveries: counter(
                &registry,
                "hookd_deliveries_total",
                "Deliveries finished: delivered or dead.",
                &["subscription", "result"],
            ),
            attempt_duration: histogram(
                &registry,
                "hookd_delivery_attempt_duration_seconds",
                "Duration of one delivery attempt.",
                &["subscription"],
                &latency,
            ),
            delivery_lag: histogram(
                &registry,
                "hookd_delivery_lag_seconds",
                "From the event's acceptance to its successful delivery.",
                &["subscription"],
                &lag,
            ),
            retries_scheduled: counter(
                &registry,
                "hookd_retries_scheduled_total",
                "Failed attempts followed by a scheduled retry.",
                &["subscription"],
            ),
            ingest_requests: counter(
                &registry,
                "hookd_ingest_requests_total",
                "POST /v1/events requests by HTTP status code.",
                &["code"],
            ),
            ingest_refused: counter(
                &registry,
                "hookd_ingest_refused_total",
                "Ingest requests answered 503 by reason: backlog (storage.max_pending reached), disk_full (less free space than storage.min_free_bytes), store (the store failed).",
                &["reason"],
            ),
            store_free: gauge(
                &registry,
                "hookd_store_free_bytes",
                "Free space on the filesystem that holds the store, as last checked.",
            ),
            store_skipped_records: gauge(
                &registry,
                "hookd_store_skipped_records",
                "Records the store could not decode and skips (each is logged with its key).",
            ),
            breaker: {
                let metric = IntGaugeVec::new(
                    Opts::new(
                        "hookd_subscription_breaker",
                        "Each subscription's circuit breaker: 0 closed, 1 open (one probe at a time), 2 disabled (deliveries wait for an admin to enable it).",
                    ),
                    &["subscription"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            store_pool: {
                let metric = IntGaugeVec::new(
                    Opts::new(
                        "hookd_store_pool_connections",
                        "Connections of the store's pool (PostgreSQL engine): open, idle, and callers waiting for one.",
                    ),
                    &["state"],
                )
                .expect("metric names and labels are valid");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("each metric is registered once");
                metric
            },
            store_claim_duration: histogram(
                &registry,
                "hookd_store_claim_duration_seconds",
                "Time one claim of due deliveries takes in the store.",
                &[],
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            store_stale_outcomes: gauge(
                &registry,
                "hookd_store_stale_outcomes",
                "Attempt outcomes this node recorded too late: its lease had passed to another claim (PostgreSQL engine), so the outcome was refused.",
            ),
            store_dead_rows: gauge(
                &registry,
                "hookd_store_dead_rows",
                "Dead row versions in the live queue table as PostgreSQL's statistics count them; growing while a long transaction elsewhere holds vacuum back.",
            ),
            attempt_panics: single_counter(
                &registry,
                "hookd_attempt_panics_total",
                "Attempt tasks that panicked: a bug. Each such delivery is put back in the queue (due a minute later) and its slot freed.",
            ),
            pending,
            oldest_pending_age,
            ingest_duration,
            store_size,
            subscriptions_paused,
            registry,
        };
        for reason in ["backlog", "disk_full", "store"] {
            metrics.ingest_refused.with_label_values(&[reason]);
        }
        metrics
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

//! The application: binds the listeners, opens the store, and runs every task until stopped.
//!
//! Tests build it on port 0 with a fresh data directory and own its shutdown token
//! (`Application::build`, then `run_until_stopped`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::serve::{serve, ServeLimits};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::delivery::Deliverer;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::settings::Settings;
use crate::state::Shared;
use crate::store::embedded::EmbeddedStore;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::Store;
use crate::{api, config, systemd};

pub struct Application {
    shared: Arc<Shared>,
    api_listener: TcpListener,
    metrics_listener: TcpListener,
    deliverer: Deliverer,
}

/// How often finished deliveries older than the retention are swept, at most; a short retention
/// is swept more often (a quarter of it, at least every 100 ms).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the pending gauges are recomputed from the store.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

impl Application {
    /// Opens the store and binds both listeners (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Application::build_with_clock(config, Arc::new(SystemClock::new())).await
    }

    /// [`Application::build`] with the clock everything decides by: tests move it.
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let (store, pg) = open_store(&config).await?;
        let api_listener = TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
        let metrics_listener = TcpListener::bind(config.metrics.listen)
            .await
            .with_context(|| {
                format!("cannot listen on metrics.listen {}", config.metrics.listen)
            })?;
        let guard = Arc::new(RwLock::new(config.targets.guard()));
        if let Some(proxy) = &config.delivery.proxy {
            tracing::info!(proxy = %proxy.shown(), "attempts go through the configured proxy");
        }
        let deliverer = Deliverer::new(
            &config.delivery.header_prefix,
            guard.clone(),
            config.delivery.proxy.as_ref(),
        )?;
        let states = store
            .subscription_states()
            .await
            .context("cannot read subscription states")?;
        let paused = states.values().filter(|state| state.paused).count();
        let metrics = Metrics::new();
        metrics.init_subscriptions(
            config
                .subscriptions
                .iter()
                .map(|s| s.id.as_str())
                .chain([config::ADHOC_SUBSCRIPTION]),
        );
        metrics
            .subscriptions_paused
            .set(i64::try_from(paused).unwrap_or(i64::MAX));
        let listening = format!(
            "api {}, metrics {}",
            api_listener.local_addr()?,
            metrics_listener.local_addr()?
        );
        let stored = store
            .stored_subscriptions()
            .await
            .context("cannot read the subscriptions created through the API")?;
        metrics.init_subscriptions(stored.iter().map(|s| s.id.as_str()));
        let settings = Settings::new(config, stored, states);
        if !settings.config().storage.engine.is_embedded() {
            settings.set_probe_yield(PROBE_YIELD);
        }
        let traces = crate::traces::Traces::start(&settings.config().traces)
            .context("cannot start the OTLP exporter ([traces])")?;
        if let Some(endpoint) = &settings.config().traces.endpoint {
            tracing::info!(%endpoint, "exporting OpenTelemetry spans");
        }
        let shared = Arc::new(Shared::new(
            store, clock, metrics, settings, guard, listening, traces,
        ));
        if let Some(pg) = pg {
            // Other nodes' new deliveries wake this node's scheduler.
            pg.set_waker(shared.wake.clone());
        }
        Ok(Application {
            shared,
            api_listener,
            metrics_listener,
            deliverer,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` is cancelled: then stops accepting, lets attempts in flight finish
    /// up to `delivery.shutdown_grace`, flushes the store and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            shared,
            api_listener,
            metrics_listener,
            deliverer,
        } = self;
        let config = shared.config();
        tracing::info!(api = %api_listener.local_addr()?, metrics = %metrics_listener.local_addr()?,
            store = %config.storage.path.display(), subscriptions = config.subscriptions.len(), "hookd started");

        let limits = serve_limits(&config);
        let dashboard = api::Dashboard {
            routes: crate::ui::router(shared.clone()),
            page: crate::ui::message,
        };
        let api_router = api::router(shared.clone(), api_listener.local_addr()?, dashboard);
        let api = tokio::spawn(serve(api_listener, api_router, shutdown.clone(), limits));
        // The metrics listener outlives the API so that the drain can be watched.
        let stop_metrics = CancellationToken::new();
        let metrics = tokio::spawn(serve(
            metrics_listener,
            api::metrics_router(shared.clone()),
            stop_metrics.clone(),
            limits,
        ));
        let background = tokio::spawn(background(shared.clone(), shutdown.clone()));
        // Stopped after the scheduler, so that what its last attempts report is served.
        let stop_control = CancellationToken::new();
        let control = shared.take_control().map(|requests| {
            tokio::spawn(crate::operator::serve(
                shared.clone(),
                requests,
                stop_control.clone(),
            ))
        });
        let scheduler = Scheduler::new(shared.scheduler_deps(), deliverer);
        let grace = config.delivery.shutdown_grace;
        let scheduler = tokio::spawn(scheduler.run(shutdown.clone(), grace));
        let watchdog = tokio::spawn(systemd::watchdog(shared.clone(), shutdown.clone()));
        shared.apply_limits();
        shared.update_gauges().await;
        systemd::ready(&shared);

        shutdown.cancelled().await;
        systemd::stopping();
        shared.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: no new events accepted, finishing attempts in flight");
        api.await.context("api task")?;
        scheduler.await.context("scheduler task")?;
        stop_control.cancel();
        background.await.context("background task")?;
        if let Some(control) = control {
            control.await.context("control task")?;
        }
        watchdog.await.context("watchdog task")?;
        stop_metrics.cancel();
        metrics.await.context("metrics task")?;
        flush_and_close(&shared).await
    }
}

/// The limits both listeners serve with.
fn serve_limits(config: &Config) -> ServeLimits {
    ServeLimits {
        header_read_timeout: config.api.header_read_timeout,
        idle_timeout: config.api.idle_timeout,
        max_header_bytes: config.api.max_header_bytes,
        max_headers: 100,
        drain_timeout: config.delivery.shutdown_grace,
    }
}

/// The last step of a shutdown, once every task has stopped: exports the spans still buffered,
/// then closes the store.
async fn flush_and_close(shared: &Shared) -> anyhow::Result<()> {
    let traces = shared.traces.clone();
    if traces.exporting() {
        // Exports the spans still buffered; blocking, so off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    let closed = shared.store.close().await;
    if shared.restart.load(Ordering::SeqCst) {
        // The store had stopped writing: what it could not flush is redone after the
        // restart (at-least-once), so its close error is only logged.
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the failed store");
        }
        tracing::info!("hookd stopped to restart with the store reopened");
        return Ok(());
    }
    closed.context("closing the store")?;
    tracing::info!("hookd stopped");
    Ok(())
}

/// Opens the store the config names; the PostgreSQL engine is returned a second time, typed,
/// for what only it has (the wake-up of other nodes' work).
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<PgStore>>)> {
    Ok(match &config.storage.engine {
        config::Engine::Embedded(backend) => {
            let store = EmbeddedStore::open(
                *backend,
                &config.storage.path,
                config.storage.cache_capacity_bytes,
            )
            .with_context(|| {
                format!("cannot open the store at {}", config.storage.path.display())
            })?;
            (Arc::new(store), None)
        }
        config::Engine::Postgres { url, pool_size } => {
            let store = PgStore::open(PgOptions {
                url: url.expose().to_string(),
                pool_size: *pool_size,
                lease: lease_for(config),
                db_clock: true,
            })
            .await
            .context("cannot open the PostgreSQL store (storage.url)")?;
            (store.clone(), Some(store))
        }
    })
}

/// How long a claim holds a delivery on the PostgreSQL engine: longer than the longest attempt
/// (the largest timeout of any subscription), with room to record its outcome. A node that
/// stops for longer loses its deliveries to the other nodes.
pub fn lease_for(config: &Config) -> Duration {
    let longest = config
        .subscriptions
        .iter()
        .map(|s| s.policy.timeout)
        .chain([config.delivery.policy.timeout])
        .max()
        .unwrap_or(Duration::from_secs(10));
    longest + Duration::from_secs(5)
}

/// How often a node of a shared store reads the subscriptions and pause switches again (what
/// other nodes' APIs change).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// On a shared store, how much later than the other nodes a node whose probe failed probes
/// again: longer than a sync period, so that the others have learnt of the failure by then
/// ([`Settings::set_probe_yield`]).
const PROBE_YIELD: Duration = Duration::from_millis(1500);

/// How often the store's health is checked for [`watch_store`].
const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long the store must have failed before hookd restarts to reopen it.
const STORE_FAILED_FOR: Duration = Duration::from_secs(2);

/// The retention sweep, the pending gauges and the store's health.
async fn background(shared: Arc<Shared>, stop: CancellationToken) {
    let mut gauges = tokio::time::interval(GAUGES_EVERY);
    let retention = shared.config().storage.retention;
    let mut sweep =
        tokio::time::interval((retention / 4).clamp(Duration::from_millis(100), SWEEP_EVERY));
    let mut store_check = tokio::time::interval(STORE_CHECK_EVERY);
    let mut failing_since = None;
    let shared_store = !shared.config().storage.engine.is_embedded();
    let mut sync = tokio::time::interval(SYNC_EVERY);
    loop {
        tokio::select! {
            _ = sync.tick(), if shared_store => {
                if let Err(e) = shared.sync_from_store().await {
                    tracing::debug!(error = %e, "cannot read subscriptions from the store");
                }
            }
            _ = gauges.tick() => shared.update_gauges().await,
            _ = sweep.tick() => sweep_finished(&shared).await,
            _ = store_check.tick() => watch_store(&shared, &mut failing_since, &stop).await,
            () = stop.cancelled() => return,
        }
    }
}

/// An embedded store (sled or fjall) stops writing for good after an I/O error (a disk that
/// filled completely under it):
/// ingest answers 503 and `/readyz` fails meanwhile. Once the store has failed for
/// [`STORE_FAILED_FOR`] and its filesystem has room again, hookd drains and `main` executes
/// it again in place (same process id, same arguments), which reopens the store from what it
/// made durable. What was not flushed is attempted again: at-least-once.
async fn watch_store(
    shared: &Shared,
    failing_since: &mut Option<Instant>,
    stop: &CancellationToken,
) {
    if !shared.config().storage.engine.is_embedded() {
        // A database that went away is reconnected to by the pool; `/readyz` shows it.
        return;
    }
    match shared.store.ping().await {
        Ok(()) => *failing_since = None,
        Err(crate::store::StoreError::Closed) => {}
        Err(e) => {
            let since = *failing_since.get_or_insert_with(Instant::now);
            let storage = &shared.config().storage;
            if since.elapsed() >= STORE_FAILED_FOR && crate::admission::has_room(storage) {
                tracing::error!(error = %e, "the store stopped writing and the disk has room again: restarting hookd to reopen it");
                shared.restart.store(true, Ordering::SeqCst);
                stop.cancel();
            }
        }
    }
}

async fn sweep_finished(shared: &Shared) {
    let retention = shared.config().storage.retention;
    let cutoff = shared
        .clock
        .now_ms()
        .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    let mut total = 0;
    loop {
        match shared.store.sweep(cutoff, 1000).await {
            Ok(n) => {
                total += n;
                if n < 1000 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention sweep failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            records = total,
            "retention sweep removed finished deliveries and events"
        );
    }
    prune_audit(shared, cutoff).await;
}

/// The audit log is kept as long as finished deliveries: entries older than the same cutoff go.
async fn prune_audit(shared: &Shared, cutoff: u64) {
    let mut total = 0;
    loop {
        match shared.store.prune_audit(cutoff, 1000).await {
            Ok(n) => {
                total += n;
                if n < 1000 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention sweep of the audit log failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(entries = total, "retention sweep removed audit log entries");
    }
}

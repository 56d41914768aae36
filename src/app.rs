//! The application: binds the listeners, opens the store, and runs every task until stopped.
//!
//! Tests build it on port 0 with a fresh data directory and own its shutdown token
//! (`Application::build`, then `run_until_stopped`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::serve::{serve, ServeLimits};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::delivery::Deliverer;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::store::sled::SledStore;
use crate::store::Store;
use crate::{api, config, systemd};

/// What the API, the scheduler and the background tasks share.
pub struct Shared {
    /// The store, behind its traits.
    pub store: Arc<dyn Store>,
    /// Every time the daemon decides by.
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// The running configuration; replaced whole on reload.
    config: RwLock<Arc<Config>>,
    /// Wakes the scheduler: new deliveries, or a free slot.
    pub wake: Notify,
    /// Set on shutdown: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// When the pending gauges were last computed, and what that cost.
    gauge_clock: std::sync::Mutex<Option<(std::time::Instant, Duration)>>,
    /// When the scheduler loop last turned (Unix ms): the watchdog checks it.
    pub scheduler_heartbeat: AtomicU64,
    /// Paused subscriptions (`adhoc` pauses every per-request target); mirrors the store.
    paused: RwLock<HashSet<String>>,
    /// The target guard the HTTP client uses; replaced on reload.
    guard: Arc<RwLock<crate::guard::Guard>>,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        // A poisoned lock still holds a whole Arc<Config>: replacing it is one store.
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_paused(&self, subscription: &str) -> bool {
        self.paused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(subscription)
    }

    /// Pauses or resumes a subscription, durably, and wakes the scheduler.
    pub async fn set_paused(
        &self,
        subscription: &str,
        paused: bool,
    ) -> Result<(), crate::store::StoreError> {
        self.store.set_paused(subscription, paused).await?;
        {
            let mut set = self.paused.write().unwrap_or_else(|e| e.into_inner());
            if paused {
                set.insert(subscription.to_string());
            } else {
                set.remove(subscription);
            }
            self.metrics
                .subscriptions_paused
                .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        }
        self.apply_limits();
        self.wake.notify_one();
        Ok(())
    }

    /// Gives the store the limits of the running config and the paused subscriptions.
    pub fn apply_limits(&self) {
        let paused = self
            .paused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.store
            .set_limits(crate::scheduler::limits(&self.config(), &paused));
    }

    /// Re-reads the config file: a valid file replaces the running configuration (what needs a
    /// restart keeps its running value, with a warning); an invalid one changes nothing.
    pub fn reload(&self, path: &std::path::Path) -> Result<(), config::ConfigError> {
        systemd::reloading();
        let result = Config::load(path).map(|new| {
            let old = self.config();
            let kept = new.keep_restart_only(&old);
            for key in &kept.keys {
                tracing::warn!(key = key.as_str(), "changed in the config file, but takes effect only after a restart");
            }
            let before: Vec<String> = old.subscriptions.iter().map(|s| s.id.clone()).collect();
            let after: Vec<String> = kept.config.subscriptions.iter().map(|s| s.id.clone()).collect();
            tracing::info!(subscriptions = ?after, removed = ?before.iter().filter(|id| !after.contains(id)).collect::<Vec<_>>(),
                "configuration reloaded");
            self.metrics.init_subscriptions(kept.config.subscriptions.iter().map(|s| s.id.as_str()));
            *self.guard.write().unwrap_or_else(|e| e.into_inner()) = kept.config.targets.guard();
            self.set_config(kept.config);
            self.apply_limits();
            self.wake.notify_one();
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, "config reload failed; keeping the running configuration");
        }
        systemd::ready(self);
        result
    }

    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

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
        let store = SledStore::open(&config.storage.path, config.storage.cache_capacity_bytes)
            .with_context(|| {
                format!("cannot open the store at {}", config.storage.path.display())
            })?;
        let store: Arc<dyn Store> = Arc::new(store);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let api_listener = TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
        let metrics_listener = TcpListener::bind(config.metrics.listen)
            .await
            .with_context(|| {
                format!("cannot listen on metrics.listen {}", config.metrics.listen)
            })?;
        let guard = Arc::new(RwLock::new(config.targets.guard()));
        let deliverer = Deliverer::new(&config.delivery.header_prefix, guard.clone())?;
        let paused: HashSet<String> = store
            .subscription_states()
            .await
            .context("cannot read subscription states")?
            .into_iter()
            .filter(|(_, state)| state.paused)
            .map(|(id, _)| id)
            .collect();
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
            .set(i64::try_from(paused.len()).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            store,
            clock: clock.clone(),
            metrics,
            paused: RwLock::new(paused),
            guard,
            config: RwLock::new(Arc::new(config)),
            wake: Notify::new(),
            draining: AtomicBool::new(false),
            scheduler_heartbeat: AtomicU64::new(clock.now_ms()),
            gauge_clock: std::sync::Mutex::new(None),
        });
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

        let limits = ServeLimits {
            header_read_timeout: config.api.header_read_timeout,
            max_header_bytes: config.api.max_header_bytes,
            max_headers: 100,
            drain_timeout: config.delivery.shutdown_grace,
        };
        let api = tokio::spawn(serve(
            api_listener,
            api::router(shared.clone()),
            shutdown.clone(),
            limits,
        ));
        // The metrics listener outlives the API so that the drain can be watched.
        let stop_metrics = CancellationToken::new();
        let metrics = tokio::spawn(serve(
            metrics_listener,
            api::metrics_router(shared.clone()),
            stop_metrics.clone(),
            limits,
        ));
        let background = tokio::spawn(background(shared.clone(), shutdown.clone()));
        let scheduler = Scheduler::new(shared.clone(), deliverer);
        let grace = config.delivery.shutdown_grace;
        let scheduler = tokio::spawn(scheduler.run(shutdown.clone(), grace));
        let watchdog = tokio::spawn(systemd::watchdog(shared.clone(), shutdown.clone()));
        shared.apply_limits();
        update_gauges(&shared).await;
        systemd::ready(&shared);

        shutdown.cancelled().await;
        systemd::stopping();
        shared.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: no new events accepted, finishing attempts in flight");
        api.await.context("api task")?;
        scheduler.await.context("scheduler task")?;
        background.await.context("background task")?;
        watchdog.await.context("watchdog task")?;
        stop_metrics.cancel();
        metrics.await.context("metrics task")?;
        shared.store.close().await.context("closing the store")?;
        tracing::info!("hookd stopped");
        Ok(())
    }
}

/// The retention sweep and the pending gauges.
async fn background(shared: Arc<Shared>, stop: CancellationToken) {
    let mut gauges = tokio::time::interval(GAUGES_EVERY);
    let retention = shared.config().storage.retention;
    let mut sweep =
        tokio::time::interval((retention / 4).clamp(Duration::from_millis(100), SWEEP_EVERY));
    loop {
        tokio::select! {
            _ = gauges.tick() => update_gauges(&shared).await,
            _ = sweep.tick() => sweep_finished(&shared).await,
            () = stop.cancelled() => return,
        }
    }
}

/// Recomputes the pending gauges and the store size. Counting the ready deliveries walks
/// their part of the queue, so with a large due backlog (a paused subscription with a million
/// deliveries takes about a second) the gauges are recomputed at most every twenty times what
/// the last count cost: at most 5% of a core, at the price of older values.
pub async fn update_gauges(shared: &Shared) {
    let started = std::time::Instant::now();
    {
        let clock = shared.gauge_clock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, cost)) = *clock {
            if cost >= Duration::from_millis(50) && last.elapsed() < cost * 20 {
                return;
            }
        }
    }
    let now = shared.clock.now_ms();
    match shared.store.pending_stats(now).await {
        Ok(stats) => shared.metrics.set_pending(stats, now),
        Err(e) => tracing::warn!(error = %e, "cannot count pending deliveries"),
    }
    *shared.gauge_clock.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((started, started.elapsed()));
    if let Ok(bytes) = shared.store.size_on_disk().await {
        shared
            .metrics
            .store_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
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
}

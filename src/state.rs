//! What the API, the scheduler and the background tasks share: the store, the clock, the
//! metrics, the running configuration and the switches that change at run time. Built by
//! [`crate::app`]; nothing here knows how the daemon is wired.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::settings::{Control, Settings};
use crate::store::{Store, Switch};

/// What the API and the background tasks share; the scheduler gets a narrower view of it,
/// [`crate::scheduler::SchedulerDeps`].
pub struct Shared {
    /// The scheduler's requests ([`Control`]) and, until the daemon takes it, their reader.
    control: (
        tokio::sync::mpsc::UnboundedSender<Control>,
        std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Control>>>,
    ),
    /// The store, behind its traits.
    pub store: Arc<dyn Store>,
    /// Every time the daemon decides by.
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The configuration and the paused set.
    pub settings: Arc<Settings>,
    /// Wakes the scheduler: new deliveries, or a free slot.
    pub wake: Arc<Notify>,
    /// Set on shutdown: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// Set when the store stopped writing and hookd should restart in place to reopen it
    /// (see `app::watch_store`); `main` re-executes the binary after the drain.
    pub restart: AtomicBool,
    /// When the pending gauges were last computed, and what that cost.
    gauge_clock: std::sync::Mutex<Option<(std::time::Instant, Duration)>>,
    /// When the scheduler loop last turned (Unix ms): the watchdog checks it.
    pub scheduler_heartbeat: Arc<AtomicU64>,
    /// The target guard the HTTP client uses; replaced on reload.
    guard: Arc<RwLock<crate::guard::Guard>>,
    /// Ingest's backlog and free-space limits.
    pub admission: crate::admission::Admission,
    /// Where the listeners are bound (`api 127.0.0.1:8080, metrics 127.0.0.1:9464`): port 0 in
    /// the config is resolved here, for the log and systemd's status line.
    pub listening: String,
    /// The dashboard's sessions: their signing key and the sign-outs seen.
    pub sessions: crate::session::Sessions,
    /// OpenTelemetry spans (`[traces]`); off unless configured.
    pub traces: Arc<crate::traces::Traces>,
    /// Taken by each change of the subscriptions, pause or disabled switches made here (the
    /// store's write and the settings' update) and by [`Shared::sync_from_store`] from its read
    /// to its apply: a sync that read the store just before a change here would otherwise apply
    /// what it read over the change, until the next sync (a subscription's old URL, say).
    pub writes: tokio::sync::Mutex<()>,
    /// The attempts sending now, which an erasure waits for ([`crate::erasure`]).
    pub sending: Arc<crate::erasure::Sending>,
    /// The open `hookd listen` sessions ([`crate::listen`]).
    pub listen: crate::listen::Hub,
}

impl Shared {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        settings: Settings,
        guard: Arc<RwLock<crate::guard::Guard>>,
        listening: String,
        traces: crate::traces::Traces,
    ) -> Shared {
        Shared {
            listening,
            traces: Arc::new(traces),
            writes: tokio::sync::Mutex::new(()),
            sending: Arc::default(),
            listen: crate::listen::Hub::new(clock.now_ms()),
            store,
            metrics: Arc::new(metrics),
            settings: Arc::new(settings),
            guard,
            wake: Arc::new(Notify::new()),
            draining: AtomicBool::new(false),
            restart: AtomicBool::new(false),
            scheduler_heartbeat: Arc::new(AtomicU64::new(clock.now_ms())),
            gauge_clock: std::sync::Mutex::new(None),
            admission: crate::admission::Admission::new(),
            sessions: crate::session::Sessions::default(),
            control: {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tx, std::sync::Mutex::new(Some(rx)))
            },
            clock,
        }
    }

    /// The receiving end of the scheduler's [`Control`] requests, for the task that serves
    /// them; `None` once taken.
    pub fn take_control(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Control>> {
        self.control
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn config(&self) -> Arc<Config> {
        self.settings.config()
    }

    pub fn is_paused(&self, subscription: &str) -> bool {
        self.settings.is_paused(subscription)
    }

    /// The scheduler's view: the queue side of the store, the clock, the metrics, the
    /// settings, the wake-up and the heartbeat.
    pub fn scheduler_deps(&self) -> crate::scheduler::SchedulerDeps {
        crate::scheduler::SchedulerDeps {
            control: self.control.0.clone(),
            queue: self.store.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
            wake: self.wake.clone(),
            heartbeat: self.scheduler_heartbeat.clone(),
            traces: self.traces.clone(),
            sending: self.sending.clone(),
        }
    }

    /// Pauses or resumes a subscription, durably, and wakes the scheduler.
    pub async fn switch(
        &self,
        subscription: &str,
        switch: Switch,
    ) -> Result<(), crate::store::StoreError> {
        let _turn = self.writes.lock().await;
        self.store.switch(subscription, switch).await?;
        let count = self.settings.switch(subscription, switch);
        self.metrics
            .subscriptions_paused
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.apply_limits();
        self.wake.notify_one();
        Ok(())
    }

    /// Reads the subscriptions created through the API and the pause switches again from the
    /// store, and applies what changed: on a store that several nodes share, what another
    /// node's API changed. Returns whether anything did.
    pub async fn sync_from_store(&self) -> Result<bool, crate::store::StoreError> {
        let _turn = self.writes.lock().await;
        let stored = self.store.stored_subscriptions().await?;
        let states = self.store.subscription_states().await?;
        let paused: HashSet<String> = states
            .iter()
            .filter(|(_, state)| state.paused)
            .map(|(id, _)| id.clone())
            .collect();
        let (mut changed, breakers) = self.settings.replace_health(states);
        if stored != self.settings.stored() {
            self.metrics
                .init_subscriptions(stored.iter().map(|s| s.id.as_str()));
            self.settings.set_stored(stored);
            changed = true;
        }
        let count = paused.len();
        if self.settings.replace_paused(paused) {
            self.metrics
                .subscriptions_paused
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            changed = true;
        }
        if changed {
            tracing::info!(
                "subscriptions, pause or disabled switches changed by another node; applied"
            );
            self.apply_limits();
            self.wake.notify_one();
        } else if breakers {
            // Another node's attempts moved a breaker (closed it, say): the limits this node's
            // claims apply follow, or it would keep waiting for a probe that is no longer due.
            self.apply_limits();
            self.wake.notify_one();
        }
        Ok(changed)
    }

    /// Gives the store the limits of the running config and the paused subscriptions.
    pub fn apply_limits(&self) {
        let now = self.clock.now_ms();
        self.store.set_limits(self.settings.limits(now));
        self.metrics.set_breakers(&self.settings.gates(now));
    }

    /// Disables (`Some(reason)`) or enables a subscription, durably, and applies it at once.
    pub async fn set_disabled(
        &self,
        subscription: &str,
        reason: Option<String>,
    ) -> Result<(), crate::store::StoreError> {
        let disabled = reason.map(|r| (self.clock.now_ms(), r));
        let _turn = self.writes.lock().await;
        let stored = self
            .store
            .set_disabled(subscription, disabled.clone())
            .await;
        self.settings.disabled_stored(subscription);
        stored?;
        self.settings.set_disabled(subscription, disabled);
        self.apply_limits();
        self.wake.notify_one();
        Ok(())
    }

    /// Re-reads the config file: a valid file replaces the running configuration (what needs a
    /// restart keeps its running value, with a warning); an invalid one changes nothing.
    /// Reloads the config file; a bad file is logged and changes nothing. systemd is told by
    /// the caller ([`crate::systemd::reload`]).
    pub fn reload(&self, path: &std::path::Path) -> Result<(), config::ConfigError> {
        let result = Config::load(path).map(|new| {
            let old = self.config();
            let kept = new.keep_restart_only(&old);
            for key in &kept.keys {
                tracing::warn!(key = key.as_str(), "changed in the config file, but takes effect only after a restart");
            }
            let before: Vec<String> = old.subscriptions.iter().map(|s| s.id.clone()).collect();
            *self.guard.write().unwrap_or_else(|e| e.into_inner()) = kept.config.targets.guard();
            self.set_config(kept.config);
            let now = self.config();
            let after: Vec<String> = now.subscriptions.iter().map(|s| s.id.clone()).collect();
            tracing::info!(subscriptions = ?after, removed = ?before.iter().filter(|id| !after.contains(id)).collect::<Vec<_>>(),
                "configuration reloaded");
            self.metrics.init_subscriptions(after.iter().map(String::as_str));
            self.apply_limits();
            self.wake.notify_one();
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, "config reload failed; keeping the running configuration");
        }
        result
    }

    pub fn set_config(&self, config: Config) {
        self.settings.set_config(config);
    }

    /// Recomputes the pending gauges, the engine's gauges and the store size. Counting the
    /// ready deliveries walks their part of the queue, so with a large due backlog (a paused
    /// subscription with a million deliveries takes about a second) the pending gauges are
    /// recomputed at most every twenty times what the last count cost: at most 5% of a core, at
    /// the price of older values. The others cost little and are read every time, so that a
    /// count made slow by a busy machine does not also freeze them.
    pub async fn update_gauges(&self) {
        let started = std::time::Instant::now();
        let count = {
            let clock = self.gauge_clock.lock().unwrap_or_else(|e| e.into_inner());
            !matches!(*clock, Some((last, cost))
                if cost >= Duration::from_millis(50) && last.elapsed() < cost * 20)
        };
        if count {
            let now = self.clock.now_ms();
            match self.store.pending_stats(now).await {
                Ok(stats) => self.metrics.set_pending(stats, now),
                Err(e) => tracing::warn!(error = %e, "cannot count pending deliveries"),
            }
            *self.gauge_clock.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((started, started.elapsed()));
        }
        self.metrics
            .store_skipped_records
            .set(i64::try_from(self.store.skipped_records()).unwrap_or(i64::MAX));
        let engine = self.store.engine_stats().await;
        if let Some((open, idle, waiting)) = engine.pool {
            for (state, n) in [("open", open), ("idle", idle), ("waiting", waiting)] {
                self.metrics
                    .store_pool
                    .with_label_values(&[state])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Some(dead) = engine.dead_rows {
            self.metrics
                .store_dead_rows
                .set(i64::try_from(dead).unwrap_or(i64::MAX));
        }
        self.metrics
            .store_stale_outcomes
            .set(i64::try_from(engine.stale_outcomes).unwrap_or(i64::MAX));
        if let Ok(bytes) = self.store.size_on_disk().await {
            self.metrics
                .store_size
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

//! What the API, the scheduler and the background tasks share: the store, the clock, the
//! metrics, the running configuration and the switches that change at run time. Built by
//! [`crate::app`]; nothing here knows how the daemon is wired.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::breaker::{self, Gate};
use crate::clock::Clock;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::store::{Outcome, Store, StoredSubscription, SubscriptionState, Switch};
use crate::systemd;

/// The running configuration and the switches that change at run time: what the scheduler
/// reads of the daemon's state besides the store.
pub struct Settings {
    /// The running configuration: the file's, plus the subscriptions created through the
    /// API. Replaced whole when either changes.
    config: RwLock<Arc<Config>>,
    /// The file's configuration alone, and the stored subscriptions, that `config` is made of.
    parts: std::sync::Mutex<(Arc<Config>, Vec<StoredSubscription>)>,
    /// Paused subscriptions (`adhoc` pauses every per-request target); mirrors the store.
    paused: RwLock<HashSet<String>>,
    /// Each subscription's health and disabled switch, as the store has them plus this node's
    /// latest outcomes: what the circuit breaker decides by.
    health: RwLock<HashMap<String, SubscriptionState>>,
    /// On a store shared by several nodes: the subscriptions whose latest failure, with the
    /// breaker open, was this node's, and that failure's time (Unix ms).
    own_failures: RwLock<HashMap<String, u64>>,
    /// Subscriptions this node's breaker disabled whose disabling is not in the store yet: a
    /// sync that reads the store meanwhile keeps them disabled (else one more attempt could
    /// start between the sync and the durable write).
    disabling: RwLock<HashMap<String, (u64, String)>>,
    /// How much later than the others a node whose probe failed may probe again (ms); 0 on
    /// a store of its own. See [`Settings::set_probe_yield`].
    probe_yield_ms: AtomicU64,
}

/// What the scheduler asks the daemon to do about a subscription or a delivery, off the
/// attempt's path: disable a subscription durably, and tell the operator (operator events).
#[derive(Debug, Clone)]
pub enum Control {
    /// The breaker disabled it (already in effect on this node).
    Disabled {
        subscription: String,
        reason: String,
    },
    /// A success closed its open breaker.
    Recovered { subscription: String },
    /// A delivery ended dead after its last attempt.
    Dead {
        delivery: Box<crate::store::Delivery>,
        attempts: u32,
        error: Option<String>,
    },
}

/// What one attempt's outcome did to its subscription's breaker.
#[derive(Debug, Default)]
pub struct Observed {
    /// The breaker closed again (a success after it was open).
    pub recovered: bool,
    /// The gate changed (the scheduler's limits must follow).
    pub changed: bool,
    /// The subscription is to be disabled, and why.
    pub disable: Option<String>,
}

impl Settings {
    pub fn new(
        config: Config,
        stored: Vec<StoredSubscription>,
        states: HashMap<String, SubscriptionState>,
    ) -> Settings {
        let paused = states
            .iter()
            .filter(|(_, state)| state.paused)
            .map(|(id, _)| id.clone())
            .collect();
        let settings = Settings {
            config: RwLock::new(Arc::new(config.clone())),
            parts: std::sync::Mutex::new((Arc::new(config), stored)),
            paused: RwLock::new(paused),
            health: RwLock::new(states),
            own_failures: RwLock::new(HashMap::new()),
            disabling: RwLock::new(HashMap::new()),
            probe_yield_ms: AtomicU64::new(0),
        };
        settings.merge();
        settings
    }

    /// Rebuilds the running configuration from its parts; a stored subscription that no
    /// longer validates is left out, with a warning.
    fn merge(&self) {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let (merged, skipped) = parts.0.with_stored(&parts.1);
        for (id, why) in skipped {
            tracing::warn!(subscription = id.as_str(), error = why.as_str(), "a subscription created through the API no longer validates against the configuration; it is left out until it does");
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(merged);
    }

    /// The subscriptions created through the API.
    pub fn stored(&self) -> Vec<StoredSubscription> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Replaces the subscriptions created through the API (after the store has them).
    pub fn set_stored(&self, stored: Vec<StoredSubscription>) {
        self.parts.lock().unwrap_or_else(|e| e.into_inner()).1 = stored;
        self.merge();
    }

    pub fn config(&self) -> Arc<Config> {
        // A poisoned lock still holds a whole Arc<Config>: replacing it is one store.
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the file's part of the configuration (a reload).
    pub fn set_config(&self, config: Config) {
        self.parts.lock().unwrap_or_else(|e| e.into_inner()).0 = Arc::new(config);
        self.merge();
    }

    pub fn is_paused(&self, subscription: &str) -> bool {
        self.paused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(subscription)
    }

    /// Sets how much later than the other nodes a node whose probe failed probes again (zero,
    /// the default, on a store of its own). Each node learns of the others' outcomes only at
    /// its next sync, so without it the node that made a failed probe always knew first when
    /// the next one was due and kept the probes to itself: a node that cannot reach the
    /// receiver (its own network or route) would keep the breaker open while another node
    /// could deliver. Longer than a sync period, it hands the next probe to another node
    /// when there is one; a node alone probes this much later.
    pub fn set_probe_yield(&self, wait: Duration) {
        self.probe_yield_ms.store(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Subscription `s`'s breaker at `now_ms`: [`breaker::gate`], where the failure that
    /// opened it or failed its probe was this node's (`own`) plus the probe yield.
    fn gate_of(
        &self,
        s: &config::Subscription,
        state: &SubscriptionState,
        own: &HashMap<String, u64>,
        now_ms: u64,
    ) -> Gate {
        let wait = self
            .probe_yield_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let mine =
            state.last_failure_ms.is_some() && own.get(&s.id) == state.last_failure_ms.as_ref();
        breaker::gate_after(&s.breaker, state, now_ms, if mine { wait } else { 0 })
    }

    /// The earliest time (Unix ms) after `now_ms` at which a waiting breaker may probe: when
    /// the scheduler should look again.
    pub fn next_probe_ms(&self, now_ms: u64) -> Option<u64> {
        self.gates(now_ms)
            .into_iter()
            .filter_map(|(_, gate)| match gate {
                Gate::Wait { until_ms } => Some(until_ms),
                _ => None,
            })
            .min()
    }

    /// Marks a subscription paused or not; returns how many are paused.
    fn switch(&self, subscription: &str, switch: Switch) -> usize {
        let mut set = self.paused.write().unwrap_or_else(|e| e.into_inner());
        if switch.paused() {
            set.insert(subscription.to_string());
        } else {
            set.remove(subscription);
        }
        set.len()
    }

    /// Replaces the paused set; whether it changed.
    fn replace_paused(&self, paused: HashSet<String>) -> bool {
        let mut set = self.paused.write().unwrap_or_else(|e| e.into_inner());
        let changed = *set != paused;
        *set = paused;
        changed
    }

    /// The limits the store's claims apply at `now_ms`: the config's, less what is paused,
    /// disabled or waiting for its next probe, and one at a time where the breaker is open.
    pub fn limits(&self, now_ms: u64) -> crate::store::Limits {
        let config = self.config();
        let mut limits = {
            let paused = self.paused.read().unwrap_or_else(|e| e.into_inner());
            crate::scheduler::limits(&config, &paused)
        };
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        let own = self.own_failures.read().unwrap_or_else(|e| e.into_inner());
        for s in &config.subscriptions {
            let Some(state) = health.get(&s.id) else {
                continue;
            };
            match self.gate_of(s, state, &own, now_ms) {
                Gate::Closed => {}
                Gate::Probe => {
                    limits.subscriptions.insert(s.id.clone(), 1);
                }
                Gate::Wait { .. } | Gate::Disabled => {
                    limits.paused.insert(s.id.clone());
                }
            }
        }
        limits
    }

    /// Whether subscription `id`'s attempts are held back at `now_ms`: paused, disabled, or its
    /// breaker waiting for its next probe. A claim made under older limits (one that began just
    /// before the switch) is put back rather than attempted.
    pub fn held(&self, id: &str, now_ms: u64) -> bool {
        if self
            .paused
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
        {
            return true;
        }
        let config = self.config();
        let Some(s) = config.subscription(id) else {
            return false;
        };
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        let own = self.own_failures.read().unwrap_or_else(|e| e.into_inner());
        health.get(id).is_some_and(|state| {
            matches!(
                self.gate_of(s, state, &own, now_ms),
                Gate::Wait { .. } | Gate::Disabled
            )
        })
    }

    /// Each configured subscription's breaker at `now_ms`.
    pub fn gates(&self, now_ms: u64) -> Vec<(String, Gate)> {
        let config = self.config();
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        let own = self.own_failures.read().unwrap_or_else(|e| e.into_inner());
        config
            .subscriptions
            .iter()
            .map(|s| {
                let gate = health
                    .get(&s.id)
                    .map_or(Gate::Closed, |state| self.gate_of(s, state, &own, now_ms));
                (s.id.clone(), gate)
            })
            .collect()
    }

    /// The breaker of subscription `id` at `now_ms` (closed for one not configured).
    pub fn gate(&self, id: &str, now_ms: u64) -> Gate {
        let config = self.config();
        let Some(s) = config.subscription(id) else {
            return Gate::Closed;
        };
        // The health lock first, then this node's failures: the order every user takes.
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        let own = self.own_failures.read().unwrap_or_else(|e| e.into_inner());
        health
            .get(id)
            .map_or(Gate::Closed, |state| self.gate_of(s, state, &own, now_ms))
    }

    /// Whether some breaker is open (probing or waiting): the limits change with time then.
    /// Asked on every scheduler turn, so it allocates nothing.
    pub fn breaker_open(&self, now_ms: u64) -> bool {
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        if health.values().all(|state| state.consecutive_failures == 0) {
            return false;
        }
        let config = self.config();
        config.subscriptions.iter().any(|s| {
            health.get(&s.id).is_some_and(|state| {
                matches!(
                    breaker::gate(&s.breaker, state, now_ms),
                    Gate::Probe | Gate::Wait { .. }
                )
            })
        })
    }

    /// Folds an attempt's outcome into subscription `id`'s health here (the store folds it
    /// too) and says what that did to its breaker.
    pub fn observe(
        &self,
        id: &str,
        outcome: Outcome,
        error: Option<&String>,
        at_ms: u64,
    ) -> Observed {
        let config = self.config();
        let Some(s) = config.subscription(id) else {
            return Observed::default();
        };
        // Folded even while the breaker is off, so that a reload turning it on starts from
        // the truth; the id is copied only the first time.
        let mut health = self.health.write().unwrap_or_else(|e| e.into_inner());
        if !health.contains_key(id) {
            health.insert(id.to_string(), SubscriptionState::default());
        }
        let Some(state) = health.get_mut(id) else {
            return Observed::default();
        };
        let before = breaker::gate(&s.breaker, state, at_ms);
        state.fold(outcome, error, at_ms);
        let after = breaker::gate(&s.breaker, state, at_ms);
        if self
            .probe_yield_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            let mut own = self.own_failures.write().unwrap_or_else(|e| e.into_inner());
            if matches!(after, Gate::Probe | Gate::Wait { .. }) && outcome != Outcome::Success {
                own.insert(id.to_string(), at_ms);
            } else {
                own.remove(id);
            }
        }
        Observed {
            recovered: outcome == Outcome::Success
                && before != Gate::Closed
                && before != Gate::Disabled,
            changed: before.name() != after.name() || matches!(after, Gate::Wait { .. }),
            disable: breaker::disable_reason(&s.breaker, state, at_ms),
        }
    }

    /// Marks subscription `id` disabled (`Some`) or enabled here (after the store has it).
    pub fn set_disabled(&self, id: &str, disabled: Option<(u64, String)>) {
        self.health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .set_disabled(disabled);
    }

    /// Disables a subscription in memory at once, until [`Shared::set_disabled`] has made it
    /// durable ([`Settings::disabled_stored`]).
    pub fn disable_pending(&self, id: &str, at_ms: u64, reason: String) {
        self.disabling
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (at_ms, reason.clone()));
        self.set_disabled(id, Some((at_ms, reason)));
    }

    /// The store holds the switch of `id` now: a sync may decide it again.
    pub fn disabled_stored(&self, id: &str) {
        self.disabling
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Forgets what this node knows of subscription `id` (paused, health, breaker): it was
    /// deleted, and a later one of the same id starts afresh. Returns the paused count.
    pub fn forget(&self, id: &str) -> usize {
        self.health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.own_failures
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.switch(id, Switch::Resume)
    }

    /// Subscription `id`'s health and switches as this node knows them.
    pub fn state(&self, id: &str) -> SubscriptionState {
        self.health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces the health with the store's (which includes this node's latest); whether a
    /// disabled switch changed, and whether anything a breaker decides by did (its failures in
    /// a row, its last failure).
    fn replace_health(&self, mut states: HashMap<String, SubscriptionState>) -> (bool, bool) {
        for (id, (at, reason)) in self
            .disabling
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let state = states.entry(id.clone()).or_default();
            if state.disabled_ms.is_none() {
                state.set_disabled(Some((*at, reason.clone())));
            }
        }
        let mut health = self.health.write().unwrap_or_else(|e| e.into_inner());
        // A failure this node saw after everything the store holds (its outcome not folded
        // into the store yet) is kept: else a sync in between would reset the failures in a
        // row, and the breaker would let one more attempt through before it disables.
        for (id, mine) in health.iter() {
            let Some(failed) = mine.last_failure_ms else {
                continue;
            };
            let theirs = states.entry(id.clone()).or_default();
            let newer = theirs.last_failure_ms.is_none_or(|t| t < failed)
                && theirs.last_success_ms.is_none_or(|t| t <= failed);
            if newer {
                theirs.last_failure_ms = mine.last_failure_ms;
                theirs.consecutive_failures =
                    theirs.consecutive_failures.max(mine.consecutive_failures);
                theirs.failing_since_ms = theirs.failing_since_ms.or(mine.failing_since_ms);
                theirs.last_error.clone_from(&mine.last_error);
            }
        }
        let disabled = |h: &HashMap<String, SubscriptionState>| -> HashSet<String> {
            h.iter()
                .filter(|(_, s)| s.disabled_ms.is_some())
                .map(|(id, _)| id.clone())
                .collect()
        };
        let gates =
            |h: &HashMap<String, SubscriptionState>| -> HashMap<String, (u32, Option<u64>)> {
                h.iter()
                    .map(|(id, s)| (id.clone(), (s.consecutive_failures, s.last_failure_ms)))
                    .collect()
            };
        let switches = disabled(&health) != disabled(&states);
        let breakers = gates(&health) != gates(&states);
        *health = states;
        (switches, breakers)
    }
}

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
    /// The dashboard's signing key and signed-out sessions.
    pub ui: crate::ui::UiState,
    /// OpenTelemetry spans (`[traces]`); off unless configured.
    pub traces: Arc<crate::traces::Traces>,
    /// Taken by each change of the subscriptions, pause or disabled switches made here (the
    /// store's write and the settings' update) and by [`Shared::sync_from_store`] from its read
    /// to its apply: a sync that read the store just before a change here would otherwise apply
    /// what it read over the change, until the next sync (a subscription's old URL, say).
    pub writes: tokio::sync::Mutex<()>,
    /// The attempts sending now, which an erasure waits for ([`crate::erasure`]).
    pub sending: Arc<crate::erasure::Sending>,
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
            ui: crate::ui::UiState::default(),
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
    pub fn reload(&self, path: &std::path::Path) -> Result<(), config::ConfigError> {
        systemd::reloading();
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
        systemd::ready(self);
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000_000;

    fn settings(probe_yield: Duration) -> Settings {
        let config = Config::from_toml(
            r#"
[delivery]
breaker_failures = 2
breaker_probe_interval = "10s"

[[subscription]]
id = "main"
url = "https://receiver.example/hooks"
secret = "s"
events = ["*"]
"#,
            "t.toml",
        )
        .expect("a valid config");
        let settings = Settings::new(config, Vec::new(), HashMap::new());
        settings.set_probe_yield(probe_yield);
        settings
    }

    /// Two failures open the breaker, the second at `T + 100`.
    fn opened(settings: &Settings) {
        settings.observe("main", Outcome::Http5xx, None, T);
        settings.observe("main", Outcome::Http5xx, None, T + 100);
    }

    #[test]
    fn a_node_whose_probe_failed_lets_the_other_nodes_probe_first() {
        let s = settings(Duration::from_millis(1500));
        opened(&s);
        let until = T + 100 + 10_000 + 1500;
        assert_eq!(s.gate("main", T + 200), Gate::Wait { until_ms: until });
        assert_eq!(s.next_probe_ms(T + 200), Some(until));
        assert!(s.limits(until - 1).paused.contains("main"));
        assert_eq!(s.gate("main", until), Gate::Probe);
        assert_eq!(s.limits(until).subscriptions.get("main"), Some(&1));
        assert_eq!(s.next_probe_ms(until), None);

        // Another node's failed probe, learnt at a sync: this node may probe as soon as the
        // interval has passed.
        let mut theirs = s.state("main");
        theirs.fold(Outcome::Http5xx, None, T + 20_000);
        s.replace_health(HashMap::from([("main".to_string(), theirs)]));
        assert_eq!(
            s.gate("main", T + 20_001),
            Gate::Wait {
                until_ms: T + 30_000
            }
        );
        assert_eq!(s.gate("main", T + 30_000), Gate::Probe);

        // This node's next failed probe is its own again; a success closes the breaker and
        // forgets it.
        s.observe("main", Outcome::Http5xx, None, T + 30_100);
        assert_eq!(
            s.gate("main", T + 30_200),
            Gate::Wait {
                until_ms: T + 41_600
            }
        );
        s.observe("main", Outcome::Success, None, T + 41_600);
        assert_eq!(s.gate("main", T + 41_601), Gate::Closed);
        assert!(s.own_failures.read().expect("lock").is_empty());
    }

    #[test]
    fn a_node_alone_probes_as_soon_as_the_interval_has_passed() {
        let s = settings(Duration::ZERO);
        opened(&s);
        let until = T + 100 + 10_000;
        assert_eq!(s.gate("main", T + 200), Gate::Wait { until_ms: until });
        assert_eq!(s.next_probe_ms(T + 200), Some(until));
        assert_eq!(s.gate("main", until), Gate::Probe);
        assert!(s.own_failures.read().expect("lock").is_empty());
    }
}

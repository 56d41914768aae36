//! The running configuration and the switches that change at run time (paused, disabled, each
//! subscription's health and breaker), as the scheduler reads them, and the limits the store
//! applies from them. [`crate::state::Shared`] holds one and changes it; the scheduler only reads
//! it and reports through [`Control`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::breaker::{self, Gate};
use crate::config::{self, Config, ADHOC_SUBSCRIPTION};
use crate::store::{Limits, Outcome, StoredSubscription, SubscriptionState, Switch};

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
    pub(crate) fn switch(&self, subscription: &str, switch: Switch) -> usize {
        let mut set = self.paused.write().unwrap_or_else(|e| e.into_inner());
        if switch.paused() {
            set.insert(subscription.to_string());
        } else {
            set.remove(subscription);
        }
        set.len()
    }

    /// Replaces the paused set; whether it changed.
    pub(crate) fn replace_paused(&self, paused: HashSet<String>) -> bool {
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
            limits(&config, &paused)
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

    /// Disables a subscription in memory at once, until [`crate::state::Shared::set_disabled`] has made it
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
    pub(crate) fn replace_health(
        &self,
        mut states: HashMap<String, SubscriptionState>,
    ) -> (bool, bool) {
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

/// The limits the store applies when it hands out work, from the config and the paused
/// subscriptions.
pub fn limits(config: &Config, paused: &HashSet<String>) -> Limits {
    Limits {
        global: config.delivery.max_in_flight,
        adhoc_total: config.delivery.max_in_flight_adhoc,
        adhoc_per_host: config.delivery.max_in_flight_per_subscription,
        subscriptions: config
            .subscriptions
            .iter()
            .map(|s| (s.id.clone(), s.max_in_flight))
            .collect(),
        paused: paused.clone(),
        rates: config
            .subscriptions
            .iter()
            .filter_map(|s| Some((s.id.clone(), interval_us(s.rate_limit?))))
            .chain((config.delivery.adhoc_rate_limit > 0.0).then(|| {
                (
                    ADHOC_SUBSCRIPTION.to_string(),
                    interval_us(config.delivery.adhoc_rate_limit),
                )
            }))
            .collect(),
    }
}

/// The least time between two attempts at `per_second`, in µs (the config keeps rates in
/// 0.001..=100000).
fn interval_us(per_second: f64) -> u64 {
    // In range: at most 1e9 µs, at least 10.
    (1_000_000.0 / per_second).round() as u64
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

//! The circuit breaker of a subscription, decided from its health ([`SubscriptionState`]) and
//! its [`BreakerPolicy`] at a given time, so that the rules are tested on any clock.
//!
//! - **Closed**: fewer than `breaker_failures` failed attempts in a row: full speed.
//! - **Open**: that many or more. One attempt at a time (a probe), and after a failed probe
//!   none before `breaker_probe_interval` has passed. A success closes it.
//! - **Disabled**: failing for `disable_after`, or `disable_after_failures` attempts in a row.
//!   Nothing is attempted; deliveries wait in the queue until an admin enables it again.
//!
//! The health these decisions read is shared through the store (every node folds its
//! outcomes into it), so on PostgreSQL the nodes agree within a sync period.

use std::time::Duration;

use crate::config::BreakerPolicy;
use crate::store::SubscriptionState;

/// What a subscription's breaker lets the scheduler do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// One attempt at a time.
    Probe,
    /// No attempt before this time (Unix ms): the last probe failed.
    Wait {
        until_ms: u64,
    },
    Disabled,
}

impl Gate {
    /// The `hookd_subscription_breaker` gauge's value: 0 closed, 1 open (probing or waiting
    /// to), 2 disabled.
    pub fn gauge(self) -> i64 {
        match self {
            Gate::Closed => 0,
            Gate::Probe | Gate::Wait { .. } => 1,
            Gate::Disabled => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Gate::Closed => "closed",
            Gate::Probe | Gate::Wait { .. } => "open",
            Gate::Disabled => "disabled",
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn gate(policy: &BreakerPolicy, state: &SubscriptionState, now_ms: u64) -> Gate {
    gate_after(policy, state, now_ms, 0)
}

/// [`gate`], with a failed probe followed by `extra_ms` more than the interval (a node that
/// made it lets the other nodes probe first).
pub fn gate_after(
    policy: &BreakerPolicy,
    state: &SubscriptionState,
    now_ms: u64,
    extra_ms: u64,
) -> Gate {
    if state.disabled_ms.is_some() {
        return Gate::Disabled;
    }
    if policy.failures == 0 || state.consecutive_failures < policy.failures {
        return Gate::Closed;
    }
    let next = state
        .last_failure_ms
        .unwrap_or(0)
        .saturating_add(millis(policy.probe_interval))
        .saturating_add(extra_ms);
    if now_ms < next {
        Gate::Wait { until_ms: next }
    } else {
        Gate::Probe
    }
}

/// Why the subscription is to be disabled now, if it is.
pub fn disable_reason(
    policy: &BreakerPolicy,
    state: &SubscriptionState,
    now_ms: u64,
) -> Option<String> {
    if state.disabled_ms.is_some() || state.consecutive_failures == 0 {
        return None;
    }
    if policy.disable_after_failures > 0
        && state.consecutive_failures >= policy.disable_after_failures
    {
        return Some(format!(
            "{} failed attempts in a row (disable_after_failures = {})",
            state.consecutive_failures, policy.disable_after_failures
        ));
    }
    let since = state.failing_since_ms?;
    let span = Duration::from_millis(now_ms.saturating_sub(since));
    if !policy.disable_after.is_zero() && span >= policy.disable_after {
        return Some(format!(
            "failing for {} (disable_after = {}), {} failed attempts in a row",
            humantime::format_duration(Duration::from_secs(span.as_secs())),
            humantime::format_duration(policy.disable_after),
            state.consecutive_failures
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outcome;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            probe_interval: Duration::from_secs(30),
            disable_after: Duration::from_secs(3600),
            disable_after_failures: 0,
        }
    }

    /// `n` failures, the first at `from` and one a second after it.
    fn failing(n: u32, from: u64) -> SubscriptionState {
        let mut state = SubscriptionState::default();
        for i in 0..n {
            state.fold(Outcome::Http5xx, None, from + u64::from(i) * 1000);
        }
        state
    }

    #[test]
    fn the_breaker_opens_after_its_failures_and_probes_once_per_interval() {
        let p = policy();
        let start = 1_000_000;
        assert_eq!(gate(&p, &failing(2, start), start + 1000), Gate::Closed);
        let open = failing(3, start);
        let last = start + 2000;
        assert_eq!(
            gate(&p, &open, last + 1),
            Gate::Wait {
                until_ms: last + 30_000
            }
        );
        assert_eq!(gate(&p, &open, last + 29_999).gauge(), 1);
        assert_eq!(gate(&p, &open, last + 30_000), Gate::Probe);
        // A failed probe waits again; a success closes it.
        let mut probed = open.clone();
        probed.fold(Outcome::Http5xx, None, last + 30_000);
        assert_eq!(
            gate(&p, &probed, last + 30_001),
            Gate::Wait {
                until_ms: last + 60_000
            }
        );
        probed.fold(Outcome::Success, None, last + 60_000);
        assert_eq!(gate(&p, &probed, last + 60_001), Gate::Closed);
        assert_eq!(probed.failing_since_ms, None);
        // Off: never opens.
        let off = BreakerPolicy { failures: 0, ..p };
        assert_eq!(gate(&off, &failing(100, start), start), Gate::Closed);
    }

    #[test]
    fn a_subscription_is_disabled_after_its_span_or_its_count_and_enabled_afresh() {
        let p = policy();
        let start = 5_000_000;
        let state = failing(4, start);
        assert_eq!(disable_reason(&p, &state, start + 3_599_999), None);
        let reason = disable_reason(&p, &state, start + 3_600_000).expect("disabled");
        assert!(reason.contains("failing for 1h"), "{reason}");
        // The span starts at the first failure after the last success.
        let mut recovered = state.clone();
        recovered.fold(Outcome::Success, None, start + 10_000);
        recovered.fold(Outcome::Http5xx, None, start + 20_000);
        assert_eq!(disable_reason(&p, &recovered, start + 3_600_000), None);
        assert!(disable_reason(&p, &recovered, start + 3_620_000).is_some());

        let by_count = BreakerPolicy {
            disable_after_failures: 4,
            disable_after: Duration::ZERO,
            ..p
        };
        assert_eq!(disable_reason(&by_count, &failing(3, start), start), None);
        let reason = disable_reason(&by_count, &failing(4, start), start).expect("disabled");
        assert!(reason.contains("4 failed attempts in a row"), "{reason}");
        let never = BreakerPolicy {
            disable_after_failures: 0,
            disable_after: Duration::ZERO,
            ..p
        };
        assert_eq!(
            disable_reason(&never, &failing(1000, 0), u64::MAX / 2),
            None
        );

        let mut disabled = failing(4, start);
        disabled.set_disabled(Some((start + 5000, "why".into())));
        assert_eq!(gate(&p, &disabled, start + 6000), Gate::Disabled);
        assert_eq!(disable_reason(&by_count, &disabled, start + 6000), None);
        disabled.set_disabled(None);
        assert_eq!(gate(&p, &disabled, start + 6000), Gate::Closed);
        assert_eq!(disabled.consecutive_failures, 0);
    }
}

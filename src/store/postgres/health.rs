//! Subscriptions' health: folded here from this node's attempts, written at most once a second
//! when unchanged, and merged with what other nodes wrote.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::pool::execute;
use super::rows::{state_of, STATE_COLUMNS};
use super::{lock, ms, unms, PgStore};
use crate::store::{Attempt, StoreError, SubscriptionState};

/// How often an unchanged subscription health is written at most (successes in a row).
const HEALTH_WRITE_EVERY: Duration = Duration::from_secs(1);

/// A subscription's health, kept here between writes.
#[derive(Default)]
pub(super) struct Health {
    pub(super) states: HashMap<String, SubscriptionState>,
    pub(super) written: HashMap<String, Instant>,
}

/// Every subscription's state as the database holds it, by subscription.
pub(super) async fn stored_states(
    client: &deadpool_postgres::Object,
) -> Result<Vec<(String, SubscriptionState)>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {STATE_COLUMNS} FROM hookd_subscription_state ORDER BY subscription"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), state_of(r))).collect())
}

impl PgStore {
    /// Folds an attempt into its subscription's health; returns the state to write, when it
    /// changed or was last written a second ago.
    fn fold_health(
        &self,
        subscription: &str,
        attempt: &Attempt,
        at: i64,
    ) -> Option<SubscriptionState> {
        let mut health = lock(&self.health);
        let state = health.states.entry(subscription.to_string()).or_default();
        let before = (state.consecutive_failures, state.last_error.clone());
        state.fold(attempt.outcome, attempt.error.as_ref(), unms(at));
        let changed = before != (state.consecutive_failures, state.last_error.clone());
        let state = state.clone();
        let due = changed
            || health
                .written
                .get(subscription)
                .is_none_or(|w| w.elapsed() >= HEALTH_WRITE_EVERY);
        if due {
            health
                .written
                .insert(subscription.to_string(), Instant::now());
            Some(state)
        } else {
            None
        }
    }

    /// Folds a written outcome's attempt into its subscription's health, and writes the health
    /// when due ([`PgStore::fold_health`]).
    pub(super) async fn note_health(&self, subscription: &str, attempt: &Attempt, at: i64) {
        let Some(state) = self.fold_health(subscription, attempt, at) else {
            return;
        };
        // The outcome is written: a failed health write (kept here, written again with a
        // later outcome) must not lose the delivery now held in the slot.
        let wrote = match self.fast_client().await {
            Ok(client) => write_health(&client, subscription, &state).await,
            Err(e) => Err(e),
        };
        if let Err(e) = wrote {
            tracing::warn!(subscription, error = %e, "postgres: cannot write the subscription's health; written with a later outcome");
        }
    }

    /// Every subscription's state: the database's, with this node's latest health merged in.
    pub(super) async fn merged_states(
        &self,
    ) -> Result<HashMap<String, SubscriptionState>, StoreError> {
        let client = self.client().await?;
        let mut out: HashMap<String, SubscriptionState> =
            stored_states(&client).await?.into_iter().collect();
        // This node's latest health, not yet written, is merged with the database's (another
        // node's attempts), and this node's count goes on from the merge, so that its next
        // write does not take the failures in a row back to its own.
        for (id, state) in &mut lock(&self.health).states {
            let entry = out.entry(id.clone()).or_default();
            merge_health(state, entry);
            let (paused, disabled_ms, disabled_reason) = (
                entry.paused,
                entry.disabled_ms,
                entry.disabled_reason.clone(),
            );
            *entry = state.clone();
            // The switches are the database's: another node may have set them.
            entry.paused = paused;
            entry.disabled_ms = disabled_ms;
            entry.disabled_reason = disabled_reason;
        }
        Ok(out)
    }

    /// Forgets the health this node keeps of deleted subscriptions.
    pub(super) fn forget_health<S: AsRef<str>>(&self, subscriptions: &[S]) {
        let mut health = lock(&self.health);
        for id in subscriptions {
            health.states.remove(id.as_ref());
            health.written.remove(id.as_ref());
        }
    }

    /// Writes every subscription's health this node holds (at close: health is written at most
    /// once a second, so some is not written yet).
    pub(super) async fn write_all_health(&self) {
        let states: Vec<(String, SubscriptionState)> = lock(&self.health)
            .states
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Ok(client) = self.pool.get().await {
            for (sub, state) in states {
                let _ = write_health(&client, &sub, &state).await;
            }
        }
    }
}

/// Folds `other`'s health (another node's attempts) into `mine`, as [`write_health`] does in
/// the database: the later times win; the failures in a row are those of whichever saw the
/// later success, or the greater count when neither did.
fn merge_health(mine: &mut SubscriptionState, other: &SubscriptionState) {
    let (count, since) = match mine.last_success_ms.cmp(&other.last_success_ms) {
        std::cmp::Ordering::Greater => (mine.consecutive_failures, mine.failing_since_ms),
        std::cmp::Ordering::Less => (other.consecutive_failures, other.failing_since_ms),
        std::cmp::Ordering::Equal => (
            mine.consecutive_failures.max(other.consecutive_failures),
            match (mine.failing_since_ms, other.failing_since_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        ),
    };
    if other.last_failure_ms > mine.last_failure_ms {
        mine.last_error = other.last_error.clone();
    }
    mine.failing_since_ms = since;
    mine.consecutive_failures = count;
    mine.last_success_ms = mine.last_success_ms.max(other.last_success_ms);
    mine.last_failure_ms = mine.last_failure_ms.max(other.last_failure_ms);
}

/// Writes a subscription's health (not its pause switch); the later of two nodes' times wins.
/// The failures in a row are the writer's when it saw a later success than the database holds,
/// else the greater of the two: a node that has not yet read another's failures does not take
/// the count back (which would close an open breaker on every node).
async fn write_health(
    client: &deadpool_postgres::Object,
    subscription: &str,
    state: &SubscriptionState,
) -> Result<(), StoreError> {
    execute(client,
            "INSERT INTO hookd_subscription_state (subscription, last_success_ms, last_failure_ms, consecutive_failures, last_error, failing_since_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (subscription) DO UPDATE
             SET last_success_ms = greatest(hookd_subscription_state.last_success_ms, excluded.last_success_ms),
                 last_failure_ms = greatest(hookd_subscription_state.last_failure_ms, excluded.last_failure_ms),
                 consecutive_failures = CASE
                     WHEN coalesce(excluded.last_success_ms, -1) > coalesce(hookd_subscription_state.last_success_ms, -1)
                     THEN excluded.consecutive_failures
                     ELSE greatest(hookd_subscription_state.consecutive_failures, excluded.consecutive_failures) END,
                 last_error = excluded.last_error,
                 failing_since_ms = CASE WHEN excluded.failing_since_ms IS NULL THEN NULL
                     ELSE least(coalesce(hookd_subscription_state.failing_since_ms, excluded.failing_since_ms),
                                excluded.failing_since_ms) END",
            &[
                &subscription,
                &state.last_success_ms.map(ms),
                &state.last_failure_ms.map(ms),
                &i32::try_from(state.consecutive_failures).unwrap_or(i32::MAX),
                &state.last_error,
                &state.failing_since_ms.map(ms),
            ],
        )
        .await?;
    Ok(())
}

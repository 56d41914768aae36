//! Attempts' outcomes, applied by the writer a round at a time, and the subscriptions' health
//! they fold into (and an operator's changes to it).

use std::time::Instant;

use super::codec::DeliveryRecord;
use super::kv::Batch;
use super::layout::{delivery_key, encode_json, key};
use super::memory::Health;
use super::writer::{Recorded, Writer};
use super::{lock, DONE, HEALTH_WRITE_EVERY, PENDING, SUBSCRIPTION};
use crate::store::index::Id;
use crate::store::{Attempt, DeliveryState, Next, StoreError, SubscriptionState};

impl Writer {
    /// Applies a round's outcomes as one batch, answers them, then frees their slots and puts
    /// retries back in the index.
    pub(super) fn record_outcomes(&self, outcomes: Vec<Recorded>) {
        let mut batch = Batch::default();
        let mut applied = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let r = match self.pending(o.id) {
                Ok(Some(r)) => r,
                // Gone: only the slot is left to free.
                Ok(None) => {
                    applied.push((o.id, None, o.reply));
                    continue;
                }
                Err(e) => {
                    lock(&self.queue).index.unlease(o.id);
                    Recorded::answer(o.reply, o.id, Err(e));
                    continue;
                }
            };
            self.update_health(&mut batch, &r.subscription, &o.attempt, o.now_ms);
            let Recorded {
                id,
                attempt,
                next,
                now_ms,
                reply,
            } = o;
            let requeue = apply_outcome(&mut batch, id, r, attempt, next, now_ms);
            applied.push((id, requeue, reply));
        }
        let result = self.kv.apply_batch(batch).map_err(|e| e.to_string());
        let mut q = lock(&self.queue);
        for (id, requeue, reply) in applied {
            // Not applied: the lease stays, and the delivery is attempted again after a
            // restart, as for any attempt whose outcome was not recorded.
            if result.is_ok() {
                q.index.unlease(id);
                if let Some((bucket, due)) = requeue {
                    q.index.insert(&bucket, due, id);
                }
            }
            Recorded::answer(reply, id, result.clone().map_err(StoreError::Backend));
        }
    }

    /// Folds an attempt into its subscription's health. The record is written with the outcome
    /// when the failure count or the error changes; otherwise (successes in a row) at most once
    /// a second per subscription, at the end of a later round: health is for people, and
    /// rewriting it on every success cost a tenth of the writer's time.
    fn update_health(&self, batch: &mut Batch, subscription: &str, attempt: &Attempt, now_ms: u64) {
        let mut health = lock(&self.health);
        let state = health.states.entry(subscription.to_string()).or_default();
        let before = (state.consecutive_failures, state.last_error.clone());
        state.fold(attempt.outcome, attempt.error.as_ref(), now_ms);
        let changed = before != (state.consecutive_failures, state.last_error.clone());
        let due = changed
            || health
                .written
                .get(subscription)
                .is_none_or(|at| at.elapsed() >= HEALTH_WRITE_EVERY);
        if due {
            // Encoded only when written: successes in a row skip it.
            let encoded = encode_json(&health.states[subscription]);
            batch.insert(key(SUBSCRIPTION, subscription.as_bytes()), encoded);
            health
                .written
                .insert(subscription.to_string(), Instant::now());
            health.dirty.remove(subscription);
        } else {
            health.dirty.insert(subscription.to_string());
        }
    }

    /// Changes a subscription's state with `change` (an operator's switch, the breaker) and
    /// writes it at once.
    pub(super) fn write_state(
        &self,
        id: &str,
        change: impl FnOnce(&mut SubscriptionState),
    ) -> Result<(), StoreError> {
        let mut health = lock(&self.health);
        let state = health.states.entry(id.to_string()).or_default();
        change(state);
        self.kv
            .insert(key(SUBSCRIPTION, id.as_bytes()), encode_json(state))?;
        health.dirty.remove(id);
        Ok(())
    }

    /// Writes the health records changed since their last write more than a second ago.
    /// Returns whether it wrote any.
    pub(super) fn write_health(&self) -> Result<bool, StoreError> {
        let mut health = lock(&self.health);
        if health.dirty.is_empty() {
            return Ok(false);
        }
        let Health {
            states,
            written,
            dirty,
        } = &mut *health;
        let mut batch = Batch::default();
        let mut writes = 0;
        dirty.retain(|id| {
            let due = written
                .get(id)
                .is_none_or(|at| at.elapsed() >= HEALTH_WRITE_EVERY);
            if due {
                if let Some(state) = states.get(id) {
                    batch.insert(key(SUBSCRIPTION, id.as_bytes()), encode_json(state));
                    writes += 1;
                }
                written.insert(id.clone(), Instant::now());
            }
            !due
        });
        if writes > 0 {
            self.kv.apply_batch(batch)?;
        }
        Ok(writes > 0)
    }
}

/// Adds `attempt` to the record `r` of delivery `id`, in `batch`: a retry rewrites `P` with its
/// new due time, a delivered or dead delivery moves to `D`. Returns the bucket and due time a
/// retry goes back to the index with.
fn apply_outcome(
    batch: &mut Batch,
    id: Id,
    mut r: DeliveryRecord,
    attempt: Attempt,
    next: Next,
    now_ms: u64,
) -> Option<(String, u64)> {
    r.attempts.push(attempt);
    match next {
        Next::RetryAt(due) => {
            r.due_ms = due;
            batch.insert(delivery_key(PENDING, id), r.encode());
            Some((r.bucket, due))
        }
        Next::Delivered | Next::Dead => {
            r.state = if next == Next::Delivered {
                DeliveryState::Delivered
            } else {
                DeliveryState::Dead
            };
            r.due_ms = 0;
            r.finished_ms = Some(now_ms);
            batch.remove(delivery_key(PENDING, id));
            batch.insert(delivery_key(DONE, id), r.encode());
            None
        }
    }
}

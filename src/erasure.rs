//! Which deliveries are being sent at this moment, so that erasing an owner
//! (`DELETE /v1/owners/{owner}`) answers only once nothing it removed can still go out.
//!
//! The store removes the owner's records first: no claim hands them out after that. What was
//! claimed before is in one of two places: between its claim and its request, or sending.
//! An attempt task asks [`Sending::start`] just before it sends; the erasure then cancels the
//! removed ids ([`Sending::cancel_and_wait`]): a task that asks after that is refused, and one
//! that asked before is waited for. Either way, no request of an erased delivery starts after
//! the erasure's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a cancelled id is remembered: far longer than a claim waits before its request.
const CANCELLED_FOR: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Inner {
    /// Deliveries being sent now, by id (a count: a requeue may run one beside another).
    active: HashMap<String, usize>,
    /// Erased deliveries, and when they were erased.
    cancelled: HashMap<String, Instant>,
}

/// The registry of attempts under way on this node.
#[derive(Default)]
pub struct Sending {
    inner: Mutex<Inner>,
    /// Notified each time an attempt ends.
    ended: Notify,
}

/// Held while one attempt sends; dropping it ends the attempt.
pub struct SendGuard {
    sending: Arc<Sending>,
    id: String,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        {
            let mut inner = self.sending.lock();
            if let Some(n) = inner.active.get_mut(&self.id) {
                *n -= 1;
                if *n == 0 {
                    inner.active.remove(&self.id);
                }
            }
        }
        self.sending.ended.notify_waiters();
    }
}

impl Sending {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Both maps are whole between statements: a panic elsewhere cannot leave them torn.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called just before a delivery's request: `None` when the delivery was erased since its
    /// claim (send nothing); otherwise the guard to hold while sending.
    pub fn start(self: &Arc<Self>, delivery_id: &str) -> Option<SendGuard> {
        let mut inner = self.lock();
        if inner.cancelled.remove(delivery_id).is_some() {
            return None;
        }
        *inner.active.entry(delivery_id.to_string()).or_default() += 1;
        Some(SendGuard {
            sending: self.clone(),
            id: delivery_id.to_string(),
        })
    }

    /// Cancels the deliveries `ids` (removed from the store already) and waits, up to
    /// `deadline`, until none of them is being sent. Returns how many were still sending when
    /// the deadline passed (0 normally: an attempt ends within its timeout).
    pub async fn cancel_and_wait(&self, ids: &[String], deadline: Duration) -> usize {
        {
            let mut inner = self.lock();
            let now = Instant::now();
            inner
                .cancelled
                .retain(|_, at| now.duration_since(*at) < CANCELLED_FOR);
            for id in ids {
                if !inner.active.contains_key(id) {
                    inner.cancelled.insert(id.clone(), now);
                }
            }
        }
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so that an end between the two is not missed.
            ended.as_mut().enable();
            let still = {
                let inner = self.lock();
                ids.iter()
                    .filter(|id| inner.active.contains_key(*id))
                    .count()
            };
            if still == 0 {
                return 0;
            }
            if tokio::time::timeout_at(until, ended).await.is_err() {
                return still;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_erased_delivery_is_refused_and_one_sending_is_waited_for() {
        let sending = Arc::new(Sending::default());
        let guard = sending.start("dlv_a").expect("not erased");
        let waiter = {
            let sending = sending.clone();
            tokio::spawn(async move {
                sending
                    .cancel_and_wait(
                        &["dlv_a".to_string(), "dlv_b".to_string()],
                        Duration::from_secs(30),
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "answered while dlv_a was sending");
        // Claimed before the erasure, asking after it: refused.
        assert!(sending.start("dlv_b").is_none());
        drop(guard);
        assert_eq!(waiter.await.unwrap(), 0);
        // A delivery the erasure did not name goes on.
        assert!(sending.start("dlv_c").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_its_deadline() {
        let sending = Arc::new(Sending::default());
        let _guard = sending.start("dlv_a").expect("not erased");
        let still = sending
            .cancel_and_wait(&["dlv_a".to_string()], Duration::from_secs(5))
            .await;
        assert_eq!(still, 1);
    }
}

//! Claims and the leases this node holds: what it claims within its limits (the SQL is
//! `hookd_claim_owned`, schema_v2.sql and schema_v4.sql), gives back, and hands on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio_postgres::Row;

use super::pool::{execute, query};
use super::rows::delivery_of;
use super::writer::Followable;
use super::{lock, ms, PgStore};
use crate::store::{Claimed, DeliveryState, Limits, StoreError, ADHOC};

/// The buckets that may run, as the claim's columns: each with its limit on attempts in flight
/// and its rate (µs between attempts; 0: none).
#[derive(Default)]
struct Runnable<'a> {
    buckets: Vec<&'a str>,
    limits: Vec<i64>,
    rates: Vec<i64>,
}

impl<'a> Runnable<'a> {
    fn of(limits: &'a Limits) -> Runnable<'a> {
        let mut runnable = Runnable::default();
        let subscriptions = limits
            .subscriptions
            .keys()
            .map(String::as_str)
            .chain(std::iter::once(ADHOC));
        for subscription in subscriptions {
            if let Some(n) = bucket_limit(limits, subscription) {
                runnable.buckets.push(subscription);
                runnable.limits.push(i64::try_from(n).unwrap_or(i64::MAX));
                runnable.rates.push(
                    limits
                        .rates
                        .get(subscription)
                        .map_or(0, |&us| i64::try_from(us).unwrap_or(i64::MAX)),
                );
            }
        }
        runnable
    }
}

/// The limit of a bucket, by the scheduler's limits; `None`: it may not run.
fn bucket_limit(limits: &Limits, subscription: &str) -> Option<usize> {
    if limits.paused.contains(subscription) {
        return None;
    }
    if subscription == ADHOC {
        return Some(limits.adhoc_per_host);
    }
    limits.subscriptions.get(subscription).copied()
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Claims at most `max` due deliveries within the limits; returns them and when the next
    /// is due, if this node has room for it.
    pub(super) async fn claim_due(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        let limits = lock(&self.limits).clone();
        let (held, held_adhoc) = self.holding();
        let room = max.min(limits.global.saturating_sub(held));
        let adhoc_room = limits.adhoc_total.saturating_sub(held_adhoc);
        let rows = self.claim_rows(now_ms, &limits, adhoc_room, room).await?;
        let (claims, mut next, now) = self.hold_claimed(&rows, ms(now_ms));
        if self.options.db_clock {
            self.offset.store(now - ms(now_ms), Ordering::Relaxed);
        }
        if held + claims.len() >= limits.global {
            // No room: nothing is due for this node until an attempt finishes.
            next = None;
        }
        Ok((claims, next.map(|t| self.db_to_node(t))))
    }

    /// The deliveries this node holds (with the slots reserved for outcomes on their way), and
    /// how many of them are per-request.
    fn holding(&self) -> (usize, usize) {
        let h = lock(&self.held);
        let reserved = self.reserved.load(Ordering::Relaxed);
        (
            h.len() + reserved,
            h.values().filter(|(_, adhoc, _)| *adhoc).count(),
        )
    }

    /// The claim's rows: one per delivery leased, and one without a delivery that tells the
    /// database's time and when the next delivery is due.
    async fn claim_rows(
        &self,
        now_ms: u64,
        limits: &Limits,
        adhoc_room: usize,
        room: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let runnable = Runnable::of(limits);
        let lease_ms = i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        // One round trip, its own (durable) transaction: see schema_v2.sql and schema_v4.sql.
        Ok(query(
            &client,
            "SELECT * FROM hookd_claim_owned($1, $2, $3, $4, $5, $6, $7)",
            &[
                &self.now_param(now_ms),
                &runnable.buckets,
                &runnable.limits,
                &as_i64(adhoc_room),
                &as_i64(room),
                &lease_ms,
                &runnable.rates,
            ],
        )
        .await?)
    }

    /// Holds the deliveries of the claim's rows; returns them, when the next is due and the
    /// database's time (`now` when no row tells it).
    fn hold_claimed(&self, rows: &[Row], now: i64) -> (Vec<Claimed>, Option<i64>, i64) {
        let mut claims = Vec::new();
        let mut next: Option<i64> = None;
        let mut now = now;
        let mut held = lock(&self.held);
        for row in rows {
            now = row.get(12);
            if row.get::<_, Option<String>>(0).is_none() {
                next = row.get(13);
                continue;
            }
            let delivery = delivery_of(row, DeliveryState::InFlight, None, None);
            let token: i64 = row.get(10);
            held.insert(delivery.id.clone(), (token, delivery.adhoc.is_some(), now));
            let body = Bytes::from(row.get::<_, Vec<u8>>(11));
            claims.push(Claimed { delivery, body });
        }
        (claims, next, now)
    }

    /// Gives a held delivery back without an attempt, due at `due_ms`.
    pub(super) async fn release_held(
        &self,
        delivery_id: &str,
        due_ms: u64,
    ) -> Result<(), StoreError> {
        let Some((token, _, _)) = lock(&self.held).remove(delivery_id) else {
            return Ok(());
        };
        let client = self.fast_client().await?;
        execute(
            &client,
            "UPDATE hookd_queue SET leased = false, due_ms = $3 WHERE id = $1 AND lease_token = $2",
            &[&delivery_id, &token, &self.to_db(due_ms)],
        )
        .await?;
        Ok(())
    }

    /// Gives back every lease this node holds (at close): another node (or this one,
    /// restarted) takes them at once instead of after the lease.
    pub(super) async fn give_back_leases(&self) {
        let held: Vec<(String, i64, i64)> = lock(&self.held)
            .drain()
            .map(|(id, (token, _, at))| (id, token, at))
            .collect();
        if held.is_empty() {
            return;
        }
        let mut columns: (Vec<String>, Vec<i64>, Vec<i64>) = Default::default();
        for (id, token, at) in held {
            columns.0.push(id);
            columns.1.push(token);
            columns.2.push(at);
        }
        if let Ok(client) = self.pool.get().await {
            let _ = client
                .execute(
                    "UPDATE hookd_queue q SET leased = false, due_ms = h.at
                     FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS h(id, token, at)
                     WHERE q.id = h.id AND q.lease_token = h.token",
                    &[&columns.0, &columns.1, &columns.2],
                )
                .await;
        }
    }

    /// Takes the scheduler's limits, for claims and for the slots outcomes hand on.
    pub(super) fn apply_limits(&self, limits: Limits) {
        let mut follow = Followable {
            global: limits.global,
            lease_ms: i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX),
            ..Followable::default()
        };
        for (subscription, &n) in &limits.subscriptions {
            if subscription != ADHOC
                && !limits.rates.contains_key(subscription)
                && bucket_limit(&limits, subscription).is_some()
            {
                follow.subscriptions.push(subscription.clone());
                follow.limits.push(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        *lock(&self.follow) = Arc::new(follow);
        *lock(&self.limits) = limits;
    }
}

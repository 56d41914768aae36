//! The outcome writer: attempts' outcomes, written in batches by one task, and what a
//! delivered outcome's freed slot is handed on to.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_postgres::Row;

use super::pool::query;
use super::rows::{attempt_json, delivery_of};
use super::{lock, ms, PgStore, DB_NOW};
use crate::store::{Attempt, Claimed, DeliveryState, Next, StoreError};

/// Writers of the outcomes. One: while it waits for the database the next outcomes gather, and
/// the bigger batches cost PostgreSQL less per delivery than two writers' smaller ones
/// (a statement's fixed work, its commit and its WAL flush are shared by more rows). Measured
/// with `scripts/pg-profile.sh --drain`: 0.19–0.21 s of PostgreSQL CPU per 1000 deliveries
/// with two writers, 0.14–0.16 s with one, at the same rate (docs/benchmarks.md); and again
/// with 16 slots, 2026-12-07: 0.13–0.14 s with two, 0.09 s with one, and a longer wait for
/// each outcome.
pub(super) const OUTCOME_WRITERS: usize = 1;
/// Outcomes one statement writes at most.
const OUTCOME_BATCH: usize = 512;

/// An attempt's outcome on its way to the database, and where its answer goes.
pub(super) struct PendingOutcome {
    id: String,
    token: i64,
    /// A retry, due this many ms after now; `None`: finished.
    delay: Option<i64>,
    dead: bool,
    now: Option<i64>,
    history: Value,
    error: Option<String>,
    /// Hand the freed slot on, within these limits (a delivered outcome only).
    follow: Option<Arc<Followable>>,
    reply: tokio::sync::oneshot::Sender<Result<Written, StoreError>>,
}

/// What the outcome writer answers for one outcome.
#[derive(Default)]
pub(super) struct Written {
    /// The subscription and the time the outcome was written at; `None` when the lease token
    /// no longer matched.
    recorded: Option<(String, i64)>,
    /// The delivery leased in its freed slot, its lease token and the database's time.
    next: Option<(Claimed, i64, i64)>,
}

/// The subscriptions a freed slot may be handed on within: configured, not paused, not
/// rate-limited (a rate-limited one takes turns through claims), with their limits.
#[derive(Default)]
pub(super) struct Followable {
    pub(super) subscriptions: Vec<String>,
    pub(super) limits: Vec<i64>,
    /// The node's limit on attempts in flight.
    pub(super) global: usize,
    pub(super) lease_ms: i64,
}

impl PgStore {
    /// Records an outcome through the outcome writer; with `follow`, a delivered outcome's
    /// slot may come back with the next delivery of its subscription in it (see
    /// [`finish_sql`]).
    pub(super) async fn record(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
        follow: bool,
    ) -> Result<Option<Claimed>, StoreError> {
        let Some((token, follow)) = self.unhold(delivery_id, next, follow) else {
            tracing::warn!(
                delivery_id,
                "postgres: outcome of a delivery this node does not hold; ignored"
            );
            return Ok(None);
        };
        let following = follow.is_some();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let outcome = PendingOutcome {
            id: delivery_id.to_string(),
            token,
            delay: match next {
                Next::RetryAt(due) => Some(ms(due).saturating_sub(ms(now_ms))),
                _ => None,
            },
            dead: next == Next::Dead,
            now: self.now_param(now_ms),
            history: attempt_json(&attempt),
            error: attempt.error.clone(),
            follow,
            reply,
        };
        lock(&self.outcomes).push(outcome);
        self.outcome_ready.notify_one();
        let answered = answer.await.map_err(|_| StoreError::Closed);
        let written = self.settle(answered, following)?;
        let Some((subscription, at)) = written.recorded else {
            self.stale.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                delivery_id,
                "postgres: outcome refused: the lease passed to another claim (this node stalled past it)"
            );
            return Ok(None);
        };
        self.note_health(&subscription, &attempt, at).await;
        Ok(written.next.map(|(claimed, _, _)| claimed))
    }

    /// Lets go of a delivery whose attempt ended: its lease token, and, when its slot may be
    /// handed on, the limits to hand it on within (the slot reserved meanwhile). `None`: this
    /// node does not hold it.
    fn unhold(
        &self,
        delivery_id: &str,
        next: Next,
        follow: bool,
    ) -> Option<(i64, Option<Arc<Followable>>)> {
        let mut held = lock(&self.held);
        let (token, adhoc, _) = held.remove(delivery_id)?;
        let follow = if follow && next == Next::Delivered && !adhoc {
            let limits = lock(&self.follow).clone();
            // The slot is handed on only while the node is below its own limit: at it,
            // other subscriptions may be waiting for a slot, and the claim decides in due
            // order.
            let before = held.len() + 1 + self.reserved.load(Ordering::Relaxed);
            (before < limits.global).then(|| {
                self.reserved.fetch_add(1, Ordering::Relaxed);
                limits
            })
        } else {
            None
        };
        Some((token, follow))
    }

    /// Takes the writer's answer: the reservation ends with it, whatever it is, and a delivery
    /// in the slot is held from here.
    fn settle(
        &self,
        answered: Result<Result<Written, StoreError>, StoreError>,
        following: bool,
    ) -> Result<Written, StoreError> {
        let mut held = lock(&self.held);
        if following {
            self.reserved.fetch_sub(1, Ordering::Relaxed);
        }
        let written = answered??;
        if let Some((claimed, token, at)) = &written.next {
            held.insert(claimed.delivery.id.clone(), (*token, false, *at));
        }
        Ok(written)
    }
}

/// Writes attempt outcomes in batches: every outcome waiting becomes part of one statement for
/// the retries and one for the finished deliveries, each row only if its lease token still
/// matches. Many attempts finishing together cost a couple of round trips, not one each.
///
/// A batch that hands slots on is written on a durable connection: a lease a database crash
/// forgot would let a second attempt start beside the first (see [`PgStore::fast`]). The
/// writer keeps one such connection while outcomes keep coming ([`write_while_waiting`]).
pub(super) async fn write_outcomes(
    durable: Pool,
    fast: Pool,
    queue: Arc<Mutex<Vec<PendingOutcome>>>,
    ready: Arc<Notify>,
) {
    loop {
        if lock(&queue).is_empty() {
            ready.notified().await;
            continue;
        }
        let client = match durable.get().await {
            Ok(client) => client,
            Err(e) => {
                // Every outcome waiting gets the error; the attempts' tasks decide.
                if let Some(batch) = next_batch(&queue, &ready) {
                    let e = StoreError::from(e);
                    for o in batch {
                        let _ = o.reply.send(Err(StoreError::Backend(e.to_string())));
                    }
                }
                continue;
            }
        };
        write_while_waiting(&client, &fast, &queue, &ready).await;
    }
}

/// Writes batches on `client`, one at a time, until no outcome waits or the connection broke
/// (the writer then takes another).
///
/// The writer keeps its connection while outcomes keep coming instead of taking one from the
/// pool for each batch. Measured with the ceiling bench (`--only postgres`, the same binary
/// with and without, 2026-12-07): batched delivery 6,415 -> 8,777/s, PostgreSQL CPU 0.124 ->
/// 0.089 s per 1000 deliveries, single events unchanged (2,068 and 2,062/s). Two batches in
/// flight on it (the next sent while the last commits) did as well on batched delivery
/// (8,600-9,000/s) but halved the single-event phase (2,800 -> 1,150/s, twice the
/// PostgreSQL CPU per delivery), for a reason not found yet: not kept
/// (docs/benchmarks/pg-profile-2026-12-07.txt).
async fn write_while_waiting(
    client: &deadpool_postgres::Object,
    fast: &Pool,
    queue: &Mutex<Vec<PendingOutcome>>,
    ready: &Notify,
) {
    while !client.is_closed() {
        let Some(batch) = next_batch(queue, ready) else {
            return;
        };
        write_batch(client, fast, batch).await;
    }
}

/// Writes one batch: its retries, then its finished deliveries, and answers each outcome.
async fn write_batch(durable: &deadpool_postgres::Object, fast: &Pool, batch: Vec<PendingOutcome>) {
    let (retries, finished): (Vec<PendingOutcome>, Vec<PendingOutcome>) =
        batch.into_iter().partition(|o| o.delay.is_some());
    for (part, is_retry) in [(retries, true), (finished, false)] {
        if !part.is_empty() {
            write_part(durable, fast, part, is_retry).await;
        }
    }
}

/// The next batch of waiting outcomes; `None` when none waits.
fn next_batch(queue: &Mutex<Vec<PendingOutcome>>, ready: &Notify) -> Option<Vec<PendingOutcome>> {
    let batch: Vec<PendingOutcome> = {
        let mut q = lock(queue);
        let n = q.len().min(OUTCOME_BATCH);
        q.drain(..n).collect()
    };
    if batch.is_empty() {
        return None;
    }
    if !lock(queue).is_empty() {
        // More than one batch waits: the writer takes the next at once (or another writer does).
        ready.notify_one();
    }
    Some(batch)
}

/// Writes one part of a batch (its retries, or its finished deliveries) and answers each of
/// its outcomes: on the durable connection when it hands slots on, else on one whose commits
/// do not wait for the disk.
async fn write_part(
    durable: &deadpool_postgres::Object,
    fast: &Pool,
    part: Vec<PendingOutcome>,
    is_retry: bool,
) {
    let result = if part.iter().any(|o| o.follow.is_some()) {
        write_on(durable, &part, is_retry).await
    } else {
        match fast.get().await {
            Ok(client) => write_on(&client, &part, is_retry).await,
            Err(e) => Err(StoreError::from(e)),
        }
    };
    match result {
        Ok(mut written) => {
            for o in part {
                let _ = o.reply.send(Ok(written.remove(&o.id).unwrap_or_default()));
            }
        }
        Err(e) => {
            for o in part {
                let _ = o.reply.send(Err(StoreError::Backend(e.to_string())));
            }
        }
    }
}

async fn write_on(
    client: &deadpool_postgres::Object,
    part: &[PendingOutcome],
    is_retry: bool,
) -> Result<HashMap<String, Written>, StoreError> {
    if is_retry {
        write_retries(client, part).await
    } else {
        write_finished(client, part).await
    }
}

/// The columns every outcome of a batch has.
struct Columns<'a> {
    ids: Vec<&'a str>,
    tokens: Vec<i64>,
    errors: Vec<Option<&'a str>>,
    histories: Vec<&'a Value>,
    /// All outcomes of one node share its clock: the first one's `now` stands for the batch.
    now: Option<i64>,
}

impl<'a> Columns<'a> {
    fn of(part: &'a [PendingOutcome]) -> Columns<'a> {
        Columns {
            ids: part.iter().map(|o| o.id.as_str()).collect(),
            tokens: part.iter().map(|o| o.token).collect(),
            errors: part.iter().map(|o| o.error.as_deref()).collect(),
            histories: part.iter().map(|o| &o.history).collect(),
            now: part.first().and_then(|o| o.now),
        }
    }
}

/// A batch of retries: each row due again after its delay; returns what was written, by
/// delivery id.
async fn write_retries(
    client: &deadpool_postgres::Object,
    part: &[PendingOutcome],
) -> Result<HashMap<String, Written>, StoreError> {
    let c = Columns::of(part);
    let delays: Vec<i64> = part.iter().map(|o| o.delay.unwrap_or(0)).collect();
    let rows = query(
        client,
        &format!(
            "WITH now AS (SELECT coalesce($6::bigint, {DB_NOW}) AS t)
                 UPDATE hookd_queue q SET leased = false, due_ms = now.t + x.delay,
                     attempts = q.attempts + 1, last_error = x.err, history = q.history || x.h
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::jsonb[])
                     AS x(id, token, delay, err, h), now
                 WHERE q.id = x.id AND q.lease_token = x.token
                 RETURNING q.id, q.subscription, now.t"
        ),
        &[&c.ids, &c.tokens, &delays, &c.errors, &c.histories, &c.now],
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let recorded = Some((r.get(1), r.get(2)));
            let next = None;
            (r.get::<_, String>(0), Written { recorded, next })
        })
        .collect())
}

/// A batch of finished deliveries, by [`finish_sql`]; returns what was written, by delivery
/// id, with the deliveries leased in freed slots handed to the outcomes that asked.
async fn write_finished(
    client: &deadpool_postgres::Object,
    part: &[PendingOutcome],
) -> Result<HashMap<String, Written>, StoreError> {
    let c = Columns::of(part);
    let dead: Vec<bool> = part.iter().map(|o| o.dead).collect();
    let follow: Vec<bool> = part.iter().map(|o| o.follow.is_some()).collect();
    // The latest limits among the batch's stand for it.
    let limits = part
        .iter()
        .rev()
        .find_map(|o| o.follow.clone())
        .unwrap_or_default();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &c.ids,
        &c.tokens,
        &dead,
        &c.errors,
        &c.histories,
        &c.now,
        &follow,
        &limits.subscriptions,
        &limits.limits,
        &limits.lease_ms,
    ];
    let rows = query(client, &finish_sql(), &params).await?;
    let (mut written, mut leased) = sort_finished(&rows);
    for o in part.iter().filter(|o| o.follow.is_some()) {
        if let Some(w) = written.get_mut(&o.id) {
            if let Some((subscription, _)) = &w.recorded {
                w.next = leased.get_mut(subscription).and_then(Vec::pop);
            }
        }
    }
    Ok(written)
}

/// The deliveries leased in freed slots, by subscription: each with its lease token and the
/// database's time.
type Leased = HashMap<String, Vec<(Claimed, i64, i64)>>;

/// The rows of [`finish_sql`], sorted: the finished deliveries by id, and the deliveries leased
/// in freed slots by subscription.
fn sort_finished(rows: &[Row]) -> (HashMap<String, Written>, Leased) {
    let mut written: HashMap<String, Written> = HashMap::new();
    let mut leased = Leased::new();
    for row in rows {
        let id: String = row.get(0);
        let at: i64 = row.get(12);
        if row.get::<_, Option<String>>(1).is_none() {
            let recorded = Some((row.get(3), at));
            written.insert(
                id,
                Written {
                    recorded,
                    next: None,
                },
            );
        } else {
            let delivery = delivery_of(row, DeliveryState::InFlight, None, None);
            let body = Bytes::from(row.get::<_, Vec<u8>>(11));
            leased
                .entry(delivery.subscription.clone())
                .or_default()
                .push((Claimed { delivery, body }, row.get(10), at));
        }
    }
    (written, leased)
}

/// Finished deliveries move to `hookd_done`, and each one that asks hands its slot on to the
/// next due delivery of its subscription, leased in the same statement. A slot handed on
/// leaves the subscription's count of attempts in flight as it was, so no claim's lock is
/// needed: at most as many are leased as were freed (fewer when the subscription is above its
/// limit, after the limit was lowered), whatever other claims do meanwhile. Rows come back in
/// the claim's columns; a finished delivery's has no event id, and column 12 is the time.
///
/// The count of a subscription's leases stops at the most that matters: with the LIMIT the
/// planner walks `hookd_queue_leased` with a plain index scan, which marks the entries of
/// deleted rows dead as it passes them (a bitmap scan, its choice without the LIMIT, visits
/// every delivered row's entry again on every count until vacuum comes).
fn finish_sql() -> String {
    format!(
        "WITH now AS (SELECT coalesce($6::bigint, {DB_NOW}) AS t),
         x AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::text[], $5::jsonb[],
                                    $7::bool[]) AS x(id, token, dead, err, h, follow)),
         gone AS (
             DELETE FROM hookd_queue q USING x WHERE q.id = x.id AND q.lease_token = x.token
             RETURNING q.*, x.dead AS x_dead, x.err AS x_err, x.h AS x_h, x.follow AS x_follow
         ),
         done AS (
             INSERT INTO hookd_done (id, event_id, event_type, subscription, bucket, adhoc_url,
                 adhoc_secret, dead, attempts, created_ms, finished_ms, last_error, history, owner)
             SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                 x_dead, attempts + 1, created_ms, now.t, CASE WHEN x_dead THEN x_err END,
                 history || x_h, owner
             FROM gone, now
             RETURNING id, subscription, finished_ms
         ),
         freed AS (
             SELECT g.subscription AS s, l.lim,
                    count(*) FILTER (WHERE g.x_follow) AS k, count(*) AS n
             FROM gone g
             CROSS JOIN now
             JOIN unnest($8::text[], $9::bigint[]) AS l(s, lim) ON l.s = g.subscription
             WHERE g.bucket = g.subscription AND g.leased AND g.due_ms > now.t
             GROUP BY g.subscription, l.lim
         ),
         room AS (
             SELECT f.s, least(f.k, f.lim + f.n - (SELECT count(*) FROM (
                                                       SELECT FROM hookd_queue q
                                                       WHERE q.leased AND q.due_ms > now.t
                                                         AND q.bucket = f.s
                                                       LIMIT f.lim + f.n) c)) AS n
             FROM freed f, now WHERE f.k > 0
         ),
         pick AS (
             SELECT c.id FROM room r CROSS JOIN now
             CROSS JOIN LATERAL (SELECT q.id FROM hookd_queue q
                                 WHERE q.subscription = r.s AND q.due_ms <= now.t
                                   AND q.id <> ALL($1::text[])
                                 ORDER BY q.due_ms LIMIT greatest(r.n, 0)
                                 FOR UPDATE SKIP LOCKED) c
         ),
         lease AS (
             UPDATE hookd_queue q
             SET leased = true, lease_token = q.lease_token + 1, due_ms = now.t + $10::bigint
             FROM pick, now WHERE q.id = pick.id
             RETURNING q.id, q.event_id, q.event_type, q.subscription, q.bucket, q.adhoc_url,
                       q.adhoc_secret, q.attempts, q.created_ms, q.last_error, q.lease_token,
                       q.owner
         )
         SELECT d.id, NULL::text, NULL::text, d.subscription, NULL::text, NULL::text, NULL::text,
                NULL::integer, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, d.finished_ms,
                NULL::text AS owner
         FROM done d
         UNION ALL
         SELECT l.id, l.event_id, l.event_type, l.subscription, l.bucket, l.adhoc_url,
                l.adhoc_secret, l.attempts, l.created_ms, l.last_error, l.lease_token, e.body, now.t,
                l.owner
         FROM lease l JOIN hookd_events e ON e.id = l.event_id CROSS JOIN now"
    )
}

//! The PostgreSQL engine: one queue that several hookd nodes share (docs/scaling.md).
//!
//! # Layout (schema_v1.sql)
//!
//! - `hookd_events`: accepted events; `(request_id, status)` is unique (idempotency).
//! - `hookd_queue`: unfinished deliveries only. A claimed row is `leased`, and its `due_ms` is
//!   the lease's end: a row whose lease ran out is simply due again (no reaper, no leader).
//!   Every claim bumps `lease_token`; an outcome is recorded only with its claim's token, so a
//!   node that stalled past its lease cannot overwrite the attempt of the node that took over.
//! - `hookd_done`: finished deliveries with their attempts, partitioned by day of finishing:
//!   retention drops whole partitions.
//! - `hookd_subscription_state`, `hookd_subscriptions`, `hookd_meta`.
//!
//! # Claims
//!
//! One short transaction: the in-flight count of every bucket with live leases, then the due
//! rows of runnable buckets not at their limit (`FOR UPDATE SKIP LOCKED`, earliest due first),
//! then a transaction-scoped advisory lock per bucket taken (`pg_try_advisory_xact_lock`: a
//! bucket another node is claiming from is skipped this turn), its in-flight count read again
//! under the lock, and the rows within its limit leased. So a subscription's `max_in_flight`
//! holds across every node. No transaction stays open across an HTTP attempt.
//!
//! Under a backlog most slots never go back to a claim: the outcome writer's statement for
//! delivered outcomes leases each one's successor in its subscription ([`finish_sql`](writer::finish_sql)), which
//! leaves the count of leases as it was and so needs no lock.
//!
//! # Time
//!
//! With `db_clock` (every real node), the database's clock decides what is due: a node's own
//! times are used only as differences (a retry in 60 s is due 60 s after the database's now),
//! so a node whose clock is an hour off delivers nothing early. Without it (the conformance
//! suite), the times passed in are used as they are.
//!
//! # Files
//!
//! - `pool`: connection strings, TLS, the two pools, and the statement helpers.
//! - `migrate`: the schema migrations (`schema_v*.sql`).
//! - `ingest`, `claim`, `writer` (attempt outcomes), `requeue`, `retention`: the queue's
//!   steps; `partitions`: the days of `hookd_done`.
//! - `health`: subscriptions' health, shared through the database.
//! - `backlog`: the count of unfinished deliveries; `listen`: nodes telling each other of new
//!   work.
//! - `rows`: rows into the store's types; `listing`, `portable`, `erase`: the admin API's
//!   reads, export and import, and erasure.
//! - `audit`: the audit log (`hookd_audit`, schema_v9.sql).
//! - `queue` and `admin`: the `QueueStore` and `AdminStore` impls, one block each.

mod admin;
mod audit;
mod backlog;
mod claim;
mod erase;
mod health;
mod ingest;
mod listen;
mod listing;
mod migrate;
mod partitions;
mod pool;
mod portable;
mod queue;
mod requeue;
mod retention;
mod rows;
mod writer;

pub use migrate::migrate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use super::{Limits, StoreError};
use backlog::Unfinished;
use health::Health;
use writer::{Followable, PendingOutcome};

/// `now` in Unix ms by the database's clock.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How to open the engine.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A connection string (`postgres://…` or `host=… dbname=…`).
    pub url: String,
    pub pool_size: usize,
    /// How long a claim holds a delivery: longer than any attempt can take.
    pub lease: Duration,
    /// Decide by the database's clock (see the module's docs). Off only for tests that drive
    /// time by hand.
    pub db_clock: bool,
}

pub struct PgStore {
    /// Connections for what must be durable when it returns: ingest, the operator's changes.
    pool: Pool,
    /// Connections with `synchronous_commit = off`, for outcomes and releases: what a database
    /// crash may forget (the last few hundred ms), which at-least-once allows — a forgotten
    /// outcome makes the attempt again, after the first has ended — as sled's lazily flushed
    /// outcomes do. Claims are durable: a lost claim would let a second attempt start beside
    /// the first.
    fast: Pool,
    /// Asks the announcer to tell other nodes of new work.
    announce: Arc<Notify>,
    /// Outcomes waiting for the outcome writer, and its wake-up.
    outcomes: Arc<Mutex<Vec<PendingOutcome>>>,
    outcome_ready: Arc<Notify>,
    options: PgOptions,
    /// The database's clock minus the node's, in ms, as last measured by a claim.
    offset: AtomicI64,
    limits: Mutex<Limits>,
    /// The deliveries this node holds: lease token, per-request or not, when claimed (the
    /// database's time).
    held: Mutex<HashMap<String, (i64, bool, i64)>>,
    /// Unfinished deliveries, as last counted (plus this node's changes since).
    unfinished: Arc<Unfinished>,
    health: Mutex<Health>,
    /// Woken when another node announces new deliveries.
    waker: Arc<Mutex<Option<Arc<Notify>>>>,
    /// Outcomes refused because another claim took the delivery over.
    stale: AtomicU64,
    /// What an outcome's freed slot may be handed on to (from the limits).
    follow: Mutex<Arc<Followable>>,
    /// Slots of outcomes on their way to the database that may come back with a delivery in
    /// them: counted as held, so that a claim meanwhile keeps the node within its limit.
    reserved: AtomicUsize,
    closed: AtomicBool,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl PgStore {
    /// Connects, applies the migrations, and starts the listener for other nodes' new
    /// deliveries and the unfinished-count refresher.
    pub async fn open(options: PgOptions) -> Result<Arc<PgStore>, StoreError> {
        migrate(&options.url).await?;
        let store = Arc::new(PgStore::connect(options)?);
        {
            // What the node starts from: every subscription's health, and the backlog.
            let client = store.client().await?;
            let states = health::stored_states(&client).await?;
            lock(&store.health).states.extend(states);
            store.unfinished.opened_with(backlog::count(&client).await?);
        }
        store.start_tasks();
        Ok(store)
    }

    /// The store over its two pools, before anything is read.
    fn connect(options: PgOptions) -> Result<PgStore, StoreError> {
        let config = pool::parse_config(&options.url)?;
        let mut lazy = config.clone();
        lazy.options("-c synchronous_commit=off");
        let pool = pool::make_pool(config, options.pool_size.max(1))?;
        let fast = pool::make_pool(lazy, options.pool_size.max(1))?;
        Ok(PgStore {
            pool,
            fast,
            announce: Arc::new(Notify::new()),
            outcomes: Arc::new(Mutex::new(Vec::new())),
            outcome_ready: Arc::new(Notify::new()),
            options,
            offset: AtomicI64::new(0),
            limits: Mutex::new(Limits::default()),
            held: Mutex::new(HashMap::new()),
            unfinished: Arc::new(Unfinished::default()),
            health: Mutex::new(Health::default()),
            waker: Arc::new(Mutex::new(None)),
            stale: AtomicU64::new(0),
            follow: Mutex::new(Arc::new(Followable::default())),
            reserved: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
        })
    }

    /// Starts the background tasks: the backlog count, the announcer and the listener of new
    /// work, the partitions' upkeep and the outcome writers.
    fn start_tasks(&self) {
        // The tasks hold pools, not the store: closing it leaves its owner the only holder.
        let counter = tokio::spawn(backlog::count_unfinished(
            self.fast.clone(),
            self.unfinished.clone(),
        ));
        let announcer = tokio::spawn(listen::announce(self.fast.clone(), self.announce.clone()));
        let partitions = tokio::spawn(partitions::maintain_partitions(self.pool.clone()));
        let listener = tokio::spawn(listen::listen(self.options.url.clone(), self.waker.clone()));
        let writers: Vec<_> = (0..writer::OUTCOME_WRITERS)
            .map(|_| {
                tokio::spawn(writer::write_outcomes(
                    self.pool.clone(),
                    self.fast.clone(),
                    self.outcomes.clone(),
                    self.outcome_ready.clone(),
                ))
            })
            .collect();
        lock(&self.background).extend([counter, listener, announcer, partitions]);
        lock(&self.background).extend(writers);
    }

    /// Gives back the leases this node holds, writes the health not written yet, and stops
    /// the background tasks and the pools.
    async fn shut_down(&self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.give_back_leases().await;
        self.write_all_health().await;
        self.closed.store(true, Ordering::SeqCst);
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        self.pool.close();
        self.fast.close();
    }

    /// Where to announce that other nodes have new work: the scheduler's wake-up.
    pub fn set_waker(&self, waker: Arc<Notify>) {
        *lock(&self.waker) = Some(waker);
    }

    /// Outcomes refused because the delivery's lease had passed to another claim.
    pub fn stale_outcomes(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Dead row versions in the live queue table, as PostgreSQL's statistics count them: what
    /// a long-open transaction elsewhere keeps vacuum from removing.
    pub async fn queue_dead_rows(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: Option<i64> = client
            .query_one(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'hookd_queue'",
                &[],
            )
            .await?
            .get(0);
        Ok(unms(n.unwrap_or(0)))
    }

    /// The `now` parameter of a statement: the caller's time, or `None` for the database's
    /// clock (`coalesce($n, DB_NOW)` in the SQL).
    fn now_param(&self, now_ms: u64) -> Option<i64> {
        (!self.options.db_clock).then(|| ms(now_ms))
    }

    /// A caller's absolute time as the database's.
    fn to_db(&self, t: u64) -> i64 {
        if self.options.db_clock {
            ms(t).saturating_add(self.offset.load(Ordering::Relaxed))
        } else {
            ms(t)
        }
    }

    /// A database time as the caller's.
    fn db_to_node(&self, t: i64) -> u64 {
        if self.options.db_clock {
            unms(t.saturating_sub(self.offset.load(Ordering::Relaxed)))
        } else {
            unms(t)
        }
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is replaced whole: a poisoned one is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

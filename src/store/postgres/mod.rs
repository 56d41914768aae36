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
//! delivered outcomes leases each one's successor in its subscription ([`finish_sql`]), which
//! leaves the count of leases as it was and so needs no lock.
//!
//! # Time
//!
//! With `db_clock` (every real node), the database's clock decides what is due: a node's own
//! times are used only as differences (a retry in 60 s is due 60 s after the database's now),
//! so a node whose clock is an hour off delivers nothing early. Without it (the conformance
//! suite), the times passed in are used as they are.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{
    delivery_id_string, event_id_string, new_delivery_id, Attempt, Claimed, Delivery,
    DeliveryFilter, DeliveryState, Erased, EventMeta, IngestError, Ingested, Limits, Next, Outcome,
    PendingStats, Portable, RequeueError, StoreError, StoredSubscription, SubscriptionState,
    Switch, Target, ADHOC,
};
use crate::event::{AdhocTarget, NewEvent};

/// The schema versions, in order; each is applied once, in one transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("schema_v1.sql")),
    (2, include_str!("schema_v2.sql")),
    (3, include_str!("schema_v3.sql")),
    (4, include_str!("schema_v4.sql")),
    (5, include_str!("schema_v5.sql")),
    (6, include_str!("schema_v6.sql")),
    (7, include_str!("schema_v7.sql")),
    (8, include_str!("schema_v8.sql")),
];
/// The advisory lock migrations hold: nodes starting together apply them once.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6400_0001;
/// The channel new deliveries are announced on.
const CHANNEL: &str = "hookd_due";
/// `now` in Unix ms by the database's clock.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
/// A day, the span of one `hookd_done` partition.
const DAY_MS: i64 = 86_400_000;
/// Finished deliveries a bulk requeue moves per transaction.
const BULK_CHUNK: i64 = 1000;
/// How often the partitions of `hookd_done` are made ahead of need.
const PARTITIONS_EVERY: Duration = Duration::from_secs(600);
/// How often the cached count of unfinished deliveries is read again.
const COUNT_EVERY: Duration = Duration::from_millis(500);
/// How often an unchanged subscription health is written at most (successes in a row).
const HEALTH_WRITE_EVERY: Duration = Duration::from_secs(1);

/// Runs `sql` as a statement prepared once per connection: parsed and planned once, not on every
/// run, and one round trip per run instead of two. For the statements of the delivery path; a
/// statement built from filters stays unprepared (each form would be cached for good).
async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// [`query`] for a statement whose rows are not needed: the number of rows it changed.
async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres: {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Backend(format!("postgres pool: {e}"))
    }
}

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

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The TLS mode of a connection string: `sslmode` when given; otherwise off for loopback and
/// Unix-socket hosts and required elsewhere.
fn tls_config(config: &mut tokio_postgres::Config, url: &str) {
    use tokio_postgres::config::{Host, SslMode};
    if url.contains("sslmode") {
        return;
    }
    let local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    config.ssl_mode(if local {
        SslMode::Disable
    } else {
        SslMode::Require
    });
}

fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
        .with_platform_verifier()
        .map_err(|e| StoreError::Backend(format!("TLS roots: {e}")))?
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn parse_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Backend(format!("storage.url: {e}")))?;
    tls_config(&mut config, url);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("hookd");
    Ok(config)
}

/// Applies the schema migrations not applied yet, under an advisory lock; returns the schema
/// version before and after.
pub async fn migrate(url: &str) -> Result<(i64, i64), StoreError> {
    let config = parse_config(url)?;
    let (mut client, connection) = config.connect(tls()?).await?;
    let driver = tokio::spawn(connection);
    let result = migrate_with(&mut client).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn migrate_with(client: &mut tokio_postgres::Client) -> Result<(i64, i64), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        let exists: bool = client
            .query_one("SELECT to_regclass('hookd_meta') IS NOT NULL", &[])
            .await?
            .get(0);
        let before: i64 = if exists {
            client
                .query_opt("SELECT value FROM hookd_meta WHERE key = 'schema_version'", &[])
                .await?
                .map(|r| r.get::<_, Vec<u8>>(0))
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if before > latest {
            return Err(StoreError::Backend(format!(
                "the database's hookd schema is version {before}, newer than this hookd knows ({latest}): upgrade hookd"
            )));
        }
        let mut now = before;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > before) {
            let tx = client.transaction().await?;
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO hookd_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&version.to_string().into_bytes()],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(version, "postgres: schema migration applied");
            now = *version;
        }
        Ok((before, now))
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

/// A subscription's health, kept here between writes.
#[derive(Default)]
struct Health {
    states: HashMap<String, SubscriptionState>,
    written: HashMap<String, std::time::Instant>,
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
        let config = parse_config(&options.url)?;
        let mut lazy = config.clone();
        lazy.options("-c synchronous_commit=off");
        let pool = make_pool(config, options.pool_size.max(1))?;
        let fast = make_pool(lazy, options.pool_size.max(1))?;
        let store = Arc::new(PgStore {
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
        });
        {
            let client = store.client().await?;
            let states = client
                .query(
                    &format!("SELECT {STATE_COLUMNS} FROM hookd_subscription_state"),
                    &[],
                )
                .await?;
            {
                let mut health = lock(&store.health);
                for row in states {
                    health.states.insert(row.get(0), state_of(&row));
                }
            }
            let n: i64 = client
                .query_one("SELECT count(*) FROM hookd_queue", &[])
                .await?
                .get(0);
            store.unfinished.counted(
                n,
                0,
                &Snapshot {
                    xmin: 0,
                    xmax: 0,
                    in_progress: Vec::new(),
                },
            );
        }
        // The tasks hold pools, not the store: closing it leaves its owner the only holder.
        let counter = tokio::spawn(count_unfinished(
            store.fast.clone(),
            store.unfinished.clone(),
        ));
        let announcer = tokio::spawn(announce(store.fast.clone(), store.announce.clone()));
        let partitions = tokio::spawn(maintain_partitions(store.pool.clone()));
        let listener = tokio::spawn(listen(store.options.url.clone(), store.waker.clone()));
        let writers: Vec<_> = (0..OUTCOME_WRITERS)
            .map(|_| {
                tokio::spawn(write_outcomes(
                    store.pool.clone(),
                    store.fast.clone(),
                    store.outcomes.clone(),
                    store.outcome_ready.clone(),
                ))
            })
            .collect();
        lock(&store.background).extend([counter, listener, announcer, partitions]);
        lock(&store.background).extend(writers);
        Ok(store)
    }

    /// Records an outcome through the outcome writer; with `follow`, a delivered outcome's
    /// slot may come back with the next delivery of its subscription in it (see
    /// [`finish_sql`]).
    async fn record(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
        follow: bool,
    ) -> Result<Option<Claimed>, StoreError> {
        let (token, follow) = {
            let mut held = lock(&self.held);
            let Some((token, adhoc, _)) = held.remove(delivery_id) else {
                tracing::warn!(
                    delivery_id,
                    "postgres: outcome of a delivery this node does not hold; ignored"
                );
                return Ok(None);
            };
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
            (token, follow)
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
        let written = {
            // The reservation ends with the answer, whatever it is: a delivery in the slot
            // is held from here.
            let mut held = lock(&self.held);
            if following {
                self.reserved.fetch_sub(1, Ordering::Relaxed);
            }
            let written = answered??;
            if let Some((claimed, token, at)) = &written.next {
                held.insert(claimed.delivery.id.clone(), (*token, false, *at));
            }
            written
        };
        let Some((subscription, at)) = written.recorded else {
            self.stale.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                delivery_id,
                "postgres: outcome refused: the lease passed to another claim (this node stalled past it)"
            );
            return Ok(None);
        };
        if let Some(state) = self.fold_health(&subscription, &attempt, at) {
            // The outcome is written: a failed health write (kept here, written again with a
            // later outcome) must not lose the delivery now held in the slot.
            let wrote = match self.fast_client().await {
                Ok(client) => write_health(&client, &subscription, &state).await,
                Err(e) => Err(e),
            };
            if let Err(e) = wrote {
                tracing::warn!(subscription, error = %e, "postgres: cannot write the subscription's health; written with a later outcome");
            }
        }
        Ok(written.next.map(|(claimed, _, _)| claimed))
    }

    /// Where to announce that other nodes have new work: the scheduler's wake-up.
    pub fn set_waker(&self, waker: Arc<Notify>) {
        *lock(&self.waker) = Some(waker);
    }

    /// Outcomes refused because the delivery's lease had passed to another claim.
    pub fn stale_outcomes(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// (connections open, idle, callers waiting) of the pool.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let (a, b) = (self.pool.status(), self.fast.status());
        (
            a.size + b.size,
            a.available + b.available,
            a.waiting + b.waiting,
        )
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

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(self.pool.get().await?)
    }

    /// A connection of the pool whose commits do not wait for the disk ([`PgStore::fast`]).
    async fn fast_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(self.fast.get().await?)
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
                .insert(subscription.to_string(), std::time::Instant::now());
            Some(state)
        } else {
            None
        }
    }
}

/// An attempt's outcome on its way to the database, and where its answer goes.
struct PendingOutcome {
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
struct Written {
    /// The subscription and the time the outcome was written at; `None` when the lease token
    /// no longer matched.
    recorded: Option<(String, i64)>,
    /// The delivery leased in its freed slot, its lease token and the database's time.
    next: Option<(Claimed, i64, i64)>,
}

/// The subscriptions a freed slot may be handed on within: configured, not paused, not
/// rate-limited (a rate-limited one takes turns through claims), with their limits.
#[derive(Default)]
struct Followable {
    subscriptions: Vec<String>,
    limits: Vec<i64>,
    /// The node's limit on attempts in flight.
    global: usize,
    lease_ms: i64,
}

/// Writers of the outcomes. One: while it waits for the database the next outcomes gather, and
/// the bigger batches cost PostgreSQL less per delivery than two writers' smaller ones
/// (a statement's fixed work, its commit and its WAL flush are shared by more rows). Measured
/// with `scripts/pg-profile.sh --drain`: 0.19–0.21 s of PostgreSQL CPU per 1000 deliveries
/// with two writers, 0.14–0.16 s with one, at the same rate (docs/benchmarks.md).
const OUTCOME_WRITERS: usize = 1;
/// Outcomes one statement writes at most.
const OUTCOME_BATCH: usize = 512;

/// Writes attempt outcomes in batches: every outcome waiting becomes part of one statement for
/// the retries and one for the finished deliveries, each row only if its lease token still
/// matches. Many attempts finishing together cost a couple of round trips, not one each.
///
/// A batch that hands slots on is written on a durable connection: a lease a database crash
/// forgot would let a second attempt start beside the first (see [`PgStore::fast`]).
async fn write_outcomes(
    durable: Pool,
    fast: Pool,
    queue: Arc<Mutex<Vec<PendingOutcome>>>,
    ready: Arc<Notify>,
) {
    loop {
        ready.notified().await;
        loop {
            let batch: Vec<PendingOutcome> = {
                let mut q = lock(&queue);
                let n = q.len().min(OUTCOME_BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            if !lock(&queue).is_empty() {
                // More than one batch waits: let another writer start on it meanwhile.
                ready.notify_one();
            }
            let (retries, finished): (Vec<PendingOutcome>, Vec<PendingOutcome>) =
                batch.into_iter().partition(|o| o.delay.is_some());
            for (part, is_retry) in [(retries, true), (finished, false)] {
                if part.is_empty() {
                    continue;
                }
                let pool = if part.iter().any(|o| o.follow.is_some()) {
                    &durable
                } else {
                    &fast
                };
                let result = match pool.get().await {
                    Ok(client) => write_batch(&client, &part, is_retry).await,
                    Err(e) => Err(StoreError::from(e)),
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
        }
    }
}

/// One batch of retries or of finished deliveries; returns what was written, by delivery id.
async fn write_batch(
    client: &deadpool_postgres::Object,
    part: &[PendingOutcome],
    is_retry: bool,
) -> Result<HashMap<String, Written>, StoreError> {
    let ids: Vec<&str> = part.iter().map(|o| o.id.as_str()).collect();
    let tokens: Vec<i64> = part.iter().map(|o| o.token).collect();
    let errors: Vec<Option<&str>> = part.iter().map(|o| o.error.as_deref()).collect();
    let histories: Vec<&Value> = part.iter().map(|o| &o.history).collect();
    // All outcomes of one node share its clock: the first one's `now` stands for the batch.
    let now = part.first().and_then(|o| o.now);
    if is_retry {
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
            &[&ids, &tokens, &delays, &errors, &histories, &now],
        )
        .await?;
        return Ok(rows
            .into_iter()
            .map(|r| {
                let recorded = Some((r.get(1), r.get(2)));
                let next = None;
                (r.get::<_, String>(0), Written { recorded, next })
            })
            .collect());
    }
    let dead: Vec<bool> = part.iter().map(|o| o.dead).collect();
    let follow: Vec<bool> = part.iter().map(|o| o.follow.is_some()).collect();
    // The latest limits among the batch's stand for it.
    let limits = part
        .iter()
        .rev()
        .find_map(|o| o.follow.clone())
        .unwrap_or_default();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &ids,
        &tokens,
        &dead,
        &errors,
        &histories,
        &now,
        &follow,
        &limits.subscriptions,
        &limits.limits,
        &limits.lease_ms,
    ];
    let rows = query(client, &finish_sql(), &params).await?;
    let mut written: HashMap<String, Written> = HashMap::new();
    // The leased deliveries of each subscription, handed to its outcomes that asked.
    let mut leased: HashMap<String, Vec<(Claimed, i64, i64)>> = HashMap::new();
    for row in &rows {
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
    for o in part.iter().filter(|o| o.follow.is_some()) {
        if let Some(w) = written.get_mut(&o.id) {
            if let Some((subscription, _)) = &w.recorded {
                w.next = leased.get_mut(subscription).and_then(Vec::pop);
            }
        }
    }
    Ok(written)
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

/// Runs `ddl`, a statement that changes the partitions of `hookd_done` and so locks the table
/// ACCESS EXCLUSIVE (every read of finished deliveries, on every node, waits behind it), in
/// one message that PostgreSQL runs and commits by itself (an implicit transaction): the lock
/// is held only while the statement runs, never across a round trip to this node, which may
/// stop at any instant (SIGSTOP, a frozen VM). A node stopped between such a statement and its
/// `COMMIT` once stalled the other nodes' API for as long as it stayed stopped. It waits a
/// second at most for the lock, so that it never queues reads behind a long transaction.
async fn partition_ddl(
    client: &deadpool_postgres::Object,
    ddl: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SET LOCAL lock_timeout = '1s'; {ddl}"))
        .await
}

/// Creates the `hookd_done` partition of `day` (days since 1970) unless it exists, by
/// [`partition_ddl`]: when the lock is not to be had within a second, finished deliveries go
/// to the default partition until it exists. Nodes may race to create it: the loser's error
/// is the sign it exists.
async fn create_partition(client: &deadpool_postgres::Object, day: i64) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("hookd_done_d{day}")],
        )
        .await?
        .get(0);
    if exists {
        return Ok(());
    }
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS hookd_done_d{day} PARTITION OF hookd_done FOR VALUES FROM ({}) TO ({})",
        day * DAY_MS,
        (day + 1) * DAY_MS
    );
    match partition_ddl(client, &ddl).await {
        Ok(()) => Ok(()),
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Keeps the partitions of today and tomorrow (by the database's clock) made ahead of need:
/// at start, then every ten minutes. A failure (a long transaction holding the lock) is
/// logged and tried again next time; meanwhile the default partition takes the rows.
async fn maintain_partitions(pool: Pool) {
    loop {
        let made = async {
            let client = pool.get().await?;
            let now: i64 = client
                .query_one(&format!("SELECT {DB_NOW}"), &[])
                .await?
                .get(0);
            let today = now.div_euclid(DAY_MS);
            for day in [today, today + 1] {
                create_partition(&client, day).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = made {
            tracing::warn!(error = %e, "postgres: cannot make the day's partition of hookd_done yet; finished deliveries go to its default partition meanwhile");
        }
        tokio::time::sleep(PARTITIONS_EVERY).await;
    }
}

fn make_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        tls()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))
}

/// Tells other nodes of new work: one `NOTIFY` at a time, however many commits asked for it
/// meanwhile. (A `NOTIFY` inside each ingest transaction would serialize every commit on
/// PostgreSQL's notification lock.)
async fn announce(pool: Pool, asked: Arc<Notify>) {
    loop {
        asked.notified().await;
        if let Ok(client) = pool.get().await {
            let _ = client
                .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is replaced whole: a poisoned one is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The columns [`state_of`] reads, in its order.
const STATE_COLUMNS: &str = "subscription, paused, last_success_ms, last_failure_ms, consecutive_failures, last_error, failing_since_ms, disabled_ms, disabled_reason";

fn state_of(row: &Row) -> SubscriptionState {
    SubscriptionState {
        paused: row.get(1),
        last_success_ms: row.get::<_, Option<i64>>(2).map(unms),
        last_failure_ms: row.get::<_, Option<i64>>(3).map(unms),
        consecutive_failures: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
        last_error: row.get(5),
        failing_since_ms: row.get::<_, Option<i64>>(6).map(unms),
        disabled_ms: row.get::<_, Option<i64>>(7).map(unms),
        disabled_reason: row.get(8),
    }
}

/// The count of unfinished deliveries ingest's backlog limit reads: the last count of the
/// table (every node's work) plus what this node added that the count did not see. Finished
/// deliveries show at the next count, not before: counted twice (an outcome written before
/// the count's snapshot, subtracted after it) they would let ingest past the limit; late,
/// they only refuse a little early.
#[derive(Default)]
struct Unfinished {
    inner: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    /// The last count of the table.
    base: i64,
    /// What this node added since: its transaction's id where known, and how many.
    changes: Vec<(Option<u64>, i64)>,
    /// The sum of `changes`.
    delta: i64,
}

impl Unfinished {
    /// `n` deliveries added by the committed transaction `xid` (`None`: not known).
    fn add(&self, xid: Option<u64>, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.changes.push((xid, n));
        c.delta = c.delta.saturating_add(n);
    }

    fn get(&self) -> u64 {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        unms(c.base.saturating_add(c.delta))
    }

    /// How many changes there are now: those were committed before a count that starts
    /// after this, so it sees them.
    fn mark(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .len()
    }

    /// A count `n` of the table under `snapshot`, begun after [`Unfinished::mark`] returned
    /// `seen`: the changes the count saw are dropped, the others kept on top of it. A change
    /// whose transaction is not known and that came after the mark is kept this once (the next
    /// count sees it), counted twice meanwhile at worst: refusing a little early.
    fn counted(&self, n: i64, seen: usize, snapshot: &Snapshot) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let kept: Vec<(Option<u64>, i64)> = c
            .changes
            .iter()
            .enumerate()
            .filter(|&(i, (xid, _))| i >= seen && xid.is_none_or(|xid| !snapshot.sees(xid)))
            .map(|(_, &change)| change)
            .collect();
        c.delta = kept.iter().map(|&(_, n)| n).sum();
        c.changes = kept;
        c.base = n;
    }
}

/// A PostgreSQL snapshot (`pg_current_snapshot()`, as text `xmin:xmax:xip,...`): which
/// transactions' effects a statement saw.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Snapshot {
    fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Snapshot {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Whether a statement under this snapshot saw what committed transaction `xid` wrote.
    fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }
}

/// Keeps [`PgStore::unfinished`] within half a second of the truth (other nodes change it
/// too). Each count reads the snapshot it ran under, and this node's changes are kept on top
/// of it exactly when it did not see them: an ingest that committed while the count ran is
/// neither lost nor counted twice.
async fn count_unfinished(pool: Pool, unfinished: Arc<Unfinished>) {
    loop {
        tokio::time::sleep(COUNT_EVERY).await;
        let seen = unfinished.mark();
        let counted = async {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*), pg_current_snapshot()::text FROM hookd_queue",
                    &[],
                )
                .await?;
            Ok::<_, StoreError>((row.get::<_, i64>(0), row.get::<_, String>(1)))
        }
        .await;
        match counted {
            Ok((n, snapshot)) => match Snapshot::parse(&snapshot) {
                Some(snapshot) => unfinished.counted(n, seen, &snapshot),
                None => tracing::warn!(snapshot, "cannot read PostgreSQL's snapshot"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot count the unfinished deliveries"),
        }
    }
}

/// Listens for other nodes' announcements of new deliveries and wakes the scheduler; a hint
/// only (the scheduler also polls), so a lost connection is simply made again.
async fn listen(url: String, waker: Arc<Mutex<Option<Arc<Notify>>>>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let waker = waker.clone();
        let connected = async {
            let config = parse_config(&url)?;
            let (client, mut connection) = config.connect(tls()?).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                use futures_util::StreamExt;
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            Ok::<_, StoreError>((client, driver, async move {
                while rx.recv().await.is_some() {
                    if let Some(w) = lock(&waker).as_ref() {
                        w.notify_one();
                    }
                }
            }))
        }
        .await;
        match connected {
            Ok((client, driver, forward)) => {
                backoff = Duration::from_millis(200);
                forward.await;
                drop(client);
                driver.abort();
            }
            Err(e) => {
                tracing::debug!(error = %e, "postgres: LISTEN connection failed; polling meanwhile");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

const DELIVERY_COLUMNS: &str = "id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret, attempts, created_ms, last_error";

/// A delivery from a row whose first columns are [`DELIVERY_COLUMNS`].
fn delivery_of(
    row: &Row,
    state: DeliveryState,
    due: Option<u64>,
    finished: Option<u64>,
) -> Delivery {
    let adhoc = match (
        row.get::<_, Option<String>>(5),
        row.get::<_, Option<String>>(6),
    ) {
        (Some(url), Some(secret)) => Some(AdhocTarget { url, secret }),
        _ => None,
    };
    Delivery {
        id: row.get(0),
        event_id: row.get(1),
        event_type: row.get(2),
        subscription: row.get(3),
        bucket: row.get(4),
        adhoc,
        state,
        attempts: u32::try_from(row.get::<_, i32>(7)).unwrap_or(0),
        created_ms: unms(row.get(8)),
        due_ms: due,
        finished_ms: finished,
        last_error: row.get(9),
        // By name: the column after those of each query.
        owner: row.try_get::<_, Option<String>>("owner").ok().flatten(),
    }
}

fn attempt_json(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "started_ms": a.started_ms,
        "duration_ms": a.duration_ms,
        "outcome": a.outcome.as_str(),
        "status_code": a.status_code,
        "error": a.error,
        "response_excerpt": a.response_excerpt,
    })
}

fn attempts_of(history: &Value) -> Vec<Attempt> {
    history
        .as_array()
        .map(|all| {
            all.iter()
                .map(|a| Attempt {
                    number: a["number"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    started_ms: a["started_ms"].as_u64().unwrap_or(0),
                    duration_ms: a["duration_ms"].as_u64().unwrap_or(0),
                    outcome: Outcome::parse(a["outcome"].as_str().unwrap_or("")),
                    status_code: a["status_code"]
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok()),
                    error: a["error"].as_str().map(str::to_string),
                    response_excerpt: a["response_excerpt"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
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

#[async_trait]
impl super::QueueStore for PgStore {
    async fn ingest(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        // The first of each (request_id, status) in this call; a later one is its duplicate.
        let mut first: HashMap<(String, String), usize> = HashMap::new();
        let mut ids: Vec<String> = Vec::with_capacity(events.len());
        let mut fresh: Vec<usize> = Vec::new();
        for (index, (event, _)) in events.iter().enumerate() {
            let key = (event.request_id.clone(), event.status.clone());
            if let Some(&at) = first.get(&key) {
                if events[at].0.fingerprint != event.fingerprint {
                    return Err(IngestError::Conflict {
                        index,
                        request_id: event.request_id.clone(),
                        status: event.status.clone(),
                        event_id: ids[at].clone(),
                    });
                }
                ids.push(ids[at].clone());
                continue;
            }
            first.insert(key, index);
            ids.push(event_id_string(ulid::Ulid::from_parts(
                now_ms,
                rand::random(),
            )));
            fresh.push(index);
        }
        // Every fresh event and its deliveries, as columns.
        let mut ev: (
            Vec<&str>,
            Vec<&str>,
            Vec<&str>,
            Vec<&str>,
            Vec<&[u8]>,
            Vec<&[u8]>,
            Vec<String>,
            Vec<Option<&str>>,
        ) = Default::default();
        let mut dl: (
            Vec<String>,
            Vec<&str>,
            Vec<&str>,
            Vec<&str>,
            Vec<&str>,
            Vec<Option<&str>>,
            Vec<Option<&str>>,
            Vec<Option<&str>>,
        ) = Default::default();
        for &i in &fresh {
            let (event, targets) = &events[i];
            let dids: Vec<String> = targets
                .iter()
                .map(|_| delivery_id_string(new_delivery_id(now_ms)))
                .collect();
            ev.6.push(format!(
                "{{{}}}",
                dids.iter()
                    .map(|d| format!("\"{d}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            for (d, t) in dids.into_iter().zip(targets) {
                dl.0.push(d);
                dl.1.push(ids[i].as_str());
                dl.2.push(event.event_type.as_str());
                dl.3.push(t.subscription.as_str());
                dl.4.push(t.bucket.as_str());
                dl.5.push(t.adhoc.as_ref().map(|a| a.url.as_str()));
                dl.6.push(t.adhoc.as_ref().map(|a| a.secret.as_str()));
                dl.7.push(event.owner.as_deref());
            }
            ev.7.push(event.owner.as_deref());
            ev.0.push(ids[i].as_str());
            ev.1.push(event.request_id.as_str());
            ev.2.push(event.status.as_str());
            ev.3.push(event.event_type.as_str());
            ev.4.push(&event.fingerprint[..]);
            ev.5.push(&event.body[..]);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        // One statement: the events not accepted before, and the deliveries of those only.
        let rows = query(&tx,
                &format!(
                    "WITH now AS (SELECT coalesce($15::bigint, {DB_NOW}) AS t),
                     ins AS (
                         INSERT INTO hookd_events (id, request_id, status, event_type, fingerprint, created_ms, body, deliveries, owner)
                         SELECT x.id, x.r, x.s, x.t, x.f, now.t, x.b, x.d::text[], x.o
                         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[], $16::text[])
                           AS x(id, r, s, t, f, b, d, o), now
                         ON CONFLICT (request_id, status) DO NOTHING
                         RETURNING id
                     ),
                     q AS (
                         INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret, created_ms, due_ms, owner)
                         SELECT y.id, y.e, y.t, y.s, y.b, y.u, y.k, now.t, now.t, y.o
                         FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $17::text[])
                           AS y(id, e, t, s, b, u, k, o), now
                         WHERE y.e IN (SELECT id FROM ins)
                         RETURNING 1
                     )
                     SELECT id, pg_current_xact_id()::text::int8 FROM ins"
                ),
                &[
                    &ev.0, &ev.1, &ev.2, &ev.3, &ev.4, &ev.5, &ev.6,
                    &dl.0, &dl.1, &dl.2, &dl.3, &dl.4, &dl.5, &dl.6,
                    &self.now_param(now_ms),
                    &ev.7, &dl.7,
                ],
            )
            .await
            .map_err(StoreError::from)?;
        // The transaction's id: the backlog count tells by it whether it saw these deliveries.
        let xid = rows
            .first()
            .and_then(|r| u64::try_from(r.get::<_, i64>(1)).ok());
        let inserted: HashSet<String> = rows.into_iter().map(|r| r.get(0)).collect();
        // The others were accepted before: the same body is a duplicate, another a conflict.
        let before: Vec<usize> = fresh
            .iter()
            .copied()
            .filter(|&i| !inserted.contains(&ids[i]))
            .collect();
        let mut known: HashMap<usize, usize> = HashMap::new();
        if !before.is_empty() {
            let (r, st): (Vec<&str>, Vec<&str>) = before
                .iter()
                .map(|&i| (events[i].0.request_id.as_str(), events[i].0.status.as_str()))
                .unzip();
            let rows = query(
                &tx,
                "SELECT e.request_id, e.status, e.id, e.fingerprint, cardinality(e.deliveries)
                     FROM hookd_events e JOIN unnest($1::text[], $2::text[]) AS k(r, s)
                     ON e.request_id = k.r AND e.status = k.s",
                &[&r, &st],
            )
            .await
            .map_err(StoreError::from)?;
            for row in rows {
                let key: (String, String) = (row.get(0), row.get(1));
                let Some(&i) = first.get(&key) else { continue };
                let (id, fingerprint, n): (String, Vec<u8>, i32) =
                    (row.get(2), row.get(3), row.get(4));
                if fingerprint != events[i].0.fingerprint {
                    return Err(IngestError::Conflict {
                        index: i,
                        request_id: key.0,
                        status: key.1,
                        event_id: id,
                    });
                }
                ids[i] = id;
                known.insert(i, usize::try_from(n).unwrap_or(0));
            }
            if before.iter().any(|i| !known.contains_key(i)) {
                // Accepted by another node between the insert and the read: retried by the
                // client, it answers as a duplicate.
                return Err(StoreError::Backend(
                    "the same event was accepted concurrently; retry".to_string(),
                )
                .into());
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        let mut added = 0;
        let answers = events
            .iter()
            .enumerate()
            .map(|(i, (event, targets))| {
                let key = (event.request_id.clone(), event.status.clone());
                let at = first.get(&key).copied().unwrap_or(i);
                let (deliveries, duplicate) = match known.get(&at) {
                    Some(&n) => (n, true),
                    None => (events[at].1.len(), at != i),
                };
                if !duplicate {
                    added += targets.len();
                }
                Ingested {
                    event_id: ids[at].clone(),
                    deliveries,
                    duplicate,
                }
            })
            .collect();
        if added > 0 {
            self.unfinished.add(xid, added as u64);
            self.announce.notify_one();
        }
        Ok(answers)
    }

    async fn claim(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<(Vec<Claimed>, Option<u64>), StoreError> {
        let limits = lock(&self.limits).clone();
        let (held, held_adhoc) = {
            let h = lock(&self.held);
            let reserved = self.reserved.load(Ordering::Relaxed);
            (
                h.len() + reserved,
                h.values().filter(|(_, adhoc, _)| *adhoc).count(),
            )
        };
        let room = max.min(limits.global.saturating_sub(held));
        let mut runnable: Vec<&str> = Vec::new();
        let mut runnable_limits: Vec<i64> = Vec::new();
        let mut runnable_rates: Vec<i64> = Vec::new();
        let subscriptions = limits
            .subscriptions
            .keys()
            .map(String::as_str)
            .chain(std::iter::once(ADHOC));
        for subscription in subscriptions {
            if let Some(n) = bucket_limit(&limits, subscription) {
                runnable.push(subscription);
                runnable_limits.push(i64::try_from(n).unwrap_or(i64::MAX));
                runnable_rates.push(
                    limits
                        .rates
                        .get(subscription)
                        .map_or(0, |&us| i64::try_from(us).unwrap_or(i64::MAX)),
                );
            }
        }
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let lease_ms = i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        // One round trip, its own (durable) transaction: see schema_v2.sql and schema_v4.sql.
        let rows = query(
            &client,
            "SELECT * FROM hookd_claim_owned($1, $2, $3, $4, $5, $6, $7)",
            &[
                &self.now_param(now_ms),
                &runnable,
                &runnable_limits,
                &as_i64(limits.adhoc_total.saturating_sub(held_adhoc)),
                &as_i64(room),
                &lease_ms,
                &runnable_rates,
            ],
        )
        .await?;
        let mut claims = Vec::new();
        let mut next: Option<i64> = None;
        let mut now = ms(now_ms);
        {
            let mut held = lock(&self.held);
            for row in &rows {
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
        }
        if self.options.db_clock {
            self.offset.store(now - ms(now_ms), Ordering::Relaxed);
        }
        if held + claims.len() >= limits.global {
            // No room: nothing is due for this node until an attempt finishes.
            next = None;
        }
        Ok((claims, next.map(|t| self.db_to_node(t))))
    }

    async fn record_outcome(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.record(delivery_id, attempt, next, now_ms, false)
            .await
            .map(|_| ())
    }

    async fn record_outcome_and_follow(
        &self,
        delivery_id: &str,
        attempt: Attempt,
        next: Next,
        now_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        self.record(delivery_id, attempt, next, now_ms, true).await
    }

    async fn release(&self, delivery_id: &str, due_ms: u64) -> Result<(), StoreError> {
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

    async fn sweep(&self, cutoff_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let cutoff = self.to_db(cutoff_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let mut removed: i64 = 0;
        // Rate limits' next times long past say nothing any more (per-request hosts come and
        // go): an hour is far beyond any interval that matters.
        client
            .execute(
                &format!("DELETE FROM hookd_rate WHERE next_us < {DB_NOW} * 1000 - 3600000000"),
                &[],
            )
            .await?;
        // Whole partitions first: a day that ended before the cutoff goes in one statement.
        let parts = client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'hookd_done'",
                &[],
            )
            .await?;
        for row in parts {
            let name: String = row.get(0);
            let Some(day) = name
                .strip_prefix("hookd_done_d")
                .and_then(|d| d.parse::<i64>().ok())
            else {
                continue;
            };
            if (day + 1) * DAY_MS > cutoff {
                continue;
            }
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .await?
                .get(0);
            if removed + n > limit {
                continue;
            }
            match partition_ddl(&client, &format!("DROP TABLE IF EXISTS {name}")).await {
                Ok(()) => removed += n,
                // The lock was not to be had: the rows go by the DELETE below, or next time.
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    tracing::info!(partition = %name, "postgres: a finished day's partition is in use; it is dropped later");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if removed < limit {
            let n = client
                .execute(
                    "DELETE FROM hookd_done d USING (
                         SELECT id FROM hookd_done WHERE finished_ms < $1 LIMIT $2
                     ) x WHERE d.id = x.id AND d.finished_ms < $1",
                    &[&cutoff, &(limit - removed)],
                )
                .await?;
            removed += i64::try_from(n).unwrap_or(0);
        }
        let events = client
            .execute(
                "DELETE FROM hookd_events WHERE id IN (
                     SELECT e.id FROM hookd_events e
                     WHERE e.created_ms < $1
                       AND NOT EXISTS (SELECT 1 FROM hookd_queue q WHERE q.id = ANY(e.deliveries))
                       AND NOT EXISTS (SELECT 1 FROM hookd_done d WHERE d.id = ANY(e.deliveries))
                     LIMIT $2)",
                &[&cutoff, &limit],
            )
            .await?;
        Ok(usize::try_from(removed).unwrap_or(0) + usize::try_from(events).unwrap_or(0))
    }

    fn set_limits(&self, limits: Limits) {
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

    fn unfinished(&self) -> u64 {
        self.unfinished.get()
    }
}

/// The state a live queue row shows: in flight while its lease runs.
/// A lease that has run out shows as scheduled (due since the lease's end): the next claim, on
/// any node, takes it.
const QUEUE_STATE: &str = "CASE WHEN leased AND due_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint THEN 'in_flight' ELSE 'scheduled' END";

#[async_trait]
impl super::AdminStore for PgStore {
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let client = self.client().await?;
        if let Some(r) = client
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, leased AND due_ms > {DB_NOW}, due_ms, owner FROM hookd_queue WHERE id = $1"
                ),
                &[&id],
            )
            .await?
        {
            let leased: bool = r.get(10);
            return Ok(Some(if leased {
                delivery_of(&r, DeliveryState::InFlight, None, None)
            } else {
                delivery_of(&r, DeliveryState::Scheduled, Some(unms(r.get(11))), None)
            }));
        }
        let r = client
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, dead, finished_ms, owner FROM hookd_done WHERE id = $1"
                ),
                &[&id],
            )
            .await?;
        Ok(r.map(|r| {
            let state = if r.get::<_, bool>(10) {
                DeliveryState::Dead
            } else {
                DeliveryState::Delivered
            };
            delivery_of(&r, state, None, Some(unms(r.get(11))))
        }))
    }

    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT history FROM hookd_queue WHERE id = $1
                 UNION ALL SELECT history FROM hookd_done WHERE id = $1 LIMIT 1",
                &[&delivery_id],
            )
            .await?;
        Ok(row
            .map(|r| attempts_of(&r.get::<_, Value>(0)))
            .unwrap_or_default())
    }

    async fn event_meta(&self, event_id: &str) -> Result<Option<EventMeta>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT request_id, status, event_type, fingerprint, created_ms, deliveries, owner FROM hookd_events WHERE id = $1",
                &[&event_id],
            )
            .await?;
        Ok(row.map(|r| EventMeta {
            request_id: r.get(0),
            status: r.get(1),
            event_type: r.get(2),
            fingerprint: hex::encode(r.get::<_, Vec<u8>>(3)),
            created_ms: unms(r.get(4)),
            deliveries: r.get(5),
            owner: r.get(6),
        }))
    }

    async fn event_body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT body FROM hookd_events WHERE id = $1", &[&event_id])
            .await?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
    }

    async fn event_by_request(
        &self,
        request_id: &str,
        status: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id FROM hookd_events WHERE request_id = $1 AND status = $2",
                &[&request_id, &status],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn export(
        &self,
        after: Option<String>,
        events: usize,
    ) -> Result<(Vec<Portable>, Option<String>), StoreError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let client = self.client().await?;
        let mut out = Vec::new();
        if after.is_none() {
            for r in client
                .query(
                    "SELECT key, value FROM hookd_meta WHERE key LIKE 'key/%' ORDER BY key",
                    &[],
                )
                .await?
            {
                let name: String = r.get(0);
                out.push(Portable::Key {
                    name: name.trim_start_matches("key/").to_string(),
                    value: b64.encode(r.get::<_, Vec<u8>>(1)),
                });
            }
            out.extend(
                self.stored_subscriptions()
                    .await?
                    .into_iter()
                    .map(Portable::Subscription),
            );
            for r in client
                .query(
                    &format!("SELECT {STATE_COLUMNS} FROM hookd_subscription_state ORDER BY subscription"),
                    &[],
                )
                .await?
            {
                out.push(Portable::State {
                    subscription: r.get(0),
                    state: state_of(&r),
                });
            }
        }
        let limit = i64::try_from(events).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, request_id, status, event_type, fingerprint, created_ms, body, deliveries, owner
                 FROM hookd_events WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut by_event: HashMap<String, Vec<Portable>> = HashMap::new();
        for r in client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, leased, due_ms, history, owner FROM hookd_queue
                     WHERE id IN (SELECT unnest(deliveries) FROM hookd_events WHERE id = ANY($1)) ORDER BY id"
                ),
                &[&ids],
            )
            .await?
        {
            let mut d = delivery_of(&r, DeliveryState::Scheduled, Some(unms(r.get(11))), None);
            if r.get::<_, bool>(10) {
                // In flight: due again after the move.
                d.due_ms = Some(d.created_ms);
            }
            let attempts = attempts_of(&r.get::<_, Value>(12));
            by_event.entry(d.event_id.clone()).or_default().push(Portable::delivery(&d, &attempts));
        }
        for r in client
            .query(
                &format!("SELECT {DELIVERY_COLUMNS}, dead, finished_ms, history, owner FROM hookd_done
                     WHERE id IN (SELECT unnest(deliveries) FROM hookd_events WHERE id = ANY($1)) ORDER BY id"),
                &[&ids],
            )
            .await?
        {
            let state = if r.get::<_, bool>(10) { DeliveryState::Dead } else { DeliveryState::Delivered };
            let d = delivery_of(&r, state, None, Some(unms(r.get(11))));
            let attempts = attempts_of(&r.get::<_, Value>(12));
            by_event.entry(d.event_id.clone()).or_default().push(Portable::delivery(&d, &attempts));
        }
        for r in &rows {
            let id: String = r.get(0);
            out.push(Portable::Event {
                id: id.clone(),
                request_id: r.get(1),
                status: r.get(2),
                event_type: r.get(3),
                fingerprint: hex::encode(r.get::<_, Vec<u8>>(4)),
                created_ms: unms(r.get(5)),
                body: b64.encode(r.get::<_, Vec<u8>>(6)),
                deliveries: r.get(7),
                owner: r.get(8),
            });
            out.extend(by_event.remove(&id).unwrap_or_default());
        }
        let next = (rows.len() >= events)
            .then(|| ids.last().cloned())
            .flatten();
        Ok((out, next))
    }

    async fn import(&self, records: Vec<Portable>) -> Result<(), StoreError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let bad = |what: &str, id: &str| StoreError::Backend(format!("import: bad {what} in {id}"));
        // Finished deliveries of days without a partition go to the default one.
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut added = 0u64;
        for record in records {
            match record {
                Portable::Key { name, value } => {
                    let value = b64.decode(&value).map_err(|_| bad("key", &name))?;
                    tx.execute(
                        "INSERT INTO hookd_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        &[&format!("key/{name}"), &value],
                    )
                    .await?;
                }
                Portable::Subscription(sub) => {
                    tx.execute(
                        "INSERT INTO hookd_subscriptions (id, owner, toml, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, toml = excluded.toml, updated_ms = excluded.updated_ms",
                        &[&sub.id, &sub.owner, &sub.toml, &ms(sub.created_ms), &ms(sub.updated_ms)],
                    )
                    .await?;
                }
                Portable::State {
                    subscription,
                    state,
                } => {
                    tx.execute(
                        "INSERT INTO hookd_subscription_state (subscription, paused, last_success_ms, last_failure_ms,
                             consecutive_failures, last_error, failing_since_ms, disabled_ms, disabled_reason)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (subscription) DO UPDATE SET paused = excluded.paused,
                             last_success_ms = excluded.last_success_ms, last_failure_ms = excluded.last_failure_ms,
                             consecutive_failures = excluded.consecutive_failures, last_error = excluded.last_error,
                             failing_since_ms = excluded.failing_since_ms, disabled_ms = excluded.disabled_ms,
                             disabled_reason = excluded.disabled_reason",
                        &[
                            &subscription,
                            &state.paused,
                            &state.last_success_ms.map(ms),
                            &state.last_failure_ms.map(ms),
                            &i32::try_from(state.consecutive_failures).unwrap_or(i32::MAX),
                            &state.last_error,
                            &state.failing_since_ms.map(ms),
                            &state.disabled_ms.map(ms),
                            &state.disabled_reason,
                        ],
                    )
                    .await?;
                    lock(&self.health).states.insert(subscription, state);
                }
                Portable::Event {
                    id,
                    request_id,
                    status,
                    event_type,
                    owner,
                    fingerprint,
                    created_ms,
                    body,
                    deliveries,
                } => {
                    let fingerprint =
                        hex::decode(&fingerprint).map_err(|_| bad("fingerprint", &id))?;
                    let body = b64.decode(&body).map_err(|_| bad("body", &id))?;
                    tx.execute(
                        "INSERT INTO hookd_events (id, request_id, status, event_type, fingerprint, created_ms, body, deliveries, owner)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                        &[&id, &request_id, &status, &event_type, &fingerprint, &ms(created_ms), &body, &deliveries, &owner],
                    )
                    .await?;
                }
                Portable::Delivery {
                    id,
                    event_id,
                    event_type,
                    subscription,
                    bucket,
                    adhoc,
                    state,
                    created_ms,
                    due_ms,
                    finished_ms,
                    last_error,
                    owner,
                    attempts,
                } => {
                    let history = Value::Array(
                        attempts
                            .iter()
                            .map(|a| attempt_json(&Attempt::from(a)))
                            .collect(),
                    );
                    let n = i32::try_from(attempts.len()).unwrap_or(i32::MAX);
                    let (url, secret) = match &adhoc {
                        Some(a) => (Some(a.url.as_str()), Some(a.secret.as_str())),
                        None => (None, None),
                    };
                    match (state, finished_ms) {
                        (DeliveryState::Delivered | DeliveryState::Dead, Some(at)) => {
                            tx.execute(
                                "INSERT INTO hookd_done (id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                                     dead, attempts, created_ms, finished_ms, last_error, history, owner)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                                &[&id, &event_id, &event_type, &subscription, &bucket, &url, &secret,
                                  &(state == DeliveryState::Dead), &n, &ms(created_ms), &ms(at), &last_error, &history, &owner],
                            )
                            .await?;
                        }
                        _ => {
                            tx.execute(
                                "INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                                     attempts, created_ms, due_ms, last_error, history, owner)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
                                &[&id, &event_id, &event_type, &subscription, &bucket, &url, &secret,
                                  &n, &ms(created_ms), &ms(due_ms.unwrap_or(created_ms)), &last_error, &history, &owner],
                            )
                            .await?;
                            added += 1;
                        }
                    }
                }
            }
        }
        tx.commit().await?;
        self.unfinished.add(None, added);
        Ok(())
    }

    async fn signing_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let client = self.client().await?;
        let key = format!("key/{name}");
        let fresh: [u8; 32] = rand::random();
        client
            .execute(
                "INSERT INTO hookd_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &&fresh[..]],
            )
            .await?;
        let row = client
            .query_one("SELECT value FROM hookd_meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.get(0))
    }

    async fn revoke_session(&self, nonce: &str, until: u64, now: u64) -> Result<(), StoreError> {
        // In hookd_meta, the expiry as 8 big-endian bytes: bytea compares byte by byte, so
        // the ended ones are those below now's bytes.
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM hookd_meta WHERE key LIKE 'session-revoked/%' AND value <= $1",
                &[&&now.to_be_bytes()[..]],
            )
            .await?;
        client
            .execute(
                "INSERT INTO hookd_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[
                    &format!("session-revoked/{nonce}"),
                    &&until.to_be_bytes()[..],
                ],
            )
            .await?;
        Ok(())
    }

    async fn session_revoked(&self, nonce: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM hookd_meta WHERE key = $1",
                &[&format!("session-revoked/{nonce}")],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let (live, done) = match filter.state {
            None => (true, true),
            Some(DeliveryState::Scheduled | DeliveryState::InFlight) => (true, false),
            Some(DeliveryState::Delivered | DeliveryState::Dead) => (false, true),
        };
        let state = filter.state.map(DeliveryState::as_str);
        let conditions = "($1::text IS NULL OR id < $1) AND ($2::text IS NULL OR subscription = $2)
            AND ($3::text[] IS NULL OR subscription = ANY($3)) AND ($4::text IS NULL OR event_type = $4)
            AND ($5::bigint IS NULL OR created_ms >= $5) AND ($6::bigint IS NULL OR created_ms < $6)
            AND ($9::text IS NULL OR owner = $9)";
        let mut parts = Vec::new();
        if live {
            parts.push(format!(
                "SELECT {DELIVERY_COLUMNS}, {QUEUE_STATE} AS state, CASE WHEN {QUEUE_STATE} = 'in_flight' THEN NULL ELSE due_ms END AS due, NULL::bigint AS finished, owner
                 FROM hookd_queue WHERE {conditions} AND ($7::text IS NULL OR {QUEUE_STATE} = $7)
                 ORDER BY id DESC LIMIT $8"
            ));
        }
        if done {
            parts.push(format!(
                "SELECT {DELIVERY_COLUMNS}, CASE WHEN dead THEN 'dead' ELSE 'delivered' END AS state, NULL::bigint AS due, finished_ms AS finished, owner
                 FROM hookd_done WHERE {conditions} AND ($7::text IS NULL OR (CASE WHEN dead THEN 'dead' ELSE 'delivered' END) = $7)
                 ORDER BY id DESC LIMIT $8"
            ));
        }
        let sql = format!(
            "SELECT * FROM ({}) x ORDER BY id DESC LIMIT $8",
            parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        );
        let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let client = self.client().await?;
        let rows = client
            .query(
                &sql,
                &[
                    &cursor,
                    &filter.subscription,
                    &filter.any_subscription,
                    &filter.event_type,
                    &filter.since_ms.map(ms),
                    &filter.until_ms.map(ms),
                    &state,
                    &take,
                    &filter.owner,
                ],
            )
            .await?;
        let more = rows.len() > limit;
        let page: Vec<Delivery> = rows
            .iter()
            .take(limit)
            .map(|r| {
                let state =
                    DeliveryState::parse(r.get::<_, &str>(10)).unwrap_or(DeliveryState::Scheduled);
                let due: Option<i64> = r.get(11);
                let finished: Option<i64> = r.get(12);
                delivery_of(r, state, due.map(unms), finished.map(unms))
            })
            .collect();
        let next = if more {
            page.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    async fn requeue(&self, delivery_id: &str, now_ms: u64) -> Result<DeliveryState, RequeueError> {
        let now_param = self.now_param(now_ms);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let live = tx
            .query_opt(
                "SELECT leased FROM hookd_queue WHERE id = $1 FOR UPDATE",
                &[&delivery_id],
            )
            .await
            .map_err(StoreError::from)?;
        if let Some(row) = live {
            if row.get::<_, bool>(0) {
                return Err(RequeueError::InFlight(delivery_id.to_string()));
            }
            tx.execute(
                &format!(
                    "UPDATE hookd_queue SET due_ms = coalesce($2::bigint, {DB_NOW}) WHERE id = $1"
                ),
                &[&delivery_id, &now_param],
            )
            .await
            .map_err(StoreError::from)?;
            tx.commit().await.map_err(StoreError::from)?;
            self.announce.notify_one();
            return Ok(DeliveryState::Scheduled);
        }
        let row = tx
            .query_opt(
                &format!(
                    "WITH back AS (DELETE FROM hookd_done WHERE id = $1 RETURNING *)
                     INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url,
                         adhoc_secret, attempts, created_ms, due_ms, last_error, history, owner)
                     SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                         attempts, created_ms, coalesce($2::bigint, {DB_NOW}), last_error, history, owner FROM back
                     RETURNING (SELECT dead FROM back LIMIT 1)"
                ),
                &[&delivery_id, &now_param],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Err(RequeueError::NotFound(delivery_id.to_string()));
        };
        tx.commit().await.map_err(StoreError::from)?;
        self.announce.notify_one();
        self.unfinished.add(None, 1);
        Ok(if row.get::<_, bool>(0) {
            DeliveryState::Dead
        } else {
            DeliveryState::Delivered
        })
    }

    async fn requeue_dead(
        &self,
        subscription: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, RequeueError> {
        // Times people read and give back (created_at, finished_at) are the database's.
        let since = ms(since_ms);
        let now_param = self.now_param(now_ms);
        let mut total = 0usize;
        loop {
            let client = self.client().await?;
            let n = client
                .execute(
                    &format!(
                        "WITH back AS (
                             DELETE FROM hookd_done d USING (
                                 SELECT id FROM hookd_done WHERE dead AND finished_ms >= $2
                                   AND ($1::text IS NULL OR subscription = $1) LIMIT $4
                             ) x WHERE d.id = x.id RETURNING d.*
                         )
                         INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url,
                             adhoc_secret, attempts, created_ms, due_ms, last_error, history, owner)
                         SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                             attempts, created_ms, coalesce($3::bigint, {DB_NOW}), last_error, history, owner FROM back"
                    ),
                    &[&subscription, &since, &now_param, &BULK_CHUNK],
                )
                .await
                .map_err(StoreError::from)?;
            let n = usize::try_from(n).unwrap_or(0);
            total += n;
            self.unfinished.add(None, n as u64);
            if n < usize::try_from(BULK_CHUNK).unwrap_or(usize::MAX) {
                break;
            }
        }
        if total > 0 {
            self.announce.notify_one();
        }
        Ok(total)
    }

    async fn set_disabled(
        &self,
        subscription: &str,
        disabled: Option<(u64, String)>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let (at, reason) = match &disabled {
            Some((at, reason)) => (Some(ms(*at)), Some(reason.as_str())),
            None => (None, None),
        };
        // Enabling starts the health afresh, as on sled.
        client
            .execute(
                "INSERT INTO hookd_subscription_state (subscription, disabled_ms, disabled_reason) VALUES ($1, $2, $3)
                 ON CONFLICT (subscription) DO UPDATE SET disabled_ms = excluded.disabled_ms,
                     disabled_reason = excluded.disabled_reason,
                     consecutive_failures = CASE WHEN excluded.disabled_ms IS NULL THEN 0
                         ELSE hookd_subscription_state.consecutive_failures END,
                     failing_since_ms = CASE WHEN excluded.disabled_ms IS NULL THEN NULL
                         ELSE hookd_subscription_state.failing_since_ms END",
                &[&subscription, &at, &reason],
            )
            .await?;
        lock(&self.health)
            .states
            .entry(subscription.to_string())
            .or_default()
            .set_disabled(disabled);
        Ok(())
    }

    async fn switch(&self, subscription: &str, switch: Switch) -> Result<(), StoreError> {
        let paused = switch.paused();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hookd_subscription_state (subscription, paused) VALUES ($1, $2)
                 ON CONFLICT (subscription) DO UPDATE SET paused = excluded.paused",
                &[&subscription, &paused],
            )
            .await?;
        lock(&self.health)
            .states
            .entry(subscription.to_string())
            .or_default()
            .paused = paused;
        Ok(())
    }

    async fn subscription_states(&self) -> Result<HashMap<String, SubscriptionState>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM hookd_subscription_state"),
                &[],
            )
            .await?;
        let mut out: HashMap<String, SubscriptionState> =
            rows.iter().map(|r| (r.get(0), state_of(r))).collect();
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

    async fn pending_stats(&self, now_ms: u64) -> Result<PendingStats, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                &format!(
                    "WITH now AS (SELECT coalesce($1::bigint, {DB_NOW}) AS t)
                     SELECT count(*) FILTER (WHERE due_ms <= now.t),
                            count(*) FILTER (WHERE NOT leased AND due_ms > now.t),
                            count(*) FILTER (WHERE leased AND due_ms > now.t),
                            min(created_ms)
                     FROM hookd_queue, now"
                ),
                &[&self.now_param(now_ms)],
            )
            .await?;
        Ok(PendingStats {
            ready: unms(r.get(0)),
            scheduled: unms(r.get(1)),
            in_flight: unms(r.get(2)),
            oldest_created_ms: r.get::<_, Option<i64>>(3).map(|t| self.db_to_node(t)),
        })
    }

    async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM hookd_events),
                        (SELECT count(*) FROM hookd_queue) + (SELECT count(*) FROM hookd_done)",
                &[],
            )
            .await?;
        Ok((unms(r.get(0)), unms(r.get(1))))
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                 WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'hookd\\_%'",
                &[],
            )
            .await?;
        Ok(unms(r.get(0)))
    }

    async fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, owner, toml, created_ms, updated_ms FROM hookd_subscriptions ORDER BY created_ms, id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredSubscription {
                id: r.get(0),
                owner: r.get(1),
                toml: r.get(2),
                created_ms: unms(r.get(3)),
                updated_ms: unms(r.get(4)),
            })
            .collect())
    }

    async fn put_subscription(&self, s: StoredSubscription) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hookd_subscriptions (id, owner, toml, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, toml = excluded.toml,
                     created_ms = excluded.created_ms, updated_ms = excluded.updated_ms",
                &[&s.id, &s.owner, &s.toml, &ms(s.created_ms), &ms(s.updated_ms)],
            )
            .await?;
        Ok(())
    }

    async fn erase_owner(&self, owner: &str) -> Result<Erased, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let subscriptions: Vec<String> = tx
            .query(
                "DELETE FROM hookd_subscriptions WHERE owner = $1 RETURNING id",
                &[&owner],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "DELETE FROM hookd_subscription_state WHERE subscription = ANY($1)",
            &[&subscriptions],
        )
        .await?;
        let events = tx
            .query(
                "DELETE FROM hookd_events WHERE owner = $1 RETURNING id",
                &[&owner],
            )
            .await?;
        let event_ids: Vec<String> = events.iter().map(|r| r.get(0)).collect();
        // Deliveries of the owner's events (owner set since schema v8, or found through the
        // event), and every delivery to the owner's subscriptions.
        let owned = "owner = $1 OR event_id = ANY($2)
                     OR (adhoc_url IS NULL AND subscription = ANY($3))";
        let live = tx
            .query(
                &format!(
                    "DELETE FROM hookd_queue WHERE {owned} RETURNING id, jsonb_array_length(history)"
                ),
                &[&owner, &event_ids, &subscriptions],
            )
            .await?;
        let done = tx
            .query(
                &format!(
                    "DELETE FROM hookd_done WHERE {owned} RETURNING id, jsonb_array_length(history)"
                ),
                &[&owner, &event_ids, &subscriptions],
            )
            .await?;
        tx.commit().await?;
        let attempts = |rows: &[Row]| -> u64 {
            rows.iter()
                .map(|r| u64::try_from(r.get::<_, i32>(1)).unwrap_or(0))
                .sum()
        };
        let mut health = lock(&self.health);
        for id in &subscriptions {
            health.states.remove(id);
            health.written.remove(id);
        }
        Ok(Erased {
            subscriptions: subscriptions.len() as u64,
            events: event_ids.len() as u64,
            deliveries: (live.len() + done.len()) as u64,
            attempts: attempts(&live) + attempts(&done),
            unfinished: live.iter().map(|r| r.get(0)).collect(),
        })
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM hookd_subscriptions WHERE id = $1", &[&id])
            .await?;
        tx.execute(
            "DELETE FROM hookd_subscription_state WHERE subscription = $1",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        let mut health = lock(&self.health);
        health.states.remove(id);
        health.written.remove(id);
        Ok(n > 0)
    }

    async fn end_queued(
        &self,
        subscription: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "WITH now AS (SELECT coalesce($3::bigint, {DB_NOW}) AS t),
                     gone AS (
                         DELETE FROM hookd_queue q USING now
                         WHERE q.subscription = $1 AND q.adhoc_url IS NULL
                           AND NOT (q.leased AND q.due_ms > now.t)
                         RETURNING q.*
                     )
                     INSERT INTO hookd_done (id, event_id, event_type, subscription, bucket, adhoc_url,
                         adhoc_secret, dead, attempts, created_ms, finished_ms, last_error, history, owner)
                     SELECT id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret,
                         true, attempts + 1, created_ms, now.t, $2::text,
                         history || jsonb_build_array(jsonb_build_object(
                             'number', attempts + 1, 'started_ms', now.t, 'duration_ms', 0,
                             'outcome', 'other', 'status_code', NULL, 'error', $2::text,
                             'response_excerpt', NULL)),
                         owner
                     FROM gone, now"
                ),
                &[&subscription, &reason, &self.now_param(now_ms)],
            )
            .await?;
        Ok(n)
    }

    fn skipped_records(&self) -> u64 {
        0
    }

    async fn engine_stats(&self) -> super::EngineStats {
        super::EngineStats {
            pool: Some(self.pool_status()),
            stale_outcomes: self.stale_outcomes(),
            dead_rows: self.queue_dead_rows().await.ok(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let check = async {
            let client = self.client().await?;
            client.execute("SELECT 1", &[]).await?;
            Ok::<_, StoreError>(())
        };
        tokio::time::timeout(Duration::from_secs(3), check)
            .await
            .map_err(|_| StoreError::Backend("postgres: no answer within 3 s".to_string()))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Leases this node holds are given back: another node (or this one, restarted) takes
        // them at once instead of after the lease.
        let held: Vec<(String, i64, i64)> = lock(&self.held)
            .drain()
            .map(|(id, (token, _, at))| (id, token, at))
            .collect();
        if !held.is_empty() {
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
        // Health written at most once a second: write what is left.
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
        self.closed.store(true, Ordering::SeqCst);
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        self.pool.close();
        self.fast.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_read_and_tells_what_it_saw() {
        let snap = Snapshot::parse("100:110:102,105").expect("parses");
        assert_eq!(snap.in_progress, [102, 105]);
        assert!(snap.sees(99) && snap.sees(101) && snap.sees(109));
        assert!(!snap.sees(102) && !snap.sees(105) && !snap.sees(110) && !snap.sees(200));
        assert_eq!(
            Snapshot::parse("7:7:"),
            Some(Snapshot {
                xmin: 7,
                xmax: 7,
                in_progress: Vec::new()
            })
        );
        for bad in ["", "1", "1:2", "a:2:", "1:2:x", "1:2:3:4"] {
            assert_eq!(Snapshot::parse(bad), None, "{bad:?}");
        }
    }

    /// An ingest that commits while the backlog is counted is counted once: by the count when
    /// its snapshot saw it, on top of the count when it did not.
    #[test]
    fn the_backlog_count_keeps_exactly_what_it_did_not_see() {
        let u = Unfinished::default();
        u.add(Some(90), 5);
        let seen = u.mark();
        // Committed during the count: 101 before its snapshot, 104 after it (in progress).
        u.add(Some(101), 3);
        u.add(Some(104), 4);
        // A requeue whose transaction is not known, after the mark: kept this once.
        u.add(None, 1);
        let snap = Snapshot::parse("100:106:104").expect("parses");
        // The table held 20 others, 5 of transaction 90 and 3 of 101.
        u.counted(28, seen, &snap);
        assert_eq!(u.get(), 28 + 4 + 1);
        // The next count sees them all.
        let seen = u.mark();
        u.counted(33, seen, &Snapshot::parse("200:200:").expect("parses"));
        assert_eq!(u.get(), 33);
    }

    #[test]
    fn tls_is_off_for_local_hosts_and_required_elsewhere() {
        use tokio_postgres::config::SslMode;
        for (url, mode) in [
            ("postgres://u@127.0.0.1/db", SslMode::Disable),
            ("postgres://u@localhost/db", SslMode::Disable),
            ("host=/var/run/postgresql dbname=x", SslMode::Disable),
            ("postgres://u@db.internal/db", SslMode::Require),
            (
                "postgres://u@db.internal/db?sslmode=disable",
                SslMode::Disable,
            ),
        ] {
            let config = parse_config(url).expect("valid");
            assert_eq!(config.get_ssl_mode(), mode, "{url}");
        }
    }

    #[test]
    fn attempts_survive_their_json_form() {
        let a = Attempt {
            number: 2,
            started_ms: 1_000,
            duration_ms: 12,
            outcome: Outcome::Http5xx,
            status_code: Some(503),
            error: Some("HTTP 503".to_string()),
            response_excerpt: Some("busy".to_string()),
        };
        assert_eq!(attempts_of(&Value::Array(vec![attempt_json(&a)])), vec![a]);
    }
}

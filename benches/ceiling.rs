//! hookd against the ceiling: the real `hookd` binary, driven only through its HTTP API, next to
//! the bare HTTP rate of this machine measured in the same run.
//!
//! `cargo bench --bench ceiling -- [--runs R] [--connections C] [--slots S] [--events N] [--batch B]
//!     [--batch-clients K] [--single-clients K] [--rate E] [--latency-secs S]
//!     [--disk-events D] [--ceiling-ms T] [--postgres postgres://user@host:port]
//!     [--only postgres]`
//!
//! Each run measures, in order:
//! - **ceiling**: a reqwest client POSTing the same 1 KiB JSON body, over C keep-alive
//!   connections, to the receiver the daemon delivers to (it reads the body, finds
//!   `"request_id":"job-N"` in its bytes without parsing JSON, and answers 200), for T ms:
//!   requests/s. No hookd in between; what HTTP alone costs here.
//! - **batched** and **single**: a fresh `hookd run` (fresh store, the example config's
//!   defaults, `max_in_flight_per_subscription = 16`, or S slots with `--slots`; one subscription
//!   to that receiver); N events from K clients, B per request, then one per request. Ingest
//!   rate (202s), end-to-end delivery rate (first post to last delivery seen by the receiver)
//!   and its ratio to the ceiling, accepted → received latency (202 instant to receiver instant,
//!   per `request_id`), hookd's CPU seconds (utime + stime) per 1000 deliveries and its peak RSS.
//! - **latency**: a fresh hookd offered E single events per second for S s (open loop: one
//!   request started on schedule whatever the earlier ones do): the 202 latency and accepted →
//!   received.
//! - **disk**: a fresh hookd with its subscription paused through the admin API takes D events in
//!   batches of 1000, stops on SIGTERM; the store's bytes (the sum of its files' sizes) per
//!   pending delivery.
//!
//! - **fjall batched**, **fjall single** and **fjall disk**: the same on the embedded engine's
//!   other backend (`[storage] engine = "fjall"`).
//! - with `--postgres` (or `$HOOKD_BENCH_POSTGRES`): batched and single again on the PostgreSQL
//!   engine (one node, a fresh database), and batched with two nodes sharing one database, the
//!   clients spread over both (the CPU figure is both nodes' together).
//! - `--only postgres` (with `--postgres`): the ceiling and the three PostgreSQL phases alone,
//!   without sled, fjall, latency and disk (about a third of the time).
//!
//! Then the median of each figure over the runs. Under `cargo test --all-targets` (no --bench)
//! it makes a small smoke run and asserts that every event was delivered.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::process::HookdProcess;

const FLAGS: &[&str] = &[
    "--runs",
    "--connections",
    "--slots",
    "--events",
    "--batch",
    "--batch-clients",
    "--single-clients",
    "--rate",
    "--latency-secs",
    "--disk-events",
    "--ceiling-ms",
    "--postgres",
    "--only",
];

/// Every event posted is this many bytes of JSON.
const EVENT_BYTES: usize = 1024;
/// Batch size of the disk phase (1000 events of 1 KiB fit in the default 1 MiB body limit).
const DISK_BATCH: usize = 1000;

struct Args {
    runs: usize,
    connections: usize,
    /// hookd's `max_in_flight_per_subscription`; 0: the example config's default (16).
    slots: usize,
    events: usize,
    batch: usize,
    batch_clients: usize,
    single_clients: usize,
    rate: usize,
    latency_secs: usize,
    disk_events: usize,
    ceiling_ms: usize,
    /// How long deliveries may take to finish before the run fails.
    deadline: Duration,
    /// A PostgreSQL server (`postgres://user@host:port`, no database): adds the PostgreSQL
    /// engine's phases, each in a fresh database.
    postgres: Option<String>,
    /// `--only postgres`: the ceiling and the PostgreSQL phases alone.
    only_postgres: bool,
}

fn parse_args() -> Args {
    let bench = common::is_bench();
    if bench {
        // A typo must not silently measure the defaults.
        let args: Vec<String> = std::env::args().skip(1).collect();
        for (i, a) in args.iter().enumerate() {
            let is_value = i > 0 && FLAGS.contains(&args[i - 1].as_str());
            assert!(
                is_value || a == "--bench" || FLAGS.contains(&a.as_str()),
                "unknown argument {a}; known: {}",
                FLAGS.join(" ")
            );
        }
    } else {
        println!("smoke run (cargo test); `cargo bench --bench ceiling` measures");
    }
    let pick = |flag: &str, measure: usize, smoke: usize| {
        common::arg(flag, if bench { measure } else { smoke })
    };
    Args {
        runs: pick("--runs", 3, 1),
        connections: pick("--connections", 64, 16),
        slots: pick("--slots", 0, 0),
        events: pick("--events", 40_000, 300),
        batch: pick("--batch", 100, 50),
        batch_clients: pick("--batch-clients", 16, 4),
        single_clients: pick("--single-clients", 32, 8),
        rate: pick("--rate", 1000, 200),
        latency_secs: pick("--latency-secs", 5, 1),
        disk_events: pick("--disk-events", 20_000, 500),
        ceiling_ms: pick("--ceiling-ms", 5000, 300),
        deadline: Duration::from_secs(if bench { 600 } else { 60 }),
        postgres: {
            let args: Vec<String> = std::env::args().collect();
            args.iter()
                .position(|a| a == "--postgres")
                .and_then(|i| args.get(i + 1).cloned())
                .or_else(|| std::env::var("HOOKD_BENCH_POSTGRES").ok())
                .filter(|u| !u.is_empty())
        },
        only_postgres: {
            let args: Vec<String> = std::env::args().collect();
            match args.iter().position(|a| a == "--only") {
                Some(i) => {
                    assert!(
                        args.get(i + 1).map(String::as_str) == Some("postgres"),
                        "--only takes one value: postgres"
                    );
                    true
                }
                None => false,
            }
        },
    }
}

/// Where a throughput phase keeps its queue.
#[derive(Clone)]
enum Engine {
    Sled,
    /// The embedded engine on fjall (`[storage] engine = "fjall"`).
    Fjall,
    /// `nodes` hookd processes sharing one fresh database on this server.
    Postgres {
        server: String,
        nodes: usize,
    },
}

/// A fresh database on `server`, for one phase; its `url`.
async fn fresh_database(server: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "hookd_bench_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("{server}/postgres?sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    tokio::spawn(connection);
    if N.load(Ordering::Relaxed) == 1 {
        // The databases of earlier runs go; one run's are kept until the next, to look into.
        let old = client
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'hookd\\_bench\\_%'",
                &[],
            )
            .await
            .expect("list databases");
        for row in old {
            let old: String = row.get(0);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"))
                .await;
        }
    }
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the bench database");
    format!("{server}/{name}?sslmode=disable")
}

// ------------------------------------------------------------------ events and the receiver

/// The request id of event `i`: the receiver reads the index back from it.
fn request_id(i: usize) -> String {
    format!("job-{i}")
}

/// Event `i` as posted: the seed's shape (request id, status, result items with a URL, metrics),
/// padded with a caption to exactly [`EVENT_BYTES`] bytes.
fn event(i: usize) -> String {
    let head = format!(
        r#"{{"request_id":"{}","status":"completed","result":{{"items":[{{"url":"https://cdn.example/{i}.mp4","content_type":"video/mp4","caption":""#,
        request_id(i)
    );
    let tail = r#""}]},"metrics":{"inference_time":45.2,"queue_time":2.1}}"#;
    let pad = EVENT_BYTES.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// The body of one request: event `first` alone, or events `first..first + n` as an array.
fn request_body(first: usize, n: usize) -> Bytes {
    if n == 1 {
        return event(first).into();
    }
    let events: Vec<String> = (first..first + n).map(event).collect();
    format!("[{}]", events.join(",")).into()
}

/// What the receiver saw. Instants are nanoseconds after `base`, plus one (0: not yet).
struct Seen {
    base: Instant,
    /// Per event index, when its first delivery arrived.
    first: Vec<AtomicU64>,
    /// Events seen at least once.
    distinct: AtomicUsize,
    /// Requests answered, repeats and unknown ids included.
    requests: AtomicUsize,
}

fn stamp(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64 + 1
}

/// The event index in a body's `"request_id":"job-N"`, found by a scan of the bytes (no JSON
/// parse: the receiver only reads the body, so that the ceiling is what HTTP alone allows).
fn event_index(body: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"request_id\":\"job-";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&body[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

impl Seen {
    fn record(&self, body: &[u8]) {
        let at = stamp(self.base);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let index = event_index(body);
        if let Some(slot) = index.and_then(|i| self.first.get(i)) {
            if slot
                .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.distinct.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A keep-alive receiver on 127.0.0.1 that answers 200 to `POST /hook` and records, per event
/// index below `events`, when it first arrived. The ceiling uses it too, so that both sides of
/// the ratio pay for the same receiver.
async fn receiver(base: Instant, events: usize) -> (Arc<Seen>, SocketAddr) {
    let seen = Arc::new(Seen {
        base,
        first: (0..events).map(|_| AtomicU64::new(0)).collect(),
        distinct: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
    });
    let state = seen.clone();
    let router = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let state = state.clone();
            async move {
                state.record(&body);
                StatusCode::OK
            }
        }),
    );
    (seen, common::serve_loopback(router).await)
}

// ------------------------------------------------------------------ the child's /proc figures

/// utime + stime of process `pid` (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

/// The fields of `/proc/<pid>/stat` after the command name, from field 3 (state) on; `None` when
/// the process is gone.
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let comm = stat[stat.find('(')? + 1..stat.rfind(')')?].to_string();
    let fields = stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((comm, fields))
}

/// CPU seconds of the PostgreSQL server on this machine so far: the postmaster's own and its
/// reaped children's (cutime + cstime), plus its live children's (the backends of hookd's
/// pools among them). 0 when no `postgres` process is visible.
fn postgres_cpu_seconds() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |f: &[String], i: usize| f[i].parse::<f64>().unwrap_or(0.0);
    let all: Vec<(u32, String, Vec<String>)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| stat_fields(pid).map(|(comm, f)| (pid, comm, f)))
                .collect()
        })
        .unwrap_or_default();
    let postgres: std::collections::HashSet<u32> = all
        .iter()
        .filter(|(_, comm, _)| comm == "postgres")
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut total = 0.0;
    for (_, comm, f) in &all {
        if comm != "postgres" {
            continue;
        }
        // Field 4 is the parent; 14/15 utime/stime, 16/17 the reaped children's.
        let parent: u32 = f[1].parse().unwrap_or(0);
        total += ticks(f, 11) + ticks(f, 12);
        if !postgres.contains(&parent) {
            total += ticks(f, 13) + ticks(f, 14);
        }
    }
    total / per_second
}

/// Peak resident memory (VmHWM) of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/pid/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/pid/status");
    kib / 1024.0
}

/// The bytes allocated to the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&entry.path())
            } else {
                // Allocated blocks, as `du` counts: fjall's journal is a sparse file of 64 MiB
                // from its first write, most of it never written.
                std::os::unix::fs::MetadataExt::blocks(&meta) * 512
            }
        })
        .sum()
}

// ------------------------------------------------------------------ statistics

/// The `p` quantile of `sorted` (nearest rank below).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// Milliseconds from each accepted stamp to the receiver's stamp of the same event, sorted
/// (0 where the delivery arrived before the client had read its 202).
fn accepted_to_received_ms(accepted: &[AtomicU64], seen: &Seen) -> Vec<f64> {
    let mut ms: Vec<f64> = accepted
        .iter()
        .zip(&seen.first)
        .map(|(a, r)| {
            let (a, r) = (a.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
            assert!(a > 0 && r > 0, "an event was not accepted or not received");
            r.saturating_sub(a) as f64 / 1e6
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn max_stamp(stamps: &[AtomicU64]) -> u64 {
    stamps
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

// ------------------------------------------------------------------ the phases

/// POSTs the JSON `body` to `url` and asserts the answer's status.
async fn post_json(client: &reqwest::Client, url: &str, body: Bytes, expect: u16) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    assert_eq!(status, expect, "POST {url}: {:?}", response.text().await);
}

/// POSTs `body` to hookd's ingest and asserts the 202.
async fn post_events(client: &reqwest::Client, url: &str, body: Bytes) {
    post_json(client, url, body, 202).await;
}

/// The ceiling: requests/s of `connections` keep-alive connections POSTing a 1 KiB event to the
/// receiver for `duration`.
async fn ceiling(connections: usize, duration: Duration) -> f64 {
    let (seen, addr) = receiver(Instant::now(), 0).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/hook");
    let body = request_body(0, 1);
    let started = Instant::now();
    let stop = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    post_json(&client, &url, body.clone(), 200).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    seen.requests.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A fresh `hookd run` (fresh store) with one subscription of `connections` slots to `receiver`.
async fn start_hookd(dir: &Path, receiver: SocketAddr, connections: usize) -> HookdProcess {
    start_on(dir, receiver, connections, "").await
}

/// [`start_hookd`] with `storage` keys (the engine).
async fn start_on(
    dir: &Path,
    receiver: SocketAddr,
    connections: usize,
    storage: &str,
) -> HookdProcess {
    // No `[delivery]` table: the example config's defaults, unless `--slots` names another.
    let delivery = if connections == 0 {
        String::new()
    } else {
        format!(
            "[delivery]\nmax_in_flight = {}\nmax_in_flight_per_subscription = {connections}\n\n",
            connections.max(256)
        )
    };
    let extra = format!("{delivery}{}", common::subscription(receiver));
    HookdProcess::start_with_storage(dir, storage, &extra).await
}

/// The `[storage]` keys of the fjall phases.
const FJALL: &str = "engine = \"fjall\"\n";

/// The hookd processes of one throughput phase.
async fn start_engine(
    engine: &Engine,
    dir: &Path,
    receiver: SocketAddr,
    connections: usize,
) -> Vec<HookdProcess> {
    match engine {
        Engine::Sled => vec![start_hookd(dir, receiver, connections).await],
        Engine::Fjall => vec![start_on(dir, receiver, connections, FJALL).await],
        Engine::Postgres { server, nodes } => {
            let url = fresh_database(server).await;
            let storage = format!("engine = \"postgres\"\nurl = {url:?}\n");
            let mut all = Vec::new();
            for node in 0..*nodes {
                let dir = dir.join(format!("node{node}"));
                std::fs::create_dir_all(&dir).unwrap();
                // The subscription's slots are shared by every node (the limit holds across
                // them): the same total as one node's.
                all.push(start_on(&dir, receiver, connections, &storage).await);
            }
            all
        }
    }
}

/// Waits until the receiver has seen `events` distinct events, or panics after `deadline`.
async fn wait_delivered(seen: &Seen, events: usize, deadline: Duration, hookd: &HookdProcess) {
    let start = Instant::now();
    while seen.distinct.load(Ordering::Relaxed) < events {
        assert!(
            start.elapsed() < deadline,
            "only {} of {events} events delivered after {deadline:?}; hookd stderr:\n{}",
            seen.distinct.load(Ordering::Relaxed),
            hookd.process.stderr_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Default)]
struct Throughput {
    ingest_per_s: f64,
    delivered_per_s: f64,
    /// `delivered_per_s` over the same run's ceiling.
    of_ceiling: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_per_1000: f64,
    /// Scheduler turns (claims) per 1000 deliveries, and their mean duration in ms, over every
    /// node (`hookd_store_claim_duration_seconds`).
    claims_per_1000: f64,
    claim_ms: f64,
    /// The PostgreSQL server's CPU seconds per 1000 deliveries (PostgreSQL phases only).
    db_cpu_per_1000: Option<f64>,
    rss_mib: f64,
}

/// `events` events from `clients` concurrent clients, `batch` per request, into a fresh hookd
/// (or several nodes of one, their clients spread evenly).
async fn throughput(args: &Args, clients: usize, batch: usize, engine: &Engine) -> Throughput {
    let events = args.events;
    let base = Instant::now();
    let (seen, addr) = receiver(base, events).await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_engine(engine, dir.path(), addr, args.slots).await;
    let pids: Vec<u32> = nodes.iter().map(|n| n.process.id()).collect();
    let urls: Vec<String> = nodes.iter().map(HookdProcess::events_url).collect();
    let hookd = &nodes[0];

    let requests: Arc<Vec<(usize, Bytes)>> = Arc::new(
        (0..events)
            .step_by(batch)
            .map(|first| (first, request_body(first, batch.min(events - first))))
            .collect(),
    );
    let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let cpu_all = |pids: &[u32]| pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let cpu_before = cpu_all(&pids);
    let db_before = postgres_cpu_seconds();
    let started = stamp(base);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url) = (client.clone(), urls[c % urls.len()].clone());
            let (requests, accepted, next) = (requests.clone(), accepted.clone(), next.clone());
            tokio::spawn(async move {
                while let Some((first, body)) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let n = batch.min(accepted.len() - first);
                    post_events(&client, &url, body.clone()).await;
                    let at = stamp(base);
                    for slot in &accepted[*first..first + n] {
                        slot.store(at, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    wait_delivered(&seen, events, args.deadline, hookd).await;
    let cpu = cpu_all(&pids) - cpu_before;
    let db_cpu = postgres_cpu_seconds() - db_before;
    let (mut claims, mut claim_seconds) = (0.0, 0.0);
    for node in &nodes {
        let text = common::metrics_text(&client, node.metrics).await;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        claims += value("hookd_store_claim_duration_seconds_count");
        claim_seconds += value("hookd_store_claim_duration_seconds_sum");
    }
    let rss_mib = pids.iter().map(|&p| peak_rss_mib(p)).fold(0.0, f64::max);

    let latencies = accepted_to_received_ms(&accepted, &seen);
    let per_s = |end: u64| events as f64 / ((end - started) as f64 / 1e9);
    Throughput {
        ingest_per_s: per_s(max_stamp(&accepted)),
        delivered_per_s: per_s(max_stamp(&seen.first)),
        of_ceiling: 0.0,
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        p999_ms: quantile(&latencies, 0.999),
        cpu_per_1000: cpu / events as f64 * 1000.0,
        claims_per_1000: claims / events as f64 * 1000.0,
        claim_ms: claim_seconds / claims.max(1.0) * 1000.0,
        db_cpu_per_1000: matches!(engine, Engine::Postgres { .. })
            .then(|| db_cpu / events as f64 * 1000.0),
        rss_mib,
    }
}

#[derive(Default)]
struct Latency {
    offered_per_s: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    received_p50_ms: f64,
    received_p99_ms: f64,
}

/// `rate` single events per second for `latency_secs`, each started on schedule (open loop), into
/// a fresh hookd.
async fn latency(args: &Args) -> Latency {
    let events = args.rate * args.latency_secs;
    let base = Instant::now();
    let (seen, addr) = receiver(base, events).await;
    let dir = tempfile::tempdir().unwrap();
    let hookd = start_hookd(dir.path(), addr, args.slots).await;
    let url = hookd.events_url();
    let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let client = reqwest::Client::new();
    let period = Duration::from_secs(1) / args.rate as u32;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(events);
    for i in 0..events {
        tokio::time::sleep_until((started + period * i as u32).into()).await;
        let (client, url, accepted) = (client.clone(), url.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let body = request_body(i, 1);
            let sent = Instant::now();
            post_events(&client, &url, body).await;
            accepted[i].store(stamp(base), Ordering::Relaxed);
            sent.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let offered_per_s = events as f64 / started.elapsed().as_secs_f64();
    let mut acks = Vec::with_capacity(events);
    for task in tasks {
        acks.push(task.await.unwrap());
    }
    acks.sort_by(f64::total_cmp);
    wait_delivered(&seen, events, args.deadline, &hookd).await;
    let received = accepted_to_received_ms(&accepted, &seen);
    Latency {
        offered_per_s,
        ack_p50_ms: quantile(&acks, 0.5),
        ack_p99_ms: quantile(&acks, 0.99),
        received_p50_ms: quantile(&received, 0.5),
        received_p99_ms: quantile(&received, 0.99),
    }
}

#[derive(Default)]
struct Disk {
    mib: f64,
    bytes_per_delivery: f64,
    rss_mib: f64,
}

/// `disk_events` events into a fresh hookd whose subscription is paused, then SIGTERM: the
/// store's size per pending delivery.
async fn disk(args: &Args, storage: &str) -> Disk {
    let events = args.disk_events;
    let (seen, addr) = receiver(Instant::now(), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut hookd = start_on(dir.path(), addr, args.slots, storage).await;
    let client = reqwest::Client::new();
    let pause = client
        .post(format!("http://{}/v1/subscriptions/bench/pause", hookd.api))
        .send()
        .await
        .expect("POST pause");
    assert!(pause.status().is_success(), "pause: {}", pause.status());
    let url = hookd.events_url();
    for first in (0..events).step_by(DISK_BATCH) {
        post_events(
            &client,
            &url,
            request_body(first, DISK_BATCH.min(events - first)),
        )
        .await;
    }
    let rss_mib = peak_rss_mib(hookd.process.id());
    hookd.process.signal("TERM");
    let status = hookd.process.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "hookd exited with {status} on SIGTERM");
    assert_eq!(
        seen.requests.load(Ordering::Relaxed),
        0,
        "the paused subscription received deliveries"
    );
    let bytes = bytes_under(&dir.path().join("db"));
    Disk {
        mib: bytes as f64 / (1024.0 * 1024.0),
        bytes_per_delivery: bytes as f64 / events as f64,
        rss_mib,
    }
}

// ------------------------------------------------------------------ the report

struct Run {
    /// The machine's 1-minute load average when the run started (other processes included).
    load: f64,
    ceiling_per_s: f64,
    batched: Throughput,
    single: Throughput,
    /// The embedded engine on fjall: batched and single.
    fjall: [Throughput; 2],
    /// The PostgreSQL engine, with `--postgres`: one node batched and single, two nodes
    /// batched.
    pg: Option<[Throughput; 3]>,
    latency: Latency,
    disk: Disk,
    disk_fjall: Disk,
    /// Only the ceiling and `pg` were measured (`--only postgres`).
    only_postgres: bool,
}

fn throughput_line(label: &str, t: &Throughput) -> String {
    let db = t
        .db_cpu_per_1000
        .map(|c| format!("  postgres cpu {c:.3} s/1000"))
        .unwrap_or_default();
    format!(
        "{label:<8} ingest {:>6.0}/s  delivered {:>5.0}/s = {:.3} of ceiling  accepted->received p50 {:.1} p99 {:.1} p999 {:.1} ms  cpu {:.3} s/1000{db}  claims {:.0}/1000 of {:.2} ms  peak RSS {:.1} MiB",
        t.ingest_per_s, t.delivered_per_s, t.of_ceiling, t.p50_ms, t.p99_ms, t.p999_ms, t.cpu_per_1000, t.claims_per_1000, t.claim_ms, t.rss_mib
    )
}

fn print_run(label: &str, r: &Run) {
    println!(
        "{label}: ceiling  {:>6.0} requests/s  (load average {:.1})",
        r.ceiling_per_s, r.load
    );
    if !r.only_postgres {
        println!("{label}: {}", throughput_line("batched", &r.batched));
        println!("{label}: {}", throughput_line("single", &r.single));
        println!("{label}: {}", throughput_line("fjall batched", &r.fjall[0]));
        println!("{label}: {}", throughput_line("fjall single", &r.fjall[1]));
    }
    if let Some([one_batched, one_single, two_batched]) = &r.pg {
        println!(
            "{label}: {}",
            throughput_line("pg 1 node batched", one_batched)
        );
        println!(
            "{label}: {}",
            throughput_line("pg 1 node single", one_single)
        );
        println!(
            "{label}: {}",
            throughput_line("pg 2 nodes batched", two_batched)
        );
    }
    if r.only_postgres {
        return;
    }
    let l = &r.latency;
    println!(
        "{label}: latency  {:.0}/s offered  202 p50 {:.2} p99 {:.2} ms  accepted->received p50 {:.2} p99 {:.2} ms",
        l.offered_per_s, l.ack_p50_ms, l.ack_p99_ms, l.received_p50_ms, l.received_p99_ms
    );
    for (name, d) in [("disk", &r.disk), ("fjall disk", &r.disk_fjall)] {
        println!(
            "{label}: {name:<8} {:.1} MiB on disk = {:.0} bytes per pending delivery  peak RSS {:.1} MiB",
            d.mib, d.bytes_per_delivery, d.rss_mib
        );
    }
}

/// The median of each figure; the ratio is the median of the runs' ratios (each run's delivery
/// rate against its own ceiling).
fn medians(runs: &[Run]) -> Run {
    let m = |f: &dyn Fn(&Run) -> f64| common::median(runs.iter().map(f));
    let disk_median = |f: &dyn Fn(&Run) -> &Disk| Disk {
        mib: m(&|r| f(r).mib),
        bytes_per_delivery: m(&|r| f(r).bytes_per_delivery),
        rss_mib: m(&|r| f(r).rss_mib),
    };
    let throughput = |f: &dyn Fn(&Run) -> &Throughput| Throughput {
        ingest_per_s: m(&|r| f(r).ingest_per_s),
        delivered_per_s: m(&|r| f(r).delivered_per_s),
        of_ceiling: m(&|r| f(r).of_ceiling),
        p50_ms: m(&|r| f(r).p50_ms),
        p99_ms: m(&|r| f(r).p99_ms),
        p999_ms: m(&|r| f(r).p999_ms),
        cpu_per_1000: m(&|r| f(r).cpu_per_1000),
        claims_per_1000: m(&|r| f(r).claims_per_1000),
        claim_ms: m(&|r| f(r).claim_ms),
        db_cpu_per_1000: runs
            .iter()
            .all(|r| f(r).db_cpu_per_1000.is_some())
            .then(|| m(&|r| f(r).db_cpu_per_1000.unwrap_or(0.0))),
        rss_mib: m(&|r| f(r).rss_mib),
    };
    let pg = runs.iter().all(|r| r.pg.is_some()).then(|| {
        let phase = |i: usize| throughput(&|r: &Run| &r.pg.as_ref().expect("checked above")[i]);
        [phase(0), phase(1), phase(2)]
    });
    Run {
        load: m(&|r| r.load),
        ceiling_per_s: m(&|r| r.ceiling_per_s),
        batched: throughput(&|r| &r.batched),
        single: throughput(&|r| &r.single),
        fjall: [throughput(&|r| &r.fjall[0]), throughput(&|r| &r.fjall[1])],
        pg,
        latency: Latency {
            offered_per_s: m(&|r| r.latency.offered_per_s),
            ack_p50_ms: m(&|r| r.latency.ack_p50_ms),
            ack_p99_ms: m(&|r| r.latency.ack_p99_ms),
            received_p50_ms: m(&|r| r.latency.received_p50_ms),
            received_p99_ms: m(&|r| r.latency.received_p99_ms),
        },
        disk: disk_median(&|r| &r.disk),
        disk_fjall: disk_median(&|r| &r.disk_fjall),
        only_postgres: runs.iter().any(|r| r.only_postgres),
    }
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn run_once(args: &Args) -> Run {
    let load = load_average();
    let ceiling_per_s = ceiling(
        args.connections,
        Duration::from_millis(args.ceiling_ms as u64),
    )
    .await;
    let embedded = !(args.only_postgres && args.postgres.is_some());
    let (mut batched, mut single, mut fjall) = Default::default();
    if embedded {
        batched = throughput(args, args.batch_clients, args.batch, &Engine::Sled).await;
        single = throughput(args, args.single_clients, 1, &Engine::Sled).await;
        fjall = [
            throughput(args, args.batch_clients, args.batch, &Engine::Fjall).await,
            throughput(args, args.single_clients, 1, &Engine::Fjall).await,
        ];
    }
    for t in [&mut batched, &mut single].into_iter().chain(&mut fjall) {
        t.of_ceiling = t.delivered_per_s / ceiling_per_s;
    }
    let pg = match &args.postgres {
        Some(server) => {
            let on = |nodes| Engine::Postgres {
                server: server.clone(),
                nodes,
            };
            let mut phases = [
                throughput(args, args.batch_clients, args.batch, &on(1)).await,
                throughput(args, args.single_clients, 1, &on(1)).await,
                throughput(args, args.batch_clients, args.batch, &on(2)).await,
            ];
            for t in &mut phases {
                t.of_ceiling = t.delivered_per_s / ceiling_per_s;
            }
            Some(phases)
        }
        None => None,
    };
    let (mut latency_run, mut disk_sled, mut disk_fjall) = Default::default();
    if embedded {
        latency_run = latency(args).await;
        disk_sled = disk(args, "").await;
        disk_fjall = disk(args, FJALL).await;
    }
    Run {
        load,
        ceiling_per_s,
        batched,
        single,
        fjall,
        pg,
        latency: latency_run,
        disk: disk_sled,
        disk_fjall,
        only_postgres: !embedded,
    }
}

fn main() {
    let args = parse_args();
    let runtime = common::runtime();
    println!(
        "ceiling: {} run(s); {} connections; hookd: {}, {EVENT_BYTES}-byte events; ceiling {} ms",
        args.runs,
        args.connections,
        if args.slots == 0 {
            "the example config's defaults (max_in_flight_per_subscription = 16)".to_string()
        } else {
            format!("max_in_flight_per_subscription = {}", args.slots)
        },
        args.ceiling_ms
    );
    println!(
        "ceiling: batched {} events, {} clients x {}/request; single {} events, {} clients; latency {}/s for {} s; disk {} events, {DISK_BATCH}/request",
        args.events, args.batch_clients, args.batch, args.events, args.single_clients, args.rate, args.latency_secs, args.disk_events
    );
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let run = runtime.block_on(run_once(&args));
        print_run(&format!("run {i}"), &run);
        runs.push(run);
    }
    if runs.len() > 1 {
        print_run("median", &medians(&runs));
    }
}

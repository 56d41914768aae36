//! What the benchmarks share: arguments, a counting receiver, and a config for one subscription
//! to it, or the real `hookd` binary as a child process. Included with `#[path]`; not a
//! benchmark of its own.

#![allow(dead_code)] // Each benchmark uses part of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::Router;

/// The real `hookd` binary as a child process: the integration tests' `HookdProcess` (config on
/// free loopback ports, then `[targets]` from [`LOOPBACK_TARGETS`], waits for `/readyz`) and its
/// `ChildGuard`, which kills the child on drop. For benchmarks that drive hookd only through its
/// binary and HTTP API.
#[path = "../../tests/it/support/process.rs"]
pub mod process;

/// What `process` needs to run the tests' engine (`HOOKD_TEST_ENGINE`).
#[path = "../../tests/it/support/engine.rs"]
pub mod engine;
#[path = "../../tests/it/support/pg.rs"]
pub mod pg;

/// Opens the target guard for the benchmarks' receivers on 127.0.0.1 (refused by default).
pub const LOOPBACK_TARGETS: &str = "\n[targets]\nallow = [\"127.0.0.1\"]\nallow_http = true\n";

/// `cargo bench` passes --bench; under `cargo test --all-targets` a benchmark makes a smoke run.
pub fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    parsed_arg(name).unwrap_or(default)
}

/// [`arg`] for a number that may have a fraction (`--minutes 0.5`).
pub fn arg_f64(name: &str, default: f64) -> f64 {
    parsed_arg(name).unwrap_or(default)
}

/// The value after `name` on the command line, parsed; panics naming `name` if it does not
/// parse.
fn parsed_arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, not {v:?}"))
        })
}

/// The benchmarks' tokio runtime: multi-threaded, one worker per core.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The median of `values` (the upper one of an even count).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A receiver on loopback that answers 200 and counts the requests.
pub async fn counting_receiver() -> (Arc<AtomicUsize>, SocketAddr) {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let receiver = Router::new().route(
        "/hook",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    (received, serve_loopback(receiver).await)
}

/// Serves `router` on a fresh 127.0.0.1 port (keep-alive), in the background.
pub async fn serve_loopback(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The `[[subscription]]` table of the benchmarks: `bench`, every event, to `receiver`'s `/hook`.
pub fn subscription(receiver: SocketAddr) -> String {
    format!(
        "[[subscription]]\nid = \"bench\"\nurl = \"http://{receiver}/hook\"\nsecret = \"bench-secret\"\nevents = [\"*\"]\n"
    )
}

/// A config with loopback listeners on port 0, the store in `dir/db`, `delivery` keys, and one
/// subscription `bench` to the receiver at `receiver`.
pub fn config(dir: &Path, receiver: SocketAddr, delivery: &str) -> hookd::Config {
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nmax_batch = 1000\n[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {:?}\n\
         [delivery]\n{delivery}\n{LOOPBACK_TARGETS}{}",
        dir.join("db").display().to_string(),
        subscription(receiver)
    );
    hookd::Config::from_toml(&text, "bench.toml").unwrap()
}

/// A seed-sized `job.completed` event for `job-{i}` (about 200 bytes of JSON).
pub fn seed_event(i: usize) -> String {
    format!(
        r#"{{"request_id":"job-{i}","status":"completed","result":{{"items":[{{"url":"https://cdn.example/{i}.mp4","content_type":"video/mp4"}}]}},"metrics":{{"inference_time":45.2,"queue_time":2.1}}}}"#
    )
}

/// Posts the seed-sized events `range` to `api` as one batch and expects a 202.
pub async fn post_seed_batch(
    client: &reqwest::Client,
    api: SocketAddr,
    range: std::ops::Range<usize>,
) {
    post_batch(client, api, range.map(seed_event).collect()).await;
}

/// Posts `events` (JSON objects) to `api` as one array; panics (naming the status and the
/// answer) unless hookd answers 202.
pub async fn post_batch(client: &reqwest::Client, api: SocketAddr, events: Vec<String>) {
    let response = client
        .post(format!("http://{api}/v1/events"))
        .header("content-type", "application/json")
        .body(format!("[{}]", events.join(",")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /v1/events: {e}"));
    let status = response.status();
    assert_eq!(status, 202, "POST /v1/events: {:?}", response.text().await);
}

/// The `/metrics` text of the metrics listener at `addr`.
pub async fn metrics_text(client: &reqwest::Client, addr: impl std::fmt::Display) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Resident memory (VmRSS) of process `pid`, or of this process, in MiB.
pub fn rss_mib(pid: Option<u32>) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// The peak resident memory (VmHWM, kept by the kernel) of process `pid` over its life, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(Some(pid), "VmHWM:")
}

/// The `field` line (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`, or of this process, in MiB; 0
/// when the process is gone.
fn status_mib(pid: Option<u32>, field: &str) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/status".to_string(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Bytes of the files under `dir` (allocated blocks: what they take on disk).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The machine's 1-minute load average (other processes included), 0 when unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------ the embedded engines

/// The embedded engine named by `--engine`: `sled` (also without the flag) or `fjall`. Anything
/// else stops the benchmark with a message and exit status 2, so that a typo does not quietly
/// measure sled.
pub fn engine_arg() -> &'static str {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--engine") else {
        return "sled";
    };
    match args.get(at + 1).map(String::as_str) {
        Some("sled") => "sled",
        Some("fjall") => "fjall",
        other => {
            eprintln!("--engine takes sled or fjall, not {other:?}");
            std::process::exit(2)
        }
    }
}

/// [`is_bench`], and what follows from it: under `cargo bench`, [`check_flags`] with `flags`;
/// under `cargo test`, a line saying that this is a smoke run and what `measures` the figures.
pub fn bench_mode(flags: &[&str], measures: &str) -> bool {
    let bench = is_bench();
    if bench {
        check_flags(flags);
    } else {
        println!("smoke run (cargo test); {measures} measures");
    }
    bench
}

/// Stops the benchmark (exit status 2) on an argument that is neither `--bench`, one of
/// `flags` nor the value after one: a typo must not silently measure the defaults.
pub fn check_flags(flags: &[&str]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && flags.contains(&args[i - 1].as_str());
        if !(is_value || a == "--bench" || flags.contains(&a.as_str())) {
            eprintln!("unknown argument {a}; known: {}", flags.join(" "));
            std::process::exit(2);
        }
    }
}

/// The real `hookd` binary on one embedded engine, in a fresh directory, with one subscription
/// `bench` to a [`counting_receiver`]; it can be stopped with SIGTERM and started again on the
/// same store.
pub struct Rig {
    pub engine: &'static str,
    pub hookd: process::HookdProcess,
    /// Requests the receiver has answered (one per delivery: it answers 200 to each).
    pub received: Arc<AtomicUsize>,
    pub client: reqwest::Client,
    dir: tempfile::TempDir,
    storage: String,
    extra: String,
}

impl Rig {
    /// Starts hookd with `engine = <engine>` and `storage_keys` in `[storage]`.
    pub async fn start(engine: &'static str, storage_keys: &str) -> Rig {
        let (received, receiver) = counting_receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let storage = format!("engine = {engine:?}\n{storage_keys}");
        let extra = subscription(receiver);
        let hookd = process::HookdProcess::start_with_storage(dir.path(), &storage, &extra).await;
        Rig {
            engine,
            hookd,
            received,
            client: reqwest::Client::new(),
            dir,
            storage,
            extra,
        }
    }

    pub fn pid(&self) -> u32 {
        self.hookd.process.id()
    }

    /// Bytes the store takes on disk now.
    pub fn disk(&self) -> u64 {
        disk_bytes(&self.dir.path().join("db"))
    }

    /// Deliveries the receiver has seen.
    pub fn delivered(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// Pauses the subscription through the admin API: its deliveries stay pending.
    pub async fn pause(&self) {
        let paused = self
            .client
            .post(format!(
                "http://{}/v1/subscriptions/bench/pause",
                self.hookd.api
            ))
            .send()
            .await
            .unwrap();
        assert!(paused.status().is_success(), "pause: {}", paused.status());
    }

    /// Starts posting `load` to hookd in a task of its own ([`offer`]); returns the count of
    /// events accepted so far, which that task raises, and the task.
    pub fn spawn_offer(&self, load: Offer) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = offer(self.client.clone(), self.hookd.api, load, accepted.clone());
        (accepted, tokio::spawn(task))
    }

    /// Stops hookd with SIGTERM (it must exit cleanly within a minute), starts it again on the
    /// same store and returns the time from that start to `/readyz` answering 200.
    pub async fn restart(&mut self) -> std::time::Duration {
        self.hookd.process.signal("TERM");
        let deadline = std::time::Duration::from_secs(60);
        let status = self.hookd.process.wait_exit(deadline).await;
        assert!(status.success(), "hookd stops cleanly on SIGTERM: {status}");
        let started = std::time::Instant::now();
        self.hookd =
            process::HookdProcess::start_with_storage(self.dir.path(), &self.storage, &self.extra)
                .await;
        started.elapsed()
    }
}

// ------------------------------------------------------------------ offered load

/// Event `i` as posted, `bytes` long (or as short as its fields allow): a `job.completed`
/// with a unique `request_id` and a `result` padded with a note.
pub fn sized_event(i: usize, bytes: usize) -> String {
    let head = format!(r#"{{"request_id":"job-{i}","status":"completed","result":{{"note":""#);
    let tail = r#""}}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// How [`offer`] posts.
#[derive(Clone, Copy)]
pub struct Offer {
    /// Events in all, numbered from 0.
    pub events: usize,
    /// Events per request.
    pub batch: usize,
    /// Events per second, open loop: batch `k` is started at `k * batch / rate` s whatever the
    /// earlier ones do. 0: as fast as hookd accepts them, from [`CLOSED_LOOP_CLIENTS`] clients
    /// that each post their next batch once the last one is answered.
    pub rate: usize,
    /// Bytes of each event.
    pub body_bytes: usize,
}

/// The clients of an [`Offer`] at rate 0: the ceiling bench's batched load.
pub const CLOSED_LOOP_CLIENTS: usize = 16;

/// Posts `offer`'s events to `api`, adding each answered batch to `accepted`; returns once
/// every event is accepted. Run it in a task of its own beside the one that watches.
pub async fn offer(
    client: reqwest::Client,
    api: SocketAddr,
    offer: Offer,
    accepted: Arc<AtomicUsize>,
) {
    let batches = offer.events.div_ceil(offer.batch);
    let post = move |k: usize| {
        let (client, accepted) = (client.clone(), accepted.clone());
        async move {
            let first = k * offer.batch;
            let n = offer.batch.min(offer.events - first);
            let events = (first..first + n).map(|i| sized_event(i, offer.body_bytes));
            post_batch(&client, api, events.collect()).await;
            accepted.fetch_add(n, Ordering::Relaxed);
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if offer.rate == 0 {
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..CLOSED_LOOP_CLIENTS {
            let (next, post) = (next.clone(), post.clone());
            tasks.spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= batches {
                        break;
                    }
                    post(k).await;
                }
            });
        }
    } else {
        let started = tokio::time::Instant::now();
        let period = std::time::Duration::from_secs_f64(offer.batch as f64 / offer.rate as f64);
        for k in 0..batches {
            tokio::time::sleep_until(started + period.mul_f64(k as f64)).await;
            tasks.spawn(post(k));
            // A refused batch stops the run now, not at the end.
            while let Some(done) = tasks.try_join_next() {
                done.expect("a posting task panicked");
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a posting task panicked");
    }
}

// ------------------------------------------------------------------ watching a run

/// One look at a running [`Rig`]: seconds since the run started, events accepted and delivered
/// so far, hookd's resident memory.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: f64,
    pub accepted: usize,
    pub delivered: usize,
    pub rss_mib: f64,
}

impl Sample {
    /// Looks at `rig` now.
    pub fn take(rig: &Rig, started: std::time::Instant, accepted: &AtomicUsize) -> Sample {
        Sample {
            at: started.elapsed().as_secs_f64(),
            accepted: accepted.load(Ordering::Relaxed),
            delivered: rig.delivered(),
            rss_mib: rss_mib(Some(rig.pid())),
        }
    }

    /// Events accepted and not delivered yet.
    pub fn waiting(&self) -> usize {
        self.accepted.saturating_sub(self.delivered)
    }
}

/// Stalls: how long events have waited with no delivery, from one [`Sample`] to the next.
#[derive(Default)]
pub struct Stalls {
    delivered: usize,
    /// When the current gap began: the last delivery, or the last moment nothing waited.
    since: f64,
    /// The longest gap so far, in seconds, and when it ended.
    pub longest: f64,
    pub longest_at: f64,
}

impl Stalls {
    /// Takes `sample` in; returns the current gap (0 while deliveries go on or nothing waits).
    pub fn see(&mut self, sample: &Sample) -> f64 {
        if sample.delivered != self.delivered || sample.waiting() == 0 {
            self.delivered = sample.delivered;
            self.since = sample.at;
            return 0.0;
        }
        let gap = sample.at - self.since;
        if gap > self.longest {
            self.longest = gap;
            self.longest_at = sample.at;
        }
        gap
    }
}

/// The median of the `y` of the `points` whose `x` lies in `(low, high]`; 0 without any.
pub fn median_within(points: &[(f64, f64)], low: f64, high: f64) -> f64 {
    let within: Vec<f64> = points
        .iter()
        .filter(|(x, _)| *x > low && *x <= high)
        .map(|(_, y)| *y)
        .collect();
    if within.is_empty() {
        0.0
    } else {
        median(within)
    }
}

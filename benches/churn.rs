//! Churn: does the store give back the space of delivered events once their retention has
//! passed? (sled has been reported not to reclaim space for queue-like workloads,
//! spacejam/sled#1333.)
//!
//! `cargo bench --bench churn -- [--events N] [--first F] [--retention-secs R]`
//!
//! Starts an in-process hookd with one subscription whose receiver answers 200 and a short
//! retention, and pushes N events through it in batches of 1000, never more than 50,000 ahead
//! of the receiver. It prints the store's size on disk (the bytes of its files, allocated
//! blocks) after the first F events have been delivered and swept, then every F events, and at
//! the end, once everything is delivered and the retention sweep has removed it all, and again
//! after a restart. The figure is the ratio of the final size to the size after the first F.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hookd::Application;
use tokio_util::sync::CancellationToken;

/// Bytes the files under `dir` occupy on disk (allocated blocks, not apparent length).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let bench = common::is_bench();
    let events = common::arg("--events", if bench { 1_000_000 } else { 4_000 });
    let first = common::arg("--first", if bench { 100_000 } else { 1_000 });
    let retention = common::arg("--retention-secs", if bench { 2 } else { 1 });
    let runtime = common::runtime();
    runtime.block_on(run(events, first, retention as u64));
}

struct Daemon {
    api: std::net::SocketAddr,
    shared: std::sync::Arc<hookd::state::Shared>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(config: hookd::Config) -> Daemon {
    let app = Application::build(config).await.unwrap();
    let api = app.api_addr();
    let shared = app.shared();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Daemon {
        api,
        shared,
        shutdown,
        handle,
    }
}

impl Daemon {
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    /// Waits until the store holds no event and no delivery: everything swept.
    async fn wait_swept(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            let (events, deliveries) = self.shared.store.counts().await.unwrap();
            if events == 0 && deliveries == 0 {
                return;
            }
            assert!(
                Instant::now() < until,
                "{events} events and {deliveries} deliveries left after {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn run(events: usize, first: usize, retention_secs: u64) {
    let (received, receiver_addr) = common::counting_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut config = common::config(
        dir.path(),
        receiver_addr,
        "max_in_flight_per_subscription = 64",
    );
    config.storage.retention = Duration::from_secs(retention_secs);
    let sweep_wait = Duration::from_secs(retention_secs * 4 + 30);
    println!(
        "churn: {events} events, batches of 1000, retention {retention_secs} s; size after the first {first} and after all, swept"
    );
    println!(
        "{:>10}  {:>10}  {:>12}",
        "delivered", "disk MiB", "events/s"
    );
    let daemon = start(config.clone()).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0;
    let mut baseline = 0;
    let mut next_report = first;
    while sent < events {
        // Stay at most 50,000 events ahead of the receiver: a queue, not a backlog.
        while sent >= received.load(Ordering::Relaxed) + 50_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = (events - sent).min(1000);
        common::post_seed_batch(&client, daemon.api, sent..sent + n).await;
        sent += n;
        if sent >= next_report {
            next_report += first;
            wait_received(&received, sent).await;
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            if sent == first {
                // The reference point: the first events delivered and swept.
                daemon.wait_swept(sweep_wait).await;
                baseline = disk_bytes(&db);
            }
            println!("{sent:>10}  {:>10.1}  {rate:>12.0}", mib(disk_bytes(&db)));
        }
    }
    wait_received(&received, events).await;
    let delivered_in = started.elapsed();
    daemon.wait_swept(sweep_wait).await;
    let swept = disk_bytes(&db);
    daemon.stop().await;
    let daemon = start(config).await;
    let reopened = disk_bytes(&db);
    daemon.stop().await;
    let baseline = baseline.max(1);
    println!(
        "delivered {events} in {:.1} s; size after the first {first}, swept: {:.1} MiB; after all, swept: {:.1} MiB ({:.2}x); after a restart: {:.1} MiB ({:.2}x)",
        delivered_in.as_secs_f64(),
        mib(baseline),
        mib(swept),
        swept as f64 / baseline as f64,
        mib(reopened),
        reopened as f64 / baseline as f64,
    );
}

async fn wait_received(received: &std::sync::atomic::AtomicUsize, n: usize) {
    let until = Instant::now() + Duration::from_secs(600);
    while received.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < until, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

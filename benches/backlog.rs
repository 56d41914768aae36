//! Memory and scrape cost with a large backlog: the SPEC's "a million scheduled retries live on
//! disk, not in RAM".
//!
//! `cargo bench --bench backlog -- [--events N] [--step S]`
//!
//! Starts an in-process hookd whose one subscription is paused, so that every delivery waits in
//! the queue, and ingests N events in batches of 1000. After every S events it prints the
//! process's resident memory (VmRSS: hookd and the benchmark's client together), the store's
//! size on disk, and how long a /metrics scrape takes (it counts the pending deliveries). Then it
//! resumes the subscription, whose receiver answers 200, and reports how fast the backlog
//! drains.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hookd::Application;
use tokio_util::sync::CancellationToken;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    // Under `cargo test` (no --bench) a small smoke run.
    let bench = common::is_bench();
    let events = common::arg("--events", if bench { 200_000 } else { 2_000 });
    let step = common::arg("--step", if bench { 50_000 } else { 1_000 });
    let runtime = common::runtime();
    runtime.block_on(run(events, step));
}

async fn run(events: usize, step: usize) {
    let (received, receiver_addr) = common::counting_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        receiver_addr,
        "max_in_flight_per_subscription = 64",
    );
    let app = Application::build(config).await.unwrap();
    let (api, metrics) = (app.api_addr(), app.metrics_addr());
    let shared = app.shared();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = reqwest::Client::new();
    let pause = client
        .post(format!("http://{api}/v1/subscriptions/bench/pause"))
        .send()
        .await
        .unwrap();
    assert!(pause.status().is_success());

    println!("backlog: {events} events into a paused subscription, batches of 1000");
    println!(
        "{:>10}  {:>10}  {:>12}  {:>12}",
        "queued", "RSS MiB", "disk MiB", "scrape ms"
    );
    let started = Instant::now();
    let mut sent = 0;
    while sent < events {
        let n = (events - sent).min(1000);
        common::post_seed_batch(&client, api, sent..sent + n).await;
        sent += n;
        if sent % step == 0 || sent == events {
            let t = Instant::now();
            let text = client
                .get(format!("http://{metrics}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let scrape = t.elapsed();
            assert!(text.contains("hookd_deliveries_pending{state=\"ready\"}"));
            let disk = shared.store.size_on_disk().await.unwrap_or(0) as f64 / (1024.0 * 1024.0);
            println!(
                "{sent:>10}  {:>10.1}  {disk:>12.1}  {:>12.2}",
                rss_mib(),
                scrape.as_secs_f64() * 1000.0
            );
        }
    }
    let ingest = started.elapsed();
    println!(
        "ingested {events} events in {:.1} s ({:.0} events/s)",
        ingest.as_secs_f64(),
        events as f64 / ingest.as_secs_f64()
    );

    let resume = client
        .post(format!("http://{api}/v1/subscriptions/bench/resume"))
        .send()
        .await
        .unwrap();
    assert!(resume.status().is_success());
    let drain = Instant::now();
    let deadline = drain + Duration::from_secs(3600);
    while received.load(Ordering::Relaxed) < events {
        assert!(
            Instant::now() < deadline,
            "the backlog did not drain within an hour"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = drain.elapsed();
    println!(
        "drained {events} deliveries in {:.1} s ({:.0} deliveries/s); RSS {:.1} MiB",
        drained.as_secs_f64(),
        events as f64 / drained.as_secs_f64(),
        rss_mib()
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

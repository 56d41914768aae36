//! Memory and scrape cost with a large backlog: the SPEC's "a million scheduled retries live on
//! disk, not in RAM".
//!
//! `cargo bench --bench backlog -- [--events N] [--step S]`
//!
//! Starts an in-process hookd whose one subscription is paused, so that every delivery waits in
//! the queue, and ingests N events in batches of 1000. After every S events it prints the
//! process's resident memory (VmRSS: hookd and the benchmark's client together), the store's
//! size on disk, and how long a /metrics scrape takes (it counts the pending deliveries). With the
//! backlog in place it measures how punctual retries are: a second subscription, `probe`, gets
//! `--probes` failed-job events (100 a second) whose first attempt fails and whose retry is due
//! 2 s later; it prints how late the retries arrive. Then it restarts hookd and prints the time
//! from opening the store to `/readyz` answering 200. Last it resumes the subscription, whose
//! receiver answers 200, and reports how fast the backlog drains.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hookd::Application;
use tokio_util::sync::CancellationToken;

fn main() {
    // Under `cargo test` (no --bench) a small smoke run.
    let bench = common::is_bench();
    let events = common::arg("--events", if bench { 200_000 } else { 2_000 });
    let step = common::arg("--step", if bench { 50_000 } else { 1_000 });
    let probes = common::arg("--probes", if bench { 1_000 } else { 20 });
    // 0: the default of the example config.
    let cache_mib = common::arg("--cache-mib", 0);
    let runtime = common::runtime();
    runtime.block_on(run(events, step, probes, cache_mib));
}

/// When each probe delivery's attempts arrived, by delivery id.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// The probe subscription's receiver: fails every first attempt, accepts the rest, and notes
/// when each attempt arrived.
async fn probe_receiver() -> (Arrivals, std::net::SocketAddr) {
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let router = Router::new().route(
        "/probe",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = headers
                    .get("x-abstrakt-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let mut seen = seen.lock().unwrap();
                let attempts = seen.entry(id).or_default();
                attempts.push(Instant::now());
                if attempts.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    (arrivals, common::serve_loopback(router).await)
}

fn config(
    dir: &std::path::Path,
    bench: std::net::SocketAddr,
    probe: std::net::SocketAddr,
) -> hookd::Config {
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nmax_batch = 1000\n[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {:?}\nmax_pending = 0\n\
         [delivery]\nmax_in_flight_per_subscription = 64\n{}\n\
         [[subscription]]\nid = \"bench\"\nurl = \"http://{bench}/hook\"\nsecret = \"bench-secret\"\nevents = [\"job.completed\"]\n\
         [[subscription]]\nid = \"probe\"\nurl = \"http://{probe}/probe\"\nsecret = \"probe-secret\"\nevents = [\"job.failed\"]\nretry_schedule = [\"{PROBE_RETRY_SECS}s\"]\n",
        dir.join("db").display().to_string(),
        common::LOOPBACK_TARGETS,
    );
    hookd::Config::from_toml(&text, "backlog.toml").unwrap()
}

/// The delay before a probe's retry.
const PROBE_RETRY_SECS: u64 = 2;

/// Sends `n` failed-job events to the probe subscription, 100 a second, waits for every retry
/// and prints how late the retries came (after the first attempt's arrival plus the delay).
async fn measure_punctuality(
    client: &reqwest::Client,
    api: std::net::SocketAddr,
    arrivals: &Arrivals,
    n: usize,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..n {
        tick.tick().await;
        let response = client
            .post(format!("http://{api}/v1/events"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"request_id":"probe-{i}","status":"failed","error":{{"message":"out of memory"}}}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let seen = arrivals.lock().unwrap();
            seen.len() == n && seen.values().all(|a| a.len() >= 2)
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "probe retries did not all arrive within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late: Vec<f64> = arrivals
        .lock()
        .unwrap()
        .values()
        .map(|a| (a[1] - a[0]).as_secs_f64() * 1000.0 - (PROBE_RETRY_SECS * 1000) as f64)
        .collect();
    let mut sorted = late.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!(
        "retries with the backlog in place: {n} probes, retry due {PROBE_RETRY_SECS} s after the failed attempt; late by p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1]
    );
}

async fn run(events: usize, step: usize, probes: usize, cache_mib: usize) {
    let (received, receiver_addr) = common::counting_receiver().await;
    let (arrivals, probe_addr) = probe_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), receiver_addr, probe_addr);
    if cache_mib > 0 {
        config.storage.cache_capacity_bytes = (cache_mib as u64) << 20;
    }
    let app = Application::build(config.clone()).await.unwrap();
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

    println!(
        "backlog: {events} events into a paused subscription, batches of 1000; sled cache {} MiB",
        config.storage.cache_capacity_bytes >> 20
    );
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
            let text = common::metrics_text(&client, metrics).await;
            let scrape = t.elapsed();
            assert!(text.contains("hookd_deliveries_pending{state=\"ready\"}"));
            let disk = shared.store.size_on_disk().await.unwrap_or(0) as f64 / (1024.0 * 1024.0);
            println!(
                "{sent:>10}  {:>10.1}  {disk:>12.1}  {:>12.2}",
                common::rss_mib(None),
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

    measure_punctuality(&client, api, &arrivals, probes).await;

    shutdown.cancel();
    handle.await.unwrap().unwrap();
    // The store's last handle: sled keeps its file locked until it is gone.
    drop(shared);
    let restart = Instant::now();
    let app = Application::build(config).await.unwrap();
    let (api, metrics) = (app.api_addr(), app.metrics_addr());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let deadline = restart + Duration::from_secs(120);
    loop {
        let ready = client.get(format!("http://{metrics}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 120 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "restart with {events} pending: ready in {:.2} s; RSS {:.1} MiB",
        restart.elapsed().as_secs_f64(),
        common::rss_mib(None)
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
        common::rss_mib(None)
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

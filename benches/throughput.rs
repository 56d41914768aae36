//! Ingest and delivery throughput of an in-process hookd against an in-process receiver, all on
//! loopback.
//!
//! `cargo bench --bench throughput -- [--events N] [--concurrency C] [--batch B] [--runs R]`
//!
//! Each run starts a fresh hookd (fresh store), posts N events from C concurrent clients (B
//! events per request), and reports: the ingest rate (events acknowledged with a durable 202
//! per second), the ingest latency percentiles, and the delivery rate (from the first post to
//! the last delivery received). Each run also posts N/10 events from a single client, one at a
//! time: the ratio of the two ingest rates, measured in the same run, shows how far concurrent
//! requests share their fsync (group commit); with one flush per request it would be about 1.
//! The last lines give the median of the runs.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookd::Application;
use tokio_util::sync::CancellationToken;

struct Args {
    events: usize,
    concurrency: usize,
    batch: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 20_000,
        concurrency: 64,
        batch: 1,
        runs: 3,
    };
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and then it makes a small smoke run instead of the full measurement.
    if !common::is_bench() {
        args = Args {
            events: 500,
            concurrency: 8,
            batch: 1,
            runs: 1,
        };
        println!("smoke run (cargo test); `cargo bench --bench throughput` measures");
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--events" => args.events = value(),
            "--concurrency" => args.concurrency = value(),
            "--batch" => args.batch = value(),
            "--runs" => args.runs = value(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

struct RunResult {
    serial_ingest_per_s: f64,
    ingest_per_s: f64,
    deliver_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_once(args: &Args) -> RunResult {
    let serial = Args {
        events: (args.events / 10).max(100),
        concurrency: 1,
        batch: 1,
        runs: 1,
    };
    let (serial_ingest_per_s, _, _, _) = measure(&serial).await;
    let (ingest_per_s, deliver_per_s, p50_ms, p99_ms) = measure(args).await;
    RunResult {
        serial_ingest_per_s,
        ingest_per_s,
        deliver_per_s,
        p50_ms,
        p99_ms,
    }
}

/// One fresh hookd: (ingest events/s, delivered events/s, p50 ms, p99 ms).
async fn measure(args: &Args) -> (f64, f64, f64, f64) {
    let (received, receiver_addr) = common::counting_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        receiver_addr,
        "max_in_flight = 256\nmax_in_flight_per_subscription = 64",
    );
    let app = Application::build(config).await.unwrap();
    let api = app.api_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let client = reqwest::Client::new();
    let requests = args.events.div_ceil(args.batch);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, batch) = (client.clone(), next.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return latencies;
                }
                let events: Vec<String> = (0..batch)
                    .map(|j| format!(r#"{{"request_id":"job-{i}-{j}","status":"completed","result":{{"items":[{{"url":"https://cdn.example/{i}.mp4","content_type":"video/mp4"}}]}},"metrics":{{"inference_time":45.2,"queue_time":2.1}}}}"#))
                    .collect();
                let body = if batch == 1 { events[0].clone() } else { format!("[{}]", events.join(",")) };
                let t = Instant::now();
                let response = client.post(format!("http://{api}/v1/events")).header("content-type", "application/json").body(body).send().await.unwrap();
                assert_eq!(response.status(), 202, "{:?}", response.text().await);
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let ingest_time = started.elapsed();
    let total = requests * args.batch;
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "deliveries did not finish in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deliver_time = started.elapsed();
    shutdown.cancel();
    handle.await.unwrap().unwrap();

    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    (
        total as f64 / ingest_time.as_secs_f64(),
        total as f64 / deliver_time.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    )
}

fn main() {
    let args = parse_args();
    let runtime = common::runtime();
    println!(
        "throughput: {} events, {} concurrent clients, {} event(s) per request, {} run(s)",
        args.events, args.concurrency, args.batch, args.runs
    );
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let r = runtime.block_on(run_once(&args));
        println!(
            "run {run}: ingest {:>7.0} events/s (p50 {:.2} ms, p99 {:.2} ms per request), delivered {:>7.0} events/s; one client: {:>6.0} events/s, ratio {:.1}x",
            r.ingest_per_s, r.p50_ms, r.p99_ms, r.deliver_per_s, r.serial_ingest_per_s, r.ingest_per_s / r.serial_ingest_per_s
        );
        results.push(r);
    }
    println!(
        "median: ingest {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms; delivered {:.0} events/s; one client {:.0} events/s; concurrent/one-client ratio {:.1}x",
        common::median(results.iter().map(|r| r.ingest_per_s)),
        common::median(results.iter().map(|r| r.p50_ms)),
        common::median(results.iter().map(|r| r.p99_ms)),
        common::median(results.iter().map(|r| r.deliver_per_s)),
        common::median(results.iter().map(|r| r.serial_ingest_per_s)),
        common::median(results.iter().map(|r| r.ingest_per_s / r.serial_ingest_per_s)),
    );
}

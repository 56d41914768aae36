//! The SPEC's memory guarantee, on the real binary: a million pending deliveries live on disk
//! and hookd stays under 150 MiB RSS with them.
//!
//! `cargo bench --bench memory -- [--events N] [--step S] [--cache-mib M]`
//!
//! Starts `hookd run` (the built binary, default settings) with one subscription, pauses it,
//! and posts N seed-sized events in batches of 1000 from this process. Every S events it prints
//! hookd's resident memory (VmRSS of its process alone) and the store's bytes per pending
//! delivery. Then it stops hookd with SIGTERM, starts it again on the same store and prints the
//! time to `/readyz` answering 200 and the memory after the restart.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::HookdProcess;

/// Bytes of the files under `dir` (allocated blocks).
fn disk_bytes(dir: &Path) -> u64 {
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

fn main() {
    let bench = common::is_bench();
    let events = common::arg("--events", if bench { 1_000_000 } else { 3_000 });
    let step = common::arg("--step", if bench { 250_000 } else { 1_000 });
    // 0: the default of the example config.
    let cache_mib = common::arg("--cache-mib", 0);
    common::runtime().block_on(run(events, step, cache_mib));
}

async fn run(events: usize, step: usize, cache_mib: usize) {
    let (_received, receiver) = common::counting_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = common::subscription(receiver);
    let mut storage = "max_pending = 0".to_string();
    if cache_mib > 0 {
        storage.push_str(&format!("\ncache_capacity_bytes = {}", cache_mib << 20));
    }
    let hookd = HookdProcess::start_with_storage(dir.path(), &storage, &extra).await;
    let client = reqwest::Client::new();
    let paused = client
        .post(format!("http://{}/v1/subscriptions/bench/pause", hookd.api))
        .send()
        .await
        .unwrap();
    assert!(paused.status().is_success());
    let cache = if cache_mib > 0 {
        format!("{cache_mib} MiB")
    } else {
        "the default".to_string()
    };
    println!("memory: the hookd binary, {events} seed-sized events pending in a paused subscription, batches of 1000, sled cache {cache}");
    println!(
        "{:>10}  {:>12}  {:>18}",
        "pending", "hookd RSS MiB", "disk bytes/pending"
    );
    let started = Instant::now();
    let mut sent = 0;
    while sent < events {
        let n = (events - sent).min(1000);
        common::post_seed_batch(&client, hookd.api, sent..sent + n).await;
        sent += n;
        if sent % step == 0 || sent == events {
            println!(
                "{sent:>10}  {:>12.1}  {:>18.0}",
                common::rss_mib(Some(hookd.process.id())),
                disk_bytes(&dir.path().join("db")) as f64 / sent as f64
            );
        }
    }
    println!(
        "ingested {events} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut hookd = hookd;
    hookd.process.signal("TERM");
    let status = hookd.process.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "hookd stops cleanly: {status}");
    let restart = Instant::now();
    let hookd = HookdProcess::start_with_storage(dir.path(), &storage, &extra).await;
    let ready = restart.elapsed();
    println!(
        "restart with {events} pending: ready in {:.2} s (process start to /readyz 200); hookd RSS {:.1} MiB",
        ready.as_secs_f64(),
        common::rss_mib(Some(hookd.process.id()))
    );
}

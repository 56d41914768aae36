//! The SPEC's memory guarantee, on the real binary: a million pending deliveries live on disk
//! and hookd stays under 150 MiB RSS with them.
//!
//! `cargo bench --bench memory -- [--engine sled|fjall] [--events N] [--step S] [--cache-mib M]`
//!
//! Starts `hookd run` (the built binary, default settings, `[storage] engine` as given, sled by
//! default) with one subscription, pauses it, and posts N seed-sized events (default 1,000,000)
//! in batches of 1000 from this process. It samples hookd's resident memory (VmRSS of its
//! process alone) after every batch, and every S events prints it, its peak so far and the
//! store's bytes per pending delivery so far. Then the peak over the whole fill (the largest
//! sample, and the kernel's VmHWM). Then it stops hookd with SIGTERM, starts it again on the
//! same store and prints the time to `/readyz` answering 200, the memory after the restart and
//! the disk per pending delivery (the files of the cleanly stopped store). Last, one line:
//!
//! `memory sled: N pending; RSS peak over the fill X MiB (VmHWM H MiB); disk D bytes per
//! pending delivery; restart ready in T s, RSS after restart R MiB`
//!
//! Under `cargo test --all-targets` (no `--bench`) it makes a smoke run of 3000 events and
//! asserts that the figures are positive.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::Rig;

const FLAGS: &[&str] = &["--engine", "--events", "--step", "--cache-mib"];

fn main() {
    let bench = common::bench_mode(FLAGS, "`cargo bench --bench memory`");
    let engine = common::engine_arg();
    let events = common::arg("--events", if bench { 1_000_000 } else { 3_000 });
    let step = common::arg("--step", if bench { 250_000 } else { 1_000 });
    // 0: the default of the example config.
    let cache_mib = common::arg("--cache-mib", 0);
    common::runtime().block_on(run(engine, events, step, cache_mib));
}

async fn run(engine: &'static str, events: usize, step: usize, cache_mib: usize) {
    let mut storage = "max_pending = 0".to_string();
    if cache_mib > 0 {
        storage.push_str(&format!("\ncache_capacity_bytes = {}", cache_mib << 20));
    }
    let mut rig = Rig::start(engine, &storage).await;
    rig.pause().await;
    let cache = if cache_mib > 0 {
        format!("{cache_mib} MiB")
    } else {
        "the default".to_string()
    };
    println!("memory: the hookd binary on {engine}, {events} seed-sized events pending in a paused subscription, batches of 1000, cache {cache}; load average {:.2}", common::load_average());
    println!(
        "{:>10}  {:>13}  {:>13}  {:>18}",
        "pending", "hookd RSS MiB", "peak so far", "disk bytes/pending"
    );
    let started = Instant::now();
    let (mut sent, mut peak) = (0, 0.0_f64);
    while sent < events {
        let n = (events - sent).min(1000);
        common::post_seed_batch(&rig.client, rig.hookd.api, sent..sent + n).await;
        sent += n;
        let rss = common::rss_mib(Some(rig.pid()));
        peak = peak.max(rss);
        if sent % step == 0 || sent == events {
            let disk = rig.disk() as f64 / sent as f64;
            println!("{sent:>10}  {rss:>13.1}  {peak:>13.1}  {disk:>18.0}");
        }
    }
    let hwm = common::peak_rss_mib(rig.pid());
    println!(
        "ingested {events} in {:.1} s; RSS peak over the fill {peak:.1} MiB (sampled after each batch), VmHWM {hwm:.1} MiB",
        started.elapsed().as_secs_f64()
    );
    let ready = rig.restart().await;
    let after = common::rss_mib(Some(rig.pid()));
    // After the clean stop: everything the engine wrote is in its files.
    let disk = rig.disk() as f64 / events as f64;
    println!(
        "restart with {events} pending: ready in {:.2} s (process start to /readyz 200); hookd RSS {after:.1} MiB; disk {disk:.0} bytes per pending delivery",
        ready.as_secs_f64()
    );
    assert_eq!(
        rig.delivered(),
        0,
        "the paused subscription received deliveries"
    );
    println!(
        "memory {engine}: {events} pending; RSS peak over the fill {peak:.1} MiB (VmHWM {hwm:.1} MiB); disk {disk:.0} bytes per pending delivery; restart ready in {:.2} s, RSS after restart {after:.1} MiB",
        ready.as_secs_f64()
    );
    for (name, figure) in [
        ("peak", peak),
        ("VmHWM", hwm),
        ("disk", disk),
        ("RSS after restart", after),
    ] {
        assert!(figure > 0.0, "{name} is {figure}");
    }
}

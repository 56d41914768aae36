//! Fairness: a healthy subscription's delivery rate beside many per-request hosts that failed
//! and wait for their retry, against its rate alone. Runs the real `hookd` binary.
//!
//! `cargo bench --bench fairness -- [--hosts H] [--events E] [--runs R] [--concurrency C]
//! [--batch B] [--deadline SECONDS]`
//!
//! On sled by default; `HOOKD_TEST_ENGINE=fjall` (or `postgres`, a database of its own on the
//! local server) runs it on another engine, as for the integration tests.
//!
//! Each run starts hookd on a fresh store twice (the scenario is in
//! tests/it/support/fairness.rs, which the integration test `fairness` runs at 500 hosts):
//!
//! - alone: E events for the subscription `healthy` (C concurrent clients, B events per
//!   request) and the rate they are delivered at, from the first post to the last delivery;
//! - beside H failing hosts: H events first, each with a `webhook_url` on its own loopback
//!   address (`http://127.0.X.Y:9/hook`, refused at once), so each is a bucket of its own; once
//!   every first attempt has failed and waits for its one-minute retry, the same E events.
//!
//! It prints both rates and their ratio (1.0: the failing hosts cost the healthy subscription
//! nothing), then the medians of the runs. Each phase stops at the deadline and then reports
//! what it delivered by then. Defaults: H = 20,000, E = 100,000, R = 5, C = 8, B = 10, a
//! 120 s deadline. Under `cargo test --all-targets` it makes a smoke run (H = 200, E = 1000).

// Both trees include the tests' process launcher; each copy is used through its own tree.
#![allow(clippy::duplicate_mod)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)] // The tests' support tree: the bench uses its launcher and scenario.
mod support;

use std::time::Duration;

use support::fairness::{measure, Fairness, Measurement};

fn main() {
    let smoke = !common::is_bench();
    let (hosts, events, runs, deadline) = if smoke {
        println!("smoke run (cargo test); `cargo bench --bench fairness` measures");
        (200, 1000, 1, 60)
    } else {
        // 100,000 healthy events: at today's rates 20,000 were delivered in 2 s, too short a
        // phase to measure on a shared machine.
        (20_000, 100_000, 5, 120)
    };
    let sizes = Fairness {
        hosts: common::arg("--hosts", hosts),
        events: common::arg("--events", events),
        clients: common::arg("--concurrency", 8),
        batch: common::arg("--batch", 10),
        deadline: Duration::from_secs(common::arg("--deadline", deadline) as u64),
    };
    let runs = common::arg("--runs", runs);
    println!(
        "fairness: hookd on {:?}, {} failing per-request hosts, {} healthy events ({} concurrent clients, {} per request), deadline {} s per phase, {runs} run(s)",
        common::engine::current(),
        sizes.hosts,
        sizes.events,
        sizes.clients,
        sizes.batch,
        sizes.deadline.as_secs()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results: Vec<Measurement> = Vec::new();
    for run in 1..=runs {
        let m = runtime.block_on(measure(&sizes));
        println!("run {run}: {m}");
        results.push(m);
    }
    println!(
        "median: H = {}: alone {:.0} events/s, beside {} failing hosts {:.1} events/s, ratio {:.3}",
        sizes.hosts,
        median(results.iter().map(|m| m.alone.rate())),
        sizes.hosts,
        median(results.iter().map(|m| m.beside.rate())),
        median(results.iter().map(Measurement::ratio)),
    );
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

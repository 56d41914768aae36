//! Soak: the real binary under a steady offered load for a long time, on one embedded engine;
//! fails on a stall, on an event not delivered, or on memory that keeps growing.
//!
//! `cargo bench --bench soak -- [--engine sled|fjall] [--minutes M] [--rate R] [--body-bytes B]`
//! (`scripts/soak.sh` runs it for each engine; 30 minutes by default).
//!
//! Without `--rate` (or with 0) it first measures the batched rate of a fresh hookd on the same
//! engine (40,000 events, 16 clients, 100 per request: events over first post to last
//! delivery) and takes half of it. Then a fresh `hookd run` (the example config's defaults,
//! `[storage] engine` as given) with one subscription to a receiver on loopback that answers
//! 200 and counts is offered R events/s of B bytes (default 150) in batches of 100, open loop
//! (each batch started on schedule, whatever the earlier ones do), for M minutes (default 30).
//! Every 5 s it prints the time, events accepted, delivered and waiting, the delivery rate of
//! those 5 s and hookd's RSS. After the offered load it waits for the last deliveries, then
//! prints one line:
//!
//! `soak sled: M min at R/s: D of A delivered; longest wait with no delivery G s; RSS second
//! fifth X MiB, last fifth Y MiB (+Z%): PASS` (or `FAIL: <reasons>`, and exit status 1)
//!
//! It fails on a stall (5 s or more with no delivery while events wait), on any event not
//! delivered within 2 minutes of the last one offered, or on RSS growth over 10% after the
//! warm-up (the first fifth of the offered time): the last fifth's median against the second
//! fifth's (RSS sampled every second). Under `cargo test --all-targets` (no `--bench`) it makes
//! a smoke run: a small calibration, 8 s offered, lines every second, and asserts no stall and
//! every event delivered (8 s is too short for a warm-up: the RSS growth is printed, not
//! judged).

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use common::{Offer, Rig, Sample, Stalls};

const FLAGS: &[&str] = &["--engine", "--minutes", "--rate", "--body-bytes"];

/// A stall: this long with no delivery while events wait.
const STALL: f64 = 5.0;
/// How long the last deliveries may take after the offered load ends.
const DRAIN: Duration = Duration::from_secs(120);
/// The RSS growth allowed after the warm-up, in percent.
const MAX_GROWTH: f64 = 10.0;

struct Args {
    engine: &'static str,
    /// The offered time.
    duration: Duration,
    /// Events/s; 0: half the measured batched rate.
    rate: usize,
    body_bytes: usize,
    /// Seconds between printed lines.
    line_every: f64,
    /// Events of the calibration.
    calibration: usize,
}

fn parse_args() -> Args {
    let bench = common::bench_mode(FLAGS, "`scripts/soak.sh`");
    let minutes = common::arg_f64("--minutes", if bench { 30.0 } else { 8.0 / 60.0 });
    Args {
        engine: common::engine_arg(),
        duration: Duration::from_secs_f64(minutes * 60.0),
        rate: common::arg("--rate", 0),
        body_bytes: common::arg("--body-bytes", 150),
        line_every: if bench { 5.0 } else { 1.0 },
        calibration: if bench { 40_000 } else { 2_000 },
    }
}

/// What the soak saw.
struct Verdict {
    rate: usize,
    offered: usize,
    delivered: usize,
    longest_gap: f64,
    longest_at: f64,
    second_fifth_mib: f64,
    last_fifth_mib: f64,
}

impl Verdict {
    fn growth(&self) -> f64 {
        (self.last_fifth_mib / self.second_fifth_mib - 1.0) * 100.0
    }

    /// Why the soak fails, in words; empty when it passes. `judge_rss`: whether RSS growth counts.
    fn failures(&self, judge_rss: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.longest_gap >= STALL {
            out.push(format!(
                "stall: no delivery for {:.1} s while events waited (ending at {:.0} s)",
                self.longest_gap, self.longest_at
            ));
        }
        if self.delivered < self.offered {
            out.push(format!(
                "{} of {} events not delivered within {DRAIN:?} of the end",
                self.offered - self.delivered,
                self.offered
            ));
        }
        let growth = self.growth();
        if judge_rss && (growth.is_nan() || growth > MAX_GROWTH) {
            out.push(format!(
                "RSS grew {:+.1}% after the warm-up (more than {MAX_GROWTH}%)",
                self.growth()
            ));
        }
        out
    }
}

fn main() {
    let args = parse_args();
    let bench = common::is_bench();
    let v = common::runtime().block_on(run(&args));
    let failures = v.failures(bench);
    let verdict = if failures.is_empty() {
        "PASS".to_string()
    } else {
        format!("FAIL: {}", failures.join("; "))
    };
    println!(
        "soak {}: {} min at {}/s: {} of {} delivered; longest wait with no delivery {:.1} s; RSS second fifth {:.1} MiB, last fifth {:.1} MiB ({:+.1}%): {verdict}",
        args.engine,
        (args.duration.as_secs_f64() / 60.0 * 100.0).round() / 100.0,
        v.rate,
        v.delivered,
        v.offered,
        v.longest_gap,
        v.second_fifth_mib,
        v.last_fifth_mib,
        v.growth()
    );
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

/// The batched rate of a fresh hookd on `engine`: `events` events from 16 clients, 100 per
/// request, over the time from the first post to the last delivery.
async fn batched_rate(engine: &'static str, events: usize, body_bytes: usize) -> f64 {
    let rig = Rig::start(engine, "").await;
    let offer = Offer {
        events,
        batch: 100,
        rate: 0,
        body_bytes,
    };
    let started = Instant::now();
    let (_, poster) = rig.spawn_offer(offer);
    poster.await.expect("calibration: posting");
    let delivered =
        common::process::wait_until_opt(DRAIN, || (rig.delivered() >= events).then_some(())).await;
    assert!(
        delivered.is_some(),
        "calibration: {} of {events} delivered after {DRAIN:?}",
        rig.delivered()
    );
    events as f64 / started.elapsed().as_secs_f64()
}

async fn run(args: &Args) -> Verdict {
    println!(
        "soak: the hookd binary on {}, load average {:.2}",
        args.engine,
        common::load_average()
    );
    let rate = if args.rate > 0 {
        args.rate
    } else {
        let batched = batched_rate(args.engine, args.calibration, args.body_bytes).await;
        let half = (batched / 2.0) as usize;
        println!("measured batched rate {batched:.0} delivered/s; soaking at half: {half}/s");
        half.max(1)
    };
    let rig = Rig::start(args.engine, "").await;
    let offer = Offer {
        events: (rate as f64 * args.duration.as_secs_f64()) as usize,
        batch: 100,
        rate,
        body_bytes: args.body_bytes,
    };
    println!(
        "offering {rate} events/s of {} bytes in batches of 100 for {:.0} s ({} events), one subscription to a receiver answering 200",
        args.body_bytes,
        args.duration.as_secs_f64(),
        offer.events
    );
    println!(
        "{:>7}  {:>9}  {:>9}  {:>8}  {:>11}  {:>8}",
        "time s", "accepted", "delivered", "waiting", "delivered/s", "RSS MiB"
    );
    let (accepted, poster) = rig.spawn_offer(offer);
    let (stalls, rss) = watch(&rig, args, &accepted, offer.events, &poster).await;
    if poster.is_finished() {
        poster.await.expect("posting");
    }
    let offered_s = args.duration.as_secs_f64();
    let fifth = |k: f64| common::median_within(&rss, offered_s * (k - 0.2), offered_s * k);
    Verdict {
        rate,
        offered: offer.events,
        delivered: rig.delivered(),
        longest_gap: stalls.longest,
        longest_at: stalls.longest_at,
        second_fifth_mib: fifth(0.4),
        last_fifth_mib: fifth(1.0),
    }
}

/// Samples the run every 100 ms (RSS every second) until every event is delivered, or
/// [`DRAIN`] after the offered time, or the poster stops short (a refused batch); prints a line
/// every `args.line_every` s. Returns the stalls seen and the RSS samples (time, MiB).
async fn watch(
    rig: &Rig,
    args: &Args,
    accepted: &AtomicUsize,
    events: usize,
    poster: &tokio::task::JoinHandle<()>,
) -> (Stalls, Vec<(f64, f64)>) {
    let started = Instant::now();
    let give_up = args.duration + DRAIN;
    let mut stalls = Stalls::default();
    let mut rss = Vec::new();
    let mut last_line = Sample::take(rig, started, accepted);
    let mut last_rss = 0.0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sample = Sample::take(rig, started, accepted);
        stalls.see(&sample);
        if sample.at - last_rss >= 1.0 {
            rss.push((sample.at, sample.rss_mib));
            last_rss = sample.at;
        }
        let short = poster.is_finished() && sample.accepted < events;
        let done = sample.delivered >= events || short || started.elapsed() > give_up;
        if sample.at - last_line.at >= args.line_every || done {
            print_line(&sample, &last_line);
            last_line = sample;
        }
        if done {
            return (stalls, rss);
        }
    }
}

/// One line of the table: `sample`, with the delivery rate since `previous`.
fn print_line(sample: &Sample, previous: &Sample) {
    let rate = (sample.delivered - previous.delivered) as f64 / (sample.at - previous.at);
    println!(
        "{:>7.1}  {:>9}  {:>9}  {:>8}  {:>11.0}  {:>8.1}",
        sample.at,
        sample.accepted,
        sample.delivered,
        sample.waiting(),
        rate,
        sample.rss_mib
    );
}

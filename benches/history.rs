//! History: memory and disk of the real binary while the deliveries it has finished pile up
//! (the default retention, 7 days, keeps every one of them), and after a restart on that store.
//!
//! `cargo bench --bench history -- [--engine sled|fjall] [--events N] [--rate R]
//!     [--body-bytes B] [--step S]`
//!
//! Starts `hookd run` (the built binary, the example config's defaults, `[storage] engine` as
//! given, sled by default) with one subscription to a receiver on loopback that answers 200 and
//! counts. Posts N events (default 10,000,000) of B bytes (default 150) in batches of 100:
//! offered at R events/s (open loop; default 5000, about half of what the ceiling bench measures
//! batched, so that the backlog stays small and the memory is the history's), or with `--rate 0`
//! as fast as hookd accepts them (16 clients). Every S delivered (default N/20) it prints the
//! deliveries so far, the events still waiting, hookd's RSS now and its peak (VmHWM), the
//! store's disk bytes per retained delivery and the delivery rate since the last line. Once all
//! are delivered: SIGTERM, a restart on the same store, the time to `/readyz` 200, the RSS then
//! and the disk per retained delivery. Last, one line:
//!
//! `history fjall: N delivered and kept; RSS first quarter X MiB, last quarter Y MiB (+Z%),
//! peak P MiB; after restart R MiB, ready in T s; disk D bytes per retained delivery`
//!
//! where the quarters are of the deliveries (medians of RSS sampled every 250 ms) and the first
//! quarter is the warm-up's end. Under `cargo test --all-targets` (no `--bench`) it makes a
//! smoke run of 3000 events and asserts that all were delivered and every figure is positive.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use common::{Offer, Rig, Sample, Stalls};

const FLAGS: &[&str] = &["--engine", "--events", "--rate", "--body-bytes", "--step"];

/// How long deliveries may stop while events wait before the run fails.
const STALL_LIMIT: Duration = Duration::from_secs(120);

struct Args {
    engine: &'static str,
    offer: Offer,
    step: usize,
}

fn parse_args() -> Args {
    let bench = common::bench_mode(FLAGS, "`cargo bench --bench history`");
    let events = common::arg("--events", if bench { 10_000_000 } else { 3_000 });
    Args {
        engine: common::engine_arg(),
        offer: Offer {
            events,
            batch: 100,
            rate: common::arg("--rate", if bench { 5_000 } else { 2_000 }),
            body_bytes: common::arg("--body-bytes", 150),
        },
        step: common::arg("--step", (events / 20).max(1)),
    }
}

/// What the run ends with.
struct Summary {
    first_quarter_mib: f64,
    last_quarter_mib: f64,
    peak_mib: f64,
    restart_mib: f64,
    ready: Duration,
    disk_per_retained: f64,
}

fn main() {
    let args = parse_args();
    let s = common::runtime().block_on(run(&args));
    let events = args.offer.events;
    let growth = (s.last_quarter_mib / s.first_quarter_mib - 1.0) * 100.0;
    println!(
        "history {}: {events} delivered and kept; RSS first quarter {:.1} MiB, last quarter {:.1} MiB ({growth:+.1}%), peak {:.1} MiB; after restart {:.1} MiB, ready in {:.2} s; disk {:.0} bytes per retained delivery",
        args.engine, s.first_quarter_mib, s.last_quarter_mib, s.peak_mib, s.restart_mib,
        s.ready.as_secs_f64(), s.disk_per_retained
    );
    if !common::is_bench() {
        for (name, figure) in [
            ("first quarter RSS", s.first_quarter_mib),
            ("last quarter RSS", s.last_quarter_mib),
            ("peak RSS", s.peak_mib),
            ("RSS after restart", s.restart_mib),
            ("disk per retained delivery", s.disk_per_retained),
        ] {
            assert!(figure > 0.0, "{name} is {figure}");
        }
    }
}

async fn run(args: &Args) -> Summary {
    let offer = args.offer;
    let mut rig = Rig::start(args.engine, "").await;
    let rate = match offer.rate {
        0 => "as fast as accepted".to_string(),
        r => format!("{r} events/s offered"),
    };
    println!(
        "history: the hookd binary on {}, {} events of {} bytes in batches of {}, {rate}, one subscription to a receiver answering 200, retention 7d (all kept); load average {:.2}",
        args.engine, offer.events, offer.body_bytes, offer.batch, common::load_average()
    );
    println!(
        "{:>10}  {:>8}  {:>9}  {:>10}  {:>19}  {:>12}  {:>7}",
        "delivered",
        "waiting",
        "RSS MiB",
        "peak MiB",
        "disk bytes/retained",
        "delivered/s",
        "time s"
    );
    let (accepted, poster) = rig.spawn_offer(offer);
    let rss = watch(&rig, args, &accepted, &poster).await;
    poster.await.expect("posting");
    let peak_mib = common::peak_rss_mib(rig.pid());
    let events = offer.events as f64;
    let quarter = |q: f64| common::median_within(&rss, events * (q - 0.25), events * q);
    let (first_quarter_mib, last_quarter_mib) = (quarter(0.25), quarter(1.0));
    let ready = rig.restart().await;
    let restart_mib = common::rss_mib(Some(rig.pid()));
    let disk_per_retained = rig.disk() as f64 / events;
    println!(
        "restart with {} retained: ready in {:.2} s (process start to /readyz 200); hookd RSS {restart_mib:.1} MiB; disk {disk_per_retained:.0} bytes per retained delivery",
        offer.events,
        ready.as_secs_f64()
    );
    Summary {
        first_quarter_mib,
        last_quarter_mib,
        peak_mib,
        restart_mib,
        ready,
        disk_per_retained,
    }
}

/// Samples the run every 250 ms until every event is delivered, printing a line every
/// `args.step` deliveries; returns the samples as (delivered, RSS MiB). Panics if deliveries
/// stop for [`STALL_LIMIT`] while events wait, or if the poster stops short.
async fn watch(
    rig: &Rig,
    args: &Args,
    accepted: &AtomicUsize,
    poster: &tokio::task::JoinHandle<()>,
) -> Vec<(f64, f64)> {
    let events = args.offer.events;
    let started = Instant::now();
    let mut stalls = Stalls::default();
    let mut samples = Vec::new();
    let mut last_line = Sample::take(rig, started, accepted);
    let mut next_line = args.step.min(events);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sample = Sample::take(rig, started, accepted);
        samples.push((sample.delivered as f64, sample.rss_mib));
        let gap = stalls.see(&sample);
        assert!(
            gap < STALL_LIMIT.as_secs_f64(),
            "no delivery for {gap:.0} s while {} events wait; hookd stderr:\n{}",
            sample.waiting(),
            rig.hookd.process.stderr_tail(4000)
        );
        if poster.is_finished() && sample.accepted < events {
            // The poster panicked (a refused batch): its message comes with the await.
            return samples;
        }
        if sample.delivered >= next_line {
            print_line(rig, &sample, &last_line);
            last_line = sample;
            next_line = (sample.delivered / args.step + 1) * args.step;
            next_line = next_line.min(events);
        }
        if sample.delivered >= events {
            return samples;
        }
    }
}

/// One line of the table: `sample`, with the delivery rate since `previous`.
fn print_line(rig: &Rig, sample: &Sample, previous: &Sample) {
    let rate = (sample.delivered - previous.delivered) as f64 / (sample.at - previous.at);
    println!(
        "{:>10}  {:>8}  {:>9.1}  {:>10.1}  {:>19.0}  {:>12.0}  {:>7.1}",
        sample.delivered,
        sample.waiting(),
        sample.rss_mib,
        common::peak_rss_mib(rig.pid()),
        rig.disk() as f64 / sample.delivered.max(1) as f64,
        rate,
        sample.at
    );
}

//! Per-request hosts waiting for their retry do not slow a healthy subscription down: 500
//! per-request hosts, each its own bucket, have failed (connection refused) and wait for their
//! one-minute retry; a healthy subscription's 2,000 events must then go out at least half as
//! fast as they do on a hookd without them. The scenario (support/fairness.rs) is the one
//! `cargo bench --bench fairness` measures at 20,000 hosts, where the goal is 0.9.
//!
//! Why 0.5 and not 0.9: both rates are measured here, in one test, on a debug build, while the
//! other tests of this binary run beside it on the same (shared, noisy) CPUs, and a phase of
//! 2,000 events lasts a second or two, so a scheduling hiccup moves either rate by tens of
//! percent. 0.5 still fails a scheduler whose cost grows with the number of buckets: the
//! scheduler that walks every bucket on each pass measured 0.19 here (alone 306 events/s,
//! beside the 500 hosts 59 events/s; see docs/benchmarks/fairness-before.txt).

use std::time::Duration;

use crate::support::fairness::{measure, Fairness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_per_request_hosts_waiting_for_retry_do_not_slow_a_healthy_subscription() {
    let m = measure(&Fairness {
        hosts: 500,
        events: 2000,
        clients: 4,
        batch: 10,
        deadline: Duration::from_secs(60),
    })
    .await;
    println!("fairness at 500 hosts: {m}");
    assert!(
        m.alone.complete(),
        "alone, the healthy events were not all delivered: {m}"
    );
    assert_eq!(
        m.failing.failed, 500,
        "the failing hosts' first attempts did not all fail in time: {m}"
    );
    assert!(
        m.beside.complete(),
        "beside the failing hosts, the healthy events were not all delivered: {m}"
    );
    assert!(
        m.ratio() >= 0.5,
        "beside 500 failing hosts the healthy rate fell below half its rate alone: {m}"
    );
}

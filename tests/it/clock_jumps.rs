//! The wall clock jumps an hour back and then forward while a retry is pending: the retry comes
//! when the schedule says (no burst of early retries, none stuck for the lost hour). hookd
//! runs in-process with its real clock, whose wall-clock source the test shifts.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookd::clock::{system_now_ms, SystemClock};
use serde_json::json;

use crate::support::app::spawn_app_with_clock;
use crate::support::receiver::{Reply, TestReceiver};

/// How far the test has moved the wall clock.
static SHIFT_MS: AtomicI64 = AtomicI64::new(0);

fn shifted_wall() -> u64 {
    let shifted = system_now_ms() as i64 + SHIFT_MS.load(Ordering::SeqCst);
    shifted as u64
}

const HOUR_MS: i64 = 3_600_000;

/// Posts an event whose first attempt the receiver fails, shifts the wall clock by `shift_ms`
/// right after that attempt, and returns the time from the failed attempt to the retry.
async fn retry_gap_across_a_jump(
    app: &crate::support::app::TestApp,
    receiver: &TestReceiver,
    request_id: &str,
    shift_ms: i64,
) -> Duration {
    let before = receiver.count();
    receiver.plan([Reply::Status(500)]);
    let (status, body) = app
        .post(&json!({ "request_id": request_id, "status": "completed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = receiver.wait_for(before + 1, Duration::from_secs(10)).await;
    let failed_at = failed[before].at;
    SHIFT_MS.fetch_add(shift_ms, Ordering::SeqCst);
    let retried = receiver.wait_for(before + 2, Duration::from_secs(20)).await;
    retried[before + 1].at - failed_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_neither_hurry_nor_hold_pending_retries() {
    let started = Instant::now();
    let clock = Arc::new(SystemClock::with_sources(shifted_wall, move || {
        started.elapsed().as_millis() as u64
    }));
    let receiver = TestReceiver::start().await;
    let extra = format!(
        "[[subscription]]\nid = \"acme\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"*\"]\nretry_schedule = [\"3s\"]\n",
        receiver.url()
    );
    let app = spawn_app_with_clock(&extra, clock).await;

    // An hour back: by the wall clock the retry is due in an hour and three seconds.
    let back = retry_gap_across_a_jump(&app, &receiver, "job-back", -HOUR_MS).await;
    assert!(
        back >= Duration::from_millis(2500) && back < Duration::from_secs(8),
        "retry after a jump back came {back:?} after the failure (due 3 s)"
    );
    // An hour forward (two from where the wall clock stood): by the wall clock the retry is
    // long overdue.
    let forward = retry_gap_across_a_jump(&app, &receiver, "job-forward", 2 * HOUR_MS).await;
    assert!(
        forward >= Duration::from_millis(2500) && forward < Duration::from_secs(8),
        "retry after a jump forward came {forward:?} after the failure (due 3 s)"
    );
    eprintln!(
        "FIGURE clock: a retry due 3 s after a failure came {back:?} after it across a jump of the wall clock an hour back, {forward:?} across a jump an hour forward"
    );
}

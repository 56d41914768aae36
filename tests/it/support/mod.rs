//! Shared test support: an in-process hookd on port 0, a recording receiver, and waits with
//! deadlines.

/// Opens the target guard for loopback (and plain http for per-request URLs): every test
/// receiver listens on 127.0.0.1, which hookd refuses by default. Appended to test configs;
/// the guard's own tests leave it out.
pub const LOOPBACK_TARGETS: &str =
    "\n[targets]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\nallow_http = true\n";

pub mod app;
pub mod bad_receivers;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod fairness;
pub mod ledger;
pub mod load;
pub mod notify;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod slow_receiver;

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// For a test that is sled-specific by nature: on PostgreSQL, writes `NOT RUN on postgres:
/// <why>` (to stderr itself, so that it shows in the run's output) and returns true, and the
/// test returns at once; on sled returns false.
pub fn sled_only(why: &str) -> bool {
    if !engine::postgres() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "{test}: NOT RUN on postgres: {why}");
    true
}

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
pub mod events;
pub mod fairness;
pub mod ledger;
pub mod load;
pub mod notify;
pub mod pg;
pub mod process;
pub mod receiver;
pub mod slow_receiver;

use std::future::Future;
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

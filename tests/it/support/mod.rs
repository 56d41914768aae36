//! Shared test support: an in-process hookd on port 0, a recording receiver, and waits with
//! deadlines.

/// Opens the target guard for loopback (and plain http for per-request URLs): every test
/// receiver listens on 127.0.0.1, which hookd refuses by default. Appended to test configs;
/// the guard's own tests leave it out.
pub const LOOPBACK_TARGETS: &str =
    "\n[targets]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\nallow_http = true\n";

pub mod admin;
pub mod app;
pub mod bad_receivers;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod fairness;
pub mod ledger;
pub mod load;
pub mod notify;
pub mod otlp;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod slow_receiver;

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long the tests' HTTP clients keep an idle connection: below hookd's `api.idle_timeout`
/// (120 s by default), as docs/api.md tells job runners, so that no test sends a request on a
/// connection hookd is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// A client builder for talking to hookd: the pool's idle time below hookd's.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(POOL_IDLE)
}

/// A client for talking to hookd (see [`client_builder`]).
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("client")
}

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

/// For a test of a store in `storage.path` (sled or fjall): on PostgreSQL, writes `NOT RUN on
/// postgres: <why>` (to stderr itself, so that it shows in the run's output) and returns true,
/// and the test returns at once; on an embedded engine returns false.
pub fn embedded_only(why: &str) -> bool {
    not_run_unless(engine::current() != engine::Engine::Postgres, why)
}

/// For a test that is sled-specific by nature (sled's own files): on fjall or PostgreSQL,
/// writes `NOT RUN on <engine>: <why>` and returns true; on sled returns false.
pub fn sled_only(why: &str) -> bool {
    not_run_unless(engine::current() == engine::Engine::Sled, why)
}

fn not_run_unless(runs: bool, why: &str) -> bool {
    if runs {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let engine = format!("{:?}", engine::current()).to_lowercase();
    let _ = writeln!(std::io::stderr(), "{test}: NOT RUN on {engine}: {why}");
    true
}

/// Checks arrivals against a rate limit of `per_second`: over the 10 s from the first, the
/// count is at most 10 % above the rate (the limit holds) and at most 25 % below it (the limit
/// does not throttle further; a loaded machine, with the browser tests beside the PostgreSQL
/// pass, was seen to reach 85 %), and no two seconds after any arrival hold more than twice the
/// rate plus 10 % (no burst). The burst is judged over two seconds because these are arrival
/// times: attempts sent on schedule reach the receiver with the machine's jitter, and on the
/// loaded machine of the PostgreSQL pass 23 arrived within one second at a limit of 20/s (an
/// attempt held up 100 ms lands beside the next ones). A burst, a second's worth sent at once,
/// still puts three seconds' worth in two. Returns the 10 s count.
pub fn assert_rate(arrivals: &[Instant], per_second: f64) -> usize {
    let mut at = arrivals.to_vec();
    at.sort_unstable();
    let first = *at.first().expect("arrivals");
    let window = Duration::from_secs(10);
    let in_window = at
        .iter()
        .filter(|t| t.duration_since(first) < window)
        .count();
    let expected = per_second * 10.0;
    assert!(
        in_window as f64 <= expected * 1.1 && in_window as f64 >= expected * 0.75,
        "{in_window} attempts in 10 s at a limit of {per_second}/s"
    );
    let most = at
        .iter()
        .map(|t| {
            at.iter()
                .filter(|u| *u >= t && u.duration_since(*t) < Duration::from_secs(2))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most as f64 <= 2.0 * per_second * 1.1,
        "{most} attempts within two seconds at a limit of {per_second}/s"
    );
    in_window
}

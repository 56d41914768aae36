//! What the benchmarks share: arguments, a counting receiver, and a config for one subscription
//! to it, or the real `hookd` binary as a child process. Included with `#[path]`; not a
//! benchmark of its own.

#![allow(dead_code)] // Each benchmark uses part of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::Router;

/// The real `hookd` binary as a child process: the integration tests' `HookdProcess` (config on
/// free loopback ports, then `[targets]` from [`LOOPBACK_TARGETS`], waits for `/readyz`) and its
/// `ChildGuard`, which kills the child on drop. For benchmarks that drive hookd only through its
/// binary and HTTP API.
#[path = "../../tests/it/support/process.rs"]
pub mod process;

/// What `process` needs to run the tests' engine (`HOOKD_TEST_ENGINE`).
#[path = "../../tests/it/support/engine.rs"]
pub mod engine;
#[path = "../../tests/it/support/pg.rs"]
pub mod pg;

/// Opens the target guard for the benchmarks' receivers on 127.0.0.1 (refused by default).
pub const LOOPBACK_TARGETS: &str = "\n[targets]\nallow = [\"127.0.0.1\"]\nallow_http = true\n";

/// `cargo bench` passes --bench; under `cargo test --all-targets` a benchmark makes a smoke run.
pub fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number"))
        })
        .unwrap_or(default)
}

/// The benchmarks' tokio runtime: multi-threaded, one worker per core.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The median of `values` (the upper one of an even count).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A receiver on loopback that answers 200 and counts the requests.
pub async fn counting_receiver() -> (Arc<AtomicUsize>, SocketAddr) {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let receiver = Router::new().route(
        "/hook",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    (received, serve_loopback(receiver).await)
}

/// Serves `router` on a fresh 127.0.0.1 port (keep-alive), in the background.
pub async fn serve_loopback(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The `[[subscription]]` table of the benchmarks: `bench`, every event, to `receiver`'s `/hook`.
pub fn subscription(receiver: SocketAddr) -> String {
    format!(
        "[[subscription]]\nid = \"bench\"\nurl = \"http://{receiver}/hook\"\nsecret = \"bench-secret\"\nevents = [\"*\"]\n"
    )
}

/// A config with loopback listeners on port 0, the store in `dir/db`, `delivery` keys, and one
/// subscription `bench` to the receiver at `receiver`.
pub fn config(dir: &Path, receiver: SocketAddr, delivery: &str) -> hookd::Config {
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nmax_batch = 1000\n[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {:?}\n\
         [delivery]\n{delivery}\n{LOOPBACK_TARGETS}{}",
        dir.join("db").display().to_string(),
        subscription(receiver)
    );
    hookd::Config::from_toml(&text, "bench.toml").unwrap()
}

/// A seed-sized `job.completed` event for `job-{i}` (about 200 bytes of JSON).
pub fn seed_event(i: usize) -> String {
    format!(
        r#"{{"request_id":"job-{i}","status":"completed","result":{{"items":[{{"url":"https://cdn.example/{i}.mp4","content_type":"video/mp4"}}]}},"metrics":{{"inference_time":45.2,"queue_time":2.1}}}}"#
    )
}

/// Posts the seed-sized events `range` to `api` as one batch and expects a 202.
pub async fn post_seed_batch(
    client: &reqwest::Client,
    api: SocketAddr,
    range: std::ops::Range<usize>,
) {
    let batch: Vec<String> = range.map(seed_event).collect();
    let response = client
        .post(format!("http://{api}/v1/events"))
        .header("content-type", "application/json")
        .body(format!("[{}]", batch.join(",")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// The `/metrics` text of the metrics listener at `addr`.
pub async fn metrics_text(client: &reqwest::Client, addr: impl std::fmt::Display) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Resident memory (VmRSS) of process `pid`, or of this process, in MiB.
pub fn rss_mib(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/status".to_string(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

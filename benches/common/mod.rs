//! What the benchmarks share: arguments, a counting receiver, and a config for one subscription
//! to it. Included with `#[path]`; not a benchmark of its own.

#![allow(dead_code)] // Each benchmark uses part of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::Router;

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    (received, addr)
}

/// A config with loopback listeners on port 0, the store in `dir/db`, `delivery` keys, and one
/// subscription `bench` to the receiver at `receiver`.
pub fn config(dir: &Path, receiver: SocketAddr, delivery: &str) -> hookd::Config {
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nmax_batch = 1000\n[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {:?}\n\
         [delivery]\n{delivery}\n\
         [targets]\nallow = [\"127.0.0.1\"]\nallow_http = true\n\
         [[subscription]]\nid = \"bench\"\nurl = \"http://{receiver}/hook\"\nsecret = \"bench-secret\"\nevents = [\"*\"]\n",
        dir.join("db").display().to_string()
    );
    hookd::Config::from_toml(&text, "bench.toml").unwrap()
}

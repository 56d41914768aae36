//! The store's writer alone, without HTTP: what one event costs to ingest durably, and what one
//! delivery costs to claim and to record. This is the work that bounds hookd's rates (see
//! docs/benchmarks.md).
//!
//! `cargo bench --bench store -- [--events N] [--engine sled|fjall|both] [--headers H]` (both by
//! default: the embedded engine on each backend, one after the other, in the same run). Each
//! outcome records H response headers (2 by default: what a bare hyper receiver answers,
//! `content-length` and `date`; 0 records none, as before attempts kept headers).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use hookd::event::{parse_event, IngestRules};
use hookd::guard::Guard;
use hookd::store::embedded::{Backend, EmbeddedStore};
use hookd::store::{AdminStore, Attempt, Limits, Next, Outcome, QueueStore, Target};

fn main() {
    let bench = common::is_bench();
    let events = common::arg("--events", if bench { 20_000 } else { 500 });
    let runtime = common::runtime();
    for backend in backends() {
        runtime.block_on(run(events, backend));
    }
}

/// The backends `--engine` names.
fn backends() -> Vec<Backend> {
    let args: Vec<String> = std::env::args().collect();
    let named = args
        .iter()
        .position(|a| a == "--engine")
        .and_then(|i| args.get(i + 1))
        .map_or("both", String::as_str);
    match named {
        "sled" => vec![Backend::Sled],
        "fjall" => vec![Backend::Fjall],
        "both" => vec![Backend::Sled, Backend::Fjall],
        other => panic!("--engine must be sled, fjall or both, not {other:?}"),
    }
}

async fn run(events: usize, backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(backend, dir.path(), 64 << 20).unwrap());
    store.set_limits(Limits {
        global: usize::MAX,
        adhoc_total: 0,
        adhoc_per_host: 0,
        subscriptions: [("bench".to_string(), usize::MAX)].into(),
        paused: Default::default(),
        rates: Default::default(),
    });
    let rules = IngestRules {
        allow_adhoc_targets: false,
        allow_http: false,
        guard: Guard::default(),
    };
    let event = |i: usize| {
        let value = serde_json::json!({"request_id": format!("job-{i}"), "status": "completed",
            "result": {"items": [{"url": format!("https://cdn.example/{i}.mp4"), "content_type": "video/mp4"}]},
            "metrics": {"inference_time": 45.2, "queue_time": 2.1}});
        parse_event(value, &rules, "2026-01-01T00:00:00Z").unwrap()
    };
    let target = || {
        vec![Target {
            subscription: "bench".into(),
            bucket: "bench".into(),
            adhoc: None,
        }]
    };
    let us = |t: Instant, n: usize| t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "store ({}): {events} events, one subscription",
        backend.name()
    );

    // One event per durable commit: a writer round and a flush each.
    let half = events / 2;
    let t = Instant::now();
    for i in 0..half {
        store.ingest(vec![(event(i), target())], 1).await.unwrap();
    }
    println!(
        "ingest, one event per commit:   {:>8.1} us/event",
        us(t, half)
    );

    // A hundred events per commit: the cost of the writes alone, the flush shared.
    let t = Instant::now();
    for chunk in (half..events).collect::<Vec<_>>().chunks(100) {
        store
            .ingest(chunk.iter().map(|&i| (event(i), target())).collect(), 1)
            .await
            .unwrap();
    }
    let batched = us(t, events - half);
    println!("ingest, 100 events per commit:  {batched:>8.1} us/event");

    // Claim everything in windows of 64, as the scheduler does.
    let t = Instant::now();
    let mut claimed = Vec::new();
    loop {
        let (batch, _) = store.claim(1, 64).await.unwrap();
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch.into_iter().map(|c| c.delivery.id));
    }
    assert_eq!(claimed.len(), events);
    let claim = us(t, events);
    println!("claim, 64 per window:           {claim:>8.1} us/delivery");

    // Record each outcome durably, 64 at a time concurrently (they share flushes).
    let headers = response_headers();
    let t = Instant::now();
    for chunk in claimed.chunks(64) {
        let mut tasks = Vec::new();
        for id in chunk {
            let (store, id, headers) = (store.clone(), id.clone(), headers.clone());
            tasks.push(tokio::spawn(async move {
                let attempt = Attempt {
                    number: 1,
                    started_ms: 1,
                    duration_ms: 1,
                    outcome: Outcome::Success,
                    status_code: Some(200),
                    error: None,
                    response_excerpt: None,
                    response_headers: headers,
                };
                store
                    .record_outcome(&id, attempt, Next::Delivered, 2)
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    let outcome = us(t, events);
    println!("record outcome, 64 concurrent:  {outcome:>8.1} us/delivery");
    println!(
        "ingest (batched) + claim + outcome: {:>5.1} us/event delivered on its first attempt",
        batched + claim + outcome
    );
    store.close().await.unwrap();
}

/// The response headers each outcome records (`--headers`): a hyper receiver's two, then more
/// of the same size.
fn response_headers() -> Vec<(String, String)> {
    let count = common::arg("--headers", 2);
    let typical = [
        ("content-length", "0"),
        ("date", "Mon, 07 Dec 2026 06:59:01 GMT"),
    ];
    (0..count)
        .map(|i| {
            let (name, value) = typical[i % typical.len()];
            (
                format!(
                    "{name}{}",
                    if i < 2 { String::new() } else { i.to_string() }
                ),
                value.to_string(),
            )
        })
        .collect()
}

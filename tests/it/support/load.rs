//! Sustained mixed ingest for the fault tests: client tasks that post single events and
//! batches to one URL until stopped, and remember which request_ids hookd acknowledged (`202`).
//! Refused connections and cut requests (hookd killed or stopped) are not acknowledged; so is a
//! `503` (overload, refused as the contract allows). Any other answer is a failure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// A `job.completed` event with a result, like the seed's.
pub fn job_event(request_id: &str) -> Value {
    json!({
        "request_id": request_id,
        "status": "completed",
        "result": {"items": [{"url": format!("https://cdn.abstrakt.one/{request_id}.mp4"), "content_type": "video/mp4"}]},
        "metrics": {"inference_time": 45.2},
    })
}

/// The body of one ingest request: the event alone for one id, else a batch.
pub fn events_body(ids: &[String]) -> Value {
    match ids {
        [one] => job_event(one),
        many => Value::Array(many.iter().map(|id| job_event(id)).collect()),
    }
}

/// What the clients share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    acked: Mutex<HashSet<String>>,
    /// `503` answers.
    refused: AtomicUsize,
    /// Answers other than `202` and `503`, described.
    unexpected: Mutex<Vec<String>>,
}

/// How the clients post.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub clients: usize,
    /// Every `batch_every`-th request is a batch of `batch` events; the others are single.
    pub batch: usize,
    pub batch_every: usize,
    /// Pause between two requests of one client.
    pub pace: Duration,
}

impl Mix {
    /// `clients` clients, each posting a batch of `batch` events every `batch_every` requests
    /// (single events otherwise), `pace_ms` apart.
    pub fn new(clients: usize, batch: usize, batch_every: usize, pace_ms: u64) -> Mix {
        Mix {
            clients,
            batch,
            batch_every,
            pace: Duration::from_millis(pace_ms),
        }
    }
}

pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `mix.clients` clients posting to `url`; request_ids start with `prefix`.
    pub fn start(url: &str, prefix: &str, mix: Mix) -> Load {
        let shared = Arc::new(Shared::default());
        let tasks = (0..mix.clients)
            .map(|c| {
                tokio::spawn(client(
                    url.to_string(),
                    format!("{prefix}-c{c}"),
                    mix,
                    shared.clone(),
                ))
            })
            .collect();
        Load { shared, tasks }
    }

    /// Stops the clients; returns every acknowledged request_id and the number of `503`s.
    pub async fn stop(self) -> (HashSet<String>, usize) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load client");
        }
        let unexpected = self.shared.unexpected.lock().unwrap().clone();
        assert!(
            unexpected.is_empty(),
            "ingest answered neither 202 nor 503: {unexpected:?}"
        );
        let acked = self.shared.acked.lock().unwrap().clone();
        (acked, self.shared.refused.load(Ordering::SeqCst))
    }
}

async fn client(url: String, prefix: String, mix: Mix, shared: Arc<Shared>) {
    let http = super::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut n = 0usize;
    while !shared.stop.load(Ordering::SeqCst) {
        let ids: Vec<String> = if mix.batch_every > 0 && n % mix.batch_every == mix.batch_every - 1
        {
            (0..mix.batch)
                .map(|i| format!("{prefix}-{n}-{i}"))
                .collect()
        } else {
            vec![format!("{prefix}-{n}")]
        };
        n += 1;
        let sent = http
            .post(&url)
            .header("content-type", "application/json")
            .body(events_body(&ids).to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 202 => {
                shared.acked.lock().unwrap().extend(ids);
            }
            Ok(r) if r.status().as_u16() == 503 => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                shared
                    .unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{status}: {text}"));
            }
            // hookd is down or was killed during the request: not acknowledged.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        tokio::time::sleep(mix.pace).await;
    }
}

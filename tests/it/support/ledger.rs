//! A lean recording receiver for the fault tests, which send tens of thousands of webhooks: it
//! keeps, per request, only what those tests check (delivery id, request_id, attempt number,
//! arrival, accepted→received lag, whether the signature verified), and answers `200`, another
//! status, or `500` to the first requests of each delivery.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How the ledger answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status to every request.
    Status(u16),
    /// `500` to the first `n` requests of each delivery (by `X-Abstrakt-Delivery`), then `200`.
    FailFirst(usize),
}

/// One request, as the ledger keeps it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `X-Abstrakt-Delivery`.
    pub delivery: String,
    /// The body's `request_id`.
    pub request_id: String,
    /// `X-Abstrakt-Attempt` (0 when missing or not a number).
    pub attempt: u32,
    pub at: Instant,
    /// Arrival minus the body's `timestamp` (hookd's acceptance time when the event had none).
    pub lag: Option<Duration>,
    /// `X-Abstrakt-Signature` is the HMAC-SHA256 of the body with the ledger's secret.
    pub signed: bool,
}

struct Inner {
    secret: String,
    answer: Answer,
    entries: Vec<Entry>,
    /// Requests seen per delivery, for [`Answer::FailFirst`].
    seen: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct Ledger {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

/// What a ledger got, summed up.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    /// Distinct delivery ids.
    pub deliveries: usize,
    /// Requests whose signature did not verify.
    pub bad_signatures: usize,
}

/// The lowercase hex HMAC-SHA256 of `body` keyed with `secret`, as hookd signs.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl Ledger {
    /// On a free loopback port.
    pub async fn start(secret: &str, answer: Answer) -> Ledger {
        Ledger::start_on(([127, 0, 0, 1], 0).into(), secret, answer)
            .await
            .expect("bind a ledger on 127.0.0.1:0")
    }

    /// On `addr`, e.g. a port a test kept closed until now; the bind error when it is taken.
    pub async fn start_on(
        addr: SocketAddr,
        secret: &str,
        answer: Answer,
    ) -> std::io::Result<Ledger> {
        let inner = Arc::new(Mutex::new(Inner {
            secret: secret.to_string(),
            answer,
            entries: Vec::new(),
            seen: HashMap::new(),
        }));
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Ledger { addr, inner })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.inner.lock().unwrap().entries.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().entries.len()
    }

    /// Every request_id received so far.
    pub fn request_ids(&self) -> HashSet<String> {
        let inner = self.inner.lock().unwrap();
        inner.entries.iter().map(|e| e.request_id.clone()).collect()
    }

    pub fn tally(&self) -> Tally {
        let inner = self.inner.lock().unwrap();
        let deliveries: HashSet<&str> = inner.entries.iter().map(|e| e.delivery.as_str()).collect();
        Tally {
            requests: inner.entries.len(),
            deliveries: deliveries.len(),
            bad_signatures: inner.entries.iter().filter(|e| !e.signed).count(),
        }
    }

    /// Waits until every one of `ids` arrived, or until none of them has arrived for `stall`
    /// (the wait goes on as long as they keep coming, so a loaded machine's slow drain is not
    /// taken for a loss); returns those still missing (empty when all arrived).
    pub async fn missing_after(&self, ids: &HashSet<String>, stall: Duration) -> Vec<String> {
        wait_for_all(ids, stall, || self.request_ids()).await
    }
}

/// Waits until `received()` holds every one of `ids`, or until it has gained none of them for
/// `stall`; returns the ids still missing. A lost event leaves the count unchanged for `stall`
/// and is reported; events that keep arriving, however slowly, are waited for.
pub async fn wait_for_all(
    ids: &HashSet<String>,
    stall: Duration,
    received: impl Fn() -> HashSet<String>,
) -> Vec<String> {
    let mut last_progress = Instant::now();
    let mut missing_before = usize::MAX;
    loop {
        let got = received();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !got.contains(*id))
            .cloned()
            .collect();
        if missing.len() < missing_before {
            missing_before = missing.len();
            last_progress = Instant::now();
        }
        if missing.is_empty() || last_progress.elapsed() >= stall {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Arrival minus an RFC 3339 `timestamp`, zero when the clock says the arrival came first.
fn lag_since(timestamp: &str, now: SystemTime) -> Option<Duration> {
    let accepted =
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .ok()?;
    let now = time::OffsetDateTime::from(now);
    Some(Duration::try_from(now - accepted).unwrap_or(Duration::ZERO))
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let wall = SystemTime::now();
    let at = Instant::now();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = inner.lock().unwrap();
    let entry = Entry {
        delivery: header(&headers, "x-abstrakt-delivery").to_string(),
        request_id: parsed["request_id"].as_str().unwrap_or("").to_string(),
        attempt: header(&headers, "x-abstrakt-attempt").parse().unwrap_or(0),
        at,
        lag: parsed["timestamp"]
            .as_str()
            .and_then(|t| lag_since(t, wall)),
        signed: header(&headers, "x-abstrakt-signature") == signature(&inner.secret, &body),
    };
    let seen = {
        let n = inner.seen.entry(entry.delivery.clone()).or_insert(0);
        *n += 1;
        *n
    };
    inner.entries.push(entry);
    let code = match inner.answer {
        Answer::Status(code) => code,
        Answer::FailFirst(n) if seen <= n => 500,
        Answer::FailFirst(_) => 200,
    };
    StatusCode::from_u16(code).expect("a valid status")
}

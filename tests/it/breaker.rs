//! The circuit breaker against real receivers: one probe at a time while a subscription fails,
//! full speed after a success; disabled after its failures, its deliveries kept queued, enabled
//! again by an admin; and the operator events that say so, signed and verified.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::metric;
use crate::support::receiver::TestReceiver;
use crate::support::wait_until;

const OPERATOR_SECRET: &str = "operator-secret-1";

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// One request a [`Flaky`] receiver took: began, ended, the status it answered, the body.
type Span = (Instant, Instant, u16, Bytes);

/// A receiver whose answer can be switched, that takes `delay` per request and records when
/// each request began and ended, and the most requests it held at once.
#[derive(Clone, Default)]
struct Flaky {
    status: Arc<AtomicU16>,
    inside: Arc<AtomicUsize>,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Flaky {
    async fn start(status: u16) -> (Flaky, SocketAddr) {
        let flaky = Flaky::default();
        flaky.status.store(status, Ordering::SeqCst);
        async fn handle(State(f): State<Flaky>, body: Bytes) -> StatusCode {
            let began = Instant::now();
            f.inside.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let status = f.status.load(Ordering::SeqCst);
            f.inside.fetch_sub(1, Ordering::SeqCst);
            f.spans
                .lock()
                .unwrap()
                .push((began, Instant::now(), status, body));
            StatusCode::from_u16(status).unwrap()
        }
        let router = Router::new()
            .route("/", post(handle))
            .with_state(flaky.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (flaky, addr)
    }

    fn spans(&self) -> Vec<Span> {
        let mut spans = self.spans.lock().unwrap().clone();
        spans.sort_by_key(|s| s.0);
        spans
    }

    fn count(&self) -> usize {
        self.spans.lock().unwrap().len()
    }
}

/// The operator events received so far, each checked against its signature.
fn operator_events(operator: &TestReceiver) -> Vec<Value> {
    operator
        .received()
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("x-abstrakt-signature"),
                signature(OPERATOR_SECRET, &r.body),
                "an operator event signed with [operator].secret"
            );
            serde_json::from_slice(&r.body).expect("JSON operator event")
        })
        .collect()
}

async fn wait_operator_event(operator: &TestReceiver, event_type: &str) -> Value {
    wait_until(
        &format!("the operator event {event_type}"),
        Duration::from_secs(15),
        || async {
            operator_events(operator)
                .into_iter()
                .find(|e| e["type"] == event_type)
        },
    )
    .await
}

/// hookd with `delivery` keys, `[operator]` at `operator` and one subscription `id` to the
/// receiver at `addr`.
async fn spawn_with_operator(
    delivery: &str,
    operator: &TestReceiver,
    id: &str,
    addr: SocketAddr,
) -> TestApp {
    spawn_app(&format!(
        "[delivery]\n{delivery}\n\n[operator]\nurl = \"{}\"\nsecret = \"{OPERATOR_SECRET}\"\n\n\
         [[subscription]]\nid = \"{id}\"\nurl = \"http://{addr}/\"\nsecret = \"s\"\nevents = [\"*\"]\n",
        operator.url()
    ))
    .await
}

async fn subscription(app: &TestApp, id: &str) -> Value {
    app.api_json(&format!("/v1/subscriptions/{id}")).await
}

fn post_events(n: usize, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "request_id": format!("{prefix}-{i}"), "status": "completed" }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_probes_one_attempt_at_a_time_then_goes_full_speed_after_a_success() {
    let (flaky, addr) = Flaky::start(500).await;
    let operator = TestReceiver::start().await;
    let app = spawn_with_operator(
        "retry_schedule = [\"0s\", \"0s\", \"0s\", \"0s\", \"0s\", \"0s\", \"0s\", \"0s\"]\n\
         max_in_flight_per_subscription = 4\nbreaker_failures = 3\nbreaker_probe_interval = \"1s\"\n\
         disable_after_failures = 0",
        &operator,
        "flaky",
        addr,
    )
    .await;
    for event in post_events(12, "probe") {
        let (status, body) = app.post(&event).await;
        assert_eq!(status, 202, "{body}");
    }
    // The first burst fails; then probes, one at a time, a second apart: two fail.
    wait_until("two failed probes", Duration::from_secs(20), || async {
        let spans = flaky.spans();
        let first = spans.first()?.0;
        let probes = spans
            .iter()
            .filter(|s| s.0 > first + Duration::from_millis(500))
            .count();
        (probes >= 2).then_some(())
    })
    .await;
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "hookd_subscription_breaker",
            &[("subscription", "flaky")]
        ),
        Some(1.0),
        "the breaker shows open"
    );
    assert_eq!(subscription(&app, "flaky").await["breaker"], "open");
    flaky.status.store(200, Ordering::SeqCst);
    let recovered = wait_operator_event(&operator, "subscription.recovered").await;
    assert_eq!(recovered["data"]["subscription"], "flaky", "{recovered}");
    wait_until("every event delivered", Duration::from_secs(20), || async {
        let delivered: std::collections::HashSet<Bytes> = flaky
            .spans()
            .into_iter()
            .filter(|s| s.2 == 200)
            .map(|s| s.3)
            .collect();
        (delivered.len() == 12).then_some(())
    })
    .await;

    let spans = flaky.spans();
    let first_success = spans.iter().position(|s| s.2 == 200).expect("a success");
    // The breaker opened when hookd saw the third failure; what started until then could
    // overlap (slots freed by the first failures), all within the first 100 ms attempts. Every
    // request started half a second later or more, up to the first success, is a probe: alone
    // in flight, and at least the interval after the last failure before it.
    let opened = spans[0].0 + Duration::from_millis(500);
    let probes: Vec<_> = spans[..=first_success]
        .iter()
        .filter(|s| s.0 > opened)
        .collect();
    assert!(
        probes.len() >= 2,
        "at least one failed probe, then the success: {probes:?}"
    );
    for probe in &probes {
        let alongside = spans
            .iter()
            .filter(|other| other.0 < probe.0 && other.1 > probe.0)
            .count();
        let base = spans[0].0;
        let ms = |t: Instant| t.duration_since(base).as_millis();
        assert_eq!(
            alongside,
            0,
            "a probe (started at {} ms) ran beside another request; all (start, end, status) in ms: {:?}",
            ms(probe.0),
            spans
                .iter()
                .map(|s| (ms(s.0), ms(s.1), s.2))
                .collect::<Vec<_>>()
        );
        let last_failure = spans
            .iter()
            .filter(|other| other.2 != 200 && other.1 <= probe.0)
            .map(|other| other.1)
            .max()
            .expect("a failure before each probe");
        assert!(
            probe.0.duration_since(last_failure) >= Duration::from_millis(900),
            "a probe came {:?} after a failure",
            probe.0.duration_since(last_failure)
        );
    }
    // After the success: full speed again, several at once.
    let after = &spans[first_success + 1..];
    let overlapping = after
        .windows(2)
        .filter(|pair| pair[1].0 < pair[0].1)
        .count();
    assert!(
        overlapping > 0,
        "after recovery the deliveries went one at a time"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "hookd_subscription_breaker",
            &[("subscription", "flaky")]
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_failing_too_long_is_disabled_keeps_its_deliveries_and_is_enabled_by_an_admin(
) {
    let (flaky, addr) = Flaky::start(503).await;
    let operator = TestReceiver::start().await;
    let app = spawn_with_operator(
        "retry_schedule = [\"0s\", \"0s\", \"0s\", \"0s\", \"0s\", \"0s\"]\n\
         max_in_flight_per_subscription = 1\nbreaker_failures = 0\ndisable_after_failures = 3",
        &operator,
        "down",
        addr,
    )
    .await;
    for event in post_events(4, "down") {
        let (status, _) = app.post(&event).await;
        assert_eq!(status, 202);
    }
    let disabled = wait_operator_event(&operator, "subscription.disabled").await;
    assert_eq!(disabled["data"]["subscription"], "down", "{disabled}");
    let reason = disabled["data"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("3 failed attempts in a row"), "{disabled}");
    assert!(disabled["id"].as_str().unwrap_or("").starts_with("op_"));
    let shown = subscription(&app, "down").await;
    assert_eq!(shown["state"], "disabled", "{shown}");
    assert_eq!(shown["disabled_reason"], reason);
    assert!(shown["disabled_at"].is_string(), "{shown}");
    assert_eq!(shown["paused"], false, "disabled is not paused");
    assert_eq!(
        flaky.count(),
        3,
        "nothing attempted after the third failure"
    );

    // The deliveries wait, spending no attempts, across a restart too.
    let app = app.restart().await;
    let shown = subscription(&app, "down").await;
    assert_eq!(shown["state"], "disabled", "{shown}");
    tokio::time::timeout(Duration::from_millis(1500), async {
        while flaky.count() == 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect_err("a disabled subscription was attempted");
    let (_, listed) = (0, app.api_json("/v1/deliveries?subscription=down").await);
    let states: Vec<&str> = listed["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["state"].as_str())
        .collect();
    assert_eq!(states.len(), 4, "{listed}");
    assert!(
        states.iter().all(|s| *s == "scheduled"),
        "queued, none dead: {states:?}"
    );

    // Enabled by an admin: everything goes out.
    flaky.status.store(200, Ordering::SeqCst);
    let response = app
        .client
        .post(format!("http://{}/v1/subscriptions/down/enable", app.api))
        .send()
        .await
        .expect("enable");
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
    assert_eq!(body["state"], "active", "{body}");
    assert_eq!(body["consecutive_failures"], 0, "{body}");
    wait_until(
        "the waiting deliveries delivered",
        Duration::from_secs(15),
        || async {
            let delivered = flaky.spans().iter().filter(|s| s.2 == 200).count();
            (delivered == 4).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_delivery_raises_an_operator_event_and_the_operator_endpoint_is_reserved() {
    let (_flaky, addr) = Flaky::start(400).await;
    let operator = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "[delivery]\nretry_schedule = []\n\n\
         [operator]\nurl = \"{}\"\nsecret = \"{OPERATOR_SECRET}\"\nevents = [\"delivery.dead\"]\n\n\
         [[subscription]]\nid = \"gone\"\nurl = \"http://{addr}/\"\nsecret = \"s\"\nevents = [\"*\"]\n",
        operator.url()
    ))
    .await;
    let (status, body) = app
        .post(&json!({ "request_id": "dead-1", "status": "failed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["deliveries"], 1,
        "job events never go to the operator: {body}"
    );
    let dead = wait_operator_event(&operator, "delivery.dead").await;
    assert_eq!(dead["data"]["subscription"], "gone", "{dead}");
    assert_eq!(dead["data"]["event_id"], body["event_id"], "{dead}");
    assert_eq!(dead["data"]["attempts"], 1, "{dead}");
    assert!(dead["data"]["delivery_id"]
        .as_str()
        .unwrap_or("")
        .starts_with("dlv_"));
    assert_eq!(
        operator.received()[0].header("x-abstrakt-event"),
        "delivery.dead"
    );

    // `operator` is reserved for [operator], in the file and through the API.
    let refused = hookd::Config::from_toml(
        "[[subscription]]\nid = \"operator\"\nurl = \"https://example.invalid/\"\nsecret = \"s\"\nevents = [\"*\"]\n",
        "hookd.toml",
    );
    assert!(refused.is_err_and(|e| e
        .to_string()
        .contains("reserved for the [operator] endpoint")),);
    let response = app
        .client
        .post(format!("http://{}/v1/subscriptions", app.api))
        .header("content-type", "application/json")
        .body(json!({ "id": "operator", "url": operator.url(), "events": ["*"] }).to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 409);
    let bad = hookd::Config::from_toml(
        "[operator]\nurl = \"https://example.invalid/\"\nsecret = \"s\"\nevents = [\"job.failed\"]\n",
        "hookd.toml",
    );
    assert!(bad.is_err_and(|e| e.to_string().contains("not an operator event")));
}

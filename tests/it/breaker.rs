//! The circuit breaker against real receivers: one probe at a time while a subscription fails,
//! full speed after a success; disabled after its failures or its span of failing, its
//! deliveries kept queued, enabled again by an admin; and the operator events that say so,
//! signed and verified, retried like any delivery and held to the target guard.

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

use crate::support::app::{spawn_app, spawn_app_guarded, TestApp};
use crate::support::events::metric;
use crate::support::receiver::{Reply, TestReceiver};
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
    app.admin().get_ok(&format!("/v1/subscriptions/{id}")).await
}

/// Posts `n` events (request ids `prefix-0`...), each accepted; returns the answers.
async fn post_accepted(app: &TestApp, n: usize, prefix: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    for i in 0..n {
        let event = json!({ "request_id": format!("{prefix}-{i}"), "status": "completed" });
        let (status, body) = app.post(&event).await;
        assert_eq!(status, 202, "{body}");
        answers.push(body);
    }
    answers
}

/// A subscription its breaker disabled, and what saw it happen.
struct Disabled {
    /// The subscription's receiver.
    flaky: Flaky,
    app: TestApp,
    /// The `subscription.disabled` operator event.
    event: Value,
}

/// hookd with `delivery` keys and subscription `id` to a receiver answering `status`, once `n`
/// events posted have got it disabled: the operator event names it.
async fn disabled_by_its_breaker(status: u16, delivery: &str, id: &str, n: usize) -> Disabled {
    let (flaky, addr) = Flaky::start(status).await;
    let operator = TestReceiver::start().await;
    let app = spawn_with_operator(delivery, &operator, id, addr).await;
    post_accepted(&app, n, id).await;
    let event = wait_operator_event(&operator, "subscription.disabled").await;
    assert_eq!(event["data"]["subscription"], id, "{event}");
    assert!(event["id"].as_str().unwrap_or("").starts_with("op_"));
    Disabled { flaky, app, event }
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
    post_accepted(&app, 12, "probe").await;
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
    let Disabled {
        flaky,
        app,
        event: disabled,
    } = disabled_by_its_breaker(
        503,
        "retry_schedule = [\"0s\", \"0s\", \"0s\", \"0s\", \"0s\", \"0s\"]\n\
         max_in_flight_per_subscription = 1\nbreaker_failures = 0\ndisable_after_failures = 3",
        "down",
        4,
    )
    .await;
    let reason = disabled["data"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("3 failed attempts in a row"), "{disabled}");
    let shown = subscription(&app, "down").await;
    assert_eq!(shown["state"], "disabled", "{shown}");
    assert_eq!(shown["disabled_reason"], reason);
    assert!(shown["disabled_at"].is_string(), "{shown}");
    assert_eq!(shown["paused"], false, "disabled is not paused");
    // The audit log says hookd did it, and why.
    let log = app.admin().get_ok("/v1/audit?subscription=down").await;
    let entry = &log["entries"][0];
    assert_eq!(
        (&entry["actor"], &entry["action"], &entry["detail"]),
        (&json!("hookd"), &json!("disabled"), &json!(reason)),
        "{log}"
    );
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
    let (_, listed) = (
        0,
        app.admin().get_ok("/v1/deliveries?subscription=down").await,
    );
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

/// The deliveries of subscription `id`, from the API.
async fn deliveries_of(app: &TestApp, id: &str) -> Vec<Value> {
    app.admin()
        .get_ok(&format!("/v1/deliveries?subscription={id}"))
        .await["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_failing_for_its_span_is_disabled_and_spends_no_more_attempts() {
    // Retries 100 ms apart, one at a time: a dozen failures in the 2 s span, and far more
    // retries left than that, so that only the span can stop them.
    let schedule = vec!["\"100ms\""; 60].join(", ");
    let Disabled {
        flaky,
        app,
        event: disabled,
    } = disabled_by_its_breaker(
        500,
        &format!(
            "retry_schedule = [{schedule}]\nmax_in_flight_per_subscription = 1\n\
             breaker_failures = 0\ndisable_after = \"2s\"\ndisable_after_failures = 0"
        ),
        "span",
        3,
    )
    .await;
    let reason = disabled["data"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("failing for ") && reason.contains("(disable_after = 2s)"),
        "the reason names the span: {disabled}"
    );
    // The span, not a count: the failures went on for the 2 s, and several came within it.
    let spans = flaky.spans();
    let (first, last) = (spans.first().expect("attempts"), spans.last().unwrap());
    assert!(
        last.1.duration_since(first.1) >= Duration::from_millis(1900),
        "disabled after failing for {:?}",
        last.1.duration_since(first.1)
    );
    assert!(spans.len() >= 4, "{} attempts", spans.len());
    assert!(spans.iter().all(|s| s.2 == 500));

    let shown = subscription(&app, "span").await;
    assert_eq!(shown["state"], "disabled", "{shown}");
    assert_eq!(shown["breaker"], "disabled", "{shown}");
    assert_eq!(shown["disabled_reason"], reason, "{shown}");
    let labels = [("subscription", "span")];
    assert_eq!(
        metric(
            &app.metrics_text().await,
            "hookd_subscription_breaker",
            &labels
        ),
        Some(2.0),
        "the breaker gauge shows disabled"
    );

    // Queued, none dead, every attempt the receiver saw counted, and none after the disabling:
    // every delivery overdue by a second (its retry was 100 ms away) is still not attempted.
    let attempted = flaky.count();
    let waiting = deliveries_of(&app, "span").await;
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    assert!(
        waiting.iter().all(|d| d["state"] == "scheduled"),
        "queued, none dead: {waiting:?}"
    );
    let counted: u64 = waiting.iter().filter_map(|d| d["attempts"].as_u64()).sum();
    assert_eq!(counted, attempted as u64, "{waiting:?}");
    let due_ms = {
        let mut due = Vec::new();
        for d in &waiting {
            let id = d["id"].as_str().expect("delivery id");
            let delivery = app.shared.store.delivery(id).await.unwrap().unwrap();
            due.push(
                delivery
                    .due_ms
                    .expect("a scheduled delivery is due some time"),
            );
        }
        due.into_iter().max().unwrap()
    };
    wait_until(
        "every waiting delivery a second overdue",
        Duration::from_secs(5),
        || async { (hookd::scheduler::now_ms() > due_ms + 1000).then_some(()) },
    )
    .await;
    assert_eq!(
        flaky.count(),
        attempted,
        "a disabled subscription was attempted"
    );
    let after = deliveries_of(&app, "span").await;
    let counted_after: u64 = after.iter().filter_map(|d| d["attempts"].as_u64()).sum();
    assert_eq!(counted_after, counted, "{after:?}");
    let text = app.metrics_text().await;
    let attempts_metric = metric(
        &text,
        "hookd_delivery_attempts_total",
        &[("subscription", "span"), ("outcome", "http_5xx")],
    );
    assert_eq!(attempts_metric, Some(attempted as f64), "{text}");
    assert_eq!(
        metric(&text, "hookd_subscription_breaker", &labels),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_event_refused_once_is_sent_again_signed_with_the_same_id() {
    let (_flaky, addr) = Flaky::start(400).await;
    let operator = TestReceiver::start().await;
    operator.plan([Reply::Status(500)]);
    // The operator's retries follow [delivery]; the subscription's own schedule has none, so
    // that its one delivery ends dead at once.
    let app = spawn_app(&format!(
        "[delivery]\nretry_schedule = [\"100ms\", \"100ms\"]\n\n\
         [operator]\nurl = \"{}\"\nsecret = \"{OPERATOR_SECRET}\"\n\n\
         [[subscription]]\nid = \"gone\"\nurl = \"http://{addr}/\"\nsecret = \"s\"\nevents = [\"*\"]\nretry_schedule = []\n",
        operator.url()
    ))
    .await;
    let body = post_accepted(&app, 1, "again").await.remove(0);
    let received = operator.wait_for(2, Duration::from_secs(15)).await;
    // Both verified against [operator].secret, the same event both times.
    let events = operator_events(&operator);
    assert_eq!(events[0]["type"], "delivery.dead", "{}", events[0]);
    assert_eq!(events[0]["data"]["event_id"], body["event_id"]);
    assert!(events[0]["id"].as_str().unwrap_or("").starts_with("op_"));
    assert_eq!(
        events[1]["id"], events[0]["id"],
        "the retry is the same event"
    );
    assert_eq!(received[1].body, received[0].body, "the same body, resent");
    assert_eq!(
        received[1].header("x-abstrakt-delivery"),
        received[0].header("x-abstrakt-delivery")
    );
    assert_eq!(received[0].header("x-abstrakt-attempt"), "1");
    assert_eq!(received[1].header("x-abstrakt-attempt"), "2");
    let delivered = wait_until(
        "the operator delivery delivered",
        Duration::from_secs(10),
        || async {
            let operator = deliveries_of(&app, "operator").await;
            operator.into_iter().find(|d| d["state"] == "delivered")
        },
    )
    .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    assert_eq!(delivered["id"], received[0].header("x-abstrakt-delivery"));
    assert_eq!(operator.count(), 2, "delivered once it was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_guard_applies_to_the_operator_url() {
    let operator = TestReceiver::start().await;
    // A loopback address is refused when the config is read: hookd does not start with it.
    let refused = hookd::Config::from_toml(
        &format!(
            "[operator]\nurl = \"{}\"\nsecret = \"{OPERATOR_SECRET}\"\n",
            operator.url()
        ),
        "hookd.toml",
    )
    .map(|_| ())
    .expect_err("a loopback [operator] url is refused")
    .to_string();
    assert!(
        refused.contains("operator.url") && refused.contains("blocked address"),
        "{refused}"
    );

    // A name is judged where it resolves: the operator's delivery ends dead at its first
    // attempt without a connection, and raises no event of its own.
    let port = operator.addr.port();
    let subscriber = TestReceiver::start().await;
    let app = spawn_app_guarded(&format!(
        "[delivery]\nretry_schedule = [\"100ms\"]\n\n\
         [operator]\nurl = \"http://localhost:{port}/hook\"\nsecret = \"{OPERATOR_SECRET}\"\n\n\
         [[subscription]]\nid = \"local\"\nurl = \"http://localhost:{}/hook\"\nsecret = \"s\"\nevents = [\"*\"]\nretry_schedule = []\n",
        subscriber.addr.port()
    ))
    .await;
    post_accepted(&app, 1, "guarded").await;
    let dead = wait_until(
        "the operator delivery dead",
        Duration::from_secs(10),
        || async {
            deliveries_of(&app, "operator")
                .await
                .into_iter()
                .find(|d| d["state"] == "dead")
        },
    )
    .await;
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(dead["last_error"], "blocked address", "{dead}");
    assert_eq!(deliveries_of(&app, "operator").await.len(), 1);
    assert!(
        subscriber.received().is_empty(),
        "hookd connected to loopback"
    );
    assert!(
        operator.received().is_empty(),
        "hookd connected to loopback"
    );
}

//! Graceful restarts (in-process hookd, same store, new ports): scheduled retries, deliveries
//! to a receiver that was down, and attempts in flight all survive a stop and a start.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use hookd::store::DeliveryState;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::app::{spawn_app, TestApp};
use crate::support::process::free_ports;
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::slow_receiver::SlowReceiver;
use crate::support::wait_until;

const SECRET: &str = "restart-secret";

/// The lowercase hex HMAC-SHA256 a receiver expects.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn config(url: &str, schedule: &[&str]) -> String {
    let schedule: Vec<String> = schedule.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[delivery]\nretry_schedule = [{}]\njitter = 0.0\n\n\
         [[subscription]]\nid = \"main\"\nurl = {url:?}\nsecret = {SECRET:?}\nevents = [\"*\"]\n",
        schedule.join(", ")
    )
}

async fn restart(app: TestApp) -> TestApp {
    app.restart().await
}

fn completed(request_id: &str) -> Value {
    json!({
        "request_id": request_id,
        "status": "completed",
        "result": {"items": [{"url": format!("https://cdn.abstrakt.one/{request_id}.mp4"), "content_type": "video/mp4"}]},
        "metrics": {"inference_time": 45.2, "queue_time": 2.1},
    })
}

async fn post_ok(app: &TestApp, event: &Value) -> String {
    let (status, body) = app.post(event).await;
    assert_eq!(status, 202, "{event} -> {body}");
    body["event_id"].as_str().expect("event_id").to_string()
}

async fn delivery_ids(app: &TestApp, event_id: &str) -> Vec<String> {
    app.shared
        .store
        .event_meta(event_id)
        .await
        .expect("read event meta")
        .expect("event stored")
        .deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_scheduled_before_a_graceful_restart_is_made_after_it() {
    let receiver = TestReceiver::start().await;
    receiver.plan([Reply::Status(500)]);
    let app = spawn_app(&config(&receiver.url(), &["3s"])).await;

    let event_id = post_ok(&app, &completed("restart-retry")).await;
    let ids = delivery_ids(&app, &event_id).await;
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();

    let first = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(first.header("x-abstrakt-delivery"), id);
    assert_eq!(first.header("x-abstrakt-attempt"), "1");
    // The failure is recorded and the retry waits in the store.
    let scheduled = wait_until(
        "the retry to be scheduled",
        Duration::from_secs(5),
        || async {
            let d = app.shared.store.delivery(&id).await.expect("read")?;
            (d.state == DeliveryState::Scheduled && d.attempts == 1).then_some(d)
        },
    )
    .await;
    let due = scheduled
        .due_ms
        .expect("a scheduled delivery has a due time");

    let app = restart(app).await;
    let after = app
        .shared
        .store
        .delivery(&id)
        .await
        .expect("read")
        .expect("the delivery survives the restart");
    assert_eq!(
        (after.state, after.attempts, after.due_ms),
        (DeliveryState::Scheduled, 1, Some(due)),
        "the retry still waits, due when it was: {after:?}"
    );

    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let second = &got[1];
    assert_eq!(
        second.header("x-abstrakt-delivery"),
        id,
        "same delivery id on every attempt"
    );
    assert_eq!(second.header("x-abstrakt-attempt"), "2");
    assert_eq!(second.body, first.body, "the same body on every attempt");
    assert_eq!(
        second.header("x-abstrakt-signature"),
        signature(SECRET, &second.body)
    );
    let gap = second.at.duration_since(first.at);
    assert!(
        gap >= Duration::from_millis(2900),
        "the retry came {gap:?} after the failure: the 3s delay (due at {due}) was not kept across the restart"
    );

    let delivered = wait_until(
        "the delivery to be Delivered",
        Duration::from_secs(5),
        || async {
            let d = app.shared.store.delivery(&id).await.expect("read")?;
            (d.state == DeliveryState::Delivered).then_some(d)
        },
    )
    .await;
    assert_eq!(delivered.attempts, 2);
    let attempts = app.shared.store.attempts(&id).await.expect("attempts");
    let outcomes: Vec<(u32, &str)> = attempts
        .iter()
        .map(|a| (a.number, a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [(1, "http_5xx"), (2, "success")]);
    assert_eq!(receiver.received().len(), 2, "no attempt beyond the two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_while_the_receiver_is_down_are_delivered_after_a_graceful_restart() {
    // A port with nothing listening: connection refused until the receiver starts on it.
    let port = free_ports(1)[0];
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let url = format!("http://{addr}/hook");
    let adhoc_url = format!("http://{addr}/hook?adhoc=1");
    let app = spawn_app(&config(
        &url,
        &[
            "0s", "300ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s",
        ],
    ))
    .await;

    let mut event_ids = Vec::new();
    for n in 0..5 {
        event_ids.push(post_ok(&app, &completed(&format!("down-{n}"))).await);
    }
    let batch: Vec<Value> = (5..9).map(|n| completed(&format!("down-{n}"))).collect();
    let (status, body) = app.post(&Value::Array(batch)).await;
    assert_eq!(status, 202, "{body}");
    for answer in body.as_array().expect("batch answer") {
        event_ids.push(answer["event_id"].as_str().expect("event_id").to_string());
    }
    // A per-request target on the same dead host, with its own secret.
    let mut adhoc = completed("down-adhoc");
    adhoc["webhook_url"] = json!(adhoc_url);
    adhoc["webhook_secret"] = json!("adhoc-secret");
    event_ids.push(post_ok(&app, &adhoc).await);

    // delivery id -> request_id
    let mut deliveries: HashMap<String, String> = HashMap::new();
    for (n, event_id) in event_ids.iter().enumerate() {
        let request_id = if n == 9 {
            "down-adhoc".to_string()
        } else {
            format!("down-{n}")
        };
        for id in delivery_ids(&app, event_id).await {
            deliveries.insert(id, request_id.clone());
        }
    }
    assert_eq!(
        deliveries.len(),
        11,
        "9 events to the subscription, one to it and its webhook_url"
    );

    // Every delivery has been refused at least once before the stop.
    wait_until(
        "a refused attempt for every delivery",
        Duration::from_secs(5),
        || async {
            for id in deliveries.keys() {
                let attempts = app.shared.store.attempts(id).await.expect("attempts");
                if !attempts.iter().any(|a| a.outcome.as_str() == "connect") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let app = restart(app).await;
    for id in deliveries.keys() {
        let d = app
            .shared
            .store
            .delivery(id)
            .await
            .expect("read")
            .expect("stored");
        assert_ne!(
            d.state,
            DeliveryState::Dead,
            "{d:?}: dead before the receiver came up"
        );
    }
    let receiver = TestReceiver::start_on(addr).await;

    wait_until(
        "every delivery to be Delivered",
        Duration::from_secs(10),
        || async {
            for id in deliveries.keys() {
                let d = app.shared.store.delivery(id).await.expect("read");
                if d.expect("stored").state != DeliveryState::Delivered {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let received = receiver.received();
    let mut seen: HashSet<String> = HashSet::new();
    for r in &received {
        let id = r.header("x-abstrakt-delivery").to_string();
        let request_id = deliveries
            .get(&id)
            .unwrap_or_else(|| panic!("unknown delivery {id}"));
        assert!(seen.insert(id.clone()), "delivery {id} arrived twice");
        let attempt: u32 = r
            .header("x-abstrakt-attempt")
            .parse()
            .expect("attempt number");
        assert!(
            attempt >= 2,
            "{request_id}: attempt {attempt}, but attempt 1 was refused"
        );
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        assert_eq!(&body["request_id"], request_id.as_str());
        let record = app
            .shared
            .store
            .delivery(&id)
            .await
            .expect("read")
            .expect("stored");
        let secret = if record.adhoc.is_some() {
            "adhoc-secret"
        } else {
            SECRET
        };
        assert_eq!(
            r.header("x-abstrakt-signature"),
            signature(secret, &r.body),
            "{request_id} signed with the wrong secret"
        );
    }
    assert_eq!(seen.len(), deliveries.len(), "every delivery arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_the_attempt_in_flight_finish_and_it_is_not_repeated() {
    let receiver = SlowReceiver::start(Duration::from_millis(1500)).await;
    let app = spawn_app(&config(&receiver.url(), &["0s", "1s"])).await;
    let event_id = post_ok(&app, &completed("restart-in-flight")).await;
    let id = delivery_ids(&app, &event_id).await[0].clone();

    wait_until("the attempt to start", Duration::from_secs(5), || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;
    // Draining: /readyz says so while the attempt finishes.
    app.shutdown.cancel();
    let readyz = format!("http://{}/readyz", app.metrics);
    wait_until(
        "/readyz to answer 503 while draining",
        Duration::from_secs(1),
        || async {
            let r = reqwest::get(&readyz).await.ok()?;
            (r.status().as_u16() == 503).then_some(())
        },
    )
    .await;

    let app = restart(app).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let answered = requests[0]
        .answered
        .expect("hookd stopped before the receiver answered the attempt in flight");
    assert!(answered.duration_since(requests[0].started) >= Duration::from_millis(1500));
    let d = app
        .shared
        .store
        .delivery(&id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
    assert_eq!(d.attempts, 1, "{d:?}");
    // Nothing is left to send: the restarted hookd will not repeat it.
    let stats = app
        .shared
        .store
        .pending_stats(hookd::scheduler::now_ms())
        .await
        .expect("pending stats");
    assert_eq!(
        (stats.ready, stats.scheduled, stats.in_flight),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(receiver.requests().len(), 1);
}

/// `Application::run_until_stopped` has returned and every handle is dropped: the store must be
/// free for the next instance at once, as `TestApp::restart` (and anyone embedding hookd)
/// expects. Six stop/start cycles, each after a delivery was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_can_be_reopened_as_soon_as_a_graceful_stop_returns() {
    let receiver = TestReceiver::start().await;
    let mut app = spawn_app(&config(&receiver.url(), &["0s"])).await;
    for cycle in 0..6 {
        let event_id = post_ok(&app, &completed(&format!("reopen-{cycle}"))).await;
        let id = delivery_ids(&app, &event_id).await[0].clone();
        wait_until(
            "the delivery to be Delivered",
            Duration::from_secs(5),
            || async {
                let d = app.shared.store.delivery(&id).await.expect("read")?;
                (d.state == DeliveryState::Delivered).then_some(())
            },
        )
        .await;
        // Panics with "could not acquire lock" when the old store is still open.
        app = app.restart().await;
        let (status, body) = app.post(&completed(&format!("reopen-{cycle}"))).await;
        assert_eq!(status, 200, "the event survived the restart: {body}");
    }
    assert_eq!(receiver.received().len(), 6);
}

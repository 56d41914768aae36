//! `POST /v1/events`: every rejection (status, `{"error", "field"}`, nothing stored, nothing
//! sent), idempotency, fan-out with the headers of the webhook request, and group commit under
//! concurrent posts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hookd::signing::abstrakt_signature;
use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::{
    delivery_ids, delivery_toml, event, metric, spawn_app_with_api, subscription_toml, wait_idle,
};
use crate::support::receiver::{Received, TestReceiver};

const SCHEDULE: [&str; 3] = ["0s", "200ms", "400ms"];
const DEADLINE: Duration = Duration::from_secs(5);

/// hookd with one subscription `a` (secret `s`, every event) to a fresh receiver.
async fn app_with_receiver() -> (TestApp, TestReceiver) {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "")
    ))
    .await;
    (app, receiver)
}

fn body_json(received: &Received) -> Value {
    serde_json::from_slice(&received.body).expect("webhook body is JSON")
}

fn request_id(received: &Received) -> String {
    body_json(received)["request_id"]
        .as_str()
        .expect("request_id is a string")
        .to_string()
}

/// `(request_id, X-Abstrakt-Event)` of every request, sorted.
fn keys(received: &[Received]) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = received
        .iter()
        .map(|r| (request_id(r), r.header("x-abstrakt-event").to_string()))
        .collect();
    keys.sort();
    keys
}

fn assert_error_body(body: &Value, context: &str) {
    let message = body["error"].as_str().unwrap_or("");
    assert!(
        !message.is_empty(),
        "{context}: the error body needs a non-empty \"error\": {body}"
    );
}

/// An event posted without `timestamp` is sent with hookd's acceptance time, in RFC 3339.
fn assert_defaulted_timestamp(body: &Value) {
    let text = body["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {body}"));
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {text:?} is not RFC 3339: {e}"));
    let age = time::OffsetDateTime::now_utc() - at;
    assert!(
        age >= time::Duration::ZERO && age < time::Duration::minutes(1),
        "timestamp {text:?} is not the acceptance time"
    );
}

/// Proves that what was posted before stored and sent nothing: the store is empty, and a
/// valid event posted now is then the only event stored and the only request the receiver
/// gets.
async fn assert_nothing_stored_but_sentinel(app: &TestApp, receiver: &TestReceiver) {
    assert_eq!(
        app.shared.store.counts().await.unwrap(),
        (0, 0),
        "a rejected request stored something"
    );
    let (status, body) = app.post(&event("sentinel", "completed")).await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, DEADLINE).await;
    wait_idle(app, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(
        received.iter().map(request_id).collect::<Vec<_>>(),
        ["sentinel"],
        "the receiver got a rejected event"
    );
    assert_eq!(app.shared.store.counts().await.unwrap(), (1, 1));
}

/// U+0000 in an id or a per-request secret is refused with the field named, on both engines
/// (PostgreSQL's text cannot hold it), never a 503.
#[tokio::test]
async fn a_nul_in_an_id_or_a_secret_is_422_and_stores_nothing() {
    let (app, receiver) = app_with_receiver().await;
    for (event, field) in [
        (
            json!({ "request_id": "a\u{0}b", "status": "completed" }),
            "request_id",
        ),
        (
            json!({ "request_id": "x", "status": "completed", "request_id": "\u{0}" }),
            "request_id",
        ),
        (
            json!({ "request_id": "nul-secret", "status": "completed",
                    "webhook_url": receiver.url(), "webhook_secret": "s\u{0}" }),
            "webhook_secret",
        ),
    ] {
        let (status, body) = app.post(&event).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{event}: {body}"
        );
    }
    let (status, body) = app
        .post(&json!({ "request_id": "nul-url", "status": "completed",
                       "webhook_url": format!("{}\u{0}", receiver.url()), "webhook_secret": "s" }))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("webhook_url")),
        "{body}"
    );
    assert_nothing_stored_but_sentinel(&app, &receiver).await;
}

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let (app, receiver) = app_with_receiver().await;
    let bodies: [&[u8]; 6] = [
        b"{",
        b"{\"request_id\": \"r\", \"status\": \"completed\",}",
        b"not json",
        b"",
        b"{\"request_id\": \"r\", \"status\": \"completed\"} trailing",
        b"\xff\xfe",
    ];
    for body in bodies {
        let (status, answer) = app.post_raw(body.to_vec()).await;
        let shown = String::from_utf8_lossy(body);
        assert_eq!(status, 400, "{shown:?}: {answer}");
        assert_error_body(&answer, &shown);
    }
    assert_nothing_stored_but_sentinel(&app, &receiver).await;
}

#[tokio::test]
async fn json_that_javascript_keeps_but_hookd_cannot_carry_is_422() {
    let (app, receiver) = app_with_receiver().await;
    let deep = format!(
        "{{\"request_id\":\"r\",\"status\":\"completed\",\"result\":{}1{}}}",
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );
    for (body, says) in [
        (deep.as_str(), "128 levels"),
        (
            r#"{"request_id":"r","status":"completed","error":{"message":"\ud800"}}"#,
            "surrogate",
        ),
    ] {
        let (status, answer) = app.post_raw(body.to_string()).await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(says),
            "{answer}"
        );
    }
    assert_nothing_stored_but_sentinel(&app, &receiver).await;
}

#[tokio::test]
async fn body_over_max_body_bytes_and_batch_over_max_batch_are_413() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app_with_api(
        "max_body_bytes = 1024\nmax_batch = 3",
        &format!(
            "{}{}",
            delivery_toml(&SCHEDULE, ""),
            subscription_toml("a", &receiver.url(), "s", &["*"], "")
        ),
    )
    .await;

    let big = json!({"request_id": "too-big", "status": "completed", "result": {"pad": "x".repeat(1500)}});
    let (status, body) = app.post(&big).await;
    assert_eq!(status, 413, "{body}");
    assert_error_body(&body, "body over max_body_bytes");

    let four: Vec<Value> = (0..4)
        .map(|i| event(&format!("four-{i}"), "completed"))
        .collect();
    let (status, body) = app.post(&Value::Array(four)).await;
    assert_eq!(status, 413, "{body}");
    assert_error_body(&body, "batch over max_batch");
    assert_eq!(app.shared.store.counts().await.unwrap(), (0, 0));

    // Just under both limits: accepted, which shows that the limits are the configured ones.
    let fits =
        json!({"request_id": "fits", "status": "completed", "result": {"pad": "x".repeat(900)}});
    assert!(fits.to_string().len() < 1024);
    let (status, body) = app.post(&fits).await;
    assert_eq!(status, 202, "{body}");
    let three: Vec<Value> = (0..3)
        .map(|i| event(&format!("three-{i}"), "completed"))
        .collect();
    let (status, body) = app.post(&Value::Array(three)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(3), "{body}");

    receiver.wait_for(4, DEADLINE).await;
    wait_idle(&app, DEADLINE).await;
    let mut ids: Vec<String> = receiver.received().iter().map(request_id).collect();
    ids.sort();
    assert_eq!(ids, ["fits", "three-0", "three-1", "three-2"]);
    assert_eq!(app.shared.store.counts().await.unwrap(), (4, 4));
}

/// One invalid event per case, and the field the 422 must name.
fn invalid_events() -> Vec<(Value, &'static str)> {
    let url = "http://127.0.0.1:9/hook";
    vec![
        (
            json!({"request_id": "r", "status": "completed", "extra": 1}),
            "extra",
        ),
        (
            json!({"Request_ID": "r", "request_id": "r", "status": "completed"}),
            "Request_ID",
        ),
        (json!({"status": "completed"}), "request_id"),
        (
            json!({"request_id": null, "status": "completed"}),
            "request_id",
        ),
        (
            json!({"request_id": 5, "status": "completed"}),
            "request_id",
        ),
        (
            json!({"request_id": ["r"], "status": "completed"}),
            "request_id",
        ),
        (
            json!({"request_id": "", "status": "completed"}),
            "request_id",
        ),
        (
            json!({"request_id": "x".repeat(257), "status": "completed"}),
            "request_id",
        ),
        (json!({"request_id": "r"}), "status"),
        (json!({"request_id": "r", "status": 1}), "status"),
        (json!({"request_id": "r", "status": "Completed"}), "status"),
        (
            json!({"request_id": "r", "status": "job.completed"}),
            "status",
        ),
        (json!({"request_id": "r", "status": ""}), "status"),
        (
            json!({"request_id": "r", "status": "a".repeat(33)}),
            "status",
        ),
        (
            json!({"request_id": "r", "status": "completed", "result": [1]}),
            "result",
        ),
        (
            json!({"request_id": "r", "status": "completed", "result": "ok"}),
            "result",
        ),
        (
            json!({"request_id": "r", "status": "failed", "error": "boom"}),
            "error",
        ),
        (
            json!({"request_id": "r", "status": "completed", "metrics": 45.2}),
            "metrics",
        ),
        (
            json!({"request_id": "r", "status": "completed", "timestamp": "yesterday"}),
            "timestamp",
        ),
        (
            json!({"request_id": "r", "status": "completed", "timestamp": 1_736_677_800}),
            "timestamp",
        ),
        (
            json!({"request_id": "r", "status": "completed", "timestamp": "2025-13-01T00:00:00Z"}),
            "timestamp",
        ),
        (
            json!({"request_id": "r", "status": "completed", "timestamp": "2025-01-12"}),
            "timestamp",
        ),
        (
            json!({"request_id": "r", "status": "completed", "metrics": {"n": 9_007_199_254_740_993_u64}}),
            "metrics.n",
        ),
        (
            json!({"request_id": "r", "status": "completed", "result": {"items": [{"size": 9_007_199_254_740_993_u64}]}}),
            "result.items[0].size",
        ),
        (
            json!({"request_id": "r", "status": "failed", "error": {"code": -9_007_199_254_740_993_i64}}),
            "error.code",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_url": url}),
            "webhook_secret",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_secret": "s"}),
            "webhook_url",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_url": "ftp://x/", "webhook_secret": "s"}),
            "webhook_url",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_url": "not a url", "webhook_secret": "s"}),
            "webhook_url",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_url": 5, "webhook_secret": "s"}),
            "webhook_url",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_url": url, "webhook_secret": 5}),
            "webhook_secret",
        ),
        (
            json!({"request_id": "r", "status": "completed", "webhook_url": url, "webhook_secret": ""}),
            "webhook_secret",
        ),
        // Not an object at all: the whole body is the problem.
        (json!("completed"), ""),
    ]
}

#[tokio::test]
async fn invalid_event_is_422_naming_the_field_and_stores_nothing() {
    let (app, receiver) = app_with_receiver().await;
    for (input, field) in invalid_events() {
        let (status, body) = app.post(&input).await;
        assert_eq!(status, 422, "{input}: {body}");
        if field.is_empty() {
            assert!(body.get("field").is_none(), "no empty field: {body}");
        } else {
            assert_eq!(body["field"], field, "{input}: {body}");
        }
        assert_error_body(&body, &input.to_string());
    }
    assert_nothing_stored_but_sentinel(&app, &receiver).await;
}

#[tokio::test]
async fn batch_with_one_bad_event_is_422_and_stores_none_of_them() {
    let (app, receiver) = app_with_receiver().await;
    let ok = |id: &str| event(id, "completed");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([ok("b1"), {"request_id": "b2", "status": "Bad"}]),
            "[1].status",
        ),
        (
            json!([{"request_id": "b0", "status": "Bad"}, ok("b1")]),
            "[0].status",
        ),
        (
            json!([ok("b1"), ok("b2"), {"request_id": "b3", "status": "completed", "extra": true}]),
            "[2].extra",
        ),
        (json!([ok("b1"), {"status": "completed"}]), "[1].request_id"),
        (json!([ok("b1"), 5]), "[1]"),
        (
            json!([ok("b1"), {"request_id": "b2", "status": "completed", "metrics": {"n": 9_007_199_254_740_993_u64}}]),
            "[1].metrics.n",
        ),
        (
            json!([ok("b1"), {"request_id": "b2", "status": "completed", "webhook_url": "http://127.0.0.1:9/hook"}]),
            "[1].webhook_secret",
        ),
    ];
    for (input, field) in cases {
        let (status, body) = app.post(&input).await;
        assert_eq!(status, 422, "{input}: {body}");
        assert_eq!(body["field"], field, "{input}: {body}");
        assert_error_body(&body, &input.to_string());
    }
    let (status, body) = app.post(&json!([])).await;
    assert_eq!(status, 422, "an empty batch: {body}");
    assert_error_body(&body, "[]");
    assert_nothing_stored_but_sentinel(&app, &receiver).await;
}

/// Integers beyond 2^53 change value in a JavaScript receiver, whatever their size: hookd
/// refuses them at ingest, naming the field, so that nobody's number is silently rounded.
#[tokio::test]
async fn every_integer_beyond_2_pow_53_is_refused() {
    let (app, receiver) = app_with_receiver().await;
    let mut wrong = Vec::new();
    for (i, literal) in [
        "9007199254740993",
        "-9007199254740993",
        "18446744073709551615",
        // Beyond the 64-bit integers: serde_json reads them as floats, and JavaScript would
        // round them just the same.
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(
            "{{\"request_id\": \"big-{i}\", \"status\": \"completed\", \"metrics\": {{\"n\": {literal}}}}}"
        );
        let (status, answer) = app.post_raw(body).await;
        if status != 422 || answer["field"] != "metrics.n" {
            let sent = match answer["event_id"].as_str() {
                Some(id) => app.shared.store.event_body(id).await.unwrap(),
                None => None,
            }
            .map(|b| String::from_utf8_lossy(&b).into_owned());
            wrong.push(format!("{literal}: {status} {answer}; would send {sent:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "integers beyond 2^53 that were not refused with 422 naming metrics.n:\n{}",
        wrong.join("\n")
    );
    // Outside the range of a double: JavaScript would read it as Infinity and send null.
    let body = r#"{"request_id": "huge", "status": "completed", "metrics": {"n": 1e400}}"#;
    let (status, answer) = app.post_raw(body).await;
    assert_eq!(status, 422, "{body}: {answer}");
    assert_error_body(&answer, body);
    assert_nothing_stored_but_sentinel(&app, &receiver).await;
}

#[tokio::test]
async fn same_request_id_and_status_is_one_event() {
    let (app, receiver) = app_with_receiver().await;
    let first = json!({"request_id": "job-1", "status": "completed",
        "result": {"items": [{"url": "https://cdn.example/v.mp4", "content_type": "video/mp4"}]}});

    let (status, body) = app.post(&first).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    assert_eq!(body["deliveries"], 1, "{body}");

    // The same event again, also with its fields in another order: the first event's id.
    let (status, body) = app.post(&first).await;
    assert_eq!(status, 200, "a repeat: {body}");
    assert_eq!(body["event_id"], event_id.as_str(), "{body}");
    assert_eq!(body["deliveries"], 1, "{body}");
    let reordered = r#"{"result": {"items": [{"url": "https://cdn.example/v.mp4", "content_type": "video/mp4"}]}, "status": "completed", "request_id": "job-1"}"#;
    let (status, body) = app.post_raw(reordered).await;
    assert_eq!(status, 200, "a repeat with reordered fields: {body}");
    assert_eq!(body["event_id"], event_id.as_str(), "{body}");

    // The same key with another body: a conflict.
    let changed = json!({"request_id": "job-1", "status": "completed", "result": {"items": []}});
    let (status, body) = app.post(&changed).await;
    assert_eq!(status, 409, "{body}");
    assert_error_body(&body, "conflict");
    assert_eq!(body["event_id"], event_id.as_str(), "{body}");
    assert!(
        body.get("field").is_none(),
        "a single event conflicts as a whole: no field: {body}"
    );

    // Another status of the same job is another event.
    let (status, body) = app.post(&event("job-1", "failed")).await;
    assert_eq!(status, 202, "{body}");
    assert_ne!(body["event_id"], event_id.as_str(), "{body}");

    // In a batch: a repeat inside the batch is one event; a conflict rejects the whole batch;
    // a batch of repeats only is a 200.
    let (status, body) = app
        .post(&json!([
            event("job-2", "completed"),
            event("job-2", "completed")
        ]))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body[0]["event_id"], body[1]["event_id"], "{body}");
    let (status, body) = app
        .post(&json!([event("job-3", "completed"), changed]))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error_body(&body, "conflict in a batch");
    assert_eq!(body["field"], "[1]", "the batch entry: {body}");
    let (status, body) = app.post(&json!([first])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["event_id"], event_id.as_str(), "{body}");

    receiver.wait_for(3, DEADLINE).await;
    wait_idle(&app, DEADLINE).await;
    assert_eq!(
        keys(&receiver.received()),
        [
            ("job-1".to_string(), "job.completed".to_string()),
            ("job-1".to_string(), "job.failed".to_string()),
            ("job-2".to_string(), "job.completed".to_string()),
        ],
        "one delivery per distinct event, none for repeats or rejected batches"
    );
    assert_eq!(app.shared.store.counts().await.unwrap(), (3, 3));
    let text = app.metrics_text().await;
    assert_eq!(
        metric(&text, "hookd_events_received_total", &[]),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_follows_filters_and_per_request_targets_with_signed_headers() {
    let (completed_only, completed_and_failed, per_request) = (
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
    );
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml(
            "a",
            &completed_only.url(),
            "secret-a",
            &["job.completed"],
            ""
        ),
        subscription_toml(
            "b",
            &completed_and_failed.url(),
            "secret-b",
            &["job.completed", "job.failed"],
            ""
        ),
    ))
    .await;

    let e1 = json!({"request_id": "fan-1", "status": "completed",
        "result": {"items": [{"url": "https://cdn.example/v.mp4", "content_type": "video/mp4"}]},
        "timestamp": "2025-01-12T10:30:00Z",
        "webhook_url": per_request.url(), "webhook_secret": "per-request-secret"});
    let (status, body) = app.post(&e1).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 3, "a, b and the webhook_url: {body}");
    let e1_id = body["event_id"].as_str().unwrap().to_string();

    let (status, body) = app
        .post(&json!({"request_id": "fan-2", "status": "failed", "error": {"message": "boom"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1, "b only: {body}");
    let e2_id = body["event_id"].as_str().unwrap().to_string();

    let (status, body) = app
        .post(&json!([
            event("fan-3", "cancelled"),
            {"request_id": "fan-4", "status": "failed",
             "webhook_url": per_request.url(), "webhook_secret": "per-request-secret"},
        ]))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body[0]["deliveries"], 0,
        "nobody wants job.cancelled: {body}"
    );
    assert_eq!(body[1]["deliveries"], 2, "b and the webhook_url: {body}");
    let e4_id = body[1]["event_id"].as_str().unwrap().to_string();

    completed_only.wait_for(1, DEADLINE).await;
    completed_and_failed.wait_for(3, DEADLINE).await;
    per_request.wait_for(2, DEADLINE).await;
    wait_idle(&app, DEADLINE).await;
    let pair = |id: &str, t: &str| (id.to_string(), t.to_string());
    assert_eq!(
        keys(&completed_only.received()),
        [pair("fan-1", "job.completed")]
    );
    assert_eq!(
        keys(&completed_and_failed.received()),
        [
            pair("fan-1", "job.completed"),
            pair("fan-2", "job.failed"),
            pair("fan-4", "job.failed")
        ]
    );
    assert_eq!(
        keys(&per_request.received()),
        [pair("fan-1", "job.completed"), pair("fan-4", "job.failed")]
    );
    assert_eq!(app.shared.store.counts().await.unwrap(), (4, 6));

    // The body of fan-1, byte for byte: compact, fields in the fixed order, webhook_* left out.
    let e1_body = r#"{"request_id":"fan-1","status":"completed","result":{"items":[{"url":"https://cdn.example/v.mp4","content_type":"video/mp4"}]},"timestamp":"2025-01-12T10:30:00Z"}"#;
    let mut deliveries_of: HashMap<String, Vec<String>> = HashMap::new();
    for id in [&e1_id, &e2_id, &e4_id] {
        deliveries_of.insert(id.clone(), delivery_ids(&app, id).await);
    }
    let mut seen_delivery_ids = HashSet::new();
    for (receiver, secret) in [
        (&completed_only, "secret-a"),
        (&completed_and_failed, "secret-b"),
        (&per_request, "per-request-secret"),
    ] {
        for r in receiver.received() {
            let body = std::str::from_utf8(&r.body).expect("UTF-8 body");
            let rid = request_id(&r);
            let event_id = match rid.as_str() {
                "fan-1" => {
                    assert_eq!(body, e1_body);
                    &e1_id
                }
                "fan-2" => {
                    assert_defaulted_timestamp(&body_json(&r));
                    &e2_id
                }
                _ => &e4_id,
            };
            assert_eq!(
                r.body.as_ref(),
                app.shared
                    .store
                    .event_body(event_id)
                    .await
                    .unwrap()
                    .unwrap(),
                "the stored body is what is sent"
            );
            assert_eq!(r.header("content-type"), "application/json", "{rid}");
            assert!(
                r.header("user-agent").starts_with("hookd/"),
                "{rid}: {}",
                r.header("user-agent")
            );
            assert_eq!(
                r.header("x-abstrakt-signature"),
                abstrakt_signature(secret.as_bytes(), &r.body),
                "{rid} at {} must be signed with {secret}",
                receiver.addr
            );
            let status = body_json(&r)["status"].as_str().unwrap().to_string();
            assert_eq!(r.header("x-abstrakt-event"), format!("job.{status}"));
            assert_eq!(r.header("x-abstrakt-attempt"), "1");
            let delivery = r.header("x-abstrakt-delivery").to_string();
            assert!(
                deliveries_of[event_id].contains(&delivery),
                "{rid}: X-Abstrakt-Delivery {delivery:?} is not one of the event's deliveries {:?}",
                deliveries_of[event_id]
            );
            assert!(
                seen_delivery_ids.insert(delivery.clone()),
                "delivery id {delivery} used twice"
            );
            let record = app.shared.store.delivery(&delivery).await.unwrap().unwrap();
            let expected_subscription = match secret {
                "secret-a" => "a",
                "secret-b" => "b",
                _ => "adhoc",
            };
            assert_eq!(record.subscription, expected_subscription);
        }
    }
    assert_eq!(seen_delivery_ids.len(), 6);

    let text = app.metrics_text().await;
    for (subscription, n) in [("a", 1.0), ("b", 3.0), ("adhoc", 2.0)] {
        assert_eq!(
            metric(
                &text,
                "hookd_deliveries_total",
                &[("subscription", subscription), ("result", "delivered")]
            ),
            Some(n),
            "{subscription}:\n{text}"
        );
    }
    assert!(
        !text.contains(&per_request.addr.to_string()),
        "a per-request URL leaked into the metrics:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_are_all_accepted_and_delivered() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 20;
    let (app, receiver) = app_with_receiver().await;
    let url = format!("http://{}/v1/events", app.api);
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let client = app.client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(event(&format!("c-{t}-{i}"), "completed").to_string())
                    .send()
                    .await
                    .expect("ingest request");
                statuses.push(response.status().as_u16());
            }
            statuses
        }));
    }
    for task in tasks {
        let statuses = task.await.expect("posting task");
        assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
    }
    let total = TASKS * PER_TASK;
    assert_eq!(
        app.shared.store.counts().await.unwrap(),
        (total as u64, total as u64),
        "every 202 is stored"
    );

    receiver.wait_for(total, Duration::from_secs(30)).await;
    wait_idle(&app, Duration::from_secs(30)).await;
    let received = receiver.received();
    let distinct: HashSet<String> = received.iter().map(request_id).collect();
    let expected: HashSet<String> = (0..TASKS)
        .flat_map(|t| (0..PER_TASK).map(move |i| format!("c-{t}-{i}")))
        .collect();
    assert_eq!(distinct, expected);
    assert_eq!(
        received.len(),
        total,
        "a healthy receiver gets each event once"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "hookd_events_received_total",
            &[("event_type", "job.completed")]
        ),
        Some(total as f64),
        "{text}"
    );
}

#[tokio::test]
async fn the_header_prefix_is_configurable() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&SCHEDULE, "header_prefix = \"X-Acme\""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "")
    ))
    .await;
    let (status, body) = app.post(&event("prefixed", "completed")).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().unwrap();
    let received = receiver.wait_for(1, DEADLINE).await;
    let r = &received[0];
    assert_eq!(
        r.header("x-acme-signature"),
        abstrakt_signature(b"s", &r.body)
    );
    assert_eq!(r.header("x-acme-event"), "job.completed");
    assert_eq!(
        r.header("x-acme-delivery"),
        delivery_ids(&app, event_id).await[0]
    );
    assert_eq!(r.header("x-acme-attempt"), "1");
    let abstrakt: Vec<&str> = r
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-abstrakt-"))
        .collect();
    assert!(
        abstrakt.is_empty(),
        "default-prefixed headers sent too: {abstrakt:?}"
    );
}

#[tokio::test]
async fn per_request_targets_can_be_disabled() {
    let (configured, per_request) = (TestReceiver::start().await, TestReceiver::start().await);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&SCHEDULE, "allow_adhoc_targets = false"),
        subscription_toml("a", &configured.url(), "s", &["*"], "")
    ))
    .await;
    let (status, body) = app
        .post(&json!({"request_id": "adhoc", "status": "completed",
            "webhook_url": per_request.url(), "webhook_secret": "s"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "webhook_url", "{body}");
    assert_nothing_stored_but_sentinel(&app, &configured).await;
    assert!(per_request.received().is_empty());
}

// ------------------------------------------------------------------ content types, router errors

/// Posts `body` with the Content-Type `content_type` (none when `None`).
async fn post_typed(app: &TestApp, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("http://{}/v1/events", app.api))
        .body(body.to_string());
    if let Some(t) = content_type {
        request = request.header("content-type", t);
    }
    let response = request.send().await.expect("ingest request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn ingest_takes_json_content_types_only_and_answers_415_otherwise() {
    let (app, receiver) = app_with_receiver().await;
    let accepted = [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/vnd.abstrakt.event+json",
    ];
    for (i, t) in accepted.iter().enumerate() {
        let body = event(&format!("ct-{i}"), "completed").to_string();
        let (status, answer) = post_typed(&app, Some(t), &body).await;
        assert_eq!(status, 202, "{t}: {answer}");
    }
    let refused = [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("text/json"),
        Some("multipart/form-data; boundary=x"),
        None,
    ];
    for t in refused {
        let body = event("ct-refused", "completed").to_string();
        let (status, answer) = post_typed(&app, t, &body).await;
        assert_eq!(status, 415, "{t:?}: {answer}");
        assert_error_body(&answer, &format!("{t:?}"));
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("application/json")),
            "the error says what to send: {answer}"
        );
    }
    let listed = app.admin().get_ok("/v1/deliveries?limit=1000").await;
    let ids: HashSet<String> = listed["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["event_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        ids.len(),
        accepted.len(),
        "nothing stored for a 415: {listed}"
    );
    drop(receiver);
}

#[tokio::test]
async fn router_errors_are_json_like_every_other_error() {
    let app = spawn_app("").await;
    let url = |path: &str| format!("http://{}{path}", app.api);
    for (method, path, status) in [
        (reqwest::Method::GET, "/v1/events", 405),
        (reqwest::Method::DELETE, "/v1/deliveries", 405),
        (reqwest::Method::GET, "/v1/subscriptions/x/pause", 405),
        (reqwest::Method::GET, "/v1/nothing-here", 404),
        (reqwest::Method::POST, "/", 404),
    ] {
        let response = app
            .client
            .request(method.clone(), url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        if status == 405 {
            assert!(
                response.headers().contains_key("allow"),
                "{method} {path}: 405 keeps its Allow header"
            );
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert_eq!(content_type, "application/json", "{method} {path}");
        let text = response.text().await.expect("body");
        let body: Value = serde_json::from_str(&text).expect("a JSON body");
        assert_error_body(&body, &format!("{method} {path}"));
    }
}

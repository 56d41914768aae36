//! The admin API, over HTTP: listing deliveries with filters and cursors, one delivery with
//! every attempt, single and bulk retry, subscriptions with their health, pause and resume
//! (across a restart), and bearer tokens.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::support::app::{spawn_app, spawn_app_full, TestApp};
use crate::support::events::{delivery_toml, event, metric, refused_url, subscription_toml};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;
use hookd::event::rfc3339_millis;
use hookd::scheduler::now_ms;

const DEADLINE: Duration = Duration::from_secs(4);

// ------------------------------------------------------------------ helpers

/// `/v1/deliveries` with `params`, percent-encoded.
fn list_path(params: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params("http://x/v1/deliveries", params).expect("url");
    match url.query() {
        Some(q) => format!("/v1/deliveries?{q}"),
        None => "/v1/deliveries".to_string(),
    }
}

/// One page of `/v1/deliveries`; panics unless the answer is 200.
async fn list(app: &TestApp, params: &[(&str, &str)]) -> (Vec<Value>, Value) {
    let (status, body) = app.admin().get(&list_path(params)).await;
    assert_eq!(status, 200, "GET {} -> {body}", list_path(params));
    let items = body["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries array: {body}"))
        .clone();
    (items, body["next_cursor"].clone())
}

/// Every delivery matching `params` (one page of up to 1000).
async fn list_all(app: &TestApp, params: &[(&str, &str)]) -> Vec<Value> {
    let mut params = params.to_vec();
    params.push(("limit", "1000"));
    let (items, next) = list(app, &params).await;
    assert!(next.is_null(), "fewer than 1000 deliveries: no next page");
    items
}

fn ids(items: &[Value]) -> HashSet<String> {
    items
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect()
}

async fn show(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.admin().get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(status, 200, "GET /v1/deliveries/{id} -> {body}");
    body
}

/// Waits (through the API) until delivery `id` is in `state`; returns its details.
async fn wait_state(app: &TestApp, id: &str, state: &str) -> Value {
    wait_until(
        &format!("delivery {id} to be {state}"),
        DEADLINE,
        || async {
            let d = show(app, id).await;
            (d["state"] == state).then_some(d)
        },
    )
    .await
}

/// Posts one event; returns its event id.
async fn post_event(app: &TestApp, event: &Value) -> String {
    let (status, body) = app.post(event).await;
    assert_eq!(status, 202, "{body}");
    body["event_id"].as_str().expect("event_id").to_string()
}

/// The ids of one event's deliveries, by subscription, from the API.
async fn deliveries_of(app: &TestApp, event_id: &str) -> HashMap<String, String> {
    list_all(app, &[])
        .await
        .into_iter()
        .filter(|d| d["event_id"] == event_id)
        .map(|d| {
            (
                d["subscription"].as_str().unwrap().to_string(),
                d["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A millisecond boundary: everything that happened before this call is earlier than it, and
/// everything after it is at or after it.
async fn clock_boundary() -> u64 {
    let before = now_ms();
    wait_until("the clock to tick", Duration::from_secs(1), || async {
        (now_ms() > before).then_some(before + 1)
    })
    .await
}

fn assert_error(status: u16, body: &Value, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: the body is {{\"error\": \"...\"}}: {body}"
    );
}

fn rfc3339_ms(text: &Value) -> i128 {
    let t = time::OffsetDateTime::parse(
        text.as_str()
            .unwrap_or_else(|| panic!("{text} is not a string")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
    t.unix_timestamp_nanos() / 1_000_000
}

/// A receiver that answers each request with the next `(status, body)` of its plan (200 with no
/// body after the plan runs out) and records every request.
#[derive(Clone)]
struct BodyReceiver {
    addr: SocketAddr,
    inner: BodyState,
}

#[derive(Default)]
struct BodyInner {
    received: Vec<(HeaderMap, Bytes)>,
    plan: VecDeque<(u16, &'static str)>,
}

type BodyState = Arc<Mutex<BodyInner>>;

impl BodyReceiver {
    async fn start(plan: Vec<(u16, &'static str)>) -> BodyReceiver {
        let inner: BodyState = Arc::new(Mutex::new(BodyInner {
            received: Vec::new(),
            plan: plan.into(),
        }));
        let app = Router::new()
            .route("/hook", post(body_reply))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        BodyReceiver { addr, inner }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.inner.lock().unwrap().received.clone()
    }
}

async fn body_reply(
    State(inner): State<BodyState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut inner = inner.lock().unwrap();
    inner.received.push((headers, body));
    let (status, text) = inner.plan.pop_front().unwrap_or((200, ""));
    (StatusCode::from_u16(status).unwrap(), text)
}

// ------------------------------------------------------------------ GET /v1/deliveries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_state_subscription_event_type_and_time() {
    let ok = TestReceiver::start().await;
    let hang = TestReceiver::start().await;
    hang.set_default(Reply::Hang);
    let held = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}{}{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("ok", &ok.url(), "s1", &["job.completed"], ""),
        subscription_toml("down", &refused_url(), "s2", &["job.failed"], ""),
        subscription_toml(
            "hang",
            &hang.url(),
            "s3",
            &["job.running"],
            "timeout = \"30s\""
        ),
        subscription_toml("held", &held.url(), "s4", &["*"], ""),
    ))
    .await;
    let (status, body) = app.admin().post("/v1/subscriptions/held/pause", None).await;
    assert_eq!(status, 200, "{body}");

    let e1 = post_event(&app, &event("r1", "completed")).await;
    let boundary = clock_boundary().await;
    let e2 = post_event(&app, &event("r2", "failed")).await;
    let e3 = post_event(&app, &event("r3", "running")).await;

    // ok delivers, down dies after 2 refused attempts, hang stays in flight, held waits.
    let all = wait_until("every delivery to settle", DEADLINE, || async {
        let all = list_all(&app, &[]).await;
        let state_of = |sub: &str| -> Vec<String> {
            all.iter()
                .filter(|d| d["subscription"] == sub)
                .map(|d| d["state"].as_str().unwrap().to_string())
                .collect()
        };
        let settled = state_of("ok") == ["delivered"]
            && state_of("down") == ["dead"]
            && state_of("hang") == ["in_flight"]
            && state_of("held") == ["scheduled"; 3];
        settled.then_some(all)
    })
    .await;
    assert_eq!(all.len(), 6, "{all:#?}");
    let by_sub =
        |sub: &str| -> Vec<&Value> { all.iter().filter(|d| d["subscription"] == sub).collect() };
    let ok_d = by_sub("ok")[0];
    assert_eq!(ok_d["url"], ok.url());
    assert_eq!(ok_d["event_id"], e1);
    assert_eq!(ok_d["event_type"], "job.completed");
    assert_eq!(ok_d["attempts"], 1);
    assert!(ok_d["finished_at"].is_string(), "{ok_d}");
    assert!(ok_d["next_attempt_at"].is_null(), "{ok_d}");
    let down = by_sub("down")[0];
    assert_eq!(down["attempts"], 2, "schedule [0s]: two attempts: {down}");
    assert!(down["last_error"].is_string(), "{down}");
    assert!(by_sub("held")
        .iter()
        .all(|d| d["next_attempt_at"].is_string() && d["attempts"] == 0));

    let expect = |pred: &dyn Fn(&Value) -> bool| -> HashSet<String> {
        ids(&all.iter().filter(|d| pred(d)).cloned().collect::<Vec<_>>())
    };
    let boundary_text = rfc3339_millis(boundary);
    // (query, the deliveries it must return, how many that is)
    type Case<'a> = (Vec<(&'a str, &'a str)>, HashSet<String>, usize);
    let cases: Vec<Case> = vec![
        (
            vec![("status", "scheduled")],
            expect(&|d| d["subscription"] == "held"),
            3,
        ),
        (
            vec![("status", "in_flight")],
            expect(&|d| d["subscription"] == "hang"),
            1,
        ),
        (
            vec![("status", "delivered")],
            expect(&|d| d["subscription"] == "ok"),
            1,
        ),
        (
            vec![("status", "dead")],
            expect(&|d| d["subscription"] == "down"),
            1,
        ),
        (
            vec![("subscription", "held")],
            expect(&|d| d["subscription"] == "held"),
            3,
        ),
        (
            vec![("event_type", "job.failed")],
            expect(&|d| d["event_id"] == e2),
            2,
        ),
        (
            vec![("subscription", "held"), ("event_type", "job.running")],
            expect(&|d| d["event_id"] == e3 && d["subscription"] == "held"),
            1,
        ),
        (
            vec![("since", &boundary_text)],
            expect(&|d| d["event_id"] != e1),
            4,
        ),
        (
            vec![("until", &boundary_text)],
            expect(&|d| d["event_id"] == e1),
            2,
        ),
        (
            vec![("status", "scheduled"), ("since", &boundary_text)],
            expect(&|d| d["subscription"] == "held" && d["event_id"] != e1),
            2,
        ),
        (vec![("subscription", "nobody")], HashSet::new(), 0),
    ];
    for (params, expected, n) in cases {
        assert_eq!(expected.len(), n, "test setup for {params:?}");
        let got = list_all(&app, &params).await;
        assert_eq!(got.len(), n, "{params:?}: {got:#?}");
        assert_eq!(ids(&got), expected, "{params:?}");
    }
    // A delivery in flight cannot be retried until its attempt ends.
    let in_flight = by_sub("hang")[0]["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .admin()
        .post(&format!("/v1/deliveries/{in_flight}/retry"), None)
        .await;
    assert_error(status, &body, 409, "retry while in flight");

    // Times in another offset mean the same instant.
    let since_plus_one =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(boundary) * 1_000_000)
            .unwrap()
            .to_offset(time::macros::offset!(+01:00))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    let got = list_all(&app, &[("since", &since_plus_one)]).await;
    assert_eq!(
        ids(&got),
        expect(&|d| d["event_id"] != e1),
        "since {since_plus_one}"
    );
}

#[tokio::test]
async fn cursor_pagination_walks_every_delivery_once_newest_first() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&["0s", "100ms"], ""),
        subscription_toml("a", &receiver.url(), "sa", &["*"], ""),
        subscription_toml("b", &receiver.url(), "sb", &["job.failed"], ""),
    ))
    .await;
    let mut posted = Vec::new();
    for (i, status) in ["completed", "failed", "completed", "failed", "completed"]
        .iter()
        .enumerate()
    {
        posted.push(post_event(&app, &event(&format!("page-{i}"), status)).await);
        // Distinct creation times, so that "newest first" has one answer.
        clock_boundary().await;
    }
    let everything = list_all(&app, &[]).await;
    assert_eq!(everything.len(), 7, "5 for a, 2 for b");

    // b's 2 deliveries fill exactly one page: the walk still ends, with a null cursor.
    for filter in [
        vec![],
        vec![("subscription", "a")],
        vec![("subscription", "b")],
    ] {
        let mut seen: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 10, "{filter:?}: the walk does not end");
            let mut params = filter.clone();
            params.push(("limit", "2"));
            if let Some(c) = &cursor {
                params.push(("cursor", c));
            }
            let (items, next) = list(&app, &params).await;
            assert!(items.len() <= 2, "{filter:?}: limit=2 gave {}", items.len());
            seen.extend(items);
            match next {
                Value::Null => break,
                Value::String(next) => cursor = Some(next),
                other => panic!("next_cursor is a string or null, not {other}"),
            }
        }
        let expected: Vec<&Value> = everything
            .iter()
            .filter(|d| filter.iter().all(|(key, value)| d[*key] == *value))
            .collect();
        let seen_ids: Vec<&str> = seen.iter().map(|d| d["id"].as_str().unwrap()).collect();
        let unique: HashSet<&str> = seen_ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen_ids.len(),
            "{filter:?}: a delivery came twice"
        );
        assert_eq!(
            unique,
            expected
                .iter()
                .map(|d| d["id"].as_str().unwrap())
                .collect::<HashSet<_>>(),
            "{filter:?}: every delivery, exactly once"
        );
        assert!(
            pages <= expected.len().div_ceil(2) + 1,
            "{filter:?}: {pages} pages for {} deliveries",
            expected.len()
        );
        // Newest first: the events come back in the reverse order of posting.
        let mut event_order: Vec<&str> = Vec::new();
        for d in &seen {
            let e = d["event_id"].as_str().unwrap();
            if event_order.last() != Some(&e) {
                event_order.push(e);
            }
        }
        let expected_order: Vec<&str> = posted
            .iter()
            .rev()
            .map(String::as_str)
            .filter(|e| expected.iter().any(|d| d["event_id"] == *e))
            .collect();
        assert_eq!(event_order, expected_order, "{filter:?}: newest first");
        let created: Vec<i128> = seen.iter().map(|d| rfc3339_ms(&d["created_at"])).collect();
        assert!(
            created.windows(2).all(|w| w[0] >= w[1]),
            "{filter:?}: created_at is not newest first: {created:?}"
        );
    }
}

/// `since` and `until` compare with `created_at`, to the millisecond: a batch's deliveries are
/// all created at one instant C, so `until` C + 1 ms lists them all and `until` C none.
#[tokio::test]
async fn time_filters_follow_created_at_to_the_millisecond() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&subscription_toml("s", &receiver.url(), "x", &["*"], "")).await;
    // Paused, so that nothing changes while the deliveries are listed.
    let (status, body) = app.admin().post("/v1/subscriptions/s/pause", None).await;
    assert_eq!(status, 200, "{body}");
    let batch: Vec<Value> = (0..200)
        .map(|i| event(&format!("batch-{i}"), "completed"))
        .collect();
    let (status, body) = app.post(&Value::Array(batch)).await;
    assert_eq!(status, 202, "{body}");
    let all = list_all(&app, &[]).await;
    assert_eq!(all.len(), 200);
    let created: HashSet<i128> = all.iter().map(|d| rfc3339_ms(&d["created_at"])).collect();
    assert_eq!(
        created.len(),
        1,
        "one batch, one acceptance time: {created:?}"
    );
    let c = u64::try_from(*created.iter().next().unwrap()).unwrap();
    let (at_c, after_c) = (rfc3339_millis(c), rfc3339_millis(c + 1));
    for (params, n) in [
        (vec![("until", after_c.as_str())], 200),
        (vec![("until", at_c.as_str())], 0),
        (vec![("since", at_c.as_str())], 200),
        (vec![("since", after_c.as_str())], 0),
        (
            vec![("since", at_c.as_str()), ("until", after_c.as_str())],
            200,
        ),
    ] {
        let got = list_all(&app, &params).await;
        assert_eq!(
            got.len(),
            n,
            "{params:?}: every delivery has created_at {at_c}"
        );
    }
}

#[tokio::test]
async fn bad_list_queries_are_400_with_a_json_error() {
    let app = spawn_app("").await;
    for query in [
        "status=bogus",
        "status=",
        "since=yesterday",
        "since=2026-01-12",
        "until=2026-13-01T00:00:00Z",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "colour=red",
        "status=dead&sort=asc",
    ] {
        let (status, body) = app.admin().get(&format!("/v1/deliveries?{query}")).await;
        assert_error(status, &body, 400, query);
    }
    // The same keys with good values are fine.
    for query in [
        "status=dead",
        "since=2026-01-12T10:30:00Z&until=2099-01-01T00:00:00.5%2B02:00",
        "limit=1",
        "limit=1000",
        "",
    ] {
        let (status, body) = app.admin().get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["deliveries"], json!([]), "{query}");
        assert!(body["next_cursor"].is_null(), "{query}: {body}");
    }
}

// ------------------------------------------------------------------ GET /v1/deliveries/{id}

/// A receiver's answer may hold any bytes; PostgreSQL's text and jsonb cannot hold U+0000, so
/// the excerpt keeps U+FFFD in its place (as it does for invalid UTF-8), on both engines, and
/// the outcome is recorded.
#[tokio::test]
async fn an_answer_with_a_nul_byte_is_kept_with_a_replacement_character() {
    let receiver = BodyReceiver::start(vec![(500, "bad\0news"), (200, "ok\0")]).await;
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("nul", &receiver.url(), "nul-secret", &["*"], ""),
    ))
    .await;
    let event_id = post_event(
        &app,
        &json!({ "request_id": "req-nul", "status": "completed" }),
    )
    .await;
    let id = deliveries_of(&app, &event_id).await["nul"].clone();
    let d = wait_state(&app, &id, "delivered").await;
    let history = d["attempt_history"].as_array().expect("attempt_history");
    assert_eq!(history.len(), 2, "{d:#}");
    assert_eq!(history[0]["response_excerpt"], "bad\u{FFFD}news");
    assert_eq!(history[1]["response_excerpt"], "ok\u{FFFD}");
}

#[tokio::test]
async fn show_lists_every_attempt_with_its_response_excerpt_and_the_event() {
    let receiver = BodyReceiver::start(vec![
        (500, "upstream exploded: db down"),
        (200, "thanks, got it"),
    ])
    .await;
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("acme", &receiver.url(), "acme-secret", &["*"], ""),
    ))
    .await;
    let posted = json!({
        "request_id": "req-show",
        "status": "completed",
        "result": {"items": [{"url": "https://cdn.example/a.png", "content_type": "image/png"}]},
        "metrics": {"inference_time": 45.2, "queue_time": 2.1},
    });
    let event_id = post_event(&app, &posted).await;
    let id = deliveries_of(&app, &event_id).await["acme"].clone();
    let d = wait_state(&app, &id, "delivered").await;

    assert_eq!(d["id"], id);
    assert_eq!(d["event_id"], event_id);
    assert_eq!(d["subscription"], "acme");
    assert_eq!(d["event_type"], "job.completed");
    assert_eq!(d["attempts"], 2);
    let history = d["attempt_history"].as_array().expect("attempt_history");
    assert_eq!(history.len(), 2, "{d:#}");
    let (first, second) = (&history[0], &history[1]);
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["outcome"], "http_5xx");
    assert_eq!(first["status_code"], 500);
    assert_eq!(first["error"], "HTTP 500");
    assert_eq!(first["response_excerpt"], "upstream exploded: db down");
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["outcome"], "success");
    assert_eq!(second["status_code"], 200);
    assert!(second["error"].is_null(), "{second}");
    assert_eq!(second["response_excerpt"], "thanks, got it");
    for a in history {
        assert!(a["duration_ms"].is_u64(), "duration_ms: {a}");
        assert!(a["duration_ms"].as_u64().unwrap() < 4000, "{a}");
    }
    assert!(rfc3339_ms(&second["started_at"]) >= rfc3339_ms(&first["started_at"]));
    assert!(rfc3339_ms(&first["started_at"]) >= rfc3339_ms(&d["created_at"]));

    // The event, as stored and as delivered.
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let delivered: Value = serde_json::from_slice(&received[1].1).expect("JSON body");
    assert_eq!(d["event"], delivered);
    for key in ["request_id", "status", "result", "metrics"] {
        assert_eq!(d["event"][key], posted[key], "event.{key}");
    }
    assert!(d["event"]["timestamp"].is_string(), "hookd sets it");
    assert_eq!(received[1].0["x-abstrakt-delivery"], id.as_str());
    assert!(
        !d.to_string().contains("acme-secret"),
        "the secret is not shown: {d}"
    );

    let (status, body) = app
        .admin()
        .get("/v1/deliveries/dlv_01J00000000000000000000000")
        .await;
    assert_error(status, &body, 404, "unknown delivery");
    let (status, body) = app.admin().get("/v1/deliveries/nonsense").await;
    assert_error(status, &body, 404, "malformed delivery id");
}

// ------------------------------------------------------------------ retry

#[tokio::test]
async fn retrying_a_dead_delivery_makes_one_more_attempt_with_the_same_id() {
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("acme", &receiver.url(), "s", &["*"], ""),
    ))
    .await;
    let event_id = post_event(&app, &event("req-retry", "failed")).await;
    let id = deliveries_of(&app, &event_id).await["acme"].clone();
    let dead = wait_state(&app, &id, "dead").await;
    assert_eq!(dead["attempts"], 2);
    assert_eq!(receiver.received().len(), 2);

    // Still failing: exactly one more attempt, then dead again.
    let (status, body) = app
        .admin()
        .post(&format!("/v1/deliveries/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!(body["previous_state"], "dead");
    let again = wait_until("attempt 3 to be recorded", DEADLINE, || async {
        let d = show(&app, &id).await;
        (d["state"] == "dead" && d["attempts"] == 3).then_some(d)
    })
    .await;
    assert_eq!(again["attempt_history"].as_array().unwrap().len(), 3);
    let received = receiver.received();
    assert_eq!(received.len(), 3, "one more attempt, not a new schedule");
    assert_eq!(received[2].header("x-abstrakt-attempt"), "3");
    assert_eq!(received[2].header("x-abstrakt-delivery"), id);

    // The receiver is fixed: the next retry delivers.
    receiver.set_default(Reply::Status(200));
    let (status, body) = app
        .admin()
        .post(&format!("/v1/deliveries/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["previous_state"], "dead");
    let delivered = wait_state(&app, &id, "delivered").await;
    assert_eq!(delivered["attempts"], 4);
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert_eq!(received[3].header("x-abstrakt-attempt"), "4");
    assert_eq!(received[3].header("x-abstrakt-delivery"), id);
    assert_eq!(received[3].body, received[0].body, "the same body");
    let history = delivered["attempt_history"].as_array().unwrap();
    let numbers: Vec<u64> = history
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(history[3]["outcome"], "success");

    let (status, body) = app
        .admin()
        .post("/v1/deliveries/dlv_01J00000000000000000000000/retry", None)
        .await;
    assert_error(status, &body, 404, "retry of an unknown delivery");
}

#[tokio::test]
async fn bulk_retry_requeues_only_one_subscriptions_dead_deliveries_since_a_time() {
    let a = TestReceiver::start().await;
    let b = TestReceiver::start().await;
    a.set_default(Reply::Status(500));
    b.set_default(Reply::Status(500));
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("a", &a.url(), "sa", &["*"], ""),
        subscription_toml("b", &b.url(), "sb", &["*"], ""),
    ))
    .await;
    let early = post_event(&app, &event("bulk-1", "failed")).await;
    let early = deliveries_of(&app, &early).await;
    for id in early.values() {
        wait_state(&app, id, "dead").await;
    }
    let since = rfc3339_millis(clock_boundary().await);
    let late = post_event(&app, &event("bulk-2", "failed")).await;
    let late = deliveries_of(&app, &late).await;
    for id in late.values() {
        wait_state(&app, id, "dead").await;
    }
    a.set_default(Reply::Status(200));
    b.set_default(Reply::Status(200));

    let (status, body) = app
        .admin()
        .post(
            "/v1/deliveries/retry",
            Some(json!({"subscription": "a", "since": since})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"requeued": 1}));
    // Requeued before the answer: the others are still dead right now.
    let dead = ids(&list_all(&app, &[("status", "dead")]).await);
    let expected: HashSet<String> = [&early["a"], &early["b"], &late["b"]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        dead, expected,
        "only a's delivery that died since {since} left"
    );
    let delivered = wait_state(&app, &late["a"], "delivered").await;
    assert_eq!(delivered["attempts"], 3);
    let last = a.received().pop().unwrap();
    assert_eq!(last.header("x-abstrakt-delivery"), late["a"]);
    assert_eq!(last.header("x-abstrakt-attempt"), "3");
    assert_eq!(a.received().len(), 5, "2 + 2 + the retry");
    assert_eq!(b.received().len(), 4, "b was not retried");

    // Nothing dead since then for a: zero.
    let (status, body) = app
        .admin()
        .post(
            "/v1/deliveries/retry",
            Some(json!({"subscription": "a", "since": since})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"requeued": 0}));

    let (status, body) = app
        .admin()
        .post(
            "/v1/deliveries/retry",
            Some(json!({"subscription": "nobody", "since": since})),
        )
        .await;
    assert_error(status, &body, 404, "unknown subscription");
    for bad in [
        "not json".to_string(),
        json!({"subscription": "a"}).to_string(),
        json!({"subscription": "a", "since": "last week"}).to_string(),
        json!({"subscription": "a", "since": since, "extra": 1}).to_string(),
        json!({"subscription": 7, "since": since}).to_string(),
    ] {
        let answer = app
            .admin()
            .send(
                reqwest::Method::POST,
                "/v1/deliveries/retry",
                Some(bad.clone()),
            )
            .await;
        let (status, body) = (answer.status, answer.json());
        assert_error(status, &body, 400, &bad);
    }
    let dead = ids(&list_all(&app, &[("status", "dead")]).await);
    assert_eq!(dead, expected, "the rejected requests requeued nothing");
}

#[tokio::test]
async fn bulk_retry_counts_first_and_can_bring_forward_those_still_retrying() {
    let dead = TestReceiver::start().await;
    let retrying = TestReceiver::start().await;
    dead.set_default(Reply::Status(500));
    retrying.set_default(Reply::Status(500));
    // "d" dies after its retry; "r" waits an hour for its second attempt.
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("d", &dead.url(), "sd", &["*"], ""),
        subscription_toml(
            "r",
            &retrying.url(),
            "sr",
            &["*"],
            r#"retry_schedule = ["1h"]"#
        ),
    ))
    .await;
    let since = rfc3339_millis(clock_boundary().await);
    let event_id = post_event(&app, &event("bulk-retrying", "failed")).await;
    let ids = deliveries_of(&app, &event_id).await;
    wait_state(&app, &ids["d"], "dead").await;
    wait_until("r's first attempt", DEADLINE, || async {
        let d = show(&app, &ids["r"]).await;
        (d["state"] == "scheduled" && d["attempts"] == 1).then_some(())
    })
    .await;

    // A dry run counts and changes nothing.
    let ask = |include: bool, dry: bool| json!({"since": since, "include_retrying": include, "dry_run": dry});
    let (status, body) = app
        .admin()
        .post("/v1/deliveries/retry", Some(ask(true, true)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"dry_run": true, "dead": 1, "retrying": 1, "complete": true})
    );
    let (status, body) = app
        .admin()
        .post("/v1/deliveries/retry", Some(ask(false, true)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"dry_run": true, "dead": 1, "complete": true}));
    assert_eq!(
        show(&app, &ids["d"]).await["state"],
        "dead",
        "a dry run requeues nothing"
    );
    assert_eq!(show(&app, &ids["r"]).await["attempts"], 1);
    let audit = app.admin().get_ok("/v1/audit").await;
    assert!(
        !audit.to_string().contains("deliveries since"),
        "a dry run is not in the audit log: {audit}"
    );

    // Without include_retrying only the dead one goes; with it, the waiting one comes forward.
    dead.set_default(Reply::Status(200));
    retrying.set_default(Reply::Status(200));
    let (status, body) = app
        .admin()
        .post("/v1/deliveries/retry", Some(ask(false, false)))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"requeued": 1}));
    wait_state(&app, &ids["d"], "delivered").await;
    let waiting = show(&app, &ids["r"]).await;
    assert_eq!(
        waiting["state"], "scheduled",
        "not brought forward: {waiting}"
    );
    let (status, body) = app
        .admin()
        .post("/v1/deliveries/retry", Some(ask(true, false)))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"requeued": 1, "dead": 0, "retrying": 1}));
    let delivered = wait_state(&app, &ids["r"], "delivered").await;
    assert_eq!(delivered["attempts"], 2, "one more attempt, an hour early");
    assert_eq!(retrying.received().len(), 2);
    assert_eq!(dead.received().len(), 3, "two attempts, then the retry");
    let audit = app.admin().get_ok("/v1/audit").await;
    assert_eq!(
        audit["entries"][0]["detail"],
        format!("1 failed deliveries since {since} (0 dead, 1 still retrying)"),
        "{audit}"
    );

    for bad in [
        json!({"since": since, "include_retrying": "yes"}),
        json!({"since": since, "dry_run": 1}),
    ] {
        let (status, body) = app
            .admin()
            .post("/v1/deliveries/retry", Some(bad.clone()))
            .await;
        assert_error(status, &body, 400, &bad.to_string());
    }
}

// ------------------------------------------------------------------ subscriptions

#[tokio::test]
async fn subscriptions_show_health_and_a_fingerprint_never_the_secret() {
    const GOOD_SECRET: &str = "good-secret-Zq81";
    const FLAKY_SECRET: &str = "flaky-secret-Kp27";
    const ADHOC_SECRET: &str = "adhoc-secret-Wm55";
    let good = TestReceiver::start().await;
    let flaky = TestReceiver::start().await;
    flaky.set_default(Reply::Status(503));
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("good", &good.url(), GOOD_SECRET, &["job.completed"], ""),
        subscription_toml("flaky", &flaky.url(), FLAKY_SECRET, &["*"], ""),
    ))
    .await;
    let subscriptions = || async {
        let answer = app
            .admin()
            .send(reqwest::Method::GET, "/v1/subscriptions", None)
            .await;
        let (status, text) = (answer.status, &answer.text);
        assert_eq!(status, 200, "{text}");
        for secret in [GOOD_SECRET, FLAKY_SECRET, ADHOC_SECRET] {
            assert!(!text.contains(secret), "a secret in {text}");
        }
        let body = answer.json();
        let items = body["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .clone();
        let by_id: HashMap<String, Value> = items
            .into_iter()
            .map(|s| (s["id"].as_str().unwrap().to_string(), s))
            .collect();
        by_id
    };

    let before = subscriptions().await;
    let mut names: Vec<&str> = before.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["adhoc", "flaky", "good"]);
    for s in before.values() {
        assert_eq!(s["paused"], false, "{s}");
        assert!(s["last_success_at"].is_null(), "{s}");
        assert!(s["last_failure_at"].is_null(), "{s}");
        assert_eq!(s["consecutive_failures"], 0, "{s}");
        assert!(s["last_error"].is_null(), "{s}");
    }
    assert_eq!(before["good"]["url"], good.url());
    assert_eq!(before["good"]["events"], json!(["job.completed"]));
    assert_eq!(before["flaky"]["events"], json!(["*"]));
    let (fg, ff) = (
        before["good"]["secret_fingerprint"]
            .as_str()
            .expect("fingerprint"),
        before["flaky"]["secret_fingerprint"]
            .as_str()
            .expect("fingerprint"),
    );
    assert!(
        fg.starts_with("sha256:") && fg.len() > "sha256:".len(),
        "{fg}"
    );
    assert_ne!(fg, ff, "different secrets, different fingerprints");
    assert!(before["adhoc"]["url"].is_null());

    // good delivers, flaky fails twice and dies, and a per-request target delivers.
    let posted = post_event(
        &app,
        &json!({"request_id": "health-1", "status": "completed",
                "webhook_url": good.url(), "webhook_secret": ADHOC_SECRET}),
    )
    .await;
    let ds = deliveries_of(&app, &posted).await;
    assert_eq!(ds.len(), 3, "{ds:?}");
    wait_state(&app, &ds["good"], "delivered").await;
    wait_state(&app, &ds["adhoc"], "delivered").await;
    wait_state(&app, &ds["flaky"], "dead").await;
    let adhoc_show = show(&app, &ds["adhoc"]).await;
    assert!(adhoc_show["secret_fingerprint"].is_string(), "{adhoc_show}");
    assert!(
        !adhoc_show.to_string().contains(ADHOC_SECRET),
        "{adhoc_show}"
    );
    let listed = serde_json::to_string(&list_all(&app, &[]).await).unwrap();
    assert!(!listed.contains(ADHOC_SECRET), "{listed}");

    let after = subscriptions().await;
    for id in ["good", "adhoc"] {
        let s = &after[id];
        assert!(s["last_success_at"].is_string(), "{id}: {s}");
        assert!(s["last_failure_at"].is_null(), "{id}: {s}");
        assert_eq!(s["consecutive_failures"], 0, "{id}: {s}");
    }
    let f = &after["flaky"];
    assert!(f["last_success_at"].is_null(), "{f}");
    assert!(f["last_failure_at"].is_string(), "{f}");
    assert_eq!(f["consecutive_failures"], 2, "{f}");
    assert!(
        f["last_error"].as_str().is_some_and(|e| e.contains("503")),
        "{f}"
    );
    assert_eq!(after["good"]["secret_fingerprint"], fg, "stable");

    // flaky recovers: a success resets the failure count.
    flaky.set_default(Reply::Status(204));
    let (status, body) = app
        .admin()
        .post(&format!("/v1/deliveries/{}/retry", ds["flaky"]), None)
        .await;
    assert_eq!(status, 202, "{body}");
    wait_state(&app, &ds["flaky"], "delivered").await;
    let recovered = subscriptions().await;
    let f = &recovered["flaky"];
    assert!(f["last_success_at"].is_string(), "{f}");
    assert_eq!(f["consecutive_failures"], 0, "{f}");
    assert!(
        rfc3339_ms(&f["last_success_at"]) >= rfc3339_ms(&f["last_failure_at"]),
        "{f}"
    );
}

fn pause_config(paused: &TestReceiver, live: &TestReceiver) -> String {
    format!(
        "{}{}{}",
        delivery_toml(&["0s", "100ms"], ""),
        subscription_toml("paused", &paused.url(), "sp", &["*"], ""),
        subscription_toml("live", &live.url(), "sl", &["*"], ""),
    )
}

async fn paused_gauge(app: &TestApp) -> Option<f64> {
    metric(&app.metrics_text().await, "hookd_subscriptions_paused", &[])
}

/// `POST /v1/subscriptions/{id}/{action}`, which must succeed.
async fn set_pause(app: &TestApp, id: &str, action: &str) {
    let (status, body) = app
        .admin()
        .post(&format!("/v1/subscriptions/{id}/{action}"), None)
        .await;
    assert_eq!(status, 200, "{action} {id}: {body}");
    assert_eq!(body, json!({"id": id, "paused": action == "pause"}));
}

/// Each subscription's `paused` flag, from `GET /v1/subscriptions`.
async fn paused_flags(app: &TestApp) -> HashMap<String, Value> {
    let (status, subs) = app.admin().get("/v1/subscriptions").await;
    assert_eq!(status, 200, "{subs}");
    subs["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["paused"].clone()))
        .collect()
}

/// Waits until `receiver` got `n` requests and the API shows `n` of `subscription`'s deliveries
/// delivered.
async fn wait_delivered(app: &TestApp, receiver: &TestReceiver, subscription: &str, n: usize) {
    receiver.wait_for(n, DEADLINE).await;
    wait_until(
        &format!("{n} deliveries of {subscription} to be delivered"),
        DEADLINE,
        || async {
            let d = list_all(
                app,
                &[("subscription", subscription), ("status", "delivered")],
            )
            .await;
            (d.len() == n).then_some(())
        },
    )
    .await;
}

/// Asserts that the paused subscription got nothing and all `n` of its deliveries wait.
async fn assert_waiting(app: &TestApp, paused: &TestReceiver, n: usize) {
    assert_eq!(
        paused.received().len(),
        0,
        "a paused subscription got a request"
    );
    let waiting = list_all(app, &[("subscription", "paused")]).await;
    assert_eq!(waiting.len(), n, "{waiting:#?}");
    assert!(
        waiting
            .iter()
            .all(|d| d["state"] == "scheduled" && d["attempts"] == 0),
        "{waiting:#?}"
    );
}

fn request_ids(received: &[crate::support::receiver::Received]) -> Vec<String> {
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            body["request_id"].as_str().expect("request_id").to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_receives_nothing_until_resumed() {
    let paused = TestReceiver::start().await;
    let live = TestReceiver::start().await;
    let app = spawn_app(&pause_config(&paused, &live)).await;
    assert_eq!(paused_gauge(&app).await, Some(0.0));

    set_pause(&app, "paused", "pause").await;
    assert_eq!(paused_gauge(&app).await, Some(1.0));
    let flags = paused_flags(&app).await;
    assert_eq!(
        (&flags["paused"], &flags["live"]),
        (&json!(true), &json!(false))
    );

    for i in 0..3 {
        post_event(&app, &event(&format!("pause-{i}"), "completed")).await;
    }
    // The live subscription's deliveries, due at the same instants, all arrive...
    wait_delivered(&app, &live, "live", 3).await;
    // ...while the paused one's stay scheduled.
    assert_waiting(&app, &paused, 3).await;

    // Resume: everything that waited arrives, once each.
    set_pause(&app, "paused", "resume").await;
    assert_eq!(paused_gauge(&app).await, Some(0.0));
    assert_eq!(paused_flags(&app).await["paused"], false);
    wait_delivered(&app, &paused, "paused", 3).await;
    assert_eq!(
        request_ids(&paused.received()),
        ["pause-0", "pause-1", "pause-2"],
        "each waiting delivery once"
    );

    for action in ["pause", "resume"] {
        let (status, body) = app
            .admin()
            .post(&format!("/v1/subscriptions/nobody/{action}"), None)
            .await;
        assert_error(status, &body, 404, action);
    }
    assert_eq!(
        paused_gauge(&app).await,
        Some(0.0),
        "the 404s paused nothing"
    );
    assert!(!paused_flags(&app).await.contains_key("nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_restart() {
    let paused = TestReceiver::start().await;
    let live = TestReceiver::start().await;
    let app = spawn_app(&pause_config(&paused, &live)).await;
    set_pause(&app, "paused", "pause").await;
    for i in 0..2 {
        post_event(&app, &event(&format!("before-{i}"), "completed")).await;
    }
    wait_delivered(&app, &live, "live", 2).await;
    assert_waiting(&app, &paused, 2).await;

    let app = app.restart().await;
    assert_eq!(paused_gauge(&app).await, Some(1.0), "after the restart");
    let flags = paused_flags(&app).await;
    assert_eq!(
        (&flags["paused"], &flags["live"]),
        (&json!(true), &json!(false))
    );
    post_event(&app, &event("after-restart", "completed")).await;
    wait_delivered(&app, &live, "live", 3).await;
    assert_waiting(&app, &paused, 3).await;

    set_pause(&app, "paused", "resume").await;
    wait_delivered(&app, &paused, "paused", 3).await;
    assert_eq!(
        request_ids(&paused.received()),
        ["after-restart", "before-0", "before-1"]
    );
}

// ------------------------------------------------------------------ tokens

#[tokio::test]
async fn with_tokens_every_request_needs_the_right_bearer_token() {
    let app = spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\ntokens = [\"t0ken-123\"]\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {store}\n"
        )
    })
    .await;
    let event_body = event("auth-1", "completed").to_string();
    for token in [
        None,
        Some("wrong"),
        Some("t0ken-12"),
        Some("t0ken-1234"),
        Some(""),
    ] {
        for (method, path, body) in [
            (reqwest::Method::GET, "/v1/deliveries", None),
            (
                reqwest::Method::POST,
                "/v1/events",
                Some(event_body.clone()),
            ),
            (reqwest::Method::GET, "/v1/subscriptions", None),
        ] {
            let answer = app
                .admin()
                .token(token)
                .send(method.clone(), path, body)
                .await;
            let (status, body, text) = (answer.status, answer.json(), &answer.text);
            assert_error(
                status,
                &body,
                401,
                &format!("{method} {path} with {token:?}"),
            );
            assert!(!text.contains("t0ken-123"), "{text}");
        }
    }
    // Another scheme with the right value is not a bearer token.
    let response = app
        .client
        .get(format!("http://{}/v1/deliveries", app.api))
        .header("authorization", "Basic t0ken-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Nothing was stored by the rejected posts.
    let admin = app.admin().token(Some("t0ken-123"));
    let (status, body) = admin.get("/v1/deliveries").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deliveries"], json!([]));

    let answer = admin
        .send(reqwest::Method::POST, "/v1/events", Some(event_body))
        .await;
    let (status, body) = (answer.status, answer.json());
    assert_eq!(status, 202, "{body}");
    assert!(body["event_id"].is_string(), "{body}");
    let answer = admin
        .send(reqwest::Method::GET, "/v1/subscriptions", None)
        .await;
    let (status, text) = (answer.status, answer.text);
    assert_eq!(status, 200, "{text}");
}

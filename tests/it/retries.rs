//! The retry schedule: which answers are failures, how many attempts, their spacing and
//! headers, `Retry-After`, and the final state and metrics of a delivery.

use std::time::{Duration, SystemTime};

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::{
    delivery_ids, delivery_toml, event, metric, refused_url, subscription_toml, wait_for_state,
};
use crate::support::receiver::{Received, Reply, TestReceiver};
use hookd::store::{Delivery, DeliveryState};

const SCHEDULE: [&str; 3] = ["0s", "200ms", "400ms"];
const DEADLINE: Duration = Duration::from_secs(5);
/// Slack above a scheduled delay, for a busy 2-core machine.
const LATE: Duration = Duration::from_millis(1500);
/// Slack below a scheduled delay: due times are whole milliseconds of the wall clock.
const EARLY: Duration = Duration::from_millis(5);

/// Posts one `job.completed` event and returns the id of its only delivery.
async fn post_one(app: &TestApp, request_id: &str) -> String {
    let (status, body) = app.post(&event(request_id, "completed")).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id");
    let ids = delivery_ids(app, event_id).await;
    assert_eq!(ids.len(), 1, "one subscription, one delivery");
    ids[0].clone()
}

/// Checks the attempt headers of every request of one delivery: numbered 1, 2, ... in order,
/// always the same delivery id.
fn assert_attempt_headers(received: &[Received], delivery_id: &str) {
    let attempts: Vec<&str> = received
        .iter()
        .map(|r| r.header("x-abstrakt-attempt"))
        .collect();
    let expected: Vec<String> = (1..=received.len()).map(|n| n.to_string()).collect();
    assert_eq!(attempts, expected, "X-Abstrakt-Attempt");
    for r in received {
        assert_eq!(
            r.header("x-abstrakt-delivery"),
            delivery_id,
            "X-Abstrakt-Delivery is the same on every attempt"
        );
    }
}

/// The time between attempt `k` and `k + 1` is at least `delays[k]`, and not much more.
fn assert_spacing(received: &[Received], delays: &[Duration]) {
    assert_eq!(received.len(), delays.len() + 1);
    for (k, delay) in delays.iter().enumerate() {
        let gap = received[k + 1].at.duration_since(received[k].at);
        assert!(
            gap + EARLY >= *delay && gap <= *delay + LATE,
            "attempt {} came {gap:?} after attempt {}; the schedule says {delay:?}",
            k + 2,
            k + 1
        );
    }
}

async fn outcomes(app: &TestApp, delivery_id: &str) -> Vec<(u32, String, Option<u16>)> {
    app.shared
        .store
        .attempts(delivery_id)
        .await
        .expect("read attempts")
        .into_iter()
        .map(|a| (a.number, a.outcome.as_str().to_string(), a.status_code))
        .collect()
}

fn ms(text: &str) -> Duration {
    humantime::parse_duration(text).expect("duration")
}

#[tokio::test]
async fn every_attempt_fails_then_the_delivery_is_dead() {
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "")
    ))
    .await;
    let id = post_one(&app, "always-500").await;

    let delivery: Delivery = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
    // Dead is final: what the receiver has now is every attempt there will be.
    let received = receiver.received();
    assert_eq!(received.len(), 4, "the first attempt and 3 retries");
    assert_attempt_headers(&received, &id);
    assert_spacing(&received, &SCHEDULE.map(ms));
    let body = received[0].body.clone();
    assert!(
        received.iter().all(|r| r.body == body),
        "every attempt sends the same body"
    );

    assert_eq!(delivery.attempts, 4);
    assert!(delivery.finished_ms.is_some() && delivery.due_ms.is_none());
    assert_eq!(
        outcomes(&app, &id).await,
        (1..=4)
            .map(|n| (n, "http_5xx".to_string(), Some(500)))
            .collect::<Vec<_>>()
    );
    let text = app.metrics_text().await;
    let dead = [("subscription", "a"), ("result", "dead")];
    assert_eq!(
        metric(&text, "hookd_deliveries_total", &dead),
        Some(1.0),
        "{text}"
    );
    let delivered = [("subscription", "a"), ("result", "delivered")];
    assert_eq!(
        metric(&text, "hookd_deliveries_total", &delivered).unwrap_or(0.0),
        0.0
    );
    let failed = [("subscription", "a"), ("outcome", "http_5xx")];
    assert_eq!(
        metric(&text, "hookd_delivery_attempts_total", &failed),
        Some(4.0),
        "{text}"
    );
}

#[tokio::test]
async fn success_on_a_middle_attempt_ends_the_retries() {
    let receiver = TestReceiver::start().await;
    receiver.plan([Reply::Status(500), Reply::Status(503), Reply::Status(200)]);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "")
    ))
    .await;
    let id = post_one(&app, "third-time-lucky").await;

    let delivery = wait_for_state(&app, &id, DeliveryState::Delivered, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(received.len(), 3, "no attempt after the success");
    assert_attempt_headers(&received, &id);
    assert_spacing(
        &received,
        &SCHEDULE[..2].iter().map(|d| ms(d)).collect::<Vec<_>>(),
    );
    assert_eq!(delivery.attempts, 3);
    assert_eq!(
        outcomes(&app, &id).await,
        [
            (1, "http_5xx".to_string(), Some(500)),
            (2, "http_5xx".to_string(), Some(503)),
            (3, "success".to_string(), Some(200)),
        ]
    );
    let text = app.metrics_text().await;
    let delivered = [("subscription", "a"), ("result", "delivered")];
    assert_eq!(
        metric(&text, "hookd_deliveries_total", &delivered),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_4xx_is_retried_like_any_failure() {
    let receiver = TestReceiver::start().await;
    receiver.plan([Reply::Status(400), Reply::Status(410)]);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "")
    ))
    .await;
    let id = post_one(&app, "bad-request").await;

    let delivery = wait_for_state(&app, &id, DeliveryState::Delivered, DEADLINE).await;
    assert_eq!(delivery.attempts, 3);
    assert_eq!(receiver.received().len(), 3);
    assert_eq!(
        outcomes(&app, &id).await,
        [
            (1, "http_4xx".to_string(), Some(400)),
            (2, "http_4xx".to_string(), Some(410)),
            (3, "success".to_string(), Some(200)),
        ]
    );
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let receiver = TestReceiver::start().await;
    let elsewhere = TestReceiver::start().await;
    let location = vec![("location", elsewhere.url())];
    receiver.plan([
        Reply::WithHeaders(302, location.clone()),
        Reply::WithHeaders(307, location),
    ]);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "")
    ))
    .await;
    let id = post_one(&app, "redirected").await;

    let delivery = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
    assert_eq!(delivery.attempts, 2);
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(
        outcomes(&app, &id).await,
        [
            (1, "other".to_string(), Some(302)),
            (2, "other".to_string(), Some(307)),
        ]
    );
    assert!(
        elsewhere.received().is_empty(),
        "hookd followed a redirect to {}",
        elsewhere.url()
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("a", &refused_url(), "s", &["*"], "")
    ))
    .await;
    let id = post_one(&app, "nobody-home").await;

    let delivery = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
    assert_eq!(delivery.attempts, 2);
    assert_eq!(
        outcomes(&app, &id).await,
        [
            (1, "connect".to_string(), None),
            (2, "connect".to_string(), None)
        ]
    );
    let text = app.metrics_text().await;
    let connect = [("subscription", "a"), ("outcome", "connect")];
    assert_eq!(
        metric(&text, "hookd_delivery_attempts_total", &connect),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_a_timeout_failure() {
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Hang);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("a", &receiver.url(), "s", &["*"], "timeout = \"300ms\"")
    ))
    .await;
    let id = post_one(&app, "too-slow").await;

    let delivery = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
    assert_eq!(delivery.attempts, 2);
    assert_eq!(
        receiver.received().len(),
        2,
        "both attempts reached the receiver"
    );
    let attempts = app.shared.store.attempts(&id).await.unwrap();
    for a in &attempts {
        assert_eq!(
            (a.outcome.as_str(), a.status_code),
            ("timeout", None),
            "{a:?}"
        );
        assert!(
            (300..300 + LATE.as_millis() as u64).contains(&a.duration_ms),
            "a 300ms timeout took {} ms",
            a.duration_ms
        );
    }
    assert_eq!(attempts.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_postpones_the_next_attempt_up_to_the_cap() {
    let (seconds_429, date_503, over_cap_503) = (
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
    );
    seconds_429.plan([Reply::WithHeaders(429, vec![("retry-after", "1".into())])]);
    over_cap_503.plan([Reply::WithHeaders(
        503,
        vec![("retry-after", "3600".into())],
    )]);
    let app = spawn_app(&format!(
        "{}{}{}{}",
        delivery_toml(&["0s"], "retry_after_cap = \"1500ms\""),
        subscription_toml("a", &seconds_429.url(), "s", &["*"], ""),
        subscription_toml("b", &date_503.url(), "s", &["*"], ""),
        subscription_toml("c", &over_cap_503.url(), "s", &["*"], ""),
    ))
    .await;
    // An HTTP-date three seconds ahead: whole seconds, so 2 to 3 seconds from now, and still at
    // least a second after the first attempt when a loaded machine is slow to deliver. Made
    // once hookd runs: starting it may take seconds (a database to create and migrate).
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    date_503.plan([Reply::WithHeaders(503, vec![("retry-after", date)])]);
    let (status, body) = app.post(&event("busy", "completed")).await;
    assert_eq!(status, 202, "{body}");
    let ids = delivery_ids(&app, body["event_id"].as_str().unwrap()).await;
    assert_eq!(ids.len(), 3);

    for id in &ids {
        wait_for_state(&app, id, DeliveryState::Delivered, DEADLINE).await;
    }
    let second = Duration::from_secs(1);
    for (receiver, min, max) in [
        (&seconds_429, second, second + LATE),
        (&date_503, second, 3 * second + LATE),
        (&over_cap_503, ms("1500ms"), ms("1500ms") + LATE),
    ] {
        let received = receiver.received();
        assert_eq!(received.len(), 2, "at {}", receiver.addr);
        let gap = received[1].at.duration_since(received[0].at);
        assert!(
            gap + EARLY >= min && gap <= max,
            "at {}: the retry came {gap:?} after the first attempt; expected {min:?}..{max:?}",
            receiver.addr
        );
    }
    let mut first_outcomes: Vec<String> = Vec::new();
    for id in &ids {
        first_outcomes.push(outcomes(&app, id).await[0].1.clone());
    }
    first_outcomes.sort();
    assert_eq!(first_outcomes, ["http_4xx", "http_5xx", "http_5xx"]);
}

#[tokio::test]
async fn a_subscription_schedule_overrides_the_global_one() {
    let (global, own) = (TestReceiver::start().await, TestReceiver::start().await);
    global.set_default(Reply::Status(500));
    own.set_default(Reply::Status(500));
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml("global", &global.url(), "s", &["*"], ""),
        subscription_toml(
            "own",
            &own.url(),
            "s",
            &["*"],
            "retry_schedule = [\"100ms\"]"
        ),
    ))
    .await;
    let (status, body) = app.post(&event("two-schedules", "completed")).await;
    assert_eq!(status, 202, "{body}");
    for id in delivery_ids(&app, body["event_id"].as_str().unwrap()).await {
        let d = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
        let expected = if d.subscription == "own" { 2 } else { 4 };
        assert_eq!(d.attempts, expected, "{}", d.subscription);
    }
    assert_eq!(global.received().len(), 4);
    let own_received = own.received();
    assert_eq!(own_received.len(), 2);
    assert_spacing(&own_received, &[ms("100ms")]);
}

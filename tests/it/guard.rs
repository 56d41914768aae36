//! The target guard, tested with loopback as the forbidden network: every receiver here is on
//! 127.0.0.1, and the point of each test is that hookd does not connect to it (or does, once
//! the operator opens the range). No packet leaves loopback.

use std::time::Duration;

use hookd::store::DeliveryState;
use hookd::Config;
use serde_json::json;

use crate::support::app::{spawn_app_full, spawn_app_guarded};
use crate::support::events::{delivery_ids, metric, subscription_toml, wait_for_state};
use crate::support::receiver::TestReceiver;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_ends_dead_without_a_connection() {
    let receiver = TestReceiver::start().await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let app = spawn_app_guarded(&format!(
        "[delivery]\nretry_schedule = [\"0s\", \"100ms\"]\n\n{}",
        subscription_toml("local", &url, "s", &["*"], "")
    ))
    .await;
    let (status, body) = app
        .post(&json!({"request_id": "r1", "status": "completed"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = delivery_ids(&app, body["event_id"].as_str().unwrap())
        .await
        .remove(0);
    let delivery = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
    // Dead at the first attempt: retrying cannot open a refused address.
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_error.as_deref(), Some("blocked address"));
    let attempts = app.shared.store.attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_str(), "other");
    assert!(
        receiver.received().is_empty(),
        "hookd connected to a blocked address"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "hookd_deliveries_total",
            &[("subscription", "local"), ("result", "dead")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_urls_are_https_and_never_a_blocked_literal() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app_guarded("").await;
    let port = receiver.addr.port();
    for url in [
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://[::1]:{port}/hook"),
        format!("https://[::ffff:127.0.0.1]:{port}/hook"),
        format!("https://127.1.2.3:{port}/hook"),
        format!("http://localhost:{port}/hook"),
    ] {
        let (status, body) = app
            .post(&json!({"request_id": url, "status": "completed", "webhook_url": url, "webhook_secret": "s"}))
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["field"], "webhook_url", "{url}");
    }
    assert_eq!(app.shared.store.counts().await.unwrap(), (0, 0));

    // A name is accepted at ingest; its addresses are judged when it is resolved.
    let url = format!("https://localhost:{port}/hook");
    let (status, body) = app
        .post(&json!({"request_id": "named", "status": "completed", "webhook_url": url, "webhook_secret": "s"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = delivery_ids(&app, body["event_id"].as_str().unwrap())
        .await
        .remove(0);
    let delivery = wait_for_state(&app, &id, DeliveryState::Dead, DEADLINE).await;
    assert_eq!(delivery.last_error.as_deref(), Some("blocked address"));
    assert!(
        receiver.received().is_empty(),
        "hookd connected to a blocked address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_range_opens_only_its_addresses() {
    let receiver = TestReceiver::start().await;
    // localhost resolves to 127.0.0.1 (allowed) and, on most hosts, ::1 (still refused): the
    // guard keeps the allowed address and the delivery goes through.
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let app = spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {store}\n\n{}",
            subscription_toml("local", &url, "s", &["*"], "")
        )
    })
    .await;
    let (status, body) = app
        .post(&json!({"request_id": "r1", "status": "completed"}))
        .await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, DEADLINE).await;
    let id = delivery_ids(&app, body["event_id"].as_str().unwrap())
        .await
        .remove(0);
    wait_for_state(&app, &id, DeliveryState::Delivered, DEADLINE).await;
}

#[test]
fn a_subscription_to_a_blocked_literal_is_a_config_error() {
    let text = format!(
        "[storage]\npath = \"unused\"\n\n{}{}",
        subscription_toml("a", "http://127.0.0.1:9/hook", "s", &["*"], ""),
        subscription_toml("b", "https://[fd00::1]/hook", "s", &["*"], "")
    );
    let err = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("subscription[0].url") && err.contains("blocked address"),
        "{err}"
    );
    assert!(err.contains("subscription[1].url"), "{err}");
    let opened = format!("{text}\n[targets]\nallow = [\"127.0.0.1\", \"fd00::/8\"]\n");
    assert!(Config::from_toml(&opened, "t.toml").is_ok());
    let bad = format!("{text}\n[targets]\nallow = [\"10.0.0.0/33\"]\n");
    let err = Config::from_toml(&bad, "t.toml").unwrap_err().to_string();
    assert!(err.contains("targets.allow"), "{err}");
}

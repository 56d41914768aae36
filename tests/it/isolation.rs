//! One slow subscriber does not hold back the others: a receiver that never answers takes only
//! its own in-flight slots, and everyone else's deliveries go out at once.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::{delivery_toml, event, metric, subscription_toml};
use crate::support::receiver::{Received, Reply, TestReceiver};
use crate::support::wait_until;

const SCHEDULE: [&str; 3] = ["0s", "200ms", "400ms"];
/// How long the healthy receivers may take for all their deliveries.
const PROMPTLY: Duration = Duration::from_secs(3);

fn request_ids(received: &[Received]) -> HashSet<String> {
    received
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
            body["request_id"].as_str().expect("request_id").to_string()
        })
        .collect()
}

/// Waits until the store holds exactly `in_flight` leased and `ready` due deliveries, then
/// checks that `/metrics` shows the same.
async fn assert_pending(app: &TestApp, in_flight: u64, ready: u64) {
    wait_until(
        &format!("{in_flight} deliveries in flight and {ready} ready"),
        PROMPTLY,
        || async {
            let stats = app
                .shared
                .store
                .pending_stats(hookd::scheduler::now_ms())
                .await
                .unwrap();
            (stats.in_flight == in_flight && stats.ready == ready && stats.scheduled == 0)
                .then_some(())
        },
    )
    .await;
    let text = app.metrics_text().await;
    for (state, n) in [("in_flight", in_flight), ("ready", ready), ("scheduled", 0)] {
        assert_eq!(
            metric(&text, "hookd_deliveries_pending", &[("state", state)]),
            Some(n as f64),
            "hookd_deliveries_pending{{state={state:?}}}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_subscriber_holds_only_its_own_slots() {
    let (hung, healthy) = (TestReceiver::start().await, TestReceiver::start().await);
    hung.set_default(Reply::Hang);
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&SCHEDULE, ""),
        subscription_toml(
            "hung",
            &hung.url(),
            "s",
            &["*"],
            "timeout = \"30s\"\nmax_in_flight = 2"
        ),
        subscription_toml("healthy", &healthy.url(), "s", &["*"], ""),
    ))
    .await;

    let mut expected = HashSet::new();
    for i in 0..20 {
        let id = format!("iso-{i}");
        let (status, body) = app.post(&event(&id, "completed")).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["deliveries"], 2, "{body}");
        expected.insert(id);
    }

    let received = healthy.wait_for(20, PROMPTLY).await;
    assert_eq!(request_ids(&received), expected);
    hung.wait_for(2, PROMPTLY).await;
    // The healthy subscription is done; the hung one has 2 attempts open and 18 waiting.
    assert_pending(&app, 2, 18).await;
    assert_eq!(
        hung.received().len(),
        2,
        "the hung receiver has more requests open than its max_in_flight"
    );
    assert_eq!(healthy.received().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_per_request_host_holds_only_its_own_slots() {
    let (hung, adhoc_ok, subscribed) = (
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
    );
    hung.set_default(Reply::Hang);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(
            &SCHEDULE,
            "timeout = \"30s\"\nmax_in_flight_per_subscription = 2"
        ),
        subscription_toml("all", &subscribed.url(), "s", &["*"], "timeout = \"5s\""),
    ))
    .await;

    // Half the events also go to the hanging host, half to a healthy one.
    let (mut to_hung, mut to_ok) = (HashSet::new(), HashSet::new());
    for i in 0..20 {
        let id = format!("adhoc-{i}");
        let url = if i % 2 == 0 {
            to_hung.insert(id.clone());
            hung.url()
        } else {
            to_ok.insert(id.clone());
            adhoc_ok.url()
        };
        let (status, body) = app
            .post(&json!({"request_id": id, "status": "completed",
                "webhook_url": url, "webhook_secret": "per-request"}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["deliveries"], 2, "{body}");
    }

    let received = subscribed.wait_for(20, PROMPTLY).await;
    assert_eq!(request_ids(&received), &to_hung | &to_ok);
    let received = adhoc_ok.wait_for(10, PROMPTLY).await;
    assert_eq!(request_ids(&received), to_ok);
    hung.wait_for(2, PROMPTLY).await;
    assert_pending(&app, 2, 8).await;
    assert_eq!(
        hung.received().len(),
        2,
        "the hung host has more requests open than max_in_flight_per_subscription"
    );
    assert!(request_ids(&hung.received()).is_subset(&to_hung));
}

//! The retention sweep removes finished deliveries, their attempts and their events.

use std::time::Duration;

use serde_json::json;

use crate::support::app::spawn_app_full;
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_and_their_events_are_swept_after_retention() {
    let ok = TestReceiver::start().await;
    let failing = TestReceiver::start().await;
    failing.set_default(Reply::Status(500));
    let app = spawn_app_full(|path| format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {path}\nretention = \"400ms\"\n\n[delivery]\nretry_schedule = [\"0s\"]\n\n\
         [[subscription]]\nid = \"ok\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"job.completed\"]\n\n\
         [[subscription]]\nid = \"failing\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"job.failed\"]\n",
        ok.url(),
        failing.url()
    ))
    .await;
    let (status, body) = app
        .post(&json!({"request_id": "r1", "status": "completed"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .post(&json!({"request_id": "r2", "status": "failed", "error": {"message": "boom"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let delivered_id = body["event_id"].as_str().unwrap().to_string();
    ok.wait_for(1, Duration::from_secs(5)).await;
    failing.wait_for(2, Duration::from_secs(5)).await;

    // Both deliveries finish (one delivered, one dead), then disappear with their events.
    wait_until(
        "the sweep to empty the store",
        Duration::from_secs(10),
        || async {
            let counts = app.shared.store.counts().await.unwrap();
            (counts == (0, 0)).then_some(())
        },
    )
    .await;
    assert!(app
        .shared
        .store
        .event_meta(&delivered_id)
        .await
        .unwrap()
        .is_none());

    // A swept event's key is free again: the same request is a new event, not a repeat.
    let (status, body) = app
        .post(&json!({"request_id": "r1", "status": "completed"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("duplicate").is_none());
    ok.wait_for(2, Duration::from_secs(5)).await;
}

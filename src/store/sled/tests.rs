//! The sled engine's own tests: its layout's write budget and the conversion of a first-layout
//! store. The behaviour every engine shares is pinned by `tests/it/conformance.rs`.

use super::*;
use crate::event::{parse_event, IngestRules};
use crate::store::{AdminStore, QueueStore};

fn event(request_id: &str) -> NewEvent {
    let rules = IngestRules {
        allow_adhoc_targets: false,
        allow_http: false,
        guard: crate::guard::Guard::default(),
    };
    parse_event(
        serde_json::json!({"request_id": request_id, "status": "completed"}),
        &rules,
        "2026-01-01T00:00:00Z",
    )
    .unwrap()
}

fn target(bucket: &str) -> Target {
    Target {
        subscription: bucket.to_string(),
        bucket: bucket.to_string(),
        adhoc: None,
    }
}

fn limits() -> Limits {
    Limits {
        global: 64,
        adhoc_total: 64,
        adhoc_per_host: 8,
        subscriptions: [("main".to_string(), 8)].into(),
        paused: Default::default(),
    }
}

fn success() -> Attempt {
    Attempt {
        number: 1,
        started_ms: 1000,
        duration_ms: 3,
        outcome: Outcome::Success,
        status_code: Some(200),
        error: None,
        response_excerpt: None,
    }
}

/// Counts sled's writes through the tree's subscriber: every insert and remove.
fn count_writes(tree: &::sled::Tree) -> Arc<std::sync::atomic::AtomicUsize> {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut events = tree.watch_prefix(vec![]);
    let c = count.clone();
    std::thread::spawn(move || {
        for event in &mut events {
            let n = match event {
                ::sled::Event::Insert { .. } | ::sled::Event::Remove { .. } => 1,
            };
            c.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
    });
    count
}

#[tokio::test]
async fn an_event_delivered_on_its_first_attempt_costs_four_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    store.set_limits(limits());
    let writes = count_writes(&store.tree);
    store
        .ingest(vec![(event("r1"), vec![target("main")])], 1000)
        .await
        .unwrap();
    let (claimed, _) = store.claim(1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .record_outcome(&claimed[0].delivery.id, success(), Next::Delivered, 1001)
        .await
        .unwrap();
    // The subscriber sees writes asynchronously: wait for them, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    while writes.load(std::sync::atomic::Ordering::SeqCst) < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The health record of the subscription is the fifth write, once a second at most per
    // subscription: not a per-event cost.
    let n = writes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        n == 4 || n == 5,
        "{n} writes for one event delivered on its first attempt"
    );
    let d = store
        .delivery(&claimed[0].delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(store.attempts(&d.id).await.unwrap(), vec![success()]);
}

#[tokio::test]
async fn unfinished_deliveries_are_due_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        store.set_limits(limits());
        store
            .ingest(vec![(event("r1"), vec![target("main")])], 1000)
            .await
            .unwrap();
        let (claimed, _) = store.claim(1000, 10).await.unwrap();
        id = claimed[0].delivery.id.clone();
        // No outcome: the process dies with the attempt in flight.
        store.close().await.unwrap();
    }
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    store.set_limits(limits());
    let (claimed, _) = store.claim(1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, id);
    assert_eq!(&claimed[0].body[..], &event("r1").body[..]);
}

#[tokio::test]
async fn a_first_layout_store_is_converted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let dlv_done = "dlv_01JD0000000000000000000001";
    let dlv_retry = "dlv_01JD0000000000000000000002";
    {
        let db = ::sled::open(dir.path()).unwrap();
        let old = db.open_tree("hookd").unwrap();
        let meta = serde_json::json!({
            "request_id": "job-1", "status": "completed", "event_type": "job.completed",
            "fingerprint": hex::encode([9u8; 32]), "created_ms": 1000,
            "deliveries": [dlv_done, dlv_retry],
        });
        old.insert(
            b"m/evt_01JD0000000000000000000000",
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        old.insert(
            b"e/evt_01JD0000000000000000000000",
            b"{\"request_id\":\"job-1\"}".to_vec(),
        )
        .unwrap();
        for (id, state, due, finished) in [
            (dlv_done, "delivered", None, Some(1500u64)),
            (dlv_retry, "scheduled", Some(61_000u64), None),
        ] {
            let d = serde_json::json!({
                "id": id, "event_id": "evt_01JD0000000000000000000000",
                "event_type": "job.completed", "subscription": "main", "bucket": "main",
                "state": state, "attempts": 1, "created_ms": 1000, "due_ms": due,
                "finished_ms": finished, "last_error": null,
            });
            old.insert(format!("d/{id}"), serde_json::to_vec(&d).unwrap())
                .unwrap();
            let a = serde_json::json!({
                "number": 1, "started_ms": 1001, "duration_ms": 4,
                "outcome": if state == "delivered" { "success" } else { "http_5xx" },
                "status_code": if state == "delivered" { 200 } else { 503 },
                "error": null, "response_excerpt": null,
            });
            let mut k = format!("a/{id}").into_bytes();
            k.extend_from_slice(&1u32.to_be_bytes());
            old.insert(k, serde_json::to_vec(&a).unwrap()).unwrap();
        }
        old.insert(
            b"s/main",
            serde_json::to_vec(&SubscriptionState {
                paused: true,
                ..Default::default()
            })
            .unwrap(),
        )
        .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    let done = store.delivery(dlv_done).await.unwrap().unwrap();
    assert_eq!(done.state, DeliveryState::Delivered);
    assert_eq!(done.finished_ms, Some(1500));
    let retry = store.delivery(dlv_retry).await.unwrap().unwrap();
    assert_eq!(
        (retry.state, retry.due_ms),
        (DeliveryState::Scheduled, Some(61_000))
    );
    assert_eq!(
        store.attempts(dlv_retry).await.unwrap()[0].outcome,
        Outcome::Http5xx
    );
    let meta = store.event_meta(&retry.event_id).await.unwrap().unwrap();
    assert_eq!(
        meta.deliveries,
        vec![dlv_done.to_string(), dlv_retry.to_string()]
    );
    assert_eq!(
        &store.event_body(&retry.event_id).await.unwrap().unwrap()[..],
        b"{\"request_id\":\"job-1\"}"
    );
    assert!(store.subscription_states().await.unwrap()["main"].paused);
    assert_eq!(
        store.index_counts().0,
        1,
        "the unfinished delivery is queued"
    );
    assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"hookd"));
    // The same ingest again is a duplicate of the converted event.
    store.close().await.unwrap();
}

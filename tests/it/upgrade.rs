//! A store written by an earlier release opens: tests/fixtures/store-first-layout was made by
//! hookd's first store layout (tests/fixtures/make-first-layout-store.sh says how), and
//! store-second-layout-sled and -fjall by the second (events keyed by their hash;
//! make-second-layout-store.sh). The current binary converts each on open, keeps every
//! delivery id and state, finds every event again, and delivers what was pending.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::process::{manifest_dir, HookdProcess};
use crate::support::receiver::TestReceiver;
use crate::support::wait_until;

const SECRET: &str = "fixture-secret";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Delivery id → (subscription, state), from a `GET /v1/deliveries` answer.
fn states(listing: &Value) -> HashMap<String, (String, String)> {
    listing["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            let field = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (field("id"), (field("subscription"), field("state")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_the_previous_release_opens_and_delivers() {
    if crate::support::sled_only(
        "it opens a store of sled's first layout (a fixture of sled files)",
    ) {
        return;
    }
    let fixtures = manifest_dir().join("tests/fixtures");
    let before: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("store-first-layout.deliveries.json"))
            .expect("the fixture's listing"),
    )
    .expect("JSON");
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixtures.join("store-first-layout"), &dir.path().join("db"));

    // `ok` and `dead` as when the fixture was made; `down` now points at a receiver that answers.
    let receiver = TestReceiver::start().await;
    let extra = format!(
        "[[subscription]]\nid = \"ok\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\n\
         [[subscription]]\nid = \"down\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\nretry_schedule = [\"1h\"]\n\
         [[subscription]]\nid = \"dead\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\nretry_schedule = []\n",
        receiver.url()
    );
    // The fixture was made on 2026-11-30: past the default retention (7 days) its finished
    // deliveries would be swept at the first start, before the listing below; so, with
    // the longest retention hookd takes (ten years).
    let hookd = HookdProcess::start_with_storage(dir.path(), "retention = \"3650d\"", &extra).await;

    // Every delivery is there, under its old id and subscription, in its old state. The
    // pending ones were due an hour after the fixture was made: by now hookd may have
    // delivered them already, to the receiver `down` points at now.
    let (expected, after) = kept_as_before(&hookd, &before).await;
    // Events of a store older than owners are unowned: they reach the subscriptions without
    // an owner only, and no owner's listing shows them.
    let listing = hookd.admin().get_ok("/v1/deliveries?limit=100").await;
    let owners: Vec<&Value> = listing["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| &d["owner"])
        .collect();
    assert!(owners.iter().all(|o| o.is_null()), "{owners:?}");
    let owned = hookd.admin().get_ok("/v1/deliveries?owner=cust-a").await;
    assert_eq!(
        owned["deliveries"].as_array().map(Vec::len),
        Some(0),
        "{owned}"
    );
    // Their attempt history too.
    for id in expected.keys() {
        let shown = hookd.admin().get_ok(&format!("/v1/deliveries/{id}")).await;
        let attempts = shown["attempt_history"].as_array().map_or(0, Vec::len);
        assert!(attempts >= 1, "{id} keeps its attempt: {shown}");
    }

    // The pending ones are delivered (retried now if not yet due), signed as before.
    let pending: Vec<&String> = expected
        .iter()
        .filter(|(_, (_, state))| state == "scheduled")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(pending.len(), 2);
    retry_now(
        &hookd,
        pending
            .iter()
            .copied()
            .filter(|id| after[*id].1 != "delivered"),
    )
    .await;
    let received = receiver.wait_for(2, Duration::from_secs(15)).await;
    let mut jobs = HashSet::new();
    for r in &received {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(&r.body);
        assert_eq!(
            r.header("x-abstrakt-signature"),
            hex::encode(mac.finalize().into_bytes()),
            "the converted event is signed with the subscription's secret"
        );
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        jobs.insert(body["request_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        jobs,
        HashSet::from(["job-1".to_string(), "job-2".to_string()])
    );
    wait_until(
        "both retried deliveries delivered",
        Duration::from_secs(10),
        || async {
            let listing = hookd
                .admin()
                .get_ok("/v1/deliveries?subscription=down")
                .await;
            states(&listing)
                .values()
                .all(|(_, state)| state == "delivered")
                .then_some(())
        },
    )
    .await;
}

/// A store of the embedded engines' second layout (events keyed by their hash), written on the
/// run's engine by the release before layout 3 (tests/fixtures/make-second-layout-store.sh):
/// the current binary converts it at its first start and says so; every delivery keeps its id
/// and state; each event is found again by its `(request_id, status)` (a repeat is a duplicate
/// answered with the id the old release gave, a changed body a conflict); the pending
/// deliveries are delivered with their event's body; a second start converts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_second_layout_is_converted_and_keeps_its_events() {
    if crate::support::embedded_only("it opens a store of the embedded engines' second layout") {
        return;
    }
    let engine = format!("{:?}", crate::support::engine::current()).to_lowercase();
    let fixtures = manifest_dir().join("tests/fixtures");
    let name = format!("store-second-layout-{engine}");
    let read = |suffix: &str| {
        std::fs::read_to_string(fixtures.join(format!("{name}{suffix}"))).expect("the fixture")
    };
    let before: Value = serde_json::from_str(&read(".deliveries.json")).expect("JSON");
    let accepted: Vec<Value> = read(".accepted.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a 202 answer"))
        .collect();
    assert_eq!(accepted.len(), 3, "the fixture holds three events");
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixtures.join(&name), &dir.path().join("db"));

    // `ok` as when the fixture was made (now unreachable); `down` at a receiver that answers.
    let receiver = TestReceiver::start().await;
    let extra = format!(
        "[[subscription]]\nid = \"ok\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\n\
         [[subscription]]\nid = \"down\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\nretry_schedule = [\"1h\"]\n",
        receiver.url()
    );
    // Past the default retention its finished deliveries would be swept at the first start.
    let retention = "retention = \"3650d\"";
    let hookd = HookdProcess::start_with_storage(dir.path(), retention, &extra).await;
    wait_until("the conversion logged", Duration::from_secs(10), || async {
        hookd
            .process
            .stderr()
            .contains("converted the events to the third layout")
            .then_some(())
    })
    .await;

    let (expected, after) = kept_as_before(&hookd, &before).await;

    // The idempotency check finds every converted event: the same event again is a duplicate
    // with the old release's id; another body under the same key is a conflict.
    for (n, answer) in accepted.iter().enumerate() {
        let job = format!("job-{}", n + 1);
        let event = fixture_event(&job, "");
        let (status, body) = hookd.admin().post("/v1/events", Some(event)).await;
        assert_eq!(status, 200, "{job}: {body}");
        assert_eq!(body["duplicate"], true, "{job}: {body}");
        assert_eq!(body["event_id"], answer["event_id"], "{job}: {body}");
        let changed = fixture_event(&job, "-changed");
        let (status, body) = hookd.admin().post("/v1/events", Some(changed)).await;
        assert_eq!(status, 409, "{job}: {body}");
        assert_eq!(body["event_id"], answer["event_id"], "{job}: {body}");
    }

    // The pending deliveries go out with their events' bodies (retried now if not yet due).
    retry_now(
        &hookd,
        expected
            .iter()
            .filter(|(id, (subscription, state))| {
                subscription == "down" && state == "scheduled" && after[*id].1 != "delivered"
            })
            .map(|(id, _)| id),
    )
    .await;
    let received = receiver.wait_for(3, Duration::from_secs(15)).await;
    let jobs: HashSet<String> = received
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            assert_eq!(
                body["result"]["items"][0]["url"],
                format!(
                    "https://cdn.example/{}.png",
                    body["request_id"].as_str().unwrap_or_default()
                ),
                "the stored body: {body}"
            );
            body["request_id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        jobs,
        HashSet::from(["job-1", "job-2", "job-3"].map(String::from))
    );

    // Converted once: the next start finds the layout's version and converts nothing.
    drop(hookd);
    let again = HookdProcess::start_with_storage(dir.path(), retention, &extra).await;
    assert!(
        !again.process.stderr().contains("third layout"),
        "{}",
        again.process.stderr_tail(2000)
    );
    let (status, body) = again
        .admin()
        .post("/v1/events", Some(fixture_event("job-1", "")))
        .await;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
}

/// The event tests/fixtures/make-second-layout-store.sh posted as `job`, its URL changed by
/// `suffix` (empty: the same event).
/// Asks hookd to attempt each of `ids` now (the admin API's retry), whatever its due time.
async fn retry_now<'a>(hookd: &HookdProcess, ids: impl Iterator<Item = &'a String>) {
    let client = reqwest::Client::new();
    for id in ids {
        let response = client
            .post(format!("http://{}/v1/deliveries/{id}/retry", hookd.api))
            .send()
            .await
            .expect("retry");
        assert!(response.status().is_success(), "retry {id}");
    }
}

fn fixture_event(job: &str, suffix: &str) -> Value {
    let mut event = serde_json::json!({
        "request_id": job,
        "status": "completed",
        "result": {"items": [{"url": format!("https://cdn.example/{job}{suffix}.png")}]},
    });
    if job == "job-3" {
        event["owner"] = "cust-a".into();
    }
    event
}

type States = HashMap<String, (String, String)>;

/// The fixture's six deliveries (`before`, as it listed them) and hookd's listing now: every
/// one under its old id and subscription, in its old state, or delivered since if it was
/// pending.
async fn kept_as_before(hookd: &HookdProcess, before: &Value) -> (States, States) {
    let expected = states(before);
    assert_eq!(expected.len(), 6, "the fixture holds six deliveries");
    let after = states(&hookd.admin().get_ok("/v1/deliveries?limit=100").await);
    assert_eq!(
        after.keys().collect::<HashSet<_>>(),
        expected.keys().collect::<HashSet<_>>(),
        "every delivery keeps its id"
    );
    for (id, (subscription, state)) in &expected {
        let (now_subscription, now_state) = &after[id];
        assert_eq!(now_subscription, subscription, "{id}");
        let pending_then_delivered = state == "scheduled" && now_state == "delivered";
        assert!(
            now_state == state || pending_then_delivered,
            "{id} was {state}, is {now_state}"
        );
    }
    (expected, after)
}

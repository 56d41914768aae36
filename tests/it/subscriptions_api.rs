//! Subscriptions as data: created through `POST /v1/subscriptions`, validated by the config
//! file's rules, applied at once, kept across restarts, listed by owner, deleted; the config
//! file's own subscriptions are read-only through the API.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::app::{spawn_app, TestApp};
use crate::support::receiver::TestReceiver;

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_created_through_the_api_receives_signed_deliveries_and_survives_a_restart()
{
    let from_file = TestReceiver::start().await;
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "[[subscription]]\nid = \"from-file\"\nurl = \"{}\"\nsecret = \"file-secret\"\nevents = [\"job.failed\"]\n",
        from_file.url()
    ))
    .await;

    let (status, created) = app.admin().call(
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({ "id": "acme-prod", "owner": "cust-1", "url": receiver.url(), "events": ["job.completed"] })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["managed_by"], "api");
    assert_eq!(created["owner"], "cust-1");

    // Shown again without its secret.
    let (status, shown) = app.admin().get("/v1/subscriptions/acme-prod").await;
    assert_eq!(status, 200);
    assert!(shown.get("secret").is_none(), "never shown again: {shown}");
    assert_eq!(shown["url"], receiver.url());

    // It applies at once: an event reaches it, signed with its secret.
    let (status, body) = app
        .post(&json!({ "request_id": "job-1", "status": "completed", "owner": "cust-1" }))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["deliveries"], 1,
        "only the API subscription wants job.completed"
    );
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        signature(&secret, &got[0].body)
    );

    // Listed by owner.
    let (_, mine) = app.admin().get("/v1/subscriptions?owner=cust-1").await;
    let ids: Vec<&str> = mine["subscriptions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme-prod"]);
    let (_, all) = app.admin().get("/v1/subscriptions").await;
    let file = all["subscriptions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["id"] == "from-file")
        .cloned()
        .expect("the file's subscription");
    assert_eq!(file["managed_by"], "config");

    // It survives a restart.
    let app = app.restart().await;
    let (status, shown) = app.admin().get("/v1/subscriptions/acme-prod").await;
    assert_eq!(status, 200, "{shown}");
    let (status, _) = app
        .post(&json!({ "request_id": "job-2", "status": "completed", "owner": "cust-1" }))
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(2, Duration::from_secs(10)).await;

    // Deleted, it gets nothing more; the file's one is read-only.
    let (status, body) = app
        .admin()
        .call(reqwest::Method::DELETE, "/v1/subscriptions/from-file", None)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = app
        .admin()
        .call(reqwest::Method::DELETE, "/v1/subscriptions/acme-prod", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.admin().get("/v1/subscriptions/acme-prod").await;
    assert_eq!(status, 404);
    let (status, body) = app
        .post(&json!({ "request_id": "job-3", "status": "completed", "owner": "cust-1" }))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        body["deliveries"], 0,
        "no subscription wants job.completed now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_validated_by_the_config_files_rules() {
    let app = spawn_app(
        "[[subscription]]\nid = \"taken\"\nurl = \"https://a.example/hook\"\nsecret = \"s\"\nevents = [\"*\"]\n",
    )
    .await;
    let create = |body: Value| {
        let app = &app;
        async move {
            app.admin()
                .call(reqwest::Method::POST, "/v1/subscriptions", Some(body))
                .await
        }
    };
    let cases = [
        (
            json!({ "url": "ftp://x.example/", "events": ["*"] }),
            422,
            "url",
        ),
        (
            json!({ "url": "http://10.1.2.3/hook", "events": ["*"] }),
            422,
            "url",
        ),
        (
            json!({ "url": "https://x.example/", "events": [] }),
            422,
            "events",
        ),
        (
            json!({ "url": "https://x.example/", "events": ["completed"] }),
            422,
            "events",
        ),
        (
            json!({ "url": "https://x.example/", "events": ["*"], "id": "Bad Id" }),
            422,
            "id",
        ),
        (
            json!({ "url": "https://x.example/", "events": ["*"], "max_in_flight": 0 }),
            422,
            "max_in_flight",
        ),
        (
            json!({ "url": "https://x.example/", "events": ["*"], "signature": "standard", "secret": "plain" }),
            422,
            "secret",
        ),
        (
            json!({ "url": "https://x.example/", "events": ["*"], "id": "taken" }),
            409,
            "id",
        ),
        (
            json!({ "url": "https://x.example/", "events": ["*"], "owner": "" }),
            422,
            "owner",
        ),
    ];
    for (body, want, field) in cases {
        let (status, answer) = create(body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (status, answer) =
        create(json!({ "url": "https://x.example/", "events": ["*"], "colour": "red" })).await;
    assert_eq!(status, 422, "unknown fields are refused: {answer}");
    // Nothing of the above was kept.
    let (_, all) = app.admin().get("/v1/subscriptions").await;
    assert_eq!(
        all["subscriptions"].as_array().map(Vec::len),
        Some(2),
        "taken and adhoc: {all}"
    );
    // A valid one gets a generated id.
    let (status, created) = create(json!({ "url": "https://x.example/", "events": ["*"] })).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("sub_")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_changed_and_its_secret_rotated_through_the_api() {
    let first = TestReceiver::start().await;
    let second = TestReceiver::start().await;
    let app = spawn_app(
        "[[subscription]]\nid = \"from-file\"\nurl = \"https://a.example/hook\"\nsecret = \"s\"\nevents = [\"job.failed\"]\n",
    )
    .await;
    let (status, created) = app.admin().call(
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({ "id": "moving", "url": first.url(), "events": ["job.completed"], "signature": "both" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let old_secret = created["secret"].as_str().expect("secret").to_string();

    // A change that breaks the rules is refused and changes nothing.
    let patch = |body: Value| {
        let app = &app;
        async move {
            app.admin()
                .call(
                    reqwest::Method::PATCH,
                    "/v1/subscriptions/moving",
                    Some(body),
                )
                .await
        }
    };
    let (status, answer) = patch(json!({ "url": "gopher://x.example/" })).await;
    assert_eq!(
        (status, answer["field"].clone()),
        (422, json!("url")),
        "{answer}"
    );
    let (status, answer) = patch(json!({ "owner": "" })).await;
    assert_eq!(
        (status, answer["field"].clone()),
        (422, json!("owner")),
        "{answer}"
    );
    let (status, answer) = patch(json!({ "secret": "nope" })).await;
    assert_eq!(status, 422, "the secret changes by rotation only: {answer}");
    let (status, answer) = app
        .admin()
        .call(
            reqwest::Method::PATCH,
            "/v1/subscriptions/from-file",
            Some(json!({ "url": second.url() })),
        )
        .await;
    assert_eq!(status, 409, "the config file's are read-only: {answer}");

    // The URL and owner change, at once.
    let (status, answer) = patch(json!({ "url": second.url(), "owner": "cust-9" })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["owner"], "cust-9");
    let (status, _) = app
        .post(&json!({ "request_id": "job-1", "status": "completed", "owner": "cust-9" }))
        .await;
    assert_eq!(status, 202);
    let got = second.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(first.count(), 0, "the old URL gets nothing");
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        signature(&old_secret, &got[0].body)
    );

    // Rotation: the old secret keeps signing X-Abstrakt-Signature (one signature) until the
    // switch; Standard Webhooks signs with both.
    let (status, rotated) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions/moving/rotate-secret",
            Some(json!({ "previous_expires_in": "1h" })),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"]
        .as_str()
        .expect("the new secret, shown once")
        .to_string();
    assert_ne!(new_secret, old_secret);
    assert!(rotated["previous_secret_expires"].as_str().is_some());
    let (_, shown) = app.admin().get("/v1/subscriptions/moving").await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let (status, _) = app
        .post(&json!({ "request_id": "job-2", "status": "completed", "owner": "cust-9" }))
        .await;
    assert_eq!(status, 202);
    let got = second.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[1].header("x-abstrakt-signature"),
        signature(&old_secret, &got[1].body)
    );
    let standard = got[1].header("webhook-signature");
    assert_eq!(
        standard.split(' ').count(),
        2,
        "both secrets sign during the rotation: {standard}"
    );

    // A test event reaches this subscription alone, though it asked for job.completed only,
    // and its delivery can be followed.
    let (status, sent) = app
        .admin()
        .call(reqwest::Method::POST, "/v1/subscriptions/moving/test", None)
        .await;
    assert_eq!(status, 202, "{sent}");
    let got = second.wait_for(3, Duration::from_secs(10)).await;
    let body: Value = serde_json::from_slice(&got[2].body).expect("JSON");
    assert_eq!(body["status"], "test");
    assert_eq!(body["request_id"], sent["request_id"]);
    assert_eq!(got[2].header("x-abstrakt-event"), "job.test");
    let delivery = sent["delivery_id"]
        .as_str()
        .expect("delivery_id")
        .to_string();
    let shown = crate::support::wait_until(
        "the test delivery delivered",
        Duration::from_secs(10),
        || async {
            let (_, d) = app.admin().get(&format!("/v1/deliveries/{delivery}")).await;
            (d["state"] == "delivered").then_some(d)
        },
    )
    .await;
    assert_eq!(shown["subscription"], "moving");
    let (status, _) = app
        .admin()
        .call(reqwest::Method::POST, "/v1/subscriptions/nobody/test", None)
        .await;
    assert_eq!(status, 404);
}

/// The seed page's flow: "add your endpoint URL, set a webhook secret, select the events" —
/// through the API — and the seed's own Express and Flask receivers verify what arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_created_through_the_api_satisfies_the_seed_receivers() {
    use crate::support::process::{SeedKind, SeedReceiver};
    const SECRET: &str = "the-customer-chose-this-secret";
    let (express, flask) = tokio::join!(
        SeedReceiver::start(SeedKind::Express, SECRET),
        SeedReceiver::start(SeedKind::Flask, SECRET)
    );
    // Quick retries: on a loaded machine a seed receiver (node, Python) may miss its first
    // request's timeout; what this test checks is the verdict on hookd's signature.
    let app = spawn_app("[delivery]\nretry_schedule = [\"0s\", \"1s\", \"2s\", \"4s\"]\n").await;
    for (id, receiver) in [("express", &express), ("flask", &flask)] {
        let (status, created) = app.admin().call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({ "id": id, "url": receiver.url(), "secret": SECRET, "events": ["job.completed", "job.failed"] })),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["secret"], SECRET);
    }
    let (status, body) = app
        .post(&json!({
            "request_id": "job-seed-1",
            "status": "completed",
            "result": { "items": [{ "url": "https://cdn.example/1.mp4", "content_type": "video/mp4" }] }
        }))
        .await;
    assert_eq!(status, 202, "{body}");
    for receiver in [&express, &flask] {
        let result = crate::support::wait_until(
            "the seed receiver's verdict",
            Duration::from_secs(30),
            || async { receiver.results().into_iter().next() },
        )
        .await;
        assert_eq!(
            result["status"], 200,
            "{:?} verifies the signature and answers 200: {result}",
            receiver.kind
        );
    }
}

/// `POST /v1/subscriptions` that must succeed: the subscription as created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_beyond_their_maximum_are_refused_naming_the_field() {
    let app = spawn_app("").await;
    create(
        &app,
        json!({ "id": "kept", "url": "https://x.example/hook", "events": ["*"] }),
    )
    .await;
    // Issue 28: this schedule was accepted, and its jitter panicked the attempt tasks.
    let cases = [
        ("retry_schedule", json!(["18446744073709551615s"])),
        ("retry_schedule", json!(["0s", "31d"])),
        ("timeout", json!("2h")),
        ("breaker_probe_interval", json!("31d")),
        ("disable_after", json!("18446744073709551615s")),
    ];
    for (field, value) in cases {
        assert_refused(&app, "kept", field, value, "longer than the most").await;
    }
    // The longest allowed are accepted.
    let (status, answer) = patch(
        &app,
        "kept",
        json!({ "retry_schedule": ["30d"], "timeout": "1h", "disable_after": "30d" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_subscription_past_the_bounds_waits_until_a_patch_brings_it_within() {
    let app = spawn_app("").await;
    // As a hookd from before the bounds would have stored it.
    let toml = "[[subscription]]\nid = \"old\"\nurl = \"https://x.example/hook\"\nsecret = \"s\"\n\
                events = [\"*\"]\nretry_schedule = [\"18446744073709551615s\"]\n";
    app.shared
        .store
        .put_subscription(hookd::store::StoredSubscription {
            id: "old".to_string(),
            owner: None,
            toml: toml.to_string(),
            created_ms: 1,
            updated_ms: 1,
        })
        .await
        .unwrap();
    let app = app.restart().await;
    assert!(app.shared.config().subscription("old").is_none());
    let (status, answer) = patch(&app, "old", json!({ "retry_schedule": ["1m"] })).await;
    assert_eq!(status, 200, "{answer}");
    let running = app.shared.config();
    let old = running.subscription("old").expect("in the running config");
    assert_eq!(old.policy.retry_schedule, [Duration::from_secs(60)]);
}

/// A subscription created with `field` = `value`, and `kept` changed to it, are both refused
/// with a 422 naming `field`, whose message contains `says`.
async fn assert_refused(app: &TestApp, kept: &str, field: &str, value: Value, says: &str) {
    let mut body = json!({ "url": "https://x.example/hook", "events": ["*"] });
    body[field] = value.clone();
    for (what, (status, answer)) in [
        (
            "create",
            app.admin()
                .call(reqwest::Method::POST, "/v1/subscriptions", Some(body))
                .await,
        ),
        ("change", patch(app, kept, json!({ field: value })).await),
    ] {
        assert_eq!(status, 422, "{what} {field} = {value}: {answer}");
        assert_eq!(answer["field"], field, "{what} {field} = {value}: {answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(error.contains(says), "{what} {field} = {value}: {answer}");
    }
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, created) = app
        .admin()
        .call(reqwest::Method::POST, "/v1/subscriptions", Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// `PATCH /v1/subscriptions/{id}` that must succeed: the breaker keys as changed.
async fn change_breaker(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, changed) = patch(app, id, body).await;
    assert_eq!(status, 200, "{changed}");
    breaker_settings(&changed)
}

async fn patch(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    app.admin()
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Some(body),
        )
        .await
}

/// The four circuit-breaker keys as the API shows them: counts, durations as written back.
fn settings(failures: u32, probe_interval: &str, after: &str, after_failures: u32) -> Value {
    json!({
        "breaker_failures": failures,
        "breaker_probe_interval": probe_interval,
        "disable_after": after,
        "disable_after_failures": after_failures,
    })
}

/// The four circuit-breaker keys of a subscription as the API shows them.
fn breaker_settings(shown: &Value) -> Value {
    json!({
        "breaker_failures": shown["breaker_failures"],
        "breaker_probe_interval": shown["breaker_probe_interval"],
        "disable_after": shown["disable_after"],
        "disable_after_failures": shown["disable_after_failures"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_settings_are_set_changed_and_removed_through_the_api_and_kept_across_a_restart() {
    let app = spawn_app(
        "[delivery]\nbreaker_failures = 7\nbreaker_probe_interval = \"45s\"\n\
         disable_after = \"2d\"\ndisable_after_failures = 100\n",
    )
    .await;
    let defaults = settings(7, "45s", "2days", 100);
    let created = create(
        &app,
        json!({
            "id": "guarded", "url": "https://x.example/hook", "events": ["*"],
            "breaker_failures": 3, "breaker_probe_interval": "1m",
            "disable_after": "5d", "disable_after_failures": 0,
        }),
    )
    .await;
    assert_eq!(
        breaker_settings(&created),
        settings(3, "1m", "5days", 0),
        "{created}"
    );
    // One that sets none shows [delivery]'s.
    let plain = create(
        &app,
        json!({ "id": "plain", "url": "https://x.example/hook", "events": ["*"] }),
    )
    .await;
    assert_eq!(breaker_settings(&plain), defaults, "{plain}");

    // Absent or null leaves a key as it is; a value changes it.
    let changed_set = settings(4, "1m", "5days", 12);
    assert_eq!(
        change_breaker(
            &app,
            "guarded",
            json!({ "breaker_failures": 4, "disable_after": null, "disable_after_failures": 12 }),
        )
        .await,
        changed_set
    );

    // Kept across a restart, as changed.
    let app = app.restart().await;
    let (status, shown) = app.admin().get("/v1/subscriptions/guarded").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(breaker_settings(&shown), changed_set, "{shown}");

    // "" removes a key: [delivery]'s applies again; 0 and "0s" mean never.
    assert_eq!(
        change_breaker(
            &app,
            "guarded",
            json!({ "breaker_failures": "", "breaker_probe_interval": "", "disable_after": "0s" }),
        )
        .await,
        settings(7, "45s", "0s", 12)
    );
    assert_eq!(
        change_breaker(
            &app,
            "guarded",
            json!({ "disable_after": "", "disable_after_failures": "" })
        )
        .await,
        defaults
    );
    let app = app.restart().await;
    let (_, shown) = app.admin().get("/v1/subscriptions/guarded").await;
    assert_eq!(
        breaker_settings(&shown),
        defaults,
        "removed for good: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_breaker_settings_are_refused_naming_the_field() {
    let app = spawn_app("").await;
    create(
        &app,
        json!({ "id": "kept", "url": "https://x.example/hook", "events": ["*"], "breaker_failures": 5 }),
    )
    .await;
    let cases = [
        ("breaker_failures", json!(-1)),
        ("breaker_failures", json!(2.5)),
        ("breaker_failures", json!("five")),
        ("breaker_failures", json!(5_000_000_000u64)),
        ("disable_after_failures", json!(true)),
        ("disable_after_failures", json!("3")),
        ("breaker_probe_interval", json!("soon")),
        ("breaker_probe_interval", json!(30)),
        ("disable_after", json!("5x")),
        ("disable_after", json!(["5d"])),
    ];
    for (field, value) in cases {
        assert_refused(&app, "kept", field, value, field).await;
    }
    // Nothing of the above was kept.
    let (_, all) = app.admin().get("/v1/subscriptions").await;
    assert_eq!(
        all["subscriptions"].as_array().map(Vec::len),
        Some(2),
        "kept and adhoc: {all}"
    );
    let (_, shown) = app.admin().get("/v1/subscriptions/kept").await;
    assert_eq!(shown["breaker_failures"], 5, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_set_through_the_api_opens_and_a_change_applies_at_once() {
    use crate::support::receiver::Reply;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let app =
        spawn_app("[delivery]\nretry_schedule = [\"300ms\", \"300ms\", \"300ms\", \"300ms\"]\n")
            .await;
    // Off by default ([delivery] sets no breaker); this one opens after 2 failures in a row
    // and, once open, probes again only an hour after a failure.
    let created = create(
        &app,
        json!({
            "id": "fragile", "url": receiver.url(), "events": ["*"],
            "breaker_failures": 2, "breaker_probe_interval": "1h",
        }),
    )
    .await;
    assert_eq!(created["breaker"], "closed", "{created}");
    let (status, body) = app
        .post(&json!({ "request_id": "fragile-1", "status": "completed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let shown = crate::support::wait_until(
        "the breaker open after 2 failures",
        Duration::from_secs(15),
        || async {
            let (_, shown) = app.admin().get("/v1/subscriptions/fragile").await;
            // The breaker moves before the outcome is stored: the count follows within ms.
            (shown["breaker"] == "open" && shown["consecutive_failures"] == 2).then_some(shown)
        },
    )
    .await;
    assert_eq!(shown["consecutive_failures"], 2, "{shown}");
    // Open, it holds the retry that is due 300 ms after the second failure.
    tokio::time::timeout(Duration::from_millis(1500), async {
        while receiver.count() == 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect_err("an attempt went out while the breaker was open");

    // Turned off through the API, the running breaker closes at once and the retries go on.
    let (status, changed) = patch(&app, "fragile", json!({ "breaker_failures": 0 })).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["breaker"], "closed", "{changed}");
    receiver.wait_for(3, Duration::from_secs(10)).await;
}

// ------------------------------------------------------------------ rotation in two steps

/// The real time plus a shift the test moves (ms), for grace periods.
struct Shifted(std::sync::atomic::AtomicU64);

impl hookd::clock::Clock for Shifted {
    fn now_ms(&self) -> u64 {
        hookd::clock::system_now_ms() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `POST /v1/subscriptions/{id}/{action}` with `body`.
async fn act(app: &TestApp, id: &str, action: &str, body: Option<Value>) -> (u16, Value) {
    app.admin()
        .call(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{id}/{action}"),
            body,
        )
        .await
}

/// Posts completed job `request_id`, and waits for `receiver` to print its RESULT line.
async fn delivered_to(
    app: &TestApp,
    receiver: &crate::support::process::SeedReceiver,
    request_id: &str,
) -> Value {
    // The seed's shape: its handler reads result.items[0].url of a completed job.
    let event = json!({
        "request_id": request_id,
        "status": "completed",
        "result": { "items": [{ "url": format!("https://cdn.example/{request_id}.mp4") }] },
    });
    let (status, body) = app.post(&event).await;
    assert_eq!(status, 202, "{body}");
    crate::support::wait_until(
        &format!("{request_id} at the Express receiver"),
        Duration::from_secs(15),
        || async {
            receiver.results().into_iter().find(|r| {
                r["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(&format!("\"{request_id}\"")))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_express_receiver_verifies_across_a_rotation_until_the_switch_and_after_it() {
    use crate::support::process::{SeedKind, SeedReceiver};
    const OLD: &str = "express-old-secret";
    let old = SeedReceiver::start(SeedKind::Express, OLD).await;
    let app = spawn_app("[delivery]\nretry_schedule = []\n").await;
    let (status, created) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({ "id": "rotating", "url": old.url(), "secret": OLD, "events": ["*"] })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        delivered_to(&app, &old, "before-rotation").await["status"],
        200
    );

    // Step one: the new secret is made; the receiver, which holds the old one, still verifies.
    let (status, rotated) = act(&app, "rotating", "rotate-secret", None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"]
        .as_str()
        .expect("the new secret")
        .to_string();
    assert_ne!(new, OLD);
    assert_eq!(
        rotated["rotation"]["x_abstrakt_signature"],
        "previous_secret"
    );
    for job in ["during-rotation-1", "during-rotation-2"] {
        let result = delivered_to(&app, &old, job).await;
        assert_eq!(
            result["status"], 200,
            "the old secret still verifies: {result}"
        );
    }
    let (status, again) = act(&app, "rotating", "rotate-secret", None).await;
    assert_eq!(
        status, 409,
        "a second rotation would drop the old secret: {again}"
    );

    // The customer deploys the new secret, then switches: the new secret alone signs.
    let updated = SeedReceiver::start(SeedKind::Express, &new).await;
    let (status, switched) = act(&app, "rotating", "finish-rotation", None).await;
    assert_eq!(status, 200, "{switched}");
    assert_eq!(switched["rotation"], Value::Null, "{switched}");
    let (status, moved) = app
        .admin()
        .call(
            reqwest::Method::PATCH,
            "/v1/subscriptions/rotating",
            Some(json!({ "url": updated.url() })),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let result = delivered_to(&app, &updated, "after-switch").await;
    assert_eq!(result["status"], 200, "the new secret verifies: {result}");
    let (status, answer) = act(&app, "rotating", "finish-rotation", None).await;
    assert_eq!(status, 409, "nothing left to finish: {answer}");
    assert!(
        old.results().iter().all(|r| r["status"] == 200),
        "the old receiver never refused a delivery: {:?}",
        old.results()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_switches_by_itself_when_its_grace_period_ends() {
    let receiver = TestReceiver::start().await;
    let clock = std::sync::Arc::new(Shifted(std::sync::atomic::AtomicU64::new(0)));
    let app = crate::support::app::spawn_app_with_clock("", clock.clone()).await;
    let (status, created) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({ "id": "graceful", "url": receiver.url(), "secret": "first", "events": ["*"] })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let body = Some(json!({ "secret": "second", "previous_expires_in": "1h" }));
    let (status, rotated) = act(&app, "graceful", "rotate-secret", body).await;
    assert_eq!(status, 200, "{rotated}");

    let send = |request_id: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(&json!({ "request_id": request_id, "status": "completed" }))
                .await;
            assert_eq!(status, 202, "{body}");
        }
    };
    send("in-grace").await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        signature("first", &got[0].body)
    );

    // An hour and a minute later by hookd's clock: the grace period is over.
    clock
        .0
        .store(61 * 60 * 1000, std::sync::atomic::Ordering::SeqCst);
    send("after-grace").await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[1].header("x-abstrakt-signature"),
        signature("second", &got[1].body)
    );
    let (_, shown) = app.admin().get("/v1/subscriptions/graceful").await;
    assert_eq!(shown["rotation"], Value::Null, "{shown}");
    let (status, answer) = act(&app, "graceful", "rotate-secret", None).await;
    assert_eq!(
        status, 200,
        "an expired rotation does not block the next: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_and_a_description_are_set_changed_cleared_and_checked_through_the_api() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "[[subscription]]\nid = \"from-file\"\nname = \"Billing sync\"\ndescription = \"Keeps invoices\\nin step\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"*\"]\n",
        receiver.url()
    ))
    .await;
    let admin = app.admin();
    let shown = admin.get_ok("/v1/subscriptions/from-file").await;
    assert_eq!(shown["name"], "Billing sync", "{shown}");
    assert_eq!(shown["description"], "Keeps invoices\nin step", "{shown}");

    let (status, created) = admin
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({ "id": "named", "name": "Nightly builds", "description": "Tells the build farm.",
                         "url": receiver.url(), "events": ["job.completed"] })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Nightly builds");
    assert_eq!(created["description"], "Tells the build farm.");

    let patch = |body: Value| {
        let admin = admin.clone();
        async move {
            admin
                .call(
                    reqwest::Method::PATCH,
                    "/v1/subscriptions/named",
                    Some(body),
                )
                .await
        }
    };
    let (status, changed) = patch(json!({ "name": "Nightly builds (EU)" })).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "Nightly builds (EU)");
    assert_eq!(changed["description"], "Tells the build farm.", "kept");
    let (status, cleared) = patch(json!({ "description": "" })).await;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared["description"].is_null(), "{cleared}");

    let long_name = "n".repeat(101);
    let long_description = "d".repeat(1001);
    for (body, field, says) in [
        (
            json!({ "name": long_name }),
            "name",
            "101 characters long; at most 100",
        ),
        (json!({ "name": "two\nlines" }), "name", "one line"),
        (json!({ "name": "bell\u{7}" }), "name", "control character"),
        (
            json!({ "description": long_description }),
            "description",
            "at most 1000",
        ),
        (
            json!({ "description": "nul\u{0}" }),
            "description",
            "control character",
        ),
    ] {
        let (status, refused) = patch(body.clone()).await;
        assert_eq!(status, 422, "{body}: {refused}");
        assert_eq!(refused["field"], field, "{refused}");
        assert!(
            refused["error"].as_str().unwrap_or("").contains(says),
            "{refused}"
        );
    }
    // 100 characters of any script are one name; what was refused changed nothing.
    let (status, fits) = patch(json!({ "name": "é".repeat(100) })).await;
    assert_eq!(status, 200, "{fits}");
    let (status, refused) = admin
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({ "name": "x\ty", "url": receiver.url(), "events": ["*"] })),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["field"], "name", "{refused}");

    // Stored as its table: the name survives a restart.
    let app = app.restart().await;
    let shown = app.admin().get_ok("/v1/subscriptions/named").await;
    assert_eq!(shown["name"], "é".repeat(100), "{shown}");
}

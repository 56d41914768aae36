//! Standard Webhooks signatures (`signature = "standard"` / `"both"`, secret rotation) checked
//! live by the reference Python library (`standardwebhooks` on PyPI, run by
//! tests/receivers/standard/app.py in the venv that scripts/test-deps.sh installs), and by
//! hookd's own signing functions through a Rust [`TestReceiver`].

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookd::config::{Config, ConfigError, Diagnostic};
use hookd::signing::{abstrakt_signature, standard_key, standard_signature};
use hookd::store::DeliveryState;
use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::{delivery_ids, delivery_toml, subscription_toml, wait_for_state};
use crate::support::process::{manifest_dir, ChildGuard};
use crate::support::receiver::{Received, TestReceiver};
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(10);

/// The secret of the Standard Webhooks reference test vector (see src/signing.rs).
const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The secret being rotated out.
const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A third key that signs nothing: a receiver with it must reject.
const OTHER_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn venv_python() -> std::path::PathBuf {
    manifest_dir().join("tests/receivers/flask/.venv/bin/python")
}

/// Fails (never skips) when the venv or the `standardwebhooks` package is missing.
fn require_standard_deps() {
    let python = venv_python();
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test-deps.sh first (it installs the venv with flask and standardwebhooks)",
        python.display()
    );
    let check = Command::new(&python)
        .args([
            "-c",
            "import flask, standardwebhooks; from standardwebhooks import Webhook",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        check.status.success(),
        "the venv lacks flask or standardwebhooks ({}): run scripts/test-deps.sh",
        String::from_utf8_lossy(&check.stderr).trim()
    );
}

/// tests/receivers/standard/app.py: verifies with `standardwebhooks.Webhook(secret).verify`.
struct StandardReceiver {
    port: u16,
    process: ChildGuard,
}

impl StandardReceiver {
    /// Starts the receiver with `secret`; it answers 503 to the first `fail_first` requests
    /// that verify, then 200. Waits for its `LISTENING <port>` line.
    async fn start(secret: &str, fail_first: u32) -> StandardReceiver {
        require_standard_deps();
        let root = manifest_dir();
        let mut command = Command::new(venv_python());
        command
            .arg(root.join("tests/receivers/standard/app.py"))
            .current_dir(&root)
            .env("STANDARD_WEBHOOK_SECRET", secret)
            .env("FAIL_FIRST", fail_first.to_string())
            .env("PORT", "0")
            .env("PYTHONUNBUFFERED", "1");
        let mut process = ChildGuard::spawn("standard receiver", command);
        let port = process.wait_listening("the standard receiver").await;
        StandardReceiver { port, process }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook", self.port)
    }

    /// Every `RESULT {json}` line so far.
    fn results(&self) -> Vec<Value> {
        self.process
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .map(|json| {
                serde_json::from_str(json).unwrap_or_else(|e| panic!("bad RESULT {json:?}: {e}"))
            })
            .collect()
    }

    /// Waits until at least `n` requests were answered; returns them all.
    async fn wait_results(&self, n: usize) -> Vec<Value> {
        wait_until(
            &format!("{n} RESULT lines from the standard receiver"),
            DEADLINE,
            || async {
                let results = self.results();
                (results.len() >= n).then_some(results)
            },
        )
        .await
    }
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// An event whose body exercises the canonical form (unicode, escapes, numbers).
fn rich_event(request_id: &str) -> Value {
    json!({
        "request_id": request_id,
        "status": "completed",
        "result": {
            "items": [{ "url": "https://cdn.example/a b.png", "content_type": "image/png" }],
            "caption": "caf\u{e9} \u{1f600} \u{2028} tab\t quote\" back\\ nul\u{0}"
        },
        "metrics": { "inference_time": 45.2, "queue_time": 2.1, "big": 1e21 },
        "timestamp": "2025-01-12T10:30:00Z"
    })
}

/// Posts `event`; returns its stored body and its delivery ids by subscription.
async fn post(app: &TestApp, event: &Value) -> (Vec<u8>, HashMap<String, String>) {
    let (status, answer) = app.post(event).await;
    assert_eq!(status, 202, "{answer}");
    let event_id = answer["event_id"].as_str().expect("event_id");
    let body = app
        .shared
        .store
        .event_body(event_id)
        .await
        .expect("read event body")
        .expect("event body stored")
        .to_vec();
    let mut by_subscription = HashMap::new();
    for id in delivery_ids(app, event_id).await {
        let d = app
            .shared
            .store
            .delivery(&id)
            .await
            .expect("read delivery")
            .expect("delivery stored");
        by_subscription.insert(d.subscription, id);
    }
    (body, by_subscription)
}

/// The `v1,<base64>` entries of a `webhook-signature` header.
fn signatures(header: &str) -> Vec<&str> {
    let parts: Vec<&str> = header.split(' ').collect();
    for part in &parts {
        assert!(
            part.starts_with("v1,") && part.len() > 3,
            "not a v1 signature: {part:?} in {header:?}"
        );
    }
    parts
}

/// Checks a Rust receiver's request against hookd's own signing functions.
fn check_standard_headers(got: &Received, keys: &[&str], body: &[u8], started: i64) {
    let id = got.header("webhook-id");
    assert!(!id.is_empty(), "no webhook-id: {:?}", got.headers);
    assert_eq!(id, got.header("x-abstrakt-delivery"));
    let timestamp: i64 = got
        .header("webhook-timestamp")
        .parse()
        .unwrap_or_else(|e| panic!("webhook-timestamp is not an integer: {e}"));
    assert!(
        (started - 1..=unix_now() + 1).contains(&timestamp),
        "webhook-timestamp {timestamp} is not the send time (test ran {started}..{})",
        unix_now()
    );
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| standard_key(k).unwrap()).collect();
    assert_eq!(
        got.header("webhook-signature"),
        standard_signature(&keys, id, timestamp, body)
    );
    assert_eq!(
        signatures(got.header("webhook-signature")).len(),
        keys.len()
    );
}

/// Checks one RESULT of the Python receiver: verified or not, and the timestamp.
fn check_result(result: &Value, status: u64, delivery_id: &str, started: i64) {
    assert_eq!(result["status"], status, "{result}");
    assert_eq!(result["webhook_id"], delivery_id, "{result}");
    assert_eq!(result["delivery"], delivery_id, "{result}");
    let timestamp: i64 = result["webhook_timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("webhook-timestamp is not an integer: {result}"));
    let received = result["received_at"].as_f64().expect("received_at");
    assert!(
        (timestamp as f64 - received).abs() <= 3.0,
        "webhook-timestamp {timestamp} is not within 3s of the arrival {received}: {result}"
    );
    assert!(
        (started - 1..=unix_now() + 1).contains(&timestamp),
        "webhook-timestamp {timestamp} is outside the test's run ({started}..): {result}"
    );
}

fn subscription(id: &str, url: &str, secret: &str, schedule: &str, extra: &str) -> String {
    subscription_toml(
        id,
        url,
        secret,
        &["*"],
        &format!("retry_schedule = {schedule}\n{extra}"),
    )
}

#[tokio::test]
async fn standard_deliveries_verify_with_the_reference_library_and_carry_no_abstrakt_signature() {
    let started = unix_now();
    let good = StandardReceiver::start(NEW_SECRET, 0).await;
    let wrong = StandardReceiver::start(OTHER_SECRET, 0).await;
    let config = delivery_toml(&["0s"], "")
        + &subscription(
            "std",
            &good.url(),
            NEW_SECRET,
            "[\"0s\"]",
            "signature = \"standard\"",
        )
        // The control: the same deliveries, checked with a key hookd does not sign with.
        + &subscription(
            "std-wrong",
            &wrong.url(),
            NEW_SECRET,
            "[]",
            "signature = \"standard\"",
        );
    let app = spawn_app(&config).await;

    let (body, ids) = post(&app, &rich_event("std-1")).await;
    let delivered = wait_for_state(&app, &ids["std"], DeliveryState::Delivered, DEADLINE).await;
    assert_eq!(delivered.attempts, 1);
    let dead = wait_for_state(&app, &ids["std-wrong"], DeliveryState::Dead, DEADLINE).await;
    assert_eq!(dead.attempts, 1);

    let results = good.wait_results(1).await;
    assert_eq!(results.len(), 1, "{results:?}");
    let result = &results[0];
    check_result(result, 200, &ids["std"], started);
    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(
        result["abstrakt_signature"],
        Value::Null,
        "signature = \"standard\" must not send X-Abstrakt-Signature: {result}"
    );
    assert_eq!(
        signatures(result["webhook_signature"].as_str().expect("signature")).len(),
        1
    );
    assert_eq!(
        result["body"].as_str().expect("body").as_bytes(),
        &body[..],
        "the receiver got other bytes than the stored body"
    );

    let rejected = wrong.wait_results(1).await;
    check_result(&rejected[0], 401, &ids["std-wrong"], started);
    assert!(
        rejected[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("No matching signature")),
        "{}",
        rejected[0]
    );
}

#[tokio::test]
async fn both_sends_abstrakt_and_standard_signatures_that_agree() {
    let started = unix_now();
    let python = StandardReceiver::start(NEW_SECRET, 0).await;
    let rust = TestReceiver::start().await;
    let config = delivery_toml(&["0s"], "")
        + &subscription(
            "py",
            &python.url(),
            NEW_SECRET,
            "[\"0s\"]",
            "signature = \"both\"",
        )
        + &subscription(
            "rs",
            &rust.url(),
            NEW_SECRET,
            "[\"0s\"]",
            "signature = \"both\"",
        );
    let app = spawn_app(&config).await;

    let (body, ids) = post(&app, &rich_event("both-1")).await;
    wait_for_state(&app, &ids["py"], DeliveryState::Delivered, DEADLINE).await;
    wait_for_state(&app, &ids["rs"], DeliveryState::Delivered, DEADLINE).await;

    // The whole whsec_ string, as UTF-8 bytes, keys X-Abstrakt-Signature (what the seed
    // receivers compute), not the decoded Standard Webhooks key.
    let abstrakt = abstrakt_signature(NEW_SECRET.as_bytes(), &body);
    let results = python.wait_results(1).await;
    assert_eq!(results.len(), 1, "{results:?}");
    check_result(&results[0], 200, &ids["py"], started);
    assert_eq!(results[0]["abstrakt_signature"], abstrakt, "{}", results[0]);
    assert_eq!(results[0]["body"].as_str().unwrap().as_bytes(), &body[..]);

    let got = rust.wait_for(1, DEADLINE).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], &body[..]);
    assert_eq!(got[0].header("x-abstrakt-signature"), abstrakt);
    assert_ne!(
        abstrakt,
        abstrakt_signature(&standard_key(NEW_SECRET).unwrap(), &body),
        "the two key readings must differ for this check to mean anything"
    );
    assert_eq!(got[0].header("webhook-id"), ids["rs"]);
    check_standard_headers(&got[0], &[NEW_SECRET], &body, started);
}

/// One subscription per receiver, all with `signature = "both"`, `secret = NEW_SECRET` and
/// `previous_secret = OLD_SECRET` until `expires`.
fn rotation_config(urls: &[(&str, String, &str)], expires: &str) -> String {
    let mut config = delivery_toml(&["0s"], "");
    for (id, url, schedule) in urls {
        config += &subscription(
            id,
            url,
            NEW_SECRET,
            schedule,
            &format!(
                "signature = \"both\"\nprevious_secret = {OLD_SECRET:?}\nprevious_secret_expires = {expires:?}"
            ),
        );
    }
    config
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("valid time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

#[tokio::test]
async fn during_a_rotation_both_secrets_verify() {
    let started = unix_now();
    let old = StandardReceiver::start(OLD_SECRET, 0).await;
    let new = StandardReceiver::start(NEW_SECRET, 0).await;
    let rust = TestReceiver::start().await;
    let expires = rfc3339(started + 86_400);
    let config = rotation_config(
        &[
            ("old", old.url(), "[\"0s\"]"),
            ("new", new.url(), "[\"0s\"]"),
            ("rs", rust.url(), "[\"0s\"]"),
        ],
        &expires,
    );
    let app = spawn_app(&config).await;

    let (body, ids) = post(&app, &rich_event("rotate-1")).await;
    for sub in ["old", "new", "rs"] {
        let d = wait_for_state(&app, &ids[sub], DeliveryState::Delivered, DEADLINE).await;
        assert_eq!(d.attempts, 1, "{sub}: {d:?}");
    }
    for (sub, receiver) in [("old", &old), ("new", &new)] {
        let results = receiver.wait_results(1).await;
        assert_eq!(results.len(), 1, "{sub}: {results:?}");
        check_result(&results[0], 200, &ids[sub], started);
        let header = results[0]["webhook_signature"].as_str().expect("signature");
        assert_eq!(signatures(header).len(), 2, "{sub}: {header:?}");
        assert_eq!(
            results[0]["abstrakt_signature"],
            abstrakt_signature(OLD_SECRET.as_bytes(), &body),
            "{sub}: X-Abstrakt-Signature (one signature) keeps the previous secret"
        );
    }

    let got = rust.wait_for(1, DEADLINE).await;
    check_standard_headers(&got[0], &[NEW_SECRET, OLD_SECRET], &body, started);
    let header = got[0].header("webhook-signature");
    let id = got[0].header("webhook-id");
    let timestamp: i64 = got[0].header("webhook-timestamp").parse().unwrap();
    let parts = signatures(header);
    assert_eq!(
        parts[0],
        standard_signature(&[standard_key(NEW_SECRET).unwrap()], id, timestamp, &body),
        "the newest key signs first"
    );
    assert_eq!(
        parts[1],
        standard_signature(&[standard_key(OLD_SECRET).unwrap()], id, timestamp, &body)
    );
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        abstrakt_signature(OLD_SECRET.as_bytes(), &body)
    );
    assert_ne!(
        got[0].header("x-abstrakt-signature"),
        abstrakt_signature(NEW_SECRET.as_bytes(), &body)
    );
}

#[tokio::test]
async fn after_a_rotation_expires_only_the_new_secret_verifies() {
    let started = unix_now();
    let old = StandardReceiver::start(OLD_SECRET, 0).await;
    let new = StandardReceiver::start(NEW_SECRET, 0).await;
    let rust = TestReceiver::start().await;
    let config = rotation_config(
        &[
            ("old", old.url(), "[]"),
            ("new", new.url(), "[\"0s\"]"),
            ("rs", rust.url(), "[\"0s\"]"),
        ],
        &rfc3339(started - 3600),
    );
    let app = spawn_app(&config).await;

    let (body, ids) = post(&app, &rich_event("rotated-1")).await;
    let dead = wait_for_state(&app, &ids["old"], DeliveryState::Dead, DEADLINE).await;
    assert_eq!(dead.attempts, 1);
    wait_for_state(&app, &ids["new"], DeliveryState::Delivered, DEADLINE).await;
    wait_for_state(&app, &ids["rs"], DeliveryState::Delivered, DEADLINE).await;

    let rejected = old.wait_results(1).await;
    check_result(&rejected[0], 401, &ids["old"], started);
    assert_eq!(
        signatures(rejected[0]["webhook_signature"].as_str().unwrap()).len(),
        1,
        "{}",
        rejected[0]
    );
    let accepted = new.wait_results(1).await;
    check_result(&accepted[0], 200, &ids["new"], started);
    assert_eq!(
        signatures(accepted[0]["webhook_signature"].as_str().unwrap()).len(),
        1
    );

    let got = rust.wait_for(1, DEADLINE).await;
    check_standard_headers(&got[0], &[NEW_SECRET], &body, started);
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        abstrakt_signature(NEW_SECRET.as_bytes(), &body)
    );
}

#[tokio::test]
async fn webhook_id_is_the_delivery_id_on_every_retry() {
    let started = unix_now();
    // 503 to the first two requests that verify, 200 to the third.
    let receiver = StandardReceiver::start(NEW_SECRET, 2).await;
    let config = delivery_toml(&["0s"], "")
        + &subscription(
            "std",
            &receiver.url(),
            NEW_SECRET,
            "[\"0s\", \"0s\", \"0s\"]",
            "signature = \"standard\"",
        );
    let app = spawn_app(&config).await;

    let (body, ids) = post(&app, &rich_event("retry-1")).await;
    let delivered = wait_for_state(&app, &ids["std"], DeliveryState::Delivered, DEADLINE).await;
    assert_eq!(delivered.attempts, 3);
    let results = receiver.wait_results(3).await;
    assert_eq!(results.len(), 3, "{results:?}");
    for (i, (result, status)) in results.iter().zip([503, 503, 200]).enumerate() {
        check_result(result, status, &ids["std"], started);
        assert_eq!(result["error"], Value::Null, "attempt {}: {result}", i + 1);
        assert_eq!(result["attempt"], (i + 1).to_string(), "{result}");
        assert_eq!(result["body"].as_str().unwrap().as_bytes(), &body[..]);
    }
}

fn config_errors(text: &str) -> Vec<Diagnostic> {
    match Config::from_toml(text, "standard.toml") {
        Err(ConfigError::Invalid(d)) => d,
        other => panic!("expected a config error, got {other:?}\n{text}"),
    }
}

#[test]
fn standard_signatures_need_whsec_secrets() {
    let first = "[[subscription]]\nid = \"plain\"\nurl = \"https://a.example.invalid/\"\nsecret = \"not-whsec\"\nevents = [\"*\"]\n\n";
    for scheme in ["standard", "both"] {
        for (secret, hint) in [
            ("plain-secret", "whsec_"),
            ("whsec_not base64!", "base64"),
            ("whsec_", "empty"),
        ] {
            let text = format!(
                "{first}[[subscription]]\nid = \"std\"\nurl = \"https://b.example.invalid/\"\nsecret = {secret:?}\nevents = [\"*\"]\nsignature = \"{scheme}\"\n"
            );
            let d = config_errors(&text);
            assert_eq!(d.len(), 1, "{scheme} {secret}: {d:?}");
            assert_eq!(d[0].key, "subscription[1].secret", "{d:?}");
            assert_eq!(d[0].line, 10, "{d:?}");
            assert!(
                d[0].message.contains("whsec_") && d[0].message.contains(hint),
                "{scheme} {secret}: {}",
                d[0].message
            );
            assert!(
                !d[0].to_string().contains(secret) || secret == "whsec_",
                "the error shows the secret: {}",
                d[0]
            );
        }
    }
    // A non-whsec previous_secret is named as such.
    let text = format!(
        "{first}[[subscription]]\nid = \"std\"\nurl = \"https://b.example.invalid/\"\nsecret = {NEW_SECRET:?}\nevents = [\"*\"]\nsignature = \"standard\"\nprevious_secret = \"old-plain\"\nprevious_secret_expires = \"2030-01-01T00:00:00Z\"\n"
    );
    let d = config_errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].line, d[0].key.as_str()),
        (13, "subscription[1].previous_secret")
    );
    // The controls: a whsec_ secret is valid, and a plain one is fine without Standard Webhooks.
    let text = format!(
        "{first}[[subscription]]\nid = \"std\"\nurl = \"https://b.example.invalid/\"\nsecret = {NEW_SECRET:?}\nevents = [\"*\"]\nsignature = \"standard\"\n"
    );
    let config = Config::from_toml(&text, "standard.toml").expect("whsec_ secret is valid");
    assert_eq!(config.subscriptions.len(), 2);
    assert_eq!(
        config.subscriptions[1].signing_keys(0).standard,
        [standard_key(NEW_SECRET).unwrap()]
    );
    assert_eq!(config.subscriptions[1].signing_keys(0).abstrakt, None);
    assert!(config.subscriptions[0].signing_keys(0).standard.is_empty());
}

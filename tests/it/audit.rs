//! The audit log (`GET /v1/audit`, `hookd audit`): every change made through the admin API is
//! found there with the name of the token that made it, newest first, filtered and paged as
//! the other listings are; no secret is ever in it. The dashboard's and portals' changes are
//! tested in `ui/audit.rs`.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::admin::Admin;
use crate::support::app::{spawn_app_full, TestApp};
use crate::support::cli::hookd;
use crate::support::events::subscription_toml;
use crate::support::receiver::TestReceiver;
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(10);
const TOKENS: &str = r#"tokens = [{ secret = "ops-tok", scopes = ["admin"], name = "ops" }, { secret = "ci-tok", scopes = ["admin", "ingest"], name = "ci" }, "plain-tok"]"#;

/// An in-process hookd with [`TOKENS`], one config subscription `cfg` to `receiver`, one
/// attempt per delivery.
async fn spawn(receiver: &TestReceiver) -> TestApp {
    let subscription = subscription_toml("cfg", &receiver.url(), "cfg-secret", &["*"], "");
    spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n{TOKENS}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [storage]\npath = {store}\n\n[delivery]\nretry_schedule = []\n\n{subscription}"
        )
    })
    .await
}

fn as_token(app: &TestApp, token: &str) -> Admin {
    app.admin().token(Some(token))
}

/// `method path` as `admin`, which must answer `expected`; the answer.
async fn expect(
    admin: &Admin,
    method: Method,
    path: &str,
    body: Option<Value>,
    expected: u16,
) -> Value {
    let (status, answer) = admin.call(method.clone(), path, body).await;
    assert_eq!(status, expected, "{method} {path}: {answer}");
    answer
}

/// Every entry `GET /v1/audit?{query}` lists, following the cursors, `page` at a time.
async fn entries(admin: &Admin, query: &str, page: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/audit?{query}&limit={page}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let answer = admin.get_ok(&path).await;
        let items = answer["entries"].as_array().expect("entries").clone();
        assert!(items.len() <= page, "{answer}");
        all.extend(items);
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
    panic!("the audit listing never ended");
}

/// `(actor, action, object)` of each entry.
fn summary(entries: &[Value]) -> Vec<(String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    entries
        .iter()
        .map(|e| (s(&e["actor"]), s(&e["action"]), s(&e["object"])))
        .collect()
}

fn triple(actor: &str, action: &str, object: &str) -> (String, String, String) {
    (actor.into(), action.into(), object.into())
}

/// A delivery of `cfg` made by a test event, once finished: its id.
async fn finished_test_delivery(ci: &Admin) -> String {
    let sent = expect(ci, Method::POST, "/v1/subscriptions/cfg/test", None, 202).await;
    let id = sent["delivery_id"]
        .as_str()
        .expect("delivery_id")
        .to_string();
    wait_until("the test delivery to finish", DEADLINE, || async {
        let d = ci.get_ok(&format!("/v1/deliveries/{id}")).await;
        (d["state"] == "delivered" || d["state"] == "dead").then_some(())
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_api_change_is_in_the_audit_log_with_its_tokens_name() {
    let receiver = TestReceiver::start().await;
    let app = spawn(&receiver).await;
    let (ops, ci, plain) = (
        as_token(&app, "ops-tok"),
        as_token(&app, "ci-tok"),
        as_token(&app, "plain-tok"),
    );
    let created_secret = "acme-first-secret-5f1e";
    let body = json!({ "id": "acme-sub", "owner": "acme", "url": receiver.url(), "events": ["*"], "secret": created_secret });
    expect(&ops, Method::POST, "/v1/subscriptions", Some(body), 201).await;
    let patch = json!({ "url": format!("{}/v2", receiver.url()), "events": ["job.completed"] });
    expect(
        &ops,
        Method::PATCH,
        "/v1/subscriptions/acme-sub",
        Some(patch),
        200,
    )
    .await;
    expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/acme-sub/pause",
        None,
        200,
    )
    .await;
    expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/acme-sub/resume",
        None,
        200,
    )
    .await;
    expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/acme-sub/enable",
        None,
        200,
    )
    .await;
    let rotated = expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/acme-sub/rotate-secret",
        None,
        200,
    )
    .await;
    let new_secret = rotated["secret"]
        .as_str()
        .expect("the new secret")
        .to_string();
    expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/acme-sub/finish-rotation",
        None,
        200,
    )
    .await;
    let delivery = finished_test_delivery(&ci).await;
    expect(
        &ci,
        Method::POST,
        &format!("/v1/deliveries/{delivery}/retry"),
        None,
        202,
    )
    .await;
    let bulk = json!({ "subscription": "cfg", "since": "2020-01-01T00:00:00Z" });
    expect(&ci, Method::POST, "/v1/deliveries/retry", Some(bulk), 202).await;
    expect(
        &plain,
        Method::POST,
        "/v1/portal-links",
        Some(json!({ "owner": "acme" })),
        201,
    )
    .await;
    expect(
        &ops,
        Method::DELETE,
        "/v1/subscriptions/acme-sub",
        None,
        204,
    )
    .await;
    expect(&ci, Method::DELETE, "/v1/owners/globex", None, 200).await;
    // Refused changes change nothing and are not recorded.
    expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/nope/pause",
        None,
        404,
    )
    .await;
    expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/nope/finish-rotation",
        None,
        404,
    )
    .await;

    let log = entries(&ops, "", 1000).await;
    assert_eq!(
        summary(&log),
        vec![
            triple("ci", "owner_erased", ""),
            triple("ops", "deleted", "acme-sub"),
            triple("token-3", "portal_link_created", "acme"),
            triple("ci", "retried", "cfg"),
            triple("ci", "retried", &delivery),
            triple("ci", "test_sent", "cfg"),
            triple("ops", "rotation_finished", "acme-sub"),
            triple("ops", "secret_rotated", "acme-sub"),
            triple("ops", "enabled", "acme-sub"),
            triple("ops", "resumed", "acme-sub"),
            triple("ops", "paused", "acme-sub"),
            triple("ops", "updated", "acme-sub"),
            triple("ops", "created", "acme-sub"),
        ],
        "{log:#?}"
    );
    let by_action = |action: &str| {
        log.iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} entry"))
            .clone()
    };
    assert_eq!(by_action("created")["owner"], "acme");
    assert_eq!(by_action("created")["kind"], "subscription");
    assert_eq!(by_action("updated")["detail"], "changed: events, url");
    assert_eq!(by_action("deleted")["owner"], "acme", "the owner it had");
    assert_eq!(by_action("deleted")["subscription"], "acme-sub");
    assert_eq!(
        by_action("enabled")["detail"],
        "it was not disabled: nothing changed"
    );
    let retried = log
        .iter()
        .find(|e| e["object"] == delivery.as_str())
        .expect("retry");
    assert_eq!(retried["kind"], "delivery");
    assert_eq!(retried["subscription"], "cfg");
    assert!(
        log[3]["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 dead deliveries since")
            || log[3]["detail"]
                .as_str()
                .unwrap()
                .starts_with("0 dead deliveries since"),
        "{}",
        log[3]
    );
    assert_eq!(
        log[0]["detail"],
        "0 subscriptions, 0 events, 0 deliveries removed"
    );
    let text = serde_json::to_string(&log).unwrap();
    for secret in [
        created_secret,
        new_secret.as_str(),
        "ops-tok",
        "ci-tok",
        "plain-tok",
    ] {
        assert!(
            !text.contains(secret),
            "a secret in the audit log: {secret}"
        );
    }
    // Every entry has a time, newest first.
    let times: Vec<&str> = log.iter().map(|e| e["at"].as_str().expect("at")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // The ingest scope does not read the log.
    let ingest_only = app.admin().token(Some("ingest-none"));
    let (status, _) = ingest_only.get("/v1/audit").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_listing_filters_pages_and_refuses_bad_filters() {
    let receiver = TestReceiver::start().await;
    let app = spawn(&receiver).await;
    let (ops, ci) = (as_token(&app, "ops-tok"), as_token(&app, "ci-tok"));
    for (id, owner) in [("a-sub", "acme"), ("g-sub", "globex")] {
        let body = json!({ "id": id, "owner": owner, "url": receiver.url(), "events": ["*"] });
        expect(&ops, Method::POST, "/v1/subscriptions", Some(body), 201).await;
    }
    let before_pauses = ops.get_ok("/v1/audit?limit=1").await["entries"][0]["at"]
        .as_str()
        .expect("at")
        .to_string();
    for id in ["a-sub", "g-sub"] {
        expect(
            &ci,
            Method::POST,
            &format!("/v1/subscriptions/{id}/pause"),
            None,
            200,
        )
        .await;
    }
    let all = entries(&ops, "", 1000).await;
    assert_eq!(all.len(), 4);
    for page in [1, 3] {
        assert_eq!(
            entries(&ops, "", page).await,
            all,
            "pages of {page} cover each once"
        );
    }
    let objects = |list: Vec<Value>| {
        summary(&list)
            .into_iter()
            .map(|(a, b, c)| format!("{a} {b} {c}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        objects(entries(&ops, "subscription=a-sub", 10).await),
        ["ci paused a-sub", "ops created a-sub"]
    );
    assert_eq!(
        objects(entries(&ops, "owner=globex", 10).await),
        ["ci paused g-sub", "ops created g-sub"]
    );
    assert_eq!(
        objects(entries(&ops, "actor=ci&owner=acme", 10).await),
        ["ci paused a-sub"]
    );
    assert_eq!(
        objects(entries(&ops, "actor=nobody", 10).await),
        Vec::<String>::new()
    );
    let since = format!("since={}", before_pauses.replace(':', "%3A"));
    let after_first = objects(entries(&ops, &since, 10).await);
    assert!(
        after_first.len() >= 2
            && after_first
                .iter()
                .take(2)
                .all(|e| e.starts_with("ci paused")),
        "{after_first:?}"
    );
    assert!(entries(&ops, "since=2999-01-01T00:00:00Z", 10)
        .await
        .is_empty());
    assert_eq!(
        entries(&ops, "until=2000-01-01T00:00:00Z", 10).await.len(),
        0
    );

    // Erasing globex takes its entries with it; the erasure's own names no owner.
    expect(&ops, Method::DELETE, "/v1/owners/globex", None, 200).await;
    let left = entries(&ops, "", 100).await;
    assert_eq!(
        objects(left.clone()),
        ["ops owner_erased ", "ci paused a-sub", "ops created a-sub"]
    );
    assert!(
        !serde_json::to_string(&left).unwrap().contains("globex"),
        "{left:?}"
    );
    assert_eq!(left[0]["owner"], Value::Null);
    assert_eq!(
        left[0]["detail"],
        "1 subscriptions, 0 events, 0 deliveries removed"
    );

    for (query, names) in [
        ("since=yesterday", "since"),
        ("until=12", "until"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV", "cursor"),
        ("owner=", "owner"),
        ("colour=blue", "colour"),
    ] {
        let (status, answer) = ops.get(&format!("/v1/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{query}: {message}");
    }
}

fn write_cli_config(dir: &Path, app: &TestApp) -> String {
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "[api]\nlisten = \"{}\"\n{TOKENS}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n",
            app.api,
            dir.join("unused-db").display().to_string()
        ),
    )
    .expect("write the CLI's config");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookd_audit_prints_the_log_as_a_table_and_as_json() {
    let receiver = TestReceiver::start().await;
    let app = spawn(&receiver).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_cli_config(dir.path(), &app);
    // The CLI takes the config's first admin token: "ops".
    let paused = hookd(
        &["subscriptions", "pause", "cfg", "--config", &config],
        None,
    )
    .await;
    paused.ok();
    let listed = hookd(
        &["audit", "--config", &config, "--json", "--actor", "ops"],
        None,
    )
    .await;
    let value = listed.json();
    assert_eq!(
        summary(value["entries"].as_array().expect("entries")),
        vec![triple("ops", "paused", "cfg")]
    );
    let table = hookd(
        &["audit", "--config", &config, "--subscription", "cfg"],
        None,
    )
    .await;
    let text = table.ok();
    let header = text.lines().next().unwrap_or_default();
    for column in ["AT", "ACTOR", "ACTION", "OBJECT", "DETAIL"] {
        assert!(header.contains(column), "{text}");
    }
    assert!(
        text.contains("ops") && text.contains("paused") && text.contains("1 entry"),
        "{text}"
    );
    let refused = hookd(&["audit", "--config", &config, "--since", "soon"], None).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("since"), "{refused:?}");
}

/// The store cannot keep an entry (PostgreSQL's table is gone for a moment): the change stands,
/// and its answer says that it is not in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_entry_cannot_be_kept_stands_and_its_answer_says_so() {
    use crate::support::pg;
    if pg::unavailable() {
        return;
    }
    let db = pg::create("audit-fail").await;
    let receiver = TestReceiver::start().await;
    let subscription = subscription_toml("cfg", &receiver.url(), "cfg-secret", &["*"], "");
    let url = db.url();
    let app = spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n{TOKENS}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [storage]\nengine = \"postgres\"\nurl = {url:?}\npath = {store}\n\n{subscription}"
        )
    })
    .await;
    let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
        .batch_execute("ALTER TABLE hookd_audit RENAME TO hookd_audit_away")
        .await
        .expect("take the audit table away");
    let ops = as_token(&app, "ops-tok");
    let answer = ops
        .send(Method::POST, "/v1/subscriptions/cfg/pause", None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.header("hookd-audit").as_deref(),
        Some("not-recorded")
    );
    let body = answer.json();
    assert_eq!(body["paused"], true, "{body}");
    assert!(
        body["audit"]
            .as_str()
            .unwrap_or_default()
            .starts_with("not recorded"),
        "{body}"
    );
    assert_eq!(
        ops.get_ok("/v1/subscriptions/cfg").await["paused"],
        true,
        "the change stands"
    );
    client
        .batch_execute("ALTER TABLE hookd_audit_away RENAME TO hookd_audit")
        .await
        .expect("put the audit table back");
    let recorded = expect(
        &ops,
        Method::POST,
        "/v1/subscriptions/cfg/resume",
        None,
        200,
    )
    .await;
    assert!(recorded.get("audit").is_none(), "{recorded}");
    assert_eq!(
        summary(&entries(&ops, "", 100).await),
        vec![triple("ops", "resumed", "cfg")]
    );
}

//! The `hookd` binary's client commands against an in-process hookd: `deliveries
//! list|show|retry`, `subscriptions list|pause|resume|enable`, `send`, `stats`, `check-config`, and the
//! exit codes (0 ok, 1 the API answered an error, 2 usage or config, 3 hookd unreachable).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::{spawn_app, spawn_app_full, TestApp};
use crate::support::cli::hookd;
use crate::support::events::{delivery_toml, event, refused_url, subscription_toml};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;
use hookd::event::rfc3339_millis;
use hookd::scheduler::now_ms;

const DEADLINE: Duration = Duration::from_secs(4);

fn base(app: &TestApp) -> String {
    format!("http://{}", app.api)
}

async fn delivery(app: &TestApp, id: &str) -> Value {
    app.admin().get_ok(&format!("/v1/deliveries/{id}")).await
}

async fn wait_state(app: &TestApp, id: &str, state: &str) -> Value {
    wait_until(
        &format!("delivery {id} to be {state}"),
        DEADLINE,
        || async {
            let d = delivery(app, id).await;
            (d["state"] == state).then_some(d)
        },
    )
    .await
}

/// Posts one event through the API; returns its delivery ids by subscription.
async fn post_event(app: &TestApp, event: &Value) -> std::collections::HashMap<String, String> {
    let (status, body) = app.post(event).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    app.admin().get_ok("/v1/deliveries?limit=1000").await["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["event_id"] == event_id)
        .map(|d| {
            (
                d["subscription"].as_str().unwrap().to_string(),
                d["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn state_of(app: &TestApp, id: &str) -> String {
    delivery(app, id).await["state"]
        .as_str()
        .expect("state")
        .to_string()
}

/// The character offset at which each whitespace-separated word of `line` starts.
fn word_starts(line: &str) -> Vec<usize> {
    let chars: Vec<char> = line.chars().collect();
    (0..chars.len())
        .filter(|&i| !chars[i].is_whitespace() && (i == 0 || chars[i - 1].is_whitespace()))
        .collect()
}

/// Where each of `headers` starts in the header line `line`.
fn column_starts(line: &str, headers: &[&str]) -> Vec<usize> {
    let mut from = 0;
    headers
        .iter()
        .map(|h| {
            let at = from
                + line[from..]
                    .find(h)
                    .unwrap_or_else(|| panic!("no {h:?} in the header {line:?}"));
            from = at + h.len();
            line[..at].chars().count()
        })
        .collect()
}

// ------------------------------------------------------------------ deliveries list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_list_json_matches_the_api_and_the_table_is_aligned() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&["0s", "100ms"], ""),
        subscription_toml("a", &receiver.url(), "sa", &["*"], ""),
        subscription_toml(
            "a-much-longer-subscription",
            &receiver.url(),
            "sb",
            &["job.failed"],
            ""
        ),
    ))
    .await;
    let mut all_ids = Vec::new();
    for (i, status) in ["completed", "failed", "completed"].iter().enumerate() {
        all_ids.extend(
            post_event(&app, &event(&format!("cli-list-{i}"), status))
                .await
                .into_values(),
        );
    }
    assert_eq!(all_ids.len(), 4);
    for id in &all_ids {
        wait_state(&app, id, "delivered").await;
    }
    let url = base(&app);

    let from_cli = hookd(&["deliveries", "list", "--url", &url, "--json"], None)
        .await
        .json();
    assert_eq!(
        from_cli,
        app.admin().get_ok("/v1/deliveries?limit=50").await
    );
    assert_eq!(from_cli["deliveries"].as_array().unwrap().len(), 4);

    let filtered = hookd(
        &[
            "deliveries",
            "list",
            "--url",
            &url,
            "--json",
            "--subscription",
            "a-much-longer-subscription",
            "--status",
            "delivered",
            "--event-type",
            "job.failed",
        ],
        None,
    )
    .await
    .json();
    let items = filtered["deliveries"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{filtered}");
    assert_eq!(items[0]["subscription"], "a-much-longer-subscription");
    assert_eq!(
        filtered,
        app.admin()
            .get_ok(
                "/v1/deliveries?subscription=a-much-longer-subscription&status=delivered&event_type=job.failed&limit=50"
            )
            .await
    );

    // Pages: --limit and --cursor.
    let first = hookd(
        &[
            "deliveries",
            "list",
            "--url",
            &url,
            "--json",
            "--limit",
            "3",
        ],
        None,
    )
    .await
    .json();
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = hookd(
        &[
            "deliveries",
            "list",
            "--url",
            &url,
            "--json",
            "--limit",
            "3",
            "--cursor",
            &cursor,
        ],
        None,
    )
    .await
    .json();
    let mut paged: Vec<Value> = first["deliveries"].as_array().unwrap().clone();
    paged.extend(second["deliveries"].as_array().unwrap().iter().cloned());
    assert_eq!(
        Value::Array(paged),
        from_cli["deliveries"],
        "two pages, in order"
    );
    assert!(second["next_cursor"].is_null(), "{second}");

    // The table: a header, one aligned row per delivery, a count.
    let run = hookd(&["deliveries", "list", "--url", &url], None).await;
    let lines: Vec<&str> = run.ok().lines().collect();
    assert_eq!(lines.len(), 1 + 4 + 1, "{}", run.stdout);
    let header = lines[0];
    let headers = [
        "ID",
        "STATE",
        "SUBSCRIPTION",
        "EVENT",
        "ATTEMPTS",
        "CREATED",
        "NEXT ATTEMPT",
        "LAST ERROR",
    ];
    assert!(header.starts_with("ID "), "{header:?}");
    let columns = column_starts(header, &headers);
    let api_items = from_cli["deliveries"].as_array().unwrap();
    for (row, d) in lines[1..5].iter().zip(api_items) {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words.len(), headers.len(), "one word per cell: {row:?}");
        assert_eq!(
            word_starts(row),
            columns,
            "every cell starts under its header:\n{header}\n{row}"
        );
        assert_eq!(words[0], d["id"], "rows in the API's order");
        assert_eq!(words[1], "delivered");
        assert_eq!(words[2], d["subscription"]);
        assert_eq!(words[3], d["event_type"]);
        assert_eq!(words[6], "-", "no next attempt");
    }
    assert_eq!(lines[5], "4 deliveries");

    let run = hookd(&["deliveries", "list", "--url", &url, "--limit", "1"], None).await;
    let last = run.ok().lines().last().unwrap().to_string();
    assert!(
        last.starts_with("1 delivery; more with --cursor dlv_"),
        "{last:?}"
    );
}

// ------------------------------------------------------------------ deliveries show

#[tokio::test]
async fn deliveries_show_prints_every_attempt_and_unknown_ids_exit_1() {
    let receiver = TestReceiver::start().await;
    receiver.plan([Reply::Status(500)]);
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("acme", &receiver.url(), "acme-secret-9", &["*"], ""),
    ))
    .await;
    let id = post_event(&app, &event("cli-show", "completed")).await["acme"].clone();
    let api = wait_state(&app, &id, "delivered").await;
    let url = base(&app);

    let run = hookd(&["deliveries", "show", &id, "--url", &url], None).await;
    let out = run.ok().to_string();
    assert!(!out.contains("acme-secret-9"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let field = |name: &str| -> String {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name}: line in\n{out}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("id"), id);
    assert_eq!(field("state"), "delivered");
    assert_eq!(field("subscription"), "acme");
    assert_eq!(field("url"), receiver.url());
    assert_eq!(field("attempts"), "2");
    let header_at = lines
        .iter()
        .position(|l| l.starts_with('#') && l.contains("OUTCOME") && l.contains("STATUS"))
        .unwrap_or_else(|| panic!("no attempts table in\n{out}"));
    let header = lines[header_at];
    let outcome_col = column_starts(header, &["OUTCOME"])[0];
    let status_col = column_starts(header, &["STATUS"])[0];
    let rows = &lines[header_at + 1..header_at + 3];
    for (row, (n, outcome, status)) in rows
        .iter()
        .zip([("1", "http_5xx", "500"), ("2", "success", "200")])
    {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[0], n, "{row:?}");
        let starts = word_starts(row);
        let at = |col: usize| -> &str {
            let i = starts
                .iter()
                .position(|&s| s == col)
                .unwrap_or_else(|| panic!("no cell starts at column {col}:\n{header}\n{row}"));
            words[i]
        };
        assert_eq!(at(outcome_col), outcome, "\n{header}\n{row}");
        assert_eq!(at(status_col), status, "\n{header}\n{row}");
    }
    assert!(rows[0].contains("HTTP 500"), "the error: {:?}", rows[0]);
    let event_line = field("event");
    let shown: Value = serde_json::from_str(&event_line).expect("event JSON");
    assert_eq!(shown, api["event"]);

    let as_json = hookd(&["deliveries", "show", &id, "--url", &url, "--json"], None)
        .await
        .json();
    assert_eq!(as_json, delivery(&app, &id).await);

    let unknown = "dlv_01J00000000000000000000000";
    let run = hookd(&["deliveries", "show", unknown, "--url", &url], None).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(
        run.stderr.contains("404") && run.stderr.contains(unknown),
        "{run:#?}"
    );
}

// ------------------------------------------------------------------ deliveries retry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retry_one_and_every_dead_one_of_a_subscription_since_a_time() {
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
    let old = post_event(&app, &event("cli-retry-0", "failed")).await;
    for id in old.values() {
        wait_state(&app, id, "dead").await;
    }
    let before = now_ms();
    let since = wait_until("the clock to tick", Duration::from_secs(1), || async {
        (now_ms() > before).then_some(rfc3339_millis(before + 1))
    })
    .await;
    let mut recent = Vec::new();
    for i in 1..=2 {
        recent.push(post_event(&app, &event(&format!("cli-retry-{i}"), "failed")).await);
    }
    for id in recent.iter().flat_map(|m| m.values()) {
        wait_state(&app, id, "dead").await;
    }
    a.set_default(Reply::Status(200));
    b.set_default(Reply::Status(200));
    let url = base(&app);

    // One delivery.
    let run = hookd(&["deliveries", "retry", &old["a"], "--url", &url], None).await;
    assert_eq!(run.ok().trim(), format!("{} requeued (was dead)", old["a"]));
    let done = wait_state(&app, &old["a"], "delivered").await;
    assert_eq!(done["attempts"], 3);
    let last = a.received().pop().unwrap();
    assert_eq!(last.header("x-abstrakt-delivery"), old["a"]);
    assert_eq!(last.header("x-abstrakt-attempt"), "3");

    // Every dead delivery of a since the boundary.
    let run = hookd(
        &[
            "deliveries",
            "retry",
            "--dead",
            "--subscription",
            "a",
            "--since",
            &since,
            "--url",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(run.ok().trim(), "requeued 2 dead deliveries");
    for m in &recent {
        assert_eq!(state_of(&app, &m["b"]).await, "dead", "b is not retried");
    }
    assert_eq!(state_of(&app, &old["b"]).await, "dead");
    for m in &recent {
        wait_state(&app, &m["a"], "delivered").await;
    }
    assert_eq!(
        a.received().len(),
        3 * 2 + 3,
        "two attempts each, then one retry each"
    );

    // The same for b, as JSON.
    let out = hookd(
        &[
            "deliveries",
            "retry",
            "--dead",
            "--subscription",
            "b",
            "--since",
            &since,
            "--url",
            &url,
            "--json",
        ],
        None,
    )
    .await
    .json();
    assert_eq!(out, json!({"requeued": 2}));
    for m in &recent {
        wait_state(&app, &m["b"], "delivered").await;
    }
    assert_eq!(
        state_of(&app, &old["b"]).await,
        "dead",
        "died before --since"
    );

    // Errors: an unknown id is the API's 404; no id and no --dead is a usage error.
    let run = hookd(
        &[
            "deliveries",
            "retry",
            "dlv_01J00000000000000000000000",
            "--url",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("404"), "{run:#?}");
    let run = hookd(&["deliveries", "retry", "--url", &url], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let run = hookd(
        &[
            "deliveries",
            "retry",
            "--dead",
            "--subscription",
            "nobody",
            "--since",
            &since,
            "--url",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "unknown subscription: {run:#?}");
    assert!(run.stderr.contains("404"), "{run:#?}");

    // Counting first: nothing is dead since the boundary any more, and nothing is retrying.
    let run = hookd(
        &[
            "deliveries",
            "retry",
            "--dead",
            "--since",
            &since,
            "--include-retrying",
            "--dry-run",
            "--url",
            &url,
        ],
        None,
    )
    .await;
    assert_eq!(
        run.ok().trim(),
        "would requeue 0 dead deliveries and bring forward 0 still retrying"
    );
    let run = hookd(
        &["deliveries", "retry", "--dry-run", &old["b"], "--url", &url],
        None,
    )
    .await;
    assert_eq!(run.code, 2, "--dry-run is for --dead: {run:#?}");
}

#[tokio::test]
async fn stats_prints_the_windows_figures_and_json_is_the_apis() {
    let good = TestReceiver::start().await;
    let bad = TestReceiver::start().await;
    bad.set_default(Reply::Status(500));
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&["0s"], ""),
        subscription_toml("good", &good.url(), "sg", &["*"], ""),
        subscription_toml("bad", &bad.url(), "sb", &["*"], ""),
    ))
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.extend(post_event(&app, &event(&format!("stats-{i}"), "completed")).await);
    }
    for (sub, id) in &ids {
        let end = if sub == "good" { "delivered" } else { "dead" };
        wait_state(&app, id, end).await;
    }
    let url = base(&app);

    let out = hookd(
        &["stats", "--window", "hour", "--url", &url, "--json"],
        None,
    )
    .await
    .json();
    let (status, api) = app.admin().get("/v1/stats?window=hour").await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(out["total"], api["total"], "--json is the API's answer");
    assert_eq!(out["total"]["deliveries"], 6);
    assert_eq!(out["total"]["delivered"], 3);
    assert_eq!(out["total"]["dead"], 3);

    let run = hookd(&["stats", "--window", "hour", "--url", &url], None).await;
    let text = run.ok();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains(
            ": 6 deliveries created, 3 delivered, 3 dead, 6 failed attempts; success 50.0%"
        ),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("SUBSCRIPTION"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let bad_row = rows.iter().find(|r| r[0] == "bad").expect("a row for bad");
    assert_eq!(&bad_row[1..6], ["3", "0", "3", "6", "0.0%"], "{text}");
    let good_row = rows
        .iter()
        .find(|r| r[0] == "good")
        .expect("a row for good");
    assert_eq!(&good_row[1..6], ["3", "3", "0", "0", "100.0%"], "{text}");

    let run = hookd(
        &["stats", "--subscription", "good", "--url", &url, "--json"],
        None,
    )
    .await;
    assert_eq!(run.json()["total"]["deliveries"], 3, "one subscription's");
    let run = hookd(&["stats", "--window", "month", "--url", &url], None).await;
    assert_eq!(run.code, 2, "an unknown window is a usage error: {run:#?}");
}

// ------------------------------------------------------------------ subscriptions

/// The words of the row of subscription `id` in a `subscriptions list` table.
fn row(out: &str, id: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{out}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn subscriptions_list_pause_and_resume() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}",
        subscription_toml(
            "acme",
            &receiver.url(),
            "acme-secret-1",
            &["job.completed"],
            ""
        ),
        subscription_toml("other", &receiver.url(), "other-secret-2", &["*"], ""),
    ))
    .await;
    let url = base(&app);

    let run = hookd(&["subscriptions", "list", "--url", &url], None).await;
    let out = run.ok().to_string();
    assert!(
        !out.contains("secret-1") && !out.contains("secret-2"),
        "{out}"
    );
    let header = out.lines().next().unwrap();
    let columns = column_starts(header, &["ID", "STATE", "URL", "EVENTS"]);
    assert_eq!(columns[0], 0, "{header:?}");
    for id in ["acme", "other", "adhoc"] {
        assert_eq!(row(&out, id)[1], "active", "{out}");
    }
    assert_eq!(row(&out, "acme")[2], receiver.url());
    assert_eq!(row(&out, "acme")[3], "job.completed");
    for line in out.lines().skip(1) {
        assert_eq!(
            &word_starts(line)[..4],
            &columns[..],
            "aligned:\n{header}\n{line}"
        );
    }
    let as_json = hookd(&["subscriptions", "list", "--url", &url, "--json"], None)
        .await
        .json();
    assert_eq!(as_json, app.admin().get_ok("/v1/subscriptions").await);

    let paused = |v: &Value, id: &str| -> Value {
        v["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["paused"]
            .clone()
    };
    let run = hookd(&["subscriptions", "pause", "acme", "--url", &url], None).await;
    assert_eq!(run.ok().trim(), "acme paused");
    let now = app.admin().get_ok("/v1/subscriptions").await;
    assert_eq!(paused(&now, "acme"), true);
    assert_eq!(paused(&now, "other"), false);
    let run = hookd(&["subscriptions", "list", "--url", &url], None).await;
    assert_eq!(row(run.ok(), "acme")[1], "paused");
    assert_eq!(row(run.ok(), "other")[1], "active");

    let out = hookd(
        &["subscriptions", "resume", "acme", "--url", &url, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(out, json!({"id": "acme", "paused": false}));
    assert_eq!(
        paused(&app.admin().get_ok("/v1/subscriptions").await, "acme"),
        false
    );
    let run = hookd(&["subscriptions", "pause", "other", "--url", &url], None).await;
    assert_eq!(run.ok().trim(), "other paused");
    let run = hookd(&["subscriptions", "resume", "other", "--url", &url], None).await;
    assert_eq!(run.ok().trim(), "other resumed");
    assert_eq!(
        paused(&app.admin().get_ok("/v1/subscriptions").await, "other"),
        false
    );

    for action in ["pause", "resume", "enable"] {
        let run = hookd(&["subscriptions", action, "nobody", "--url", &url], None).await;
        assert_eq!(run.code, 1, "{action}: {run:#?}");
        assert!(
            run.stderr.contains("404") && run.stderr.contains("nobody"),
            "{run:#?}"
        );
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_enable_brings_back_a_subscription_its_breaker_disabled() {
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["0s", "0s", "0s", "0s"], "disable_after_failures = 2"),
        subscription_toml("down", &receiver.url(), "s", &["*"], ""),
    ))
    .await;
    let url = base(&app);
    let ids = post_event(&app, &event("down-1", "completed")).await;
    let id = &ids["down"];
    wait_until("down disabled", DEADLINE, || async {
        let shown = app.admin().get_ok("/v1/subscriptions/down").await;
        (shown["state"] == "disabled").then_some(())
    })
    .await;
    let run = hookd(&["subscriptions", "list", "--url", &url], None).await;
    assert_eq!(row(run.ok(), "down")[1], "disabled", "{run:#?}");
    assert_eq!(state_of(&app, id).await, "scheduled", "queued, not dead");
    assert_eq!(receiver.count(), 2, "no attempt after the second failure");

    receiver.set_default(Reply::Status(200));
    let run = hookd(&["subscriptions", "enable", "down", "--url", &url], None).await;
    assert_eq!(run.ok().trim(), "down active");
    let run = hookd(&["subscriptions", "list", "--url", &url], None).await;
    assert_eq!(row(run.ok(), "down")[1], "active", "{run:#?}");
    let delivered = wait_state(&app, id, "delivered").await;
    assert_eq!(delivered["attempts"], 3, "{delivered}");
    assert_eq!(receiver.count(), 3);

    // Enabling an active subscription changes nothing; --json prints the API's subscription.
    let out = hookd(
        &["subscriptions", "enable", "down", "--url", &url, "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(out["id"], "down", "{out}");
    assert_eq!(out["state"], "active", "{out}");
    assert_eq!(out["consecutive_failures"], 0, "{out}");
}

// ------------------------------------------------------------------ send

#[tokio::test]
async fn send_posts_a_file_or_stdin_and_an_invalid_event_exits_1() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&subscription_toml("acme", &receiver.url(), "s", &["*"], "")).await;
    let url = base(&app);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        json!({"request_id": "from-file", "status": "completed", "result": {"items": []}})
            .to_string(),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let out = hookd(&["send", "--url", &url, file], None).await.json();
    assert!(out["event_id"].is_string(), "{out}");
    assert_eq!(out["deliveries"], 1);
    let body = json!({"request_id": "from-stdin", "status": "failed"}).to_string();
    let out = hookd(&["send", "--url", &url], Some(body.as_bytes()))
        .await
        .json();
    assert_eq!(out["deliveries"], 1, "{out}");
    let batch = json!([
        {"request_id": "from-dash-1", "status": "completed"},
        {"request_id": "from-dash-2", "status": "completed"}
    ])
    .to_string();
    let out = hookd(&["send", "--url", &url, "-"], Some(batch.as_bytes()))
        .await
        .json();
    assert_eq!(out.as_array().map(Vec::len), Some(2), "{out}");

    let got = receiver.wait_for(4, DEADLINE).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["request_id"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: HashSet<String> = ["from-file", "from-stdin", "from-dash-1", "from-dash-2"]
        .map(String::from)
        .into();
    assert_eq!(ids, expected);

    // Rejected by the API: exit 1 with its message, and nothing is stored.
    for (bad, status) in [
        (
            json!({"request_id": "bad", "status": "completed", "colour": "red"}).to_string(),
            "422",
        ),
        (
            json!({"request_id": "bad", "status": "Completed!"}).to_string(),
            "422",
        ),
        (json!({"status": "completed"}).to_string(), "422"),
        ("{not json".to_string(), "400"),
    ] {
        let run = hookd(&["send", "--url", &url], Some(bad.as_bytes())).await;
        assert_eq!(run.code, 1, "{bad}: {run:#?}");
        assert!(run.stderr.contains(status), "{bad}: {run:#?}");
        assert!(run.stdout.is_empty(), "{bad}: {run:#?}");
    }
    let listed = app.admin().get_ok("/v1/deliveries?limit=1000").await;
    assert_eq!(
        listed["deliveries"].as_array().unwrap().len(),
        4,
        "{listed}"
    );

    let missing = dir.path().join("missing.json");
    let run = hookd(&["send", "--url", &url, missing.to_str().unwrap()], None).await;
    assert_eq!(run.code, 2, "an unreadable file is a usage error: {run:#?}");
}

// ------------------------------------------------------------------ reaching hookd

#[tokio::test]
async fn unreachable_hookd_exits_3_and_a_missing_config_exits_2() {
    let refused = refused_url();
    let refused = refused.trim_end_matches("/hook");
    for args in [
        vec!["deliveries", "list"],
        vec!["deliveries", "show", "dlv_x"],
        vec!["subscriptions", "list"],
        vec!["subscriptions", "pause", "acme"],
    ] {
        let mut args = args.clone();
        args.extend(["--url", refused]);
        let run = hookd(&args, None).await;
        assert_eq!(run.code, 3, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("cannot reach hookd"), "{run:#?}");
    }
    let run = hookd(&["send", "--url", refused], Some(b"{}")).await;
    assert_eq!(run.code, 3, "{run:#?}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/hookd.toml");
    let missing = missing.to_str().unwrap();
    let run = hookd(&["deliveries", "list", "--config", missing], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains(missing), "names the file: {run:#?}");
    let run = hookd(&["deliveries", "list", "--bogus-flag"], None).await;
    assert_eq!(run.code, 2, "{run:#?}");

    // A config whose API listens on port 0 gives no address to reach: say so.
    let port_zero = write_config(
        dir.path(),
        "[api]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let run = hookd(&["deliveries", "list", "--config", &port_zero], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("port 0") && run.stderr.contains("--url"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn the_config_file_gives_the_address_and_the_token() {
    let app = spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\ntokens = [\"t0ken-123\"]\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {store}\n"
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookd.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nlisten = \"{}\"\ntokens = [\"t0ken-123\"]\n\n[storage]\npath = {:?}\n",
            app.api,
            dir.path().join("db").display().to_string()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let url = base(&app);

    let out = hookd(&["deliveries", "list", "--config", config, "--json"], None)
        .await
        .json();
    assert_eq!(out["deliveries"], json!([]));
    let out = hookd(
        &[
            "deliveries",
            "list",
            "--url",
            &url,
            "--token",
            "t0ken-123",
            "--json",
        ],
        None,
    )
    .await
    .json();
    assert_eq!(out["deliveries"], json!([]));
    for token in ["wrong", ""] {
        let run = hookd(
            &["deliveries", "list", "--url", &url, "--token", token],
            None,
        )
        .await;
        assert_eq!(run.code, 1, "token {token:?}: {run:#?}");
        assert!(run.stderr.contains("401"), "{run:#?}");
        assert!(!run.stderr.contains("t0ken-123"), "{run:#?}");
    }
}

// ------------------------------------------------------------------ check-config

/// Writes `text` as `hookd.toml` in `dir`; returns its path.
fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("hookd.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The `file:line:col: key: message` lines of `stderr` about `file` (an `error: ` prefix
/// allowed), as `(line, column, key, message)`.
fn diagnostics(stderr: &str, file: &str) -> Vec<(usize, usize, String, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("error: ").unwrap_or(l);
            let rest = rest.strip_prefix(file)?.strip_prefix(':')?;
            let (line, rest) = rest.split_once(':')?;
            let (col, rest) = rest.split_once(':')?;
            let (key, message) = rest.trim_start().split_once(": ")?;
            Some((
                line.parse().ok()?,
                col.parse().ok()?,
                key.to_string(),
                message.to_string(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        &format!(
            "[api]\nlisten = \"127.0.0.1:8080\"\n\n[storage]\npath = {:?}\n\n\
             [delivery]\nretry_schedule = [\"0s\", \"100ms\"]\ntimeout = \"2s\"\n\n{}{}",
            dir.path().join("db").display().to_string(),
            subscription_toml(
                "acme",
                "http://127.0.0.1:9/hook",
                "s",
                &["job.completed"],
                ""
            ),
            crate::support::LOOPBACK_TARGETS,
        ),
    );
    let run = hookd(&["check-config", "--config", &file], None).await;
    let out = run.ok();
    assert!(out.contains("config looks good"), "{out}");
    assert!(
        out.contains("acme"),
        "the summary lists the subscription: {out}"
    );
    assert!(run.stderr.is_empty(), "{run:#?}");
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown key alone.
    let file = write_config(
        dir.path(),
        "[api]\nlisten = \"127.0.0.1:8080\"\n\n[delivery]\ntimeout = \"1s\"\nretries = 3\n",
    );
    let run = hookd(&["check-config", "--config", &file], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(!run.stdout.contains("looks good"), "{run:#?}");
    let d = diagnostics(&run.stderr, &file);
    assert_eq!(d.len(), 1, "{run:#?}");
    assert_eq!(
        (d[0].0, d[0].1, d[0].2.as_str()),
        (6, 1, "delivery.retries"),
        "{run:#?}"
    );
    assert!(d[0].3.contains("unknown field"), "{run:#?}");

    // A bad duration alone.
    let file = write_config(
        dir.path(),
        "[api]\nlisten = \"127.0.0.1:8080\"\n\n[delivery]\n\ntimeout = \"ten seconds\"\n",
    );
    let run = hookd(&["check-config", "--config", &file], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let d = diagnostics(&run.stderr, &file);
    assert_eq!(d.len(), 1, "{run:#?}");
    assert_eq!(
        (d[0].0, d[0].2.as_str()),
        (6, "delivery.timeout"),
        "{run:#?}"
    );
    assert!(d[0].3.contains("invalid duration"), "{run:#?}");
}

#[tokio::test]
async fn check_config_refuses_durations_beyond_their_maximum_naming_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        &format!(
            "[api]\nlisten = \"127.0.0.1:8080\"\nidle_timeout = \"2h\"\n\n\
             [delivery]\nretry_schedule = [\"0s\", \"18446744073709551615s\"]\ntimeout = \"2h\"\n\
             breaker_probe_interval = \"31d\"\n\n{}{}",
            subscription_toml(
                "acme",
                "http://127.0.0.1:9/hook",
                "s",
                &["job.completed"],
                "disable_after = \"60d\""
            ),
            crate::support::LOOPBACK_TARGETS,
        ),
    );
    let run = hookd(&["check-config", "--config", &file], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let d = diagnostics(&run.stderr, &file);
    let keys: Vec<(usize, &str)> = d.iter().map(|(l, _, k, _)| (*l, k.as_str())).collect();
    assert_eq!(
        keys,
        [
            (3, "api.idle_timeout"),
            (6, "delivery.retry_schedule"),
            (7, "delivery.timeout"),
            (8, "delivery.breaker_probe_interval"),
            (15, "subscription[0].disable_after"),
        ],
        "{run:#?}"
    );
    assert!(
        d.iter().all(|(.., m)| m.contains("longer than the most")),
        "{run:#?}"
    );
}

#[tokio::test]
async fn check_config_reports_every_error_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    // Two independent mistakes: each gets its own `file:line:col: key: message` line, as
    // SPEC.md says ("names file, line and key for each error").
    let file = write_config(
        dir.path(),
        "[api]\nlisten = \"127.0.0.1:8080\"\n\n[delivery]\ntimeout = \"ten seconds\"\nretries = 3\n",
    );
    let run = hookd(&["check-config", "--config", &file], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(!run.stdout.contains("looks good"), "{run:#?}");
    let d = diagnostics(&run.stderr, &file);
    let found: Vec<(usize, &str)> = d.iter().map(|(l, _, k, _)| (*l, k.as_str())).collect();
    assert!(
        found.contains(&(6, "delivery.retries")),
        "the unknown key on line 6 is reported: {run:#?}"
    );
    assert!(
        found.contains(&(5, "delivery.timeout")),
        "the bad duration on line 5 is reported too: {run:#?}"
    );
    for (_, col, _, message) in &d {
        assert!(*col >= 1 && !message.is_empty(), "{run:#?}");
    }
}

#[tokio::test]
async fn subscriptions_add_test_rotate_and_remove() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("").await;
    let url = base(&app);
    let run = hookd(
        &[
            "subscriptions",
            "add",
            "--url",
            &url,
            "--id",
            "cust7",
            "--owner",
            "cust-7",
            "--endpoint",
            &receiver.url(),
            "--events",
            "job.completed,job.failed",
        ],
        None,
    )
    .await;
    let out = run.ok().to_string();
    assert!(out.starts_with("cust7 secret whsec_"), "{out}");

    let run = hookd(&["subscriptions", "test", "--url", &url, "cust7"], None).await;
    let out = run.ok().to_string();
    let delivery = out
        .split_whitespace()
        .find(|w| w.starts_with("dlv_"))
        .unwrap_or_else(|| panic!("a delivery id in {out}"))
        .to_string();
    let got = receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    let body: Value = serde_json::from_slice(&got[0].body).expect("JSON");
    assert_eq!(body["status"], "test");
    wait_state(&app, &delivery, "delivered").await;

    let run = hookd(
        &["subscriptions", "rotate-secret", "--url", &url, "cust7"],
        None,
    )
    .await;
    assert!(run.ok().starts_with("cust7 secret whsec_"), "{run:#?}");

    let run = hookd(&["subscriptions", "list", "--url", &url], None).await;
    assert!(
        run.ok().lines().any(|l| l.starts_with("cust7 ")),
        "{run:#?}"
    );

    // Bad input exits 1 with the API's message; the config file's subscriptions stay.
    let run = hookd(
        &[
            "subscriptions",
            "add",
            "--url",
            &url,
            "--endpoint",
            "ftp://x.example/",
            "--events",
            "*",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("http"), "{run:#?}");

    let run = hookd(&["subscriptions", "remove", "--url", &url, "cust7"], None).await;
    assert_eq!(run.ok().trim(), "removed cust7");
    let run = hookd(&["subscriptions", "remove", "--url", &url, "cust7"], None).await;
    assert_eq!(run.code, 1, "already gone: {run:#?}");
}

/// `subscriptions add` takes the delivery controls the API takes: custom headers (plain and
/// secret), a rate limit, the breaker's settings and the per-subscription delivery keys.
#[tokio::test]
async fn subscriptions_add_sets_headers_rate_limit_and_breaker() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("").await;
    let url = base(&app);
    let endpoint = receiver.url();
    let flags = [
        ("--id", "ctl"),
        ("--name", "Control plane"),
        ("--description", "Keeps the control plane in step."),
        ("--endpoint", endpoint.as_str()),
        ("--events", "*"),
        ("--header", "X-Tenant: acme"),
        ("--secret-header", "Authorization: Bearer tok-123"),
        ("--rate-limit", "20"),
        ("--max-in-flight", "3"),
        ("--timeout", "4s"),
        ("--retry-schedule", "0s,2s"),
        ("--breaker-failures", "4"),
        ("--breaker-probe-interval", "15s"),
        ("--disable-after", "2d"),
        ("--disable-after-failures", "50"),
    ];
    let mut args = vec!["subscriptions", "add", "--url", url.as_str()];
    args.extend(flags.iter().flat_map(|&(flag, value)| [flag, value]));
    let run = hookd(&args, None).await;
    assert!(run.ok().starts_with("ctl secret whsec_"), "{run:#?}");
    let s = app.admin().get_ok("/v1/subscriptions/ctl").await;
    assert_eq!(s["headers"]["x-tenant"], "acme", "{s}");
    assert_eq!(s["headers"]["authorization"], "[REDACTED]", "{s}");
    assert_eq!(s["rate_limit"], 20.0, "{s}");
    assert_eq!(s["breaker_failures"], 4, "{s}");
    assert_eq!(s["breaker_probe_interval"], "15s", "{s}");
    assert_eq!(s["disable_after"], "2days", "{s}");
    assert_eq!(s["disable_after_failures"], 50, "{s}");
    assert_eq!(s["name"], "Control plane", "{s}");
    assert_eq!(s["description"], "Keeps the control plane in step.", "{s}");
    let list = hookd(&["subscriptions", "list", "--url", &url], None).await;
    let header = list.ok().lines().next().unwrap_or("").to_string();
    assert!(header.trim_end().ends_with("NAME"), "{header}");
    assert!(list.ok().contains("Control plane"), "{list:#?}");
    // The API does not show these three; the running configuration has them.
    let config = app.shared.config();
    let running = config
        .subscription("ctl")
        .expect("the subscription is running");
    assert_eq!(running.max_in_flight, 3);
    assert_eq!(running.policy.timeout, Duration::from_secs(4));
    assert_eq!(
        running.policy.retry_schedule,
        [Duration::ZERO, Duration::from_secs(2)]
    );

    // Both headers arrive with a delivery.
    let run = hookd(&["subscriptions", "test", "--url", &url, "ctl"], None).await;
    run.ok();
    let got = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(got[0].header("x-tenant"), "acme");
    assert_eq!(got[0].header("authorization"), "Bearer tok-123");
    assert_eq!(got[0].header("x-abstrakt-event"), "job.test");
    let args = [
        "subscriptions",
        "test",
        "--url",
        &url,
        "--event-type",
        "job.completed",
        "ctl",
    ];
    hookd(&args, None).await.ok();
    let got = receiver.wait_for(2, DEADLINE).await;
    assert_eq!(got[1].header("x-abstrakt-event"), "job.completed");

    // A header without a colon is a usage error; a signature header is refused by the API,
    // which names it, and nothing is created.
    let add_bad = |header: &'static str| {
        let (url, endpoint) = (url.clone(), endpoint.clone());
        async move {
            let args = [
                "subscriptions",
                "add",
                "--url",
                &url,
                "--id",
                "bad",
                "--endpoint",
                &endpoint,
                "--events",
                "*",
                "--header",
                header,
            ];
            hookd(&args, None).await
        }
    };
    let run = add_bad("X-Tenant").await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("Name: value"), "{run:#?}");
    let run = add_bad("X-Abstrakt-Signature: forged").await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .to_ascii_lowercase()
            .contains("x-abstrakt-signature"),
        "{run:#?}"
    );
    let list = app.admin().get_ok("/v1/subscriptions").await;
    assert!(
        !list.to_string().contains("\"bad\""),
        "nothing was created: {list}"
    );
}

// ------------------------------------------------------------------ owners

/// An in-process hookd with the provider's subscription (no owner, from the config file) and,
/// for each owner, a subscription `<owner>-prod` made through the API; all for every event.
async fn with_owners(provider: &TestReceiver, owned: &[(&str, &TestReceiver)]) -> TestApp {
    let app = spawn_app(&subscription_toml(
        "provider",
        &provider.url(),
        "s",
        &["*"],
        "",
    ))
    .await;
    for (owner, receiver) in owned {
        owned_subscription(&app, &format!("{owner}-prod"), owner, &receiver.url()).await;
    }
    app
}

/// Creates a subscription of `owner` to `url` for every event type, through the API.
async fn owned_subscription(app: &TestApp, id: &str, owner: &str, url: &str) {
    let response = app
        .client
        .post(format!("http://{}/v1/subscriptions", app.api))
        .header("content-type", "application/json")
        .body(
            json!({"id": id, "owner": owner, "url": url, "events": ["*"], "secret": "owned-secret"})
                .to_string(),
        )
        .send()
        .await
        .expect("create a subscription");
    assert_eq!(response.status().as_u16(), 201, "create {id}");
}

/// Every delivery the API lists (all of them, or `?owner=`), as JSON.
async fn listed(app: &TestApp, query: &str) -> Vec<Value> {
    app.admin()
        .get_ok(&format!("/v1/deliveries?limit=1000{query}"))
        .await["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

/// The request ids of the bodies `receiver` got.
fn received_ids(receiver: &TestReceiver) -> HashSet<String> {
    receiver
        .received()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
            assert!(body.get("owner").is_none(), "not delivered: {body}");
            body["request_id"].as_str().expect("request_id").to_string()
        })
        .collect()
}

fn strings(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_owner_sets_the_owner_of_every_event_and_refuses_another() {
    let (owned, provider) = (TestReceiver::start().await, TestReceiver::start().await);
    let app = with_owners(&provider, &[("cust-a", &owned)]).await;
    let url = base(&app);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };

    let one = write(
        "one.json",
        json!({"request_id": "owned-one", "status": "completed"}),
    );
    let out = hookd(&["send", "--url", &url, "--owner", "cust-a", &one], None)
        .await
        .json();
    assert_eq!(out["deliveries"], 2, "cust-a's and the provider's: {out}");
    let batch = write(
        "batch.json",
        json!([
            {"request_id": "owned-b1", "status": "completed"},
            {"request_id": "owned-b2", "status": "failed", "owner": "cust-a"}
        ]),
    );
    let out = hookd(&["send", "--url", &url, "--owner", "cust-a", &batch], None)
        .await
        .json();
    let counts: Vec<&Value> = out
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|e| &e["deliveries"])
        .collect();
    assert_eq!(counts, [2, 2], "{out}");
    // Without --owner, an event goes to the provider's subscription only.
    let plain = write(
        "plain.json",
        json!({"request_id": "unowned", "status": "completed"}),
    );
    let out = hookd(&["send", "--url", &url, &plain], None).await.json();
    assert_eq!(out["deliveries"], 1, "{out}");

    let owned_ids = listed(&app, "&owner=cust-a").await;
    assert_eq!(owned_ids.len(), 6, "{owned_ids:#?}");
    assert!(owned_ids.iter().all(|d| d["owner"] == "cust-a"));
    let expected = strings(&["owned-one", "owned-b1", "owned-b2"]);
    wait_until(
        "cust-a's endpoint to get its three events",
        DEADLINE,
        || async { (received_ids(&owned) == expected).then_some(()) },
    )
    .await;
    wait_until("the provider to get all four", DEADLINE, || async {
        (received_ids(&provider).len() == 4).then_some(())
    })
    .await;

    // An event that names another owner: refused before anything is sent, naming it.
    let mixed = write(
        "mixed.json",
        json!([
            {"request_id": "mixed-1", "status": "completed"},
            {"request_id": "mixed-2", "status": "completed", "owner": "cust-b"}
        ]),
    );
    let run = hookd(&["send", "--url", &url, "--owner", "cust-a", &mixed], None).await;
    assert_eq!(run.code, 2, "a usage error: {run:#?}");
    assert!(
        run.stderr.contains("event 1") && run.stderr.contains("cust-b"),
        "names the event and its owner: {run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
    let lone = json!({"request_id": "lone", "status": "completed", "owner": "cust-b"}).to_string();
    let run = hookd(
        &["send", "--url", &url, "--owner", "cust-a"],
        Some(lone.as_bytes()),
    )
    .await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("event 0"), "{run:#?}");
    assert_eq!(listed(&app, "").await.len(), 7, "nothing more stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_by_owner_and_owners_erase() {
    let (a, b, provider) = (
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
    );
    let app = with_owners(&provider, &[("cust-a", &a), ("cust-b", &b)]).await;
    let url = base(&app);
    for e in [
        json!({"request_id": "a-1", "status": "completed", "owner": "cust-a"}),
        json!({"request_id": "a-2", "status": "failed", "owner": "cust-a"}),
        json!({"request_id": "b-1", "status": "completed", "owner": "cust-b"}),
        json!({"request_id": "n-1", "status": "completed"}),
    ] {
        let (status, body) = app.post(&e).await;
        assert_eq!(status, 202, "{body}");
    }
    let all = listed(&app, "").await;
    assert_eq!(all.len(), 7, "a's 2 × 2, b's 2, the provider's 1");
    for d in &all {
        wait_state(&app, d["id"].as_str().unwrap(), "delivered").await;
    }

    let list_a = || async {
        hookd(
            &[
                "deliveries",
                "list",
                "--url",
                &url,
                "--owner",
                "cust-a",
                "--json",
            ],
            None,
        )
        .await
        .json()
    };
    let from_cli = list_a().await;
    let items = from_cli["deliveries"].as_array().expect("deliveries");
    assert_eq!(items.len(), 4, "{from_cli}");
    assert!(items.iter().all(|d| d["owner"] == "cust-a"), "{from_cli}");
    let a_ids: HashSet<String> = items
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let table = hookd(
        &["deliveries", "list", "--url", &url, "--owner", "cust-a"],
        None,
    )
    .await;
    let out = table.ok();
    let shown: HashSet<String> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("dlv_"))
        .map(str::to_string)
        .collect();
    assert_eq!(shown, a_ids, "{out}");
    assert!(out.trim_end().ends_with("4 deliveries"), "{out}");

    // `show` prints the owner line: the event's owner, or `-`.
    let some_a = a_ids.iter().next().unwrap();
    let out = hookd(&["deliveries", "show", "--url", &url, some_a], None).await;
    assert!(
        out.ok()
            .lines()
            .any(|l| l == format!("{:<16} cust-a", "owner:")),
        "{out:#?}"
    );
    let unowned = all
        .iter()
        .find(|d| d["owner"].is_null())
        .expect("n-1's delivery");
    let out = hookd(
        &[
            "deliveries",
            "show",
            "--url",
            &url,
            unowned["id"].as_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(
        out.ok().lines().any(|l| l == format!("{:<16} -", "owner:")),
        "{out:#?}"
    );

    let run = hookd(&["owners", "erase", "--url", &url, "cust-a"], None).await;
    assert_eq!(
        run.ok().trim_end(),
        "erased owner cust-a: 1 subscription, 2 events, 4 deliveries, 4 attempts"
    );
    let run = hookd(&["owners", "erase", "--url", &url, "cust-a"], None).await;
    assert_eq!(
        run.ok().trim_end(),
        "erased owner cust-a: 0 subscriptions, 0 events, 0 deliveries, 0 attempts",
        "a second run finds nothing"
    );
    let empty = list_a().await;
    assert_eq!(empty["deliveries"], json!([]), "{empty}");
    assert_eq!(listed(&app, "").await.len(), 3, "b's two and n-1's stay");

    let out = hookd(
        &["owners", "erase", "--url", &url, "cust-b", "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(
        out,
        json!({"owner": "cust-b", "subscriptions": 1, "events": 1, "deliveries": 2, "attempts": 2})
    );

    // An owner the API refuses: exit 1 with its message.
    let run = hookd(&["owners", "erase", "--url", &url, " x"], None).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("422") && run.stderr.contains("owner must be"),
        "the API's message: {run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
    let listed_now = listed(&app, "").await;
    assert_eq!(listed_now.len(), 1, "only n-1's: {listed_now:#?}");
    assert_eq!(received_ids(&b), strings(&["b-1"]));
}

//! What a new operator sees in the first minutes (issue #8): whole errors in `deliveries show`,
//! paused deliveries that say so, logs without colour codes when they go to a file or a pipe.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{spawn_app, TestApp};
use crate::support::cli;
use crate::support::events::{delivery_toml, event, refused_url, subscription_toml};
use crate::support::process::HookdProcess;
use crate::support::receiver::TestReceiver;
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(10);

/// Runs the real binary with `args` against `app` (`--url`), and returns (exit code, stdout
/// and stderr).
async fn hookd(app: &TestApp, args: &[&str]) -> (i32, String) {
    let url = format!("http://{}", app.api);
    let args: Vec<&str> = args.iter().copied().chain(["--url", &url]).collect();
    let run = cli::hookd(&args, None).await;
    (run.code, format!("{}{}", run.stdout, run.stderr))
}

async fn deliveries(app: &TestApp) -> Vec<Value> {
    let listed = app.admin().get_ok("/v1/deliveries").await;
    listed["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn deliveries_show_prints_the_whole_error() {
    let app = spawn_app(&format!(
        "{}{}",
        delivery_toml(&["1h"], ""),
        subscription_toml("beta", &refused_url(), "beta-secret", &["*"], ""),
    ))
    .await;
    let (status, body) = app.post(&event("refused", "completed")).await;
    assert_eq!(status, 202, "{body}");
    let delivery = wait_until("one failed attempt", DEADLINE, || async {
        deliveries(&app)
            .await
            .into_iter()
            .find(|d| d["attempts"] == 1 && d["last_error"].is_string())
    })
    .await;
    let error = delivery["last_error"].as_str().expect("last_error");
    assert!(
        error.len() > 60 && error.to_lowercase().contains("connection refused"),
        "a long error that names the cause: {error}"
    );
    let id = delivery["id"].as_str().expect("id");
    let (code, out) = hookd(&app, &["deliveries", "show", id]).await;
    assert_eq!(code, 0, "{out}");
    let last_error = out
        .lines()
        .find_map(|l| l.strip_prefix("last_error:"))
        .unwrap_or_else(|| panic!("no last_error line:\n{out}"));
    assert_eq!(last_error.trim(), error, "in full:\n{out}");
    let attempt_row = out
        .lines()
        .find(|l| l.starts_with("1 ") && l.contains("connect"))
        .unwrap_or_else(|| panic!("no attempt row:\n{out}"));
    assert!(
        attempt_row.contains(error),
        "the attempt's error in full: {attempt_row}"
    );
}

#[tokio::test]
async fn deliveries_of_a_paused_subscription_show_as_paused() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&subscription_toml(
        "beta",
        &receiver.url(),
        "beta-secret",
        &["*"],
        "",
    ))
    .await;
    let pause = |action: &'static str| {
        let admin = app.admin();
        async move {
            let path = format!("/v1/subscriptions/beta/{action}");
            let answer = admin.send(reqwest::Method::POST, &path, None).await;
            assert_eq!(answer.status, 200);
        }
    };
    pause("pause").await;
    let (status, body) = app.post(&event("while-paused", "completed")).await;
    assert_eq!(status, 202, "{body}");
    // Give the scheduler the chance to (wrongly) send it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.received().is_empty(),
        "nothing is sent while paused"
    );
    let listed = deliveries(&app).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let d = &listed[0];
    assert_eq!(d["state"], "scheduled", "{d}");
    assert_eq!(d["paused"], true, "{d}");
    let id = d["id"].as_str().expect("id").to_string();

    let (code, out) = hookd(&app, &["deliveries", "list"]).await;
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{out}"));
    assert_eq!(
        row.split_whitespace().nth(1),
        Some("paused"),
        "STATE: {row}"
    );
    assert!(out.contains("\n1 delivery"), "{out}");
    let (code, out) = hookd(&app, &["deliveries", "show", &id]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("state:           paused (scheduled: sent once subscription beta is resumed)"),
        "{out}"
    );

    pause("resume").await;
    receiver.wait_for(1, DEADLINE).await;
    let d = wait_until("delivered after resume", DEADLINE, || async {
        deliveries(&app)
            .await
            .into_iter()
            .find(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(d["paused"], false, "{d}");
}

#[tokio::test]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hookd = HookdProcess::start(dir.path(), "").await;
    // The reader thread may not have collected the first lines yet.
    let stderr = wait_until("hookd's first log lines", DEADLINE, || async {
        let text = hookd.process.stderr();
        text.contains("INFO").then_some(text)
    })
    .await;
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI escapes in piped logs:\n{stderr:?}"
    );
}

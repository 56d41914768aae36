//! Overload is refused, not absorbed: past `storage.max_pending` and when the store's disk is
//! nearly full, ingest answers 503 with `Retry-After` and a JSON error, counts and logs why,
//! loses nothing it acknowledged, and accepts again by itself once the cause is gone.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::process::HookdProcess;
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;

fn subscription(url: &str, extra: &str) -> String {
    format!(
        "[[subscription]]\nid = \"acme\"\nurl = \"{url}\"\nsecret = \"overload-secret\"\nevents = [\"*\"]\n{extra}\n"
    )
}

fn event(request_id: &str) -> Value {
    json!({
        "request_id": request_id,
        "status": "completed",
        "result": { "items": [{ "url": format!("https://cdn.example/{request_id}.png") }] }
    })
}

/// Posts one event: the status, the Retry-After header, and the JSON body.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Option<String>, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /v1/events");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn metric(hookd: &HookdProcess, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", hookd.metrics))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

fn received_ids(receiver: &TestReceiver) -> HashSet<String> {
    receiver
        .received()
        .iter()
        .filter_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).ok()?;
            Some(body["request_id"].as_str()?.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_backlog_limit_ingest_answers_503_with_retry_after_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = TestReceiver::start().await;
    // The receiver fails everything at first: deliveries stay unfinished, waiting for retries.
    receiver.set_default(Reply::Status(500));
    let retries =
        "retry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]";
    let hookd = HookdProcess::start_with_storage(
        dir.path(),
        "max_pending = 20",
        &subscription(&receiver.url(), retries),
    )
    .await;
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..40 {
        let id = format!("job-{i}");
        let (status, retry_after, body) = post(&client, &hookd.events_url(), &event(&id)).await;
        match status {
            202 => accepted.push(id),
            503 => {
                refusal = Some((retry_after, body));
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (retry_after, body) = refusal.expect("a 503 once 20 deliveries are unfinished");
    assert_eq!(accepted.len(), 20, "the limit is max_pending = 20");
    let seconds: u64 = retry_after
        .expect("the 503 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    let message = body["error"].as_str().expect("a JSON error");
    assert!(
        message.contains("storage.max_pending"),
        "the error names the setting: {message}"
    );
    assert!(
        metric(&hookd, "hookd_ingest_refused_total{reason=\"backlog\"}").await >= 1.0,
        "the refusal is counted"
    );
    wait_until("the refusal logged", Duration::from_secs(5), || async {
        hookd
            .process
            .stderr()
            .contains("ingest refused with 503")
            .then_some(())
    })
    .await;

    // The receiver recovers: the backlog drains, and ingest accepts again by itself.
    receiver.set_default(Reply::Status(200));
    wait_until(
        "ingest to accept again",
        Duration::from_secs(30),
        || async {
            let (status, _, _) = post(&client, &hookd.events_url(), &event("job-later")).await;
            (status == 202).then_some(())
        },
    )
    .await;
    accepted.push("job-later".to_string());
    let expected: HashSet<String> = accepted.into_iter().collect();
    wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(30),
        || async { expected.is_subset(&received_ids(&receiver)).then_some(()) },
    )
    .await;
    wait_until("the recovery logged", Duration::from_secs(5), || async {
        hookd
            .process
            .stderr()
            .contains("ingest accepts events again")
            .then_some(())
    })
    .await;
}

/// Runs `mount`-like commands; panics with their output on failure.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A size-limited tmpfs mounted on `path`, unmounted on drop.
struct SmallFilesystem(std::path::PathBuf);

impl SmallFilesystem {
    fn mount(path: &Path, size: &str) -> SmallFilesystem {
        std::fs::create_dir_all(path).expect("mount point");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                &path.display().to_string(),
            ],
        );
        SmallFilesystem(path.to_path_buf())
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_and_recovers_when_space_returns() {
    // Mounting needs root (CI and the dev machines run the tests as root).
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test mounts a tmpfs for the store and needs root; run the tests as root"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    let fs = SmallFilesystem::mount(&db, "64m");
    let receiver = TestReceiver::start().await;
    let hookd = HookdProcess::start_with_storage(
        dir.path(),
        "min_free_bytes = 8388608",
        &subscription(&receiver.url(), ""),
    )
    .await;
    let client = reqwest::Client::new();
    let before = post(&client, &hookd.events_url(), &event("job-before")).await;
    assert_eq!(before.0, 202, "{:?}", before.2);

    // Another tenant fills the disk, leaving less than the 6.4 MiB reserve (a tenth of 64 MiB).
    let filler = db.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Give back 2 MiB: less than the reserve, but room for the store's own writes.
    let len = std::fs::metadata(&filler).expect("filler").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .and_then(|f| f.set_len(len.saturating_sub(2 << 20)))
        .expect("shrink the filler");

    // The free-space reading is refreshed every 200 ms: events may still be accepted until then.
    let mut accepted = vec!["job-before".to_string()];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let id = format!("job-full-{}", accepted.len());
        let answer = post(&client, &hookd.events_url(), &event(&id)).await;
        if answer.0 != 202 {
            break answer;
        }
        accepted.push(id);
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting 10 s after the disk filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.0, 503, "{:?}", refused.2);
    assert!(refused.1.is_some(), "Retry-After on the 503");
    let message = refused.2["error"]
        .as_str()
        .expect("a JSON error")
        .to_string();
    assert!(message.contains("disk"), "{message}");
    assert!(metric(&hookd, "hookd_ingest_refused_total{reason=\"disk_full\"}").await >= 1.0);
    assert!(metric(&hookd, "hookd_store_free_bytes").await < (6 << 20) as f64);
    assert!(hookd.process.stderr().contains("disk is nearly full"));

    // Space returns: ingest accepts again by itself, and everything acknowledged is delivered.
    std::fs::remove_file(&filler).expect("remove the filler");
    wait_until(
        "ingest to accept again",
        Duration::from_secs(10),
        || async {
            let answer = post(&client, &hookd.events_url(), &event("job-after")).await;
            (answer.0 == 202).then_some(())
        },
    )
    .await;
    accepted.push("job-after".to_string());
    let expected: HashSet<String> = accepted.into_iter().collect();
    wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(20),
        || async { expected.is_subset(&received_ids(&receiver)).then_some(()) },
    )
    .await;
    drop(hookd);
    drop(fs);
}

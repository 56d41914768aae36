//! Observability: `/metrics` passes `promtool check metrics`, has every metric name and label
//! the SPEC promises and tells the truth; the Prometheus and Grafana files in `deploy/` are valid
//! and use only metrics hookd exports; `/livez` and `/readyz` behave, draining included; and no
//! secret reaches a log line, a metric, an API answer or an error.
//!
//! `promtool` is required: without it these tests fail (they never skip) and say how to get it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use crate::support::admin::{Admin, Answer};
use crate::support::app::{spawn_app, TestApp};
use crate::support::cli::Cli;
use crate::support::events::{
    delivery_toml, event, metric, refused_url, spawn_app_with_api, subscription_toml,
};
use crate::support::process::{self, launch_command, wait_until_opt, ChildGuard};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::slow_receiver::SlowReceiver;
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(5);

/// A `[[subscription]]` timeout short enough for a fast test, long enough for loopback.
const SLOW_TIMEOUT: Duration = Duration::from_millis(400);

// ------------------------------------------------------------------ promtool

struct ToolRun {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl ToolRun {
    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `$PROMTOOL`, or `promtool` from `PATH`.
fn promtool_program() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string())
}

/// Runs promtool with `args` in the repository root, with `stdin` piped in when given.
/// Panics, naming the way to install it, when promtool is missing: these tests do not skip.
async fn promtool(args: &[&str], stdin: Option<&str>) -> ToolRun {
    let program = promtool_program();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool not found ({program:?}). These tests need it: run \
             scripts/test-deps.sh (it installs Debian's `prometheus` package, which has \
             promtool), or install promtool from https://prometheus.io/download/ and put it on \
             PATH, or set PROMTOOL=/path/to/promtool"
        ),
        Err(e) => panic!("cannot run {program:?}: {e}"),
    };
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .await
            .expect("write promtool's stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("promtool {args:?} did not finish within 30s"))
        .expect("promtool's output");
    ToolRun {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// ------------------------------------------------------------------ the exposition format

#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Default)]
struct Exposition {
    /// Family name -> `counter`, `gauge`, `histogram`...
    types: HashMap<String, String>,
    helps: HashSet<String>,
    series: Vec<Series>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                out.types.insert(name.to_string(), kind.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                out.helps.insert(name.to_string());
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                out.series.push(parse_series(line));
            }
        }
        out
    }

    /// The family a series belongs to: `x_bucket`, `x_sum` and `x_count` belong to histogram `x`.
    fn family_of<'a>(&self, name: &'a str) -> &'a str {
        if self.types.contains_key(name) {
            return name;
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                ) {
                    return base;
                }
            }
        }
        name
    }

    fn of(&self, name: &str) -> Vec<&Series> {
        self.series.iter().filter(|s| s.name == name).collect()
    }

    /// `label value -> sample value` over the series of `name` (which must have `label`).
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.of(name) {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }

    /// `(label a, label b) -> value` over the series of `name`.
    /// Non-zero samples of `name` by two labels (hookd creates each subscription's series at
    /// zero; `metric_values_match_what_receivers_and_clients_saw` checks that they exist).
    fn by_labels(&self, name: &str, a: &str, b: &str) -> BTreeMap<(String, String), f64> {
        let mut out = BTreeMap::new();
        for s in self.of(name).into_iter().filter(|s| s.value != 0.0) {
            let key = (
                s.labels.get(a).cloned().unwrap_or_default(),
                s.labels.get(b).cloned().unwrap_or_default(),
            );
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }
}

/// One sample line: `name{a="x",b="y"} value [timestamp]`.
fn parse_series(line: &str) -> Series {
    let bad = || -> ! { panic!("cannot parse the metrics line {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            let Some(&(start, c)) = chars.peek() else {
                bad()
            };
            if c == '}' {
                break start + 1;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bad();
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => bad(),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                bad();
            }
            labels.insert(key.trim().to_string(), value);
        };
        rest = &after[end..];
    }
    let value_text = rest.split_whitespace().next().unwrap_or_else(|| bad());
    let value = value_text
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("bad value {value_text:?} in {line:?}: {e}"));
    Series {
        name,
        labels,
        value,
    }
}

// ------------------------------------------------------------------ a scenario with traffic

const SCENARIO_SECRET: &str = "obs-subscription-secret";
const SCENARIO_ADHOC_SECRET: &str = "obs-adhoc-secret";
/// The configured subscriptions of the scenario.
const SCENARIO_SUBSCRIPTIONS: [&str; 5] = ["ok", "flaky", "slow", "down", "picky"];
const REQUEST_IDS: [&str; 5] = [
    "obs-req-1",
    "obs-req-2",
    "obs-req-3",
    "obs-req-4",
    "obs-req-5",
];

/// hookd after some traffic: deliveries that succeed, fail with 500 then succeed, time out,
/// cannot connect, get 404 and go dead, and one to a per-request `webhook_url`.
struct Scenario {
    app: TestApp,
    /// Answers 200: subscription `ok` (job.completed).
    ok: TestReceiver,
    /// Answers the first request 500, then 200: subscription `flaky` (job.completed).
    flaky: TestReceiver,
    /// Never answers (the attempt times out): subscription `slow` (job.failed).
    slow: TestReceiver,
    /// Answers 404: subscription `picky` (job.cancelled), retried after 300 ms.
    picky: TestReceiver,
    /// The per-request target of obs-req-2.
    adhoc: TestReceiver,
    /// The port of subscription `down` (job.failed), on which nothing listens.
    down_url: String,
    /// The status of every ingest answer the test got.
    codes: Vec<u16>,
    /// A scrape taken while an attempt to `slow` was in flight.
    during_in_flight: String,
    /// A scrape taken while `picky`'s retry was scheduled.
    during_scheduled: String,
    /// When the first event was posted.
    started: Instant,
    /// The scrape after every delivery finished.
    metrics: String,
}

async fn run_scenario() -> Scenario {
    let ok = TestReceiver::start().await;
    let flaky = TestReceiver::start().await;
    flaky.plan([Reply::Status(500)]);
    let slow = TestReceiver::start().await;
    slow.set_default(Reply::Hang);
    let picky = TestReceiver::start().await;
    picky.set_default(Reply::Status(404));
    let adhoc = TestReceiver::start().await;
    let down_url = refused_url();
    // Two attempts each (one retry, at once); picky waits 300 ms for its retry.
    let config = [
        delivery_toml(&["0s"], "jitter = 0.0"),
        subscription_toml("ok", &ok.url(), SCENARIO_SECRET, &["job.completed"], ""),
        subscription_toml(
            "flaky",
            &flaky.url(),
            SCENARIO_SECRET,
            &["job.completed"],
            "",
        ),
        subscription_toml(
            "slow",
            &slow.url(),
            SCENARIO_SECRET,
            &["job.failed"],
            &format!("timeout = \"{}ms\"", SLOW_TIMEOUT.as_millis()),
        ),
        subscription_toml("down", &down_url, SCENARIO_SECRET, &["job.failed"], ""),
        subscription_toml(
            "picky",
            &picky.url(),
            SCENARIO_SECRET,
            &["job.cancelled"],
            "retry_schedule = [\"300ms\"]",
        ),
    ]
    .concat();
    let app = spawn_app(&config).await;
    let started = Instant::now();
    let mut codes = Vec::new();

    let mut expect = |code: u16, got: (u16, Value), what: &str| {
        assert_eq!(got.0, code, "{what}: {}", got.1);
        codes.push(got.0);
    };
    expect(
        202,
        app.post(&event(REQUEST_IDS[0], "completed")).await,
        "a new job.completed event",
    );
    let mut with_target = event(REQUEST_IDS[1], "completed");
    with_target["webhook_url"] = json!(adhoc.url());
    with_target["webhook_secret"] = json!(SCENARIO_ADHOC_SECRET);
    expect(
        202,
        app.post(&with_target).await,
        "an event with a webhook_url",
    );
    expect(
        202,
        app.post(&event(REQUEST_IDS[2], "failed")).await,
        "a job.failed event",
    );
    let during_in_flight = wait_until(
        "hookd_deliveries_pending{state=\"in_flight\"} >= 1 while slow holds an attempt",
        DEADLINE,
        || async {
            if slow.received().is_empty() {
                return None;
            }
            let text = app.metrics_text().await;
            (metric(&text, "hookd_deliveries_pending", &[("state", "in_flight")])? >= 1.0)
                .then_some(text)
        },
    )
    .await;
    expect(
        202,
        app.post(&event(REQUEST_IDS[3], "cancelled")).await,
        "a job.cancelled event",
    );
    let during_scheduled = wait_until(
        "hookd_deliveries_pending{state=\"scheduled\"} >= 1 while picky's retry waits",
        DEADLINE,
        || async {
            if picky.received().is_empty() {
                return None;
            }
            let text = app.metrics_text().await;
            (metric(&text, "hookd_deliveries_pending", &[("state", "scheduled")])? >= 1.0)
                .then_some(text)
        },
    )
    .await;
    expect(
        200,
        app.post(&event(REQUEST_IDS[0], "completed")).await,
        "the same event again",
    );
    expect(
        422,
        app.post(&json!({ "request_id": REQUEST_IDS[4] })).await,
        "an event without status",
    );
    expect(
        400,
        app.post_raw("{\"request_id\": ").await,
        "malformed JSON",
    );

    // ok 2, flaky 2, adhoc 1, slow 1, down 1, picky 1.
    wait_until("all 8 deliveries to finish", DEADLINE, || async {
        let all = list_deliveries(&app.admin()).await;
        let finished = all
            .iter()
            .filter(|d| matches!(d["state"].as_str(), Some("delivered" | "dead")))
            .count();
        (all.len() == 8 && finished == 8).then_some(())
    })
    .await;
    let metrics = app.metrics_text().await;
    Scenario {
        app,
        ok,
        flaky,
        slow,
        picky,
        adhoc,
        down_url,
        codes,
        during_in_flight,
        during_scheduled,
        started,
        metrics,
    }
}

/// `GET /v1/deliveries?limit=1000` (one page is enough for these tests).
async fn list_deliveries(admin: &Admin) -> Vec<Value> {
    let (status, value) = admin.get("/v1/deliveries?limit=1000").await;
    assert_eq!(status, 200, "GET /v1/deliveries: {value}");
    assert!(value["next_cursor"].is_null(), "one page: {value}");
    value["deliveries"].as_array().cloned().unwrap_or_default()
}

/// A GET with an optional bearer token: the status and the body text.
async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("response body"))
}

/// A POST of `body` (JSON text) with an optional bearer token: the status and the body text.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("response body"))
}

/// Counts of distinct `X-Abstrakt-Delivery` ids a receiver saw.
fn distinct_deliveries(receiver: &TestReceiver) -> usize {
    receiver
        .received()
        .iter()
        .map(|r| r.header("x-abstrakt-delivery").to_string())
        .collect::<HashSet<_>>()
        .len()
}

// ------------------------------------------------------------------ 1. lint, names, labels

/// The metrics the SPEC names: type and label names (histograms add `le` to `_bucket`).
const SPEC_METRICS: [(&str, &str, &[&str]); 8] = [
    ("hookd_events_received_total", "counter", &["event_type"]),
    (
        "hookd_delivery_attempts_total",
        "counter",
        &["subscription", "outcome"],
    ),
    (
        "hookd_deliveries_total",
        "counter",
        &["subscription", "result"],
    ),
    (
        "hookd_delivery_attempt_duration_seconds",
        "histogram",
        &["subscription"],
    ),
    ("hookd_delivery_lag_seconds", "histogram", &["subscription"]),
    ("hookd_deliveries_pending", "gauge", &["state"]),
    ("hookd_oldest_pending_delivery_age_seconds", "gauge", &[]),
    ("hookd_build_info", "gauge", &["version"]),
];

/// Metrics beyond the SPEC that the dashboard and docs/operations.md use.
const OTHER_METRICS: [(&str, &str, &[&str]); 4] = [
    ("hookd_ingest_requests_total", "counter", &["code"]),
    (
        "hookd_ingest_request_duration_seconds",
        "histogram",
        &["code"],
    ),
    ("hookd_store_size_bytes", "gauge", &[]),
    ("hookd_subscriptions_paused", "gauge", &[]),
];

fn assert_family(exposition: &Exposition, name: &str, kind: &str, labels: &[&str]) {
    assert_eq!(
        exposition.types.get(name).map(String::as_str),
        Some(kind),
        "# TYPE of {name}"
    );
    assert!(exposition.helps.contains(name), "{name} has no # HELP");
    let expected: BTreeSet<&str> = labels.iter().copied().collect();
    let names: Vec<String> = if kind == "histogram" {
        vec![
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        ]
    } else {
        vec![name.to_string()]
    };
    for series_name in names {
        let series = exposition.of(&series_name);
        assert!(!series.is_empty(), "no {series_name} series");
        for s in series {
            let mut want = expected.clone();
            if series_name.ends_with("_bucket") {
                want.insert("le");
            }
            let got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            assert_eq!(got, want, "label names of {series_name}: {s:?}");
        }
    }
}

#[tokio::test]
async fn metrics_pass_promtool_and_have_every_spec_name_and_label() {
    let s = run_scenario().await;
    for (what, text) in [
        ("after the traffic", &s.metrics),
        ("during an attempt in flight", &s.during_in_flight),
    ] {
        let run = promtool(&["check", "metrics"], Some(text)).await;
        assert!(
            run.success && run.stdout.trim().is_empty() && run.stderr.trim().is_empty(),
            "`promtool check metrics` complains about /metrics {what}:\n{}\n--- /metrics ---\n{text}",
            run.describe()
        );
    }

    let exposition = Exposition::parse(&s.metrics);
    for (name, kind, labels) in SPEC_METRICS.iter().chain(OTHER_METRICS.iter()) {
        assert_family(&exposition, name, kind, labels);
    }
    // Every series belongs to a family with a TYPE, and every family has the hookd_ prefix.
    for series in &exposition.series {
        let family = exposition.family_of(&series.name);
        assert!(
            exposition.types.contains_key(family),
            "{} has no # TYPE",
            series.name
        );
        assert!(
            family.starts_with("hookd_"),
            "{family} lacks the hookd_ prefix"
        );
    }

    let build = exposition.of("hookd_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        build[0].labels["version"],
        env!("CARGO_PKG_VERSION"),
        "build_info version"
    );
    assert_eq!(build[0].value, 1.0, "hookd_build_info is always 1");

    let states: BTreeSet<&str> = exposition
        .of("hookd_deliveries_pending")
        .iter()
        .map(|s| s.labels["state"].as_str())
        .collect();
    assert_eq!(
        states,
        BTreeSet::from(["in_flight", "ready", "scheduled"]),
        "hookd_deliveries_pending states"
    );

    // Bounded label values only.
    let subscriptions: BTreeSet<&str> = SCENARIO_SUBSCRIPTIONS
        .iter()
        .copied()
        .chain(["adhoc"])
        .collect();
    let outcomes = [
        "success", "http_4xx", "http_5xx", "timeout", "connect", "other",
    ];
    for series in &exposition.series {
        for (label, value) in &series.labels {
            let ok = match label.as_str() {
                "subscription" => subscriptions.contains(value.as_str()),
                "outcome" => outcomes.contains(&value.as_str()),
                "result" => ["delivered", "dead"].contains(&value.as_str()),
                // The PostgreSQL engine's pool (no series on sled).
                "state" if series.name == "hookd_store_pool_connections" => {
                    ["open", "idle", "waiting"].contains(&value.as_str())
                }
                "state" => ["ready", "scheduled", "in_flight"].contains(&value.as_str()),
                "event_type" => value.strip_prefix("job.").is_some_and(|status| {
                    (1..=32).contains(&status.len())
                        && status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                }),
                "code" => value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()),
                "le" => value == "+Inf" || value.parse::<f64>().is_ok(),
                "version" => value == env!("CARGO_PKG_VERSION"),
                _ => true,
            };
            assert!(
                ok,
                "unexpected value {value:?} of label {label:?} in {series:?}"
            );
            let forbidden = ["://", "127.0.0.1", "localhost", "/hook", "evt_", "dlv_"]
                .into_iter()
                .chain(REQUEST_IDS)
                .chain([SCENARIO_SECRET, SCENARIO_ADHOC_SECRET]);
            for needle in forbidden {
                assert!(
                    !value.contains(needle),
                    "label {label}={value:?} of {} contains {needle:?}: a URL, id or secret is \
                     never a label value",
                    series.name
                );
            }
        }
    }
    // Per-request targets are one label value, whatever their URL.
    assert_eq!(
        metric(
            &s.metrics,
            "hookd_delivery_attempts_total",
            &[("subscription", "adhoc"), ("outcome", "success")]
        ),
        Some(1.0),
        "the webhook_url delivery counts under subscription=\"adhoc\"\n{}",
        s.metrics
    );
    assert!(
        !s.metrics.contains(&s.down_url) && !s.metrics.contains(&s.adhoc.url()),
        "a target URL appears in /metrics"
    );
}

// ------------------------------------------------------------------ 2. the values are true

#[tokio::test]
async fn metric_values_match_what_receivers_and_clients_saw() {
    let s = run_scenario().await;
    let m = Exposition::parse(&s.metrics);

    // What the receivers saw, checked against the plan first so the comparison means something.
    let ok_seen = s.ok.received().len();
    let flaky_seen = s.flaky.received().len();
    let slow_seen = s.slow.received().len();
    let picky_seen = s.picky.received().len();
    let adhoc_seen = s.adhoc.received().len();
    assert_eq!(
        (ok_seen, flaky_seen, slow_seen, picky_seen, adhoc_seen),
        (2, 3, 2, 2, 1),
        "requests at ok, flaky (500 then 200s), slow, picky, adhoc"
    );

    // Every attempt as the admin API records it, by (subscription, outcome); finished
    // deliveries by (subscription, state).
    let deliveries = list_deliveries(&s.app.admin()).await;
    let mut attempts: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut finished: BTreeMap<(String, String), f64> = BTreeMap::new();
    for d in &deliveries {
        let id = d["id"].as_str().expect("delivery id");
        let subscription = d["subscription"]
            .as_str()
            .expect("subscription")
            .to_string();
        let state = d["state"].as_str().expect("state").to_string();
        *finished.entry((subscription.clone(), state)).or_default() += 1.0;
        let (status, shown) = s.app.admin().get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "{shown}");
        for a in shown["attempt_history"]
            .as_array()
            .expect("attempt_history")
        {
            let outcome = a["outcome"].as_str().expect("outcome").to_string();
            *attempts.entry((subscription.clone(), outcome)).or_default() += 1.0;
        }
    }
    let expected_attempts: BTreeMap<(String, String), f64> = [
        ("ok", "success", ok_seen),
        ("flaky", "http_5xx", 1),
        ("flaky", "success", flaky_seen - 1),
        ("slow", "timeout", slow_seen),
        ("picky", "http_4xx", picky_seen),
        ("adhoc", "success", adhoc_seen),
        // Nothing listens: two refused connections, seen by no receiver.
        ("down", "connect", 2),
    ]
    .into_iter()
    .map(|(s, o, n)| ((s.to_string(), o.to_string()), n as f64))
    .collect();
    assert_eq!(
        attempts, expected_attempts,
        "the admin API's attempt history disagrees with the receivers"
    );
    assert_eq!(
        m.by_labels("hookd_delivery_attempts_total", "subscription", "outcome"),
        expected_attempts,
        "hookd_delivery_attempts_total{{subscription,outcome}}"
    );
    // Every subscription's series exist from the start, at zero where nothing happened, so
    // that `increase()` sees a first failure as a change.
    for subscription in ["ok", "flaky", "slow", "picky", "down", "adhoc"] {
        for outcome in [
            "success", "http_4xx", "http_5xx", "timeout", "connect", "other",
        ] {
            assert!(
                m.of("hookd_delivery_attempts_total").iter().any(|s| {
                    s.labels.get("subscription").map(String::as_str) == Some(subscription)
                        && s.labels.get("outcome").map(String::as_str) == Some(outcome)
                }),
                "no hookd_delivery_attempts_total series for {subscription}/{outcome}"
            );
        }
    }

    let expected_finished: BTreeMap<(String, String), f64> = [
        ("ok", "delivered", distinct_deliveries(&s.ok)),
        ("flaky", "delivered", distinct_deliveries(&s.flaky)),
        ("adhoc", "delivered", distinct_deliveries(&s.adhoc)),
        ("slow", "dead", distinct_deliveries(&s.slow)),
        ("picky", "dead", distinct_deliveries(&s.picky)),
        ("down", "dead", 1),
    ]
    .into_iter()
    .map(|(s, r, n)| ((s.to_string(), r.to_string()), n as f64))
    .collect();
    assert_eq!(
        finished, expected_finished,
        "finished deliveries (admin API) vs receivers"
    );
    assert_eq!(
        m.by_labels("hookd_deliveries_total", "subscription", "result"),
        expected_finished,
        "hookd_deliveries_total{{subscription,result}}"
    );

    // Histograms: one duration observation per attempt, one lag observation per delivery.
    let mut attempts_per_subscription: BTreeMap<String, f64> = BTreeMap::new();
    for ((subscription, _), n) in &expected_attempts {
        *attempts_per_subscription
            .entry(subscription.clone())
            .or_default() += n;
    }
    let duration_count = m.by_label(
        "hookd_delivery_attempt_duration_seconds_count",
        "subscription",
    );
    assert_eq!(
        duration_count, attempts_per_subscription,
        "hookd_delivery_attempt_duration_seconds_count is the number of attempts"
    );
    let delivered: BTreeMap<String, f64> = expected_finished
        .iter()
        .filter(|((_, r), _)| r == "delivered")
        .map(|((s, _), n)| (s.clone(), *n))
        .collect();
    assert_eq!(
        m.by_label("hookd_delivery_lag_seconds_count", "subscription"),
        delivered,
        "hookd_delivery_lag_seconds_count is the number of delivered deliveries"
    );
    for (histogram, counts) in [
        ("hookd_delivery_attempt_duration_seconds", &duration_count),
        ("hookd_delivery_lag_seconds", &delivered),
    ] {
        for (subscription, count) in counts {
            let inf = metric(
                &s.metrics,
                &format!("{histogram}_bucket"),
                &[("subscription", subscription), ("le", "+Inf")],
            );
            assert_eq!(
                inf,
                Some(*count),
                "{histogram}_bucket{{le=\"+Inf\"}} for {subscription}"
            );
        }
    }
    // A timed-out attempt lasts at least its timeout; lags are within the test's run time.
    let slow_duration = metric(
        &s.metrics,
        "hookd_delivery_attempt_duration_seconds_sum",
        &[("subscription", "slow")],
    )
    .expect("slow's duration sum");
    assert!(
        slow_duration >= 2.0 * SLOW_TIMEOUT.as_secs_f64() * 0.99
            && slow_duration < 2.0 * SLOW_TIMEOUT.as_secs_f64() + 2.0,
        "two timed-out attempts of {SLOW_TIMEOUT:?} took {slow_duration}s in the histogram"
    );
    let elapsed = s.started.elapsed().as_secs_f64();
    for subscription in delivered.keys() {
        let lag = metric(
            &s.metrics,
            "hookd_delivery_lag_seconds_sum",
            &[("subscription", subscription)],
        )
        .expect("lag sum");
        assert!(
            (0.0..=elapsed * delivered[subscription]).contains(&lag),
            "lag sum of {subscription} is {lag}s; the test ran {elapsed}s"
        );
    }

    // Events received by type: new events only, repeats and rejects not counted.
    let events: BTreeMap<String, f64> = [
        ("job.completed", 2.0),
        ("job.failed", 1.0),
        ("job.cancelled", 1.0),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    assert_eq!(
        m.by_label("hookd_events_received_total", "event_type"),
        events,
        "hookd_events_received_total{{event_type}}"
    );

    // Ingest answers by code, exactly as the test got them.
    let mut codes: BTreeMap<String, f64> = BTreeMap::new();
    for code in &s.codes {
        *codes.entry(code.to_string()).or_default() += 1.0;
    }
    assert_eq!(
        codes,
        BTreeMap::from([
            ("200".to_string(), 1.0),
            ("202".to_string(), 4.0),
            ("400".to_string(), 1.0),
            ("422".to_string(), 1.0),
        ])
    );
    assert_eq!(
        m.by_label("hookd_ingest_requests_total", "code"),
        codes,
        "hookd_ingest_requests_total{{code}}"
    );
    assert_eq!(
        metric(
            &s.metrics,
            "hookd_ingest_request_duration_seconds_count",
            &[]
        ),
        Some(s.codes.len() as f64),
        "one ingest duration observation per request"
    );

    // The pending gauges: an attempt in flight, a retry waiting, then nothing.
    let oldest_then = metric(
        &s.during_in_flight,
        "hookd_oldest_pending_delivery_age_seconds",
        &[],
    )
    .expect("oldest pending age");
    assert!(
        oldest_then > 0.0 && oldest_then < elapsed,
        "oldest pending age {oldest_then}s while an attempt was in flight (test ran {elapsed}s)"
    );
    assert!(
        metric(
            &s.during_scheduled,
            "hookd_deliveries_pending",
            &[("state", "scheduled")]
        ) >= Some(1.0),
        "hookd_deliveries_pending{{state=\"scheduled\"}} while picky's retry waited"
    );
    for state in ["ready", "scheduled", "in_flight"] {
        assert_eq!(
            metric(&s.metrics, "hookd_deliveries_pending", &[("state", state)]),
            Some(0.0),
            "hookd_deliveries_pending{{state={state:?}}} once everything finished"
        );
    }
    assert_eq!(
        metric(&s.metrics, "hookd_oldest_pending_delivery_age_seconds", &[]),
        Some(0.0),
        "no pending delivery, age 0"
    );
    assert_eq!(
        metric(&s.metrics, "hookd_subscriptions_paused", &[]),
        Some(0.0)
    );
    assert!(metric(&s.metrics, "hookd_store_size_bytes", &[]) > Some(0.0));
}

/// `hookd_ingest_requests_total` is documented as "POST /v1/events requests by HTTP status
/// code": a request turned away for its token is one of them. Operators watch this metric (and
/// the dashboard's "Ingest requests by code" panel) to see a job runner with a wrong or expired
/// token, whose every event is refused.
#[tokio::test]
async fn ingest_requests_total_counts_requests_refused_for_their_token() {
    let app = spawn_app_with_api("tokens = [\"obs-ingest-token\"]\nmax_body_bytes = 200", "").await;
    let events = format!("http://{}/v1/events", app.api);
    let body = event("obs-token-1", "completed").to_string();
    let too_large = event(&"x".repeat(250), "completed").to_string();
    let mut codes: BTreeMap<String, f64> = BTreeMap::new();
    for (token, body, want) in [
        (None, &body, 401),
        (Some("wrong-token"), &body, 401),
        (Some("obs-ingest-token"), &too_large, 413),
        (Some("obs-ingest-token"), &body, 202),
    ] {
        let (status, text) = post(&app.client, &events, token, body).await;
        assert_eq!(status, want, "{text}");
        *codes.entry(status.to_string()).or_default() += 1.0;
    }
    let exposition = Exposition::parse(&app.metrics_text().await);
    assert_eq!(
        exposition.by_label("hookd_ingest_requests_total", "code"),
        codes,
        "hookd_ingest_requests_total{{code}} after answers {codes:?}: requests refused for \
         their token are not counted"
    );
}

// ------------------------------------------------------------------ 3. the deploy/ files

/// Every `hookd_*` name in `text`, with `_bucket`/`_sum`/`_count` of histograms folded into
/// the histogram's name.
fn referenced_metrics(text: &str, exposition: &Exposition) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("hookd_") {
        let start = i + found;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(exposition.family_of(&text[start..end]).to_string());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn deploy_files_use_only_metrics_hookd_exports() {
    let s = run_scenario().await;
    let exposition = Exposition::parse(&s.metrics);
    let exported: BTreeSet<String> = exposition.types.keys().cloned().collect();
    for file in [
        "deploy/prometheus/hookd-alerts.yml",
        "deploy/prometheus/hookd-alerts.test.yml",
        "deploy/grafana/hookd-dashboard.json",
    ] {
        let used = referenced_metrics(&read_repo_file(file), &exposition);
        assert!(!used.is_empty(), "{file} uses no hookd metric");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics hookd does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
    // The dashboard shows every family the brief asks for.
    let dashboard = referenced_metrics(
        &read_repo_file("deploy/grafana/hookd-dashboard.json"),
        &exposition,
    );
    for name in [
        "hookd_ingest_requests_total",
        "hookd_events_received_total",
        "hookd_delivery_attempts_total",
        "hookd_deliveries_total",
        "hookd_delivery_attempt_duration_seconds",
        "hookd_delivery_lag_seconds",
        "hookd_deliveries_pending",
        "hookd_oldest_pending_delivery_age_seconds",
        "hookd_store_size_bytes",
        "hookd_subscriptions_paused",
        "hookd_subscription_breaker",
    ] {
        assert!(
            dashboard.contains(name),
            "the dashboard does not show {name}"
        );
    }
}

/// GitHub's anchor of a Markdown heading: lowercase, punctuation dropped, spaces to '-'.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[tokio::test]
async fn prometheus_config_and_alert_rules_pass_promtool() {
    let rules = promtool(
        &["check", "rules", "deploy/prometheus/hookd-alerts.yml"],
        None,
    )
    .await;
    assert!(
        rules.success && rules.stdout.contains("SUCCESS: 5 rules found"),
        "promtool check rules:\n{}",
        rules.describe()
    );
    let config = promtool(
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        None,
    )
    .await;
    assert!(
        config.success && config.stdout.contains("SUCCESS: 1 rule files found"),
        "promtool check config (its rule_files are relative to the config file):\n{}",
        config.describe()
    );
    let unit = promtool(
        &["test", "rules", "deploy/prometheus/hookd-alerts.test.yml"],
        None,
    )
    .await;
    assert!(
        unit.success && unit.stdout.contains("SUCCESS") && !unit.stdout.contains("FAILED"),
        "promtool test rules:\n{}",
        unit.describe()
    );

    // The scrape config targets the default metrics listener under job "hookd", which the
    // rules and the dashboard select.
    let scrape = read_repo_file("deploy/prometheus/prometheus.yml");
    assert!(
        scrape.contains("job_name: hookd") && scrape.contains("\"127.0.0.1:9464\""),
        "prometheus.yml scrapes job hookd at 127.0.0.1:9464"
    );

    // Every alert has a summary, a description and a runbook section that exists.
    let alerts = read_repo_file("deploy/prometheus/hookd-alerts.yml");
    let count = |needle: &str| alerts.matches(needle).count();
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(
        names,
        [
            "HookdDeadDeliveries",
            "HookdOldestPendingDeliveryOld",
            "HookdSubscriptionFailing",
            "HookdSubscriptionDisabled",
            "HookdDown"
        ]
    );
    for key in ["summary: ", "description: ", "runbook_url: ", "severity: "] {
        assert_eq!(count(key), names.len(), "every alert has {key:?}");
    }
    let operations = read_repo_file("docs/operations.md");
    let anchors: HashSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    for line in alerts.lines().filter(|l| l.contains("runbook_url: ")) {
        let target = line
            .split("runbook_url: ")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .trim_matches('"');
        let section = target
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("runbook {target:?} does not point into docs/operations.md"));
        assert!(
            anchors.contains(section),
            "runbook {target:?}: docs/operations.md has no such section; it has {anchors:?}"
        );
    }
}

#[tokio::test]
async fn grafana_dashboard_is_importable_and_its_queries_parse() {
    let text = read_repo_file("deploy/grafana/hookd-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["id"].is_null(),
        "an importable dashboard has id null"
    );
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    let ds_ref = format!("${{{}}}", datasource["name"].as_str().expect("name"));

    let mut exprs = Vec::new();
    let check_ds = |what: &str, ds: &Value| {
        assert_eq!(
            ds["uid"].as_str(),
            Some(ds_ref.as_str()),
            "{what} uses the datasource variable"
        );
    };
    for v in variables.iter().filter(|v| v["type"] == "query") {
        check_ds(&format!("variable {}", v["name"]), &v["datasource"]);
    }
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "panel ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        check_ds(title, &panel["datasource"]);
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            check_ds(title, &t["datasource"]);
            let expr = t["expr"].as_str().expect("expr");
            exprs.push((title.to_string(), expr.to_string()));
        }
    }
    assert!(exprs.len() >= 10, "{} queries", exprs.len());

    // PromQL syntax, through promtool: each query (Grafana's variables replaced) as a
    // recording rule.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let concrete = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*")
            .replace("$subscription", ".*");
        assert!(!concrete.contains('$'), "an unknown variable in {expr:?}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&concrete).expect("a JSON string is a YAML string")
        ));
    }
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, &rules).expect("write rules");
    let run = promtool(
        &["check", "rules", path.to_str().expect("utf-8 path")],
        None,
    )
    .await;
    assert!(
        run.success,
        "a dashboard query is not valid PromQL:\n{}\n{rules}",
        run.describe()
    );
}

// ------------------------------------------------------------------ 4. health

#[tokio::test]
async fn livez_and_readyz_while_running_and_while_draining() {
    let receiver = SlowReceiver::start(Duration::from_secs(1)).await;
    let mut app = spawn_app(&subscription_toml(
        "held",
        &receiver.url(),
        "health-secret",
        &["*"],
        "",
    ))
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let metrics = app.metrics;
    let status = |path: &'static str| {
        let client = client.clone();
        let target = format!("http://{metrics}{path}");
        async move {
            client
                .get(&target)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(status("/livez").await, Ok(200), "/livez while running");
    assert_eq!(status("/readyz").await, Ok(200), "/readyz while running");

    let (code, body) = app.post(&event("health-1", "completed")).await;
    assert_eq!(code, 202, "{body}");
    wait_until(
        "the slow receiver to hold the attempt",
        DEADLINE,
        || async { (!receiver.requests().is_empty()).then_some(()) },
    )
    .await;
    app.shutdown.cancel();
    wait_until(
        "/readyz to answer 503 during the drain",
        Duration::from_secs(2),
        || async { (status("/readyz").await == Ok(503)).then_some(()) },
    )
    .await;
    // Still draining: the attempt has not been answered, and the process is alive.
    assert!(
        receiver.requests()[0].answered.is_none(),
        "the held attempt was answered before /readyz turned 503: the 503 was not seen during \
         the drain"
    );
    assert_eq!(status("/livez").await, Ok(200), "/livez while draining");
    let handle = app.handle.take().expect("app task");
    let result = tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("hookd stops once the held attempt is answered")
        .expect("app task");
    result.expect("hookd stops cleanly");
    assert!(
        receiver.requests()[0].answered.is_some(),
        "hookd waited for the attempt in flight"
    );
    assert!(
        status("/readyz").await.is_err(),
        "the metrics listener closes when hookd has stopped"
    );
}

// ------------------------------------------------------------------ 5. secrets

const SUB_SECRET: &str = "s3cr3t-VALUE-zz";
const ADHOC_SECRET: &str = "adhoc-SECRET-qq";
const TOKEN: &str = "tok3n-VALUE-yy";
const SECRETS: [&str; 3] = [SUB_SECRET, ADHOC_SECRET, TOKEN];
/// An environment variable no test sets.
const UNSET_ENV: &str = "HOOKD_OBS_SURELY_UNSET_SECRET";

/// The lowercase hex HMAC-SHA256 a receiver expects.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Panics when `text` (from `source`) contains a secret, showing the line.
fn assert_no_secret(source: &str, text: &str) {
    for secret in SECRETS {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{source} shows the secret {secret:?}:\n{line}");
        }
    }
}

/// The `hookd` binary with the test's environment: `RUST_LOG=debug`, the token variable set,
/// nothing inherited that could change its behaviour (under systemd hookd would write
/// journald's format; these tests read the plain one), [`UNSET_ENV`] unset.
fn hookd_command(args: &[&str]) -> Command {
    let mut command = process::hookd_command(args);
    command
        .env_remove(UNSET_ENV)
        .env("HOOKD_TEST_TOKEN", TOKEN)
        .env("RUST_LOG", "debug");
    command
}

/// A running `hookd run --config <dir>/hookd.toml`, killed on drop.
struct Daemon {
    process: ChildGuard,
    api: SocketAddr,
    metrics: SocketAddr,
    config_path: PathBuf,
}

/// Writes the config (loopback listeners on port 0, a token from `$HOOKD_TEST_TOKEN`, the
/// store in `dir/db`, then `extra`) and starts the binary with the tests' one launcher.
async fn start_daemon(dir: &Path, extra: &str, json_logs: bool) -> Daemon {
    let config_path = dir.join("hookd.toml");
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntokens = [{{ env = \"HOOKD_TEST_TOKEN\" }}]\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n{extra}\n{}",
        dir.join("db").display().to_string(),
        crate::support::LOOPBACK_TARGETS
    );
    std::fs::write(&config_path, &text).expect("write hookd.toml");
    let config = config_path.to_str().expect("utf-8 path");
    let mut args = vec!["run", "--config", config];
    if json_logs {
        args.extend(["--log-format", "json"]);
    }
    match launch_command(hookd_command(&args)).await {
        Ok((process, api, metrics)) => Daemon {
            process,
            api,
            metrics,
            config_path,
        },
        Err(stderr) => panic!("hookd exited before it was ready; stderr:\n{stderr}"),
    }
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// SIGTERM, a clean exit, and everything hookd wrote to stderr.
    async fn stop(&mut self) -> String {
        self.process.signal("TERM");
        let status = self.process.wait_exit(DEADLINE).await;
        assert!(
            status.success(),
            "hookd exited with {status}; stderr:\n{}",
            self.process.stderr_tail(4000)
        );
        // The process has exited; its stderr reader drains the pipe. Done when the text has
        // the last line, ends with a newline and did not grow since the previous poll.
        let mut previous = String::new();
        wait_until_opt(Duration::from_secs(2), || {
            let text = self.process.stderr();
            let done = text.contains("hookd stopped") && text.ends_with('\n') && text == previous;
            previous = text;
            done.then(|| previous.clone())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no \"hookd stopped\" line; stderr tail:\n{}",
                self.process.stderr_tail(4000)
            )
        })
    }
}

/// What the secret-hygiene runs collect.
struct SecretRun {
    stderr: String,
    stdout: Vec<String>,
    /// `(what, body)` of every API answer, /metrics included.
    answers: Vec<(String, String)>,
}

/// Runs the real binary with secrets in its config and its events, causes successful, failing
/// and dead deliveries and a handful of 4xx answers, and collects everything it said.
async fn secret_run(json_logs: bool) -> SecretRun {
    let good = TestReceiver::start().await;
    let flaky = TestReceiver::start().await;
    flaky.plan([Reply::Status(500)]);
    let adhoc = TestReceiver::start().await;
    let gone = refused_url();
    let adhoc_gone = refused_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = [
        delivery_toml(&["0s"], "jitter = 0.0"),
        subscription_toml("good", &good.url(), SUB_SECRET, &["*"], ""),
        subscription_toml("flaky", &flaky.url(), SUB_SECRET, &["job.completed"], ""),
        subscription_toml("gone", &gone, SUB_SECRET, &["job.failed"], ""),
    ]
    .concat();
    let mut daemon = start_daemon(dir.path(), &extra, json_logs).await;
    let client = reqwest::Client::new();
    let admin = Admin::new(daemon.api, client.clone()).token(Some(TOKEN));
    let mut answers: Vec<(String, String)> = Vec::new();
    let events = daemon.url("/v1/events");

    // Accepted: good + flaky + a per-request target; good + gone + a refused per-request one.
    let completed = json!({
        "request_id": "sec-1", "status": "completed",
        "webhook_url": adhoc.url(), "webhook_secret": ADHOC_SECRET,
    });
    let failed = json!({
        "request_id": "sec-2", "status": "failed",
        "webhook_url": adhoc_gone, "webhook_secret": ADHOC_SECRET,
    });
    for e in [&completed, &failed] {
        let (status, body) = post(&client, &events, Some(TOKEN), &e.to_string()).await;
        assert_eq!(status, 202, "{body}");
        answers.push((format!("POST /v1/events {}", e["request_id"]), body));
    }

    // Rejected: no token, a wrong token, a bad webhook_url, a secret without a URL, the same
    // event with another secret (409), unknown ids and bad queries.
    let mut different_secret = completed.clone();
    different_secret["webhook_secret"] = json!(format!("{ADHOC_SECRET}-2"));
    let bad_url = json!({
        "request_id": "sec-3", "status": "completed",
        "webhook_url": "ftp://127.0.0.1/x", "webhook_secret": ADHOC_SECRET,
    });
    let secret_alone = json!({
        "request_id": "sec-4", "status": "completed", "webhook_secret": ADHOC_SECRET,
    });
    let rejected: Vec<(&str, String, Option<&str>, String, u16)> = vec![
        ("POST", events.clone(), None, completed.to_string(), 401),
        (
            "POST",
            events.clone(),
            Some("not-the-token"),
            completed.to_string(),
            401,
        ),
        (
            "POST",
            events.clone(),
            Some(TOKEN),
            bad_url.to_string(),
            422,
        ),
        (
            "POST",
            events.clone(),
            Some(TOKEN),
            secret_alone.to_string(),
            422,
        ),
        (
            "POST",
            events.clone(),
            Some(TOKEN),
            different_secret.to_string(),
            409,
        ),
        (
            "POST",
            events.clone(),
            Some(TOKEN),
            format!("{{\"webhook_secret\": \"{ADHOC_SECRET}\""),
            400,
        ),
        (
            "GET",
            daemon.url("/v1/deliveries"),
            None,
            String::new(),
            401,
        ),
        (
            "GET",
            daemon.url("/v1/deliveries/dlv_nope"),
            Some(TOKEN),
            String::new(),
            404,
        ),
        (
            "GET",
            daemon.url("/v1/deliveries?status=bogus"),
            Some(TOKEN),
            String::new(),
            400,
        ),
        (
            "POST",
            daemon.url("/v1/subscriptions/nope/pause"),
            Some(TOKEN),
            String::new(),
            404,
        ),
        (
            "POST",
            daemon.url("/v1/deliveries/retry"),
            Some(TOKEN),
            format!("{{\"subscription\": \"good\", \"since\": \"{SUB_SECRET}\"}}"),
            400,
        ),
    ];
    for (method, url, token, body, want) in rejected {
        let (status, text) = if method == "GET" {
            get(&client, &url, token).await
        } else {
            post(&client, &url, token, &body).await
        };
        assert_eq!(status, want, "{method} {url} {body}: {text}");
        answers.push((format!("{status} from {method} {url}"), text));
    }

    // good 2, flaky 1 (after a 500), gone 1 dead, adhoc 1 delivered, adhoc 1 dead.
    let finished = wait_until("all 6 deliveries to finish", DEADLINE, || async {
        let all = list_deliveries(&admin).await;
        let done = all
            .iter()
            .filter(|d| matches!(d["state"].as_str(), Some("delivered" | "dead")))
            .count();
        (all.len() == 6 && done == 6).then_some(all)
    })
    .await;
    let states: BTreeMap<(String, String), usize> =
        finished.iter().fold(BTreeMap::new(), |mut acc, d| {
            let key = (
                d["subscription"].as_str().unwrap_or_default().to_string(),
                d["state"].as_str().unwrap_or_default().to_string(),
            );
            *acc.entry(key).or_default() += 1;
            acc
        });
    let expected: BTreeMap<(String, String), usize> = [
        ("good", "delivered", 2),
        ("flaky", "delivered", 1),
        ("gone", "dead", 1),
        ("adhoc", "delivered", 1),
        ("adhoc", "dead", 1),
    ]
    .into_iter()
    .map(|(s, st, n)| ((s.to_string(), st.to_string()), n))
    .collect();
    assert_eq!(states, expected, "deliveries by subscription and state");
    // The secrets were in use: receivers got signatures made with them.
    for (receiver, secret) in [
        (&good, SUB_SECRET),
        (&flaky, SUB_SECRET),
        (&adhoc, ADHOC_SECRET),
    ] {
        for r in receiver.received() {
            assert_eq!(
                r.header("x-abstrakt-signature"),
                signature(secret, &r.body),
                "a delivery signed with the configured secret"
            );
        }
    }

    // Every admin answer: lists, each delivery with its attempts, subscriptions; and /metrics.
    let Answer {
        status, text: body, ..
    } = admin
        .send(reqwest::Method::GET, "/v1/deliveries", None)
        .await;
    assert_eq!(status, 200);
    answers.push(("GET /v1/deliveries".into(), body));
    for d in &finished {
        let id = d["id"].as_str().expect("id");
        let path = format!("/v1/deliveries/{id}");
        let Answer {
            status, text: body, ..
        } = admin.send(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        answers.push((format!("GET {path}"), body));
    }
    let Answer {
        status, text: body, ..
    } = admin
        .send(reqwest::Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("secret_fingerprint"),
        "subscriptions list: {body}"
    );
    answers.push(("GET /v1/subscriptions".into(), body));
    let (status, body) = get(&client, &format!("http://{}/metrics", daemon.metrics), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("hookd_deliveries_total"), "{body}");
    answers.push(("/metrics".into(), body));

    // The CLI, as an operator runs it: it reads the token from the config.
    // The config says port 0: the CLI takes the address hookd logged, and the token from the
    // config.
    let config = daemon.config_path.to_str().expect("utf-8 path").to_string();
    let url = format!("http://{}", daemon.api);
    for args in [
        vec!["subscriptions", "list", "--config", &config, "--url", &url],
        vec![
            "deliveries",
            "list",
            "--config",
            &config,
            "--url",
            &url,
            "--json",
        ],
    ] {
        let output = Cli::from_command(hookd_command(&args)).run().await;
        assert!(output.code == 0, "hookd {args:?}: {}", output.stderr);
        let text = format!("{}{}", output.stdout, output.stderr);
        answers.push((format!("hookd {}", args[..2].join(" ")), text));
    }

    let stderr = daemon.stop().await;
    SecretRun {
        stderr,
        stdout: daemon.process.stdout_lines(),
        answers,
    }
}

fn assert_run_has_no_secret(run: &SecretRun) {
    assert!(
        run.stderr.contains("DEBUG"),
        "RUST_LOG=debug should give debug lines; stderr:\n{}",
        run.stderr
    );
    assert_no_secret("hookd's stderr (RUST_LOG=debug)", &run.stderr);
    assert_no_secret("hookd's stdout", &run.stdout.join("\n"));
    for (what, body) in &run.answers {
        assert_no_secret(what, body);
    }
}

#[tokio::test]
async fn secrets_stay_out_of_text_logs_metrics_and_api_answers() {
    let run = secret_run(false).await;
    assert_run_has_no_secret(&run);
    assert!(
        run.stderr.contains("attempt failed; retry scheduled")
            && run.stderr.contains("delivery dead after its last attempt"),
        "the failing and dead deliveries were logged:\n{}",
        run.stderr
    );
}

/// A field of a JSON log line: at the top level, or in its span (tracing's JSON format puts
/// span fields under `span` and `spans`).
fn log_field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name)
        .or_else(|| line.get("fields").and_then(|f| f.get(name)))
        .or_else(|| line.get("span").and_then(|s| s.get(name)))
        .or_else(|| {
            line.get("spans")
                .and_then(Value::as_array)
                .and_then(|spans| spans.iter().find_map(|s| s.get(name)))
        })
}

#[tokio::test]
async fn json_logs_parse_line_by_line_carry_delivery_fields_and_no_secrets() {
    let run = secret_run(true).await;
    assert_run_has_no_secret(&run);
    let mut lines = Vec::new();
    for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}):\n{line}"));
        assert!(value.is_object(), "a log line is an object: {line}");
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "a log line has timestamp and level: {line}"
        );
        lines.push(value);
    }
    let failed = lines
        .iter()
        .find(|l| {
            l["level"] == "WARN"
                && log_field(l, "subscription").and_then(Value::as_str) == Some("flaky")
        })
        .unwrap_or_else(|| panic!("no WARN line for flaky's failed attempt:\n{}", run.stderr));
    let field = |name: &str| {
        log_field(failed, name)
            .unwrap_or_else(|| panic!("the failed attempt's line has no {name}: {failed}"))
    };
    assert!(
        field("delivery_id")
            .as_str()
            .is_some_and(|id| id.starts_with("dlv_")),
        "delivery_id: {failed}"
    );
    assert_eq!(field("subscription"), "flaky", "{failed}");
    assert_eq!(field("attempt").as_u64(), Some(1), "{failed}");
    assert_eq!(field("outcome"), "http_5xx", "{failed}");
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && log_field(l, "subscription").and_then(Value::as_str) == Some("gone")
            && log_field(l, "outcome").and_then(Value::as_str) == Some("connect")),
        "an ERROR line for gone's dead delivery"
    );
}

#[tokio::test]
async fn config_errors_do_not_show_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let common = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntokens = [{{ env = \"HOOKD_TEST_TOKEN\" }}]\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n{}\n",
        dir.path().join("db").display().to_string(),
        crate::support::LOOPBACK_TARGETS
    );
    let good_sub = subscription_toml("good", "http://127.0.0.1:9/hook", SUB_SECRET, &["*"], "");
    let files = [
        (
            "unset-env.toml",
            format!(
                "{common}{good_sub}[[subscription]]\nid = \"other\"\nurl = \"http://127.0.0.1:9/other\"\n\
                 secret = {{ env = \"{UNSET_ENV}\" }}\nevents = [\"*\"]\n"
            ),
        ),
        // A syntax error on the secret's own line.
        (
            "syntax.toml",
            format!(
                "{common}[[subscription]]\nid = \"good\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                 secret = \"{SUB_SECRET}\nevents = [\"*\"]\n"
            ),
        ),
        ("valid.toml", format!("{common}{good_sub}")),
    ];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).expect("write config");
    }
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = Cli::from_command(hookd_command(&args)).run().await;
        (Some(output.code), output.stdout, output.stderr)
    };
    let path = |name: &str| dir.path().join(name).display().to_string();

    let (code, stdout, stderr) = run(vec![
        "check-config".into(),
        "--config".into(),
        path("unset-env.toml"),
    ])
    .await;
    assert_eq!(code, Some(2), "check-config on an invalid file: {stderr}");
    assert!(
        stderr.contains(UNSET_ENV) && stderr.contains("subscription[1].secret"),
        "the error names the variable and the key: {stderr}"
    );
    assert_no_secret("check-config's stdout", &stdout);
    assert_no_secret("check-config's error", &stderr);

    for format in ["text", "json"] {
        let (code, stdout, stderr) = run(vec![
            "run".into(),
            "--config".into(),
            path("unset-env.toml"),
            "--log-format".into(),
            format.into(),
        ])
        .await;
        assert_eq!(code, Some(2), "run on an invalid file: {stderr}");
        assert!(stderr.contains(UNSET_ENV), "{stderr}");
        assert_no_secret("run's stdout", &stdout);
        assert_no_secret(&format!("run's error ({format} logs)"), &stderr);
    }

    let (code, stdout, stderr) = run(vec![
        "check-config".into(),
        "--config".into(),
        path("syntax.toml"),
    ])
    .await;
    assert_eq!(code, Some(2), "a syntax error: {stderr}");
    assert!(
        stderr.contains("syntax.toml:"),
        "the error names the file: {stderr}"
    );
    assert_no_secret("check-config's syntax error", &format!("{stdout}{stderr}"));

    let (code, stdout, stderr) = run(vec![
        "check-config".into(),
        "--config".into(),
        path("valid.toml"),
    ])
    .await;
    assert_eq!(code, Some(0), "a valid file: {stderr}");
    assert!(stdout.contains("config looks good"), "{stdout}");
    assert_no_secret("check-config's summary", &format!("{stdout}{stderr}"));
}

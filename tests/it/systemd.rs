//! hookd under systemd, through the real binary (`hookd run --config FILE`) on loopback: the
//! sd_notify protocol (READY, RELOADING, STOPPING, STATUS, the watchdog) on a datagram socket
//! the test binds, SIGHUP reloads and what they do to queued deliveries, the journald log
//! format, the shipped unit (`systemd-analyze verify` and `security`), `$STATE_DIRECTORY` and
//! `$CREDENTIALS_DIRECTORY`.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::admin::Admin;
use crate::support::cli::{Cli, Run};
use crate::support::events::{delivery_toml, subscription_toml};
use crate::support::notify::{Datagram, NotifySocket};
use crate::support::process::{free_ports, hookd_command, wait_until_opt, ChildGuard, HOOKD_BIN};
use crate::support::receiver::{Received, Reply, TestReceiver};
use crate::support::{wait_until, LOOPBACK_TARGETS};

const DEADLINE: Duration = Duration::from_secs(5);
const SECRET: &str = "systemd-test-secret";

// ------------------------------------------------------------------ the daemon

/// `hookd run --config DIR/hookd.toml` with `NOTIFY_SOCKET` pointing at the test's socket.
struct Hookd {
    process: ChildGuard,
    api: SocketAddr,
    metrics: SocketAddr,
    config: PathBuf,
    /// The `[storage] path` value written in the file.
    storage: String,
    notify: NotifySocket,
    client: reqwest::Client,
}

/// The file: listeners, store, `extra`, and the target guard opened for loopback receivers.
/// What the test configs listen on: hookd picks free ports and reports them.
const PORT_ZERO: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The addresses of a `STATUS=api A, metrics M; pending: ...` line.
fn status_addresses(status: &str) -> Option<(SocketAddr, SocketAddr)> {
    let (listening, _) = status.split_once(';')?;
    let (api, metrics) = listening.split_once(", ")?;
    Some((
        api.strip_prefix("api ")?.parse().ok()?,
        metrics.strip_prefix("metrics ")?.parse().ok()?,
    ))
}

fn config_text(api: SocketAddr, metrics: SocketAddr, storage: &str, extra: &str) -> String {
    crate::support::engine::apply(&format!(
        "[api]\nlisten = \"{api}\"\n\n[metrics]\nlisten = \"{metrics}\"\n\n[storage]\npath = {storage:?}\n\n{extra}\n{LOOPBACK_TARGETS}"
    ))
}

impl Hookd {
    /// Starts hookd with its store in `dir/db`.
    async fn start(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Hookd {
        let storage = dir.join("db").display().to_string();
        Hookd::start_with_storage(dir, &storage, extra, env).await
    }

    /// Writes the config (both listeners on port 0, `[storage] path = storage`, then `extra`),
    /// starts the binary in `dir` with `env`, waits for `READY=1` and takes the addresses hookd
    /// bound from its `STATUS=` line. On `READY=1` both listeners must already accept
    /// connections.
    async fn start_with_storage(
        dir: &Path,
        storage: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Hookd {
        let config = dir.join("hookd.toml");
        std::fs::write(&config, config_text(PORT_ZERO, PORT_ZERO, storage, extra))
            .expect("write hookd.toml");
        let notify = NotifySocket::bind(dir.join("notify.sock"));
        let mut command = hookd_command(["run", "--config"]);
        command
            .arg(&config)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &notify.path);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = ChildGuard::spawn("hookd", command);
        let started = Instant::now();
        let exited = loop {
            if let Some((_, ready)) = notify.find("READY=1", 0) {
                let status = ready.value("STATUS").unwrap_or_default().to_string();
                let (api, metrics) = status_addresses(&status).unwrap_or_else(|| {
                    panic!("READY=1 without the addresses in STATUS=: {status:?}")
                });
                // Checked at once: READY=1 promises that the listeners are bound.
                for (what, addr) in [("api.listen", api), ("metrics.listen", metrics)] {
                    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        panic!("READY=1 arrived before {what} {addr} accepts connections: {e}");
                    }
                }
                return Hookd {
                    process,
                    api,
                    metrics,
                    config,
                    storage: storage.to_string(),
                    notify,
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .build()
                        .expect("client"),
                };
            }
            if let Some(status) = process.try_wait() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "hookd sent no READY=1 within 10s; datagrams {:?}",
                notify.texts()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let _ = wait_until_opt(Duration::from_secs(2), || {
            (!process.stderr().is_empty()).then_some(())
        })
        .await;
        panic!(
            "hookd exited ({exited}) before READY=1; stderr:\n{}",
            process.stderr()
        );
    }

    /// Rewrites the config file with the same listeners and store and a new `extra`.
    fn write_config(&self, extra: &str) {
        std::fs::write(
            &self.config,
            config_text(PORT_ZERO, PORT_ZERO, &self.storage, extra),
        )
        .expect("rewrite hookd.toml");
    }

    /// Sends SIGHUP and waits for `RELOADING=1`, then `READY=1`; returns their indices.
    async fn reload(&self) -> (usize, usize) {
        let from = self.notify.all().len();
        self.process.signal("HUP");
        let (reloading, _) = self.notify.wait_for("RELOADING=1", from, DEADLINE).await;
        let (ready, _) = self
            .notify
            .wait_for("READY=1", reloading + 1, DEADLINE)
            .await;
        (reloading, ready)
    }

    /// SIGTERM, then waits for the exit.
    async fn stop(&mut self) -> ExitStatus {
        self.process.signal("TERM");
        self.process.wait_exit(Duration::from_secs(8)).await
    }

    /// The admin API of this hookd.
    fn admin(&self) -> Admin {
        Admin::new(self.api, self.client.clone())
    }

    async fn post_event(&self, event: &Value) -> Value {
        let (status, body) = self.admin().post("/v1/events", Some(event.clone())).await;
        assert_eq!(status, 202, "POST /v1/events answered {status}: {body}");
        body
    }

    /// `(id, url)` of every configured subscription, from `GET /v1/subscriptions`.
    async fn subscriptions(&self) -> Vec<(String, String)> {
        let body = self.admin().get_ok("/v1/subscriptions").await;
        body["subscriptions"]
            .as_array()
            .expect("a subscriptions array")
            .iter()
            .filter(|s| s["id"] != "adhoc")
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    s["url"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    async fn delivery(&self, id: &str) -> Value {
        self.admin().get_ok(&format!("/v1/deliveries/{id}")).await
    }

    /// Waits until `GET /v1/deliveries/{id}` satisfies `check`.
    async fn wait_delivery(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_until(&format!("delivery {id}: {what}"), DEADLINE, || async {
            let d = self.delivery(id).await;
            check(&d).then_some(d)
        })
        .await
    }

    /// Waits until a stderr line contains every one of `parts` (ANSI escapes removed).
    async fn wait_log(&self, parts: &[&str]) -> String {
        wait_until(&format!("a log line with {parts:?}"), DEADLINE, || async {
            strip_ansi(&self.process.stderr())
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string)
        })
        .await
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn event(request_id: &str, status: &str) -> Value {
    json!({ "request_id": request_id, "status": status })
}

fn body_json(received: &Received) -> Value {
    serde_json::from_slice(&received.body).expect("the webhook body is JSON")
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `text` contains an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS`).
fn has_timestamp(text: &str) -> bool {
    const PATTERN: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    text.as_bytes().windows(PATTERN.len()).any(|w| {
        w.iter().zip(PATTERN).all(|(b, p)| match p {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        })
    })
}

// ------------------------------------------------------------------ 1. sd_notify

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_reload_and_stop_in_order() {
    let dir = tempdir();
    let receiver = TestReceiver::start().await;
    let extra = subscription_toml("main", &receiver.url(), SECRET, &["*"], "");
    // WATCHDOG_PID stays unset: sd_notify compares it with hookd's own pid.
    let mut hookd = Hookd::start(dir.path(), &extra, &[("WATCHDOG_USEC", "1000000")]).await;

    // READY=1 (Hookd::start checked that both ports accepted connections when it arrived),
    // with a status line, and the API takes an event right away.
    let (ready0, ready) = hookd.notify.find("READY=1", 0).expect("READY=1");
    let status = ready.value("STATUS").unwrap_or_default();
    assert!(
        status.starts_with(&format!(
            "api {}, metrics {}; pending:",
            hookd.api, hookd.metrics
        )),
        "READY=1 comes with a STATUS= line: {:?}",
        ready.text
    );
    assert!(
        hookd.notify.all()[..ready0]
            .iter()
            .all(|d| !d.has("RELOADING=1") && !d.has("STOPPING=1")),
        "nothing but READY=1 first: {:?}",
        hookd.notify.texts()
    );
    hookd.post_event(&event("notify-1", "completed")).await;
    receiver.wait_for(1, DEADLINE).await;

    // The watchdog: WATCHDOG=1 every WATCHDOG_USEC/2 = 0.5 s, each well inside the 1 s systemd
    // allows, each with a fresh STATUS=.
    let watchdog_pings = || -> Vec<Datagram> {
        hookd
            .notify
            .all()
            .into_iter()
            .filter(|d| d.has("WATCHDOG=1"))
            .collect()
    };
    // 6 pings take about 3 s; the gaps below say what went wrong when they do not come.
    let _ = wait_until_opt(Duration::from_secs(4), || {
        (watchdog_pings().len() >= 6).then_some(())
    })
    .await;
    let pings = watchdog_pings();
    let mut previous = ready.at;
    let mut gaps = Vec::new();
    for ping in &pings {
        gaps.push(ping.at.duration_since(previous));
        previous = ping.at;
        assert!(
            ping.value("STATUS")
                .is_some_and(|s| s.contains("; pending:")),
            "WATCHDOG=1 comes with STATUS=: {:?}",
            ping.text
        );
    }
    assert!(
        pings.len() >= 6
            && gaps
                .iter()
                .all(|g| *g >= Duration::from_millis(250) && *g <= Duration::from_millis(850)),
        "WATCHDOG=1 must arrive about every 0.5 s, always within the 1 s of WATCHDOG_USEC=1000000; \
         {} pings in the 4 s after READY=1, gaps {gaps:?}",
        pings.len()
    );

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC=, then READY=1.
    let (reloading, ready1) = hookd.reload().await;
    let all = hookd.notify.all();
    let monotonic = all[reloading].value("MONOTONIC_USEC");
    assert!(
        monotonic
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0),
        "RELOADING=1 carries MONOTONIC_USEC=<microseconds>: {:?}",
        all[reloading].text
    );
    assert!(
        all[ready1].value("STATUS").is_some(),
        "READY=1 after a reload carries STATUS=: {:?}",
        all[ready1].text
    );

    // SIGTERM: STOPPING=1, then exit 0.
    let from = all.len();
    hookd.process.signal("TERM");
    let (stopping, _) = hookd.notify.wait_for("STOPPING=1", from, DEADLINE).await;
    let status = hookd.process.wait_exit(Duration::from_secs(8)).await;
    assert!(status.success(), "hookd exits 0 on SIGTERM: {status}");

    // The whole sequence: READY < RELOADING < READY < STOPPING, and nothing else of the kind.
    assert!(
        ready0 < reloading && reloading < ready1 && ready1 < stopping,
        "order READY({ready0}) < RELOADING({reloading}) < READY({ready1}) < STOPPING({stopping}): {:?}",
        hookd.notify.texts()
    );
    let all = hookd.notify.all();
    let lifecycle: Vec<&str> = all
        .iter()
        .flat_map(|d| d.text.lines())
        .filter(|l| ["READY=1", "RELOADING=1", "STOPPING=1"].contains(l))
        .collect();
    assert_eq!(
        lifecycle,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "lifecycle messages: {:?}",
        hookd.notify.texts()
    );
}

// ------------------------------------------------------------------ 2. reload semantics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_bad_file_keeps_the_running_config() {
    let dir = tempdir();
    let running = TestReceiver::start().await;
    let elsewhere = TestReceiver::start().await;
    let added = TestReceiver::start().await;
    let good = subscription_toml("a", &running.url(), SECRET, &["*"], "");
    let mut hookd = Hookd::start(dir.path(), &good, &[]).await;
    let before = hookd.admin().get_ok("/v1/subscriptions").await;

    // A file with an unknown key, which would also change a's URL and secret and add b.
    let bad = format!(
        "[delivery]\nretries = 3\n\n{}{}",
        subscription_toml("a", &elsewhere.url(), "another-secret", &["*"], ""),
        subscription_toml("b", &added.url(), SECRET, &["*"], "")
    );
    hookd.write_config(&bad);
    hookd.reload().await;

    let line = hookd
        .wait_log(&["config reload failed", "unknown field `retries`"])
        .await;
    assert!(
        line.contains("hookd.toml"),
        "the log names the file: {line}"
    );
    assert_eq!(
        hookd.admin().get_ok("/v1/subscriptions").await,
        before,
        "a bad file changes no subscription"
    );
    assert!(hookd
        .process
        .stderr()
        .contains("keeping the running configuration"));

    // Deliveries continue, with the running URL and secret.
    hookd.post_event(&event("bad-reload-1", "completed")).await;
    let got = running.wait_for(1, DEADLINE).await;
    assert_eq!(body_json(&got[0])["request_id"], "bad-reload-1");
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        hookd::signing::abstrakt_signature(SECRET.as_bytes(), &got[0].body)
    );
    assert!(
        elsewhere.received().is_empty() && added.received().is_empty(),
        "nothing went to the bad file's targets"
    );
    assert!(hookd.process.try_wait().is_none(), "hookd still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_subscription_for_new_events() {
    let dir = tempdir();
    let a = TestReceiver::start().await;
    let b = TestReceiver::start().await;
    let one = subscription_toml("a", &a.url(), SECRET, &["*"], "");
    let hookd = Hookd::start(dir.path(), &one, &[]).await;
    assert_eq!(hookd.subscriptions().await, [("a".into(), a.url())]);
    hookd.post_event(&event("before-reload", "completed")).await;
    a.wait_for(1, DEADLINE).await;

    let two = format!(
        "{one}{}",
        subscription_toml("b", &b.url(), "b-secret", &["job.completed"], "")
    );
    hookd.write_config(&two);
    hookd.reload().await;
    hookd.wait_log(&["configuration reloaded"]).await;
    assert_eq!(
        hookd.subscriptions().await,
        [("a".into(), a.url()), ("b".into(), b.url())]
    );

    hookd.post_event(&event("after-reload", "completed")).await;
    let got = b.wait_for(1, DEADLINE).await;
    a.wait_for(2, DEADLINE).await;
    assert_eq!(body_json(&got[0])["request_id"], "after-reload");
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        hookd::signing::abstrakt_signature(b"b-secret", &got[0].body)
    );
    assert!(
        b.received()
            .iter()
            .all(|r| body_json(r)["request_id"] == "after-reload"),
        "an event accepted before b existed has no delivery to b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_sends_a_queued_retry_to_the_new_url() {
    let dir = tempdir();
    let old = TestReceiver::start().await;
    old.set_default(Reply::Status(500));
    let new = TestReceiver::start().await;
    let config = |url: &str| {
        format!(
            "{}{}",
            delivery_toml(&["2s"], "jitter = 0.0"),
            subscription_toml("a", url, SECRET, &["*"], "")
        )
    };
    let hookd = Hookd::start(dir.path(), &config(&old.url()), &[]).await;
    hookd.post_event(&event("moved-1", "completed")).await;
    let first = old.wait_for(1, DEADLINE).await;
    let id = first[0].header("x-abstrakt-delivery").to_string();
    assert!(!id.is_empty(), "X-Abstrakt-Delivery is set");
    hookd
        .wait_delivery(&id, "attempt 1 recorded, retry scheduled", |d| {
            d["attempts"] == 1 && d["state"] == "scheduled"
        })
        .await;

    hookd.write_config(&config(&new.url()));
    hookd.reload().await;
    let d = hookd.delivery(&id).await;
    assert!(
        d["attempts"] == 1 && d["state"] == "scheduled",
        "the reload must land before the retry is due (2s): {d}"
    );
    assert_eq!(d["url"], new.url(), "a queued delivery shows its new URL");
    assert_eq!(hookd.subscriptions().await, [("a".into(), new.url())]);

    let got = new.wait_for(1, DEADLINE).await;
    assert_eq!(got[0].header("x-abstrakt-delivery"), id, "same delivery id");
    assert_eq!(got[0].header("x-abstrakt-attempt"), "2");
    assert_eq!(got[0].body, first[0].body, "same body");
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        hookd::signing::abstrakt_signature(SECRET.as_bytes(), &got[0].body)
    );
    hookd
        .wait_delivery(&id, "delivered", |d| d["state"] == "delivered")
        .await;
    assert_eq!(old.received().len(), 1, "the old URL got attempt 1 only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_holds_a_removed_subscriptions_deliveries_until_it_returns() {
    let dir = tempdir();
    let a = TestReceiver::start().await;
    a.plan([Reply::Status(500)]);
    let marker = TestReceiver::start().await;
    let delivery = delivery_toml(&["2s"], "jitter = 0.0");
    let sub_a = subscription_toml("a", &a.url(), SECRET, &["job.failed"], "");
    let sub_b = subscription_toml("b", &marker.url(), SECRET, &["job.completed"], "");
    let with_a = format!("{delivery}{sub_a}{sub_b}");
    let without_a = format!("{delivery}{sub_b}");
    let hookd = Hookd::start(dir.path(), &with_a, &[]).await;

    hookd.post_event(&event("held-1", "failed")).await;
    let first = a.wait_for(1, DEADLINE).await;
    let id = first[0].header("x-abstrakt-delivery").to_string();
    hookd
        .wait_delivery(&id, "attempt 1 recorded, retry scheduled", |d| {
            d["attempts"] == 1 && d["state"] == "scheduled"
        })
        .await;

    hookd.write_config(&without_a);
    hookd.reload().await;
    assert_eq!(hookd.subscriptions().await, [("b".into(), marker.url())]);

    // Wait until the retry is due, then until the scheduler has made two passes after that
    // (each marker event is claimed in a pass that also walks a's bucket).
    let due = hookd.delivery(&id).await["next_attempt_at"]
        .as_str()
        .map(str::to_string)
        .expect("next_attempt_at while scheduled");
    let due_ms = time::OffsetDateTime::parse(&due, &time::format_description::well_known::Rfc3339)
        .expect("next_attempt_at is RFC 3339")
        .unix_timestamp_nanos()
        / 1_000_000;
    wait_until("a's retry to fall due", DEADLINE, || async {
        (i128::from(hookd::scheduler::now_ms()) > due_ms + 100).then_some(())
    })
    .await;
    for (i, request_id) in ["marker-1", "marker-2"].into_iter().enumerate() {
        hookd.post_event(&event(request_id, "completed")).await;
        marker.wait_for(i + 1, DEADLINE).await;
    }
    assert_eq!(
        a.received().len(),
        1,
        "a removed subscription's delivery is not attempted"
    );
    let d = hookd.delivery(&id).await;
    assert!(
        d["state"] == "scheduled" && d["attempts"] == 1,
        "it waits in the queue: {d}"
    );
    let listed = hookd.admin().get_ok("/v1/deliveries?subscription=a").await;
    assert!(
        listed["deliveries"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["id"] == id.as_str())),
        "and is listed: {listed}"
    );

    // Back in the config: it goes out, same delivery, attempt 2.
    hookd.write_config(&with_a);
    hookd.reload().await;
    let got = a.wait_for(2, DEADLINE).await;
    assert_eq!(got[1].header("x-abstrakt-delivery"), id);
    assert_eq!(got[1].header("x-abstrakt-attempt"), "2");
    assert_eq!(got[1].body, first[0].body);
    hookd
        .wait_delivery(&id, "delivered", |d| d["state"] == "delivered")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_listeners_with_a_warning() {
    let dir = tempdir();
    let a = TestReceiver::start().await;
    let b = TestReceiver::start().await;
    let sub_a = subscription_toml("a", &a.url(), SECRET, &["*"], "");
    let hookd = Hookd::start(dir.path(), &sub_a, &[]).await;

    let ports = free_ports(2);
    let new_api: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let new_metrics: SocketAddr = ([127, 0, 0, 1], ports[1]).into();
    let sub_b = subscription_toml("b", &b.url(), SECRET, &["*"], "");
    std::fs::write(
        &hookd.config,
        config_text(
            new_api,
            new_metrics,
            &hookd.storage,
            &format!("{sub_a}{sub_b}"),
        ),
    )
    .expect("rewrite hookd.toml");
    hookd.reload().await;

    for key in ["api.listen", "metrics.listen"] {
        let line = hookd
            .wait_log(&["WARN", key, "takes effect only after a restart"])
            .await;
        assert!(!line.contains("ERROR"), "{line}");
    }
    // The rest of the file applied; the API still answers on the old port, not the new one.
    assert_eq!(
        hookd.subscriptions().await,
        [("a".into(), a.url()), ("b".into(), b.url())]
    );
    assert!(
        TcpStream::connect_timeout(&new_api, Duration::from_millis(500)).is_err(),
        "hookd must not listen on the new api.listen {new_api} before a restart"
    );
    let livez = hookd
        .client
        .get(format!("http://{}/livez", hookd.metrics))
        .send()
        .await
        .expect("GET /livez on the old metrics.listen");
    assert_eq!(livez.status().as_u16(), 200);
    hookd.post_event(&event("listen-1", "completed")).await;
    b.wait_for(1, DEADLINE).await;
}

// ------------------------------------------------------------------ 3. journald format

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_lines_carry_priorities_and_no_timestamps() {
    let dir = tempdir();
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let config = format!(
        "{}{}",
        delivery_toml(&["1m"], "jitter = 0.0"),
        subscription_toml("a", &receiver.url(), SECRET, &["*"], "")
    );
    let mut hookd = Hookd::start(dir.path(), &config, &[("JOURNAL_STREAM", "8:12345")]).await;
    hookd.post_event(&event("journal-1", "completed")).await;
    receiver.wait_for(1, DEADLINE).await;
    let failed = hookd.wait_log(&["attempt failed"]).await;
    assert!(
        failed.starts_with("<4>"),
        "a failed attempt is a warning: {failed:?}"
    );

    // A reload with two errors: the error is logged at <3>, every one of its lines included.
    hookd.write_config(&format!(
        "{config}{}",
        subscription_toml("b", "ftp://x", SECRET, &["completed"], "")
    ));
    hookd.reload().await;
    let reload = hookd.wait_log(&["config reload failed"]).await;
    assert!(reload.starts_with("<3>"), "{reload:?}");
    hookd.wait_log(&["subscription[1].events"]).await;

    let status = hookd.stop().await;
    assert!(status.success(), "{status}");
    let stderr = hookd.process.stderr();
    assert!(stderr.lines().count() >= 5, "some log: {stderr}");
    for line in stderr.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(n, _)| n);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "every line under journald starts with <3>, <4>, <6> or <7> (journald reads each line as one entry): {line:?}\n---\n{stderr}"
        );
        assert!(
            !has_timestamp(line),
            "no timestamp under journald: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "no ANSI escapes: {line:?}");
    }
    let started = stderr
        .lines()
        .find(|l| l.contains("hookd started"))
        .expect("a start line");
    assert!(started.starts_with("<6>"), "{started:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_journal_stream_lines_have_timestamps() {
    let dir = tempdir();
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let config = format!(
        "{}{}",
        delivery_toml(&["1m"], "jitter = 0.0"),
        subscription_toml("a", &receiver.url(), SECRET, &["*"], "")
    );
    let mut hookd = Hookd::start(dir.path(), &config, &[]).await;
    hookd.post_event(&event("plain-1", "completed")).await;
    receiver.wait_for(1, DEADLINE).await;
    hookd.wait_log(&["attempt failed"]).await;
    let status = hookd.stop().await;
    assert!(status.success(), "{status}");
    let stderr = strip_ansi(&hookd.process.stderr());
    assert!(stderr.lines().count() >= 3, "some log: {stderr}");
    for line in stderr.lines() {
        assert!(
            has_timestamp(line) && !line.starts_with('<'),
            "outside journald every line starts with a timestamp: {line:?}"
        );
    }
}

// ------------------------------------------------------------------ 4. the unit file

fn run_output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// The shipped unit with `/usr/bin/hookd` replaced by the built binary, in `dir`.
fn unit_copy(dir: &Path, extra_service_line: Option<&str>) -> PathBuf {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/hookd.service"),
    )
    .expect("read deploy/systemd/hookd.service");
    let mut text = unit.replace("/usr/bin/hookd", HOOKD_BIN);
    if let Some(line) = extra_service_line {
        text = text.replace("[Service]\n", &format!("[Service]\n{line}\n"));
    }
    let path = dir.join("hookd.service");
    std::fs::write(&path, text).expect("write the unit copy");
    path
}

#[test]
fn unit_file_verifies_and_is_hardened() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.is_file(),
        "{} is missing: install systemd (the unit is checked with systemd-analyze)",
        analyze.display()
    );
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/hookd.service"),
    )
    .expect("read deploy/systemd/hookd.service");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=hookd",
        "ConfigurationDirectory=hookd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(lines.contains(&wanted), "the unit has {wanted}");
    }
    for prefix in ["WatchdogSec=", "ExecReload="] {
        assert!(
            lines
                .iter()
                .any(|l| l.strip_prefix(prefix).is_some_and(|v| !v.is_empty())),
            "the unit sets {prefix}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ExecReload=") && l.contains("-HUP")),
        "ExecReload= sends SIGHUP"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("RestrictAddressFamilies=") && l.contains("AF_UNIX")),
        "sd_notify needs AF_UNIX"
    );

    let dir = tempdir();
    // The oracle itself: a bad key makes verify talk.
    let broken = unit_copy(dir.path(), Some("NoSuchSetting=1"));
    let out = run_output(Command::new(analyze).arg("verify").arg(&broken));
    assert!(
        !out.stderr.is_empty() || !out.status.success(),
        "systemd-analyze verify ignores an unknown key: {out:?}"
    );

    let copy = unit_copy(dir.path(), None);
    let out = run_output(Command::new(analyze).arg("verify").arg(&copy));
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}: {}\nstdout: {}\nstderr: {}",
        copy.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run_output(
        Command::new(analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&copy),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for hookd.service:"))
        .map(|(_, rest)| rest.trim().to_string())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in systemd-analyze security ({}):\n{text}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut words = summary.split_whitespace();
    let level: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("exposure level is not a number: {summary:?}"));
    let rating = words.next().unwrap_or_default();
    assert!(level <= 4.0, "exposure {level} > 4.0: {summary}");
    assert!(
        ["OK", "SAFE", "PERFECT"].contains(&rating),
        "rating {rating:?} is worse than OK: {summary}"
    );
}

// ------------------------------------------------------------------ 5. $STATE_DIRECTORY

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_storage_path_uses_state_directory() {
    if crate::support::embedded_only("it looks for the store's files in $STATE_DIRECTORY") {
        return;
    }
    let dir = tempdir();
    let state = dir.path().join("state");
    let receiver = TestReceiver::start().await;
    let extra = subscription_toml("a", &receiver.url(), SECRET, &["*"], "");
    let env = [("STATE_DIRECTORY", state.to_str().expect("UTF-8 path"))];
    let mut hookd = Hookd::start_with_storage(dir.path(), "", &extra, &env).await;
    hookd.post_event(&event("state-1", "completed")).await;
    let got = receiver.wait_for(1, DEADLINE).await;
    let id = got[0].header("x-abstrakt-delivery").to_string();
    hookd
        .wait_delivery(&id, "delivered", |d| d["state"] == "delivered")
        .await;
    let started = hookd.wait_log(&["hookd started"]).await;
    assert!(
        started.contains(&state.display().to_string()),
        "the store is $STATE_DIRECTORY: {started}"
    );
    assert!(hookd.stop().await.success());

    let files = entries(&state);
    assert!(
        !files.is_empty(),
        "the store's files are in $STATE_DIRECTORY"
    );
    let mode = std::fs::metadata(&state)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the store directory is owner-only");
    assert!(
        !dir.path().join("hookd-data").exists(),
        "nothing in ./hookd-data: {:?}",
        entries(dir.path())
    );

    // The same store again: the delivery is still there.
    let hookd = Hookd::start_with_storage(dir.path(), "", &extra, &env).await;
    assert_eq!(hookd.delivery(&id).await["state"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_directory_list_uses_its_first_entry() {
    if crate::support::embedded_only(
        "it looks for the store's files in $STATE_DIRECTORY's first entry",
    ) {
        return;
    }
    let dir = tempdir();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    let list = format!("{}:{}", first.display(), second.display());
    let mut hookd =
        Hookd::start_with_storage(dir.path(), "", "", &[("STATE_DIRECTORY", &list)]).await;
    assert!(hookd.stop().await.success());
    assert!(
        !entries(&first).is_empty(),
        "the store is in {}",
        first.display()
    );
    assert!(!second.exists(), "nothing in the second entry");
}

// ------------------------------------------------------------------ 6. credentials

/// `hookd check-config --config <config>`, with `$CREDENTIALS_DIRECTORY` when given.
async fn check_config(config: &Path, credentials: Option<&Path>) -> Run {
    let config = config.to_str().expect("a UTF-8 path");
    let mut cli = Cli::new(&["check-config", "--config", config]);
    if let Some(dir) = credentials {
        cli = cli.env("CREDENTIALS_DIRECTORY", dir);
    }
    cli.run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_secrets_come_from_credentials_directory() {
    let dir = tempdir();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("mkdir credentials");
    let secret = "from-a-systemd-credential-5e1f";
    std::fs::write(credentials.join("acme"), secret).expect("write the credential");
    let receiver = TestReceiver::start().await;
    let extra = format!(
        "[[subscription]]\nid = \"acme\"\nurl = {:?}\nsecret = {{ credential = \"acme\" }}\nevents = [\"*\"]\n",
        receiver.url()
    );
    let credentials_env = credentials.to_str().expect("UTF-8 path");
    let mut hookd = Hookd::start(
        dir.path(),
        &extra,
        &[("CREDENTIALS_DIRECTORY", credentials_env)],
    )
    .await;
    hookd.post_event(&event("cred-1", "completed")).await;
    let got = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        hookd::signing::abstrakt_signature(secret.as_bytes(), &got[0].body),
        "signed with the credential's content"
    );
    assert!(hookd.stop().await.success());
    assert!(
        !hookd.process.stderr().contains(secret),
        "the secret is never logged"
    );

    let ok = check_config(&hookd.config, Some(&credentials)).await;
    assert_eq!(ok.code, 0, "{ok:?}");

    std::fs::remove_file(credentials.join("acme")).expect("remove the credential");
    let missing = check_config(&hookd.config, Some(&credentials)).await;
    let stderr = &missing.stderr;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        stderr.contains("subscription[0].secret") && stderr.contains("acme"),
        "the error names the key and the credential: {stderr}"
    );

    let unset = check_config(&hookd.config, None).await;
    let stderr = &unset.stderr;
    assert_eq!(unset.code, 2, "{unset:?}");
    assert!(
        stderr.contains("subscription[0].secret") && stderr.contains("CREDENTIALS_DIRECTORY"),
        "without $CREDENTIALS_DIRECTORY the error says so: {stderr}"
    );
}

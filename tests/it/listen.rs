//! `hookd listen` as a real process: it connects out to hookd with a portal link, forwards that
//! owner's events (and no one else's) to a local receiver, the seed's Express one included,
//! signed with the secret it prints; the owner's real subscription still gets its own; it
//! reconnects across a restart of hookd without skipping anything; an expired or tampered link
//! ends it with exit code 1; a session past `[portal] max_listen_sessions` is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookd::signing::{abstrakt_signature, standard_key, standard_signature};
use serde_json::{json, Value};

use crate::support::app::{spawn_app, spawn_app_with_clock, TestApp};
use crate::support::cli::Cli;
use crate::support::daemon::Daemon;
use crate::support::process::{
    hookd_command, wait_until_opt, wait_until_some, ChildGuard, SeedKind, SeedReceiver,
};
use crate::support::proxy::TestProxy;
use crate::support::receiver::{Reply, TestReceiver};

const DEADLINE: Duration = Duration::from_secs(15);
const SECRET: &str = "whsec-listen-tést";

/// hookd with a subscription of cust-a to `url` (its real one), and a portal link of cust-a.
async fn owner_with_subscription(url: &str) -> (TestApp, String) {
    let app = spawn_app("").await;
    let (status, body) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({ "id": "real", "owner": "cust-a", "url": url, "events": ["*"], "secret": "real-secret" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let link = app.admin().portal_link("cust-a").await;
    (app, link)
}

/// A running `hookd listen`.
struct Listen {
    process: ChildGuard,
}

impl Listen {
    /// `hookd listen --link <link> <args>`, started without waiting.
    fn spawn(link: &str, args: &[&str]) -> Listen {
        let mut command = hookd_command(["listen", "--link", link]);
        command.args(args);
        Listen {
            process: ChildGuard::spawn("hookd listen", command),
        }
    }

    /// `hookd listen --link <link> <args>` with `env` added, started without waiting.
    fn spawn_with_env(link: &str, args: &[&str], env: &[(&str, &str)]) -> Listen {
        let mut command = hookd_command(["listen", "--link", link]);
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Listen {
            process: ChildGuard::spawn("hookd listen", command),
        }
    }

    /// Started, then its Ready line's secret.
    async fn start(link: &str, args: &[&str]) -> (Listen, String) {
        let mut listen = Listen::spawn(link, args);
        let secret = listen.wait_line("Ready.").await;
        let secret = secret
            .split("Signing secret: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect("the Ready line names the secret")
            .to_string();
        (listen, secret)
    }

    /// Waits for a stdout line containing `text`; panics with the output if it exits first.
    async fn wait_line(&mut self, text: &str) -> String {
        let found = wait_until_opt(DEADLINE, || {
            self.process
                .stdout_lines()
                .into_iter()
                .find(|l| l.contains(text))
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "hookd listen printed no {text:?}; stdout:\n{}\nstderr:\n{}",
                self.process.stdout_lines().join("\n"),
                self.process.stderr()
            )
        })
    }

    fn count(&self, text: &str) -> usize {
        self.process
            .stdout_lines()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Waits for the process to exit; its code and stderr. The reader thread may still hold
    /// the last stderr bytes of a failure: it gets a moment to reach the end of the pipe.
    async fn exit(&mut self) -> (Option<i32>, String) {
        let status = self.process.wait_exit(DEADLINE).await;
        if !status.success() {
            let process = &self.process;
            let _ = wait_until_opt(Duration::from_secs(2), || {
                (!process.stderr().is_empty()).then_some(())
            })
            .await;
        }
        (status.code(), self.process.stderr())
    }
}

/// An event of `owner` with the seed page's result (its Express receiver reads
/// `result.items[0].url` of a completed job).
async fn post(app: &TestApp, request_id: &str, status: &str, owner: &str) {
    let result =
        json!({ "items": [{ "url": "https://cdn.example/v.mp4", "content_type": "video/mp4" }] });
    let (code, answer) = app
        .post(&json!({ "request_id": request_id, "status": status, "owner": owner, "result": result }))
        .await;
    assert_eq!(code, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_forwards_its_owners_events_to_the_seed_express_receiver() {
    let express = SeedReceiver::start(SeedKind::Express, SECRET).await;
    let real = TestReceiver::start().await;
    let (app, link) = owner_with_subscription(&real.url()).await;
    let (mut listen, printed) =
        Listen::start(&link, &["--forward-to", &express.url(), "--secret", SECRET]).await;
    assert_eq!(
        printed, SECRET,
        "the Ready line prints the secret it signs with"
    );

    // Another owner's events first: the stream keeps order, so once cust-a's arrived, any of
    // cust-b's would have too.
    post(&app, "b-1", "completed", "cust-b").await;
    post(&app, "b-2", "failed", "cust-b").await;
    for (id, status) in [
        ("a-1", "completed"),
        ("a-2", "failed"),
        ("a-3", "completed"),
    ] {
        post(&app, id, status, "cust-a").await;
    }
    let results = wait_until_opt(DEADLINE, || {
        let results = express.results();
        (results.len() >= 3).then_some(results)
    })
    .await
    .unwrap_or_else(|| panic!("Express got {:?}", express.results()));
    assert_eq!(results.len(), 3, "{results:?}");
    for (result, id) in results.iter().zip(["a-1", "a-2", "a-3"]) {
        assert_eq!(result["status"], 200, "Express verified it: {result}");
        let body: Value =
            serde_json::from_str(result["body"].as_str().expect("body")).expect("JSON");
        assert_eq!(body["request_id"], id, "{result}");
    }
    // The owner's real subscription still gets its own, signed with its own secret.
    let got = real.wait_for(3, DEADLINE).await;
    assert_eq!(got.len(), 3);
    listen.wait_line("<-- 200 POST").await;
    assert_eq!(
        listen.count("--> job.completed dlv_"),
        2,
        "{:?}",
        listen.process.stdout_lines()
    );
    assert_eq!(listen.count("--> job.failed dlv_"), 1);
    // The answers reached hookd: the portal shows the session's deliveries with their codes.
    let page = format!("{link}/check");
    let shown = wait_until_some(DEADLINE, || async {
        let text = app.client.get(&page).send().await.ok()?.text().await.ok()?;
        (text.matches("<td>200</td>").count() == 3).then_some(text)
    })
    .await;
    let shown = shown.expect("the portal lists the three answers");
    assert!(shown.contains("Connected."), "{shown}");
    assert!(!shown.contains(SECRET), "the page never shows the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_signs_with_the_secret_it_prints_and_trigger_sends_a_test_event() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("").await;
    let link = app.admin().portal_link("cust-a").await;
    let (mut listen, secret) = Listen::start(
        &link,
        &[
            "--forward-to",
            &receiver.url(),
            "--events",
            "job.completed",
            "--print-json",
        ],
    )
    .await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    post(&app, "skipped", "failed", "cust-a").await;
    post(&app, "wanted", "completed", "cust-a").await;
    let got = receiver.wait_for(1, DEADLINE).await;
    let body = got[0].body.to_vec();
    assert!(
        String::from_utf8_lossy(&body).contains("\"wanted\""),
        "--events filters"
    );
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        abstrakt_signature(secret.as_bytes(), &body)
    );
    let id = got[0].header("webhook-id").to_string();
    let timestamp: i64 = got[0]
        .header("webhook-timestamp")
        .parse()
        .expect("timestamp");
    let key = standard_key(&secret).expect("whsec_");
    assert_eq!(
        got[0].header("webhook-signature"),
        standard_signature(&[key], &id, timestamp, &body)
    );
    listen.wait_line("{\"request_id\":\"wanted\"").await;

    let run = Cli::new(&["listen", "--link", &link, "--trigger", "job.completed"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{run:#?}");
    let got = receiver.wait_for(2, DEADLINE).await;
    let test: Value = serde_json::from_slice(&got[1].body).expect("JSON");
    assert!(
        test["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("test_")),
        "{test}"
    );
    assert_eq!(test["status"], "completed");

    // Ctrl-C ends the session at once: nothing of it is left.
    listen.process.signal("INT");
    let (code, stderr) = listen.exit().await;
    assert_eq!(code, Some(0), "{stderr}");
    listen.wait_line("Session closed.").await;
    assert!(app
        .shared
        .listen
        .list(None, app.shared.clock.now_ms())
        .is_empty());
    let page = app
        .client
        .get(format!("{link}/check"))
        .send()
        .await
        .expect("page");
    let page = page.text().await.expect("page");
    assert!(page.contains("</code> session is open."), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_local_receiver_holds_back_no_real_subscription() {
    let hung = TestReceiver::start().await;
    hung.set_default(Reply::Hang);
    let real = TestReceiver::start().await;
    let (app, link) = owner_with_subscription(&real.url()).await;
    let (mut listen, _) = Listen::start(&link, &["--forward-to", &hung.url()]).await;
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({ "request_id": format!("r{i}"), "status": "completed", "owner": "cust-a" }))
        .collect();
    let (status, answer) = app.post(&Value::Array(batch)).await;
    assert_eq!(status, 202, "{answer}");
    listen.wait_line("--> job.completed").await;
    real.wait_for(300, DEADLINE).await;
    assert_eq!(hung.count(), 1, "the CLI waits on its one request");
}

/// A laptop behind a proxy: the CLI reaches hookd through the proxy the environment names (the
/// session, its stream of server-sent events, the answers), and the local receiver directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_goes_through_the_environments_proxy_to_hookd_only() {
    let proxy = TestProxy::start().await;
    let local = TestReceiver::start().await;
    let real = TestReceiver::start().await;
    let (app, link) = owner_with_subscription(&real.url()).await;
    // The link is http:// here (loopback, no TLS), so HTTP_PROXY is the one that applies;
    // an https:// link goes through HTTPS_PROXY the same way (a CONNECT tunnel).
    let proxy_url = proxy.url();
    let mut listen = Listen::spawn_with_env(
        &link,
        &["--forward-to", &local.url()],
        &[("HTTP_PROXY", &proxy_url), ("HTTPS_PROXY", &proxy_url)],
    );
    listen.wait_line("Ready.").await;
    post(&app, "via-proxy", "completed", "cust-a").await;
    let got = local.wait_for(1, DEADLINE).await;
    assert_eq!(got.len(), 1, "the event came through the proxied stream");
    listen.wait_line("<-- 200 POST").await;
    let hookd = app.api.to_string();
    let targets = proxy.targets();
    assert!(
        targets.len() >= 2 && targets.iter().all(|t| *t == hookd),
        "the session, its stream and the answers go through the proxy to hookd ({hookd}); the \
         local receiver is reached directly: {targets:?}"
    );
}

/// A clock the test moves forward, to expire a portal link.
struct ShiftedClock(AtomicU64);

impl hookd::clock::Clock for ShiftedClock {
    fn now_ms(&self) -> u64 {
        hookd::clock::system_now_ms() + self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_tampered_link_ends_listen_with_exit_code_1() {
    let receiver = TestReceiver::start().await;
    let clock = Arc::new(ShiftedClock(AtomicU64::new(0)));
    let app = spawn_app_with_clock("", clock.clone()).await;
    let link = app.admin().portal_link("cust-a").await;

    let mut tampered = link.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    let mut listen = Listen::spawn(&tampered, &["--forward-to", &receiver.url()]);
    let (code, stderr) = listen.exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the portal link is not valid"), "{stderr}");

    let (mut listen, _) = Listen::start(&link, &["--forward-to", &receiver.url()]).await;
    clock.0.store(2 * 3600 * 1000, Ordering::SeqCst);
    let (code, stderr) = listen.exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the portal link expired"), "{stderr}");

    let mut listen = Listen::spawn(&link, &["--forward-to", &receiver.url()]);
    let (code, stderr) = listen.exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the portal link expired"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_max_listen_sessions_is_refused() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("[portal]\nmax_listen_sessions = 1\n").await;
    let link = app.admin().portal_link("cust-a").await;
    let (_first, _) = Listen::start(&link, &["--forward-to", &receiver.url()]).await;
    let mut second = Listen::spawn(&link, &["--forward-to", &receiver.url()]);
    let (code, stderr) = second.exit().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("max_listen_sessions"), "{stderr}");
    // Another owner has its own allowance.
    let other = app.admin().portal_link("cust-b").await;
    let (_other, _) = Listen::start(&other, &["--forward-to", &receiver.url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reconnects_after_hookd_restarts_and_skips_nothing() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hookd = Daemon::new(dir.path(), "", "");
    hookd.start().await;
    let link = hookd.admin().portal_link("cust-a").await;
    let (mut listen, _) = Listen::start(&link, &["--forward-to", &receiver.url()]).await;
    let client = reqwest::Client::new();
    let events_url = hookd.events_url();
    let send = |id: String| {
        let client = client.clone();
        let url = events_url.clone();
        async move {
            let answer = client
                .post(url)
                .header("content-type", "application/json")
                .body(
                    json!({ "request_id": id, "status": "completed", "owner": "cust-a" })
                        .to_string(),
                )
                .send()
                .await
                .expect("post");
            assert_eq!(answer.status().as_u16(), 202);
        }
    };
    send("before".to_string()).await;
    receiver.wait_for(1, DEADLINE).await;
    listen.wait_line("<-- 200 POST").await;

    // The CLI is stopped while hookd restarts and takes five events: it can only learn of
    // them once it reconnects.
    listen.process.signal("STOP");
    hookd.kill();
    hookd.start().await;
    for i in 0..5 {
        send(format!("after-{i}")).await;
    }
    listen.process.signal("CONT");
    listen.wait_line("Lost the connection to hookd").await;
    listen
        .wait_line("5 events accepted while disconnected follow.")
        .await;
    let got = receiver.wait_for(6, DEADLINE).await;
    let ids: Vec<String> = got
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON");
            body["request_id"].as_str().expect("id").to_string()
        })
        .collect();
    for i in 0..5 {
        assert!(ids.contains(&format!("after-{i}")), "{ids:?}");
    }
    assert_eq!(
        listen.count("Lost the connection"),
        1,
        "one line for the outage"
    );
    assert!(listen.process.try_wait().is_none(), "still running");
}

/// Stopping hookd ends the session's stream at once (it does not hold the drain back), and the
/// CLI says it will reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_hookd_ends_the_stream_and_the_cli_waits_to_reconnect() {
    let receiver = TestReceiver::start().await;
    let mut app = spawn_app("").await;
    let link = app.admin().portal_link("cust-a").await;
    let (mut listen, _) = Listen::start(&link, &["--forward-to", &receiver.url()]).await;
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("hookd stops within 5 s with a listen session open");
    listen
        .wait_line("Lost the connection to hookd (hookd is restarting)")
        .await;
    assert!(listen.process.try_wait().is_none(), "it keeps trying");
}

/// A reconnecting CLI's new stream takes the session over from the old one, whose connection
/// may be dead without hookd knowing yet: the old stream ends, the new one gets the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_of_a_session_takes_over_from_the_old_one() {
    let app = spawn_app("").await;
    let link = app.admin().portal_link("cust-a").await;
    let token = link.rsplit('/').next().expect("token").to_string();
    let client = reqwest::Client::new();
    let opened = client
        .post(format!("http://{}/v1/listen/sessions", app.api))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("open");
    assert_eq!(opened.status().as_u16(), 201);
    let opened: Value = serde_json::from_slice(&opened.bytes().await.expect("body")).expect("JSON");
    let url = format!(
        "http://{}/v1/listen/sessions/{}/events",
        app.api,
        opened["session"].as_str().expect("session")
    );
    let stream = || client.get(&url).bearer_auth(&token).send();
    let mut old = stream().await.expect("first stream");
    assert_eq!(old.status().as_u16(), 200);
    let first = old.chunk().await.expect("read").expect("a chunk");
    assert!(String::from_utf8_lossy(&first).contains("event: ready"));
    let mut new = stream().await.expect("second stream");
    assert_eq!(new.status().as_u16(), 200, "the new stream takes over");
    tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(_)) = old.chunk().await {}
    })
    .await
    .expect("the old stream ends");
    post(&app, "after-take-over", "completed", "cust-a").await;
    let got = tokio::time::timeout(DEADLINE, async {
        let mut text = String::new();
        while !text.contains("after-take-over") {
            let chunk = new
                .chunk()
                .await
                .expect("read")
                .expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("the event arrives on the new stream");
    assert!(got.contains("event: delivery"), "{got}");
}

//! Delivery controls a subscription or the operator sets: custom headers per subscription,
//! egress through an explicit proxy (`delivery.proxy`), and rate limits (a subscription's
//! `rate_limit`, `delivery.adhoc_rate_limit` for per-request hosts) beside `Retry-After`.

use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use hookd::store::DeliveryState;

use crate::support::app::{spawn_app, spawn_app_guarded, TestApp};
use crate::support::events::{delivery_ids, wait_for_state};
use crate::support::process::HookdProcess;
use crate::support::proxy::TestProxy;
use crate::support::receiver::{Received, Reply, TestReceiver};

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn patch(app: &TestApp, body: Value) -> (u16, Value) {
    app.admin()
        .call(
            reqwest::Method::PATCH,
            "/v1/subscriptions/api-headers",
            Some(body),
        )
        .await
}

/// Posts an event with one delivery and waits until that delivery is dead.
async fn post_until_dead(app: &TestApp, request_id: &str) -> hookd::store::Delivery {
    let (status, body) = app
        .post(&json!({ "request_id": request_id, "status": "completed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let event = body["event_id"].as_str().expect("event id");
    let ids = delivery_ids(app, event).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    wait_for_state(app, &ids[0], DeliveryState::Dead, Duration::from_secs(10)).await
}

/// The config's diagnostics for `subscription_extra` added to a valid subscription, as
/// (key, message).
fn config_errors(subscription_extra: &str) -> Vec<(String, String)> {
    let text = format!(
        "[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/hook\"\nsecret = \"s\"\nevents = [\"*\"]\n{subscription_extra}\n"
    );
    match hookd::Config::from_toml(&text, "hookd.toml") {
        Ok(_) => Vec::new(),
        Err(hookd::config::ConfigError::Invalid(d)) => {
            d.into_iter().map(|d| (d.key, d.message)).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_from_the_config_arrive_beside_a_valid_signature() {
    // A secret value from a file, as a systemd credential or a mounted secret would be.
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("receiver-token");
    std::fs::write(&token_file, "Bearer tok-123\n").expect("write the token");
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "[[subscription]]\nid = \"tenant\"\nurl = \"{}\"\nsecret = \"file-secret\"\nevents = [\"*\"]\n\
         headers = {{ \"X-Tenant\" = \"acme\", \"User-Agent\" = \"acme-hooks/1\", \"Authorization\" = {{ file = {:?} }} }}\n",
        receiver.url(),
        token_file.display().to_string()
    ))
    .await;
    let (status, body) = app
        .post(&json!({ "request_id": "job-h1", "status": "completed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-tenant"), "acme");
    assert_eq!(got[0].header("authorization"), "Bearer tok-123");
    let agents: Vec<_> = got[0].headers.get_all("user-agent").iter().collect();
    assert_eq!(
        agents,
        ["acme-hooks/1"],
        "the subscription's User-Agent replaces hookd's"
    );
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        signature("file-secret", &got[0].body),
        "the signature is hookd's, over the body as sent"
    );
    assert_eq!(got[0].header("content-type"), "application/json");

    // The API shows the plain value and hides the secret one.
    let shown = app.admin().get_ok("/v1/subscriptions/tenant").await;
    assert_eq!(shown["headers"]["x-tenant"], "acme", "{shown}");
    assert_eq!(shown["headers"]["authorization"], "[REDACTED]", "{shown}");
    assert!(
        !shown.to_string().contains("tok-123"),
        "a secret header is never shown: {shown}"
    );
}

#[test]
fn reserved_and_malformed_headers_are_refused_by_name() {
    for name in [
        "X-Abstrakt-Signature",
        "x-abstrakt-delivery",
        "X-Abstrakt-Anything",
        "webhook-signature",
        "Webhook-Id",
        "Content-Type",
        "Content-Length",
        "Host",
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "traceparent",
    ] {
        let errors = config_errors(&format!("headers = {{ {name:?} = \"x\" }}"));
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert_eq!(errors[0].0, format!("subscription[0].headers.{name}"));
        assert!(errors[0].1.contains("reserved"), "{name}: {errors:?}");
    }
    let errors = config_errors("headers = { \"Bad Name\" = \"x\" }");
    assert!(errors[0].1.contains("not a header name"), "{errors:?}");
    let errors = config_errors("headers = { \"X-A\" = \"one\\r\\nX-Injected: two\" }");
    assert!(errors[0].1.contains("no line breaks"), "{errors:?}");
    let errors = config_errors("headers = { \"X-A\" = \"\" }");
    assert!(errors[0].1.contains("1 to 4096 bytes"), "{errors:?}");
    let errors = config_errors("headers = { \"X-A\" = { env = \"HOOKD_TEST_UNSET_VARIABLE\" } }");
    assert!(errors[0].1.contains("is not set"), "{errors:?}");
    let errors = config_errors("headers = { \"X-A\" = 3 }");
    assert!(
        errors[0].1.contains("a header value is a string"),
        "{errors:?}"
    );
    let many: Vec<String> = (0..33).map(|i| format!("\"X-H{i}\" = \"v\"")).collect();
    let errors = config_errors(&format!("headers = {{ {} }}", many.join(", ")));
    assert!(errors[0].1.contains("at most 32"), "{errors:?}");
    assert!(
        config_errors("headers = { \"X-Fine\" = \"v\", \"User-Agent\" = \"acme-hooks\" }")
            .is_empty()
    );
}

#[tokio::test]
async fn a_header_name_a_shell_would_run_is_refused_naming_the_field() {
    // ``X-`hostname` `` is an RFC 9110 token, and ran `hostname` from the dashboard's "Copy
    // as curl" (issue 28). Names keep to letters, digits, '-', '_' and '.'.
    let app = spawn_app("").await;
    for name in ["X-`hostname`", "X-$(id)", "X-Tenant'", "X-A|B"] {
        let (status, refused) = app
            .admin()
            .call(
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(json!({
                    "id": "shell", "url": "http://127.0.0.1:9/hook", "events": ["*"],
                    "headers": { name: { "secret": "s" } }
                })),
            )
            .await;
        assert_eq!(status, 422, "{name}: {refused}");
        assert_eq!(refused["field"], format!("headers.{name}"), "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .is_some_and(|e| e.contains("not a header name")),
            "{refused}"
        );
        let errors = config_errors(&format!("headers = {{ {name:?} = \"x\" }}"));
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert_eq!(errors[0].0, format!("subscription[0].headers.{name}"));
    }
    let shown = app
        .admin()
        .send(reqwest::Method::GET, "/v1/subscriptions/shell", None)
        .await;
    assert_eq!(shown.status, 404, "nothing was created");
    assert!(config_errors("headers = { \"X-Tenant_Id.v2\" = \"v\" }").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_set_changed_and_removed_through_the_api() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("").await;
    let (status, created) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({
                "id": "api-headers", "url": receiver.url(), "events": ["*"],
                "headers": { "X-Tenant": "acme", "Authorization": { "secret": "Bearer s3cret" } }
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["headers"]["x-tenant"], "acme");
    assert_eq!(created["headers"]["authorization"], "[REDACTED]");
    let secret = created["secret"].as_str().expect("secret").to_string();
    app.post(&json!({ "request_id": "job-a1", "status": "completed" }))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-tenant"), "acme");
    assert_eq!(got[0].header("authorization"), "Bearer s3cret");
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        signature(&secret, &got[0].body)
    );

    // A reserved name is a 422 naming the header; nothing changes.
    let (status, refused) = patch(
        &app,
        json!({ "headers": { "X-Abstrakt-Signature": "forged" } }),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["field"], "headers.X-Abstrakt-Signature",
        "{refused}"
    );
    let (status, refused) = patch(
        &app,
        json!({ "headers": { "X-A": "line\r\nX-B: injected" } }),
    )
    .await;
    assert_eq!(status, 422, "{refused}");

    // Replaced: the new set only.
    let (status, changed) = patch(&app, json!({ "headers": { "X-Region": "eu" } })).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["headers"], json!({ "x-region": "eu" }));
    app.post(&json!({ "request_id": "job-a2", "status": "completed" }))
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].header("x-region"), "eu");
    assert_eq!(got[1].header("x-tenant"), "", "the old set is gone");
    assert_eq!(got[1].header("authorization"), "");

    // Removed, across a restart.
    let (status, changed) = patch(&app, json!({ "headers": {} })).await;
    assert_eq!(status, 200, "{changed}");
    let app = app.restart().await;
    let shown = app.admin().get_ok("/v1/subscriptions/api-headers").await;
    assert_eq!(shown["headers"], json!({}), "{shown}");
    app.post(&json!({ "request_id": "job-a3", "status": "completed" }))
        .await;
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].header("x-region"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_configured_proxy_with_its_credentials() {
    let proxy = TestProxy::start().await;
    let receiver = TestReceiver::start().await;
    let proxied = format!("http://hookd:pw-9f2@{}", proxy.addr);
    // One target by address, one by name: both reach the receiver through the proxy.
    let by_name = receiver.url().replace("127.0.0.1", "localhost");
    let app = spawn_app(&format!(
        "[delivery]\nproxy = {proxied:?}\n\n\
         [[subscription]]\nid = \"by-address\"\nurl = \"{}\"\nsecret = \"s1\"\nevents = [\"*\"]\n\n\
         [[subscription]]\nid = \"by-name\"\nurl = \"{by_name}\"\nsecret = \"s2\"\nevents = [\"*\"]\n",
        receiver.url()
    ))
    .await;
    let (status, body) = app
        .post(&json!({ "request_id": "job-p1", "status": "completed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(proxy.carried(), 2, "each delivery went through the proxy");
    // Each signed with its subscription's secret, as sent.
    let mut signed_by: Vec<&str> = got
        .iter()
        .map(|g| {
            let sig = g.header("x-abstrakt-signature");
            ["s1", "s2"]
                .into_iter()
                .find(|s| signature(s, &g.body) == sig)
                .unwrap_or("neither")
        })
        .collect();
    signed_by.sort_unstable();
    assert_eq!(signed_by, ["s1", "s2"]);
    // reqwest sends the URL's credentials as Basic proxy authorization.
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "hookd:pw-9f2")
    );
    assert_eq!(proxy.authorizations(), [basic.clone(), basic]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_proxy_the_target_guard_still_judges_the_targets_names() {
    let proxy = TestProxy::start().await;
    let receiver = TestReceiver::start().await;
    // The guard as shipped (loopback refused), the proxy on loopback: the operator's proxy is
    // reached, a target named `localhost` is resolved here, found on loopback and refused.
    let app = spawn_app_guarded(&format!(
        "[delivery]\nproxy = \"{}\"\n\n\
         [[subscription]]\nid = \"named\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"*\"]\n",
        proxy.url(),
        receiver.url().replace("127.0.0.1", "localhost")
    ))
    .await;
    let dead = post_until_dead(&app, "job-g1").await;
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or("")
            .contains("blocked address"),
        "{dead:?}"
    );
    assert_eq!(proxy.carried(), 0, "nothing was sent to the proxy");
    assert_eq!(receiver.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_from_the_environment_are_never_used() {
    let proxy = TestProxy::start().await;
    let receiver = TestReceiver::start().await;
    // An https:// target too, which would go through HTTPS_PROXY as a CONNECT; it does not
    // speak TLS, so its one attempt fails in the handshake.
    let secure = crate::support::bad_receivers::not_tls().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("hookd.toml"),
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n\
             [[subscription]]\nid = \"direct\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"*\"]\n\n\
             [[subscription]]\nid = \"secure\"\nurl = \"https://{secure}/hook\"\nsecret = \"s\"\nevents = [\"*\"]\nretry_schedule = []\n{}",
            dir.path().join("db").display().to_string(),
            receiver.url(),
            crate::support::LOOPBACK_TARGETS
        ),
    )
    .expect("write config");
    let url = proxy.url();
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, url.as_str()))
    .chain([("NO_PROXY", ""), ("no_proxy", "")])
    .collect();
    let (process, api, metrics) =
        crate::support::process::launch(&dir.path().join("hookd.toml"), &env)
            .await
            .expect("hookd starts");
    let hookd = HookdProcess {
        process,
        api,
        metrics,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let answer = client
        .post(hookd.events_url())
        .header("content-type", "application/json")
        .body(json!({ "request_id": "job-e1", "status": "completed" }).to_string())
        .send()
        .await
        .expect("ingest");
    assert_eq!(answer.status(), 202);
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].header("x-abstrakt-signature"),
        signature("s", &got[0].body)
    );
    let dead = format!(
        "http://{}/v1/deliveries?subscription=secure&status=dead",
        hookd.api
    );
    crate::support::wait_until(
        "the https delivery to end dead",
        Duration::from_secs(10),
        || async {
            let text = client.get(&dead).send().await.ok()?.text().await.ok()?;
            let listed: Value = serde_json::from_str(&text).ok()?;
            (listed["deliveries"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    assert_eq!(proxy.carried(), 0, "the environment's proxy was used");
}

#[test]
fn a_proxy_url_is_checked_and_never_repeated_in_an_error() {
    let text = |proxy: &str| {
        format!(
            "[delivery]\nproxy = {proxy:?}\n\n[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"s\"\nevents = [\"*\"]\n"
        )
    };
    for bad in [
        "socks5://user:hunter2@proxy.internal:1080",
        "http://user:hunter2@proxy.internal:3128/some/path",
        "not a url hunter2",
    ] {
        let Err(hookd::config::ConfigError::Invalid(d)) =
            hookd::Config::from_toml(&text(bad), "hookd.toml")
        else {
            panic!("{bad} was accepted");
        };
        assert_eq!(d[0].key, "delivery.proxy", "{d:?}");
        assert!(
            !d[0].to_string().contains("hunter2"),
            "the password is shown: {}",
            d[0]
        );
    }
    let config = hookd::Config::from_toml(
        &text("http://user:hunter2@proxy.internal:3128"),
        "hookd.toml",
    )
    .expect("a good proxy URL");
    let proxy = config.delivery.proxy.clone().expect("the proxy");
    assert_eq!(proxy.shown(), "http://proxy.internal:3128/");
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_within_ten_percent_over_ten_seconds_without_bursts() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "[[subscription]]\nid = \"limited\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"*\"]\nrate_limit = 20\n",
        receiver.url()
    ))
    .await;
    // A backlog far beyond 10 s of the limit, queued at once, as after an outage.
    for batch in 0..3 {
        let ids: Vec<String> = (0..100).map(|i| format!("rate-{batch}-{i}")).collect();
        let (status, body) = app
            .post_raw(crate::support::load::events_body(&ids).to_string())
            .await;
        assert_eq!(status, 202, "{body}");
    }
    crate::support::assert_rate(&ten_seconds_of_arrivals(&receiver).await, 20.0);
    assert_eq!(
        app.admin().get_ok("/v1/subscriptions/limited").await["rate_limit"],
        20.0
    );
}

/// Waits until `receiver` has had requests for 10 s from its first (at most 30 s); returns when
/// each arrived.
async fn ten_seconds_of_arrivals(receiver: &TestReceiver) -> Vec<Instant> {
    let first = receiver.wait_for(1, Duration::from_secs(10)).await[0].at;
    crate::support::wait_until(
        &format!("arrivals past 10 s after the first at {}", receiver.addr),
        Duration::from_secs(30),
        || async {
            let last = receiver.last_at()?;
            (last.duration_since(first) >= Duration::from_secs(10)).then_some(())
        },
    )
    .await;
    receiver.received().iter().map(|r| r.at).collect()
}

/// The time from one attempt to the next of the same delivery, as the receiver saw them.
fn retry_gap(first: &Received, retry: &Received) -> Duration {
    assert_eq!(
        first.header("x-abstrakt-delivery"),
        retry.header("x-abstrakt-delivery"),
        "one delivery's two attempts"
    );
    assert_eq!(
        (
            first.header("x-abstrakt-attempt"),
            retry.header("x-abstrakt-attempt")
        ),
        ("1", "2")
    );
    retry.at.duration_since(first.at)
}

/// A subscription `limited` on `receiver` at `rate_limit`, retried once at once.
async fn rate_limited_app(receiver: &TestReceiver, rate_limit: f64) -> TestApp {
    spawn_app(&format!(
        "[[subscription]]\nid = \"limited\"\nurl = \"{}\"\nsecret = \"s\"\nevents = [\"*\"]\n\
         rate_limit = {rate_limit}\nretry_schedule = [\"0s\"]\n",
        receiver.url()
    ))
    .await
}

/// Posts an event whose first attempt `receiver` answers with `first` (then 200); returns the
/// time from that attempt to its retry.
async fn retry_gap_after(app: &TestApp, receiver: &TestReceiver, first: Reply) -> Duration {
    let before = receiver.count();
    receiver.plan([first]);
    let (status, body) = app
        .post(&json!({ "request_id": format!("job-r{before}"), "status": "completed" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for(before + 2, Duration::from_secs(10)).await;
    retry_gap(&got[before], &got[before + 1])
}

fn retry_after(status: u16, seconds: &str) -> Reply {
    Reply::WithHeaders(status, vec![("retry-after", seconds.to_string())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_rate_limit_wins() {
    let receiver = TestReceiver::start().await;
    let app = rate_limited_app(&receiver, 20.0).await;
    // Without Retry-After, a failed attempt's immediate retry comes as soon as the rate
    // allows: 50 ms apart at 20/s.
    let by_rate = retry_gap_after(&app, &receiver, Reply::Status(503)).await;
    assert!(
        by_rate < Duration::from_secs(1),
        "the rate limit alone allows the retry at once: {by_rate:?}"
    );
    // With `Retry-After: 2` on the 503, the retry waits the 2 s the receiver asked for.
    let asked = retry_gap_after(&app, &receiver, retry_after(503, "2")).await;
    assert!(
        asked >= Duration::from_millis(1950) && asked < Duration::from_secs(5),
        "Retry-After: 2 postpones the retry to 2 s: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_shorter_than_the_rate_limit_does_not_break_it() {
    let receiver = TestReceiver::start().await;
    // One attempt every 5 s: by the limit's half-interval tolerance, a retry 2.5 s after the
    // first attempt at the soonest.
    let app = rate_limited_app(&receiver, 0.2).await;
    let gap = retry_gap_after(&app, &receiver, retry_after(429, "1")).await;
    assert!(
        gap >= Duration::from_millis(2300),
        "the rate limit holds the retry back past Retry-After's 1 s: {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_request_rate_limit_holds_for_each_host_and_port() {
    // Two receivers on one address, two ports: per-request targets are limited per host and
    // port (the bucket `adhoc/127.0.0.1:<port>`), each at the whole rate.
    let receivers = [TestReceiver::start().await, TestReceiver::start().await];
    let app = spawn_app("[delivery]\nadhoc_rate_limit = 20\n").await;
    // A backlog far beyond 10 s of the limit for each, queued at once.
    for batch in 0..3 {
        for (r, receiver) in receivers.iter().enumerate() {
            let events: Vec<Value> = (0..100)
                .map(|i| {
                    json!({
                        "request_id": format!("adhoc-{r}-{batch}-{i}"), "status": "completed",
                        "webhook_url": receiver.url(), "webhook_secret": "s"
                    })
                })
                .collect();
            let (status, body) = app.post(&Value::Array(events)).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    let (one, two) = tokio::join!(
        ten_seconds_of_arrivals(&receivers[0]),
        ten_seconds_of_arrivals(&receivers[1])
    );
    crate::support::assert_rate(&one, 20.0);
    crate::support::assert_rate(&two, 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_tunnelled_through_the_proxy() {
    let proxy = TestProxy::start().await;
    // TLS is not spoken there, so the attempt fails in the handshake, through the tunnel.
    let target = crate::support::bad_receivers::not_tls().await;
    let app = spawn_app(&format!(
        "[delivery]\nproxy = \"{}\"\n\n\
         [[subscription]]\nid = \"secure\"\nurl = \"https://{target}/hook\"\nsecret = \"s\"\n\
         events = [\"*\"]\nretry_schedule = []\n",
        proxy.url()
    ))
    .await;
    let dead = post_until_dead(&app, "job-t1").await;
    assert_eq!(dead.attempts, 1, "{dead:?}");
    assert_eq!(
        proxy.tunnels(),
        [target.to_string()],
        "one CONNECT to the target"
    );
    assert_eq!(proxy.forwarded(), 0, "nothing went in the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_a_rate_limit_applies_at_once() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("").await;
    // One attempt per 20 s.
    let (status, created) = app.admin().call(
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({ "id": "raised", "url": receiver.url(), "events": ["*"], "rate_limit": 0.05 })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let events: Vec<Value> = (0..4)
        .map(|i| json!({ "request_id": format!("job-raise-{i}"), "status": "completed" }))
        .collect();
    let (status, body) = app.post(&Value::Array(events)).await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, Duration::from_secs(10)).await;

    // Raised to 20/s right after the first attempt: the next ones do not wait out the old
    // limit's 20 s (10 s with its half-interval tolerance).
    let changed_at = Instant::now();
    let (status, changed) = app
        .admin()
        .call(
            reqwest::Method::PATCH,
            "/v1/subscriptions/raised",
            Some(json!({ "rate_limit": 20.0 })),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["rate_limit"], 20.0, "{changed}");
    let got = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 4, "one attempt each: {got:?}");
    let after: Vec<Duration> = got[1..]
        .iter()
        .map(|r| r.at.saturating_duration_since(changed_at))
        .collect();
    assert!(
        after.iter().all(|d| *d < Duration::from_secs(1)),
        "the raised limit applies within a second of the change: {after:?}"
    );
    // Without a burst: two turns at least 75 ms apart at 20/s (two intervals less the
    // half-interval tolerance); 50 ms at the receiver leaves room for jitter.
    let span = got[3].at.duration_since(got[1].at);
    assert!(
        span >= Duration::from_millis(50),
        "the three after the change keep the new rate: {span:?}"
    );
}

//! Web pages cannot drive hookd (issue 28, finding 1): a JSON route refuses a body that is not
//! declared JSON (what a cross-site `text/plain` form sends), the API refuses what a browser
//! says came from another page (`Origin`, `Sec-Fetch-Site`), and an open listener answers only
//! the names of its own address (DNS rebinding), the dashboard included. Server-to-server
//! clients, which send none of these headers, keep working.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::spawn_app_with_api;

const EVIL: &str = "http://evil.example";

/// A subscription to pause: its URL is never called.
const LOCAL: &str = "[[subscription]]\nid = \"local\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                     secret = \"local-secret\"\nevents = [\"*\"]\n";

/// One request to `app`'s API listener with `headers` (a `Host` among them replaces the
/// real one) and an optional raw body; the status and the body as JSON (or a string).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("http://{}{path}", app.api));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The answer is a JSON error whose message holds `text`.
fn assert_error_says(answer: &Value, text: &str) {
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains(text)),
        "an error saying {text:?}: {answer}"
    );
}

async fn paused(app: &TestApp) -> bool {
    let shown = app.admin().get_ok("/v1/subscriptions/local").await;
    shown["paused"]
        .as_bool()
        .unwrap_or_else(|| panic!("no paused flag: {shown}"))
}

fn exfil_body(app: &TestApp) -> String {
    json!({ "id": "csrf-exfil", "url": format!("http://{}/x", app.api), "events": ["*"] })
        .to_string()
}

#[tokio::test]
async fn a_json_route_refuses_a_body_not_declared_json_with_415() {
    let app = spawn_app(LOCAL).await;
    let body = exfil_body(&app);
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| vec![("content-type", t)])
            .unwrap_or_default();
        let (status, answer) = send(
            &app,
            Method::POST,
            "/v1/subscriptions",
            &headers,
            Some(&body),
        )
        .await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        assert_error_says(&answer, "application/json");
    }
    for (method, path, body) in [
        (
            Method::PATCH,
            "/v1/subscriptions/local",
            "{\"url\":\"http://127.0.0.1:9/y\"}",
        ),
        (Method::POST, "/v1/subscriptions/local/rotate-secret", "{}"),
        (Method::POST, "/v1/portal-links", "{\"owner\":\"acme\"}"),
        (
            Method::POST,
            "/v1/deliveries/retry",
            "{\"since\":\"2020-01-01T00:00:00Z\"}",
        ),
    ] {
        let (status, answer) = send(
            &app,
            method.clone(),
            path,
            &[("content-type", "text/plain")],
            Some(body),
        )
        .await;
        assert_eq!(status, 415, "{method} {path}: {answer}");
    }
    let (status, _) = send(&app, Method::GET, "/v1/subscriptions/csrf-exfil", &[], None).await;
    assert_eq!(status, 404, "nothing was created");

    // Declared JSON, the same body is taken.
    let (status, answer) = send(
        &app,
        Method::POST,
        "/v1/subscriptions",
        &[("content-type", "application/json; charset=utf-8")],
        Some(&body),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn the_api_refuses_a_request_a_browser_sent_from_another_page_with_403() {
    let app = spawn_app(LOCAL).await;
    let same_origin = format!("http://{}", app.api);
    let other_port = format!("http://127.0.0.1:{}", app.api.port().wrapping_add(1));
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("origin", EVIL)],
        vec![("origin", EVIL), ("content-type", "text/plain")],
        vec![("origin", "null")],
        // Another port of the same host is another origin (a development server).
        vec![("origin", other_port.as_str())],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![
            ("origin", same_origin.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for headers in &refused {
        for path in [
            "/v1/subscriptions/local/pause",
            "/v1/subscriptions/local/test",
        ] {
            let (status, answer) = send(&app, Method::POST, path, headers, None).await;
            assert_eq!(status, 403, "{headers:?} {path}: {answer}");
            assert_error_says(&answer, "cross-site request refused");
        }
        let (status, answer) = send(&app, Method::GET, "/v1/deliveries", headers, None).await;
        assert_eq!(status, 403, "reads too, {headers:?}: {answer}");
    }
    assert!(!paused(&app).await, "no refused request paused it");

    // Server-to-server clients send neither header; a page of this very origin may.
    for headers in [
        vec![],
        vec![("origin", same_origin.as_str())],
        vec![("sec-fetch-site", "same-origin")],
        vec![("sec-fetch-site", "none")],
    ] {
        let (status, answer) = send(
            &app,
            Method::POST,
            "/v1/subscriptions/local/pause",
            &headers,
            None,
        )
        .await;
        assert_eq!(status, 200, "{headers:?}: {answer}");
    }
    assert!(paused(&app).await);
}

#[tokio::test]
async fn an_open_listener_answers_only_its_own_names_with_421_for_others() {
    let app = spawn_app(LOCAL).await;
    let port = app.api.port();
    let rebound = format!("rebind.attacker.example:{port}");
    for (method, path) in [
        (Method::GET, "/v1/subscriptions"),
        (Method::POST, "/v1/subscriptions/local/pause"),
        (Method::GET, "/ui/login"),
        (Method::GET, "/ui"),
    ] {
        let (status, answer) = send(
            &app,
            method.clone(),
            path,
            &[("host", rebound.as_str())],
            None,
        )
        .await;
        assert_eq!(status, 421, "{method} {path}: {answer}");
        let text = answer.to_string();
        assert!(
            text.contains("allowed_hosts") && text.contains("rebind.attacker.example"),
            "{path}: a clear error: {text}"
        );
    }
    // The sign-in a rebinding page would post: no session.
    let response = app
        .client
        .post(format!("http://{}/ui/login", app.api))
        .header("host", &rebound)
        .header("origin", format!("http://{rebound}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=")
        .send()
        .await
        .expect("sign-in");
    assert_eq!(response.status().as_u16(), 421);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(!paused(&app).await);

    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        "[::1]".to_string(),
    ] {
        for path in ["/v1/subscriptions", "/ui/login"] {
            let (status, answer) =
                send(&app, Method::GET, path, &[("host", host.as_str())], None).await;
            assert_eq!(status, 200, "{path} as {host}: {answer}");
        }
    }
}

#[tokio::test]
async fn allowed_hosts_adds_names_an_open_listener_answers_to() {
    let app = spawn_app_with_api("allowed_hosts = [\"Hookd.Internal\"]", "").await;
    let port = app.api.port();
    for (host, expected) in [
        (format!("hookd.internal:{port}"), 200),
        ("HOOKD.INTERNAL".to_string(), 200),
        (format!("other.internal:{port}"), 421),
        (format!("hookd.internal.attacker.example:{port}"), 421),
    ] {
        let (status, answer) = send(
            &app,
            Method::GET,
            "/v1/deliveries",
            &[("host", host.as_str())],
            None,
        )
        .await;
        assert_eq!(status, expected, "{host}: {answer}");
    }
}

#[tokio::test]
async fn with_tokens_any_host_is_answered_but_cross_site_requests_are_still_refused() {
    // A page has no token to send, and a proxy may forward any name: only the open listener
    // checks Host. The browser's own headers are checked all the same.
    let app = spawn_app_with_api("tokens = [\"cross-site-t0ken\"]", "").await;
    let bearer = "Bearer cross-site-t0ken";
    let (status, answer) = send(
        &app,
        Method::GET,
        "/v1/deliveries",
        &[("host", "hooks.example.com"), ("authorization", bearer)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = send(
        &app,
        Method::GET,
        "/v1/deliveries",
        &[("origin", EVIL), ("authorization", bearer)],
        None,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
}

#[test]
fn a_bad_allowed_hosts_entry_is_a_config_error_naming_the_key() {
    for bad in ["", "hookd.internal:8080", "http://hookd.internal", "a b"] {
        let text = format!(
            "[api]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [{bad:?}]\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = \"/tmp/x\"\n"
        );
        let error = hookd::Config::from_toml(&text, "test.toml")
            .expect_err(bad)
            .to_string();
        assert!(error.contains("api.allowed_hosts"), "{bad:?}: {error}");
    }
}

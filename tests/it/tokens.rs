//! API token scopes: `ingest` tokens may only `POST /v1/events`, `admin` tokens only the admin
//! API, a plain secret both; 401 (with `WWW-Authenticate: Bearer`) without a valid token, 403
//! with a valid token that lacks the scope, and nothing stored for a refused request. The
//! config rules (empty scopes, an open API off loopback) and the CLI's choice of token.

use std::path::Path;
use std::time::Duration;

use hookd::config::{Config, ConfigError, Diagnostic, Scope};
use hookd::store::DeliveryState;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::app::{spawn_app_full, TestApp};
use crate::support::cli::{hookd, Run};
use crate::support::events::{event, subscription_toml, wait_for_state};
use crate::support::receiver::TestReceiver;

const DEADLINE: Duration = Duration::from_secs(10);

const TOKENS: &str = r#"tokens = [{ secret = "ingest-tok", scopes = ["ingest"] }, { secret = "admin-tok", scopes = ["admin"] }, "both-tok"]"#;

/// An in-process hookd with [`TOKENS`] and one subscription to `receiver`.
async fn spawn_with_tokens(receiver: &TestReceiver) -> TestApp {
    let subscription = subscription_toml("sub", &receiver.url(), "s3cret", &["*"], "");
    spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n{TOKENS}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [storage]\npath = {store}\n\n[delivery]\nretry_schedule = []\n\n{subscription}"
        )
    })
    .await
}

struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
    text: String,
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Answer {
    let answer = app.admin().token(token).send(method, path, body).await;
    Answer {
        status: answer.status,
        www_authenticate: answer.header("www-authenticate"),
        body: serde_json::from_str(&answer.text).unwrap_or(Value::Null),
        text: answer.text,
    }
}

async fn post_event(app: &TestApp, token: Option<&str>, request_id: &str) -> Answer {
    call(
        app,
        Method::POST,
        "/v1/events",
        token,
        Some(event(request_id, "completed").to_string()),
    )
    .await
}

fn assert_forbidden(answer: &Answer, scope: &str, what: &str) {
    assert_eq!(answer.status, 403, "{what}: {}", answer.text);
    let error = answer.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: 403 without a JSON error: {}", answer.text));
    assert!(
        error.contains(scope),
        "{what}: the error does not name the {scope} scope: {error}"
    );
    assert!(
        !answer.text.contains("-tok"),
        "{what}: a token leaks: {}",
        answer.text
    );
}

fn assert_unauthorized(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.text);
    assert_eq!(
        answer.www_authenticate.as_deref(),
        Some("Bearer"),
        "{what}: 401 without WWW-Authenticate: Bearer"
    );
    assert!(
        answer.body["error"].is_string(),
        "{what}: 401 without a JSON error: {}",
        answer.text
    );
    assert!(
        !answer.text.contains("-tok"),
        "{what}: a token leaks: {}",
        answer.text
    );
}

/// The admin routes, with a delivery id that exists.
fn admin_routes(delivery_id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/v1/deliveries".to_string()),
        (Method::GET, format!("/v1/deliveries/{delivery_id}")),
        (Method::POST, format!("/v1/deliveries/{delivery_id}/retry")),
        (
            Method::POST,
            "/v1/deliveries/retry?since=2020-01-01T00:00:00Z".to_string(),
        ),
        (Method::GET, "/v1/subscriptions".to_string()),
        (Method::POST, "/v1/subscriptions/sub/pause".to_string()),
        (Method::POST, "/v1/subscriptions/sub/resume".to_string()),
    ]
}

async fn stored(app: &TestApp) -> (u64, u64) {
    app.shared.store.counts().await.expect("store counts")
}

#[tokio::test]
async fn each_scope_opens_only_its_routes() {
    let receiver = TestReceiver::start().await;
    let app = spawn_with_tokens(&receiver).await;

    // ingest-tok: ingest yes, admin no.
    let accepted = post_event(&app, Some("ingest-tok"), "by-ingest").await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    assert_eq!(accepted.body["deliveries"], 1, "{}", accepted.text);
    let event_id = accepted.body["event_id"].as_str().expect("event_id");
    let delivery_id = app
        .shared
        .store
        .event_meta(event_id)
        .await
        .expect("event meta")
        .expect("event stored")
        .deliveries[0]
        .clone();
    let delivered = wait_for_state(&app, &delivery_id, DeliveryState::Delivered, DEADLINE).await;
    assert_eq!(delivered.attempts, 1);
    assert_eq!(stored(&app).await, (1, 1));

    for (method, path) in admin_routes(&delivery_id) {
        let answer = call(&app, method.clone(), &path, Some("ingest-tok"), None).await;
        assert_forbidden(&answer, "admin", &format!("ingest-tok {method} {path}"));
    }
    // The refused retry and pause changed nothing.
    let after = app
        .shared
        .store
        .delivery(&delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((after.state, after.attempts), (DeliveryState::Delivered, 1));
    assert_eq!(receiver.received().len(), 1);

    // admin-tok: admin yes, ingest no.
    let refused = post_event(&app, Some("admin-tok"), "by-admin").await;
    assert_forbidden(&refused, "ingest", "admin-tok POST /v1/events");
    let list = call(&app, Method::GET, "/v1/deliveries", Some("admin-tok"), None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<&str> = list.body["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [delivery_id.as_str()]);
    let show = call(
        &app,
        Method::GET,
        &format!("/v1/deliveries/{delivery_id}"),
        Some("admin-tok"),
        None,
    )
    .await;
    assert_eq!(show.status, 200, "{}", show.text);
    assert_eq!(show.body["id"], delivery_id, "{}", show.text);
    let subs = call(
        &app,
        Method::GET,
        "/v1/subscriptions",
        Some("admin-tok"),
        None,
    )
    .await;
    assert_eq!(subs.status, 200, "{}", subs.text);
    assert_eq!(subs.body["subscriptions"][0]["id"], "sub", "{}", subs.text);
    for action in ["pause", "resume"] {
        let answer = call(
            &app,
            Method::POST,
            &format!("/v1/subscriptions/sub/{action}"),
            Some("admin-tok"),
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "{action}: {}", answer.text);
    }
    let retry = call(
        &app,
        Method::POST,
        &format!("/v1/deliveries/{delivery_id}/retry"),
        Some("admin-tok"),
        None,
    )
    .await;
    assert!(
        (200..300).contains(&retry.status),
        "admin-tok retry: {}",
        retry.text
    );
    receiver.wait_for(2, DEADLINE).await;

    // both-tok: both.
    let accepted = post_event(&app, Some("both-tok"), "by-both").await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let list = call(&app, Method::GET, "/v1/deliveries", Some("both-tok"), None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["deliveries"].as_array().unwrap().len(), 2);
    let subs = call(
        &app,
        Method::GET,
        "/v1/subscriptions",
        Some("both-tok"),
        None,
    )
    .await;
    assert_eq!(subs.status, 200, "{}", subs.text);

    // Only the two accepted events were stored, and only they were delivered.
    assert_eq!(stored(&app).await, (2, 2));
    let got = receiver.wait_for(3, DEADLINE).await;
    let request_ids: Vec<String> = got
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            body["request_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(request_ids, ["by-ingest", "by-ingest", "by-both"]);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_stores_nothing() {
    let receiver = TestReceiver::start().await;
    let app = spawn_with_tokens(&receiver).await;
    let wrong = [
        None,
        Some(""),
        Some("nope"),
        Some("ingest-to"),
        Some("Ingest-tok"),
        Some("admin-tokx"),
        Some("ingest"),
    ];
    for (i, token) in wrong.iter().enumerate() {
        let answer = post_event(&app, *token, &format!("wrong-{i}")).await;
        assert_unauthorized(&answer, &format!("POST /v1/events with {token:?}"));
        for (method, path) in admin_routes("d-unknown") {
            let answer = call(&app, method.clone(), &path, *token, None).await;
            assert_unauthorized(&answer, &format!("{method} {path} with {token:?}"));
        }
    }
    // Not the Bearer scheme, or the token in another header: no token at all.
    for (name, value) in [
        ("authorization", "Basic both-tok"),
        ("authorization", "both-tok"),
        ("authorization", "Token both-tok"),
        ("x-api-key", "both-tok"),
    ] {
        let response = app
            .client
            .post(format!("http://{}/v1/events", app.api))
            .header(name, value)
            .header("content-type", "application/json")
            .body(event("other-scheme", "completed").to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 401, "{name}: {value}");
    }
    // A 403 stores nothing either.
    let refused = post_event(&app, Some("admin-tok"), "admin-posts").await;
    assert_forbidden(&refused, "ingest", "admin-tok POST /v1/events");

    assert_eq!(
        stored(&app).await,
        (0, 0),
        "a refused request stored something"
    );
    let list = call(&app, Method::GET, "/v1/deliveries", Some("admin-tok"), None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["deliveries"], json!([]));
    assert!(receiver.received().is_empty());

    // The server still accepts a right token afterwards (and that one is stored).
    let accepted = post_event(&app, Some("ingest-tok"), "wrong-0").await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    assert_eq!(stored(&app).await, (1, 1));
}

fn config_errors(text: &str) -> Vec<Diagnostic> {
    match Config::from_toml(text, "tokens.toml") {
        Err(ConfigError::Invalid(d)) => d,
        other => panic!("expected a config error, got {other:?}\n{text}"),
    }
}

#[test]
fn token_names_default_to_their_place_and_must_be_plain_and_distinct() {
    let config = Config::from_toml(
        "[api]\ntokens = [\"a-tok\", { secret = \"b-tok\", scopes = [\"admin\"], name = \"ops.team_1\" }, { secret = \"c-tok\", scopes = [\"ingest\"] }]\n",
        "tokens.toml",
    )
    .expect("valid");
    let names: Vec<&str> = config.api.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["token-1", "ops.team_1", "token-3"]);
    for (tokens, says) in [
        (
            "[{ secret = \"a-tok\", scopes = [\"admin\"], name = \"ops\" }, { secret = \"b-tok\", scopes = [\"admin\"], name = \"ops\" }]",
            "two tokens",
        ),
        // A default name is taken too.
        ("[\"a-tok\", { secret = \"b-tok\", scopes = [\"admin\"], name = \"token-1\" }]", "two tokens"),
        ("[{ secret = \"a-tok\", scopes = [\"admin\"], name = \"the ops team\" }]", "letters, digits"),
        ("[{ secret = \"a-tok\", scopes = [\"admin\"], name = \"\" }]", "letters, digits"),
    ] {
        let d = config_errors(&format!("[api]\ntokens = {tokens}\n"));
        assert_eq!(d.len(), 1, "{tokens}: {d:?}");
        assert_eq!(d[0].key, "api.tokens", "{d:?}");
        assert!(d[0].message.contains("name") && d[0].message.contains(says), "{}", d[0].message);
        assert!(!d[0].to_string().contains("-tok"), "no secret in {}", d[0]);
    }
}

#[test]
fn token_config_rules() {
    // The scopes as configured.
    let config = Config::from_toml(&format!("[api]\n{TOKENS}\n"), "tokens.toml").expect("valid");
    let scopes: Vec<(&str, Vec<Scope>)> = config
        .api
        .tokens
        .iter()
        .map(|t| (t.secret.expose(), t.scopes.clone()))
        .collect();
    assert_eq!(
        scopes,
        [
            ("ingest-tok", vec![Scope::Ingest]),
            ("admin-tok", vec![Scope::Admin]),
            ("both-tok", vec![Scope::Ingest, Scope::Admin]),
        ]
    );

    // Empty scopes: an error naming api.tokens on its line.
    let d = config_errors(
        "[api]\nlisten = \"127.0.0.1:0\"\ntokens = [\n  \"ok-tok\",\n  { secret = \"x-tok\", scopes = [] },\n]\n",
    );
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].line, d[0].key.as_str()), (5, "api.tokens"), "{d:?}");
    assert!(d[0].message.contains("scopes"), "{}", d[0].message);
    assert!(!d[0].to_string().contains("x-tok"), "{}", d[0]);

    // An unknown scope is an error too.
    let d = config_errors("[api]\ntokens = [{ secret = \"x-tok\", scopes = [\"root\"] }]\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].line, 2, "{d:?}");
    assert!(!d[0].message.is_empty() && !d[0].key.is_empty(), "{d:?}");

    // Off loopback, no tokens is an error; with tokens it is valid. Never bound here.
    for listen in ["0.0.0.0:0", "[::]:8080", "192.0.2.10:8080"] {
        let d = config_errors(&format!("[api]\nlisten = {listen:?}\n"));
        assert_eq!(d.len(), 1, "{listen}: {d:?}");
        assert_eq!((d[0].line, d[0].key.as_str()), (2, "api.listen"), "{d:?}");
        assert!(d[0].message.contains("loopback"), "{}", d[0].message);
        let d = config_errors(&format!("[api]\nlisten = {listen:?}\ntokens = []\n"));
        assert_eq!(d[0].key, "api.listen", "{listen}: explicit empty tokens");
        for tokens in [
            "tokens = [\"t0ken\"]",
            "tokens = [{ secret = \"t0ken\", scopes = [\"admin\"] }]",
            "tokens = [{ secret = \"t0ken\", scopes = [\"ingest\"] }]",
        ] {
            let config = Config::from_toml(
                &format!("[api]\nlisten = {listen:?}\n{tokens}\n"),
                "tokens.toml",
            )
            .unwrap_or_else(|e| panic!("{listen} with {tokens}: {e}"));
            assert_eq!(config.api.listen.to_string(), listen);
            assert_eq!(config.api.tokens.len(), 1);
        }
    }
    // Loopback without tokens is fine, IPv6 too.
    for listen in ["127.0.0.1:0", "127.5.6.7:8080", "[::1]:0"] {
        let config = Config::from_toml(&format!("[api]\nlisten = {listen:?}\n"), "tokens.toml")
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert!(config.api.tokens.is_empty());
    }
}

/// A config for the CLI: the running app's address and `tokens`.
fn write_cli_config(dir: &Path, name: &str, app: &TestApp, tokens: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[api]\nlisten = \"{}\"\n{tokens}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n",
            app.api,
            dir.join("unused-db").display().to_string()
        ),
    )
    .expect("write CLI config");
    path.display().to_string()
}

#[tokio::test]
async fn the_cli_picks_the_token_with_the_scope_it_needs() {
    let receiver = TestReceiver::start().await;
    let app = spawn_with_tokens(&receiver).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // The ingest token comes first: a CLI that took the first token would fail `deliveries
    // list`; the admin token comes before the both-scoped one: one that took the first admin
    // token for `send` would fail it.
    let config = write_cli_config(dir.path(), "cli.toml", &app, TOKENS);
    let event_file = dir.path().join("event.json");
    std::fs::write(&event_file, event("cli-1", "completed").to_string()).unwrap();
    let event_file = event_file.display().to_string();

    let Run {
        code,
        stdout,
        stderr,
    } = hookd(&["send", "--config", &config, &event_file], None).await;
    assert_eq!(code, 0, "send failed: {stdout}\n{stderr}");
    let answer: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("send printed no JSON ({e}): {stdout}"));
    let event_id = answer["event_id"].as_str().expect("event_id").to_string();
    assert_eq!(answer["deliveries"], 1, "{answer}");

    let Run {
        code,
        stdout,
        stderr,
    } = hookd(&["deliveries", "list", "--config", &config, "--json"], None).await;
    assert_eq!(code, 0, "deliveries list failed: {stdout}\n{stderr}");
    let list: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("deliveries list printed no JSON ({e}): {stdout}"));
    let listed: Vec<&Value> = list["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["event_id"], event_id, "{list}");

    // With only a token of the other scope in the config, the CLI sends no token at all
    // (401): it never offers a token that lacks the scope (which would be a 403).
    let ingest_only = write_cli_config(
        dir.path(),
        "ingest-only.toml",
        &app,
        r#"tokens = [{ secret = "ingest-tok", scopes = ["ingest"] }]"#,
    );
    let Run {
        code,
        stdout,
        stderr,
    } = hookd(
        &["deliveries", "list", "--config", &ingest_only, "--json"],
        None,
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("ingest-tok"), "the token leaks: {stderr}");

    let admin_only = write_cli_config(
        dir.path(),
        "admin-only.toml",
        &app,
        r#"tokens = [{ secret = "admin-tok", scopes = ["admin"] }]"#,
    );
    let Run {
        code,
        stdout,
        stderr,
    } = hookd(&["send", "--config", &admin_only, &event_file], None).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("admin-tok"), "the token leaks: {stderr}");

    // An explicit --token wins over the config: a token without the scope gets the 403.
    let Run {
        code,
        stdout,
        stderr,
    } = hookd(
        &[
            "send",
            "--config",
            &config,
            "--token",
            "admin-tok",
            &event_file,
        ],
        None,
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    let Run {
        code,
        stdout,
        stderr,
    } = hookd(
        &[
            "deliveries",
            "list",
            "--config",
            &config,
            "--token",
            "ingest-tok",
        ],
        None,
    )
    .await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("403"), "{stderr}");

    // Nothing more was stored by the refused sends.
    assert_eq!(stored(&app).await, (1, 1));
}

/// An unknown scope or a misspelled key in a token entry must be explained, not reported as
/// serde's "data did not match any variant of untagged enum RawToken" (an internal type name
/// that tells the operator nothing).
#[test]
fn a_bad_token_entry_is_explained() {
    for (entry, hint) in [
        (r#"{ secret = "x-tok", scopes = ["root"] }"#, "root"),
        (r#"{ secret = "x-tok", scopes = ["Admin"] }"#, "Admin"),
        (r#"{ secret = "x-tok", scope = ["admin"] }"#, "scope"),
        (r#"{ token = "x-tok", scopes = ["admin"] }"#, "token"),
    ] {
        let d = config_errors(&format!("[api]\ntokens = [{entry}]\n"));
        assert_eq!(d.len(), 1, "{entry}: {d:?}");
        assert_eq!(d[0].line, 2, "{entry}: {d:?}");
        assert!(d[0].key.ends_with("tokens"), "{entry}: {d:?}");
        assert!(
            !d[0].message.contains("untagged") && !d[0].message.contains("RawToken"),
            "{entry}: the error names an internal type instead of the problem: {}",
            d[0].message
        );
        assert!(
            d[0].message.contains(hint),
            "{entry}: the error does not name {hint:?}: {}",
            d[0].message
        );
        assert!(!d[0].message.contains("x-tok"), "{}", d[0].message);
    }
}

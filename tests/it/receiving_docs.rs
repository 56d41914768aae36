//! docs/receiving-webhooks.md and its snippets (docs/snippets/*): the code a receiver copies.
//!
//! - The markdown embeds every snippet file verbatim (`<!-- snippet: docs/snippets/x -->` before
//!   a fenced block), so the page and the tested code cannot drift apart.
//! - Every snippet runs as a receiver on 127.0.0.1 and gets live deliveries from an in-process
//!   hookd: awkward payloads (unicode, escapes, numbers, key order, a body over express.json()'s
//!   default 100 kB) must verify (2xx), and the same deliveries signed with another secret must be
//!   refused (401), so a snippet that accepts everything fails. Node snippets run with node and
//!   tests/receivers/express/node_modules, Python ones with tests/receivers/flask/.venv, the Go one
//!   is built once into target/receiving-docs, and the Rust one is `include!`d here.
//! - The Standard Webhooks snippets also get rotating secrets (the receiver knows only the old
//!   one), and crafted requests: a stale or future `webhook-timestamp` (a replay) is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hookd::store::DeliveryState;
use serde_json::Value;

use crate::support::app::{spawn_app, TestApp};
use crate::support::events::subscription_toml;
use crate::support::process::{manifest_dir, ChildGuard};
use crate::support::receiver::TestReceiver;
use crate::support::wait_until;

/// The Rust snippet, compiled as it is printed in the docs.
mod rust_snippet {
    include!("../../docs/snippets/rust_verify.rs");
}

pub(crate) const DOC: &str = "docs/receiving-webhooks.md";
pub(crate) const SNIPPET_DIR: &str = "docs/snippets";
const MARKER_PREFIX: &str = "<!-- snippet: ";
const MARKER_SUFFIX: &str = " -->";

/// Non-ASCII on purpose: receivers must key the HMAC with the secret's UTF-8 bytes.
pub(crate) const SECRET: &str = "hookd-dócs-秘密-🔑";
pub(crate) const WRONG_SECRET: &str = "not-the-secret";

pub(crate) const DEPS_HINT: &str = "run scripts/test-deps.sh first";

// ------------------------------------------------------------------ docs == snippet files

/// One `<!-- snippet: path -->` block of the markdown.
struct Embedded {
    path: String,
    line: usize,
    info: String,
    content: String,
}

/// Every marked fenced block of `doc`; a marker not followed by a fence, or an unclosed fence,
/// is an error.
fn embedded_snippets(doc: &str) -> Result<Vec<Embedded>, String> {
    let lines: Vec<&str> = doc.split_inclusive('\n').collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let Some(rest) = line.trim_start().strip_prefix(MARKER_PREFIX) else {
            i += 1;
            continue;
        };
        let path = rest
            .strip_suffix(MARKER_SUFFIX)
            .ok_or_else(|| format!("{DOC}:{}: malformed snippet marker {line:?}", i + 1))?
            .trim()
            .to_string();
        let fence_line = lines
            .get(i + 1)
            .map(|l| l.trim_end_matches(['\n', '\r']))
            .unwrap_or("");
        let fence: String = fence_line.chars().take_while(|&c| c == '`').collect();
        if fence.len() < 3 {
            return Err(format!(
                "{DOC}:{}: the snippet marker for {path} must be followed directly by a ``` fence, found {fence_line:?}",
                i + 1
            ));
        }
        let info = fence_line[fence.len()..].trim().to_string();
        let start = i + 2;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim_end() == fence)
            .ok_or_else(|| format!("{DOC}:{}: the block of {path} is never closed", i + 2))?;
        found.push(Embedded {
            path,
            line: i + 2,
            info,
            content: lines[start..end].concat(),
        });
        i = end + 1;
    }
    Ok(found)
}

fn language_of(path: &str) -> Option<&'static str> {
    match Path::new(path).extension()?.to_str()? {
        "js" => Some("javascript"),
        "py" => Some("python"),
        "go" => Some("go"),
        "rs" => Some("rust"),
        "rb" => Some("ruby"),
        "php" => Some("php"),
        _ => None,
    }
}

#[test]
fn the_docs_embed_every_snippet_file_verbatim() {
    let root = manifest_dir();
    let doc = std::fs::read_to_string(root.join(DOC)).unwrap_or_else(|e| panic!("read {DOC}: {e}"));
    let embedded = embedded_snippets(&doc).unwrap_or_else(|e| panic!("{e}"));
    assert!(!embedded.is_empty(), "{DOC} marks no snippet");

    let mut problems = Vec::new();
    for block in &embedded {
        if !block.path.starts_with(&format!("{SNIPPET_DIR}/")) {
            problems.push(format!(
                "{DOC}:{}: {} is not under {SNIPPET_DIR}/",
                block.line, block.path
            ));
            continue;
        }
        let file = match std::fs::read_to_string(root.join(&block.path)) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!(
                    "{DOC}:{}: cannot read {}: {e}",
                    block.line, block.path
                ));
                continue;
            }
        };
        if file != block.content {
            let at = file
                .lines()
                .zip(block.content.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || "in length or the final newline".to_string(),
                    |n| format!("from snippet line {}", n + 1),
                );
            problems.push(format!(
                "{DOC}:{}: the block differs from {} ({at}): copy the file into the block",
                block.line, block.path
            ));
        }
        match language_of(&block.path) {
            Some(lang) if block.info == lang => {}
            want => problems.push(format!(
                "{DOC}:{}: the fence of {} says {:?}, want {:?}",
                block.line, block.path, block.info, want
            )),
        }
    }

    let mut files: Vec<String> = std::fs::read_dir(root.join(SNIPPET_DIR))
        .unwrap_or_else(|e| panic!("read {SNIPPET_DIR}: {e}"))
        .map(|entry| entry.expect("dir entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| format!("{SNIPPET_DIR}/{}", entry.file_name().to_string_lossy()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{SNIPPET_DIR} holds no file");
    for file in &files {
        if !embedded.iter().any(|b| &b.path == file) {
            problems.push(format!("{file} is not embedded in {DOC}"));
        }
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        if text.lines().any(|l| l.trim_start().starts_with("```")) {
            problems.push(format!(
                "{file} contains a ``` line: it would end its block"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs and snippets drifted apart:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_snippet_block_parser_sees_drift() {
    let doc = "text\n<!-- snippet: docs/snippets/a.js -->\n```javascript\nline 1\n\nline 3\n```\n";
    let blocks = embedded_snippets(doc).unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].path, "docs/snippets/a.js");
    assert_eq!(blocks[0].info, "javascript");
    assert_eq!(blocks[0].content, "line 1\n\nline 3\n");
    assert!(embedded_snippets("<!-- snippet: x.js -->\n\n```js\n```\n").is_err());
    assert!(embedded_snippets("<!-- snippet: x.js -->\n```js\nnever closed\n").is_err());
}

// ------------------------------------------------------------------ the receivers

/// A snippet running as a receiver, on 127.0.0.1.
pub(crate) struct Receiver {
    pub(crate) name: &'static str,
    pub(crate) url: String,
    pub(crate) process: Option<ChildGuard>,
}

impl Receiver {
    /// What the receiver printed so far (stdout and stderr), for failure messages.
    pub(crate) fn output(&self) -> String {
        match &self.process {
            Some(p) => format!(
                "stdout:\n{}\nstderr:\n{}",
                p.stdout_lines().join("\n"),
                p.stderr_tail(4000)
            ),
            None => "(in-process)".to_string(),
        }
    }
}

fn require_node() -> PathBuf {
    let modules = manifest_dir().join("tests/receivers/express/node_modules");
    assert!(
        modules.join("express/package.json").is_file(),
        "express is not installed in {}: {DEPS_HINT}",
        modules.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not on PATH ({node:?}): install Node.js >= 18, then {DEPS_HINT}"
    );
    modules
}

fn require_flask_python() -> PathBuf {
    let python = manifest_dir().join("tests/receivers/flask/.venv/bin/python");
    assert!(
        python.is_file(),
        "the Flask venv is missing ({}): {DEPS_HINT}",
        python.display()
    );
    python
}

/// An Express snippet, loaded by tests/receivers/snippets/serve_express.js.
pub(crate) async fn start_node(name: &'static str, secret: &str) -> Receiver {
    let modules = require_node();
    let root = manifest_dir();
    let mut command = Command::new("node");
    command
        .arg(root.join("tests/receivers/snippets/serve_express.js"))
        .arg(root.join(SNIPPET_DIR).join(name))
        .current_dir(&root)
        .env("NODE_PATH", modules)
        .env("WEBHOOK_SECRET", secret);
    let mut process = ChildGuard::spawn(name, command);
    let port = process.wait_listening(name).await;
    Receiver {
        name,
        url: format!("http://127.0.0.1:{port}/webhook/abstrakt"),
        process: Some(process),
    }
}

/// A Flask snippet, imported by tests/receivers/snippets/serve_flask.py.
pub(crate) async fn start_flask(name: &'static str, secret: &str) -> Receiver {
    let python = require_flask_python();
    let root = manifest_dir();
    let mut command = Command::new(python);
    command
        .arg(root.join("tests/receivers/snippets/serve_flask.py"))
        .arg(root.join(SNIPPET_DIR).join(name))
        .current_dir(&root)
        .env("WEBHOOK_SECRET", secret)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONIOENCODING", "utf-8")
        // No __pycache__ next to the snippets.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let mut process = ChildGuard::spawn(name, command);
    let port = process.wait_listening(name).await;
    Receiver {
        name,
        url: format!("http://127.0.0.1:{port}/webhook/abstrakt"),
        process: Some(process),
    }
}

/// Builds docs/snippets/go_receiver.go into target/receiving-docs once per content (the file
/// name carries its hash), with the Go caches there too. CGO_ENABLED keeps the toolchain's
/// default: Debian's Go ships its standard library precompiled for that, so even a first build
/// takes about a second (with CGO_ENABLED=0 it recompiles net and its dependencies, ~25 s).
fn go_receiver_binary() -> PathBuf {
    use sha2::Digest;
    let root = manifest_dir();
    let source = root.join(SNIPPET_DIR).join("go_receiver.go");
    let text = std::fs::read(&source).unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
    let hash = hex::encode(sha2::Sha256::digest(&text));
    let dir = root.join("target/receiving-docs");
    let binary = dir.join(format!("go_receiver-{}", &hash[..16]));
    if binary.is_file() {
        return binary;
    }
    let version = Command::new("go").arg("version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "go is not on PATH ({version:?}): {DEPS_HINT} (it installs Debian's golang-go)"
    );
    std::fs::create_dir_all(&dir).expect("create target/receiving-docs");
    let partial = dir.join(format!(
        "go_receiver-{}.{}.partial",
        &hash[..16],
        std::process::id()
    ));
    let started = Instant::now();
    let output = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .current_dir(&dir)
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .output()
        .expect("run go build");
    assert!(
        output.status.success(),
        "go build {} failed:\n{}{}",
        source.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &binary).expect("move the Go binary in place");
    eprintln!("built {} in {:?}", binary.display(), started.elapsed());
    binary
}

/// The Go snippet: `ADDR=127.0.0.1:0`, it logs `listening on 127.0.0.1:<port>` to stderr.
pub(crate) async fn start_go(secret: &str) -> Receiver {
    let binary = tokio::task::spawn_blocking(go_receiver_binary)
        .await
        .expect("go build task");
    let mut command = Command::new(binary);
    command
        .current_dir(manifest_dir())
        .env("WEBHOOK_SECRET", secret)
        .env("ADDR", "127.0.0.1:0");
    let name = "go_receiver.go";
    let mut process = ChildGuard::spawn(name, command);
    let port = process
        .wait_for_port(name, |p| {
            let stderr = p.stderr();
            let (_, rest) = stderr.split_once("listening on 127.0.0.1:")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // Only once the line is complete: the port may arrive in pieces.
            rest[digits.len()..].starts_with('\n').then_some(())?;
            digits.parse().ok()
        })
        .await;
    Receiver {
        name,
        url: format!("http://127.0.0.1:{port}/webhook/abstrakt"),
        process: Some(process),
    }
}

/// The Rust snippet's axum handler, in this process.
pub(crate) async fn start_rust(secret: &str) -> Receiver {
    let app = axum::Router::new()
        .route(
            "/webhook/abstrakt",
            axum::routing::post(rust_snippet::webhook),
        )
        .with_state(Arc::new(rust_snippet::Receiver {
            secret: secret.as_bytes().to_vec(),
            processed: Default::default(),
        }));
    crate::recipes::serve_router("rust_verify.rs", app).await
}

// ------------------------------------------------------------------ deliveries

/// The events posted: raw JSON text, so that escapes and number forms reach hookd as written.
pub(crate) fn event_matrix() -> Vec<String> {
    let mut events: Vec<String> = [
        // The seed page's payload.
        r#"{"request_id":"docs-seed","status":"completed","result":{"items":[{"url":"https://cdn.abstrakt.one/abc123.mp4","content_type":"video/mp4"}]},"metrics":{"inference_time":45.2,"queue_time":2.1},"timestamp":"2025-01-12T10:30:00Z"}"#,
        // Unicode, raw and escaped (a surrogate pair, U+2028/9, a BOM); a defaulted timestamp.
        r#"{"request_id":"docs-unicode-é中文😀","status":"completed","result":{"caption":"café 中文 😀 \u00e9\u4e2d\ud83d\ude00\u2028\u2029\ufeff","clé":"värde","😀":"emoji key"}}"#,
        // Escapes: quotes, backslashes, control characters, DEL, "\/".
        r#"{"request_id":"docs-escapes","status":"completed","result":{"url":"https:\/\/cdn.abstrakt.one\/a.mp4?x=1&y=\"2\"","path":"C:\\dir\\","text":"a\nb\r\nc\td","controls":"\u0000\u0001\u001f\u007f\b\f","we\"ird\\key":"v"}}"#,
        // Numbers JavaScript prints differently, and keys it reorders.
        r#"{"request_id":"docs-numbers","status":"completed","result":{"b":1,"10":2,"2":3},"metrics":{"one":1.0,"price":45.20,"thousand":1e3,"big":1E21,"tiny":1e-7,"neg_zero":-0,"min":5e-324,"max_safe":9007199254740991,"sum":0.30000000000000004,"list":[1.5e+2,-2.5E-3,100.000]}}"#,
        // A completed job without result (the seed's `result.items[0].url` throws on it; the
        // snippets read it guarded), and one with an empty items list.
        r#"{"request_id":"docs-no-result","status":"completed"}"#,
        r#"{"request_id":"docs-no-items","status":"completed","result":{"items":[]}}"#,
        // job.failed.
        r#"{"request_id":"docs-failed","status":"failed","error":{"message":"GPU «out of memory» — 显存不足\n\tat \"decode\""},"metrics":{"queue_time":0.25},"timestamp":"2025-01-12T10:30:00.123+05:30"}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Over express.json()'s default limit of 100 kB.
    let items: Vec<String> = (0..2500)
        .map(|i| {
            format!(r#"{{"url":"https://cdn.abstrakt.one/frames/{i:05}.png","content_type":"image/png","n":{i}}}"#)
        })
        .collect();
    events.push(format!(
        r#"{{"request_id":"docs-large","status":"completed","result":{{"items":[{}]}}}}"#,
        items.join(",")
    ));
    assert!(events.last().unwrap().len() > 150_000);
    events
}

/// What became of one delivery: its subscription, state and the receiver's answer.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    pub(crate) request_id: String,
    pub(crate) subscription: String,
    pub(crate) state: DeliveryState,
    pub(crate) status: Option<u16>,
    pub(crate) excerpt: String,
}

/// The `(request_id, delivery id)` pairs of the event `event_id`.
pub(crate) async fn deliveries_of(app: &TestApp, event_id: &str) -> Vec<(String, String)> {
    let meta = app
        .shared
        .store
        .event_meta(event_id)
        .await
        .expect("read")
        .expect("stored");
    meta.deliveries
        .into_iter()
        .map(|id| (meta.request_id.clone(), id))
        .collect()
}

/// Posts every event of `events` (each must fan out to `fan_out` deliveries), waits until every
/// delivery is finished (the config has no retries) and returns what became of each.
async fn deliver(app: &TestApp, events: &[String], fan_out: u64) -> Vec<Outcome> {
    let mut ids = Vec::new();
    for text in events {
        let (status, body) = app.post_raw(text.clone()).await;
        assert_eq!(status, 202, "posting {:.200}: {body}", text);
        assert_eq!(body["deliveries"], fan_out, "{body}");
        let event_id = body["event_id"].as_str().expect("event_id");
        ids.extend(deliveries_of(app, event_id).await);
    }
    finished(app, ids, Duration::from_secs(15)).await
}

/// Waits (up to `deadline`) until every delivery of `ids` is delivered or dead, and returns
/// what became of each.
pub(crate) async fn finished(
    app: &TestApp,
    ids: Vec<(String, String)>,
    deadline: Duration,
) -> Vec<Outcome> {
    let store = &app.shared.store;
    wait_until("every delivery to finish", deadline, || async {
        for (_, id) in &ids {
            let d = store.delivery(id).await.expect("read").expect("stored");
            if !matches!(d.state, DeliveryState::Delivered | DeliveryState::Dead) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let mut out = Vec::new();
    for (request_id, id) in ids {
        out.push({
            let delivery = store.delivery(&id).await.expect("read").expect("stored");
            let attempts = store.attempts(&id).await.expect("read attempts");
            let last = attempts.last();
            Outcome {
                id,
                request_id,
                subscription: delivery.subscription,
                state: delivery.state,
                status: last.and_then(|a| a.status_code),
                excerpt: last
                    .and_then(|a| a.response_excerpt.clone().or(a.error.clone()))
                    .unwrap_or_default(),
            }
        });
    }
    out
}

/// Checks each outcome against `want(subscription)`: `true` = verified (2xx, delivered),
/// `false` = refused with 401 (dead).
pub(crate) fn check_outcomes(
    receiver: &Receiver,
    outcomes: &[Outcome],
    want: impl Fn(&str) -> bool,
) {
    let mut wrong = Vec::new();
    for o in outcomes {
        let ok = want(&o.subscription);
        let fine = if ok {
            o.state == DeliveryState::Delivered && o.status.is_some_and(|s| (200..300).contains(&s))
        } else {
            o.state == DeliveryState::Dead && o.status == Some(401)
        };
        if !fine {
            wrong.push(format!(
                "{:?} via {}: want {}, got {:?} {:?} {:.300}",
                o.request_id,
                o.subscription,
                if ok { "2xx" } else { "401" },
                o.state,
                o.status,
                o.excerpt
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {} of {} deliveries went wrong:\n{}\n{}",
        receiver.name,
        wrong.len(),
        outcomes.len(),
        wrong.join("\n"),
        receiver.output()
    );
}

/// Request headers, by name.
type Headers = Vec<(&'static str, String)>;

/// A crafted request: what it is, its headers, the status the receiver must answer.
type Case = (&'static str, Headers, u16);

/// POSTs `body` with `headers` to the receiver; returns the status and the body.
pub(crate) async fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(5))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("POST to the receiver");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

pub(crate) const NO_RETRIES: &str = "[delivery]\nretry_schedule = []\ntimeout = \"5s\"\n\n";

/// A receiver of `X-Abstrakt-Signature` verifies hookd's deliveries signed with `SECRET`,
/// refuses those signed with another secret, and answers 401 (not 500) to a missing or
/// malformed signature.
async fn check_abstrakt_receiver(receiver: &Receiver) {
    let url = &receiver.url;
    let app = spawn_app(&format!(
        "{NO_RETRIES}{}{}",
        subscription_toml("right", url, SECRET, &["*"], ""),
        subscription_toml("wrong", url, WRONG_SECRET, &["*"], ""),
    ))
    .await;
    let outcomes = deliver(&app, &event_matrix(), 2).await;
    check_outcomes(receiver, &outcomes, |s| s == "right");

    let body = br#"{"request_id":"docs-crafted","status":"completed"}"#;
    let good = hookd::signing::abstrakt_signature(SECRET.as_bytes(), body);
    let cases: Vec<Case> = vec![
        (
            "a correct signature",
            vec![("x-abstrakt-signature", good.clone())],
            200,
        ),
        ("no signature", vec![], 401),
        (
            "an empty signature",
            vec![("x-abstrakt-signature", String::new())],
            401,
        ),
        (
            "a non-hex signature",
            vec![("x-abstrakt-signature", "zz".repeat(32))],
            401,
        ),
        (
            "half a signature",
            vec![("x-abstrakt-signature", good[..32].to_string())],
            401,
        ),
        (
            "a signature with trailing junk",
            vec![("x-abstrakt-signature", format!("{good}00"))],
            401,
        ),
        (
            "non-ASCII in the header",
            vec![("x-abstrakt-signature", "é".repeat(32))],
            401,
        ),
    ];
    for (what, headers, want) in cases {
        let (status, text) = post(url, &headers, body).await;
        assert_eq!(
            status,
            want,
            "{}: {what}: answered {status} {text:.300}\n{}",
            receiver.name,
            receiver.output()
        );
    }
}

/// A receiver that deduplicates on `X-Abstrakt-Delivery` processes a delivery once and
/// acknowledges the repeat with `"duplicate": true`.
async fn check_dedup(receiver: &Receiver) {
    let body = br#"{"request_id":"docs-dedup","status":"completed"}"#;
    let headers = vec![
        (
            "x-abstrakt-signature",
            hookd::signing::abstrakt_signature(SECRET.as_bytes(), body),
        ),
        ("x-abstrakt-delivery", "dlv_docs_dedup_1".to_string()),
        ("x-abstrakt-event", "job.completed".to_string()),
        ("x-abstrakt-attempt", "1".to_string()),
    ];
    let (status, first) = post(&receiver.url, &headers, body).await;
    assert_eq!(status, 200, "{}: {first}", receiver.name);
    let first: Value = serde_json::from_str(&first).expect("a JSON answer");
    assert_eq!(first.get("duplicate"), None, "{}: {first}", receiver.name);
    let (status, second) = post(&receiver.url, &headers, body).await;
    assert_eq!(status, 200, "{}: {second}", receiver.name);
    let second: Value = serde_json::from_str(&second).expect("a JSON answer");
    assert_eq!(second["duplicate"], true, "{}: {second}", receiver.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_stringify_snippet_verifies_hookd_deliveries() {
    let receiver = start_node("express_stringify.js", SECRET).await;
    check_abstrakt_receiver(&receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_raw_snippet_verifies_hookd_deliveries_and_deduplicates() {
    let receiver = start_node("express_raw.js", SECRET).await;
    check_abstrakt_receiver(&receiver).await;
    check_dedup(&receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_json_verify_snippet_verifies_hookd_deliveries() {
    let receiver = start_node("express_json_verify.js", SECRET).await;
    check_abstrakt_receiver(&receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_snippet_verifies_hookd_deliveries_and_deduplicates() {
    let receiver = start_flask("flask_receiver.py", SECRET).await;
    check_abstrakt_receiver(&receiver).await;
    check_dedup(&receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_snippet_verifies_hookd_deliveries() {
    let receiver = start_go(SECRET).await;
    check_abstrakt_receiver(&receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_snippet_verifies_hookd_deliveries() {
    // The function alone, on a known vector (RFC 4231, test case 2).
    let mac = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    assert!(rust_snippet::verify(
        b"Jefe",
        b"what do ya want for nothing?",
        mac
    ));
    assert!(!rust_snippet::verify(
        b"Jefe",
        b"what do ya want for nothing!",
        mac
    ));
    assert!(!rust_snippet::verify(
        b"Jeff",
        b"what do ya want for nothing?",
        mac
    ));
    assert!(!rust_snippet::verify(
        b"Jefe",
        b"what do ya want for nothing?",
        ""
    ));
    assert!(!rust_snippet::verify(
        b"Jefe",
        b"what do ya want for nothing?",
        "zz"
    ));

    let receiver = start_rust(SECRET).await;
    check_abstrakt_receiver(&receiver).await;

    // And on the bodies a plain recording receiver got: what hookd sent, byte for byte.
    let recorder = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{NO_RETRIES}{}",
        subscription_toml("recorded", &recorder.url(), SECRET, &["*"], "")
    ))
    .await;
    let events = event_matrix();
    for text in &events {
        assert_eq!(app.post_raw(text.clone()).await.0, 202);
    }
    for got in recorder
        .wait_for(events.len(), Duration::from_secs(10))
        .await
    {
        let signature = got.header("x-abstrakt-signature");
        assert!(rust_snippet::verify(
            SECRET.as_bytes(),
            &got.body,
            signature
        ));
        assert!(!rust_snippet::verify(
            WRONG_SECRET.as_bytes(),
            &got.body,
            signature
        ));
    }
}

// ------------------------------------------------------------------ Standard Webhooks

pub(crate) fn whsec() -> String {
    let key: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// Standard Webhooks headers for `body`, signed with `secret` at `timestamp`.
fn standard_headers(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Headers {
    let key = hookd::signing::standard_key(secret).expect("a whsec_ secret");
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            hookd::signing::standard_signature(&[key], id, timestamp, body),
        ),
    ]
}

fn replace_header(headers: &mut [(&'static str, String)], name: &str, value: String) {
    for (n, v) in headers.iter_mut() {
        if *n == name {
            *v = value.clone();
        }
    }
}

/// A Standard Webhooks receiver that knows only `old`: hookd's deliveries signed with it verify
/// (alone, with `signature = "both"`, and as the second signature while a newer secret rotates
/// in); deliveries without it, or after its rotation expired, are refused; and crafted requests
/// with a stale or future timestamp (replays) are refused although correctly signed.
pub(crate) async fn check_standard_receiver(receiver: &Receiver, old: &str) {
    let (new, other) = (whsec(), whsec());
    let url = &receiver.url;
    let probe = TestReceiver::start().await;
    // The subscription's secret is `new`; the receiver's `old` signs too until `expires`.
    let rotating = |expires: &str| {
        format!(
            "signature = \"standard\"\nprevious_secret = {old:?}\nprevious_secret_expires = {expires:?}\n"
        )
    };
    let app = spawn_app(&format!(
        "{NO_RETRIES}{}{}{}{}{}{}{}",
        subscription_toml("standard", url, old, &["*"], "signature = \"standard\"\n"),
        subscription_toml("both", url, old, &["*"], "signature = \"both\"\n"),
        subscription_toml(
            "rotating",
            url,
            &new,
            &["*"],
            &rotating("2100-01-01T00:00:00Z")
        ),
        subscription_toml(
            "rotated-out",
            url,
            &new,
            &["*"],
            &rotating("2000-01-01T00:00:00Z")
        ),
        subscription_toml("wrong", url, &other, &["*"], "signature = \"standard\"\n"),
        subscription_toml("abstrakt-only", url, old, &["*"], ""),
        subscription_toml(
            "rotating-probe",
            &probe.url(),
            &new,
            &["job.completed"],
            &rotating("2100-01-01T00:00:00Z")
        ),
    ))
    .await;
    let mut events = event_matrix();
    events.retain(|e| !e.contains("docs-failed"));
    let outcomes = deliver(&app, &events, 7).await;
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .filter(|o| o.subscription != "rotating-probe")
        .collect();
    check_outcomes(receiver, &outcomes, |s| {
        matches!(s, "standard" | "both" | "rotating")
    });
    // The rotation case is real: hookd sent two signatures, the receiver's key second.
    for got in probe.received() {
        let signatures: Vec<&str> = got.header("webhook-signature").split(' ').collect();
        assert_eq!(signatures.len(), 2, "{signatures:?}");
    }

    // Crafted requests, signed with the receiver's key.
    let body = br#"{"request_id":"docs-replay","status":"completed"}"#;
    let now = unix_now();
    let id = "dlv_docs_crafted";
    let signed = |timestamp: i64| standard_headers(old, id, timestamp, body);
    let good = signed(now);
    let good_signature = good[2].1.clone();
    let mut cases: Vec<Case> = vec![
        ("a fresh, correctly signed request", good.clone(), 200),
        (
            "a request signed 400 s ago (a replay)",
            signed(now - 400),
            401,
        ),
        ("a request signed an hour ago", signed(now - 3600), 401),
        (
            "a request dated 400 s in the future",
            signed(now + 400),
            401,
        ),
        ("a request signed 60 s ago", signed(now - 60), 200),
    ];
    let mut retimestamped = good.clone();
    replace_header(
        &mut retimestamped,
        "webhook-timestamp",
        (now - 1).to_string(),
    );
    cases.push(("a new timestamp on an old signature", retimestamped, 401));
    let mut several = good.clone();
    replace_header(
        &mut several,
        "webhook-signature",
        format!("v1,{} {good_signature}", "A".repeat(44)),
    );
    cases.push(("the right signature second of two", several, 200));
    let mut v2 = good.clone();
    replace_header(
        &mut v2,
        "webhook-signature",
        good_signature.replacen("v1,", "v2,", 1),
    );
    cases.push(("the right MAC under another version", v2, 401));
    let mut bare = good.clone();
    replace_header(
        &mut bare,
        "webhook-signature",
        good_signature.trim_start_matches("v1,").to_string(),
    );
    cases.push(("the MAC without v1,", bare, 401));
    let mut word = good.clone();
    replace_header(&mut word, "webhook-timestamp", "yesterday".to_string());
    cases.push(("a timestamp that is no number", word, 401));
    cases.push((
        "no webhook-timestamp",
        good.iter()
            .filter(|(n, _)| *n != "webhook-timestamp")
            .cloned()
            .collect(),
        401,
    ));
    cases.push((
        "no webhook-signature",
        good.iter()
            .filter(|(n, _)| *n != "webhook-signature")
            .cloned()
            .collect(),
        401,
    ));
    for (what, headers, want) in cases {
        let (status, text) = post(url, &headers, body).await;
        assert_eq!(
            status,
            want,
            "{}: {what}: answered {status} {text:.300}\n{}",
            receiver.name,
            receiver.output()
        );
    }
    // Another body under a valid signature.
    let (status, text) = post(
        url,
        &good,
        br#"{"request_id":"docs-replay","status":"failed"}"#,
    )
    .await;
    assert_eq!(status, 401, "{}: a tampered body: {text}", receiver.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_standard_snippet_verifies_rotates_and_refuses_replays() {
    let old = whsec();
    let receiver = start_node("node_standard.js", &old).await;
    check_standard_receiver(&receiver, &old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_standard_snippet_verifies_rotates_and_refuses_replays() {
    let old = whsec();
    let receiver = start_flask("python_standard.py", &old).await;
    check_standard_receiver(&receiver, &old).await;
}

//! The framework recipes of docs/receiving-webhooks.md ("Recipes by framework"), each run as
//! the docs print it (docs/snippets/*; receiving_docs.rs checks that the page embeds every file
//! verbatim) and given the same live deliveries from an in-process hookd:
//!
//! - the seed page's example events, unicode and escapes, numbers JavaScript re-prints
//!   differently, 40 KB strings, a body over 100 kB, and a batch of 100 events posted at once:
//!   every delivery must verify (2xx), and the receiver's answer must name the `request_id` it
//!   parsed from the verified bytes (what it reports verifying; the test compares it with what
//!   was sent);
//! - the same deliveries from a subscription with another secret (forged signatures): every one
//!   refused with 401;
//! - a delivery it already acknowledged, replayed through the admin API (the same
//!   `X-Abstrakt-Delivery`, or `webhook-id`): acknowledged again with `"duplicate": true`.
//!
//! The Standard Webhooks recipes (the `standardwebhooks` library of npm, PyPI and crates.io) get
//! these deliveries with `signature = "standard"`, then the rotation and replay cases of
//! receiving_docs.rs. The docs' recipe table must name every recipe's file and its test.
//!
//! Dependencies come from scripts/test-deps.sh. A missing one fails the test under
//! scripts/test.sh (`HOOKD_REQUIRE_RECIPES=1`); elsewhere the test prints `NOT RUN: <why>`.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hookd::store::DeliveryState;
use serde_json::Value;

use crate::receiving_docs::{
    check_outcomes, check_standard_receiver, deliveries_of, event_matrix, finished, start_flask,
    start_go, start_node, start_rust, whsec, Outcome, Receiver, DEPS_HINT, DOC, NO_RETRIES, SECRET,
    SNIPPET_DIR, WRONG_SECRET,
};
use crate::support::app::{spawn_app, TestApp};
use crate::support::events::subscription_toml;
use crate::support::process::{manifest_dir, ChildGuard};
use crate::support::sled_only;

/// The crates.io recipe, compiled as it is printed in the docs.
mod rust_standard {
    include!("../../docs/snippets/rust_standardwebhooks.rs");
}

const RECIPES_DIR: &str = "tests/receivers/recipes";

/// Every recipe: its framework as the docs' table names it, its file in docs/snippets, and the
/// test below that runs it.
const RECIPES: &[(&str, &str, &str)] = &[
    ("Next.js", "nextjs_route.js", "recipes::nextjs"),
    ("Fastify", "fastify_receiver.js", "recipes::fastify"),
    ("Hono", "hono_receiver.js", "recipes::hono"),
    ("Express", "express_raw.js", "recipes::express"),
    ("FastAPI", "fastapi_receiver.py", "recipes::fastapi"),
    ("Django", "django_views.py", "recipes::django"),
    ("Flask", "flask_receiver.py", "recipes::flask"),
    ("Ruby on Rails", "rails_controller.rb", "recipes::rails"),
    ("Sinatra", "sinatra_receiver.rb", "recipes::sinatra"),
    ("Symfony", "symfony_controller.php", "recipes::symfony"),
    ("plain PHP", "plain_php_receiver.php", "recipes::plain_php"),
    ("Go", "go_receiver.go", "recipes::go"),
    ("axum", "rust_verify.rs", "recipes::axum"),
    (
        "Standard Webhooks, npm",
        "node_standardwebhooks.js",
        "recipes::npm_standardwebhooks",
    ),
    (
        "Standard Webhooks, PyPI",
        "python_standardwebhooks.py",
        "recipes::pypi_standardwebhooks",
    ),
    (
        "Standard Webhooks, crates.io",
        "rust_standardwebhooks.rs",
        "recipes::crates_standardwebhooks",
    ),
];

#[test]
fn the_docs_table_lists_every_recipe_with_its_file_and_test() {
    let doc = std::fs::read_to_string(manifest_dir().join(DOC)).expect("read the docs");
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| ")).collect();
    let mut missing = Vec::new();
    for (framework, file, test) in RECIPES {
        let link = format!("(snippets/{file})");
        let listed = rows.iter().any(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            cells.len() >= 3
                && cells[0].contains(framework)
                && cells[1].contains(&link)
                && cells[2].contains(&format!("`{test}`"))
        });
        if !listed {
            missing.push(format!("| {framework} | [..]{link} | ... `{test}` |"));
        }
    }
    assert!(
        missing.is_empty(),
        "{DOC}'s recipe table lacks the rows:\n{}",
        missing.join("\n")
    );
}

// ------------------------------------------------------------------ dependencies

/// Whether a missing dependency fails the test (`HOOKD_REQUIRE_RECIPES=1`, set by
/// scripts/test.sh) rather than leaving it not run.
fn required() -> bool {
    crate::support::pg::required_by_env("HOOKD_REQUIRE_RECIPES")
}

/// `Ok(())` when nothing is `missing`; otherwise fails the test when dependencies are required,
/// else prints `NOT RUN` and returns `Err(())` for the test to return.
fn need(recipe: &str, missing: Option<String>) -> Result<(), ()> {
    let Some(why) = missing else {
        return Ok(());
    };
    assert!(!required(), "recipe {recipe}: {why}: {DEPS_HINT}");
    // To stderr itself, not through the test harness's capture: the line shows in the run.
    let _ = writeln!(
        std::io::stderr(),
        "recipes::{recipe}: NOT RUN: {why}: {DEPS_HINT}"
    );
    Err(())
}

/// Why `path` (`what`) is missing, if it is.
fn file(path: &Path, what: &str) -> Option<String> {
    (!path.exists()).then(|| format!("{what} is missing ({})", path.display()))
}

/// Why `program args...` (which checks for `what`) failed, if it did.
fn runs(program: &str, args: &[&str], what: &str) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{what} is missing ({program} {args:?}: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("{what} is missing ({program}: {e})")),
    }
}

fn recipes_dir(part: &str) -> PathBuf {
    manifest_dir().join(RECIPES_DIR).join(part)
}

fn snippet(file: &str) -> PathBuf {
    manifest_dir().join(SNIPPET_DIR).join(file)
}

// ------------------------------------------------------------------ starting the recipes

/// A running recipe, with what it keeps on disk.
struct Running {
    receiver: Receiver,
    _dir: Option<tempfile::TempDir>,
}

impl From<Receiver> for Running {
    fn from(receiver: Receiver) -> Running {
        Running {
            receiver,
            _dir: None,
        }
    }
}

/// The port in `text` right after `marker`, once the digits are followed by something.
fn port_after(text: &str, marker: &str) -> Option<u16> {
    let (_, rest) = text.split_once(marker)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..].chars().next()?;
    digits.parse().ok()
}

/// Spawns `command` and waits for its port: a `LISTENING <port>` line on stdout, or, with
/// `marker`, the digits after it on stdout or stderr.
async fn spawn_recipe(name: &'static str, command: Command, marker: Option<&str>) -> Receiver {
    let mut process = ChildGuard::spawn(name, command);
    let port = match marker {
        None => process.wait_listening(name).await,
        Some(marker) => {
            process
                .wait_for_port(name, |p| {
                    let stdout = p.stdout_lines().join("\n") + "\n";
                    port_after(&stdout, marker).or_else(|| port_after(&p.stderr(), marker))
                })
                .await
        }
    };
    Receiver {
        name,
        url: format!("http://127.0.0.1:{port}/webhook/abstrakt"),
        process: Some(process),
    }
}

/// A Node.js recipe (Fastify, Hono, Express with `standardwebhooks`), loaded by
/// tests/receivers/recipes/node/serve.js.
async fn start_node_recipe(file: &'static str, secret: &str) -> Option<Running> {
    let dir = recipes_dir("node");
    let modules = dir.join("node_modules");
    let package = modules.join("fastify/package.json");
    need(file, self::file(&package, "the recipes' npm packages")).ok()?;
    let mut command = Command::new("node");
    command
        .arg(dir.join("serve.js"))
        .arg(snippet(file))
        .current_dir(manifest_dir())
        .env("NODE_PATH", modules)
        .env("WEBHOOK_SECRET", secret);
    Some(spawn_recipe(file, command, None).await.into())
}

/// The Next.js recipe: tests/receivers/recipes/nextjs/build.sh builds the app around it (a
/// production build, skipped when its stamp is current), then `next start` serves it.
async fn start_nextjs(secret: &str) -> Option<Running> {
    let file = "nextjs_route.js";
    let dir = recipes_dir("nextjs");
    let next = dir.join("node_modules/next/dist/bin/next");
    need(file, self::file(&next, "next")).ok()?;
    let build_dir = dir.clone();
    let built = tokio::task::spawn_blocking(move || {
        Command::new(build_dir.join("build.sh"))
            .output()
            .expect("run build.sh")
    })
    .await
    .expect("the build task");
    assert!(
        built.status.success(),
        "building the Next.js app failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let mut command = Command::new("node");
    command
        .arg(next)
        .args(["start", "-H", "127.0.0.1", "-p", "0"])
        .current_dir(&dir)
        .env("NEXT_TELEMETRY_DISABLED", "1")
        .env("WEBHOOK_SECRET", secret);
    Some(
        spawn_recipe(file, command, Some("http://127.0.0.1:"))
            .await
            .into(),
    )
}

/// A Python recipe (FastAPI, Django, FastAPI with `standardwebhooks`), served by
/// tests/receivers/recipes/python/serve.py in its venv.
async fn start_python_recipe(file: &'static str, secret: &str) -> Option<Running> {
    let dir = recipes_dir("python");
    let python = dir.join(".venv/bin/python");
    need(file, self::file(&python, "the recipes' Python venv")).ok()?;
    let mut command = Command::new(python);
    command
        .arg(dir.join("serve.py"))
        .arg(snippet(file))
        .current_dir(manifest_dir())
        .env("WEBHOOK_SECRET", secret)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Some(spawn_recipe(file, command, None).await.into())
}

/// A Ruby recipe (`kind` rails or sinatra), served with WEBrick by
/// tests/receivers/recipes/ruby/serve.rb on Debian's ruby-rails or ruby-sinatra.
async fn start_ruby_recipe(kind: &str, file: &'static str, secret: &str) -> Option<Running> {
    // `sinatra/base`: a bare `require 'sinatra'` would start a server on exit.
    let library = if kind == "rails" {
        "rails"
    } else {
        "sinatra/base"
    };
    let check = format!("require 'webrick'; require '{library}'");
    let what = "Debian's ruby-rails, ruby-sinatra and ruby-webrick";
    need(file, runs("ruby", &["-e", &check], what)).ok()?;
    let mut command = Command::new("ruby");
    command
        .arg(recipes_dir("ruby").join("serve.rb"))
        .arg(kind)
        .arg(snippet(file))
        .current_dir(manifest_dir())
        .env("WEBHOOK_SECRET", secret);
    Some(spawn_recipe(file, command, None).await.into())
}

/// A PHP recipe under `php -S` (four workers): `router` is the script every request runs (the
/// plain recipe itself, or tests/receivers/recipes/php/symfony_front.php for Symfony's). The
/// recipes keep their processed delivery ids as files in a directory of the test's own.
async fn start_php_recipe(file: &'static str, router: &Path, secret: &str) -> Option<Running> {
    let autoload = Path::new("/usr/share/php/Symfony/Component/HttpFoundation/autoload.php");
    let missing = runs("php", &["--version"], "php (Debian's php-cli)")
        .or_else(|| self::file(autoload, "Debian's php-symfony-http-foundation"));
    need(file, missing).ok()?;
    let dir = tempfile::tempdir().expect("a dedup dir");
    let mut command = Command::new("php");
    command
        .args(["-S", "127.0.0.1:0"])
        .arg(router)
        .current_dir(manifest_dir())
        .env("PHP_CLI_SERVER_WORKERS", "4")
        .env("WEBHOOK_DEDUP_DIR", dir.path())
        .env("WEBHOOK_SECRET", secret);
    let receiver = spawn_recipe(file, command, Some("Development Server (http://127.0.0.1:")).await;
    Some(Running {
        receiver,
        _dir: Some(dir),
    })
}

/// Serves `router` in this process on 127.0.0.1 (the Rust recipes).
pub(crate) async fn serve_router(name: &'static str, router: axum::Router) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the Rust receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver {
        name,
        url: format!("http://{addr}/webhook/abstrakt"),
        process: None,
    }
}

async fn start_rust_standard(secret: &str) -> Receiver {
    let state = rust_standard::Receiver {
        webhook: standardwebhooks::Webhook::new(secret).expect("a whsec_ secret"),
        processed: Default::default(),
    };
    let router = axum::Router::new()
        .route(
            "/webhook/abstrakt",
            axum::routing::post(rust_standard::webhook),
        )
        .with_state(Arc::new(state));
    serve_router("rust_standardwebhooks.rs", router).await
}

// ------------------------------------------------------------------ the deliveries

/// A string of about 40 KB with non-ASCII characters and escapes, as JSON text.
fn forty_kb_string() -> String {
    let chunk = r#"plain ASCII, é ü 中文 😀, \"quoted\", C:\\path\\, \n\t, \u00e9\u4e2d\ud83d\ude00, \/slash\/ "#;
    let mut text = String::new();
    while text.len() < 40_000 {
        text.push_str(chunk);
    }
    text
}

/// The events posted one by one: receiving_docs.rs's matrix (the seed's examples, unicode and
/// escapes, numbers, a body over 100 kB) and two 40 KB strings.
fn recipe_events() -> Vec<String> {
    let mut events = event_matrix();
    let text = forty_kb_string();
    events.push(format!(
        r#"{{"request_id":"recipe-40kb","status":"completed","result":{{"caption":"{text}","transcript":"{}"}}}}"#,
        "x".repeat(40_000)
    ));
    events
}

/// A batch of 100 events, as one JSON array (one ingest request).
fn batch_of_100() -> String {
    let events: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"request_id":"recipe-batch-{i:03}","status":"completed","result":{{"items":[{{"url":"https://cdn.abstrakt.one/batch/{i}.png","content_type":"image/png"}}]}},"metrics":{{"inference_time":{i}.50,"queue_time":1E{}}}}}"#,
                i % 7
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// Posts the events and the batch; returns every delivery as `(request_id, delivery id)`.
async fn post_all(app: &TestApp, fan_out: u64) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for text in recipe_events() {
        let (status, body) = app.post_raw(text.clone()).await;
        assert_eq!(status, 202, "posting {text:.200}: {body}");
        assert_eq!(body["deliveries"], fan_out, "{body}");
        ids.extend(deliveries_of(app, body["event_id"].as_str().expect("event_id")).await);
    }
    let (status, body) = app.post_raw(batch_of_100()).await;
    assert_eq!(status, 202, "posting the batch: {body}");
    let answers = body.as_array().expect("an answer per event");
    assert_eq!(answers.len(), 100, "{body}");
    for answer in answers {
        assert_eq!(answer["deliveries"], fan_out, "{answer}");
        ids.extend(deliveries_of(app, answer["event_id"].as_str().expect("event_id")).await);
    }
    ids
}

/// What the receiver reported for each verified delivery must be the `request_id` sent, and
/// nothing may be reported as a duplicate yet.
fn check_reports(receiver: &Receiver, outcomes: &[Outcome]) {
    let verified: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.subscription == "verified")
        .collect();
    assert_eq!(verified.len(), recipe_events().len() + 100);
    let wrong: Vec<String> = verified
        .iter()
        .filter(|o| {
            let answer: Value = serde_json::from_str(&o.excerpt).unwrap_or(Value::Null);
            answer["request_id"] != o.request_id.as_str() || answer.get("duplicate").is_some()
        })
        .map(|o| format!("{:?}: answered {:.300}", o.request_id, o.excerpt))
        .collect();
    assert!(
        wrong.is_empty(),
        "{}: {} of {} verified deliveries were not reported with their request_id:\n{}",
        receiver.name,
        wrong.len(),
        verified.len(),
        wrong.join("\n")
    );
}

/// Replays the delivered `outcome` through the admin API: the receiver must answer 2xx with
/// `"duplicate": true`.
async fn check_replay(app: &TestApp, receiver: &Receiver, outcome: &Outcome) {
    let path = format!("/v1/deliveries/{}/retry", outcome.id);
    let (status, body) = app.admin().post(&path, None).await;
    assert_eq!(status, 202, "replaying {}: {body}", outcome.id);
    let ids = vec![(outcome.request_id.clone(), outcome.id.clone())];
    let replayed = finished(app, ids, Duration::from_secs(30)).await;
    let attempts = app.shared.store.attempts(&outcome.id).await.expect("read");
    assert_eq!(attempts.len(), 2, "{}: {attempts:?}", receiver.name);
    let answer: Value = serde_json::from_str(&replayed[0].excerpt).unwrap_or(Value::Null);
    assert!(
        replayed[0].state == DeliveryState::Delivered && answer["duplicate"] == true,
        "{}: the replayed delivery {} was not acknowledged as a duplicate: {:?} {:?} {:.300}\n{}",
        receiver.name,
        outcome.id,
        replayed[0].state,
        replayed[0].status,
        replayed[0].excerpt,
        receiver.output()
    );
}

/// The recipe's checks: `secret` is the receiver's, `forged` another one, `keys` the
/// subscriptions' extra TOML (`signature = "standard"` for the Standard Webhooks recipes).
async fn check_recipe(receiver: &Receiver, secret: &str, forged: &str, keys: &str) {
    let url = &receiver.url;
    let app = spawn_app(&format!(
        "{NO_RETRIES}{}{}",
        subscription_toml("verified", url, secret, &["*"], keys),
        subscription_toml("forged", url, forged, &["*"], keys),
    ))
    .await;
    let ids = post_all(&app, 2).await;
    let outcomes = finished(&app, ids, Duration::from_secs(120)).await;
    check_outcomes(receiver, &outcomes, |s| s == "verified");
    check_reports(receiver, &outcomes);
    let seed = outcomes
        .iter()
        .find(|o| o.subscription == "verified" && o.request_id == "docs-seed")
        .expect("the seed's event was delivered");
    check_replay(&app, receiver, seed).await;
}

/// The recipes test the receivers, not hookd's store: on fjall or PostgreSQL they say NOT RUN.
const SLED_ONLY: &str = "the recipes test the receivers; the store's engine changes nothing there";

async fn check_abstrakt_recipe(start: impl Future<Output = Option<Running>>) {
    if sled_only(SLED_ONLY) {
        return;
    }
    if let Some(running) = start.await {
        check_recipe(&running.receiver, SECRET, WRONG_SECRET, "").await;
    }
}

const STANDARD: &str = "signature = \"standard\"\n";

async fn check_standard_recipe(start: impl Future<Output = Option<Running>>, secret: &str) {
    if sled_only(SLED_ONLY) {
        return;
    }
    if let Some(running) = start.await {
        check_recipe(&running.receiver, secret, &whsec(), STANDARD).await;
        check_standard_receiver(&running.receiver, secret).await;
    }
}

// ------------------------------------------------------------------ one test per recipe

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextjs() {
    check_abstrakt_recipe(start_nextjs(SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastify() {
    check_abstrakt_recipe(start_node_recipe("fastify_receiver.js", SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hono() {
    check_abstrakt_recipe(start_node_recipe("hono_receiver.js", SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express() {
    check_abstrakt_recipe(async { Some(start_node("express_raw.js", SECRET).await.into()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi() {
    check_abstrakt_recipe(start_python_recipe("fastapi_receiver.py", SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django() {
    check_abstrakt_recipe(start_python_recipe("django_views.py", SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask() {
    check_abstrakt_recipe(async { Some(start_flask("flask_receiver.py", SECRET).await.into()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails() {
    check_abstrakt_recipe(start_ruby_recipe("rails", "rails_controller.rb", SECRET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinatra() {
    let running = start_ruby_recipe("sinatra", "sinatra_receiver.rb", SECRET);
    check_abstrakt_recipe(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symfony() {
    let front = recipes_dir("php").join("symfony_front.php");
    let running = start_php_recipe("symfony_controller.php", &front, SECRET);
    check_abstrakt_recipe(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_php() {
    let router = snippet("plain_php_receiver.php");
    let running = start_php_recipe("plain_php_receiver.php", &router, SECRET);
    check_abstrakt_recipe(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go() {
    check_abstrakt_recipe(async { Some(start_go(SECRET).await.into()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum() {
    check_abstrakt_recipe(async { Some(start_rust(SECRET).await.into()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_standardwebhooks() {
    let secret = whsec();
    let running = start_node_recipe("node_standardwebhooks.js", &secret);
    check_standard_recipe(running, &secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypi_standardwebhooks() {
    let secret = whsec();
    let running = start_python_recipe("python_standardwebhooks.py", &secret);
    check_standard_recipe(running, &secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crates_standardwebhooks() {
    let secret = whsec();
    let running = async { Some(start_rust_standard(&secret).await.into()) };
    check_standard_recipe(running, &secret).await;
}

#[test]
fn the_port_is_read_once_its_line_is_complete() {
    let next = "- Local:         http://127.0.0.1:34401\n";
    assert_eq!(port_after(next, "http://127.0.0.1:"), Some(34401));
    assert_eq!(
        port_after("http://127.0.0.1:344", "http://127.0.0.1:"),
        None
    );
    let php = "[..] PHP 8.2 Development Server (http://127.0.0.1:44073) started";
    let marker = "Development Server (http://127.0.0.1:";
    assert_eq!(port_after(php, marker), Some(44073));
    assert_eq!(port_after("nothing yet", marker), None);
}

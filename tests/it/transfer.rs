//! Moving a store between engines through the built binary: `hookd store export` piped into
//! `hookd store import`, from sled to fjall to PostgreSQL to a fresh sled directory. Each hop's
//! export holds the same records as the one before it (the header aside, which names the
//! engine), and the last store serves what the first held: every delivery reads as it did
//! through the admin API, and those a paused subscription kept waiting go out, signed, once it
//! is resumed. Import refuses a store that is not empty and leaves it as it was; a directory of
//! one embedded engine opened as the other is refused, naming both engines and the way out.
//!
//! Every config here names its engine, so `HOOKD_TEST_ENGINE` leaves them alone. The
//! PostgreSQL hop needs the server on 127.0.0.1:5432: without one it says NOT RUN and the
//! store goes from fjall to sled directly (with `HOOKD_REQUIRE_POSTGRES=1` the test fails).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookd::signing::abstrakt_signature;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::admin::Admin;
use crate::support::cli::{hookd, Run};
use crate::support::events::subscription_toml;
use crate::support::pg;
use crate::support::process::{launch, HookdProcess};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(15);
const HELD_SECRET: &str = "transfer-held";
/// What `main` and `held` want: not `job.queued`, [`UNMATCHED`]'s type.
const WANTED: &[&str] = &["job.completed", "job.failed"];
/// Events no subscription wants, stored all the same: with them an export and an import span
/// several pages (500 events each).
const UNMATCHED: usize = 600;

/// The receivers of the moved store's subscriptions.
struct Receivers {
    /// `main`, the API's `cust` and the per-request target: answers 200.
    ok: TestReceiver,
    /// `held`: paused before any event, so that its deliveries wait.
    held: TestReceiver,
    /// `failing`: answers 500; its one attempt leaves the delivery dead.
    failing: TestReceiver,
}

impl Receivers {
    async fn start() -> Receivers {
        let failing = TestReceiver::start().await;
        failing.set_default(Reply::Status(500));
        Receivers {
            ok: TestReceiver::start().await,
            held: TestReceiver::start().await,
            failing,
        }
    }

    /// The config file's `[delivery]` and subscriptions, the same for every store.
    fn config(&self) -> String {
        format!(
            "[delivery]\njitter = 0.0\nallow_adhoc_targets = true\n\n{}{}{}",
            subscription_toml("main", &self.ok.url(), "transfer-main", WANTED, ""),
            subscription_toml("held", &self.held.url(), HELD_SECRET, WANTED, ""),
            subscription_toml(
                "failing",
                &self.failing.url(),
                "transfer-failing",
                &["job.failed"],
                "retry_schedule = []"
            ),
        )
    }
}

/// The `[storage]` keys of an embedded engine (the store in the config's `dir/db`).
fn embedded(engine: &str) -> String {
    format!("engine = {engine:?}")
}

/// `dir` (made if missing) with a config for the store `storage` names and `extra`; its path.
fn config_in(dir: &Path, storage: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("a directory for the store");
    HookdProcess::write_config(dir, storage, extra)
}

/// hookd on the store `storage` names, its config `dir/hookd.toml` ([`config_in`]).
async fn start(dir: &Path, storage: &str, extra: &str) -> HookdProcess {
    std::fs::create_dir_all(dir).expect("a directory for the store");
    HookdProcess::start_with_storage(dir, storage, extra).await
}

/// `POST /v1/events` of one event (or a batch), which must be accepted.
async fn post_event(hookd: &HookdProcess, event: &Value) {
    let (status, answer) = hookd.admin().post("/v1/events", Some(event.clone())).await;
    assert_eq!(status, 202, "{event} -> {answer}");
}

/// SIGTERM, and a clean exit.
async fn stop(hookd: &mut HookdProcess) {
    hookd.process.signal("TERM");
    let status = hookd.process.wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(0),
        "hookd exits 0 on SIGTERM; stderr:\n{}",
        hookd.process.stderr_tail(4000)
    );
}

/// `hookd store <verb> -c <config>`, with `stdin` when given.
async fn store_command(verb: &str, config: &Path, stdin: Option<&[u8]>) -> Run {
    let config = config.to_str().expect("a UTF-8 path");
    hookd(&["store", verb, "-c", config], stdin).await
}

/// One `hookd store export`.
struct Export {
    /// Its output, header included.
    text: String,
    /// Every line after the header, sorted: each engine lists them in its own order.
    records: Vec<String>,
    /// What its summary line said it moved (`4 events, 11 deliveries (...), ...`).
    summary: String,
}

/// `hookd store export -c <config>`, which must succeed and name `engine` in its header.
async fn export(config: &Path, engine: &str) -> Export {
    let run = store_command("export", config, None).await;
    let text = run.ok().to_string();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the first line is not a JSON header ({e}): {run:#?}"));
    assert_eq!(
        (header["hookd_export"].as_u64(), header["engine"].as_str()),
        (Some(1), Some(engine)),
        "the export's header: {header}"
    );
    let mut records: Vec<String> = lines.map(str::to_string).collect();
    records.sort();
    Export {
        summary: summary(&run, "exported", engine),
        text,
        records,
    }
}

/// What `<verb> <what> (<engine> store)`, the last line a store command wrote to stderr, says
/// it moved: `<what>`.
fn summary(run: &Run, verb: &str, engine: &str) -> String {
    let last = run.stderr.lines().rev().find(|l| !l.trim().is_empty());
    last.and_then(|l| l.strip_prefix(&format!("{verb} ")))
        .and_then(|l| l.strip_suffix(&format!(" ({engine} store)")))
        .unwrap_or_else(|| panic!("no `{verb} ... ({engine} store)` line: {run:#?}"))
        .to_string()
}

/// Panics, showing the records only one of them holds, unless `a` and `b` hold the same.
fn assert_same_records(a: &Export, b: &Export, what: &str) {
    let (a_set, b_set): (BTreeSet<&String>, BTreeSet<&String>) =
        (a.records.iter().collect(), b.records.iter().collect());
    assert!(
        a.records == b.records,
        "{what}: the records differ\n-- only before:\n{:#?}\n-- only after:\n{:#?}",
        a_set.difference(&b_set).collect::<Vec<_>>(),
        b_set.difference(&a_set).collect::<Vec<_>>()
    );
}

/// One hop: `from` imported (through stdin) into the empty store of `config` on `engine`,
/// whose export must hold the same records; returns that export.
async fn hop(from: &Export, config: &Path, engine: &str) -> Export {
    let run = store_command("import", config, Some(from.text.as_bytes())).await;
    assert_eq!(run.code, 0, "import into {engine}: {run:#?}");
    assert_eq!(
        summary(&run, "imported", engine),
        from.summary,
        "the import into {engine} moved what the export held"
    );
    let to = export(config, engine).await;
    assert_same_records(
        from,
        &to,
        &format!("the export of {engine} after the import"),
    );
    to
}

/// The first store's events: one plain, one with an owner (also for the API's `cust`), one
/// failed (also for `failing`), one with a per-request target.
fn events(adhoc_url: &str) -> [Value; 4] {
    [
        json!({ "request_id": "move-1", "status": "completed",
                "result": { "items": [{ "url": "https://cdn.abstrakt.one/move-1.mp4" }] } }),
        json!({ "request_id": "move-2", "status": "completed", "owner": "cust-1",
                "metrics": { "inference_time": 45.2 } }),
        json!({ "request_id": "move-3", "status": "failed", "error": { "message": "out of memory" } }),
        json!({ "request_id": "move-4", "status": "completed",
                "webhook_url": adhoc_url, "webhook_secret": "transfer-adhoc" }),
    ]
}

/// How many deliveries each subscription has, and in what states, for the events above:
/// `held`'s wait (paused), `failing`'s is dead, every other is delivered.
const SETTLED: &[(&str, &str, usize)] = &[
    ("adhoc", "delivered", 1),
    ("cust", "delivered", 1),
    ("failing", "dead", 1),
    ("held", "scheduled", 4),
    ("main", "delivered", 4),
];

/// `(subscription, state)` → how many, of the deliveries `listed`.
fn tally(listed: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for d in listed {
        let key = (
            d["subscription"].as_str().unwrap_or("?").to_string(),
            d["state"].as_str().unwrap_or("?").to_string(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Posts [`events`], then [`UNMATCHED`] events in two batches.
async fn post_events(hookd: &HookdProcess, adhoc_url: &str) {
    for event in events(adhoc_url) {
        post_event(hookd, &event).await;
    }
    let unmatched: Vec<Value> = (0..UNMATCHED)
        .map(|n| json!({ "request_id": format!("queued-{n}"), "status": "queued" }))
        .collect();
    for batch in unmatched.chunks(UNMATCHED / 2) {
        post_event(hookd, &Value::Array(batch.to_vec())).await;
    }
}

/// `POST /v1/portal-links` for `owner`: the link's path, `/ui/portal/<token>` (signed with a
/// key the store keeps).
async fn portal_link(admin: &Admin, owner: &str) -> String {
    let url = admin.portal_link(owner).await;
    let path = url.strip_prefix(&admin.url("")).unwrap_or(&url);
    assert!(path.starts_with("/ui/portal/"), "{url}");
    path.to_string()
}

/// What the first store held, as hookd showed it before it stopped.
struct Before {
    /// Every delivery, as `GET /v1/deliveries/{id}` showed it, by id.
    deliveries: BTreeMap<String, Value>,
    /// A portal link for `cust-1`, whose page lists `cust`.
    portal: String,
}

/// Starts hookd on sled in `dir`, creates the owner's subscription `cust` through the API and
/// a portal link to it, pauses `held`, posts the events and waits until [`SETTLED`]; stops
/// hookd.
async fn fill(dir: &Path, receivers: &Receivers) -> Before {
    let mut hookd = start(dir, &embedded("sled"), &receivers.config()).await;
    let admin = hookd.admin();
    let cust = json!({ "id": "cust", "owner": "cust-1", "url": receivers.ok.url(),
                       "secret": "transfer-cust", "events": ["job.completed"] });
    let (status, created) = admin
        .call(Method::POST, "/v1/subscriptions", Some(cust))
        .await;
    assert_eq!(status, 201, "{created}");
    let portal = portal_link(&admin, "cust-1").await;
    let (status, paused) = admin
        .call(Method::POST, "/v1/subscriptions/held/pause", None)
        .await;
    assert_eq!(status, 200, "{paused}");
    post_events(&hookd, &receivers.ok.url()).await;
    let settled: BTreeMap<(String, String), usize> = SETTLED
        .iter()
        .map(|(s, state, n)| ((s.to_string(), state.to_string()), *n))
        .collect();
    let listed = wait_until("the deliveries to settle", DEADLINE, || async {
        let listed = admin.deliveries("").await;
        (tally(&listed) == settled).then_some(listed)
    })
    .await;
    let mut deliveries = BTreeMap::new();
    for d in listed {
        let id = d["id"].as_str().expect("a delivery id").to_string();
        let one = admin.get_ok(&format!("/v1/deliveries/{id}")).await;
        deliveries.insert(id, one);
    }
    stop(&mut hookd).await;
    Before { deliveries, portal }
}

/// Starts hookd on the moved store in `dir`: every delivery reads as before, `cust` is there
/// and the portal link still opens its page; `held`'s deliveries, once it is resumed, reach
/// its receiver signed with its secret and are delivered; nothing finished is sent again.
async fn check_moved(dir: &Path, receivers: &Receivers, before: &Before) {
    let sent = (receivers.ok.count(), receivers.failing.count());
    let mut hookd = start(dir, &embedded("sled"), &receivers.config()).await;
    let admin = hookd.admin();
    for (id, shown) in &before.deliveries {
        let now = admin.get_ok(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(&now, shown, "delivery {id} after the move");
    }
    let cust = admin.get_ok("/v1/subscriptions/cust").await;
    assert_eq!(
        (cust["owner"].as_str(), cust["managed_by"].as_str()),
        (Some("cust-1"), Some("api")),
        "the subscription made through the API: {cust}"
    );
    let portal = admin.send(Method::GET, &before.portal, None).await;
    assert_eq!(
        portal.status, 200,
        "the portal link after the move: {portal:?}"
    );
    assert!(
        portal.text.contains("cust"),
        "the portal lists cust: {portal:?}"
    );
    assert_eq!(receivers.held.count(), 0, "held is still paused");
    let (status, resumed) = admin
        .call(Method::POST, "/v1/subscriptions/held/resume", None)
        .await;
    assert_eq!(status, 200, "{resumed}");
    check_resumed(&admin, &receivers.held, &before.deliveries).await;
    let again = (receivers.ok.count(), receivers.failing.count());
    assert_eq!(again, sent, "nothing finished was sent again");
    stop(&mut hookd).await;
}

/// `held`'s waiting deliveries in `before` reach `receiver` once each, signed with its
/// secret, with the body they had, and read as delivered.
async fn check_resumed(admin: &Admin, receiver: &TestReceiver, before: &BTreeMap<String, Value>) {
    let waiting: BTreeSet<&str> = before
        .iter()
        .filter(|(_, d)| d["subscription"] == "held")
        .map(|(id, _)| id.as_str())
        .collect();
    let got = receiver.wait_for(waiting.len(), DEADLINE).await;
    for r in &got {
        let id = r.header("x-abstrakt-delivery");
        assert_eq!(
            r.header("x-abstrakt-signature"),
            abstrakt_signature(HELD_SECRET.as_bytes(), &r.body),
            "{id} is signed with held's secret"
        );
        let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
        assert_eq!(
            Some(&body),
            before.get(id).map(|d| &d["event"]),
            "{id}'s body"
        );
    }
    let ids: BTreeSet<&str> = got
        .iter()
        .map(|r| r.header("x-abstrakt-delivery"))
        .collect();
    assert_eq!(
        ids, waiting,
        "held's receiver got each waiting delivery once"
    );
    for id in &waiting {
        wait_until(&format!("{id} to be delivered"), DEADLINE, || async {
            let d = admin.get_ok(&format!("/v1/deliveries/{id}")).await;
            (d["state"] == "delivered").then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_from_sled_to_fjall_to_postgres_to_sled_and_keeps_everything() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let receivers = Receivers::start().await;
    let first = tmp.path().join("sled");
    let before = fill(&first, &receivers).await;
    let mut moved = export(&first.join("hookd.toml"), "sled").await;
    assert_eq!(
        moved.summary,
        format!(
            "{} events, 11 deliveries (4 unfinished, 7 finished), 1 subscriptions created through the API",
            UNMATCHED + 4
        )
    );
    let fjall = config_in(&tmp.path().join("fjall"), &embedded("fjall"), "");
    moved = hop(&moved, &fjall, "fjall").await;
    // Kept until the end: dropping it drops the database.
    let _db = if pg::unavailable() {
        None
    } else {
        let db = pg::create("transfer").await;
        let storage = format!("engine = \"postgres\"\nurl = {:?}", db.url());
        let postgres = config_in(&tmp.path().join("postgres"), &storage, "");
        moved = hop(&moved, &postgres, "postgres").await;
        Some(db)
    };
    let last = tmp.path().join("sled-again");
    hop(&moved, &config_in(&last, &embedded("sled"), ""), "sled").await;
    check_moved(&last, &receivers, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_a_store_that_is_not_empty_and_leaves_it_as_it_was() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let receiver = TestReceiver::start().await;
    let extra = subscription_toml("main", &receiver.url(), "transfer-main", &["*"], "");
    let full = tmp.path().join("full");
    let mut hookd = start(&full, &embedded("fjall"), &extra).await;
    for n in 1..=2 {
        post_event(
            &hookd,
            &json!({ "request_id": format!("keep-{n}"), "status": "completed" }),
        )
        .await;
    }
    receiver.wait_for(2, DEADLINE).await;
    stop(&mut hookd).await;
    let config = full.join("hookd.toml");
    let kept = export(&config, "fjall").await;
    // Another store's export: the same records under other request ids, which name the events.
    let other = kept
        .text
        .replace("\"request_id\":\"keep-", "\"request_id\":\"other-");
    assert_ne!(other, kept.text, "the export names its events' request ids");

    let run = store_command("import", &config, Some(other.as_bytes())).await;
    assert_ne!(
        run.code, 0,
        "an import into a store that is not empty: {run:#?}"
    );
    for needed in [
        "the target store is not empty (2 events, 2 deliveries)",
        "import into a new store",
    ] {
        assert!(run.stderr.contains(needed), "{needed:?} in {run:#?}");
    }
    assert_same_records(&kept, &export(&config, "fjall").await, "the refused store");

    // The refusal was the store's: an empty one takes the same input.
    let empty = config_in(&tmp.path().join("empty"), &embedded("fjall"), &extra);
    let run = store_command("import", &empty, Some(other.as_bytes())).await;
    assert_eq!(run.code, 0, "an import into an empty store: {run:#?}");
    let taken = export(&empty, "fjall").await;
    assert!(
        taken.text.contains("\"request_id\":\"other-1\""),
        "{}",
        taken.text
    );
}

/// The refusal in `text` names the store's engine (`made`), the one configured (`other`), and
/// the commands that move the store.
fn assert_way_out(text: &str, made: &str, other: &str) {
    for needed in [
        format!("holds a {made} store"),
        format!("engine is \"{other}\""),
        format!("engine = \"{made}\""),
        "hookd store export".to_string(),
        "hookd store import".to_string(),
    ] {
        assert!(text.contains(&needed), "{needed:?} is not in:\n{text}");
    }
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_one_embedded_engine_opened_as_the_other_is_refused_with_the_way_out() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let receiver = TestReceiver::start().await;
    let extra = subscription_toml("main", &receiver.url(), "transfer-main", &["*"], "");
    for (made, other) in [("sled", "fjall"), ("fjall", "sled")] {
        let dir = tmp.path().join(made);
        let mut hookd = start(&dir, &embedded(made), &extra).await;
        let right = dir.join("hookd.toml");
        post_event(
            &hookd,
            &json!({ "request_id": made, "status": "completed" }),
        )
        .await;
        stop(&mut hookd).await;
        let kept = export(&right, made).await;
        let files = listing(&dir.join("db"));
        // The same config, but for the engine.
        let wrong = dir.join("wrong.toml");
        let text = std::fs::read_to_string(&right).expect("read the config");
        let swapped = text.replace(&embedded(made), &embedded(other));
        assert_ne!(swapped, text, "the config names its engine");
        std::fs::write(&wrong, swapped).expect("write the other engine's config");

        let Err(refused) = launch(&wrong, &[]).await else {
            panic!("hookd run on {other} started on a {made} store");
        };
        assert!(
            refused.starts_with("exited with exit status: 1"),
            "{refused}"
        );
        assert_way_out(&refused, made, other);
        let run = store_command("export", &wrong, None).await;
        assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:#?}");
        assert_way_out(&run.stderr, made, other);

        assert_eq!(
            listing(&dir.join("db")),
            files,
            "the refusals wrote nothing"
        );
        assert_same_records(&kept, &export(&right, made).await, "the refused store");
    }
}

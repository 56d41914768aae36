//! The PostgreSQL engine with several nodes and under faults (issue 12): real `hookd` processes
//! sharing one database (each test a database of its own, `support::pg`), a receiver that
//! records which node sent what and when, and faults made for real: SIGKILL, SIGSTOP past the
//! lease, PostgreSQL restarted under load (a private cluster), connections cut, a long-open
//! transaction, and in-process nodes whose clock is an hour off.
//!
//! A node is told apart at the receiver by its subscription URL: every node has the same
//! config but for `?node=<name>` on the URL (a queued delivery follows the URL of the node that
//! attempts it). Every wait is a condition with a deadline.
//!
//! A test on the machine's server starts with `pg::unavailable()`: without a server it says
//! NOT RUN (with `HOOKD_REQUIRE_POSTGRES=1` it runs, and fails). The two on a private cluster
//! say NOT RUN when PostgreSQL's programs are missing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use futures_util::future::join_all;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::admin::Admin;
use crate::support::events::{delivery_toml, metric, scrape, subscription_toml};
use crate::support::load::{events_body, Load, Mix};
use crate::support::pg;
use crate::support::process::{free_ports, launch, wait_until_some, ChildGuard};
use crate::support::{wait_until, LOOPBACK_TARGETS};

const SECRET: &str = "pg-secret";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ------------------------------------------------------------------ the recording receiver

/// One request as the probe saw it.
#[derive(Debug, Clone)]
struct Hit {
    /// The `node` query parameter of the URL: which hookd node sent it.
    node: String,
    /// `X-Abstrakt-Delivery`.
    delivery: String,
    /// The body's `request_id`.
    request_id: String,
    /// `X-Abstrakt-Attempt`.
    attempt: u32,
    start: Instant,
    /// When the handler returned (or was dropped: the client went away).
    end: Option<Instant>,
    /// The status answered, if the handler got to answer.
    answered: Option<u16>,
}

/// How the probe answers a request: (hold it this long, then this status), given the request
/// and the earlier requests of the same delivery.
type Plan = dyn Fn(&Hit, &[&Hit]) -> (Duration, u16) + Send + Sync;

#[derive(Default)]
struct ProbeState {
    hits: Vec<Hit>,
    /// Requests being handled now, and the most at once.
    current: usize,
    peak: usize,
}

#[derive(Clone)]
struct ProbeApp {
    state: Arc<Mutex<ProbeState>>,
    plan: Arc<Plan>,
}

#[derive(Clone)]
struct Probe {
    addr: SocketAddr,
    state: Arc<Mutex<ProbeState>>,
}

/// Marks a request finished when the handler returns or is dropped.
struct Open {
    state: Arc<Mutex<ProbeState>>,
    index: usize,
    answered: Option<u16>,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.hits[self.index].end = Some(Instant::now());
        state.hits[self.index].answered = self.answered;
        state.current -= 1;
    }
}

async fn probe_hook(
    State(app): State<ProbeApp>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hit = Hit {
        node: query.get("node").cloned().unwrap_or_default(),
        delivery: header("x-abstrakt-delivery"),
        request_id: parsed["request_id"].as_str().unwrap_or("").to_string(),
        attempt: header("x-abstrakt-attempt").parse().unwrap_or(0),
        start: Instant::now(),
        end: None,
        answered: None,
    };
    let node = hit.node.clone();
    let (index, delay, status) = {
        let mut state = app.state.lock().unwrap();
        let (delay, status) = {
            let earlier: Vec<&Hit> = state
                .hits
                .iter()
                .filter(|h| h.delivery == hit.delivery)
                .collect();
            (app.plan)(&hit, &earlier)
        };
        state.hits.push(hit);
        state.current += 1;
        state.peak = state.peak.max(state.current);
        (state.hits.len() - 1, delay, status)
    };
    let mut open = Open {
        state: app.state.clone(),
        index,
        answered: None,
    };
    tokio::time::sleep(delay).await;
    open.answered = Some(status);
    drop(open);
    (
        StatusCode::from_u16(status).expect("a valid status"),
        format!("answered to node {node}"),
    )
}

impl Probe {
    async fn start(
        plan: impl Fn(&Hit, &[&Hit]) -> (Duration, u16) + Send + Sync + 'static,
    ) -> Probe {
        let state = Arc::new(Mutex::new(ProbeState::default()));
        let app = ProbeApp {
            state: state.clone(),
            plan: Arc::new(plan),
        };
        let router = Router::new()
            .route("/hook", post(probe_hook))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the probe");
        let addr = listener.local_addr().expect("probe address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Probe { addr, state }
    }

    /// The subscription URL of node `node`.
    fn url(&self, node: &str) -> String {
        format!("http://{}/hook?node={node}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    /// Requests from `node` being handled now.
    fn in_progress(&self, node: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .hits
            .iter()
            .filter(|h| h.node == node && h.end.is_none())
            .count()
    }

    /// Requests answered `200` so far.
    fn ok_count(&self) -> usize {
        let state = self.state.lock().unwrap();
        state
            .hits
            .iter()
            .filter(|h| h.answered == Some(200))
            .count()
    }

    /// The request_ids answered `200`.
    fn ok_request_ids(&self) -> HashSet<String> {
        let state = self.state.lock().unwrap();
        state
            .hits
            .iter()
            .filter(|h| h.answered == Some(200))
            .map(|h| h.request_id.clone())
            .collect()
    }

    /// Waits until every one of `ids` was answered `200`, or `deadline`; returns the missing.
    async fn missing_after(&self, ids: &HashSet<String>, deadline: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let got = self.ok_request_ids();
            let missing: Vec<String> = ids.iter().filter(|i| !got.contains(*i)).cloned().collect();
            if missing.is_empty() || start.elapsed() > deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hits of each delivery, in the order they started.
    fn by_delivery(&self) -> HashMap<String, Vec<Hit>> {
        let mut map: HashMap<String, Vec<Hit>> = HashMap::new();
        for hit in self.hits() {
            map.entry(hit.delivery.clone()).or_default().push(hit);
        }
        for hits in map.values_mut() {
            hits.sort_by_key(|h| h.start);
        }
        map
    }
}

async fn assert_all_arrive(probe: &Probe, acked: &HashSet<String>, deadline: Duration) {
    let missing = probe.missing_after(acked, deadline).await;
    assert!(
        missing.is_empty(),
        "LOST: {} of {} acknowledged events never answered 200 within {deadline:?}, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

// ------------------------------------------------------------------ hookd nodes

/// A `[delivery]` table and the subscription `main` to `url`.
fn config(url: &str, schedule: &[&str], timeout: &str, max_in_flight: usize) -> String {
    delivery_toml(schedule, &format!("timeout = {timeout:?}"))
        + &subscription_toml(
            "main",
            url,
            SECRET,
            &["*"],
            &format!("max_in_flight = {max_in_flight}"),
        )
}

/// The whole config file of a node on the PostgreSQL engine at `db_url`.
fn node_file(db_url: &str, body: &str) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [storage]\nengine = \"postgres\"\nurl = {db_url:?}\npool_size = 8\n\n{body}\n{LOOPBACK_TARGETS}"
    )
}

/// One `hookd run` process.
struct Node {
    name: String,
    process: ChildGuard,
    api: SocketAddr,
    metrics: SocketAddr,
}

impl Node {
    /// Writes `dir/<name>.toml` and starts the binary; waits until `/readyz` answers 200.
    async fn start(dir: &Path, name: &str, db_url: &str, body: &str) -> Node {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, node_file(db_url, body)).expect("write the node's config");
        let (process, api, metrics) = launch(&path, &[])
            .await
            .unwrap_or_else(|e| panic!("node {name} did not start: {e}"));
        Node {
            name: name.to_string(),
            process,
            api,
            metrics,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// Posts the events `ids` (a batch when more than one); the status, or the error.
    async fn post(&self, http: &reqwest::Client, ids: &[String]) -> Result<u16, String> {
        http.post(self.url("/v1/events"))
            .header("content-type", "application/json")
            .body(events_body(ids).to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// Posts and requires `202`.
    async fn post_ok(&self, http: &reqwest::Client, ids: &[String]) {
        let status = self.post(http, ids).await;
        assert_eq!(status, Ok(202), "node {}: POST /v1/events", self.name);
    }

    /// The admin API of this node, on `http`.
    fn admin(&self, http: &reqwest::Client) -> Admin {
        Admin::new(self.api, http.clone())
    }

    /// `GET /v1/deliveries/{id}`, which must answer 200.
    async fn delivery(&self, http: &reqwest::Client, id: &str) -> Value {
        let (status, body) = self.admin(http).get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "node {}: GET delivery {id}: {body}", self.name);
        body
    }

    /// Deliveries scheduled or in flight, by this node's view of the shared queue.
    async fn unfinished(&self, http: &reqwest::Client) -> usize {
        let admin = self.admin(http);
        admin.deliveries("status=scheduled").await.len()
            + admin.deliveries("status=in_flight").await.len()
    }

    /// The sum of metric `name`'s series on this node's metrics listener.
    async fn metric(&self, http: &reqwest::Client, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&scrape(http, self.metrics).await, name, labels).unwrap_or(0.0)
    }

    /// Whether `/readyz` answers 200.
    async fn ready(&self, http: &reqwest::Client) -> bool {
        matches!(
            http.get(format!("http://{}/readyz", self.metrics)).send().await,
            Ok(r) if r.status().as_u16() == 200
        )
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Posts `requests` requests of events (every third a batch of `batch`, the others single)
/// to the nodes in turn, `nodes.len()` at a time; returns the acknowledged request_ids.
async fn post_round_robin(
    http: &reqwest::Client,
    nodes: &[&Node],
    prefix: &str,
    requests: usize,
    batch: usize,
) -> HashSet<String> {
    let bodies: Vec<Vec<String>> = (0..requests)
        .map(|k| {
            if k % 3 == 2 {
                ids(&format!("{prefix}-{k}"), batch)
            } else {
                vec![format!("{prefix}-{k}")]
            }
        })
        .collect();
    let mut acked = HashSet::new();
    for (round, chunk) in bodies.chunks(nodes.len()).enumerate() {
        let posts = chunk.iter().enumerate().map(|(i, ids)| {
            let node = nodes[(round * nodes.len() + i) % nodes.len()];
            async move { node.post_ok(http, ids).await }
        });
        join_all(posts).await;
        acked.extend(chunk.iter().flatten().cloned());
    }
    acked
}

// ------------------------------------------------------------------ 1. nodes sharing a queue

/// `n` nodes on one database under load: every event delivered once, no delivery attempted by
/// two nodes at once, and the subscription's `max_in_flight = 3` held across the nodes. Each
/// node may run 2 attempts at once (`[delivery] max_in_flight`), so the nodes together could
/// exceed the subscription's limit, and reaching it takes two nodes working at once.
async fn nodes_share_one_queue(n: usize) {
    let started = Instant::now();
    let db = pg::create(&format!("share{n}")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Slow (50 ms a request); the first attempt of every tenth event fails, so retries go
    // through the shared queue too.
    let probe = Probe::start(|hit, earlier| {
        let fail = earlier.is_empty() && hit.request_id.ends_with('7');
        (Duration::from_millis(50), if fail { 500 } else { 200 })
    })
    .await;
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let nodes: Vec<Node> = join_all(names.iter().map(|name| {
        let body = delivery_toml(
            &["0s", "100ms", "200ms"],
            "timeout = \"2s\"\nmax_in_flight = 2",
        ) + &subscription_toml(
            "main",
            &probe.url(name),
            SECRET,
            &["*"],
            "max_in_flight = 3",
        );
        let (dir, url) = (dir.path().to_path_buf(), db.url());
        async move { Node::start(&dir, name, &url, &body).await }
    }))
    .await;
    let http = http();
    let refs: Vec<&Node> = nodes.iter().collect();
    // 60 requests, every third a batch of 8: 200 events.
    let acked = post_round_robin(&http, &refs, &format!("share{n}"), 60, 8).await;
    let posted = started.elapsed();
    assert_all_arrive(&probe, &acked, Duration::from_secs(60)).await;
    let delivered_at = started.elapsed();
    wait_until("the queue to drain", Duration::from_secs(20), || async {
        (nodes[0].unfinished(&http).await == 0).then_some(())
    })
    .await;

    // Every delivery the store lists was delivered, and answered 200 exactly once.
    let listed = nodes[n - 1]
        .admin(&http)
        .deliveries("status=delivered")
        .await;
    assert_eq!(
        listed.len(),
        acked.len(),
        "one delivered delivery per acknowledged event"
    );
    let by_delivery = probe.by_delivery();
    for d in &listed {
        let id = d["id"].as_str().expect("a delivery id");
        let hits = by_delivery
            .get(id)
            .unwrap_or_else(|| panic!("delivery {id} is listed delivered but never arrived"));
        let oks = hits.iter().filter(|h| h.answered == Some(200)).count();
        assert_eq!(oks, 1, "delivery {id} answered 200 {oks} times: {hits:?}");
    }
    // No delivery attempted by two nodes at once: its attempts never overlap.
    let mut retried = 0;
    for (id, hits) in &by_delivery {
        if hits.len() > 1 {
            retried += 1;
        }
        for pair in hits.windows(2) {
            let end = pair[0].end.expect("every request was answered");
            assert!(
                pair[1].start >= end,
                "delivery {id}: attempt {} (node {}) started {:?} before attempt {} (node {}) ended",
                pair[1].attempt,
                pair[1].node,
                end - pair[1].start,
                pair[0].attempt,
                pair[0].node
            );
        }
    }
    assert!(retried > 0, "some first attempts failed and were retried");
    // The per-subscription limit held across the nodes, and was reached: one node alone
    // cannot run more than 2.
    let peak = probe.peak();
    assert!(
        peak <= 3,
        "{peak} requests were in flight at once at the receiver: max_in_flight = 3 across {n} nodes"
    );
    assert_eq!(
        peak, 3,
        "the load reached the limit, which takes two nodes at once (else the test shows little)"
    );
    // Every node took part.
    let (mut per_node, mut working) = (Vec::new(), 0);
    for node in &nodes {
        let attempts = node
            .metric(
                &http,
                "hookd_delivery_attempts_total",
                &[("subscription", "main")],
            )
            .await;
        per_node.push(format!("{} {attempts}", node.name));
        if attempts > 0.0 {
            working += 1;
        }
    }
    assert!(
        working >= 2,
        "the work was not shared: attempts per node [{}]",
        per_node.join(", ")
    );
    let hits = probe.hits().len();
    println!(
        "FIGURE pg {n} nodes: {} events posted in {:.1} s, all delivered after {:.1} s, {hits} requests ({retried} deliveries retried), peak in flight {peak} (limit 3), attempts per node [{}], total {:.1} s",
        acked.len(),
        secs(posted),
        secs(delivered_at),
        per_node.join(", "),
        secs(started.elapsed())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_queue() {
    if pg::unavailable() {
        return;
    }
    nodes_share_one_queue(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_queue() {
    if pg::unavailable() {
        return;
    }
    nodes_share_one_queue(3).await;
}

// ------------------------------------------------------------------ 2. SIGKILL

/// Lease of the fault tests: `timeout = "2s"` + 5 s.
const LEASE: Duration = Duration::from_secs(7);
/// A request answered this long before a kill may not have had its outcome recorded yet.
const OUTCOME_SLACK: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_node_loses_nothing_and_repeats_only_its_attempts() {
    if pg::unavailable() {
        return;
    }
    let started = Instant::now();
    let db = pg::create("sigkill").await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Every request is held for a second, so that attempts are in flight at the kill.
    let probe = Probe::start(|_, _| (Duration::from_secs(1), 200)).await;
    let body = |node: &str| config(&probe.url(node), &["0s", "200ms", "500ms", "1s"], "2s", 6);
    let (url, body_a, body_b) = (db.url(), body("a"), body("b"));
    // Node a takes the events and starts on them before node b exists: which node wins a
    // freed slot is a race (the node that freed it usually does), so a node started beside
    // a busy one may hold nothing at the instant of the kill.
    let mut a = Node::start(dir.path(), "a", &url, &body_a).await;
    let http = http();
    // 12 requests, every third a batch of 4: 24 events.
    let mut acked = post_round_robin(&http, &[&a], "kill", 12, 4).await;
    wait_until(
        "node a to have attempts in flight",
        Duration::from_secs(20),
        || async { (probe.in_progress("a") >= 1).then_some(()) },
    )
    .await;
    let b = Node::start(dir.path(), "b", &url, &body_b).await;
    // Node a still works through its 24 events (6 at a time, a second each).
    wait_until(
        "node a to have attempts in flight beside node b",
        Duration::from_secs(20),
        || async { (probe.in_progress("a") >= 1).then_some(()) },
    )
    .await;
    let killed_at = Instant::now();
    a.process.kill();
    let in_flight_at_kill: HashSet<String> = probe
        .hits()
        .into_iter()
        .filter(|h| h.node == "a" && h.start < killed_at && h.end.is_none_or(|e| e > killed_at))
        .map(|h| h.delivery)
        .collect();
    // The survivor goes on taking events.
    let more = ids("kill-after", 8);
    b.post_ok(&http, &more[..4]).await;
    b.post_ok(&http, &more[4..]).await;
    acked.extend(more);

    assert_all_arrive(&probe, &acked, Duration::from_secs(40)).await;
    wait_until("the queue to drain", Duration::from_secs(20), || async {
        (b.unfinished(&http).await == 0).then_some(())
    })
    .await;

    let by_delivery = probe.by_delivery();
    // Every attempt a had in flight was made again by b, after the lease.
    let mut retaken_after = Vec::new();
    for id in &in_flight_at_kill {
        let hits = &by_delivery[id];
        let again = hits
            .iter()
            .find(|h| h.node == "b" && h.answered == Some(200))
            .unwrap_or_else(|| {
                panic!("delivery {id}, in flight at node a when it was killed, was never delivered by b: {hits:?}")
            });
        retaken_after.push(again.start - hits[0].start);
    }
    // Duplicates only among those: a repeated delivery's first request came from a, was in
    // flight at the kill (or answered just before it), and b repeated it after the lease.
    let mut duplicates = 0;
    for (id, hits) in &by_delivery {
        if hits.len() < 2 {
            continue;
        }
        duplicates += hits.len() - 1;
        let first = &hits[0];
        let first_end = first.end.expect("answered or dropped");
        assert!(
            first.node == "a" && first.start < killed_at && first_end + OUTCOME_SLACK > killed_at,
            "delivery {id} was repeated but its first request was not one the killed node had in flight ({:?} after the kill): {hits:?}",
            first.start.checked_duration_since(killed_at)
        );
        assert_eq!(
            hits.len(),
            2,
            "delivery {id} was sent more than twice: {hits:?}"
        );
        assert!(
            hits[1].node == "b" && hits[1].start >= first.start + LEASE - Duration::from_secs(1),
            "delivery {id} was taken over {:?} after its first request, before the lease ({LEASE:?}) ran out: {hits:?}",
            hits[1].start - first.start
        );
    }
    assert!(
        duplicates <= 6,
        "{duplicates} duplicates: more than the 6 attempts (max_in_flight) a node can have in flight"
    );
    println!(
        "FIGURE pg sigkill: {} events, node a killed with {} attempts in flight; {duplicates} duplicates; taken over {:?} s after their first request (lease {LEASE:?}); total {:.1} s",
        acked.len(),
        in_flight_at_kill.len(),
        retaken_after.iter().map(|d| (secs(*d) * 10.0).round() / 10.0).collect::<Vec<_>>(),
        secs(started.elapsed())
    );
}

// ------------------------------------------------------------------ 3. SIGSTOP past the lease

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_its_lease_cannot_overwrite_the_later_attempt() {
    if pg::unavailable() {
        return;
    }
    let started = Instant::now();
    let db = pg::create("sigstop").await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Node a's requests are held for a second, then answered 200 (while a is stopped). Node
    // b's repeat of a delivery that a had is answered 500: its outcome (a retry in a minute)
    // is the one the store must keep, whatever a says later.
    let probe = Probe::start(|hit, earlier| {
        if hit.node == "a" {
            (Duration::from_secs(1), 200)
        } else if earlier.iter().any(|h| h.node == "a") {
            (Duration::ZERO, 500)
        } else {
            (Duration::ZERO, 200)
        }
    })
    .await;
    let body = |node: &str| config(&probe.url(node), &["1m"], "2s", 8);
    let (url, body_a, body_b) = (db.url(), body("a"), body("b"));
    // Node b starts once a is stopped with attempts in flight: started beside a busy node, a
    // node may win no freed slot in time (the freeing node usually does).
    let a = Node::start(dir.path(), "a", &url, &body_a).await;
    let http = http();
    let events = ids("stop", 8);
    a.post_ok(&http, &events[..4]).await;
    a.post_ok(&http, &events[4..]).await;
    wait_until(
        "node a to have attempts in flight",
        Duration::from_secs(15),
        || async { (probe.in_progress("a") >= 1).then_some(()) },
    )
    .await;
    a.process.signal("STOP");
    let stopped_at = Instant::now();
    // In flight at a and not answered yet: a cannot have recorded their outcomes.
    let held: Vec<Hit> = probe
        .hits()
        .into_iter()
        .filter(|h| h.node == "a" && h.end.is_none())
        .collect();
    assert!(
        !held.is_empty(),
        "node a's attempts were all answered before SIGSTOP (rerun)"
    );
    let b = Node::start(dir.path(), "b", &url, &body_b).await;

    // b takes them over once the lease has run out, and records its (failed) attempt.
    wait_until(
        "node b to repeat every delivery a held",
        // The lease is 7 s; the rest is room for a loaded machine (b starts after the stop).
        Duration::from_secs(60),
        || async {
            let by = probe.by_delivery();
            held.iter()
                .all(|h| {
                    by[&h.delivery]
                        .iter()
                        .any(|x| x.node == "b" && x.end.is_some())
                })
                .then_some(())
        },
    )
    .await;
    for h in &held {
        let retake = probe.by_delivery()[&h.delivery]
            .iter()
            .find(|x| x.node == "b")
            .map(|x| x.start)
            .expect("b's request");
        assert!(
            retake >= h.start + LEASE - Duration::from_secs(1),
            "delivery {} was taken over {:?} after a's request, before the lease ({LEASE:?}) ran out",
            h.delivery,
            retake - h.start
        );
        wait_until(
            &format!("b's outcome of {} to be recorded", h.delivery),
            Duration::from_secs(10),
            || async {
                let d = b.delivery(&http, &h.delivery).await;
                (d["attempts"] == 1 && d["state"] == "scheduled").then_some(())
            },
        )
        .await;
    }
    let stopped_for = stopped_at.elapsed();

    a.process.signal("CONT");
    let stale = wait_until(
        "node a to count its refused outcomes",
        Duration::from_secs(20),
        || async {
            let n = a.metric(&http, "hookd_store_stale_outcomes", &[]).await;
            (n >= held.len() as f64).then_some(n)
        },
    )
    .await;
    assert!(a.ready(&http).await, "node a is ready again after SIGCONT");
    // And it goes on taking events.
    let later = vec!["stop-later".to_string()];
    a.post_ok(&http, &later).await;
    assert_all_arrive(
        &probe,
        &later.into_iter().collect(),
        Duration::from_secs(15),
    )
    .await;
    // The store kept b's attempt: a's late success did not finish the delivery, nor did its
    // timeout add an attempt.
    for h in &held {
        for node in [&a, &b] {
            let d = node.delivery(&http, &h.delivery).await;
            let history = d["attempt_history"].as_array().cloned().unwrap_or_default();
            assert!(
                d["state"] == "scheduled"
                    && d["attempts"] == 1
                    && history.len() == 1
                    && history[0]["status_code"] == 500
                    && history[0]["outcome"] == "http_5xx",
                "delivery {} (read through node {}) does not show b's attempt alone: {d}",
                h.delivery,
                node.name
            );
        }
    }
    let stderr = a.process.stderr();
    assert!(
        stderr.contains("outcome refused"),
        "node a logs its refused outcomes; stderr:\n{}",
        a.process.stderr_tail(3000)
    );
    println!(
        "FIGURE pg sigstop: node a stopped {:.1} s with {} attempts in flight; b took them over after the lease ({LEASE:?}); after SIGCONT a refused {stale} stale outcomes; total {:.1} s",
        secs(stopped_for),
        held.len(),
        secs(started.elapsed())
    );
}

// ------------------------------------------------------------------ 4. PostgreSQL goes away

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of the test's own, on a free loopback port, stopped on drop. As root
/// its programs run as the `postgres` user (PostgreSQL refuses root).
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    /// More server options (`-c name=value …`).
    extra: String,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program (as `postgres` when root); its output on failure.
fn pg_program(program: &str, args: &[&str]) -> Result<(), String> {
    let bin = format!("{PG_BIN}/{program}");
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &bin]);
        c
    } else {
        Command::new(&bin)
    };
    command.args(args).current_dir("/");
    let output = command
        .output()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn id_of(flag: &str) -> Result<u32, String> {
    let output = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|e| format!("id: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| "no postgres user".to_string())
}

impl Cluster {
    /// Starts a cluster with `extra` server options (`-c name=value …`).
    async fn start(extra: &str) -> Result<Cluster, String> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            return Err(format!("no {PG_BIN}/initdb"));
        }
        let dir = tempfile::Builder::new()
            .prefix("hookd-pgcluster")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        if is_root() {
            let (uid, gid) = (id_of("-u")?, id_of("-g")?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown the data directory to postgres: {e}"))?;
        }
        let port = free_ports(1)[0];
        let cluster = Cluster {
            dir,
            port,
            extra: extra.to_string(),
        };
        let (data, log, options) = (cluster.data(), cluster.log(), cluster.options());
        tokio::task::spawn_blocking(move || {
            pg_program(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )?;
            pg_program(
                "pg_ctl",
                &[
                    "-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options, "start",
                ],
            )
        })
        .await
        .expect("the PostgreSQL start task")?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The server's options: its port, its socket in the temp dir, loopback only.
    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
            self.port,
            self.dir.path().display(),
            self.extra
        )
    }

    fn log(&self) -> String {
        self.dir.path().join("postgres.log").display().to_string()
    }

    fn server(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Creates the database `hookd`; returns its URL.
    async fn database(&self) -> String {
        connect(&format!("{}/postgres?sslmode=disable", self.server()))
            .await
            .batch_execute("CREATE DATABASE hookd")
            .await
            .expect("create the database");
        format!("{}/hookd?sslmode=disable", self.server())
    }

    /// `pg_ctl <args…>` on this cluster; panics with its output and the server log on failure.
    async fn ctl(&self, args: &[&str]) {
        let data = self.data();
        // `-l` on every command that starts the server: without it the server writes to
        // pg_ctl's output, which then never ends.
        // `-o` too: `start` does not reuse the options of the last start (`restart` does).
        let mut all: Vec<String> = vec![
            "-D".into(),
            data,
            "-l".into(),
            self.log(),
            "-o".into(),
            self.options(),
        ];
        all.extend(["-w", "-t", "30"].iter().chain(args).map(|s| s.to_string()));
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            pg_program("pg_ctl", &refs)
        })
        .await
        .expect("the pg_ctl task");
        if let Err(e) = result {
            panic!(
                "{e}\nserver log:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_program(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// A client of the test's own to `url`.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Waits until `node`'s `/readyz` answers 200 again and `n` more requests were delivered after
/// `what`; returns how long readiness took.
async fn recovered(
    node: &Node,
    http: &reqwest::Client,
    probe: &Probe,
    what: &str,
    n: usize,
) -> Duration {
    let since = Instant::now();
    wait_until(
        &format!("/readyz after {what}"),
        Duration::from_secs(30),
        || async { node.ready(http).await.then_some(()) },
    )
    .await;
    let ready = since.elapsed();
    let before = probe.ok_count();
    wait_until(
        &format!("deliveries after {what}"),
        Duration::from_secs(30),
        || async { (probe.ok_count() >= before + n).then_some(()) },
    )
    .await;
    ready
}

/// [`Cluster::start`], or `None` after printing `NOT RUN: <why>`.
async fn private_cluster(extra: &str) -> Option<Cluster> {
    match Cluster::start(extra).await {
        Ok(c) => Some(c),
        Err(why) => {
            println!("NOT RUN: a private PostgreSQL cluster could not be started: {why}");
            None
        }
    }
}

/// The answer of one ingest request while the database may be down: (status, Retry-After).
async fn post_status(
    http: &reqwest::Client,
    node: &Node,
    ids: &[String],
) -> Option<(u16, Option<String>)> {
    let response = http
        .post(node.url("/v1/events"))
        .header("content-type", "application/json")
        .body(events_body(ids).to_string())
        .send()
        .await
        .ok()?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Some((response.status().as_u16(), retry_after))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing_and_hookd_recovers() {
    let started = Instant::now();
    let Some(cluster) = private_cluster("").await else {
        return;
    };
    let cluster_up = started.elapsed();
    let url = cluster.database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // 20 ms a request: some attempts are in flight when the server goes away.
    let probe = Probe::start(|_, _| (Duration::from_millis(20), 200)).await;
    let body = config(
        &probe.url("solo"),
        &["0s", "200ms", "500ms", "1s", "1s", "2s"],
        "2s",
        8,
    );
    let mut node = Node::start(dir.path(), "solo", &url, &body).await;
    let http = http();
    let load = Load::start(&node.url("/v1/events"), "pgrestart", Mix::new(2, 5, 4, 20));
    let mut acked: HashSet<String> = HashSet::new();
    let mut refused = 0usize;

    // 1. pg_ctl restart -m fast.
    wait_until("deliveries under load", Duration::from_secs(20), || async {
        (probe.ok_count() >= 20).then_some(())
    })
    .await;
    cluster.ctl(&["-m", "fast", "restart"]).await;
    let ready_after_restart = recovered(&node, &http, &probe, "the restart", 20).await;

    // 2. Stopped for a while: ingest answers 503 and /readyz fails; then started again.
    cluster.ctl(&["-m", "fast", "stop"]).await;
    let stopped = Instant::now();
    let mut n = 0;
    let mut answers: HashMap<u16, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers.get(&503).copied().unwrap_or(0) < 10 {
        assert!(
            Instant::now() < deadline,
            "ingest did not answer 503 ten times while PostgreSQL was down: {answers:?}"
        );
        n += 1;
        let id = vec![format!("down-{n}")];
        match post_status(&http, &node, &id).await {
            Some((202, _)) => {
                acked.extend(id);
                *answers.entry(202).or_default() += 1;
            }
            Some((503, retry_after)) => {
                assert!(
                    retry_after.is_some(),
                    "a 503 from ingest carries Retry-After"
                );
                *answers.entry(503).or_default() += 1;
            }
            Some((status, _)) => panic!("ingest answered {status} while PostgreSQL was down"),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused += answers.get(&503).copied().unwrap_or(0);
    assert!(
        !node.ready(&http).await,
        "/readyz answers 200 while PostgreSQL is down"
    );
    cluster.ctl(&["start"]).await;
    let down_for = stopped.elapsed();
    let ready_after_start = recovered(&node, &http, &probe, "PostgreSQL came back", 20).await;

    // 3. A crash: `pg_ctl stop -m immediate` (no checkpoint; recovery from the WAL on start).
    cluster.ctl(&["-m", "immediate", "stop"]).await;
    cluster.ctl(&["start"]).await;
    let ready_after_crash = recovered(&node, &http, &probe, "PostgreSQL's crash", 20).await;
    let (load_acked, load_refused) = load.stop().await;
    acked.extend(load_acked);
    refused += load_refused;
    // Later events are taken and delivered as usual.
    let last = ids("after-outage", 5);
    node.post_ok(&http, &last).await;
    acked.extend(last);

    assert_all_arrive(&probe, &acked, Duration::from_secs(40)).await;
    assert!(
        node.process.try_wait().is_none(),
        "hookd exited instead of riding out the outage"
    );
    let by_delivery = probe.by_delivery();
    let duplicates: usize = by_delivery
        .values()
        .map(|h| h.len().saturating_sub(1))
        .sum();
    // Repeats (outcomes the database lost or never got) never run beside the attempt they
    // repeat: a claim that is not known to the database any more would allow that.
    for (id, hits) in &by_delivery {
        for pair in hits.windows(2) {
            assert!(
                pair[0].end.is_some_and(|end| pair[1].start >= end),
                "delivery {id} was attempted twice at once: {hits:?}"
            );
        }
    }
    println!(
        "FIGURE pg restart: private cluster up in {:.1} s; {} events acknowledged, all delivered; {refused} ingest 503s; ready {:.1} s after `pg_ctl restart -m fast`, {:.1} s after a {:.1} s stop, {:.1} s after a crash (-m immediate); {duplicates} duplicates; total {:.1} s",
        secs(cluster_up),
        acked.len(),
        secs(ready_after_restart),
        secs(ready_after_start),
        secs(down_for),
        secs(ready_after_crash),
        secs(started.elapsed())
    );
}

/// A database crash forgets the last claims when they were committed without waiting for the
/// disk. The attempts those claims started are still running: the deliveries must not be
/// claimed and attempted again beside them (that would break `max_in_flight` and the "one
/// attempt at a time" of a delivery, and hand out a lease token already in use). The private
/// cluster flushes its WAL only every 10 s (`wal_writer_delay`), so that a claim made just
/// before the crash is lost as it would be in the worst case when claims do not wait for the
/// disk (whether it is depends on what else flushed the WAL meanwhile: this test can only
/// fail then, not always); with durable claims it always passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_lost_in_a_database_crash_are_not_attempted_twice_at_once() {
    let started = Instant::now();
    let Some(cluster) = private_cluster("-c wal_writer_delay=10s -c full_page_writes=off").await
    else {
        return;
    };
    let url = cluster.database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Held 3 s: the attempts run on across the crash and the restart.
    let probe = Probe::start(|_, _| (Duration::from_secs(3), 200)).await;
    let body = config(&probe.url("solo"), &["0s", "500ms", "1s"], "5s", 4);
    let node = Node::start(dir.path(), "solo", &url, &body).await;
    let http = http();
    let events = ids("lostclaim", 4);
    node.post_ok(&http, &events).await;
    wait_until(
        "the 4 attempts in flight",
        Duration::from_secs(15),
        || async { (probe.in_progress("solo") == 4).then_some(()) },
    )
    .await;
    cluster.ctl(&["-m", "immediate", "stop"]).await;
    cluster.ctl(&["start"]).await;
    let acked: HashSet<String> = events.into_iter().collect();
    assert_all_arrive(&probe, &acked, Duration::from_secs(30)).await;
    wait_until("the queue to drain", Duration::from_secs(30), || async {
        (node.unfinished(&http).await == 0).then_some(())
    })
    .await;
    let by_delivery = probe.by_delivery();
    let overlapping: Vec<&String> = by_delivery
        .iter()
        .filter(|(_, hits)| {
            hits.windows(2)
                .any(|p| p[0].end.is_none_or(|end| p[1].start < end))
        })
        .map(|(id, _)| id)
        .collect();
    let peak = probe.peak();
    assert!(
        overlapping.is_empty() && peak <= 4,
        "after the crash, {} of 4 deliveries were attempted again while their first attempt was \
         still running, {peak} requests at once (max_in_flight = 4): {by_delivery:#?}",
        overlapping.len()
    );
    println!(
        "FIGURE pg lost claims: a crash with 4 attempts in flight; {} requests, none beside another of its delivery, peak {peak}; total {:.1} s",
        probe.hits().len(),
        secs(started.elapsed())
    );
}

/// Every connection hookd has to its database is cut (`pg_terminate_backend`) three times under
/// load: nothing acknowledged is lost and hookd goes on without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_under_load_lose_nothing() {
    if pg::unavailable() {
        return;
    }
    let started = Instant::now();
    let db = pg::create("cut").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::start(|_, _| (Duration::from_millis(5), 200)).await;
    let body = config(
        &probe.url("solo"),
        &["0s", "200ms", "500ms", "1s", "1s"],
        "2s",
        8,
    );
    let node = Node::start(dir.path(), "solo", &db.url(), &body).await;
    let http = http();
    let admin = connect(&format!("{}/postgres?sslmode=disable", pg::server())).await;
    let load = Load::start(&node.url("/v1/events"), "pgcut", Mix::new(2, 5, 4, 20));
    let mut cut = 0u64;
    for round in 0..3 {
        let before = probe.ok_count();
        wait_until(
            &format!("deliveries before cut {round}"),
            Duration::from_secs(30),
            || async { (probe.ok_count() >= before + 15).then_some(()) },
        )
        .await;
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hookd'",
                &[&db.name],
            )
            .await
            .expect("terminate hookd's connections")
            .get(0);
        cut += killed as u64;
    }
    recovered(&node, &http, &probe, "the cuts", 15).await;
    let (mut acked, refused) = load.stop().await;
    let last = ids("after-cuts", 5);
    node.post_ok(&http, &last).await;
    acked.extend(last);
    assert_all_arrive(&probe, &acked, Duration::from_secs(40)).await;
    println!(
        "FIGURE pg cuts: 3 cuts ({cut} connections terminated); {} events acknowledged, all delivered; {refused} ingest 503s; total {:.1} s",
        acked.len(),
        secs(started.elapsed())
    );
}

// ------------------------------------------------------------------ 5. a long-open transaction

/// One node on a fresh database, and another client's `REPEATABLE READ` transaction that
/// counted the rows of `table` and stays open (until `COMMIT` on `other`).
struct LongTransaction {
    db: pg::TestDb,
    _dir: tempfile::TempDir,
    probe: Probe,
    node: Node,
    other: tokio_postgres::Client,
    /// What the transaction counted.
    seen: i64,
}

async fn with_long_transaction(tag: &str, table: &str) -> LongTransaction {
    let db = pg::create(tag).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::start(|_, _| (Duration::ZERO, 200)).await;
    let body = config(&probe.url("solo"), &["0s", "200ms", "500ms"], "2s", 16);
    let node = Node::start(dir.path(), "solo", &db.url(), &body).await;
    let other = connect(&db.url()).await;
    other
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .expect("BEGIN");
    let seen: i64 = other
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("read in the long transaction")
        .get(0);
    LongTransaction {
        db,
        _dir: dir,
        probe,
        node,
        other,
        seen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_open_transaction_does_not_stop_claims_and_shows_in_dead_rows() {
    if pg::unavailable() {
        return;
    }
    let started = Instant::now();
    let LongTransaction {
        db,
        probe,
        node,
        other,
        seen,
        ..
    } = with_long_transaction("longtx", "hookd_queue").await;
    let http = http();
    let dead_before = node.metric(&http, "hookd_store_dead_rows", &[]).await;

    // 20 batches of 10: 200 events, each inserted, leased and deleted from the live queue.
    let mut acked = HashSet::new();
    for k in 0..20 {
        let batch = ids(&format!("longtx-{k}"), 10);
        node.post_ok(&http, &batch).await;
        acked.extend(batch);
    }
    assert_all_arrive(&probe, &acked, Duration::from_secs(30)).await;
    let delivered_in = started.elapsed();
    let dead = wait_until(
        "hookd_store_dead_rows to count the queue's dead rows",
        Duration::from_secs(30),
        || async {
            let n = node.metric(&http, "hookd_store_dead_rows", &[]).await;
            (n >= 200.0).then_some(n)
        },
    )
    .await;
    // A vacuum cannot remove them while the transaction is open. (The gauge is read from
    // the same statistics; hookd refreshes it at most every 20 times what counting cost, so
    // its changes are waited for.)
    let vacuum = connect(&db.url()).await;
    let dead_rows = || async {
        vacuum
            .query_one(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'hookd_queue'",
                &[],
            )
            .await
            .expect("read the statistics")
            .get::<_, i64>(0)
    };
    vacuum
        .batch_execute("VACUUM hookd_queue")
        .await
        .expect("VACUUM");
    let after_vacuum = dead_rows().await;
    assert!(
        after_vacuum >= 200,
        "a VACUUM under the open transaction left {after_vacuum} dead rows (the gauge said {dead})"
    );
    // The transaction was open all along (its snapshot still shows the queue as it was).
    let still: i64 = other
        .query_one("SELECT count(*) FROM hookd_queue", &[])
        .await
        .expect("the long transaction is still open")
        .get(0);
    assert_eq!(still, seen, "the long transaction's snapshot moved");
    other.batch_execute("COMMIT").await.expect("COMMIT");
    // Once it ends, a vacuum removes them and the gauge follows. A VACUUM sets the count to
    // what it left; hookd's connections report what they deleted up to 10 s after they go
    // idle, which PostgreSQL adds on top, so the count is read after each of several VACUUMs.
    let vacuumed = std::sync::atomic::AtomicU32::new(0);
    let (last, cleared) = wait_until(
        "a VACUUM after the transaction ended to leave fewer than 50 dead rows, and hookd_store_dead_rows to follow",
        Duration::from_secs(40),
        || async {
            vacuum
                .batch_execute("VACUUM hookd_queue")
                .await
                .expect("VACUUM");
            vacuumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let last = dead_rows().await;
            let n = node.metric(&http, "hookd_store_dead_rows", &[]).await;
            if last < 50 && n < 50.0 {
                return Some((last, n));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        },
    )
    .await;
    let vacuumed = vacuumed.into_inner();
    println!(
        "FIGURE pg long transaction: 200 events delivered in {:.1} s under an open REPEATABLE READ transaction; hookd_store_dead_rows {dead_before} -> {dead} ({after_vacuum} after a VACUUM under it, {cleared} after it ended: {vacuumed} VACUUMs, PostgreSQL counted {last}); total {:.1} s",
        secs(delivered_in),
        secs(started.elapsed())
    );
}

/// The same with a transaction that read the finished deliveries (a report, `pg_dump`) while
/// no partition of `hookd_done` exists for the day yet, as on a fresh database or just after
/// midnight UTC: outcomes must still be recorded, and once only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_open_transaction_on_finished_deliveries_does_not_stop_outcomes() {
    if pg::unavailable() {
        return;
    }
    let started = Instant::now();
    let t = with_long_transaction("longdone", "hookd_done").await;
    let http = http();
    let watch = connect(&t.db.url()).await;
    watch
        .batch_execute("SET statement_timeout = '2s'")
        .await
        .expect("SET");

    let events = ids("longdone", 20);
    t.node.post_ok(&http, &events[..10]).await;
    t.node.post_ok(&http, &events[10..]).await;
    let acked: HashSet<String> = events.into_iter().collect();
    let queue_left = || async {
        let left: i64 = watch
            .query_one("SELECT count(*) FROM hookd_queue", &[])
            .await
            .ok()?
            .get(0);
        Some(left)
    };
    let missing = t.probe.missing_after(&acked, Duration::from_secs(10)).await;
    let drained = wait_until_some(Duration::from_secs(10), || async {
        (queue_left().await? == 0).then_some(())
    })
    .await;
    let left = queue_left().await;
    let waiting: Vec<String> = watch
        .query(
            "SELECT wait_event || ': ' || left(query, 90) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    let requests = t.probe.hits().len();
    t.other.batch_execute("COMMIT").await.expect("COMMIT");
    // Once the transaction ends, whatever was held up goes through.
    let missing_after_commit = t.probe.missing_after(&acked, Duration::from_secs(30)).await;
    let drained_after_commit = wait_until_some(Duration::from_secs(20), || async {
        (queue_left().await? == 0).then_some(())
    })
    .await;
    assert!(
        missing.is_empty() && drained.is_some(),
        "with a transaction open that read hookd_done, {} of 20 events were not delivered and \
         {left:?} deliveries were left unfinished after 10 s ({requests} requests); statements \
         waiting for a lock: {waiting:?}; after COMMIT: {} still missing, queue drained: {}",
        missing.len(),
        missing_after_commit.len(),
        drained_after_commit.is_some()
    );
    assert_eq!(requests, 20, "each event was sent once");
    println!(
        "FIGURE pg long transaction on hookd_done: 20 events delivered and recorded; total {:.1} s",
        secs(started.elapsed())
    );
}

// ------------------------------------------------------------------ 6. a skewed clock

/// The real time plus `skew` ms.
struct Skewed(i64);

impl hookd::clock::Clock for Skewed {
    fn now_ms(&self) -> u64 {
        (hookd::clock::system_now_ms() as i64 + self.0) as u64
    }
}

const HOUR_MS: i64 = 3_600_000;

/// hookd in-process on the PostgreSQL engine at `db_url`, deciding by `Skewed(skew)`.
struct InProcess {
    api: SocketAddr,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    async fn start(db_url: &str, body: &str, skew: i64) -> InProcess {
        let text = node_file(db_url, body);
        let config = hookd::Config::from_toml(&text, "pg-skew.toml")
            .unwrap_or_else(|e| panic!("config invalid:\n{e}\n{text}"));
        let app = hookd::Application::build_with_clock(config, Arc::new(Skewed(skew)))
            .await
            .expect("hookd builds");
        let api = app.api_addr();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
        InProcess { api, stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.handle
            .await
            .expect("the hookd task")
            .expect("hookd stops cleanly");
    }
}

/// The retry delay of the skew scenarios: `retry_schedule = ["4s"]`.
const RETRY: Duration = Duration::from_secs(4);

/// Nodes skewed by `skews` ms share a database; each gets three events whose first attempt
/// fails. Every first attempt comes promptly and every retry no earlier than [`RETRY`] after
/// it (and not much later). Returns a summary line.
async fn skew_scenario(name: &str, skews: &[(&str, i64)]) -> String {
    let db = pg::create(name).await;
    let probe =
        Probe::start(|_, earlier| (Duration::ZERO, if earlier.is_empty() { 500 } else { 200 }))
            .await;
    let mut nodes = Vec::new();
    for (tag, skew) in skews {
        let body = config(&probe.url(tag), &["4s"], "2s", 8);
        nodes.push(InProcess::start(&db.url(), &body, *skew).await);
    }
    let http = http();
    let mut posted: HashMap<String, Instant> = HashMap::new();
    for (node, (tag, _)) in nodes.iter().zip(skews) {
        for id in ids(&format!("{name}-{tag}"), 3) {
            let at = Instant::now();
            let status = http
                .post(format!("http://{}/v1/events", node.api))
                .header("content-type", "application/json")
                .body(events_body(std::slice::from_ref(&id)).to_string())
                .send()
                .await
                .expect("ingest")
                .status()
                .as_u16();
            assert_eq!(status, 202, "{name}: node {tag} took the event");
            posted.insert(id, at);
        }
    }
    let acked: HashSet<String> = posted.keys().cloned().collect();
    assert_all_arrive(&probe, &acked, Duration::from_secs(25)).await;
    let mut gaps = Vec::new();
    for (id, hits) in probe.by_delivery() {
        assert_eq!(
            hits.len(),
            2,
            "{name}: delivery {id}: one failure, one retry: {hits:?}"
        );
        let first_after = hits[0].start - posted[&hits[0].request_id];
        assert!(
            first_after < Duration::from_secs(3),
            "{name}: delivery {id}'s first attempt came {first_after:?} after its event (node {})",
            hits[0].node
        );
        let gap = hits[1].start - hits[0].start;
        assert!(
            gap >= RETRY - Duration::from_millis(50),
            "{name}: delivery {id} was retried {gap:?} after its failure by node {}, before the {RETRY:?} of the schedule",
            hits[1].node
        );
        assert!(
            gap < RETRY + Duration::from_secs(4),
            "{name}: delivery {id} was retried only {gap:?} after its failure by node {} ({RETRY:?} due)",
            hits[1].node
        );
        gaps.push(format!("{:.2}s by {}", secs(gap), hits[1].node));
    }
    for node in nodes {
        node.stop().await;
    }
    gaps.sort();
    format!("{name}: retries {}", gaps.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_skewed_clocks_deliver_nothing_early_and_nothing_late() {
    if pg::unavailable() {
        return;
    }
    let started = Instant::now();
    let (behind, ahead, pair) = tokio::join!(
        skew_scenario("behind", &[("behind", -HOUR_MS)]),
        skew_scenario("ahead", &[("ahead", HOUR_MS)]),
        skew_scenario("pair", &[("behind", -HOUR_MS), ("ahead", HOUR_MS)]),
    );
    println!(
        "FIGURE pg skew ({RETRY:?} retry): {behind}; {ahead}; {pair}; total {:.1} s",
        secs(started.elapsed())
    );
}

/// A subscription created through one node's API, and its pause switch, apply on every node
/// within a second or two: the other node routes events to it and holds them while it is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_pauses_made_on_one_node_apply_on_every_node() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("subsync").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::start(|_, _| (Duration::ZERO, 200)).await;
    let body = delivery_toml(&["0s"], "");
    let a = Node::start(dir.path(), "a", &db.url(), &body).await;
    let b = Node::start(dir.path(), "b", &db.url(), &body).await;
    let http = http();
    let created = http
        .post(a.url("/v1/subscriptions"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "id": "made-on-a", "url": probe.url("b"), "events": ["*"], "secret": SECRET,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("create on a");
    assert_eq!(created.status().as_u16(), 201);
    wait_until(
        "node b knows the subscription made on a",
        Duration::from_secs(10),
        || async {
            (b.admin(&http).get("/v1/subscriptions/made-on-a").await.0 == 200).then_some(())
        },
    )
    .await;
    let first = ids("subsync-1", 1);
    b.post_ok(&http, &first).await;
    assert_all_arrive(
        &probe,
        &first.iter().cloned().collect(),
        Duration::from_secs(20),
    )
    .await;

    let paused = http
        .post(a.url("/v1/subscriptions/made-on-a/pause"))
        .send()
        .await
        .expect("pause on a");
    assert_eq!(paused.status().as_u16(), 200);
    wait_until(
        "node b sees the pause made on a",
        Duration::from_secs(10),
        || async {
            let (_, s) = b.admin(&http).get("/v1/subscriptions/made-on-a").await;
            (s["paused"] == true).then_some(())
        },
    )
    .await;
    let held = ids("subsync-2", 1);
    b.post_ok(&http, &held).await;
    // Held by the pause on both nodes: still scheduled after both have turned many times.
    wait_until(
        "the held delivery is listed",
        Duration::from_secs(10),
        || async { (b.unfinished(&http).await == 1).then_some(()) },
    )
    .await;
    let resumed = http
        .post(b.url("/v1/subscriptions/made-on-a/resume"))
        .send()
        .await
        .expect("resume on b");
    assert_eq!(resumed.status().as_u16(), 200);
    assert_all_arrive(
        &probe,
        &held.iter().cloned().collect(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        probe.by_delivery().len(),
        2,
        "one delivery per event, nothing sent while paused"
    );
}

/// A delivery whose lease ran out (its node stopped mid-attempt) reads as scheduled, due since
/// the lease's end, not as in flight: any node's next claim takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_lease_ran_out_reads_as_scheduled() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("expired").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::start(|_, _| (Duration::from_secs(6), 200)).await;
    // timeout 5s: the lease is 10 s, room for node b to start while it runs.
    let body = config(&probe.url("a"), &["1m"], "5s", 4);
    let a = Node::start(dir.path(), "a", &db.url(), &body).await;
    let http = http();
    let event = ids("expired", 1);
    a.post_ok(&http, &event).await;
    wait_until(
        "node a's attempt in flight",
        Duration::from_secs(15),
        || async { (probe.in_progress("a") >= 1).then_some(()) },
    )
    .await;
    let id = probe.hits()[0].delivery.clone();
    a.process.signal("STOP");
    // A second node, started now, reads the shared queue; the subscription is paused first, so
    // that it does not take the delivery over.
    let paused = http
        .post(a.url("/v1/subscriptions/main/pause"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(paused.is_err(), "node a is stopped and cannot answer");
    let b_body = config(&probe.url("b"), &["1m"], "5s", 4);
    let b = Node::start(dir.path(), "b", &db.url(), &b_body).await;
    let answer = http
        .post(b.url("/v1/subscriptions/main/pause"))
        .send()
        .await
        .expect("pause on b");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        b.delivery(&http, &id).await["state"],
        "in_flight",
        "the lease runs"
    );
    wait_until("the lease to run out", Duration::from_secs(20), || async {
        let d = b.delivery(&http, &id).await;
        (d["state"] == "scheduled").then_some(d)
    })
    .await;
    a.process.signal("CONT");
}

/// The circuit breaker on two nodes: a subscription disabled by one node's failures is
/// disabled on both (neither attempts it), and enabled through the other node its waiting
/// deliveries go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_disabled_by_one_node_is_disabled_on_every_node() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("breaker").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer = up.clone();
    let probe = Probe::start(move |_, _| {
        let status = if answer.load(std::sync::atomic::Ordering::SeqCst) {
            200
        } else {
            503
        };
        (Duration::from_millis(20), status)
    })
    .await;
    let body = |node: &str| {
        delivery_toml(
            &["0s", "0s", "0s", "0s", "0s", "0s", "0s", "0s"],
            "disable_after_failures = 3",
        ) + &subscription_toml(
            "main",
            &probe.url(node),
            SECRET,
            &["*"],
            "max_in_flight = 1",
        )
    };
    let a = Node::start(dir.path(), "a", &db.url(), &body("a")).await;
    let b = Node::start(dir.path(), "b", &db.url(), &body("b")).await;
    let http = http();
    let events = ids("breaker", 4);
    a.post_ok(&http, &events[..2]).await;
    b.post_ok(&http, &events[2..]).await;
    for node in [&a, &b] {
        wait_until(
            &format!("node {} shows the subscription disabled", node.name),
            Duration::from_secs(20),
            || async {
                let (_, s) = node.admin(&http).get("/v1/subscriptions/main").await;
                (s["state"] == "disabled").then_some(s)
            },
        )
        .await;
    }
    // Both know it: from now on neither attempts it (a node may have made one more attempt
    // before its next read of the shared state, a second at most).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let attempted = probe.hits().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        probe.hits().len(),
        attempted,
        "a disabled subscription was attempted"
    );
    assert_eq!(b.unfinished(&http).await, 4, "all four wait, none dead");

    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let enabled = http
        .post(b.url("/v1/subscriptions/main/enable"))
        .send()
        .await
        .expect("enable on b");
    assert_eq!(enabled.status().as_u16(), 200);
    assert_all_arrive(
        &probe,
        &events.iter().cloned().collect(),
        Duration::from_secs(20),
    )
    .await;
    let (_, s) = a.admin(&http).get("/v1/subscriptions/main").await;
    assert_eq!(
        s["state"], "active",
        "node a sees the enable made on b: {s}"
    );
}

/// A rate limit holds across nodes: two nodes with the same `rate_limit = 20` and a shared
/// backlog make 20 attempts a second together, not 20 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_nodes() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("rate").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::start(|_, _| (Duration::ZERO, 200)).await;
    let body = |node: &str| {
        delivery_toml(&["0s"], "")
            + &subscription_toml("main", &probe.url(node), SECRET, &["*"], "rate_limit = 20")
    };
    let a = Node::start(dir.path(), "a", &db.url(), &body("a")).await;
    let b = Node::start(dir.path(), "b", &db.url(), &body("b")).await;
    let http = http();
    let events = ids("rate", 300);
    for chunk in events.chunks(100) {
        a.post_ok(&http, &chunk[..50]).await;
        b.post_ok(&http, &chunk[50..]).await;
    }
    wait_until(
        "arrivals past 10 s after the first",
        Duration::from_secs(30),
        || async {
            let hits = probe.hits();
            let first = hits.iter().map(|h| h.start).min()?;
            let last = hits.iter().map(|h| h.start).max()?;
            (last.duration_since(first) >= Duration::from_secs(10)).then_some(())
        },
    )
    .await;
    let hits = probe.hits();
    let arrivals: Vec<Instant> = hits.iter().map(|h| h.start).collect();
    crate::support::assert_rate(&arrivals, 20.0);
    let by_node = |n: &str| hits.iter().filter(|h| h.node == n).count();
    assert!(
        by_node("a") > 0 && by_node("b") > 0,
        "both nodes took turns: a {}, b {}",
        by_node("a"),
        by_node("b")
    );
}

/// Traces need nothing stored: an attempt made by another node than the one that accepted the
/// event, after that node stopped, joins the event's trace as a child of its span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_made_by_another_node_joins_the_events_trace() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("traces").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let collector = crate::support::otlp::TestCollector::start().await;
    let receiver = crate::support::receiver::TestReceiver::start().await;
    let body = |node: &str| {
        format!(
            "[traces]\notlp_endpoint = {:?}\nservice_name = \"hookd-{node}\"\n\n",
            collector.endpoint()
        ) + &subscription_toml("main", &receiver.url(), SECRET, &["*"], "")
    };
    let http = http();
    let mut a = Node::start(dir.path(), "a", &db.url(), &body("a")).await;
    // Paused, so that node a makes no attempt: it accepts the event and stops.
    let paused = http
        .post(a.url("/v1/subscriptions/main/pause"))
        .send()
        .await
        .expect("pause on a");
    assert_eq!(paused.status().as_u16(), 200);
    a.post_ok(&http, &ids("traced", 1)).await;
    let queued = a.admin(&http).deliveries("status=scheduled").await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let event_id = queued[0]["event_id"]
        .as_str()
        .expect("event_id")
        .to_string();
    a.process.signal("TERM");
    assert!(a.process.wait_exit(Duration::from_secs(20)).await.success());

    let mut b = Node::start(dir.path(), "b", &db.url(), &body("b")).await;
    let resumed = http
        .post(b.url("/v1/subscriptions/main/resume"))
        .send()
        .await
        .expect("resume on b");
    assert_eq!(resumed.status().as_u16(), 200);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    b.process.signal("TERM");
    assert!(b.process.wait_exit(Duration::from_secs(20)).await.success());

    let spans = collector.spans();
    let event = spans
        .iter()
        .find(|s| s.name == "hookd.event")
        .unwrap_or_else(|| panic!("no event span: {spans:?}"));
    let attempt = spans
        .iter()
        .find(|s| s.name == "hookd.attempt")
        .unwrap_or_else(|| panic!("no attempt span: {spans:?}"));
    assert_eq!(
        (event.service.as_str(), attempt.service.as_str()),
        ("hookd-a", "hookd-b")
    );
    assert_eq!(event.attr("hookd.event_id"), event_id);
    assert_eq!(attempt.attr("hookd.event_id"), event_id);
    assert_eq!(attempt.trace_id, event.trace_id);
    assert_eq!(attempt.parent_span_id, event.span_id);
}

/// A node re-reads the subscriptions from the database every second (what other nodes'
/// APIs changed); a change made through its own API in the middle of such a read must not be
/// undone by it: each event goes to the URL set just before it was posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_the_api_is_not_undone_by_the_nodes_own_sync() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("sync_race").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let receivers = [
        crate::support::receiver::TestReceiver::start().await,
        crate::support::receiver::TestReceiver::start().await,
    ];
    let node = Node::start(dir.path(), "a", &db.url(), "").await;
    let http = http();
    let created = http
        .post(node.url("/v1/subscriptions"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({ "id": "moving", "url": receivers[0].url(), "events": ["*"] })
                .to_string(),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    let started = Instant::now();
    let mut n = 0;
    // Over three seconds of syncs, one change and one event after another.
    while started.elapsed() < Duration::from_secs(3) {
        let to = n % 2;
        let changed = http
            .patch(node.url("/v1/subscriptions/moving"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "url": receivers[to].url() }).to_string())
            .send()
            .await
            .expect("patch");
        assert_eq!(changed.status().as_u16(), 200);
        let before = receivers.iter().map(|r| r.count()).collect::<Vec<_>>();
        node.post_ok(&http, &[format!("sync-{n}")]).await;
        receivers[to]
            .wait_for(before[to] + 1, Duration::from_secs(10))
            .await;
        assert_eq!(
            receivers[1 - to].count(),
            before[1 - to],
            "event {n} went to the URL before the change"
        );
        n += 1;
    }
    assert!(n >= 10, "only {n} rounds in three seconds");
}

/// The circuit breaker's probe holds across nodes: once both nodes see the breaker open, the
/// subscription's `max_in_flight` of 1 is counted over both, so no two probes, from whichever
/// nodes, are at the receiver at once; after a success both send at full speed again.
///
/// It caught two faults. A node's health write put its own count of failures in a row in the
/// database, so a node that had seen one failure closed the breaker that another's eight had
/// opened: the counts are merged now (the later success decides, else the greater count). And
/// a node that took a breaker's change in from the database kept the limits of the breaker it
/// had before, waiting for a probe for good: a breaker moved by another node now re-applies the
/// limits (`Shared::sync_from_store`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_on_two_nodes_sends_one_probe_at_a_time() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("probes").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer = up.clone();
    let probe = Probe::start(move |_, _| {
        let up = answer.load(std::sync::atomic::Ordering::SeqCst);
        (Duration::from_millis(100), if up { 200 } else { 503 })
    })
    .await;
    let breaker =
        "breaker_failures = 2\nbreaker_probe_interval = \"200ms\"\ndisable_after_failures = 0";
    let body = |node: &str| {
        delivery_toml(&["0s"; 40], breaker)
            + &subscription_toml(
                "main",
                &probe.url(node),
                SECRET,
                &["*"],
                "max_in_flight = 4",
            )
    };
    let a = Node::start(dir.path(), "a", &db.url(), &body("a")).await;
    let b = Node::start(dir.path(), "b", &db.url(), &body("b")).await;
    let http = http();
    let events = ids("probes", 8);
    a.post_ok(&http, &events[..4]).await;
    b.post_ok(&http, &events[4..]).await;
    wait_breaker(&[&a, &b], &http, "open").await;
    let open = Instant::now();
    // Probes from both nodes, several each: each node claims whenever the other's is done.
    let probed = wait_until_some(Duration::from_secs(20), || async {
        let hits = probe.hits();
        let from = |node: &str| {
            hits.iter()
                .filter(|h| h.start > open && h.node == node && h.end.is_some())
                .count()
        };
        (from("a") >= 3 && from("b") >= 3).then_some(())
    })
    .await;
    let hits = probe.hits();
    let base = hits.iter().map(|h| h.start).min().expect("hits");
    let ms = |t: Instant| t.duration_since(base).as_millis();
    let shown = |hits: &[Hit]| -> Vec<_> {
        hits.iter()
            .map(|h| {
                (
                    h.node.clone(),
                    h.attempt,
                    ms(h.start),
                    h.end.map(ms),
                    h.answered,
                )
            })
            .collect()
    };
    assert!(
        probed.is_some(),
        "no three probes from each node within 20 s of the breaker opening on both (at {} ms); all (node, attempt, start, end, status) in ms: {:?}",
        ms(open),
        shown(&hits)
    );
    for later in hits.iter().filter(|h| h.start > open) {
        let beside = hits
            .iter()
            .filter(|h| h.start < later.start && h.end.is_none_or(|end| end > later.start))
            .count();
        assert_eq!(
            beside,
            0,
            "a probe from node {} (at {} ms) ran beside another request; all (node, attempt, start, end, status) in ms: {:?}",
            later.node,
            ms(later.start),
            shown(&hits)
        );
    }

    // A success closes the breaker: every event arrives, several at once again.
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_all_arrive(
        &probe,
        &events.iter().cloned().collect(),
        Duration::from_secs(20),
    )
    .await;
    let hits = probe.hits();
    let first_success = hits
        .iter()
        .filter(|h| h.answered == Some(200))
        .map(|h| h.start)
        .min()
        .expect("a success");
    let after: Vec<&Hit> = hits.iter().filter(|h| h.start > first_success).collect();
    assert!(
        after.iter().any(|h| after
            .iter()
            .any(|o| o.start < h.start && o.end.is_some_and(|end| end > h.start))),
        "after the success the deliveries still went one at a time: {:?}",
        shown(&hits)
    );
    wait_breaker(&[&a, &b], &http, "closed").await;
}

/// Waits until every one of `nodes` shows the breaker of subscription `main` as `shown`.
async fn wait_breaker(nodes: &[&Node], http: &reqwest::Client, shown: &str) {
    for node in nodes {
        wait_until(
            &format!("node {} shows the breaker {shown}", node.name),
            Duration::from_secs(20),
            || async {
                let (_, s) = node.admin(http).get("/v1/subscriptions/main").await;
                (s["breaker"] == shown).then_some(s)
            },
        )
        .await;
    }
}

// ------------------------------------------------------------------ a node frozen in DDL

/// A TCP proxy to PostgreSQL that freezes a connection as a stopped node would, right after
/// forwarding the first message holding `marker`: the server's answers still flow back, but
/// nothing more that the node sends on that connection reaches the server.
struct FreezingProxy {
    addr: SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingProxy {
    async fn start(upstream: String, marker: &'static [u8]) -> FreezingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = frozen.clone();
        tokio::spawn(async move {
            while let Ok((node, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (mut from_node, mut to_node) = node.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_node).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_node.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        if buf[..n].windows(marker.len()).any(|w| w == marker) {
                            seen.store(true, std::sync::atomic::Ordering::SeqCst);
                            // Both halves stay open, and nothing more goes through.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        FreezingProxy { addr, frozen }
    }
}

/// Issue 26: node b's `GET /v1/deliveries/…` stalled while node a was stopped (SIGSTOP), and b
/// logged that the day's partition could not be made for a lock timeout. Node a had been
/// stopped between creating a day's partition of `hookd_done` and committing it: the creation
/// locks `hookd_done` ACCESS EXCLUSIVE until the commit, and every read of finished deliveries
/// waited for a node that would not send its `COMMIT`. Here node a freezes at that instant for
/// sure (its connection through a proxy that forwards nothing after the `CREATE`), and a read
/// of `hookd_done` must still answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_while_making_a_partition_holds_no_lock_on_finished_deliveries() {
    if pg::unavailable() {
        return;
    }
    let db = pg::create("frozenddl").await;
    let direct = db.url();
    // postgres://user@host:port/db?...: the proxy stands in for host:port.
    let after_at = direct.split_once('@').expect("a URL with a user").1;
    let upstream = after_at.split_once('/').expect("a URL with a database").0;
    let proxy =
        FreezingProxy::start(upstream.to_string(), b"PARTITION OF hookd_done FOR VALUES").await;
    let proxied = direct.replacen(upstream, &proxy.addr.to_string(), 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = Probe::start(|_, _| (Duration::from_millis(1), 200)).await;
    let _a = Node::start(
        dir.path(),
        "a",
        &proxied,
        &config(&probe.url("a"), &["1m"], "5s", 4),
    )
    .await;
    wait_until(
        "node a to send the creation of a day's partition",
        Duration::from_secs(20),
        || async {
            proxy
                .frozen
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        },
    )
    .await;

    let (client, connection) = tokio_postgres::connect(&direct, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .expect("set a statement timeout");
    let started = Instant::now();
    let read = client
        .query_one("SELECT count(*) FROM hookd_done", &[])
        .await;
    assert!(
        read.is_ok(),
        "a read of hookd_done waited for the frozen node: {read:?} after {:?}",
        started.elapsed()
    );
}

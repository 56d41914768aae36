//! The store conformance suite: the behaviour every engine must have, written once against
//! `&dyn Store` and run unchanged against each engine.
//!
//! Each test is an `async fn(&mut Harness)`; [`conformance_tests!`] instantiates every one of
//! them per engine, in a module named after the engine (`conformance::sled::...`). Adding an
//! engine is one line at the bottom: `conformance_tests!(name, open_fn, hands_on = .., server =
//! ..);`, where `open_fn` opens (or creates) that engine's store at a directory and opening the
//! same directory again reaches the same data (an engine that does not live in a directory,
//! such as a database server, derives its database or schema name from it), and `server` says
//! that it needs the PostgreSQL server of `support::pg`.
//!
//! Times are fixed `now_ms` arguments (the store never reads the clock) and nothing sleeps.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hookd::event::{parse_event, AdhocTarget, IngestRules, NewEvent};
use hookd::stats::{Timing, Window};
use hookd::store::embedded::{Backend, EmbeddedStore};
use hookd::store::{
    Attempt, Delivery, DeliveryFilter, DeliveryState, IngestError, Ingested, Limits, Next, Outcome,
    PendingStats, RequeueError, Store, Switch, Target, Timed, ADHOC,
};
use serde_json::{json, Value};

mod audit;
use audit::{
    an_export_carries_the_audit_log_into_the_imported_store,
    audit_entries_are_kept_and_list_newest_first_in_pages,
    audit_listing_filters_by_subscription_owner_actor_and_time,
    erasing_an_owner_from_the_audit_log_removes_exactly_its_entries,
    pruning_the_audit_log_removes_only_entries_before_the_cutoff,
};

/// Opens (or creates) one engine's store at a directory.
type Open = fn(&Path) -> Arc<dyn Store>;

fn open_sled(path: &Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(Backend::Sled, path, 8 << 20).expect("open the sled store"))
}

fn open_fjall(path: &Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(Backend::Fjall, path, 8 << 20).expect("open the fjall store"))
}

/// The PostgreSQL engine in a database of the test's own, named after the directory (so that
/// reopening reaches it); dropped with the directory's harness. Times are the test's, not the
/// database's clock.
fn open_pg(path: &Path) -> Arc<dyn Store> {
    use hookd::store::postgres::{PgOptions, PgStore};
    static DBS: std::sync::Mutex<Vec<(std::path::PathBuf, crate::support::pg::TestDb)>> =
        std::sync::Mutex::new(Vec::new());
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let url = {
                let known = DBS
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, db)| db.url());
                match known {
                    Some(url) => url,
                    None => {
                        let db = crate::support::pg::create("conformance").await;
                        let url = db.url();
                        let mut dbs = DBS.lock().unwrap();
                        // Databases of finished tests (their directory is gone) are dropped.
                        dbs.retain(|(p, _)| p.exists());
                        dbs.push((path.to_path_buf(), db));
                        url
                    }
                }
            };
            let store = PgStore::open(PgOptions {
                url,
                pool_size: 4,
                // The suite's leases end only with an outcome, a release or a restart, as
                // sled's do; lease expiry is tested with several nodes (tests/it/postgres.rs).
                lease: std::time::Duration::from_secs(100 * 365 * 86_400),
                db_clock: false,
            })
            .await
            .expect("open the postgres store");
            store as Arc<dyn Store>
        })
    })
}

/// One test's store, its place, and the way to open it again.
struct Harness {
    dir: tempfile::TempDir,
    open: Open,
    store: Option<Arc<dyn Store>>,
    /// The engine hands a delivered outcome's slot on to the next delivery
    /// (`record_outcome_and_follow`); an engine may instead leave every slot to the claims.
    hands_on: bool,
}

impl Harness {
    fn new(open: Open, hands_on: bool) -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Some(open(dir.path()));
        Harness {
            dir,
            open,
            store,
            hands_on,
        }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("the store is open")
    }

    fn shared(&self) -> Arc<dyn Store> {
        self.store.clone().expect("the store is open")
    }

    /// Closes the store and opens the same place again. Limits are the scheduler's, in
    /// memory: set them again afterwards.
    async fn reopen(&mut self) {
        self.close().await;
        self.store = Some((self.open)(self.dir.path()));
    }

    /// Opens the same place again after the store was dropped without a close (an import
    /// writes around the engine's in-memory state: it is read afresh, as a restart would).
    async fn reopen_closed(&mut self) {
        self.store = Some((self.open)(self.dir.path()));
    }

    async fn close(&mut self) {
        if let Some(store) = self.store.take() {
            store.close().await.expect("close the store");
            assert_eq!(
                Arc::strong_count(&store),
                1,
                "a test still holds the store it closes"
            );
        }
    }
}

/// Instantiates every conformance test for one engine.
macro_rules! conformance_tests {
    ($engine:ident, $open:expr, hands_on = $hands_on:expr, server = $server:expr) => {
        conformance_tests!(@engine $engine, $open, $hands_on, $server, [
            a_repeat_with_the_same_body_is_a_duplicate,
            a_repeat_with_another_body_is_a_conflict_and_rejects_the_whole_batch,
            the_same_request_id_with_another_status_is_another_event,
            a_repeat_inside_one_batch_is_a_duplicate_of_the_first,
            a_conflict_inside_one_batch_stores_nothing,
            an_event_fans_out_to_one_delivery_per_target,
            an_event_with_no_target_is_stored_without_deliveries,
            claims_go_earliest_due_first_across_buckets,
            a_claimed_delivery_is_not_handed_out_twice,
            concurrent_claims_never_share_a_delivery,
            a_bucket_at_its_limit_waits_for_a_free_slot,
            the_global_limit_holds,
            unknown_and_paused_subscriptions_get_nothing,
            per_request_buckets_obey_their_own_limits,
            claim_reports_the_next_due_time,
            a_delivered_outcome_finishes_the_delivery_and_frees_its_slot,
            a_retry_reschedules_the_delivery_and_numbers_its_attempts,
            a_dead_outcome_ends_the_delivery,
            outcomes_update_the_subscription_health,
            release_puts_a_delivery_back_without_an_attempt,
            requeue_brings_a_scheduled_delivery_forward,
            requeue_gives_a_finished_delivery_one_more_attempt,
            requeue_refuses_in_flight_and_unknown_deliveries,
            requeue_dead_filters_by_subscription_and_since,
            pausing_is_durable,
            sweep_removes_old_finished_work_and_keeps_the_rest,
            sweep_removes_at_most_its_limit,
            an_unfinished_attempt_is_due_again_after_a_restart,
            listing_is_newest_first_and_pages_cover_everything_once,
            listing_filters_by_state_subscription_type_and_time,
            pending_stats_follow_each_state_change,
            per_request_and_subscription_buckets_share_one_order,
            a_lowered_limit_holds_back_until_in_flight_drops_below_it,
            releasing_a_delivery_that_is_not_claimed_changes_nothing,
            requeued_deliveries_survive_a_restart,
            requeue_dead_requeues_every_dead_delivery_however_many,
            sweep_removes_an_event_once_its_last_delivery_is_gone,
            sweep_keeps_a_requeued_delivery,
            a_released_delivery_reads_as_due_where_it_was_released_to,
            requeue_brings_a_released_delivery_forward,
            stored_subscriptions_are_created_replaced_deleted_and_durable,
            a_rotation_and_its_finish_are_kept_across_restarts,
            a_request_id_and_status_lead_to_their_event,
            a_signing_key_is_made_once_and_kept,
            a_signed_out_session_is_kept_until_it_expires,
            listing_filters_by_any_of_several_subscriptions,
            an_export_imports_into_a_new_store_whole,
            a_slot_is_handed_on_only_within_the_limits,
            erasing_an_owner_removes_exactly_its_data_and_a_second_erase_finds_nothing,
            erasing_an_owner_with_nothing_stored_counts_zeros,
            end_queued_ends_a_subscriptions_queued_deliveries_only,
            deleting_a_subscription_forgets_its_state,
            deliveries_carry_their_events_owner_and_list_by_it,
            an_export_carries_owners_into_the_imported_store,
            a_finished_delivery_that_does_not_say_when_imports_finished,
            a_timed_listing_carries_each_deliverys_attempt_times,
            a_summary_counts_the_window_and_says_when_it_stopped_at_its_cap,
            audit_entries_are_kept_and_list_newest_first_in_pages,
            audit_listing_filters_by_subscription_owner_actor_and_time,
            pruning_the_audit_log_removes_only_entries_before_the_cutoff,
            an_export_carries_the_audit_log_into_the_imported_store,
            erasing_an_owner_from_the_audit_log_removes_exactly_its_entries,
            an_attempt_keeps_the_receivers_headers_across_a_restart_and_an_export,
        ]);
    };
    (@engine $engine:ident, $open:expr, $hands_on:expr, $server:expr, [$($test:ident),+ $(,)?]) => {
        mod $engine {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if $server && crate::support::pg::unavailable() {
                        return;
                    }
                    let mut h = Harness::new($open, $hands_on);
                    super::$test(&mut h).await;
                    h.close().await;
                }
            )+
        }
    };
}

// sled's claims are local and cheap: it leaves every slot to them.
// `server`: the engine needs the PostgreSQL server (`support::pg`); without one its tests say
// NOT RUN, unless HOOKD_REQUIRE_POSTGRES=1.
conformance_tests!(sled, open_sled, hands_on = true, server = false);
conformance_tests!(fjall, open_fjall, hands_on = true, server = false);
conformance_tests!(postgres, open_pg, hands_on = true, server = true);

// ---------------------------------------------------------------------------------------------
// Builders

/// The time ingest stamps into an event without a `timestamp`.
const ACCEPTED_AT: &str = "2026-01-01T00:00:00Z";

fn parse(value: Value, accepted_at: &str) -> NewEvent {
    let rules = IngestRules {
        allow_adhoc_targets: false,
        allow_http: false,
        guard: hookd::guard::Guard::default(),
    };
    parse_event(value, &rules, accepted_at).expect("a valid event")
}

fn event(request_id: &str, status: &str) -> NewEvent {
    parse(
        json!({"request_id": request_id, "status": status}),
        ACCEPTED_AT,
    )
}

fn event_with_result(request_id: &str, result: Value) -> NewEvent {
    parse(
        json!({"request_id": request_id, "status": "completed", "result": result}),
        ACCEPTED_AT,
    )
}

fn sub(id: &str) -> Target {
    Target {
        subscription: id.to_string(),
        bucket: id.to_string(),
        adhoc: None,
    }
}

fn adhoc_target(host: &str) -> AdhocTarget {
    AdhocTarget {
        url: format!("https://{host}/hook"),
        secret: "per-request-secret".to_string(),
    }
}

fn adhoc(host: &str) -> Target {
    Target {
        subscription: ADHOC.to_string(),
        bucket: format!("adhoc/{host}"),
        adhoc: Some(adhoc_target(host)),
    }
}

/// Generous limits with the given subscriptions configured.
fn limits(subs: &[(&str, usize)]) -> Limits {
    Limits {
        global: 1000,
        adhoc_total: 1000,
        adhoc_per_host: 1000,
        subscriptions: subs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        paused: HashSet::new(),
        rates: Default::default(),
    }
}

fn attempt(number: u32, outcome: Outcome, started_ms: u64) -> Attempt {
    let (status_code, error) = match outcome {
        Outcome::Success => (Some(200), None),
        Outcome::Http5xx => (Some(503), Some("HTTP 503".to_string())),
        Outcome::Http4xx => (Some(410), Some("HTTP 410".to_string())),
        Outcome::Timeout => (None, Some("timed out after 10s".to_string())),
        Outcome::Connect | Outcome::Other => (None, Some("connection refused".to_string())),
    };
    Attempt {
        number,
        started_ms,
        duration_ms: 7,
        outcome,
        status_code,
        error,
        response_excerpt: status_code.map(|c| format!("{{\"status\":{c}}}")),
        // A receiver's answer has headers; no answer, none.
        response_headers: status_code
            .map(|c| {
                vec![
                    ("content-type".to_string(), "application/json".to_string()),
                    ("x-status".to_string(), c.to_string()),
                ]
            })
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn ingest(s: &dyn Store, e: NewEvent, targets: Vec<Target>, now_ms: u64) -> Ingested {
    let mut answers = s.ingest(vec![(e, targets)], now_ms).await.expect("ingest");
    assert_eq!(answers.len(), 1, "one answer per event");
    answers.remove(0)
}

/// Ingests an event to `targets` and returns its delivery ids, in target order.
async fn deliveries_of(
    s: &dyn Store,
    request_id: &str,
    targets: &[&str],
    now_ms: u64,
) -> Vec<String> {
    let targets = targets.iter().map(|t| sub(t)).collect();
    let answer = ingest(s, event(request_id, "completed"), targets, now_ms).await;
    meta_deliveries(s, &answer.event_id).await
}

async fn meta_deliveries(s: &dyn Store, event_id: &str) -> Vec<String> {
    s.event_meta(event_id)
        .await
        .expect("event meta")
        .unwrap_or_else(|| panic!("event {event_id} is stored"))
        .deliveries
}

async fn delivery(s: &dyn Store, id: &str) -> Delivery {
    s.delivery(id)
        .await
        .expect("read delivery")
        .unwrap_or_else(|| panic!("delivery {id} is stored"))
}

async fn claim_ids(s: &dyn Store, now_ms: u64, max: usize) -> Vec<String> {
    let (claimed, _) = s.claim(now_ms, max).await.expect("claim");
    claimed.into_iter().map(|c| c.delivery.id).collect()
}

/// Claims everything due at `now_ms` and checks that `id` is among it.
async fn claim_one(s: &dyn Store, id: &str, now_ms: u64) {
    let ids = claim_ids(s, now_ms, 1000).await;
    assert!(
        ids.iter().any(|c| c == id),
        "{id} not claimed at {now_ms}: {ids:?}"
    );
}

async fn record(s: &dyn Store, id: &str, number: u32, outcome: Outcome, next: Next, now_ms: u64) {
    s.record_outcome(id, attempt(number, outcome, now_ms - 7), next, now_ms)
        .await
        .expect("record outcome");
}

async fn counts(s: &dyn Store) -> (u64, u64) {
    s.counts().await.expect("counts")
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Every page of a listing, in order; checks each page's size.
async fn list_all(s: &dyn Store, filter: &DeliveryFilter, page: usize) -> Vec<Delivery> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let (items, next) = s
            .list_deliveries(filter, cursor.as_deref(), page)
            .await
            .expect("list deliveries");
        assert!(
            items.len() <= page,
            "a page of {} for a limit of {page}",
            items.len()
        );
        all.extend(items);
        match next {
            Some(c) => cursor = Some(c),
            None => return all,
        }
    }
    panic!("the listing did not end after 1000 pages");
}

fn ids(list: &[Delivery]) -> Vec<String> {
    list.iter().map(|d| d.id.clone()).collect()
}

/// Ids newest first: descending.
fn newest_first(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort_by(|a, b| b.cmp(a));
    v
}

async fn stats(s: &dyn Store, now_ms: u64) -> PendingStats {
    s.pending_stats(now_ms).await.expect("pending stats")
}

// ---------------------------------------------------------------------------------------------
// Idempotency

async fn a_repeat_with_the_same_body_is_a_duplicate(h: &mut Harness) {
    let s = h.store();
    let first = ingest(
        s,
        event("job-1", "completed"),
        vec![sub("a"), sub("b")],
        1000,
    )
    .await;
    assert_eq!((first.deliveries, first.duplicate), (2, false));
    let body = s.event_body(&first.event_id).await.unwrap().unwrap();

    // Posted again later: the defaulted timestamp differs, the event does not.
    let again = parse(
        json!({"request_id": "job-1", "status": "completed"}),
        "2026-02-02T00:00:00Z",
    );
    assert_ne!(again.body, event("job-1", "completed").body);
    let repeat = ingest(s, again, vec![sub("a"), sub("b"), sub("c")], 5000).await;
    assert_eq!(
        repeat,
        Ingested {
            event_id: first.event_id.clone(),
            deliveries: 2,
            duplicate: true
        },
        "the first event's answer"
    );
    assert_eq!(counts(s).await, (1, 2), "nothing new stored");
    assert_eq!(meta_deliveries(s, &first.event_id).await.len(), 2);
    assert_eq!(
        s.event_body(&first.event_id).await.unwrap().unwrap(),
        body,
        "the first body is kept"
    );
    s.set_limits(limits(&[("a", 10), ("b", 10), ("c", 10)]));
    assert_eq!(
        claim_ids(s, 9000, 100).await.len(),
        2,
        "no new deliveries to claim"
    );
}

async fn a_repeat_with_another_body_is_a_conflict_and_rejects_the_whole_batch(h: &mut Harness) {
    let s = h.store();
    let first = ingest(
        s,
        event_with_result("job-1", json!({"n": 1})),
        vec![sub("a")],
        1000,
    )
    .await;
    let err = s
        .ingest(
            vec![
                (event("job-2", "completed"), vec![sub("a")]),
                (event_with_result("job-1", json!({"n": 2})), vec![sub("a")]),
                (event("job-3", "completed"), vec![sub("a")]),
            ],
            2000,
        )
        .await
        .expect_err("a conflict");
    match err {
        IngestError::Conflict {
            index,
            request_id,
            status,
            event_id,
        } => {
            assert_eq!(index, 1, "the conflicting event's index in the batch");
            assert_eq!(
                (request_id.as_str(), status.as_str()),
                ("job-1", "completed")
            );
            assert_eq!(event_id, first.event_id, "names the first event");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(counts(s).await, (1, 1), "nothing of the batch is stored");
    let retry = ingest(s, event("job-2", "completed"), vec![sub("a")], 3000).await;
    assert!(
        !retry.duplicate,
        "job-2 was not stored by the rejected batch"
    );
}

async fn the_same_request_id_with_another_status_is_another_event(h: &mut Harness) {
    let s = h.store();
    let started = ingest(s, event("job-1", "started"), vec![sub("a")], 1000).await;
    let done = ingest(s, event("job-1", "completed"), vec![sub("a")], 2000).await;
    assert!(!done.duplicate);
    assert_ne!(started.event_id, done.event_id);
    let meta = s.event_meta(&done.event_id).await.unwrap().unwrap();
    assert_eq!(
        (meta.status.as_str(), meta.event_type.as_str()),
        ("completed", "job.completed")
    );
    assert_eq!(counts(s).await, (2, 2));
}

async fn a_repeat_inside_one_batch_is_a_duplicate_of_the_first(h: &mut Harness) {
    let s = h.store();
    let answers = s
        .ingest(
            vec![
                (event("job-1", "completed"), vec![sub("a")]),
                (event("job-2", "completed"), vec![sub("a"), sub("b")]),
                (event("job-1", "completed"), vec![sub("a"), sub("b")]),
            ],
            1000,
        )
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert!(!answers[0].duplicate && !answers[1].duplicate);
    assert_eq!(
        answers[2],
        Ingested {
            event_id: answers[0].event_id.clone(),
            deliveries: 1,
            duplicate: true
        }
    );
    assert_eq!(counts(s).await, (2, 3));
}

async fn a_conflict_inside_one_batch_stores_nothing(h: &mut Harness) {
    let s = h.store();
    let err = s
        .ingest(
            vec![
                (event_with_result("job-1", json!({"n": 1})), vec![sub("a")]),
                (event_with_result("job-1", json!({"n": 2})), vec![sub("a")]),
            ],
            1000,
        )
        .await
        .expect_err("a conflict");
    assert!(
        matches!(&err, IngestError::Conflict { index: 1, request_id, .. } if request_id == "job-1"),
        "{err:?}"
    );
    assert_eq!(counts(s).await, (0, 0));
    s.set_limits(limits(&[("a", 10)]));
    assert!(claim_ids(s, 1000, 10).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Fan-out

async fn an_event_fans_out_to_one_delivery_per_target(h: &mut Harness) {
    let s = h.store();
    let e = event_with_result("job-1", json!({"text": "héllo", "n": [1, 2.5, null]}));
    let body = e.body.clone();
    let fingerprint = hex::encode(e.fingerprint);
    let answer = ingest(
        s,
        e,
        vec![sub("a"), sub("b"), adhoc("hooks.example.com:443")],
        1000,
    )
    .await;
    assert_eq!((answer.deliveries, answer.duplicate), (3, false));

    let meta = s.event_meta(&answer.event_id).await.unwrap().unwrap();
    assert_eq!(
        (
            meta.request_id.as_str(),
            meta.status.as_str(),
            meta.event_type.as_str()
        ),
        ("job-1", "completed", "job.completed")
    );
    assert_eq!(meta.fingerprint, fingerprint);
    assert_eq!(meta.created_ms, 1000);
    assert_eq!(meta.deliveries.len(), 3);
    assert_eq!(
        meta.deliveries.iter().collect::<HashSet<_>>().len(),
        3,
        "distinct ids"
    );
    assert_eq!(
        &s.event_body(&answer.event_id).await.unwrap().unwrap()[..],
        &body[..],
        "the body byte for byte"
    );

    let mut by_bucket = HashMap::new();
    for id in &meta.deliveries {
        let d = delivery(s, id).await;
        assert_eq!(&d.id, id);
        assert_eq!(d.event_id, answer.event_id);
        assert_eq!(d.event_type, "job.completed");
        assert_eq!(d.state, DeliveryState::Scheduled);
        assert_eq!((d.attempts, d.created_ms, d.due_ms), (0, 1000, Some(1000)));
        assert_eq!((d.finished_ms, &d.last_error), (None, &None));
        by_bucket.insert(d.bucket.clone(), d);
    }
    assert_eq!(by_bucket["a"].subscription, "a");
    assert_eq!(by_bucket["b"].adhoc, None);
    let per_request = &by_bucket["adhoc/hooks.example.com:443"];
    assert_eq!(per_request.subscription, ADHOC);
    assert_eq!(
        per_request.adhoc,
        Some(adhoc_target("hooks.example.com:443"))
    );
    assert_eq!(counts(s).await, (1, 3));

    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    let (claimed, _) = s.claim(1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for c in &claimed {
        assert_eq!(&c.body[..], &body[..], "claimed with the body");
        assert_eq!(c.delivery.state, DeliveryState::InFlight);
    }
}

async fn an_event_with_no_target_is_stored_without_deliveries(h: &mut Harness) {
    let s = h.store();
    let e = event("job-1", "completed");
    let body = e.body.clone();
    let answer = ingest(s, e, vec![], 1000).await;
    assert_eq!((answer.deliveries, answer.duplicate), (0, false));
    let meta = s.event_meta(&answer.event_id).await.unwrap().unwrap();
    assert!(meta.deliveries.is_empty());
    assert_eq!(
        &s.event_body(&answer.event_id).await.unwrap().unwrap()[..],
        &body[..]
    );
    assert_eq!(counts(s).await, (1, 0));
    s.set_limits(limits(&[("a", 10)]));
    assert!(claim_ids(s, 1000, 10).await.is_empty());
    assert_eq!(stats(s, 1000).await, PendingStats::default());
    let repeat = ingest(s, event("job-1", "completed"), vec![sub("a")], 2000).await;
    assert!(repeat.duplicate, "still the same event");
    assert_eq!((repeat.event_id, repeat.deliveries), (answer.event_id, 0));
}

// ---------------------------------------------------------------------------------------------
// Claims

async fn claims_go_earliest_due_first_across_buckets(h: &mut Harness) {
    let s = h.store();
    let b1 = deliveries_of(s, "job-1", &["b"], 1000).await.remove(0);
    let a2 = deliveries_of(s, "job-2", &["a"], 2000).await.remove(0);
    let b3 = deliveries_of(s, "job-3", &["b"], 3000).await.remove(0);
    let a4 = deliveries_of(s, "job-4", &["a"], 4000).await.remove(0);
    let c5 = deliveries_of(s, "job-5", &["c"], 5000).await.remove(0);
    s.set_limits(limits(&[("a", 10), ("b", 10), ("c", 10)]));

    assert!(
        claim_ids(s, 999, 10).await.is_empty(),
        "nothing due before 1000"
    );
    // Two of the four due at 4500: the two earliest.
    assert_eq!(sorted(claim_ids(s, 4500, 2).await), sorted(vec![b1, a2]));
    assert_eq!(claim_ids(s, 4500, 1).await, vec![b3]);
    assert_eq!(claim_ids(s, 4500, 1).await, vec![a4]);
    assert!(
        claim_ids(s, 4500, 10).await.is_empty(),
        "job-5 is not due yet"
    );
    assert_eq!(claim_ids(s, 5000, 10).await, vec![c5]);
}

async fn a_claimed_delivery_is_not_handed_out_twice(h: &mut Harness) {
    let s = h.store();
    let all = deliveries_of(s, "job-1", &["a", "b", "c"], 1000).await;
    s.set_limits(limits(&[("a", 10), ("b", 10), ("c", 10)]));
    let first = claim_ids(s, 1000, 2).await;
    assert_eq!(first.len(), 2);
    let second = claim_ids(s, 1000, 10).await;
    assert_eq!(second.len(), 1);
    assert!(
        claim_ids(s, 1_000_000, 10).await.is_empty(),
        "everything is in flight"
    );
    let mut got = first.clone();
    got.extend(second);
    assert_eq!(sorted(got), sorted(all));
    for id in &first {
        let d = delivery(s, id).await;
        assert_eq!((d.state, d.due_ms), (DeliveryState::InFlight, None));
    }
    // New limits do not hand out what is in flight.
    s.set_limits(limits(&[("a", 20), ("b", 20), ("c", 20)]));
    assert!(claim_ids(s, 1_000_000, 10).await.is_empty());
}

async fn concurrent_claims_never_share_a_delivery(h: &mut Harness) {
    let s = h.store();
    let mut all = Vec::new();
    for i in 0..20 {
        let target = if i % 2 == 0 { "a" } else { "b" };
        all.extend(deliveries_of(s, &format!("job-{i}"), &[target], 1000 + i).await);
    }
    s.set_limits(limits(&[("a", 100), ("b", 100)]));
    // A claim may come back empty while another claim holds a bucket (PostgreSQL's claims take
    // turns per bucket), so the claimers stop once all twenty are out, or at a deadline.
    let out = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = h.shared();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while out.load(std::sync::atomic::Ordering::SeqCst) < 20
                && tokio::time::Instant::now() < deadline
            {
                let ids = claim_ids(&*store, 2000, 3).await;
                out.fetch_add(ids.len(), std::sync::atomic::Ordering::SeqCst);
                if ids.is_empty() {
                    tokio::task::yield_now().await;
                }
                got.extend(ids);
            }
            got
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), 20, "each delivery exactly once: {claimed:?}");
    assert_eq!(sorted(claimed), sorted(all));
}

async fn a_bucket_at_its_limit_waits_for_a_free_slot(h: &mut Harness) {
    let s = h.store();
    let mut a = Vec::new();
    for i in 0..4 {
        a.extend(deliveries_of(s, &format!("job-{i}"), &["a"], 1000 + i).await);
    }
    let b = deliveries_of(s, "job-b", &["b"], 1500).await.remove(0);
    s.set_limits(limits(&[("a", 2), ("b", 5)]));
    let (claimed, next) = s.claim(2000, 10).await.unwrap();
    let got: Vec<String> = claimed.iter().map(|c| c.delivery.id.clone()).collect();
    assert_eq!(sorted(got), sorted(vec![a[0].clone(), a[1].clone(), b]));
    assert_eq!(next, None, "the full bucket's due work is not offered");
    assert!(claim_ids(s, 2000, 10).await.is_empty());

    record(s, &a[0], 1, Outcome::Success, Next::Delivered, 2100).await;
    assert_eq!(
        claim_ids(s, 2100, 10).await,
        vec![a[2].clone()],
        "one slot freed"
    );
    assert!(claim_ids(s, 2100, 10).await.is_empty());
    // A higher limit opens the bucket at once.
    s.set_limits(limits(&[("a", 3), ("b", 5)]));
    assert_eq!(claim_ids(s, 2100, 10).await, vec![a[3].clone()]);
}

async fn the_global_limit_holds(h: &mut Harness) {
    let s = h.store();
    let mut all = Vec::new();
    for i in 0..5 {
        all.extend(deliveries_of(s, &format!("job-{i}"), &["a", "b"], 1000 + i).await);
    }
    s.set_limits(Limits {
        global: 3,
        ..limits(&[("a", 10), ("b", 10)])
    });
    let (claimed, next) = s.claim(2000, 100).await.unwrap();
    assert_eq!(claimed.len(), 3, "the global limit");
    assert_eq!(next, None, "no room: nothing is due for this store");
    assert!(claim_ids(s, 2000, 100).await.is_empty());
    record(
        s,
        &claimed[0].delivery.id,
        1,
        Outcome::Http5xx,
        Next::Dead,
        2100,
    )
    .await;
    assert_eq!(claim_ids(s, 2100, 100).await.len(), 1, "one slot freed");
    assert!(claim_ids(s, 2100, 100).await.is_empty());
}

async fn unknown_and_paused_subscriptions_get_nothing(h: &mut Harness) {
    let s = h.store();
    let a = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    let gone = deliveries_of(s, "job-2", &["gone"], 1000).await.remove(0);
    let per_request = ingest(s, event("job-3", "completed"), vec![adhoc("h:443")], 1000).await;
    let per_request = meta_deliveries(s, &per_request.event_id).await.remove(0);
    let mut l = limits(&[("a", 10)]);
    l.paused.insert("a".to_string());
    l.paused.insert(ADHOC.to_string());
    s.set_limits(l);
    let (claimed, next) = s.claim(2000, 10).await.unwrap();
    assert!(claimed.is_empty(), "paused and unconfigured buckets wait");
    assert_eq!(next, None);

    // Resuming per-request targets only.
    let mut l = limits(&[("a", 10)]);
    l.paused.insert("a".to_string());
    s.set_limits(l);
    assert_eq!(claim_ids(s, 2000, 10).await, vec![per_request]);
    // The subscription resumed, and "gone" configured again.
    s.set_limits(limits(&[("a", 10), ("gone", 10)]));
    assert_eq!(sorted(claim_ids(s, 2000, 10).await), sorted(vec![a, gone]));
}

async fn per_request_buckets_obey_their_own_limits(h: &mut Harness) {
    let s = h.store();
    for i in 0..3 {
        for host in ["one.example:443", "two.example:443"] {
            ingest(
                s,
                event(&format!("job-{host}-{i}"), "completed"),
                vec![adhoc(host)],
                1000 + i,
            )
            .await;
        }
    }
    let a = deliveries_of(s, "job-a", &["a"], 1500).await.remove(0);
    // Per-request buckets need no entry in `subscriptions`.
    s.set_limits(Limits {
        adhoc_total: 3,
        adhoc_per_host: 2,
        ..limits(&[("a", 10)])
    });
    let (claimed, _) = s.claim(2000, 100).await.unwrap();
    let per_request: Vec<&Delivery> = claimed
        .iter()
        .map(|c| &c.delivery)
        .filter(|d| d.subscription == ADHOC)
        .collect();
    assert_eq!(per_request.len(), 3, "adhoc_total: {claimed:?}");
    for host in ["adhoc/one.example:443", "adhoc/two.example:443"] {
        let n = per_request.iter().filter(|d| d.bucket == host).count();
        assert!((1..=2).contains(&n), "adhoc_per_host: {n} to {host}");
    }
    assert!(
        claimed.iter().any(|c| c.delivery.id == a),
        "subscriptions still run while per-request targets are at their limit"
    );
    assert_eq!(claimed.len(), 4);
    assert!(claim_ids(s, 2000, 100).await.is_empty());

    // Finishing one per-request attempt frees one per-request slot.
    let done = per_request[0].id.clone();
    record(s, &done, 1, Outcome::Success, Next::Delivered, 2100).await;
    let next = claim_ids(s, 2100, 100).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(claim_ids(s, 2100, 100).await.is_empty());
}

async fn claim_reports_the_next_due_time(h: &mut Harness) {
    let s = h.store();
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    assert_eq!(s.claim(1000, 10).await.unwrap().1, None, "an empty queue");
    let a = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    let b = deliveries_of(s, "job-2", &["b"], 1200).await.remove(0);
    let (claimed, next) = s.claim(1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(next, Some(1200), "b is due next");
    record(s, &a, 1, Outcome::Http5xx, Next::RetryAt(9000), 1100).await;
    let (claimed, next) = s.claim(1200, 1).await.unwrap();
    assert_eq!(claimed[0].delivery.id, b);
    assert_eq!(next, Some(9000), "a's retry");
    let (claimed, next) = s.claim(5000, 10).await.unwrap();
    assert!(claimed.is_empty());
    assert_eq!(next, Some(9000));
}

// ---------------------------------------------------------------------------------------------
// Outcomes

async fn a_delivered_outcome_finishes_the_delivery_and_frees_its_slot(h: &mut Harness) {
    let s = h.store();
    let ids = deliveries_of(s, "job-1", &["a"], 1000).await;
    let second = deliveries_of(s, "job-2", &["a"], 1001).await;
    s.set_limits(limits(&[("a", 1)]));
    assert_eq!(claim_ids(s, 1500, 10).await, ids);
    assert!(
        claim_ids(s, 1500, 10).await.is_empty(),
        "a's one slot is taken"
    );
    let first = attempt(1, Outcome::Success, 1500);
    s.record_outcome(&ids[0], first.clone(), Next::Delivered, 1600)
        .await
        .unwrap();
    let d = delivery(s, &ids[0]).await;
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!((d.finished_ms, d.due_ms, d.attempts), (Some(1600), None, 1));
    assert_eq!(d.last_error, None);
    assert_eq!(s.attempts(&ids[0]).await.unwrap(), vec![first]);
    assert_eq!(claim_ids(s, 1600, 10).await, second, "the slot is free");
    assert!(
        claim_ids(s, 1_000_000, 10).await.is_empty(),
        "delivered is never due"
    );
    assert_eq!(stats(s, 1600).await.in_flight, 1);
}

async fn a_retry_reschedules_the_delivery_and_numbers_its_attempts(h: &mut Harness) {
    let s = h.store();
    let e = event("job-1", "completed");
    let body = e.body.clone();
    let answer = ingest(s, e, vec![sub("a")], 1000).await;
    let id = meta_deliveries(s, &answer.event_id).await.remove(0);
    s.set_limits(limits(&[("a", 1)]));
    claim_one(s, &id, 1000).await;
    let first = attempt(1, Outcome::Http5xx, 1000);
    s.record_outcome(&id, first.clone(), Next::RetryAt(5000), 1010)
        .await
        .unwrap();
    let d = delivery(s, &id).await;
    assert_eq!((d.state, d.due_ms), (DeliveryState::Scheduled, Some(5000)));
    assert_eq!((d.attempts, d.finished_ms), (1, None));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 503"));
    assert!(
        claim_ids(s, 4999, 10).await.is_empty(),
        "not before its due time"
    );

    let (claimed, _) = s.claim(5000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "claimable at its due time");
    assert_eq!(claimed[0].delivery.id, id);
    assert_eq!(claimed[0].delivery.attempts, 1);
    assert_eq!(&claimed[0].body[..], &body[..]);
    let second = attempt(2, Outcome::Timeout, 5000);
    s.record_outcome(&id, second.clone(), Next::RetryAt(20_000), 15_000)
        .await
        .unwrap();
    claim_one(s, &id, 20_000).await;
    let third = attempt(3, Outcome::Success, 20_000);
    s.record_outcome(&id, third.clone(), Next::Delivered, 20_010)
        .await
        .unwrap();
    assert_eq!(s.attempts(&id).await.unwrap(), vec![first, second, third]);
    let d = delivery(s, &id).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Delivered, 3));
}

async fn a_dead_outcome_ends_the_delivery(h: &mut Harness) {
    let s = h.store();
    let id = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 1)]));
    claim_one(s, &id, 1000).await;
    let last = attempt(1, Outcome::Http4xx, 1000);
    s.record_outcome(&id, last.clone(), Next::Dead, 1010)
        .await
        .unwrap();
    let d = delivery(s, &id).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert_eq!((d.finished_ms, d.due_ms, d.attempts), (Some(1010), None, 1));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 410"));
    assert_eq!(s.attempts(&id).await.unwrap(), vec![last]);
    assert!(
        claim_ids(s, 1_000_000, 10).await.is_empty(),
        "dead is never due"
    );
    assert_eq!(stats(s, 1010).await, PendingStats::default());
}

async fn outcomes_update_the_subscription_health(h: &mut Harness) {
    let s = h.store();
    let ids = deliveries_of(s, "job-1", &["a"], 1000).await;
    s.set_limits(limits(&[("a", 1)]));
    s.switch("a", Switch::Pause).await.unwrap();
    claim_one(s, &ids[0], 1000).await;
    record(s, &ids[0], 1, Outcome::Http5xx, Next::RetryAt(2000), 1500).await;
    claim_one(s, &ids[0], 2000).await;
    record(s, &ids[0], 2, Outcome::Connect, Next::RetryAt(3000), 2500).await;
    let a = s.subscription_states().await.unwrap()["a"].clone();
    assert_eq!(a.consecutive_failures, 2);
    assert_eq!((a.last_failure_ms, a.last_success_ms), (Some(2500), None));
    assert_eq!(a.last_error.as_deref(), Some("connection refused"));
    assert!(a.paused, "health does not touch the pause switch");

    claim_one(s, &ids[0], 3000).await;
    record(s, &ids[0], 3, Outcome::Success, Next::Delivered, 3500).await;
    let a = s.subscription_states().await.unwrap()["a"].clone();
    assert_eq!(a.consecutive_failures, 0);
    assert_eq!(
        (a.last_success_ms, a.last_failure_ms),
        (Some(3500), Some(2500))
    );

    h.reopen().await;
    let after = h.store().subscription_states().await.unwrap()["a"].clone();
    assert_eq!(after, a, "health and pause survive a restart");
}

// ---------------------------------------------------------------------------------------------
// Release and requeue

/// A delivery to `a`, ingested and claimed at 1000, then released to `due_ms`.
async fn claimed_and_released(s: &dyn Store, due_ms: u64) -> String {
    let id = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 1)]));
    claim_one(s, &id, 1000).await;
    s.release(&id, due_ms).await.unwrap();
    id
}

async fn release_puts_a_delivery_back_without_an_attempt(h: &mut Harness) {
    let s = h.store();
    let id = claimed_and_released(s, 7000).await;
    assert!(
        s.attempts(&id).await.unwrap().is_empty(),
        "no attempt recorded"
    );
    let st = stats(s, 1000).await;
    assert_eq!(
        (st.ready, st.scheduled, st.in_flight),
        (0, 1, 0),
        "slot freed, due later"
    );
    assert!(
        claim_ids(s, 6999, 10).await.is_empty(),
        "not before the given due"
    );
    let d = delivery(s, &id).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Scheduled, 0));
    let (claimed, _) = s.claim(7000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.attempts, 0);
}

/// Reads and listings agree with the queue on a released delivery's due time.
async fn a_released_delivery_reads_as_due_where_it_was_released_to(h: &mut Harness) {
    let s = h.store();
    let id = claimed_and_released(s, 7000).await;
    assert!(claim_ids(s, 6999, 10).await.is_empty());
    let d = delivery(s, &id).await;
    assert_eq!(d.due_ms, Some(7000), "due where it was released to");
    let listed = list_all(s, &DeliveryFilter::default(), 10).await;
    assert_eq!(
        listed[0].due_ms,
        Some(7000),
        "listed as due where it was released to"
    );
}

/// `requeue` finds a released delivery where `release` put it, and brings it forward.
async fn requeue_brings_a_released_delivery_forward(h: &mut Harness) {
    let s = h.store();
    let id = claimed_and_released(s, 60_000).await;
    assert_eq!(
        s.requeue(&id, 2000).await.unwrap(),
        DeliveryState::Scheduled
    );
    assert_eq!(
        claim_ids(s, 2000, 10).await,
        vec![id.clone()],
        "requeued: due now"
    );
}

async fn requeue_brings_a_scheduled_delivery_forward(h: &mut Harness) {
    let s = h.store();
    let id = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 1)]));
    claim_one(s, &id, 1000).await;
    record(s, &id, 1, Outcome::Http5xx, Next::RetryAt(60_000), 1100).await;
    assert!(claim_ids(s, 3000, 10).await.is_empty());
    assert_eq!(
        s.requeue(&id, 3000).await.unwrap(),
        DeliveryState::Scheduled
    );
    let d = delivery(s, &id).await;
    assert_eq!(
        (d.state, d.due_ms, d.attempts),
        (DeliveryState::Scheduled, Some(3000), 1)
    );
    assert_eq!(claim_ids(s, 3000, 10).await, vec![id.clone()], "due now");
    record(s, &id, 2, Outcome::Success, Next::Delivered, 3100).await;
    assert!(
        claim_ids(s, 60_000, 10).await.is_empty(),
        "the old due time is gone"
    );
}

async fn requeue_gives_a_finished_delivery_one_more_attempt(h: &mut Harness) {
    let s = h.store();
    let ids = deliveries_of(s, "job-1", &["a", "b"], 1000).await;
    s.set_limits(limits(&[("a", 1), ("b", 1)]));
    assert_eq!(claim_ids(s, 1000, 10).await.len(), 2);
    let dead = &ids[0];
    let delivered = &ids[1];
    record(s, dead, 1, Outcome::Http4xx, Next::Dead, 1100).await;
    record(s, delivered, 1, Outcome::Success, Next::Delivered, 1100).await;

    assert_eq!(s.requeue(dead, 5000).await.unwrap(), DeliveryState::Dead);
    assert_eq!(
        s.requeue(delivered, 5000).await.unwrap(),
        DeliveryState::Delivered
    );
    for id in [dead, delivered] {
        let d = delivery(s, id).await;
        assert_eq!(
            (d.state, d.due_ms, d.finished_ms),
            (DeliveryState::Scheduled, Some(5000), None)
        );
        assert_eq!(d.attempts, 1, "its attempts are kept");
    }
    assert!(claim_ids(s, 4999, 10).await.is_empty());
    assert_eq!(sorted(claim_ids(s, 5000, 10).await), sorted(ids.clone()));
    record(s, dead, 2, Outcome::Success, Next::Delivered, 5100).await;
    let d = delivery(s, dead).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Delivered, 2));
    let numbers: Vec<u32> = s
        .attempts(dead)
        .await
        .unwrap()
        .iter()
        .map(|a| a.number)
        .collect();
    assert_eq!(numbers, vec![1, 2]);
}

async fn requeue_refuses_in_flight_and_unknown_deliveries(h: &mut Harness) {
    let s = h.store();
    let id = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 1)]));
    claim_one(s, &id, 1000).await;
    match s.requeue(&id, 2000).await {
        Err(RequeueError::InFlight(named)) => assert_eq!(named, id),
        other => panic!("expected InFlight, got {other:?}"),
    }
    assert_eq!(
        delivery(s, &id).await.state,
        DeliveryState::InFlight,
        "untouched"
    );
    assert!(
        claim_ids(s, 2000, 10).await.is_empty(),
        "not handed out twice"
    );

    let unknown = "dlv_01JD0000000000000000000000";
    assert!(
        matches!(s.requeue(unknown, 2000).await, Err(RequeueError::NotFound(n)) if n == unknown)
    );
    assert!(matches!(
        s.requeue("nope", 2000).await,
        Err(RequeueError::NotFound(_))
    ));
    assert!(s.delivery(unknown).await.unwrap().is_none());
}

async fn requeue_dead_filters_by_subscription_and_since(h: &mut Harness) {
    let s = h.store();
    let a_old = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    let a_new = deliveries_of(s, "job-2", &["a"], 1000).await.remove(0);
    let a_ok = deliveries_of(s, "job-3", &["a"], 1000).await.remove(0);
    let b_dead = deliveries_of(s, "job-4", &["b"], 1000).await.remove(0);
    let b_waiting = deliveries_of(s, "job-5", &["b"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    assert_eq!(claim_ids(s, 1000, 10).await.len(), 5);
    record(s, &a_old, 1, Outcome::Http5xx, Next::Dead, 2000).await;
    record(s, &a_new, 1, Outcome::Http5xx, Next::Dead, 3000).await;
    record(s, &a_ok, 1, Outcome::Success, Next::Delivered, 3000).await;
    record(s, &b_dead, 1, Outcome::Http5xx, Next::Dead, 2500).await;
    record(
        s,
        &b_waiting,
        1,
        Outcome::Http5xx,
        Next::RetryAt(90_000),
        2500,
    )
    .await;

    assert_eq!(s.requeue_dead(Some("a"), 2500, 4000).await.unwrap(), 1);
    assert_eq!(delivery(s, &a_new).await.state, DeliveryState::Scheduled);
    assert_eq!(
        delivery(s, &a_old).await.state,
        DeliveryState::Dead,
        "finished before since"
    );
    assert_eq!(
        delivery(s, &b_dead).await.state,
        DeliveryState::Dead,
        "another subscription"
    );
    assert_eq!(s.requeue_dead(Some("c"), 0, 4000).await.unwrap(), 0);
    assert_eq!(s.requeue_dead(Some("b"), 2501, 4000).await.unwrap(), 0);
    assert_eq!(
        s.requeue_dead(Some("b"), 2500, 4000).await.unwrap(),
        1,
        "since is inclusive"
    );
    assert_eq!(s.requeue_dead(None, 0, 4000).await.unwrap(), 1);
    assert_eq!(
        s.requeue_dead(None, 0, 4000).await.unwrap(),
        0,
        "nothing dead is left"
    );
    assert_eq!(
        delivery(s, &a_ok).await.state,
        DeliveryState::Delivered,
        "only dead ones"
    );
    for id in [&a_old, &a_new, &b_dead] {
        let d = delivery(s, id).await;
        assert_eq!(
            (d.state, d.due_ms, d.finished_ms),
            (DeliveryState::Scheduled, Some(4000), None)
        );
    }
    assert_eq!(
        sorted(claim_ids(s, 4000, 10).await),
        sorted(vec![a_old, a_new, b_dead]),
        "due now; b's waiting retry is not"
    );
}

// ---------------------------------------------------------------------------------------------
// Pause

async fn pausing_is_durable(h: &mut Harness) {
    let s = h.store();
    assert!(
        s.subscription_states().await.unwrap().is_empty(),
        "a new store"
    );
    s.switch("a", Switch::Pause).await.unwrap();
    s.switch("b", Switch::Pause).await.unwrap();
    s.switch("b", Switch::Resume).await.unwrap();
    let states = s.subscription_states().await.unwrap();
    assert!(states["a"].paused);
    assert!(!states["b"].paused);
    h.reopen().await;
    let states = h.store().subscription_states().await.unwrap();
    assert!(states["a"].paused, "survives a restart: {states:?}");
    assert!(!states.get("b").is_some_and(|b| b.paused));
    h.store().switch("a", Switch::Resume).await.unwrap();
    h.reopen().await;
    assert!(!h.store().subscription_states().await.unwrap()["a"].paused);
}

async fn stored_subscriptions_are_created_replaced_deleted_and_durable(h: &mut Harness) {
    use hookd::store::StoredSubscription;
    let s = h.store();
    assert!(
        s.stored_subscriptions().await.unwrap().is_empty(),
        "a new store"
    );
    let sub = |id: &str, owner: Option<&str>, url: &str| StoredSubscription {
        id: id.to_string(),
        owner: owner.map(str::to_string),
        toml: format!(
            "[[subscription]]\nid = {id:?}\nurl = {url:?}\nsecret = \"s\"\nevents = [\"*\"]\n"
        ),
        created_ms: 1_000,
        updated_ms: 1_000,
    };
    s.put_subscription(sub("a", Some("cust-1"), "https://a.example/hook"))
        .await
        .unwrap();
    s.put_subscription(sub("b", None, "https://b.example/hook"))
        .await
        .unwrap();
    // A put with the same id replaces.
    let mut replaced = sub("a", Some("cust-1"), "https://a2.example/hook");
    replaced.updated_ms = 2_000;
    s.put_subscription(replaced.clone()).await.unwrap();
    let mut all = s.stored_subscriptions().await.unwrap();
    all.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        all,
        vec![replaced.clone(), sub("b", None, "https://b.example/hook")]
    );
    assert!(s.delete_subscription("b").await.unwrap());
    assert!(!s.delete_subscription("b").await.unwrap(), "already gone");
    h.reopen().await;
    assert_eq!(
        h.store().stored_subscriptions().await.unwrap(),
        vec![replaced],
        "survives a restart"
    );
}

/// A rotation is part of a stored subscription's table (`previous_secret` and its expiry); its
/// finish removes them. Both are kept as written, across restarts, and what is read back signs
/// `X-Abstrakt-Signature` with the previous secret until the finish, the new one after it.
async fn a_rotation_and_its_finish_are_kept_across_restarts(h: &mut Harness) {
    use hookd::store::StoredSubscription;
    let table = |rotation: &str| {
        StoredSubscription {
        id: "rotating".to_string(),
        owner: Some("cust-1".to_string()),
        toml: format!(
            "[[subscription]]\nid = \"rotating\"\nurl = \"https://r.example/hook\"\nsecret = \"new\"\nevents = [\"*\"]\n{rotation}"
        ),
        created_ms: 1_000,
        updated_ms: 2_000,
    }
    };
    let config = hookd::config::Config::from_toml("", "conformance.toml").expect("defaults");
    let abstrakt_key = |stored: &[StoredSubscription]| {
        let (with, skipped) = config.with_stored(stored);
        assert!(skipped.is_empty(), "{skipped:?}");
        let keys = with
            .subscription("rotating")
            .expect("in force")
            .signing_keys(5_000);
        keys.abstrakt.expect("the Abstrakt header is signed")
    };
    let rotated =
        table("previous_secret = \"old\"\nprevious_secret_expires = \"2100-01-01T00:00:00Z\"\n");
    h.store().put_subscription(rotated.clone()).await.unwrap();
    h.reopen().await;
    let read = h.store().stored_subscriptions().await.unwrap();
    assert_eq!(read, vec![rotated], "the rotation survives a restart");
    assert_eq!(
        abstrakt_key(&read),
        "old",
        "the previous secret still signs"
    );

    let finished = table("");
    h.store().put_subscription(finished.clone()).await.unwrap();
    h.reopen().await;
    let read = h.store().stored_subscriptions().await.unwrap();
    assert_eq!(read, vec![finished], "the finish survives a restart");
    assert_eq!(abstrakt_key(&read), "new", "the new secret alone signs");
}

// ---------------------------------------------------------------------------------------------
// Retention

async fn sweep_removes_old_finished_work_and_keeps_the_rest(h: &mut Harness) {
    let s = h.store();
    let old_done = ingest(s, event("job-1", "completed"), vec![sub("a")], 1000).await;
    let old_done_id = meta_deliveries(s, &old_done.event_id).await.remove(0);
    let mixed = ingest(
        s,
        event("job-2", "completed"),
        vec![sub("a"), sub("b")],
        1000,
    )
    .await;
    let mixed_ids = meta_deliveries(s, &mixed.event_id).await;
    let recent = ingest(s, event("job-3", "completed"), vec![sub("a")], 1000).await;
    let recent_id = meta_deliveries(s, &recent.event_id).await.remove(0);
    let old_empty = ingest(s, event("job-4", "completed"), vec![], 1000).await;
    let new_empty = ingest(s, event("job-5", "completed"), vec![], 9000).await;
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    assert_eq!(claim_ids(s, 1000, 10).await.len(), 4);
    record(s, &old_done_id, 1, Outcome::Success, Next::Delivered, 2000).await;
    record(s, &mixed_ids[0], 1, Outcome::Http4xx, Next::Dead, 2000).await;
    record(
        s,
        &mixed_ids[1],
        1,
        Outcome::Http5xx,
        Next::RetryAt(3000),
        2000,
    )
    .await;
    record(s, &recent_id, 1, Outcome::Success, Next::Delivered, 9000).await;
    assert_eq!(counts(s).await, (5, 4));

    assert!(s.sweep(5000, 1000).await.unwrap() > 0);
    assert_eq!(
        counts(s).await,
        (3, 2),
        "job-1, job-4 and two deliveries are gone"
    );
    assert!(s.delivery(&old_done_id).await.unwrap().is_none());
    assert!(s.attempts(&old_done_id).await.unwrap().is_empty());
    assert!(s.event_meta(&old_done.event_id).await.unwrap().is_none());
    assert!(s.event_body(&old_done.event_id).await.unwrap().is_none());
    assert!(s.event_meta(&old_empty.event_id).await.unwrap().is_none());
    assert!(
        s.delivery(&mixed_ids[0]).await.unwrap().is_none(),
        "dead and old"
    );
    assert!(
        s.event_meta(&mixed.event_id).await.unwrap().is_some(),
        "one delivery is unfinished"
    );
    assert!(s.event_body(&mixed.event_id).await.unwrap().is_some());
    assert_eq!(
        delivery(s, &mixed_ids[1]).await.state,
        DeliveryState::Scheduled
    );
    assert_eq!(
        delivery(s, &recent_id).await.state,
        DeliveryState::Delivered,
        "recent"
    );
    assert!(s.event_meta(&recent.event_id).await.unwrap().is_some());
    assert!(s.event_meta(&new_empty.event_id).await.unwrap().is_some());
    assert_eq!(
        s.sweep(5000, 1000).await.unwrap(),
        0,
        "nothing more to remove"
    );

    // The unfinished delivery is still delivered, with its body.
    let (claimed, _) = s.claim(3000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, mixed_ids[1]);
    assert_eq!(
        claimed[0].body,
        s.event_body(&mixed.event_id).await.unwrap().unwrap()
    );

    // A swept event's (request_id, status) is free again: a new event, not a repeat.
    let again = ingest(s, event("job-1", "completed"), vec![sub("a")], 10_000).await;
    assert!(!again.duplicate);
    assert_ne!(again.event_id, old_done.event_id);
    assert!(
        s.event_meta(&old_done.event_id).await.unwrap().is_none(),
        "the swept id does not name the new event"
    );
    assert_eq!(counts(s).await, (4, 3));
}

async fn sweep_removes_at_most_its_limit(h: &mut Harness) {
    let s = h.store();
    for i in 0..5 {
        deliveries_of(s, &format!("job-{i}"), &["a"], 1000 + i).await;
    }
    s.set_limits(limits(&[("a", 10)]));
    for id in claim_ids(s, 2000, 10).await {
        record(s, &id, 1, Outcome::Success, Next::Delivered, 2000).await;
    }
    assert_eq!(counts(s).await, (5, 5));
    assert!(s.sweep(3000, 2).await.unwrap() > 0);
    let (_, deliveries) = counts(s).await;
    assert_eq!(deliveries, 3, "two deliveries per sweep of limit 2");
    for _ in 0..10 {
        if s.sweep(3000, 2).await.unwrap() == 0 {
            break;
        }
    }
    assert_eq!(counts(s).await, (0, 0), "repeated sweeps remove everything");
}

// ---------------------------------------------------------------------------------------------
// Recovery

async fn an_unfinished_attempt_is_due_again_after_a_restart(h: &mut Harness) {
    let s = h.store();
    let e = event_with_result("job-1", json!({"x": 1}));
    let body = e.body.clone();
    let answer = ingest(s, e, vec![sub("a"), sub("b"), sub("c")], 1000).await;
    let ids = meta_deliveries(s, &answer.event_id).await;
    s.set_limits(limits(&[("a", 10), ("b", 10), ("c", 10)]));
    assert_eq!(sorted(claim_ids(s, 1000, 10).await), sorted(ids.clone()));
    let queued = deliveries_of(s, "job-2", &["a"], 1000).await.remove(0);
    let delivered = attempt(1, Outcome::Success, 1000);
    s.record_outcome(&ids[0], delivered.clone(), Next::Delivered, 1100)
        .await
        .unwrap();
    record(s, &ids[1], 1, Outcome::Http5xx, Next::RetryAt(60_000), 1100).await;
    // ids[2] stays in flight: the process stops before its outcome.

    h.reopen().await;
    let s = h.store();
    s.set_limits(limits(&[("a", 10), ("b", 10), ("c", 10)]));
    assert_eq!(counts(s).await, (2, 4), "nothing lost");
    let st = stats(s, 1100).await;
    assert_eq!((st.ready, st.scheduled, st.in_flight), (2, 1, 0));
    assert_eq!(delivery(s, &ids[2]).await.state, DeliveryState::Scheduled);
    let (claimed, _) = s.claim(1100, 10).await.unwrap();
    let got: Vec<String> = claimed.iter().map(|c| c.delivery.id.clone()).collect();
    assert_eq!(
        sorted(got),
        sorted(vec![ids[2].clone(), queued]),
        "at least once"
    );
    let again = claimed.iter().find(|c| c.delivery.id == ids[2]).unwrap();
    assert_eq!(&again.body[..], &body[..]);
    assert_eq!(again.delivery.attempts, 0);

    let d = delivery(s, &ids[0]).await;
    assert_eq!(
        (d.state, d.finished_ms),
        (DeliveryState::Delivered, Some(1100))
    );
    assert_eq!(s.attempts(&ids[0]).await.unwrap(), vec![delivered]);
    let d = delivery(s, &ids[1]).await;
    assert_eq!(
        (d.state, d.due_ms, d.attempts),
        (DeliveryState::Scheduled, Some(60_000), 1)
    );
    assert!(
        claim_ids(s, 59_999, 10).await.is_empty(),
        "the retry keeps its due time"
    );
    assert_eq!(claim_ids(s, 60_000, 10).await, vec![ids[1].clone()]);
    assert!(
        ingest(
            s,
            event_with_result("job-1", json!({"x": 1})),
            vec![sub("a")],
            70_000
        )
        .await
        .duplicate,
        "the idempotency record survives"
    );
}

// ---------------------------------------------------------------------------------------------
// Listing

/// Seven deliveries in every state, created at distinct times:
/// `[e1a, e1b, e2a, e3b, e4a, e4b, e5a]` (eN at N000 ms; e2 and e4 are `job.failed`).
/// e1a is delivered, e2a dead, e4a waits for a retry at 50 000, e5a is in flight, the b ones are
/// queued.
async fn listing_fixture(s: &dyn Store) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, status, targets) in [
        (1u64, "completed", vec!["a", "b"]),
        (2, "failed", vec!["a"]),
        (3, "completed", vec!["b"]),
        (4, "failed", vec!["a", "b"]),
        (5, "completed", vec!["a"]),
    ] {
        let targets = targets.into_iter().map(sub).collect();
        let answer = ingest(s, event(&format!("job-{n}"), status), targets, n * 1000).await;
        let mut d = meta_deliveries(s, &answer.event_id).await;
        let mut subs = Vec::new();
        for id in &d {
            subs.push(delivery(s, id).await.subscription);
        }
        let mut pairs: Vec<(String, String)> = subs.into_iter().zip(d.drain(..)).collect();
        pairs.sort();
        ids.extend(pairs.into_iter().map(|(_, id)| id));
    }
    s.set_limits(limits(&[("a", 100)]));
    assert_eq!(claim_ids(s, 9000, 100).await.len(), 4);
    record(s, &ids[0], 1, Outcome::Success, Next::Delivered, 9000).await;
    record(s, &ids[2], 1, Outcome::Http4xx, Next::Dead, 9000).await;
    record(s, &ids[4], 1, Outcome::Http5xx, Next::RetryAt(50_000), 9000).await;
    ids
}

async fn listing_is_newest_first_and_pages_cover_everything_once(h: &mut Harness) {
    let s = h.store();
    let fixture = listing_fixture(s).await;
    let everything = DeliveryFilter::default();
    let all = list_all(s, &everything, 100).await;
    assert_eq!(ids(&all), newest_first(&fixture.iter().collect::<Vec<_>>()));
    for pair in all.windows(2) {
        assert!(pair[0].created_ms >= pair[1].created_ms, "newest first");
    }
    for page in [1, 2, 3, 6, 7] {
        let paged = list_all(s, &everything, page).await;
        assert_eq!(
            ids(&paged),
            ids(&all),
            "pages of {page} cover everything exactly once"
        );
    }
    // What a listing says of each delivery is what the store says of it.
    for d in &all {
        let direct = delivery(s, &d.id).await;
        assert_eq!(
            (
                d.state,
                d.attempts,
                d.due_ms,
                d.finished_ms,
                &d.subscription,
                &d.event_type
            ),
            (
                direct.state,
                direct.attempts,
                direct.due_ms,
                direct.finished_ms,
                &direct.subscription,
                &direct.event_type
            ),
            "{}",
            d.id
        );
    }
    let in_flight: Vec<&Delivery> = all
        .iter()
        .filter(|d| d.state == DeliveryState::InFlight)
        .collect();
    assert_eq!(in_flight.len(), 1);
    assert_eq!(
        in_flight[0].id, fixture[6],
        "a claimed delivery lists as in flight"
    );
}

/// Every page of a timed listing, in order.
async fn list_all_timed(s: &dyn Store, filter: &DeliveryFilter, page: usize) -> Vec<Timed> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let (items, next) = s
            .list_timed(filter, cursor.as_deref(), page)
            .await
            .expect("list timed deliveries");
        assert!(items.len() <= page, "a page of {} for {page}", items.len());
        all.extend(items);
        match next {
            Some(c) => cursor = Some(c),
            None => return all,
        }
    }
    panic!("the timed listing did not end after 1000 pages");
}

async fn a_timed_listing_carries_each_deliverys_attempt_times(h: &mut Harness) {
    let s = h.store();
    let d = listing_fixture(s).await;
    let everything = DeliveryFilter::default();
    let listed = list_all(s, &everything, 100).await;
    for page in [1, 3, 100] {
        let timed = list_all_timed(s, &everything, page).await;
        let deliveries: Vec<Delivery> = timed.iter().map(|t| t.delivery.clone()).collect();
        assert_eq!(ids(&deliveries), ids(&listed), "pages of {page}");
        for (t, l) in timed.iter().zip(&listed) {
            assert_eq!(
                (t.delivery.state, t.delivery.attempts),
                (l.state, l.attempts)
            );
        }
    }
    let timed = list_all_timed(s, &everything, 100).await;
    let of = |id: &String| {
        timed
            .iter()
            .find(|t| &t.delivery.id == id)
            .map(|t| t.attempts.clone())
            .unwrap_or_else(|| panic!("{id} is listed"))
    };
    let at = |success| {
        vec![Timing {
            started_ms: 9000 - 7,
            duration_ms: 7,
            success,
        }]
    };
    assert_eq!(of(&d[0]), at(true), "delivered");
    assert_eq!(of(&d[2]), at(false), "dead");
    assert_eq!(of(&d[4]), at(false), "waiting for a retry");
    for untried in [&d[1], &d[3], &d[5], &d[6]] {
        assert_eq!(of(untried), Vec::new(), "{untried} has no attempt yet");
    }
    // The filters are the listing's.
    let dead = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        ..Default::default()
    };
    let only: Vec<String> = list_all_timed(s, &dead, 10)
        .await
        .into_iter()
        .map(|t| t.delivery.id)
        .collect();
    assert_eq!(only, vec![d[2].clone()]);
}

async fn a_summary_counts_the_window_and_says_when_it_stopped_at_its_cap(h: &mut Harness) {
    let s = h.store();
    listing_fixture(s).await;
    // The fixture's deliveries were made at 1 000 to 5 000 ms: the first hour's window.
    let everything = DeliveryFilter::default();
    let all = s
        .summary(&everything, Window::Hour, 9_000, 100)
        .await
        .expect("summary");
    assert!(!all.sampled, "7 deliveries, read whole");
    let t = &all.total;
    assert_eq!(
        (
            t.deliveries,
            t.delivered,
            t.dead,
            t.attempts,
            t.failed_attempts
        ),
        (7, 1, 1, 3, 2)
    );
    assert_eq!((t.p50_ms, t.p95_ms), (Some(7), Some(7)));
    assert_eq!(all.buckets[0].deliveries, 7);
    assert_eq!(all.subscriptions["a"].success_percent, Some(50.0));
    assert_eq!(all.subscriptions["b"].success_percent, None);
    // At most 3 read: the newest 3 (e5a, e4b, e4a), and it says it stopped short.
    let capped = s
        .summary(&everything, Window::Hour, 9_000, 3)
        .await
        .expect("capped summary");
    assert!(capped.sampled);
    assert_eq!(
        (capped.total.deliveries, capped.total.attempts),
        (3, 1),
        "{capped:?}"
    );
    // The filter is the listing's: subscription b has no attempt yet.
    let b = DeliveryFilter {
        subscription: Some("b".to_string()),
        ..Default::default()
    };
    let only_b = s.summary(&b, Window::Day, 9_000, 100).await.expect("b");
    assert_eq!((only_b.total.deliveries, only_b.total.attempts), (3, 0));
    assert_eq!(only_b.buckets.len(), 24);
    // Deliveries made before the window's start are not read.
    let later = s
        .summary(&everything, Window::Hour, 2 * 3_600_000, 100)
        .await
        .expect("a later hour");
    assert_eq!(later.total.deliveries, 0);
}

async fn listing_filters_by_state_subscription_type_and_time(h: &mut Harness) {
    let s = h.store();
    let d = listing_fixture(s).await;
    let (e1a, e1b, e2a, e3b, e4a, e4b, e5a) = (&d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6]);
    let cases: Vec<(DeliveryFilter, Vec<&String>)> = vec![
        (
            DeliveryFilter {
                state: Some(DeliveryState::Scheduled),
                ..Default::default()
            },
            vec![e1b, e3b, e4a, e4b],
        ),
        (
            DeliveryFilter {
                state: Some(DeliveryState::InFlight),
                ..Default::default()
            },
            vec![e5a],
        ),
        (
            DeliveryFilter {
                state: Some(DeliveryState::Delivered),
                ..Default::default()
            },
            vec![e1a],
        ),
        (
            DeliveryFilter {
                state: Some(DeliveryState::Dead),
                ..Default::default()
            },
            vec![e2a],
        ),
        (
            DeliveryFilter {
                subscription: Some("b".into()),
                ..Default::default()
            },
            vec![e1b, e3b, e4b],
        ),
        (
            DeliveryFilter {
                event_type: Some("job.failed".into()),
                ..Default::default()
            },
            vec![e2a, e4a, e4b],
        ),
        (
            DeliveryFilter {
                since_ms: Some(2000),
                until_ms: Some(4000),
                ..Default::default()
            },
            vec![e2a, e3b],
        ),
        (
            DeliveryFilter {
                since_ms: Some(4000),
                ..Default::default()
            },
            vec![e4a, e4b, e5a],
        ),
        (
            DeliveryFilter {
                until_ms: Some(1001),
                ..Default::default()
            },
            vec![e1a, e1b],
        ),
        (
            DeliveryFilter {
                subscription: Some("a".into()),
                event_type: Some("job.completed".into()),
                ..Default::default()
            },
            vec![e1a, e5a],
        ),
        (
            DeliveryFilter {
                subscription: Some("nobody".into()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        for page in [1, 2, 100] {
            let got = list_all(s, &filter, page).await;
            assert_eq!(
                ids(&got),
                newest_first(&expected),
                "{filter:?}, pages of {page}"
            );
            assert!(got.iter().all(|d| filter.matches(d)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pending statistics

async fn pending_stats_follow_each_state_change(h: &mut Harness) {
    let s = h.store();
    let a = deliveries_of(s, "job-1", &["a", "b"], 1000).await;
    let c = deliveries_of(s, "job-2", &["c"], 2000).await.remove(0);
    let expect = |ready, scheduled, in_flight, oldest| PendingStats {
        ready,
        scheduled,
        in_flight,
        oldest_created_ms: oldest,
    };
    assert_eq!(
        stats(s, 1500).await,
        expect(2, 1, 0, Some(1000)),
        "c is due at 2000"
    );
    assert_eq!(stats(s, 2000).await, expect(3, 0, 0, Some(1000)));

    s.set_limits(limits(&[("a", 10), ("b", 10), ("c", 10)]));
    let first = claim_ids(s, 2000, 1).await.remove(0);
    assert!(a.contains(&first));
    assert_eq!(stats(s, 2000).await, expect(2, 0, 1, Some(1000)));

    record(s, &first, 1, Outcome::Http5xx, Next::RetryAt(10_000), 2100).await;
    assert_eq!(stats(s, 2100).await, expect(2, 1, 0, Some(1000)));
    assert_eq!(stats(s, 10_000).await, expect(3, 0, 0, Some(1000)));

    let claimed = claim_ids(s, 2100, 10).await;
    assert_eq!(claimed.len(), 2);
    assert_eq!(stats(s, 2100).await, expect(0, 1, 2, Some(1000)));
    for id in &claimed {
        record(s, id, 1, Outcome::Success, Next::Delivered, 2200).await;
    }
    let other = a.iter().find(|id| **id != first).unwrap();
    assert!(claimed.contains(other) && claimed.contains(&c));
    assert_eq!(
        stats(s, 2200).await,
        expect(0, 1, 0, Some(1000)),
        "first is still pending"
    );

    claim_one(s, &first, 10_000).await;
    record(s, &first, 2, Outcome::Http5xx, Next::Dead, 10_100).await;
    assert_eq!(stats(s, 10_100).await, expect(0, 0, 0, None));
    s.requeue(&c, 20_000).await.unwrap();
    assert_eq!(
        stats(s, 20_000).await,
        expect(1, 0, 0, Some(2000)),
        "requeued: pending again"
    );
}

// ---------------------------------------------------------------------------------------------
// Further claims, release, requeue and retention cases

async fn per_request_and_subscription_buckets_share_one_order(h: &mut Harness) {
    let s = h.store();
    let first = ingest(s, event("job-1", "completed"), vec![adhoc("h:443")], 1000).await;
    let first = meta_deliveries(s, &first.event_id).await.remove(0);
    let second = deliveries_of(s, "job-2", &["a"], 2000).await.remove(0);
    let third = ingest(s, event("job-3", "completed"), vec![adhoc("g:443")], 3000).await;
    let third = meta_deliveries(s, &third.event_id).await.remove(0);
    s.set_limits(limits(&[("a", 10)]));
    assert_eq!(claim_ids(s, 5000, 1).await, vec![first]);
    assert_eq!(claim_ids(s, 5000, 1).await, vec![second]);
    assert_eq!(claim_ids(s, 5000, 1).await, vec![third]);
}

async fn a_lowered_limit_holds_back_until_in_flight_drops_below_it(h: &mut Harness) {
    let s = h.store();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.extend(deliveries_of(s, &format!("job-{i}"), &["a"], 1000 + i).await);
    }
    s.set_limits(limits(&[("a", 3)]));
    let claimed = claim_ids(s, 2000, 10).await;
    assert_eq!(claimed.len(), 3);
    s.set_limits(limits(&[("a", 1)]));
    record(s, &claimed[0], 1, Outcome::Success, Next::Delivered, 2100).await;
    assert!(
        claim_ids(s, 2100, 10).await.is_empty(),
        "two in flight, limit one"
    );
    record(s, &claimed[1], 1, Outcome::Success, Next::Delivered, 2200).await;
    assert!(
        claim_ids(s, 2200, 10).await.is_empty(),
        "one in flight, limit one"
    );
    record(s, &claimed[2], 1, Outcome::Success, Next::Delivered, 2300).await;
    assert_eq!(claim_ids(s, 2300, 10).await.len(), 1);
}

/// Records a delivered outcome of `id` and returns the delivery handed on in its slot, checked
/// to be in flight, and not claimable again.
async fn deliver_and_follow(s: &dyn Store, id: &str, now_ms: u64) -> Option<String> {
    let attempt = attempt(1, Outcome::Success, now_ms - 7);
    let next = s
        .record_outcome_and_follow(id, attempt, Next::Delivered, now_ms)
        .await
        .expect("record outcome");
    // An engine may answer before the outcome is applied (the embedded engines free the slot
    // as the outcome goes to their writer): it reads as delivered within its writer's round.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let state = delivery(s, id).await.state;
        if state == DeliveryState::Delivered {
            break;
        }
        assert!(
            state == DeliveryState::InFlight && tokio::time::Instant::now() < deadline,
            "{id}: {state:?} after a delivered outcome"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let next = next?;
    assert_eq!(
        delivery(s, &next.delivery.id).await.state,
        DeliveryState::InFlight,
        "a delivery handed on is in flight"
    );
    assert_eq!(
        next.body,
        Bytes::from(event_body(s, &next.delivery.event_id).await)
    );
    Some(next.delivery.id)
}

async fn event_body(s: &dyn Store, event_id: &str) -> Vec<u8> {
    s.event_body(event_id)
        .await
        .expect("read the event body")
        .expect("the event is stored")
        .to_vec()
}

async fn a_slot_is_handed_on_only_within_the_limits(h: &mut Harness) {
    let hands_on = h.hands_on;
    let s = h.store();
    let mut a = Vec::new();
    for i in 0..6 {
        a.extend(deliveries_of(s, &format!("job-{i}"), &["a"], 1000 + i).await);
    }
    let b: Vec<String> = [
        deliveries_of(s, "job-b0", &["b"], 1100).await.remove(0),
        deliveries_of(s, "job-b1", &["b"], 1101).await.remove(0),
    ]
    .into();
    s.set_limits(limits(&[("a", 2), ("b", 1)]));
    assert_eq!(
        sorted(claim_ids(s, 2000, 10).await),
        sorted(vec![a[0].clone(), a[1].clone(), b[0].clone()])
    );

    // A delivered outcome: the next due delivery of the same subscription, in its slot.
    let next = deliver_and_follow(s, &a[0], 2100).await;
    if hands_on {
        assert_eq!(
            next.as_deref(),
            Some(a[2].as_str()),
            "a's next due delivery"
        );
    } else {
        assert_eq!(next, None);
        claim_one(s, &a[2], 2100).await;
    }
    assert!(
        claim_ids(s, 2100, 10).await.is_empty(),
        "a's two slots are both taken, and b's one"
    );

    // A failed attempt hands nothing on: its slot goes to the claims (the breaker decides
    // how many may run).
    let failed = attempt(1, Outcome::Http5xx, 2193);
    let next = s
        .record_outcome_and_follow(&a[1], failed, Next::RetryAt(9000), 2200)
        .await
        .expect("record outcome");
    assert!(next.is_none(), "a failure hands nothing on");
    assert_eq!(claim_ids(s, 2200, 10).await, vec![a[3].clone()]);

    // A lowered limit: a delivered outcome above it hands nothing on.
    s.set_limits(limits(&[("a", 1), ("b", 1)]));
    assert_eq!(
        deliver_and_follow(s, &a[2], 2300).await,
        None,
        "limit 1, 2 in flight"
    );
    assert!(claim_ids(s, 2300, 10).await.is_empty());

    // A paused subscription, and a rate-limited one, hand nothing on.
    let mut paused = limits(&[("a", 2), ("b", 1)]);
    paused.paused.insert("b".to_string());
    s.set_limits(paused);
    assert_eq!(
        deliver_and_follow(s, &b[0], 2400).await,
        None,
        "b is paused"
    );
    let mut rated = limits(&[("a", 2), ("b", 1)]);
    rated.rates.insert("a".to_string(), 1_000);
    s.set_limits(rated);
    assert_eq!(
        deliver_and_follow(s, &a[3], 2500).await,
        None,
        "a is rate-limited"
    );

    // At the node's global limit, the claims decide in due order.
    s.set_limits(Limits {
        global: 1,
        ..limits(&[("a", 2), ("b", 1)])
    });
    // a[4] (due 1004) before b[1] (due 1101).
    assert_eq!(claim_ids(s, 2600, 10).await, vec![a[4].clone()]);
    assert_eq!(
        deliver_and_follow(s, &a[4], 2700).await,
        None,
        "the node is full"
    );
    assert_eq!(claim_ids(s, 2700, 10).await, vec![a[5].clone()]);
    // Nothing was handed out twice: every delivery ends once.
    s.set_limits(limits(&[("a", 2), ("b", 1)]));
    let mut rest = claim_ids(s, 2800, 10).await;
    rest.sort();
    assert_eq!(rest, vec![b[1].clone()]);
}

async fn releasing_a_delivery_that_is_not_claimed_changes_nothing(h: &mut Harness) {
    let s = h.store();
    let id = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 10)]));
    s.release(&id, 500).await.unwrap();
    s.release("dlv_01JD0000000000000000000000", 500)
        .await
        .unwrap();
    let st = stats(s, 1000).await;
    assert_eq!((st.ready, st.scheduled, st.in_flight), (1, 0, 0));
    assert_eq!(claim_ids(s, 1000, 10).await, vec![id.clone()]);
    assert!(claim_ids(s, 1000, 10).await.is_empty(), "queued once");
    assert_eq!(delivery(s, &id).await.state, DeliveryState::InFlight);
}

async fn requeued_deliveries_survive_a_restart(h: &mut Harness) {
    let s = h.store();
    let ids = deliveries_of(s, "job-1", &["a", "b"], 1000).await;
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    assert_eq!(claim_ids(s, 1000, 10).await.len(), 2);
    record(s, &ids[0], 1, Outcome::Http5xx, Next::Dead, 1100).await;
    record(s, &ids[1], 1, Outcome::Http5xx, Next::Dead, 1100).await;
    assert_eq!(s.requeue(&ids[0], 2000).await.unwrap(), DeliveryState::Dead);
    assert_eq!(s.requeue_dead(None, 0, 2000).await.unwrap(), 1);

    h.reopen().await;
    let s = h.store();
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    for id in &ids {
        let d = delivery(s, id).await;
        assert_eq!(
            (d.state, d.due_ms, d.attempts),
            (DeliveryState::Scheduled, Some(2000), 1)
        );
    }
    assert!(claim_ids(s, 1999, 10).await.is_empty());
    assert_eq!(sorted(claim_ids(s, 2000, 10).await), sorted(ids));
}

async fn requeue_dead_requeues_every_dead_delivery_however_many(h: &mut Harness) {
    const N: usize = 1200;
    let s = h.store();
    let batch = (0..N)
        .map(|i| (event(&format!("job-{i}"), "failed"), vec![sub("a")]))
        .collect();
    s.ingest(batch, 1000).await.unwrap();
    s.set_limits(Limits {
        global: N,
        ..limits(&[("a", N)])
    });
    let claimed = claim_ids(s, 1000, N).await;
    assert_eq!(claimed.len(), N);
    let store = h.shared();
    futures_util::future::try_join_all(claimed.iter().map(|id| {
        let store = store.clone();
        async move {
            store
                .record_outcome(id, attempt(1, Outcome::Http5xx, 1000), Next::Dead, 1100)
                .await
        }
    }))
    .await
    .unwrap();
    drop(store);
    assert_eq!(stats(s, 1100).await, PendingStats::default());
    assert_eq!(s.requeue_dead(Some("a"), 1100, 2000).await.unwrap(), N);
    let st = stats(s, 2000).await;
    assert_eq!((st.ready, st.in_flight), (N as u64, 0));
    assert_eq!(claim_ids(s, 2000, 2 * N).await.len(), N);
}

async fn sweep_removes_an_event_once_its_last_delivery_is_gone(h: &mut Harness) {
    let s = h.store();
    let answer = ingest(
        s,
        event("job-1", "completed"),
        vec![sub("a"), sub("b")],
        1000,
    )
    .await;
    let ids = meta_deliveries(s, &answer.event_id).await;
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    assert_eq!(claim_ids(s, 1000, 10).await.len(), 2);
    record(s, &ids[0], 1, Outcome::Success, Next::Delivered, 2000).await;
    record(s, &ids[1], 1, Outcome::Http5xx, Next::RetryAt(3000), 2000).await;
    s.sweep(5000, 100).await.unwrap();
    assert_eq!(
        counts(s).await,
        (1, 1),
        "the event waits for its last delivery"
    );

    claim_one(s, &ids[1], 3000).await;
    record(s, &ids[1], 2, Outcome::Success, Next::Delivered, 6000).await;
    s.sweep(5000, 100).await.unwrap();
    assert_eq!(counts(s).await, (1, 1), "finished after the cutoff");
    s.sweep(7000, 100).await.unwrap();
    assert_eq!(counts(s).await, (0, 0), "the last delivery and its event");
    assert!(s.event_meta(&answer.event_id).await.unwrap().is_none());
}

async fn sweep_keeps_a_requeued_delivery(h: &mut Harness) {
    let s = h.store();
    let id = deliveries_of(s, "job-1", &["a"], 1000).await.remove(0);
    s.set_limits(limits(&[("a", 10)]));
    claim_one(s, &id, 1000).await;
    record(s, &id, 1, Outcome::Http5xx, Next::Dead, 2000).await;
    s.requeue(&id, 3000).await.unwrap();
    s.sweep(10_000, 100).await.unwrap();
    assert_eq!(counts(s).await, (1, 1), "unfinished again");
    let (claimed, _) = s.claim(3000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!claimed[0].body.is_empty(), "with its event's body");
}

async fn a_request_id_and_status_lead_to_their_event(h: &mut Harness) {
    let s = h.store();
    let ingested = s
        .ingest(vec![(event("req-1", "completed"), vec![sub("a")])], 1_000)
        .await
        .expect("ingest");
    let id = &ingested[0].event_id;
    assert_eq!(
        s.event_by_request("req-1", "completed")
            .await
            .expect("read")
            .as_ref(),
        Some(id)
    );
    assert_eq!(
        s.event_by_request("req-1", "failed").await.expect("read"),
        None
    );
    assert_eq!(
        s.event_by_request("req-2", "completed")
            .await
            .expect("read"),
        None
    );
}

async fn a_signing_key_is_made_once_and_kept(h: &mut Harness) {
    let first = h.store().signing_key("ui").await.expect("key");
    assert_eq!(first.len(), 32);
    assert_eq!(h.store().signing_key("ui").await.expect("key"), first);
    let other = h.store().signing_key("other").await.expect("key");
    assert_ne!(other, first, "each name has its own key");
    h.reopen().await;
    assert_eq!(
        h.store().signing_key("ui").await.expect("key"),
        first,
        "the key outlives a restart"
    );
}

async fn a_signed_out_session_is_kept_until_it_expires(h: &mut Harness) {
    let s = h.store();
    assert!(!s.session_revoked("n1").await.expect("read"));
    s.revoke_session("n1", 5_000, 1_000).await.expect("revoke");
    s.revoke_session("n2", 2_000, 1_000).await.expect("revoke");
    assert!(s.session_revoked("n1").await.expect("read"));
    assert!(!s.session_revoked("n3").await.expect("read"));
    h.reopen().await;
    let s = h.store();
    assert!(s.session_revoked("n1").await.expect("read"), "durable");
    assert!(s.session_revoked("n2").await.expect("read"), "durable");
    // A sign-out after n2's expiry may forget it; never one still running.
    s.revoke_session("n3", 9_000, 3_000).await.expect("revoke");
    assert!(s.session_revoked("n1").await.expect("read"));
    assert!(s.session_revoked("n3").await.expect("read"));
}

async fn listing_filters_by_any_of_several_subscriptions(h: &mut Harness) {
    let s = h.store();
    s.ingest(
        vec![
            (event("r1", "completed"), vec![sub("a"), sub("b"), sub("c")]),
            (event("r2", "completed"), vec![sub("c")]),
        ],
        1_000,
    )
    .await
    .expect("ingest");
    let filter = DeliveryFilter {
        any_subscription: Some(vec!["a".to_string(), "b".to_string()]),
        ..Default::default()
    };
    let (page, _) = s.list_deliveries(&filter, None, 100).await.expect("list");
    let mut subs: Vec<&str> = page.iter().map(|d| d.subscription.as_str()).collect();
    subs.sort_unstable();
    assert_eq!(subs, ["a", "b"]);
    let none = DeliveryFilter {
        any_subscription: Some(Vec::new()),
        ..Default::default()
    };
    let (page, _) = s.list_deliveries(&none, None, 100).await.expect("list");
    assert!(
        page.is_empty(),
        "an owner with no subscription sees nothing"
    );
}

/// Everything `s` holds, exported in pages of one event and read one page at a time, as
/// `hookd store export|import` do.
async fn export_all(s: &dyn Store) -> Vec<hookd::store::Portable> {
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = s.export(cursor, 1).await.unwrap();
        records.extend(page);
        match next {
            Some(n) => cursor = Some(n),
            None => return records,
        }
    }
}

async fn an_export_imports_into_a_new_store_whole(h: &mut Harness) {
    use hookd::store::{Portable, StoredSubscription};
    let s = h.store();
    let body = event_with_result("job-1", json!({"url": "https://cdn.example/x"}));
    let first = ingest(
        s,
        body.clone(),
        vec![sub("a"), sub("b"), adhoc("h.example")],
        1000,
    )
    .await;
    let mut ids = Vec::new();
    for want in ["a", "b", ADHOC] {
        for id in meta_deliveries(s, &first.event_id).await {
            if delivery(s, &id).await.subscription == want {
                ids.push(id);
            }
        }
    }
    let lone = ingest(s, event("job-2", "failed"), vec![], 1100).await;
    s.set_limits(limits(&[("a", 10), ("b", 10)]));
    assert_eq!(sorted(claim_ids(s, 1000, 10).await), sorted(ids.clone()));
    record(s, &ids[0], 1, Outcome::Success, Next::Delivered, 1200).await;
    record(s, &ids[1], 1, Outcome::Http5xx, Next::RetryAt(9000), 1200).await;
    s.release(&ids[2], 1000).await.unwrap();
    s.switch("b", Switch::Pause).await.unwrap();
    let key = s.signing_key("ui").await.unwrap();
    let stored = StoredSubscription {
        id: "sub-1".to_string(),
        owner: Some("acme".to_string()),
        toml: "[[subscription]]\nid = \"sub-1\"\n".to_string(),
        created_ms: 1000,
        updated_ms: 1000,
    };
    s.put_subscription(stored.clone()).await.unwrap();

    let records = export_all(s).await;
    let events = records
        .iter()
        .filter(|r| matches!(r, Portable::Event { .. }))
        .count();
    assert_eq!(events, 2, "every event, once: {records:#?}");
    let mut other = Harness::new(h.open, h.hands_on);
    let t = other.store();
    t.import(records).await.unwrap();
    assert_eq!(counts(t).await, counts(s).await);
    assert_eq!(
        t.signing_key("ui").await.unwrap(),
        key,
        "the dashboard's key moves"
    );
    assert_eq!(t.stored_subscriptions().await.unwrap(), vec![stored]);
    assert!(t.subscription_states().await.unwrap()["b"].paused);
    for id in &ids {
        let (before, after) = (delivery(s, id).await, delivery(t, id).await);
        assert_eq!(
            (
                before.state,
                before.attempts,
                before.subscription.clone(),
                before.adhoc.clone()
            ),
            (
                after.state,
                after.attempts,
                after.subscription.clone(),
                after.adhoc.clone()
            ),
            "{id}"
        );
        assert_eq!(
            s.attempts(id).await.unwrap(),
            t.attempts(id).await.unwrap(),
            "{id}"
        );
    }
    let moved = t
        .event_by_request("job-1", "completed")
        .await
        .unwrap()
        .expect("job-1");
    assert_eq!(
        t.event_body(&moved).await.unwrap().unwrap(),
        Bytes::from(body.body.clone()),
        "the body, byte for byte"
    );
    assert!(
        t.event_by_request("job-2", "failed")
            .await
            .unwrap()
            .is_some(),
        "{lone:?}"
    );
    // The imported store goes on: the same event is a duplicate, and pending work is claimed.
    let again = ingest(t, body, vec![sub("a")], 5000).await;
    assert!(again.duplicate);
    drop(other.store.take());
    other.reopen_closed().await;
    let t = other.store();
    t.set_limits(Limits {
        paused: HashSet::new(),
        ..limits(&[("a", 10), ("b", 10)])
    });
    let claimed = claim_ids(t, 10_000, 10).await;
    assert_eq!(
        sorted(claimed),
        sorted(vec![ids[1].clone(), ids[2].clone()]),
        "b's retry and the per-request delivery"
    );
    other.close().await;
}

// ---------------------------------------------------------------------------------------------
// Owners

fn owned_event(request_id: &str, status: &str, owner: &str) -> NewEvent {
    parse(
        json!({"request_id": request_id, "status": status, "owner": owner}),
        ACCEPTED_AT,
    )
}

fn stored_sub(id: &str, owner: Option<&str>) -> hookd::store::StoredSubscription {
    hookd::store::StoredSubscription {
    id: id.to_string(),
    owner: owner.map(str::to_string),
    toml: format!(
        "[[subscription]]\nid = {id:?}\nurl = \"https://{id}.example/hook\"\nsecret = \"s\"\nevents = [\"*\"]\n"
    ),
    created_ms: 1_000,
    updated_ms: 1_000,
}
}

/// The delivery of `event_id` to `subscription`.
async fn delivery_to(s: &dyn Store, event_id: &str, subscription: &str) -> String {
    for id in meta_deliveries(s, event_id).await {
        if delivery(s, &id).await.subscription == subscription {
            return id;
        }
    }
    panic!("no delivery of {event_id} to {subscription}");
}

/// Ingests a batch at `now_ms`; returns the event ids, in order.
async fn ingest_all(
    s: &dyn Store,
    events: Vec<(NewEvent, Vec<Target>)>,
    now_ms: u64,
) -> Vec<String> {
    s.ingest(events, now_ms)
        .await
        .expect("ingest")
        .into_iter()
        .map(|i| i.event_id)
        .collect()
}

async fn is_gone(s: &dyn Store, id: &str) -> bool {
    s.delivery(id).await.expect("read delivery").is_none()
}

async fn sorted_subscriptions(s: &dyn Store) -> Vec<hookd::store::StoredSubscription> {
    let mut all = s
        .stored_subscriptions()
        .await
        .expect("stored subscriptions");
    all.sort_by(|x, y| x.id.cmp(&y.id));
    all
}

/// What [`erasing_an_owner_removes_exactly_its_data_and_a_second_erase_finds_nothing`] leaves.
struct ErasedFixture {
    erased_events: Vec<(String, &'static str, &'static str)>,
    kept_events: Vec<(String, Option<&'static str>)>,
    gone: Vec<String>,
    /// b's finished delivery first.
    kept: Vec<String>,
    before_b: Delivery,
}

impl ErasedFixture {
    async fn check(&self, s: &dyn Store) {
        assert_eq!(
            sorted_subscriptions(s).await,
            vec![stored_sub("b1", Some("cust-b")), stored_sub("p", None)]
        );
        let states = s.subscription_states().await.unwrap();
        assert!(
            !states.contains_key("a1") && !states.contains_key("a2"),
            "the erased subscriptions' states are gone: {states:?}"
        );
        assert!(states["b1"].paused, "others' states stay: {states:?}");
        assert!(states.contains_key("p"), "{states:?}");
        for (e, request_id, status) in &self.erased_events {
            assert!(s.event_meta(e).await.unwrap().is_none(), "{e} is erased");
            assert!(s.event_body(e).await.unwrap().is_none(), "{e} is erased");
            assert_eq!(
                s.event_by_request(request_id, status).await.unwrap(),
                None,
                "{request_id}"
            );
        }
        for (e, owner) in &self.kept_events {
            let meta = s.event_meta(e).await.unwrap();
            assert_eq!(
                meta.unwrap_or_else(|| panic!("{e} stays")).owner.as_deref(),
                *owner
            );
        }
        for id in &self.gone {
            assert!(is_gone(s, id).await, "{id} is erased");
        }
        let b = delivery(s, &self.kept[0]).await;
        let before = &self.before_b;
        assert_eq!(
            (b.state, b.attempts, b.last_error.clone(), b.owner.clone()),
            (
                before.state,
                before.attempts,
                before.last_error.clone(),
                before.owner.clone()
            ),
            "another owner's finished delivery is whole"
        );
        assert_eq!(s.attempts(&self.kept[0]).await.unwrap().len(), 1);
        let listed = list_all(s, &DeliveryFilter::default(), 2).await;
        assert_eq!(sorted(ids(&listed)), sorted(self.kept.clone()));
        assert_eq!(counts(s).await, (2, 3), "jb and jn; b's two and jn's to p");
    }
}

async fn erasing_an_owner_removes_exactly_its_data_and_a_second_erase_finds_nothing(
    h: &mut Harness,
) {
    let s = h.store();
    for (id, owner) in [
        ("a1", Some("cust-a")),
        ("a2", Some("cust-a")),
        ("b1", Some("cust-b")),
        ("p", None),
    ] {
        s.put_subscription(stored_sub(id, owner)).await.unwrap();
    }
    let events = ingest_all(
        s,
        vec![
            (
                owned_event("ja1", "completed", "cust-a"),
                vec![sub("a1"), sub("p"), adhoc("h.example")],
            ),
            (owned_event("ja2", "completed", "cust-a"), vec![sub("a2")]),
            (owned_event("ja3", "failed", "cust-a"), vec![]),
            (
                owned_event("jb", "completed", "cust-b"),
                vec![sub("b1"), sub("p")],
            ),
            // An event without an owner (from before owners) that went to a1 too.
            (event("jn", "completed"), vec![sub("p"), sub("a1")]),
        ],
        1_000,
    )
    .await;
    let [ea1, ea2, ea3, eb, en]: [String; 5] = events.try_into().expect("five events");
    let a1_in_flight = delivery_to(s, &ea1, "a1").await;
    let a1_p = delivery_to(s, &ea1, "p").await;
    let a1_adhoc = delivery_to(s, &ea1, ADHOC).await;
    let a2_done = delivery_to(s, &ea2, "a2").await;
    let b_b1 = delivery_to(s, &eb, "b1").await;
    let b_p = delivery_to(s, &eb, "p").await;
    let n_p = delivery_to(s, &en, "p").await;
    let n_a1 = delivery_to(s, &en, "a1").await;

    s.set_limits(limits(&[("a1", 10), ("a2", 10), ("b1", 10), ("p", 10)]));
    assert_eq!(claim_ids(s, 1_000, 100).await.len(), 8, "every delivery");
    // a1's delivery of ja1 stays in flight; the others get attempts or go back.
    record(s, &a1_p, 1, Outcome::Http5xx, Next::RetryAt(50_000), 1_100).await;
    s.release(&a1_adhoc, 50_000).await.unwrap();
    record(
        s,
        &a2_done,
        1,
        Outcome::Http5xx,
        Next::RetryAt(1_500),
        1_100,
    )
    .await;
    record(s, &b_b1, 1, Outcome::Http5xx, Next::Dead, 1_100).await;
    s.release(&b_p, 50_000).await.unwrap();
    s.release(&n_p, 50_000).await.unwrap();
    record(s, &n_a1, 1, Outcome::Http5xx, Next::RetryAt(50_000), 1_100).await;
    assert_eq!(claim_ids(s, 1_500, 100).await, vec![a2_done.clone()]);
    record(s, &a2_done, 2, Outcome::Success, Next::Delivered, 1_600).await;
    s.switch("a2", Switch::Pause).await.unwrap();
    s.switch("b1", Switch::Pause).await.unwrap();
    let states = s.subscription_states().await.unwrap();
    for id in ["a1", "a2", "b1", "p"] {
        assert!(states.contains_key(id), "{id} has a state: {states:?}");
    }
    let before_b = delivery(s, &b_b1).await;

    let erased = s.erase_owner("cust-a").await.expect("erase");
    assert_eq!(
        (
            erased.subscriptions,
            erased.events,
            erased.deliveries,
            erased.attempts
        ),
        (2, 3, 5, 4),
        "a1 and a2; ja1, ja2 and ja3; ja1's three, ja2's and jn's to a1; their attempts: {erased:?}"
    );
    assert_eq!(
        sorted(erased.unfinished.clone()),
        sorted(vec![
            a1_in_flight.clone(),
            a1_p.clone(),
            a1_adhoc.clone(),
            n_a1.clone()
        ]),
        "the unfinished ones, the one in flight included"
    );

    let fixture = ErasedFixture {
        erased_events: vec![
            (ea1.clone(), "ja1", "completed"),
            (ea2.clone(), "ja2", "completed"),
            (ea3.clone(), "ja3", "failed"),
        ],
        kept_events: vec![(eb.clone(), Some("cust-b")), (en.clone(), None)],
        gone: vec![
            a1_in_flight.clone(),
            a1_p.clone(),
            a1_adhoc.clone(),
            a2_done.clone(),
            n_a1.clone(),
        ],
        kept: vec![b_b1.clone(), b_p.clone(), n_p.clone()],
        before_b,
    };
    fixture.check(s).await;
    // Nothing erased is handed out again, the one that was in flight included.
    assert_eq!(
        sorted(claim_ids(s, 100_000, 100).await),
        sorted(vec![b_p.clone(), n_p.clone()])
    );
    s.release(&b_p, 200_000).await.unwrap();
    s.release(&n_p, 200_000).await.unwrap();
    // The attempt in flight is held back by the caller: its slot is freed, nothing comes back.
    s.release(&a1_in_flight, 1_000).await.expect("release");
    assert!(is_gone(s, &a1_in_flight).await);
    assert!(claim_ids(s, 100_000, 100).await.is_empty());

    let again = s.erase_owner("cust-a").await.expect("erase again");
    assert_eq!(
        again,
        hookd::store::Erased::default(),
        "a second erase finds nothing"
    );
    h.reopen().await;
    let s = h.store();
    fixture.check(s).await;
    s.set_limits(limits(&[("a1", 10), ("a2", 10), ("b1", 10), ("p", 10)]));
    assert_eq!(
        sorted(claim_ids(s, 300_000, 100).await),
        sorted(vec![b_p.clone(), n_p.clone()]),
        "after a restart too, only what was not erased is due"
    );
    assert_eq!(
        s.erase_owner("cust-a")
            .await
            .expect("erase after a restart"),
        hookd::store::Erased::default()
    );
    // The owner's request ids are free again: the same event is a new one, not a duplicate.
    let fresh = ingest(
        s,
        owned_event("ja1", "completed", "cust-a"),
        vec![sub("p")],
        400_000,
    )
    .await;
    assert!(!fresh.duplicate, "{fresh:?}");
}

async fn erasing_an_owner_with_nothing_stored_counts_zeros(h: &mut Harness) {
    let s = h.store();
    deliveries_of(s, "j1", &["p"], 1_000).await;
    assert_eq!(
        s.erase_owner("cust-z").await.expect("erase"),
        hookd::store::Erased::default()
    );
    assert_eq!(counts(s).await, (1, 1));
}

async fn end_queued_ends_a_subscriptions_queued_deliveries_only(h: &mut Harness) {
    let s = h.store();
    let e2 = ingest(s, event("j2", "completed"), vec![sub("x")], 1_000).await;
    let e1 = ingest(s, event("j1", "completed"), vec![sub("x"), sub("y")], 1_001).await;
    let e3 = ingest(
        s,
        event("j3", "completed"),
        vec![sub("x"), adhoc("h.example")],
        1_002,
    )
    .await;
    let x2 = delivery_to(s, &e2.event_id, "x").await;
    let x1 = delivery_to(s, &e1.event_id, "x").await;
    let y1 = delivery_to(s, &e1.event_id, "y").await;
    let x3 = delivery_to(s, &e3.event_id, "x").await;
    let adhoc3 = delivery_to(s, &e3.event_id, ADHOC).await;
    // One attempt at a time for x; y and per-request targets get nothing.
    let only_x = |n| Limits {
        adhoc_total: 0,
        adhoc_per_host: 0,
        ..limits(&[("x", n)])
    };
    s.set_limits(only_x(1));
    assert_eq!(claim_ids(s, 2_000, 10).await, vec![x2.clone()]);
    record(s, &x2, 1, Outcome::Http5xx, Next::RetryAt(3_000), 2_100).await;
    assert_eq!(
        claim_ids(s, 2_200, 10).await,
        vec![x1.clone()],
        "x1 in flight"
    );

    let ended = s.end_queued("x", "was deleted", 2_500).await.expect("end");
    assert_eq!(ended, 2, "x2 (waiting for a retry) and x3 (queued)");
    for (id, attempts) in [(&x2, 2), (&x3, 1)] {
        let d = delivery(s, id).await;
        assert_eq!(d.state, DeliveryState::Dead, "{id}");
        assert_eq!(d.attempts, attempts, "{id}: one more attempt");
        assert_eq!(d.last_error.as_deref(), Some("was deleted"), "{id}");
        assert_eq!(d.finished_ms, Some(2_500), "{id}");
        let history = s.attempts(id).await.unwrap();
        assert_eq!(history.len(), attempts as usize, "{id}: {history:?}");
        let last = history.last().unwrap();
        assert_eq!(
            (last.number, last.status_code, last.error.as_deref()),
            (attempts, None, Some("was deleted")),
            "{id}: an attempt that made no request"
        );
    }
    assert_eq!(
        delivery(s, &x1).await.state,
        DeliveryState::InFlight,
        "the one in flight is left to its attempt"
    );
    for id in [&y1, &adhoc3] {
        let d = delivery(s, id).await;
        assert_eq!((d.state, d.attempts), (DeliveryState::Scheduled, 0), "{id}");
    }
    let dead = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        ..Default::default()
    };
    assert_eq!(
        sorted(ids(&list_all(s, &dead, 10).await)),
        sorted(vec![x2.clone(), x3.clone()])
    );
    // The attempt in flight records its own outcome; nothing of x is queued any more.
    record(s, &x1, 1, Outcome::Success, Next::Delivered, 2_600).await;
    assert_eq!(delivery(s, &x1).await.state, DeliveryState::Delivered);
    s.set_limits(only_x(10));
    assert!(claim_ids(s, 10_000, 10).await.is_empty());
    assert_eq!(s.end_queued("x", "was deleted", 3_000).await.unwrap(), 0);
    h.reopen().await;
    let s = h.store();
    assert_eq!(delivery(s, &x3).await.state, DeliveryState::Dead, "durable");
    s.set_limits(limits(&[("x", 10), ("y", 10)]));
    assert_eq!(
        sorted(claim_ids(s, 10_000, 10).await),
        sorted(vec![y1.clone(), adhoc3.clone()])
    );
}

async fn deleting_a_subscription_forgets_its_state(h: &mut Harness) {
    let s = h.store();
    s.put_subscription(stored_sub("s1", Some("cust-1")))
        .await
        .unwrap();
    s.put_subscription(stored_sub("s2", None)).await.unwrap();
    let id = deliveries_of(s, "j1", &["s1"], 1_000).await.remove(0);
    s.set_limits(limits(&[("s1", 10)]));
    claim_one(s, &id, 1_000).await;
    record(s, &id, 1, Outcome::Http5xx, Next::RetryAt(90_000), 1_100).await;
    s.switch("s1", Switch::Pause).await.unwrap();
    s.switch("s2", Switch::Pause).await.unwrap();
    let states = s.subscription_states().await.unwrap();
    assert!(
        states["s1"].paused && states["s1"].consecutive_failures == 1,
        "{states:?}"
    );

    assert!(s.delete_subscription("s1").await.unwrap());
    let states = s.subscription_states().await.unwrap();
    assert!(!states.contains_key("s1"), "forgotten: {states:?}");
    assert!(states["s2"].paused, "another's stays: {states:?}");
    h.reopen().await;
    let s = h.store();
    let states = s.subscription_states().await.unwrap();
    assert!(
        !states.contains_key("s1"),
        "after a restart too: {states:?}"
    );
    assert!(states["s2"].paused, "{states:?}");
    // A subscription of the same id starts afresh.
    s.put_subscription(stored_sub("s1", Some("cust-2")))
        .await
        .unwrap();
    assert!(!s.subscription_states().await.unwrap().contains_key("s1"));
}

async fn deliveries_carry_their_events_owner_and_list_by_it(h: &mut Harness) {
    let s = h.store();
    let events = ingest_all(
        s,
        vec![
            (
                owned_event("ja", "completed", "cust-a"),
                vec![sub("p"), sub("q")],
            ),
            (owned_event("jb", "completed", "cust-b"), vec![sub("p")]),
            (event("jn", "completed"), vec![sub("p")]),
        ],
        1_000,
    )
    .await;
    let meta = |i: usize| {
        let id = events[i].clone();
        async move { s.event_meta(&id).await.unwrap().expect("stored") }
    };
    assert_eq!(meta(0).await.owner.as_deref(), Some("cust-a"));
    assert_eq!(meta(1).await.owner.as_deref(), Some("cust-b"));
    assert_eq!(meta(2).await.owner, None);
    let of_a = meta(0).await.deliveries;
    for id in &of_a {
        assert_eq!(delivery(s, id).await.owner.as_deref(), Some("cust-a"));
    }
    // One of a's finishes: the listing by owner covers finished and unfinished deliveries.
    s.set_limits(limits(&[("q", 10)]));
    let q = delivery_to(s, &events[0], "q").await;
    assert_eq!(claim_ids(s, 1_000, 10).await, vec![q.clone()]);
    record(s, &q, 1, Outcome::Success, Next::Delivered, 1_100).await;
    let by = |owner: &str| DeliveryFilter {
        owner: Some(owner.to_string()),
        ..Default::default()
    };
    let listed = list_all(s, &by("cust-a"), 1).await;
    assert_eq!(sorted(ids(&listed)), sorted(of_a.clone()));
    assert!(listed.iter().all(|d| d.owner.as_deref() == Some("cust-a")));
    let listed = list_all(s, &by("cust-b"), 10).await;
    assert_eq!(ids(&listed), meta(1).await.deliveries);
    assert!(list_all(s, &by("cust-c"), 10).await.is_empty());
    let delivered_of_a = DeliveryFilter {
        state: Some(DeliveryState::Delivered),
        ..by("cust-a")
    };
    assert_eq!(
        ids(&list_all(s, &delivered_of_a, 10).await),
        vec![q.clone()]
    );
    let a_to_p = DeliveryFilter {
        subscription: Some("p".to_string()),
        ..by("cust-a")
    };
    assert_eq!(
        ids(&list_all(s, &a_to_p, 10).await),
        vec![delivery_to(s, &events[0], "p").await]
    );
    assert_eq!(
        list_all(s, &DeliveryFilter::default(), 10).await.len(),
        4,
        "no owner filter: all"
    );
    // Claims carry the owner too.
    s.set_limits(limits(&[("p", 10)]));
    let (claimed, _) = s.claim(2_000, 10).await.unwrap();
    let mut owners: Vec<Option<String>> = claimed.into_iter().map(|c| c.delivery.owner).collect();
    owners.sort();
    assert_eq!(
        owners,
        vec![None, Some("cust-a".to_string()), Some("cust-b".to_string())]
    );
}

async fn an_export_carries_owners_into_the_imported_store(h: &mut Harness) {
    use hookd::store::Portable;
    let s = h.store();
    let events = ingest_all(
        s,
        vec![
            (
                owned_event("ja", "completed", "cust-a"),
                vec![sub("a"), adhoc("h.example")],
            ),
            (event("jn", "completed"), vec![sub("a")]),
        ],
        1_000,
    )
    .await;
    let (ea, en) = (events[0].clone(), events[1].clone());
    let done = delivery_to(s, &ea, "a").await;
    let pending = delivery_to(s, &ea, ADHOC).await;
    s.set_limits(Limits {
        adhoc_total: 0,
        ..limits(&[("a", 1)])
    });
    assert_eq!(claim_ids(s, 1_000, 10).await, vec![done.clone()]);
    record(s, &done, 1, Outcome::Success, Next::Delivered, 1_100).await;

    let records = export_all(s).await;
    let owner_of = |wanted: &str| {
        records.iter().find_map(|r| match r {
            Portable::Event { id, owner, .. } | Portable::Delivery { id, owner, .. }
                if id == wanted =>
            {
                Some(owner.clone())
            }
            _ => None,
        })
    };
    assert_eq!(owner_of(&ea), Some(Some("cust-a".to_string())));
    assert_eq!(owner_of(&en), Some(None));
    assert_eq!(owner_of(&done), Some(Some("cust-a".to_string())));
    assert_eq!(owner_of(&pending), Some(Some("cust-a".to_string())));
    // An export line of the store before owners has no `owner`: it imports as unowned.
    let line = serde_json::to_value(
        records
            .iter()
            .find(|r| matches!(r, Portable::Event { id, .. } if *id == en))
            .unwrap(),
    )
    .unwrap();
    assert!(line.get("owner").is_none(), "{line}");

    let mut other = Harness::new(h.open, h.hands_on);
    let t = other.store();
    t.import(records).await.unwrap();
    assert_eq!(
        t.event_meta(&ea)
            .await
            .unwrap()
            .expect("ja")
            .owner
            .as_deref(),
        Some("cust-a")
    );
    assert_eq!(t.event_meta(&en).await.unwrap().expect("jn").owner, None);
    for id in [&done, &pending] {
        assert_eq!(
            delivery(t, id).await.owner.as_deref(),
            Some("cust-a"),
            "{id}"
        );
    }
    let of_a = DeliveryFilter {
        owner: Some("cust-a".to_string()),
        ..Default::default()
    };
    assert_eq!(
        sorted(ids(&list_all(t, &of_a, 10).await)),
        sorted(vec![done.clone(), pending.clone()])
    );
    // And the imported owner is erasable like any other.
    let erased = t.erase_owner("cust-a").await.unwrap();
    assert_eq!(
        (erased.events, erased.deliveries, erased.attempts),
        (1, 2, 1)
    );
    assert_eq!(counts(t).await, (1, 1));
    other.close().await;
}

/// A delivered delivery whose record has no `finished_ms` (a sled store converted from the first
/// layout exports such records, and hand-made ones may) imports as delivered: never queued, so
/// never sent again.
async fn a_finished_delivery_that_does_not_say_when_imports_finished(h: &mut Harness) {
    let s = h.store();
    let first = ingest(s, event("job-1", "completed"), vec![sub("a")], 1000).await;
    s.set_limits(limits(&[("a", 10)]));
    let ids = claim_ids(s, 1000, 10).await;
    assert_eq!(ids.len(), 1);
    record(s, &ids[0], 1, Outcome::Success, Next::Delivered, 1200).await;
    let records: Vec<hookd::store::Portable> = export_all(s)
        .await
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap();
            if v["type"] == "delivery" {
                v.as_object_mut().unwrap().remove("finished_ms");
            }
            serde_json::from_value(v).unwrap()
        })
        .collect();
    let mut other = Harness::new(h.open, h.hands_on);
    let t = other.store();
    t.import(records).await.unwrap();
    t.set_limits(limits(&[("a", 10)]));
    let moved = delivery(t, &ids[0]).await;
    assert_eq!(moved.state, DeliveryState::Delivered, "{moved:?}");
    assert!(
        claim_ids(t, 4_000_000_000_000, 10).await.is_empty(),
        "a finished delivery is never claimed again"
    );
    assert_eq!(meta_deliveries(t, &first.event_id).await.len(), 1);
    other.close().await;
}

async fn an_attempt_keeps_the_receivers_headers_across_a_restart_and_an_export(h: &mut Harness) {
    let s = h.store();
    let answer = ingest(s, event("job-h", "completed"), vec![sub("a")], 1000).await;
    let id = meta_deliveries(s, &answer.event_id).await.remove(0);
    s.set_limits(limits(&[("a", 1)]));
    claim_one(s, &id, 1000).await;
    let mut first = attempt(1, Outcome::Http5xx, 1000);
    first.response_headers = vec![
        ("retry-after".to_string(), "30".to_string()),
        ("x-trace".to_string(), "é ü".to_string()),
        (
            "x-trace".to_string(),
            "a second one, kept in order".to_string(),
        ),
    ];
    s.record_outcome(&id, first.clone(), Next::RetryAt(2000), 1010)
        .await
        .unwrap();
    claim_one(s, &id, 2000).await;
    let mut second = attempt(2, Outcome::Timeout, 2000);
    assert!(second.response_headers.is_empty(), "no answer, no headers");
    second.error = Some("timed out".to_string());
    s.record_outcome(&id, second.clone(), Next::RetryAt(3000), 2010)
        .await
        .unwrap();
    claim_one(s, &id, 3000).await;
    let third = attempt(3, Outcome::Success, 3000);
    s.record_outcome(&id, third.clone(), Next::Delivered, 3010)
        .await
        .unwrap();
    let want = vec![first, second, third];
    assert_eq!(s.attempts(&id).await.unwrap(), want);

    h.reopen().await;
    let s = h.store();
    assert_eq!(s.attempts(&id).await.unwrap(), want, "after a restart");

    let records = export_all(s).await;
    let mut other = Harness::new(h.open, h.hands_on);
    let t = other.store();
    t.import(records).await.unwrap();
    assert_eq!(t.attempts(&id).await.unwrap(), want, "moved by an export");
    other.close().await;
}

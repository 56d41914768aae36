//! Tenancy: an event belongs to one owner (the provider's customer), and only that owner's
//! subscriptions (and those without an owner) receive it; `require_owner`; erasing an owner.
//! On both engines (HOOKD_TEST_ENGINE=postgres runs them on PostgreSQL).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp};
use crate::support::daemon::Daemon;
use crate::support::events::{spawn_app_with_api, wait_idle};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;

const DEADLINE: Duration = Duration::from_secs(20);

/// Creates an owned subscription to `url` for every event type.
async fn owned_subscription(app: &TestApp, id: &str, owner: &str, url: &str) {
    let (status, body) = app.admin().call(reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({ "id": id, "owner": owner, "url": url, "events": ["*"], "secret": format!("{id}-secret") })),
    )
    .await;
    assert_eq!(status, 201, "create {id}: {body}");
}

/// The request ids a receiver got, each once (at-least-once may repeat one).
fn request_ids(receiver: &TestReceiver) -> BTreeSet<String> {
    receiver
        .received()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
            assert!(
                body.get("owner").is_none(),
                "the owner is not part of the delivered body: {body}"
            );
            body["request_id"].as_str().expect("request_id").to_string()
        })
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Three receivers: owner a's, owner b's and the provider's (no owner, from the config file),
/// each subscribed to every event type; and one for per-request URLs.
struct Tenants {
    a: TestReceiver,
    b: TestReceiver,
    provider: TestReceiver,
    adhoc: TestReceiver,
}

impl Tenants {
    async fn start() -> Tenants {
        Tenants {
            a: TestReceiver::start().await,
            b: TestReceiver::start().await,
            provider: TestReceiver::start().await,
            adhoc: TestReceiver::start().await,
        }
    }

    fn config(&self) -> String {
        format!(
            "[delivery]\nretry_schedule = [\"200ms\", \"200ms\", \"200ms\"]\n\n\
             [[subscription]]\nid = \"provider\"\nurl = {:?}\nsecret = \"provider-secret\"\nevents = [\"*\"]\n",
            self.provider.url()
        )
    }

    /// A batch: one event of owner a, two of owner b (one with a per-request URL), one of none.
    fn batch(&self, round: &str) -> Value {
        json!([
            { "request_id": format!("{round}-a1"), "status": "completed", "owner": "cust-a" },
            { "request_id": format!("{round}-b1"), "status": "failed", "owner": "cust-b" },
            { "request_id": format!("{round}-n1"), "status": "completed" },
            { "request_id": format!("{round}-b2"), "status": "completed", "owner": "cust-b",
              "webhook_url": self.adhoc.url(), "webhook_secret": "adhoc-secret" },
        ])
    }

    /// What each receiver must have received after `rounds`, and nothing else.
    async fn assert_received(&self, rounds: &[&str]) {
        let ids = |suffixes: &[&str]| -> BTreeSet<String> {
            rounds
                .iter()
                .flat_map(|r| suffixes.iter().map(move |s| format!("{r}-{s}")))
                .collect()
        };
        let expected = [
            ("owner a's", &self.a, ids(&["a1"])),
            ("owner b's", &self.b, ids(&["b1", "b2"])),
            (
                "the provider's",
                &self.provider,
                ids(&["a1", "b1", "n1", "b2"]),
            ),
            ("the per-request URL", &self.adhoc, ids(&["b2"])),
        ];
        for (who, receiver, want) in &expected {
            wait_until(
                &format!("{who} receiver to get {want:?}"),
                DEADLINE,
                || async { request_ids(receiver).is_superset(want).then_some(()) },
            )
            .await;
        }
        for (who, receiver, want) in &expected {
            assert_eq!(
                &request_ids(receiver),
                want,
                "{who} receiver got another owner's event"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_owner_receives_its_own_events_and_the_provider_all_across_a_restart() {
    let tenants = Tenants::start().await;
    let app = spawn_app(&tenants.config()).await;
    owned_subscription(&app, "cust-a-prod", "cust-a", &tenants.a.url()).await;
    owned_subscription(&app, "cust-b-prod", "cust-b", &tenants.b.url()).await;

    let (status, answer) = app.post(&tenants.batch("r1")).await;
    assert_eq!(status, 202, "{answer}");
    let counts: Vec<u64> = answer
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|a| a["deliveries"].as_u64().expect("deliveries"))
        .collect();
    assert_eq!(
        counts,
        [2, 2, 1, 3],
        "a: a's + provider; b: b's + provider; none: provider; b with a URL: b's + provider + URL"
    );
    tenants.assert_received(&["r1"]).await;
    wait_idle(&app, DEADLINE).await;

    // The listings carry the owner and filter by it.
    let listed = app
        .admin()
        .get_ok("/v1/deliveries?owner=cust-a&limit=100")
        .await;
    let listed = listed["deliveries"].as_array().expect("deliveries").clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|d| d["owner"] == "cust-a"), "{listed:?}");
    let subscriptions: BTreeSet<&str> = listed
        .iter()
        .filter_map(|d| d["subscription"].as_str())
        .collect();
    assert_eq!(subscriptions, BTreeSet::from(["cust-a-prod", "provider"]));
    let unowned = app
        .admin()
        .get_ok("/v1/deliveries?subscription=provider&limit=100")
        .await;
    let owners: BTreeMap<String, Value> = unowned["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            (
                d["event_id"].as_str().unwrap_or("").to_string(),
                d["owner"].clone(),
            )
        })
        .collect();
    assert_eq!(
        owners.values().filter(|o| o.is_null()).count(),
        1,
        "one unowned event: {owners:?}"
    );

    // The same after a restart: the owners are stored with the subscriptions and the events.
    let app = app.restart().await;
    let (status, answer) = app.post(&tenants.batch("r2")).await;
    assert_eq!(status, 202, "{answer}");
    tenants.assert_received(&["r1", "r2"]).await;
    wait_idle(&app, DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_route_alike_after_a_sigkill_during_delivery() {
    let tenants = Tenants::start().await;
    // Every receiver fails its first answers: deliveries are pending and in flight when hookd
    // is killed.
    for r in [&tenants.a, &tenants.b, &tenants.provider, &tenants.adhoc] {
        r.plan(std::iter::repeat_n(Reply::Status(503), 6));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut daemon = Daemon::new(dir.path(), "", &tenants.config());
    daemon.start().await;
    for (id, owner, url) in [
        ("cust-a-prod", "cust-a", tenants.a.url()),
        ("cust-b-prod", "cust-b", tenants.b.url()),
    ] {
        let (status, body) = daemon
            .admin()
            .post(
                "/v1/subscriptions",
                Some(
                    json!({ "id": id, "owner": owner, "url": url, "events": ["*"], "secret": "s" }),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let rounds: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for round in &rounds {
        let (status, body) = daemon
            .admin()
            .post("/v1/events", Some(tenants.batch(round)))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    wait_until("the first failed attempts", DEADLINE, || async {
        (tenants.provider.count() >= 3).then_some(())
    })
    .await;
    daemon.kill();
    daemon.start().await;
    let rounds: Vec<&str> = rounds.iter().map(String::as_str).collect();
    tenants.assert_received(&rounds).await;
    daemon.wait_settled(DEADLINE).await;
    tenants.assert_received(&rounds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_owner_refuses_an_event_without_one_and_stores_nothing() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app_with_api(
        "require_owner = true",
        &format!(
            "[[subscription]]\nid = \"provider\"\nurl = {:?}\nsecret = \"s\"\nevents = [\"*\"]\n",
            receiver.url()
        ),
    )
    .await;
    let (status, body) = app
        .post(&json!({ "request_id": "no-owner", "status": "completed" }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "owner", "{body}");
    let (status, body) = app
        .post(&json!([
            { "request_id": "with-owner", "status": "completed", "owner": "cust-a" },
            { "request_id": "no-owner-2", "status": "completed" },
        ]))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "[1].owner", "{body}");
    let (events, deliveries) = app.shared.store.counts().await.expect("counts");
    assert_eq!((events, deliveries), (0, 0), "nothing stored");
    for bad in [json!(""), json!(" padded"), json!(7), json!("a\u{1}b")] {
        let (status, body) = app
            .post(&json!({ "request_id": "bad-owner", "status": "completed", "owner": bad }))
            .await;
        assert_eq!(status, 422, "owner {bad}: {body}");
        assert_eq!(body["field"], "owner", "{body}");
    }
    // With an owner it goes, to the provider's subscription.
    let (status, body) = app
        .post(&json!({ "request_id": "owned", "status": "completed", "owner": "cust-a" }))
        .await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, DEADLINE).await;
    wait_idle(&app, DEADLINE).await;
    assert_eq!(
        request_ids(&receiver),
        set(&["owned"]),
        "nothing refused was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_an_owner_are_counted_while_owned_subscriptions_exist() {
    let tenants = Tenants::start().await;
    let app = spawn_app(&tenants.config()).await;
    let counted = |text: &str| {
        crate::support::events::metric(text, "hookd_events_without_owner_total", &[]).unwrap_or(0.0)
    };
    app.post(&json!({ "request_id": "before", "status": "completed" }))
        .await;
    assert_eq!(
        counted(&app.metrics_text().await),
        0.0,
        "no owned subscription yet"
    );
    owned_subscription(&app, "cust-a-prod", "cust-a", &tenants.a.url()).await;
    app.post(&json!({ "request_id": "after", "status": "completed" }))
        .await;
    app.post(&json!({ "request_id": "owned", "status": "completed", "owner": "cust-a" }))
        .await;
    assert_eq!(counted(&app.metrics_text().await), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_an_owner_removes_its_data_on_every_listing_and_nothing_of_it_is_sent_after() {
    let tenants = Tenants::start().await;
    let app = spawn_app(&tenants.config()).await;
    owned_subscription(&app, "cust-a-prod", "cust-a", &tenants.a.url()).await;
    owned_subscription(&app, "cust-a-dev", "cust-a", &tenants.a.url()).await;
    owned_subscription(&app, "cust-b-prod", "cust-b", &tenants.b.url()).await;

    // Delivered history of both owners.
    app.post(&tenants.batch("done")).await;
    tenants.assert_received(&["done"]).await;
    wait_idle(&app, DEADLINE).await;
    // Then pending work: the provider's subscription is paused, so owner a's events wait there.
    let (status, _) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions/provider/pause",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions/cust-a-prod/pause",
            None,
        )
        .await;
    assert_eq!(status, 200);
    app.post(&json!([
        { "request_id": "held-a", "status": "completed", "owner": "cust-a" },
        { "request_id": "held-b", "status": "completed", "owner": "cust-b" },
    ]))
    .await;
    wait_until("held-b at owner b", DEADLINE, || async {
        request_ids(&tenants.b).contains("held-b").then_some(())
    })
    .await;
    let (events_before, deliveries_before) = app.shared.store.counts().await.expect("counts");

    let (status, erased) = app
        .admin()
        .call(reqwest::Method::DELETE, "/v1/owners/cust-a", None)
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["owner"], "cust-a");
    assert_eq!(erased["subscriptions"], 2, "{erased}");
    assert_eq!(erased["events"], 2, "done-a1 and held-a: {erased}");
    // done-a1: to cust-a-prod, cust-a-dev, provider; held-a: the same three.
    assert_eq!(erased["deliveries"], 6, "{erased}");
    assert!(erased["attempts"].as_u64().unwrap_or(0) >= 3, "{erased}");
    let (events_after, deliveries_after) = app.shared.store.counts().await.expect("counts");
    assert_eq!(events_before - events_after, 2);
    assert_eq!(deliveries_before - deliveries_after, 6);

    // Nothing of owner a in any listing.
    let all = app.admin().get_ok("/v1/deliveries?limit=1000").await;
    let all = all["deliveries"].as_array().expect("deliveries").clone();
    assert!(all.iter().all(|d| d["owner"] != "cust-a"), "{all:?}");
    assert!(
        all.iter().all(|d| !d["subscription"]
            .as_str()
            .unwrap_or("")
            .starts_with("cust-a")),
        "{all:?}"
    );
    let listed = app.admin().get_ok("/v1/deliveries?owner=cust-a").await;
    assert_eq!(
        listed["deliveries"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let subscriptions = app.admin().get_ok("/v1/subscriptions").await;
    let ids: BTreeSet<&str> = subscriptions["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from(["adhoc", "cust-b-prod", "provider"]));
    // Nor in the export.
    let (page, _) = app.shared.store.export(None, 1000).await.expect("export");
    let exported = serde_json::to_string(&page).expect("JSON");
    assert!(!exported.contains("cust-a"), "{exported}");
    assert!(
        exported.contains("cust-b"),
        "owner b is untouched: {exported}"
    );

    // Nothing of it is sent after: the provider's held delivery of held-a is gone.
    let before = tenants.provider.count();
    let (status, _) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions/provider/resume",
            None,
        )
        .await;
    assert_eq!(status, 200);
    wait_until("held-b at the provider", DEADLINE, || async {
        request_ids(&tenants.provider)
            .contains("held-b")
            .then_some(())
    })
    .await;
    wait_idle(&app, DEADLINE).await;
    let sent: Vec<String> = tenants.provider.received()[before..]
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(sent.iter().all(|b| !b.contains("held-a")), "{sent:?}");

    // A second erasure finds nothing; owner b's data is whole.
    let (status, again) = app
        .admin()
        .call(reqwest::Method::DELETE, "/v1/owners/cust-a", None)
        .await;
    assert_eq!(status, 200);
    for key in ["subscriptions", "events", "deliveries", "attempts"] {
        assert_eq!(again[key], 0, "{key}: {again}");
    }
    let b = app
        .admin()
        .get_ok("/v1/deliveries?owner=cust-b&limit=100")
        .await;
    // b1: cust-b-prod and the provider; b2: the same and its URL; held-b: the first two.
    assert_eq!(b["deliveries"].as_array().map(Vec::len), Some(7), "{b}");
    let (status, body) = app
        .admin()
        .call(reqwest::Method::DELETE, "/v1/owners/%20x", None)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "owner");
}

/// A portal page's status and HTML.
async fn portal_page(app: &TestApp, url: &str) -> (u16, String) {
    let response = app.client.get(url).send().await.expect("portal page");
    let status = response.status().as_u16();
    (status, response.text().await.expect("page body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_id_taken_again_by_another_owner_inherits_nothing_of_the_first() {
    let (a, b) = (TestReceiver::start().await, TestReceiver::start().await);
    let app = spawn_app("[delivery]\nretry_schedule = [\"200ms\"]\n").await;
    // Owner a's suba, paused, with one delivered and one queued delivery.
    owned_subscription(&app, "suba", "cust-a", &a.url()).await;
    let (_, first) = app
        .post(&json!({ "request_id": "a-delivered", "status": "completed", "owner": "cust-a" }))
        .await;
    a.wait_for(1, DEADLINE).await;
    wait_idle(&app, DEADLINE).await;
    let (status, _) = app
        .admin()
        .call(reqwest::Method::POST, "/v1/subscriptions/suba/pause", None)
        .await;
    assert_eq!(status, 200);
    let (_, queued) = app
        .post(
            &json!({ "request_id": "a-queued", "status": "completed", "owner": "cust-a",
                       "result": { "items": [{ "url": "https://cdn.example/a-private.mp4" }] } }),
        )
        .await;
    let a_delivered =
        crate::support::events::delivery_ids(&app, first["event_id"].as_str().unwrap()).await;
    let a_queued =
        crate::support::events::delivery_ids(&app, queued["event_id"].as_str().unwrap()).await;
    let (status, _) = app
        .admin()
        .call(reqwest::Method::DELETE, "/v1/subscriptions/suba", None)
        .await;
    assert_eq!(status, 204);

    // The deleted subscription's queued delivery ended, and says why.
    let (status, ended) = app
        .admin()
        .call(
            reqwest::Method::GET,
            &format!("/v1/deliveries/{}", a_queued[0]),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ended["state"], "dead", "{ended}");
    assert!(
        ended["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("was deleted"),
        "{ended}"
    );

    // Owner b takes the id.
    owned_subscription(&app, "suba", "cust-b", &b.url()).await;
    let (_, shown) = app
        .admin()
        .call(reqwest::Method::GET, "/v1/subscriptions/suba", None)
        .await;
    assert_eq!(
        shown["paused"], false,
        "the new suba inherits no pause: {shown}"
    );
    assert_eq!(shown["consecutive_failures"], 0, "{shown}");

    // b's portal shows none of a's deliveries, listed, searched or typed in.
    let portal = app.admin().portal_link("cust-b").await;
    for path in [
        "/deliveries",
        "/deliveries?subscription=suba",
        "/deliveries?q=a-queued",
        "/deliveries?q=a-delivered",
    ] {
        let (_, html) = portal_page(&app, &format!("{portal}{path}")).await;
        for id in a_delivered.iter().chain(&a_queued) {
            assert!(
                !html.contains(id.as_str()),
                "{path} lists owner a's {id}:\n{html}"
            );
        }
        assert!(!html.contains("a-private"), "{path}:\n{html}");
    }
    for id in a_delivered.iter().chain(&a_queued) {
        let (status, html) = portal_page(&app, &format!("{portal}/deliveries/{id}")).await;
        assert_eq!(status, 404, "owner a's {id} through b's portal:\n{html}");
    }

    // Requeued by an operator, a's delivery still never reaches b's endpoint.
    let (status, body) = app
        .admin()
        .call(
            reqwest::Method::POST,
            &format!("/v1/deliveries/{}/retry", a_queued[0]),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, fresh) = app
        .post(&json!({ "request_id": "b-own", "status": "completed", "owner": "cust-b" }))
        .await;
    assert_eq!(fresh["deliveries"], 1);
    b.wait_for(1, DEADLINE).await;
    wait_idle(&app, DEADLINE).await;
    assert_eq!(
        request_ids(&b),
        set(&["b-own"]),
        "b's endpoint got owner a's event"
    );
    let (_, again) = app
        .admin()
        .call(
            reqwest::Method::GET,
            &format!("/v1/deliveries/{}", a_queued[0]),
            None,
        )
        .await;
    assert_eq!(again["state"], "dead", "{again}");
    assert!(
        again["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("not sent"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_adds_at_most_max_subscriptions_per_owner_and_the_admin_api_more() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("[portal]\nmax_subscriptions_per_owner = 2\n").await;
    let portal = app.admin().portal_link("cust-a").await;
    let (_, form) = portal_page(&app, &format!("{portal}/subscriptions/new")).await;
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's csrf")
        .to_string();
    let origin = format!("http://{}", app.api);
    let add = |id: String| {
        let (client, url, csrf, origin, target) = (
            app.client.clone(),
            format!("{portal}/subscriptions"),
            csrf.clone(),
            origin.clone(),
            receiver.url(),
        );
        async move {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("csrf", csrf.as_str()),
                    ("url", target.as_str()),
                    ("events", "*"),
                    ("id", id.as_str()),
                    ("signature", "abstrakt"),
                ])
                .finish();
            let response = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", origin)
                .body(body)
                .send()
                .await
                .expect("post the form");
            let status = response.status().as_u16();
            (status, response.text().await.expect("page"))
        }
    };
    for i in 0..2 {
        let (status, html) = add(format!("a-{i}")).await;
        assert_eq!(status, 200, "{html}");
    }
    let (status, html) = add("a-2".to_string()).await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("the most this portal allows (2)"), "{html}");
    let listed = app.admin().get_ok("/v1/subscriptions?owner=cust-a").await;
    assert_eq!(
        listed["subscriptions"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // The admin API is not limited.
    owned_subscription(&app, "a-admin", "cust-a", &receiver.url()).await;
}

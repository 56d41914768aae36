//! The audit log of the dashboard's and the portal's changes: each is found in `GET /v1/audit`
//! with who made it (`dashboard:<token name>`, `portal:<owner>`); the Audit page lists them
//! for an operator, and a portal lists only its owner's, in its words, without another
//! owner's ids or the operator's token names.

use super::*;

/// `(actor, action, object)` of each entry of `GET /v1/audit`, newest first.
async fn log(hookd: &Hookd) -> Vec<(String, String, String)> {
    let (status, answer) = hookd
        .api(Method::GET, "/v1/audit?limit=1000", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    answer["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (s(&e["actor"]), s(&e["action"]), s(&e["object"])))
        .collect()
}

fn entry(actor: &str, action: &str, object: &str) -> (String, String, String) {
    (actor.into(), action.into(), object.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_portal_changes_are_in_the_audit_log_with_their_actor() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "[ui]\ntitle = \"Example Webhooks\"\n").await;
    for (id, owner) in [("acme-sub", "acme"), ("globex-sub", "globex")] {
        hookd
            .create_subscription(
                json!({ "id": id, "owner": owner, "url": receiver.url(), "events": ["*"] }),
            )
            .await;
    }
    let session = hookd.sign_in().await;
    for step in ["pause", "resume"] {
        let answer = hookd
            .action(&session, &format!("/ui/subscriptions/acme-sub/{step}"))
            .await;
        assert_eq!(answer.status, 303, "{step}: {}", answer.body);
    }
    let edited = hookd
        .edit_subscription(
            &session,
            "globex-sub",
            &format!("{}/v2", receiver.url()),
            &[("events", "*")],
        )
        .await;
    assert_eq!(edited.status, 303, "edit: {}", edited.body);

    let portal = hookd.portal_link("acme", "1h").await;
    let csrf = hookd
        .get(&format!("{portal}/subscriptions/acme-sub"), None)
        .await
        .csrf();
    let paused = hookd
        .portal_form(
            &format!("{portal}/subscriptions/acme-sub/pause"),
            &csrf,
            &[],
        )
        .await;
    assert_eq!(paused.status, 303, "portal pause: {}", paused.body);
    let created = hookd
        .portal_form(
            &format!("{portal}/subscriptions"),
            &csrf,
            &[
                ("url", &receiver.url()),
                ("events", "*"),
                ("other_events", ""),
                ("signature", "abstrakt"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "portal create: {}", created.body);
    let made = portal_created_id(&created, &portal);

    assert_eq!(
        log(&hookd).await,
        vec![
            entry("portal:acme", "created", &made),
            entry("portal:acme", "paused", "acme-sub"),
            entry("token-1", "portal_link_created", "acme"),
            entry("dashboard:token-1", "updated", "globex-sub"),
            entry("dashboard:token-1", "resumed", "acme-sub"),
            entry("dashboard:token-1", "paused", "acme-sub"),
            entry("token-1", "created", "globex-sub"),
            entry("token-1", "created", "acme-sub"),
        ]
    );

    // The operator's Audit page: every entry, with actors; a filter by actor.
    let page = hookd.get("/ui/audit", Some(&session.cookie)).await;
    assert_html(&page, "GET /ui/audit", true);
    for text in [
        "dashboard:token-1",
        "portal:acme",
        "globex-sub",
        "portal link created",
        &made,
    ] {
        assert!(
            page.body.contains(text),
            "{text} on /ui/audit:\n{}",
            page.body
        );
    }
    let filtered = hookd
        .get("/ui/audit?actor=portal%3Aacme", Some(&session.cookie))
        .await;
    assert_eq!(filtered.status, 200);
    assert!(
        filtered.body.contains("portal:acme") && !filtered.body.contains("dashboard:token-1"),
        "{}",
        filtered.body
    );
    let bad = hookd
        .get("/ui/audit?since=soon", Some(&session.cookie))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("Since must be a date"), "{}", bad.body);
    assert_eq!(
        hookd.get("/ui/audit", None).await.status,
        303,
        "signed out: to sign-in"
    );

    // acme's portal: its own entries, in its words; no token names, no other owner's ids.
    let mine = hookd.get(&format!("{portal}/audit"), None).await;
    assert_html(&mine, "the portal's Audit page", false);
    for text in [
        "You",
        "Example Webhooks",
        "Deliveries paused",
        "Deliveries resumed",
        "Subscription created",
        "Link to this page made",
        "acme-sub",
        &made,
    ] {
        assert!(
            mine.body.contains(text),
            "{text} on acme's audit page:\n{}",
            mine.body
        );
    }
    for hidden in [
        "globex",
        "token-1",
        "dashboard",
        "portal:",
        "portal_link",
        "secret",
    ] {
        assert!(
            !mine.body.contains(hidden),
            "{hidden} on acme's audit page:\n{}",
            mine.body
        );
    }
    // Its query cannot widen it to another owner.
    let widened = hookd
        .get(&format!("{portal}/audit?owner=globex&actor=token-1"), None)
        .await;
    assert!(
        !widened.body.contains("globex") && widened.body.contains("acme-sub"),
        "{}",
        widened.body
    );

    // globex's portal sees its own change and nothing of acme's.
    let theirs = hookd.portal_link("globex", "1h").await;
    let other = hookd.get(&format!("{theirs}/audit"), None).await;
    assert_html(&other, "globex's Audit page", false);
    assert!(
        other.body.contains("globex-sub") && other.body.contains("Settings changed"),
        "{}",
        other.body
    );
    for hidden in ["acme", &made, "You"] {
        assert!(
            !other.body.contains(hidden),
            "{hidden} on globex's audit page:\n{}",
            other.body
        );
    }
}

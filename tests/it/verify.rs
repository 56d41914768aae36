//! `hookd verify` through the built binary, on what hookd really sent: a delivery to a
//! [`TestReceiver`] gives the headers and body, then each way a receiver gets it wrong (a
//! renamed header, a re-serialized body, the wrong secret, an old timestamp) must show its own
//! reason and exit code 1; a body it verifies exits 0; bad usage exits 2.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookd::signing::{abstrakt_signature, standard_key, standard_signature};
use serde_json::json;

use crate::support::app::spawn_app;
use crate::support::cli::{Cli, Run};
use crate::support::events::subscription_toml;
use crate::support::receiver::{Received, TestReceiver};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// `hookd verify --secret-env WEBHOOK_SECRET --header .. -` with `body` on stdin.
async fn verify(secret: &str, headers: &[(String, String)], body: &[u8]) -> Run {
    let mut args = vec![
        "verify".to_string(),
        "--secret-env".to_string(),
        "WEBHOOK_SECRET".to_string(),
    ];
    for (name, value) in headers {
        args.push("--header".to_string());
        args.push(format!("{name}: {value}"));
    }
    args.push("-".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::new(&args)
        .env("WEBHOOK_SECRET", secret)
        .stdin(body)
        .run()
        .await
}

/// The hookd headers and the Standard Webhooks ones of a real delivery.
fn headers_of(received: &Received) -> Vec<(String, String)> {
    [
        "x-abstrakt-signature",
        "x-abstrakt-delivery",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    .iter()
    .map(|name| (name.to_string(), received.header(name).to_string()))
    .collect()
}

/// One real delivery of an event with a fraction, unicode and a slash.
async fn delivered() -> Received {
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&subscription_toml(
        "dev",
        &receiver.url(),
        SECRET,
        &["*"],
        "signature = \"both\"",
    ))
    .await;
    let (status, _) = app
        .post(&json!({
            "request_id": "verify-1",
            "status": "completed",
            "result": {"url": "https://cdn.example/a/b.mp4", "caption": "café"},
            "metrics": {"inference_time": 45.2}
        }))
        .await;
    assert_eq!(status, 202);
    receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0)
}

fn code_and_reason(run: &Run) -> (i32, &str) {
    (run.code, run.stdout.trim())
}

#[tokio::test]
async fn verify_says_why_a_real_delivery_does_not_verify() {
    let got = delivered().await;
    let headers = headers_of(&got);
    let body = got.body.to_vec();

    let run = verify(SECRET, &headers, &body).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("verified: X-Abstrakt-Signature"),
        "{run:#?}"
    );

    let run = verify("another-secret", &headers[..2], &body).await;
    let (code, reason) = code_and_reason(&run);
    assert_eq!(code, 1, "{run:#?}");
    assert!(
        reason.contains("does not match this body under the given secret"),
        "{reason}"
    );
    assert!(!run.stdout.contains("another-secret") && !run.stderr.contains("another-secret"));

    let renamed = vec![(
        "X-Forwarded-Signature".to_string(),
        got.header("x-abstrakt-signature").to_string(),
    )];
    let run = verify(SECRET, &renamed, &body).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("X-Forwarded-Signature looks like it"),
        "{run:#?}"
    );

    let run = verify(SECRET, &[], &body).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("header is missing"), "{run:#?}");

    // A framework that parsed and pretty-printed the body.
    let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let pretty = serde_json::to_vec_pretty(&value).expect("JSON");
    let run = verify(SECRET, &headers[..1], &pretty).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("re-serialized"), "{run:#?}");
    assert!(run.stdout.contains("(spacing)"), "{run:#?}");

    // A framework that wrote "/" as "\/" (PHP's json_encode does).
    let escaped = String::from_utf8(body.clone())
        .expect("UTF-8")
        .replace('/', "\\/");
    let run = verify(SECRET, &headers[..1], escaped.as_bytes()).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("(escapes)"), "{run:#?}");
}

#[tokio::test]
async fn verify_refuses_an_old_standard_webhooks_timestamp() {
    let body = br#"{"request_id":"r","status":"completed"}"#;
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits");
    let key = standard_key(SECRET).expect("whsec");
    let signed_at = |t: i64| {
        vec![
            ("webhook-id".to_string(), "dlv_x".to_string()),
            ("webhook-timestamp".to_string(), t.to_string()),
            (
                "webhook-signature".to_string(),
                standard_signature(std::slice::from_ref(&key), "dlv_x", t, body),
            ),
        ]
    };
    let run = verify(SECRET, &signed_at(now), body).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let run = verify(SECRET, &signed_at(now - 3600), body).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("outside the tolerance"), "{run:#?}");
    assert!(run.stdout.contains("in the past"), "{run:#?}");
}

/// The seed's Express receiver verifies `JSON.stringify(req.body)`: a body signed as sent by
/// something other than hookd (`2.50`, spaces) verifies as raw bytes, with a note that such a
/// receiver refuses it; its `JSON.stringify` does not verify.
#[tokio::test]
async fn verify_explains_the_json_stringify_receiver_with_a_body_hookd_would_not_send() {
    let raw = br#"{"request_id": "r", "status": "completed", "metrics": {"t": 2.50}}"#;
    let header = vec![(
        "X-Abstrakt-Signature".to_string(),
        abstrakt_signature(SECRET.as_bytes(), raw),
    )];
    let run = verify(SECRET, &header, raw).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("note:"), "{run:#?}");
    assert!(run.stdout.contains("JSON.stringify(req.body)"), "{run:#?}");

    let stringified = br#"{"request_id":"r","status":"completed","metrics":{"t":2.5}}"#;
    let run = verify(SECRET, &header, stringified).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("does not match this body"), "{run:#?}");
}

#[tokio::test]
async fn verify_exits_2_on_bad_usage() {
    let run = Cli::new(&["verify", "--secret-env", "NOT_SET_ANYWHERE", "-"])
        .stdin(b"{}")
        .run()
        .await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("NOT_SET_ANYWHERE is not set"),
        "{run:#?}"
    );
    let run = Cli::new(&[
        "verify",
        "--secret-env",
        "WEBHOOK_SECRET",
        "--header",
        "nocolon",
        "-",
    ])
    .env("WEBHOOK_SECRET", "s")
    .stdin(b"{}")
    .run()
    .await;
    assert_eq!(run.code, 2, "{run:#?}");
    let run = Cli::new(&[
        "verify",
        "--secret-env",
        "WEBHOOK_SECRET",
        "/nonexistent/body.json",
    ])
    .env("WEBHOOK_SECRET", "s")
    .run()
    .await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("cannot read"), "{run:#?}");
}

/// The value of the page's hidden `csrf` input.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf input") + 19;
    page[at..].split('"').next().expect("its value").to_string()
}

/// `POST <page>` with the form's csrf token and `fields`, from the page's own origin.
async fn check_page(client: &reqwest::Client, page: &str, fields: &[(&str, &str)]) -> String {
    let form = client
        .get(page)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("page");
    let csrf = csrf_of(&form);
    let origin = url::Url::parse(page)
        .expect("URL")
        .origin()
        .ascii_serialization();
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let response = client
        .post(page)
        .header("origin", origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&all)
                .finish(),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("page")
}

#[tokio::test]
async fn the_portal_check_page_says_why_and_shows_no_secret_nor_another_owners_delivery() {
    let receiver = TestReceiver::start().await;
    let app = spawn_app("").await;
    for (id, owner) in [("sub-a", "cust-a"), ("sub-b", "cust-b")] {
        let (status, body) = app
            .admin()
            .call(
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(json!({ "id": id, "owner": owner, "url": receiver.url(), "events": ["*"], "secret": format!("{id}-s3cret") })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for owner in ["cust-a", "cust-b"] {
        let (status, _) = app
            .post(&json!({ "request_id": owner, "status": "completed", "owner": owner, "metrics": {"t": 1.5} }))
            .await;
        assert_eq!(status, 202);
    }
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let of = |owner: &str| {
        got.iter()
            .find(|r| String::from_utf8_lossy(&r.body).contains(&format!("\"{owner}\"")))
            .expect("delivered")
            .clone()
    };
    let (a, b) = (of("cust-a"), of("cust-b"));
    let pasted = |r: &Received| {
        format!(
            "X-Abstrakt-Signature: {}\nX-Abstrakt-Delivery: {}\n",
            r.header("x-abstrakt-signature"),
            r.header("x-abstrakt-delivery")
        )
    };
    let link = app.admin().portal_link("cust-a").await;
    let page = format!("{link}/check");
    let client = reqwest::Client::new();
    let body_a = String::from_utf8(a.body.to_vec()).expect("UTF-8");

    let answer = check_page(
        &client,
        &page,
        &[("headers", &pasted(&a)), ("body", &body_a)],
    )
    .await;
    assert!(answer.contains("It verifies"), "{answer}");
    assert!(answer.contains("current secret"), "{answer}");

    // JSON.stringify(JSON.parse(body), null, 2): re-serialized with spaces.
    let value: serde_json::Value = serde_json::from_str(&body_a).expect("JSON");
    let pretty = serde_json::to_string_pretty(&value).expect("JSON");
    let answer = check_page(
        &client,
        &page,
        &[("headers", &pasted(&a)), ("body", &pretty)],
    )
    .await;
    assert!(answer.contains("re-serialized"), "{answer}");
    assert!(
        answer.contains("first difference at byte 1 (spacing)"),
        "{answer}"
    );

    let other_body = body_a.replace("cust-a", "cust-z");
    let answer = check_page(
        &client,
        &page,
        &[("headers", &pasted(&a)), ("body", &other_body)],
    )
    .await;
    assert!(answer.contains("not this delivery"), "{answer}");

    let (status, rotated) = app
        .admin()
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions/sub-a/rotate-secret",
            Some(json!({ "previous_expires_in": "1h" })),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"]
        .as_str()
        .expect("the new secret")
        .to_string();
    let answer = check_page(
        &client,
        &page,
        &[("headers", &pasted(&a)), ("body", &body_a)],
    )
    .await;
    assert!(answer.contains("previous secret"), "{answer}");
    assert!(
        !answer.contains(&new_secret) && !answer.contains("s3cret"),
        "no secret on the page"
    );

    let body_b = String::from_utf8(b.body.to_vec()).expect("UTF-8");
    let answer = check_page(
        &client,
        &page,
        &[("headers", &pasted(&b)), ("body", &body_b)],
    )
    .await;
    assert!(
        answer.contains("There is no delivery"),
        "another owner's is absent: {answer}"
    );
    assert!(!answer.contains("sub-b"), "nothing of it shows: {answer}");
}

#[tokio::test]
async fn verify_names_the_previous_secret_during_a_rotation() {
    let body = br#"{"request_id":"r","status":"completed"}"#;
    let header = format!(
        "X-Abstrakt-Signature: {}",
        abstrakt_signature(b"the-old-secret", body)
    );
    let run = Cli::new(&[
        "verify",
        "--secret-env",
        "WEBHOOK_SECRET",
        "--previous-secret-env",
        "OLD_WEBHOOK_SECRET",
        "--header",
        &header,
        "-",
    ])
    .env("WEBHOOK_SECRET", SECRET)
    .env("OLD_WEBHOOK_SECRET", "the-old-secret")
    .stdin(body)
    .run()
    .await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("under the previous secret"), "{run:#?}");
    assert!(!run.stdout.contains("the-old-secret"), "{run:#?}");
}

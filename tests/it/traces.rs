//! OpenTelemetry traces (`[traces]`): spans for ingest, each event and each attempt reach an
//! OTLP collector on loopback, linked by the event and delivery ids; `traceparent` on
//! deliveries; nothing when off.

use std::time::Duration;

use serde_json::json;

use hookd::store::DeliveryState;

use crate::support::app::spawn_app;
use crate::support::events::{delivery_ids, delivery_toml, subscription_toml, wait_for_state};
use crate::support::otlp::{SpanRecord, TestCollector};
use crate::support::process::HookdProcess;
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;

/// The trace id an event's spans carry: its id's ULID, as hex.
fn event_trace_id(event_id: &str) -> String {
    let ulid =
        ulid::Ulid::from_string(event_id.strip_prefix("evt_").expect("evt_ id")).expect("a ULID");
    format!("{:032x}", ulid.0)
}

fn traces_toml(collector: &TestCollector, extra: &str) -> String {
    format!(
        "[traces]\notlp_endpoint = {:?}\ntraceparent = true\n{extra}\n\n",
        collector.endpoint()
    )
}

fn named<'a>(spans: &'a [SpanRecord], name: &str) -> Vec<&'a SpanRecord> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Stops `app` (which exports what is buffered), then the spans once `attempts` attempt spans
/// have arrived.
async fn stop_and_collect(
    mut app: crate::support::app::TestApp,
    collector: &TestCollector,
    attempts: usize,
) -> Vec<SpanRecord> {
    app.stop().await;
    wait_until(
        "the spans to be exported",
        Duration::from_secs(10),
        || async {
            let spans = collector.spans();
            (named(&spans, "hookd.attempt").len() >= attempts).then_some(spans)
        },
    )
    .await
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_event_and_attempt_spans_reach_the_collector_linked_by_ids_across_a_restart() {
    let collector = TestCollector::start().await;
    let receiver = TestReceiver::start().await;
    receiver.plan([Reply::Status(500)]);
    let app = spawn_app(&format!(
        "{}{}{}",
        traces_toml(
            &collector,
            "otlp_headers = { \"Authorization\" = \"Bearer otlp-token\" }"
        ),
        delivery_toml(&["2s"], ""),
        subscription_toml("traced", &receiver.url(), "s3cret", &["*"], ""),
    ))
    .await;
    let response = app
        .client
        .post(format!("http://{}/v1/events", app.api))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(json!({ "request_id": "job-t1", "status": "completed" }).to_string())
        .send()
        .await
        .expect("ingest");
    assert_eq!(response.status().as_u16(), 202);
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("json");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    let trace = event_trace_id(&event_id);
    let delivery = delivery_ids(&app, &event_id).await.remove(0);
    // The first attempt fails; hookd stops before the retry and makes it after its restart:
    // the retry's span still joins the event's trace, though nothing about it was stored.
    wait_until(
        "the first attempt to fail",
        Duration::from_secs(10),
        || async {
            let d = app.shared.store.delivery(&delivery).await.expect("read")?;
            (d.attempts == 1 && d.state == DeliveryState::Scheduled).then_some(())
        },
    )
    .await;
    let app = app.restart().await;
    wait_for_state(
        &app,
        &delivery,
        DeliveryState::Delivered,
        Duration::from_secs(15),
    )
    .await;
    let spans = stop_and_collect(app, &collector, 2).await;

    for headers in collector.exports() {
        assert_eq!(headers["authorization"], "Bearer otlp-token");
        assert_eq!(headers["content-type"], "application/x-protobuf");
    }
    assert!(spans.iter().all(|s| s.service == "hookd"), "{spans:?}");

    let ingest = named(&spans, "POST /v1/events");
    assert_eq!(ingest.len(), 1, "{spans:?}");
    let ingest = ingest[0];
    assert_eq!(
        (ingest.trace_id.as_str(), ingest.parent_span_id.as_str()),
        (CALLER_TRACE, CALLER_SPAN),
        "the ingest span continues the caller's traceparent"
    );
    assert_eq!(ingest.kind, 2, "server");
    assert_eq!(ingest.attr("http.response.status_code"), "202");
    assert_eq!(ingest.attr("hookd.event_id"), event_id);

    let events = named(&spans, "hookd.event");
    assert_eq!(events.len(), 1, "{spans:?}");
    let event = events[0];
    assert_eq!(event.trace_id, trace, "the event's trace id is its ULID");
    assert_eq!(
        event.parent_span_id, "",
        "the event's span is its trace's root"
    );
    assert_eq!(event.attr("hookd.event_id"), event_id);
    assert_eq!(event.attr("hookd.deliveries"), "1");
    assert_eq!(
        event.links,
        [(ingest.trace_id.clone(), ingest.span_id.clone())]
    );
    assert_eq!(
        ingest.links,
        [(event.trace_id.clone(), event.span_id.clone())]
    );

    let mut attempts = named(&spans, "hookd.attempt");
    attempts.sort_by_key(|s| s.attr("hookd.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:?}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.trace_id, trace);
        assert_eq!(
            attempt.parent_span_id, event.span_id,
            "a child of its event"
        );
        assert_eq!(attempt.kind, 3, "client");
        assert_eq!(attempt.attr("hookd.delivery_id"), delivery);
        assert_eq!(attempt.attr("hookd.event_id"), event_id);
        assert_eq!(attempt.attr("hookd.subscription"), "traced");
        assert_eq!(attempt.attr("hookd.attempt"), (n + 1).to_string());
        assert_eq!(attempt.attr("server.address"), "127.0.0.1");
    }
    assert_eq!(
        (
            attempts[0].attr("http.response.status_code"),
            attempts[0].attr("hookd.next"),
            attempts[0].status
        ),
        ("500".to_string(), "retry".to_string(), 2)
    );
    assert_eq!(
        (
            attempts[1].attr("http.response.status_code"),
            attempts[1].attr("hookd.next"),
            attempts[1].status
        ),
        ("200".to_string(), "delivered".to_string(), 0)
    );

    // Each request named its own attempt's span.
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    for (request, attempt) in received.iter().zip(&attempts) {
        assert_eq!(
            request.header("traceparent"),
            format!("00-{trace}-{}-01", attempt.span_id)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_links_its_request_to_each_event_and_a_repeat_makes_no_second_event_span() {
    let collector = TestCollector::start().await;
    let receiver = TestReceiver::start().await;
    let app = spawn_app(&format!(
        "{}{}",
        traces_toml(&collector, ""),
        subscription_toml("batch", &receiver.url(), "s", &["*"], ""),
    ))
    .await;
    let (status, body) = app
        .post(&json!([
            { "request_id": "job-b1", "status": "completed" },
            { "request_id": "job-b2", "status": "failed" },
        ]))
        .await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<String> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["event_id"].as_str().expect("id").to_string())
        .collect();
    let (status, _) = app
        .post(&json!({ "request_id": "job-b1", "status": "completed" }))
        .await;
    assert_eq!(status, 200, "a repeat");
    receiver.wait_for(2, Duration::from_secs(10)).await;
    let spans = stop_and_collect(app, &collector, 2).await;

    let events = named(&spans, "hookd.event");
    assert_eq!(
        events.len(),
        2,
        "one per new event, none for the repeat: {spans:?}"
    );
    let mut ingests = named(&spans, "POST /v1/events");
    assert_eq!(ingests.len(), 2);
    ingests.sort_by_key(|s| std::cmp::Reverse(s.attr("hookd.events")));
    let (batch, repeat) = (ingests[0], ingests[1]);
    assert_eq!(batch.attr("hookd.events"), "2");
    assert_eq!(batch.parent_span_id, "", "no traceparent: a root");
    assert_eq!(repeat.attr("http.response.status_code"), "200");
    for id in &ids {
        let event = events
            .iter()
            .find(|e| e.attr("hookd.event_id") == *id)
            .expect("the event's span");
        assert_eq!(event.trace_id, event_trace_id(id));
        let link = (event.trace_id.clone(), event.span_id.clone());
        assert!(batch.links.contains(&link), "{batch:?}");
        assert_eq!(
            event.links,
            [(batch.trace_id.clone(), batch.span_id.clone())]
        );
        let attempt = named(&spans, "hookd.attempt")
            .into_iter()
            .find(|a| a.attr("hookd.event_id") == *id)
            .expect("the attempt's span");
        assert_eq!(
            (&attempt.trace_id, &attempt.parent_span_id),
            (&event.trace_id, &event.span_id)
        );
    }
    // The repeat is linked to the span the event got when first accepted.
    let first = events
        .iter()
        .find(|e| e.attr("hookd.event_id") == ids[0])
        .expect("first event");
    assert_eq!(
        repeat.links,
        [(first.trace_id.clone(), first.span_id.clone())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_and_a_zero_ratio_exports_nothing_while_traceparent_still_names_the_event() {
    // As shipped: no [traces], no header.
    let plain = TestReceiver::start().await;
    let app = spawn_app(&subscription_toml("plain", &plain.url(), "s", &["*"], "")).await;
    let (status, _) = app
        .post(&json!({ "request_id": "job-o1", "status": "completed" }))
        .await;
    assert_eq!(status, 202);
    let received = plain.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        received[0].header("traceparent"),
        "",
        "no traceparent unless asked"
    );
    assert!(!app.shared.traces.exporting());
    drop(app);

    // Sampled out: nothing reaches the collector, but the header still carries the event's
    // trace, unsampled.
    let collector = TestCollector::start().await;
    let receiver = TestReceiver::start().await;
    let mut app = spawn_app(&format!(
        "{}{}",
        traces_toml(&collector, "sample_ratio = 0.0"),
        subscription_toml("sampled-out", &receiver.url(), "s", &["*"], ""),
    ))
    .await;
    let (status, body) = app
        .post(&json!({ "request_id": "job-o2", "status": "completed" }))
        .await;
    assert_eq!(status, 202);
    let event_id = body["event_id"].as_str().expect("id").to_string();
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    let header = received[0].header("traceparent").to_string();
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", event_trace_id(&event_id).as_str(), "00"),
        "{header}"
    );
    // Stopping flushes whatever was buffered: there was nothing.
    app.stop().await;
    assert!(collector.spans().is_empty(), "{:?}", collector.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_its_spans_when_stopped_by_sigterm() {
    let collector = TestCollector::start().await;
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hookd = HookdProcess::start(
        dir.path(),
        &format!(
            "{}{}",
            traces_toml(&collector, "service_name = \"hookd-eu-1\""),
            subscription_toml("bin", &receiver.url(), "s", &["*"], ""),
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(hookd.events_url())
        .header("content-type", "application/json")
        .body(json!({ "request_id": "job-p1", "status": "completed" }).to_string())
        .send()
        .await
        .expect("ingest");
    assert_eq!(response.status().as_u16(), 202);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    hookd.process.signal("TERM");
    let status = hookd.process.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let spans = collector.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for name in ["POST /v1/events", "hookd.event", "hookd.attempt"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(spans.iter().all(|s| s.service == "hookd-eu-1"));
}

#[test]
fn bad_traces_settings_are_config_errors() {
    let errors = |traces: &str| -> Vec<(String, String)> {
        match hookd::Config::from_toml(&format!("[traces]\n{traces}\n"), "hookd.toml") {
            Ok(_) => Vec::new(),
            Err(hookd::config::ConfigError::Invalid(d)) => {
                d.into_iter().map(|d| (d.key, d.message)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    };
    let key_of =
        |traces: &str| -> Vec<String> { errors(traces).into_iter().map(|(key, _)| key).collect() };
    assert_eq!(
        key_of("otlp_endpoint = \"collector:4318\""),
        ["traces.otlp_endpoint"]
    );
    assert_eq!(
        key_of("otlp_endpoint = \"ftp://127.0.0.1/\""),
        ["traces.otlp_endpoint"]
    );
    let with_password = errors("otlp_endpoint = \"https://user:hunter2@otel.internal\"");
    assert_eq!(with_password.len(), 1);
    assert_eq!(with_password[0].0, "traces.otlp_endpoint");
    assert!(
        !with_password[0].1.contains("hunter2"),
        "{}",
        with_password[0].1
    );
    assert_eq!(key_of("sample_ratio = 1.5"), ["traces.sample_ratio"]);
    assert_eq!(key_of("sample_ratio = -0.1"), ["traces.sample_ratio"]);
    assert_eq!(key_of("service_name = \" \""), ["traces.service_name"]);
    assert_eq!(
        key_of("otlp_headers = { \"Bad Name\" = \"x\" }"),
        ["traces.otlp_headers.Bad Name"]
    );
    assert_eq!(
        key_of("otlp_headers = { \"Authorization\" = { env = \"HOOKD_TEST_UNSET_OTLP_AUTH\" } }"),
        ["traces.otlp_headers.Authorization"]
    );
    assert_eq!(
        key_of("endpoint = \"http://127.0.0.1:4318\""),
        ["traces.endpoint"]
    );
    // Accepted: the base URL gets /v1/traces; a full one is kept.
    for (given, used) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        (
            "https://otel.internal/otlp/",
            "https://otel.internal/otlp/v1/traces",
        ),
        (
            "http://127.0.0.1:4318/v1/traces",
            "http://127.0.0.1:4318/v1/traces",
        ),
    ] {
        let config = hookd::Config::from_toml(
            &format!("[traces]\notlp_endpoint = {given:?}\n"),
            "hookd.toml",
        )
        .expect("valid");
        assert_eq!(config.traces.endpoint.expect("endpoint").as_str(), used);
    }
    let config = hookd::Config::from_toml("", "hookd.toml").expect("valid");
    assert!(config.traces.endpoint.is_none() && !config.traces.traceparent);
}

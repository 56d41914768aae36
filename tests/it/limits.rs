//! Limits on what clients and receivers can cost hookd: slow or oversized requests on the API
//! listener, and receivers that stream endlessly or drip their answer.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use hookd::store::DeliveryState;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::{spawn_app, spawn_app_full, TestApp};
use crate::support::events::{delivery_ids, subscription_toml, wait_for_state};

async fn app_with_short_timeouts() -> TestApp {
    spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"300ms\"\nbody_read_timeout = \"300ms\"\n\
             max_header_bytes = 8192\n[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {store}\n"
        )
    })
    .await
}

/// Reads until the server closes the connection or `deadline` passes; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        let left = deadline.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = app_with_short_timeouts().await;
    let mut stream = TcpStream::connect(app.api).await.unwrap();
    stream
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.is_some(), "the connection was still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408() {
    let app = app_with_short_timeouts().await;
    let mut stream = TcpStream::connect(app.api).await.unwrap();
    stream
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"request_id\":")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer within 5 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout"), "{answer}");
    assert_eq!(app.shared.store.counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let app = app_with_short_timeouts().await;
    let response = app
        .client
        .post(format!("http://{}/v1/events", app.api))
        .header("x-padding", "a".repeat(20_000))
        .body(json!({"request_id": "r", "status": "completed"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(app.shared.store.counts().await.unwrap(), (0, 0));
}

/// A receiver whose answer to every delivery is a 200 with an endless body.
async fn endless_receiver() -> String {
    let app = Router::new().route(
        "/hook",
        post(|| async {
            let chunks = futures_chunks();
            axum::response::Response::new(Body::from_stream(chunks))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// 64 KiB chunks, forever (until the reader goes away).
fn futures_chunks() -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::repeat_with(|| Ok(vec![b'x'; 64 * 1024]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_response_costs_one_kibibyte_and_no_time() {
    let url = endless_receiver().await;
    let app = spawn_app(&subscription_toml(
        "endless",
        &url,
        "s",
        &["*"],
        "timeout = \"5s\"",
    ))
    .await;
    let started = Instant::now();
    let (status, body) = app
        .post(&json!({"request_id": "r", "status": "completed"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = delivery_ids(&app, body["event_id"].as_str().unwrap())
        .await
        .remove(0);
    wait_for_state(&app, &id, DeliveryState::Delivered, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let attempts = app.shared.store.attempts(&id).await.unwrap();
    let excerpt = attempts[0].response_excerpt.as_deref().unwrap_or("");
    assert_eq!(excerpt.len(), 1024, "the excerpt is cut at 1 KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_response_is_cut_at_the_timeout() {
    let app = Router::new().route(
        "/hook",
        post(|| async {
            let drip = futures_util::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Some((Ok::<_, std::io::Error>(vec![b'.']), n + 1))
            });
            axum::response::Response::new(Body::from_stream(drip))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let app = spawn_app(&format!(
        "[delivery]\nretry_schedule = []\n\n{}",
        subscription_toml(
            "drip",
            &format!("http://{addr}/hook"),
            "s",
            &["*"],
            "timeout = \"600ms\""
        )
    ))
    .await;
    let (status, body) = app
        .post(&json!({"request_id": "r", "status": "completed"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = delivery_ids(&app, body["event_id"].as_str().unwrap())
        .await
        .remove(0);
    wait_for_state(&app, &id, DeliveryState::Dead, Duration::from_secs(5)).await;
    let attempts = app.shared.store.attempts(&id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_str(), "timeout");
    assert_eq!(attempts[0].status_code, Some(200));
    assert!(
        attempts[0].duration_ms >= 550 && attempts[0].duration_ms < 2000,
        "{:?}",
        attempts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    if crate::support::embedded_only(
        "it checks the modes of the store's files; a database has no files of hookd's",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hookd = crate::support::process::HookdProcess::start(dir.path(), "").await;
    let response = reqwest::Client::new()
        .post(hookd.events_url())
        .header("content-type", "application/json")
        .body(json!({"request_id": "r", "status": "completed", "webhook_url": "http://127.0.0.1:9/h", "webhook_secret": "per-request-secret"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mut checked = 0;
    let mut pending = vec![dir.path().join("db")];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        checked += 1;
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(checked > 2, "the store should hold files: {checked}");
}

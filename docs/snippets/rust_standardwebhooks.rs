// Verifying hookd's Standard Webhooks headers with the `standardwebhooks` crate, in axum 0.8.
// Cargo.toml: standardwebhooks = "1", axum = "0.8", serde_json = "1"
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use standardwebhooks::Webhook;

/// The handler's state: the verifier, made once with `Webhook::new(whsec_secret)`, and the
/// `webhook-id` values (the delivery ids) already processed (in production: a table with a
/// unique key).
pub struct Receiver {
    pub webhook: Webhook,
    pub processed: Mutex<HashSet<String>>,
}

/// `Router::new().route("/webhook/abstrakt", post(webhook)).with_state(Arc::new(receiver))`.
pub async fn webhook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    // The raw bytes; verify() also refuses a timestamp more than 5 minutes off (a replay).
    if let Err(e) = receiver.webhook.verify(&body, &headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": e.to_string() })));
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid JSON" })));
    };
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    let first_time = match receiver.processed.lock() {
        Ok(mut processed) => processed.insert(id.unwrap_or("").to_string()),
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
    };
    if !first_time {
        // A retry of a delivery already handled: acknowledge it again, do nothing.
        return (StatusCode::OK, Json(json!({ "received": true, "duplicate": true })));
    }
    println!("{} ({})", event["request_id"], event["status"]);
    // Queue the work here and answer at once.
    let answer = json!({ "received": true, "request_id": event["request_id"] });
    (StatusCode::OK, Json(answer))
}

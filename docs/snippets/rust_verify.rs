// Verifying hookd's X-Abstrakt-Signature in Rust, and an axum 0.8 handler that uses it.
// Cargo.toml: hmac = "0.13", sha2 = "0.11", hex = "0.4", axum = "0.8", serde_json = "1"
// (with hmac 0.12 and sha2 0.10, import only `hmac::{Hmac, Mac}`).
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// Whether `signature_hex` (the `X-Abstrakt-Signature` header) is the HMAC-SHA256 of the raw
/// `body` keyed with `secret`. `verify_slice` compares in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// The handler's state: the secret's UTF-8 bytes, and the `X-Abstrakt-Delivery` values
/// already processed (in production: a table with a unique key).
pub struct Receiver {
    pub secret: Vec<u8>,
    pub processed: Mutex<HashSet<String>>,
}

/// `Router::new().route("/webhook/abstrakt", post(webhook)).with_state(Arc::new(receiver))`.
/// `Bytes` is the body exactly as sent.
pub async fn webhook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !verify(&receiver.secret, &body, header("x-abstrakt-signature").unwrap_or("")) {
        let error = json!({ "error": "invalid signature" });
        return (StatusCode::UNAUTHORIZED, Json(error));
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid JSON" })));
    };
    let delivery = header("x-abstrakt-delivery").unwrap_or("").to_string();
    let first_time = match receiver.processed.lock() {
        Ok(mut processed) => processed.insert(delivery),
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

// Verifying hookd's X-Abstrakt-Signature in Rust, and an axum 0.8 handler that uses it.
// Cargo.toml: hmac = "0.13", sha2 = "0.11", hex = "0.4", axum = "0.8", serde_json = "1"
// (with hmac 0.12 and sha2 0.10, import only `hmac::{Hmac, Mac}`).
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
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

/// `Router::new().route("/webhook/abstrakt", post(webhook)).with_state(secret)`, where
/// `secret: Arc<[u8]>` holds the secret's UTF-8 bytes. `Bytes` is the body exactly as sent.
pub async fn webhook(
    State(secret): State<Arc<[u8]>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let signature = headers
        .get("x-abstrakt-signature")
        .and_then(|v| v.to_str().ok());
    if !verify(&secret, &body, signature.unwrap_or("")) {
        return (StatusCode::UNAUTHORIZED, "invalid signature");
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON");
    };
    println!("{} ({})", event["request_id"], event["status"]);
    // Queue the work here (deduplicating on X-Abstrakt-Delivery), then answer at once.
    (StatusCode::OK, "received")
}

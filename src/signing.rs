//! Webhook signatures. Pure functions: no I/O, no clock.
//!
//! The `X-Abstrakt-Signature` header is the lowercase hex HMAC-SHA256 of the body bytes, keyed
//! with the secret's UTF-8 bytes: exactly what the seed's Express and Flask receivers compute.
//!
//! Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-signature` is
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the base64-decoded part of
//! a `whsec_` secret; during a rotation it lists one signature per valid key, space-separated.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What one delivery is signed with.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SigningKeys {
    /// The secret of `X-Abstrakt-Signature`, when that header is sent.
    pub abstrakt: Option<String>,
    /// Standard Webhooks keys (decoded), newest first; empty when those headers are not sent.
    pub standard: Vec<Vec<u8>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKeys {{ abstrakt: {}, standard: {} key(s) }}",
            self.abstrakt.is_some(),
            self.standard.len()
        )
    }
}

/// The HMAC key of a `whsec_` secret.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("the secret does not start with whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
    if key.is_empty() {
        return Err("the key is empty".to_string());
    }
    Ok(key)
}

/// The `webhook-signature` header value for `keys` (newest first).
pub fn standard_signature(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(msg_id.len() + body.len() + 24);
    signed.extend_from_slice(msg_id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| {
            // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
            let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
            mac.update(&signed);
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            )
        })
        .collect();
    signatures.join(" ")
}

/// The secret that keys `X-Abstrakt-Signature` at `now_ms`, given the current secret and, during
/// a rotation, the previous one with the time it stops signing. That header carries a single
/// signature, and the provider's documented receivers compare it with the one secret they
/// hold: signing with the new secret before a receiver has it would refuse every delivery.
/// So the previous secret keeps signing until the rotation is finished (the previous secret
/// removed) or its grace period has ended.
pub fn abstrakt_secret<'a>(
    current: &'a str,
    previous: Option<(&'a str, u64)>,
    now_ms: u64,
) -> &'a str {
    match previous {
        Some((old, expires_ms)) if now_ms < expires_ms => old,
        _ => current,
    }
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn abstrakt_signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Compares two byte strings in time independent of their content and of where they differ:
/// both are hashed first, so even their lengths do not show.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (
        <Sha256 as sha2::Digest>::digest(a),
        <Sha256 as sha2::Digest>::digest(b),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector of the Standard Webhooks reference libraries' tests (libraries/rust/src/lib.rs,
    // test_sign, and the same values in the other languages' suites).
    const SW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SW_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SW_TIMESTAMP: i64 = 1649367553;
    const SW_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn standard_signature_matches_the_reference_vector() {
        let key = standard_key(SW_SECRET).unwrap();
        assert_eq!(
            standard_signature(&[key], SW_ID, SW_TIMESTAMP, SW_BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn rotation_lists_every_key_newest_first() {
        let new = standard_key(SW_SECRET).unwrap();
        let old = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = standard_signature(&[new, old.clone()], SW_ID, SW_TIMESTAMP, SW_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert_eq!(
            parts[1],
            standard_signature(&[old], SW_ID, SW_TIMESTAMP, SW_BODY)
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn the_previous_secret_keys_the_abstrakt_header_until_its_grace_period_ends() {
        // The clock is the argument: one millisecond before, at and after the end.
        let expires = 1_700_000_000_000;
        let during = abstrakt_secret("new", Some(("old", expires)), expires - 1);
        assert_eq!(during, "old");
        assert_eq!(
            abstrakt_secret("new", Some(("old", expires)), expires),
            "new"
        );
        assert_eq!(
            abstrakt_secret("new", Some(("old", expires)), expires + 1),
            "new"
        );
        // Finished (no previous secret): the new one at once.
        assert_eq!(abstrakt_secret("new", None, expires - 1), "new");
    }

    #[test]
    fn standard_keys_need_the_whsec_prefix_and_base64() {
        assert!(standard_key("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(standard_key("whsec_not base64!").is_err());
        assert!(standard_key("whsec_").is_err());
        assert_eq!(standard_key("whsec_AAEC").unwrap(), [0, 1, 2]);
    }

    #[test]
    fn matches_rfc4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            abstrakt_signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matches_openssl_for_a_webhook_body() {
        // printf '%s' '{"request_id":"abc123","status":"completed"}' \
        //   | openssl dgst -sha256 -hmac 'your_secret_here'
        assert_eq!(
            abstrakt_signature(
                b"your_secret_here",
                br#"{"request_id":"abc123","status":"completed"}"#
            ),
            "29f0573e0057fa33ca2d78008e8cdfaf43981b455e312c0fabc5b28c56af70ef"
        );
    }
}

//! Webhook signatures. Pure functions: no I/O, no clock.
//!
//! The `X-Abstrakt-Signature` header is the lowercase hex HMAC-SHA256 of the body bytes, keyed
//! with the secret's UTF-8 bytes: exactly what the seed's Express and Flask receivers compute.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn abstrakt_signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! What a dashboard visitor is, and the signed strings that say so: the admin session cookie
//! and the customer portal link. Both are `<payload>.<mac>` in URL-safe base64, the MAC an
//! HMAC-SHA256 under a key kept in the store ([`crate::store::AdminStore::signing_key`]), so
//! that they outlive a restart and hold on every node sharing the store. Nothing here reads
//! the clock: times are passed in.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The name of the store's key for the dashboard.
pub const KEY_NAME: &str = "ui";
/// The session cookie's name.
pub const COOKIE: &str = "hookd_session";

/// Who is looking: an operator (every subscription and delivery) or one owner's portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Owner(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    /// Random: names the session, for sign-out and its CSRF token.
    n: String,
    /// Expiry, Unix ms.
    e: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PortalClaims {
    o: String,
    e: u64,
    n: String,
}

/// The dashboard's key and the sessions signed out before their expiry.
#[derive(Default)]
pub struct UiState {
    key: tokio::sync::OnceCell<Vec<u8>>,
    /// Signed-out session nonces and their expiry: refused until then.
    revoked: Mutex<HashMap<String, u64>>,
}

fn mac(key: &[u8], purpose: &str, payload: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(purpose.as_bytes());
    m.update(&[0]);
    m.update(payload);
    m.finalize().into_bytes().into()
}

fn sign(key: &[u8], purpose: &str, claims: &impl Serialize) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let tag = URL_SAFE_NO_PAD.encode(mac(key, purpose, payload.as_bytes()));
    format!("{payload}.{tag}")
}

fn verify<T: for<'de> Deserialize<'de>>(key: &[u8], purpose: &str, text: &str) -> Option<T> {
    let (payload, tag) = text.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    m.update(purpose.as_bytes());
    m.update(&[0]);
    m.update(payload.as_bytes());
    // verify_slice compares in constant time.
    m.verify_slice(&tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// A portal link's check, when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalRefusal {
    Invalid,
    Expired,
}

impl UiState {
    /// The key, read from (or made in) the store on first use.
    pub async fn key(
        &self,
        store: &dyn crate::store::Store,
    ) -> Result<&[u8], crate::store::StoreError> {
        self.key
            .get_or_try_init(|| store.signing_key(KEY_NAME))
            .await
            .map(Vec::as_slice)
    }

    /// A new session cookie value lasting until `expires_ms`.
    pub fn new_session(key: &[u8], expires_ms: u64) -> String {
        sign(
            key,
            "session",
            &SessionClaims {
                n: nonce(),
                e: expires_ms,
            },
        )
    }

    /// The session's nonce if `cookie` is a valid, unexpired, not signed-out session.
    pub fn session(&self, key: &[u8], cookie: &str, now_ms: u64) -> Option<String> {
        let claims: SessionClaims = verify(key, "session", cookie)?;
        if now_ms >= claims.e {
            return None;
        }
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        (!revoked.contains_key(&claims.n)).then_some(claims.n)
    }

    /// Refuses `cookie`'s session from now on (sign-out).
    pub fn revoke(&self, key: &[u8], cookie: &str, now_ms: u64) {
        if let Some(claims) = verify::<SessionClaims>(key, "session", cookie) {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.retain(|_, expires| *expires > now_ms);
            revoked.insert(claims.n, claims.e);
        }
    }

    /// A portal token for `owner` lasting until `expires_ms`.
    pub fn new_portal(key: &[u8], owner: &str, expires_ms: u64) -> String {
        sign(
            key,
            "portal",
            &PortalClaims {
                o: owner.to_string(),
                e: expires_ms,
                n: nonce(),
            },
        )
    }

    /// The owner a portal token stands for.
    pub fn portal(key: &[u8], token: &str, now_ms: u64) -> Result<String, PortalRefusal> {
        let claims: PortalClaims = verify(key, "portal", token).ok_or(PortalRefusal::Invalid)?;
        if now_ms >= claims.e {
            return Err(PortalRefusal::Expired);
        }
        Ok(claims.o)
    }
}

/// The CSRF token of a session (its nonce) or a portal link (its token): derived, so nothing
/// is stored, and useless without the key.
pub fn csrf_token(key: &[u8], session: &str) -> String {
    hex::encode(&mac(key, "csrf", session.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_session_holds_until_it_expires_or_is_revoked() {
        let ui = UiState::default();
        let cookie = UiState::new_session(KEY, 2_000);
        let nonce = ui.session(KEY, &cookie, 1_000).expect("valid");
        assert_eq!(ui.session(KEY, &cookie, 2_000), None, "expired");
        assert_eq!(ui.session(b"another key", &cookie, 1_000), None);
        let mut tampered = cookie.clone().into_bytes();
        tampered[3] ^= 1;
        assert_eq!(
            ui.session(KEY, &String::from_utf8(tampered).expect("ascii"), 1_000),
            None
        );
        ui.revoke(KEY, &cookie, 1_500);
        assert_eq!(ui.session(KEY, &cookie, 1_600), None, "signed out");
        assert_ne!(csrf_token(KEY, &nonce), csrf_token(KEY, "other"));
    }

    #[test]
    fn a_portal_token_names_its_owner_until_it_expires() {
        let token = UiState::new_portal(KEY, "acme", 5_000);
        assert_eq!(UiState::portal(KEY, &token, 4_999), Ok("acme".to_string()));
        assert_eq!(
            UiState::portal(KEY, &token, 5_000),
            Err(PortalRefusal::Expired)
        );
        let session = UiState::new_session(KEY, 5_000);
        assert_eq!(
            UiState::portal(KEY, &session, 1),
            Err(PortalRefusal::Invalid),
            "a session cookie is not a portal token"
        );
    }
}

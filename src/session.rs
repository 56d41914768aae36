//! What a dashboard visitor is, and the signed strings that say so: the admin session cookie
//! and the customer portal link. Both are `<payload>.<mac>` in URL-safe base64, the MAC an
//! HMAC-SHA256 under a key kept in the store ([`crate::store::AdminStore::signing_key`]), so
//! that they outlive a restart and hold on every node sharing the store. A session names the
//! admin token that opened it by a keyed fingerprint (never the token) and ends when that token
//! leaves the config; a sign-out is kept in the store, so that it too holds across restarts and
//! nodes. Nothing here reads the clock: times are passed in.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{ApiToken, Scope as TokenScope};
use crate::store::{Store, StoreError};

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
    /// The fingerprint of the admin token that opened it ([`token_fingerprint`]); empty for a
    /// sign-in to an API without tokens.
    t: String,
}

/// A session the cookie stands for: its nonce (for sign-out and its CSRF token) and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub nonce: String,
    pub expires_ms: u64,
    /// The name of the token it was opened with (`None` when the API has no tokens): the
    /// audit log's `dashboard:<name>`.
    pub token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PortalClaims {
    o: String,
    e: u64,
    n: String,
}

/// The dashboard's sessions and portal links: the key that signs them, read from the store once,
/// and the sign-outs this node has seen.
#[derive(Default)]
pub struct Sessions {
    key: tokio::sync::OnceCell<Vec<u8>>,
    /// Signed-out session nonces and their expiry, as the store said: a sign-out is for good,
    /// so the store need not be asked about these again. Whether any other session was signed
    /// out (on another node, before a restart) is the store's to say.
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

impl Sessions {
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

    /// A new session cookie value lasting until `expires_ms`, opened with `token` (empty when
    /// the API has no tokens).
    pub fn new_session(key: &[u8], expires_ms: u64, token: &str) -> String {
        sign(
            key,
            "session",
            &SessionClaims {
                n: nonce(),
                e: expires_ms,
                t: if token.is_empty() {
                    String::new()
                } else {
                    token_fingerprint(key, token)
                },
            },
        )
    }

    /// The session `cookie` stands for, if it is signed with `key`, unexpired at `now_ms` and
    /// opened with a token that `tokens` still holds with the admin scope (or, when `tokens`
    /// is empty, opened without one). Whether it was signed out is [`Sessions::signed_out`]'s.
    pub fn session(key: &[u8], cookie: &str, now_ms: u64, tokens: &[ApiToken]) -> Option<Session> {
        let claims: SessionClaims = verify(key, "session", cookie)?;
        if now_ms >= claims.e {
            return None;
        }
        let (bound, token) = if tokens.is_empty() {
            (claims.t.is_empty(), None)
        } else {
            // Every token is compared, so the time taken does not tell which one matched.
            tokens
                .iter()
                .filter(|t| t.allows(TokenScope::Admin))
                .map(|t| (t, token_fingerprint(key, t.secret.expose())))
                .fold((false, None), |(found, name), (t, f)| {
                    let this = crate::signing::constant_time_eq(f.as_bytes(), claims.t.as_bytes());
                    (found | this, if this { Some(t.name.clone()) } else { name })
                })
        };
        bound.then_some(Session {
            nonce: claims.n,
            expires_ms: claims.e,
            token,
        })
    }

    /// Whether `session` was signed out, on any node, before or after a restart.
    pub async fn signed_out(
        &self,
        store: &dyn Store,
        session: &Session,
    ) -> Result<bool, StoreError> {
        if self.known_revoked(&session.nonce) {
            return Ok(true);
        }
        let revoked = store.session_revoked(&session.nonce).await?;
        if revoked {
            self.remember(session);
        }
        Ok(revoked)
    }

    /// Signs `session` out for good: stored, so that every node refuses it from now on, and
    /// after a restart, until it would have expired.
    pub async fn revoke(
        &self,
        store: &dyn Store,
        session: &Session,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        store
            .revoke_session(&session.nonce, session.expires_ms, now_ms)
            .await?;
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, expires| *expires > now_ms);
        revoked.insert(session.nonce.clone(), session.expires_ms);
        Ok(())
    }

    fn known_revoked(&self, nonce: &str) -> bool {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.contains_key(nonce)
    }

    fn remember(&self, session: &Session) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.insert(session.nonce.clone(), session.expires_ms);
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

/// What a session keeps of the token that opened it: a MAC of the token under the dashboard's
/// key, so that the cookie (readable by whoever holds it) tells nothing about the token.
fn token_fingerprint(key: &[u8], token: &str) -> String {
    hex::encode(&mac(key, "token", token.as_bytes())[..16])
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

    fn admin(token: &str) -> ApiToken {
        ApiToken {
            secret: crate::config::Secret::new(token.to_string()),
            scopes: vec![TokenScope::Admin],
            name: token.to_string(),
        }
    }

    #[test]
    fn a_session_holds_until_it_expires_while_its_token_is_configured() {
        let tokens = [admin("first-token"), admin("second-token")];
        let cookie = Sessions::new_session(KEY, 2_000, "second-token");
        let session = Sessions::session(KEY, &cookie, 1_000, &tokens).expect("valid");
        assert_eq!(session.expires_ms, 2_000);
        assert!(
            !cookie.contains("second-token"),
            "the token is not in the cookie"
        );
        assert_eq!(
            Sessions::session(KEY, &cookie, 2_000, &tokens),
            None,
            "expired"
        );
        assert_eq!(
            Sessions::session(b"another key", &cookie, 1_000, &tokens),
            None
        );
        let mut tampered = cookie.clone().into_bytes();
        tampered[3] ^= 1;
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(Sessions::session(KEY, &tampered, 1_000, &tokens), None);
        assert_eq!(
            Sessions::session(KEY, &cookie, 1_000, &tokens[..1]),
            None,
            "its token was removed"
        );
        let ingest_only = ApiToken {
            scopes: vec![TokenScope::Ingest],
            ..admin("second-token")
        };
        assert_eq!(Sessions::session(KEY, &cookie, 1_000, &[ingest_only]), None);
        assert_eq!(
            Sessions::session(KEY, &cookie, 1_000, &[]),
            None,
            "the API opened"
        );
        let open = Sessions::new_session(KEY, 2_000, "");
        assert!(Sessions::session(KEY, &open, 1_000, &[]).is_some());
        assert_eq!(
            Sessions::session(KEY, &open, 1_000, &tokens),
            None,
            "tokens were configured since"
        );
        assert_ne!(csrf_token(KEY, &session.nonce), csrf_token(KEY, "other"));
    }

    #[test]
    fn a_portal_token_names_its_owner_until_it_expires() {
        let token = Sessions::new_portal(KEY, "acme", 5_000);
        assert_eq!(Sessions::portal(KEY, &token, 4_999), Ok("acme".to_string()));
        assert_eq!(
            Sessions::portal(KEY, &token, 5_000),
            Err(PortalRefusal::Expired)
        );
        let session = Sessions::new_session(KEY, 5_000, "");
        assert_eq!(
            Sessions::portal(KEY, &session, 1),
            Err(PortalRefusal::Invalid),
            "a session cookie is not a portal token"
        );
    }
}

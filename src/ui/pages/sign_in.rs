//! Signing in and out: the admin token's form, the session cookie it sets, and its revocation.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use crate::config::{ApiToken, Scope as TokenScope};
use crate::session::{Sessions, COOKIE};
use crate::state::Shared;
use crate::ui::{html, see_other, store_down, Action};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    open: bool,
    error: Option<String>,
}

pub async fn login_form(State(shared): State<Arc<Shared>>) -> Response {
    let open = shared.config().api.tokens.is_empty();
    html(StatusCode::OK, &LoginPage { open, error: None })
}

fn admin_token(tokens: &[ApiToken], presented: &str) -> bool {
    // Every token is compared, so the time taken does not tell which one matched.
    tokens
        .iter()
        .filter(|t| {
            crate::signing::constant_time_eq(t.secret.expose().as_bytes(), presented.as_bytes())
        })
        .fold(false, |ok, t| ok | t.allows(TokenScope::Admin))
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so).
fn over_tls(headers: &HeaderMap, shared: &Shared) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
        || shared
            .config()
            .api
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https")
}

pub async fn login(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !crate::ui::same_origin(&headers, &shared) {
        return crate::ui::cross_origin();
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let presented = fields
        .iter()
        .find(|(k, _)| k == "token")
        .map_or("", |(_, v)| v.trim());
    let config = shared.config();
    let open = config.api.tokens.is_empty();
    if !open && !admin_token(&config.api.tokens, presented) {
        tracing::warn!("dashboard: sign-in refused (not an admin token)");
        return html(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                open,
                error: Some("That is not an admin token.".to_string()),
            },
        );
    }
    let Ok(key) = shared.sessions.key(shared.store.as_ref()).await else {
        return store_down();
    };
    let ttl = config.api.ui_session_ttl;
    let expires = shared
        .clock
        .now_ms()
        .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    // The session names the token that opened it, and ends when that token is removed.
    let value = Sessions::new_session(key, expires, if open { "" } else { presented });
    let secure = if over_tls(&headers, &shared) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs().max(1)
    );
    tracing::info!("dashboard: signed in");
    let mut response = see_other("/ui");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    // Extracted for its checks only: same origin, and the session's CSRF token.
    _checked: Action,
) -> Response {
    let now = shared.clock.now_ms();
    let Ok(key) = shared.sessions.key(shared.store.as_ref()).await else {
        return store_down();
    };
    let session = crate::ui::cookie(&headers, COOKIE)
        .and_then(|c| Sessions::session(key, c, now, &shared.config().api.tokens));
    if let Some(session) = session {
        if let Err(e) = shared
            .sessions
            .revoke(shared.store.as_ref(), &session, now)
            .await
        {
            tracing::error!(error = %e, "dashboard: sign-out could not be stored");
            return store_down();
        }
    }
    let mut response = see_other("/ui/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hookd_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

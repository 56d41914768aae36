//! `POST /v1/portal-links`: a signed, expiring link to the dashboard limited to one owner's
//! subscriptions and deliveries (the customer portal, docs/dashboard.md).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::session::Sessions;
use crate::state::Shared;

/// How long a link lasts unless asked otherwise, and at most.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    owner: Option<String>,
    expires_in: Option<String>,
}

fn invalid(field: &str, message: String) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": message, "field": field })),
    )
        .into_response()
}

/// `{"owner": "acme", "expires_in": "1h"}` → `201 {"url", "owner", "expires_at"}`.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    super::JsonBody(body): super::JsonBody,
) -> Response {
    let request: LinkRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return super::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not a portal link request: {e} (fields: owner, expires_in)"),
            )
        }
    };
    let owner = match request.owner.as_deref().map(str::trim) {
        Some(o) if crate::event::valid_owner(o) => o.to_string(),
        _ => {
            return invalid(
                "owner",
                format!(
                    "owner is required: {}, as its subscriptions and events carry it",
                    crate::event::OWNER_RULE
                ),
            )
        }
    };
    let ttl = match request.expires_in.as_deref() {
        None => DEFAULT_TTL,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() && d <= MAX_TTL => d,
            Ok(_) => {
                return invalid(
                    "expires_in",
                    "expires_in must be more than 0s and at most 30d".to_string(),
                )
            }
            Err(e) => {
                return invalid(
                    "expires_in",
                    format!("expires_in: {e} (a duration like \"1h\" or \"7d\")"),
                )
            }
        },
    };
    let Ok(key) = shared.sessions.key(shared.store.as_ref()).await else {
        return super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not answer; see hookd's log",
        );
    };
    let expires_ms = shared
        .clock
        .now_ms()
        .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let token = Sessions::new_portal(key, &owner, expires_ms);
    let base = match &shared.config().api.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            format!("http://{host}")
        }
    };
    tracing::info!(owner = owner.as_str(), expires_in = %humantime::format_duration(ttl), "portal link made");
    (
        StatusCode::CREATED,
        Json(json!({
            "url": format!("{base}/ui/portal/{token}"),
            "owner": owner,
            "expires_at": crate::event::rfc3339_millis(expires_ms),
        })),
    )
        .into_response()
}

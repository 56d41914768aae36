//! HTTP routes: the API listener (ingest) and the metrics listener (`/metrics`, `/livez`,
//! `/readyz`). Handlers never wait on a delivery: ingest answers once the event is durable.

pub(crate) mod admin;
pub mod audit;
pub mod audited;
mod ingest;
mod keepalive;
mod listen;
pub(crate) mod origin;
pub(crate) mod owners;
pub(crate) mod portal;
pub mod serve;
pub(crate) mod stats;
pub(crate) mod subscriptions;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::{ApiToken, Scope};
use crate::signing::constant_time_eq;
use crate::state::Shared;

/// A JSON error body: `{"error": "...", ...}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The JSON API's body: its `Content-Type` must say JSON ([`require_json`]), or else 415. A
/// request with no body and no `Content-Type` (pause, resume, test...) passes, empty.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody, Response> {
        let declared = request.headers().contains_key(header::CONTENT_TYPE);
        if declared {
            require_json(request.headers(), "request bodies are JSON").map_err(|r| *r)?;
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !declared && !body.is_empty() {
            require_json(&HeaderMap::new(), "request bodies are JSON").map_err(|r| *r)?;
        }
        Ok(JsonBody(body))
    }
}

/// A JSON route takes JSON only: `application/json` or `application/<something>+json`, with
/// any parameters (`; charset=utf-8`); anything else is 415, with `what` leading the message.
/// A form post (what `curl -d` sends without `-H`) is a mistake to report, not to guess at, and
/// a browser cannot send a JSON type across origins without a CORS preflight, which hookd never
/// grants: a web page's form cannot post to a loopback hookd.
pub(crate) fn require_json(headers: &HeaderMap, what: &str) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = given.as_deref().is_some_and(is_json_media_type);
    if is_json {
        return Ok(());
    }
    let got = given.map_or_else(
        || "no Content-Type".to_string(),
        |t| format!("Content-Type {t:?}"),
    );
    Err(Box::new(error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("{what}: send Content-Type: application/json (got {got})"),
    )))
}

/// `application/json` or `application/*+json`, parameters ignored, case-insensitive.
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else {
        return false;
    };
    subtype == "json"
        || subtype
            .strip_suffix("+json")
            .is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('/'))
}

/// What the API listener serves besides the API (src/ui): the dashboard's routes, which sign in
/// with a token once and then use their own session cookie or portal link, and its refusal page.
pub struct Dashboard {
    pub routes: Router<Arc<Shared>>,
    pub page: origin::Page,
}

/// Every route of the API listener; `bound` is its address (the open listener answers only
/// names of it, [`origin`]).
pub fn router(shared: Arc<Shared>, bound: std::net::SocketAddr, dashboard: Dashboard) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::ingest))
        .route("/v1/deliveries", get(admin::list_deliveries))
        .route("/v1/deliveries/retry", post(audited::retry_dead))
        .route("/v1/deliveries/{id}", get(admin::show_delivery))
        .route("/v1/deliveries/{id}/retry", post(audited::retry_delivery))
        .route(
            "/v1/subscriptions",
            get(admin::list_subscriptions).post(audited::create),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::show)
                .patch(audited::update)
                .delete(audited::delete),
        )
        .route(
            "/v1/subscriptions/{id}/rotate-secret",
            post(audited::rotate_secret),
        )
        .route(
            "/v1/subscriptions/{id}/finish-rotation",
            post(audited::finish_rotation),
        )
        .route("/v1/subscriptions/{id}/test", post(audited::send_test))
        .route("/v1/portal-links", post(audited::portal_link))
        .route(
            "/v1/owners/{owner}",
            axum::routing::delete(audited::erase_owner),
        )
        .route("/v1/stats", get(stats::stats))
        .route("/v1/subscriptions/{id}/pause", post(audited::pause))
        .route("/v1/subscriptions/{id}/resume", post(audited::resume))
        .route("/v1/subscriptions/{id}/enable", post(audited::enable))
        .route("/v1/audit", get(audit::list))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see docs/api.md") })
        // axum answers a known route with another method by 405 and an empty body: the same
        // JSON error shape as every other answer (axum still sets `Allow`).
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on this route; see docs/api.md"),
            )
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        // Outside the bearer-token check, inside the cross-site one.
        .merge(dashboard.routes)
        .merge(listen::routes())
        .layer(middleware::from_fn_with_state(
            (shared.clone(), bound, dashboard.page),
            origin::check,
        ))
        // Outermost, so that ingest requests refused for their token are counted too.
        .layer(middleware::from_fn_with_state(shared.clone(), count_ingest))
        .with_state(shared)
}

/// Counts `POST /v1/events` requests by status code, and times them.
async fn count_ingest(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/v1/events" {
        return next.run(request).await;
    }
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let metrics = &shared.metrics;
    let code = response.status();
    metrics
        .ingest_requests
        .with_label_values(&[code.as_str()])
        .inc();
    metrics
        .ingest_duration
        .with_label_values(&[code.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// With `api.tokens` set, every request needs `Authorization: Bearer <token>` with a token
/// whose scopes allow the route: `ingest` for `POST /v1/events`, `admin` for the rest.
async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let config = shared.config();
    if config.api.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme name is case-insensitive (RFC 7235).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    let needed = if request.uri().path() == "/v1/events" {
        Scope::Ingest
    } else {
        Scope::Admin
    };
    // Every token is compared, so the time taken does not tell which one matched.
    let matched: Vec<&ApiToken> = config
        .api
        .tokens
        .iter()
        .filter(|token| constant_time_eq(token.secret.expose().as_bytes(), presented.as_bytes()))
        .collect();
    if let Some(token) = matched.iter().find(|t| t.allows(needed)) {
        let mut request = request;
        request
            .extensions_mut()
            .insert(audit::Actor::token(&token.name));
        return next.run(request).await;
    }
    if !matched.is_empty() {
        let scope = if needed == Scope::Ingest {
            "ingest"
        } else {
            "admin"
        };
        return error(
            StatusCode::FORBIDDEN,
            format!("this token lacks the {scope} scope"),
        );
    }
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

pub fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared.update_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match shared.store.ping().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/vnd.api+json",
            "application/cloudevents+json; charset=utf-8",
        ] {
            assert!(super::is_json_media_type(ok), "{ok}");
        }
        for refused in [
            "",
            "application/x-www-form-urlencoded",
            "text/plain",
            "text/json",
            "application/+json",
            "application/jsonx",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!super::is_json_media_type(refused), "{refused}");
        }
    }
}

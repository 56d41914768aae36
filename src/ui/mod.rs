//! The dashboard: server-rendered pages at `/ui` on the API listener, and the same pages
//! limited to one owner at `/ui/portal/<token>` (the customer portal). See docs/dashboard.md.
//!
//! - No script at all: every read is a GET, every change a POST form, and the
//!   Content-Security-Policy forbids scripts outright.
//! - An operator signs in with an admin token and gets a signed session cookie
//!   (HttpOnly, SameSite=Strict). A portal visitor carries a signed, expiring token in the path
//!   and needs no cookie, so the portal also works inside another site's iframe.
//! - Every POST must be same-origin (`Origin`, else `Referer`) and carry the CSRF token of its
//!   session or portal link.
//! - Changes go through the subscriptions and admin API's own handlers: one validator, one
//!   set of rules, whatever the client.

pub mod flash;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use crate::session::Scope;
use crate::session::{csrf_token, PortalRefusal, Sessions, COOKIE};
use crate::state::Shared;

/// Where the portal's pages live: `/ui/portal/<token>/...`.
const PORTAL: &str = "/ui/portal/";

/// The stylesheet, embedded.
const STYLE: &str = include_str!("style.css");

/// The icon: a hook on the accent colour.
const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#0b57d0\"/>\
<path d=\"M9 3v6a3 3 0 0 1-6 0\" fill=\"none\" stroke=\"#fff\" stroke-width=\"2\"/></svg>";

/// What every page's frame needs: where links go, the CSRF token of forms, who is looking.
#[derive(Debug, Clone)]
pub struct Nav {
    /// `/ui`, or `/ui/portal/<token>`.
    pub base: String,
    pub csrf: String,
    /// The owner a portal shows; `None` for an operator.
    pub owner: Option<String>,
    /// Which section the page belongs to, for `aria-current`.
    pub current: &'static str,
    /// A message about what the last action did (flashed: see [`flash`]).
    pub notice: Option<String>,
    /// The name a portal's header shows (`[ui] title`).
    pub title: String,
    /// Whether `[ui] logo` is set: the header shows it (`/ui/static/logo`).
    pub logo: bool,
}

impl Nav {
    pub fn admin(&self) -> bool {
        self.owner.is_none()
    }
}

/// The visitor of a page, from the session cookie or the portal token.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub scope: Scope,
    pub base: String,
    pub csrf: String,
    /// When the request came, by the daemon's clock (flashed values expire by it).
    pub now_ms: u64,
    /// `[ui] title`: the provider's name, as a portal shows it.
    pub title: String,
    /// Who the audit log says acted: `dashboard[:<token name>]` or `portal:<owner>`.
    pub actor: crate::api::audit::Actor,
    /// Whether `[ui] logo` is set.
    pub logo: bool,
}

impl Viewer {
    /// A 303 to `location` that shows `notice` there once (see [`flash`]).
    pub fn redirect_with(&self, location: &str, notice: &str) -> Response {
        let key = self.flash(flash::Flashed::Notice(notice.to_string()));
        let sep = if location.contains('?') { '&' } else { '?' };
        see_other(&format!("{location}{sep}notice={key}"))
    }

    /// Keeps `value` for this visitor's next page; its key.
    pub fn flash(&self, value: flash::Flashed) -> String {
        flash::store().put(&self.csrf, value, self.now_ms)
    }

    /// The flashed value of `key`, taken out: shown once.
    pub fn take_flash(&self, key: &str) -> Option<flash::Flashed> {
        flash::store().take(&self.csrf, key, self.now_ms)
    }

    /// The frame of a page; `notice` is the key of a flashed notice (`?notice=`).
    pub fn nav(&self, current: &'static str, notice: Option<String>) -> Nav {
        let notice =
            notice
                .filter(|key| !key.is_empty())
                .and_then(|key| match self.take_flash(&key) {
                    Some(flash::Flashed::Notice(text)) => Some(text),
                    _ => None,
                });
        Nav {
            base: self.base.clone(),
            csrf: self.csrf.clone(),
            owner: match &self.scope {
                Scope::Admin => None,
                Scope::Owner(o) => Some(o.clone()),
            },
            current,
            notice,
            title: self.title.clone(),
            logo: self.logo,
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
    link: Option<(&'a str, &'a str)>,
}

/// A page with a title and a sentence: errors, refusals.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    html(
        status,
        &MessagePage {
            title,
            text,
            link: None,
        },
    )
}

/// Renders a template; a template that fails (it cannot, short of a bug) is a 500 page.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: a template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the page could not be rendered; see hookd's log\n",
            )
                .into_response()
        }
    }
}

/// A 303 to `location`.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "That address is not valid.",
        ),
    }
}

fn store_down() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        "The store could not answer; see hookd's log and try again.",
    )
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The portal token of a `/ui/portal/<token>...` path.
fn portal_token(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(PORTAL)?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|t| !t.is_empty())
}

impl FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Viewer, Response> {
        let key = shared
            .sessions
            .key(shared.store.as_ref())
            .await
            .map_err(|_| store_down())?;
        let now = shared.clock.now_ms();
        if let Some(token) = portal_token(parts.uri.path()) {
            return match Sessions::portal(key, token, now) {
                Ok(owner) => Ok(Viewer {
                    actor: crate::api::audit::Actor::portal(&owner),
                    scope: Scope::Owner(owner),
                    base: format!("{PORTAL}{token}"),
                    csrf: csrf_token(key, token),
                    now_ms: now,
                    title: shared.config().ui.title.clone(),
                    logo: shared.config().ui.logo.is_some(),
                }),
                Err(PortalRefusal::Expired) => Err(message(
                    StatusCode::FORBIDDEN,
                    "This link has expired",
                    "Ask for a new link to your webhook settings.",
                )),
                Err(PortalRefusal::Invalid) => Err(message(
                    StatusCode::FORBIDDEN,
                    "This link is invalid",
                    "Ask for a new link to your webhook settings.",
                )),
            };
        }
        let tokens = &shared.config().api.tokens;
        let session = match cookie(&parts.headers, COOKIE)
            .and_then(|c| Sessions::session(key, c, now, tokens))
        {
            Some(session) => match shared
                .sessions
                .signed_out(shared.store.as_ref(), &session)
                .await
            {
                Ok(false) => Some(session),
                Ok(true) => None,
                Err(_) => return Err(store_down()),
            },
            None => None,
        };
        match session {
            Some(session) => Ok(Viewer {
                actor: crate::api::audit::Actor::dashboard(session.token.as_deref()),
                scope: Scope::Admin,
                base: "/ui".to_string(),
                csrf: csrf_token(key, &session.nonce),
                now_ms: now,
                title: shared.config().ui.title.clone(),
                logo: shared.config().ui.logo.is_some(),
            }),
            None if parts.method == Method::GET => Err(see_other("/ui/login")),
            None => Err(message(
                StatusCode::FORBIDDEN,
                "Signed out",
                "Your session has ended: sign in again.",
            )),
        }
    }
}

/// Whether a POST comes from a page of this very server: its `Origin` (or, without one, its
/// `Referer`) names this host, or, for a browser that sends `Origin: null`, its
/// `Sec-Fetch-Site` says `same-origin`. Browsers send `Origin` with every form POST; a
/// request naming neither is refused.
fn same_origin(headers: &HeaderMap, shared: &Shared) -> bool {
    if !headers.contains_key(header::HOST) {
        return false;
    }
    let allowed = crate::api::origin::own_origins(headers, &shared.config());
    let fetched_same_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    let origin = match headers.get(header::ORIGIN) {
        // A browser whose referrer policy hides the origin sends `null`; its own
        // `Sec-Fetch-Site` (which pages cannot set) still says where the form came from.
        Some(o) if o.as_bytes() == b"null" => {
            return fetched_same_origin;
        }
        Some(o) => o.to_str().ok().map(str::to_string),
        None => headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .and_then(|r| url::Url::parse(r).ok())
            .map(|u| u.origin().ascii_serialization()),
    };
    origin.is_some_and(|o| allowed.contains(&o))
}

fn cross_origin() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Cross-origin request refused",
        "This form was not sent from a page of this dashboard.",
    )
}

/// A form POST: who sent it and its fields, checked for origin and CSRF token.
pub struct Action {
    pub viewer: Viewer,
    pub fields: Fields,
}

/// A form's fields, in order; a name may repeat (checkboxes).
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Whether the form sent `name` at all, empty or not: an emptied field clears a value.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// The largest form accepted.
const MAX_FORM: usize = 64 * 1024;

async fn form_fields(body: axum::body::Body) -> Option<Fields> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .map(Fields)
}

impl FromRequest<Arc<Shared>> for Action {
    type Rejection = Response;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Action, Response> {
        let (mut parts, body) = request.into_parts();
        if !same_origin(&parts.headers, shared) {
            return Err(cross_origin());
        }
        let viewer = Viewer::from_request_parts(&mut parts, shared).await?;
        let Some(fields) = form_fields(body).await else {
            return Err(message(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The form could not be read.",
            ));
        };
        let presented = fields.get("csrf").unwrap_or("");
        if !crate::signing::constant_time_eq(presented.as_bytes(), viewer.csrf.as_bytes()) {
            return Err(message(
                StatusCode::FORBIDDEN,
                "CSRF token missing or wrong",
                "Reload the page and try again.",
            ));
        }
        Ok(Action { viewer, fields })
    }
}

/// The dashboard's routes: `/ui...`, `/ui/portal/<token>...`, the stylesheet and sign-in.
pub fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let mut router = Router::new()
        .route("/ui/static/style.css", get(style))
        .route("/favicon.ico", get(favicon))
        .route("/ui/static/favicon.svg", get(favicon))
        .route("/ui/static/brand.css", get(brand_style))
        .route("/ui/static/logo", get(logo))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout));
    for base in ["/ui", "/ui/portal/{token}"] {
        let at = |path: &str| format!("{base}{path}");
        router = router
            .route(&at(""), get(pages::overview))
            .route(&at("/deliveries"), get(pages::deliveries))
            .route(&at("/audit"), get(pages::audit_page))
            .route(&at("/deliveries/retry"), post(pages::retry_matching))
            .route(&at("/deliveries/{id}"), get(pages::delivery))
            .route(&at("/deliveries/{id}/retry"), post(pages::retry_one))
            .route(
                &at("/subscriptions"),
                get(pages::subscriptions).post(pages::create_subscription),
            )
            .route(&at("/subscriptions/new"), get(pages::new_subscription))
            .route(
                &at("/subscriptions/{id}"),
                get(pages::subscription).post(pages::update_subscription),
            )
            .route(
                &at("/subscriptions/{id}/{action}"),
                get(pages::subscription_step).post(pages::subscription_action),
            );
    }
    router = pages::check::routes(router);
    router = pages::events::routes(router);
    router.layer(middleware::from_fn_with_state(shared, security_headers))
}

/// The icon browsers ask for at `/favicon.ico`: a small SVG (browsers read it by its type).
async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// `[ui] accent` as a stylesheet every page links after the main one: a page may not carry a
/// style of its own (the CSP's `style-src 'self'`). Empty without an accent; read afresh, so a
/// reload's colour shows at once.
async fn brand_style(State(shared): State<Arc<Shared>>) -> Response {
    let css = shared
        .config()
        .ui
        .accent
        .as_ref()
        .map_or_else(String::new, |accent| {
            format!(":root {{ --accent: {accent}; }}\n")
        });
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        css,
    )
        .into_response()
}

/// `[ui] logo`, as read at start or at the last reload; 404 without one.
async fn logo(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.config().ui.logo {
        Some(logo) => (
            [
                (header::CONTENT_TYPE, logo.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            logo.bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The headers every dashboard answer carries: no script may run, nothing is cached or
/// leaked in a Referer (portal paths carry their token), and only the configured sites may
/// frame the portal (no site may frame the operator's pages).
async fn security_headers(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let portal = request.uri().path().starts_with(PORTAL);
    let mut response = next.run(request).await;
    let ancestors = if portal && !shared.config().api.ui_frame_ancestors.is_empty() {
        shared.config().api.ui_frame_ancestors.join(" ")
    } else {
        "'none'".to_string()
    };
    let csp = format!(
        "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; \
         form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Same-origin requests keep their Referer and a real Origin (the same-origin check of
    // POSTs reads them); no other site ever learns a page's address, portal tokens included.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if ancestors == "'none'" {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Path parameters by name (`id`, `token`, `action`).
pub type Params = axum::extract::Path<HashMap<String, String>>;

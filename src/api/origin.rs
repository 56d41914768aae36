//! What keeps web pages away from the API listener: one layer over every route, the dashboard
//! included. Server-to-server clients (curl, the CLI, job runners) send neither `Origin` nor
//! `Sec-Fetch-Site` and name the address they connect to, so none of this touches them.
//!
//! - An open listener (no `api.tokens`) answers only requests whose `Host` names it: its bound
//!   address, `localhost`, `127.0.0.1`, `[::1]`, the host of `api.public_url` or one of
//!   `api.allowed_hosts`; any other is `421 Misdirected Request`. A page that rebinds its own
//!   name to 127.0.0.1 (DNS rebinding) sends its own name, and gets nothing. With tokens a page
//!   has no credential to send, and a proxy may forward any name: no check.
//! - The JSON API (`/v1/...`) refuses what a browser says it sent from another page:
//!   `Sec-Fetch-Site: cross-site` or `same-site` (another port of the same host is another
//!   origin, like a development server on a laptop), or an `Origin` other than this API's own
//!   (`null` included). The dashboard's forms post to `/ui`, which checks its own posts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;
use crate::state::Shared;

/// How the dashboard renders a refusal as a page (status, title, sentence): the layer answers
/// a refused `/ui` request with one, any other with the API's JSON error.
pub type Page = fn(StatusCode, &str, &str) -> Response;

/// What the layer needs: the running config, the address the listener is bound to and the
/// dashboard's refusal page.
pub type Listener = (Arc<Shared>, SocketAddr, Page);

/// The layer: `421` for a name the open listener does not answer to, `403` for a cross-site
/// request to the JSON API, else the route.
pub async fn check(
    State((shared, bound, page)): State<Listener>,
    request: Request,
    next: Next,
) -> Response {
    let config = shared.config();
    let path = request.uri().path();
    let headers = request.headers();
    if config.api.tokens.is_empty() {
        if let Some(host) = headers.get(header::HOST) {
            let host = String::from_utf8_lossy(host.as_bytes());
            if !names_this_listener(&host, bound, &config) {
                tracing::warn!(host = %host, "refused a request naming another host (DNS rebinding?)");
                return misdirected(path, &host, page);
            }
        }
    }
    if path == "/v1" || path.starts_with("/v1/") {
        if let Some(why) = cross_site(headers, &config) {
            tracing::warn!(path, "refused a cross-site request to the API: {why}");
            return super::error(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-site request refused: {why}; the API is for servers and the CLI, \
                     which send no Origin (browsers use the dashboard at /ui)"
                ),
            );
        }
    }
    next.run(request).await
}

fn misdirected(path: &str, host: &str, page: Page) -> Response {
    let text = format!(
        "Host {host:?} is not a name of this hookd: an API without tokens answers only its own \
         address, localhost and the names in [api] allowed_hosts"
    );
    if path == "/ui" || path.starts_with("/ui/") {
        page(StatusCode::MISDIRECTED_REQUEST, "Wrong host name", &text)
    } else {
        super::error(StatusCode::MISDIRECTED_REQUEST, text)
    }
}

/// The host of a `Host` value, without its port: `[::1]:8080` → `[::1]`, `a.example:80` →
/// `a.example`.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `host` (a `Host` header) names this listener, on any port: the port is no defence
/// against rebinding, the name is.
fn names_this_listener(host: &str, bound: SocketAddr, config: &Config) -> bool {
    let name = without_port(host.trim()).to_ascii_lowercase();
    let own = match bound.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let public = config
        .api
        .public_url
        .as_ref()
        .and_then(|u| u.host_str())
        .map(str::to_ascii_lowercase);
    ["localhost", "127.0.0.1", "[::1]", own.as_str()].contains(&name.as_str())
        || public.as_deref() == Some(name.as_str())
        || config.api.allowed_hosts.contains(&name)
}

/// The origins of this server's own pages: the request's `Host` over http and https, and the
/// origin of `api.public_url`.
pub fn own_origins(headers: &HeaderMap, config: &Config) -> Vec<String> {
    let mut origins = Vec::new();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        origins.extend([format!("http://{host}"), format!("https://{host}")]);
    }
    if let Some(public) = &config.api.public_url {
        origins.push(public.origin().ascii_serialization());
    }
    origins
}

/// Why a browser's request came from another page, if it did.
fn cross_site(headers: &HeaderMap, config: &Config) -> Option<String> {
    let fetched = headers
        .get("sec-fetch-site")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    if let Some(site @ ("cross-site" | "same-site")) = fetched.as_deref() {
        return Some(format!("Sec-Fetch-Site is {site}"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes());
    (!own_origins(headers, config).iter().any(|o| *o == origin))
        .then(|| format!("Origin {origin} is not this API's origin"))
}

#[cfg(test)]
mod tests {
    use super::without_port;

    #[test]
    fn a_host_loses_its_port_only() {
        assert_eq!(without_port("localhost:8080"), "localhost");
        assert_eq!(without_port("localhost"), "localhost");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("rebind.example:x"), "rebind.example:x");
    }
}

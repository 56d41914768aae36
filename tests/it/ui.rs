//! The dashboard (`/ui`) and the customer portal over HTTP, against the real binary (see
//! notes/ui-contract.md): admin sign-in and sessions, the security headers, the CSRF and
//! same-origin checks of every form, the escaping of what receivers answer, secrets never
//! rendered, and portal links that show one owner's subscriptions and deliveries only.
//!
//! Each test runs a hookd of its own, with an admin token and an ingest-only token, and talks
//! to it like a browser without JavaScript would: redirects are not followed, cookies are read
//! from `Set-Cookie` and sent back by hand, forms are posted url-encoded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::admin::Admin;
use crate::support::process::{launch, ChildGuard};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::{wait_until, LOOPBACK_TARGETS};

mod audit;

const ADMIN: &str = "ui-admin-token-31f7c0";
const INGEST: &str = "ui-ingest-token-9c2e55";
const DEADLINE: Duration = Duration::from_secs(15);
const EVIL: &str = "http://evil.example";

// ------------------------------------------------------------------ hookd and its pages

/// The real binary with [`ADMIN`] and [`INGEST`] configured, one attempt per delivery
/// (`retry_schedule = []`), per-request targets allowed and loopback receivers allowed.
struct Hookd {
    process: ChildGuard,
    api: SocketAddr,
    config: PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Who a form post says it comes from.
enum Source {
    Origin(String),
    Referer(String),
    Nothing,
}

/// One answer: status, headers, body.
struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// One `Set-Cookie` header, split.
#[derive(Debug)]
struct SetCookie {
    line: String,
    value: String,
    attributes: Vec<String>,
}

/// A form post the dashboard must refuse: what is wrong with it, who it says it comes from,
/// its fields, and what the 403 page says.
type RefusedPost<'a> = (&'a str, Source, Vec<(&'a str, &'a str)>, &'a str);

/// A signed-in admin: the `Cookie` header to send and the page's csrf value.
struct Session {
    cookie: String,
    csrf: String,
}

impl Hookd {
    /// Starts hookd with `api_keys` added to its `[api]` table and `extra` (subscriptions)
    /// at the end of the file.
    async fn start(api_keys: &str, extra: &str) -> Hookd {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("hookd.toml");
        std::fs::write(&config, config_text(dir.path(), api_keys, extra)).expect("write config");
        let (process, api, _) = launch(&config, &[])
            .await
            .unwrap_or_else(|stderr| panic!("hookd did not start: {stderr}"));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Hookd {
            process,
            api,
            config,
            client,
            _dir: dir,
        }
    }

    /// Stops hookd (SIGTERM) and starts it again on the same config and store.
    async fn restart(self) -> Hookd {
        let Hookd {
            mut process,
            config,
            client,
            _dir,
            ..
        } = self;
        process.signal("TERM");
        let status = process.wait_exit(DEADLINE).await;
        assert!(status.success(), "hookd stopped with {status}");
        drop(process);
        let (process, api, _) = launch(&config, &[])
            .await
            .unwrap_or_else(|stderr| panic!("hookd did not start again: {stderr}"));
        Hookd {
            process,
            api,
            config,
            client,
            _dir,
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.api)
    }

    fn same_origin(&self) -> Source {
        Source::Origin(self.origin())
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut request = self.client.get(format!("{}{path}", self.origin()));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        page(request.send().await.expect("GET a page")).await
    }

    /// Posts `fields` url-encoded, as a browser posts a form.
    async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        source: Source,
        fields: &[(&str, &str)],
    ) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = self
            .client
            .post(format!("{}{path}", self.origin()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request = match source {
            Source::Origin(origin) => request.header("origin", origin),
            Source::Referer(referer) => request.header("referer", referer),
            Source::Nothing => request,
        };
        page(request.send().await.expect("POST a form")).await
    }

    /// Writes `config` and reloads it (SIGHUP); returns once `token` gets `status` on the API.
    async fn reload_until(&self, config: &str, token: &str, status: u16) {
        std::fs::write(&self.config, config).expect("write the config");
        self.process.signal("HUP");
        wait_until(
            &format!("the reloaded config to answer {status}"),
            DEADLINE,
            || async {
                let (got, _) = self
                    .api(Method::GET, "/v1/deliveries", Some(token), None)
                    .await;
                (got == status).then_some(())
            },
        )
        .await;
    }

    /// A button's form (its CSRF token only) posted to `path` as `session`, same-origin.
    async fn action(&self, session: &Session, path: &str) -> Page {
        self.post_form(
            path,
            Some(&session.cookie),
            self.same_origin(),
            &[("csrf", session.csrf.as_str())],
        )
        .await
    }

    /// A JSON API call; the body parsed (a text that is not JSON as a string, no body as null).
    async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        Admin::new(self.api, self.client.clone())
            .token(token)
            .call(method, path, body)
            .await
    }

    /// `POST /v1/subscriptions` with the admin token; the answer (with the secret).
    async fn create_subscription(&self, body: Value) -> Value {
        let (status, created) = self
            .api(Method::POST, "/v1/subscriptions", Some(ADMIN), Some(body))
            .await;
        assert_eq!(status, 201, "create a subscription: {created}");
        created
    }

    /// `POST /v1/events` with the ingest token.
    async fn ingest(&self, event: Value) {
        let (status, answer) = self
            .api(Method::POST, "/v1/events", Some(INGEST), Some(event))
            .await;
        assert_eq!(status, 202, "ingest: {answer}");
    }

    /// The ids of a subscription's deliveries (`adhoc` for per-request targets).
    async fn deliveries_of(&self, subscription: &str) -> Vec<String> {
        let (status, list) = self
            .api(
                Method::GET,
                &format!("/v1/deliveries?subscription={subscription}&limit=100"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        list["deliveries"]
            .as_array()
            .unwrap_or_else(|| panic!("no deliveries array: {list}"))
            .iter()
            .map(|d| d["id"].as_str().expect("delivery id").to_string())
            .collect()
    }

    /// Waits until `count` deliveries of `subscription` are finished (delivered or dead, so
    /// their attempt is recorded); returns their ids.
    async fn wait_finished(&self, subscription: &str, count: usize) -> Vec<String> {
        wait_until(
            &format!("{count} finished deliveries of {subscription}"),
            DEADLINE,
            || async {
                let ids = self.deliveries_of(subscription).await;
                if ids.len() < count {
                    return None;
                }
                for id in &ids {
                    let d = self.delivery(id).await;
                    if d["state"] != "delivered" && d["state"] != "dead" {
                        return None;
                    }
                }
                Some(ids)
            },
        )
        .await
    }

    /// `GET /v1/subscriptions/{id}` with the admin token, which must answer 200.
    async fn subscription(&self, id: &str) -> Value {
        self.subscription_as(id, ADMIN).await
    }

    /// `GET /v1/subscriptions/{id}` with the admin token `token`, which must answer 200.
    async fn subscription_as(&self, id: &str, token: &str) -> Value {
        let (status, shown) = self
            .api(
                Method::GET,
                &format!("/v1/subscriptions/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{shown}");
        shown
    }

    async fn paused(&self, subscription: &str) -> bool {
        let shown = self.subscription(subscription).await;
        shown["paused"]
            .as_bool()
            .unwrap_or_else(|| panic!("no paused flag: {shown}"))
    }

    /// Signs in with the admin token; the session cookie and the csrf value of `/ui`.
    /// Posts a subscription's edit form as `session`: its CSRF token, `url`, no other event
    /// types, and `fields` (the events, headers, rate limit...).
    async fn edit_subscription(
        &self,
        session: &Session,
        id: &str,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Page {
        let mut all = vec![
            ("csrf", session.csrf.as_str()),
            ("url", url),
            ("other_events", ""),
        ];
        all.extend_from_slice(fields);
        self.post_form(
            &format!("/ui/subscriptions/{id}"),
            Some(&session.cookie),
            self.same_origin(),
            &all,
        )
        .await
    }

    /// The new-subscription form posted as `session`: its CSRF token, then `fields`.
    async fn create_with_form(&self, session: &Session, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", session.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_form(
            "/ui/subscriptions",
            Some(&session.cookie),
            self.same_origin(),
            &all,
        )
        .await
    }

    /// A form's answer as the browser ends up showing it: the page a 303 leads to (saved),
    /// else the answer itself, which must be the form again with its errors (422).
    async fn followed(&self, answer: Page, session: &Session) -> Page {
        if answer.status == 303 {
            return self.get(&answer.location(), Some(&session.cookie)).await;
        }
        assert_eq!(answer.status, 422, "{}", answer.body);
        answer
    }

    /// `GET /v1/deliveries/{id}` with the admin token: the delivery (or the error).
    async fn delivery(&self, id: &str) -> Value {
        let path = format!("/v1/deliveries/{id}");
        self.api(Method::GET, &path, Some(ADMIN), None).await.1
    }

    /// Posts a portal's form (no cookie: the link carries the visitor) with its `csrf`.
    async fn portal_form(&self, path: &str, csrf: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", csrf)];
        all.extend_from_slice(fields);
        self.post_form(path, None, self.same_origin(), &all).await
    }

    async fn sign_in(&self) -> Session {
        self.sign_in_with(ADMIN).await
    }

    /// Signs in with `token`; the session cookie and the csrf value of `/ui`.
    async fn sign_in_with(&self, token: &str) -> Session {
        let answer = self
            .post_form("/ui/login", None, self.same_origin(), &[("token", token)])
            .await;
        assert_eq!(answer.status, 303, "sign in: {}", answer.body);
        let cookie = answer
            .set_cookie("hookd_session")
            .unwrap_or_else(|| panic!("no hookd_session cookie: {:?}", answer.headers));
        let cookie = format!("hookd_session={}", cookie.value);
        let overview = self.get("/ui", Some(&cookie)).await;
        assert_eq!(overview.status, 200, "/ui with the new session");
        Session {
            csrf: overview.csrf(),
            cookie,
        }
    }

    /// `POST /v1/portal-links` for `owner`; the portal's path `/ui/portal/<token>`.
    async fn portal_link(&self, owner: &str, expires_in: &str) -> String {
        let (status, link) = self
            .api(
                Method::POST,
                "/v1/portal-links",
                Some(ADMIN),
                Some(json!({ "owner": owner, "expires_in": expires_in })),
            )
            .await;
        assert_eq!(status, 201, "{link}");
        let url = link["url"].as_str().expect("url");
        let path = url
            .strip_prefix(&self.origin())
            .unwrap_or_else(|| panic!("{url} is not under {}", self.origin()));
        let token = path
            .strip_prefix("/ui/portal/")
            .unwrap_or_else(|| panic!("{url} is not under /ui/portal/"));
        assert!(
            !token.is_empty() && !token.contains('/'),
            "a token segment: {url}"
        );
        path.to_string()
    }
}

fn config_text(dir: &Path, api_keys: &str, extra: &str) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n\
         tokens = [{{ secret = {ADMIN:?}, scopes = [\"admin\"] }}, {{ secret = {INGEST:?}, scopes = [\"ingest\"] }}]\n\
         {api_keys}\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [storage]\npath = {:?}\n\n\
         [delivery]\nretry_schedule = []\nallow_adhoc_targets = true\n\n\
         {extra}\n{LOOPBACK_TARGETS}",
        dir.join("db").display().to_string()
    )
}

async fn page(response: reqwest::Response) -> Page {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("page body");
    Page {
        status,
        headers,
        body,
    }
}

impl Page {
    /// A header's values, joined by ", "; empty when absent.
    fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII header"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `Location` without its scheme and host, if it has them.
    fn location(&self) -> String {
        let location = self.header("location");
        for scheme in ["http://", "https://"] {
            if let Some(rest) = location.strip_prefix(scheme) {
                return rest.find('/').map_or(String::new(), |at| rest[at..].into());
            }
        }
        location
    }

    /// [`Page::location`] without its query.
    fn location_path(&self) -> String {
        let location = self.location();
        location.split('?').next().unwrap_or("").to_string()
    }

    fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|line| {
                let mut parts = line.split(';').map(str::trim);
                let (n, value) = parts.next()?.split_once('=')?;
                (n == name).then(|| SetCookie {
                    line: line.to_string(),
                    value: value.to_string(),
                    attributes: parts.map(str::to_string).collect(),
                })
            })
    }

    /// The `Cookie` header a browser would send back after this answer (every cookie set).
    fn cookies_set(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|line| line.split(';').next())
            .map(str::to_string)
            .collect()
    }

    /// The value of the page's hidden `csrf` input.
    fn csrf(&self) -> String {
        hidden_csrf(&self.body)
            .unwrap_or_else(|| panic!("no <input name=\"csrf\"> on the page:\n{}", self.body))
    }
}

impl SetCookie {
    fn has(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }

    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
        })
    }
}

/// The `value` of the first `<input ... name="csrf" ...>`, unescaped.
fn hidden_csrf(html: &str) -> Option<String> {
    html.match_indices("<input").find_map(|(at, _)| {
        let tag = &html[at..at + html[at..].find('>')?];
        if !tag.contains("name=\"csrf\"") {
            return None;
        }
        let start = tag.find("value=\"")? + "value=\"".len();
        let end = tag[start..].find('"')?;
        Some(decode_entities(&tag[start..start + end]))
    })
}

/// `html` with its character references (`&lt;`, `&#60;`, `&#x3c;`...) decoded.
fn decode_entities(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest[1..]
            .find(';')
            .filter(|&end| end <= 10)
            .and_then(|end| {
                let name = &rest[1..=end];
                let c = match name {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => match name.strip_prefix('#') {
                        Some(hex) if hex.starts_with(['x', 'X']) => {
                            u32::from_str_radix(&hex[1..], 16)
                                .ok()
                                .and_then(char::from_u32)
                        }
                        Some(dec) => dec.parse().ok().and_then(char::from_u32),
                        None => None,
                    },
                };
                c.map(|c| (c, end + 2))
            });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of the element carrying `marker` (e.g. `id="secret"`), up to the next tag.
fn element_text(html: &str, marker: &str) -> Option<String> {
    let rest = &html[html.find(marker)?..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(decode_entities(rest[start..start + end].trim()))
}

/// `text` with its middle character changed.
fn tamper(text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    assert!(!chars.is_empty(), "nothing to tamper with");
    let at = chars.len() / 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn assert_to_login(page: &Page, what: &str) {
    assert_eq!(
        (page.status, page.location_path().as_str()),
        (303, "/ui/login"),
        "{what}: expected 303 to /ui/login; body:\n{}",
        page.body
    );
}

/// The headers every /ui answer carries, and no script in its HTML. `admin`: an admin page
/// (`X-Frame-Options: DENY`); portal pages may list frame ancestors instead.
fn assert_ui_headers(page: &Page, what: &str, admin: bool) {
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'"),
        "{what}: CSP without default-src 'none': {csp:?}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: CSP allows inline code: {csp:?}"
    );
    if let Some(at) = csp.find("script-src") {
        assert!(
            csp[at..].starts_with("script-src 'none'"),
            "{what}: CSP allows scripts: {csp:?}"
        );
    }
    assert!(
        page.header("x-content-type-options")
            .eq_ignore_ascii_case("nosniff"),
        "{what}: X-Content-Type-Options {:?}",
        page.header("x-content-type-options")
    );
    assert!(
        page.header("referrer-policy")
            .eq_ignore_ascii_case("same-origin"),
        "{what}: Referrer-Policy {:?}",
        page.header("referrer-policy")
    );
    assert!(
        page.header("cache-control").contains("no-store"),
        "{what}: Cache-Control {:?}",
        page.header("cache-control")
    );
    if admin {
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "{what}: CSP without frame-ancestors 'none': {csp:?}"
        );
        assert!(
            page.header("x-frame-options").eq_ignore_ascii_case("DENY"),
            "{what}: X-Frame-Options {:?}",
            page.header("x-frame-options")
        );
    }
    assert!(
        !page.body.to_ascii_lowercase().contains("<script"),
        "{what}: a <script> in the page:\n{}",
        page.body
    );
}

/// An HTML page: 200, `text/html`, the /ui headers.
fn assert_html(page: &Page, what: &str, admin: bool) {
    assert_eq!(page.status, 200, "{what}: body:\n{}", page.body);
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{what}: Content-Type {:?}",
        page.header("content-type")
    );
    assert_ui_headers(page, what, admin);
}

/// A receiver that answers `500` with an HTML body on `/script` and a 100 KiB body on
/// `/big`.
async fn start_body_receiver() -> SocketAddr {
    let big = format!("BEGIN-OF-THE-BIG-BODY{}", "x".repeat(100 * 1024));
    let app = Router::new()
        .route(
            "/script",
            post(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "text/html")],
                    "<script>alert(1)</script><img src=x onerror=alert(2)>",
                )
            }),
        )
        .route(
            "/big",
            post(move || {
                let big = big.clone();
                async move { (StatusCode::INTERNAL_SERVER_ERROR, big) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

// ------------------------------------------------------------------ sign-in and sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signs_in_with_an_admin_token_only_and_the_session_ends_at_sign_out() {
    let hookd = Hookd::start("", "").await;

    let form = hookd.get("/ui/login", None).await;
    assert_html(&form, "GET /ui/login", true);
    assert!(form.body.contains("name=\"token\""), "{}", form.body);

    for (token, what) in [
        ("not-a-token", "a wrong token"),
        (INGEST, "an ingest token"),
    ] {
        let refused = hookd
            .post_form("/ui/login", None, hookd.same_origin(), &[("token", token)])
            .await;
        assert_eq!(refused.status, 401, "{what}: {}", refused.body);
        assert!(
            refused.body.contains("not an admin token"),
            "{what}: {}",
            refused.body
        );
        assert!(
            refused.set_cookie("hookd_session").is_none(),
            "{what}: a session cookie: {:?}",
            refused.headers
        );
    }
    let cross = hookd
        .post_form(
            "/ui/login",
            None,
            Source::Origin(EVIL.into()),
            &[("token", ADMIN)],
        )
        .await;
    assert_eq!(
        cross.status, 403,
        "sign-in from another origin: {}",
        cross.body
    );
    assert!(cross.set_cookie("hookd_session").is_none());

    let signed_in = hookd
        .post_form("/ui/login", None, hookd.same_origin(), &[("token", ADMIN)])
        .await;
    assert_eq!(
        (signed_in.status, signed_in.location().as_str()),
        (303, "/ui"),
        "{}",
        signed_in.body
    );
    let cookie = signed_in
        .set_cookie("hookd_session")
        .unwrap_or_else(|| panic!("no hookd_session: {:?}", signed_in.headers));
    assert!(!cookie.value.is_empty(), "{cookie:?}");
    assert!(cookie.has("HttpOnly"), "{}", cookie.line);
    assert_eq!(
        cookie.attribute("SameSite"),
        Some("Strict"),
        "{}",
        cookie.line
    );
    assert_eq!(cookie.attribute("Path"), Some("/ui"), "{}", cookie.line);
    assert_eq!(
        cookie.attribute("Max-Age"),
        Some("43200"),
        "the default ui_session_ttl, 12h: {}",
        cookie.line
    );
    assert!(
        !cookie.has("Secure"),
        "no Secure over plain http: {}",
        cookie.line
    );
    assert!(
        !cookie.value.contains(ADMIN),
        "the token is in the cookie: {}",
        cookie.line
    );
    let session = format!("hookd_session={}", cookie.value);

    let overview = hookd.get("/ui", Some(&session)).await;
    assert_html(&overview, "GET /ui signed in", true);
    assert!(overview.body.contains("Overview"), "{}", overview.body);
    assert!(overview.body.contains("Sign out"), "{}", overview.body);

    assert_to_login(&hookd.get("/ui", None).await, "GET /ui without a cookie");
    assert_to_login(
        &hookd.get("/ui/subscriptions", None).await,
        "GET /ui/subscriptions without a cookie",
    );
    let tampered = format!("hookd_session={}", tamper(&cookie.value));
    assert_to_login(
        &hookd.get("/ui", Some(&tampered)).await,
        "GET /ui with a tampered cookie",
    );

    // Sign out: the cookie is cleared, and refused when replayed.
    let csrf = overview.csrf();
    let out = hookd
        .post_form(
            "/ui/logout",
            Some(&session),
            hookd.same_origin(),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_to_login(&out, "POST /ui/logout");
    let cleared = out
        .set_cookie("hookd_session")
        .unwrap_or_else(|| panic!("sign-out does not clear the cookie: {:?}", out.headers));
    assert!(
        cleared.value.is_empty() || cleared.attribute("Max-Age") == Some("0"),
        "not cleared: {}",
        cleared.line
    );
    assert_to_login(
        &hookd.get("/ui", Some(&session)).await,
        "GET /ui with the signed-out session's cookie",
    );
}

/// `session` no longer opens a page or pauses subscription `kept` (seen with `token`).
async fn assert_session_refused(hookd: &Hookd, session: &Session, token: &str, what: &str) {
    assert_to_login(&hookd.get("/ui", Some(&session.cookie)).await, what);
    assert_to_login(
        &hookd.get("/ui/subscriptions", Some(&session.cookie)).await,
        what,
    );
    let pause = hookd.action(session, "/ui/subscriptions/kept/pause").await;
    assert_eq!(pause.status, 403, "{what}: POST pause: {}", pause.body);
    let kept = hookd.subscription_as("kept", token).await;
    assert_eq!(kept["paused"], false, "{what}: it paused");
}

/// hookd with a subscription `kept` (whose URL is never called) to pause.
async fn start_with_kept() -> Hookd {
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(
            json!({ "id": "kept", "url": "http://127.0.0.1:9/hook", "events": ["*"] }),
        )
        .await;
    hookd
}

/// `session` opens pages.
async fn assert_session_holds(hookd: &Hookd, session: &Session, what: &str) {
    let page = hookd.get("/ui", Some(&session.cookie)).await;
    assert_eq!(page.status, 200, "{what}: {}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_holds_across_a_restart() {
    let hookd = start_with_kept().await;
    let signed_out = hookd.sign_in().await;
    let other = hookd.sign_in().await;
    let out = hookd
        .post_form(
            "/ui/logout",
            Some(&signed_out.cookie),
            hookd.same_origin(),
            &[("csrf", signed_out.csrf.as_str())],
        )
        .await;
    assert_to_login(&out, "POST /ui/logout");
    assert_session_refused(&hookd, &signed_out, ADMIN, "signed out").await;

    let hookd = hookd.restart().await;
    assert_session_refused(&hookd, &signed_out, ADMIN, "signed out, after a restart").await;
    assert_session_holds(&hookd, &other, "another session, after a restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_admin_token_ends_the_sessions_it_opened() {
    const SECOND: &str = "ui-second-admin-token-5d21";
    let hookd = start_with_kept().await;
    let first = hookd.sign_in().await;
    let original = std::fs::read_to_string(&hookd.config).expect("read the config");
    let admin_entry = format!("{{ secret = {ADMIN:?}, scopes = [\"admin\"] }}");
    let second_entry = format!("{{ secret = {SECOND:?}, scopes = [\"admin\"] }}");
    assert!(original.contains(&admin_entry), "{original}");

    // A reload that keeps the first token keeps its session.
    let both = original.replace(&admin_entry, &format!("{admin_entry}, {second_entry}"));
    hookd.reload_until(&both, SECOND, 200).await;
    assert_session_holds(&hookd, &first, "the first token's session, both configured").await;
    let second = hookd.sign_in_with(SECOND).await;

    // The first token removed: its session ends, the second token's holds.
    let only_second = original.replace(&admin_entry, &second_entry);
    hookd.reload_until(&only_second, ADMIN, 401).await;
    assert_session_refused(&hookd, &first, SECOND, "the removed token's session").await;
    assert_session_holds(&hookd, &second, "the remaining token's session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_session_expires_after_ui_session_ttl() {
    let hookd = Hookd::start("ui_session_ttl = \"2s\"", "").await;
    let signed_in_at = Instant::now();
    let signed_in = hookd
        .post_form("/ui/login", None, hookd.same_origin(), &[("token", ADMIN)])
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let cookie = signed_in.set_cookie("hookd_session").expect("a session");
    assert_eq!(cookie.attribute("Max-Age"), Some("2"), "{}", cookie.line);
    let session = format!("hookd_session={}", cookie.value);
    assert_eq!(hookd.get("/ui", Some(&session)).await.status, 200);

    let expired = wait_until("the session to expire", DEADLINE, || async {
        let page = hookd.get("/ui", Some(&session)).await;
        (page.status != 200).then_some(page)
    })
    .await;
    assert_to_login(&expired, "GET /ui with an expired session");
    assert!(
        signed_in_at.elapsed() >= Duration::from_secs(1),
        "expired after {:?}, before its 2s",
        signed_in_at.elapsed()
    );
}

// ------------------------------------------------------------------ headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_page_has_a_strict_csp_and_no_script() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(
            json!({ "id": "csp-sub", "url": receiver.url(), "events": ["*"], "secret": "csp-secret" }),
        )
        .await;
    hookd
        .ingest(json!({ "request_id": "csp-1", "status": "completed" }))
        .await;
    let delivery = hookd.wait_finished("csp-sub", 1).await.remove(0);

    let login = hookd.get("/ui/login", None).await;
    assert_html(&login, "GET /ui/login", true);
    let refused = hookd
        .post_form(
            "/ui/login",
            None,
            hookd.same_origin(),
            &[("token", "wrong")],
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_ui_headers(&refused, "the 401 sign-in page", true);
    let redirect = hookd.get("/ui/deliveries", None).await;
    assert_to_login(&redirect, "GET /ui/deliveries without a session");
    assert_ui_headers(&redirect, "the redirect to sign-in", true);

    let session = hookd.sign_in().await;
    for path in [
        "/ui".to_string(),
        "/ui/deliveries".to_string(),
        "/ui/deliveries?status=delivered".to_string(),
        format!("/ui/deliveries/{delivery}"),
        "/ui/subscriptions".to_string(),
        "/ui/subscriptions/new".to_string(),
        "/ui/subscriptions/csp-sub".to_string(),
        "/ui/subscriptions/csp-sub?lang=go".to_string(),
    ] {
        let page = hookd.get(&path, Some(&session.cookie)).await;
        assert_html(&page, &format!("GET {path}"), true);
    }
    let missing = hookd
        .get(
            "/ui/deliveries/dlv_00000000000000000000000000",
            Some(&session.cookie),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_ui_headers(&missing, "the 404 page", true);

    let style = hookd.get("/ui/static/style.css", None).await;
    assert_eq!(style.status, 200);
    assert!(
        style.header("content-type").starts_with("text/css"),
        "{:?}",
        style.header("content-type")
    );
    assert!(style
        .header("x-content-type-options")
        .eq_ignore_ascii_case("nosniff"));
}

// ------------------------------------------------------------------ CSRF and same origin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_post_needs_the_sessions_csrf_token_and_the_same_origin() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(
            json!({ "id": "pausable", "url": receiver.url(), "events": ["*"], "secret": "p-secret" }),
        )
        .await;
    let mine = hookd.sign_in().await;
    let other = hookd.sign_in().await;
    assert_ne!(
        mine.csrf, other.csrf,
        "two sessions share their csrf value: it is not tied to the session"
    );
    let pause = "/ui/subscriptions/pausable/pause";
    let page_url = format!("{}/ui/subscriptions/pausable", hookd.origin());

    let cases: [RefusedPost; 5] = [
        (
            "no csrf field",
            hookd.same_origin(),
            vec![],
            "CSRF token missing or wrong",
        ),
        (
            "another session's csrf",
            hookd.same_origin(),
            vec![("csrf", other.csrf.as_str())],
            "CSRF token missing or wrong",
        ),
        (
            "Origin: http://evil.example",
            Source::Origin(EVIL.into()),
            vec![("csrf", mine.csrf.as_str())],
            "cross-origin request refused",
        ),
        (
            "a Referer of another origin",
            Source::Referer(format!("{EVIL}/ui/subscriptions/pausable")),
            vec![("csrf", mine.csrf.as_str())],
            "cross-origin request refused",
        ),
        (
            "neither Origin nor Referer",
            Source::Nothing,
            vec![("csrf", mine.csrf.as_str())],
            "cross-origin request refused",
        ),
    ];
    for (what, source, fields, message) in cases {
        let refused = hookd
            .post_form(pause, Some(&mine.cookie), source, &fields)
            .await;
        assert_eq!(refused.status, 403, "{what}: {}", refused.body);
        assert!(
            refused
                .body
                .to_lowercase()
                .contains(&message.to_lowercase()),
            "{what}: the page does not say {message:?}: {}",
            refused.body
        );
        assert!(
            !hookd.paused("pausable").await,
            "{what}: the subscription was paused"
        );
    }

    let paused = hookd
        .post_form(
            pause,
            Some(&mine.cookie),
            hookd.same_origin(),
            &[("csrf", mine.csrf.as_str())],
        )
        .await;
    assert_eq!(paused.status, 303, "{}", paused.body);
    assert!(hookd.paused("pausable").await, "not paused");
    let result = hookd.get(&paused.location(), Some(&mine.cookie)).await;
    assert_html(&result, "the page the pause redirects to", true);
    assert!(result.body.contains("role=\"status\""), "{}", result.body);

    // A Referer of the same origin stands in for an absent Origin.
    let resumed = hookd
        .post_form(
            "/ui/subscriptions/pausable/resume",
            Some(&mine.cookie),
            Source::Referer(page_url),
            &[("csrf", mine.csrf.as_str())],
        )
        .await;
    assert_eq!(resumed.status, 303, "{}", resumed.body);
    assert!(!hookd.paused("pausable").await, "not resumed");
}

// ------------------------------------------------------------------ escaping and secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_receivers_answer_is_escaped_and_truncated_on_the_delivery_page() {
    let receiver = start_body_receiver().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "xss-sub", "url": format!("http://{receiver}/script"), "events": ["*"], "secret": "xss-secret" }))
        .await;
    hookd
        .create_subscription(json!({ "id": "big-sub", "url": format!("http://{receiver}/big"), "events": ["*"], "secret": "big-secret" }))
        .await;
    hookd
        .ingest(json!({
            "request_id": "xss-1",
            "status": "failed",
            "error": { "message": "<script>alert(3)</script>" },
            "metrics": { "inference_time": 45.2, "queue_time": 2.1 }
        }))
        .await;
    let xss = hookd.wait_finished("xss-sub", 1).await.remove(0);
    let big = hookd.wait_finished("big-sub", 1).await.remove(0);
    let session = hookd.sign_in().await;

    let page = hookd
        .get(&format!("/ui/deliveries/{xss}"), Some(&session.cookie))
        .await;
    assert_html(&page, "the delivery page of a <script> answer", true);
    // Escaped, whatever the entities: no tag of the answer (or of the body sent) is in the
    // HTML, and the text the browser shows is the answer as it came.
    let lower = page.body.to_ascii_lowercase();
    assert!(
        !lower.contains("<script") && !lower.contains("<img"),
        "the receiver's answer is not escaped:\n{}",
        page.body
    );
    let text = decode_entities(&page.body);
    assert!(
        text.contains("<script>alert(1)</script><img src=x onerror=alert(2)>"),
        "the receiver's answer is not shown as text:\n{}",
        page.body
    );
    assert!(
        text.contains("<script>alert(3)</script>"),
        "the body sent is not shown as text:\n{}",
        page.body
    );

    let page = hookd
        .get(&format!("/ui/deliveries/{big}"), Some(&session.cookie))
        .await;
    assert_html(&page, "the delivery page of a 100 KiB answer", true);
    assert!(
        page.body.len() < 40 * 1024,
        "the page is {} bytes: the 100 KiB answer is not truncated",
        page.body.len()
    );
    assert!(
        page.body.contains("BEGIN-OF-THE-BIG-BODY"),
        "the answer's start is shown:\n{}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriptions_secret_is_shown_once_by_the_form_that_created_it_and_never_again() {
    const API_SECRET: &str = "api-made-secret-5b81e0c4";
    const FORM_SECRET: &str = "form-made-secret-7d3f9a1c";
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "api-made", "url": receiver.url(), "events": ["*"], "secret": API_SECRET }))
        .await;
    hookd
        .ingest(json!({ "request_id": "secret-1", "status": "completed" }))
        .await;
    let delivery = hookd.wait_finished("api-made", 1).await.remove(0);
    let session = hookd.sign_in().await;

    let mut pages = vec![
        "/ui".to_string(),
        "/ui/subscriptions".to_string(),
        "/ui/subscriptions/api-made".to_string(),
        "/ui/deliveries".to_string(),
        format!("/ui/deliveries/{delivery}"),
    ];
    for lang in [
        "express",
        "flask",
        "node-standard",
        "python-standard",
        "go",
        "rust",
    ] {
        pages.push(format!("/ui/subscriptions/api-made?lang={lang}"));
    }
    for path in &pages {
        let page = hookd.get(path, Some(&session.cookie)).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        assert!(
            !page.body.contains(API_SECRET),
            "GET {path} shows the secret:\n{}",
            page.body
        );
    }

    // The edit form keeps the secret out of its answer and of the page it leads to.
    let edited = hookd
        .edit_subscription(
            &session,
            "api-made",
            &receiver.url(),
            &[("events", "job.completed"), ("events", "job.failed")],
        )
        .await;
    assert_eq!(edited.status, 303, "edit: {}", edited.body);
    assert!(!edited.body.contains(API_SECRET));
    let after = hookd.get(&edited.location(), Some(&session.cookie)).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(!after.body.contains(API_SECRET), "{}", after.body);

    // Created through the form: the secret shown once, on that page only.
    let created = hookd
        .post_form(
            "/ui/subscriptions",
            Some(&session.cookie),
            hookd.same_origin(),
            &[
                ("csrf", session.csrf.as_str()),
                ("url", receiver.url().as_str()),
                ("events", "*"),
                ("other_events", ""),
                ("id", "form-made"),
                ("secret", FORM_SECRET),
                ("signature", "abstrakt"),
                ("owner", ""),
            ],
        )
        .await;
    // Post/Redirect/Get: the POST answers 303, and the page it leads to shows the secret once.
    assert_eq!(created.status, 303, "{}", created.body);
    assert!(!created.body.contains(FORM_SECRET), "{}", created.body);
    let shown_at = created.location();
    assert!(
        shown_at.starts_with("/ui/subscriptions/form-made/secret?"),
        "{shown_at}"
    );
    let stranger = hookd.sign_in().await;
    let elsewhere = hookd.get(&shown_at, Some(&stranger.cookie)).await;
    assert!(
        !elsewhere.body.contains(FORM_SECRET),
        "another session does not see it:\n{}",
        elsewhere.body
    );
    let created = hookd.get(&shown_at, Some(&session.cookie)).await;
    assert_html(&created, "the Subscription created page", true);
    assert!(
        created.body.contains("Subscription created"),
        "{}",
        created.body
    );
    assert_eq!(
        element_text(&created.body, "id=\"secret\"").as_deref(),
        Some(FORM_SECRET),
        "the secret in <code id=\"secret\">:\n{}",
        created.body
    );
    assert!(
        created.body.contains("/ui/subscriptions/form-made"),
        "a link to the subscription:\n{}",
        created.body
    );
    let (status, shown) = hookd
        .api(
            Method::GET,
            "/v1/subscriptions/form-made",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    // A reload shows the secret no more and creates nothing.
    let reloaded = hookd.get(&shown_at, Some(&session.cookie)).await;
    assert_eq!(reloaded.status, 410, "{}", reloaded.body);
    assert!(!reloaded.body.contains(FORM_SECRET), "{}", reloaded.body);
    let (_, listed) = hookd
        .api(Method::GET, "/v1/subscriptions", Some(ADMIN), None)
        .await;
    let made = listed["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .filter(|s| s["managed_by"] == "api")
        .count();
    assert_eq!(made, 2, "api-made and form-made, nothing more: {listed}");
    for path in ["/ui/subscriptions/form-made", "/ui/subscriptions", "/ui"] {
        let page = hookd.get(path, Some(&session.cookie)).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        assert!(
            !page.body.contains(FORM_SECRET),
            "GET {path} shows the secret again:\n{}",
            page.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_shown_with_secrets_masked_and_edited_in_the_form() {
    const TOKEN: &str = "Bearer header-secret-31c9";
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({
            "id": "with-headers", "url": receiver.url(), "events": ["*"],
            "headers": { "X-Tenant": "acme", "Authorization": { "secret": TOKEN } },
            "rate_limit": 20
        }))
        .await;
    let session = hookd.sign_in().await;
    let page = hookd
        .get("/ui/subscriptions/with-headers", Some(&session.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("x-tenant: acme"), "{}", page.body);
    assert!(
        page.body.contains("20/s"),
        "the rate limit is shown: {}",
        page.body
    );
    assert!(page.body.contains("authorization: "), "{}", page.body);
    assert!(
        !page.body.contains(TOKEN),
        "the secret header is shown:\n{}",
        page.body
    );

    // The form edits the plain headers and keeps the secret one, unseen.
    let edited = hookd
        .edit_subscription(
            &session,
            "with-headers",
            &receiver.url(),
            &[("events", "*"), ("headers", "X-Region: eu\r\n")],
        )
        .await;
    assert_eq!(edited.status, 303, "edit: {}", edited.body);
    let saved = hookd.get(&edited.location(), Some(&session.cookie)).await;
    assert!(saved.body.contains("Saved."), "{}", saved.body);
    hookd
        .ingest(json!({ "request_id": "headers-1", "status": "completed" }))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-region"), "eu");
    assert_eq!(
        got[0].header("x-tenant"),
        "",
        "replaced by the form's lines"
    );
    assert_eq!(
        got[0].header("authorization"),
        TOKEN,
        "the secret one is kept"
    );
    // The delivery page lists them, the secret masked; Copy as curl takes it from a variable.
    let delivery = hookd.wait_finished("with-headers", 1).await.remove(0);
    let page = hookd
        .get(&format!("/ui/deliveries/{delivery}"), Some(&session.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("x-region"), "{}", page.body);
    assert!(!page.body.contains(TOKEN), "{}", page.body);
    assert!(
        decode_entities(&page.body).contains(r#"-H 'authorization: '"$HEADER_AUTHORIZATION""#),
        "{}",
        page.body
    );

    // A reserved name is refused, and said so.
    let refused = hookd
        .edit_subscription(
            &session,
            "with-headers",
            &receiver.url(),
            &[("events", "*"), ("headers", "X-Abstrakt-Signature: forged")],
        )
        .await;
    assert_eq!(refused.status, 422, "the form again, with its error");
    let after = hookd.followed(refused, &session).await;
    assert!(after.body.contains("Not saved"), "{}", after.body);
    assert!(after.body.contains("reserved"), "{}", after.body);

    // An emptied box removes the plain headers; the secret one stays.
    let emptied = hookd
        .edit_subscription(
            &session,
            "with-headers",
            &receiver.url(),
            &[("events", "*"), ("headers", "")],
        )
        .await;
    let emptied = hookd.followed(emptied, &session).await;
    assert!(emptied.body.contains("Saved."), "{}", emptied.body);
    let (_, answer) = hookd
        .api(
            Method::GET,
            "/v1/subscriptions/with-headers",
            Some(ADMIN),
            None,
        )
        .await;
    let names: Vec<&String> = answer["headers"]
        .as_object()
        .expect("headers")
        .keys()
        .collect();
    assert_eq!(names, ["authorization"], "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_set_changed_and_removed_in_the_form() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    let session = hookd.sign_in().await;
    let rate_of = |answer: &Value| answer["rate_limit"].clone();
    let created = hookd
        .create_with_form(
            &session,
            &[
                ("id", "limited"),
                ("url", receiver.url().as_str()),
                ("events", "*"),
                ("rate_limit", "20"),
            ],
        )
        .await;
    assert!(
        [200, 303].contains(&created.status),
        "create: {} {}",
        created.status,
        created.body
    );
    let (_, answer) = hookd
        .api(Method::GET, "/v1/subscriptions/limited", Some(ADMIN), None)
        .await;
    assert_eq!(rate_of(&answer), json!(20.0), "{answer}");
    let page = hookd
        .get("/ui/subscriptions/limited", Some(&session.cookie))
        .await;
    assert!(
        page.body
            .contains(r#"name="rate_limit" id="rate_limit" value="20""#),
        "the edit form holds the rate: {}",
        page.body
    );

    let edit = |rate: &'static str| {
        let (hookd, session, url) = (&hookd, &session, receiver.url());
        async move {
            let answer = hookd
                .edit_subscription(
                    session,
                    "limited",
                    &url,
                    &[("events", "*"), ("rate_limit", rate)],
                )
                .await;
            hookd.followed(answer, session).await.body
        }
    };
    assert!(edit("0.5").await.contains("Saved"));
    let (_, answer) = hookd
        .api(Method::GET, "/v1/subscriptions/limited", Some(ADMIN), None)
        .await;
    assert_eq!(rate_of(&answer), json!(0.5), "{answer}");
    for bad in ["fast", "-3", "1000000"] {
        let after = edit(bad).await;
        assert!(after.contains("Not saved"), "{bad}: {after}");
        let (_, answer) = hookd
            .api(Method::GET, "/v1/subscriptions/limited", Some(ADMIN), None)
            .await;
        assert_eq!(
            rate_of(&answer),
            json!(0.5),
            "{bad} changed nothing: {answer}"
        );
    }
    assert!(edit("").await.contains("Saved"));
    let (_, answer) = hookd
        .api(Method::GET, "/v1/subscriptions/limited", Some(ADMIN), None)
        .await;
    assert!(answer["rate_limit"].is_null(), "removed: {answer}");
}

/// The four circuit-breaker keys of subscription `id` as the API shows them.
async fn breaker_of(hookd: &Hookd, id: &str) -> Value {
    let shown = hookd.subscription(id).await;
    json!([
        shown["breaker_failures"],
        shown["breaker_probe_interval"],
        shown["disable_after"],
        shown["disable_after_failures"],
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_settings_are_set_changed_and_removed_in_the_form() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    let session = hookd.sign_in().await;
    let form = hookd
        .get("/ui/subscriptions/new", Some(&session.cookie))
        .await;
    assert!(
        form.body.contains(r#"placeholder="default: 30s""#),
        "an empty field says what it means: {}",
        form.body
    );
    let create = |fields: Vec<(&'static str, &'static str)>| {
        let (hookd, session, url) = (&hookd, &session, receiver.url());
        async move {
            let mut all = vec![
                ("csrf", session.csrf.as_str()),
                ("url", url.as_str()),
                ("events", "*"),
            ];
            all.extend(fields);
            hookd
                .post_form(
                    "/ui/subscriptions",
                    Some(&session.cookie),
                    hookd.same_origin(),
                    &all,
                )
                .await
        }
    };
    // A value the API refuses is marked at its field, and nothing is created.
    let refused = create(vec![("id", "refused"), ("breaker_probe_interval", "soon")]).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused
            .body
            .contains(r#"id="breaker_probe_interval-error""#),
        "the error at its field: {}",
        refused.body
    );
    let created = create(vec![
        ("id", "guarded"),
        ("breaker_failures", "3"),
        ("breaker_probe_interval", "1m"),
        ("disable_after", "5d"),
        ("disable_after_failures", "10"),
    ])
    .await;
    assert_eq!(created.status, 303, "create: {}", created.body);
    assert_eq!(
        breaker_of(&hookd, "guarded").await,
        json!([3, "1m", "5days", 10])
    );
    let page = hookd
        .get("/ui/subscriptions/guarded", Some(&session.cookie))
        .await;
    for shown in [
        r#"name="breaker_failures" id="breaker_failures" value="3""#,
        r#"name="disable_after" id="disable_after" value="5d""#,
        "Breaker opens after: 3 failed attempts in a row",
        "Disabled after failing for: 5days",
    ] {
        assert!(page.body.contains(shown), "{shown}: {}", page.body);
    }

    let edit = |fields: Vec<(&'static str, &'static str)>| {
        let (hookd, session, url) = (&hookd, &session, receiver.url());
        async move {
            let mut all = vec![("events", "*")];
            all.extend(fields);
            let answer = hookd
                .edit_subscription(session, "guarded", &url, &all)
                .await;
            hookd.followed(answer, session).await
        }
    };
    let saved = edit(vec![("breaker_failures", "5"), ("disable_after", "2h")]).await;
    assert!(saved.body.contains("Saved"), "{}", saved.body);
    assert_eq!(
        breaker_of(&hookd, "guarded").await,
        json!([5, "1m", "2h", 10])
    );
    for (field, bad) in [
        ("breaker_failures", "often"),
        ("disable_after_failures", "-1"),
        ("disable_after", "soon"),
    ] {
        let after = edit(vec![(field, bad)]).await;
        assert!(
            after.body.contains("Not saved") && after.body.contains(field),
            "{field} = {bad}: {}",
            after.body
        );
        assert_eq!(
            breaker_of(&hookd, "guarded").await,
            json!([5, "1m", "2h", 10]),
            "{field} = {bad} changed nothing"
        );
    }
    // Emptied, a field follows hookd's default again: off.
    let removed = edit(vec![
        ("breaker_failures", ""),
        ("breaker_probe_interval", ""),
        ("disable_after", ""),
        ("disable_after_failures", ""),
    ])
    .await;
    assert!(removed.body.contains("Saved"), "{}", removed.body);
    assert_eq!(
        breaker_of(&hookd, "guarded").await,
        json!([0, "30s", "0s", 0])
    );
    for shown in [
        r#"name="breaker_failures" id="breaker_failures" value="""#,
        "Breaker opens after: never",
        "Disabled after failing for: never",
    ] {
        assert!(removed.body.contains(shown), "{shown}: {}", removed.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_subscriptions_page_says_why_and_its_enable_button_enables_it() {
    use crate::support::receiver::Reply;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({
            "id": "down", "url": receiver.url(), "events": ["*"], "disable_after_failures": 1
        }))
        .await;
    hookd
        .ingest(json!({ "request_id": "down-1", "status": "completed" }))
        .await;
    wait_until("the subscription disabled", DEADLINE, || async {
        (hookd.subscription("down").await["state"] == "disabled").then_some(())
    })
    .await;
    // This one waits in the queue while the subscription is disabled.
    hookd
        .ingest(json!({ "request_id": "down-2", "status": "completed" }))
        .await;

    let session = hookd.sign_in().await;
    let page = hookd
        .get("/ui/subscriptions/down", Some(&session.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let text = decode_entities(&page.body);
    assert!(
        text.contains("This subscription was disabled by its circuit breaker"),
        "the banner: {text}"
    );
    assert!(
        text.contains("1 failed attempts in a row (disable_after_failures = 1)"),
        "the reason: {text}"
    );
    assert!(
        page.body
            .contains(r#"action="/ui/subscriptions/down/enable""#),
        "the Enable button: {}",
        page.body
    );

    receiver.set_default(Reply::Status(200));
    let enabled = hookd
        .action(&session, "/ui/subscriptions/down/enable")
        .await;
    assert_eq!(enabled.status, 303, "{}", enabled.body);
    let after = hookd.get(&enabled.location(), Some(&session.cookie)).await;
    assert!(after.body.contains("Enabled"), "{}", after.body);
    assert!(
        !after.body.contains("was disabled by its circuit breaker"),
        "{}",
        after.body
    );
    let shown = hookd.subscription("down").await;
    assert_eq!(shown["state"], "active", "{shown}");
    // The delivery that waited goes out.
    let got = receiver.wait_for(2, DEADLINE).await;
    let body: Value = serde_json::from_slice(&got[1].body).expect("JSON");
    assert_eq!(body["request_id"], "down-2");
}

// ------------------------------------------------------------------ the portal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_links_are_issued_to_admins_and_their_bodies_validated() {
    let hookd = Hookd::start("", "").await;
    let body = json!({ "owner": "acme", "expires_in": "1h" });
    let (status, answer) = hookd
        .api(Method::POST, "/v1/portal-links", None, Some(body.clone()))
        .await;
    assert_eq!(status, 401, "without a token: {answer}");
    let (status, answer) = hookd
        .api(
            Method::POST,
            "/v1/portal-links",
            Some(INGEST),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 403, "with an ingest token: {answer}");

    for body in [body, json!({ "owner": "acme" })] {
        let before = time::OffsetDateTime::now_utc();
        let (status, link) = hookd
            .api(
                Method::POST,
                "/v1/portal-links",
                Some(ADMIN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 201, "{body} -> {link}");
        let url = link["url"].as_str().expect("url");
        assert!(
            url.starts_with(&format!("{}/ui/portal/", hookd.origin())),
            "{url}"
        );
        assert_eq!(link["owner"], "acme");
        let expires = time::OffsetDateTime::parse(
            link["expires_at"].as_str().expect("expires_at"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339 expires_at");
        let lifetime = expires - before;
        assert!(
            lifetime > time::Duration::minutes(59) && lifetime < time::Duration::minutes(61),
            "{body}: expires in {lifetime}, not 1h"
        );
        let portal = hookd.get(&url[hookd.origin().len()..], None).await;
        assert_html(&portal, "a new portal link", false);
    }

    let cases = [
        (json!({ "expires_in": "1h" }), "owner"),
        (json!({ "owner": "", "expires_in": "1h" }), "owner"),
        (
            json!({ "owner": "acme", "expires_in": "forever" }),
            "expires_in",
        ),
        (
            json!({ "owner": "acme", "expires_in": "31d" }),
            "expires_in",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = hookd
            .api(
                Method::POST,
                "/v1/portal-links",
                Some(ADMIN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let (status, answer) = hookd
        .api(
            Method::POST,
            "/v1/portal-links",
            Some(ADMIN),
            Some(json!({ "owner": "acme", "expires_in": "30d" })),
        )
        .await;
    assert_eq!(status, 201, "the maximum, 30d: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_shows_its_owners_subscriptions_and_deliveries_only_and_survives_a_restart() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start(
        "",
        &format!(
            "[[subscription]]\nid = \"cfg-sub\"\nurl = {:?}\nsecret = \"cfg-secret\"\nevents = [\"*\"]\n",
            receiver.url()
        ),
    )
    .await;
    for (id, owner) in [("acme-sub", "acme"), ("globex-sub", "globex")] {
        hookd
            .create_subscription(json!({ "id": id, "owner": owner, "url": receiver.url(), "events": ["*"], "secret": format!("{id}-secret") }))
            .await;
    }
    // Each owner's events reach its subscription and the config file's (which has no owner).
    hookd
        .ingest(json!({ "request_id": "portal-1", "status": "completed", "owner": "acme" }))
        .await;
    hookd
        .ingest(json!({ "request_id": "portal-2", "status": "failed", "owner": "acme", "webhook_url": receiver.url(), "webhook_secret": "adhoc-secret" }))
        .await;
    for id in ["portal-3", "portal-4"] {
        hookd
            .ingest(json!({ "request_id": id, "status": "completed", "owner": "globex" }))
            .await;
    }
    let acme = hookd.wait_finished("acme-sub", 2).await;
    let globex = hookd.wait_finished("globex-sub", 2).await;
    let config = hookd.wait_finished("cfg-sub", 4).await;
    let adhoc = hookd.wait_finished("adhoc", 1).await;
    let foreign_subscriptions = ["globex-sub", "cfg-sub"];
    let foreign_deliveries: Vec<&String> = globex.iter().chain(&config).chain(&adhoc).collect();

    let portal = hookd.portal_link("acme", "1h").await;
    let mut pages = vec![
        portal.clone(),
        format!("{portal}/subscriptions"),
        format!("{portal}/deliveries"),
        format!("{portal}/deliveries?status=delivered"),
        format!("{portal}/subscriptions/acme-sub"),
        format!("{portal}/subscriptions/new"),
    ];
    pages.extend(acme.iter().map(|id| format!("{portal}/deliveries/{id}")));
    for path in &pages {
        let page = hookd.get(path, None).await;
        assert_html(&page, &format!("GET {path}"), false);
        assert!(
            page.header("content-security-policy")
                .contains("frame-ancestors 'none'"),
            "GET {path}: ui_frame_ancestors is empty: {:?}",
            page.header("content-security-policy")
        );
        assert!(
            !page.body.contains("Sign out"),
            "GET {path}: a Sign out button in the portal"
        );
        for other in foreign_subscriptions
            .iter()
            .copied()
            .chain(foreign_deliveries.iter().map(|s| s.as_str()))
        {
            assert!(
                !page.body.contains(other),
                "GET {path} shows {other}, not acme's:\n{}",
                page.body
            );
        }
    }
    for path in [&portal, &format!("{portal}/subscriptions")] {
        let page = hookd.get(path, None).await;
        assert!(page.body.contains("acme-sub"), "GET {path}:\n{}", page.body);
    }
    let deliveries = hookd.get(&format!("{portal}/deliveries"), None).await;
    for id in &acme {
        assert!(
            deliveries.body.contains(id.as_str()),
            "acme's delivery {id} is not listed:\n{}",
            deliveries.body
        );
    }
    let new_form = hookd
        .get(&format!("{portal}/subscriptions/new"), None)
        .await;
    assert!(
        !new_form.body.contains("name=\"owner\""),
        "the portal's form has an owner field:\n{}",
        new_form.body
    );

    // Everything not acme's is 404 through acme's portal.
    for id in foreign_subscriptions {
        let path = format!("{portal}/subscriptions/{id}");
        let page = hookd.get(&path, None).await;
        assert_eq!(page.status, 404, "GET {path}: {}", page.body);
    }
    for id in &foreign_deliveries {
        let path = format!("{portal}/deliveries/{id}");
        let page = hookd.get(&path, None).await;
        assert_eq!(page.status, 404, "GET {path}: {}", page.body);
    }
    // Filters name what they look for (and may echo it): what they find is acme's only.
    let filtered = hookd
        .get(
            &format!("{portal}/deliveries?subscription=globex-sub"),
            None,
        )
        .await;
    for id in &foreign_deliveries {
        assert!(
            !filtered.body.contains(id.as_str()),
            "filtering acme's portal by globex-sub lists {id}:\n{}",
            filtered.body
        );
    }
    let search = hookd
        .get(&format!("{portal}/deliveries?q={}", globex[0]), None)
        .await;
    assert!(
        !search.body.contains(&format!("deliveries/{}", globex[0])),
        "searching for globex's delivery links to it:\n{}",
        search.body
    );
    if search.status == 303 {
        let target = hookd.get(&search.location(), None).await;
        assert_eq!(
            target.status,
            404,
            "the search leads to {}",
            search.location()
        );
    }

    // Actions: with the portal's csrf, acme's subscription pauses; globex's is not found.
    let csrf = hookd
        .get(&format!("{portal}/subscriptions/acme-sub"), None)
        .await
        .csrf();
    for id in foreign_subscriptions {
        let refused = hookd
            .post_form(
                &format!("{portal}/subscriptions/{id}/pause"),
                None,
                hookd.same_origin(),
                &[("csrf", csrf.as_str())],
            )
            .await;
        assert_eq!(refused.status, 404, "pause {id} through acme's portal");
        assert!(!hookd.paused(id).await, "{id} was paused by acme's portal");
    }
    let paused = hookd
        .post_form(
            &format!("{portal}/subscriptions/acme-sub/pause"),
            None,
            hookd.same_origin(),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(paused.status, 303, "pause acme-sub: {}", paused.body);
    assert!(hookd.paused("acme-sub").await);

    // A subscription created through the portal belongs to acme, whatever the form says.
    let created = hookd
        .post_form(
            &format!("{portal}/subscriptions"),
            None,
            hookd.same_origin(),
            &[
                ("csrf", csrf.as_str()),
                ("url", receiver.url().as_str()),
                ("events", "*"),
                ("other_events", ""),
                ("id", "acme-new"),
                ("secret", ""),
                ("signature", "abstrakt"),
                ("owner", "globex"),
            ],
        )
        .await;
    assert_eq!(
        created.status, 303,
        "create through the portal: {}",
        created.body
    );
    // Its id is generated, whatever the form says (ids are global: docs/security.md).
    let id = portal_created_id(&created, &portal);
    assert!(id.starts_with("sub_"), "{id}");
    let (status, _) = hookd
        .api(Method::GET, "/v1/subscriptions/acme-new", Some(ADMIN), None)
        .await;
    assert_eq!(status, 404, "the typed id is not used");
    let (status, shown) = hookd
        .api(
            Method::GET,
            &format!("/v1/subscriptions/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["owner"], "acme", "{shown}");

    // The link outlives a restart of hookd.
    let hookd = hookd.restart().await;
    let page = hookd.get(&portal, None).await;
    assert_html(&page, "the portal after a restart", false);
    assert!(page.body.contains("acme-sub"), "{}", page.body);
}

/// The id of the subscription a portal's form created: its secret page's address names it
/// (`<portal>/subscriptions/<id>/secret?shown=...`).
fn portal_created_id(created: &Page, portal: &str) -> String {
    let location = created.location_path();
    location
        .strip_prefix(&format!("{portal}/subscriptions/"))
        .and_then(|rest| rest.strip_suffix("/secret"))
        .unwrap_or_else(|| panic!("a secret page under {portal}: {location}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_expired_portal_link_is_refused() {
    let hookd = Hookd::start("", "").await;
    let portal = hookd.portal_link("acme", "1h").await;
    let token = portal.strip_prefix("/ui/portal/").expect("token");
    assert_eq!(hookd.get(&portal, None).await.status, 200);
    let tampered = format!("/ui/portal/{}", tamper(token));
    for path in [tampered.clone(), format!("{tampered}/deliveries")] {
        let page = hookd.get(&path, None).await;
        assert_eq!(page.status, 403, "GET {path}: {}", page.body);
        assert_ui_headers(&page, "the invalid link page", false);
    }

    let short = hookd.portal_link("acme", "2s").await;
    let first = hookd.get(&short, None).await;
    assert_eq!(first.status, 200, "before it expires: {}", first.body);
    let expired = wait_until("the portal link to expire", DEADLINE, || async {
        let page = hookd.get(&short, None).await;
        (page.status != 200).then_some(page)
    })
    .await;
    assert_eq!(expired.status, 403, "{}", expired.body);
    assert!(
        expired.body.to_lowercase().contains("expired"),
        "{}",
        expired.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_does_not_open_the_admin_pages() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "acme-sub", "owner": "acme", "url": receiver.url(), "events": ["*"], "secret": "acme-secret" }))
        .await;
    let portal = hookd.portal_link("acme", "1h").await;
    let mut cookies = Vec::new();
    let mut csrf = String::new();
    for path in [portal.clone(), format!("{portal}/subscriptions/acme-sub")] {
        let page = hookd.get(&path, None).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        cookies.extend(page.cookies_set());
        if let Some(value) = hidden_csrf(&page.body) {
            csrf = value;
        }
    }
    assert!(!csrf.is_empty(), "the portal's pages carry no csrf value");
    let cookie = cookies.join("; ");
    let cookie = (!cookie.is_empty()).then_some(cookie.as_str());

    for path in ["/ui", "/ui/subscriptions", "/ui/subscriptions/acme-sub"] {
        assert_to_login(
            &hookd.get(path, cookie).await,
            &format!("GET {path} after visiting the portal"),
        );
    }
    let refused = hookd
        .post_form(
            "/ui/subscriptions/acme-sub/pause",
            cookie,
            hookd.same_origin(),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert!(
        refused.status == 403 || (refused.status == 303 && refused.location_path() == "/ui/login"),
        "an admin action with the portal's csrf: {} {}",
        refused.status,
        refused.body
    );
    assert!(!hookd.paused("acme-sub").await);
}

// ------------------------------------------------------------------ the forms, grown up

/// Asserts that `page` says `text`.
fn assert_shows(page: &Page, text: &str) {
    assert!(
        page.body.contains(text),
        "{text:?} is not on the page:\n{}",
        page.body
    );
}

/// The opening tag of the form control whose `id` is `id` (`<input ... id="url" ...>`).
fn control_tag(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no control {marker} on the page:\n{html}"));
    let start = html[..at].rfind('<').expect("a tag opens before it");
    let end = at + html[at..].find('>').expect("the tag closes");
    html[start..=end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_form_shows_every_error_at_once_and_keeps_what_was_typed() {
    let hookd = Hookd::start("", "").await;
    let session = hookd.sign_in().await;
    let fields = [
        ("csrf", session.csrf.as_str()),
        ("url", "ftp://x"),
        ("events", "job.completed"),
        ("other_events", ""),
        ("id", "all-errors"),
        ("secret", "typed-secret-4c1e"),
        ("signature", "abstrakt"),
        ("owner", ""),
        ("rate_limit", "abc"),
        ("breaker_probe_interval", "5 minutes"),
        ("disable_after", "forever"),
    ];
    let refused = hookd
        .post_form(
            "/ui/subscriptions",
            Some(&session.cookie),
            hookd.same_origin(),
            &fields,
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    // "5 minutes" is a duration: kept, and not flagged.
    assert!(!control_tag(&refused.body, "breaker_probe_interval").contains("aria-invalid"));
    for id in ["url", "rate_limit", "disable_after"] {
        assert!(
            control_tag(&refused.body, id).contains("aria-invalid=\"true\""),
            "{id} is flagged: {}",
            control_tag(&refused.body, id)
        );
        assert!(
            refused.body.contains(&format!("id=\"{id}-error\"")),
            "{id} has its message:\n{}",
            refused.body
        );
    }
    for (id, typed) in [
        ("url", "ftp://x"),
        ("rate_limit", "abc"),
        ("breaker_probe_interval", "5 minutes"),
        ("disable_after", "forever"),
        ("secret", "typed-secret-4c1e"),
        ("id", "all-errors"),
    ] {
        assert!(
            control_tag(&refused.body, id).contains(&format!("value=\"{typed}\"")),
            "{id} keeps {typed:?}: {}",
            control_tag(&refused.body, id)
        );
    }
    let (status, _) = hookd
        .api(
            Method::GET,
            "/v1/subscriptions/all-errors",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 404, "nothing was created");

    // The edit form too: every error at once, the page again as typed, nothing changed.
    hookd
        .create_subscription(
            json!({ "id": "editable", "url": "http://127.0.0.1:9/hook", "events": ["*"] }),
        )
        .await;
    let edited = hookd
        .edit_subscription(
            &session,
            "editable",
            "ftp://y",
            &[
                ("events", "*"),
                ("rate_limit", "fast"),
                ("breaker_failures", "many"),
            ],
        )
        .await;
    assert_eq!(edited.status, 422, "{}", edited.body);
    for id in ["url", "rate_limit", "breaker_failures"] {
        assert!(
            control_tag(&edited.body, id).contains("aria-invalid=\"true\""),
            "{id} is flagged on the edit form: {}",
            control_tag(&edited.body, id)
        );
    }
    assert!(control_tag(&edited.body, "url").contains("value=\"ftp://y\""));
    assert_eq!(
        hookd.subscription("editable").await["url"],
        "http://127.0.0.1:9/hook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_learn_that_another_owners_subscription_id_exists() {
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "cust-b-prod", "owner": "cust-b", "url": "http://127.0.0.1:9/b", "events": ["*"] }))
        .await;
    let portal = hookd.portal_link("cust-a", "1h").await;
    let csrf = hookd
        .get(&format!("{portal}/subscriptions/new"), None)
        .await
        .csrf();
    let new_form = hookd
        .get(&format!("{portal}/subscriptions/new"), None)
        .await;
    assert!(
        !new_form.body.contains("name=\"id\""),
        "the portal's form has no id field:\n{}",
        new_form.body
    );
    let create = |id: &'static str| {
        let (hookd, portal, csrf) = (&hookd, &portal, &csrf);
        async move {
            hookd
                .portal_form(
                    &format!("{portal}/subscriptions"),
                    csrf,
                    &[
                        ("url", "http://127.0.0.1:9/a"),
                        ("events", "*"),
                        ("other_events", ""),
                        ("id", id),
                        ("signature", "abstrakt"),
                    ],
                )
                .await
        }
    };
    // The same answer for another owner's id and for a free one: a new subscription, its id
    // generated.
    let taken = create("cust-b-prod").await;
    let free = create("never-used-id").await;
    for (what, answer) in [("cust-b-prod", &taken), ("a free id", &free)] {
        assert_eq!(answer.status, 303, "{what}: {}", answer.body);
        assert!(
            !answer.body.contains("exists") && !answer.body.contains("cust-b"),
            "{what}: {}",
            answer.body
        );
        let id = portal_created_id(answer, &portal);
        assert!(id.starts_with("sub_"), "{what}: {id}");
        assert_eq!(hookd.subscription(&id).await["owner"], "cust-a");
    }
    assert_eq!(taken.body, free.body);
    let b = hookd.subscription("cust-b-prod").await;
    assert_eq!(b["owner"], "cust-b", "untouched: {b}");
    // Its page answers as one that never existed.
    let foreign = hookd
        .get(&format!("{portal}/subscriptions/cust-b-prod"), None)
        .await;
    let absent = hookd
        .get(&format!("{portal}/subscriptions/never-existed"), None)
        .await;
    assert_eq!((foreign.status, absent.status), (404, 404));
    assert_eq!(foreign.body, absent.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_speaks_to_the_customer_under_the_providers_name() {
    let hookd = Hookd::start("", "[ui]\ntitle = \"Acme Cloud Webhooks\"\n").await;
    hookd
        .create_subscription(json!({ "id": "cust-a-sub", "owner": "cust-a", "url": "http://127.0.0.1:9/a", "events": ["*"] }))
        .await;
    let portal = hookd.portal_link("cust-a", "1h").await;
    for path in [
        "",
        "/subscriptions",
        "/subscriptions/new",
        "/subscriptions/cust-a-sub",
    ] {
        let page = hookd.get(&format!("{portal}{path}"), None).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let header = &page.body[page.body.find("<header").expect("a header")
            ..page.body.find("</header>").expect("its end")];
        assert!(header.contains("Acme Cloud Webhooks"), "{path}: {header}");
        assert!(
            !header.contains("hookd") && !header.contains("cust-a"),
            "{path}: {header}"
        );
        assert!(
            element_text(&page.body, "<title").is_some_and(|t| t.ends_with("Acme Cloud Webhooks")),
            "{path}: the title names the provider"
        );
        for operator_words in [
            "targets.allow",
            "set through the API",
            "admin enables",
            "breaker",
            "Breaker",
            "[delivery]",
        ] {
            assert!(
                !page.body.contains(operator_words),
                "{path} says {operator_words:?}:\n{}",
                page.body
            );
        }
    }
    // A refused address, in the customer's words.
    let csrf = hookd
        .get(&format!("{portal}/subscriptions/new"), None)
        .await
        .csrf();
    let refused = hookd
        .portal_form(
            &format!("{portal}/subscriptions"),
            &csrf,
            &[
                ("url", "https://10.0.0.1/hook"),
                ("events", "*"),
                ("signature", "abstrakt"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(!refused.body.contains("targets.allow"), "{}", refused.body);
    assert!(refused.body.contains("public"), "{}", refused.body);
    // The operator's own dashboard still says hookd.
    let session = hookd.sign_in().await;
    let admin = hookd.get("/ui", Some(&session.cookie)).await;
    assert!(admin.body.contains("<span class=\"brand\">hookd</span>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_shows_once_and_never_in_the_address_and_the_icon_is_served() {
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(
            json!({ "id": "noticed", "url": "http://127.0.0.1:9/n", "events": ["*"] }),
        )
        .await;
    let session = hookd.sign_in().await;
    let paused = hookd
        .action(&session, "/ui/subscriptions/noticed/pause")
        .await;
    assert_eq!(paused.status, 303, "{}", paused.body);
    let location = paused.location();
    assert!(
        !location.to_lowercase().contains("paused"),
        "the notice is not in the address: {location}"
    );
    let first = hookd.get(&location, Some(&session.cookie)).await;
    assert_shows(&first, "Paused: its deliveries wait");
    let again = hookd.get(&location, Some(&session.cookie)).await;
    assert_eq!(again.status, 200);
    assert!(
        !again.body.contains("Paused: its deliveries wait"),
        "a reload shows it no more:\n{}",
        again.body
    );
    let icon = hookd.get("/favicon.ico", None).await;
    assert_eq!(icon.status, 200, "{}", icon.body);
    assert_eq!(icon.header("content-type"), "image/svg+xml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_in_the_dashboard_is_confirmed_then_switched_in_a_second_step() {
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "turning", "owner": "cust-r", "url": "http://127.0.0.1:9/r", "events": ["*"], "secret": "dash-old-secret" }))
        .await;
    let session = hookd.sign_in().await;
    let page = hookd
        .get("/ui/subscriptions/turning", Some(&session.cookie))
        .await;
    assert!(page
        .body
        .contains("href=\"/ui/subscriptions/turning/rotate-secret\""));

    // The confirmation page says what will happen and when.
    let confirm = hookd
        .get(
            "/ui/subscriptions/turning/rotate-secret",
            Some(&session.cookie),
        )
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("previous secret"), "{}", confirm.body);
    assert_shows(&confirm, "Switch to the new secret");
    assert!(confirm.body.contains("Z."), "a time: {}", confirm.body);
    let unconfirmed = hookd
        .action(&session, "/ui/subscriptions/turning/rotate-secret")
        .await;
    assert_eq!(
        (unconfirmed.status, unconfirmed.location_path().as_str()),
        (303, "/ui/subscriptions/turning/rotate-secret")
    );
    assert_eq!(hookd.subscription("turning").await["rotation"], Value::Null);

    let rotated = hookd
        .post_form(
            "/ui/subscriptions/turning/rotate-secret",
            Some(&session.cookie),
            hookd.same_origin(),
            &[("csrf", session.csrf.as_str()), ("confirm", "yes")],
        )
        .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    let shown = hookd.get(&rotated.location(), Some(&session.cookie)).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let secret = element_text(&shown.body, "id=\"secret\"").expect("the new secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let rotation = hookd.subscription("turning").await["rotation"].clone();
    assert_eq!(
        rotation["x_abstrakt_signature"], "previous_secret",
        "{rotation}"
    );

    // The subscription's page (the operator's and the owner's) offers the switch.
    let portal = hookd.portal_link("cust-r", "1h").await;
    for (path, cookie) in [
        (
            "/ui/subscriptions/turning".to_string(),
            Some(session.cookie.as_str()),
        ),
        (format!("{portal}/subscriptions/turning"), None),
    ] {
        let page = hookd.get(&path, cookie).await;
        assert!(page.body.contains("Secret rotation in progress"), "{path}");
        assert!(
            page.body.contains("/subscriptions/turning/finish-rotation"),
            "{path}"
        );
        assert!(
            !page.body.contains(&secret),
            "{path} shows the new secret again"
        );
    }
    let switched = hookd
        .action(&session, "/ui/subscriptions/turning/finish-rotation")
        .await;
    assert_eq!(switched.status, 303, "{}", switched.body);
    let after = hookd.get(&switched.location(), Some(&session.cookie)).await;
    assert!(after.body.contains("Switched"), "{}", after.body);
    assert!(!after.body.contains("Secret rotation in progress"));
    assert_eq!(hookd.subscription("turning").await["rotation"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edit_form_sets_the_owner_and_the_signature_scheme() {
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "ownerless", "url": "http://127.0.0.1:9/o", "events": ["*"], "secret": "whsec_AAECAwQFBgcICQ==" }))
        .await;
    let session = hookd.sign_in().await;
    let page = hookd
        .get("/ui/subscriptions/ownerless", Some(&session.cookie))
        .await;
    assert_shows(&page, "<dd>X-Abstrakt-Signature</dd>");
    let edited = hookd
        .edit_subscription(
            &session,
            "ownerless",
            "http://127.0.0.1:9/o",
            &[
                ("events", "*"),
                ("owner", "cust-9"),
                ("signature", "standard"),
            ],
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    assert_eq!(hookd.subscription("ownerless").await["owner"], "cust-9");
    let page = hookd
        .get("/ui/subscriptions/ownerless", Some(&session.cookie))
        .await;
    assert!(page.body.contains("<dd>Standard Webhooks"), "{}", page.body);

    // A portal's edit form cannot move a subscription to another owner.
    let portal = hookd.portal_link("cust-9", "1h").await;
    let csrf = hookd
        .get(&format!("{portal}/subscriptions/new"), None)
        .await
        .csrf();
    let moved = hookd
        .portal_form(
            &format!("{portal}/subscriptions/ownerless"),
            &csrf,
            &[
                ("url", "http://127.0.0.1:9/o"),
                ("events", "*"),
                ("owner", "cust-evil"),
            ],
        )
        .await;
    assert_eq!(moved.status, 303, "{}", moved.body);
    assert_eq!(hookd.subscription("ownerless").await["owner"], "cust-9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_failed_deliveries_counts_them_first_and_requeues_each_once() {
    // Nothing listens on the subscription's port: one attempt each (retry_schedule = []), dead.
    let port = crate::support::process::free_ports(1)[0];
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "recover", "owner": "cust-r", "url": format!("http://127.0.0.1:{port}/hook"), "events": ["*"] }))
        .await;
    for i in 0..3 {
        hookd
            .ingest(json!({ "request_id": format!("recover-{i}"), "status": "completed", "owner": "cust-r" }))
            .await;
    }
    let dead = hookd.wait_finished("recover", 3).await;
    let session = hookd.sign_in().await;
    let since = "2000-01-01T00:00";

    // The count comes first; nothing is sent before the confirmation.
    let counted = hookd
        .get(
            &format!("/ui/subscriptions/recover/resend?since={since}"),
            Some(&session.cookie),
        )
        .await;
    assert_eq!(counted.status, 200, "{}", counted.body);
    assert_shows(&counted, "3 deliveries of recover failed for good");
    assert_shows(&counted, "Resend 3 deliveries");
    let unconfirmed = hookd
        .post_form(
            "/ui/subscriptions/recover/resend",
            Some(&session.cookie),
            hookd.same_origin(),
            &[("csrf", session.csrf.as_str()), ("since", since)],
        )
        .await;
    assert_eq!(unconfirmed.status, 303);
    assert!(
        unconfirmed.location().contains("/resend?since="),
        "{}",
        unconfirmed.location()
    );

    // The portal of the owner resends them: each gets exactly one more attempt.
    let portal = hookd.portal_link("cust-r", "1h").await;
    let csrf = hookd
        .get(
            &format!("{portal}/subscriptions/recover/resend?since={since}"),
            None,
        )
        .await
        .csrf();
    let resent = hookd
        .portal_form(
            &format!("{portal}/subscriptions/recover/resend"),
            &csrf,
            &[("since", since), ("confirm", "yes")],
        )
        .await;
    assert_eq!(resent.status, 303, "{}", resent.body);
    let page = hookd.get(&resent.location(), None).await;
    assert_shows(&page, "3 of 3 failed deliveries resent");
    for id in &dead {
        wait_until(
            &format!("{id} dead after a second attempt"),
            DEADLINE,
            || async {
                let d = hookd.delivery(id).await;
                (d["state"] == "dead" && d["attempts"] == 2).then_some(())
            },
        )
        .await;
    }
    // The audit log has the resend, by the portal, with its count.
    let (status, log) = hookd
        .api(
            Method::GET,
            "/v1/audit?actor=portal:cust-r",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let resend = &log["entries"][0];
    assert_eq!(
        (&resend["action"], &resend["object"], &resend["owner"]),
        (&json!("resent"), &json!("recover"), &json!("cust-r")),
        "{log}"
    );
    assert!(
        resend["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3 of 3 failed deliveries"),
        "{log}"
    );
    // Another owner's portal finds nothing of it to resend.
    let other = hookd.portal_link("cust-other", "1h").await;
    let foreign = hookd
        .get(
            &format!("{other}/subscriptions/recover/resend?since={since}"),
            None,
        )
        .await;
    assert_eq!(foreign.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriptions_name_is_set_in_the_forms_and_shown_beside_its_id_on_every_page() {
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    let session = hookd.sign_in().await;
    let created = hookd
        .create_with_form(
            &session,
            &[
                ("id", "named"),
                ("name", "Nightly builds"),
                ("description", "Tells the build farm.\r\nTwo lines."),
                ("url", receiver.url().as_str()),
                ("events", "*"),
            ],
        )
        .await;
    assert!([200, 303].contains(&created.status), "{}", created.body);
    let (_, shown) = hookd
        .api(Method::GET, "/v1/subscriptions/named", Some(ADMIN), None)
        .await;
    assert_eq!(shown["name"], "Nightly builds", "{shown}");
    assert_eq!(
        shown["description"], "Tells the build farm.\nTwo lines.",
        "{shown}"
    );

    hookd
        .ingest(json!({ "request_id": "named-1", "status": "completed" }))
        .await;
    let delivered = hookd.wait_finished("named", 1).await;
    for path in [
        "/ui".to_string(),
        "/ui/subscriptions".to_string(),
        "/ui/subscriptions/named".to_string(),
        "/ui/deliveries".to_string(),
        format!("/ui/deliveries/{}", delivered[0]),
    ] {
        let page = hookd.get(&path, Some(&session.cookie)).await;
        assert_eq!(page.status, 200, "{path}");
        assert_shows(&page, "Nightly builds");
        assert_shows(&page, r#"<span class="hint sub-id">named</span>"#);
    }
    let page = hookd
        .get("/ui/subscriptions/named", Some(&session.cookie))
        .await;
    assert_shows(&page, "Tells the build farm.\nTwo lines.");
    assert!(control_tag(&page.body, "name").contains(r#"value="Nightly builds""#));

    // Renamed, then the name emptied: the id alone again.
    let url = receiver.url();
    let renamed = hookd
        .edit_subscription(
            &session,
            "named",
            &url,
            &[("events", "*"), ("name", "Builds (EU)")],
        )
        .await;
    assert_shows(&hookd.followed(renamed, &session).await, "Saved");
    let list = hookd.get("/ui/subscriptions", Some(&session.cookie)).await;
    assert_shows(&list, "Builds (EU)");
    let too_long = "n".repeat(101);
    let refused = hookd
        .edit_subscription(
            &session,
            "named",
            &url,
            &[("events", "*"), ("name", &too_long)],
        )
        .await;
    let refused = hookd.followed(refused, &session).await;
    assert_shows(&refused, "Not saved");
    assert_shows(&refused, r#"id="name-error""#);
    let cleared = hookd
        .edit_subscription(&session, "named", &url, &[("events", "*"), ("name", "")])
        .await;
    assert_shows(&hookd.followed(cleared, &session).await, "Saved");
    let (_, shown) = hookd
        .api(Method::GET, "/v1/subscriptions/named", Some(ADMIN), None)
        .await;
    assert!(shown["name"].is_null(), "{shown}");

    // A customer names theirs through the portal; another owner's portal never shows it.
    let portal = hookd.portal_link("acme", "1h").await;
    let form = hookd
        .get(&format!("{portal}/subscriptions/new"), None)
        .await;
    let created = hookd
        .portal_form(
            &format!("{portal}/subscriptions"),
            &form.csrf(),
            &[
                ("name", "Acme orders"),
                ("url", url.as_str()),
                ("events", "*"),
                ("signature", "abstrakt"),
            ],
        )
        .await;
    let id = portal_created_id(&created, &portal);
    let mine = hookd.get(&format!("{portal}/subscriptions"), None).await;
    assert_shows(&mine, "Acme orders");
    assert_shows(&mine, &format!(r#"<span class="hint sub-id">{id}</span>"#));
    let other = hookd.portal_link("globex", "1h").await;
    for path in ["/subscriptions", "/deliveries"] {
        let page = hookd.get(&format!("{other}{path}"), None).await;
        assert!(!page.body.contains("Acme orders"), "{path}: {}", page.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receivers_headers_are_kept_bounded_and_shown_escaped_on_the_delivery_page() {
    let receiver = TestReceiver::start().await;
    let mut headers = vec![
        ("X-Request-Id", "req-<b>7</b>".to_string()),
        ("Set-Cookie", "session=do-not-keep".to_string()),
    ];
    const FILLER: [&str; 40] = [
        "x-f00", "x-f01", "x-f02", "x-f03", "x-f04", "x-f05", "x-f06", "x-f07", "x-f08", "x-f09",
        "x-f10", "x-f11", "x-f12", "x-f13", "x-f14", "x-f15", "x-f16", "x-f17", "x-f18", "x-f19",
        "x-f20", "x-f21", "x-f22", "x-f23", "x-f24", "x-f25", "x-f26", "x-f27", "x-f28", "x-f29",
        "x-f30", "x-f31", "x-f32", "x-f33", "x-f34", "x-f35", "x-f36", "x-f37", "x-f38", "x-f39",
    ];
    headers.extend(FILLER.iter().map(|name| (*name, "filler".to_string())));
    receiver.set_default(Reply::WithHeaders(409, headers));
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "answers", "url": receiver.url(), "events": ["*"] }))
        .await;
    hookd
        .ingest(json!({ "request_id": "answer-1", "status": "completed" }))
        .await;
    let id = hookd.wait_finished("answers", 1).await.remove(0);

    let (_, shown) = hookd
        .api(
            Method::GET,
            &format!("/v1/deliveries/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    let kept = shown["attempt_history"][0]["response_headers"]
        .as_array()
        .unwrap_or_else(|| panic!("response_headers: {shown}"))
        .clone();
    assert_eq!(kept.len(), 30, "at most 30 headers: {kept:?}");
    let value_of = |name: &str| {
        kept.iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].clone())
    };
    assert_eq!(value_of("x-request-id"), Some(json!("req-<b>7</b>")));
    assert_eq!(value_of("set-cookie"), Some(json!("[REDACTED]")));
    assert!(!shown.to_string().contains("do-not-keep"), "{shown}");

    let session = hookd.sign_in().await;
    let page = hookd
        .get(&format!("/ui/deliveries/{id}"), Some(&session.cookie))
        .await;
    assert_html(&page, "a delivery page with the receiver's headers", true);
    assert!(!page.body.contains("<b>7"), "escaped:\n{}", page.body);
    assert!(
        decode_entities(&page.body).contains("x-request-id: req-<b>7</b>"),
        "the header is shown as text:\n{}",
        page.body
    );
    assert!(!page.body.contains("do-not-keep"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_types_page_shows_signed_examples_and_a_test_event_takes_a_type() {
    use hmac::{KeyInit, Mac};
    let receiver = TestReceiver::start().await;
    let hookd = Hookd::start("", "").await;
    hookd
        .create_subscription(json!({ "id": "typed", "owner": "acme", "url": receiver.url(), "events": ["job.failed"] }))
        .await;
    let session = hookd.sign_in().await;
    let portal = hookd.portal_link("acme", "1h").await;
    for (path, cookie) in [
        ("/ui/events".to_string(), Some(session.cookie.as_str())),
        (format!("{portal}/events"), None),
    ] {
        let page = hookd.get(&path, cookie).await;
        assert_html(&page, &path, cookie.is_some());
        for name in ["job.completed", "job.failed", "job.test"] {
            assert_shows(
                &page,
                &format!("<h2 id=\"{}\">{name}</h2>", name.replace('.', "-")),
            );
        }
        assert_shows(&page, "X-Abstrakt-Signature");
        assert_shows(&page, "webhook-signature");
        // The seed's example, as delivered, signed as a receiver checks it.
        let text = decode_entities(&page.body);
        let body = r#"{"request_id":"abc123","status":"completed","result":{"items":[{"url":"https://cdn.abstrakt.one/...","content_type":"video/mp4"}]},"metrics":{"inference_time":45.2,"queue_time":2.1},"timestamp":"2025-01-12T10:30:00Z"}"#;
        assert!(text.contains(body), "{path}: the example body:\n{text}");
        let secret = hookd::catalogue::SAMPLE_SECRET;
        assert!(text.contains(secret), "{path}: the sample secret is named");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        assert!(
            text.contains(&signature),
            "{path}: its signature {signature}"
        );
    }

    // "Send test event" of a chosen type: the example's fields, the test's own request id.
    let page = hookd
        .get("/ui/subscriptions/typed", Some(&session.cookie))
        .await;
    assert!(control_tag(&page.body, "test-type").starts_with("<select"));
    let sent = hookd
        .post_form(
            "/ui/subscriptions/typed/test",
            Some(&session.cookie),
            hookd.same_origin(),
            &[
                ("csrf", session.csrf.as_str()),
                ("event_type", "job.completed"),
            ],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let got = receiver.wait_for(1, DEADLINE).await;
    let body: Value = serde_json::from_slice(&got[0].body).expect("JSON");
    assert_eq!(got[0].header("x-abstrakt-event"), "job.completed");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["result"]["items"][0]["content_type"], "video/mp4");
    assert!(
        body["request_id"]
            .as_str()
            .unwrap_or("")
            .starts_with("test_"),
        "{body}"
    );

    // Through the portal's form, and the API: job.test when none is named; an unknown one is
    // refused naming the field.
    let page = hookd
        .get(&format!("{portal}/subscriptions/typed"), None)
        .await;
    let sent = hookd
        .portal_form(
            &format!("{portal}/subscriptions/typed/test"),
            &page.csrf(),
            &[("event_type", "job.failed")],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let got = receiver.wait_for(2, DEADLINE).await;
    assert_eq!(got[1].header("x-abstrakt-event"), "job.failed");
    let (status, answer) = hookd
        .api(
            Method::POST,
            "/v1/subscriptions/typed/test",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let got = receiver.wait_for(3, DEADLINE).await;
    assert_eq!(got[2].header("x-abstrakt-event"), "job.test");
    let (status, answer) = hookd
        .api(
            Method::POST,
            "/v1/subscriptions/typed/test",
            Some(ADMIN),
            Some(json!({ "event_type": "job.exploded" })),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "event_type", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logo_and_the_accent_brand_both_surfaces_within_the_csp_and_follow_a_reload() {
    const PNG_1: &[u8] = b"\x89PNG\r\n\x1a\nfirst-logo";
    const PNG_2: &[u8] = b"\x89PNG\r\n\x1a\nsecond-logo";
    let assets = tempfile::tempdir().expect("temp dir");
    let logo = assets.path().join("logo.png");
    std::fs::write(&logo, PNG_1).expect("write the logo");
    let ui = |accent: &str| {
        format!(
            "[ui]\ntitle = \"Acme\"\nlogo = {:?}\naccent = {accent:?}\n",
            logo.display().to_string()
        )
    };
    let hookd = Hookd::start("", &ui("#7A1F5C")).await;
    let portal = hookd.portal_link("acme", "1h").await;
    let session = hookd.sign_in().await;
    for (path, cookie) in [
        ("/ui/subscriptions", Some(session.cookie.as_str())),
        (portal.as_str(), None),
    ] {
        let page = hookd.get(path, cookie).await;
        assert_html(&page, path, cookie.is_some());
        assert_shows(&page, r#"<img src="/ui/static/logo" alt="" class="logo">"#);
        assert_shows(
            &page,
            r#"<link rel="stylesheet" href="/ui/static/brand.css">"#,
        );
        assert!(
            !page.body.contains("style=") && !page.body.contains("<style"),
            "{path}"
        );
        assert!(
            page.header("content-security-policy")
                .contains("style-src 'self'"),
            "{path}: the CSP is as strict as before"
        );
    }
    let css = hookd.get("/ui/static/brand.css", None).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert_eq!(css.body.trim(), ":root { --accent: #7a1f5c; }");
    let served = hookd.get("/ui/static/logo", None).await;
    assert_eq!(served.header("content-type"), "image/png");
    assert_eq!(served.body, String::from_utf8_lossy(PNG_1));

    // A reload reads the file again and takes the new colour.
    std::fs::write(&logo, PNG_2).expect("write the new logo");
    let config = config_text(hookd._dir.path(), "", &ui("#1d6b2f"));
    std::fs::write(&hookd.config, config).expect("write the config");
    hookd.process.signal("HUP");
    wait_until("the new accent", DEADLINE, || async {
        let css = hookd.get("/ui/static/brand.css", None).await;
        css.body.contains("#1d6b2f").then_some(())
    })
    .await;
    let served = hookd.get("/ui/static/logo", None).await;
    assert_eq!(served.body, String::from_utf8_lossy(PNG_2));

    // Without them: an empty stylesheet, no logo, no <img>.
    let config = config_text(hookd._dir.path(), "", "");
    std::fs::write(&hookd.config, config).expect("write the config");
    hookd.process.signal("HUP");
    wait_until("no logo", DEADLINE, || async {
        let answer = hookd.get("/ui/static/logo", None).await;
        (answer.status == 404).then_some(())
    })
    .await;
    assert!(hookd
        .get("/ui/static/brand.css", None)
        .await
        .body
        .is_empty());
    let page = hookd.get(&portal, None).await;
    assert!(!page.body.contains("<img"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_list_refreshes_itself_only_when_asked_within_bounds() {
    let hookd = Hookd::start("", "").await;
    let session = hookd.sign_in().await;
    let portal = hookd.portal_link("acme", "1h").await;
    let meta = |page: &Page| {
        page.body
            .find("<meta http-equiv=\"refresh\"")
            .map(|at| page.body[at..].split('>').next().unwrap_or("").to_string())
    };
    for (base, cookie) in [
        ("/ui".to_string(), Some(session.cookie.as_str())),
        (portal.clone(), None),
    ] {
        let off = hookd
            .get(&format!("{base}/deliveries?status=dead"), cookie)
            .await;
        assert_html(&off, "the list", cookie.is_some());
        assert_eq!(meta(&off), None, "off unless asked");
        assert_shows(&off, "Refresh every 10 s: <a href=");
        let on_link = format!(r#"<a href="{base}/deliveries?status=dead&refresh=10">on</a>"#);
        assert!(decode_entities(&off.body).contains(&on_link), "{on_link}");
        let on = hookd
            .get(&format!("{base}/deliveries?status=dead&refresh=10"), cookie)
            .await;
        assert_eq!(
            meta(&on).as_deref(),
            Some(r#"<meta http-equiv="refresh" content="10""#)
        );
        assert_shows(
            &on,
            &format!(r#"<a href="{base}/deliveries?status=dead">off</a>"#),
        );
        assert_shows(&on, r#"<input type="hidden" name="refresh" value="10">"#);
        assert!(
            on.header("content-security-policy")
                .contains("script-src 'none'"),
            "no script: a meta refresh"
        );
        for (asked, content) in [("1", "5"), ("30", "30"), ("99999", "300")] {
            let page = hookd
                .get(&format!("{base}/deliveries?refresh={asked}"), cookie)
                .await;
            assert_eq!(
                meta(&page),
                Some(format!(r#"<meta http-equiv="refresh" content="{content}""#)),
                "refresh={asked}"
            );
        }
        let junk = hookd
            .get(&format!("{base}/deliveries?refresh=soon"), cookie)
            .await;
        assert_eq!(junk.status, 200);
        assert_eq!(meta(&junk), None);
    }
}

// ------------------------------------------------------------------ charts and /v1/stats

/// The charts' section of a page (from its heading to the section's end).
fn charts_section(page: &Page) -> &str {
    let start = page
        .body
        .find("<h2 id=\"charts\">")
        .unwrap_or_else(|| panic!("no charts on the page: {}", page.body));
    let rest = &page.body[start..];
    &rest[..rest.find("</section>").expect("the charts' section ends")]
}

/// A subscription's row in the charts' table: deliveries, delivered, dead, failed attempts
/// and success rate, as the page writes them.
fn chart_row(id: &str, counts: [u64; 4], rate: &str) -> String {
    let [deliveries, delivered, dead, failed] = counts;
    format!(
        "<td data-label=\"Subscription\" class=\"id\">{id}</td><td data-label=\"Deliveries\">{deliveries}</td><td data-label=\"Delivered\">{delivered}</td><td data-label=\"Dead\">{dead}</td><td data-label=\"Failed attempts\">{failed}</td><td data-label=\"Success rate\">{rate}</td>"
    )
}

/// Checks a charts section: both drawings, their table, the window links, and the total.
fn assert_charts(section: &str, deliveries: u64, rate: &str, what: &str) {
    for needle in [
        "<svg viewBox=\"0 0 640 220\" role=\"img\" aria-labelledby=\"activity-title\"",
        "<svg viewBox=\"0 0 640 220\" role=\"img\" aria-labelledby=\"latency-title\"",
        "fill=\"url(#chart-hatch)\"",
        "<caption id=\"chart-table-caption\">",
        "?window=week#charts",
        &format!("<dt>Deliveries</dt><dd>{deliveries}</dd>"),
        &format!("<dt>Success rate</dt><dd>{rate}</dd>"),
    ] {
        assert!(
            section.contains(needle),
            "{what}: no {needle:?} in {section}"
        );
    }
    // The table's deliveries add up to the total.
    let rows = section
        .split("<tr><th scope=\"row\">")
        .skip(1)
        .map(|row| {
            let cell = row.split("<td>").nth(1).expect("a deliveries cell");
            cell[..cell.find("</td>").expect("a cell's end")]
                .parse::<u64>()
                .expect("a count")
        })
        .sum::<u64>();
    assert_eq!(rows, deliveries, "{what}: the buckets' deliveries");
}

#[tokio::test]
async fn charts_and_the_stats_api_count_each_viewers_deliveries_by_outcome() {
    let ok = TestReceiver::start().await;
    let failing = TestReceiver::start().await;
    failing.set_default(crate::support::receiver::Reply::Status(500));
    let hookd = Hookd::start("", "").await;
    for (id, owner, url) in [
        ("a-ok", "cust-a", ok.url()),
        ("a-bad", "cust-a", failing.url()),
        ("b-sub", "cust-b", ok.url()),
    ] {
        hookd
            .create_subscription(json!({ "id": id, "owner": owner, "url": url, "events": ["*"], "secret": format!("{id}-secret") }))
            .await;
    }
    // Owner a's 3 events reach a-ok (delivered) and a-bad (500, dead: one attempt each);
    // owner b's 2 reach b-sub.
    for (n, owner) in [
        (1, "cust-a"),
        (2, "cust-a"),
        (3, "cust-a"),
        (4, "cust-b"),
        (5, "cust-b"),
    ] {
        hookd
            .ingest(json!({ "request_id": format!("chart-{n}"), "status": "completed", "owner": owner }))
            .await;
    }
    hookd.wait_finished("a-ok", 3).await;
    hookd.wait_finished("a-bad", 3).await;
    hookd.wait_finished("b-sub", 2).await;

    // The API: totals, each subscription, the buckets, filters, and a bad window.
    let api = &hookd;
    let stats = |query: &'static str| async move {
        let (status, body) = api
            .api(Method::GET, &format!("/v1/stats{query}"), Some(ADMIN), None)
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        body
    };
    let all = stats("?window=hour").await;
    assert_eq!(all["window"], "hour");
    assert_eq!(all["bucket_seconds"], 300);
    assert_eq!(all["sampled"], false);
    let total = &all["total"];
    assert_eq!(
        [
            &total["deliveries"],
            &total["delivered"],
            &total["dead"],
            &total["failed_attempts"],
            &total["attempts"]
        ],
        [&json!(8), &json!(5), &json!(3), &json!(3), &json!(8)],
        "{all}"
    );
    assert_eq!(total["success_rate"], 0.625);
    assert!(total["p50_ms"].is_u64() && total["p95_ms"].as_u64() >= total["p50_ms"].as_u64());
    let buckets = all["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 12);
    let sum = |key: &str| {
        buckets
            .iter()
            .map(|b| b[key].as_u64().expect(key))
            .sum::<u64>()
    };
    assert_eq!(
        (
            sum("deliveries"),
            sum("delivered"),
            sum("dead"),
            sum("failed_attempts")
        ),
        (8, 5, 3, 3)
    );
    let subs = all["subscriptions"].as_array().expect("subscriptions");
    let rate = |id: &str| {
        subs.iter()
            .find(|s| s["id"] == id)
            .map(|s| s["success_rate"].clone())
    };
    assert_eq!(
        (rate("a-ok"), rate("a-bad"), rate("b-sub")),
        (Some(json!(1.0)), Some(json!(0.0)), Some(json!(1.0)))
    );
    let bad = stats("?window=day&subscription=a-bad").await;
    assert_eq!(
        (
            bad["total"]["deliveries"].clone(),
            bad["total"]["dead"].clone()
        ),
        (json!(3), json!(3))
    );
    assert_eq!(
        stats("?window=week&owner=cust-b").await["total"]["deliveries"],
        2
    );
    assert_eq!(stats("").await["window"], "day", "the day by default");
    for (query, error) in [
        (
            "window=month",
            "window must be one of hour, day, week (not \"month\")",
        ),
        (
            "windows=day",
            "unknown query parameter \"windows\"; use window, subscription or owner",
        ),
    ] {
        let path = format!("/v1/stats?{query}");
        let (status, refused) = hookd.api(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (400, Some(error)),
            "{path}"
        );
    }
    let (status, _) = hookd
        .api(Method::GET, "/v1/stats", Some(INGEST), None)
        .await;
    assert_eq!(status, 403, "an ingest token reads no stats");

    // The operator's overview and a subscription's page draw the same numbers.
    let session = hookd.sign_in().await;
    let overview = hookd.get("/ui?window=hour", Some(&session.cookie)).await;
    assert_html(&overview, "the overview's charts", true);
    let section = charts_section(&overview);
    assert_charts(section, 8, "62.5%", "the operator's overview");
    for row in [
        chart_row("a-ok", [3, 3, 0, 0], "100.0%"),
        chart_row("a-bad", [3, 0, 3, 3], "0.0%"),
        chart_row("b-sub", [2, 2, 0, 0], "100.0%"),
    ] {
        assert!(section.contains(&row), "no {row:?} in {section}");
    }
    assert!(
        section.contains("href=\"/ui?window=day#charts\""),
        "{section}"
    );
    let page = hookd
        .get("/ui/subscriptions/a-bad?window=day", Some(&session.cookie))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_charts(charts_section(&page), 3, "0.0%", "a-bad's page");
    let wrong = hookd.get("/ui?window=year", Some(&session.cookie)).await;
    assert_eq!(wrong.status, 400);
    assert_shows(&wrong, "window must be one of hour, day, week");

    // Each owner's portal counts its own deliveries only: nothing of the other's, not even
    // its subscriptions' ids.
    let portal_a = hookd.portal_link("cust-a", "1h").await;
    let a = hookd.get(&format!("{portal_a}?window=hour"), None).await;
    let section = charts_section(&a);
    assert_charts(section, 6, "50.0%", "owner a's overview");
    assert!(
        section.contains(&chart_row("a-bad", [3, 0, 3, 3], "0.0%")),
        "{section}"
    );
    assert!(!a.body.contains("b-sub"), "owner a's portal names b-sub");
    let portal_b = hookd.portal_link("cust-b", "1h").await;
    let b = hookd.get(&format!("{portal_b}?window=hour"), None).await;
    let section = charts_section(&b);
    assert_charts(section, 2, "100.0%", "owner b's overview");
    assert!(
        !b.body.contains("a-ok") && !b.body.contains("a-bad"),
        "{section}"
    );
    let b_sub = hookd
        .get(&format!("{portal_b}/subscriptions/b-sub?window=week"), None)
        .await;
    assert_charts(charts_section(&b_sub), 2, "100.0%", "b-sub's portal page");
    let foreign = hookd
        .get(&format!("{portal_b}/subscriptions/a-bad"), None)
        .await;
    assert_eq!(foreign.status, 404, "another owner's subscription page");
}

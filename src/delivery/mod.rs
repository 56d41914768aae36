//! One delivery attempt: build the signed request, send it, classify what happened.
//!
//! [`Deliverer::attempt`] does the HTTP work and nothing else: it neither reads nor writes the
//! store. The scheduler decides what follows from the [`AttemptResult`] (see [`retry`]).

pub mod retry;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use std::sync::{Arc, RwLock};

use crate::guard::{self, Guard, GuardedResolver};
use crate::signing;
use crate::store::Outcome;

/// How much of a receiver's response body hookd reads and keeps. The rest is never read, so a
/// receiver that streams gigabytes costs hookd this much memory and at most the timeout.
const RESPONSE_EXCERPT_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    /// The receiver's `Retry-After`, raw, on a 429 or 503.
    pub retry_after: Option<String>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// The answer's headers, bounded ([`crate::store::kept_headers`]).
    pub response_headers: Vec<(String, String)>,
    pub duration: Duration,
    /// The target guard refused the address: the delivery ends dead at once.
    pub blocked: bool,
}

/// What one attempt sends.
#[derive(Debug)]
pub struct AttemptRequest<'a> {
    pub url: &'a reqwest::Url,
    pub keys: &'a signing::SigningKeys,
    /// The subscription's own headers, checked by the config: none is hookd's.
    pub headers: &'a [crate::config::CustomHeader],
    pub delivery_id: &'a str,
    pub event_type: &'a str,
    pub attempt: u32,
    pub body: bytes::Bytes,
    pub timeout: Duration,
    /// The W3C trace context of the attempt's span (`traces.traceparent`).
    pub traceparent: Option<&'a str>,
}

/// The HTTP client and the header names, shared by every attempt.
#[derive(Clone)]
pub struct Deliverer {
    /// One client for the whole process, so that connections to a receiver are reused.
    client: reqwest::Client,
    signature: HeaderName,
    event: HeaderName,
    delivery: HeaderName,
    attempt: HeaderName,
    user_agent: HeaderValue,
    /// Checks URLs with a literal IP, which never reach the resolver.
    guard: Arc<RwLock<Guard>>,
    /// `delivery.proxy` is set: the proxy resolves the targets' names, so each is resolved
    /// and checked here first.
    proxied: bool,
}

impl Deliverer {
    /// `header_prefix` is checked by the config (letters, digits and '-'). `guard` decides
    /// which addresses may be connected to; the caller may update it (on reload).
    pub fn new(
        header_prefix: &str,
        guard: Arc<RwLock<Guard>>,
        proxy: Option<&crate::config::Proxy>,
    ) -> anyhow::Result<Deliverer> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10));
        // Every name goes through the guard; proxies from the environment would bypass it, so
        // they are never used: only the configured one is (and its host is the operator's).
        let builder = match proxy {
            Some(p) => builder
                .dns_resolver(Arc::new(GuardedResolver::with_exempt(
                    guard.clone(),
                    &p.host,
                )))
                .proxy(reqwest::Proxy::all(p.url.expose())?),
            None => builder
                .dns_resolver(Arc::new(GuardedResolver::new(guard.clone())))
                .no_proxy(),
        };
        let client = builder.build()?;
        let name =
            |suffix: &str| HeaderName::from_bytes(format!("{header_prefix}-{suffix}").as_bytes());
        Ok(Deliverer {
            client,
            signature: name("Signature")?,
            event: name("Event")?,
            delivery: name("Delivery")?,
            attempt: name("Attempt")?,
            user_agent: HeaderValue::from_static(concat!("hookd/", env!("CARGO_PKG_VERSION"))),
            guard,
            proxied: proxy.is_some(),
        })
    }

    /// Sends one attempt and classifies its result. Never panics on a receiver's behaviour.
    pub async fn attempt(&self, req: AttemptRequest<'_>) -> AttemptResult {
        let started = Instant::now();
        if let Some(refusal) = self.refusal(req.url, started).await {
            return refusal;
        }
        let request = self.build_request(req);
        match request.send().await {
            Ok(response) => read_response(response, started).await,
            Err(e) => failed(&e, started),
        }
    }

    /// The target guard's refusal of `url`, if it refuses it: a literal address it does not
    /// allow, or (behind the proxy, which would resolve it) a name that does not resolve to
    /// allowed addresses. No request is made then.
    async fn refusal(&self, url: &reqwest::Url, started: Instant) -> Option<AttemptResult> {
        let refused = self
            .guard
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .check_url(url);
        if let Err(reason) = refused {
            return Some(without_request(reason.to_string(), true, started));
        }
        if self.proxied {
            if let Some(url::Host::Domain(host)) = url.host() {
                if let Err(reason) = guard::check_name(&self.guard, host).await {
                    let blocked = reason.starts_with(guard::BLOCKED);
                    return Some(without_request(reason, blocked, started));
                }
            }
        }
        None
    }

    /// The attempt's POST: hookd's headers, the signatures, the subscription's own headers, the
    /// trace context, and the body.
    fn build_request(&self, req: AttemptRequest<'_>) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(req.url.clone())
            .timeout(req.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .header(&self.event, req.event_type)
            .header(&self.delivery, req.delivery_id)
            .header(&self.attempt, req.attempt.to_string());
        let mut request = self.sign(request, &req);
        if !req.headers.is_empty() {
            // The subscription's own headers replace hookd's of the same name (User-Agent, say);
            // the config refuses every name that carries a signature, an id or the body's type.
            request = request.headers(custom_headers(req.headers));
        }
        if let Some(traceparent) = req.traceparent {
            request = request.header("traceparent", traceparent);
        }
        request.body(req.body)
    }

    /// Adds the signatures the subscription's keys call for: hookd's own header, and the
    /// Standard Webhooks ones (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    fn sign(
        &self,
        mut request: reqwest::RequestBuilder,
        req: &AttemptRequest<'_>,
    ) -> reqwest::RequestBuilder {
        if let Some(secret) = &req.keys.abstrakt {
            request = request.header(
                &self.signature,
                signing::abstrakt_signature(secret.as_bytes(), &req.body),
            );
        }
        if !req.keys.standard.is_empty() {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let timestamp = i64::try_from(timestamp).unwrap_or(i64::MAX);
            let signature = signing::standard_signature(
                &req.keys.standard,
                req.delivery_id,
                timestamp,
                &req.body,
            );
            request = request
                .header("webhook-id", req.delivery_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature);
        }
        request
    }
}

/// The subscription's own headers; a value that is not a valid header value is left out.
fn custom_headers(headers: &[crate::config::CustomHeader]) -> reqwest::header::HeaderMap {
    let mut custom = reqwest::header::HeaderMap::new();
    for header in headers {
        if let Ok(mut value) = HeaderValue::from_str(header.value.expose()) {
            value.set_sensitive(header.secret);
            custom.append(header.name.clone(), value);
        }
    }
    custom
}

/// Reads the receiver's answer (its status, the `Retry-After` of a 429 or 503, the start of its
/// body) and classifies the attempt by the status.
async fn read_response(mut response: reqwest::Response, started: Instant) -> AttemptResult {
    let status = response.status().as_u16();
    let response_headers = crate::store::kept_headers(
        response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()))),
    );
    let retry_after = match status {
        429 | 503 => response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        _ => None,
    };
    let (excerpt, mut error) = match read_excerpt(&mut response).await {
        Ok(read) => read,
        Err(timeout) => {
            let mut result = failed(&timeout, started);
            result.status_code = Some(status);
            result.response_headers = response_headers;
            return result;
        }
    };
    let outcome = Outcome::from_status(status);
    if outcome != Outcome::Success && error.is_none() {
        error = Some(format!("HTTP {status}"));
    }
    AttemptResult {
        outcome,
        status_code: Some(status),
        retry_after,
        error,
        blocked: false,
        response_excerpt: (!excerpt.is_empty()).then(|| excerpt_text(&excerpt)),
        response_headers,
        duration: started.elapsed(),
    }
}

/// The start of the response body, up to [`RESPONSE_EXCERPT_BYTES`], and what broke it if it
/// broke. The status line arrived; a broken body does not change the outcome, but a timeout
/// while reading it does: that is the `Err`.
async fn read_excerpt(
    response: &mut reqwest::Response,
) -> Result<(Vec<u8>, Option<String>), reqwest::Error> {
    let mut excerpt = Vec::new();
    while excerpt.len() < RESPONSE_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(
                &chunk[..chunk.len().min(RESPONSE_EXCERPT_BYTES - excerpt.len())],
            ),
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(e),
            Err(e) => return Ok((excerpt, Some(describe(&e)))),
        }
    }
    Ok((excerpt, None))
}

/// An attempt that made no request: the target guard refused it (`blocked`: for good), or
/// could not check it.
fn without_request(error: String, blocked: bool, started: Instant) -> AttemptResult {
    AttemptResult {
        outcome: Outcome::Other,
        status_code: None,
        retry_after: None,
        error: Some(error),
        response_excerpt: None,
        response_headers: Vec::new(),
        duration: started.elapsed(),
        blocked,
    }
}

/// The kept start of a receiver's answer as text: invalid UTF-8 and U+0000 become U+FFFD
/// (PostgreSQL's text and jsonb cannot hold U+0000; the excerpt is for people to read).
fn excerpt_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}

fn failed(e: &reqwest::Error, started: Instant) -> AttemptResult {
    if guard::is_blocked(e) {
        return without_request(guard::BLOCKED.to_string(), true, started);
    }
    let outcome = if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Other
    };
    AttemptResult {
        outcome,
        status_code: None,
        retry_after: None,
        error: Some(describe(e)),
        response_excerpt: None,
        response_headers: Vec::new(),
        duration: started.elapsed(),
        blocked: false,
    }
}

/// The error and its causes, without the URL (a per-request URL may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_keeps_no_nul_and_no_invalid_utf8() {
        assert_eq!(excerpt_text(b"ok"), "ok");
        assert_eq!(excerpt_text(b"a\0b"), "a\u{FFFD}b");
        assert_eq!(excerpt_text(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn statuses_map_to_outcome_classes() {
        let cases = [
            (200, "success"),
            (204, "success"),
            (299, "success"),
            (301, "other"),
            (304, "other"),
            (400, "http_4xx"),
            (429, "http_4xx"),
            (500, "http_5xx"),
            (503, "http_5xx"),
            (101, "other"),
        ];
        for (status, class) in cases {
            assert_eq!(Outcome::from_status(status).as_str(), class, "{status}");
        }
    }
}

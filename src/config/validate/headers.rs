//! Custom headers: a subscription's (`headers`) and the trace exporter's (`otlp_headers`).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::Validator;
use crate::config::secret::{HeaderSource, Secret};
use crate::config::subscription::{CustomHeader, MAX_CUSTOM_HEADERS, MAX_HEADER_VALUE};

impl Validator<'_> {
    /// A subscription's `headers`: valid names and values, none reserved ([`reserved_header`]).
    pub(super) fn headers(
        &mut self,
        raw: &Spanned<BTreeMap<String, HeaderSource>>,
        key: &str,
        prefix: &str,
    ) -> Vec<CustomHeader> {
        let span = raw.span();
        if raw.get_ref().len() > MAX_CUSTOM_HEADERS {
            self.error(
                span.clone(),
                key,
                format!("at most {MAX_CUSTOM_HEADERS} headers"),
            );
        }
        let mut headers = Vec::new();
        for (name, source) in raw.get_ref() {
            let here = format!("{key}.{name}");
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|_| plain_header_name(name));
            let Some(header) = header else {
                self.error(
                    span.clone(),
                    &here,
                    format!(
                        "{name:?} is not a header name: letters, digits, '-', '_' and '.' only"
                    ),
                );
                continue;
            };
            if reserved_header(name, prefix) {
                self.error(
                    span.clone(),
                    &here,
                    format!("{name} is reserved: hop-by-hop headers, Host, Content-Type/-Length/-Encoding, Expect, the trace context and every {prefix}-* and webhook-* header (the signatures) are hookd's"),
                );
                continue;
            }
            let Some((value, secret)) = self.header_value(source, &span, &here) else {
                continue;
            };
            headers.push(CustomHeader {
                name: header,
                value,
                secret,
            });
        }
        headers
    }

    /// A header's value from its source, and whether it is a secret: 1 to 4 KiB of visible
    /// ASCII, spaces and tabs. `None` when it is not (reported, without the value: it may be a
    /// secret).
    pub(super) fn header_value(
        &mut self,
        source: &HeaderSource,
        span: &Range<usize>,
        here: &str,
    ) -> Option<(Secret, bool)> {
        let (value, secret) = match source {
            HeaderSource::Plain(v) => (Secret::new(v.clone()), false),
            HeaderSource::Secret(source) => match source.resolve() {
                Ok(v) => (v, true),
                Err(message) => {
                    self.error(span.clone(), here, message);
                    return None;
                }
            },
        };
        let bytes = value.expose().len();
        if bytes == 0 || bytes > MAX_HEADER_VALUE {
            self.error(
                span.clone(),
                here,
                format!("a header value is 1 to {MAX_HEADER_VALUE} bytes"),
            );
            return None;
        }
        if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
            self.error(
                span.clone(),
                here,
                "a header value is visible ASCII, spaces and tabs only (no line breaks)",
            );
            return None;
        }
        Some((value, secret))
    }
}

/// Headers a subscription may not set: hop-by-hop headers, what hookd itself decides (the body's
/// type and length, the host), and the headers under hookd's prefix and Standard Webhooks'
/// `webhook-` (the signatures, ids and attempt numbers) or the trace context.
fn reserved_header(name: &str, prefix: &str) -> bool {
    const RESERVED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        "traceparent",
        "tracestate",
    ];
    let name = name.to_ascii_lowercase();
    RESERVED.contains(&name.as_str())
        || name.starts_with("webhook-")
        || name.starts_with(&format!("{}-", prefix.to_ascii_lowercase()))
}

/// Whether a custom header's name keeps to letters, digits, `-`, `_` and `.`: the part of RFC
/// 9110's token characters that real header names use, and that means nothing to a shell, a
/// log reader or a template (a name like ``X-`hostname` `` is a valid token, and was a command
/// in the dashboard's "Copy as curl").
fn plain_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

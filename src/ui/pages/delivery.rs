//! The delivery page: one delivery, its attempts, the body and headers it is sent with, the
//! "copy as curl" snippet that sends it again, and its retry.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::deliveries::{delivery_row, visible_delivery, DeliveryRow};
use super::subscription_rows::shown_headers;
use super::{answer, error_text, truncate, when, NoticeQuery};
use crate::config::{CustomHeader, SignatureScheme, Subscription};
use crate::event::rfc3339_millis;
use crate::state::Shared;
use crate::store::{Attempt, Delivery, DeliveryState};
use crate::ui::{html, store_down, Action, Nav, Params, Viewer};

/// Characters of a receiver's answer shown.
const EXCERPT_CHARS: usize = 2048;
/// Characters of an event body shown.
const BODY_CHARS: usize = 64 * 1024;

#[derive(Debug)]
pub struct AttemptRow {
    pub number: u32,
    pub started: String,
    pub status: String,
    pub duration_ms: u64,
    pub outcome: &'static str,
    pub error: String,
    pub excerpt: String,
    /// The receiver's answer's headers, one `name: value` a line (empty: none kept).
    pub headers: String,
}

fn attempt_row(a: &Attempt) -> AttemptRow {
    AttemptRow {
        number: a.number,
        started: rfc3339_millis(a.started_ms),
        status: a
            .status_code
            .map_or_else(|| "—".to_string(), |c| c.to_string()),
        duration_ms: a.duration_ms,
        outcome: a.outcome.as_str(),
        error: a.error.clone().unwrap_or_default(),
        excerpt: truncate(a.response_excerpt.as_deref().unwrap_or(""), EXCERPT_CHARS),
        headers: a
            .response_headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    nav: Nav,
    d: DeliveryRow,
    url: String,
    next_attempt: String,
    finished: String,
    headers: Vec<(String, String)>,
    body: String,
    attempts: Vec<AttemptRow>,
    curl: String,
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The headers a delivery is sent with, signatures and secret custom headers masked.
fn sent_headers(
    prefix: &str,
    d: &Delivery,
    scheme: SignatureScheme,
    custom: &[CustomHeader],
) -> Vec<(String, String)> {
    let mut out = shown_headers(custom);
    out.extend([
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "User-Agent".to_string(),
            concat!("hookd/", env!("CARGO_PKG_VERSION")).to_string(),
        ),
        (format!("{prefix}-Event"), d.event_type.clone()),
        (format!("{prefix}-Delivery"), d.id.clone()),
        (
            format!("{prefix}-Attempt"),
            "the attempt's number, from 1".to_string(),
        ),
    ]);
    if scheme != SignatureScheme::Standard {
        out.push((
            format!("{prefix}-Signature"),
            "•••••••• (hex HMAC-SHA256 of the body with the secret; masked)".to_string(),
        ));
    }
    if scheme != SignatureScheme::Abstrakt {
        out.push(("webhook-id".to_string(), d.id.clone()));
        out.push((
            "webhook-timestamp".to_string(),
            "the attempt's Unix time".to_string(),
        ));
        out.push((
            "webhook-signature".to_string(),
            "v1,•••••••• (masked)".to_string(),
        ));
    }
    out
}

/// The shell variable a secret custom header's value is taken from in [`curl`].
fn header_variable(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HEADER_{name}")
}

/// A shell snippet that sends the delivery again as hookd would, signing with
/// `$WEBHOOK_SECRET` (never filled in here); secret custom headers come from variables too.
fn curl(
    prefix: &str,
    url: &str,
    d: &Delivery,
    scheme: SignatureScheme,
    body: &str,
    custom: &[CustomHeader],
) -> String {
    let mut out = String::from(
        "# Set WEBHOOK_SECRET to the subscription's secret first: it is never shown here.\n",
    );
    for h in custom.iter().filter(|h| h.secret) {
        out.push_str(&format!(
            "# Set {} to the value of the secret header {} too.\n",
            header_variable(h.name.as_str()),
            h.name
        ));
    }
    out.push_str(&format!("printf '%s' {} > body.json\n", shell_quote(body)));
    let mut headers = curl_headers(prefix, d, custom);
    if scheme != SignatureScheme::Standard {
        sign_abstrakt(prefix, &mut out, &mut headers);
    }
    if scheme != SignatureScheme::Abstrakt {
        sign_standard(d, &mut out, &mut headers);
    }
    out.push_str(&format!("curl -sS -X POST {} \\\n", shell_quote(url)));
    for h in headers {
        out.push_str(&format!("  {h} \\\n"));
    }
    out.push_str("  --data-binary @body.json\n");
    out
}

/// The `-H` options of [`curl`] before the signatures: the custom headers (a secret one's
/// value from its variable), then hookd's own.
fn curl_headers(prefix: &str, d: &Delivery, custom: &[CustomHeader]) -> Vec<String> {
    let mut headers: Vec<String> = custom
        .iter()
        .map(|h| {
            if h.secret {
                format!(
                    "-H {}\"${}\"",
                    shell_quote(&format!("{}: ", h.name)),
                    header_variable(h.name.as_str())
                )
            } else {
                format!(
                    "-H {}",
                    shell_quote(&format!("{}: {}", h.name, h.value.expose()))
                )
            }
        })
        .collect();
    headers.extend([
        "-H 'Content-Type: application/json'".to_string(),
        format!(
            "-H {}",
            shell_quote(&format!("{prefix}-Event: {}", d.event_type))
        ),
        format!(
            "-H {}",
            shell_quote(&format!("{prefix}-Delivery: {}", d.id))
        ),
        format!(
            "-H {}",
            shell_quote(&format!("{prefix}-Attempt: {}", d.attempts + 1))
        ),
    ]);
    headers
}

/// The `<prefix>-Signature` of [`curl`]: the line that computes it, and its header.
fn sign_abstrakt(prefix: &str, out: &mut String, headers: &mut Vec<String>) {
    out.push_str(
        "signature=$(openssl dgst -sha256 -hmac \"$WEBHOOK_SECRET\" -hex < body.json | sed 's/^.*= //')\n",
    );
    headers.push(format!(
        "-H {}\"$signature\"",
        shell_quote(&format!("{prefix}-Signature: "))
    ));
}

/// The Standard Webhooks signature of [`curl`]: the lines that compute it, and its headers.
fn sign_standard(d: &Delivery, out: &mut String, headers: &mut Vec<String>) {
    out.push_str("timestamp=$(date +%s)\n");
    out.push_str("key=$(printf '%s' \"${WEBHOOK_SECRET#whsec_}\" | base64 -d | od -An -tx1 | tr -d ' \\n')\n");
    out.push_str(&format!(
        "standard=$( (printf '%s.%s.' {} \"$timestamp\"; cat body.json) | openssl dgst -sha256 -mac HMAC -macopt \"hexkey:$key\" -binary | base64)\n",
        shell_quote(&d.id)
    ));
    headers.push(format!(
        "-H {}",
        shell_quote(&format!("webhook-id: {}", d.id))
    ));
    headers.push("-H 'webhook-timestamp: '\"$timestamp\"".to_string());
    headers.push("-H 'webhook-signature: v1,'\"$standard\"".to_string());
}

/// Where delivery `d` goes and how it is signed: an ad hoc delivery's own URL (redacted), else
/// its subscription's, with that subscription's custom headers.
fn target<'a>(
    d: &Delivery,
    sub: Option<&'a Subscription>,
) -> (String, SignatureScheme, &'a [CustomHeader]) {
    match (&d.adhoc, sub) {
        (Some(adhoc), _) => (
            crate::api::admin::redacted_url(&adhoc.url),
            SignatureScheme::Abstrakt,
            &[],
        ),
        (None, Some(s)) => (s.url.to_string(), s.signature, &s.headers),
        (None, None) => (
            "(the subscription no longer exists)".to_string(),
            SignatureScheme::Abstrakt,
            &[],
        ),
    }
}

pub async fn delivery(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    let d = match visible_delivery(&shared, &viewer, &id).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    let (Ok(attempts), Ok(body)) = (
        shared.store.attempts(&id).await,
        shared.store.event_body(&d.event_id).await,
    ) else {
        return store_down();
    };
    let config = shared.config();
    let (url, scheme, custom) = target(&d, config.subscription(&d.subscription));
    let body = body
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let prefix = &config.delivery.header_prefix;
    let page = DeliveryPage {
        nav: viewer.nav("deliveries", q.notice),
        d: delivery_row(&config, &d),
        headers: sent_headers(prefix, &d, scheme, custom),
        curl: curl(prefix, &url, &d, scheme, &body, custom),
        body: truncate(&body, BODY_CHARS),
        url,
        next_attempt: when(d.due_ms.filter(|_| d.state == DeliveryState::Scheduled)),
        finished: when(d.finished_ms),
        attempts: attempts.iter().map(attempt_row).collect(),
    };
    html(StatusCode::OK, &page)
}

/// `POST .../deliveries/{id}/retry`: the admin API's retry, for a delivery the viewer may see.
pub async fn retry_one(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    action: Action,
) -> Response {
    let id = params.get("id").cloned().unwrap_or_default();
    if let Err(page) = visible_delivery(&shared, &action.viewer, &id).await {
        return page;
    }
    let (status, body) = answer(
        crate::api::audited::retry_delivery(
            State(shared.clone()),
            Path(id.clone()),
            action.viewer.actor.clone(),
        )
        .await,
    )
    .await;
    let notice = if status.is_success() {
        "Requeued: the next attempt is due now.".to_string()
    } else {
        error_text(&body)
    };
    action
        .viewer
        .redirect_with(&format!("{}/deliveries/{id}", action.viewer.base), &notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether every backtick and `$` of `line` (a shell command) sits inside single quotes,
    /// apart from `"$name"` variable expansions the snippet makes itself.
    fn nothing_runs_outside_single_quotes(line: &str) -> bool {
        let (mut single, mut double) = (false, false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                // Outside quotes, a backslash makes the next character literal (`'\''`).
                '\\' if !single && !double => {
                    chars.next();
                }
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '`' if !single => return false,
                // Only `$name` or `${name...}` expansions, never `$(`.
                '$' if !single
                    && !chars
                        .peek()
                        .is_some_and(|n| n.is_ascii_alphabetic() || *n == '{') =>
                {
                    return false;
                }
                _ => {}
            }
        }
        !single && !double
    }

    #[test]
    fn copy_as_curl_quotes_header_names_and_values_for_the_shell() {
        let header = |name: &str, value: &str, secret: bool| CustomHeader {
            // Built here past validation, which refuses such names today.
            name: reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a token"),
            value: crate::config::Secret::new(value.to_string()),
            secret,
        };
        let custom = [
            header("X-`hostname`", "v", true),
            header("X-Plain`id`", "it's `id` $(id)", false),
        ];
        let d = Delivery {
            id: "dlv_1".to_string(),
            event_id: "evt_1".to_string(),
            event_type: "job.completed".to_string(),
            subscription: "s".to_string(),
            bucket: "s".to_string(),
            adhoc: None,
            state: DeliveryState::Dead,
            attempts: 1,
            created_ms: 0,
            due_ms: None,
            finished_ms: None,
            last_error: None,
            owner: None,
        };
        for scheme in [
            SignatureScheme::Abstrakt,
            SignatureScheme::Standard,
            SignatureScheme::Both,
        ] {
            let snippet = curl(
                "X-Abstrakt",
                "https://example.com/$(id)",
                &d,
                scheme,
                "{\"a\":\"`id`\"}",
                &custom,
            );
            // The lines that carry what the delivery holds: the body, the URL, the headers.
            let carrying = snippet.lines().filter(|l| {
                l.starts_with("printf") || l.starts_with("curl") || l.starts_with("  ")
            });
            for line in carrying {
                assert!(
                    nothing_runs_outside_single_quotes(line),
                    "{line}\n{snippet}"
                );
            }
            assert!(
                snippet.contains(r#"-H 'x-`hostname`: '"$HEADER_X__HOSTNAME_""#),
                "{snippet}"
            );
            assert!(
                snippet.contains(r"-H 'x-plain`id`: it'\''s `id` $(id)'"),
                "{snippet}"
            );
        }
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}

//! Why a webhook's signature does or does not verify, in words: the logic behind `hookd verify`
//! and the dashboard's "Check a signature" page. Pure: no I/O, and the caller passes the time.
//!
//! [`check`] takes the headers and the body a receiver's framework handed it, the secrets to
//! try (a subscription's current and previous one, or the one given on the command line) and,
//! when known, the bytes hookd sent. It answers [`Verdict::Verifies`] or the first cause of
//! [`Failure`] it finds, in this order: no signature header (perhaps renamed by a proxy), a
//! Standard Webhooks timestamp outside the tolerance, a body that was re-serialized (hookd's
//! canonical form of the same JSON, or the bytes it sent, verify: the first difference is shown
//! and named), a body that is not the delivery's at all, and last the wrong secret.

use crate::canonical;
use crate::signing;

/// How far a Standard Webhooks `webhook-timestamp` may be from now, either way: the reference
/// libraries' default.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// One secret to try, with the name it is shown under (`current`, `previous`, `given`).
#[derive(Clone, Copy)]
pub struct Candidate<'a> {
    pub label: &'a str,
    pub secret: &'a str,
}

/// What one check looks at.
pub struct Input<'a> {
    /// The request's headers as the receiver saw them (names in any case).
    pub headers: &'a [(String, String)],
    /// The body as the receiver's framework gave it.
    pub body: &'a [u8],
    pub secrets: &'a [Candidate<'a>],
    /// The configured header prefix, `X-Abstrakt` by default.
    pub prefix: &'a str,
    /// Unix seconds, for the Standard Webhooks timestamp.
    pub now_secs: i64,
    /// The bytes hookd sent, when the delivery is known.
    pub sent: Option<&'a [u8]>,
}

/// The answer of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A signature header matches: which one, under which secret, and a note when the body
    /// would not survive a receiver that re-serializes it.
    Verifies {
        header: String,
        secret: String,
        note: Option<String>,
    },
    Fails(Failure),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Neither the prefix's signature header nor `webhook-signature` is there; `lookalike` is
    /// a header that seems to carry one under another name.
    MissingHeader {
        expected: String,
        lookalike: Option<String>,
    },
    /// The Standard Webhooks signature matches, but its timestamp is too far from now.
    Timestamp { timestamp: i64, skew_secs: i64 },
    /// The signature is over other bytes of the same JSON: re-serialized on the way.
    Reserialized(Difference),
    /// The body holds other JSON than what hookd sent.
    NotTheBody(Difference),
    /// No secret given makes this signature from these bytes.
    WrongSecret { header: String, tried: Vec<String> },
}

/// The first place two bodies differ, and what kind of change it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Byte offset into both bodies.
    pub offset: usize,
    pub kind: &'static str,
    /// Around the offset, in what hookd sent (or its canonical form) and in the body given.
    pub sent: String,
    pub given: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "first difference at byte {} ({}): hookd sent {} where the body has {}",
            self.offset, self.kind, self.sent, self.given
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::MissingHeader { expected, lookalike: Some(name) } => write!(
                f,
                "the {expected} header is missing, but {name} looks like it: a proxy or framework renamed it; verify that header or pass it through unchanged"
            ),
            Failure::MissingHeader { expected, lookalike: None } => write!(
                f,
                "the {expected} header is missing (and so is webhook-signature): the request lost its signature on the way, or the headers given are not the request's"
            ),
            Failure::Timestamp { timestamp, skew_secs } => {
                let direction = if *skew_secs < 0 { "in the past" } else { "in the future" };
                write!(
                    f,
                    "the signature matches, but webhook-timestamp {timestamp} is {} s {direction}, outside the tolerance of {TOLERANCE_SECS} s: a replayed request, or a clock that is off",
                    skew_secs.abs()
                )
            }
            Failure::Reserialized(d) => write!(
                f,
                "the body was re-serialized before verifying: the signature is over the bytes hookd sent, not over this JSON written again; verify the raw body (or JSON.stringify(JSON.parse(raw))); {d}"
            ),
            Failure::NotTheBody(d) => write!(
                f,
                "the body is not this delivery's: it holds other JSON than what hookd sent; {d}"
            ),
            Failure::WrongSecret { header, tried } => write!(
                f,
                "{header} does not match this body under the {} secret: the receiver has another secret (a rotated or another subscription's), or the body is not the bytes that were signed",
                tried.join(" or ")
            ),
        }
    }
}

/// `Name: value` as given on a command line or pasted from a log.
pub fn parse_header(line: &str) -> Result<(String, String), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} is not a header: write it as 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("{line:?} has no header name before its ':'"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// Every header of pasted text, one a line; blank lines and a request line are skipped.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("POST ") && !l.starts_with("HTTP/"))
        .map(parse_header)
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Checks `input`; see the module doc for the order of the causes.
pub fn check(input: &Input<'_>) -> Verdict {
    let expected = format!("{}-Signature", input.prefix);
    let abstrakt = header(input.headers, &expected);
    let standard = standard_headers(input.headers);
    if abstrakt.is_none() && standard.is_none() {
        return Verdict::Fails(Failure::MissingHeader {
            lookalike: lookalike(input.headers),
            expected,
        });
    }
    let signed_by = |body: &[u8]| -> Option<(String, String, Option<i64>)> {
        if let Some(sig) = abstrakt {
            if let Some(label) = abstrakt_match(input.secrets, sig, body) {
                return Some((expected.clone(), label, None));
            }
        }
        let (id, timestamp, sig) = standard?;
        let label = standard_match(input.secrets, id, timestamp, sig, body)?;
        Some(("webhook-signature".to_string(), label, Some(timestamp)))
    };
    if let Some((header, secret, timestamp)) = signed_by(input.body) {
        if let Some(failure) = timestamp.and_then(|t| too_far(t, input.now_secs)) {
            return Verdict::Fails(failure);
        }
        let note = canonical_note(input.body);
        return Verdict::Verifies {
            header,
            secret,
            note,
        };
    }
    if let Some(failure) = reserialized(input, &signed_by) {
        return Verdict::Fails(failure);
    }
    let header = if abstrakt.is_some() {
        expected
    } else {
        "webhook-signature".to_string()
    };
    Verdict::Fails(Failure::WrongSecret {
        header,
        tried: input.secrets.iter().map(|c| c.label.to_string()).collect(),
    })
}

/// Whether the signature is over other bytes of the body's JSON: what hookd sent, when known,
/// else the body's canonical form (hookd sends nothing else).
fn reserialized<F>(input: &Input<'_>, signed_by: &F) -> Option<Failure>
where
    F: Fn(&[u8]) -> Option<(String, String, Option<i64>)>,
{
    if let Some(sent) = input.sent {
        if sent == input.body {
            return None;
        }
        let difference = first_difference(sent, input.body);
        if same_json(sent, input.body) {
            return signed_by(sent).map(|_| Failure::Reserialized(difference));
        }
        return Some(Failure::NotTheBody(difference));
    }
    let canonical = canonical_form(input.body)?;
    if canonical == input.body {
        return None;
    }
    signed_by(&canonical).map(|_| Failure::Reserialized(first_difference(&canonical, input.body)))
}

/// A note for a body that verifies but is not in hookd's canonical form: hookd never sends it
/// so, and a receiver that verifies `JSON.stringify(req.body)` (the seed's Express example)
/// would compute its signature over other bytes.
fn canonical_note(body: &[u8]) -> Option<String> {
    let canonical = canonical_form(body)?;
    (canonical != body).then(|| {
        format!(
            "this body is not in the form hookd sends (compact, JavaScript's key order and number forms): a receiver that verifies JSON.stringify(req.body), like the Express example, would refuse it; {}",
            first_difference(&canonical, body)
        )
    })
}

/// The body's JSON written as hookd writes it; `None` when it is not JSON.
pub fn canonical_form(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(canonical::to_vec(&value))
}

/// Whether two bodies hold the same JSON, keys in any order.
fn same_json(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => sorted_form(&a) == sorted_form(&b),
        _ => false,
    }
}

/// The canonical bytes with every object's keys sorted: equal for the same JSON.
fn sorted_form(value: &serde_json::Value) -> Vec<u8> {
    fn sort(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sort(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sort).collect())
            }
            other => other.clone(),
        }
    }
    canonical::to_vec(&sort(value))
}

/// The first byte where `sent` and `given` differ, named by the characters around it.
pub fn first_difference(sent: &[u8], given: &[u8]) -> Difference {
    let offset = sent
        .iter()
        .zip(given)
        .position(|(a, b)| a != b)
        .unwrap_or(sent.len().min(given.len()));
    let at = |body: &[u8]| body.get(offset).copied();
    let before = offset.checked_sub(1).and_then(|i| sent.get(i).copied());
    let numeric = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit() || b".eE+-".contains(&b));
    let kind = if [at(sent), at(given)]
        .iter()
        .any(|b| b.is_some_and(|b| b" \t\r\n".contains(&b)))
    {
        "spacing"
    } else if at(sent) == Some(b'\\') || at(given) == Some(b'\\') || before == Some(b'\\') {
        "escapes"
    } else if numeric(before) && (numeric(at(sent)) || numeric(at(given))) {
        "number form"
    } else if same_json(sent, given) {
        "key order"
    } else {
        "content"
    };
    Difference {
        offset,
        kind,
        sent: excerpt(sent, offset),
        given: excerpt(given, offset),
    }
}

/// Up to 16 bytes either side of `offset`, quoted, with `…` where cut.
fn excerpt(body: &[u8], offset: usize) -> String {
    let start = offset.saturating_sub(16);
    let end = (offset + 16).min(body.len());
    if start >= end {
        return "the end of the body".to_string();
    }
    let text = String::from_utf8_lossy(&body[start..end]);
    let lead = if start > 0 { "…" } else { "" };
    let tail = if end < body.len() { "…" } else { "" };
    format!("`{lead}{text}{tail}`")
}

/// `webhook-id`, `webhook-timestamp` (parsed) and `webhook-signature`, when all are there.
fn standard_headers(headers: &[(String, String)]) -> Option<(&str, i64, &str)> {
    let id = header(headers, "webhook-id")?;
    let timestamp = header(headers, "webhook-timestamp")?.parse().ok()?;
    let signature = header(headers, "webhook-signature")?;
    Some((id, timestamp, signature))
}

/// A header that looks like a signature under another name: "signature" in its name, or a
/// value of 64 hex digits.
fn lookalike(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .find(|(name, value)| {
            name.to_ascii_lowercase().contains("signature")
                || (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|(name, _)| name.clone())
}

fn abstrakt_match(secrets: &[Candidate<'_>], signature: &str, body: &[u8]) -> Option<String> {
    let signature = signature.trim().to_ascii_lowercase();
    secrets
        .iter()
        .find(|c| {
            let expected = signing::abstrakt_signature(c.secret.as_bytes(), body);
            signing::constant_time_eq(expected.as_bytes(), signature.as_bytes())
        })
        .map(|c| c.label.to_string())
}

fn standard_match(
    secrets: &[Candidate<'_>],
    id: &str,
    timestamp: i64,
    header: &str,
    body: &[u8],
) -> Option<String> {
    secrets
        .iter()
        .find(|c| {
            let Ok(key) = signing::standard_key(c.secret) else {
                return false;
            };
            let expected = signing::standard_signature(&[key], id, timestamp, body);
            header
                .split_whitespace()
                .any(|s| signing::constant_time_eq(s.as_bytes(), expected.as_bytes()))
        })
        .map(|c| c.label.to_string())
}

fn too_far(timestamp: i64, now_secs: i64) -> Option<Failure> {
    let skew_secs = timestamp.saturating_sub(now_secs);
    (skew_secs.abs() > TOLERANCE_SECS).then_some(Failure::Timestamp {
        timestamp,
        skew_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const BODY: &[u8] = br#"{"request_id":"r1","status":"completed","metrics":{"t":2.5}}"#;
    const NOW: i64 = 1_700_000_000;

    fn abstrakt(body: &[u8]) -> Vec<(String, String)> {
        vec![(
            "x-abstrakt-signature".to_string(),
            signing::abstrakt_signature(SECRET.as_bytes(), body),
        )]
    }

    fn run(headers: &[(String, String)], body: &[u8], sent: Option<&[u8]>) -> Verdict {
        let secrets = [Candidate {
            label: "current",
            secret: SECRET,
        }];
        check(&Input {
            headers,
            body,
            secrets: &secrets,
            prefix: "X-Abstrakt",
            now_secs: NOW,
            sent,
        })
    }

    fn failure(verdict: Verdict) -> Failure {
        match verdict {
            Verdict::Fails(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn the_sent_body_verifies_under_the_secret_it_was_signed_with() {
        let verdict = run(&abstrakt(BODY), BODY, None);
        assert_eq!(
            verdict,
            Verdict::Verifies {
                header: "X-Abstrakt-Signature".to_string(),
                secret: "current".to_string(),
                note: None
            }
        );
    }

    #[test]
    fn a_previous_secret_is_named() {
        let old = "the-old-secret";
        let headers = vec![(
            "X-Abstrakt-Signature".to_string(),
            signing::abstrakt_signature(old.as_bytes(), BODY),
        )];
        let secrets = [
            Candidate {
                label: "current",
                secret: SECRET,
            },
            Candidate {
                label: "previous",
                secret: old,
            },
        ];
        let verdict = check(&Input {
            headers: &headers,
            body: BODY,
            secrets: &secrets,
            prefix: "X-Abstrakt",
            now_secs: NOW,
            sent: None,
        });
        assert!(
            matches!(&verdict, Verdict::Verifies { secret, .. } if secret == "previous"),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_missing_header_and_a_renamed_one_are_told_apart() {
        let renamed = vec![(
            "X-Original-Signature".to_string(),
            signing::abstrakt_signature(SECRET.as_bytes(), BODY),
        )];
        let f = failure(run(&renamed, BODY, None));
        assert!(
            matches!(&f, Failure::MissingHeader { lookalike: Some(n), .. } if n == "X-Original-Signature")
        );
        assert!(f.to_string().contains("renamed"), "{f}");
        let f = failure(run(&[], BODY, None));
        assert!(matches!(
            f,
            Failure::MissingHeader {
                lookalike: None,
                ..
            }
        ));
    }

    #[test]
    fn re_serialized_bodies_name_the_kind_of_change() {
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"request_id": "r1", "status": "completed", "metrics": {"t": 2.5}}"#,
                "spacing",
            ),
            (
                br#"{"status":"completed","request_id":"r1","metrics":{"t":2.5}}"#,
                "key order",
            ),
            (
                br#"{"request_id":"r1","status":"completed","metrics":{"t":2.50}}"#,
                "number form",
            ),
            (
                br#"{"request_id":"\u00721","status":"completed","metrics":{"t":2.5}}"#,
                "escapes",
            ),
        ];
        for (given, kind) in cases {
            // Offline, key order is not recoverable from the body alone; with what hookd sent it is.
            let f = failure(run(&abstrakt(BODY), given, Some(BODY)));
            match &f {
                Failure::Reserialized(d) => assert_eq!(d.kind, kind, "{f}"),
                other => panic!("{kind}: {other:?}"),
            }
            if kind != "key order" {
                assert!(matches!(
                    failure(run(&abstrakt(BODY), given, None)),
                    Failure::Reserialized(_)
                ));
            }
        }
    }

    #[test]
    fn a_body_hookd_would_not_send_verifies_with_a_warning_about_json_stringify() {
        let raw = br#"{"request_id":"r1","status":"completed","metrics":{"t":2.50}}"#;
        match run(&abstrakt(raw), raw, None) {
            Verdict::Verifies { note: Some(n), .. } => {
                assert!(n.contains("JSON.stringify"), "{n}");
                assert!(n.contains("number form"), "{n}");
            }
            other => panic!("{other:?}"),
        }
        // What JSON.stringify made of it does not verify: the signature is over the raw bytes.
        let stringified = canonical_form(raw).expect("JSON");
        let f = failure(run(&abstrakt(raw), &stringified, None));
        assert!(matches!(f, Failure::WrongSecret { .. }), "{f:?}");
    }

    #[test]
    fn another_body_and_a_wrong_secret_are_told_apart() {
        let other = br#"{"request_id":"r2","status":"completed"}"#;
        let f = failure(run(&abstrakt(BODY), other, Some(BODY)));
        assert!(
            matches!(&f, Failure::NotTheBody(d) if d.kind == "content"),
            "{f:?}"
        );
        let wrong = vec![(
            "X-Abstrakt-Signature".to_string(),
            signing::abstrakt_signature(b"another", BODY),
        )];
        let f = failure(run(&wrong, BODY, Some(BODY)));
        assert!(f.to_string().contains("current secret"), "{f}");
        assert!(!f.to_string().contains(SECRET), "never shows the secret");
    }

    #[test]
    fn standard_webhooks_timestamps_outside_the_tolerance_fail() {
        let key = signing::standard_key(SECRET).expect("whsec");
        let headers = |t: i64| {
            vec![
                ("webhook-id".to_string(), "dlv_1".to_string()),
                ("webhook-timestamp".to_string(), t.to_string()),
                (
                    "webhook-signature".to_string(),
                    signing::standard_signature(std::slice::from_ref(&key), "dlv_1", t, BODY),
                ),
            ]
        };
        assert!(matches!(
            run(&headers(NOW - 60), BODY, None),
            Verdict::Verifies { .. }
        ));
        let f = failure(run(&headers(NOW - TOLERANCE_SECS - 1), BODY, None));
        assert_eq!(
            f,
            Failure::Timestamp {
                timestamp: NOW - TOLERANCE_SECS - 1,
                skew_secs: -TOLERANCE_SECS - 1
            }
        );
        assert!(f.to_string().contains("in the past"));
        assert!(matches!(
            failure(run(&headers(NOW + TOLERANCE_SECS + 1), BODY, None)),
            Failure::Timestamp { .. }
        ));
    }

    #[test]
    fn headers_parse_from_pasted_text() {
        let parsed = parse_headers(
            "POST /webhook HTTP/1.1\nX-Abstrakt-Signature: ab:cd\n\nwebhook-id:  x \n",
        )
        .expect("parses");
        assert_eq!(
            parsed,
            vec![
                ("X-Abstrakt-Signature".to_string(), "ab:cd".to_string()),
                ("webhook-id".to_string(), "x".to_string())
            ]
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
    }
}

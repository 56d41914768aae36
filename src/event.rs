//! Ingest validation: from a posted JSON object to the event hookd stores and sends.
//!
//! Pure: the acceptance time comes from the caller. The body that receivers get is built here,
//! once, in canonical form (see [`crate::canonical`]), and stored as bytes.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical;

/// The fields of an event, in the order they are sent.
const BODY_FIELDS: [&str; 6] = [
    "request_id",
    "status",
    "result",
    "error",
    "metrics",
    "timestamp",
];
/// Every field an ingested event may have. `owner`, `webhook_url` and `webhook_secret` are for
/// hookd: they are never part of the delivered body.
const ALLOWED_FIELDS: [&str; 9] = [
    "request_id",
    "status",
    "result",
    "error",
    "metrics",
    "timestamp",
    "webhook_url",
    "webhook_secret",
    "owner",
];

/// The longest owner id (the provider's customer id): as long as a `request_id`.
pub const MAX_OWNER: usize = 256;

/// An owner id, on an event or a subscription: 1 to [`MAX_OWNER`] bytes, no control
/// characters (U+0000 included), no space at either end.
pub fn valid_owner(owner: &str) -> bool {
    (1..=MAX_OWNER).contains(&owner.len())
        && !owner.chars().any(char::is_control)
        && owner.trim() == owner
}

/// What [`valid_owner`] asks, in words, for error messages.
pub const OWNER_RULE: &str =
    "1 to 256 bytes, no control characters and no space at either end: the provider's customer id";

/// A rejected field: becomes a `422 {"error", "field"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub error: String,
}

fn field_error(field: &str, error: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        error: error.into(),
    }
}

/// A per-request target, as in the seed's `client.submit(..., webhook_url, webhook_secret)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdhocTarget {
    pub url: String,
    pub secret: String,
}

impl AdhocTarget {
    /// The target's concurrency bucket: one per host and port (`adhoc/<host>:<port>`).
    pub fn bucket(&self) -> String {
        // parse_event checked that the URL parses.
        url::Url::parse(&self.url).map_or_else(
            |_| "adhoc/".into(),
            |u| {
                format!(
                    "adhoc/{}:{}",
                    u.host_str().unwrap_or(""),
                    u.port_or_known_default().unwrap_or(0)
                )
            },
        )
    }
}

/// A validated event, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub request_id: String,
    pub status: String,
    /// `job.<status>`.
    pub event_type: String,
    /// The canonical body every delivery of this event sends.
    pub body: Vec<u8>,
    /// SHA-256 over the event as posted (without a defaulted timestamp): two posts of the same
    /// `(request_id, status)` are the same event only when their fingerprints agree.
    pub fingerprint: [u8; 32],
    pub adhoc: Option<AdhocTarget>,
    /// The provider's customer the event belongs to: it goes to that owner's subscriptions and
    /// to the subscriptions without an owner. `None`: only to those without an owner.
    pub owner: Option<String>,
}

/// The rules ingest enforces beyond the field types.
#[derive(Debug, Clone)]
pub struct IngestRules {
    pub allow_adhoc_targets: bool,
    /// Whether a `webhook_url` may be `http://`.
    pub allow_http: bool,
    /// Refuses literal addresses inside the provider's network.
    pub guard: crate::guard::Guard,
}

/// `[a-z_]{1,32}`.
pub fn valid_status(status: &str) -> bool {
    (1..=32).contains(&status.len()) && status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Validates one posted event. `accepted_at` is the RFC 3339 acceptance time, used when the
/// event has no `timestamp`.
///
/// The fields are checked in a fixed order, so that an event with several faults is always
/// refused for the same one: the set of fields, `request_id`, `status`, the objects, the
/// `timestamp`, the adhoc target, the `owner`.
pub fn parse_event(
    value: Value,
    rules: &IngestRules,
    accepted_at: &str,
) -> Result<NewEvent, FieldError> {
    let mut map = known_fields(value)?;
    let request_id = parse_request_id(&map)?;
    let status = parse_status(&map)?;
    check_objects(&map)?;
    check_timestamp(&map)?;
    let adhoc = parse_adhoc_target(&map, rules)?;
    let owner = parse_owner(&map)?;

    let fingerprint = fingerprint(&map);
    if !map.contains_key("timestamp") {
        map.insert(
            "timestamp".to_string(),
            Value::String(accepted_at.to_string()),
        );
    }
    Ok(NewEvent {
        event_type: format!("job.{status}"),
        request_id,
        status,
        body: body_bytes(&map),
        fingerprint,
        adhoc,
        owner,
    })
}

/// The posted object's fields, when each is one an event may have; explicit nulls of the
/// optional ones dropped.
fn known_fields(value: Value) -> Result<Map<String, Value>, FieldError> {
    let Value::Object(mut map) = value else {
        return Err(field_error("", "an event must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !ALLOWED_FIELDS.contains(&k.as_str())) {
        return Err(field_error(
            unknown,
            format!(
                "unknown field {unknown:?}; allowed: {}",
                ALLOWED_FIELDS.join(", ")
            ),
        ));
    }
    // An explicit null is the same as an absent optional field.
    map.retain(|k, v| !v.is_null() || k == "request_id" || k == "status");
    Ok(map)
}

/// The required `request_id`: a string of 1 to 256 bytes without U+0000.
fn parse_request_id(map: &Map<String, Value>) -> Result<String, FieldError> {
    match map.get("request_id") {
        // U+0000 is refused: PostgreSQL's text cannot hold it, and no id needs it.
        Some(Value::String(s)) if s.contains('\0') => Err(field_error(
            "request_id",
            "must not contain U+0000 (\\u0000)",
        )),
        Some(Value::String(s)) if (1..=256).contains(&s.len()) => Ok(s.clone()),
        Some(Value::String(_)) => Err(field_error("request_id", "must be 1 to 256 bytes long")),
        Some(_) => Err(field_error("request_id", "must be a string")),
        None => Err(field_error("request_id", "is required")),
    }
}

/// The required `status`: see [`valid_status`].
fn parse_status(map: &Map<String, Value>) -> Result<String, FieldError> {
    match map.get("status") {
        Some(Value::String(s)) if valid_status(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(field_error(
            "status",
            "must match [a-z_]{1,32}, like \"completed\"",
        )),
        Some(_) => Err(field_error("status", "must be a string")),
        None => Err(field_error("status", "is required")),
    }
}

/// `result`, `error` and `metrics`, when present: objects whose values canonical form can hold.
fn check_objects(map: &Map<String, Value>) -> Result<(), FieldError> {
    for field in ["result", "error", "metrics"] {
        match map.get(field) {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(field_error(field, "must be an object")),
        }
        if let Some(value) = map.get(field) {
            canonical::check_value(value, &mut field.to_string()).map_err(|e| FieldError {
                field: e.path,
                error: e.reason.to_string(),
            })?;
        }
    }
    Ok(())
}

/// The `timestamp`, when present: an RFC 3339 date-time string.
fn check_timestamp(map: &Map<String, Value>) -> Result<(), FieldError> {
    match map.get("timestamp") {
        None => Ok(()),
        Some(Value::String(s)) if is_rfc3339(s) => Ok(()),
        Some(_) => Err(field_error(
            "timestamp",
            "must be an RFC 3339 date-time string, like \"2025-01-12T10:30:00Z\"",
        )),
    }
}

/// The per-request target: `webhook_url` and `webhook_secret` together, or neither; refused
/// when the rules do not allow such targets.
fn parse_adhoc_target(
    map: &Map<String, Value>,
    rules: &IngestRules,
) -> Result<Option<AdhocTarget>, FieldError> {
    match (map.get("webhook_url"), map.get("webhook_secret")) {
        (None, None) => Ok(None),
        (Some(_), _) if !rules.allow_adhoc_targets => Err(field_error(
            "webhook_url",
            "per-request webhook_url targets are disabled on this server",
        )),
        (Some(Value::String(url)), Some(Value::String(secret))) => {
            check_url(url, rules)?;
            if secret.is_empty() || secret.len() > 1024 {
                return Err(field_error(
                    "webhook_secret",
                    "must be 1 to 1024 bytes long",
                ));
            }
            for (field, text) in [("webhook_url", url), ("webhook_secret", secret)] {
                if text.contains('\0') {
                    return Err(field_error(field, "must not contain U+0000 (\\u0000)"));
                }
            }
            Ok(Some(AdhocTarget {
                url: url.clone(),
                secret: secret.clone(),
            }))
        }
        (Some(Value::String(_)), None) => Err(field_error(
            "webhook_secret",
            "is required when webhook_url is given",
        )),
        (None, Some(_)) => Err(field_error(
            "webhook_url",
            "is required when webhook_secret is given",
        )),
        (Some(Value::String(_)), Some(_)) => Err(field_error("webhook_secret", "must be a string")),
        (Some(_), _) => Err(field_error("webhook_url", "must be a string")),
    }
}

/// The `owner`, when present: see [`valid_owner`].
fn parse_owner(map: &Map<String, Value>) -> Result<Option<String>, FieldError> {
    match map.get("owner") {
        None => Ok(None),
        Some(Value::String(s)) if valid_owner(s) => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(field_error("owner", format!("must be {OWNER_RULE}"))),
        Some(_) => Err(field_error("owner", "must be a string")),
    }
}

/// The delivered body: the body fields in their fixed order, absent ones left out.
fn body_bytes(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    for field in BODY_FIELDS {
        if let Some(value) = map.get(field) {
            if !first {
                out.push(b',');
            }
            first = false;
            canonical::write_string(field, &mut out);
            out.push(b':');
            canonical::write_value(value, &mut out);
        }
    }
    out.push(b'}');
    out
}

fn fingerprint(map: &Map<String, Value>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in ALLOWED_FIELDS {
        if let Some(value) = map.get(field) {
            hasher.update(field.as_bytes());
            hasher.update(b"=");
            hasher.update(canonical::to_vec(value));
            hasher.update(b"\n");
        }
    }
    hasher.finalize().into()
}

fn check_url(url: &str, rules: &IngestRules) -> Result<(), FieldError> {
    if url.len() > 2048 {
        return Err(field_error(
            "webhook_url",
            "must be at most 2048 bytes long",
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| field_error("webhook_url", format!("invalid URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if rules.allow_http => {}
        "http" => {
            return Err(field_error(
                "webhook_url",
                "must be an https:// URL (this server does not send webhooks over plain http)",
            ))
        }
        _ => {
            return Err(field_error(
                "webhook_url",
                "must be an https:// URL with a host",
            ))
        }
    }
    if parsed.host().is_none() {
        return Err(field_error(
            "webhook_url",
            "must be an https:// URL with a host",
        ));
    }
    rules
        .guard
        .check_url(&parsed)
        .map_err(|_| field_error("webhook_url", "blocked address: the target is inside a network hookd does not send to (loopback, private, link-local, ...)"))
}

fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// `now` as RFC 3339 in UTC with millisecond precision, like `2025-01-12T10:30:00.123Z`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    // Formatting a UTC date-time with this description cannot fail for years 0..=9999.
    t.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> IngestRules {
        IngestRules {
            allow_adhoc_targets: true,
            allow_http: false,
            guard: crate::guard::Guard::default(),
        }
    }

    fn parse(v: Value) -> Result<NewEvent, FieldError> {
        parse_event(v, &rules(), "2026-01-01T00:00:00.000Z")
    }

    #[test]
    fn body_has_fixed_field_order_and_default_timestamp() {
        let e = parse(
            json!({"metrics": {"queue_time": 2.10}, "status": "completed", "request_id": "abc",
            "result": {"items": [{"url": "https://cdn/x", "content_type": "video/mp4"}]}}),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&e.body).unwrap(),
            r#"{"request_id":"abc","status":"completed","result":{"items":[{"url":"https://cdn/x","content_type":"video/mp4"}]},"metrics":{"queue_time":2.1},"timestamp":"2026-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(e.event_type, "job.completed");
    }

    #[test]
    fn fingerprint_ignores_field_order_and_defaulted_timestamp() {
        let a = parse(json!({"request_id": "r", "status": "failed", "error": {"message": "x"}}))
            .unwrap();
        let b = parse_event(
            json!({"error": {"message": "x"}, "status": "failed", "request_id": "r"}),
            &rules(),
            "2030-01-01T00:00:00Z",
        )
        .unwrap();
        let c = parse(json!({"request_id": "r", "status": "failed", "error": {"message": "y"}}))
            .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn each_field_rule_names_its_field() {
        let cases = [
            (json!([1]), ""),
            (
                json!({"request_id": "r", "status": "done", "extra": 1}),
                "extra",
            ),
            (json!({"status": "done"}), "request_id"),
            (json!({"request_id": "", "status": "done"}), "request_id"),
            (
                json!({"request_id": "x".repeat(257), "status": "done"}),
                "request_id",
            ),
            (json!({"request_id": 5, "status": "done"}), "request_id"),
            (json!({"request_id": "r"}), "status"),
            (json!({"request_id": "r", "status": "Done"}), "status"),
            (
                json!({"request_id": "r", "status": "a".repeat(33)}),
                "status",
            ),
            (
                json!({"request_id": "r", "status": "done", "result": [1]}),
                "result",
            ),
            (
                json!({"request_id": "r", "status": "done", "metrics": {"n": 9007199254740993u64}}),
                "metrics.n",
            ),
            (
                json!({"request_id": "r", "status": "done", "timestamp": "yesterday"}),
                "timestamp",
            ),
            (
                json!({"request_id": "a\u{0}b", "status": "done"}),
                "request_id",
            ),
            (
                json!({"request_id": "r", "status": "done", "webhook_url": "https://x/"}),
                "webhook_secret",
            ),
            (
                json!({"request_id": "r", "status": "done", "webhook_secret": "s"}),
                "webhook_url",
            ),
            (
                json!({"request_id": "r", "status": "done", "webhook_url": "ftp://x/", "webhook_secret": "s"}),
                "webhook_url",
            ),
        ];
        for (input, field) in cases {
            let err = parse(input.clone()).expect_err(&input.to_string());
            assert_eq!(err.field, field, "{input}: {}", err.error);
        }
        let ok = parse(json!({"request_id": "r", "status": "done", "error": null, "timestamp": "2025-01-12T10:30:00+02:00"})).unwrap();
        assert_eq!(
            ok.body,
            br#"{"request_id":"r","status":"done","timestamp":"2025-01-12T10:30:00+02:00"}"#
        );
    }

    #[test]
    fn adhoc_targets_can_be_disabled() {
        let rules = IngestRules {
            allow_adhoc_targets: false,
            ..rules()
        };
        let err = parse_event(json!({"request_id": "r", "status": "done", "webhook_url": "https://x/", "webhook_secret": "s"}), &rules, "t").unwrap_err();
        assert_eq!(err.field, "webhook_url");
    }

    #[test]
    fn adhoc_targets_must_be_https_and_not_a_blocked_literal() {
        let event = |url: &str| json!({"request_id": "r", "status": "done", "webhook_url": url, "webhook_secret": "s"});
        for url in [
            "http://example.com/h",
            "https://127.0.0.1/h",
            "https://[::1]/h",
            "https://10.0.0.7/h",
            "https://[::ffff:169.254.169.254]/h",
        ] {
            let err = parse_event(event(url), &rules(), "t").expect_err(url);
            assert_eq!(err.field, "webhook_url", "{url}");
        }
        assert!(parse_event(event("https://example.com/h"), &rules(), "t").is_ok());
        let open = IngestRules {
            allow_http: true,
            guard: crate::guard::Guard::new(vec!["127.0.0.0/8".parse().unwrap()]),
            ..rules()
        };
        assert!(parse_event(event("http://127.0.0.1:9/h"), &open, "t").is_ok());
        assert!(parse_event(event("http://[::1]:9/h"), &open, "t").is_err());
    }

    #[test]
    fn rfc3339_millis_formats_utc() {
        assert_eq!(
            rfc3339_millis(1_736_677_800_123),
            "2025-01-12T10:30:00.123Z"
        );
    }
}

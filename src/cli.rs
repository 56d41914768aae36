//! The admin commands of the `hookd` binary: a small client of the admin API that prints
//! aligned tables for people and JSON for scripts.
//!
//! Exit codes: 0 success; 1 the API answered with an error (404, 409, ...); 2 bad usage or
//! config; 3 hookd could not be reached.

use std::process::ExitCode;

use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    pub token: Option<String>,
}

/// A failed command, with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    /// The API answered with an error status.
    Api {
        status: u16,
        message: String,
    },
    Usage(String),
    Unreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Api { .. } => ExitCode::from(1),
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Unreachable(_) => ExitCode::from(3),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Api { status, message } => write!(f, "hookd answered {status}: {message}"),
            CliError::Usage(m) => f.write_str(m),
            CliError::Unreachable(m) => write!(f, "cannot reach hookd: {m}"),
        }
    }
}

/// How long the CLI's client keeps an idle connection: well below hookd's `api.idle_timeout`
/// (120 s by default), so that it never sends a request on a connection hookd is closing.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE)
        .build()
        // Building fails only when the TLS backend cannot start, as `Client::new` would.
        .expect("the HTTP client builds")
}

/// Sends one request and returns the JSON body of a success.
pub async fn call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), CliError> {
    let url = format!("{}{path}", target.base);
    let mut request = client().request(method, &url);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| CliError::Unreachable(format!("{url}: {}", error_chain(&e))))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| CliError::Unreachable(error_chain(&e)))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status >= 400 {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_string);
        return Err(CliError::Api { status, message });
    }
    Ok((status, value))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes a query value.
pub fn encode_query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        let Some(value) = value else { continue };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Renders rows as columns separated by two spaces, each as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON value as a table cell: strings bare, null as `-`, long text cut.
pub fn cell(value: &Value) -> String {
    let text = full_cell(value);
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// A JSON value on one line and in full: strings bare, null as `-`.
pub fn full_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.replace(['\n', '\r', '\t'], " ")
}

/// `1 delivery`, `2 deliveries`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The state a person should see: `paused` for a scheduled delivery whose subscription is
/// paused (the API's `paused: true`), else the API's `state`.
pub fn shown_state(d: &Value) -> String {
    if d["paused"].as_bool() == Some(true) {
        "paused".to_string()
    } else {
        cell(&d["state"])
    }
}

/// `hookd send --owner`: the events of `body` (one object or an array) with `owner` set. An
/// event that names another owner is refused rather than changed.
pub fn with_owner(body: &[u8], owner: &str) -> Result<Vec<u8>, CliError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| CliError::Usage(format!("--owner needs the events as JSON: {e}")))?;
    let events: Vec<&mut Value> = match &mut value {
        Value::Array(items) => items.iter_mut().collect(),
        one => vec![one],
    };
    for (i, event) in events.into_iter().enumerate() {
        let Value::Object(map) = event else {
            return Err(CliError::Usage(format!("event {i} is not a JSON object")));
        };
        match map.get("owner") {
            None => {
                map.insert("owner".to_string(), Value::String(owner.to_string()));
            }
            Some(Value::String(given)) if given == owner => {}
            // Another owner, or one that is not a string (which the API refuses): changing it
            // would hide a mistake in the file.
            Some(given) => {
                return Err(CliError::Usage(format!(
                    "event {i} names owner {given}; --owner {owner:?} would change it"
                )))
            }
        }
    }
    Ok(value.to_string().into_bytes())
}

/// The line `hookd owners erase` prints.
pub fn erased_summary(value: &Value) -> String {
    let n = |k: &str| usize::try_from(value[k].as_u64().unwrap_or(0)).unwrap_or(usize::MAX);
    format!(
        "erased owner {}: {}, {}, {}, {}",
        cell(&value["owner"]),
        count(n("subscriptions"), "subscription", "subscriptions"),
        count(n("events"), "event", "events"),
        count(n("deliveries"), "delivery", "deliveries"),
        count(n("attempts"), "attempt", "attempts"),
    )
}

pub fn deliveries_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            [
                "id",
                "state",
                "subscription",
                "event_type",
                "attempts",
                "created_at",
                "next_attempt_at",
                "last_error",
            ]
            .iter()
            .map(|k| {
                if *k == "state" {
                    shown_state(d)
                } else {
                    cell(&d[*k])
                }
            })
            .collect()
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "SUBSCRIPTION",
            "EVENT",
            "ATTEMPTS",
            "CREATED",
            "NEXT ATTEMPT",
            "LAST ERROR",
        ],
        &rows,
    )
}

pub fn delivery_details(d: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "state",
        "subscription",
        "url",
        "owner",
        "event_type",
        "event_id",
        "attempts",
        "created_at",
        "next_attempt_at",
        "finished_at",
        "last_error",
    ] {
        // One delivery: every value in full (an error is what the operator came for).
        let value = if key == "state" && d["paused"].as_bool() == Some(true) {
            format!(
                "paused (scheduled: sent once subscription {} is resumed)",
                full_cell(&d["subscription"])
            )
        } else {
            full_cell(&d[key])
        };
        out.push_str(&format!("{:<16} {value}\n", format!("{key}:")));
    }
    let attempts = d["attempt_history"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .map(|a| {
                [
                    "attempt",
                    "started_at",
                    "duration_ms",
                    "outcome",
                    "status_code",
                    "error",
                    "response_excerpt",
                ]
                .iter()
                // The error in full; a long response excerpt is cut (--json has all of it).
                .map(|k| {
                    if *k == "error" {
                        full_cell(&a[*k])
                    } else {
                        cell(&a[*k])
                    }
                })
                .collect()
            })
            .collect();
        out.push_str(&table(
            &[
                "#", "STARTED", "MS", "OUTCOME", "STATUS", "ERROR", "RESPONSE",
            ],
            &rows,
        ));
    }
    if !d["event"].is_null() {
        out.push_str(&format!("\nevent: {}\n", d["event"]));
    }
    out
}

pub fn subscriptions_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            let events = s["events"]
                .as_array()
                .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                cell(&s["id"]),
                match s["state"].as_str() {
                    Some(state) => state.to_string(),
                    None if s["paused"].as_bool() == Some(true) => "paused".into(),
                    None => "active".into(),
                },
                cell(&s["url"]),
                events,
                cell(&s["last_success_at"]),
                cell(&s["consecutive_failures"]),
                cell(&s["last_error"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "URL",
            "EVENTS",
            "LAST SUCCESS",
            "FAILURES",
            "LAST ERROR",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "é".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    é\n");
    }

    #[test]
    fn single_delivery_view_shows_whole_errors_and_paused() {
        let error = "connection failed: client error (Connect): tcp connect error: Connection refused (os error 111)";
        let d = serde_json::json!({
            "id": "dlv_1", "state": "scheduled", "paused": true, "subscription": "beta",
            "last_error": error,
            "attempt_history": [{"attempt": 1, "outcome": "connect", "error": error}],
        });
        let out = delivery_details(&d);
        assert!(
            out.contains(&format!("last_error:      {error}\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{error}\n")), "{out}");
        assert!(
            out.contains(
                "state:           paused (scheduled: sent once subscription beta is resumed)"
            ),
            "{out}"
        );
        let list = deliveries_table(&[d]);
        assert!(
            list.lines().nth(1).is_some_and(|l| l.contains(" paused ")),
            "{list}"
        );
    }

    #[test]
    fn with_owner_sets_a_missing_owner_and_refuses_another() {
        let one = with_owner(br#"{"request_id":"r","status":"completed"}"#, "cust-a").unwrap();
        assert_eq!(
            String::from_utf8(one).unwrap(),
            r#"{"request_id":"r","status":"completed","owner":"cust-a"}"#
        );
        let same =
            br#"[{"request_id":"r","status":"s","owner":"cust-a","result":{"z":1,"a":1.50}}]"#;
        assert_eq!(
            String::from_utf8(with_owner(same, "cust-a").unwrap()).unwrap(),
            std::str::from_utf8(same).unwrap(),
            "kept as written: key order and numbers"
        );
        for (body, event, given) in [
            (r#"{"owner":"cust-b"}"#, "event 0", r#""cust-b""#),
            (r#"[{},{"owner":null}]"#, "event 1", "null"),
            (r#"[{"owner":"cust-a"},{"owner":7}]"#, "event 1", "7"),
        ] {
            match with_owner(body.as_bytes(), "cust-a") {
                Err(CliError::Usage(m)) => {
                    assert!(m.starts_with(event) && m.contains(given), "{body}: {m}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            with_owner(b"[1]", "cust-a"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            with_owner(b"{nope", "cust-a"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1, "delivery", "deliveries"), "1 delivery");
        assert_eq!(count(0, "delivery", "deliveries"), "0 deliveries");
        assert_eq!(count(2, "delivery", "deliveries"), "2 deliveries");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode_query(&[
                ("a", Some("x y+z".into())),
                ("b", None),
                ("c", Some("2026-01-01T00:00:00Z".into()))
            ]),
            "?a=x%20y%2Bz&c=2026-01-01T00%3A00%3A00Z"
        );
    }
}

//! The admin commands' HTTP client: one request, its JSON answer, and the errors that map to
//! exit codes.

use serde_json::Value;

use super::{CliError, Target};

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

/// Escapes a path segment (ids are plain, but a typo must not turn into another route).
pub(crate) fn path_segment(text: &str) -> String {
    encode_query(&[("x", Some(text.to_string()))])
        .trim_start_matches("?x=")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn path_segments_cannot_change_the_route() {
        assert_eq!(path_segment("dlv_01ABC"), "dlv_01ABC");
        assert_eq!(path_segment("a/../b?c"), "a%2F..%2Fb%3Fc");
    }
}

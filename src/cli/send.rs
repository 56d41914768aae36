//! `hookd send`: events from a file or stdin, posted to `/v1/events` with an ingest token.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::{call, with_client, CliError, ClientArgs};
use crate::config::Scope;

// No doc comment: the `send` variant's own is the command's help.
#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The file to send; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
    /// The owner (the provider's customer id) of every event sent: each goes to that
    /// owner's subscriptions and to those without an owner. An event that names another
    /// owner is an error.
    #[arg(long)]
    pub owner: Option<String>,
}

/// Reads the events, sets their owner if asked, posts them and prints the API's answer.
pub fn run(args: SendArgs) -> ExitCode {
    let SendArgs {
        client,
        file,
        owner,
    } = args;
    with_client(&client, Scope::Ingest, |target| async move {
        let mut body = read_input(file.as_deref())?;
        if let Some(owner) = owner {
            body = with_owner(&body, &owner)?;
        }
        let (_, value) = call(&target, Method::POST, "/v1/events", Some(body)).await?;
        Ok(value.to_string())
    })
}

/// The bytes of `file`, or of stdin when it is `-` or not given.
fn read_input(file: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let mut body = Vec::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            body = std::fs::read(p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        }
    }
    Ok(body)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

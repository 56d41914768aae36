//! `hookd owners erase`: `DELETE /v1/owners/{owner}` and the counts of what went.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::http::path_segment;
use super::output::count_u64;
use super::{admin_call, cell, ClientArgs};

#[derive(Subcommand)]
pub enum OwnersCommand {
    /// Erase one owner: their subscriptions, their events, and every delivery and attempt of
    /// those, pending or finished (a GDPR-style request; docs/operations.md). Prints the counts.
    Erase {
        #[command(flatten)]
        client: ClientArgs,
        owner: String,
    },
}

pub fn run(command: OwnersCommand) -> ExitCode {
    match command {
        OwnersCommand::Erase { client, owner } => erase(&client, &owner),
    }
}

/// Erases `owner` and prints what went (or the API's JSON with `--json`).
fn erase(client: &ClientArgs, owner: &str) -> ExitCode {
    let path = format!("/v1/owners/{}", path_segment(owner));
    admin_call(client, Method::DELETE, path, None, erased_summary)
}

/// The line `hookd owners erase` prints.
pub fn erased_summary(value: &Value) -> String {
    let n = |k: &str| value[k].as_u64().unwrap_or(0);
    format!(
        "erased owner {}: {}, {}, {}, {}",
        cell(&value["owner"]),
        count_u64(n("subscriptions"), "subscription", "subscriptions"),
        count_u64(n("events"), "event", "events"),
        count_u64(n("deliveries"), "delivery", "deliveries"),
        count_u64(n("attempts"), "attempt", "attempts"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_what_went() {
        let value = serde_json::json!({
            "owner": "cust-a", "subscriptions": 1, "events": 2, "deliveries": 0, "attempts": 1
        });
        assert_eq!(
            erased_summary(&value),
            "erased owner cust-a: 1 subscription, 2 events, 0 deliveries, 1 attempt"
        );
    }
}

//! `hookd audit`: the audit log (`GET /v1/audit`), newest first, as a table or JSON.

use std::process::ExitCode;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::{admin_call, cell, count, encode_query, table, ClientArgs};

/// Who changed what, and when: the audit log, newest first (docs/api.md, "Audit log").
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only the entries about this subscription.
    #[arg(long)]
    subscription: Option<String>,
    /// Only the entries about this owner's objects.
    #[arg(long)]
    owner: Option<String>,
    /// Only the changes of this actor: a token's name, dashboard[:<token name>] or
    /// portal:<owner>.
    #[arg(long)]
    actor: Option<String>,
    /// At or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Most entries to list (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue from a previous page's next_cursor.
    #[arg(long)]
    cursor: Option<String>,
}

pub fn run(args: AuditArgs) -> ExitCode {
    let query = encode_query(&[
        ("subscription", args.subscription),
        ("owner", args.owner),
        ("actor", args.actor),
        ("since", args.since),
        ("until", args.until),
        ("limit", Some(args.limit.to_string())),
        ("cursor", args.cursor),
    ]);
    admin_call(
        &args.client,
        Method::GET,
        format!("/v1/audit{query}"),
        None,
        page,
    )
}

/// A page of entries for people: the table, how many, and how to get the next page.
fn page(value: &Value) -> String {
    let items = value["entries"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            ["at", "actor", "action", "kind", "object", "owner", "detail"]
                .iter()
                .map(|k| cell(&e[*k]))
                .collect()
        })
        .collect();
    let mut out = table(
        &["AT", "ACTOR", "ACTION", "KIND", "OBJECT", "OWNER", "DETAIL"],
        &rows,
    );
    out.push_str(&count(items.len(), "entry", "entries"));
    if let Some(next) = value["next_cursor"].as_str() {
        out.push_str(&format!("; more with --cursor {next}"));
    }
    out
}

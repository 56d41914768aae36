//! `hookd deliveries list|show|retry`: the deliveries API, as tables or JSON.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::http::path_segment;
use super::output::count_u64;
use super::{
    admin, admin_call, call, cell, count, encode_query, full_cell, table, CliError, ClientArgs,
};

#[derive(Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// scheduled, in_flight, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        /// A subscription id (or adhoc).
        #[arg(long)]
        subscription: Option<String>,
        /// e.g. job.failed
        #[arg(long)]
        event_type: Option<String>,
        /// Only the deliveries of this owner's events.
        #[arg(long)]
        owner: Option<String>,
        /// Created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Created before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Most deliveries to list (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from a previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one delivery with every attempt and its event.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Retry one delivery now, or with --dead every dead delivery of a subscription since a time.
    Retry {
        #[command(flatten)]
        client: ClientArgs,
        /// The delivery to retry.
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<String>,
        /// Retry dead deliveries in bulk (with --since, and optionally --subscription).
        #[arg(long, requires = "since")]
        dead: bool,
        #[arg(long, requires = "dead")]
        subscription: Option<String>,
        /// RFC 3339 time: dead deliveries that finished at or after it.
        #[arg(long, requires = "dead")]
        since: Option<String>,
        /// Also bring forward the deliveries still retrying after a failed attempt (created
        /// at or after --since).
        #[arg(long, requires = "dead")]
        include_retrying: bool,
        /// Only count what would be requeued.
        #[arg(long, requires = "dead")]
        dry_run: bool,
    },
}

pub fn run(command: DeliveriesCommand) -> ExitCode {
    match command {
        DeliveriesCommand::List {
            client,
            status,
            subscription,
            event_type,
            owner,
            since,
            until,
            limit,
            cursor,
        } => {
            let query = encode_query(&[
                ("status", status),
                ("subscription", subscription),
                ("event_type", event_type),
                ("owner", owner),
                ("since", since),
                ("until", until),
                ("limit", Some(limit.to_string())),
                ("cursor", cursor),
            ]);
            list(&client, &query)
        }
        DeliveriesCommand::Show { client, id } => show(&client, &id),
        DeliveriesCommand::Retry {
            client,
            id,
            dead: _,
            subscription,
            since,
            include_retrying,
            dry_run,
        } => retry(
            &client,
            id,
            Bulk {
                subscription,
                since,
                include_retrying,
                dry_run,
            },
        ),
    }
}

/// One page of `GET /v1/deliveries{query}`.
fn list(client: &ClientArgs, query: &str) -> ExitCode {
    admin_call(
        client,
        Method::GET,
        format!("/v1/deliveries{query}"),
        None,
        page,
    )
}

/// A page of deliveries for people: the table, how many, and how to get the next page.
fn page(value: &Value) -> String {
    let items = value["deliveries"].as_array().cloned().unwrap_or_default();
    let mut out = deliveries_table(&items);
    out.push_str(&count(items.len(), "delivery", "deliveries"));
    if let Some(next) = value["next_cursor"].as_str() {
        out.push_str(&format!("; more with --cursor {next}"));
    }
    out
}

/// `GET /v1/deliveries/{id}`: the delivery, its attempts and its event.
fn show(client: &ClientArgs, id: &str) -> ExitCode {
    let path = format!("/v1/deliveries/{}", path_segment(id));
    admin_call(client, Method::GET, path, None, delivery_details)
}

/// What a bulk retry asks for (`--dead`).
#[derive(Debug, Default)]
struct Bulk {
    subscription: Option<String>,
    since: Option<String>,
    include_retrying: bool,
    dry_run: bool,
}

/// Requeues one delivery (`id`), or every dead one since a time (`--dead --since`).
fn retry(client: &ClientArgs, id: Option<String>, bulk: Bulk) -> ExitCode {
    let json_out = client.json;
    admin(client, |target| async move {
        let (path, body) = retry_request(id, bulk)?;
        let (_, value) = call(&target, Method::POST, &path, body).await?;
        Ok(if json_out {
            value.to_string()
        } else {
            retried(&value)
        })
    })
}

/// The path and body of a retry: one delivery's, or the bulk retry of failed ones.
fn retry_request(id: Option<String>, bulk: Bulk) -> Result<(String, Option<Vec<u8>>), CliError> {
    match (id, bulk.since) {
        (Some(id), _) => Ok((format!("/v1/deliveries/{}/retry", path_segment(&id)), None)),
        (None, Some(since)) => {
            let mut body = json!({ "subscription": bulk.subscription, "since": since });
            if bulk.include_retrying {
                body["include_retrying"] = json!(true);
            }
            if bulk.dry_run {
                body["dry_run"] = json!(true);
            }
            Ok((
                "/v1/deliveries/retry".to_string(),
                Some(body.to_string().into_bytes()),
            ))
        }
        (None, None) => Err(CliError::Usage(
            "give a delivery id, or --dead --since TIME".into(),
        )),
    }
}

/// What a retry did (or a dry run would do): how many failed deliveries were requeued, or
/// which one and from what state.
fn retried(value: &Value) -> String {
    let dead = || {
        count_u64(
            value["dead"].as_u64().unwrap_or(0),
            "dead delivery",
            "dead deliveries",
        )
    };
    let retrying = |n: u64| format!("{n} still retrying");
    if value["dry_run"] == json!(true) {
        let at_least = if value["complete"] == json!(false) {
            "at least "
        } else {
            ""
        };
        match value["retrying"].as_u64() {
            Some(n) => format!(
                "would requeue {at_least}{} and bring forward {}",
                dead(),
                retrying(n)
            ),
            None => format!("would requeue {at_least}{}", dead()),
        }
    } else if let (Some(total), Some(n)) = (value["requeued"].as_u64(), value["retrying"].as_u64())
    {
        let dead = total.saturating_sub(n);
        format!(
            "requeued {}: {dead} dead, {n} still retrying",
            count_u64(total, "failed delivery", "failed deliveries")
        )
    } else if let Some(n) = value["requeued"].as_u64() {
        format!(
            "requeued {}",
            count_u64(n, "dead delivery", "dead deliveries")
        )
    } else {
        format!(
            "{} requeued (was {})",
            cell(&value["id"]),
            cell(&value["previous_state"])
        )
    }
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

/// One delivery for people: its fields, its attempts as a table, and its event.
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
        out.push_str(&attempts_table(&attempts));
    }
    if !d["event"].is_null() {
        out.push_str(&format!("\nevent: {}\n", d["event"]));
    }
    out
}

/// A delivery's attempts: the error in full; a long response excerpt is cut (--json has all
/// of it).
fn attempts_table(attempts: &[Value]) -> String {
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
    table(
        &[
            "#", "STARTED", "MS", "OUTCOME", "STATUS", "ERROR", "RESPONSE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_page_ends_with_its_count_and_the_next_cursor() {
        let value = json!({"deliveries": [{"id": "dlv_1", "state": "dead"}], "next_cursor": "c1"});
        let out = page(&value);
        assert!(
            out.ends_with("\n1 delivery; more with --cursor c1"),
            "{out}"
        );
        assert!(page(&json!({"deliveries": []})).ends_with("\n0 deliveries"));
    }

    #[test]
    fn retries_go_to_one_delivery_or_to_the_bulk_route() {
        let (path, body) = retry_request(Some("dlv 1".into()), Bulk::default()).unwrap();
        assert_eq!(
            (path.as_str(), body),
            ("/v1/deliveries/dlv%201/retry", None)
        );
        let since = || Some("2026-01-01T00:00:00Z".to_string());
        let (path, body) = retry_request(
            None,
            Bulk {
                since: since(),
                ..Bulk::default()
            },
        )
        .unwrap();
        assert_eq!(path, "/v1/deliveries/retry");
        assert_eq!(
            String::from_utf8(body.unwrap()).unwrap(),
            r#"{"subscription":null,"since":"2026-01-01T00:00:00Z"}"#
        );
        assert!(matches!(
            retry_request(
                None,
                Bulk {
                    subscription: Some("a".into()),
                    ..Bulk::default()
                }
            ),
            Err(CliError::Usage(_))
        ));
        let (_, body) = retry_request(
            None,
            Bulk {
                since: since(),
                include_retrying: true,
                dry_run: true,
                ..Bulk::default()
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(body.unwrap()).unwrap(),
            r#"{"subscription":null,"since":"2026-01-01T00:00:00Z","include_retrying":true,"dry_run":true}"#
        );
        assert_eq!(retried(&json!({"requeued": 1})), "requeued 1 dead delivery");
        assert_eq!(
            retried(&json!({"requeued": 5, "dead": 3, "retrying": 2})),
            "requeued 5 failed deliveries: 3 dead, 2 still retrying"
        );
        assert_eq!(
            retried(&json!({"dry_run": true, "dead": 1, "retrying": 0, "complete": false})),
            "would requeue at least 1 dead delivery and bring forward 0 still retrying"
        );
        assert_eq!(
            retried(&json!({"dry_run": true, "dead": 2, "complete": true})),
            "would requeue 2 dead deliveries"
        );
        assert_eq!(
            retried(&json!({"id": "dlv_1", "previous_state": "dead"})),
            "dlv_1 requeued (was dead)"
        );
    }
}

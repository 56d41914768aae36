//! `hookd stats`: the figures of the dashboard's charts (`GET /v1/stats`), as a summary line
//! and a table of subscriptions.

use std::process::ExitCode;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::http::encode_query;
use super::output::table;
use super::{admin_call, cell, ClientArgs};

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The window: the last hour (5-minute buckets), day (1 hour) or week (6 hours).
    #[arg(long, default_value = "day", value_parser = ["hour", "day", "week"])]
    window: String,
    /// Only this subscription's deliveries.
    #[arg(long)]
    subscription: Option<String>,
    /// Only the deliveries of this owner's events.
    #[arg(long)]
    owner: Option<String>,
}

pub fn run(args: StatsArgs) -> ExitCode {
    let path = format!(
        "/v1/stats{}",
        encode_query(&[
            ("window", Some(args.window)),
            ("subscription", args.subscription),
            ("owner", args.owner),
        ])
    );
    admin_call(&args.client, Method::GET, path, None, report)
}

/// A rate from 0 to 1 as a percentage, `-` when there is none.
fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// Milliseconds, `-` when there are none.
fn millis(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"))
}

/// The window's totals on one line, then one row per subscription.
fn report(value: &Value) -> String {
    let total = &value["total"];
    let at_least = if value["sampled"] == Value::Bool(true) {
        "at least "
    } else {
        ""
    };
    let mut out = format!(
        "{} to {}: {at_least}{} deliveries created, {} delivered, {} dead, {} failed attempts; \
         success {}, latency p50 {}, p95 {}\n",
        cell(&value["start"]),
        cell(&value["end"]),
        cell(&total["deliveries"]),
        cell(&total["delivered"]),
        cell(&total["dead"]),
        cell(&total["failed_attempts"]),
        percent(&total["success_rate"]),
        millis(&total["p50_ms"]),
        millis(&total["p95_ms"]),
    );
    let rows: Vec<Vec<String>> = value["subscriptions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                cell(&s["id"]),
                cell(&s["deliveries"]),
                cell(&s["delivered"]),
                cell(&s["dead"]),
                cell(&s["failed_attempts"]),
                percent(&s["success_rate"]),
                millis(&s["p50_ms"]),
                millis(&s["p95_ms"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "SUBSCRIPTION",
                "DELIVERIES",
                "DELIVERED",
                "DEAD",
                "FAILED ATTEMPTS",
                "SUCCESS",
                "P50",
                "P95",
            ],
            &rows,
        ));
    }
    if !at_least.is_empty() {
        out.push_str(
            "\n(sampled: hookd read the newest 20,000 deliveries of the window; the counts are lower bounds)\n",
        );
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_has_the_totals_and_a_row_per_subscription() {
        let value = json!({
            "window": "hour", "start": "2026-01-12T09:35:00.000Z", "end": "2026-01-12T10:35:00.000Z",
            "sampled": true,
            "total": {"deliveries": 8, "delivered": 5, "dead": 3, "attempts": 8,
                      "failed_attempts": 3, "success_rate": 0.625, "p50_ms": 4, "p95_ms": 11},
            "subscriptions": [{"id": "a-bad", "deliveries": 3, "delivered": 0, "dead": 3,
                               "attempts": 3, "failed_attempts": 3, "success_rate": 0.0,
                               "p50_ms": null, "p95_ms": null}]
        });
        let out = report(&value);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "2026-01-12T09:35:00.000Z to 2026-01-12T10:35:00.000Z: at least 8 deliveries created, \
             5 delivered, 3 dead, 3 failed attempts; success 62.5%, latency p50 4 ms, p95 11 ms"
        );
        assert!(lines[2].starts_with("SUBSCRIPTION  DELIVERIES"), "{out}");
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row, ["a-bad", "3", "0", "3", "3", "0.0%", "-", "-"]);
        assert!(out.ends_with("the counts are lower bounds)"), "{out}");
    }
}

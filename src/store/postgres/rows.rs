//! Rows into the store's types, and attempts to and from their JSON form.

use serde_json::{json, Value};
use tokio_postgres::Row;

use super::unms;
use crate::event::AdhocTarget;
use crate::store::{Attempt, Delivery, DeliveryState, Outcome, SubscriptionState};

/// The columns [`state_of`] reads, in its order.
pub(super) const STATE_COLUMNS: &str = "subscription, paused, last_success_ms, last_failure_ms, consecutive_failures, last_error, failing_since_ms, disabled_ms, disabled_reason";

pub(super) fn state_of(row: &Row) -> SubscriptionState {
    SubscriptionState {
        paused: row.get(1),
        last_success_ms: row.get::<_, Option<i64>>(2).map(unms),
        last_failure_ms: row.get::<_, Option<i64>>(3).map(unms),
        consecutive_failures: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
        last_error: row.get(5),
        failing_since_ms: row.get::<_, Option<i64>>(6).map(unms),
        disabled_ms: row.get::<_, Option<i64>>(7).map(unms),
        disabled_reason: row.get(8),
    }
}

/// The columns of a delivery's row that [`delivery_of`] reads first.
pub(super) const DELIVERY_COLUMNS: &str = "id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret, attempts, created_ms, last_error";

/// A delivery from a row whose first columns are [`DELIVERY_COLUMNS`].
pub(super) fn delivery_of(
    row: &Row,
    state: DeliveryState,
    due: Option<u64>,
    finished: Option<u64>,
) -> Delivery {
    let adhoc = match (
        row.get::<_, Option<String>>(5),
        row.get::<_, Option<String>>(6),
    ) {
        (Some(url), Some(secret)) => Some(AdhocTarget { url, secret }),
        _ => None,
    };
    Delivery {
        id: row.get(0),
        event_id: row.get(1),
        event_type: row.get(2),
        subscription: row.get(3),
        bucket: row.get(4),
        adhoc,
        state,
        attempts: u32::try_from(row.get::<_, i32>(7)).unwrap_or(0),
        created_ms: unms(row.get(8)),
        due_ms: due,
        finished_ms: finished,
        last_error: row.get(9),
        // By name: the column after those of each query.
        owner: row.try_get::<_, Option<String>>("owner").ok().flatten(),
    }
}

/// The state of a finished delivery: dead or delivered.
pub(super) fn finished(dead: bool) -> DeliveryState {
    if dead {
        DeliveryState::Dead
    } else {
        DeliveryState::Delivered
    }
}

pub(super) fn attempt_json(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "started_ms": a.started_ms,
        "duration_ms": a.duration_ms,
        "outcome": a.outcome.as_str(),
        "status_code": a.status_code,
        "error": a.error,
        "response_excerpt": a.response_excerpt,
        "response_headers": a.response_headers,
    })
}

pub(super) fn attempts_of(history: &Value) -> Vec<Attempt> {
    history
        .as_array()
        .map(|all| {
            all.iter()
                .map(|a| Attempt {
                    number: a["number"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    started_ms: a["started_ms"].as_u64().unwrap_or(0),
                    duration_ms: a["duration_ms"].as_u64().unwrap_or(0),
                    outcome: Outcome::parse(a["outcome"].as_str().unwrap_or("")),
                    status_code: a["status_code"]
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok()),
                    error: a["error"].as_str().map(str::to_string),
                    response_excerpt: a["response_excerpt"].as_str().map(str::to_string),
                    // Attempts recorded before hookd kept the headers have none.
                    response_headers: serde_json::from_value(a["response_headers"].clone())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_survive_their_json_form() {
        let a = Attempt {
            number: 2,
            started_ms: 1_000,
            duration_ms: 12,
            outcome: Outcome::Http5xx,
            status_code: Some(503),
            error: Some("HTTP 503".to_string()),
            response_excerpt: Some("busy".to_string()),
            response_headers: vec![("retry-after".to_string(), "30".to_string())],
        };
        let mut old = attempt_json(&a);
        old.as_object_mut().map(|o| o.remove("response_headers"));
        let read = attempts_of(&Value::Array(vec![old]));
        assert!(
            read[0].response_headers.is_empty(),
            "an older attempt: {read:?}"
        );
        assert_eq!(attempts_of(&Value::Array(vec![attempt_json(&a)])), vec![a]);
    }
}

//! The event types hookd sends, each with an example: the body as ingest builds it from the
//! seed page's example, and the headers it arrives with, signed by [`crate::signing`] with a
//! sample secret. The dashboard's and the portal's "Event types" page show them, and a test
//! event of a chosen type (`POST /v1/subscriptions/{id}/test`) sends the example's fields.

use serde_json::Value;

use crate::event::{parse_event, IngestRules, NewEvent};
use crate::guard::Guard;
use crate::signing;

/// One event type of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    /// `job.<status>`.
    pub name: &'static str,
    /// When hookd sends it, in the customer's words.
    pub about: &'static str,
    /// The event as a job runner posts it (the seed page's example for the job events).
    example: &'static str,
}

/// The event types hookd sends to subscriptions, the test event last. Any other
/// `job.<status>` a job runner posts is sent the same way.
pub const EVENT_TYPES: [EventType; 3] = [
    EventType {
        name: "job.completed",
        about: "A job finished: result holds what it made (items with their URL and content \
                type) and metrics how long it took.",
        example: r#"{"request_id": "abc123", "status": "completed",
            "result": {"items": [{"url": "https://cdn.abstrakt.one/...", "content_type": "video/mp4"}]},
            "metrics": {"inference_time": 45.2, "queue_time": 2.1},
            "timestamp": "2025-01-12T10:30:00Z"}"#,
    },
    EventType {
        name: "job.failed",
        about: "A job failed: error.message says why.",
        example: r#"{"request_id": "abc123", "status": "failed",
            "error": {"message": "The model could not process the input image."},
            "metrics": {"inference_time": 3.4, "queue_time": 2.1},
            "timestamp": "2025-01-12T10:30:00Z"}"#,
    },
    EventType {
        name: "job.test",
        about: "A test event, sent when you press Send test event: its request_id starts with \
                test_. Answer it with a 2xx and otherwise ignore it.",
        example: r#"{"request_id": "test_01jh3r0k2x9d8m4a6c5v7b1n0q", "status": "test",
            "timestamp": "2025-01-12T10:30:00Z"}"#,
    },
];

/// The sample secret the examples are signed with: a Standard Webhooks key, whose whole text
/// keys `X-Abstrakt-Signature` as any secret's does. Never a subscription's.
pub const SAMPLE_SECRET: &str = "whsec_aG9va2QtZXhhbXBsZS1zZWNyZXQtbm90LWZvci11c2U=";
/// The delivery id of the examples.
pub const SAMPLE_DELIVERY: &str = "dlv_01JH3R0K2X9D8M4A6C5V7B1N0Q";
/// The examples' Unix time: their `timestamp`, 2025-01-12T10:30:00Z.
pub const SAMPLE_TIME: i64 = 1_736_677_800;

/// The event type named `name`.
pub fn named(name: &str) -> Option<&'static EventType> {
    EVENT_TYPES.iter().find(|t| t.name == name)
}

/// The names of the catalogue's types, comma-separated, for messages.
pub fn names() -> String {
    EVENT_TYPES.map(|t| t.name).join(", ")
}

/// One example delivery: the body sent and the headers it arrives with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub body: String,
    /// Every header, signatures computed: `X-Abstrakt-*` (under `prefix`) and Standard
    /// Webhooks'.
    pub headers: Vec<(String, String)>,
}

impl EventType {
    /// The example as a job runner posts it.
    pub fn posted(&self) -> Value {
        // The examples are constants this module's test parses.
        serde_json::from_str(self.example).unwrap_or(Value::Null)
    }

    /// The event a test of this type sends: the example's fields, with `request_id` and
    /// `owner` given, and the acceptance time (`accepted_at`) as its timestamp.
    pub fn test_event(
        &self,
        request_id: &str,
        owner: Option<&str>,
        rules: &IngestRules,
        accepted_at: &str,
    ) -> Result<NewEvent, String> {
        let mut event = self.posted();
        if let Value::Object(fields) = &mut event {
            fields.insert("request_id".into(), request_id.into());
            fields.remove("timestamp");
            if let Some(owner) = owner {
                fields.insert("owner".into(), owner.into());
            }
        }
        parse_event(event, rules, accepted_at).map_err(|e| e.error)
    }

    /// The example delivery, its headers named with `prefix` (`[delivery] header_prefix`).
    pub fn example(&self, prefix: &str) -> Example {
        let rules = IngestRules {
            allow_adhoc_targets: false,
            allow_http: false,
            guard: Guard::new(Vec::new()),
        };
        let body = parse_event(self.posted(), &rules, "2025-01-12T10:30:00Z")
            .map(|e| e.body)
            .unwrap_or_default();
        let standard = signing::standard_key(SAMPLE_SECRET).map_or_else(
            |_| String::new(),
            |key| signing::standard_signature(&[key], SAMPLE_DELIVERY, SAMPLE_TIME, &body),
        );
        let header = |name: &str, value: String| (name.to_string(), value);
        let headers = vec![
            header("Content-Type", "application/json".into()),
            header(
                "User-Agent",
                concat!("hookd/", env!("CARGO_PKG_VERSION")).into(),
            ),
            header(
                &format!("{prefix}-Signature"),
                signing::abstrakt_signature(SAMPLE_SECRET.as_bytes(), &body),
            ),
            header(&format!("{prefix}-Event"), self.name.into()),
            header(&format!("{prefix}-Delivery"), SAMPLE_DELIVERY.into()),
            header(&format!("{prefix}-Attempt"), "1".into()),
            header("webhook-id", SAMPLE_DELIVERY.into()),
            header("webhook-timestamp", SAMPLE_TIME.to_string()),
            header("webhook-signature", standard),
        ];
        Example {
            body: String::from_utf8_lossy(&body).into_owned(),
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit, Mac};

    #[test]
    fn every_example_is_an_event_ingest_takes_with_its_own_type() {
        for t in EVENT_TYPES {
            let example = t.example("X-Abstrakt");
            let body: Value = serde_json::from_str(&example.body).unwrap();
            assert_eq!(format!("job.{}", body["status"].as_str().unwrap()), t.name);
            assert_eq!(body["timestamp"], "2025-01-12T10:30:00Z");
            assert_eq!(named(t.name), Some(&t));
        }
        let completed = named("job.completed").unwrap().example("X-Abstrakt");
        assert_eq!(
            completed.body,
            r#"{"request_id":"abc123","status":"completed","result":{"items":[{"url":"https://cdn.abstrakt.one/...","content_type":"video/mp4"}]},"metrics":{"inference_time":45.2,"queue_time":2.1},"timestamp":"2025-01-12T10:30:00Z"}"#,
            "the seed page's example, in the delivered field order"
        );
    }

    /// The signatures verify as a receiver computes them, independently of `signing`.
    #[test]
    fn the_example_signatures_verify_with_the_sample_secret() {
        let example = named("job.failed").unwrap().example("X-Acme");
        let header = |name: &str| {
            example
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SAMPLE_SECRET.as_bytes()).unwrap();
        mac.update(example.body.as_bytes());
        assert_eq!(
            header("X-Acme-Signature"),
            hex::encode(mac.finalize().into_bytes())
        );
        assert_eq!(header("X-Acme-Event"), "job.failed");
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(SAMPLE_SECRET.trim_start_matches("whsec_"))
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{SAMPLE_DELIVERY}.{SAMPLE_TIME}.{}", example.body).as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(header("webhook-signature"), format!("v1,{expected}"));
    }

    #[test]
    fn a_test_event_takes_the_examples_fields_with_its_own_id_owner_and_time() {
        let rules = IngestRules {
            allow_adhoc_targets: false,
            allow_http: false,
            guard: Guard::new(Vec::new()),
        };
        let t = named("job.completed").unwrap();
        let event = t
            .test_event("test_x", Some("acme"), &rules, "2026-12-07T06:00:00.000Z")
            .unwrap();
        assert_eq!(event.event_type, "job.completed");
        assert_eq!(event.owner.as_deref(), Some("acme"));
        let body: Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(body["request_id"], "test_x");
        assert_eq!(body["timestamp"], "2026-12-07T06:00:00.000Z");
        assert_eq!(body["result"], t.posted()["result"]);
        assert_eq!(names(), "job.completed, job.failed, job.test");
    }
}

//! `hookd subscriptions ...`: list, pause, resume, enable, add, remove, test, rotate-secret,
//! finish-rotation and portal-link, each one request to the subscriptions API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::http::path_segment;
use super::{admin_call, cell, table, ClientArgs};
use crate::config::SubscriptionField as Field;

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// List subscriptions with their health.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a subscription: its deliveries wait in the queue.
    Pause {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Resume a paused subscription.
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Enable a subscription its circuit breaker disabled: its waiting deliveries go out again.
    Enable {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Create a subscription at run time (kept in the store; the config file's rules apply).
    Add(Box<AddSubscription>),
    /// Delete a subscription created at run time.
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Send a test event to one subscription and print its delivery id.
    Test {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// Its type: job.test (the default), or job.completed or job.failed with the example
        /// fields of the Event types page.
        #[arg(long)]
        event_type: Option<String>,
    },
    /// Give a subscription created at run time a new secret (printed once); the old one keeps
    /// signing for 24 hours, or until finish-rotation (X-Abstrakt-Signature carries the old
    /// one's signature alone; Standard Webhooks' header both).
    RotateSecret {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Switch a rotating subscription to its new secret: the old one stops signing at once.
    FinishRotation {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Print a signed, expiring link to the dashboard limited to one owner's subscriptions and
    /// deliveries (the customer portal, docs/dashboard.md).
    PortalLink {
        #[command(flatten)]
        client: ClientArgs,
        /// The owner (customer id) whose subscriptions the link shows.
        #[arg(long)]
        owner: String,
        /// How long the link works: "15m", "1h" (the default), up to "30d".
        #[arg(long)]
        expires_in: Option<String>,
    },
}

/// A `--header` argument, "Name: value": the name and the value, trimmed. The API judges the
/// name (hop-by-hop and signature headers are refused there, naming it).
fn header_arg(arg: &str) -> Result<(String, String), String> {
    match arg.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected \"Name: value\", got {arg:?}")),
    }
}

/// `hookd subscriptions add`: the API's keys as flags.
#[derive(Args)]
pub struct AddSubscription {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Where deliveries go (the receiver's URL; --url is hookd's own address).
    #[arg(long)]
    pub endpoint: String,
    /// Event types, comma-separated (job.completed,job.failed), or '*'.
    #[arg(long, value_delimiter = ',', required = true)]
    pub events: Vec<String>,
    /// Its id (generated when left out).
    #[arg(long)]
    pub id: Option<String>,
    /// A name for people, shown beside its id (one line, at most 100 characters).
    #[arg(long)]
    pub name: Option<String>,
    /// What it is for (at most 1,000 characters).
    #[arg(long)]
    pub description: Option<String>,
    /// The provider's customer it belongs to.
    #[arg(long)]
    pub owner: Option<String>,
    /// Its signing secret (generated when left out, and printed once).
    #[arg(long)]
    pub secret: Option<String>,
    /// Signature headers: abstrakt, standard or both.
    #[arg(long)]
    pub signature: Option<String>,
    /// Its own retry schedule, comma-separated delays ("0s,1m,5m").
    #[arg(long, value_delimiter = ',')]
    pub retry_schedule: Option<Vec<String>>,
    /// Its own attempt timeout ("10s").
    #[arg(long)]
    pub timeout: Option<String>,
    /// At most this many attempts to it at once.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// At most this many attempts per second, smoothed.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// A header sent with each delivery, "Name: value"; repeat for more.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header_arg)]
    pub headers: Vec<(String, String)>,
    /// The same for a secret value (never logged, shown as [REDACTED]).
    // "[REDACTED]" is the help text's word, not a link: escaping it would show in `--help`.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "secret-header", value_name = "NAME: VALUE", value_parser = header_arg)]
    pub secret_headers: Vec<(String, String)>,
    /// Failed attempts in a row that open its circuit breaker (0: never).
    #[arg(long)]
    pub breaker_failures: Option<u32>,
    /// While its breaker is open, the least time between probes ("30s").
    #[arg(long)]
    pub breaker_probe_interval: Option<String>,
    /// Failing this long disables it ("5d"; "0s": never).
    #[arg(long)]
    pub disable_after: Option<String>,
    /// This many failed attempts in a row disable it (0: never).
    #[arg(long)]
    pub disable_after_failures: Option<u32>,
}

/// One request to the API: its method, path and JSON body.
struct Request {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
}

impl Request {
    fn get(path: &str) -> Self {
        Request {
            method: Method::GET,
            path: path.to_string(),
            body: None,
        }
    }

    fn post(path: &str, body: &Value) -> Self {
        Request {
            method: Method::POST,
            path: path.to_string(),
            body: Some(body.to_string().into_bytes()),
        }
    }

    /// `POST /v1/subscriptions/{id}/{action}`, without a body.
    fn action(id: &str, action: &str) -> Self {
        Request {
            method: Method::POST,
            path: format!("/v1/subscriptions/{}/{action}", path_segment(id)),
            body: None,
        }
    }

    fn delete(id: &str) -> Self {
        Request {
            method: Method::DELETE,
            path: format!("/v1/subscriptions/{}", path_segment(id)),
            body: None,
        }
    }
}

/// Builds the command's request, sends it, prints the answer.
pub fn run(command: SubscriptionsCommand) -> ExitCode {
    let (client, request) = request(&command);
    let removed = match &command {
        SubscriptionsCommand::Remove { id, .. } => Some(id.clone()),
        _ => None,
    };
    admin_call(
        client,
        request.method,
        request.path,
        request.body,
        |value| summary(value, removed.as_deref()),
    )
}

/// The command's flags as its request, and how to reach hookd.
fn request(command: &SubscriptionsCommand) -> (&ClientArgs, Request) {
    use SubscriptionsCommand as S;
    match command {
        S::List { client } => (client, Request::get("/v1/subscriptions")),
        S::Pause { client, id } => (client, Request::action(id, "pause")),
        S::Resume { client, id } => (client, Request::action(id, "resume")),
        S::Enable { client, id } => (client, Request::action(id, "enable")),
        S::Add(add) => (
            &add.client,
            Request::post("/v1/subscriptions", &add_body(add)),
        ),
        S::Remove { client, id } => (client, Request::delete(id)),
        S::Test {
            client,
            id,
            event_type: None,
        } => (client, Request::action(id, "test")),
        S::Test {
            client,
            id,
            event_type: Some(event_type),
        } => {
            let path = format!("/v1/subscriptions/{}/test", path_segment(id));
            (
                client,
                Request::post(&path, &json!({ "event_type": event_type })),
            )
        }
        S::RotateSecret { client, id } => (client, Request::action(id, "rotate-secret")),
        S::FinishRotation { client, id } => (client, Request::action(id, "finish-rotation")),
        S::PortalLink {
            client,
            owner,
            expires_in,
        } => {
            let mut body = json!({ "owner": owner });
            if let Some(expires_in) = expires_in {
                body["expires_in"] = Value::String(expires_in.clone());
            }
            (client, Request::post("/v1/portal-links", &body))
        }
    }
}

/// The body of `POST /v1/subscriptions` from `hookd subscriptions add`'s flags: each flag that
/// is given is the API key of its name (`--endpoint` is `url`; `--header` and
/// `--secret-header` make `headers`), each key a [`SubscriptionField`]'s name.
pub fn add_body(add: &AddSubscription) -> Value {
    let AddSubscription {
        client: _,
        endpoint,
        events,
        id,
        name,
        description,
        owner,
        secret,
        signature,
        retry_schedule,
        timeout,
        max_in_flight,
        rate_limit,
        headers,
        secret_headers,
        breaker_failures,
        breaker_probe_interval,
        disable_after,
        disable_after_failures,
    } = add;
    let mut body = Map::new();
    let mut put = |field: Field, value: Value| {
        body.insert(field.name.to_string(), value);
    };
    put(Field::URL, json!(endpoint));
    put(Field::EVENTS, json!(events));
    for (field, value) in [
        (Field::ID, id),
        (Field::NAME, name),
        (Field::DESCRIPTION, description),
        (Field::OWNER, owner),
        (Field::SECRET, secret),
        (Field::SIGNATURE, signature),
        (Field::TIMEOUT, timeout),
        (Field::BREAKER_PROBE_INTERVAL, breaker_probe_interval),
        (Field::DISABLE_AFTER, disable_after),
    ] {
        if let Some(value) = value {
            put(field, json!(value));
        }
    }
    for (field, value) in [
        (Field::MAX_IN_FLIGHT, max_in_flight),
        (Field::BREAKER_FAILURES, breaker_failures),
        (Field::DISABLE_AFTER_FAILURES, disable_after_failures),
    ] {
        if let Some(value) = value {
            put(field, json!(value));
        }
    }
    if let Some(schedule) = retry_schedule {
        put(Field::RETRY_SCHEDULE, json!(schedule));
    }
    if let Some(rate) = rate_limit {
        put(Field::RATE_LIMIT, json!(rate));
    }
    if let Some(set) = headers_body(headers, secret_headers) {
        put(Field::HEADERS, set);
    }
    Value::Object(body)
}

/// The `headers` object: plain values as strings, secret ones as `{"secret": value}`; none
/// when no header was given.
fn headers_body(
    headers: &[(String, String)],
    secret_headers: &[(String, String)],
) -> Option<Value> {
    if headers.is_empty() && secret_headers.is_empty() {
        return None;
    }
    let mut set = Map::new();
    for (name, value) in headers {
        set.insert(name.clone(), json!(value));
    }
    for (name, value) in secret_headers {
        set.insert(name.clone(), json!({ "secret": value }));
    }
    Some(Value::Object(set))
}

/// The answer for people, by its shape: `removed` names the subscription a `remove` deleted
/// (its answer has no body to tell).
fn summary(value: &Value, removed: Option<&str>) -> String {
    if let Some(id) = removed {
        format!("removed {id}")
    } else if let Some(items) = value["subscriptions"].as_array() {
        subscriptions_table(items).trim_end().to_string()
    } else if let Some(secret) = value["secret"].as_str() {
        let until = value["previous_secret_expires"].as_str().map_or_else(String::new, |t| {
            format!(
                "; the old secret keeps signing until {t} or hookd subscriptions finish-rotation {}",
                cell(&value["id"])
            )
        });
        format!(
            "{} secret {secret} (shown this once: give it to the receiver now{until})",
            cell(&value["id"])
        )
    } else if let Some(url) = value["url"]
        .as_str()
        .filter(|_| value["expires_at"].is_string())
    {
        format!(
            "{url}\n(the portal of {}, until {})",
            cell(&value["owner"]),
            cell(&value["expires_at"])
        )
    } else if let Some(delivery) = value["delivery_id"].as_str() {
        format!("sent job.test: {delivery} (hookd deliveries show {delivery})")
    } else if let Some(state) = value["state"].as_str() {
        format!("{} {state}", cell(&value["id"]))
    } else {
        format!(
            "{} {}",
            cell(&value["id"]),
            if value["paused"].as_bool() == Some(true) {
                "paused"
            } else {
                "resumed"
            }
        )
    }
}

pub fn subscriptions_table(items: &[Value]) -> String {
    // The names' column, last (a name has spaces), when any subscription has one.
    let named = items.iter().any(|s| s["name"].is_string());
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            let events = s["events"]
                .as_array()
                .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            let mut row = vec![
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
            ];
            if named {
                row.push(cell(&s["name"]));
            }
            row
        })
        .collect();
    let columns = [
        "ID",
        "STATE",
        "URL",
        "EVENTS",
        "LAST SUCCESS",
        "FAILURES",
        "LAST ERROR",
        "NAME",
    ];
    table(&columns[..columns.len() - usize::from(!named)], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SUBSCRIPTION_FIELDS;
    use clap::Parser;

    /// `hookd subscriptions add` parsed from these arguments.
    fn add(args: &[&str]) -> AddSubscription {
        #[derive(Parser)]
        struct Add {
            #[command(flatten)]
            add: AddSubscription,
        }
        let argv = ["add", "--url", "http://127.0.0.1:1"].iter().chain(args);
        Add::try_parse_from(argv).expect("the flags parse").add
    }

    #[test]
    fn add_sends_only_the_flags_given_in_a_fixed_order() {
        let body = add_body(&add(&[
            "--endpoint",
            "https://r.example/h",
            "--events",
            "a,b",
        ]));
        assert_eq!(
            body.to_string(),
            r#"{"url":"https://r.example/h","events":["a","b"]}"#
        );
        let body = add_body(&add(&[
            "--endpoint=https://r.example/h",
            "--events=*",
            "--rate-limit=2.5",
            "--secret-header=Authorization: Bearer x",
            "--header",
            "X-Team : ops ",
            "--max-in-flight=3",
            "--retry-schedule=0s,1m",
            "--timeout=10s",
            "--id=s1",
            "--disable-after-failures=0",
        ]));
        assert_eq!(
            body.to_string(),
            concat!(
                r#"{"url":"https://r.example/h","events":["*"],"id":"s1","timeout":"10s","#,
                r#""max_in_flight":3,"disable_after_failures":0,"retry_schedule":["0s","1m"],"#,
                r#""rate_limit":2.5,"headers":{"X-Team":"ops","Authorization":{"secret":"Bearer x"}}}"#
            )
        );
    }

    /// The subscription's fields that `hookd subscriptions add` has no flag for, and why.
    const NO_FLAG: [(Field, &str); 2] = [
        (
            Field::PREVIOUS_SECRET,
            "not taken when a subscription is made: rotate-secret writes it",
        ),
        (
            Field::PREVIOUS_SECRET_EXPIRES,
            "not taken when a subscription is made: rotate-secret writes it",
        ),
    ];

    /// Every flag of `hookd subscriptions add`, each given once (`--header` and
    /// `--secret-header` both make `headers`).
    const EVERY_FLAG: [&str; 18] = [
        "--endpoint=https://r.example/h",
        "--events=job.completed",
        "--id=s1",
        "--name=Nightly builds",
        "--description=Tells the build farm.",
        "--owner=acme",
        "--secret=whsec_c2VjcmV0",
        "--signature=both",
        "--retry-schedule=0s,1m",
        "--timeout=10s",
        "--max-in-flight=3",
        "--rate-limit=2.5",
        "--header=X-Team: ops",
        "--secret-header=Authorization: Bearer x",
        "--breaker-failures=5",
        "--breaker-probe-interval=30s",
        "--disable-after=5d",
        "--disable-after-failures=0",
    ];

    #[test]
    fn every_flag_is_sent_as_a_subscription_field_and_every_field_has_a_flag_or_a_reason() {
        let client: Vec<String> = ClientArgs::augment_args(clap::Command::new("client"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for arg in AddSubscription::augment_args(clap::Command::new("add")).get_arguments() {
            let Some(long) = arg
                .get_long()
                .filter(|_| !client.contains(&arg.get_id().to_string()))
            else {
                continue;
            };
            assert!(
                EVERY_FLAG
                    .iter()
                    .any(|f| f.starts_with(&format!("--{long}="))),
                "--{long}: give it in EVERY_FLAG, so that this test sees the key it sends"
            );
        }
        let body = add_body(&add(&EVERY_FLAG));
        let sent = body.as_object().expect("an object");
        for key in sent.keys() {
            assert!(
                Field::named(key).is_some_and(|f| f.at_creation()),
                "{key}: not a field of SUBSCRIPTION_FIELDS that the API takes when one is made"
            );
        }
        for field in SUBSCRIPTION_FIELDS {
            let has_flag = sent.contains_key(field.name);
            let absent = NO_FLAG.iter().any(|(f, _)| f == field);
            assert!(
                has_flag != absent,
                "{}: give `hookd subscriptions add` a flag for it, or say in NO_FLAG why it has none",
                field.name
            );
        }
    }

    #[test]
    fn header_arguments_need_a_name_and_a_colon() {
        assert_eq!(
            header_arg(" X-A :  b: c "),
            Ok(("X-A".to_string(), "b: c".to_string()))
        );
        assert!(header_arg("X-A").is_err());
        assert!(header_arg(" : b").is_err());
    }

    #[test]
    fn answers_are_told_apart_by_their_shape() {
        let id = |extra: Value| {
            let mut v = json!({ "id": "s1" });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            summary(&v, None)
        };
        assert_eq!(summary(&json!({}), Some("s1")), "removed s1");
        assert_eq!(id(json!({"paused": true})), "s1 paused");
        assert_eq!(id(json!({"paused": false})), "s1 resumed");
        assert_eq!(id(json!({"state": "active"})), "s1 active");
        assert_eq!(
            id(json!({"delivery_id": "dlv_1"})),
            "sent job.test: dlv_1 (hookd deliveries show dlv_1)"
        );
        assert!(id(json!({"secret": "whsec_x"})).starts_with("s1 secret whsec_x (shown this once"));
        assert_eq!(
            summary(
                &json!({"url": "http://h/p", "owner": "o", "expires_at": "2026-01-01T00:00:00Z"}),
                None
            ),
            "http://h/p\n(the portal of o, until 2026-01-01T00:00:00Z)"
        );
        let list = summary(
            &json!({"subscriptions": [{"id": "s1", "url": "http://h"}]}),
            None,
        );
        assert_eq!(list.lines().count(), 2, "{list}");
        assert!(
            list.lines()
                .nth(1)
                .unwrap()
                .starts_with("s1  active  http://h"),
            "{list}"
        );
    }

    #[test]
    fn the_list_has_a_name_column_when_a_subscription_has_a_name() {
        let plain =
            json!({ "id": "a", "state": "active", "url": "https://a.example/h", "events": ["*"] });
        let named = json!({ "id": "b", "state": "active", "url": "https://b.example/h", "events": ["*"], "name": "Nightly builds" });
        let without = subscriptions_table(std::slice::from_ref(&plain));
        assert!(!without.contains("NAME"), "{without}");
        let with = subscriptions_table(&[plain, named]);
        let header = with.lines().next().unwrap_or("");
        assert!(header.trim_end().ends_with("NAME"), "{with}");
        assert!(with.contains("Nightly builds"), "{with}");
    }
}

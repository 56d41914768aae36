//! The subscription form's values as typed (`Draft`), the fields it has an input for, its errors
//! by field, and the API requests it makes: shared by the new-subscription page and a
//! subscription's edit form.

use serde_json::{json, Map, Value};

use super::error_text;
use super::subscription_rows::BREAKER_LABELS;
use crate::api::subscriptions::BREAKER_KEYS;
use crate::config::{CustomHeader, SubscriptionField as Field};
use crate::ui::Fields;

/// The event types offered as boxes; others are typed.
pub(super) const COMMON_EVENTS: [&str; 3] = ["job.completed", "job.failed", "*"];

/// The fields of [`SUBSCRIPTION_FIELDS`](crate::config::SUBSCRIPTION_FIELDS) that the new
/// subscription's form has an input for (`owner` an operator's only): an error of one is shown
/// beside it, any other above the form ([`Draft::general`]).
pub(super) const FORM_FIELDS: [Field; 14] = [
    Field::ID,
    Field::NAME,
    Field::DESCRIPTION,
    Field::OWNER,
    Field::URL,
    Field::SECRET,
    Field::EVENTS,
    Field::SIGNATURE,
    Field::HEADERS,
    Field::RATE_LIMIT,
    Field::BREAKER_FAILURES,
    Field::BREAKER_PROBE_INTERVAL,
    Field::DISABLE_AFTER,
    Field::DISABLE_AFTER_FAILURES,
];

/// The create form's values and its errors by field.
#[derive(Debug, Default)]
pub struct Draft {
    pub id: String,
    /// Its name for people, as typed; empty: none.
    pub name: String,
    /// What it is for, as typed; empty: nothing said.
    pub description: String,
    pub url: String,
    pub events: Vec<String>,
    pub other_events: String,
    pub signature: String,
    /// The secret as typed, kept when the form comes back with errors.
    pub secret: String,
    pub owner: String,
    /// Custom headers, one `Name: value` per line.
    pub headers: String,
    /// Attempts per second, as typed; empty: no limit.
    pub rate_limit: String,
    /// The circuit breaker's keys ([`BREAKER_KEYS`]), as typed; empty: `[delivery]`'s.
    pub breaker: [String; 4],
    /// `[delivery]`'s breaker keys: what an empty field means.
    pub breaker_defaults: [String; 4],
    pub errors: Vec<(String, String)>,
}

/// One circuit-breaker field of the subscription form.
#[derive(Debug)]
pub struct BreakerInput<'a> {
    pub key: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    /// A count of attempts (else a duration).
    pub count: bool,
    pub value: &'a str,
    pub default: &'a str,
}

impl Draft {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, e)| e.as_str())
    }

    /// How an event type's box is labelled.
    pub fn label(event: &str) -> &str {
        if event == "*" {
            "every event (*)"
        } else {
            event
        }
    }

    pub fn has(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// The circuit breaker's fields, with their values.
    pub fn breaker_inputs(&self) -> Vec<BreakerInput<'_>> {
        BREAKER_KEYS
            .iter()
            .zip(BREAKER_LABELS)
            .zip(self.breaker.iter().zip(&self.breaker_defaults))
            .map(|((key, (label, hint)), (value, default))| BreakerInput {
                key,
                label,
                hint,
                count: key.ends_with("_failures"),
                value,
                default,
            })
            .collect()
    }

    /// Errors that belong to no field of the form ([`FORM_FIELDS`]).
    pub fn general(&self) -> Vec<&str> {
        self.errors
            .iter()
            .filter(|(f, _)| !FORM_FIELDS.iter().any(|field| field.name == f))
            .map(|(_, e)| e.as_str())
            .collect()
    }

    pub(super) fn from_fields(f: &Fields) -> Draft {
        Draft {
            id: f.get(Field::ID.name).unwrap_or("").to_string(),
            name: f.get(Field::NAME.name).unwrap_or("").trim().to_string(),
            description: f
                .get(Field::DESCRIPTION.name)
                .unwrap_or("")
                .trim()
                .to_string(),
            url: f.get(Field::URL.name).unwrap_or("").to_string(),
            events: f
                .all(Field::EVENTS.name)
                .into_iter()
                .map(str::to_string)
                .collect(),
            other_events: f.get("other_events").unwrap_or("").to_string(),
            signature: f
                .get(Field::SIGNATURE.name)
                .unwrap_or("abstrakt")
                .to_string(),
            secret: f.get(Field::SECRET.name).unwrap_or("").to_string(),
            owner: f.get(Field::OWNER.name).unwrap_or("").to_string(),
            headers: f.get(Field::HEADERS.name).unwrap_or("").to_string(),
            rate_limit: f
                .get(Field::RATE_LIMIT.name)
                .unwrap_or("")
                .trim()
                .to_string(),
            breaker: BREAKER_KEYS.map(|key| f.get(key).unwrap_or("").to_string()),
            breaker_defaults: Default::default(),
            errors: Vec::new(),
        }
    }

    /// The fields every request of the forms carries: the URL and the event types, and the
    /// name and the description the form sent (`""` clears one).
    fn url_and_events(&self, fields: &Fields) -> Value {
        let mut body = Value::Object(serde_json::Map::new());
        body[Field::URL.name] = json!(self.url);
        body[Field::EVENTS.name] = json!(self.all_events());
        for (field, text) in [
            (Field::NAME, &self.name),
            (Field::DESCRIPTION, &self.description),
        ] {
            if fields.has(field.name) {
                body[field.name] = json!(text.replace("\r\n", "\n"));
            }
        }
        body
    }

    /// The API's create request for this form (`fields` as sent), for `owner`. The errors of
    /// the headers and the rate limit are noted as the request is made.
    pub(super) fn create_request(&mut self, fields: &Fields, owner: Option<String>) -> Value {
        let mut body = self.url_and_events(fields);
        if !self.id.is_empty() {
            body[Field::ID.name] = json!(self.id);
        }
        if let Some(secret) = fields.get(Field::SECRET.name) {
            body[Field::SECRET.name] = json!(secret);
        }
        if !self.signature.is_empty() {
            body[Field::SIGNATURE.name] = json!(self.signature);
        }
        if let Some(owner) = owner {
            body[Field::OWNER.name] = json!(owner);
        }
        let headers = self.header_map();
        if !headers.is_empty() {
            body[Field::HEADERS.name] = Value::Object(headers);
        }
        if !self.rate_limit.is_empty() {
            if let Some(rate) = self.rate_limit_value() {
                body[Field::RATE_LIMIT.name] = rate;
            }
        }
        self.breaker_json(fields, &mut body);
        body
    }

    /// The API's update request for the edit form (`fields` as sent), which shows the plain
    /// headers only: the secret ones of `current` (the subscription's headers) are kept as they
    /// are. `admin`: an operator's form, which may set the owner. The errors of the headers and
    /// the rate limit are noted as the request is made, and those parts left out.
    pub(super) fn update_request(
        &mut self,
        fields: &Fields,
        current: &[CustomHeader],
        admin: bool,
    ) -> Value {
        let mut body = self.url_and_events(fields);
        if fields.has(Field::HEADERS.name) {
            let mut headers = self.header_map();
            for h in current.iter().filter(|h| h.secret) {
                headers.insert(
                    h.name.as_str().to_string(),
                    json!({ "secret": h.value.expose() }),
                );
            }
            if self.error(Field::HEADERS.name).is_none() {
                body[Field::HEADERS.name] = Value::Object(headers);
            }
        }
        if fields.has(Field::RATE_LIMIT.name) {
            if let Some(rate) = self.rate_limit_value() {
                body[Field::RATE_LIMIT.name] = rate;
            }
        }
        if fields.has(Field::SIGNATURE.name) && !self.signature.is_empty() {
            body[Field::SIGNATURE.name] = json!(self.signature);
        }
        if admin && !self.owner.is_empty() {
            body[Field::OWNER.name] = json!(self.owner);
        }
        self.breaker_json(fields, &mut body);
        body
    }

    /// The breaker fields the form sent, as the API takes them: a count as a number, a
    /// duration (or what is neither, for the API to refuse) as typed, and an emptied field as
    /// `""`, which removes the subscription's own value.
    fn breaker_json(&self, fields: &Fields, body: &mut Value) {
        for (key, text) in BREAKER_KEYS.iter().zip(&self.breaker) {
            if !fields.has(key) {
                continue;
            }
            body[*key] = text
                .parse::<u64>()
                .map_or_else(|_| json!(text), |n| json!(n));
        }
    }

    /// The rate limit as the API takes it: `0` (none) when empty; `None`, with an error of the
    /// field, when it is not a number (the API checks its range).
    fn rate_limit_value(&mut self) -> Option<Value> {
        if self.rate_limit.is_empty() {
            return Some(json!(0));
        }
        match self.rate_limit.parse::<f64>() {
            Ok(rate) if rate.is_finite() => Some(json!(rate)),
            _ => {
                self.errors.push((
                    Field::RATE_LIMIT.name.to_string(),
                    format!(
                        "{:?} is not a number of attempts per second, like 20 or 0.5",
                        self.rate_limit
                    ),
                ));
                None
            }
        }
    }

    /// The header lines as the API's `headers` object; a line without a colon is an error of
    /// the `headers` field.
    fn header_map(&mut self) -> Map<String, Value> {
        let mut map = Map::new();
        for line in self
            .headers
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            match line.split_once(':') {
                Some((name, value)) => {
                    map.insert(name.trim().to_string(), json!(value.trim()));
                }
                None => self.errors.push((
                    Field::HEADERS.name.to_string(),
                    format!("{line:?}: write each header as Name: value"),
                )),
            }
        }
        map
    }

    /// Every event type asked for: the boxes ticked and the others typed.
    fn all_events(&self) -> Vec<String> {
        let mut out = self.events.clone();
        for e in self
            .other_events
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if !out.iter().any(|o| o == e) {
                out.push(e.to_string());
            }
        }
        out
    }

    /// Its errors in a customer's words, for a portal: nothing about the operator's settings.
    pub(super) fn for_customer(&mut self) {
        for (_, message) in &mut self.errors {
            if message.contains("targets.allow") {
                *message = "This address is private or internal: webhooks go to public \
                            addresses only. Give your endpoint's public URL."
                    .to_string();
            }
        }
    }

    /// The API's 422 (or 409) as errors by field, beside the form's own.
    pub(super) fn take_errors(&mut self, body: &Value) {
        if let Some(all) = body.get("errors").and_then(Value::as_array) {
            for e in all {
                let field = e.get("field").and_then(Value::as_str).unwrap_or("");
                let field = field.split(['[', '.']).next().unwrap_or(field);
                let text = e.get("error").and_then(Value::as_str).unwrap_or("invalid");
                self.errors.push((field.to_string(), text.to_string()));
            }
        } else {
            let field = body.get("field").and_then(Value::as_str).unwrap_or("");
            self.errors.push((field.to_string(), error_text(body)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SUBSCRIPTION_FIELDS;

    /// The settable fields the form has no input for, and why: a field added to
    /// SUBSCRIPTION_FIELDS goes into the form or here.
    const NOT_IN_THE_FORM: [(Field, &str); 5] = [
        (
            Field::RETRY_SCHEDULE,
            "set through the API or the CLI; else [delivery]'s",
        ),
        (
            Field::TIMEOUT,
            "set through the API or the CLI; else [delivery]'s",
        ),
        (
            Field::MAX_IN_FLIGHT,
            "set through the API or the CLI; else [delivery]'s",
        ),
        (Field::PREVIOUS_SECRET, "written by a rotation, never typed"),
        (
            Field::PREVIOUS_SECRET_EXPIRES,
            "written by a rotation, never typed",
        ),
    ];

    #[test]
    fn every_settable_field_is_in_the_form_or_left_out_for_a_reason() {
        for field in SUBSCRIPTION_FIELDS {
            let in_form = FORM_FIELDS.contains(field);
            let left_out = NOT_IN_THE_FORM.iter().any(|(f, _)| f == field);
            assert!(
                in_form != left_out,
                "{}: give the subscription form an input for it (and list it in FORM_FIELDS), \
                 or say in NOT_IN_THE_FORM why it has none",
                field.name
            );
        }
        for field in FORM_FIELDS {
            assert!(field.at_creation(), "{} is not set when made", field.name);
        }
        assert!(BREAKER_KEYS
            .iter()
            .all(|key| Field::named(key).is_some_and(|f| FORM_FIELDS.contains(f))));
    }

    #[test]
    fn errors_of_fields_without_an_input_are_shown_above_the_form() {
        let draft = Draft {
            errors: [
                ("url", "bad url"),
                ("max_in_flight", "too many"),
                ("disable_after", "bad duration"),
                ("", "over the portal's limit"),
                ("owner", "bad owner"),
                ("previous_secret", "not given"),
            ]
            .map(|(f, e)| (f.to_string(), e.to_string()))
            .into(),
            ..Draft::default()
        };
        assert_eq!(
            draft.general(),
            ["too many", "over the portal's limit", "not given"]
        );
        assert_eq!(draft.error("url"), Some("bad url"));
    }
}

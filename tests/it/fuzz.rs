//! Property tests (proptest) of the parsers that face untrusted input: the canonical JSON
//! body, event validation, the live ingest endpoint, and the configuration file.
//!
//! Each property runs a bounded number of cases so that the whole module takes seconds in a
//! debug build. To run more (or fewer), set PROPTEST_CASES, which overrides every property's
//! count here, e.g.
//!
//!     PROPTEST_CASES=50000 cargo test --release --test it -- fuzz::
//!
//! A failure prints the shrunk input. Failures are not persisted to files
//! (`failure_persistence: None`), so a run never leaves files in the tree.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookd::canonical;
use hookd::config::{Config, ConfigError, EXAMPLE};
use hookd::event::{parse_event, IngestRules};
use hookd::guard::Guard;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::Value;

use crate::support::app::spawn_app;

/// The number of cases of a property: PROPTEST_CASES when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        // Shrinking a failure is bounded too, so that a failing run still ends promptly.
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })
}

fn run<S: Strategy>(
    name: &str,
    mut runner: TestRunner,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = runner.run(&strategy, test) {
        panic!("property {name} failed: {e}");
    }
}

// ------------------------------------------------------------------ JSON generation

/// A JSON document as written: numbers keep the literal they are written with, strings may be
/// written with every character as a `\u` escape, objects may repeat keys.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String, bool),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn text(&self, spaced: bool) -> String {
        let mut out = String::new();
        self.write(&mut out, spaced);
        out
    }

    fn write(&self, out: &mut String, spaced: bool) {
        let sep = if spaced { " " } else { "" };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s, escaped) => write_json_string(s, *escaped, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(sep);
                    }
                    item.write(out, spaced);
                }
                out.push(']');
            }
            Json::Obj(members) => {
                out.push('{');
                out.push_str(sep);
                for (i, (key, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(sep);
                    }
                    write_json_string(key, false, out);
                    out.push(':');
                    out.push_str(sep);
                    item.write(out, spaced);
                }
                out.push_str(sep);
                out.push('}');
            }
        }
    }
}

fn write_json_string(s: &str, escape_all: bool, out: &mut String) {
    if escape_all {
        out.push('"');
        for unit in s.encode_utf16() {
            out.push_str(&format!("\\u{unit:04X}"));
        }
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

fn special_char() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).expect("control char")),
        prop::sample::select(vec![
            '"',
            '\\',
            '/',
            '\u{7f}',
            '\u{80}',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            '\u{fffd}',
            '\u{d7ff}',
            '\u{e000}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
            '\u{10ffff}',
            'é',
            'a',
            'Z',
            '0',
            ' ',
        ]),
    ]
}

/// Strings with any Unicode scalar value (so no lone surrogates), biased to what escapes.
fn json_string() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![3 => any::<char>(), 2 => special_char()], 0..12)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Object keys: strings, and keys JavaScript orders as array indices (or nearly does).
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => json_string(),
        1 => prop::sample::select(vec![
            "0", "1", "2", "9", "10", "01", "00", "-0", "-1", "1.0", "1e3", " 1", "4294967294",
            "4294967295", "4294967296", "99999999999", "a", "b", "__proto__", "constructor", "",
        ])
        .prop_map(str::to_string),
        1 => (0u32..1000).prop_map(|n| n.to_string()),
    ]
}

/// Number literals as JSON allows them: integers of every size, fractions, exponents,
/// values that overflow or underflow a double, and the known edge cases.
fn json_number() -> impl Strategy<Value = String> {
    let int_part = prop_oneof![Just("0".to_string()), "[1-9][0-9]{0,24}"];
    let general = (
        any::<bool>(),
        int_part,
        proptest::option::of("[0-9]{1,20}"),
        proptest::option::of((
            prop::sample::select(vec!["e", "E"]),
            prop::sample::select(vec!["", "+", "-"]),
            0u32..420,
        )),
    )
        .prop_map(|(negative, int, frac, exp)| {
            let mut s = String::new();
            if negative {
                s.push('-');
            }
            s.push_str(&int);
            if let Some(frac) = frac {
                s.push('.');
                s.push_str(&frac);
            }
            if let Some((e, sign, n)) = exp {
                s.push_str(&format!("{e}{sign}{n}"));
            }
            s
        });
    let finite = any::<f64>().prop_filter("finite", |f| f.is_finite());
    prop_oneof![
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => (any::<bool>(), "[1-9][0-9]{15,40}")
            .prop_map(|(neg, digits)| format!("{}{digits}", if neg { "-" } else { "" })),
        1 => (-(1i64 << 54)..(1i64 << 54)).prop_map(|n| n.to_string()),
        2 => finite.clone().prop_map(|f| format!("{f:?}")),
        1 => finite.clone().prop_map(|f| format!("{f}")),
        1 => finite.prop_map(|f| format!("{f:e}")),
        3 => general,
        2 => prop::sample::select(vec![
            "0", "-0", "0.0", "-0.0", "0e0", "-0E-0", "1", "1.0", "1.5", "0.1", "45.20", "1e21",
            "1E21", "1e+21", "1e20", "1e-7", "1e-6", "0.000001", "9007199254740991",
            "9007199254740992", "9007199254740993", "-9007199254740993", "18446744073709551615",
            "18446744073709551616", "123456789012345680000", "123456789012345678901",
            "100000000000000000000", "999999999999999900000", "1000000000000000000000",
            "1e308", "1.7976931348623157e308", "1.7976931348623158e308",
            "1.7976931348623159e308", "1e309", "1e400", "-1e400", "5e-324", "4.9e-324",
            "2.4703282292062327e-324", "2.4703282292062328e-324", "1e-400", "-1e-400",
            "2.2250738585072014e-308", "0.30000000000000004",
        ])
        .prop_map(str::to_string),
    ]
}

fn json_leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        4 => json_number().prop_map(Json::Num),
        3 => (json_string(), prop::bool::weighted(0.2)).prop_map(|(s, e)| Json::Str(s, e)),
    ]
}

fn json_value() -> impl Strategy<Value = Json> {
    json_leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Arr),
            prop::collection::vec((json_key(), inner), 0..6).prop_map(Json::Obj),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Json> {
    prop::collection::vec((json_key(), json_value()), 0..5).prop_map(Json::Obj)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the generator wrote invalid JSON ({e}): {text}"))
}

// ------------------------------------------------------------------ an independent oracle

/// Whether JavaScript's `JSON.stringify(JSON.parse(literal))` gives back a number that other
/// parsers read as the same value: for an integer literal the same digits (JavaScript writes
/// integers below 1e21 as their shortest round-trip digits padded with zeros, which is what
/// Rust's `Display` for f64 writes too), for any literal a finite double.
fn number_survives(literal: &str) -> bool {
    let Ok(f) = literal.parse::<f64>() else {
        return false;
    };
    if !f.is_finite() {
        return false;
    }
    if literal.contains(['.', 'e', 'E']) {
        return true;
    }
    f == 0.0 || (f.abs() < 1e21 && format!("{f}") == literal)
}

fn all_numbers_survive(value: &Value) -> bool {
    match value {
        Value::Number(n) => number_survives(&n.to_string()),
        Value::Array(items) => items.iter().all(all_numbers_survive),
        Value::Object(map) => map.values().all(all_numbers_survive),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// Equal as data: numbers as doubles, objects regardless of key order.
fn same_data(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_data(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_data(v, w)))
        }
        _ => a == b,
    }
}

// ------------------------------------------------------------------ (a) canonical JSON

#[test]
fn canonical_form_is_idempotent_or_refused() {
    let refused_count = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    run(
        "canonical",
        runner(2000),
        (json_value(), any::<bool>()),
        |(json, spaced)| {
            let text = json.text(spaced);
            let value = parse(&text);
            let checked = canonical::check_value(&value, &mut String::new());
            total.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(
                checked.is_ok(),
                all_numbers_survive(&value),
                "check_value disagrees with the oracle on {} ({:?})",
                text,
                checked
            );
            if let Err(refused) = checked {
                refused_count.fetch_add(1, Ordering::Relaxed);
                prop_assert!(!refused.reason.is_empty());
                return Ok(());
            }
            let out = canonical::to_vec(&value);
            let out_text = String::from_utf8(out.clone());
            prop_assert!(out_text.is_ok(), "not UTF-8: {:?} from {}", out, text);
            let out_text = out_text.unwrap();
            let again: Value = serde_json::from_str(&out_text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {out_text} from {text}")))?;
            prop_assert!(
                canonical::check_value(&again, &mut String::new()).is_ok(),
                "the canonical form is refused: {} from {}",
                out_text,
                text
            );
            let twice = String::from_utf8(canonical::to_vec(&again)).unwrap();
            prop_assert_eq!(&twice, &out_text, "not idempotent, from {}", text);
            prop_assert!(
                same_data(&value, &again),
                "the canonical form {} changed the data of {}",
                out_text,
                text
            );
            Ok(())
        },
    );
    assert_both_outcomes("canonical", refused_count, total);
}

/// Fails when a property saw (almost) only one outcome: its generator would then test one
/// side of the parser only. Skipped for tiny runs (PROPTEST_CASES below 100).
fn assert_both_outcomes(name: &str, one: AtomicUsize, total: AtomicUsize) {
    let (one, total) = (one.into_inner(), total.into_inner());
    if total >= 100 {
        assert!(
            one * 20 >= total && (total - one) * 20 >= total,
            "{name}: {one} of {total} cases had one outcome; the generator is lopsided"
        );
    }
}

/// The contract itself: the canonical form is a fixed point of JavaScript's
/// `JSON.stringify(JSON.parse(body))`, checked by node (installed by scripts/test-deps.sh)
/// on a sample of generated values, in one node process.
#[test]
fn canonical_form_is_a_fixed_point_of_javascripts_round_trip() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not on PATH ({node:?}): install Node.js >= 18, then run scripts/test-deps.sh"
    );
    let mut runner = runner(2000);
    let strategy = json_value();
    let mut inputs = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..cases(2000) {
        let json = strategy
            .new_tree(&mut runner)
            .expect("generate a value")
            .current();
        let text = json.text(false);
        let value = parse(&text);
        if canonical::check_value(&value, &mut String::new()).is_ok() {
            let out = String::from_utf8(canonical::to_vec(&value)).expect("UTF-8");
            assert!(!out.contains('\n'), "a raw newline in {out}");
            inputs.push(text);
            lines.push(out);
        }
    }
    assert!(
        lines.len() > 500,
        "too few canonicalizable samples: {}",
        lines.len()
    );
    let script = "let s='';process.stdin.setEncoding('utf8');process.stdin.on('data',d=>s+=d);\
                  process.stdin.on('end',()=>{const out=s.split('\\n').slice(0,-1)\
                  .map(l=>JSON.stringify(JSON.parse(l)));process.stdout.write(out.join('\\n')+'\\n');});";
    let mut child = Command::new("node")
        .args(["-e", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().expect("node stdin");
    let payload = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || {
        stdin.write_all(payload.as_bytes()).expect("write to node");
    });
    let output = child.wait_with_output().expect("node output");
    writer.join().expect("writer thread");
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("node writes UTF-8");
    let answers: Vec<&str> = stdout.split('\n').collect();
    assert_eq!(
        answers.len(),
        lines.len() + 1,
        "node answered another count"
    );
    for (i, (ours, js)) in lines.iter().zip(&answers).enumerate() {
        assert_eq!(
            ours, js,
            "JSON.stringify(JSON.parse(canonical)) differs from canonical for input {}",
            inputs[i]
        );
    }
}

// ------------------------------------------------------------------ (b) parse_event

const ALLOWED: [&str; 8] = [
    "request_id",
    "status",
    "result",
    "error",
    "metrics",
    "timestamp",
    "webhook_url",
    "webhook_secret",
];
const BODY_ORDER: [&str; 6] = [
    "request_id",
    "status",
    "result",
    "error",
    "metrics",
    "timestamp",
];
const ACCEPTED_AT: &str = "2025-06-01T12:00:00.000Z";

fn str_value(s: impl Strategy<Value = String>) -> impl Strategy<Value = Json> {
    s.prop_map(|s| Json::Str(s, false))
}

/// A plausible value for `field`, or any JSON value.
fn field_value(field: &'static str) -> BoxedStrategy<Json> {
    let plausible: BoxedStrategy<Json> = match field {
        "request_id" => prop_oneof![
            str_value("[a-zA-Z0-9_-]{0,12}"),
            str_value("x{250,260}"),
            str_value("é{127,129}"),
            str_value(json_string()),
        ]
        .boxed(),
        "status" => prop_oneof![
            str_value("[a-z_]{0,34}"),
            str_value(
                prop::sample::select(vec![
                    "completed",
                    "failed",
                    "Completed",
                    "job.completed",
                    "in progress",
                    "",
                ])
                .prop_map(str::to_string)
            ),
        ]
        .boxed(),
        "result" | "error" | "metrics" => json_object().boxed(),
        "timestamp" => str_value(
            prop::sample::select(vec![
                "2025-01-12T10:30:00Z",
                "2025-01-12T10:30:00.123456789+02:00",
                "2025-01-12t10:30:00z",
                "2025-01-12 10:30:00Z",
                "2025-01-12T10:30:00",
                "2025-02-30T10:30:00Z",
                "1985-04-12T23:20:50.52Z",
                "1990-12-31T23:59:60Z",
                "yesterday",
                "",
            ])
            .prop_map(str::to_string),
        )
        .boxed(),
        "webhook_url" => str_value(
            prop::sample::select(vec![
                "https://example.com/hook",
                "http://example.com/hook",
                "https://127.0.0.1/x",
                "https://10.0.0.1/x",
                "https://[::1]/x",
                "https://169.254.169.254/latest",
                "ftp://example.com/",
                "https:///nohost",
                "not a url",
                "",
            ])
            .prop_map(str::to_string),
        )
        .boxed(),
        "webhook_secret" => {
            prop_oneof![str_value("[a-z]{0,8}"), str_value("s{1023,1026}"),].boxed()
        }
        _ => json_value().boxed(),
    };
    prop_oneof![3 => plausible, 1 => json_value()].boxed()
}

/// Members of an event object: any mix of fields, or a valid core with a few more members
/// (which may or may not spoil it).
fn event_object() -> impl Strategy<Value = Vec<(String, Json)>> {
    prop_oneof![
        1 => event_members(0..9),
        1 => (valid_core(), event_members(0..3)).prop_map(|(mut core, extra)| {
            core.extend(extra);
            core
        }),
    ]
}

fn valid_core() -> impl Strategy<Value = Vec<(String, Json)>> {
    let timestamp =
        prop::sample::select(vec!["2025-01-12T10:30:00Z", "2025-01-12T10:30:00.5+01:00"]);
    (
        "[a-z0-9-]{1,16}",
        "[a-z_]{1,12}",
        proptest::option::of(json_object()),
        proptest::option::of(json_object()),
        proptest::option::of(timestamp),
    )
        .prop_map(|(request_id, status, result, metrics, timestamp)| {
            let mut members = vec![
                ("request_id".to_string(), Json::Str(request_id, false)),
                ("status".to_string(), Json::Str(status, false)),
            ];
            if let Some(result) = result {
                members.push(("result".to_string(), result));
            }
            if let Some(metrics) = metrics {
                members.push(("metrics".to_string(), metrics));
            }
            if let Some(t) = timestamp {
                members.push(("timestamp".to_string(), Json::Str(t.to_string(), false)));
            }
            members
        })
}

fn event_members(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<(String, Json)>> {
    let member = prop_oneof![
        12 => prop::sample::select(ALLOWED.to_vec())
            .prop_flat_map(|f| field_value(f).prop_map(move |v| (f.to_string(), v))),
        1 => (
            prop::sample::select(vec!["extra", "Request_id", "webhook", "event_id", "", "result.x"]),
            json_value(),
        )
            .prop_map(|(k, v)| (k.to_string(), v)),
    ];
    prop::collection::vec(member, count)
}

fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

fn valid_status(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Whether the event (without webhook fields) meets the documented rules.
fn valid_without_adhoc(map: &serde_json::Map<String, Value>) -> bool {
    let present = |k: &str| map.get(k).filter(|v| !v.is_null());
    map.keys().all(|k| ALLOWED.contains(&k.as_str()))
        && present("webhook_url").is_none()
        && present("webhook_secret").is_none()
        && matches!(map.get("request_id"), Some(Value::String(s)) if (1..=256).contains(&s.len()) && !s.contains('\0'))
        && matches!(map.get("status"), Some(Value::String(s)) if valid_status(s))
        && ["result", "error", "metrics"]
            .iter()
            .all(|f| match present(f) {
                None => true,
                Some(v @ Value::Object(_)) => all_numbers_survive(v),
                Some(_) => false,
            })
        && match present("timestamp") {
            None => true,
            Some(Value::String(s)) => is_rfc3339(s),
            Some(_) => false,
        }
}

#[test]
fn parse_event_answers_every_object_sensibly() {
    let accepted = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    run(
        "parse_event",
        runner(2000),
        (event_object(), any::<bool>(), any::<bool>()),
        |(members, allow_adhoc_targets, allow_http)| {
            let text = Json::Obj(members).text(false);
            let value = parse(&text);
            let map = value.as_object().expect("an object").clone();
            let rules = IngestRules {
                allow_adhoc_targets,
                allow_http,
                guard: Guard::default(),
            };
            total.fetch_add(1, Ordering::Relaxed);
            let unknown: Vec<&String> = map
                .keys()
                .filter(|k| !ALLOWED.contains(&k.as_str()))
                .collect();
            match parse_event(value.clone(), &rules, ACCEPTED_AT) {
                Err(e) => {
                    prop_assert!(!e.error.is_empty(), "empty error for {}", text);
                    let under_object = ["result", "error", "metrics"].iter().any(|f| {
                        map.contains_key(*f)
                            && (e.field == *f
                                || e.field.starts_with(&format!("{f}."))
                                || e.field.starts_with(&format!("{f}[")))
                    });
                    prop_assert!(
                        e.field.is_empty()
                            || map.contains_key(&e.field)
                            || ALLOWED.contains(&e.field.as_str())
                            || under_object,
                        "field {:?} names nothing of {}",
                        e.field,
                        text
                    );
                    if !unknown.is_empty() {
                        prop_assert!(
                            unknown.contains(&&e.field),
                            "unknown fields {:?} but the error names {:?}: {}",
                            unknown,
                            e.field,
                            e.error
                        );
                    }
                    prop_assert!(
                        !valid_without_adhoc(&map),
                        "a valid event was refused ({:?}: {}): {}",
                        e.field,
                        e.error,
                        text
                    );
                }
                Ok(event) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(unknown.is_empty(), "accepted unknown fields: {}", text);
                    let request_id = map.get("request_id").and_then(Value::as_str);
                    prop_assert!(
                        request_id
                            .is_some_and(|s| (1..=256).contains(&s.len()) && !s.contains('\0')),
                        "accepted request_id of {}",
                        text
                    );
                    let status = map.get("status").and_then(Value::as_str);
                    prop_assert!(
                        status.is_some_and(valid_status),
                        "accepted status of {}",
                        text
                    );
                    prop_assert_eq!(&event.event_type, &format!("job.{}", status.unwrap()));
                    let url = map.get("webhook_url").filter(|v| !v.is_null());
                    prop_assert_eq!(event.adhoc.is_some(), url.is_some(), "{}", text);
                    if let Some(adhoc) = &event.adhoc {
                        prop_assert!(allow_adhoc_targets, "adhoc accepted while disabled");
                        prop_assert!(
                            adhoc.url.starts_with("https://")
                                || (allow_http && adhoc.url.starts_with("http://")),
                            "accepted webhook_url {}",
                            adhoc.url
                        );
                        prop_assert!((1..=1024).contains(&adhoc.secret.len()));
                    }

                    let body_text = std::str::from_utf8(&event.body);
                    prop_assert!(body_text.is_ok(), "body is not UTF-8");
                    let body: Value = serde_json::from_slice(&event.body).map_err(|e| {
                        TestCaseError::fail(format!("body is not JSON ({e}): {body_text:?}"))
                    })?;
                    let body = body.as_object().expect("the body is an object");
                    let keys: Vec<&str> = body.keys().map(String::as_str).collect();
                    let expected: Vec<&str> = BODY_ORDER
                        .iter()
                        .copied()
                        .filter(|k| {
                            matches!(*k, "request_id" | "status" | "timestamp")
                                || map.get(*k).is_some_and(|v| !v.is_null())
                        })
                        .collect();
                    prop_assert_eq!(keys, expected, "body {:?} of {}", body_text, text);
                    prop_assert_eq!(body["request_id"].as_str(), request_id);
                    prop_assert_eq!(body["status"].as_str(), status);
                    let timestamp = map
                        .get("timestamp")
                        .and_then(Value::as_str)
                        .unwrap_or(ACCEPTED_AT);
                    prop_assert_eq!(body["timestamp"].as_str(), Some(timestamp));
                    prop_assert!(is_rfc3339(timestamp), "accepted timestamp {}", timestamp);
                    for field in ["result", "error", "metrics"] {
                        if let Some(v) = map.get(field).filter(|v| !v.is_null()) {
                            prop_assert!(v.is_object(), "accepted non-object {}", field);
                            prop_assert!(same_data(v, &body[field]), "{} changed", field);
                        }
                    }
                    let canonical = canonical::to_vec(&Value::Object(body.clone()));
                    prop_assert_eq!(
                        String::from_utf8_lossy(&canonical),
                        String::from_utf8_lossy(&event.body),
                        "the body is not canonical"
                    );
                }
            }
            Ok(())
        },
    );
    assert_both_outcomes("parse_event", accepted, total);
}

// ------------------------------------------------------------------ (c) live ingest

/// Request bodies: random bytes, broken and valid JSON, events with mutated bytes.
fn ingest_body() -> impl Strategy<Value = Vec<u8>> {
    let event_text = event_object().prop_map(|m| Json::Obj(m).text(false).into_bytes());
    let batch = prop::collection::vec(event_object(), 0..4).prop_map(|events| {
        Json::Arr(events.into_iter().map(Json::Obj).collect())
            .text(true)
            .into_bytes()
    });
    let mutated = (
        event_object(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(m, edits)| {
            let mut bytes = Json::Obj(m).text(false).into_bytes();
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        });
    let fixed = prop::sample::select(vec![
        "",
        "null",
        "[]",
        "{}",
        "[[]]",
        "\"x\"",
        "123",
        "{\"request_id\":\"\\ud800\",\"status\":\"completed\"}",
        "{\"request_id\":\"a\",\"status\":\"completed\",\"result\":{\"x\":\"\\udc00\\ud800\"}}",
        "{\"request_id\":\"a\",\"status\":\"completed\",\"metrics\":{\"n\":1e400}}",
        "{\"request_id\":\"a\",\"status\":\"completed\",\"metrics\":{\"n\":9007199254740993}}",
        "{\"request_id\":\"a\",\"status\":\"completed\"}{}",
        "\u{feff}{\"request_id\":\"a\",\"status\":\"completed\"}",
        "{\"request_id\":\"a\",\"status\":\"completed\",\"webhook_url\":\"http://127.0.0.1:9/x\"}",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    let nested = (1usize..3000, any::<bool>()).prop_map(|(depth, object)| {
        let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        let mut s = format!(
            "{{\"request_id\":\"deep\",\"status\":\"completed\",\"result\":{{\"r\":{}",
            open.repeat(depth)
        );
        s.push('1');
        s.push_str(&close.repeat(depth));
        s.push_str("}}");
        s.into_bytes()
    });
    let valid = prop::collection::vec(valid_core(), 1..3).prop_map(|events| {
        Json::Arr(events.into_iter().map(Json::Obj).collect())
            .text(false)
            .into_bytes()
    });
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..300),
        3 => event_text,
        3 => valid,
        2 => batch,
        4 => mutated,
        1 => fixed,
        1 => nested,
    ]
}

#[test]
fn ingest_answers_any_bytes_without_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(spawn_app(""));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://{}/v1/events", app.api);
    let accepted = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    run("ingest", runner(300), ingest_body(), |body| {
        total.fetch_add(1, Ordering::Relaxed);
        let (status, text) = runtime.block_on(async {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("request failed: {e}")))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| TestCaseError::fail(format!("body failed: {e}")))?;
            Ok::<_, TestCaseError>((status, text))
        })?;
        let input = String::from_utf8_lossy(&body);
        prop_assert!(
            (400..500).contains(&status) || status == 200 || status == 202,
            "status {} for {:?}: {}",
            status,
            input,
            text
        );
        let answer: Result<Value, _> = serde_json::from_str(&text);
        prop_assert!(answer.is_ok(), "not JSON ({}): {:?}", status, text);
        let answer = answer.unwrap();
        if status >= 400 {
            prop_assert!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{} without an error message: {}",
                status,
                text
            );
        } else {
            accepted.fetch_add(1, Ordering::Relaxed);
            let first = if answer.is_array() {
                &answer[0]
            } else {
                &answer
            };
            prop_assert!(first["event_id"].is_string(), "{}", text);
        }
        Ok(())
    });
    // Still up, and still accepting.
    runtime.block_on(async {
        let live = client
            .get(format!("http://{}/livez", app.metrics))
            .send()
            .await
            .expect("livez");
        assert_eq!(live.status().as_u16(), 200);
        let (status, body) = app
            .post(&serde_json::json!({ "request_id": "after-fuzz", "status": "completed" }))
            .await;
        assert_eq!(status, 202, "{body}");
    });
    assert_both_outcomes("ingest", accepted, total);
    drop(app);
    runtime.shutdown_timeout(Duration::from_secs(5));
}

// ------------------------------------------------------------------ (d) config

/// Keys and values of the configuration, real and not.
fn toml_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "listen",
        "tokens",
        "max_body_bytes",
        "max_batch",
        "max_header_bytes",
        "header_read_timeout",
        "idle_timeout",
        "body_read_timeout",
        "path",
        "retention",
        "cache_capacity_bytes",
        "retry_schedule",
        "timeout",
        "max_in_flight",
        "max_in_flight_per_subscription",
        "max_in_flight_adhoc",
        "retry_after_cap",
        "jitter",
        "header_prefix",
        "allow_adhoc_targets",
        "shutdown_grace",
        "allow",
        "allow_http",
        "id",
        "url",
        "secret",
        "events",
        "signature",
        "previous_secret",
        "previous_secret_expires",
        "bogus",
        "api.listen",
        "\"quoted key\"",
    ])
    .prop_map(str::to_string)
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "\"127.0.0.1:0\"",
            "\"0.0.0.0:8080\"",
            "\"[::1]:0\"",
            "\"nope\"",
            "\"\"",
            "0",
            "-1",
            "1",
            "18446744073709551616",
            "1.5",
            "-0.5",
            "nan",
            "inf",
            "true",
            "false",
            "[]",
            "[\"0s\", \"1m\"]",
            "[\"ten\"]",
            "\"10s\"",
            "\"0s\"",
            "\"forever\"",
            "[\"*\"]",
            "[\"job.completed\", \"completed\"]",
            "\"https://example.com/h\"",
            "\"http://127.0.0.1:1/\"",
            "\"ftp://x\"",
            "\"whsec_AAEC\"",
            "\"whsec_\"",
            "{ env = \"HOOKD_FUZZ_SURELY_UNSET\" }",
            "{ file = \"/nonexistent/hookd-fuzz\" }",
            "{ credential = \"x\" }",
            "{ secret = \"t\", scopes = [] }",
            "{ secret = \"t\", scopes = [\"ingest\"] }",
            "{ secret = \"t\", scopes = [\"root\"] }",
            "[{ secret = \"t\", scopes = [\"admin\"] }, \"u\"]",
            "[\"10.0.0.0/8\", \"::1\"]",
            "[\"not-a-net\"]",
            "\"standard\"",
            "\"both\"",
            "\"2026-12-01T00:00:00Z\"",
            "2026-12-01T00:00:00Z",
            "\"X-Abstrakt\"",
            "\"bad prefix\"",
            "\"unterminated",
            "[1, \"mixed\"]",
            "{",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (toml_key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => prop::sample::select(vec![
            "[api]",
            "[metrics]",
            "[storage]",
            "[delivery]",
            "[targets]",
            "[[subscription]]",
            "[bogus]",
            "[api",
            "[[api]]",
            "[subscription]",
            "",
            "# comment",
            "=",
            "key =",
        ])
        .prop_map(str::to_string),
        1 => "[^\n]{0,20}",
    ]
}

/// The example with its subscription uncommented (and literal secrets): a valid file that
/// uses every subscription key, to mutate.
fn example_with_subscription() -> String {
    let mut out = String::new();
    let mut in_subscription = false;
    for line in EXAMPLE.lines() {
        if line == "# [[subscription]]" {
            in_subscription = true;
        }
        if in_subscription && !line.starts_with("# #") {
            if let Some(rest) = line.strip_prefix("# ") {
                out.push_str(rest);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out.replace(
        "{ env = \"ACME_WEBHOOK_SECRET\" }",
        "\"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"",
    )
    .replace(
        "{ env = \"ACME_WEBHOOK_SECRET_OLD\" }",
        "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    SetValue(prop::sample::Index, String),
    Insert(prop::sample::Index, String),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Delete),
        2 => any::<Index>().prop_map(Mutation::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        4 => (any::<Index>(), toml_value()).prop_map(|(i, v)| Mutation::SetValue(i, v)),
        2 => (any::<Index>(), toml_line()).prop_map(|(i, l)| Mutation::Insert(i, l)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(base: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        match m {
            Mutation::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            Mutation::Duplicate(i) => {
                let i = i.index(lines.len());
                lines.insert(i, lines[i].clone());
            }
            Mutation::Swap(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Mutation::SetValue(i, value) => {
                // The i-th `key = value` line, if any.
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&n| !lines[n].starts_with('#') && lines[n].contains(" = "))
                    .collect();
                if !assignments.is_empty() {
                    let n = assignments[i.index(assignments.len())];
                    let key = lines[n].split(" = ").next().unwrap_or("").to_string();
                    lines[n] = format!("{key} = {value}");
                }
            }
            Mutation::Insert(i, line) => {
                let i = i.index(lines.len() + 1);
                lines.insert(i, line.clone());
            }
            Mutation::Truncate(i) => {
                let text = lines.join("\n");
                let mut at = i.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                lines = text[..at].lines().map(str::to_string).collect();
            }
        }
    }
    lines.join("\n") + "\n"
}

/// What every answer of `Config::from_toml` must satisfy; counts the valid files in `valid`.
fn check_config_answer(text: &str, valid: &AtomicUsize) -> Result<(), TestCaseError> {
    let line_count = text.lines().count().max(1) + 1;
    match Config::from_toml(text, "fuzz.toml") {
        Ok(config) => {
            valid.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                config.api.listen.ip().is_loopback() || !config.api.tokens.is_empty(),
                "an open API off loopback was accepted: {}",
                text
            );
            for token in &config.api.tokens {
                prop_assert!(!token.scopes.is_empty(), "a token without scopes: {}", text);
                prop_assert!(!token.secret.expose().is_empty());
            }
            let ids: HashSet<&str> = config.subscriptions.iter().map(|s| s.id.as_str()).collect();
            prop_assert_eq!(ids.len(), config.subscriptions.len(), "duplicate ids");
            prop_assert!((0.0..=1.0).contains(&config.delivery.jitter));
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            prop_assert!(!diagnostics.is_empty(), "an error without diagnostics");
            for d in &diagnostics {
                prop_assert!(
                    (1..=line_count).contains(&d.line),
                    "line {} outside 1..={} in {:?} for {}",
                    d.line,
                    line_count,
                    d,
                    text
                );
                prop_assert!(d.column >= 1, "column 0: {:?}", d);
                prop_assert!(
                    !d.key.trim().is_empty() || !d.message.trim().is_empty(),
                    "neither key nor message: {:?} for {}",
                    d,
                    text
                );
                prop_assert!(!d.message.trim().is_empty(), "no message: {:?}", d);
                prop_assert_eq!(&d.file, "fuzz.toml");
            }
        }
        Err(other) => prop_assert!(false, "unexpected error kind {:?}", other),
    }
    Ok(())
}

#[test]
fn config_parsing_never_panics_and_errors_have_a_place() {
    // The bases themselves are valid: the mutations start from working files.
    let rich = example_with_subscription();
    let config = Config::from_toml(&rich, "rich.toml")
        .unwrap_or_else(|e| panic!("the uncommented example is invalid:\n{e}\n{rich}"));
    assert_eq!(config.subscriptions.len(), 1);
    Config::from_toml(EXAMPLE, "example.toml").expect("the example is valid");

    run(
        "config-text",
        runner(1000),
        prop_oneof![
            2 => prop::collection::vec(toml_line(), 0..12).prop_map(|l| l.join("\n")),
            1 => any::<String>(),
        ],
        |text| check_config_answer(&text, &AtomicUsize::new(0)),
    );
    let bases = vec![EXAMPLE.to_string(), rich];
    let (valid, total) = (AtomicUsize::new(0), AtomicUsize::new(0));
    run(
        "config-mutations",
        runner(1000),
        (
            prop::sample::select(bases),
            prop::collection::vec(mutation(), 1..5),
        ),
        |(base, mutations)| {
            total.fetch_add(1, Ordering::Relaxed);
            check_config_answer(&mutate(&base, &mutations), &valid)
        },
    );
    assert_both_outcomes("config-mutations", valid, total);
}

use std::collections::HashSet;
use std::time::Duration;

use super::raw::RawSubscriptions;
use super::*;

fn err(text: &str) -> Vec<Diagnostic> {
    match Config::from_toml(text, "t.toml") {
        Err(ConfigError::Invalid(d)) => d,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn example_sets_every_key_and_is_valid() {
    let raw: RawConfig = toml::from_str(EXAMPLE).unwrap();
    assert!(
        raw.api.listen.is_some()
            && raw.api.tokens.is_some()
            && raw.api.max_body_bytes.is_some()
            && raw.api.max_batch.is_some()
            && raw.api.max_header_bytes.is_some()
            && raw.api.header_read_timeout.is_some()
            && raw.api.body_read_timeout.is_some()
    );
    assert!(raw.metrics.listen.is_some());
    let t = &raw.traces;
    assert!(
        t.otlp_endpoint.is_some()
            && t.otlp_headers.is_some()
            && t.sample_ratio.is_some()
            && t.service_name.is_some()
            && t.traceparent.is_some()
    );
    assert!(raw.targets.allow.is_some() && raw.targets.allow_http.is_some());
    assert!(
        raw.storage.path.is_some()
            && raw.storage.retention.is_some()
            && raw.storage.cache_capacity_bytes.is_some()
            && raw.storage.max_pending.is_some()
            && raw.storage.min_free_bytes.is_some()
    );
    let d = &raw.delivery;
    assert!(
        d.retry_schedule.is_some()
            && d.timeout.is_some()
            && d.max_in_flight.is_some()
            && d.max_in_flight_per_subscription.is_some()
            && d.max_in_flight_adhoc.is_some()
            && d.retry_after_cap.is_some()
            && d.jitter.is_some()
            && d.header_prefix.is_some()
            && d.allow_adhoc_targets.is_some()
            && d.shutdown_grace.is_some()
            && d.breaker_failures.is_some()
            && d.breaker_probe_interval.is_some()
            && d.disable_after.is_some()
            && d.disable_after_failures.is_some()
            && d.adhoc_rate_limit.is_some()
    );
    let config = Config::from_toml(EXAMPLE, "example").unwrap();
    assert_eq!(
        config.delivery.policy.retry_schedule,
        [0, 60, 300, 900, 3600].map(Duration::from_secs)
    );
    assert_eq!(config.delivery.policy.timeout, Duration::from_secs(10));
    assert_eq!(config.delivery.header_prefix, "X-Abstrakt");
}

#[test]
fn unknown_key_is_an_error_with_line_and_key() {
    let d = err("[api]\nlisten = \"127.0.0.1:1\"\n\n[delivery]\ntimeout = \"1s\"\nretries = 3\n");
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].key.as_str()), (6, "delivery.retries"));
    assert!(
        d[0].message.contains("unknown field `retries`"),
        "{}",
        d[0].message
    );
}

#[test]
fn bad_duration_names_its_line() {
    let d = err("[delivery]\n\ntimeout = \"ten seconds\"\n");
    assert_eq!((d[0].line, d[0].key.as_str()), (3, "delivery.timeout"));
    assert!(
        d[0].message.contains("invalid duration"),
        "{}",
        d[0].message
    );
}

#[test]
fn duration_errors_show_the_accepted_form() {
    let d = err("[delivery]\ntimeout = \"10 seconds please\"\n");
    assert!(
        d[0].message.contains("\"10s\"") && d[0].message.contains("\"1h 30m\""),
        "{}",
        d[0].message
    );
    let d = err("[delivery]\ntimeout = 10\n");
    assert_eq!((d[0].line, d[0].key.as_str()), (2, "delivery.timeout"));
    assert!(
        d[0].message.contains("a number needs a unit, e.g. \"10s\""),
        "{}",
        d[0].message
    );
    let d = err("[delivery]\nretry_schedule = [\"0s\", 60]\n");
    assert!(d[0].message.contains("\"60s\""), "{}", d[0].message);
}

#[test]
fn every_semantic_error_is_reported() {
    let text = r#"
[api]
listen = "0.0.0.0:8080"

[[subscription]]
id = "a"
url = "ftp://x"
secret = { env = "HOOKD_TEST_SURELY_UNSET_VAR" }
events = ["completed"]

[[subscription]]
id = "a"
url = "https://example.invalid/"
secret = "s"
events = ["*"]
"#;
    let d = err(text);
    let keys: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            (3, "api.listen"),
            (7, "subscription[0].url"),
            (8, "subscription[0].secret"),
            (9, "subscription[0].events"),
            (12, "subscription[1].id"),
        ]
    );
    assert!(d[2].message.contains("HOOKD_TEST_SURELY_UNSET_VAR"));
}

#[test]
fn subscription_overrides_and_secret_sources() {
    let dir = std::env::temp_dir().join(format!("hookd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s"), "from-file\n").unwrap();
    let text = format!(
        "[[subscription]]\nid = \"x\"\nurl = \"https://example.invalid/h\"\nsecret = {{ file = \"{}\" }}\nevents = [\"job.completed\"]\nretry_schedule = [\"0s\", \"200ms\"]\ntimeout = \"2s\"\n",
        dir.join("s").display()
    );
    let config = Config::from_toml(&text, "t").unwrap();
    let s = &config.subscriptions[0];
    assert_eq!(s.secret.expose(), "from-file");
    assert_eq!(
        format!("{:?} {}", s.secret, s.secret),
        "[REDACTED] [REDACTED]"
    );
    assert_eq!(
        s.policy.retry_schedule,
        [Duration::ZERO, Duration::from_millis(200)]
    );
    assert_eq!(s.policy.timeout, Duration::from_secs(2));
    assert!(s.events.matches("job.completed") && !s.events.matches("job.failed"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn standard_signatures_need_whsec_secrets_and_rotation_expires() {
    let d = err("[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"plain\"\nevents = [\"*\"]\nsignature = \"standard\"\n");
    assert_eq!(
        (d[0].line, d[0].key.as_str()),
        (4, "subscription[0].secret")
    );
    let d = err("[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"whsec_AAEC\"\nevents = [\"*\"]\nprevious_secret = \"whsec_AwQF\"\n");
    assert_eq!(d[0].key, "subscription[0].previous_secret");
    assert!(d[0].message.contains("previous_secret_expires"));

    let text = "[[subscription]]\nid = \"a\"\nurl = \"https://example.invalid/\"\nsecret = \"whsec_AAEC\"\nevents = [\"*\"]\nsignature = \"both\"\nprevious_secret = \"whsec_AwQF\"\nprevious_secret_expires = \"2026-12-01T00:00:00Z\"\n";
    let config = Config::from_toml(text, "t").unwrap();
    let s = &config.subscriptions[0];
    let expires = s.previous_secret.as_ref().unwrap().expires_ms;
    let during = s.signing_keys(expires - 1);
    // X-Abstrakt-Signature carries one signature: the previous secret's until the end.
    assert_eq!(during.abstrakt.as_deref(), Some("whsec_AwQF"));
    assert_eq!(during.standard, [vec![0, 1, 2], vec![3, 4, 5]]);
    let after = s.signing_keys(expires);
    assert_eq!(after.abstrakt.as_deref(), Some("whsec_AAEC"));
    assert_eq!(after.standard, [vec![0, 1, 2]]);
}

#[test]
fn the_subscription_table_takes_the_fields_defined_once() {
    let message = toml::from_str::<RawSubscriptions>("[[subscription]]\nnot_a_field = 1\n")
        .unwrap_err()
        .message()
        .to_string();
    let (_, listed) = message
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("{message}"));
    let table: HashSet<&str> = listed.split(", ").map(|n| n.trim_matches('`')).collect();
    let defined: HashSet<&str> = SUBSCRIPTION_FIELDS
        .iter()
        .filter(|f| f.home == Home::Table)
        .map(|f| f.name)
        .collect();
    assert_eq!(table, defined);
}

#[test]
fn each_subscription_field_is_defined_once() {
    let names: HashSet<&str> = SUBSCRIPTION_FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(names.len(), SUBSCRIPTION_FIELDS.len());
    assert!(SubscriptionField::BREAKER
        .iter()
        .all(|f| SUBSCRIPTION_FIELDS.contains(f) && f.changeable()));
    let fixed: Vec<&str> = SUBSCRIPTION_FIELDS
        .iter()
        .filter(|f| !f.changeable())
        .map(|f| f.name)
        .collect();
    assert_eq!(
        fixed,
        ["id", "secret", "previous_secret", "previous_secret_expires"]
    );
    assert_eq!(
        field_names(SUBSCRIPTION_FIELDS.iter().filter(|f| f.at_creation())),
        "id, name, description, owner, url, secret, events, retry_schedule, timeout, max_in_flight, signature, headers, rate_limit, breaker_failures, breaker_probe_interval, disable_after, disable_after_failures"
    );
    assert_eq!(
        SubscriptionField::named("timeout"),
        Some(&SubscriptionField::TIMEOUT)
    );
}

#[test]
fn stored_and_operator_subscriptions_name_their_keys_by_origin() {
    let config = Config::from_toml(
        "[operator]\nurl = \"https://example.invalid/ops\"\nsecret = \"s\"\nevents = [\"job.completed\"]\n",
        "t",
    );
    let Err(ConfigError::Invalid(d)) = config else {
        panic!("a job event in [operator] is refused");
    };
    assert_eq!(d[0].key, "operator.events");
    let config = Config::from_toml(EXAMPLE, "example").unwrap();
    let taken = HashSet::new();
    let stored = "[[subscription]]\nid = \"operator\"\nurl = \"ftp://x\"\nsecret = \"s\"\nevents = [\"*\"]\n";
    let d = config.subscription_from_toml(stored, &taken).unwrap_err();
    let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["subscription[0].id", "subscription[0].url"]);
}

#[test]
fn a_subscriptions_name_and_description_are_one_line_and_bounded() {
    let config = Config::from_toml(EXAMPLE, "example").unwrap();
    let table = |extra: &str| {
        format!("[[subscription]]\nid = \"s\"\nurl = \"https://example.invalid/h\"\nsecret = \"s\"\nevents = [\"*\"]\n{extra}")
    };
    let taken = HashSet::new();
    let fine = config
        .subscription_from_toml(
            &table("name = \"Nightly builds\"\ndescription = \"Two\\nlines\"\n"),
            &taken,
        )
        .unwrap();
    assert_eq!(fine.name.as_deref(), Some("Nightly builds"));
    assert_eq!(fine.description.as_deref(), Some("Two\nlines"));
    assert_eq!(fine.label(), "Nightly builds (s)");
    let blank = config
        .subscription_from_toml(&table("name = \"  \"\n"), &taken)
        .unwrap();
    assert_eq!((blank.label(), blank.name), ("s".to_string(), None));
    for (extra, key, says) in [
        (
            format!("name = \"{}\"", "n".repeat(101)),
            "name",
            "at most 100",
        ),
        ("name = \"a\\nb\"".to_string(), "name", "one line"),
        (
            "name = \"a\\u001bb\"".to_string(),
            "name",
            "control character",
        ),
        (
            format!("description = \"{}\"", "d".repeat(1001)),
            "description",
            "at most 1000",
        ),
        (
            "description = \"a\\u0000\"".to_string(),
            "description",
            "control character",
        ),
    ] {
        let errors = config
            .subscription_from_toml(&table(&extra), &taken)
            .unwrap_err();
        assert_eq!(errors[0].key, format!("subscription[0].{key}"), "{extra}");
        assert!(
            errors[0].message.contains(says),
            "{extra}: {}",
            errors[0].message
        );
    }
}

#[test]
fn the_logo_and_the_accent_are_checked_naming_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let svg = file("logo.svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    let ui = |extra: &str| format!("{EXAMPLE}\n").replace("[ui]\n", &format!("[ui]\n{extra}\n"));
    let config =
        Config::from_toml(&ui(&format!("logo = {svg:?}\naccent = \"#0B57D0\"")), "t").unwrap();
    let logo = config.ui.logo.expect("a logo");
    assert_eq!(logo.content_type, "image/svg+xml");
    assert_eq!(config.ui.accent.as_deref(), Some("#0b57d0"));
    let big = file(
        "big.png",
        &[b"\x89PNG\r\n\x1a\n".as_slice(), &vec![0; 300 * 1024]].concat(),
    );
    let gif = file("logo.gif", b"GIF89a");
    let missing = dir.path().join("none.png").display().to_string();
    for (extra, says) in [
        (format!("logo = {big:?}"), "at most 262144"),
        (format!("logo = {gif:?}"), "neither a PNG nor an SVG"),
        (format!("logo = {missing:?}"), "cannot read the logo file"),
        ("accent = \"red\"".to_string(), "#rrggbb or #rgb"),
        ("accent = \"#05c;}\"".to_string(), "#rrggbb or #rgb"),
    ] {
        let d = err(&ui(&extra));
        let key = if extra.starts_with("logo") {
            "ui.logo"
        } else {
            "ui.accent"
        };
        assert_eq!(d[0].key, key, "{extra}");
        assert!(d[0].message.contains(says), "{extra}: {}", d[0].message);
    }
}

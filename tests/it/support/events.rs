//! Builders for the tests of ingest, retries and isolation: event bodies, config snippets, an
//! app with `[api]` overrides, waits on the store, metric lookups.

use std::time::Duration;

use hookd::store::{Delivery, DeliveryState};
use serde_json::{json, Value};

use super::app::{spawn_app_full, TestApp};
use super::wait_until;

/// The smallest valid event.
pub fn event(request_id: &str, status: &str) -> Value {
    json!({ "request_id": request_id, "status": status })
}

/// A `[delivery]` table with `retry_schedule` set to `schedule` and `extra` keys after it.
pub fn delivery_toml(schedule: &[&str], extra: &str) -> String {
    let schedule: Vec<String> = schedule.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[delivery]\nretry_schedule = [{}]\n{extra}\n\n",
        schedule.join(", ")
    )
}

/// One `[[subscription]]` table; `extra` adds keys such as `timeout = "300ms"`.
pub fn subscription_toml(
    id: &str,
    url: &str,
    secret: &str,
    events: &[&str],
    extra: &str,
) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[[subscription]]\nid = {id:?}\nurl = {url:?}\nsecret = {secret:?}\nevents = [{}]\n{extra}\n\n",
        events.join(", ")
    )
}

/// Like `spawn_app`, with extra keys in the `[api]` table (`api_keys`, e.g.
/// `max_body_bytes = 1024`), which `test_config` does not allow.
pub async fn spawn_app_with_api(api_keys: &str, extra: &str) -> TestApp {
    spawn_app_full(|store| {
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n{api_keys}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {store}\n\n{extra}\n"
        )
    })
    .await
}

/// The ids of an event's deliveries, from the store.
pub async fn delivery_ids(app: &TestApp, event_id: &str) -> Vec<String> {
    app.shared
        .store
        .event_meta(event_id)
        .await
        .expect("read event meta")
        .unwrap_or_else(|| panic!("event {event_id} is not stored"))
        .deliveries
}

/// Waits until delivery `id` is in `state`; returns the record.
pub async fn wait_for_state(
    app: &TestApp,
    id: &str,
    state: DeliveryState,
    deadline: Duration,
) -> Delivery {
    wait_until(
        &format!("delivery {id} to be {state:?}"),
        deadline,
        || async {
            let delivery = app
                .shared
                .store
                .delivery(id)
                .await
                .expect("read delivery")?;
            (delivery.state == state).then_some(delivery)
        },
    )
    .await
}

/// Waits until no delivery is queued or in flight: every one is delivered or dead.
pub async fn wait_idle(app: &TestApp, deadline: Duration) {
    wait_until("every delivery to finish", deadline, || async {
        let stats = app
            .shared
            .store
            .pending_stats(hookd::scheduler::now_ms())
            .await
            .expect("pending stats");
        (stats.ready == 0 && stats.scheduled == 0 && stats.in_flight == 0).then_some(())
    })
    .await
}

/// A loopback URL on which nothing listens: connecting is refused.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hook")
}

/// The `/metrics` text of the metrics listener at `addr`.
pub async fn scrape(client: &reqwest::Client, addr: std::net::SocketAddr) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body")
}

/// The sum of every series of metric `name` whose labels include all of `labels`, from the
/// Prometheus text format; `None` when no series matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let all = labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if all {
            let value: f64 = value.parse().expect("metric value is a number");
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

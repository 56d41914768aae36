//! `spawn_app`: hookd in-process on port 0 with a fresh data directory.

use std::net::SocketAddr;
use std::sync::Arc;

use hookd::state::Shared;
use hookd::{Application, Config};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::admin::Admin;

pub struct TestApp {
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub shared: Arc<Shared>,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Kept so that a restart can reopen the same store; removed on drop.
    pub dir: Arc<tempfile::TempDir>,
    pub config_text: String,
}

/// A config for tests: loopback listeners on port 0, the store in `dir`, plus `extra` TOML
/// (subscriptions, `[delivery]` keys...). `extra` must not repeat the `[api]`, `[metrics]` or
/// `[storage]` tables. With `HOOKD_TEST_ENGINE=postgres` the store is a database of the
/// test's own (`support::engine`).
pub fn test_config(dir: &std::path::Path, extra: &str) -> String {
    super::engine::apply(&format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n{extra}\n{}",
        dir.join("db").display().to_string(),
        super::LOOPBACK_TARGETS
    ))
}

pub async fn spawn_app(extra: &str) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let text = test_config(dir.path(), extra);
    start(dir, text).await
}

/// Like [`spawn_app`], for tests that set `[api]` or `[storage]` keys: `full` gets the store
/// path (a TOML string literal) and returns the whole file, listeners included (the test
/// engine's keys are added to its `[storage]` table).
pub async fn spawn_app_full(full: impl FnOnce(&str) -> String) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let path = format!("{:?}", dir.path().join("db").display().to_string());
    let text = full(&path) + super::LOOPBACK_TARGETS;
    start(dir, text).await
}

/// Like [`spawn_app`] but with the target guard as shipped: loopback is refused.
pub async fn spawn_app_guarded(extra: &str) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let text = test_config(dir.path(), extra).replace(super::LOOPBACK_TARGETS, "");
    start(dir, text).await
}

/// Like [`spawn_app`], with the clock hookd decides by.
pub async fn spawn_app_with_clock(extra: &str, clock: Arc<dyn hookd::clock::Clock>) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let text = test_config(dir.path(), extra);
    start_with_clock(dir, text, Some(clock)).await
}

async fn start(dir: Arc<tempfile::TempDir>, config_text: String) -> TestApp {
    start_with_clock(dir, config_text, None).await
}

async fn start_with_clock(
    dir: Arc<tempfile::TempDir>,
    config_text: String,
    clock: Option<Arc<dyn hookd::clock::Clock>>,
) -> TestApp {
    // Every in-process hookd comes here, whoever wrote its config: the test engine's keys.
    let config_text = super::engine::apply(&config_text);
    let config = Config::from_toml(&config_text, "test.toml")
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{config_text}"));
    let app = match clock {
        Some(clock) => Application::build_with_clock(config, clock).await,
        None => Application::build(config).await,
    }
    .expect("app builds");
    let (api, metrics, shared) = (app.api_addr(), app.metrics_addr(), app.shared());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        api,
        metrics,
        shared,
        client: super::http_client(),
        shutdown,
        handle: Some(handle),
        dir,
        config_text,
    }
}

impl TestApp {
    /// Posts `body` (any JSON text) to `/v1/events`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("http://{}/v1/events", self.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("ingest request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("ingest body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, event: &Value) -> (u16, Value) {
        self.post_raw(event.to_string()).await
    }

    /// The admin API of this hookd, on its client.
    pub fn admin(&self) -> Admin {
        Admin::new(self.api, self.client.clone())
    }

    pub async fn metrics_text(&self) -> String {
        super::events::scrape(&self.client, self.metrics).await
    }

    /// Stops hookd gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("app task").expect("app stops cleanly");
        }
    }

    /// Stops hookd, then starts it again on the same store (new ports).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let dir = self.dir.clone();
        let text = self.config_text.clone();
        drop(self);
        start(dir, text).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

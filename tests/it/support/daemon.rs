//! hookd as a daemon that the fault tests kill and start again: the real binary, on two
//! loopback ports chosen once so that it comes back on the same addresses after every SIGKILL
//! (clients keep one URL), its store in `dir/db`, and an optional environment
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), and its admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::admin::Admin;
use super::process::{free_ports, hookd_command, wait_ready, ChildGuard};
use super::LOOPBACK_TARGETS;

/// How long a restart retries when a port is still held (e.g. a client socket of another test
/// that happened to get it as its ephemeral port while hookd was down) before failing.
const PORT_RETRY: Duration = Duration::from_secs(5);

pub struct Daemon {
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: PathBuf,
    config: PathBuf,
    storage_keys: String,
    env: Vec<(String, String)>,
    process: Option<ChildGuard>,
    client: reqwest::Client,
}

impl Daemon {
    /// Picks the ports and writes `dir/hookd.toml`: the listeners, `[storage] path = dir/db`
    /// plus `storage_keys` (and the test engine's, `support::engine`), then `extra`, then the
    /// target guard opened for loopback. Starts nothing.
    pub fn new(dir: &Path, storage_keys: &str, extra: &str) -> Daemon {
        let ports = free_ports(2);
        let daemon = Daemon {
            api: ([127, 0, 0, 1], ports[0]).into(),
            metrics: ([127, 0, 0, 1], ports[1]).into(),
            dir: dir.to_path_buf(),
            config: dir.join("hookd.toml"),
            storage_keys: storage_keys.to_string(),
            env: Vec::new(),
            process: None,
            client: super::client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        daemon.write_config(extra);
        daemon
    }

    /// Adds an environment variable for every start.
    pub fn env(mut self, name: &str, value: &str) -> Daemon {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Rewrites the file with the same listeners and store and a new `extra` (for a SIGHUP or
    /// the next start).
    pub fn write_config(&self, extra: &str) {
        let text = super::engine::apply(&format!(
            "[api]\nlisten = \"{}\"\n\n[metrics]\nlisten = \"{}\"\n\n[storage]\npath = {:?}\n{}\n\n{extra}\n{LOOPBACK_TARGETS}",
            self.api,
            self.metrics,
            self.dir.join("db").display().to_string(),
            self.storage_keys,
        ));
        std::fs::write(&self.config, text).expect("write hookd.toml");
    }

    /// Starts the binary and returns at once (it may not listen yet).
    pub fn spawn(&mut self) {
        assert!(self.process.is_none(), "hookd is already running");
        let mut command = hookd_command(["run", "--config"]);
        command.arg(&self.config).current_dir(&self.dir);
        command.env("RUST_LOG", "info");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        self.process = Some(ChildGuard::spawn("hookd", command));
    }

    /// Starts the binary and waits until `/readyz` answers 200.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// Waits until the running hookd answers 200 on `/readyz`. If it exited because a port
    /// was taken, starts it again for up to [`PORT_RETRY`], then fails naming the port.
    pub async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let process = self.process.as_mut().expect("hookd was started");
            match wait_ready(process, self.metrics).await {
                Ok(()) => return,
                Err(stderr) if stderr.contains("cannot listen") => {
                    assert!(
                        started.elapsed() < PORT_RETRY,
                        "hookd cannot bind {} / {} again after a restart: another process took \
                         the port while hookd was down (rare; rerun the test). stderr:\n{stderr}",
                        self.api,
                        self.metrics
                    );
                    self.process = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.spawn();
                }
                Err(stderr) => panic!("hookd did not become ready; stderr:\n{stderr}"),
            }
        }
    }

    /// The running process.
    pub fn process(&mut self) -> &mut ChildGuard {
        self.process.as_mut().expect("hookd is running")
    }

    /// Sends a signal by name (`HUP`, `STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        self.process
            .as_ref()
            .expect("hookd is running")
            .signal(signal);
    }

    /// SIGKILL, then reaps the process; returns its stderr.
    pub fn kill(&mut self) -> String {
        let mut process = self.process.take().expect("hookd is running");
        let status: ExitStatus = process.kill();
        assert!(!status.success(), "SIGKILL ends hookd: {status}");
        process.stderr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn events_url(&self) -> String {
        self.url("/v1/events")
    }

    /// The admin API of this hookd (the same address after every restart).
    pub fn admin(&self) -> Admin {
        Admin::new(self.api, self.client.clone())
    }

    /// Waits until no delivery is scheduled or in flight: every one is delivered or dead.
    /// Panics when for `deadline` hookd made no attempt and finished no delivery (stuck); a
    /// backlog that is being worked off is waited for, at whatever pace the engine takes it.
    pub async fn wait_settled(&self, deadline: Duration) {
        let mut progress = Instant::now();
        let mut last = None;
        loop {
            let admin = self.admin();
            let scheduled = admin.deliveries("status=scheduled").await.len();
            let in_flight = admin.deliveries("status=in_flight").await.len();
            if scheduled + in_flight == 0 {
                return;
            }
            let attempts = super::events::metric(
                &super::events::scrape(&self.client, self.metrics).await,
                "hookd_delivery_attempts_total",
                &[],
            );
            let now = Some((scheduled + in_flight, attempts.map(f64::to_bits)));
            if now != last {
                last = now;
                progress = Instant::now();
            }
            assert!(
                progress.elapsed() < deadline,
                "for {deadline:?} hookd made no attempt and finished no delivery: {scheduled} \
                 are still scheduled and {in_flight} in flight: stuck"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

//! Child processes for the tests: the seed's Express and Flask receivers, and the real `hookd`
//! binary. Every child is owned by a [`ChildGuard`], which kills and reaps it on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process, killed (SIGKILL) and reaped when dropped. Its stdout lines and its stderr
/// are collected by reader threads; the stderr tail is printed if the test panics.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl ChildGuard {
    /// Waits (up to 15 s) until the child prints its port, which `port_of` reads from its
    /// output; panics with its stderr if it exits first or never does.
    pub async fn wait_for_port(
        &mut self,
        name: &str,
        port_of: impl Fn(&ChildGuard) -> Option<u16>,
    ) -> u16 {
        let start = Instant::now();
        loop {
            if let Some(port) = port_of(self) {
                return port;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening; stderr:\n{}",
                    self.stderr_tail(4000)
                );
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!(
                    "{name} did not listen within 15s; stderr:\n{}",
                    self.stderr_tail(4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// [`ChildGuard::wait_for_port`] for the test receivers' `LISTENING <port>` line.
    pub async fn wait_listening(&mut self, name: &str) -> u16 {
        self.wait_for_port(name, |process| {
            process
                .stdout_lines()
                .iter()
                .find_map(|l| l.strip_prefix("LISTENING ")?.trim().parse().ok())
        })
        .await
    }

    /// Spawns `command` with piped stdout and stderr.
    pub fn spawn(name: &str, mut command: Command) -> ChildGuard {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let lines = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        if let Some(mut err) = child.stderr.take() {
            let text = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => text
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            });
        }
        ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The last `n` bytes of stderr, for failure messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = self.stderr();
        let mut start = text.len().saturating_sub(n);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait on a child"))
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...) with the `kill` command. `STOP` returns once
    /// every thread of the process has stopped: `kill` returns when the signal is sent, and on
    /// a busy machine the other threads may run (and answer a request) until the one that took
    /// the signal is scheduled and stops them.
    pub fn signal(&self, signal: &str) {
        let pid = self.id().to_string();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.clone()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
        if signal == "STOP" {
            let start = Instant::now();
            while !all_threads_stopped(&pid) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{} did not stop within 10 s of SIGSTOP",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// SIGKILL, then reaps the child.
    pub fn kill(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("child still owned");
        let _ = child.kill();
        child.wait().expect("wait for a killed child")
    }

    /// Waits for the child to exit, panicking (with its stderr) after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if start.elapsed() > deadline {
                panic!(
                    "{} did not exit within {deadline:?}; stderr tail:\n{}",
                    self.name,
                    self.stderr_tail(4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} stderr (tail) ----\n{}",
                self.name,
                self.stderr_tail(6000)
            );
        }
    }
}

/// `n` distinct free loopback ports: bound on port 0 together, read, released. Another process
/// may take one before it is used; callers retry on that rare collision.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------ seed receivers

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedKind {
    Express,
    Flask,
}

/// One of the seed page's receivers (tests/receivers/{express,flask}), on a loopback port.
pub struct SeedReceiver {
    pub kind: SeedKind,
    pub port: u16,
    pub process: ChildGuard,
}

/// Panics, naming scripts/test-deps.sh, when the receivers' dependencies are not installed.
pub fn require_seed_deps() {
    let root = manifest_dir();
    let express = root.join("tests/receivers/express/node_modules/express/package.json");
    let python = root.join("tests/receivers/flask/.venv/bin/python");
    let mut missing = Vec::new();
    if !express.is_file() {
        missing.push(express.display().to_string());
    }
    if !python.is_file() {
        missing.push(python.display().to_string());
    }
    assert!(
        missing.is_empty(),
        "the seed receivers' dependencies are missing ({}): run scripts/test-deps.sh first",
        missing.join(", ")
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not on PATH ({node:?}): install Node.js >= 18, then run scripts/test-deps.sh"
    );
}

impl SeedReceiver {
    /// Starts the receiver with `WEBHOOK_SECRET=secret PORT=0` and waits for `LISTENING <port>`.
    pub async fn start(kind: SeedKind, secret: &str) -> SeedReceiver {
        require_seed_deps();
        let root = manifest_dir();
        let mut command = match kind {
            SeedKind::Express => {
                let mut c = Command::new("node");
                c.arg(root.join("tests/receivers/express/server.js"));
                c
            }
            SeedKind::Flask => {
                let mut c = Command::new(root.join("tests/receivers/flask/.venv/bin/python"));
                c.arg(root.join("tests/receivers/flask/app.py"));
                c
            }
        };
        command
            .current_dir(&root)
            .env("WEBHOOK_SECRET", secret)
            .env("PORT", "0")
            .env("PYTHONUNBUFFERED", "1");
        let name = format!("{kind:?} receiver");
        let mut process = ChildGuard::spawn(&name, command);
        let port = process.wait_listening(&name).await;
        SeedReceiver {
            kind,
            port,
            process,
        }
    }

    /// The seed's route, `http://127.0.0.1:<port>/webhook/abstrakt`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook/abstrakt", self.port)
    }

    /// Every `RESULT {json}` line so far, parsed.
    pub fn results(&self) -> Vec<Value> {
        self.process
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .map(|json| {
                serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{:?}: bad RESULT line {json:?}: {e}", self.kind))
            })
            .collect()
    }
}

// ------------------------------------------------------------------ the hookd binary

/// The real `hookd run --config <file>` on free loopback ports, with its store in `dir/db`.
pub struct HookdProcess {
    pub process: ChildGuard,
    pub api: SocketAddr,
    /// The metrics listener: `/metrics`, `/livez`, `/readyz`.
    pub metrics: SocketAddr,
}

impl HookdProcess {
    /// Writes `dir/hookd.toml` (both listeners on port 0, `[storage] path = dir/db` and the
    /// test engine's keys, then `extra`), starts the binary, reads the addresses it bound from
    /// its log and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, extra: &str) -> HookdProcess {
        HookdProcess::start_with_storage(dir, "", extra).await
    }

    /// [`HookdProcess::start`] with `storage_keys` added to the `[storage]` table it writes.
    pub async fn start_with_storage(dir: &Path, storage_keys: &str, extra: &str) -> HookdProcess {
        let config_path = HookdProcess::write_config(dir, storage_keys, extra);
        match launch(&config_path, &[]).await {
            Ok((process, api, metrics)) => HookdProcess {
                process,
                api,
                metrics,
            },
            Err(stderr) => panic!("hookd did not become ready; stderr:\n{stderr}"),
        }
    }

    /// Writes the config [`HookdProcess::start_with_storage`] runs, `dir/hookd.toml`, without
    /// starting anything (for a `hookd store` command, or a test's own launch); returns its path.
    pub fn write_config(dir: &Path, storage_keys: &str, extra: &str) -> PathBuf {
        let config_path = dir.join("hookd.toml");
        let text = super::engine::apply(&format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n{storage_keys}\n\n{extra}\n{}",
            dir.join("db").display().to_string(),
            super::LOOPBACK_TARGETS
        ));
        std::fs::write(&config_path, &text).expect("write hookd.toml");
        config_path
    }

    pub fn events_url(&self) -> String {
        format!("http://{}/v1/events", self.api)
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T")
        })
    })
}

/// The built `hookd` binary.
pub const HOOKD_BIN: &str = env!("CARGO_BIN_EXE_hookd");

/// What the environment may hold that would change what hookd does, removed from every
/// command [`hookd_command`] makes (a test sets what it needs again, after): every `HOOKD_*`
/// the binary reads (the config file, the CLI's target and token, the log format), and what a
/// service manager passes (sd_notify and its watchdog, journald's stream, the state and
/// credentials directories, socket activation), and `NO_COLOR`.
pub const SCRUBBED_ENV: &[&str] = &[
    "HOOKD_CONFIG",
    "HOOKD_URL",
    "HOOKD_API_TOKEN",
    "HOOKD_LOG_FORMAT",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "STATE_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "LISTEN_FDS",
    "LISTEN_PID",
    "NO_COLOR",
];

/// Removes [`SCRUBBED_ENV`] from `command`'s environment (for a command that runs the binary
/// in its turn, such as `bash -c`).
pub fn scrub_env(command: &mut Command) -> &mut Command {
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    command
}

/// The one way the tests make a command for the binary: `hookd <args>` without
/// [`SCRUBBED_ENV`]. [`launch`] and [`launch_command`] start `hookd run` with it, the systemd
/// tests and [`super::daemon::Daemon`] spawn it, and `support::cli` runs the client commands.
pub fn hookd_command<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new(HOOKD_BIN);
    command.args(args);
    scrub_env(&mut command);
    command
}

/// The one way the tests start the binary as a daemon: `hookd run --config <config>` (a
/// [`hookd_command`]) with `env` (and plain `info` logs), then the addresses it bound, read
/// from its `hookd started api=... metrics=...` log line (the config may say port 0: nothing
/// races for free ports), then `/readyz` answering 200. Err with its stderr if it exits first;
/// panics after 15 s.
pub async fn launch(
    config: &Path,
    env: &[(&str, &str)],
) -> Result<(ChildGuard, SocketAddr, SocketAddr), String> {
    let mut command = hookd_command(["run", "--config"]);
    command.arg(config).env("RUST_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    launch_command(command).await
}

/// [`launch`] for a `hookd run` command the caller prepared from [`hookd_command`] (its
/// arguments and environment). Its `--config` file gets the test engine's keys
/// (`support::engine`), whoever wrote it.
pub async fn launch_command(
    command: Command,
) -> Result<(ChildGuard, SocketAddr, SocketAddr), String> {
    super::engine::apply_to_command(&command);
    let mut process = ChildGuard::spawn("hookd", command);
    let start = Instant::now();
    let (api, metrics) = loop {
        if let Some(bound) = bound_addresses(&process.stderr()) {
            break bound;
        }
        if let Some(status) = process.try_wait() {
            return Err(exited(&process, status).await);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "hookd did not log its addresses within 15s; stderr:\n{}",
            process.stderr_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    wait_ready(&mut process, metrics).await?;
    Ok((process, api, metrics))
}

/// The API and metrics addresses of hookd's `hookd started api=A metrics=M` log line (or its
/// JSON form, `"api":"A"`).
pub fn bound_addresses(stderr: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = stderr.lines().find(|l| l.contains("hookd started"))?;
    let field = |name: &str| -> Option<SocketAddr> {
        for (marker, end) in [(format!(" {name}="), ' '), (format!("\"{name}\":\""), '"')] {
            if let Some(at) = line.find(&marker) {
                let rest = &line[at + marker.len()..];
                return rest.split(end).next()?.parse().ok();
            }
        }
        None
    };
    Some((field("api")?, field("metrics")?))
}

/// "exited with <status>:" and its stderr. The reader thread may still hold the last stderr
/// bytes: it gets a moment to reach the end of the pipe (bounded; an exited process's pipe
/// ends promptly).
async fn exited(process: &ChildGuard, status: ExitStatus) -> String {
    let _ = wait_until_opt(Duration::from_secs(2), || {
        (!process.stderr().is_empty()).then_some(())
    })
    .await;
    format!("exited with {status}:\n{}", process.stderr())
}

/// Polls `/readyz` until 200 (Ok) or the process exits (Err with its stderr); panics after 15s.
pub async fn wait_ready(process: &mut ChildGuard, metrics: SocketAddr) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let url = format!("http://{metrics}/readyz");
    let start = Instant::now();
    loop {
        if let Some(status) = process.try_wait() {
            return Err(exited(process, status).await);
        }
        if let Ok(r) = client.get(&url).send().await {
            if r.status().as_u16() == 200 {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(15) {
            panic!(
                "hookd's /readyz did not answer 200 within 15s; stderr:\n{}",
                process.stderr_tail(4000)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a synchronous `check` until it returns `Some` or `deadline` passes (then `None`).
/// Like [`wait_until_opt`], with an async check.
pub async fn wait_until_some<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_until_opt<T>(
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

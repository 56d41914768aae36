//! The `hookd` binary's client commands (`deliveries`, `subscriptions`, `send`,
//! `check-config`, ...) as the tests run them: a [`hookd_command`] (the environment scrubbed of
//! every variable that would change its target or its output), stdin piped in when given, and
//! what it left behind once it exits.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::process::hookd_command;

/// How long a client command may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// What one run of the binary left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout; panics unless the command exited 0.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "hookd failed: {self:#?}");
        &self.stdout
    }

    /// Stdout as JSON; panics unless the command exited 0 and printed JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// `hookd <args>` with `stdin`, if any.
pub async fn hookd(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cli = Cli::new(args);
    if let Some(input) = stdin {
        cli = cli.stdin(input);
    }
    cli.run().await
}

/// A client command to run, for a test that sets more than its arguments.
pub struct Cli {
    command: Command,
    stdin: Option<Vec<u8>>,
}

impl Cli {
    /// `hookd <args>`.
    pub fn new(args: &[&str]) -> Cli {
        Cli::from_command(hookd_command(args))
    }

    /// A command made with [`hookd_command`] and given more (a test's own environment).
    pub fn from_command(command: Command) -> Cli {
        Cli {
            command,
            stdin: None,
        }
    }

    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Cli {
        self.command.env(name, value);
        self
    }

    /// Writes `input` to the command's stdin (otherwise it reads nothing).
    pub fn stdin(mut self, input: &[u8]) -> Cli {
        self.stdin = Some(input.to_vec());
        self
    }

    /// Runs the command; panics when it cannot start, is killed, takes longer than 10 s or
    /// prints something that is not UTF-8.
    pub async fn run(self) -> Run {
        let shown = format!("{:?}", self.command.get_args().collect::<Vec<_>>());
        let mut command = tokio::process::Command::from(self.command);
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start hookd {shown}: {e}"));
        if let Some(input) = self.stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(&input).await.expect("write stdin");
            drop(pipe);
        }
        let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("hookd {shown} did not exit within {DEADLINE:?}"))
            .expect("wait for hookd");
        Run {
            code: output.status.code().expect("hookd exited, not killed"),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }
}

//! The docs, run as written. `README.md`'s walkthrough: every ```sh block, in order, against the
//! built binary and the seed's Express receiver; and every `$ hookd ...` example of
//! `docs/operations.md` against a running hookd.
//!
//! README blocks are annotated by an HTML comment just above them (invisible when rendered):
//!
//! ```text
//! <!-- readme-test: skip (why) -->                 not run (e.g. the test command itself)
//! <!-- readme-test: background, listens H:P -->    started and left running (another terminal);
//!                                                  the next block waits until H:P accepts
//! <!-- readme-test: prints "TEXT" -->              its output must contain TEXT (a background
//!                                                  block's: by the end of the walkthrough)
//! ```
//!
//! A block without a comment runs in the foreground and must exit 0. The only rewrites: the
//! README's ports (8080, 9464, 3000) become free ports, consistently in the commands, the
//! comments and `config/`, and `cargo run --release --` becomes the built binary. The commands
//! run in a copy of the repository (symlinks, `config/` copied) so that `./hookd-data` is fresh.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::app::spawn_app;
use crate::support::events::{delivery_toml, event, subscription_toml};
use crate::support::process::{free_ports, manifest_dir, scrub_env, ChildGuard, HOOKD_BIN};
use crate::support::receiver::{Reply, TestReceiver};
use crate::support::wait_until;

/// The ports the README and `config/local.toml` use.
const README_PORTS: [u16; 3] = [8080, 9464, 3000];

/// One fenced ```sh block of the README and its annotation.
#[derive(Debug, Default, Clone, PartialEq)]
struct Block {
    /// The README line of the opening fence, for messages.
    line: usize,
    script: String,
    skip: bool,
    background: bool,
    listens: Option<String>,
    prints: Vec<String>,
}

/// Reads the ```sh blocks of `markdown` with the `<!-- readme-test: ... -->` comment above each.
fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut pending: Option<Block> = None;
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        if let Some(block) = current.as_mut() {
            if line.trim_start().starts_with("```") {
                blocks.push(current.take().expect("inside a block"));
            } else {
                block.script.push_str(line);
                block.script.push('\n');
            }
            continue;
        }
        let trimmed = line.trim();
        if let Some(spec) = trimmed
            .strip_prefix("<!-- readme-test:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            pending = Some(parse_annotation(spec, i + 1));
        } else if trimmed == "```sh" {
            let mut block = pending.take().unwrap_or_default();
            block.line = i + 1;
            current = Some(block);
        } else if !trimmed.is_empty() {
            // An annotation belongs to the block right below it, not to a later one.
            pending = None;
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

/// `skip ...` | a comma-separated list of `background`, `listens H:P`, `prints "TEXT"`.
fn parse_annotation(spec: &str, line: usize) -> Block {
    let mut block = Block::default();
    let mut rest = spec.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.starts_with("skip") {
            block.skip = true;
            break;
        } else if let Some(r) = rest.strip_prefix("background") {
            block.background = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("listens ") {
            let end = r.find(',').unwrap_or(r.len());
            block.listens = Some(r[..end].trim().to_string());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("prints \"") {
            let end = r
                .find('"')
                .unwrap_or_else(|| panic!("README.md:{line}: unterminated prints \"..."));
            block.prints.push(r[..end].to_string());
            rest = &r[end + 1..];
        } else if !rest.is_empty() {
            panic!("README.md:{line}: unknown readme-test annotation {rest:?}");
        }
    }
    block
}

/// Replaces the port `from` by `to` where it stands as a port: after `:` or `=`, not followed
/// by another digit.
fn replace_port(text: &str, from: u16, to: u16) -> String {
    let (from, to) = (from.to_string(), to.to_string());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&from) {
        let before = rest[..i].chars().last();
        let after = rest[i + from.len()..].chars().next();
        let is_port =
            matches!(before, Some(':' | '=')) && !after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if is_port { &to } else { &from });
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

fn rewrite_ports(text: &str, ports: &[(u16, u16)]) -> String {
    ports.iter().fold(text.to_string(), |t, (from, to)| {
        replace_port(&t, *from, *to)
    })
}

/// A copy of the repository in `dir`: every top-level entry a symlink, except `config/`
/// (copied, its ports rewritten) and what a run leaves behind (`target`, `hookd-data`).
fn mirror_repository(dir: &Path, ports: &[(u16, u16)]) {
    let root = manifest_dir();
    for entry in std::fs::read_dir(&root).expect("read the repository") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if matches!(name_text.as_ref(), "target" | "hookd-data" | ".git") {
            continue;
        }
        if name_text == "config" {
            std::fs::create_dir(dir.join("config")).expect("mkdir config");
            for file in std::fs::read_dir(entry.path()).expect("read config/") {
                let file = file.expect("config entry");
                let text = std::fs::read_to_string(file.path()).expect("read a config file");
                std::fs::write(
                    dir.join("config").join(file.file_name()),
                    rewrite_ports(&text, ports),
                )
                .expect("write a config file");
            }
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.join(&name)).expect("symlink");
    }
}

/// `bash -c script` in `dir` with the README's environment: nothing that would point the CLI
/// elsewhere, logs at `info`.
fn bash(dir: &Path, script: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-e")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir);
    scrub_env(&mut command).env("RUST_LOG", "info");
    command
}

/// A background block's process group, killed (SIGKILL) when dropped: `bash -c` may leave its
/// command as a child rather than exec it.
struct Background {
    block: Block,
    process: ChildGuard,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.process.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; it touches no
            // memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

fn output_of(process: &ChildGuard) -> String {
    format!(
        "{}\n{}",
        process.stdout_lines().join("\n"),
        process.stderr()
    )
}

#[tokio::test]
async fn readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).expect("README.md");
    let free = free_ports(README_PORTS.len());
    let ports: Vec<(u16, u16)> = README_PORTS.iter().copied().zip(free).collect();
    let blocks: Vec<Block> = sh_blocks(&readme)
        .into_iter()
        .map(|mut b| {
            b.script =
                rewrite_ports(&b.script, &ports).replace("cargo run --release --", HOOKD_BIN);
            b.listens = b.listens.map(|l| rewrite_ports(&l, &ports));
            b
        })
        .collect();
    assert!(
        blocks.iter().filter(|b| !b.skip).count() >= 4,
        "the README's walkthrough has its ```sh blocks: {blocks:#?}"
    );
    assert!(
        blocks
            .iter()
            .any(|b| b.background && b.prints.iter().any(|p| p == "Job abc123 completed!")),
        "the walkthrough checks that the receiver prints its success line: {blocks:#?}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    mirror_repository(dir.path(), &ports);
    let mut running: Vec<Background> = Vec::new();
    for block in blocks.iter().filter(|b| !b.skip) {
        let place = format!("README.md:{} ({})", block.line, block.script.trim());
        if block.background {
            let mut command = bash(dir.path(), &block.script);
            command.process_group(0);
            let mut process = ChildGuard::spawn(&place, command);
            if let Some(addr) = &block.listens {
                let start = Instant::now();
                while TcpStream::connect(addr.as_str()).is_err() {
                    if let Some(status) = process.try_wait() {
                        panic!("{place} exited ({status}):\n{}", output_of(&process));
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "{place} did not listen on {addr} within 30 s:\n{}",
                        output_of(&process)
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            running.push(Background {
                block: block.clone(),
                process,
            });
            continue;
        }
        let mut command = tokio::process::Command::from(bash(dir.path(), &block.script));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(300), command.output())
            .await
            .unwrap_or_else(|_| panic!("{place} did not finish within 300 s"))
            .unwrap_or_else(|e| panic!("{place}: cannot run bash: {e}"));
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let background_logs: String = running
            .iter()
            .map(|b| format!("--- {}\n{}", b.block.script.trim(), output_of(&b.process)))
            .collect();
        assert!(
            output.status.success(),
            "{place} failed ({}):\n{text}\nbackground processes:\n{background_logs}",
            output.status
        );
        for want in &block.prints {
            assert!(
                text.contains(want.as_str()),
                "{place} did not print {want:?}:\n{text}"
            );
        }
    }
    for background in &mut running {
        let place = format!(
            "README.md:{} ({})",
            background.block.line,
            background.block.script.trim()
        );
        for want in background.block.prints.clone() {
            let start = Instant::now();
            while !output_of(&background.process).contains(&want) {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{place} did not print {want:?}:\n{}",
                    output_of(&background.process)
                );
                if let Some(status) = background.process.try_wait() {
                    panic!(
                        "{place} exited ({status}) before printing {want:?}:\n{}",
                        output_of(&background.process)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[test]
fn readme_annotations_are_read() {
    let text = "x\n<!-- readme-test: background, listens 127.0.0.1:3000, prints \"Job a!\", prints \"b, c\" -->\n```sh\nnode x.js\n```\n\n<!-- readme-test: skip (why) -->\n\n```sh\nscripts/test.sh\n```\n<!-- readme-test: prints \"y\" -->\ntext between\n```sh\na\nb\n```\n";
    let blocks = sh_blocks(text);
    assert_eq!(blocks.len(), 3, "{blocks:#?}");
    assert!(blocks[0].background && !blocks[0].skip);
    assert_eq!(blocks[0].listens.as_deref(), Some("127.0.0.1:3000"));
    assert_eq!(blocks[0].prints, ["Job a!", "b, c"]);
    assert_eq!(blocks[0].script, "node x.js\n");
    assert!(blocks[1].skip);
    assert!(
        !blocks[2].background && blocks[2].prints.is_empty(),
        "an annotation is for the block right below it"
    );
    assert_eq!(blocks[2].script, "a\nb\n");
    assert_eq!(
        rewrite_ports(
            "curl http://127.0.0.1:8080/x PORT=3000 13000 :30001 9464",
            &[(8080, 1), (3000, 2), (9464, 3)]
        ),
        "curl http://127.0.0.1:1/x PORT=2 13000 :30001 9464"
    );
}

// ------------------------------------------------------------------ docs/operations.md

/// One `$ hookd ...` example and the output lines shown under it.
#[derive(Debug)]
struct Example {
    command: String,
    output: Vec<String>,
}

/// Every `$ hookd ...` line in the fenced blocks of `markdown`, with the lines after it up to
/// the next `$` line or the end of the block.
fn cli_examples(markdown: &str) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut in_block = false;
    let mut collecting = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            collecting = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            collecting = command.starts_with("hookd ");
            if collecting {
                examples.push(Example {
                    command: command.to_string(),
                    output: Vec::new(),
                });
            }
        } else if collecting {
            if let Some(example) = examples.last_mut() {
                example.output.push(line.to_string());
            }
        }
    }
    examples
}

/// A line as compared with the docs: words single-spaced, every number `N`.
fn shape(line: &str) -> String {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            if w.chars().all(|c| c.is_ascii_digit()) {
                "N".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    words.join(" ")
}

#[tokio::test]
async fn operations_cli_examples_exit_as_documented() {
    let doc = std::fs::read_to_string(manifest_dir().join("docs/operations.md"))
        .expect("docs/operations.md");
    let examples = cli_examples(&doc);
    assert!(
        examples.len() >= 8,
        "docs/operations.md's `$ hookd` examples: {examples:#?}"
    );
    // The subscriptions the examples name: acme, which works, and beta, which fails (one
    // attempt, then dead), so that `--status dead` and `retry --dead` have something to show.
    let acme = TestReceiver::start().await;
    let beta = TestReceiver::start().await;
    beta.set_default(Reply::Status(503));
    let app = spawn_app(&format!(
        "{}{}{}",
        delivery_toml(&[], ""),
        subscription_toml("acme", &acme.url(), "acme-secret", &["*"], ""),
        subscription_toml("beta", &beta.url(), "beta-secret", &["*"], ""),
    ))
    .await;
    for i in 0..3 {
        let (status, body) = app.post(&event(&format!("ops-{i}"), "completed")).await;
        assert_eq!(status, 202, "{body}");
    }
    let base = format!("http://{}", app.api);
    let dead: Vec<String> = wait_until(
        "beta's three deliveries dead",
        Duration::from_secs(10),
        || async {
            let listed = app
                .admin()
                .get_ok("/v1/deliveries?subscription=beta&status=dead")
                .await;
            let ids: Vec<String> = listed["deliveries"]
                .as_array()?
                .iter()
                .filter_map(|d| d["id"].as_str().map(str::to_string))
                .collect();
            (ids.len() == 3).then_some(ids)
        },
    )
    .await;

    // The docs' example delivery id stands for a real one: beta's newest dead delivery.
    let example_id = "dlv_01M8D33XSPKH3XM68D6RTHQQET";
    for example in &examples {
        let command = example
            .command
            .replacen("hookd", HOOKD_BIN, 1)
            .replace(example_id, &dead[0]);
        let mut bash = Command::new("bash");
        bash.arg("-c").arg(&command);
        scrub_env(&mut bash).env("HOOKD_URL", &base);
        let output = tokio::process::Command::from(bash)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run hookd");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(
            output.status.code(),
            Some(0),
            "`{}` exits 0 (docs/operations.md, exit codes):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            example.command
        );
        if let Some(first) = example.output.iter().find(|l| !l.trim().is_empty()) {
            assert_eq!(
                shape(stdout.lines().next().unwrap_or("")),
                shape(first),
                "`{}` prints what docs/operations.md shows:\n{stdout}",
                example.command
            );
        }
    }
}

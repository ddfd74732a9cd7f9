//! The real, pinned Claude Code CLI against the loopback mock API. These tests prove that the
//! mock speaks the Messages API well enough for the CLI, and pin down the CLI behaviour the
//! daemon relies on (DESIGN §6): the stream-json lines of a plain turn, a tool turn and an
//! interrupted turn; `--resume`; OAuth tokens; and `system/api_retry` on a rejected key.
//!
//! The CLI is `SASHAD_TEST_CLAUDE_BIN`, else `tools/claude/node_modules/.bin/claude` (which
//! `make test` installs with `cd tools/claude && npm ci`). A missing CLI fails these tests rather
//! than skipping them, so a green run always means the real CLI was exercised.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use crate::common::mock_api::{MockApi, StreamEnd};

/// Upper bound on one wait for the CLI. A turn takes about a second; two CLIs starting at once
/// on a loaded two-core machine take several.
const WAIT: Duration = Duration::from_secs(60);
/// Bytes of the CLI's stderr kept for failure messages.
const STDERR_TAIL: usize = 16 * 1024;
const KEY: &str = "sk-ant-api03-mock-test-key";

/// The pinned CLI binary.
fn claude_bin() -> PathBuf {
    match std::env::var_os("SASHAD_TEST_CLAUDE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/claude/node_modules/.bin/claude"),
    }
}

/// A HOME and a project folder for one test; `--resume` reuses them in a second process.
struct Dirs {
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        Dirs {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
        }
    }
}

/// One running CLI in stream-json mode.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Cli {
    /// Spawns the CLI with a clean environment: the allowlist of DESIGN §6, the mock as the base
    /// URL, and `credential` (`(name, value)`).
    fn spawn(mock: &MockApi, dirs: &Dirs, credential: (&str, &str), extra_args: &[&str]) -> Cli {
        let bin = claude_bin();
        assert!(
            bin.exists(),
            "the pinned Claude Code CLI is not at {}: run `cd tools/claude && npm ci` (or `make \
             test`), or set SASHAD_TEST_CLAUDE_BIN",
            bin.display()
        );
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let user = std::env::var_os("USER").unwrap_or_else(|| "root".into());
        let mut child = Command::new(&bin)
            .args([
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
            ])
            .args(["--verbose", "--include-partial-messages"])
            .args(extra_args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", dirs.home.path())
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("USER", user)
            .env("ANTHROPIC_BASE_URL", mock.base_url())
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env(credential.0, credential.1)
            .current_dir(dirs.project.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        // Drain stderr all the time: a full pipe would stall the CLI.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let tail = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                let mut tail = tail.lock().unwrap();
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
        });
        Cli {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    async fn send(&mut self, line: Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn send_user(&mut self, text: &str) {
        self.send(json!({"type": "user", "message": {"role": "user", "content": text}}))
            .await;
    }

    /// Reads stdout lines until one matches `done`, within [`WAIT`]; returns them all, the
    /// matching one last.
    async fn read_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                outcome => panic!(
                    "CLI: no matching line ({outcome:?}); lines so far: {}; stderr: {}",
                    summarize(&lines),
                    self.stderr_tail()
                ),
            };
            let value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("CLI wrote a line that is not JSON: {line:?}"));
            let matched = done(&value);
            lines.push(value);
            if matched {
                return lines;
            }
        }
    }

    /// Closes stdin, as sashad does to stop a child, and waits for the exit.
    async fn close(mut self) -> ExitStatus {
        drop(self.stdin.take());
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "CLI did not exit after stdin closed; stderr: {}",
                self.stderr_tail()
            ),
        }
    }

    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn summarize(lines: &[Value]) -> String {
    let kinds: Vec<String> = lines.iter().map(kind).collect();
    kinds.join(", ")
}

/// `type` or `type/subtype` of a stdout line.
fn kind(line: &Value) -> String {
    let ty = line["type"].as_str().unwrap_or("?");
    match line["subtype"].as_str() {
        Some(sub) => format!("{ty}/{sub}"),
        None => ty.to_owned(),
    }
}

fn is_result(line: &Value) -> bool {
    line["type"] == "result"
}

/// The text the turn streamed, from the `stream_event` text deltas.
fn streamed_text(lines: &[Value]) -> String {
    lines
        .iter()
        .filter(|l| l["type"] == "stream_event")
        .filter_map(|l| l["event"]["delta"]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn real_cli_answers_runs_a_tool_and_stops_on_interrupt() {
    let mock = MockApi::start();
    let dirs = Dirs::new();
    let mut cli = Cli::spawn(
        &mock,
        &dirs,
        ("ANTHROPIC_API_KEY", KEY),
        &["--allowedTools", "Bash"],
    );

    // A plain turn.
    cli.send_user("Hello there").await;
    let lines = cli.read_until(is_result).await;
    assert_eq!(kind(&lines[0]), "system/init", "{}", summarize(&lines));
    let session_id = lines[0]["session_id"].as_str().unwrap().to_owned();
    let result = lines.last().unwrap();
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Hello from the mock.");
    assert_eq!(result["session_id"], session_id.as_str());
    assert_eq!(streamed_text(&lines), "Hello from the mock.");
    let reqs = mock.messages_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].api_key(), Some(KEY));
    assert_eq!(reqs[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(reqs[0].cli_session_id(), Some(session_id.as_str()));
    assert_eq!(reqs[0].last_user_text().as_deref(), Some("Hello there"));
    assert_eq!(reqs[0].body.as_ref().unwrap()["stream"], true);

    // A tool turn: Bash runs, its output goes back to the mock, which quotes it.
    cli.send_user("TOOL:echo hi-from-bash").await;
    let lines = cli.read_until(is_result).await;
    let tool_result = lines
        .iter()
        .filter(|l| l["type"] == "user")
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|b| b["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool_result line: {}", summarize(&lines)));
    assert_eq!(tool_result["content"], "hi-from-bash");
    assert_eq!(tool_result["is_error"], false);
    let result = lines.last().unwrap();
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["result"], "TOOL-RESULT: hi-from-bash");
    let reqs = mock.messages_requests();
    assert_eq!(reqs.len(), 3, "the tool turn is two model calls");
    assert_eq!(
        reqs[1].last_user_text().as_deref(),
        Some("TOOL:echo hi-from-bash")
    );

    // A slow turn, interrupted mid-stream.
    cli.send_user("please be SLOW").await;
    cli.read_until(|l| l["event"]["delta"]["text"] == "w1 ")
        .await;
    cli.send(json!({
        "type": "control_request",
        "request_id": "req_1",
        "request": {"subtype": "interrupt"},
    }))
    .await;
    let lines = cli.read_until(is_result).await;
    let ack = lines
        .iter()
        .find(|l| l["type"] == "control_response")
        .unwrap_or_else(|| panic!("no control_response: {}", summarize(&lines)));
    assert_eq!(ack["response"]["request_id"], "req_1");
    assert_eq!(ack["response"]["subtype"], "success");
    let result = lines.last().unwrap();
    assert_eq!(result["subtype"], "error_during_execution", "{result}");
    // The CLI dropped the HTTP stream, and the mock saw it go.
    let reqs = mock
        .wait_for(
            |r| {
                r.iter()
                    .filter(|r| r.is_messages())
                    .nth(3)
                    .is_some_and(|r| r.stream_end.is_some())
            },
            WAIT,
        )
        .await
        .unwrap();
    let slow = reqs.iter().filter(|r| r.is_messages()).nth(3).unwrap();
    assert_eq!(slow.stream_end, Some(StreamEnd::ClientGone));

    // Nothing but model calls went to the API.
    for r in mock.requests() {
        assert!(
            r.is_messages() && r.query == "beta=true",
            "unexpected {} {}",
            r.method,
            r.path
        );
    }
    // With its last turn interrupted, the CLI exits 1 when stdin closes (DESIGN §6).
    assert_eq!(cli.close().await.code(), Some(1));
}

#[tokio::test]
async fn real_cli_resume_sends_the_earlier_turns() {
    let mock = MockApi::start();
    let dirs = Dirs::new();
    let mut first = Cli::spawn(&mock, &dirs, ("ANTHROPIC_API_KEY", KEY), &[]);
    first.send_user("first turn ALPHA").await;
    let lines = first.read_until(is_result).await;
    let session_id = lines.last().unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.close().await.code(), Some(0));

    let resume = format!("--resume={session_id}");
    let mut second = Cli::spawn(&mock, &dirs, ("ANTHROPIC_API_KEY", KEY), &[&resume]);
    second.send_user("ECHO second turn").await;
    let lines = second.read_until(is_result).await;
    assert_eq!(
        lines[0]["session_id"],
        session_id.as_str(),
        "same session after resume"
    );
    let result = lines.last().unwrap();
    let text = result["result"].as_str().unwrap();
    assert!(
        text.contains(r#"earlier_user_turns=["first turn ALPHA"]"#),
        "{text}"
    );

    let reqs = mock.messages_requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].cli_session_id(), Some(session_id.as_str()));
    assert_eq!(
        reqs[1].user_texts(),
        vec!["first turn ALPHA", "ECHO second turn"]
    );
    let assistant_said_hello = reqs[1]
        .messages()
        .iter()
        .any(|m| m["role"] == "assistant" && m.to_string().contains("Hello from the mock."));
    assert!(
        assistant_said_hello,
        "the earlier answer is in the resumed request"
    );
    assert_eq!(second.close().await.code(), Some(0));
}

#[tokio::test]
async fn real_cli_sends_an_oauth_token_as_a_bearer() {
    let mock = MockApi::start();
    let dirs = Dirs::new();
    let token = "sk-ant-oat01-mock-test-token";
    let mut cli = Cli::spawn(&mock, &dirs, ("CLAUDE_CODE_OAUTH_TOKEN", token), &[]);
    cli.send_user("Hello there").await;
    let lines = cli.read_until(is_result).await;
    assert_eq!(lines.last().unwrap()["result"], "Hello from the mock.");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1, "no profile, roles or token call: {reqs:?}");
    assert!(reqs[0].is_messages());
    assert_eq!(reqs[0].bearer_token(), Some(token));
    assert_eq!(reqs[0].api_key(), None);
    let betas = reqs[0].header("anthropic-beta").unwrap_or_default();
    assert!(betas.split(',').any(|b| b == "oauth-2025-04-20"), "{betas}");
    assert_eq!(cli.close().await.code(), Some(0));
}

#[tokio::test]
async fn real_cli_retries_a_rejected_key_without_exiting() {
    let mock = MockApi::start();
    mock.reject_messages_for(KEY);
    let dirs = Dirs::new();
    let mut cli = Cli::spawn(&mock, &dirs, ("ANTHROPIC_API_KEY", KEY), &[]);
    cli.send_user("Hello there").await;
    let lines = cli.read_until(|l| kind(l) == "system/api_retry").await;
    let retry = lines.last().unwrap();
    assert_eq!(retry["error_status"], 401, "{retry}");
    assert_eq!(retry["error"], "authentication_failed");
    assert_eq!(retry["attempt"], 1);
    let reqs = mock.messages_requests();
    assert!(reqs
        .iter()
        .all(|r| r.status == Some(401) || r.status.is_none()));
    // It would go on retrying for minutes (fixtures/claude-2.1.332-badkey.jsonl).
    cli.kill().await;
}

#[tokio::test]
async fn real_cli_writes_a_big_reply_as_one_long_line() {
    const SIZE: usize = 3_000_000;
    let mock = MockApi::start();
    let dirs = Dirs::new();
    let mut cli = Cli::spawn(&mock, &dirs, ("ANTHROPIC_API_KEY", KEY), &[]);
    cli.send_user(&format!("BIG:{SIZE}")).await;
    let lines = cli.read_until(is_result).await;
    let assistant = lines.iter().find(|l| l["type"] == "assistant").unwrap();
    assert!(assistant.to_string().len() > SIZE);
    assert_eq!(
        lines.last().unwrap()["result"].as_str().unwrap().len(),
        SIZE
    );
    assert_eq!(cli.close().await.code(), Some(0));
}

//! Smoke tests of the fake Claude Code CLI, read through the daemon's own line framing and
//! classifier: the protocol and the markers that other tests rely on behave as its doc says.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a failed test

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use sashad::claude::lines::{Line, LineReader, DEFAULT_MAX_LINE_BYTES};
use sashad::claude::protocol::{
    classify, interrupt_request, new_request_id, user_message, Classified, TurnResult,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::common::fake_cli::fake_claude_bin;

/// How long any single expected event may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// The flags sashad passes to the real CLI (DESIGN §6).
const CLI_ARGS: &[&str] = &[
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
];

struct Fake {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: LineReader<ChildStdout>,
    /// Drains stderr and yields all of it at EOF.
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// One stdout line and its classification.
struct Out {
    line: Line,
    class: Classified,
}

impl Out {
    fn json(&self) -> Value {
        let Line::Complete(bytes) = &self.line else {
            panic!("oversized line")
        };
        serde_json::from_slice(bytes).unwrap()
    }

    fn result(&self) -> Option<&TurnResult> {
        match &self.class {
            Classified::TurnEnded(r) => Some(r),
            _ => None,
        }
    }
}

impl Fake {
    fn spawn(extra_args: &[&str], script: Option<&str>) -> Self {
        let mut cmd = Command::new(fake_claude_bin());
        cmd.args(CLI_ARGS)
            .args(extra_args)
            .env_remove("FAKE_CLAUDE_SCRIPT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(script) = script {
            cmd.env("FAKE_CLAUDE_SCRIPT", script);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let lines = LineReader::new(child.stdout.take().unwrap(), DEFAULT_MAX_LINE_BYTES);
        // Drained all the time, as the daemon must: a full stderr pipe blocks the child.
        let mut pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        Fake {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
        }
    }

    async fn send(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line).await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn say(&mut self, text: &str) {
        self.send(&user_message(&json!(text))).await;
    }

    async fn next(&mut self) -> Option<Out> {
        let line = timeout(DEADLINE, self.lines.next_line())
            .await
            .expect("a stdout line before the deadline")
            .unwrap()?;
        let class = match &line {
            Line::Complete(bytes) => classify(bytes),
            Line::Oversized { .. } => Classified::NotJson,
        };
        Some(Out { line, class })
    }

    /// Lines up to and including the first that `stop` accepts.
    async fn until(&mut self, stop: impl Fn(&Out) -> bool) -> Vec<Out> {
        let mut seen = Vec::new();
        loop {
            let out = self
                .next()
                .await
                .expect("stdout closed before the expected line");
            let done = stop(&out);
            seen.push(out);
            if done {
                return seen;
            }
        }
    }

    async fn until_result(&mut self) -> Vec<Out> {
        self.until(|o| o.result().is_some()).await
    }

    async fn close_stdin_and_wait(&mut self) -> ExitStatus {
        self.stdin = None;
        timeout(DEADLINE, self.child.wait())
            .await
            .expect("exit before the deadline")
            .unwrap()
    }

    /// All of stderr, once the child (and whatever shares its stderr) has closed it.
    async fn stderr(&mut self) -> String {
        let task = self.stderr.take().expect("stderr is read once");
        let all = timeout(DEADLINE, task)
            .await
            .expect("stderr closed before the deadline");
        String::from_utf8_lossy(&all.unwrap()).into_owned()
    }
}

fn assistant_text(out: &Out) -> Option<String> {
    let line = out.json();
    (line["type"] == "assistant").then(|| {
        line["message"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test]
async fn default_turn_then_stdin_close_exits_0() {
    let mut fake = Fake::spawn(&["--model", "claude-test", "--resume=sess-123"], None);
    fake.say("hello there").await;
    let turn = fake.until_result().await;
    assert_eq!(
        turn[0].class,
        Classified::Init {
            session_id: "sess-123".into()
        }
    );
    assert_eq!(turn[0].json()["model"], "claude-test");
    let texts: Vec<String> = turn.iter().filter_map(assistant_text).collect();
    assert_eq!(texts, ["Hello from the fake. You said: hello there"]);
    let result = turn.last().unwrap().result().unwrap();
    assert_eq!(result.subtype.as_deref(), Some("success"));
    assert!(!result.is_error);
    assert_eq!(result.session_id.as_deref(), Some("sess-123"));

    // A second turn in the same process keeps the session id.
    fake.say("again").await;
    let turn = fake.until_result().await;
    assert_eq!(
        turn[0].class,
        Classified::Init {
            session_id: "sess-123".into()
        }
    );

    assert_eq!(fake.close_stdin_and_wait().await.code(), Some(0));
}

#[tokio::test]
async fn interrupted_silent_turn_then_stdin_close_exits_1() {
    let mut fake = Fake::spawn(&[], None);
    fake.say("please be SILENT").await;
    let turn = fake
        .until(|o| matches!(o.class, Classified::Init { .. }))
        .await;
    let Classified::Init { session_id } = &turn[0].class else {
        unreachable!()
    };
    assert_eq!(session_id.len(), 36, "a UUID: {session_id}");

    let id = new_request_id();
    fake.send(&interrupt_request(&id)).await;
    let rest = fake.until_result().await;
    let classes: Vec<&Classified> = rest.iter().map(|o| &o.class).collect();
    assert!(
        classes.contains(&&Classified::ControlResponse {
            request_id: id.clone(),
            success: true,
            error: None
        }),
        "{classes:?}"
    );
    let result = rest.last().unwrap().result().unwrap();
    assert_eq!(result.subtype.as_deref(), Some("error_during_execution"));
    assert!(result.is_error);

    assert_eq!(fake.close_stdin_and_wait().await.code(), Some(1));
}

#[tokio::test]
async fn big_split_and_non_json_lines() {
    let mut fake = Fake::spawn(&[], None);
    let size = 5 * 1024 * 1024;
    fake.say(&format!("BIGLINE:{size}")).await;
    let turn = fake.until_result().await;
    let big: Vec<usize> = turn
        .iter()
        .filter_map(|o| match &o.line {
            Line::Complete(b) if b.len() > 1024 * 1024 => Some(b.len()),
            _ => None,
        })
        .collect();
    assert_eq!(big, [size]);

    fake.say("SPLIT").await;
    let texts: Vec<String> = fake
        .until_result()
        .await
        .iter()
        .filter_map(assistant_text)
        .collect();
    assert_eq!(texts[0], "SPLIT: café 🦀 crab");

    fake.say("NONJSON").await;
    let turn = fake.until_result().await;
    let raw = turn
        .iter()
        .filter(|o| o.class == Classified::NotJson)
        .count();
    assert_eq!(raw, 3);
    assert_eq!(fake.close_stdin_and_wait().await.code(), Some(0));
}

#[tokio::test]
async fn crash_exits_3_mid_turn_with_stderr() {
    let mut fake = Fake::spawn(&[], None);
    fake.say("CRASH").await;
    let mut seen = Vec::new();
    while let Some(out) = fake.next().await {
        seen.push(out);
    }
    assert!(seen.len() >= 3);
    assert!(seen.iter().all(|o| o.result().is_none()));
    let status = fake.close_stdin_and_wait().await;
    assert_eq!(status.code(), Some(3));
    let stderr = fake.stderr().await;
    assert!(stderr.contains("simulated crash"), "{stderr}");
}

#[tokio::test]
async fn authfail_repeats_until_interrupted() {
    let mut fake = Fake::spawn(&[], None);
    fake.say("AUTHFAIL").await;
    let auth = Classified::AuthFailure {
        error_status: Some(401),
        error: Some("authentication_failed".into()),
    };
    for _ in 0..2 {
        fake.until(|o| o.class == auth).await;
    }
    fake.send(&interrupt_request("req_auth")).await;
    let result = fake.until_result().await.pop().unwrap();
    assert!(result.result().unwrap().is_error);
    assert_eq!(fake.close_stdin_and_wait().await.code(), Some(1));
}

#[tokio::test]
async fn stderr_flood_at_startup_and_flood_of_stdout() {
    let mut fake = Fake::spawn(&[], Some("stderr_flood:1048576"));
    fake.say("FLOOD:4194304").await;
    let turn = fake.until_result().await;
    let bytes: usize = turn
        .iter()
        .map(|o| match &o.line {
            Line::Complete(b) => b.len() + 1,
            Line::Oversized { len } => len + 1,
        })
        .sum();
    assert!(bytes >= 4 * 1024 * 1024, "{bytes}");
    assert!(turn.iter().all(|o| o.class != Classified::NotJson));
    assert_eq!(fake.close_stdin_and_wait().await.code(), Some(0));
    assert!(fake.stderr().await.len() >= 1024 * 1024);
}

#[tokio::test]
async fn ignore_term_survives_sigterm_and_its_grandchild_dies_with_the_group() {
    let mut fake = Fake::spawn(&[], None);
    fake.say("IGNORE_TERM").await;
    let turn = fake.until_result().await;
    let grandchild = turn
        .iter()
        .find_map(|o| o.json()["fake_grandchild_pid"].as_i64())
        .expect("a line with the grandchild's pid");
    let grandchild = Pid::from_raw(i32::try_from(grandchild).unwrap());
    let pid = Pid::from_raw(i32::try_from(fake.child.id().unwrap()).unwrap());

    kill(pid, Signal::SIGTERM).unwrap();
    kill(grandchild, Signal::SIGTERM).unwrap();
    // Answering another turn proves SIGTERM did not end it.
    fake.say("still there?").await;
    let result = fake.until_result().await.pop().unwrap();
    assert!(!result.result().unwrap().is_error);

    killpg(pid, Signal::SIGKILL).unwrap();
    let status = timeout(DEADLINE, fake.child.wait()).await.unwrap().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let gone = async {
        // Once orphaned it is reaped by init, or left a zombie where init does not reap.
        while std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        }) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(DEADLINE, gone)
        .await
        .expect("the grandchild died with its group");
}

#[tokio::test]
async fn deaf_ignores_interrupts_and_stdin_closing_until_a_signal() {
    let mut fake = Fake::spawn(&[], None);
    fake.say("DEAF").await;
    // The turn's last line: `system/status`, after `init`.
    fake.until(|o| o.json()["subtype"] == "status").await;
    fake.send(&interrupt_request(&new_request_id())).await;
    fake.stdin = None;
    // An absence, so a bounded wait: neither an answer nor an exit comes.
    let quiet = Duration::from_millis(300);
    let answer = timeout(quiet, fake.lines.next_line()).await;
    assert!(answer.is_err(), "it answered: {answer:?}");
    assert!(fake.child.try_wait().unwrap().is_none(), "it exited");

    let pid = Pid::from_raw(i32::try_from(fake.child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = timeout(DEADLINE, fake.child.wait()).await.unwrap().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
}

#[tokio::test]
async fn pace_slows_a_flood() {
    let mut fake = Fake::spawn(&[], None);
    let started = std::time::Instant::now();
    // 4 MiB at 8 MiB/s: half a second at least.
    fake.say("FLOOD:4194304 PACE:8388608").await;
    fake.until_result().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(fake.close_stdin_and_wait().await.code(), Some(0));
}

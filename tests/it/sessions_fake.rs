//! Fault tests of sessions through the whole daemon (HTTP, WebSocket, Session actor, child),
//! with the fake CLI (`examples/fake_claude.rs`) misbehaving on cue. Each test asserts what a
//! user or an operator would see: the frames a socket receives, HTTP answers, which processes
//! exist afterwards, and the daemon's memory.
//!
//! Covered: a 5 MiB stdout line, a line split over three writes across multibyte characters,
//! non-JSON lines, the stdout line cap, 1 MiB of stderr before any stdout and the stderr tail of
//! a crash, a crash mid-turn and the restart budget, stops that must escalate to SIGKILL to reach
//! a child ignoring SIGTERM and its grandchild, a socket that never reads during a 100 MiB flood,
//! the turn timeout (answered and unanswered interrupt), rejected credentials, and the message
//! queue while a child starts or is busy.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::client::{Answer, Api};
use crate::common::daemon::{process_alive, processes_in_sandbox, Daemon, TestEnv};
use crate::common::mock_api::MockApi;
use crate::common::ws::{
    assistant_text, claude_event, is_result, summarize, Socket, FRAME_DEADLINE,
};

const KEY: &str = "sk-ant-api03-FaultKey00000000000000000000000000000000000000000000000ffff";

/// The fake's reply to a message without markers that end the turn early.
fn reply_to(text: &str) -> String {
    format!("Hello from the fake. You said: {text}")
}

/// A daemon running the fake CLI, a user with a key, and one (stopped) session.
struct Fixture {
    // Declared first so the daemon (and its children) go before the data directory.
    daemon: Daemon,
    api: Api,
    session: String,
    _env: TestEnv,
    _mock: MockApi,
}

/// Starts a fixture; `configure` sets config keys before the daemon starts.
async fn fixture(configure: impl FnOnce(&mut TestEnv)) -> Fixture {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    configure(&mut env);
    let daemon = env.start();
    let api = Api::new(daemon.base_url())
        .user_with_key("alice", KEY)
        .await;
    let session = api.new_session("faults").await;
    Fixture {
        daemon,
        api,
        session,
        _env: env,
        _mock: mock,
    }
}

impl Fixture {
    /// A socket on the session, from its first retained event.
    async fn socket(&self) -> Socket {
        self.api.socket(&self.session).await
    }

    /// `POST /api/sessions/{id}/messages`.
    async fn post_message(&self, text: &str) -> Answer {
        self.api
            .post(
                &format!("/api/sessions/{}/messages", self.session),
                json!({ "content": text }),
            )
            .await
    }

    /// The session as `GET /api/sessions/{id}` shows it.
    async fn view(&self) -> Value {
        self.api.session(&self.session).await
    }
}

/// A `state` frame with this state.
fn is_state(frame: &Value, state: &str) -> bool {
    frame["type"] == "state" && frame["state"] == state
}

/// An `error` frame with this code.
fn is_error(frame: &Value, code: &str) -> bool {
    frame["type"] == "error" && frame["error"] == code
}

/// The text of an `assistant` event's frame, if it is one.
fn assistant_of(frame: &Value) -> Option<&str> {
    claude_event(frame, "assistant")?["message"]["content"][0]["text"].as_str()
}

/// The pid in the `idle` state frame a new child announces itself with.
fn pid_of_idle(frame: &Value) -> u32 {
    assert!(is_state(frame, "idle"), "not an idle frame: {frame}");
    frame["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {frame}")) as u32
}

/// Polls `cond` (a `/proc` check) until it holds or `deadline` passes; whether it held.
async fn eventually(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_5_mib_line_reaches_the_socket_whole_in_one_frame() {
    const SIZE: usize = 5 << 20;
    let fx = fixture(|_| {}).await;
    let mut ws = fx.socket().await;
    ws.say(&format!("BIGLINE:{SIZE}")).await;
    let result = ws.until_result().await;
    assert_eq!(result["event"]["subtype"], "success");

    let big: Vec<&Value> = ws
        .frames
        .iter()
        .filter(|f| assistant_of(f).is_some_and(|t| t.starts_with("xxx")))
        .collect();
    assert_eq!(big.len(), 1, "one frame for the one line");
    let event = &big[0]["event"];
    // The fake writes compact JSON with sorted keys, which is also how serde_json writes a
    // `Value` back, so the re-serialized event has the line's exact length.
    assert_eq!(event.to_string().len(), SIZE);
    let text = assistant_of(big[0]).unwrap();
    assert!(text.len() > SIZE - 1024 && text.bytes().all(|b| b == b'x'));
    assert!(
        !ws.frames
            .iter()
            .any(|f| f["type"] == "raw" || f["type"] == "error"),
        "{}",
        summarize(&ws.frames)
    );
    assert_eq!(
        assistant_of(
            ws.frames
                .iter()
                .rev()
                .find(|f| assistant_of(f).is_some())
                .unwrap()
        ),
        Some(reply_to(&format!("BIGLINE:{SIZE}")).as_str())
    );
}

#[tokio::test]
async fn a_line_split_across_writes_and_characters_arrives_whole() {
    let fx = fixture(|_| {}).await;
    let mut ws = fx.socket().await;
    ws.say("SPLIT").await;
    ws.until_result().await;
    let texts: Vec<&str> = ws.frames.iter().filter_map(assistant_of).collect();
    assert_eq!(texts, ["SPLIT: café 🦀 crab", reply_to("SPLIT").as_str()]);
    assert!(
        !ws.frames
            .iter()
            .any(|f| f["type"] == "raw" || f["type"] == "error"),
        "{}",
        summarize(&ws.frames)
    );
}

#[tokio::test]
async fn non_json_lines_arrive_as_raw_events_in_order() {
    let fx = fixture(|_| {}).await;
    let mut ws = fx.socket().await;
    ws.say("NONJSON").await;
    let result = ws.until_result().await;
    assert_eq!(result["event"]["subtype"], "success");
    let raws: Vec<(u64, &str)> = ws
        .frames
        .iter()
        .filter(|f| f["type"] == "raw")
        .map(|f| (f["seq"].as_u64().unwrap(), f["line"].as_str().unwrap()))
        .collect();
    let lines: Vec<&str> = raws.iter().map(|(_, l)| *l).collect();
    assert_eq!(
        lines,
        [
            "fake_claude: this line is not JSON",
            "{\"type\": \"assistant\", truncated",
            "plain text, with an accent: é",
        ]
    );
    // In stream order: the fake writes a JSON status line between the first two.
    let statuses: Vec<u64> = ws
        .frames
        .iter()
        .filter(|f| claude_event(f, "system").is_some_and(|e| e["subtype"] == "status"))
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2, "{}", summarize(&ws.frames));
    assert!(statuses[0] < raws[0].0);
    assert!(raws[0].0 < statuses[1] && statuses[1] < raws[1].0);
    assert_eq!(raws[2].0, raws[1].0 + 1);
    assert!(raws[2].0 < result["seq"].as_u64().unwrap());
    assert_eq!(fx.view().await["state"], "idle");
}

#[tokio::test]
async fn a_line_over_the_cap_is_an_error_event_and_the_turn_goes_on() {
    let fx = fixture(|env| {
        env.set("sessions.max_line_bytes", 1 << 20);
    })
    .await;
    let mut ws = fx.socket().await;
    ws.say("BIGLINE:2097152").await;
    let error = ws.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
    assert_eq!(error["error"], "line_too_long", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("2097152") && message.contains("1048576"),
        "{message}"
    );
    let result = ws.until_result().await;
    assert_eq!(result["event"]["subtype"], "success");
    // The lines after the oversized one passed: the whole reply, streamed and as a message.
    let after: Vec<&Value> = ws
        .frames
        .iter()
        .filter(|f| f["seq"].as_u64() > error["seq"].as_u64())
        .collect();
    assert!(after
        .iter()
        .any(|f| claude_event(f, "stream_event").is_some()));
    assert_eq!(assistant_text(&ws.frames), reply_to("BIGLINE:2097152"));
    assert_eq!(result["event"]["result"], reply_to("BIGLINE:2097152"));
}

#[tokio::test]
async fn stderr_floods_do_not_block_the_child_and_a_crash_reports_the_tail() {
    const TAIL: usize = 4096;
    let fx = fixture(|env| {
        env.set("sessions.stderr_tail_bytes", TAIL as i64);
    })
    .await;
    let mut ws = fx.socket().await;
    // 1 MiB is sixteen times a pipe's buffer: were stderr not drained, the child would block
    // on its first write and never print the turn.
    let sent = Instant::now();
    ws.say("STDERR:1048576").await;
    let result = ws.until_result().await;
    eprintln!("1 MiB of stderr, then a turn: {:?}", sent.elapsed());
    assert_eq!(result["event"]["subtype"], "success");
    assert_eq!(result["event"]["result"], reply_to("STDERR:1048576"));

    ws.say("STDERR:1048576 CRASH").await;
    let exited = ws.until(FRAME_DEADLINE, |f| is_state(f, "exited")).await;
    assert_eq!(exited["code"], 3, "{exited}");
    let tail = exited["stderrTail"].as_str().unwrap();
    assert!(tail.len() <= TAIL, "tail of {} bytes", tail.len());
    assert!(
        tail.len() > TAIL - 200,
        "the tail is full: {} bytes",
        tail.len()
    );
    // The newest bytes: the crash message, after the end of the second flood (its last,
    // partial line is number 10485: 1048576 = 10485 × 100 + 76).
    assert!(
        tail.ends_with("fake_claude: simulated crash (CRASH marker)\n"),
        "{tail:?}"
    );
    assert!(tail.contains("stderr flood line 00010485"), "{tail:?}");
}

#[tokio::test]
async fn a_crash_is_reported_restarted_and_limited_by_the_budget() {
    let fx = fixture(|env| {
        env.set("sessions.restart_budget", 2);
        env.set("sessions.restart_window", "10m");
    })
    .await;
    let mut ws = fx.socket().await;
    ws.say("hello").await;
    let first_pid = pid_of_idle(&ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await);
    ws.until_result().await;

    ws.say("CRASH").await;
    let exited = ws.until(FRAME_DEADLINE, |f| is_state(f, "exited")).await;
    assert_eq!(exited["code"], 3, "{exited}");
    assert_eq!(exited["signal"], Value::Null);
    assert_eq!(exited["duringTurn"], true);
    assert!(
        exited["stderrTail"]
            .as_str()
            .unwrap()
            .contains("fake_claude: simulated crash"),
        "{exited}"
    );
    // What the turn printed before the crash was passed on; no result came.
    assert!(ws.frames.iter().any(|f| claude_event(f, "stream_event")
        .is_some_and(|e| e["event"]["delta"]["text"] == "about to ")));
    let view = fx.view().await;
    assert_eq!(view["state"], "exited");
    assert_eq!(view["pid"], Value::Null);
    assert!(!process_alive(first_pid));

    // The next message restarts the child and works.
    ws.say("after the crash").await;
    let second_pid = pid_of_idle(&ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await);
    assert_ne!(second_pid, first_pid);
    let result = ws.until_result().await;
    assert_eq!(result["event"]["result"], reply_to("after the crash"));

    // The second crash spends the budget (2 in the window): the session refuses to restart.
    ws.say("CRASH").await;
    ws.until(FRAME_DEADLINE, |f| is_state(f, "exited")).await;
    ws.say("are you there").await;
    let error = ws.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
    assert_eq!(error["error"], "session_failed", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("exit code 3"),
        "{error}"
    );
    ws.until(FRAME_DEADLINE, |f| is_state(f, "failed")).await;
    assert_eq!(fx.view().await["state"], "failed");
    fx.post_message("and now")
        .await
        .expect_error(409, "session_failed");
    assert_eq!(fx.view().await["pid"], Value::Null);
}

/// Starts an `IGNORE_TERM` turn on `ws` (with `extra` markers) and returns the session's pid
/// (the sandbox's monitor) and the host pids of everything inside its sandbox: the fake and
/// its grandchild among them. (The fake reports the grandchild's pid as its pid namespace sees
/// it, which is not the host's.)
async fn ignore_term_turn(ws: &mut Socket, extra: &str) -> (u32, Vec<u32>) {
    ws.say(&format!("IGNORE_TERM {extra}")).await;
    let pid = pid_of_idle(&ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await);
    ws.until(FRAME_DEADLINE, |f| {
        claude_event(f, "assistant").is_some_and(|e| e["fake_grandchild_pid"].is_u64())
    })
    .await;
    let inside = processes_in_sandbox(pid);
    // bubblewrap's init, the fake, its grandchild.
    assert!(inside.len() >= 3, "sandbox of {pid}: {inside:?}");
    (pid, inside)
}

#[tokio::test]
async fn delete_escalates_to_sigkill_and_leaves_no_child_or_grandchild() {
    const STOP: Duration = Duration::from_millis(500);
    let fx = fixture(|env| {
        env.set("sessions.stop_timeout", "500ms");
    })
    .await;
    let mut ws = fx.socket().await;
    // DEAF: the child ignores stdin closing too, so only the last step of the stop reaches it.
    let (pid, inside) = ignore_term_turn(&mut ws, "DEAF").await;
    assert_eq!(fx.view().await["state"], "busy");

    let started = Instant::now();
    fx.api
        .delete(&format!("/api/sessions/{}", fx.session))
        .await
        .expect(204);
    let answered = started.elapsed();
    let gone = eventually(Duration::from_secs(2), || {
        !process_alive(pid) && inside.iter().all(|p| !process_alive(*p))
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!("delete answered after {answered:?}; the sandbox was gone after {elapsed:?}");
    assert!(
        gone,
        "left: {:?} of {inside:?}",
        inside
            .iter()
            .filter(|p| process_alive(**p))
            .collect::<Vec<_>>()
    );
    // The child ignored its stdin closing, so the stop waited `stop_timeout`, then SIGTERM went
    // to the sandbox's group; bubblewrap dies of it, and with it its pid namespace, where the
    // kernel kills every process (pid_namespaces(7)). The answer waits for the reaping.
    assert!(answered >= STOP, "{answered:?}");
    assert!(elapsed < 2 * STOP + Duration::from_secs(2), "{elapsed:?}");
    assert!(fx.daemon.logs.text().contains("SIGTERM to its group"));
    let (code, _) = ws.until_closed(FRAME_DEADLINE).await;
    assert_eq!(code, 1001);
    fx.api
        .get(&format!("/api/sessions/{}", fx.session))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn idle_stop_leaves_no_child_or_grandchild() {
    let fx = fixture(|env| {
        env.set("sessions.stop_timeout", "500ms");
        env.set("sessions.idle_timeout", "500ms");
    })
    .await;
    let mut ws = fx.socket().await;
    let (pid, inside) = ignore_term_turn(&mut ws, "").await;
    ws.until_result().await;
    // The child itself exits when its stdin closes; the grandchild, which ignores SIGTERM and
    // holds no pipe, goes with the sandbox's pid namespace.
    ws.until(FRAME_DEADLINE, |f| is_state(f, "stopped")).await;
    let gone = eventually(Duration::from_secs(2), || {
        !process_alive(pid) && inside.iter().all(|p| !process_alive(*p))
    })
    .await;
    assert!(
        gone,
        "left: {:?} of {inside:?}",
        inside
            .iter()
            .filter(|p| process_alive(**p))
            .collect::<Vec<_>>()
    );
    assert_eq!(fx.view().await["state"], "stopped");
    // And the session resumes on the next message.
    ws.say("back again").await;
    let result = ws.until_result().await;
    assert_eq!(result["event"]["result"], reply_to("back again"));
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The `seq` of a `claude` frame, read from its first bytes (`{"seq":N,…`) without parsing the
/// rest.
fn seq_prefix(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[tokio::test]
async fn a_socket_that_never_reads_is_dropped_and_memory_stays_bounded() {
    const FLOOD: usize = 100 << 20;
    // The session never waits for a socket, so a reader slower than the child is dropped too,
    // and on a loaded 2-core machine the test's reader can stall for a few hundred ms. At this
    // pace (3 s for the flood) such a stall stays within the reader's queue; unpaced, the child
    // writes faster than 100 MiB/s and the reader was seen dropped at 76 MiB.
    const PACE: usize = 32 << 20;
    const QUEUE_BYTES: usize = 8 << 20;
    const REPLAY_BYTES: usize = 8 << 20;
    // What the daemon may legitimately hold for this session: the replay ring and each socket's
    // queue (which share frames, so at most their sum), actix-ws's 32-frame channel per socket,
    // the stdout line buffer. That is under 26 MiB; the rest is slack for the allocator's
    // arenas. Holding the flood for the socket that never reads would take 100 MiB more.
    const BOUND_KIB: u64 = 40 << 10;
    let fx = fixture(|env| {
        env.set("websocket.queue_bytes", QUEUE_BYTES as i64);
        // Far more frames than the flood holds, so the byte cap is the one that must act.
        env.set("websocket.queue_frames", 8192);
        env.set("sessions.replay_bytes", REPLAY_BYTES as i64);
    })
    .await;
    let mut fast = fx.socket().await;
    let slow = fx.socket().await;
    // A first turn, so the baseline includes a running child and both sockets.
    fast.say("warm up").await;
    fast.until_result().await;
    let daemon = fx.daemon.pid();
    let baseline = status_kib(daemon, "VmRSS");
    // Writing 5 resets VmHWM to the current RSS (proc(5), Linux 4.0), so the peak read after
    // the flood is the flood's own, not that of password hashing at login.
    let hwm_reset = std::fs::write(format!("/proc/{daemon}/clear_refs"), "5").is_ok();

    let sent = Instant::now();
    fast.say(&format!("FLOOD:{FLOOD} PACE:{PACE}")).await;
    // The fast socket reads everything, unparsed but for the few small frames, and checks
    // that seq has no hole.
    let mut last_seq = None;
    let (mut frames, mut bytes, mut sampled) = (0usize, 0usize, baseline);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(text) = fast.next_text(left).await else {
            panic!(
                "the reading socket ended after {frames} frames, {bytes} bytes: {:?}",
                fast.closed
            );
        };
        frames += 1;
        bytes += text.len();
        // Small frames are parsed; the flood's own are `claude` frames, whose seq comes first.
        let small: Option<Value> =
            (text.len() < 4096).then(|| serde_json::from_str(&text).unwrap());
        let seq = match &small {
            Some(frame) => frame["seq"].as_u64(),
            None => seq_prefix(&text),
        }
        .unwrap_or_else(|| panic!("no seq: {text:.200}"));
        if let Some(last) = last_seq {
            assert_eq!(seq, last + 1, "a hole in seq");
        }
        last_seq = Some(seq);
        if frames % 256 == 0 {
            sampled = sampled.max(status_kib(daemon, "VmRSS"));
        }
        if small.as_ref().is_some_and(is_result) {
            break;
        }
    }
    let flood_time = sent.elapsed();
    let peak = if hwm_reset {
        status_kib(daemon, "VmHWM")
    } else {
        sampled.max(status_kib(daemon, "VmRSS"))
    };
    eprintln!(
        "flood: {frames} frames, {} MiB in {flood_time:?} to the reading socket; daemon RSS \
         baseline {} MiB, peak {} MiB (VmHWM reset: {hwm_reset}), highest sample {} MiB",
        bytes >> 20,
        baseline >> 10,
        peak >> 10,
        sampled >> 10
    );
    assert!(bytes >= FLOOD, "{bytes}");
    assert!(
        peak.saturating_sub(baseline) < BOUND_KIB,
        "daemon RSS grew by {} KiB (baseline {baseline} KiB, peak {peak} KiB)",
        peak.saturating_sub(baseline)
    );

    // The daemon dropped the socket that did not read (it logs why)...
    let dropped = fx.daemon.logs.wait_for(FRAME_DEADLINE, |lines| {
        lines
            .iter()
            .any(|l| l.contains("socket closed") && l.contains("too slow"))
            .then_some(())
    });
    assert!(dropped.is_some(), "no slow socket dropped");
    // ...and its client stays away a few seconds more, as a throttled background tab or a
    // stalled link does. Not a wait for an event: the stall is part of the scenario, and the
    // close frame must still be there when the client reads again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now the slow socket reads: what was buffered for it, then a 1013 close.
    let mut slow = slow;
    let (mut slow_frames, mut slow_bytes) = (0usize, 0usize);
    while let Some(text) = slow.next_text(Duration::from_secs(10)).await {
        slow_frames += 1;
        slow_bytes += text.len();
    }
    eprintln!(
        "the socket that did not read got {slow_frames} frames, {} KiB, then {:?}",
        slow_bytes >> 10,
        slow.closed
    );
    let (code, reason) = slow.closed.clone().expect("a close frame");
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("after="), "{reason}");
    assert!(slow_bytes < FLOOD / 2, "{slow_bytes}");
    // The session is unharmed.
    fast.say("still there").await;
    let result = fast.until_result().await;
    assert_eq!(result["event"]["result"], reply_to("still there"));
}

#[tokio::test]
async fn a_silent_turn_is_interrupted_after_the_turn_timeout() {
    let fx = fixture(|env| {
        env.set("sessions.turn_timeout", "1s");
    })
    .await;
    let mut ws = fx.socket().await;
    let sent = Instant::now();
    ws.say("SILENT").await;
    let pid = pid_of_idle(&ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await);
    let error = ws.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
    let waited = sent.elapsed();
    assert_eq!(error["error"], "turn_timeout", "{error}");
    // Timed from before the send, so the turn's silence is at least this long.
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    // The fake answers the interrupt as the CLI does: control_response, then the result.
    ws.until(FRAME_DEADLINE, |f| {
        claude_event(f, "control_response").is_some()
    })
    .await;
    let result = ws.until_result().await;
    assert_eq!(result["event"]["subtype"], "error_during_execution");
    ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await;
    eprintln!("turn_timeout error after {waited:?}");
    // The same child takes the next turn.
    ws.say("next").await;
    assert_eq!(ws.until_result().await["event"]["result"], reply_to("next"));
    assert_eq!(fx.view().await["pid"].as_u64(), Some(u64::from(pid)));
}

#[tokio::test]
async fn a_turn_that_ignores_the_interrupt_is_killed() {
    let fx = fixture(|env| {
        env.set("sessions.turn_timeout", "1s");
        env.set("sessions.stop_timeout", "500ms");
    })
    .await;
    let mut ws = fx.socket().await;
    let sent = Instant::now();
    ws.say("DEAF").await;
    let pid = pid_of_idle(&ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await);
    let first = ws.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
    assert_eq!(first["error"], "turn_timeout", "{first}");
    let second = ws.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
    assert_eq!(second["error"], "turn_timeout", "{second}");
    assert!(
        second["message"].as_str().unwrap().contains("killed"),
        "{second}"
    );
    // turn_timeout of silence, then stop_timeout for the unanswered interrupt.
    let waited = sent.elapsed();
    eprintln!("unanswered interrupt: killed after {waited:?}");
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    ws.until(FRAME_DEADLINE, |f| is_state(f, "stopped")).await;
    assert!(
        !ws.frames.iter().any(|f| is_state(f, "exited")),
        "a kill sashad asked for is no crash"
    );
    assert!(!ws.frames.iter().any(is_result));
    assert!(eventually(Duration::from_secs(2), || !process_alive(pid)).await);
    // The next message starts a new child, which works.
    ws.say("next").await;
    let new_pid = pid_of_idle(&ws.until(FRAME_DEADLINE, |f| is_state(f, "idle")).await);
    assert_ne!(new_pid, pid);
    assert_eq!(ws.until_result().await["event"]["result"], reply_to("next"));
}

#[tokio::test]
async fn rejected_credentials_are_reported_within_two_seconds() {
    let fx = fixture(|_| {}).await;
    let mut ws = fx.socket().await;
    ws.say("AUTHFAIL").await;
    ws.until(FRAME_DEADLINE, |f| {
        claude_event(f, "system").is_some_and(|e| e["subtype"] == "api_retry")
    })
    .await;
    let seen = Instant::now();
    let error = ws
        .until(Duration::from_secs(2), |f| f["type"] == "error")
        .await;
    let waited = seen.elapsed();
    eprintln!("credentials_rejected {waited:?} after the api_retry line");
    assert!(waited < Duration::from_secs(2));
    assert_eq!(error["error"], "credentials_rejected", "{error}");
    // The turn is interrupted rather than left to the CLI's ten retries. The error follows the
    // flushed needsReauth mark, so with the fake's instant answer the result may come first.
    let result = match ws.frames.iter().find(|f| is_result(f)).cloned() {
        Some(result) => result,
        None => ws.until_result().await,
    };
    assert_eq!(result["event"]["subtype"], "error_during_execution");
    // Marked (and flushed) before the error went out: no waiting here.
    let marked = fx.api.get("/api/claude/auth/status").await.expect(200).body;
    assert_eq!(marked["needsReauth"], true, "{marked}");
    fx.post_message("again")
        .await
        .expect_error(409, "credentials_rejected");
}

#[tokio::test]
async fn messages_sent_while_the_child_starts_are_queued_in_order() {
    let fx = fixture(|env| {
        env.set("sessions.queued_messages", 3);
        env.set("sessions.idle_timeout", "500ms");
    })
    .await;
    let mut ws = fx.socket().await;
    ws.say("warm up").await;
    ws.until_result().await;
    ws.until(FRAME_DEADLINE, |f| is_state(f, "stopped")).await;

    let mark = ws.frames.len();
    let texts = ["first", "second", "third", "fourth"];
    let messages: Vec<Value> = texts
        .iter()
        .map(|t| json!({"type": "user", "content": t}))
        .collect();
    ws.send_batch(&messages).await;
    let mut results = Vec::new();
    while results.len() < 3 {
        let result = ws.until_result().await;
        results.push(result["event"]["result"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        results,
        [reply_to("first"), reply_to("second"), reply_to("third")]
    );

    let frames = &ws.frames[mark..];
    let position = |pred: &dyn Fn(&Value) -> bool| frames.iter().position(pred);
    let echoes: Vec<(usize, &str)> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f["type"] == "user")
        .map(|(i, f)| (i, f["content"].as_str().unwrap()))
        .collect();
    let echoed: Vec<&str> = echoes.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        echoed,
        ["first", "second", "third"],
        "{}",
        summarize(frames)
    );
    // All three waited for the new child: each is echoed once it is up (after `idle`), in
    // the order sent, before the first turn starts.
    let idle = position(&|f| is_state(f, "idle")).unwrap();
    let busy = position(&|f| is_state(f, "busy")).unwrap();
    assert!(
        echoes.iter().all(|(i, _)| *i > idle && *i < busy),
        "echoes outside idle..busy:\n{}",
        summarize(frames)
    );
    // The fourth went past `sessions.queued_messages`: refused to this socket alone (no seq).
    let refused = position(&|f| is_error(f, "queue_full"))
        .unwrap_or_else(|| panic!("no queue_full:\n{}", summarize(frames)));
    assert_eq!(frames[refused].get("seq"), None);
}

#[tokio::test]
async fn a_full_queue_refuses_more_messages() {
    let fx = fixture(|env| {
        env.set("sessions.queued_messages", 2);
    })
    .await;
    let mut ws = fx.socket().await;
    ws.say("SILENT").await;
    ws.until(FRAME_DEADLINE, |f| is_state(f, "busy")).await;
    fx.post_message("one").await.expect(202);
    fx.post_message("two").await.expect(202);
    let refused = fx
        .post_message("three")
        .await
        .expect_error(429, "queue_full");
    assert!(refused.headers.contains_key("retry-after"));
    ws.say("four").await;
    let error = ws
        .until(FRAME_DEADLINE, |f| is_error(f, "queue_full"))
        .await;
    assert_eq!(error.get("seq"), None, "refused to this socket alone");

    fx.api
        .post(
            &format!("/api/sessions/{}/interrupt", fx.session),
            json!({}),
        )
        .await
        .expect(202);
    let interrupted = ws.until_result().await;
    assert_eq!(interrupted["event"]["subtype"], "error_during_execution");
    // The two accepted messages run next, in order; the refused ones never.
    for text in ["one", "two"] {
        assert_eq!(ws.until_result().await["event"]["result"], reply_to(text));
    }
    let echoed: Vec<&str> = ws
        .frames
        .iter()
        .filter(|f| f["type"] == "user")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert_eq!(echoed, ["SILENT", "one", "two"]);
}

//! Sessions with the real, pinned Claude Code CLI against the loopback mock API: the chat flow,
//! fan-out and replay, idle stop and resume (also across a daemon restart), interrupts,
//! rejected keys, shutdown, and the child's environment.

use std::time::Duration;

use serde_json::json;

use crate::common::client::Api;
use crate::common::daemon::{
    process_alive, process_cmdline, process_environ, processes_in_group, TestEnv,
};
use crate::common::mock_api::MockApi;
use crate::common::ws::{assistant_text, claude_event, is_result, seqs, Connect, FRAME_DEADLINE};

const KEY_A: &str = "sk-ant-api03-AliceKey000000000000000000000000000000000000000000000aaaa";
const KEY_B: &str = "sk-ant-api03-BobKey00000000000000000000000000000000000000000000000bbbb";

async fn pid_of(api: &Api, session: &str) -> Option<u32> {
    api.session(session).await["pid"].as_u64().map(|p| p as u32)
}

#[tokio::test]
async fn chat_streams_the_reply_and_reuses_the_child() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_real_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let view = alice.session(&session).await;
    assert_eq!(view["state"], "stopped");
    assert_eq!(view["project"], "demo");

    let mut ws = alice.socket(&session).await;
    ws.say("Hello there").await;
    let echo = ws.until(FRAME_DEADLINE, |f| f["type"] == "user").await;
    assert_eq!(echo["content"], "Hello there");
    let result = ws.until_result().await;
    assert_eq!(result["event"]["subtype"], "success");
    assert!(ws
        .frames
        .iter()
        .any(|f| claude_event(f, "system").is_some_and(|e| e["subtype"] == "init")));
    assert!(
        ws.frames
            .iter()
            .any(|f| claude_event(f, "stream_event").is_some()),
        "partial messages streamed"
    );
    assert_eq!(assistant_text(&ws.frames), "Hello from the mock.");
    let all = seqs(&ws.frames);
    assert_eq!(
        all,
        (all[0]..all[0] + all.len() as u64).collect::<Vec<_>>(),
        "seq has no holes"
    );
    let user_seq = echo["seq"].as_u64().unwrap();
    assert!(ws
        .frames
        .iter()
        .filter(|f| f["type"] == "claude")
        .all(|f| f["seq"].as_u64().unwrap() > user_seq));

    let pid = pid_of(&alice, &session).await.expect("a child runs");
    let cmdline = process_cmdline(pid);
    assert!(
        cmdline.iter().any(|a| a == "--include-partial-messages"),
        "{cmdline:?}"
    );
    assert!(
        !cmdline.iter().any(|a| a.contains(KEY_A)),
        "no secret in argv"
    );

    // The second prompt, this time over REST, goes to the same process.
    let answer = alice
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({"content": "ECHO again"}),
        )
        .await
        .expect(202);
    assert!(answer.body["seq"].as_u64().unwrap() > user_seq);
    ws.until_result().await;
    assert_eq!(pid_of(&alice, &session).await, Some(pid));
    let requests = mock.messages_requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.api_key() == Some(KEY_A)));
    assert_eq!(alice.session(&session).await["state"], "idle");
    daemon.assert_logs_free_of(&[KEY_A]);
}

#[tokio::test]
async fn two_sockets_see_the_same_sequence_and_reconnects_resume_exactly() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_real_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut a = alice.socket(&session).await;
    let mut b = alice.socket(&session).await;
    a.say("Hello there").await;
    a.until_result().await;
    b.until_result().await;
    assert_eq!(seqs(&a.frames), seqs(&b.frames));
    assert_eq!(a.frames, b.frames, "identical frames in identical order");

    // A tab that saw up to N reconnects and gets exactly the events after N, then live ones.
    let n = seqs(&a.frames)[seqs(&a.frames).len() / 2];
    drop(b);
    let mut c = Connect::bearer(
        &daemon.base_url(),
        &session,
        alice.token.as_deref().unwrap(),
    )
    .after(n)
    .open()
    .await;
    let last = *seqs(&a.frames).last().unwrap();
    c.until(FRAME_DEADLINE, |f| f["seq"].as_u64() == Some(last))
        .await;
    assert_eq!(seqs(&c.frames), ((n + 1)..=last).collect::<Vec<_>>());
    assert!(c.frames.iter().all(|f| f["type"] != "gap"));
    a.say("ECHO second").await;
    a.until_result().await;
    c.until_result().await;
    let a_after: Vec<u64> = seqs(&a.frames).into_iter().filter(|s| *s > n).collect();
    assert_eq!(seqs(&c.frames), a_after, "no duplicate, no hole");
}

#[tokio::test]
async fn an_idle_child_stops_and_the_next_message_resumes_it_also_after_a_restart() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_real_cli(&mock);
    env.set("sessions.idle_timeout", "1s");
    let mut daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("remember the word PINEAPPLE").await;
    ws.until_result().await;
    let first_pid = pid_of(&alice, &session).await.unwrap();
    ws.until(FRAME_DEADLINE, |f| {
        f["type"] == "state" && f["state"] == "stopped"
    })
    .await;
    assert!(!process_alive(first_pid), "the idle child is gone");
    assert_eq!(alice.session(&session).await["resumable"], true);

    ws.say("ECHO what was the word").await;
    ws.until_result().await;
    let second_pid = pid_of(&alice, &session).await.unwrap_or(0);
    assert_ne!(second_pid, first_pid);
    let last = mock.messages_requests().pop().unwrap();
    let text = last.user_texts().join(" | ");
    assert!(
        text.contains("PINEAPPLE"),
        "the resumed request carries the earlier turn: {text}"
    );
    let echo = assistant_text(&ws.frames);
    assert!(echo.contains("PINEAPPLE"), "{echo}");
    let seq_before = *seqs(&ws.frames).last().unwrap();

    // Across a daemon restart: the session, its Claude session id and its seq survive.
    assert_eq!(daemon.stop().code(), Some(0));
    daemon = env.start();
    let alice = Api {
        base: daemon.base_url(),
        ..alice
    };
    let view = alice.session(&session).await;
    assert_eq!(view["state"], "stopped");
    assert!(view["lastSeq"].as_u64().unwrap() >= seq_before);
    let mut ws = Connect::bearer(
        &daemon.base_url(),
        &session,
        alice.token.as_deref().unwrap(),
    )
    .after(view["lastSeq"].as_u64().unwrap())
    .open()
    .await;
    ws.say("ECHO and after the restart").await;
    ws.until_result().await;
    assert!(
        seqs(&ws.frames)[0] > seq_before,
        "seq continues after a restart"
    );
    let pid = pid_of(&alice, &session).await.unwrap();
    assert!(
        process_cmdline(pid)
            .iter()
            .any(|a| a.starts_with("--resume=")),
        "{:?}",
        process_cmdline(pid)
    );
    let last = mock.messages_requests().pop().unwrap();
    assert!(last.user_texts().join(" ").contains("PINEAPPLE"));
}

#[tokio::test]
async fn interrupt_mid_stream_ends_the_turn_quickly() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_real_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("please be SLOW").await;
    ws.until(FRAME_DEADLINE, |f| {
        claude_event(f, "stream_event").is_some_and(|e| e["event"]["delta"]["type"] == "text_delta")
    })
    .await;
    let sent = std::time::Instant::now();
    ws.send(json!({"type": "interrupt"})).await;
    ws.until(Duration::from_secs(2), |f| {
        claude_event(f, "control_response").is_some()
    })
    .await;
    let result = ws.until(Duration::from_secs(2), is_result).await;
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(result["event"]["subtype"], "error_during_execution");
    // The child lives on and takes the next turn.
    ws.until(FRAME_DEADLINE, |f| {
        f["type"] == "state" && f["state"] == "idle"
    })
    .await;
    ws.say("Hello again").await;
    ws.until_result().await;
    // Interrupting when nothing runs is a clear 409.
    alice
        .post(&format!("/api/sessions/{session}/interrupt"), json!({}))
        .await
        .expect_error(409, "not_busy");
}

#[tokio::test]
async fn a_key_rejected_during_a_turn_is_reported_at_once() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_real_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    mock.reject_messages_for(KEY_A);
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("Hello there").await;
    ws.until(FRAME_DEADLINE, |f| {
        claude_event(f, "system").is_some_and(|e| e["subtype"] == "api_retry")
    })
    .await;
    let seen = std::time::Instant::now();
    let error = ws
        .until(Duration::from_secs(2), |f| f["type"] == "error")
        .await;
    assert!(seen.elapsed() < Duration::from_secs(2));
    assert_eq!(error["error"], "credentials_rejected");
    // The error follows the flushed needsReauth mark: the turn's result may come before it.
    if !ws.frames.iter().any(is_result) {
        ws.until(FRAME_DEADLINE, is_result).await;
    }
    let status = alice.get("/api/claude/auth/status").await.expect(200);
    assert_eq!(status.body["needsReauth"], true);
    assert_eq!(status.body["authenticated"], false);
    // The next message is refused until a new key is connected.
    alice
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({"content": "again"}),
        )
        .await
        .expect_error(409, "credentials_rejected");
}

#[tokio::test]
async fn sigterm_stops_every_child_and_exits_zero() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_real_cli(&mock);
    let mut daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let mut pids = Vec::new();
    let mut sockets = Vec::new();
    for name in ["one", "two", "three"] {
        let session = alice.new_session(name).await;
        let mut ws = alice.socket(&session).await;
        ws.say("Hello there").await;
        ws.until_result().await;
        pids.push(pid_of(&alice, &session).await.unwrap());
        sockets.push(ws);
    }
    // Each child is a sandbox: its monitor's group, and the processes of its pid namespace
    // (the CLI among them).
    let mut all: Vec<u32> = pids.iter().flat_map(|p| processes_in_group(*p)).collect();
    all.extend(
        pids.iter()
            .flat_map(|p| crate::common::daemon::processes_in_sandbox(*p)),
    );
    assert!(all.len() >= 6, "{all:?}");
    assert!(
        all.iter().any(|p| process_cmdline(*p)
            .iter()
            .any(|a| a.ends_with("claude.exe"))),
        "the CLI processes are among them"
    );
    assert_eq!(daemon.stop().code(), Some(0), "{}", daemon.logs.text());
    for pid in &all {
        assert!(!process_alive(*pid), "process {pid} outlived the daemon");
    }
    for pid in &pids {
        assert!(processes_in_group(*pid).is_empty());
    }
    for mut ws in sockets {
        let (code, _) = ws.until_closed(Duration::from_secs(10)).await;
        assert!(code == 1001 || code == 1006, "{code}");
    }
}

#[tokio::test]
async fn the_child_environment_holds_only_its_owner_credential() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_real_cli(&mock);
    env.set("auth.registration", "open");
    env.master_key_file = Some(env.key_file("master"));
    env.env.push((
        "SASHAD_MASTER_KEY_FILE".into(),
        env.master_key_file
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .into(),
    ));
    env.env.push((
        "ANTHROPIC_API_KEY".into(),
        "sk-ant-leftover-from-the-operators-shell".into(),
    ));
    env.env.push(("CLAUDECODE".into(), "1".into()));
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user_with_key("alice", KEY_A).await;
    let bob = api.user_with_key("bob", KEY_B).await;
    let sa = alice.new_session("demo").await;
    let sb = bob.new_session("demo").await;
    for (user, session) in [(&alice, &sa), (&bob, &sb)] {
        let mut ws = user.socket(session).await;
        ws.say("Hello there").await;
        ws.until_result().await;
    }
    let master = std::fs::read_to_string(env.master_key_file.as_ref().unwrap()).unwrap();
    let pid = pid_of(&alice, &sa).await.unwrap();
    let environ = process_environ(pid);
    assert!(
        environ.contains(&format!("ANTHROPIC_API_KEY={KEY_A}")),
        "{environ:?}"
    );
    assert!(environ.contains(&format!("ANTHROPIC_BASE_URL={}", mock.base_url())));
    assert!(environ
        .iter()
        .any(|v| v.starts_with("HOME=") && v.contains("/users/")));
    for var in &environ {
        assert!(!var.starts_with("SASHAD"), "{var}");
        assert!(!var.starts_with("CLAUDECODE="), "{var}");
        assert!(!var.contains(KEY_B), "another user's key");
        assert!(!var.contains(master.trim()), "the master key");
        assert!(
            !var.contains("leftover"),
            "the operator's environment leaked: {var}"
        );
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert!(
        cwd.ends_with("demo") && cwd.to_string_lossy().contains("/projects/"),
        "{cwd:?}"
    );
}

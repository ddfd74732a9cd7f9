//! Edge cases of the sessions surface, REST and WebSocket (DESIGN §4, §5, §7; issue 3), each
//! asserting what a client or an operator sees: status codes and error codes, the frames and
//! close codes a socket gets, which processes exist, what is on disk, what the daemon logged.
//!
//! Most tests run the fake CLI, which starts in milliseconds; only the credential change uses
//! the real one, because the proof there is the resumed conversation the mock API receives.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::client::Api;
use crate::common::daemon::{process_alive, process_cmdline, process_environ, Daemon, TestEnv};
use crate::common::mock_api::MockApi;
use crate::common::ws::{assistant_text, claude_event, seqs, Connect, Socket, FRAME_DEADLINE};

const KEY_A: &str = "sk-ant-api03-AliceKey000000000000000000000000000000000000000000000aaaa";
const KEY_A2: &str = "sk-ant-api03-AliceSecondKey0000000000000000000000000000000000000a2a2";
const KEY_B: &str = "sk-ant-api03-BobKey00000000000000000000000000000000000000000000000bbbb";
const PASSWORD: &str = "correct horse battery";

/// How long a process may take to disappear after the daemon said it stopped it.
const GONE_DEADLINE: Duration = Duration::from_secs(15);

/// A bearer-authenticated socket on `session`.
async fn socket(daemon: &Daemon, api: &Api, session: &str) -> Socket {
    Connect::bearer(&daemon.base_url(), session, token(api))
        .open()
        .await
}

/// The client's bearer token.
fn token(api: &Api) -> &str {
    api.token.as_deref().unwrap()
}

/// The pid of the session's child, if one runs.
async fn pid_of(api: &Api, session: &str) -> Option<u32> {
    api.session(session).await["pid"].as_u64().map(|p| p as u32)
}

/// The caller's user id.
async fn user_id(api: &Api) -> String {
    let me = api.get("/api/auth/me").await.expect(200);
    me.body["id"].as_str().unwrap().to_owned()
}

/// Polls `/proc` until `pid` is gone; false if it is still there at the deadline.
async fn wait_gone(pid: u32, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while process_alive(pid) {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Reads until a `state` frame with `state`.
async fn until_state(ws: &mut Socket, state: &str) -> Value {
    ws.until(FRAME_DEADLINE, |f| {
        f["type"] == "state" && f["state"] == state
    })
    .await
}

/// The `session_id` of the last `system/init` line a socket saw.
fn last_init_session_id(frames: &[Value]) -> String {
    frames
        .iter()
        .rev()
        .find_map(|f| claude_event(f, "system").filter(|e| e["subtype"] == "init"))
        .and_then(|e| e["session_id"].as_str())
        .expect("an init line")
        .to_owned()
}

/// Every directory under `root`, relative to it, sorted.
fn dirs_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Tries a WebSocket upgrade to `path_and_query` with raw headers; answers the HTTP status
/// (101 when upgraded) and the error body of a refusal.
async fn upgrade(daemon: &Daemon, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let url = format!(
        "{}{path_and_query}",
        daemon.base_url().replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => (101, Value::Null),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// One raw frame of a client message: text opcode first, continuation after.
fn fragment(data: &str, first: bool, last: bool) -> Message {
    let opcode = if first { Data::Text } else { Data::Continue };
    Message::Frame(Frame::message(data.to_owned(), OpCode::Data(opcode), last))
}

// ---- projects ----

#[tokio::test]
async fn projects_are_plain_folders_and_bad_ids_create_nothing() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let uid = user_id(&alice).await;
    let workspace = env.data_dir().join("workspace");

    alice.create_project("demo").await.expect(201);
    let list = alice.get("/api/projects").await.expect(200);
    assert_eq!(list.body, json!([{"id": "demo"}]));
    alice
        .create_project("demo")
        .await
        .expect_error(409, "project_exists");

    let too_long = "a".repeat(65);
    for bad in [
        "..",
        "../x",
        "/etc",
        "a/b",
        "",
        &too_long,
        ".hidden",
        "../../escape",
    ] {
        alice
            .create_project(bad)
            .await
            .expect_error(400, "invalid_project_id");
        alice
            .post("/api/sessions", json!({"project": bad}))
            .await
            .expect_error(400, "invalid_project_id");
    }
    // Only the one real project exists on disk: nothing above, beside or inside it.
    let expected = vec![
        "projects".to_owned(),
        format!("projects/{uid}"),
        format!("projects/{uid}/demo"),
    ];
    let on_disk: Vec<String> = dirs_under(&workspace)
        .into_iter()
        .filter(|d| !d.starts_with("users"))
        .collect();
    assert_eq!(on_disk, expected);
    assert!(!env.data_dir().join("x").exists());
    assert!(!env.dir.path().join("escape").exists());
    let list = alice.get("/api/projects").await.expect(200);
    assert_eq!(list.body, json!([{"id": "demo"}]));

    alice
        .post("/api/sessions", json!({"project": "missing"}))
        .await
        .expect_error(404, "project_not_found");
    assert!(!workspace
        .join("projects")
        .join(&uid)
        .join("missing")
        .exists());
    alice
        .post("/api/sessions", json!({"project": "demo"}))
        .await
        .expect(201);
}

#[tokio::test]
async fn a_symlink_planted_in_the_projects_folder_is_never_followed() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let uid = user_id(&alice).await;
    alice.create_project("demo").await.expect(201);

    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let projects = env.data_dir().join("workspace/projects").join(&uid);
    std::os::unix::fs::symlink(&outside, projects.join("escape")).unwrap();

    let list = alice.get("/api/projects").await.expect(200);
    assert_eq!(list.body, json!([{"id": "demo"}]), "the link is not listed");
    alice
        .post("/api/sessions", json!({"project": "escape"}))
        .await
        .expect_error(400, "invalid_project_id");
    let sessions = alice.get("/api/sessions").await.expect(200);
    assert_eq!(sessions.body, json!([]), "no session was created on it");
    // Creating it does not go through the link either.
    let answer = alice.create_project("escape").await;
    assert_ne!(answer.status.as_u16(), 201, "{:?}", answer.body);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

// ---- ownership ----

#[tokio::test]
async fn another_users_session_is_a_404_everywhere() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("auth.registration", "open");
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user_with_key("alice", KEY_A).await;
    let bob = api.user_with_key("bob", KEY_B).await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;
    ws.say("hello").await;
    ws.until_result().await;
    let pid = pid_of(&alice, &session).await.expect("a child runs");
    let last_seq = alice.session(&session).await["lastSeq"].clone();

    let path = format!("/api/sessions/{session}");
    bob.get(&path).await.expect_error(404, "not_found");
    bob.delete(&path).await.expect_error(404, "not_found");
    bob.post(&format!("{path}/messages"), json!({"content": "hi"}))
        .await
        .expect_error(404, "not_found");
    bob.post(&format!("{path}/interrupt"), json!({}))
        .await
        .expect_error(404, "not_found");
    // The same answer as for an id that does not exist at all: nothing to probe.
    let unknown = bob
        .get("/api/sessions/00000000000000000000000000000000")
        .await;
    assert_eq!(unknown.status.as_u16(), 404);
    assert_eq!(
        bob.get(&path).await.body,
        unknown.body,
        "another user's session looks like a missing one"
    );
    assert_eq!(
        Connect::bearer(&daemon.base_url(), &session, token(&bob))
            .try_open()
            .await
            .err(),
        Some(404),
        "refused before the upgrade"
    );
    let list = bob.get("/api/sessions").await.expect(200);
    assert_eq!(list.body, json!([]));
    // Projects are per user too: alice's "demo" is not bob's.
    assert_eq!(bob.get("/api/projects").await.body, json!([]));
    bob.post("/api/sessions", json!({"project": "demo"}))
        .await
        .expect_error(404, "project_not_found");

    // Nothing bob did touched alice's session.
    let view = alice.session(&session).await;
    assert_eq!(view["state"], "idle");
    assert_eq!(
        view["lastSeq"], last_seq,
        "bob's message never reached the session"
    );
    assert_eq!(view["pid"], pid);
    assert!(process_alive(pid));
    let list = alice.get("/api/sessions").await.expect(200);
    assert_eq!(list.body.as_array().unwrap().len(), 1);
}

// ---- sessions ----

#[tokio::test]
async fn creating_a_session_needs_a_credential_valid_options_and_room() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("limits.sessions_per_user", 2);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PASSWORD).await;
    alice.create_project("demo").await.expect(201);

    alice
        .post("/api/sessions", json!({"project": "demo"}))
        .await
        .expect_error(409, "no_credentials");
    alice.set_api_key(KEY_A).await.expect(200);

    for model in [
        "",
        "--dangerously-skip-permissions",
        "opus; rm -rf /",
        "a b",
    ] {
        alice
            .post("/api/sessions", json!({"project": "demo", "model": model}))
            .await
            .expect_error(400, "invalid_model");
    }
    for mode in ["", "yolo", "--resume", "PLAN"] {
        alice
            .post(
                "/api/sessions",
                json!({"project": "demo", "permissionMode": mode}),
            )
            .await
            .expect_error(400, "invalid_permission_mode");
    }
    assert_eq!(alice.get("/api/sessions").await.body, json!([]));

    let first = alice
        .post(
            "/api/sessions",
            json!({"project": "demo", "model": "sonnet", "permissionMode": "plan"}),
        )
        .await
        .expect(201);
    assert_eq!(first.body["model"], "sonnet");
    assert_eq!(first.body["permissionMode"], "plan");
    assert_eq!(first.body["state"], "stopped");
    alice
        .post("/api/sessions", json!({"project": "demo"}))
        .await
        .expect(201);
    let refused = alice
        .post("/api/sessions", json!({"project": "demo"}))
        .await
        .expect_error(429, "session_limit");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        alice
            .get("/api/sessions")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Deleting one makes room again.
    let id = first.body["id"].as_str().unwrap();
    alice
        .delete(&format!("/api/sessions/{id}"))
        .await
        .expect(204);
    alice
        .post("/api/sessions", json!({"project": "demo"}))
        .await
        .expect(201);
}

#[tokio::test]
async fn delete_stops_the_child_closes_the_sockets_and_forgets_the_session() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let keep = alice.new_session("other").await;
    let mut a = socket(&daemon, &alice, &session).await;
    let mut b = socket(&daemon, &alice, &session).await;
    a.say("hello").await;
    a.until_result().await;
    b.until_result().await;
    let pid = pid_of(&alice, &session).await.expect("a child runs");

    let path = format!("/api/sessions/{session}");
    alice.delete(&path).await.expect(204);
    // DELETE answers once the child has been reaped.
    assert!(!process_alive(pid), "the child outlived DELETE");
    for ws in [&mut a, &mut b] {
        let (code, reason) = ws.until_closed(Duration::from_secs(10)).await;
        assert_eq!(code, 1001, "{reason}");
    }
    alice.get(&path).await.expect_error(404, "not_found");
    alice.delete(&path).await.expect_error(404, "not_found");
    alice
        .post(&format!("{path}/messages"), json!({"content": "hi"}))
        .await
        .expect_error(404, "not_found");
    let list = alice.get("/api/sessions").await.expect(200);
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![keep.as_str()]);
    assert_eq!(
        Connect::bearer(&daemon.base_url(), &session, token(&alice))
            .try_open()
            .await
            .err(),
        Some(404)
    );
}

#[tokio::test]
async fn disconnecting_claude_stops_only_that_users_children() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("auth.registration", "open");
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user_with_key("alice", KEY_A).await;
    let bob = api.user_with_key("bob", KEY_B).await;
    let mut alices = Vec::new();
    for project in ["one", "two"] {
        let session = alice.new_session(project).await;
        let mut ws = socket(&daemon, &alice, &session).await;
        ws.say("hello").await;
        ws.until_result().await;
        let pid = pid_of(&alice, &session).await.unwrap();
        alices.push((session, ws, pid));
    }
    let bobs = bob.new_session("demo").await;
    let mut bws = socket(&daemon, &bob, &bobs).await;
    bws.say("hello").await;
    bws.until_result().await;
    let bob_pid = pid_of(&bob, &bobs).await.unwrap();

    alice.delete("/api/claude/auth").await.expect(204);
    for (session, ws, pid) in &mut alices {
        // The DELETE answers after the children are gone.
        assert!(!process_alive(*pid), "child {pid} outlived the credential");
        until_state(ws, "stopped").await;
        assert_eq!(alice.session(session).await["state"], "stopped");
        alice
            .post(
                &format!("/api/sessions/{session}/messages"),
                json!({"content": "again"}),
            )
            .await
            .expect_error(409, "no_credentials");
    }
    assert!(process_alive(bob_pid), "bob's child is not alice's");
    assert_eq!(bob.session(&bobs).await["state"], "idle");
    bws.say("still here").await;
    bws.until_result().await;
    assert_eq!(pid_of(&bob, &bobs).await, Some(bob_pid));
}

#[tokio::test]
async fn a_message_must_be_text_or_content_blocks_within_the_size_cap() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("sessions.max_message_bytes", 4096);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let path = format!("/api/sessions/{session}/messages");

    for content in [
        json!(5),
        json!(null),
        json!(""),
        json!("   "),
        json!({"text": "hi"}),
        json!([]),
        json!(["hi"]),
        json!([{"text": "no type"}]),
        json!([{"type": 7}]),
    ] {
        alice
            .post(&path, json!({"content": content}))
            .await
            .expect_error(400, "invalid_message");
    }
    // Not a message at all.
    alice
        .post(&path, json!({"text": "hi"}))
        .await
        .expect_error(400, "invalid_json");
    alice
        .post(&path, json!({"content": "x".repeat(10_000)}))
        .await
        .expect_error(413, "payload_too_large");
    // The cap is on the whole body (config/sashad.toml), as it is on the whole socket message:
    // one byte over is refused.
    let framing = json!({"content": ""}).to_string().len();
    alice
        .post(&path, json!({"content": "x".repeat(4096 - framing + 1)}))
        .await
        .expect_error(413, "payload_too_large");
    // None of these entered the session's history or started a child.
    let view = alice.session(&session).await;
    assert_eq!(view["lastSeq"], 0, "{view}");
    assert_eq!(view["state"], "stopped");

    let mut ws = socket(&daemon, &alice, &session).await;
    alice
        .post(
            &path,
            json!({"content": [{"type": "text", "text": "blocks work"}]}),
        )
        .await
        .expect(202);
    let echo = ws.until(FRAME_DEADLINE, |f| f["type"] == "user").await;
    // `starting` is 1 and `idle` 2: a message that waits for a new child is echoed once the
    // child is up to run it.
    assert_eq!(echo["seq"], 3, "the first message of the session");
    assert_eq!(echo["content"][0]["text"], "blocks work");
    ws.until_result().await;
    assert!(assistant_text(&ws.frames).contains("blocks work"));
    // A body of exactly the cap passes.
    let at_cap = "y".repeat(4096 - framing);
    alice
        .post(&path, json!({"content": at_cap}))
        .await
        .expect(202);
    let echo = ws
        .until(FRAME_DEADLINE, |f| f["type"] == "user" && f["seq"] != 1)
        .await;
    assert_eq!(echo["content"], at_cap);
    ws.until_result().await;
}

// ---- live children ----

#[tokio::test]
async fn live_children_limit_evicts_an_idle_child_and_refuses_when_all_are_busy() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("limits.live_children", 1);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let one = alice.new_session("one").await;
    let two = alice.new_session("two").await;
    let mut ws1 = socket(&daemon, &alice, &one).await;
    let mut ws2 = socket(&daemon, &alice, &two).await;

    ws1.say("hello one").await;
    ws1.until_result().await;
    until_state(&mut ws1, "idle").await;
    let pid1 = pid_of(&alice, &one).await.unwrap();
    let claude_id = last_init_session_id(&ws1.frames);

    // The second session's message takes the only slot from the idle first child.
    alice
        .post(
            &format!("/api/sessions/{two}/messages"),
            json!({"content": "hello two"}),
        )
        .await
        .expect(202);
    until_state(&mut ws1, "stopped").await;
    ws2.until_result().await;
    assert!(
        wait_gone(pid1, GONE_DEADLINE).await,
        "evicted child {pid1} lives"
    );
    let view = alice.session(&one).await;
    assert_eq!(view["state"], "stopped");
    assert_eq!(view["resumable"], true);
    let pid2 = pid_of(&alice, &two).await.unwrap();

    // The first session's next message resumes its conversation, evicting the second.
    ws1.say("hello again").await;
    ws1.until_result().await;
    until_state(&mut ws2, "stopped").await;
    assert!(wait_gone(pid2, GONE_DEADLINE).await);
    let pid1b = pid_of(&alice, &one).await.unwrap();
    assert_ne!(pid1b, pid1);
    let cmdline = process_cmdline(pid1b);
    assert!(
        cmdline.contains(&format!("--resume={claude_id}")),
        "{cmdline:?}"
    );
    assert_eq!(last_init_session_id(&ws1.frames), claude_id);

    // A busy child is never evicted: the other session is refused.
    ws1.say("SILENT please").await;
    until_state(&mut ws1, "busy").await;
    let refused = alice
        .post(
            &format!("/api/sessions/{two}/messages"),
            json!({"content": "let me in"}),
        )
        .await
        .expect_error(429, "session_limit");
    assert!(refused.headers.contains_key("retry-after"));
    ws2.say("let me in too").await;
    let error = ws2.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
    assert_eq!(error["error"], "session_limit", "{error}");
    assert!(
        !ws2.frames
            .iter()
            .any(|f| f["type"] == "user" && f["content"] == "let me in too"),
        "a refused message is never echoed"
    );
    assert_eq!(pid_of(&alice, &one).await, Some(pid1b));
    assert_eq!(alice.session(&one).await["state"], "busy");
    assert_eq!(pid_of(&alice, &two).await, None);

    // Once the turn is over, the slot can be taken again.
    ws1.send(json!({"type": "interrupt"})).await;
    ws1.until_result().await;
    until_state(&mut ws1, "idle").await;
    ws2.say("now").await;
    ws2.until_result().await;
    until_state(&mut ws1, "stopped").await;
}

// ---- WebSocket authentication ----

#[tokio::test]
async fn socket_auth_takes_a_bearer_or_a_cookie_with_origin_and_never_a_url_token() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let token = token(&alice);
    let base = daemon.base_url();
    let with_cookie = |origin: Option<&'static str>| Connect {
        base_url: &base,
        session: &session,
        after: None,
        bearer: None,
        cookie: Some(token),
        origin,
    };
    let mut ws = Connect::bearer(&base, &session, token).open().await;
    ws.say("hello").await;
    ws.until_result().await;

    let origin = daemon.origin();
    let mut ws = Connect {
        origin: Some(&origin),
        ..with_cookie(None)
    }
    .open()
    .await;
    ws.say("ECHO by cookie").await;
    ws.until_result().await;
    assert_eq!(with_cookie(None).try_open().await.err(), Some(403));
    assert_eq!(
        with_cookie(Some("http://evil.example"))
            .try_open()
            .await
            .err(),
        Some(403)
    );
    // A cookie for another port on the same host is another origin.
    assert_eq!(
        with_cookie(Some("http://127.0.0.1:1"))
            .try_open()
            .await
            .err(),
        Some(403)
    );

    let path = format!("/ws/sessions/{session}");
    let (status, body) = upgrade(&daemon, &path, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = upgrade(&daemon, &format!("{path}?token={token}"), &[]).await;
    assert_eq!(
        status, 401,
        "a token in the URL is not a credential: {body}"
    );
    let (status, _) = upgrade(&daemon, &format!("{path}?after=0&token={token}"), &[]).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {token}");
    let (status, body) = upgrade(
        &daemon,
        &format!("{path}?after=0&foo=1"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query")),
        "unknown query keys are refused: {body}"
    );
    // Not even beside a valid header: a client putting tokens in URLs is told at once.
    let (status, _) = upgrade(
        &daemon,
        &format!("{path}?token={token}"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = upgrade(
        &daemon,
        &format!("{path}?after=0"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 101);

    // A logged-out token opens nothing.
    alice.post("/api/auth/logout", json!({})).await.expect(204);
    assert_eq!(
        Connect::bearer(&base, &session, token)
            .try_open()
            .await
            .err(),
        Some(401)
    );
    daemon.assert_logs_free_of(&[token]);
}

// ---- WebSocket protocol ----

#[tokio::test]
async fn a_fragmented_message_is_reassembled_into_one_user_message() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;

    ws.send_message(fragment(r#"{"type":"user","con"#, true, false))
        .await;
    // A control frame may come between fragments (RFC 6455 §5.4).
    ws.send_message(Message::Ping(b"mid".to_vec().into())).await;
    ws.send_message(fragment(r#"tent":"hello in thr"#, false, false))
        .await;
    ws.send_message(fragment(r#"ee pieces"}"#, false, true))
        .await;
    ws.until_result().await;
    let users: Vec<&Value> = ws.frames.iter().filter(|f| f["type"] == "user").collect();
    assert_eq!(users.len(), 1, "one message, not three");
    assert_eq!(users[0]["content"], "hello in three pieces");
    assert!(ws.frames.iter().all(|f| f["type"] != "error"));
    assert!(
        assistant_text(&ws.frames).contains("hello in three pieces"),
        "{}",
        assistant_text(&ws.frames)
    );
}

#[tokio::test]
async fn a_message_over_the_cap_closes_the_socket_with_1009() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("sessions.max_message_bytes", 4096);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;

    // One frame over the cap.
    let mut ws = socket(&daemon, &alice, &session).await;
    ws.say(&"x".repeat(5000)).await;
    let (code, reason) = ws.until_closed(FRAME_DEADLINE).await;
    assert_eq!(code, 1009, "{reason}");

    // Fragments each under the cap, together over it.
    let mut ws = socket(&daemon, &alice, &session).await;
    let chunk = "y".repeat(1500);
    ws.send_message(fragment(
        &format!(r#"{{"type":"user","content":"{chunk}"#),
        true,
        false,
    ))
    .await;
    ws.send_message(fragment(&chunk, false, false)).await;
    ws.send_message(fragment(&format!(r#"{chunk}"}}"#), false, true))
        .await;
    let (code, reason) = ws.until_closed(FRAME_DEADLINE).await;
    assert_eq!(code, 1009, "{reason}");

    // Just under the cap passes.
    let mut ws = socket(&daemon, &alice, &session).await;
    ws.say(&format!("ECHO {}", "z".repeat(3000))).await;
    ws.until_result().await;
    let users: Vec<&Value> = ws.frames.iter().filter(|f| f["type"] == "user").collect();
    assert_eq!(users.len(), 1, "the oversized ones never became messages");
    assert_eq!(
        users[0]["seq"], 3,
        "after `starting` and `idle`, and no seq taken before"
    );
}

#[tokio::test]
async fn a_malformed_message_gets_a_private_error_and_the_socket_stays_usable() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;
    let mut other = socket(&daemon, &alice, &session).await;

    let bad = [
        Message::Text("not json".into()),
        Message::Text(r#"{"type":"user"}"#.into()),
        Message::Text(r#"{"type":"shout","content":"hi"}"#.into()),
        Message::Text(r#"{"type":"user","content":"hi","extra":1}"#.into()),
        Message::Text(r#"{"type":"user","content":5}"#.into()),
        Message::Text(r#"{"type":"user","content":[]}"#.into()),
    ];
    let n = bad.len();
    for message in bad {
        ws.send_message(message).await;
        let error = ws.until(FRAME_DEADLINE, |f| f["type"] == "error").await;
        assert_eq!(error["error"], "invalid_message", "{error}");
        assert!(
            error.get("seq").is_none(),
            "not part of the history: {error}"
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(ws.closed.is_none());

    ws.say("hello after all that").await;
    ws.until_result().await;
    other.until_result().await;
    assert_eq!(ws.frames.iter().filter(|f| f["type"] == "error").count(), n);
    assert!(
        other.frames.iter().all(|f| f["type"] != "error"),
        "another tab does not see this one's mistakes"
    );
    let users: Vec<&Value> = ws.frames.iter().filter(|f| f["type"] == "user").collect();
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0]["seq"], 3,
        "refused messages took no seq (1 and 2 are starting and idle)"
    );
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;
    let message = json!({"type": "user", "content": "hi"}).to_string();
    ws.send_message(Message::Binary(message.into_bytes().into()))
        .await;
    let (code, reason) = ws.until_closed(FRAME_DEADLINE).await;
    assert_eq!(code, 1003, "{reason}");
    assert_eq!(alice.session(&session).await["lastSeq"], 0);
}

#[tokio::test]
async fn heartbeat_pings_a_live_client_and_drops_a_silent_one() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("websocket.ping_interval", "200ms");
    env.set("websocket.client_timeout", "1s");
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;

    // A client that reads (and so answers pings) stays connected well past the timeout.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        match ws.next_message(Duration::from_secs(5)).await {
            Some(Message::Ping(_)) => pings += 1,
            Some(Message::Close(_)) | None => {
                panic!("closed after {:?}: {:?}", started.elapsed(), ws.closed)
            }
            Some(_) => {}
        }
    }
    assert!(pings >= 5, "{pings} pings in {:?}", started.elapsed());

    // Stop reading: no pong goes back, and the daemon drops the socket.
    let stopped = Instant::now();
    let logs = daemon.logs.clone();
    let dropped = tokio::task::spawn_blocking(move || {
        logs.wait_for(Duration::from_secs(15), |lines| {
            lines
                .iter()
                .any(|l| l.contains("no pong or message within the client timeout"))
                .then_some(())
        })
    })
    .await
    .unwrap();
    let silent_for = stopped.elapsed();
    assert!(dropped.is_some(), "the silent socket was not dropped");
    assert!(
        silent_for >= Duration::from_millis(700),
        "dropped after only {silent_for:?} of silence"
    );
    let (code, reason) = ws.until_closed(Duration::from_secs(5)).await;
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("client timeout"), "{reason}");
}

#[tokio::test]
async fn after_n_older_than_the_ring_gets_a_gap_then_exactly_what_is_retained() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("sessions.replay_events", 5);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;
    ws.say("hello").await;
    ws.until_result().await;
    until_state(&mut ws, "idle").await;
    let all = seqs(&ws.frames);
    let last = *all.last().unwrap();
    assert_eq!(all, (1..=last).collect::<Vec<_>>());
    assert!(last > 10, "a turn makes more events than the ring keeps");
    assert_eq!(alice.session(&session).await["lastSeq"], last);

    for after in [0, 1, last - 6] {
        let mut late = Connect::bearer(&daemon.base_url(), &session, token(&alice))
            .after(after)
            .open()
            .await;
        let gap = late.next(FRAME_DEADLINE).await.expect("a first frame");
        assert_eq!(
            gap,
            json!({"type": "gap", "from": after + 1, "to": last - 5}),
            "after={after}"
        );
        late.until(FRAME_DEADLINE, |f| f["seq"] == last).await;
        assert_eq!(seqs(&late.frames), ((last - 4)..=last).collect::<Vec<_>>());
        assert_eq!(&late.frames[1..], &ws.frames[ws.frames.len() - 5..]);
    }
    // Asking from inside the ring gets no gap.
    let mut late = Connect::bearer(&daemon.base_url(), &session, token(&alice))
        .after(last - 2)
        .open()
        .await;
    late.until(FRAME_DEADLINE, |f| f["seq"] == last).await;
    assert_eq!(seqs(&late.frames), vec![last - 1, last]);
    assert!(late.frames.iter().all(|f| f["type"] != "gap"));
    // And then live events follow, in order, with no hole.
    late.say("ECHO more").await;
    late.until_result().await;
    let got = seqs(&late.frames);
    assert_eq!(got, ((last - 1)..=*got.last().unwrap()).collect::<Vec<_>>());
}

// ---- credentials ----

#[tokio::test]
async fn a_new_key_restarts_the_idle_child_which_resumes_with_it() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_real_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = socket(&daemon, &alice, &session).await;
    ws.say("remember the word MANGO").await;
    ws.until_result().await;
    until_state(&mut ws, "idle").await;
    let first = pid_of(&alice, &session).await.unwrap();
    assert!(process_environ(first).contains(&format!("ANTHROPIC_API_KEY={KEY_A}")));

    alice.set_api_key(KEY_A2).await.expect(200);
    // The idle child goes at once, not at the next message.
    until_state(&mut ws, "stopped").await;
    assert!(wait_gone(first, GONE_DEADLINE).await, "the old child lives");

    ws.say("ECHO what was the word").await;
    ws.until_result().await;
    let second = pid_of(&alice, &session).await.unwrap();
    assert_ne!(second, first);
    let environ = process_environ(second);
    assert!(
        environ.contains(&format!("ANTHROPIC_API_KEY={KEY_A2}")),
        "the new child holds the new key"
    );
    assert!(
        !environ.iter().any(|v| v.contains(KEY_A)),
        "and not the old one"
    );
    let cmdline = process_cmdline(second);
    assert!(
        cmdline.iter().any(|a| a.starts_with("--resume=")),
        "{cmdline:?}"
    );
    let last = mock.messages_requests().pop().unwrap();
    assert_eq!(last.api_key(), Some(KEY_A2));
    let text = last.user_texts().join(" | ");
    assert!(
        text.contains("MANGO"),
        "the earlier turn was resumed: {text}"
    );
    assert!(assistant_text(&ws.frames).contains("MANGO"));
    daemon.assert_logs_free_of(&[KEY_A, KEY_A2]);
}

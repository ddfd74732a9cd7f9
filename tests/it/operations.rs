//! Running sashad as a service: the systemd notify protocol, Prometheus metrics, the admin
//! API, SIGHUP reloads, JSON logs, the built-in TLS listener, and startup errors.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::common::client::Api;
use crate::common::daemon::{assert_text_free_of, process_alive, TestEnv};
use crate::common::mock_api::MockApi;
use crate::common::ws::Connect;

const PW: &str = "correct horse battery";
const KEY: &str = "sk-ant-api03-OpsKey000000000000000000000000000000000000000000000000opsk";

/// A notify socket like systemd's: a Unix datagram socket the daemon writes `KEY=VALUE` lines to.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self { socket, path }
    }

    /// The next datagram, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Reads datagrams until one contains `needle`; panics with what came if the deadline
    /// passes.
    fn until(&self, needle: &str, deadline: Duration) -> Vec<String> {
        let until = Instant::now() + deadline;
        let mut seen = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(msg) => {
                    let done = msg.lines().any(|l| l == needle);
                    seen.push(msg);
                    if done {
                        return seen;
                    }
                }
                None => break,
            }
        }
        panic!("no {needle} within {deadline:?}; got {seen:?}");
    }
}

#[tokio::test]
async fn systemd_hears_ready_after_bind_then_watchdog_then_stopping() {
    let mut env = TestEnv::new();
    let notify = NotifySocket::bind(env.dir.path());
    env.env
        .push(("NOTIFY_SOCKET".into(), notify.path.to_str().unwrap().into()));
    env.env.push(("WATCHDOG_USEC".into(), "400000".into()));
    env.watchdog_pid = true;
    let mut daemon = env.start();
    let first = notify.until("READY=1", Duration::from_secs(10));
    assert!(first.iter().all(|m| !m.contains("STOPPING")), "{first:?}");
    // The listener was bound before READY: it answers.
    Api::new(daemon.base_url())
        .get("/healthz")
        .await
        .expect(200);
    let watchdog = notify.until("WATCHDOG=1", Duration::from_secs(5));
    notify.until("WATCHDOG=1", Duration::from_secs(5));
    assert!(watchdog.iter().all(|m| !m.contains("STOPPING")));
    daemon.signal(Signal::SIGTERM);
    notify.until("STOPPING=1", Duration::from_secs(10));
    assert_eq!(daemon.stop_after_signal().code(), Some(0));
}

/// Parses Prometheus text into `name{labels}` → value, checking every sample line's shape.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(series.starts_with("sashad_"), "{line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_move_as_a_chat_runs() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let before = parse_metrics(api.get("/metrics").await.expect(200).body.as_str().unwrap());
    for zero in [
        "sashad_child_spawns_total{outcome=\"ok\"}",
        "sashad_child_exits_total{cause=\"crash\"}",
        "sashad_credential_validations_total{outcome=\"invalid\"}",
        "sashad_oauth_refreshes_total{outcome=\"ok\"}",
    ] {
        assert_eq!(before.get(zero), Some(&0.0), "{zero} starts at 0");
    }
    let alice = api.user_with_key("alice", KEY).await;
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("Hello").await;
    ws.until_result().await;
    let after = parse_metrics(api.get("/metrics").await.expect(200).body.as_str().unwrap());
    assert_eq!(after["sashad_sessions"], 1.0);
    assert_eq!(after["sashad_live_children"], 1.0);
    assert_eq!(after["sashad_sockets_open"], 1.0);
    assert_eq!(after["sashad_child_spawns_total{outcome=\"ok\"}"], 1.0);
    assert_eq!(
        after["sashad_credential_validations_total{outcome=\"ok\"}"],
        1.0
    );
    assert!(after["sashad_events_relayed_total"] >= ws.frames.len() as f64);
    assert!(after["sashad_bytes_relayed_total"] > 1000.0);
    assert!(after["sashad_child_spawn_to_init_seconds_count"] >= 1.0);
    assert!(
        after
            .keys()
            .any(|k| k
                .starts_with("sashad_http_requests_total{route=\"/api/sessions\",status=\"201\"}")),
        "routes are patterns"
    );
    assert!(
        !after.keys().any(|k| k.contains(&session)),
        "no ids in labels"
    );
}

#[tokio::test]
async fn metrics_need_the_bearer_token_when_one_is_set() {
    let mut env = TestEnv::new();
    env.set("metrics.bearer_token", "metrics-SECRET-token");
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    api.get("/metrics")
        .await
        .expect_error(401, "unauthenticated");
    api.with_token("wrong")
        .get("/metrics")
        .await
        .expect_error(401, "unauthenticated");
    let ok = api
        .with_token("metrics-SECRET-token")
        .get("/metrics")
        .await
        .expect(200);
    assert!(ok.body.as_str().unwrap().contains("sashad_sessions"));
    assert!(!daemon.logs.text().contains("metrics-SECRET-token"));
}

#[tokio::test]
async fn metrics_can_have_their_own_listener() {
    let mut env = TestEnv::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.set("metrics.listen", format!("127.0.0.1:{port}"));
    let daemon = env.start();
    daemon
        .logs
        .wait_for(Duration::from_secs(10), |l| {
            l.iter().find(|l| l.contains("metrics on http://")).cloned()
        })
        .expect("metrics listener");
    Api::new(daemon.base_url())
        .get("/metrics")
        .await
        .expect_error(404, "not_found");
    let metrics = Api::new(format!("http://127.0.0.1:{port}"))
        .get("/metrics")
        .await
        .expect(200);
    assert!(metrics
        .body
        .as_str()
        .unwrap()
        .contains("sashad_http_requests_total"));
}

#[tokio::test]
async fn the_admin_api_is_for_admins_and_disabling_stops_a_user() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("auth.registration", "open");
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let admin = api.user("root", PW).await;
    let bob = api.user_with_key("bob", KEY).await;
    let bob_id = bob.get("/api/auth/me").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for path in [
        "/api/admin/users",
        "/api/admin/sessions",
        "/api/admin/daemon",
    ] {
        bob.get(path).await.expect_error(403, "admin_only");
    }
    bob.post(&format!("/api/admin/users/{bob_id}/disable"), json!({}))
        .await
        .expect_error(403, "admin_only");

    let session = bob.new_session("demo").await;
    let mut ws = bob.socket(&session).await;
    ws.say("Hello").await;
    ws.until_result().await;
    let pid = bob.session(&session).await["pid"].as_u64().unwrap() as u32;

    let users = admin.get("/api/admin/users").await.expect(200).body;
    let row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(row["credential"], "api_key");
    let sessions = admin.get("/api/admin/sessions").await.expect(200).body;
    let row = &sessions.as_array().unwrap()[0];
    assert_eq!(row["ownerName"], "bob");
    assert_eq!(row["session"]["pid"], pid);
    // The child's memory, not just its sandbox's outer process (the CLI runs in a session of
    // its own inside the sandbox).
    let outer_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        row["memoryKiB"].as_u64().unwrap() > outer_kib,
        "{row} vs {outer_kib} KiB for pid {pid} alone"
    );
    assert!(row["uptimeSeconds"].as_i64().is_some());
    let info = admin.get("/api/admin/daemon").await.expect(200).body;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["config"]["server"].is_object());

    admin
        .post(&format!("/api/admin/users/{bob_id}/disable"), json!({}))
        .await
        .expect(204);
    assert!(
        !process_alive(pid),
        "bob's child was stopped before the answer"
    );
    bob.get("/api/auth/me")
        .await
        .expect_error(401, "unauthenticated");
    // The socket bob opened before is still there, but a message on it starts nothing.
    ws.say("Still here?").await;
    let refused = ws
        .until(Duration::from_secs(30), |f| f["type"] == "error")
        .await;
    assert_eq!(refused["error"], "account_disabled", "{refused}");
    let sessions = admin.get("/api/admin/sessions").await.expect(200).body;
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    assert_eq!(sessions[0]["ownerName"], "bob", "{sessions}");
    assert!(sessions[0]["session"]["pid"].is_null(), "{sessions}");
    let logs = daemon.logs.text();
    assert!(
        logs.lines().any(|l| l.contains("admin action")
            && l.contains("user.disable")
            && l.contains(&bob_id)),
        "audit event"
    );
    admin
        .post(&format!("/api/admin/users/{bob_id}/enable"), json!({}))
        .await
        .expect(204);
    api.login("bob", PW).await.expect(200);

    admin
        .delete(&format!("/api/admin/users/{bob_id}"))
        .await
        .expect(204);
    api.login("bob", PW)
        .await
        .expect_error(401, "invalid_credentials");
    assert!(admin
        .get("/api/admin/sessions")
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!env
        .data_dir()
        .join(format!("workspace/users/{bob_id}"))
        .exists());
}

#[tokio::test]
async fn sighup_changes_the_log_level_without_dropping_sessions() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("log.level", "info");
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("Hello").await;
    ws.until_result().await;
    let pid = alice.session(&session).await["pid"].as_u64().unwrap();
    assert!(!daemon.logs.text().contains("DEBUG"), "info level at first");

    env.set("log.level", "debug");
    env.set("server.listen", "127.0.0.1:1");
    env.config_path();
    daemon.signal(Signal::SIGHUP);
    let line = daemon
        .logs
        .wait_for(Duration::from_secs(10), |lines| {
            lines
                .iter()
                .find(|l| l.contains("configuration reloaded"))
                .cloned()
        })
        .expect("reload logged");
    assert!(
        line.contains("log.level") && line.contains("server.listen"),
        "{line}"
    );

    // The old socket and child carry on; debug lines now appear.
    ws.say("Hello again").await;
    ws.until_result().await;
    assert_eq!(alice.session(&session).await["pid"].as_u64().unwrap(), pid);
    let _second = alice.socket(&session).await;
    daemon
        .logs
        .wait_for(Duration::from_secs(10), |lines| {
            lines.iter().find(|l| l.contains("DEBUG")).cloned()
        })
        .expect("debug logging after SIGHUP");
}

#[tokio::test]
async fn json_logs_at_debug_are_json_and_hold_no_secret() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("log.format", "json");
    env.set("log.level", "debug");
    let mut daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user_with_key("alice", KEY).await;
    let token = alice.token.clone().unwrap();
    let session = alice.new_session("demo").await;
    let mut ws = Connect::bearer(&daemon.base_url(), &session, &token)
        .open()
        .await;
    ws.say("Hello").await;
    ws.until_result().await;
    alice
        .get("/api/claude/auth/oauth/callback?code=SECRET-code&state=SECRET-state")
        .await;
    alice.post("/api/auth/logout", json!({})).await.expect(204);
    assert_eq!(daemon.stop().code(), Some(0));
    let logs = daemon.logs.text();
    let mut lines = 0;
    for line in logs.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 20, "debug logs of a whole flow");
    assert!(logs.contains("\"request_id\""), "request ids on HTTP lines");
    assert!(
        logs.contains("\"session_id\""),
        "session ids on session lines"
    );
    assert_text_free_of(
        "the JSON logs",
        &logs,
        &[KEY, PW, &token, "SECRET-code", "SECRET-state"],
    );
}

#[tokio::test]
async fn tls_serves_https_with_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut env = TestEnv::new();
    env.set(
        "tls.cert_file",
        dir.path().join("cert.pem").to_str().unwrap().to_owned(),
    );
    env.set(
        "tls.key_file",
        dir.path().join("key.pem").to_str().unwrap().to_owned(),
    );
    let daemon = env.start();
    assert!(daemon.logs.text().contains("listening on https://"));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", daemon.addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", daemon.addr.port());
    let api = Api {
        base: base.clone(),
        token: None,
        http: client,
    };
    api.get("/healthz").await.expect(200);
    api.register("alice", PW).await.expect(201);
    let login = api.login("alice", PW).await.expect(200);
    let cookie = login.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!("http://{}/healthz", daemon.addr)).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
}

#[tokio::test]
async fn startup_errors_say_what_to_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut env = TestEnv::new();
    env.set("server.listen", taken.local_addr().unwrap().to_string());
    let (status, output) = env.try_start().err().expect("port in use");
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    assert!(
        output.contains("cannot listen on") && output.contains("server.listen"),
        "{output}"
    );

    let mut env = TestEnv::new();
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    env.set(
        "storage.data_dir",
        file.join("data").to_str().unwrap().to_owned(),
    );
    let (_, output) = env.try_start().err().expect("unusable data dir");
    assert!(output.contains("cannot create data directory"), "{output}");

    let mut env = TestEnv::new();
    env.set("tls.cert_file", "/nonexistent/cert.pem");
    let (_, output) = env.try_start().err().expect("bad tls setting");
    assert!(
        output.contains("tls.key_file") || output.contains("tls.cert_file"),
        "{output}"
    );
}

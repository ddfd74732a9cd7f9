//! Isolation between users, attacked through the real CLI: the mock API answers a `TOOL:<cmd>`
//! prompt with a `Bash` tool call, the CLI runs the command in its sandbox, and its output comes
//! back in the `tool_result`. Two users, A and B, each with a live session. The tests run as
//! root, so the daemon isolates in `uid` mode: each user's children run under their own uid.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::client::Api;
use crate::common::daemon::{process_alive, processes_in_sandbox, Daemon, TestEnv};
use crate::common::mock_api::MockApi;
use crate::common::ws::{claude_event, is_result, Socket};

const KEY_A: &str = "sk-ant-api03-AliceIsolationKey0000000000000000000000000000000000000aaa";
const KEY_B: &str = "sk-ant-api03-BobIsolationKey000000000000000000000000000000000000000bbb";
const PLANTED: &str = "PLANTED-SECRET-OF-BOB-8c2f";
/// A turn with a tool call takes two model requests and a command: allow for a loaded machine.
const TURN: Duration = Duration::from_secs(90);

struct Pair {
    _mock: MockApi,
    env: TestEnv,
    daemon: Daemon,
    a: User,
    b: User,
}

struct User {
    api: Api,
    session: String,
    ws: Socket,
    home: std::path::PathBuf,
    project: std::path::PathBuf,
}

impl User {
    async fn pid(&self) -> u32 {
        self.api.session(&self.session).await["pid"]
            .as_u64()
            .expect("a child runs") as u32
    }

    /// Runs `command` with the CLI's Bash tool and returns what the tool printed.
    async fn bash(&mut self, command: &str) -> String {
        let mark = self.ws.frames.len();
        self.ws.say(&format!("TOOL:{command}")).await;
        self.ws.until(TURN, is_result).await;
        tool_output(&self.ws.frames[mark..])
            .unwrap_or_else(|| panic!("no tool result for {command:?}"))
    }
}

/// The text of the first `tool_result` among `frames`.
fn tool_output(frames: &[Value]) -> Option<String> {
    frames
        .iter()
        .filter_map(|f| claude_event(f, "user"))
        .find_map(|e| {
            let block = e["message"]["content"]
                .as_array()?
                .iter()
                .find(|b| b["type"] == "tool_result")?;
            Some(match &block["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
                other => other.to_string(),
            })
        })
}

async fn pair(configure: impl FnOnce(&mut TestEnv)) -> Pair {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_real_cli(&mock);
    env.set("auth.registration", "open");
    env.set(
        "claude.extra_args",
        toml::Value::Array(vec!["--allowedTools".into(), "Bash".into()]),
    );
    env.master_key_file = Some(env.key_file("master-key"));
    // Every test daemon's first user gets slot 0; a range of its own keeps "processes of A's
    // uid" about this test alone when tests run in parallel.
    env.set(
        "isolation.uid_base",
        300_000 + 4 * i64::from(rand::random::<u16>()),
    );
    configure(&mut env);
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let mut users = Vec::new();
    for (name, key) in [("alice", KEY_A), ("bob", KEY_B)] {
        let api = api.user_with_key(name, key).await;
        let id = api.get("/api/auth/me").await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let session = api.new_session("work").await;
        let mut ws = api.socket(&session).await;
        ws.say("Hello").await;
        ws.until(TURN, is_result).await;
        let workspace = env.data_dir().join("workspace");
        users.push(User {
            api,
            session,
            ws,
            home: workspace.join("users").join(&id),
            project: workspace.join("projects").join(&id).join("work"),
        });
    }
    let b = users.pop().unwrap();
    let a = users.pop().unwrap();
    // Bob's secrets, where only his uid may read them.
    for dir in [&b.home, &b.project] {
        let file = dir.join("planted.txt");
        std::fs::write(&file, PLANTED).unwrap();
        let owner = std::fs::metadata(dir).unwrap();
        std::os::unix::fs::chown(&file, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    Pair {
        _mock: mock,
        env,
        daemon,
        a,
        b,
    }
}

#[tokio::test]
async fn a_cannot_read_other_environments_or_the_daemons() {
    let mut p = pair(|_| {}).await;
    let out =
        p.a.bash("cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
            .await;
    assert!(
        out.contains(&format!("ANTHROPIC_API_KEY={KEY_A}")),
        "A sees its own environment: {out}"
    );
    assert!(!out.contains(KEY_B), "B's key is visible to A");
    assert!(!out.contains("SASHAD"), "{out}");
    let master = std::fs::read_to_string(p.env.master_key_file.as_ref().unwrap()).unwrap();
    assert!(!out.contains(master.trim()));
    // B's child is alive all along: its environment was there to be read, had A been able to.
    assert!(process_alive(p.b.pid().await));
}

#[tokio::test]
async fn a_sees_only_its_own_processes() {
    let mut p = pair(|_| {}).await;
    let out = p.a.bash("for d in /proc/[0-9]*; do printf '%s ' \"${d#/proc/}\"; tr '\\0' ' ' < $d/cmdline; echo; done").await;
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty() && lines.len() < 20, "{out}");
    for line in &lines {
        assert!(
            !line.contains("/sashad --config"),
            "the daemon is visible: {line}"
        );
        assert!(
            !line.contains(p.b.project.to_str().unwrap()),
            "B's processes are visible: {line}"
        );
    }
    // The host's pid of B's child and of the daemon mean nothing in A's namespace.
    let b_pid = p.b.pid().await;
    let ls =
        p.a.bash(&format!(
            "ls /proc/{b_pid}/environ /proc/{}/environ 2>&1; ls /proc | grep -c '^[0-9]'",
            p.daemon.pid()
        ))
        .await;
    for pid in [b_pid, p.daemon.pid()] {
        assert!(
            ls.contains(&format!(
                "cannot access '/proc/{pid}/environ': No such file"
            )),
            "{pid}: {ls}"
        );
    }
}

#[tokio::test]
async fn a_cannot_read_bs_home_or_project() {
    let mut p = pair(|_| {}).await;
    let (home, project) = (
        p.b.home.display().to_string(),
        p.b.project.display().to_string(),
    );
    let out =
        p.a.bash(&format!(
            "cat {home}/planted.txt {project}/planted.txt 2>&1; ls -la {home} {project} 2>&1"
        ))
        .await;
    assert!(!out.contains(PLANTED), "{out}");
    assert!(
        out.contains("No such file") || out.contains("Permission denied"),
        "{out}"
    );
    // And bob can.
    let own = p.b.bash("cat planted.txt").await;
    assert!(own.contains(PLANTED), "{own}");
}

#[tokio::test]
async fn a_cannot_find_the_store_or_the_master_key() {
    let mut p = pair(|_| {}).await;
    let data = p.env.data_dir().display().to_string();
    let out = p
        .a
        .bash(&format!(
            "touch findme-a; find / -path /proc -prune -o \\( -name master.key -o -name master-key -o -name 'store-v1' -o -name sashad.lock -o -name findme-a \\) -print 2>/dev/null; ls -a {data} {data}/store-v1 2>&1; echo done"
        ))
        .await;
    assert!(out.contains("done"), "{out}");
    // The search crossed into the sandbox's mounts: it found A's own file in A's project.
    assert!(out.contains("/findme-a"), "{out}");
    for needle in ["master.key", "master-key", "sashad.lock", "conf", "blobs"] {
        assert!(!out.contains(needle), "{needle} visible: {out}");
    }
    // The data directory is there only as the empty folders leading to A's own.
    assert!(
        out.contains(&format!("cannot access '{data}/store-v1': No such file")),
        "{out}"
    );
}

#[tokio::test]
async fn kill_minus_one_reaches_only_as_sandbox() {
    let mut p = pair(|_| {}).await;
    let b_pid = p.b.pid().await;
    let daemon_pid = p.daemon.pid();
    p.a.ws.say("TOOL:kill -9 -1").await;
    // A's own sandbox dies (the CLI with it), which its socket sees.
    p.a.ws
        .until(TURN, |f| {
            f["type"] == "state" && (f["state"] == "exited" || f["state"] == "stopped")
        })
        .await;
    assert!(process_alive(b_pid), "B's child was killed");
    assert!(process_alive(daemon_pid), "the daemon was killed");
    p.b.ws.say("Hello again").await;
    p.b.ws.until(TURN, is_result).await;
    assert_eq!(p.b.pid().await, b_pid);
}

#[tokio::test]
async fn a_fork_bomb_is_contained() {
    let mut p = pair(|env| {
        env.set("isolation.max_processes", 64);
        env.set("sessions.turn_timeout", "20s");
        env.set("sessions.stop_timeout", "1s");
    })
    .await;
    let b_pid = p.b.pid().await;
    let a_pid = p.a.pid().await;
    let inside = processes_in_sandbox(a_pid);
    assert!(!inside.is_empty());
    p.a.ws
        .say("TOOL:bomb() { bomb | bomb & }; bomb; sleep 2; echo survived")
        .await;
    // A hears about it: the tool fails, the CLI fails to fork, or the turn times out.
    p.a.ws
        .until(Duration::from_secs(120), |f| {
            (f["type"] == "error")
                || (f["type"] == "state" && (f["state"] == "exited" || f["state"] == "failed"))
                || claude_event(f, "user").is_some_and(|e| {
                    let text = e.to_string();
                    text.contains("Resource temporarily unavailable")
                        || text.contains("\"is_error\":true")
                })
        })
        .await;
    // B keeps working meanwhile, in its own uid's process budget.
    let started = Instant::now();
    p.b.ws.say("Hello during the bomb").await;
    p.b.ws.until(TURN, is_result).await;
    assert_eq!(p.b.pid().await, b_pid);
    eprintln!("B answered {:?} into A's fork bomb", started.elapsed());
    // Stopping A's session removes every process of its sandbox, bomb included.
    let uid = std::fs::metadata(&p.a.home).unwrap().uid();
    p.a.api
        .delete(&format!("/api/sessions/{}", p.a.session))
        .await
        .expect(204);
    // The answer waits for the sandbox's namespace to empty, but for at most 2 s: thousands of
    // bomb processes can take the kernel longer to tear down on a loaded machine. Bounded poll
    // for that teardown (the tests without a bomb assert at once).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_of_uid(uid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left: {:?}",
            processes_of_uid(uid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_works_in_its_own_project_as_its_own_uid_and_leaves_nothing_behind() {
    let mut p = pair(|_| {}).await;
    let out = p.a.bash("echo written-by-alice > mine.txt && cat mine.txt && id -u && touch /tmp/scratch && echo tmp-ok && cat /etc/resolv.conf /etc/ssl/certs/ca-certificates.crt > /dev/null && echo etc-ok && getent hosts localhost").await;
    assert!(
        out.contains("written-by-alice") && out.contains("tmp-ok"),
        "{out}"
    );
    // What the CLI needs from /etc is readable: name resolution and CA certificates.
    assert!(out.contains("etc-ok") && out.contains("localhost"), "{out}");
    let file = p.a.project.join("mine.txt");
    let meta = std::fs::metadata(&file).expect("the file is on the host, in A's project");
    let a_uid = std::fs::metadata(&p.a.home).unwrap().uid();
    let b_uid = std::fs::metadata(&p.b.home).unwrap().uid();
    assert_eq!(meta.uid(), a_uid, "owned by A's uid on the host");
    assert!(a_uid >= 300_000 && a_uid != b_uid, "{a_uid} {b_uid}");
    assert!(
        out.lines().any(|l| l.trim() == a_uid.to_string()),
        "id -u inside is A's uid: {out}"
    );
    for dir in [&p.a.home, &p.a.project] {
        assert_eq!(
            std::fs::metadata(dir).unwrap().mode() & 0o777,
            0o700,
            "{}",
            dir.display()
        );
    }

    // After a stop, nothing of A's sandbox remains, grandchildren included.
    p.a.bash("nohup sleep 1000 >/dev/null 2>&1 & (setsid sleep 1001 &) ; echo started")
        .await;
    let a_pid = p.a.pid().await;
    let inside = processes_in_sandbox(a_pid);
    assert!(inside.len() >= 3, "{inside:?}");
    p.a.api
        .delete(&format!("/api/sessions/{}", p.a.session))
        .await
        .expect(204);
    assert!(
        inside.iter().all(|pid| !process_alive(*pid)),
        "left: {inside:?}"
    );
    assert!(
        processes_of_uid(a_uid).is_empty(),
        "{:?}",
        processes_of_uid(a_uid)
    );
}

/// Live processes owned by `uid` on the host.
fn processes_of_uid(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_alive(*pid))
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .collect()
}

/// Capability numbers (capability.h) of the names the packaging grants.
fn capability_bit(name: &str) -> u64 {
    let number = match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_FOWNER" => 3,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_SETPCAP" => 8,
        "CAP_SYS_ADMIN" => 21,
        other => panic!("add {other} to this table"),
    };
    1 << number
}

/// A `CapXxx:` mask from `/proc/<pid>/status`.
fn capability_mask(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// The capabilities `config/sashad.service` leaves root (and `docker-compose.yml` adds, which the
/// container test keeps equal) are enough: a daemon holding those alone, with no_new_privs as
/// both set, sandboxes A under A's uid with no capability left, deletes a user whose files
/// resist (mode 000 folders, a sticky folder), and a stop leaves nothing behind.
#[tokio::test]
async fn the_packagings_capabilities_are_enough() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/sashad.service"
    ))
    .unwrap();
    let caps: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(caps.contains(&"CAP_SYS_ADMIN"), "{caps:?}");
    let granted = caps.iter().fold(0, |mask, c| mask | capability_bit(c));
    let bounding = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let mut p = pair(|env| {
        env.wrapper = [
            "setpriv",
            "--no-new-privs",
            &format!("--bounding-set=-all,{bounding}"),
            "--inh-caps=-all",
            "--",
        ]
        .map(str::to_owned)
        .to_vec();
    })
    .await;
    let daemon = p.daemon.pid().to_string();
    assert_eq!(capability_mask(&daemon, "CapEff"), granted);
    assert_eq!(capability_mask(&daemon, "CapBnd"), granted);

    // Both children started under these; A's runs as A's uid, with nothing left.
    let out =
        p.a.bash("echo written-by-alice > mine.txt && cat mine.txt && id -u && grep -E '^Cap(Eff|Bnd|Prm):' /proc/self/status")
            .await;
    assert!(out.contains("written-by-alice"), "{out}");
    let a_uid = std::fs::metadata(&p.a.home).unwrap().uid();
    assert!(a_uid >= 300_000, "{a_uid}");
    assert!(out.lines().any(|l| l.trim() == a_uid.to_string()), "{out}");
    for field in ["CapEff", "CapBnd", "CapPrm"] {
        assert!(
            out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [&format!("{field}:"), "0000000000000000"]),
            "{field}: {out}"
        );
    }
    let meta = std::fs::metadata(p.a.project.join("mine.txt")).unwrap();
    assert_eq!(meta.uid(), a_uid);

    // B makes folders that resist removal; deleting B (A is the admin) still removes them.
    p.b.bash("mkdir -p locked/inner sticky && touch locked/inner/f sticky/f && chmod 000 locked/inner && chmod 1777 sticky && chmod 500 locked && echo made")
        .await;
    let b_id = p.b.api.get("/api/auth/me").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.a.api
        .delete(&format!("/api/admin/users/{b_id}"))
        .await
        .expect(204);
    assert!(!p.b.home.exists() && !p.b.project.exists());

    // A stop empties A's sandbox without CAP_KILL.
    p.a.bash("nohup sleep 1000 >/dev/null 2>&1 & echo started")
        .await;
    let inside = processes_in_sandbox(p.a.pid().await);
    assert!(inside.len() >= 2, "{inside:?}");
    p.a.api
        .delete(&format!("/api/sessions/{}", p.a.session))
        .await
        .expect(204);
    assert!(
        inside.iter().all(|pid| !process_alive(*pid)),
        "left: {inside:?}"
    );
    assert!(
        processes_of_uid(a_uid).is_empty(),
        "{:?}",
        processes_of_uid(a_uid)
    );
}

/// A project left by a daemon that ran under another uid (the image's former service user
/// 10001, or `userns` mode) is handed to its user's uid at the next start, files included.
#[tokio::test]
async fn folders_of_an_earlier_daemon_uid_are_handed_over() {
    let mut p = pair(|_| {}).await;
    let old = p.a.project.with_file_name("old");
    std::fs::create_dir_all(old.join("src")).unwrap();
    std::fs::write(old.join("src/legacy.txt"), "from-before").unwrap();
    for path in [&old, &old.join("src"), &old.join("src/legacy.txt")] {
        std::os::unix::fs::chown(path, Some(10001), Some(10001)).unwrap();
    }
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let session = p.a.api.new_session("old").await;
    p.a.ws = p.a.api.socket(&session).await;
    let out =
        p.a.bash("cat src/legacy.txt && echo more >> src/legacy.txt && echo appended")
            .await;
    assert!(
        out.contains("from-before") && out.contains("appended"),
        "{out}"
    );
    let a_uid = std::fs::metadata(&p.a.home).unwrap().uid();
    for path in [&old, &old.join("src"), &old.join("src/legacy.txt")] {
        assert_eq!(
            std::fs::metadata(path).unwrap().uid(),
            a_uid,
            "{}",
            path.display()
        );
    }
}

/// `isolation.uid_count` bounds the accounts: registration past it is refused, and a user whose
/// slot is past it (the operator shrank the range) gets no child rather than a uid the operator
/// did not set aside.
#[tokio::test]
async fn users_past_the_uid_range_get_no_child() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("auth.registration", "open");
    env.set(
        "isolation.uid_base",
        300_000 + 4 * i64::from(rand::random::<u16>()),
    );
    env.set("isolation.uid_count", 1);
    let mut daemon = env.start();
    let api = Api::new(daemon.base_url());
    api.register("alice", "correct horse battery")
        .await
        .expect(201);
    api.register("bob", "correct horse battery")
        .await
        .expect_error(409, "user_limit");
    daemon.stop();

    env.set("isolation.uid_count", 2);
    let mut daemon = env.start();
    Api::new(daemon.base_url())
        .register("bob", "correct horse battery")
        .await
        .expect(201);
    daemon.stop();

    env.set("isolation.uid_count", 1);
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let mut frames = Vec::new();
    for (name, key) in [("alice", KEY_A), ("bob", KEY_B)] {
        let user = api.user_with_key(name, key).await;
        let session = user.new_session("work").await;
        let mut ws = user.socket(&session).await;
        ws.say("Hello").await;
        frames.push(
            ws.until(TURN, |f| is_result(f) || f["type"] == "error")
                .await,
        );
    }
    assert!(is_result(&frames[0]), "{}", frames[0]);
    assert_eq!(frames[1]["error"], "spawn_failed", "{}", frames[1]);
    assert!(
        frames[1]["message"].as_str().unwrap().contains("uid_count"),
        "{}",
        frames[1]
    );
}

/// The sandbox's `/tmp` and `/dev/shm` live in RAM; their cap (`isolation.tmp_max_bytes`) holds.
#[tokio::test]
async fn a_cannot_fill_memory_through_tmp() {
    let mut p = pair(|env| {
        env.set("isolation.tmp_max_bytes", 4 << 20);
    })
    .await;
    let out =
        p.a.bash("head -c 8388608 /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big")
            .await;
    // Whatever reports it (the shell, or the CLI, which keeps its own output under /tmp too),
    // the write ran out of room.
    assert!(out.contains("No space left on device"), "{out}");
    // /dev/shm is capped the same way and usable by A; the rest of /dev is read-only.
    let out =
        p.a.bash("rm -f /tmp/big; echo ok > /dev/shm/small && echo shm-write-ok; head -c 8388608 /dev/zero > /dev/shm/big 2>&1; echo shm-rc=$?; touch /dev/planted 2>&1; echo hi > /dev/null && echo null-ok")
            .await;
    assert!(
        out.contains("shm-rc=1") && out.contains("shm-write-ok"),
        "{out}"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("null-ok"), "{out}");
}

/// A CLI installed inside the data directory would show it (the store, every user's files) in
/// every sandbox, since the CLI's folder is bound read-only: such a start is refused.
#[tokio::test]
async fn a_cli_inside_the_data_directory_is_refused() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    let inside = env.data_dir().join("bin");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::copy(
        crate::common::fake_cli::fake_claude_bin(),
        inside.join("claude"),
    )
    .unwrap();
    env.set(
        "claude.binary",
        inside.join("claude").to_str().unwrap().to_owned(),
    );
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY_A)
        .await;
    let session = alice.new_session("work").await;
    let mut ws = alice.socket(&session).await;
    ws.say("Hello").await;
    let refused = ws.until(TURN, |f| f["type"] == "error").await;
    assert_eq!(refused["error"], "spawn_failed", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("would show the data directory"),
        "{refused}"
    );
}

/// The sandbox's seccomp filter: no new user namespace (which would give A capabilities over
/// namespaces of its own), no kernel keyring; ordinary work, threads and processes included, is
/// untouched (every other test here runs under it).
#[tokio::test]
async fn a_cannot_make_user_namespaces() {
    let mut p = pair(|_| {}).await;
    let out =
        p.a.bash("unshare -Ur id; echo rc=$?; unshare -r true; echo rc2=$?; grep Seccomp: /proc/self/status; (sleep 0.1 & wait) && echo forks-ok")
            .await;
    assert!(out.contains("rc=1") && out.contains("rc2=1"), "{out}");
    assert!(!out.contains("uid=0"), "{out}");
    assert!(out.contains("Function not implemented"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("forks-ok"), "{out}");
}

//! Runs the real `sashad` binary for a test: its own temporary data directory, a config file,
//! port 0, debug logs captured line by line. Tests wait on log lines and HTTP answers, never on
//! sleeps.
//!
//! A [`TestEnv`] owns the data directory, so a test can stop a daemon and start another on the
//! same data (restarts, wrong keys, two daemons at once).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a daemon may take to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn sashad_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sashad"))
}

/// A temporary home for one test's daemons: data directory, config, key files.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// Config keys written to the config file: `"section.key" -> TOML value`.
    pub config: BTreeMap<String, toml::Value>,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    /// `--master-key-file`, if any.
    pub master_key_file: Option<PathBuf>,
    /// Start through `sh -c 'WATCHDOG_PID=$$ exec …'`, as systemd sets `WATCHDOG_PID` to the
    /// main process's own pid.
    pub watchdog_pid: bool,
    /// Pass the generated config with `--config` (the default). When false, the daemon gets no
    /// `--config` flag and `config` is unused: it boots as the container image does, with the
    /// file named by `SASHAD_CONFIG` in `env`.
    pub config_flag: bool,
    /// A program and its arguments to start the daemon through (`setpriv … --`), if any.
    pub wrapper: Vec<String>,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = Self {
            dir,
            config: BTreeMap::new(),
            env: Vec::new(),
            master_key_file: None,
            watchdog_pid: false,
            config_flag: true,
            wrapper: Vec::new(),
        };
        env.set("server.listen", "127.0.0.1:0");
        env.set(
            "storage.data_dir",
            env.data_dir().to_str().unwrap().to_owned(),
        );
        env.set("log.level", "debug");
        // Tests log in often; the limits have their own test.
        env.set("auth.login_attempts_per_username", 1000);
        env.set("auth.login_attempts_per_ip", 1000);
        env
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sets a config key (`"server.listen"`).
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.config.insert(key.to_owned(), value.into());
        self
    }

    /// Writes a fresh 0600 key file named `name` and returns its path.
    pub fn key_file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let bytes: [u8; 32] = rand::random();
        std::fs::write(&path, hex::encode(bytes)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Writes the config file (again) and returns its path.
    pub fn config_path(&self) -> PathBuf {
        let mut root = toml::Table::new();
        for (key, value) in &self.config {
            let (section, name) = key.split_once('.').expect("section.key");
            let table = root
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table
                .as_table_mut()
                .unwrap()
                .insert(name.to_owned(), value.clone());
        }
        let path = self.dir.path().join("sashad.toml");
        std::fs::write(&path, toml::to_string(&root).unwrap()).unwrap();
        path
    }

    /// A `sashad` command with this env's config, key and environment (cleared of the
    /// test runner's `SASHAD_*` and `RUST_LOG`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = if self.watchdog_pid {
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
                .arg(sashad_bin());
            sh
        } else if let Some((program, args)) = self.wrapper.split_first() {
            let mut wrapped = Command::new(program);
            wrapped.args(args).arg(sashad_bin());
            wrapped
        } else {
            Command::new(sashad_bin())
        };
        if self.config_flag {
            cmd.arg("--config").arg(self.config_path());
        }
        if let Some(key) = &self.master_key_file {
            cmd.arg("--master-key-file").arg(key);
        }
        cmd.args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("SASHAD") || name == "RUST_LOG" || name == "CREDENTIALS_DIRECTORY" {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env.iter().cloned());
        cmd
    }

    /// Starts `sashad serve` and waits until it listens.
    pub fn start(&self) -> Daemon {
        self.try_start().unwrap_or_else(|(status, logs)| {
            panic!("sashad did not start ({status:?}); its output:\n{logs}")
        })
    }

    /// Starts `sashad serve`; `Err` with its exit status and output if it exits before
    /// listening.
    pub fn try_start(&self) -> Result<Daemon, (Option<ExitStatus>, String)> {
        let mut child = self
            .command(&["serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sashad");
        let logs = Logs::default();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.push(line);
                }
                logs.close();
            });
        }
        let found = logs.wait_for(START_DEADLINE, |lines| {
            lines.iter().find_map(|l| {
                let rest = l.split("listening on ").nth(1)?;
                let rest = rest
                    .strip_prefix("https://")
                    .or_else(|| rest.strip_prefix("http://"))?;
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                addr.parse::<SocketAddr>().ok()
            })
        });
        match found {
            Some(addr) => Ok(Daemon {
                child: Some(child),
                addr,
                logs,
            }),
            None => {
                let status = child.wait_timeout_or_kill();
                logs.wait_closed(Duration::from_secs(5));
                Err((status, logs.text()))
            }
        }
    }

    /// Runs a `sashad` operator command to completion, feeding `stdin`.
    pub fn run(&self, args: &[&str], stdin: &str) -> CommandOutput {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sashad");
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        CommandOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What an operator command printed.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self) -> Option<ExitStatus>;
}

impl WaitOrKill for Child {
    fn wait_timeout_or_kill(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill();
        self.wait().ok()
    }
}

/// Captured output lines, with a condition variable to wait on.
#[derive(Clone, Default)]
pub struct Logs(Arc<(Mutex<LogsInner>, Condvar)>);

#[derive(Default)]
struct LogsInner {
    lines: Vec<String>,
    closed: usize,
}

impl Logs {
    fn push(&self, line: String) {
        let (lock, cvar) = &*self.0;
        lock.lock().unwrap().lines.push(line);
        cvar.notify_all();
    }

    fn close(&self) {
        let (lock, cvar) = &*self.0;
        lock.lock().unwrap().closed += 1;
        cvar.notify_all();
    }

    /// Waits until `f` finds something in the lines, or the deadline passes, or the process
    /// closed both its output streams.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut inner = lock.lock().unwrap();
        loop {
            if let Some(found) = f(&inner.lines) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline || inner.closed >= 2 {
                return None;
            }
            inner = cvar.wait_timeout(inner, deadline - now).unwrap().0;
        }
    }

    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut inner = lock.lock().unwrap();
        while inner.closed < 2 && Instant::now() < deadline {
            inner = cvar
                .wait_timeout(inner, deadline - Instant::now())
                .unwrap()
                .0;
        }
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.0 .0.lock().unwrap().lines.join("\n")
    }
}

/// A running daemon. Killed (SIGKILL) when dropped, unless stopped first.
pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub logs: Logs,
}

impl Daemon {
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The origin browsers would send.
    pub fn origin(&self) -> String {
        self.base_url()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status (with a deadline; then SIGKILL and panic).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.stop_after_signal()
    }

    /// Waits for the exit status after a stop signal was sent (with a deadline).
    pub fn stop_after_signal(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.logs.wait_closed(Duration::from_secs(5));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "sashad did not exit within 60 s of SIGTERM:\n{}",
                    self.logs.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }

    /// Panics if any of `secrets` appears in what the daemon logged.
    pub fn assert_logs_free_of(&self, secrets: &[&str]) {
        assert_text_free_of("the daemon's logs", &self.logs.text(), secrets);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Panics, naming `what` and the secret's position (not the secret), if `text` contains any.
pub fn assert_text_free_of(what: &str, text: &str, secrets: &[&str]) {
    for (i, secret) in secrets.iter().enumerate() {
        assert!(!secret.is_empty());
        if let Some(pos) = text.find(secret) {
            panic!("secret #{i} appears in {what} at byte {pos}");
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                out.push(path);
            }
        }
    }
    out
}

/// Panics if any file under `dir` contains any of `secrets` as raw bytes.
pub fn assert_files_free_of(dir: &Path, secrets: &[&str]) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "no files under {}", dir.display());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for (i, secret) in secrets.iter().enumerate() {
            let needle = secret.as_bytes();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                panic!("secret #{i} appears in {}", file.display());
            }
        }
    }
}

/// The pinned Claude Code CLI (`SASHAD_TEST_CLAUDE_BIN`, else where `make test` installs it).
/// A missing CLI fails the test rather than skipping it.
pub fn claude_bin() -> PathBuf {
    let bin = match std::env::var_os("SASHAD_TEST_CLAUDE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/claude/node_modules/.bin/claude"),
    };
    assert!(
        bin.exists(),
        "the pinned CLI is not at {}: run `make cli`",
        bin.display()
    );
    bin
}

impl TestEnv {
    /// Children run the real pinned CLI against `mock`.
    pub fn with_real_cli(mut self, mock: &crate::common::mock_api::MockApi) -> Self {
        self.set("anthropic.base_url", mock.base_url());
        self.set("claude.binary", claude_bin().to_str().unwrap().to_owned());
        self
    }

    /// Children run the fake CLI (scripted by markers in the message text).
    pub fn with_fake_cli(mut self, mock: &crate::common::mock_api::MockApi) -> Self {
        self.set("anthropic.base_url", mock.base_url());
        let bin = crate::common::fake_cli::fake_claude_bin();
        self.set("claude.binary", bin.to_str().unwrap().to_owned());
        self
    }
}

/// Pids of live processes whose process group is `pgid`.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces) close with ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp …; zombies are gone for our purposes once reaped by their parent.
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            pids.push(pid);
        }
    }
    pids
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A process's environment as `NAME=value` strings.
pub fn process_environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A process's argv.
pub fn process_cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid namespace of a process (`/proc/<pid>/ns/pid`), if it is alive.
pub fn pid_namespace(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Host pids of every live process inside the sandbox whose bubblewrap monitor is `outer` (the
/// pid a session reports): the processes in the pid namespaces of its children.
pub fn processes_in_sandbox(outer: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let own = pid_namespace(outer);
    let namespaces: Vec<String> = pids
        .iter()
        .filter(|p| parent_of(**p) == Some(outer))
        .filter_map(|p| pid_namespace(*p))
        .filter(|ns| Some(ns) != own.as_ref())
        .collect();
    pids.into_iter()
        .filter(|p| process_alive(*p))
        .filter(|p| pid_namespace(*p).is_some_and(|ns| namespaces.contains(&ns)))
        .collect()
}

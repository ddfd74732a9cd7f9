//! One `claude` child process: spawn, stdin writer, stdout lines, stderr tail, stop and reaping.
//!
//! - The child gets its own process group (so a stop reaches the tools and MCP servers it
//!   started) and `PR_SET_PDEATHSIG(SIGKILL)` (so it dies if the daemon dies). prctl(2): the
//!   signal fires when the *thread* that forked exits, so children are only spawned from the
//!   long-lived supervisor arbiters, never from a blocking-pool thread (DESIGN §6).
//! - stdin is fed by a writer task from a bounded queue; dropping the queue closes stdin, which
//!   is how the CLI is asked to finish (it exits 0, or 1 after an interrupted turn).
//! - stderr is drained all the time into a bounded tail: a full stderr pipe would block the
//!   child. The exit report waits briefly for stderr's end, so the tail holds the last words.
//! - A reaper task owns the process. Asked to stop, it escalates: wait `stop_timeout` after
//!   stdin closed, SIGTERM to the group, wait again, SIGKILL to the group. Signals go to the
//!   group while the leader is still unreaped, so its pgid cannot have been reused. After the
//!   leader exits, a last SIGKILL to the group removes stragglers (a grandchild that ignored
//!   SIGTERM).

use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use crate::claude::command::ChildSpec;
use crate::claude::lines::{Line, LineReader};

/// Lines queued for a child's stdin before writes are refused.
pub const STDIN_QUEUE: usize = 64;

/// Pids of the processes in `/proc`.
fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Field `index` of `/proc/<pid>/stat` counted from the one after the command name (0: state,
/// 1: ppid, 2: pgrp; proc(5)). The name is skipped by its last `)`, since it may hold spaces.
fn stat_field(pid: u32, index: usize) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

/// The pid namespace of `pid` (`pid:[…]`).
fn pid_namespace(pid: u32) -> Option<String> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    Some(ns.to_string_lossy().into_owned())
}

/// Resident memory of a child, in KiB, read from `/proc` (`VmRSS`): every process in its process
/// group `pgid` and, for a sandboxed child, in its sandbox's pid namespace (bubblewrap's
/// `--new-session` puts the CLI and its tools in a session of their own). Blocking: call it
/// off the async threads.
pub fn group_rss_kib(pgid: u32) -> u64 {
    let sandbox = sandbox_namespace(pgid);
    proc_pids()
        .filter(|&pid| {
            stat_field(pid, 2) == Some(pgid) || sandbox.is_some() && pid_namespace(pid) == sandbox
        })
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// How long the exit report waits for the end of stderr once the child has been reaped.
/// Its last words (a crash message) may still be in the pipe, but a process that left the
/// group may hold the pipe open for ever.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// Tunables of a child.
#[derive(Debug, Clone)]
pub struct ChildOptions {
    /// Hard cap of one stdout line, in bytes.
    pub max_line_bytes: usize,
    /// Bytes of stderr kept.
    pub stderr_tail_bytes: usize,
    /// Wait of each stop step.
    pub stop_timeout: Duration,
    /// `RLIMIT_NPROC`: processes the child's uid may have.
    pub max_processes: u64,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
}

/// How a stop should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// stdin closed, then SIGTERM, then SIGKILL, each after `stop_timeout`.
    Graceful,
    /// SIGKILL to the group now.
    Kill,
}

/// How the child ended.
#[derive(Debug, Clone)]
pub struct ExitReport {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal ended it.
    pub signal: Option<i32>,
    /// The last bytes of stderr (lossy UTF-8).
    pub stderr_tail: String,
}

/// The last `cap` bytes of a child's stderr.
#[derive(Clone)]
pub struct StderrTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
    cap: usize,
}

impl StderrTail {
    fn new(cap: usize) -> Self {
        Self {
            buf: Arc::new(Mutex::new(VecDeque::with_capacity(cap.min(4096)))),
            cap,
        }
    }

    fn push(&self, chunk: &[u8]) {
        let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (buf.len() + chunk.len()).saturating_sub(self.cap);
        buf.drain(..overflow);
        buf.extend(chunk);
    }

    /// The tail as text (a character cut at the start is dropped).
    pub fn snapshot(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = buf.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        text.trim_start_matches('\u{FFFD}').to_owned()
    }
}

/// The session's handle on a running child.
pub struct ChildHandle {
    pid: u32,
    stdin: Option<mpsc::Sender<Bytes>>,
    stop: Option<oneshot::Sender<StopMode>>,
}

impl std::fmt::Debug for ChildHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildHandle")
            .field("pid", &self.pid)
            .finish()
    }
}

/// Why a line could not be handed to the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The child is not reading its stdin fast enough.
    #[error("the child's stdin queue is full")]
    Full,
    /// stdin is closed (stopping or gone).
    #[error("the child's stdin is closed")]
    Closed,
}

impl ChildHandle {
    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one stdin line (ending in `\n`).
    pub fn write(&self, line: Vec<u8>) -> Result<(), WriteError> {
        let tx = self.stdin.as_ref().ok_or(WriteError::Closed)?;
        tx.try_send(Bytes::from(line)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Full,
            mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
        })
    }

    /// Starts a stop: closes stdin (after queued lines are written) and lets the reaper
    /// escalate. Calling it again, or with [`StopMode::Kill`] later, escalates further.
    pub fn stop(&mut self, mode: StopMode) {
        self.stdin = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(mode);
        } else if mode == StopMode::Kill {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

/// A spawned child: its handle, its stdout as a stream of lines, and a future that resolves
/// once it has exited and been reaped.
pub struct Spawned {
    /// Control.
    pub handle: ChildHandle,
    /// stdout, one item per line; ends at EOF or on a read error.
    pub stdout: Box<dyn Stream<Item = Line> + Unpin + Send>,
    /// Resolves with the exit report.
    pub exit: std::pin::Pin<Box<dyn std::future::Future<Output = ExitReport> + Send>>,
}

/// Spawns the child described by `spec`. Must run on a long-lived thread (see module docs).
///
/// Errors: the program is missing or not executable, or the cwd is gone.
pub fn spawn(
    spec: &ChildSpec,
    options: &ChildOptions,
    cgroup: Option<&crate::sandbox::SessionCgroup>,
) -> io::Result<Spawned> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    before_exec(&mut cmd, options, cgroup.map(|c| c.procs_fd()));
    // After before_exec's hook: the descriptor it takes may be the cgroup's, done with by then.
    let seccomp = crate::sandbox::seccomp::attach(cmd.as_std_mut(), spec.seccomp)?;
    let mut child = cmd.spawn()?;
    // The child has its copy (or failed); the parent's read end goes.
    drop(seccomp);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before it could be tracked"))?;
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => return Err(io::Error::other("child pipes missing")),
        };

    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
    tokio::spawn(write_stdin(stdin, stdin_rx));

    let tail = StderrTail::new(options.stderr_tail_bytes);
    let drained = tokio::spawn(drain_stderr(stderr, tail.clone()));

    let reader = LineReader::new(stdout, options.max_line_bytes);
    let lines = stream::unfold(reader, |mut reader| async move {
        match reader.next_line().await {
            Ok(Some(line)) => Some((line, reader)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reading child stdout failed");
                None
            }
        }
    });

    let (stop_tx, stop_rx) = oneshot::channel();
    let stop_timeout = options.stop_timeout;
    let exit = async move {
        let status = reap(&mut child, pid, stop_rx, stop_timeout).await;
        // Stragglers: a grandchild that outlived the leader in its group.
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        // The exit can be seen before the drain task has read the child's last bytes: without
        // this wait, the tail of a crash often missed the crash message, or was empty.
        let _ = tokio::time::timeout(STDERR_GRACE, drained).await;
        ExitReport {
            code: status.as_ref().ok().and_then(ExitStatus::code),
            signal: status.as_ref().ok().and_then(ExitStatus::signal),
            stderr_tail: tail.snapshot(),
        }
    };
    Ok(Spawned {
        handle: ChildHandle {
            pid,
            stdin: Some(stdin_tx),
            stop: Some(stop_tx),
        },
        stdout: Box::new(Box::pin(lines)),
        exit: Box::pin(exit),
    })
}

/// Between fork and exec: `PR_SET_PDEATHSIG(SIGKILL)`, the rlimits (`RLIMIT_NPROC`,
/// `RLIMIT_NOFILE`, `RLIMIT_CORE = 0`; inherited through bubblewrap and `setpriv`, and
/// counted against the user's own uid), and entry into the session's cgroup.
fn before_exec(
    cmd: &mut Command,
    options: &ChildOptions,
    cgroup_procs: Option<std::os::fd::RawFd>,
) {
    use nix::sys::resource::{setrlimit, Resource};
    let (nproc, nofile) = (options.max_processes, options.max_open_files);
    // SAFETY: the closure runs in the forked child before exec. It only makes system calls that
    // are async-signal-safe (prctl, setrlimit, write); it allocates nothing and takes no lock.
    // The cgroup fd is open in the parent for the whole spawn (the `SessionCgroup` outlives it).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            setrlimit(Resource::RLIMIT_NPROC, nproc, nproc).map_err(io::Error::from)?;
            setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(io::Error::from)?;
            setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(io::Error::from)?;
            if let Some(fd) = cgroup_procs {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::unistd::write(fd, b"0").map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// Waits for the child, escalating a stop when asked.
async fn reap(
    child: &mut tokio::process::Child,
    pid: u32,
    stop_rx: oneshot::Receiver<StopMode>,
    stop_timeout: Duration,
) -> io::Result<ExitStatus> {
    let group = Pid::from_raw(pid as i32);
    let mode = tokio::select! {
        status = child.wait() => return status,
        // A dropped handle (its session is gone) counts as a graceful stop.
        mode = stop_rx => mode.unwrap_or(StopMode::Graceful),
    };
    // A sandboxed child lives in a pid namespace of its own, in a session of its own: its
    // processes are not in this group. Note the namespace now, while the child is there to
    // lead to it, and empty it once the child is gone.
    let namespace = tokio::task::spawn_blocking(move || sandbox_namespace(pid))
        .await
        .ok()
        .flatten();
    let status = stop(child, pid, group, mode, stop_timeout).await;
    if let Some(namespace) = namespace {
        let _ = tokio::task::spawn_blocking(move || {
            empty_namespace(&namespace, Duration::from_secs(2))
        })
        .await;
    }
    status
}

async fn stop(
    child: &mut tokio::process::Child,
    pid: u32,
    group: Pid,
    mode: StopMode,
    stop_timeout: Duration,
) -> io::Result<ExitStatus> {
    if mode == StopMode::Graceful {
        if let Ok(status) = tokio::time::timeout(stop_timeout, child.wait()).await {
            return status;
        }
        tracing::debug!(
            pid,
            "child still running after stdin closed; SIGTERM to its group"
        );
        let _ = killpg(group, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(stop_timeout, child.wait()).await {
            return status;
        }
        tracing::warn!(pid, "child ignored SIGTERM; SIGKILL to its group");
    }
    let _ = killpg(group, Signal::SIGKILL);
    child.wait().await
}

/// The pid namespace of the sandbox under `outer` (bubblewrap's monitor): that of a child of
/// `outer` whose namespace differs from ours. Reads `/proc`; blocking.
fn sandbox_namespace(outer: u32) -> Option<String> {
    let ours = pid_namespace(std::process::id())?;
    proc_pids()
        .filter(|&pid| stat_field(pid, 1) == Some(outer))
        .find_map(|pid| pid_namespace(pid).filter(|ns| *ns != ours))
}

/// Waits (up to `deadline`) until no process is left in `namespace`, killing what remains. The
/// kernel kills a pid namespace's processes when its init dies (pid_namespaces(7)); this makes
/// the stop answer only once that is done. Blocking.
fn empty_namespace(namespace: &str, deadline: Duration) {
    let until = std::time::Instant::now() + deadline;
    loop {
        let left: Vec<u32> = proc_pids()
            .filter(|&pid| pid_namespace(pid).as_deref() == Some(namespace))
            .collect();
        if left.is_empty() || std::time::Instant::now() >= until {
            return;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn write_stdin(mut stdin: ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(line) = rx.recv().await {
        if let Err(e) = stdin.write_all(&line).await {
            tracing::debug!(error = %e, "child stdin closed");
            return;
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
    // Dropping stdin here closes the pipe: the CLI's signal to finish.
}

async fn drain_stderr(mut stderr: tokio::process::ChildStderr, tail: StderrTail) {
    let mut buf = vec![0u8; 8192];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_last_bytes() {
        let tail = StderrTail::new(8);
        tail.push(b"hello ");
        tail.push(b"world!");
        assert_eq!(tail.snapshot(), "o world!");
        tail.push(&[b'x'; 100]);
        assert_eq!(tail.snapshot(), "xxxxxxxx");
    }
}

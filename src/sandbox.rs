//! The sandbox every child runs in (DESIGN §7 invariant 7, issue "Isolation between users").
//!
//! Claude Code has a Bash tool, so whatever a child can read, its user can read. Each child
//! therefore runs under bubblewrap:
//! - new pid, ipc and uts namespaces (`--unshare-pid` hides every process but its own, so no
//!   `/proc/<pid>/environ` of another user or of the daemon), `--new-session` (no terminal
//!   injection) and `--die-with-parent`;
//! - a root of nothing: `/usr` and the library links read-only, a few files of `/etc` (name
//!   resolution, CA certificates, a `passwd` and `group` naming only its user), the CLI's own
//!   folder read-only, a fresh `/proc`, a minimal `/dev`, a private `/tmp`, and read-write only
//!   its user's home and its session's project. The data directory, the master key, other
//!   users' folders and the daemon's own files are simply not there;
//! - in `uid` mode (the daemon is root) it drops to its user's own uid and gid with `setpriv`,
//!   clearing supplementary groups and every capability, with `no_new_privs`, so files it
//!   writes are owned by that uid on the host and other users' 0700 folders are closed to it
//!   even outside the mount view; in `userns` mode (the daemon is not root) bubblewrap maps the
//!   daemon's uid to the user's uid inside an unprivileged user namespace.
//!
//! Resource limits are rlimits (`RLIMIT_NPROC`, `RLIMIT_NOFILE`, `RLIMIT_CORE = 0`), set between
//! fork and exec, and per-session cgroup v2 limits where the daemon has a delegated cgroup.
//!
//! The options come from one function, [`bwrap_args`], whose unit test lists them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod seccomp;

use crate::claude::command::ChildSpec;
use crate::config::{IsolationMode, IsolationSettings};

/// The folders between `/etc` and the deeper [`ETC_FILES`] (`/etc/ssl`, `/etc/pki`, …), in
/// order, parents first.
fn etc_parents() -> Vec<&'static str> {
    let mut parents: Vec<&str> = ETC_FILES
        .iter()
        .flat_map(|file| Path::new(file).ancestors().skip(1))
        .filter(|dir| dir.starts_with("/etc") && *dir != Path::new("/etc"))
        .filter_map(Path::to_str)
        .collect();
    parents.sort_unstable();
    parents.dedup();
    parents
}

/// Files of `/etc` a child may see (read-only, when they exist): name resolution, TLS roots,
/// the dynamic linker's cache, time zone, and Debian's alternatives links under `/usr/bin`.
pub const ETC_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/protocols",
    "/etc/services",
    // The trust store and OpenSSL's config, not the whole of /etc/ssl: its private/ holds the
    // host's TLS keys, closed only by their mode.
    "/etc/ssl/certs",
    "/etc/ssl/cert.pem",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    "/etc/pki/tls/cert.pem",
    "/etc/pki/tls/openssl.cnf",
    "/etc/pki/ca-trust",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/inputrc",
    "/etc/mime.types",
];

/// Top-level folders that are links into `/usr` on merged-usr systems, or real folders
/// elsewhere.
const ROOT_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Why the sandbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is missing.
    #[error(
        "bubblewrap ({0}) was not found: install it (Debian: apt-get install bubblewrap) or set \
         isolation.bwrap; isolation.mode = \"none\" runs children without a sandbox (single-user only)"
    )]
    NoBwrap(String),
    /// `setpriv` (util-linux) is missing in uid mode.
    #[error(
        "setpriv (util-linux) was not found; uid isolation needs it to drop to each user's uid"
    )]
    NoSetpriv,
    /// The chosen mode does not work here.
    #[error("isolation.mode = \"{mode}\" does not work on this machine: {reason}")]
    Unavailable {
        /// The mode.
        mode: &'static str,
        /// What failed.
        reason: String,
    },
    /// Neither root nor user namespaces.
    #[error(
        "cannot isolate users: the daemon is not root and unprivileged user namespaces do not work \
         here ({0}). Run as root (or with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_CHOWN), enable \
         user namespaces (sysctl kernel.unprivileged_userns_clone=1), or set isolation.mode = \"none\" \
         on a single-user machine"
    )]
    NoIsolation(String),
}

/// The isolation in force, decided once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// bubblewrap as root, then `setpriv` to each user's own uid.
    Uid {
        /// bubblewrap.
        bwrap: PathBuf,
        /// setpriv.
        setpriv: PathBuf,
    },
    /// unprivileged bubblewrap in a user namespace.
    Userns {
        /// bubblewrap.
        bwrap: PathBuf,
    },
    /// No sandbox.
    None,
}

impl Isolation {
    /// `uid`, `userns` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Uid { .. } => "uid",
            Self::Userns { .. } => "userns",
            Self::None => "none",
        }
    }
}

/// Looks `program` up on PATH unless it has a slash.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Decides the isolation for `settings` and proves it works by running `true` in it.
/// Blocking (runs a process): call it at startup.
pub fn probe(settings: &IsolationSettings) -> Result<Isolation, SandboxError> {
    if settings.mode == IsolationMode::None {
        return Ok(Isolation::None);
    }
    let bwrap = find_program(&settings.bwrap)
        .ok_or_else(|| SandboxError::NoBwrap(settings.bwrap.display().to_string()))?;
    seccomp::program().map_err(|reason| SandboxError::Unavailable {
        mode: "seccomp",
        reason,
    })?;
    let check = |isolation: Isolation| -> Result<Isolation, SandboxError> {
        run_probe(&isolation, settings.uid_base).map_err(|reason| SandboxError::Unavailable {
            mode: isolation.name(),
            reason,
        })?;
        Ok(isolation)
    };
    let try_uid = || -> Result<Isolation, SandboxError> {
        let setpriv = find_program(Path::new("setpriv")).ok_or(SandboxError::NoSetpriv)?;
        check(Isolation::Uid {
            bwrap: bwrap.clone(),
            setpriv,
        })
    };
    let userns = Isolation::Userns {
        bwrap: bwrap.clone(),
    };
    match settings.mode {
        IsolationMode::Uid => try_uid(),
        IsolationMode::Auto if nix::unistd::geteuid().is_root() => try_uid(),
        IsolationMode::Userns => check(userns),
        IsolationMode::Auto => check(userns).map_err(|e| SandboxError::NoIsolation(e.to_string())),
        // Answered above, before anything was looked up.
        IsolationMode::None => Ok(Isolation::None),
    }
}

fn run_probe(isolation: &Isolation, uid: u32) -> Result<(), String> {
    let dir = std::env::temp_dir();
    let spec = ChildSpec {
        program: PathBuf::from("/bin/true"),
        args: Vec::new(),
        env: Vec::new(),
        cwd: dir.clone(),
        home: dir.clone(),
        seccomp: None,
    };
    let input = SandboxInput {
        uid,
        gid: uid,
        tmp_max_bytes: 1 << 20,
        etc_passwd: None,
        etc_group: None,
        program: None,
    };
    let wrapped = wrap(spec, isolation, &input);
    let mut command = Command::new(&wrapped.program);
    command
        .args(&wrapped.args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let program = seccomp::attach(&mut command, wrapped.seccomp)
        .map_err(|e| format!("cannot pass the seccomp filter: {e}"))?;
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", wrapped.program.display()))?;
    drop(program);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// What one child's sandbox needs besides its [`ChildSpec`].
#[derive(Debug, Clone)]
pub struct SandboxInput {
    /// The user's uid.
    pub uid: u32,
    /// The user's gid.
    pub gid: u32,
    /// The size cap of the sandbox's `/tmp` (a tmpfs, so RAM until the sandbox ends), in bytes
    /// (`isolation.tmp_max_bytes`; bubblewrap `--size`, 0.5.0 and later).
    pub tmp_max_bytes: u64,
    /// A file to show as `/etc/passwd`.
    pub etc_passwd: Option<PathBuf>,
    /// A file to show as `/etc/group`.
    pub etc_group: Option<PathBuf>,
    /// The CLI as the sandbox runs it: its real path (links resolved, since a link such as
    /// npm's `.bin/claude` may point outside the folder that is shown) and the folder shown
    /// read-only (`None` under `/usr`). `None`: run the spec's program as it is.
    pub program: Option<SandboxProgram>,
}

/// See [`SandboxInput::program`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxProgram {
    /// The real path of the binary.
    pub path: PathBuf,
    /// The folder shown read-only, when it is outside `/usr`.
    pub dir: Option<PathBuf>,
}

/// How a sandbox runs `program`: its real path, and the folder to show read-only (its package,
/// the parent of a `bin` folder, else its own folder; none when it lies under `/usr`).
pub fn program(program: &Path) -> Option<SandboxProgram> {
    let path = find_program(program).and_then(|p| p.canonicalize().ok())?;
    if path.starts_with("/usr") {
        return Some(SandboxProgram { path, dir: None });
    }
    let parent = path.parent()?;
    let dir = if parent.file_name() == Some(OsStr::new("bin")) {
        parent.parent().map(Path::to_path_buf)
    } else {
        Some(parent.to_path_buf())
    };
    Some(SandboxProgram { path, dir })
}

/// The bubblewrap options of a child (see the module docs). `spec` gives HOME and cwd.
pub fn bwrap_args(isolation: &Isolation, spec: &ChildSpec, input: &SandboxInput) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut add = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    add(&[
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--new-session",
        "--die-with-parent",
    ]);
    if let Isolation::Userns { .. } = isolation {
        let (uid, gid) = (input.uid.to_string(), input.gid.to_string());
        add(&["--unshare-user", "--uid", &uid, "--gid", &gid]);
    }
    // bubblewrap makes a missing mount point's parents 0700 and root's: /etc must be
    // traversable for the user, or name resolution and CA certificates fail inside.
    add(&[
        "--hostname",
        "sashad",
        "--ro-bind",
        "/usr",
        "/usr",
        "--perms",
        "0755",
        "--dir",
        "/etc",
    ]);
    for link in ROOT_LINKS {
        let path = Path::new(link);
        match std::fs::read_link(path) {
            Ok(target) => add(&["--symlink", &target.to_string_lossy(), link]),
            Err(_) if path.is_dir() => add(&["--ro-bind", link, link]),
            Err(_) => {}
        }
    }
    // Folders of /etc that only hold some of ETC_FILES: traversable, like /etc itself.
    for dir in etc_parents() {
        add(&["--perms", "0755", "--dir", dir]);
    }
    for file in ETC_FILES {
        add(&["--ro-bind-try", file, file]);
    }
    if let Some(passwd) = &input.etc_passwd {
        add(&["--ro-bind", &passwd.to_string_lossy(), "/etc/passwd"]);
    }
    if let Some(group) = &input.etc_group {
        add(&["--ro-bind", &group.to_string_lossy(), "/etc/group"]);
    }
    // /tmp and /dev/shm are the sandbox's own, world-writable with the sticky bit like real
    // ones: bubblewrap (as root) would otherwise make them root's, and POSIX semaphores
    // (Python's multiprocessing) need /dev/shm. Capped, since a tmpfs lives in RAM: without a
    // size one user could fill the host's memory through it. /dev itself is a tmpfs too, which
    // the user owns in userns mode: read-only, once /dev/shm is on it (device nodes still work).
    let tmp_size = input.tmp_max_bytes.to_string();
    let tmpfs = |dir| ["--perms", "1777", "--size", &tmp_size, "--tmpfs", dir];
    add(&["--proc", "/proc", "--dev", "/dev"]);
    add(&tmpfs("/dev/shm"));
    add(&["--remount-ro", "/dev"]);
    add(&tmpfs("/tmp"));
    let program_dir = input.program.as_ref().and_then(|p| p.dir.as_ref());
    // bubblewrap makes missing parents of a mount point 0700 and root's: the user could not
    // reach their own folders. Make them first, 0755, empty but for the mounts below.
    let mut parents: Vec<&Path> = [
        program_dir.map(PathBuf::as_path),
        Some(&spec.home),
        Some(&spec.cwd),
    ]
    .into_iter()
    .flatten()
    .flat_map(|p| p.ancestors().skip(1))
    .filter(|p| p.parent().is_some() && *p != Path::new("/tmp") && !p.starts_with("/usr"))
    .collect();
    parents.sort();
    parents.dedup();
    for dir in parents {
        add(&["--perms", "0755", "--dir", &dir.to_string_lossy()]);
    }
    if let Some(dir) = program_dir {
        let dir = dir.to_string_lossy();
        add(&["--ro-bind", &dir, &dir]);
    }
    let home = spec.home.to_string_lossy();
    let cwd = spec.cwd.to_string_lossy();
    add(&[
        "--bind", &home, &home, "--bind", &cwd, &cwd, "--chdir", &cwd,
    ]);
    args
}

/// Wraps a child's command in the sandbox: the program becomes bubblewrap (and, in uid mode,
/// `setpriv` inside it). Environment and cwd are kept. With [`Isolation::None`] the spec is
/// returned as it is.
pub fn wrap(spec: ChildSpec, isolation: &Isolation, input: &SandboxInput) -> ChildSpec {
    let bwrap = match isolation {
        Isolation::None => return spec,
        Isolation::Uid { bwrap, .. } | Isolation::Userns { bwrap } => bwrap.clone(),
    };
    let mut args = bwrap_args(isolation, &spec, input);
    // The probe at startup has compiled it; bubblewrap installs it last, before the command.
    let seccomp = seccomp::program().ok();
    if seccomp.is_some() {
        args.extend(["--seccomp".into(), seccomp::FD.to_string()]);
    }
    args.push("--".into());
    if let Isolation::Uid { setpriv, .. } = isolation {
        args.extend([
            setpriv.to_string_lossy().into_owned(),
            format!("--reuid={}", input.uid),
            format!("--regid={}", input.gid),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
            "--bounding-set=-all".into(),
            "--no-new-privs".into(),
            "--".into(),
        ]);
    }
    let program = input.program.as_ref().map_or(&spec.program, |p| &p.path);
    args.push(program.to_string_lossy().into_owned());
    args.extend(spec.args.iter().cloned());
    ChildSpec {
        program: bwrap,
        args,
        env: spec.env,
        cwd: spec.cwd,
        home: spec.home,
        seccomp,
    }
}

/// `/etc/passwd` and `/etc/group` for a sandbox: root and the user only.
pub fn passwd_files(username: &str, uid: u32, gid: u32, home: &Path) -> (String, String) {
    let passwd = format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n{username}:x:{uid}:{gid}:{username}:{}:/bin/bash\n",
        home.display()
    );
    let group = format!("root:x:0:\n{username}:x:{gid}:\n");
    (passwd, group)
}

/// The daemon's delegated cgroup v2 (systemd `Delegate=yes`), where per-session cgroups with
/// `memory.max`, `pids.max` and `cpu.max` are made.
///
/// cgroup v2 forbids processes in a cgroup whose controllers are enabled for children ("no
/// internal processes"), so the daemon first moves itself into `<base>/daemon`, then enables
/// `memory`, `pids` and `cpu` for `<base>`'s children; each session gets `<base>/session-<id>`.
#[derive(Debug, Clone)]
pub struct Cgroups {
    base: PathBuf,
}

impl Cgroups {
    /// The delegated cgroup, or why there is none. Blocking: call it at startup.
    pub fn detect() -> Result<Self, String> {
        let root = Path::new("/sys/fs/cgroup");
        if !root.join("cgroup.controllers").exists() {
            return Err("no cgroup v2 unified hierarchy at /sys/fs/cgroup".into());
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let relative = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
        let base = root.join(relative.trim_start_matches('/'));
        let controllers =
            std::fs::read_to_string(base.join("cgroup.controllers")).map_err(|e| e.to_string())?;
        for needed in ["memory", "pids", "cpu"] {
            if !controllers.split_whitespace().any(|c| c == needed) {
                return Err(format!(
                    "the {needed} controller is not delegated to {}",
                    base.display()
                ));
            }
        }
        let daemon = base.join("daemon");
        std::fs::create_dir_all(&daemon)
            .map_err(|e| format!("cannot create {}: {e} (not delegated?)", daemon.display()))?;
        std::fs::write(daemon.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cannot move the daemon into {}: {e}", daemon.display()))?;
        std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids +cpu")
            .map_err(|e| format!("cannot enable controllers in {}: {e}", base.display()))?;
        Ok(Self { base })
    }

    /// A cgroup for one session's child with the configured limits.
    pub fn session(
        &self,
        session_id: &str,
        settings: &IsolationSettings,
    ) -> std::io::Result<SessionCgroup> {
        let dir = self.base.join(format!("session-{session_id}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("memory.max"), &settings.memory_max)?;
        std::fs::write(dir.join("pids.max"), settings.pids_max.to_string())?;
        std::fs::write(dir.join("cpu.max"), &settings.cpu_max)?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(SessionCgroup { dir, procs })
    }
}

/// One session's cgroup; the child writes itself into it between fork and exec. Removed when
/// dropped (after the child has exited).
#[derive(Debug)]
pub struct SessionCgroup {
    dir: PathBuf,
    procs: std::fs::File,
}

impl SessionCgroup {
    /// The open `cgroup.procs` of this cgroup.
    pub fn procs_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.procs)
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Host accounts and subordinate id ranges (`/etc/passwd`, `/etc/group`, `/etc/subuid`,
/// `/etc/subgid`, each `name:…` line) that overlap `uid_base..uid_base + uid_count`: users'
/// children would share ids with them. One message per overlap, for a startup warning.
pub fn id_range_overlaps(settings: &IsolationSettings, etc: &Path) -> Vec<String> {
    let (base, end) = (
        u64::from(settings.uid_base),
        u64::from(settings.uid_base) + u64::from(settings.uid_count),
    );
    let mut found = Vec::new();
    for (file, is_range) in [
        ("passwd", false),
        ("group", false),
        ("subuid", true),
        ("subgid", true),
    ] {
        let Ok(text) = std::fs::read_to_string(etc.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            let (first, count) = if is_range {
                match (fields.get(1), fields.get(2)) {
                    (Some(a), Some(b)) => (a.parse::<u64>().ok(), b.parse::<u64>().ok()),
                    _ => continue,
                }
            } else {
                (fields.get(2).and_then(|id| id.parse::<u64>().ok()), Some(1))
            };
            let (Some(first), Some(count)) = (first, count) else {
                continue;
            };
            if first < end && base < first.saturating_add(count) {
                found.push(format!(
                    "{}:{} ({}) overlaps isolation.uid_base..+uid_count ({}..{})",
                    etc.join(file).display(),
                    fields[0],
                    if is_range {
                        format!("{first}..{}", first + count)
                    } else {
                        first.to_string()
                    },
                    base,
                    end
                ));
            }
        }
    }
    found
}

/// What the startup log and the admin API say about isolation and limits.
pub fn describe(
    isolation: &Isolation,
    cgroups: &Result<Cgroups, String>,
    settings: &IsolationSettings,
) -> serde_json::Value {
    serde_json::json!({
        "mode": isolation.name(),
        "sandbox": !matches!(isolation, Isolation::None),
        "rlimits": {
            "nproc": settings.max_processes,
            "nofile": settings.max_open_files,
            "core": 0,
        },
        "cgroup": match cgroups {
            Ok(c) => serde_json::json!({
                "inForce": true,
                "base": c.base.display().to_string(),
                "memoryMax": settings.memory_max,
                "pidsMax": settings.pids_max,
                "cpuMax": settings.cpu_max,
            }),
            Err(reason) => serde_json::json!({ "inForce": false, "reason": reason }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ChildSpec {
        ChildSpec {
            program: "/opt/claude/bin/claude".into(),
            args: vec!["-p".into()],
            env: Vec::new(),
            cwd: "/srv/ws/projects/u1/demo".into(),
            home: "/srv/ws/users/u1".into(),
            seccomp: None,
        }
    }

    fn input() -> SandboxInput {
        SandboxInput {
            uid: 200_001,
            gid: 200_001,
            tmp_max_bytes: 1 << 30,
            etc_passwd: Some("/srv/ws/.sandbox/u1/passwd".into()),
            etc_group: Some("/srv/ws/.sandbox/u1/group".into()),
            program: Some(SandboxProgram {
                path: "/opt/claude/bin/claude".into(),
                dir: Some("/opt/claude".into()),
            }),
        }
    }

    #[test]
    fn overlapping_accounts_and_subordinate_ranges_are_named() {
        let etc = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(etc.path().join(name), text).unwrap();
        write(
            "passwd",
            "root:x:0:0::/root:/bin/sh\nbob:x:200005:200005::/h:/bin/sh\n",
        );
        write("group", "root:x:0:\n");
        write("subuid", "alice:100000:65536\ncarol:165536:65536\n");
        write("subgid", "broken line\n");
        let settings = IsolationSettings {
            uid_base: 200_000,
            ..IsolationSettings::default()
        };
        let found = id_range_overlaps(&settings, etc.path());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("passwd:bob (200005)"), "{found:?}");
        assert!(
            found[1].contains("subuid:carol (165536..231072)"),
            "{found:?}"
        );
        let clear = IsolationSettings {
            uid_base: 300_000,
            ..IsolationSettings::default()
        };
        assert!(id_range_overlaps(&clear, etc.path()).is_empty());
        // The default range is clear of both.
        assert!(id_range_overlaps(&IsolationSettings::default(), etc.path()).is_empty());
    }

    /// The whole option list, so a change to the sandbox is a visible change to this test.
    #[test]
    fn the_options_are_exactly_these() {
        let isolation = Isolation::Uid {
            bwrap: "/usr/bin/bwrap".into(),
            setpriv: "/usr/bin/setpriv".into(),
        };
        let args = bwrap_args(&isolation, &spec(), &input());
        let joined = args.join(" ");
        assert!(joined.starts_with(
            "--unshare-pid --unshare-ipc --unshare-uts --new-session --die-with-parent --hostname sashad \
             --ro-bind /usr /usr --perms 0755 --dir /etc "
        ), "{joined}");
        for dir in ["/etc/ssl", "/etc/pki", "/etc/pki/tls"] {
            assert!(
                joined.contains(&format!("--perms 0755 --dir {dir} ")),
                "{dir}"
            );
        }
        for etc in ETC_FILES {
            assert!(
                joined.contains(&format!("--ro-bind-try {etc} {etc} ")),
                "{etc}"
            );
        }
        assert!(
            !joined.contains("--ro-bind-try /etc/ssl /etc/ssl "),
            "not the whole of /etc/ssl: {joined}"
        );
        assert!(joined.ends_with(
            "--ro-bind /srv/ws/.sandbox/u1/passwd /etc/passwd --ro-bind /srv/ws/.sandbox/u1/group /etc/group \
             --proc /proc --dev /dev --perms 1777 --size 1073741824 --tmpfs /dev/shm --remount-ro /dev \
             --perms 1777 --size 1073741824 --tmpfs /tmp \
             --perms 0755 --dir /opt --perms 0755 --dir /srv --perms 0755 --dir /srv/ws \
             --perms 0755 --dir /srv/ws/projects --perms 0755 --dir /srv/ws/projects/u1 \
             --perms 0755 --dir /srv/ws/users --ro-bind /opt/claude /opt/claude \
             --bind /srv/ws/users/u1 /srv/ws/users/u1 --bind /srv/ws/projects/u1/demo /srv/ws/projects/u1/demo \
             --chdir /srv/ws/projects/u1/demo"
        ), "{joined}");
        // Nothing else is bound: no data directory, no other user, no host root.
        let binds: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--bind" || w[0] == "--ro-bind")
            .map(|w| w[1].as_str())
            .collect();
        let mut expected = vec!["/usr"];
        expected.extend(
            ROOT_LINKS
                .iter()
                .filter(|l| Path::new(l).is_dir() && std::fs::read_link(l).is_err()),
        );
        expected.extend([
            "/srv/ws/.sandbox/u1/passwd",
            "/srv/ws/.sandbox/u1/group",
            "/opt/claude",
            "/srv/ws/users/u1",
            "/srv/ws/projects/u1/demo",
        ]);
        assert_eq!(binds, expected);
        assert!(!args.iter().any(|a| a == "/" || a == "--dev-bind"));
    }

    #[test]
    fn uid_mode_drops_to_the_users_uid_with_setpriv() {
        let isolation = Isolation::Uid {
            bwrap: "/usr/bin/bwrap".into(),
            setpriv: "/usr/bin/setpriv".into(),
        };
        let wrapped = wrap(spec(), &isolation, &input());
        assert_eq!(wrapped.program, PathBuf::from("/usr/bin/bwrap"));
        let tail: Vec<&str> = wrapped
            .args
            .iter()
            .map(String::as_str)
            .skip_while(|a| *a != "--")
            .collect();
        assert_eq!(
            tail,
            [
                "--",
                "/usr/bin/setpriv",
                "--reuid=200001",
                "--regid=200001",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
                "/opt/claude/bin/claude",
                "-p"
            ]
        );
        assert!(!wrapped.args.iter().any(|a| a == "--unshare-user"));
        // The seccomp program, for bubblewrap to install before the command.
        let joined = wrapped.args.join(" ");
        assert!(joined.contains(" --seccomp 3 -- "), "{joined}");
        assert_eq!(wrapped.seccomp, Some(seccomp::program().unwrap()));
    }

    #[test]
    fn userns_mode_maps_the_users_uid_inside() {
        let isolation = Isolation::Userns {
            bwrap: "/usr/bin/bwrap".into(),
        };
        let wrapped = wrap(spec(), &isolation, &input());
        let joined = wrapped.args.join(" ");
        assert!(
            joined.contains("--unshare-user --uid 200001 --gid 200001"),
            "{joined}"
        );
        assert!(joined.ends_with("-- /opt/claude/bin/claude -p"), "{joined}");
    }

    #[test]
    fn none_leaves_the_command_alone() {
        let wrapped = wrap(spec(), &Isolation::None, &input());
        assert_eq!(wrapped.program, PathBuf::from("/opt/claude/bin/claude"));
        assert_eq!(wrapped.args, ["-p"]);
    }

    #[test]
    fn passwd_names_only_root_and_the_user() {
        let (passwd, group) = passwd_files("alice", 200_001, 200_001, Path::new("/h"));
        assert_eq!(passwd.lines().count(), 2);
        assert!(passwd.contains("alice:x:200001:200001:alice:/h:/bin/bash"));
        assert!(group.contains("alice:x:200001:"));
    }
}

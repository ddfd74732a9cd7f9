//! The seccomp filter bubblewrap installs in every sandbox (`--seccomp 3`, bubblewrap(1)), just
//! before it runs the child's command.
//!
//! Inside its sandbox a user's Claude may do nearly anything its uid may; what this takes away
//! is kernel surface that local privilege escalations keep coming through: new user namespaces
//! (which would hand the child a full set of capabilities over its own namespaces, and with
//! them nf_tables, mounts and the like), the kernel keyring, eBPF, `userfaultfd`,
//! `perf_event_open` and io_uring. The price: tools that build sandboxes of their own from
//! user namespaces (Claude Code's own `sandbox` setting, Chromium's sandbox, rootless podman)
//! do not work inside, as they do not under the systemd unit's `RestrictNamespaces=` either. The systemd unit forbids user namespaces with
//! `RestrictNamespaces=`; a container has nothing of the kind unless the operator installs a
//! seccomp profile, so sashad brings its own. Every blocked call fails with `ENOSYS`, as if the
//! kernel lacked it: programs take that as a feature that is not there and carry on. `clone3`
//! is blocked as a whole (its flags are in memory a filter cannot read), and glibc falls back
//! to `clone`, whose flags it can: the same choice as Docker's and systemd's filters.
//! System calls of another ABI (i386 on x86_64) kill the process, so they cannot go around it;
//! x32 numbers, which share the x86_64 ABI's audit value, are matched explicitly.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The descriptor bubblewrap reads the program from in the child (`--seccomp 3`).
pub const FD: i32 = 3;

/// System calls refused whatever their arguments.
const DENIED: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_userfaultfd,
    libc::SYS_perf_event_open,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// System calls refused when their first argument (the flags) asks for a user namespace.
const DENIED_WITH_NEWUSER: &[i64] = &[libc::SYS_unshare, libc::SYS_clone];

/// The x32 ABI's numbers are x86_64's with this bit set (asm/unistd.h `__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
const X32_BIT: i64 = 0x4000_0000;

/// The compiled filter: `struct sock_filter` instructions in native byte order, as bubblewrap
/// reads them (and hands them to `prctl(PR_SET_SECCOMP)`).
///
/// Errors: the architecture is not one the compiler supports (x86_64, aarch64, riscv64).
pub fn program() -> Result<&'static [u8], String> {
    static PROGRAM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PROGRAM.get_or_init(build).as_deref().map_err(Clone::clone)
}

fn build() -> Result<Vec<u8>, String> {
    let program = compile()?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    Ok(bytes)
}

fn compile() -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))?;
    let newuser = libc::CLONE_NEWUSER as u64;
    let wants_newuser = || -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )?])?])
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let error = |e: seccompiler::BackendError| e.to_string();
    for &nr in DENIED {
        for nr in abi_numbers(nr) {
            rules.insert(nr, Vec::new());
        }
    }
    for &nr in DENIED_WITH_NEWUSER {
        for nr in abi_numbers(nr) {
            rules.insert(nr, wants_newuser().map_err(error)?);
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(error)?;
    BpfProgram::try_from(filter).map_err(error)
}

/// Hands `program` (if any) to the child `command` will start, at [`FD`]: a pipe holding it,
/// and a `pre_exec` hook that puts the pipe's read end there. Returns that read end, which the
/// caller keeps open until the child is spawned and then drops. Hooks run in the order they
/// were added: add this one after any hook that uses a descriptor of its own.
///
/// Errors: `pipe2(2)` or `write(2)` failed.
pub fn attach(
    command: &mut std::process::Command,
    program: Option<&[u8]>,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let Some(program) = program else {
        return Ok(None);
    };
    let read = pipe_with(program)?;
    let fd = read.as_raw_fd();
    // SAFETY: install_in_child only calls dup2 and fcntl; the caller keeps `read` open until
    // the child has been spawned.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || install_in_child(fd));
    }
    Ok(Some(read))
}

/// A pipe holding `program`, to be read by bubblewrap: its read end (close-on-exec, so that no
/// other child inherits it; [`install_in_child`] puts it at [`FD`] for this one).
///
/// Errors: `pipe2(2)` or `write(2)` failed.
fn pipe_with(program: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // A few hundred bytes: far below a pipe's 64 KiB, so the write cannot block.
    let mut written = 0;
    while written < program.len() {
        written += nix::unistd::write(&write, &program[written..])?;
    }
    Ok(read)
}

/// Between fork and exec: makes `fd` (from [`pipe_with`]) the child's [`FD`], without
/// close-on-exec. Only async-signal-safe calls (`dup2`, `fcntl`).
///
/// # Safety
/// Call only in a `pre_exec` hook, with `fd` open.
#[allow(unsafe_code)]
unsafe fn install_in_child(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    if fd == FD {
        // dup2 onto itself would keep close-on-exec.
        if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
            return Err(std::io::Error::last_os_error());
        }
    } else if libc::dup2(fd, FD) == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `nr`, and on x86_64 its x32 twin.
fn abi_numbers(nr: i64) -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    return vec![nr, nr | X32_BIT];
    #[cfg(not(target_arch = "x86_64"))]
    return vec![nr];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_whole_instructions() {
        let bytes = program().unwrap();
        assert_eq!(bytes.len(), compile().unwrap().len() * 8);
        // Far below the kernel's 4096-instruction limit.
        assert!(bytes.len() / 8 < 200, "{}", bytes.len() / 8);
    }

    /// `syscall(2)`'s result and errno.
    fn call(nr: i64, a: u64, b: u64, c: u64) -> (i64, i32) {
        // SAFETY: raw system calls with integer arguments; the ones that take pointers get
        // null and a size of 0, or are refused by the filter before the kernel reads them.
        #[allow(unsafe_code)]
        let r = unsafe { libc::syscall(nr, a, b, c) };
        let errno = if r == -1 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        (r, errno)
    }

    /// The filter, installed for real on a thread of its own (seccomp filters and
    /// no_new_privs are per thread): what it refuses fails with ENOSYS, the rest goes through.
    #[test]
    fn the_filter_refuses_what_it_lists_and_nothing_else() {
        let program = compile().unwrap();
        std::thread::spawn(move || {
            seccompiler::apply_filter(&program).unwrap();
            let newuser = libc::CLONE_NEWUSER as u64;
            for (name, nr, a) in [
                ("unshare(CLONE_NEWUSER)", libc::SYS_unshare, newuser),
                (
                    "unshare(NEWUSER|NEWNS)",
                    libc::SYS_unshare,
                    newuser | libc::CLONE_NEWNS as u64,
                ),
                ("clone(CLONE_NEWUSER)", libc::SYS_clone, newuser),
                ("clone3", libc::SYS_clone3, 0),
                ("keyctl", libc::SYS_keyctl, 0),
                ("add_key", libc::SYS_add_key, 0),
                ("request_key", libc::SYS_request_key, 0),
                ("bpf", libc::SYS_bpf, 0),
                ("userfaultfd", libc::SYS_userfaultfd, 0),
                ("perf_event_open", libc::SYS_perf_event_open, 0),
                ("io_uring_setup", libc::SYS_io_uring_setup, 0),
            ] {
                assert_eq!(call(nr, a, 0, 0), (-1, libc::ENOSYS), "{name}");
            }
            // Allowed: other unshare flags (refused by the kernel for lack of privilege, or
            // done, but not ENOSYS), and ordinary calls.
            let (_, errno) = call(libc::SYS_unshare, libc::CLONE_NEWNS as u64, 0, 0);
            assert_ne!(errno, libc::ENOSYS);
            assert!(call(libc::SYS_getpid, 0, 0, 0).0 > 0);
            let file = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert!(file.contains("Seccomp:\t2"), "{file}");
        })
        .join()
        .unwrap();
        // The test's other threads are untouched.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.contains("Seccomp:\t0"), "{status}");
    }
}

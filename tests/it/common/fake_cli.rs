//! The fake Claude Code CLI (`examples/fake_claude.rs`): where its binary is, built on demand.
//!
//! `cargo test` builds the examples before it runs the tests, but `cargo test --test it` does
//! not, so the binary may be missing or older than its source; then it is built once per test
//! process. Cargo releases its build lock before it runs the tests, so the nested build cannot
//! deadlock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Path of the fake CLI, `target/<profile>/examples/fake_claude`, next to the test executable's
/// `deps/` folder. Built with `cargo build --example fake_claude` if it is missing or stale.
///
/// # Panics
/// If the build fails.
pub fn fake_claude_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    // target/<profile>/deps/it-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable sits in target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("fake_claude{}", std::env::consts::EXE_SUFFIX));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fake_claude.rs");
    if modified(&bin).is_some_and(|built| modified(&source).is_none_or(|src| src <= built)) {
        return bin;
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            "fake_claude",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("run cargo to build the fake CLI");
    assert!(
        status.success(),
        "cargo build --example fake_claude: {status}"
    );
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

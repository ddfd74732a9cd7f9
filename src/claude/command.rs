//! The argv and environment of one `claude` child (DESIGN §6).
//!
//! argv: `claude -p --input-format stream-json --output-format stream-json --verbose
//! --include-partial-messages [--model M] [--permission-mode MODE] [--resume=<id>]` plus the
//! configured extra arguments. `--resume=<id>` is one argument, as the Agent SDK passes it, so an
//! id starting with `-` cannot be read as a flag. No secret is ever in argv.
//!
//! The environment is built from nothing: an allowlist of plain variables, the user's own
//! credential variables, and the switches that keep the CLI from updating itself or sending
//! telemetry. Nothing of the daemon's environment is inherited, so no `SASHAD_*`, no
//! `ANTHROPIC_*` or `CLAUDE_CODE_*` left over from the operator's shell, and no `CLAUDECODE`
//! (which the SDK also drops).

use std::path::PathBuf;

use zeroize::Zeroizing;

/// `--permission-mode` choices of Claude Code 2.1.332 (`claude --help`).
pub const PERMISSION_MODES: &[&str] = &[
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "manual",
    "plan",
];

/// Checks a `--model` value: an alias or a full model name, as a plain token.
pub fn valid_model(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= 100
        && !model.starts_with('-')
        && model.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '[' | ']' | '@')
        })
}

/// Checks a `--permission-mode` value against [`PERMISSION_MODES`].
pub fn valid_permission_mode(mode: &str) -> bool {
    PERMISSION_MODES.contains(&mode)
}

/// Everything that decides one child's command line and environment.
pub struct CommandInput<'a> {
    /// `claude.binary`.
    pub binary: &'a std::path::Path,
    /// `claude.extra_args`.
    pub extra_args: &'a [String],
    /// `--model`.
    pub model: Option<&'a str>,
    /// `--permission-mode`.
    pub permission_mode: Option<&'a str>,
    /// `--resume=<id>`.
    pub resume: Option<&'a str>,
    /// HOME.
    pub home: PathBuf,
    /// The project folder (cwd).
    pub cwd: PathBuf,
    /// USER (the sashad username: validated to `[A-Za-z0-9._-]`).
    pub user: &'a str,
    /// The user's credential variables.
    pub credential_env: Vec<(&'static str, Zeroizing<String>)>,
    /// `ANTHROPIC_BASE_URL`, when not the public API.
    pub base_url: Option<&'a str>,
    /// PATH to give the child (the daemon's, so tools resolve as the operator installed them).
    pub path: Option<String>,
    /// LANG (the daemon's, else `C.UTF-8`).
    pub lang: Option<String>,
}

/// A child's program, argv, environment and cwd. `Debug` shows variable names but no values.
pub struct ChildSpec {
    /// The program.
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: Vec<(String, Zeroizing<String>)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// HOME (also in `env`), for the sandbox.
    pub home: PathBuf,
    /// A seccomp program for the child to find at descriptor
    /// [`crate::sandbox::seccomp::FD`] (bubblewrap's `--seccomp`), if any.
    pub seccomp: Option<&'static [u8]>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// Builds the child's command (see the module docs).
pub fn build(input: CommandInput<'_>) -> ChildSpec {
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(model) = input.model {
        args.push("--model".into());
        args.push(model.into());
    }
    if let Some(mode) = input.permission_mode {
        args.push("--permission-mode".into());
        args.push(mode.into());
    }
    if let Some(id) = input.resume {
        args.push(format!("--resume={id}"));
    }
    args.extend(input.extra_args.iter().cloned());

    let plain = |v: &str| Zeroizing::new(v.to_owned());
    let mut env: Vec<(String, Zeroizing<String>)> = vec![
        (
            "PATH".into(),
            plain(
                input
                    .path
                    .as_deref()
                    .unwrap_or("/usr/local/bin:/usr/bin:/bin"),
            ),
        ),
        ("HOME".into(), plain(&input.home.to_string_lossy())),
        (
            "LANG".into(),
            plain(input.lang.as_deref().unwrap_or("C.UTF-8")),
        ),
        ("TERM".into(), plain("dumb")),
        ("USER".into(), plain(input.user)),
        ("DISABLE_AUTOUPDATER".into(), plain("1")),
        ("DISABLE_TELEMETRY".into(), plain("1")),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            plain("1"),
        ),
    ];
    if let Some(url) = input.base_url {
        env.push(("ANTHROPIC_BASE_URL".into(), plain(url)));
    }
    env.extend(
        input
            .credential_env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    ChildSpec {
        program: input.binary.to_path_buf(),
        args,
        env,
        cwd: input.cwd,
        home: input.home,
        seccomp: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_env_are_exactly_the_contract() {
        let spec = build(CommandInput {
            binary: std::path::Path::new("/opt/claude"),
            extra_args: &["--allowedTools".into(), "Bash".into()],
            model: Some("sonnet"),
            permission_mode: Some("plan"),
            resume: Some("-starts-with-dash"),
            home: "/ws/users/u1".into(),
            cwd: "/ws/projects/u1/demo".into(),
            user: "alice",
            credential_env: vec![("ANTHROPIC_API_KEY", Zeroizing::new("sk-ant-secret".into()))],
            base_url: Some("http://127.0.0.1:9"),
            path: Some("/usr/bin:/bin".into()),
            lang: None,
        });
        assert_eq!(
            spec.args,
            [
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
                "--include-partial-messages",
                "--model",
                "sonnet",
                "--permission-mode",
                "plan",
                "--resume=-starts-with-dash",
                "--allowedTools",
                "Bash"
            ]
        );
        let names: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "LANG",
                "TERM",
                "USER",
                "DISABLE_AUTOUPDATER",
                "DISABLE_TELEMETRY",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
                "ANTHROPIC_BASE_URL",
                "ANTHROPIC_API_KEY"
            ]
        );
        assert!(!format!("{spec:?}").contains("sk-ant-secret"));
        assert!(!spec.args.iter().any(|a| a.contains("secret")));
    }

    #[test]
    fn models_and_modes_are_checked() {
        assert!(valid_model("claude-sonnet-4-5[1m]"));
        assert!(valid_model("opus"));
        assert!(!valid_model("--dangerously-skip-permissions"));
        assert!(!valid_model("a b"));
        assert!(valid_permission_mode("plan"));
        assert!(!valid_permission_mode("yolo"));
    }
}

//! Users' homes and projects on disk (DESIGN §7 invariant 2).
//!
//! Layout under the workspace folder: `users/<user id>/` is a user's HOME (their Claude
//! transcripts live there), `projects/<user id>/<project id>/` is a project and a child's cwd.
//! Every folder is created 0700. Project ids are validated to a plain name, and every folder on
//! the way is checked to be a real directory, not a symlink, so a project can never resolve
//! outside the workspace even if someone plants a link in it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest project id, in bytes.
pub const MAX_PROJECT_ID_LEN: usize = 64;

/// Why a workspace path was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The id is not a plain name.
    #[error("a project id has 1 to 64 characters from A-Z a-z 0-9 . _ -, starts with a letter or digit, and is not \"..\"")]
    InvalidProjectId,
    /// A folder on the way is a symlink or not a directory.
    #[error("{0} is not a plain directory (symlinks are refused)")]
    NotADirectory(PathBuf),
    /// The project does not exist.
    #[error("no such project")]
    NoSuchProject,
    /// The project exists already.
    #[error("the project exists already")]
    ProjectExists,
    /// A file operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Checks a project id: a plain folder name.
pub fn validate_project_id(id: &str) -> Result<(), WorkspaceError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_PROJECT_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(WorkspaceError::InvalidProjectId)
    }
}

/// The workspace root and the paths under it.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

/// Refuses a path component that is empty, `.`, `..` or holds a `/`.
fn check_part(part: &str) -> Result<(), WorkspaceError> {
    if part.is_empty() || part.contains('/') || part == "." || part == ".." {
        return Err(WorkspaceError::InvalidProjectId);
    }
    Ok(())
}

/// Removes the folder `path` and everything in it (see [`Workspace::remove_user`]).
fn remove_tree(path: &Path) -> Result<(), WorkspaceError> {
    let failed = |source| WorkspaceError::Io {
        context: "cannot remove",
        path: path.to_path_buf(),
        source,
    };
    let output = std::process::Command::new("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(failed)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or("no message").to_owned();
    Err(failed(io::Error::other(format!(
        "rm {}: {last}",
        output.status
    ))))
}

impl Workspace {
    /// A workspace rooted at `root` (created on first use).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A user's HOME, created 0700.
    pub fn home(&self, user_id: &str) -> Result<PathBuf, WorkspaceError> {
        self.ensure(&["users", user_id])
    }

    /// The folder of a user's sandbox files (`passwd`, `group`), created 0700. Outside their
    /// home: the daemon writes there, and the user must not be able to swap them.
    pub fn sandbox_etc(&self, user_id: &str) -> Result<PathBuf, WorkspaceError> {
        self.ensure(&["etc", user_id])
    }

    /// A user's projects folder, created 0700.
    fn projects_of(&self, user_id: &str) -> Result<PathBuf, WorkspaceError> {
        self.ensure(&["projects", user_id])
    }

    /// An existing project's folder, checked to be a plain directory.
    pub fn project(&self, user_id: &str, project: &str) -> Result<PathBuf, WorkspaceError> {
        validate_project_id(project)?;
        let path = self.projects_of(user_id)?.join(project);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(path),
            Ok(_) => Err(WorkspaceError::NotADirectory(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(WorkspaceError::NoSuchProject),
            Err(source) => Err(WorkspaceError::Io {
                context: "cannot read",
                path,
                source,
            }),
        }
    }

    /// Creates a project folder 0700.
    pub fn create_project(&self, user_id: &str, project: &str) -> Result<PathBuf, WorkspaceError> {
        validate_project_id(project)?;
        let path = self.projects_of(user_id)?.join(project);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(WorkspaceError::ProjectExists)
            }
            Err(source) => Err(WorkspaceError::Io {
                context: "cannot create",
                path,
                source,
            }),
        }
    }

    /// The user's project ids, sorted. Entries that are not plain directories are left out.
    pub fn list_projects(&self, user_id: &str) -> Result<Vec<String>, WorkspaceError> {
        let dir = self.projects_of(user_id)?;
        let entries = fs::read_dir(&dir).map_err(|source| WorkspaceError::Io {
            context: "cannot list",
            path: dir.clone(),
            source,
        })?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| validate_project_id(name).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes a user's home, projects and sandbox files (a deleted user's data).
    ///
    /// Folders go with `rm -rf --one-file-system`: the user shaped these trees, and GNU rm
    /// removes any depth without recursion on the stack and without following a symlink, where
    /// `std::fs::remove_dir_all` recurses once per level and a deep enough tree would overflow
    /// the thread's stack and abort the daemon.
    ///
    /// Errors: [`WorkspaceError::Io`] naming the folder, with rm's last words.
    pub fn remove_user(&self, user_id: &str) -> Result<(), WorkspaceError> {
        check_part(user_id)?;
        for part in ["users", "projects", "etc"] {
            let path = self.root.join(part).join(user_id);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => remove_tree(&path)?,
                Ok(_) => fs::remove_file(&path).map_err(|source| WorkspaceError::Io {
                    context: "cannot remove",
                    path,
                    source,
                })?,
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Creates `root/a/b/…` with mode 0700, refusing any component that is a symlink.
    fn ensure(&self, parts: &[&str]) -> Result<PathBuf, WorkspaceError> {
        let mut path = self.root.clone();
        ensure_dir(&path)?;
        for part in parts {
            check_part(part)?;
            path.push(part);
            ensure_dir(&path)?;
        }
        Ok(path)
    }
}

fn ensure_dir(path: &Path) -> Result<(), WorkspaceError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(WorkspaceError::NotADirectory(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| WorkspaceError::Io {
                    context: "cannot create",
                    path: path.into(),
                    source,
                })?;
            // `mode` is filtered by the umask; set it exactly.
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|source| {
                WorkspaceError::Io {
                    context: "cannot chmod",
                    path: path.into(),
                    source,
                }
            })
        }
        Err(source) => Err(WorkspaceError::Io {
            context: "cannot read",
            path: path.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_users_deep_tree_goes_and_symlink_targets_stay() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(root.path().join("ws"));
        let home = workspace.home("u1").unwrap();
        let outside = root.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, home.join("link")).unwrap();
        // Deeper than std's recursive remove_dir_all survives on a 2 MiB thread, and past
        // PATH_MAX, so it is built one level at a time from descriptors.
        let mut dir = nix::fcntl::open(
            &home,
            nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        for _ in 0..20_000 {
            nix::sys::stat::mkdirat(&dir, "d", nix::sys::stat::Mode::from_bits_truncate(0o700))
                .unwrap();
            dir = nix::fcntl::openat(
                &dir,
                "d",
                nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap();
        }
        drop(dir);
        let project = workspace.create_project("u1", "p").unwrap();
        fs::write(project.join("f"), "x").unwrap();
        let run = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || workspace.remove_user("u1"))
            .unwrap();
        run.join().unwrap().unwrap();
        assert!(!home.exists() && !project.exists());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn project_ids_are_plain_names() {
        for ok in ["demo", "my-project_2", "a.b", "X"] {
            assert!(validate_project_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "/etc",
            "a/b",
            ".hidden",
            "-x",
            "a..b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(validate_project_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn projects_are_created_0700_and_symlinks_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"));
        let p = ws.create_project("u1", "demo").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(matches!(
            ws.create_project("u1", "demo"),
            Err(WorkspaceError::ProjectExists)
        ));
        assert_eq!(ws.project("u1", "demo").unwrap(), p);
        assert!(matches!(
            ws.project("u1", "nope"),
            Err(WorkspaceError::NoSuchProject)
        ));
        assert_eq!(ws.list_projects("u1").unwrap(), vec!["demo".to_string()]);
        assert!(ws.list_projects("u2").unwrap().is_empty());

        // A symlink planted in the projects folder points outside: refused, not followed.
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, ws.root().join("projects/u1/escape")).unwrap();
        assert!(matches!(
            ws.project("u1", "escape"),
            Err(WorkspaceError::NotADirectory(_))
        ));
        assert!(!ws
            .list_projects("u1")
            .unwrap()
            .contains(&"escape".to_string()));

        // A symlinked user folder is refused too.
        std::os::unix::fs::symlink(&outside, ws.root().join("projects/u3")).unwrap();
        assert!(matches!(
            ws.create_project("u3", "x"),
            Err(WorkspaceError::NotADirectory(_))
        ));
        let home = ws.home("u1").unwrap();
        assert_eq!(
            fs::metadata(&home).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

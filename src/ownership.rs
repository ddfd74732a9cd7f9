//! Files the daemon (root, in `isolation.mode = "uid"`) handles inside folders a user owns.
//!
//! A user's home and projects belong to the user's uid, and whatever runs in their sandbox can
//! rename, replace and symlink anything in them while the daemon works there. Path-based calls
//! would follow a symlink planted in any component, so root could be steered into writing,
//! chowning or deleting files anywhere it can reach (another user's home, the store, the key).
//! Everything here therefore works from directory descriptors: each component is opened with
//! `O_NOFOLLOW | O_DIRECTORY` relative to its parent, and names are changed with the `*at`
//! calls and `AT_SYMLINK_NOFOLLOW`. The folder passed as `root` must itself be reached through
//! folders the daemon alone controls (`<workspace>/users/<id>`, `<workspace>/projects/<id>/<p>`).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

/// Opens the folder `path` (not a symlink) for `*at` calls.
fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the folder `name` in `dir`, refusing a symlink.
fn open_child_dir(dir: &impl AsFd, name: &OsString) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in the folder open as `dir`, without `.` and `..`.
fn names(dir: &impl AsFd) -> std::io::Result<Vec<OsString>> {
    // Dir takes ownership of a descriptor: give it a duplicate, so `dir` stays usable.
    let listing = nix::dir::Dir::from_fd(dir.as_fd().try_clone_to_owned()?)?;
    let mut names = Vec::new();
    for entry in listing {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(&name).to_owned());
        }
    }
    Ok(names)
}

/// Gives `root` and everything under it that `uid` does not own yet to `uid`:`gid`: new folders,
/// files the daemon wrote, and folders left by a daemon that ran under another uid (an earlier
/// image's service user, or `userns` mode). Folders the user owns are theirs with everything in
/// them and are not entered, so a settled home costs one `stat`. Children are handed over
/// before their folder, so an interrupted walk is finished by the next one.
///
/// Errors: the first I/O error; an entry that vanishes meanwhile (the user's doing) is skipped.
pub fn hand_over(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let dir = open_dir(root)?;
    if fstat(&dir)?.st_uid == uid {
        return Ok(());
    }
    hand_over_dir(&dir, uid, gid, 0)?;
    // fchown on the descriptor: the folder that was checked, whatever its name now points at.
    nix::unistd::fchown(&dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    Ok(())
}

/// Deep enough for any real tree; a deeper one is a user's attempt to exhaust descriptors.
const MAX_DEPTH: usize = 256;

fn hand_over_dir(dir: &OwnedFd, uid: u32, gid: u32, depth: usize) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(std::io::Error::other(
            "folders nested too deep to hand over",
        ));
    }
    for name in names(dir)? {
        let stat = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if stat.st_uid == uid {
            continue;
        }
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            match open_child_dir(dir, &name) {
                Ok(child) => {
                    hand_over_dir(&child, uid, gid, depth + 1)?;
                    nix::unistd::fchown(
                        &child,
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                    )?;
                    continue;
                }
                // Replaced by something else since the stat: handle that by name below.
                Err(Errno::ENOTDIR | Errno::ELOOP) => {}
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match fchownat(
            dir,
            name.as_os_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What [`open_parent`] does with a missing folder.
enum Missing {
    /// Make it, mode 0700, given to the owner (uid, gid) if any.
    Create(Option<(u32, u32)>),
    /// Fail with `ENOENT`.
    Fail,
}

/// The folders of `relative` (its parent), opened one by one under `root` without following a
/// symlink.
fn open_parent(
    root: &Path,
    relative: &Path,
    missing: Missing,
) -> std::io::Result<(OwnedFd, OsString)> {
    let mut parts: Vec<OsString> = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_owned()),
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", relative.display()),
                ))
            }
        }
    }
    let file = parts.pop().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "an empty relative path")
    })?;
    let mut dir = open_dir(root)?;
    for part in parts {
        let Missing::Create(owner) = missing else {
            dir = open_child_dir(&dir, &part)?;
            continue;
        };
        match mkdirat(&dir, part.as_os_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                if let Some((uid, gid)) = owner {
                    fchownat(
                        &dir,
                        part.as_os_str(),
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                }
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open_child_dir(&dir, &part)?;
    }
    Ok((dir, file))
}

/// Writes `contents` to `root/relative` with mode 0600, atomically (a temporary file renamed
/// over it, synced first), owned by `owner` (uid, gid) when given. Missing folders are made
/// 0700. A symlink anywhere below `root` is refused (`ELOOP`/`ENOTDIR`), never followed.
pub fn write_private_file(
    root: &Path,
    relative: &Path,
    contents: &[u8],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let (dir, name) = open_parent(root, relative, Missing::Create(owner))?;
    let mut tmp = name.clone();
    tmp.push(".tmp");
    match unlinkat(&dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = openat(
        &dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)?;
    file.sync_all()?;
    renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str())?;
    Ok(())
}

/// Removes the file `root/relative`, if it is there, without following a symlink on the way
/// and without making any folder.
pub fn remove_file(root: &Path, relative: &Path) -> std::io::Result<()> {
    let (dir, name) = match open_parent(root, relative, Missing::Fail) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn writes_through_missing_folders_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let rel = Path::new(".config/sashad/creds.json");
        write_private_file(root.path(), rel, b"one", None).unwrap();
        write_private_file(root.path(), rel, b"two", None).unwrap();
        let file = root.path().join(rel);
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let folder = root.path().join(".config/sashad");
        assert_eq!(
            folder.metadata().unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!root.path().join(".config/sashad/creds.json.tmp").exists());
        remove_file(root.path(), rel).unwrap();
        assert!(!file.exists());
        remove_file(root.path(), rel).unwrap();
        // Nothing to remove where the folders are missing, and none is made.
        let elsewhere = Path::new("not/there/creds.json");
        remove_file(root.path(), elsewhere).unwrap();
        assert!(!root.path().join("not").exists());
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("creds.json");
        std::fs::write(&victim, "victim").unwrap();
        // A symlinked folder on the way, and symlinks at the file and its temporary name.
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join(".config")).unwrap();
        let err = write_private_file(root.path(), Path::new(".config/creds.json"), b"x", None);
        assert!(err.is_err());
        assert!(remove_file(root.path(), Path::new(".config/creds.json")).is_err());
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("d/creds.json.tmp")).unwrap();
        write_private_file(root.path(), Path::new("d/creds.json"), b"mine", None).unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("d/other")).unwrap();
        remove_file(root.path(), Path::new("d/other")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert_eq!(
            std::fs::read(root.path().join("d/creds.json")).unwrap(),
            b"mine"
        );
        assert!(write_private_file(root.path(), Path::new("../x"), b"x", None).is_err());
    }

    #[test]
    fn hand_over_changes_what_is_not_the_users_and_skips_symlink_targets() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown to another uid needs root; CI runs the tests as root.
        }
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("keep");
        std::fs::write(&target, "x").unwrap();
        let home = root.path().join("home");
        std::fs::create_dir_all(home.join("a/b")).unwrap();
        std::fs::write(home.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&target, home.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.join("dirlink")).unwrap();
        let (uid, gid) = (4_000_123, 4_000_123);
        hand_over(&home, uid, gid).unwrap();
        for path in ["", "a", "a/b", "a/b/f", "a/link", "dirlink"] {
            let meta = std::fs::symlink_metadata(home.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{path}");
        }
        assert_eq!(target.metadata().unwrap().uid(), 0);
        assert_eq!(outside.path().metadata().unwrap().uid(), 0);

        // A settled home is not entered: a file of another owner inside stays as it is.
        std::fs::write(home.join("a/root-file"), "x").unwrap();
        hand_over(&home, uid, gid).unwrap();
        assert_eq!(home.join("a/root-file").metadata().unwrap().uid(), 0);

        // A home left by another daemon uid is handed over with everything in it.
        std::os::unix::fs::chown(&home, Some(10001), Some(10001)).unwrap();
        std::os::unix::fs::chown(home.join("a"), Some(10001), Some(10001)).unwrap();
        hand_over(&home, uid, gid).unwrap();
        assert_eq!(home.join("a/root-file").metadata().unwrap().uid(), uid);
    }
}

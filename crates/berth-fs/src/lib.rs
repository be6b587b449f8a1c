//! File operations confined to a directory tree that someone else shaped: an image's layer, a
//! volume a container writes to, an archive being imported. Every path is taken relative to a
//! directory file descriptor and walked one component at a time, so a symbolic link (or a
//! directory swapped for one while we work) can never carry an operation outside the tree.
//!
//! Two ways to resolve a path, chosen by what the caller may accept:
//! - [`open_dir`] follows no symbolic link at all (`O_NOFOLLOW` on every component): for
//!   applying layer entries, where a link in a parent component is an error naming the entry;
//! - [`open_beneath`] follows links only while they stay inside the root
//!   (`openat2(RESOLVE_BENEATH)`): for reading files a user laid out (archives, subPaths), where
//!   relative links inside are legitimate and any escape is refused by the kernel.
//!
//! Invariant: no function here resolves a path from `/` or follows a link out of the root it was
//! given; callers hold the root as a file descriptor, not as a path that could be re-resolved.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// What went wrong, naming the path (relative to the root) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: {component} is a symbolic link, which is not followed here")]
    Symlink { path: String, component: String },
    #[error("{path}: {component} is not a directory")]
    NotDir { path: String, component: String },
    #[error("{path}: leaves its directory (an absolute path, `..`, or a link pointing out)")]
    Escapes { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// As an I/O error, for callers whose errors carry one: the message (which names the path and
/// the component) is kept, and so is the kind of an I/O cause.
impl From<FsError> for std::io::Error {
    fn from(e: FsError) -> std::io::Error {
        let kind = match &e {
            FsError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e.to_string())
    }
}

impl FsError {
    /// The error's own I/O cause, when it has one (disk full, for example).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            FsError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

/// An I/O error about `path`.
pub fn io_error(path: &Path, e: impl Into<std::io::Error>) -> FsError {
    FsError::Io {
        path: path.display().to_string(),
        source: e.into(),
    }
}

/// `path` made relative and checked: leading `/` and `.` components dropped, `..` refused.
/// An empty result names the root itself.
pub fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Opens `path` as a root directory (itself not a symbolic link).
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(path, e))
}

/// Opens the directory named `name` in `dir` without following a link.
fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `rel` under `root`, following no symbolic link in any component.
/// With `create`, missing components are made with that mode (as root:root). A component that
/// is a link or not a directory is an error naming it.
pub fn open_dir(root: BorrowedFd<'_>, rel: &Path, create: Option<Mode>) -> Result<OwnedFd> {
    let rel = clean(rel).ok_or_else(|| FsError::Escapes {
        path: rel.display().to_string(),
    })?;
    let mut cur: OwnedFd =
        rustix::io::fcntl_dupfd_cloexec(root, 0).map_err(|e| io_error(&rel, e))?;
    let mut walked = PathBuf::new();
    for c in rel.components() {
        let name = c.as_os_str();
        walked.push(name);
        if let Some(mode) = create {
            match rustix::fs::mkdirat(&cur, name, mode) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_error(&walked, e)),
            }
        }
        cur = open_child_dir(cur.as_fd(), name)
            .map_err(|e| component_error(cur.as_fd(), name, &rel, &walked, e))?;
    }
    Ok(cur)
}

/// Names the component (`name` in `dir`) that stopped a walk: a link, a non-directory, or an
/// I/O error. `O_DIRECTORY` answers ENOTDIR before `O_NOFOLLOW` answers ELOOP, so a link is
/// told apart by looking at it.
fn component_error(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    component: &Path,
    e: Errno,
) -> FsError {
    let (path, component) = (path.display().to_string(), component.display().to_string());
    let is_link = || {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink())
    };
    match e {
        Errno::LOOP => FsError::Symlink { path, component },
        Errno::NOTDIR if is_link() => FsError::Symlink { path, component },
        Errno::NOTDIR => FsError::NotDir { path, component },
        e => FsError::Io {
            path: component,
            source: e.into(),
        },
    }
}

/// Opens `rel` under `root` with `flags`, following symbolic links only while they stay
/// beneath `root` (the kernel refuses absolute links and `..` that climb out, atomically).
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
    let clean_rel = clean(rel).ok_or_else(|| FsError::Escapes {
        path: rel.display().to_string(),
    })?;
    let target: &Path = if clean_rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &clean_rel
    };
    rustix::fs::openat2(
        root,
        target,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        Errno::XDEV => FsError::Escapes {
            path: rel.display().to_string(),
        },
        e => io_error(&clean_rel, e),
    })
}

/// Splits a cleaned, non-empty relative path into its parent and last name.
pub fn split(rel: &Path) -> Option<(&Path, &OsStr)> {
    Some((rel.parent().unwrap_or(Path::new("")), rel.file_name()?))
}

/// Removes `name` in `dir`, whatever it is (a directory with all it holds), following no link.
/// Nothing there is not an error.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => remove_dir_at(dir, name),
        Err(e) => Err(e.into()),
    }
}

/// Empties and removes the directory `name` in `dir`. Descends through directory descriptors
/// opened without following links, so a link inside is removed, never what it points to.
fn remove_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let sub = match open_child_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    empty_dir(sub.as_fd())?;
    drop(sub);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything in the directory `dir` (not `dir` itself), following no link.
pub fn empty_dir(dir: BorrowedFd<'_>) -> std::io::Result<()> {
    // Names are collected first: removing while reading a directory can skip entries.
    let mut names: Vec<OsString> = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        remove_at(dir, &n)?;
    }
    Ok(())
}

/// Removes the tree at `path` (a path we own, such as a directory under the data directory
/// whose contents an image or container shaped): its own components are trusted, what is
/// inside is not, so nothing inside is followed.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("refusing to remove a root directory"));
    };
    let dir = match rustix::fs::open(
        if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        },
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_at(dir.as_fd(), name)
}

/// Makes `path` (and missing parents) and leaves it `0700`: a directory of berth's own that
/// holds what no unprivileged user of the host may read or run (the store's Secrets, images'
/// set-user-ID programs, pods' volumes). An existing directory is tightened too.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The disk space the tree under `dir` takes (allocated blocks, as `du` counts them),
/// following no link and counting a file with several hard links once. A tree that changes
/// while it is walked is counted as found; entries that vanish are skipped.
pub fn disk_usage(dir: BorrowedFd<'_>) -> std::io::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<OwnedFd> = vec![rustix::io::dup(dir)?];
    while let Some(d) = stack.pop() {
        let mut subdirs = Vec::new();
        for entry in rustix::fs::Dir::read_from(&d)? {
            let entry = entry?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let st = match rustix::fs::statat(&d, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            total = total.saturating_add((st.st_blocks as u64).saturating_mul(512));
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                subdirs.push(name.to_owned());
            }
        }
        for name in subdirs {
            match open_child_dir(d.as_fd(), OsStr::from_bytes(name.to_bytes())) {
                Ok(fd) => stack.push(fd),
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_dir_refuses_links_in_any_component() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, root.join("a/link")).unwrap();
        symlink("a", root.join("rel")).unwrap();
        let fd = open_root(&root).unwrap();
        let err = open_dir(fd.as_fd(), Path::new("a/link/x"), Some(Mode::from(0o755))).unwrap_err();
        assert!(
            matches!(&err, FsError::Symlink { component, .. } if component == "a/link"),
            "{err}"
        );
        assert!(!outside.join("x").exists(), "nothing made through the link");
        assert!(matches!(
            open_dir(fd.as_fd(), Path::new("rel"), None),
            Err(FsError::Symlink { .. })
        ));
        assert!(matches!(
            open_dir(fd.as_fd(), Path::new("../x"), None),
            Err(FsError::Escapes { .. })
        ));
        open_dir(
            fd.as_fd(),
            Path::new("/a/new/deeper"),
            Some(Mode::from(0o755)),
        )
        .unwrap();
        assert!(root.join("a/new/deeper").is_dir());
    }

    #[test]
    fn open_beneath_follows_only_links_that_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"in").unwrap();
        std::fs::write(t.path().join("secret"), b"out").unwrap();
        symlink("d/f", root.join("inside")).unwrap();
        symlink(t.path().join("secret"), root.join("abs")).unwrap();
        symlink("../secret", root.join("up")).unwrap();
        let fd = open_root(&root).unwrap();
        let f = open_beneath(fd.as_fd(), Path::new("inside"), OFlags::RDONLY).unwrap();
        assert_eq!(
            std::io::read_to_string(std::fs::File::from(f)).unwrap(),
            "in"
        );
        for escape in ["abs", "up", "d/../../secret"] {
            assert!(
                open_beneath(fd.as_fd(), Path::new(escape), OFlags::RDONLY).is_err(),
                "{escape} must not open"
            );
        }
    }

    #[test]
    fn removal_never_follows_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let victim = t.path().join("victim");
        std::fs::create_dir_all(root.join("tree/sub")).unwrap();
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("precious"), b"p").unwrap();
        symlink(&victim, root.join("tree/sub/link")).unwrap();
        symlink(&victim, root.join("tree/top")).unwrap();
        let fd = open_root(&root).unwrap();
        remove_at(fd.as_fd(), OsStr::new("tree")).unwrap();
        assert!(!root.join("tree").exists());
        assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"p");
        // A link given by name is removed itself, not its target.
        symlink(&victim, root.join("l")).unwrap();
        remove_at(fd.as_fd(), OsStr::new("l")).unwrap();
        assert!(victim.join("precious").exists());
        remove_tree(&root).unwrap();
        assert!(!root.exists() && victim.join("precious").exists());
    }

    #[test]
    fn disk_usage_counts_the_tree_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 1 << 20]).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), vec![1u8; 256 << 10]).unwrap();
        std::fs::hard_link(tree.join("a/b/f"), tree.join("a/hard")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("big"), tree.join("a/flink")).unwrap();
        let root = open_root(&tree).unwrap();
        let used = disk_usage(root.as_fd()).unwrap();
        assert!(used >= 256 << 10, "{used}");
        assert!(
            used < (256 << 10) + (64 << 10),
            "links and hard links add nothing: {used}"
        );
    }
}

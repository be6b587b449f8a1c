//! Volumes: directories a pod's containers share (`emptyDir`, on disk or in memory), host
//! paths, named volumes that outlive pods, and projected files (ConfigMaps, Secrets) updated
//! atomically.
//!
//! Invariant: projected files are swapped in one `rename` of the `..data` symlink (as the
//! kubelet's atomic writer does), so a reader sees the old set of files or the new one, never
//! a mix.
//!
//! Invariant: nothing here follows a path a container could have shaped. Projected volumes
//! are mounted read-only, and their refresh works on descriptors of the volume's own
//! directories (no link followed, the old version removed only when `..data` names one of
//! ours); a `subPath` is opened beneath its volume by the kernel (`openat2(RESOLVE_BENEATH)`)
//! and what was opened is bind-mounted to a staging point outside every volume, so swapping a
//! component for a link afterwards changes nothing (the kubelet's fix for CVE-2017-1002101).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount a memory volume at {path}: {errno}")]
    Mount { path: String, errno: nix::Error },
    #[error(
        "volume name {0:?}: use lowercase letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    BadName(String),
    #[error("projected file {0:?}: give a relative path inside the volume, without '..'")]
    BadPath(String),
    #[error("subPath {sub:?}: {why}")]
    SubPath { sub: String, why: String },
}

type Result<T> = std::result::Result<T, VolumeError>;

/// An error about `path` from anything that is an I/O error at heart (`std::io::Error`, an
/// errno, a `berth_fs` refusal).
fn io<E: Into<std::io::Error>>(path: &Path) -> impl FnOnce(E) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.display().to_string(),
        source: source.into(),
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.to_string()))
    }
}

/// An `emptyDir` of the pod in `pod_dir`: a directory on disk, or a tmpfs of at most
/// `memory_limit` bytes (0 = half the memory, tmpfs' default) when `memory` is set. It goes
/// with the pod.
pub fn empty_dir(pod_dir: &Path, name: &str, memory: bool, memory_limit: u64) -> Result<PathBuf> {
    check_name(name)?;
    let dir = pod_dir.join("volumes").join(name);
    let made = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    if memory {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&dir.display().to_string()));
        if !mounted {
            let opts = if memory_limit > 0 {
                format!("mode=0700,size={memory_limit}")
            } else {
                "mode=0700".to_string()
            };
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(opts.as_str()),
            )
            .map_err(|errno| VolumeError::Mount {
                path: dir.display().to_string(),
                errno,
            })?;
        }
    } else if made {
        // Root's alone until the pod's users are let in: its fsGroup (`set_group`), or each
        // container's user (`grant_user`). Never writable by every user of the host, as
        // Kubernetes' 0777 emptyDirs are.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    }
    Ok(dir)
}

/// POSIX ACL entry tags and the version of the `system.posix_acl_access` format.
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_XATTR: &str = "system.posix_acl_access";

/// The named users of an access ACL (`user:UID:...` entries), or none when there is no ACL
/// or it cannot be read as one.
fn acl_users(raw: &[u8]) -> Vec<u32> {
    if raw.len() < 4 || u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) != ACL_VERSION {
        return Vec::new();
    }
    raw[4..]
        .chunks_exact(8)
        .filter(|e| u16::from_le_bytes([e[0], e[1]]) == ACL_USER)
        .map(|e| u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
        .collect()
}

/// An access ACL giving rwx to the owner and to each of `users`, and nothing to the owning
/// group or to others: entries in the kernel's order (by tag, then id).
fn acl_for(users: &[u32]) -> Vec<u8> {
    let mut out = ACL_VERSION.to_le_bytes().to_vec();
    let mut entry = |tag: u16, perm: u16, id: u32| {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    };
    const UNDEFINED: u32 = u32::MAX;
    entry(ACL_USER_OBJ, 7, UNDEFINED);
    for u in users {
        entry(ACL_USER, 7, *u);
    }
    entry(ACL_GROUP_OBJ, 0, UNDEFINED);
    entry(ACL_MASK, 7, UNDEFINED);
    entry(ACL_OTHER, 0, UNDEFINED);
    out
}

/// Lets the user `uid` (a container's) read and write an emptyDir of its pod without opening
/// it to every user of the host: the directory keeps its owner (root) and no access for
/// others, and gains a POSIX ACL entry `user:uid:rwx`, added once per user. Root owns it
/// already. On a filesystem without ACLs the directory is opened to all instead (as
/// Kubernetes makes every emptyDir) and `Ok(false)` says so. Works on a descriptor of the
/// directory and follows no link.
pub fn grant_user(dir: &Path, uid: u32) -> Result<bool> {
    use rustix::fs::{Mode, XattrFlags};
    let root = berth_fs::open_root(dir).map_err(io(dir))?;
    let st = rustix::fs::fstat(&root).map_err(io(dir))?;
    if uid == st.st_uid {
        return Ok(true);
    }
    let open_to_all = || {
        rustix::fs::fchmod(&root, Mode::from((st.st_mode & 0o7777) | 0o777))
            .map(|()| false)
            .map_err(io(dir))
    };
    let mut buf = vec![0u8; 4096];
    let mut users = match rustix::fs::fgetxattr(&root, ACL_XATTR, &mut buf) {
        Ok(n) => acl_users(&buf[..n]),
        Err(rustix::io::Errno::NODATA) => Vec::new(),
        Err(rustix::io::Errno::NOTSUP) => return open_to_all(),
        Err(e) => return Err(io(dir)(e)),
    };
    if users.contains(&uid) {
        return Ok(true);
    }
    users.push(uid);
    users.sort_unstable();
    match rustix::fs::fsetxattr(&root, ACL_XATTR, &acl_for(&users), XattrFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOTSUP) => open_to_all(),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Gives a volume to the pod's `fsGroup`, as the kubelet does: the volume's directory (and,
/// with `recursive`, everything in it) group-owned by `gid`; directories setgid, so what is
/// made in them stays the group's; group access to match the owner's (files at least
/// readable, and writable unless `read_only`). With a group, the top directory is 2770: not
/// writable by others. Works on descriptors and leaves links alone. (Projected volumes get
/// their group from `project` itself, before their files are swapped in.)
pub fn set_group(dir: &Path, gid: u32, read_only: bool, recursive: bool) -> Result<()> {
    let root = berth_fs::open_root(dir).map_err(io(dir))?;
    let top = if recursive && read_only {
        0o2750
    } else {
        0o2770
    };
    group_dir(&root, dir, gid, top)?;
    if recursive {
        group_below(root, dir, gid, read_only)?;
    }
    Ok(())
}

/// One directory, by descriptor, group-owned by `gid` with `mode`.
fn group_dir(d: &std::os::fd::OwnedFd, path: &Path, gid: u32, mode: u32) -> Result<()> {
    let gid = Some(rustix::fs::Gid::from_raw(gid));
    rustix::fs::fchown(d, None, gid).map_err(io(path))?;
    rustix::fs::fchmod(d, rustix::fs::Mode::from(mode)).map_err(io(path))
}

/// Everything below the directory `root` group-owned by `gid`, as `set_group` describes.
fn group_below(root: std::os::fd::OwnedFd, dir: &Path, gid: u32, read_only: bool) -> Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode};
    use std::os::fd::AsFd;
    let gid = Some(rustix::fs::Gid::from_raw(gid));
    let file_mask = if read_only { 0o440 } else { 0o660 };
    let mut stack = vec![(root, dir.to_path_buf())];
    while let Some((d, path)) = stack.pop() {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&d).map_err(io(&path))? {
            let entry = entry.map_err(io(&path))?;
            let name = entry.file_name().to_owned();
            if !matches!(name.to_bytes(), b"." | b"..") {
                names.push(name);
            }
        }
        for name in names {
            let st = rustix::fs::statat(&d, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(io(&path))?;
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind == FileType::Symlink {
                continue;
            }
            rustix::fs::chownat(&d, &name, None, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io(&path))?;
            let mode = st.st_mode & 0o7777;
            if kind == FileType::Directory {
                let sub = berth_fs::open_dir(
                    d.as_fd(),
                    Path::new(std::ffi::OsStr::from_bytes(name.to_bytes())),
                    None,
                )
                .map_err(io(&path))?;
                rustix::fs::fchmod(&sub, Mode::from(mode | 0o2550)).map_err(io(&path))?;
                let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
                stack.push((sub, child));
            } else if kind == FileType::RegularFile {
                // Projected volumes are read-only to containers: nothing can swap this name
                // for a link between the look above and this change.
                rustix::fs::chmodat(&d, &name, Mode::from(mode | file_mask), AtFlags::empty())
                    .map_err(io(&path))?;
            }
        }
    }
    Ok(())
}

/// A named volume in the data directory (made on first use): it outlives every pod.
pub fn named(data_dir: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    let dir = data_dir.join("volumes").join(name);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// Names of the named volumes in the data directory.
pub fn list_named(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("volumes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// One projected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative path in the volume.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

fn check_path(p: &str) -> Result<()> {
    if p.is_empty()
        || p.starts_with('/')
        || p.split('/')
            .any(|c| c == ".." || c.is_empty() || c.starts_with(".."))
    {
        return Err(VolumeError::BadPath(p.to_string()));
    }
    Ok(())
}

/// Whether `name` is a version directory `project` makes (`..` and digits).
fn is_version(name: &[u8]) -> bool {
    name.len() > 2 && name.starts_with(b"..") && name[2..].iter().all(u8::is_ascii_digit)
}

/// Whether the version `..data` names holds exactly `files` (each with its contents and mode,
/// and the group's when `group` is given) and nothing else: then a refresh has nothing to do.
/// Nothing here follows a link (the files are opened beneath the version, which berth made).
fn holds(root: &std::os::fd::OwnedFd, files: &[File], group: Option<u32>) -> bool {
    use rustix::fs::{FileType, OFlags};
    use std::os::fd::AsFd;
    let Ok(target) = rustix::fs::readlinkat(root, "..data", Vec::new()) else {
        return false;
    };
    let target = target.into_bytes();
    if !is_version(&target) {
        return false;
    }
    let Ok(vdir) = berth_fs::open_dir(
        root.as_fd(),
        Path::new(std::ffi::OsStr::from_bytes(&target)),
        None,
    ) else {
        return false;
    };
    for f in files {
        let Ok(fd) = berth_fs::open_beneath(
            vdir.as_fd(),
            Path::new(&f.path),
            OFlags::RDONLY | OFlags::NOFOLLOW,
        ) else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else {
            return false;
        };
        let mode = if group.is_some() {
            f.mode | 0o440
        } else {
            f.mode
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_mode & 0o7777 != mode
            || group.is_some_and(|g| st.st_gid != g)
            || st.st_size as u64 != f.contents.len() as u64
        {
            return false;
        }
        let mut now = Vec::with_capacity(f.contents.len());
        if std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut now).is_err()
            || now != f.contents
        {
            return false;
        }
    }
    // Nothing else: as many files in the version as are projected.
    let mut count = 0usize;
    let mut stack = vec![vdir];
    while let Some(d) = stack.pop() {
        let Ok(entries) = rustix::fs::Dir::read_from(&d) else {
            return false;
        };
        for e in entries {
            let Ok(e) = e else { return false };
            let name = e.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            match e.file_type() {
                FileType::Directory => match berth_fs::open_dir(
                    d.as_fd(),
                    Path::new(std::ffi::OsStr::from_bytes(name.to_bytes())),
                    None,
                ) {
                    Ok(sub) => stack.push(sub),
                    Err(_) => return false,
                },
                _ => count += 1,
            }
        }
    }
    count == files.len()
}

/// Writes `files` into `dir` as one atomic update: a new timestamped directory, the `..data`
/// symlink swapped to it, top-level links for each file, and the previous set removed; when
/// the volume holds these files already, nothing (the worker projects each time it reads the
/// files again, mostly unchanged, and a swap is a moment when a reader holding the old
/// version's path finds nothing). With
/// `group` (the pod's `fsGroup`), the new files are the group's and readable by it (as
/// `set_group` makes them) before they are swapped in, so a reader never meets a file it may
/// not open; the volume's directory is then the group's too (2750).
pub fn project(dir: &Path, files: &[File], group: Option<u32>) -> Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use std::ffi::OsStr;
    use std::os::fd::AsFd;
    for f in files {
        check_path(&f.path)?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let root = berth_fs::open_root(dir).map_err(io(dir))?;
    if holds(&root, files, group) {
        return Ok(());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let version = format!("..{nanos}");
    rustix::fs::mkdirat(&root, version.as_str(), Mode::from(0o755))
        .map_err(io(&dir.join(&version)))?;
    let vdir = berth_fs::open_dir(root.as_fd(), Path::new(&version), None).map_err(io(dir))?;
    for f in files {
        let rel = Path::new(&f.path);
        let (parent, name) = berth_fs::split(rel).ok_or(VolumeError::BadPath(f.path.clone()))?;
        let pdir =
            berth_fs::open_dir(vdir.as_fd(), parent, Some(Mode::from(0o755))).map_err(io(dir))?;
        let fd = rustix::fs::openat(
            &pdir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from(0o600),
        )
        .map_err(io(&dir.join(&f.path)))?;
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, &f.contents).map_err(io(&dir.join(&f.path)))?;
        file.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .map_err(io(&dir.join(&f.path)))?;
    }
    if let Some(gid) = group {
        let vpath = dir.join(&version);
        group_dir(&vdir, &vpath, gid, 0o2755)?;
        group_below(vdir, &vpath, gid, true)?;
    }
    let old = rustix::fs::readlinkat(&root, "..data", Vec::new())
        .ok()
        .map(|t| t.into_bytes())
        .filter(|t| is_version(t));
    let _ = rustix::fs::unlinkat(&root, "..data_tmp", AtFlags::empty());
    rustix::fs::symlinkat(version.as_str(), &root, "..data_tmp")
        .map_err(io(&dir.join("..data_tmp")))?;
    rustix::fs::renameat(&root, "..data_tmp", &root, "..data").map_err(io(&dir.join("..data")))?;
    // Top-level names point through ..data, so they follow the swap.
    let mut tops: Vec<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    tops.sort();
    tops.dedup();
    let is_link = |name: &OsStr| {
        rustix::fs::statat(&root, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink())
    };
    for top in &tops {
        if is_link(OsStr::new(top)).is_err() {
            rustix::fs::symlinkat(format!("..data/{top}").as_str(), &root, *top)
                .map_err(io(&dir.join(top)))?;
        }
    }
    // Names no longer projected go: only the links made here, never what they point at. So
    // do versions before the previous one; the previous one stays until the next change, so
    // a reader that looked up `..data` just before the swap still finds its file.
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&root).map_err(io(&dir.join(".")))? {
        names.push(
            e.map_err(io(&dir.join(".")))?
                .file_name()
                .to_bytes()
                .to_vec(),
        );
    }
    for n in names {
        let name = OsStr::from_bytes(&n);
        if !n.starts_with(b"..") && n != b"." && !tops.iter().any(|t| t.as_bytes() == n) {
            if is_link(name).unwrap_or(false) {
                let _ = rustix::fs::unlinkat(&root, name, AtFlags::empty());
            }
        } else if is_version(&n) && n != version.as_bytes() && Some(&n) != old.as_ref() {
            let _ = berth_fs::remove_at(root.as_fd(), name);
        }
    }
    if let Some(gid) = group {
        group_dir(&root, dir, gid, 0o2750)?;
    }
    Ok(())
}

/// Resolves a volume mount's `subPath` inside `volume` and bind-mounts what it names onto
/// `staging` (a point of berth's own, outside every volume), which the container then mounts.
/// The path must be relative without `..`; links inside it are followed only while they stay
/// in the volume. A path that does not exist yet is made as a directory, as the kubelet does.
pub fn sub_path(volume: &Path, sub: &str, staging: &Path) -> Result<PathBuf> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::os::fd::{AsFd, AsRawFd};
    let bad = |why: &str| VolumeError::SubPath {
        sub: sub.to_string(),
        why: why.to_string(),
    };
    if sub.starts_with('/') {
        return Err(bad("must be a relative path"));
    }
    if Path::new(sub)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("must not contain '..'"));
    }
    let fs_err = |e: berth_fs::FsError| match e {
        berth_fs::FsError::Escapes { .. } => bad("leads out of its volume through a link"),
        berth_fs::FsError::Symlink { component, .. } => bad(&format!(
            "{component} is a link, which is not followed to make the path"
        )),
        e => bad(&e.to_string()),
    };
    let root = berth_fs::open_root(volume).map_err(fs_err)?;
    let rel = Path::new(sub);
    let target = match berth_fs::open_beneath(root.as_fd(), rel, OFlags::PATH) {
        Ok(fd) => fd,
        Err(berth_fs::FsError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            berth_fs::open_dir(root.as_fd(), rel, Some(Mode::from(0o755))).map_err(fs_err)?;
            berth_fs::open_beneath(root.as_fd(), rel, OFlags::PATH).map_err(fs_err)?
        }
        Err(e) => return Err(fs_err(e)),
    };
    let st = rustix::fs::fstat(&target).map_err(io(volume))?;
    let is_dir = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => true,
        FileType::RegularFile => false,
        _ => return Err(bad("is neither a directory nor a regular file")),
    };
    // A staging point left by the container's previous start is made anew.
    crate::rootfs::unmount_under(staging)
        .map_err(|e| io(staging)(std::io::Error::other(e.to_string())))?;
    let _ = std::fs::remove_dir(staging).or_else(|_| std::fs::remove_file(staging));
    if let Some(parent) = staging.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if is_dir {
        std::fs::create_dir(staging).map_err(io(staging))?;
    } else {
        std::fs::File::create(staging).map_err(io(staging))?;
    }
    // The descriptor, not the path: what is mounted is exactly what was checked.
    let proc = format!("/proc/self/fd/{}", target.as_raw_fd());
    rustix::mount::mount_bind(proc.as_str(), staging).map_err(io(staging))?;
    Ok(staging.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projected_files_swap_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("config");
        let f = |path: &str, c: &str, mode| File {
            path: path.into(),
            contents: c.as_bytes().to_vec(),
            mode,
        };
        project(
            &v,
            &[f("app.conf", "v1", 0o644), f("secret/key", "k1", 0o400)],
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(v.join("app.conf")).unwrap(), "v1");
        assert_eq!(std::fs::read_to_string(v.join("secret/key")).unwrap(), "k1");
        let mode = std::fs::metadata(v.join("secret/key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        project(&v, &[f("app.conf", "v2", 0o644)], None).unwrap();
        assert_eq!(std::fs::read_to_string(v.join("app.conf")).unwrap(), "v2");
        assert!(
            !v.join("secret").exists(),
            "a file no longer projected is gone"
        );
        let versions = std::fs::read_dir(&v)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(versions, 2, "the current version and the one before it");
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "..data"] {
            assert!(project(&v, &[f(bad, "x", 0o644)], None).is_err(), "{bad}");
        }
        assert!(named(dir.path(), "../etc").is_err());
        assert_eq!(
            named(dir.path(), "db").unwrap(),
            dir.path().join("volumes/db")
        );
        assert_eq!(list_named(dir.path()), vec!["db"]);
    }
    /// A victim directory outside the volume, and a check that it is still whole.
    fn victim(root: &Path) -> (PathBuf, impl Fn()) {
        let v = root.join("victim");
        std::fs::create_dir_all(v.join("inner")).unwrap();
        std::fs::write(v.join("inner/precious"), "keep").unwrap();
        let check = {
            let v = v.clone();
            move || {
                assert_eq!(
                    std::fs::read_to_string(v.join("inner/precious")).unwrap(),
                    "keep",
                    "a file outside the volume was touched"
                );
            }
        };
        (v, check)
    }

    fn file(path: &str, c: &str) -> File {
        File {
            path: path.into(),
            contents: c.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn a_refresh_never_removes_what_a_planted_data_link_names() {
        let dir = tempfile::tempdir().unwrap();
        let (victim, intact) = victim(dir.path());
        let v = dir.path().join("config");
        project(&v, &[file("app.conf", "v1")], None).unwrap();
        // What a container with write access could do to the volume between two refreshes:
        // point ..data at a host directory, by absolute path and through a version-looking
        // link, and plant top-level names that are directories or links out.
        for planted in [victim.clone(), PathBuf::from("..123")] {
            std::fs::remove_file(v.join("..data")).unwrap();
            std::os::unix::fs::symlink(&planted, v.join("..data")).unwrap();
            let _ = std::fs::remove_file(v.join("..123"));
            std::os::unix::fs::symlink(&victim, v.join("..123")).unwrap();
            std::os::unix::fs::symlink(victim.join("inner"), v.join("stale-link")).unwrap();
            std::fs::create_dir_all(v.join("stale-dir")).unwrap();
            project(&v, &[file("app.conf", "v2")], None).unwrap();
            intact();
            assert_eq!(std::fs::read_to_string(v.join("app.conf")).unwrap(), "v2");
            assert!(
                !v.join("stale-link").exists(),
                "a stale top-level link goes"
            );
            assert!(v.join("stale-dir").is_dir(), "only links are removed");
        }
        // A version directory replaced by a link to the victim: files are written through
        // no link.
        let current = std::fs::read_link(v.join("..data")).unwrap();
        std::fs::remove_dir_all(v.join(&current)).unwrap();
        std::os::unix::fs::symlink(&victim, v.join(&current)).unwrap();
        project(&v, &[file("inner/precious", "overwritten")], None).unwrap();
        intact();
    }

    /// With an fsGroup, a refresh swaps in files the group can read already: a reader in the
    /// group (uid 1000, group 3000, reading a 0400 file through the group) never meets one it
    /// may not open, however often the volume is projected again.
    #[test]
    fn a_grouped_refresh_never_shows_a_file_its_group_cannot_read() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let v = d.path().join("sec");
        let token = |n: usize| File {
            path: "token".into(),
            contents: format!("t{n}").into_bytes(),
            mode: 0o400,
        };
        project(&v, &[token(0)], Some(3000)).unwrap();
        let m = std::fs::metadata(v.join("token")).unwrap();
        assert_eq!((m.gid(), m.permissions().mode() & 0o777), (3000, 0o440));
        let dir = std::fs::metadata(&v).unwrap();
        assert_eq!(
            (dir.gid(), dir.permissions().mode() & 0o7777),
            (3000, 0o2750)
        );
        let reader = std::process::Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--groups=3000", "sh", "-c"])
            // Refused is the failure; a reader stalled across two swaps may find its version
            // gone (as with the kubelet's atomic writer), which is not what this tests.
            .arg("for i in $(seq 3000); do out=$(cat token 2>&1 >/dev/null) || case $out in *denied*) exit 1;; esac; done")
            .current_dir(&v)
            .spawn()
            .unwrap();
        let pid = reader.id();
        let mut reader = reader;
        let mut n = 0;
        let status = loop {
            n += 1;
            project(&v, &[token(n)], Some(3000)).unwrap();
            if let Some(st) = reader.try_wait().unwrap() {
                break st;
            }
            assert!(n < 1_000_000, "the reader {pid} never finished");
        };
        assert!(
            status.success(),
            "the reader was refused a file ({n} refreshes)"
        );
    }

    /// A refresh with the same files changes nothing (the worker reads them again every 10 s); a
    /// change swaps in a new version and keeps the one before it, and only that one.
    #[test]
    fn an_unchanged_refresh_swaps_nothing_and_one_old_version_stays() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("cfg");
        let conf = |c: &str| File {
            path: "app.conf".into(),
            contents: c.as_bytes().to_vec(),
            mode: 0o644,
        };
        let current = || std::fs::read_link(v.join("..data")).unwrap();
        let versions = || {
            let mut n: Vec<String> = std::fs::read_dir(&v)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| is_version(n.as_bytes()))
                .collect();
            n.sort();
            n
        };
        project(&v, &[conf("v1")], None).unwrap();
        let first = current();
        project(&v, &[conf("v1")], None).unwrap();
        assert_eq!(current(), first, "an unchanged refresh swapped");
        project(&v, &[conf("v2")], None).unwrap();
        assert_ne!(current(), first);
        assert_eq!(versions().len(), 2, "{:?}", versions());
        project(&v, &[conf("v3")], None).unwrap();
        assert_eq!(versions().len(), 2, "{:?}", versions());
        assert!(!versions().contains(&first.to_string_lossy().into_owned()));
        assert_eq!(std::fs::read_to_string(v.join("app.conf")).unwrap(), "v3");
        // A mode change is a change too.
        let before = current();
        project(
            &v,
            &[File {
                mode: 0o600,
                ..conf("v3")
            }],
            None,
        )
        .unwrap();
        assert_ne!(current(), before);
    }

    #[test]
    fn each_user_is_granted_once_and_others_get_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let v = empty_dir(d.path(), "scratch", false, 0).unwrap();
        assert!(grant_user(&v, 0).unwrap(), "root owns it already");
        for uid in [2000, 1000, 2000] {
            assert!(grant_user(&v, uid).unwrap());
        }
        let mut buf = [0u8; 256];
        let n = rustix::fs::getxattr(&v, ACL_XATTR, &mut buf).unwrap();
        assert_eq!(acl_users(&buf[..n]), vec![1000, 2000]);
        assert_eq!(&buf[..n], acl_for(&[1000, 2000]).as_slice());
        let mode = std::fs::metadata(&v).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o770, "the group bits are the ACL's mask");
        assert_eq!(acl_users(b"junk"), Vec::<u32>::new());
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let dir = tempfile::tempdir().unwrap();
        let (victim, intact) = victim(dir.path());
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("real/dir")).unwrap();
        std::fs::write(vol.join("real/file"), "in").unwrap();
        std::os::unix::fs::symlink(&victim, vol.join("abs")).unwrap();
        std::os::unix::fs::symlink("../victim", vol.join("up")).unwrap();
        std::os::unix::fs::symlink("real", vol.join("inside")).unwrap();
        std::fs::write(dir.path().join("outside-file"), "x").unwrap();
        let fifo = vol.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o644),
            0,
        )
        .unwrap();
        let staging = dir.path().join("staging");
        let guard = Unmount(staging.clone());
        for (sub, why) in [
            ("/etc", "relative"),
            ("real/../../victim", "'..'"),
            ("abs", "out of its volume"),
            ("abs/inner", "out of its volume"),
            ("up/inner", "out of its volume"),
            ("fifo", "neither a directory nor a regular file"),
        ] {
            let e = sub_path(&vol, sub, &staging.join("x"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(sub) && e.contains(why), "{sub}: {e}");
        }
        // Links inside the volume are fine; a missing path is made as a directory.
        let m = sub_path(&vol, "inside/file", &staging.join("f")).unwrap();
        assert_eq!(std::fs::read_to_string(&m).unwrap(), "in");
        let m = sub_path(&vol, "new/deeper", &staging.join("d")).unwrap();
        std::fs::write(m.join("written"), "w").unwrap();
        assert_eq!(
            std::fs::read_to_string(vol.join("new/deeper/written")).unwrap(),
            "w"
        );
        // What is mounted is what was checked: swapping the path for a link afterwards
        // changes nothing.
        std::fs::rename(vol.join("new"), vol.join("moved")).unwrap();
        std::os::unix::fs::symlink(&victim, vol.join("new")).unwrap();
        std::fs::write(m.join("after"), "a").unwrap();
        assert!(vol.join("moved/deeper/after").exists());
        intact();
        drop(guard);
    }

    /// Unmounts a test's staging points even when it fails.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = crate::rootfs::unmount_under(&self.0);
        }
    }
}

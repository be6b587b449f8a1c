//! Unpacking a layer (tar, or gzip-compressed tar) into a directory that overlayfs can use as
//! a lower dir: Docker/OCI whiteouts (`.wh.NAME`) become overlay whiteouts (a 0:0 character
//! device), opaque markers (`.wh..wh..opq`) become the `trusted.overlay.opaque` xattr.
//!
//! A layer is hostile input. Every entry is applied relative to a descriptor of the target
//! directory, one path component at a time, following no symbolic link (`berth_fs::open_dir`):
//! a link in a parent component is an error naming the entry, whatever the entry is (file,
//! directory, hard link, whiteout, opaque marker). Existing names are replaced without being
//! followed, hard links may only name files inside the layer, and only the `user.*` and
//! `security.capability` extended attributes are taken (an image must not set overlayfs' own
//! `trusted.overlay.*`, which steer how the layers merge).
//!
//! Invariant: nothing is created, changed or removed outside the target directory, and the
//! bytes written (plus a block for each entry) never exceed the limit given.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// What each entry is counted as on top of its data, roughly a block and an inode.
const ENTRY_COST: u64 = 4096;
/// Parent directories an archive does not list are made with this mode, as Docker makes them.
const IMPLICIT_DIR: u32 = 0o755;

/// Counts of what an unpack did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// File bytes written plus [`ENTRY_COST`] per entry: what is held against the limit.
    pub size: u64,
}

/// How an archive is applied.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Turn `.wh.` entries into overlay whiteouts (layers); off, they are ordinary files.
    pub whiteouts: bool,
    /// The most the unpacked tree may take (`--max-layer-size`).
    pub max_size: u64,
}

/// The default `--max-layer-size`: 20 GiB.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 20 << 30;

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: true,
            max_size: DEFAULT_MAX_LAYER_SIZE,
        }
    }
}

/// Unpacks one layer stream into `dest` (which must exist and be empty).
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats, ImageError> {
    unpack(reader, dest, UnpackOptions::default())
}

/// Unpacks a tar stream (gzip-compressed or not) into `dest` as `opts` say.
pub fn unpack(
    reader: impl Read,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<UnpackStats, ImageError> {
    let mut buf = BufReader::new(reader);
    let gz = buf
        .fill_buf()
        .map_err(crate::io_err(dest))?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let root = berth_fs::open_root(dest)?;
    let mut u = Unpacker {
        root,
        opts,
        stats: UnpackStats::default(),
        parent: None,
        dir_times: Vec::new(),
    };
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| bad(format!("an entry's name: {e}")))?
            .into_owned();
        u.entry(&mut entry, &raw)
            .map_err(|e| e.into_image_error(dest, &raw))?;
    }
    u.finish_dirs()
        .map_err(|e| e.into_image_error(dest, Path::new(".")))?;
    Ok(u.stats)
}

fn bad(why: String) -> ImageError {
    ImageError::Invalid {
        what: "layer archive".into(),
        why,
    }
}

/// Why one entry could not be applied: the archive is wrong, a path was refused, or the
/// host failed (a full disk, say), which is no fault of the archive's.
enum Failure {
    Archive(String),
    Fs(berth_fs::FsError),
    Io(std::io::Error),
}

impl Failure {
    /// The error for the user, naming the entry (`raw`, as the archive spells it).
    fn into_image_error(self, dest: &Path, raw: &Path) -> ImageError {
        match self {
            Failure::Archive(why) => bad(format!("entry {}: {why}", raw.display())),
            Failure::Fs(e) => bad(format!("entry {}: {e}", raw.display())),
            Failure::Io(e) => ImageError::Io {
                path: dest.join(raw).display().to_string(),
                source: e,
            },
        }
    }
}

impl From<berth_fs::FsError> for Failure {
    fn from(e: berth_fs::FsError) -> Self {
        Failure::Fs(e)
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Failure::Io(e.into())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Metadata of an entry, taken from its header and its PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    opts: UnpackOptions,
    stats: UnpackStats,
    /// The last parent directory opened, kept because entries come grouped by directory.
    parent: Option<(PathBuf, OwnedFd)>,
    /// Directories' times, set last: writing inside a directory changes its mtime.
    dir_times: Vec<(PathBuf, i64)>,
}

impl Unpacker {
    fn charge(&mut self, bytes: u64) -> Result<(), Failure> {
        self.stats.size = self.stats.size.saturating_add(bytes);
        if self.stats.size > self.opts.max_size {
            return Err(Failure::Archive(format!(
                "the layer unpacks to more than the limit of {} bytes (--max-layer-size)",
                self.opts.max_size
            )));
        }
        Ok(())
    }

    /// The parent directory of an entry, made if missing, reached without following links.
    fn parent(&mut self, rel: &Path) -> Result<BorrowedFd<'_>, Failure> {
        let fresh = !matches!(&self.parent, Some((p, _)) if p == rel);
        if fresh {
            let fd = berth_fs::open_dir(self.root.as_fd(), rel, Some(Mode::from(IMPLICIT_DIR)))?;
            self.parent = Some((rel.to_path_buf(), fd));
        }
        Ok(self
            .parent
            .as_ref()
            .map(|(_, fd)| fd.as_fd())
            .expect("set above"))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &Path) -> Result<(), Failure> {
        use tar::EntryType as T;
        self.stats.entries += 1;
        self.charge(ENTRY_COST)?;
        let rel = berth_fs::clean(raw)
            .ok_or_else(|| Failure::Archive("the name leaves the layer (`..`)".into()))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let meta = meta(entry)?;
        let Some((parent_rel, name)) = berth_fs::split(&rel) else {
            // The root itself (`./`): only its metadata.
            if kind.is_dir() {
                let root = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?;
                apply_fd_meta(root.as_fd(), &meta)?;
                self.dir_times.push((PathBuf::new(), meta.mtime));
            }
            return Ok(());
        };
        let name_str = name.to_string_lossy();
        if self.opts.whiteouts && name_str.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent_rel, name, &name_str);
        }
        let parent_rel = parent_rel.to_path_buf();
        let name = name.to_os_string();
        match kind {
            T::Directory => {
                let parent = self.parent(&parent_rel)?;
                match rustix::fs::statat(parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        berth_fs::remove_at(parent, &name)?;
                        rustix::fs::mkdirat(parent, &name, Mode::from(0o700))?;
                    }
                    Err(Errno::NOENT) => rustix::fs::mkdirat(parent, &name, Mode::from(0o700))?,
                    Err(e) => return Err(e.into()),
                }
                let dir = berth_fs::open_dir(parent, Path::new(&name), None)?;
                apply_fd_meta(dir.as_fd(), &meta)?;
                self.dir_times.push((rel, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                // The size the file has once unpacked (a sparse entry's is more than it stores).
                let size = entry.size();
                self.charge(size)?;
                let parent = self.parent(&parent_rel)?;
                berth_fs::remove_at(parent, &name)?;
                let fd = rustix::fs::openat(
                    parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from(0o600),
                )?;
                let mut file = std::fs::File::from(fd);
                let written = copy_limited(entry, &mut file, size)?;
                if written != size {
                    return Err(Failure::Archive(format!(
                        "holds {written} bytes where its header says {size}"
                    )));
                }
                apply_fd_meta(file.as_fd(), &meta)?;
                set_times(file.as_fd(), meta.mtime)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Failure::Archive("a symbolic link without a target".into()))?
                    .into_owned();
                let parent = self.parent(&parent_rel)?;
                berth_fs::remove_at(parent, &name)?;
                // The target is data: it is stored, never followed here.
                rustix::fs::symlinkat(OsStr::from_bytes(&target), parent, &name)?;
                rustix::fs::chownat(
                    parent,
                    &name,
                    Some(uid(meta.uid)),
                    Some(gid(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                rustix::fs::utimensat(
                    parent,
                    &name,
                    &times(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Failure::Archive(format!("its link target: {e}")))?
                    .ok_or_else(|| Failure::Archive("a hard link without a target".into()))?
                    .into_owned();
                let src = berth_fs::clean(&target).ok_or_else(|| {
                    Failure::Archive(format!(
                        "hard link to {} leaves the layer",
                        target.display()
                    ))
                })?;
                let (src_parent, src_name) = berth_fs::split(&src)
                    .ok_or_else(|| Failure::Archive("a hard link to the layer's root".into()))?;
                if src == rel {
                    return Ok(());
                }
                let src_dir = berth_fs::open_dir(self.root.as_fd(), src_parent, None)?;
                let parent = self.parent(&parent_rel)?;
                berth_fs::remove_at(parent, &name)?;
                // No AT_SYMLINK_FOLLOW: a link to a symbolic link links the link itself.
                rustix::fs::linkat(&src_dir, src_name, parent, &name, AtFlags::empty()).map_err(
                    |e| match e {
                        Errno::NOENT => Failure::Archive(format!(
                            "hard link to {}, which the layer does not hold (yet)",
                            target.display()
                        )),
                        e => e.into(),
                    },
                )?;
            }
            T::Char | T::Block | T::Fifo => {
                let ft = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = entry.header();
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                let parent = self.parent(&parent_rel)?;
                berth_fs::remove_at(parent, &name)?;
                rustix::fs::mknodat(parent, &name, ft, Mode::from(0o600), dev)?;
                // A device cannot be opened to change it through a descriptor; the name was
                // made just now, in a directory only this unpack writes, and is no link.
                rustix::fs::chownat(
                    parent,
                    &name,
                    Some(uid(meta.uid)),
                    Some(gid(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                rustix::fs::chmodat(
                    parent,
                    &name,
                    Mode::from(meta.mode & 0o7777),
                    AtFlags::empty(),
                )?;
                rustix::fs::utimensat(
                    parent,
                    &name,
                    &times(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            other => {
                tracing::debug!(entry = %raw.display(), kind = ?other, "layer entry of a kind not unpacked");
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, parent_rel: &Path, name: &OsStr, name_str: &str) -> Result<(), Failure> {
        let parent_rel = parent_rel.to_path_buf();
        if name_str == OPAQUE {
            let parent = self.parent(&parent_rel)?;
            rustix::fs::fsetxattr(
                parent,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if name_str.starts_with(".wh..wh.") {
            // aufs' own bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): nothing to apply, as
            // Docker and containerd skip it.
            return Ok(());
        }
        let hidden = &name.as_encoded_bytes()[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(Failure::Archive("a whiteout that names nothing".into()));
        }
        let hidden = OsStr::from_bytes(hidden).to_os_string();
        let parent = self.parent(&parent_rel)?;
        berth_fs::remove_at(parent, &hidden)?;
        rustix::fs::mknodat(
            parent,
            &hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), Failure> {
        self.parent = None;
        for (rel, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            // A directory an entry later replaced is simply gone, and so skipped.
            match berth_fs::open_dir(self.root.as_fd(), &rel, None) {
                Ok(dir) => set_times(dir.as_fd(), mtime)?,
                Err(berth_fs::FsError::Io { .. } | berth_fs::FsError::NotDir { .. }) => {}
                Err(berth_fs::FsError::Symlink { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_times(fd: BorrowedFd<'_>, mtime: i64) -> Result<(), Failure> {
    Ok(rustix::fs::futimens(fd, &times(mtime))?)
}

/// Owner, then mode (a chown clears set-id bits), then extended attributes.
fn apply_fd_meta(fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), Failure> {
    rustix::fs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid)))?;
    rustix::fs::fchmod(fd, Mode::from(meta.mode & 0o7777))?;
    for (name, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(fd, name.as_str(), value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            // A filesystem without them (or one that refuses this name) loses the attribute,
            // as Docker's unpacker lets it.
            Err(Errno::NOTSUP | Errno::PERM) => {
                tracing::debug!(xattr = %name, "extended attribute not kept")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether an image may set this extended attribute on its files.
fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, Failure> {
    let h = entry.header();
    // An empty numeric field reads as 0, as Go's archive/tar (which wrote most layers) reads it.
    let num = |v: std::io::Result<u64>, raw: &[u8], what: &str| match v {
        Ok(n) => Ok(n),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(Failure::Archive(format!("its {what}: {e}"))),
    };
    let old = h.as_old();
    let mode = num(h.mode().map(u64::from), &old.mode, "mode")? as u32;
    let mut uid = num(h.uid(), &old.uid, "uid")?;
    let mut gid = num(h.gid(), &old.gid, "gid")?;
    let mtime = num(h.mtime(), &old.mtime, "mtime")?;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| Failure::Archive(format!("its PAX records: {e}")))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| Failure::Archive(format!("its PAX records: {e}")))?;
            let Ok(key) = ext.key() else { continue };
            let parsed = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| Failure::Archive(format!("its PAX {key} is not a number")))
            };
            match key {
                "uid" => uid = parsed()?,
                "gid" => gid = parsed()?,
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                        && xattr_allowed(name)
                    {
                        xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    let id = |n: u64, what: &str| {
        u32::try_from(n).map_err(|_| Failure::Archive(format!("its {what} {n} is out of range")))
    };
    Ok(Meta {
        mode,
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
        xattrs,
    })
}

/// Copies at most `limit` bytes (what the header promised), so a lying stream cannot write more.
fn copy_limited(from: &mut impl Read, to: &mut std::fs::File, limit: u64) -> Result<u64, Failure> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut r = from.take(limit);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Archive(format!("reading its data: {e}"))),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

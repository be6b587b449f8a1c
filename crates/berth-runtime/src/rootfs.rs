//! A container's root: an overlay of its image's unpacked layers (read-only lower dirs, shared
//! between containers) with a writable upper dir of its own.
//!
//! Invariant: a `Rootfs` is unmounted when dropped, so a failing caller (or test) leaves no
//! mount behind.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the overlay at {path}: {errno}{hint} (lower dirs: {lowers})", hint = if *.errno == nix::errno::Errno::EPERM { "; running containers needs root" } else { "" })]
    Mount {
        path: String,
        errno: nix::Error,
        lowers: String,
    },
    #[error("an image needs at least one layer")]
    NoLayers,
}

/// A mounted overlay root.
#[derive(Debug)]
pub struct Rootfs {
    merged: PathBuf,
    mounted: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Rootfs {
    /// Mounts `layers` (bottom first, as images list them) under `dir`: `dir/upper`,
    /// `dir/work`, and the root at `dir/merged`.
    pub fn mount(layers: &[PathBuf], dir: &Path) -> Result<Rootfs, RootfsError> {
        if layers.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        // overlayfs lists the top layer first.
        let lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let lowers = lowers.join(":");
        let opts = format!(
            "lowerdir={lowers},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|errno| RootfsError::Mount {
            path: merged.display().to_string(),
            errno,
            lowers: lowers.clone(),
        })?;
        Ok(Rootfs {
            merged,
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.merged
    }

    /// Leaves the overlay mounted after this value is gone (a running container's root
    /// outlives the process that made it); `unmount_under` removes it later.
    pub fn keep(mut self) -> PathBuf {
        self.mounted = false;
        self.merged.clone()
    }

    /// Unmounts (lazily if busy). Idempotent.
    pub fn unmount(&mut self) -> Result<(), RootfsError> {
        if self.mounted {
            umount2(&self.merged, MntFlags::MNT_DETACH).map_err(|e| RootfsError::Io {
                path: self.merged.display().to_string(),
                source: e.into(),
            })?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!(error = %e, "cannot unmount a container root");
        }
    }
}

/// Unmounts every mount at or below `dir`, deepest first (lazily, so a busy one goes once
/// free). What a crashed node left behind is found from the mount table alone.
pub fn unmount_under(dir: &Path) -> Result<(), RootfsError> {
    let prefix = dir.display().to_string();
    // Mounts can be stacked on one point: repeat until none is left.
    for _ in 0..16 {
        let table = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io(Path::new("/proc/self/mountinfo")))?;
        let mut points: Vec<String> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            // mountinfo escapes a space as octal.
            .map(|p| p.replace("\\040", " "))
            .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        points.dedup();
        for p in points {
            match umount2(Path::new(&p), MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(RootfsError::Io {
                        path: p,
                        source: e.into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Resolves `path` (absolute, inside the container) to a file under `root`, following
/// symlinks as the container would see them: absolute targets stay inside `root`.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let candidate = cur.join(&part);
        let meta = std::fs::symlink_metadata(root.join(&candidate)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(root.join(&candidate)).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                cur = PathBuf::new();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .rev(),
            );
        } else {
            cur = candidate;
        }
    }
    let full = root.join(&cur);
    full.exists().then_some(full)
}

/// Finds the program a container would run for `argv0`: the path itself when it has a
/// slash, else the first match along `PATH`.
pub fn find_program(root: &Path, argv0: &str, path_env: &str) -> Option<PathBuf> {
    if argv0.contains('/') {
        let abs = if argv0.starts_with('/') {
            argv0.to_string()
        } else {
            format!("/{argv0}")
        };
        return resolve_in_root(root, &abs).filter(|p| p.is_file());
    }
    path_env
        .split(':')
        .filter(|d| !d.is_empty())
        .find_map(|d| resolve_in_root(root, &format!("{d}/{argv0}")).filter(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", r.join("usr/bin/env")).unwrap();
        // An absolute link that would point at the host's file must stay in the root.
        std::os::unix::fs::symlink("/etc/hostname", r.join("usr/bin/host-file")).unwrap();
        assert_eq!(
            find_program(r, "sh", "/usr/bin:/bin"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(
            find_program(r, "env", "/usr/bin:/bin"),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(find_program(r, "/bin/sh", ""), Some(r.join("bin/busybox")));
        assert_eq!(find_program(r, "host-file", "/usr/bin"), None);
        assert_eq!(find_program(r, "nope", "/usr/bin:/bin"), None);
        assert_eq!(find_program(r, "../../etc/passwd", "/bin"), None);
    }
}

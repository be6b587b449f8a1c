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
    #[error("cannot mount the overlay at {path}: {errno} (lower dirs: {lowers})")]
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

//! A small tmpfs of a test's own, to run out of disk space for real: mounted on a fresh
//! temporary directory, filled on demand, unmounted and removed when its guard drops, pass or
//! fail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted on drop.
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: "4m") on a new directory.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a temporary directory for the tmpfs");
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount a tmpfs on {}: {}",
            dir.path().display(),
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Writes a file named `name` until the tmpfs is full; returns its path (remove it to free
    /// the space again).
    pub fn fill(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        let mut f = std::fs::File::create(&p).expect("create the filler file");
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("fill {}: {e}", p.display()),
            }
        }
        // The last pages too: single bytes until nothing fits.
        while let Ok(1) = f.write(&[0xa5]) {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let ok = Command::new("umount")
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process of the test not yet reaped): detach it now, the kernel
            // frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
        drop(dir);
    }
}

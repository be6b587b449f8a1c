//! Volumes: directories a pod's containers share (`emptyDir`, on disk or in memory), host
//! paths, named volumes that outlive pods, and projected files (ConfigMaps, Secrets) updated
//! atomically.
//!
//! Invariant: projected files are swapped in one `rename` of the `..data` symlink (as the
//! kubelet's atomic writer does), so a reader sees the old set of files or the new one, never
//! a mix.

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
}

type Result<T> = std::result::Result<T, VolumeError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.display().to_string(),
        source,
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
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    if memory {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&dir.display().to_string()));
        if !mounted {
            let opts = if memory_limit > 0 {
                format!("mode=1777,size={memory_limit}")
            } else {
                "mode=1777".to_string()
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
    } else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io(&dir))?;
    }
    Ok(dir)
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

/// Writes `files` into `dir` as one atomic update: a new timestamped directory, the `..data`
/// symlink swapped to it, top-level links for each file, and the previous set removed.
pub fn project(dir: &Path, files: &[File]) -> Result<()> {
    for f in files {
        check_path(&f.path)?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let version = format!("..{nanos}");
    let vdir = dir.join(&version);
    std::fs::create_dir(&vdir).map_err(io(&vdir))?;
    for f in files {
        let path = vdir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, &f.contents).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(io(&path))?;
    }
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &data).map_err(io(&data))?;
    // Top-level names point through ..data, so they follow the swap.
    let mut tops: Vec<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    tops.sort();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link).map_err(io(&link))?;
        }
    }
    // Names no longer projected go.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old
        && old != Path::new(&version)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
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
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(v.join("app.conf")).unwrap(), "v1");
        assert_eq!(std::fs::read_to_string(v.join("secret/key")).unwrap(), "k1");
        let mode = std::fs::metadata(v.join("secret/key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        project(&v, &[f("app.conf", "v2", 0o644)]).unwrap();
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
        assert_eq!(versions, 1, "the previous version is removed");
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "..data"] {
            assert!(project(&v, &[f(bad, "x", 0o644)]).is_err(), "{bad}");
        }
        assert!(named(dir.path(), "../etc").is_err());
        assert_eq!(
            named(dir.path(), "db").unwrap(),
            dir.path().join("volumes/db")
        );
        assert_eq!(list_named(dir.path()), vec!["db"]);
    }
}

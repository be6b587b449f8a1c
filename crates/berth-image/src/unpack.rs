//! Unpacking a layer (tar, or gzip-compressed tar) into a directory that overlayfs can use as
//! a lower dir: Docker/OCI whiteouts (`.wh.NAME`) become overlay whiteouts (a 0:0 character
//! device), opaque markers (`.wh..wh..opq`) become the `trusted.overlay.opaque` xattr.
//!
//! Invariant: nothing is written outside the target directory, whatever paths or links the
//! archive holds (the tar crate's `unpack_in` refuses escapes; whiteout names are checked
//! here).

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::{ImageError, io_err};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Counts of what an unpack did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
}

/// A path inside the archive made relative and checked: no root, no `..`.
fn clean(path: &Path) -> Option<PathBuf> {
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

fn make_whiteout(path: &Path) -> Result<(), ImageError> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path)
            .or_else(|_| std::fs::remove_dir_all(path))
            .map_err(io_err(path))?;
    }
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| ImageError::Io {
        path: path.display().to_string(),
        source: std::io::Error::from(e),
    })
}

fn make_opaque(dir: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    xattr::set(dir, "trusted.overlay.opaque", b"y").map_err(io_err(dir))
}

/// Unpacks one layer stream into `dest` (which must exist and be empty).
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats, ImageError> {
    let mut buf = BufReader::new(reader);
    let gz = buf
        .fill_buf()
        .map_err(io_err(dest))?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let mut stats = UnpackStats::default();
    let bad = |why: String| ImageError::Invalid {
        what: "layer archive".into(),
        why,
    };
    for entry in archive.entries().map_err(io_err(dest))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        stats.entries += 1;
        let raw = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some(rel) = clean(&raw) else {
            return Err(bad(format!("entry {} leaves the layer", raw.display())));
        };
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
            if name == OPAQUE {
                make_opaque(&parent)?;
                stats.opaque_dirs += 1;
            } else {
                if hidden.is_empty() || hidden.contains('/') || hidden == "." || hidden == ".." {
                    return Err(bad(format!("bad whiteout {}", raw.display())));
                }
                make_whiteout(&parent.join(hidden))?;
                stats.whiteouts += 1;
            }
            continue;
        }
        entry.unpack_in(dest).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            bad(format!("{}: {e}{cause}", raw.display()))
        })?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let data = layer(&[
            ("etc/keep", b"k"),
            ("etc/.wh.gone", b""),
            ("var/lib/.wh..wh..opq", b""),
            ("var/lib/new", b"n"),
        ]);
        let stats = unpack_layer(&data[..], dir.path()).unwrap();
        assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));
        assert_eq!(std::fs::read(dir.path().join("etc/keep")).unwrap(), b"k");
        let wh = std::fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(
            xattr::get(dir.path().join("var/lib"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(std::fs::read(dir.path().join("var/lib/new")).unwrap(), b"n");
    }

    #[test]
    fn gzip_layers_unpack_too() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer(&[("bin/tool", b"#!/bin/sh\n")]))
            .unwrap();
        unpack_layer(&gz.finish().unwrap()[..], dir.path()).unwrap();
        assert!(dir.path().join("bin/tool").exists());
    }

    #[test]
    fn nothing_escapes_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("layer");
        std::fs::create_dir(&inner).unwrap();
        // A raw header whose name climbs out (tar::Builder refuses to write one).
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..13].copy_from_slice(b"../escaped.tx");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(b"x");
        data.resize(data.len() + 511, 0);
        data.extend_from_slice(&[0u8; 1024]);
        assert!(unpack_layer(&data[..], &inner).is_err());
        assert!(!dir.path().join("escaped.tx").exists());
        let bad_wh = layer(&[("a/.wh...", b"")]);
        assert!(unpack_layer(&bad_wh[..], &inner).is_err());
    }
}

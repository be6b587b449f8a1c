//! The built-in `host` image: the host's programs and libraries (`/usr`, `/bin`, `/sbin`,
//! `/lib*`) and the `/etc` files they need, read-only, over an empty root of the container's
//! own. A fresh machine runs isolated workloads from its own programs with nothing
//! downloaded (what Nomad's exec driver offers).

use std::path::{Path, PathBuf};

use crate::spec::Mount;

/// The image's name, as users write it.
pub const NAME: &str = "host";

/// Top-level host directories bound read-only.
const DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/etc` entries the host's programs need (users and groups, the dynamic linker, name
/// service, TLS roots, time zone, Debian's alternatives).
const ETC: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "localtime",
    "services",
    "protocols",
    "mime.types",
    "alternatives",
];

/// The image's default `PATH`.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes (once) the image's only layer under `dir`: the skeleton of a root, with the host's
/// top-level symlinks (`/bin -> usr/bin` on merged-/usr systems) copied as links and
/// everything else an empty directory for a mount to land on.
pub fn layer(dir: &Path) -> std::io::Result<PathBuf> {
    // The image store's directory, private as `ImageStore::open` makes it.
    berth_fs::private_dir(dir)?;
    let root = dir.join("host-image");
    // Built aside and renamed into place, so it is complete whenever it exists, and pods
    // starting at once on a fresh node never see (or break) a half-made one.
    if root.is_dir() {
        return Ok(root);
    }
    let tmp = dir.join(format!(
        "host-image.tmp-{}-{:x}",
        std::process::id(),
        berth_api::timefmt::now_nanos()
    ));
    build(&tmp)?;
    // Another start placed its own first: that one is complete too.
    let placed =
        std::fs::rename(&tmp, &root).or_else(|e| if root.is_dir() { Ok(()) } else { Err(e) });
    let _ = std::fs::remove_dir_all(&tmp);
    placed?;
    Ok(root)
}

fn build(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    for d in [
        "etc", "tmp", "var/tmp", "root", "home", "run", "proc", "sys", "dev", "srv", "opt", "mnt",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for t in ["tmp", "var/tmp"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join(t), std::fs::Permissions::from_mode(0o1777))?;
    }
    for d in DIRS {
        let host = Path::new("/").join(d);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                std::os::unix::fs::symlink(std::fs::read_link(&host)?, root.join(d))?;
            }
            Ok(m) if m.is_dir() => std::fs::create_dir_all(root.join(d))?,
            _ => {}
        }
    }
    for e in ETC {
        let host = Path::new("/etc").join(e);
        match std::fs::metadata(&host) {
            Ok(m) if m.is_dir() => std::fs::create_dir_all(root.join("etc").join(e))?,
            Ok(_) => {
                std::fs::write(root.join("etc").join(e), b"")?;
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// The read-only binds that fill the skeleton from the host.
pub fn mounts() -> Vec<Mount> {
    let mut out = Vec::new();
    for d in DIRS {
        let host = Path::new("/").join(d);
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            out.push(Mount {
                destination: format!("/{d}"),
                source: host.display().to_string(),
                read_only: true,
            });
        }
    }
    for e in ETC {
        let host = Path::new("/etc").join(e);
        if host.exists() {
            out.push(Mount {
                destination: format!("/etc/{e}"),
                source: host.display().to_string(),
                read_only: true,
            });
        }
    }
    out
}

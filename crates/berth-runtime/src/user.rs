//! A container's user: the image's `User` (`uid[:gid]`, or names) resolved against the
//! image's own `/etc/passwd` and `/etc/group`, as Docker resolves it.

use std::path::{Path, PathBuf};

/// `uid[:gid]` or names looked up in the image's /etc/passwd and /etc/group.
pub fn resolve(user: &str, etc: &Path) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let entry = |matches: &dyn Fn(&[&str]) -> bool| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && matches(&f)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, user_gid) = match u.parse::<u32>() {
        Ok(n) => (n, entry(&|f| f[2] == u).map_or(n, |(_, g)| g)),
        Err(_) => entry(&|f| f[0] == u)
            .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match g {
        "" => user_gid,
        g => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => std::fs::read_to_string(etc.join("group"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[0] == g).then(|| f[2].parse().ok())?
                })
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// The image's `/etc`: the topmost layer that has one.
pub fn image_etc(layers: &[PathBuf]) -> PathBuf {
    layers
        .iter()
        .rev()
        .map(|l| l.join("etc"))
        .find(|e| e.join("passwd").exists())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_number_and_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let etc = dir.path();
        assert_eq!(resolve("", etc), Ok((0, 0)));
        assert_eq!(resolve("web", etc), Ok((1000, 1001)));
        assert_eq!(resolve("1000", etc), Ok((1000, 1001)));
        assert_eq!(resolve("4242", etc), Ok((4242, 4242)));
        assert_eq!(resolve("web:staff", etc), Ok((1000, 50)));
        assert_eq!(resolve("web:7", etc), Ok((1000, 7)));
        assert!(resolve("nobody", etc).unwrap_err().contains("/etc/passwd"));
        assert!(
            resolve("web:nogroup", etc)
                .unwrap_err()
                .contains("/etc/group")
        );
    }
}

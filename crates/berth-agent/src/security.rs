//! A pod's security settings turned into what the runtime applies: the container's
//! securityContext over the pod's (capabilities, privileged, no_new_privs, seccomp,
//! procMount, users and groups, sysctls), the node namespaces it shares (hostPID, hostIPC;
//! hostNetwork is the sandbox's), runAsNonRoot's check, and hostPath volumes' `type`.
//!
//! The API server has already held the pod to its namespace's Pod Security level and refused
//! every field berth does not implement; what reaches here is applied or fails the container's
//! start with a message naming the field.

use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use berth_runtime::pod::ContainerConfig;
use berth_runtime::spec::{HostNamespaces, Seccomp, Security};
use serde_json::Value;

fn flag(v: &Value, ptr: &str) -> Option<bool> {
    v.pointer(ptr).and_then(Value::as_bool)
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// The seccomp profile `name` from `<data-dir>/seccomp/`: a relative path that stays inside
/// (no `..`, no absolute path, no link out), holding an OCI `linux.seccomp` object.
fn localhost_profile(data_dir: &Path, name: &str) -> Result<Value, String> {
    let root = data_dir.join("seccomp");
    let rel = Path::new(name);
    if name.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "seccomp profile {name:?}: must be a relative path inside {} without '.' or '..'",
            root.display()
        ));
    }
    let read = || -> Result<Vec<u8>, String> {
        let dir = berth_fs::open_root(&root).map_err(|e| e.to_string())?;
        let fd = berth_fs::open_beneath(
            std::os::fd::AsFd::as_fd(&dir),
            rel,
            rustix::fs::OFlags::RDONLY,
        )
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::fs::File::from(fd), 1 << 20),
            &mut buf,
        )
        .map_err(|e| e.to_string())?;
        Ok(buf)
    };
    let bytes = read().map_err(|e| {
        format!(
            "cannot read seccomp profile {name:?} under {}: {e}",
            root.display()
        )
    })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("seccomp profile {name:?} is not JSON: {e}"))?;
    if v.get("defaultAction").and_then(Value::as_str).is_none() {
        return Err(format!(
            "seccomp profile {name:?} has no defaultAction (it must be an OCI linux.seccomp object)"
        ));
    }
    Ok(v)
}

fn seccomp_of(data_dir: &Path, sc: &Value) -> Result<Option<Seccomp>, String> {
    Ok(
        match sc.pointer("/seccompProfile/type").and_then(Value::as_str) {
            None => None,
            Some("Unconfined") => Some(Seccomp::Unconfined),
            Some("Localhost") => {
                let name = sc
                    .pointer("/seccompProfile/localhostProfile")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Some(Seccomp::Profile(localhost_profile(data_dir, name)?))
            }
            Some(_) => Some(Seccomp::RuntimeDefault),
        },
    )
}

/// Makes a hostPath volume's path what its `type` asks, or says why it is not.
pub(crate) fn check_host_path(name: &str, hp: &Value) -> Result<(), String> {
    let path = PathBuf::from(hp.get("path").and_then(Value::as_str).unwrap_or(""));
    let ty = hp.get("type").and_then(Value::as_str).unwrap_or("");
    let fail = |what: &str| {
        Err(format!(
            "MountVolume.SetUp failed for volume {name:?} : hostPath type check failed: {} is not {what}",
            path.display()
        ))
    };
    let md = std::fs::metadata(&path);
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" if md.is_err() => std::fs::create_dir_all(&path)
            .map_err(|e| format!("volume {name:?}: cannot create {}: {e}", path.display())),
        "FileOrCreate" if md.is_err() => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map(drop)
            .map_err(|e| format!("volume {name:?}: cannot create {}: {e}", path.display())),
        _ => {
            let Ok(md) = md else {
                return fail(match ty {
                    "Directory" => "a directory",
                    "File" => "a file",
                    "Socket" => "a socket file",
                    "CharDevice" => "a character device",
                    _ => "a block device",
                });
            };
            let ft = md.file_type();
            match ty {
                "Directory" | "DirectoryOrCreate" if !ft.is_dir() => fail("a directory"),
                "File" | "FileOrCreate" if !ft.is_file() => fail("a file"),
                "Socket" if !ft.is_socket() => fail("a socket file"),
                "CharDevice" if !ft.is_char_device() => fail("a character device"),
                "BlockDevice" if !ft.is_block_device() => fail("a block device"),
                _ => Ok(()),
            }
        }
    }
}

/// Applies the pod's and the container's security settings to a container about to be made.
pub(crate) fn apply(
    data_dir: &Path,
    pod: &Value,
    c: &Value,
    cc: &mut ContainerConfig,
) -> Result<(), String> {
    let null = Value::Null;
    let sc = c.get("securityContext").unwrap_or(&null);
    let psc = pod.pointer("/spec/securityContext").unwrap_or(&null);
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(hp) = v.get("hostPath") {
            check_host_path(v.get("name").and_then(Value::as_str).unwrap_or(""), hp)?;
        }
    }
    let privileged = flag(sc, "/privileged") == Some(true);
    let cap_add = strings(sc, "/capabilities/add");
    let seccomp = match seccomp_of(data_dir, sc)? {
        Some(s) => s,
        None => seccomp_of(data_dir, psc)?.unwrap_or_default(),
    };
    let adds_sys_admin = cap_add
        .iter()
        .any(|c| berth_api::podsecurity::capability_name(c) == "SYS_ADMIN");
    cc.spec.security = Security {
        privileged,
        cap_drop: strings(sc, "/capabilities/drop"),
        // Escalation is off unless asked for (or implied, as Kubernetes implies it).
        allow_privilege_escalation: flag(sc, "/allowPrivilegeEscalation") == Some(true)
            || (flag(sc, "/allowPrivilegeEscalation").is_none() && adds_sys_admin),
        cap_add,
        seccomp,
        unmasked_proc: sc.get("procMount").and_then(Value::as_str) == Some("Unmasked"),
        // fsGroup joins every container's groups, as the kubelet adds it.
        supplemental_groups: psc
            .get("supplementalGroups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(psc.get("fsGroup"))
            .filter_map(|g| g.as_u64().and_then(|g| u32::try_from(g).ok()))
            .fold(Vec::new(), |mut gs, g| {
                if !gs.contains(&g) {
                    gs.push(g);
                }
                gs
            }),
        sysctls: psc
            .get("sysctls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    s.get("name")?.as_str()?.to_string(),
                    s.get("value")?.as_str()?.to_string(),
                ))
            })
            .collect(),
    };
    cc.spec.host = HostNamespaces {
        network: false,
        pid: flag(pod, "/spec/hostPID") == Some(true),
        ipc: flag(pod, "/spec/hostIPC") == Some(true),
    };
    let non_root = flag(sc, "/runAsNonRoot").or(flag(psc, "/runAsNonRoot"));
    if non_root == Some(true) && cc.spec.uid == 0 {
        let explicit = sc
            .get("runAsUser")
            .or_else(|| psc.get("runAsUser"))
            .is_some();
        return Err(if explicit {
            "container's runAsUser breaks non-root policy (runAsNonRoot is true and runAsUser is 0)"
                .into()
        } else {
            "container has runAsNonRoot and image will run as root (set securityContext.runAsUser to a non-zero uid)".into()
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seccomp_profiles_are_read_only_from_inside_the_seccomp_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("seccomp/sub")).unwrap();
        std::fs::write(
            data.join("seccomp/sub/ok.json"),
            r#"{"defaultAction": "SCMP_ACT_LOG"}"#,
        )
        .unwrap();
        // A secret outside, and links that try to reach it.
        std::fs::write(
            dir.path().join("outside.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("outside.json"),
            data.join("seccomp/abs.json"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../outside.json", data.join("seccomp/rel.json")).unwrap();
        std::fs::write(data.join("seccomp/bad.json"), "[]").unwrap();

        assert_eq!(
            localhost_profile(&data, "sub/ok.json").unwrap()["defaultAction"],
            "SCMP_ACT_LOG"
        );
        for escape in [
            "../outside.json",
            "/etc/passwd",
            "sub/../../outside.json",
            "abs.json",
            "rel.json",
            "",
        ] {
            let e = localhost_profile(&data, escape).unwrap_err();
            assert!(e.contains(&format!("{escape:?}")), "{escape}: {e}");
        }
        assert!(
            localhost_profile(&data, "bad.json")
                .unwrap_err()
                .contains("has no defaultAction"),
        );
        assert!(
            localhost_profile(&data, "none.json")
                .unwrap_err()
                .starts_with("cannot read seccomp profile \"none.json\""),
        );
    }

    #[test]
    fn host_path_types_are_checked_against_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let sock_path = dir.path().join("s");
        let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
        let hp = |p: &Path, t: &str| json!({"path": p.display().to_string(), "type": t});
        assert!(check_host_path("v", &hp(dir.path(), "Directory")).is_ok());
        assert!(check_host_path("v", &hp(&file, "File")).is_ok());
        assert!(check_host_path("v", &hp(&sock_path, "Socket")).is_ok());
        assert!(check_host_path("v", &hp(Path::new("/dev/null"), "CharDevice")).is_ok());
        for (p, t, what) in [
            (file.as_path(), "Directory", "a directory"),
            (dir.path(), "File", "a file"),
            (file.as_path(), "Socket", "a socket file"),
            (file.as_path(), "CharDevice", "a character device"),
            (Path::new("/dev/null"), "BlockDevice", "a block device"),
            (file.as_path(), "DirectoryOrCreate", "a directory"),
        ] {
            assert_eq!(
                check_host_path("v", &hp(p, t)).unwrap_err(),
                format!(
                    "MountVolume.SetUp failed for volume \"v\" : hostPath type check failed: {} is not {what}",
                    p.display()
                )
            );
        }
        let made = dir.path().join("new-dir/a/b");
        check_host_path("v", &hp(&made, "DirectoryOrCreate")).unwrap();
        assert!(made.is_dir());
        let made = dir.path().join("new-file");
        check_host_path("v", &hp(&made, "FileOrCreate")).unwrap();
        assert!(made.is_file());
        // FileOrCreate makes no parent directory.
        let e = check_host_path("v", &hp(&dir.path().join("no/such"), "FileOrCreate")).unwrap_err();
        assert!(e.starts_with("volume \"v\": cannot create"), "{e}");
    }

    #[test]
    fn security_contexts_become_runtime_settings() {
        let pod = json!({"spec": {"hostPID": true, "securityContext": {
            "runAsNonRoot": true, "seccompProfile": {"type": "Unconfined"}, "supplementalGroups": [7],
            "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}}});
        let c = json!({"name": "c", "securityContext": {"capabilities": {"add": ["sys_admin"], "drop": ["ALL"]},
            "procMount": "Unmasked"}});
        let mut cc = ContainerConfig::default();
        cc.spec.uid = 1000;
        apply(Path::new("/nonexistent"), &pod, &c, &mut cc).unwrap();
        let s = &cc.spec.security;
        assert_eq!(s.seccomp, Seccomp::Unconfined);
        assert!(s.allow_privilege_escalation, "SYS_ADMIN implies escalation");
        assert!(s.unmasked_proc);
        assert_eq!(s.supplemental_groups, vec![7]);
        assert_eq!(s.capabilities(), vec!["CAP_SYS_ADMIN".to_string()]);
        assert!(cc.spec.host.pid && !cc.spec.host.ipc);
        // runAsNonRoot against uid 0 is refused.
        cc.spec.uid = 0;
        let e = apply(Path::new("/nonexistent"), &pod, &c, &mut cc).unwrap_err();
        assert!(e.contains("runAsNonRoot"), "{e}");
    }
}

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
        supplemental_groups: psc
            .get("supplementalGroups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_u64().and_then(|g| u32::try_from(g).ok()))
            .collect(),
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

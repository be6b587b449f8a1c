//! Security contexts, pod and container: the fields berth gives their real effect are
//! checked (capabilities by name, seccomp profiles, IDs in range); every other key is refused
//! with 422 naming it, so nothing a pod asks for is silently left out.

use serde_json::{Map, Value};

use super::walker::V;
use crate::status::FieldError;

/// Container securityContext fields berth gives their real effect.
const CONTAINER_SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "privileged",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
    "procMount",
];

/// Pod securityContext fields berth gives their real effect.
const POD_SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "supplementalGroups",
    "fsGroup",
    "fsGroupChangePolicy",
    "seccompProfile",
    "sysctls",
];

/// Linux capabilities by the names Kubernetes uses (no `CAP_` prefix).
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Refuses every key of a securityContext berth does not implement, naming it: nothing a pod
/// asks for is silently left out.
fn refuse_unimplemented(v: &mut V, path: &str, m: &Map<String, Value>, known: &[&str]) {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            v.push(FieldError::forbidden(
                format!("{path}.{k}"),
                &format!(
                    "berth does not implement this field; supported fields are {}",
                    known.join(", ")
                ),
            ));
        }
    }
}

fn validate_seccomp(v: &mut V, path: &str, p: Option<&Value>) {
    let Some(sp) = v.obj(path, p) else { return };
    let ty = v.one_of(
        &format!("{path}.type"),
        sp.get("type"),
        &["RuntimeDefault", "Unconfined", "Localhost"],
    );
    if ty.is_none() && sp.get("type").is_none() {
        v.push(FieldError::required(format!("{path}.type")));
    }
    let profile = v.str(
        &format!("{path}.localhostProfile"),
        sp.get("localhostProfile"),
    );
    match (ty.as_deref(), profile) {
        (Some("Localhost"), None) | (Some("Localhost"), Some("")) => v.push(
            FieldError::required(format!("{path}.localhostProfile")).with_message(format!(
                "{path}.localhostProfile: Required value: must be set when seccomp type is Localhost"
            )),
        ),
        (Some("Localhost"), Some(p))
            if p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".") =>
        {
            v.push(FieldError::invalid(
                format!("{path}.localhostProfile"),
                format!("\"{p}\""),
                "must be a relative path inside the node's seccomp directory, without '.' or '..' components",
            ));
        }
        (Some("Localhost"), Some(_)) => {}
        (_, Some(_)) => v.push(FieldError::invalid(
            format!("{path}.localhostProfile"),
            format!("\"{}\"", profile.unwrap_or("")),
            "can only be set when seccomp type is Localhost",
        )),
        _ => {}
    }
}

pub(super) fn validate_container_security(v: &mut V, path: &str, sc: Option<&Value>) {
    let Some(sc) = v.obj(path, sc) else { return };
    refuse_unimplemented(v, path, sc, CONTAINER_SECURITY_FIELDS);
    for f in ["runAsUser", "runAsGroup"] {
        v.non_negative(&format!("{path}.{f}"), sc.get(f));
    }
    for f in [
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "privileged",
        "allowPrivilegeEscalation",
    ] {
        v.bool(&format!("{path}.{f}"), sc.get(f));
    }
    let privileged = sc.get("privileged") == Some(&Value::Bool(true));
    if let Some(caps) = v.obj(&format!("{path}.capabilities"), sc.get("capabilities")) {
        refuse_unimplemented(v, &format!("{path}.capabilities"), caps, &["add", "drop"]);
        for list in ["add", "drop"] {
            let lp = format!("{path}.capabilities.{list}");
            for (i, c) in v.arr(&lp, caps.get(list)).iter().enumerate() {
                let Some(name) = v.str(&format!("{lp}[{i}]"), Some(c)) else {
                    continue;
                };
                let n = crate::podsecurity::capability_name(name);
                if n != "ALL" && !CAPABILITIES.contains(&n.as_str()) {
                    v.push(FieldError::invalid(
                        format!("{lp}[{i}]"),
                        format!("\"{name}\""),
                        "is not a Linux capability (names such as NET_ADMIN or ALL)",
                    ));
                }
            }
        }
    }
    let adds_sys_admin = sc
        .get("capabilities")
        .and_then(|c| c.get("add"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|c| crate::podsecurity::capability_name(c) == "SYS_ADMIN");
    if sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)) {
        if privileged {
            v.push(FieldError::invalid(
                path,
                "{...}",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        } else if adds_sys_admin {
            v.push(FieldError::invalid(
                path,
                "{...}",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
    validate_seccomp(
        v,
        &format!("{path}.seccompProfile"),
        sc.get("seccompProfile"),
    );
    v.one_of(
        &format!("{path}.procMount"),
        sc.get("procMount"),
        &["Default", "Unmasked"],
    );
}

pub(super) fn validate_pod_security(v: &mut V, path: &str, s: &Map<String, Value>) {
    for f in ["hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"] {
        v.bool(&format!("{path}.{f}"), s.get(f));
    }
    v.bool(&format!("{path}.hostUsers"), s.get("hostUsers"));
    if s.get("hostUsers") == Some(&Value::Bool(false)) {
        v.push(FieldError::forbidden(
            format!("{path}.hostUsers"),
            "berth does not run pods in user namespaces of their own; leave hostUsers unset or true",
        ));
    }
    if s.get("ephemeralContainers").is_some_and(|e| !e.is_null()) {
        v.push(FieldError::forbidden(
            format!("{path}.ephemeralContainers"),
            "berth does not implement ephemeral containers; use exec",
        ));
    }
    if s.get("shareProcessNamespace") == Some(&Value::Bool(true)) {
        v.push(FieldError::forbidden(
            format!("{path}.shareProcessNamespace"),
            "berth gives each container its own process namespace and does not implement a shared one",
        ));
    }
    let sp = format!("{path}.securityContext");
    let Some(sc) = v.obj(&sp, s.get("securityContext")) else {
        return;
    };
    refuse_unimplemented(v, &sp, sc, POD_SECURITY_FIELDS);
    for f in ["runAsUser", "runAsGroup", "fsGroup"] {
        v.non_negative(&format!("{sp}.{f}"), sc.get(f));
    }
    if sc.get("fsGroupChangePolicy").is_some() {
        v.one_of(
            &format!("{sp}.fsGroupChangePolicy"),
            sc.get("fsGroupChangePolicy"),
            &["OnRootMismatch", "Always"],
        );
    }
    v.bool(&format!("{sp}.runAsNonRoot"), sc.get("runAsNonRoot"));
    for (i, g) in v
        .arr(
            &format!("{sp}.supplementalGroups"),
            sc.get("supplementalGroups"),
        )
        .iter()
        .enumerate()
    {
        v.non_negative(&format!("{sp}.supplementalGroups[{i}]"), Some(g));
    }
    validate_seccomp(v, &format!("{sp}.seccompProfile"), sc.get("seccompProfile"));
    let host_net = s.get("hostNetwork") == Some(&Value::Bool(true));
    let host_ipc = s.get("hostIPC") == Some(&Value::Bool(true));
    for (i, x) in v
        .arr(&format!("{sp}.sysctls"), sc.get("sysctls"))
        .iter()
        .enumerate()
    {
        let xp = format!("{sp}.sysctls[{i}]");
        let Some(xm) = v.obj(&xp, Some(x)) else {
            continue;
        };
        v.req_str(&format!("{xp}.value"), xm.get("value"));
        let Some(name) = v.req_str(&format!("{xp}.name"), xm.get("name")) else {
            continue;
        };
        let shaped = !name.is_empty()
            && name.split(['.', '/']).all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
            });
        if !shaped {
            v.push(FieldError::invalid(
                format!("{xp}.name"),
                format!("\"{name}\""),
                "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
            ));
        } else if !name.starts_with("net.")
            && !name.starts_with("kernel.shm")
            && !name.starts_with("kernel.msg")
            && !name.starts_with("kernel.sem")
            && !name.starts_with("fs.mqueue.")
        {
            v.push(FieldError::forbidden(
                format!("{xp}.name"),
                &format!("sysctl \"{name}\" is not namespaced: a pod may set only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* sysctls"),
            ));
        } else if host_net && name.starts_with("net.") {
            v.push(FieldError::forbidden(
                format!("{xp}.name"),
                &format!("sysctl \"{name}\" not allowed with hostNetwork enabled"),
            ));
        } else if host_ipc && !name.starts_with("net.") {
            v.push(FieldError::forbidden(
                format!("{xp}.name"),
                &format!("sysctl \"{name}\" not allowed with hostIPC enabled"),
            ));
        }
    }
}

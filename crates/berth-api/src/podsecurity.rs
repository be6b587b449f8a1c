//! Pod Security Standards (`privileged`, `baseline`, `restricted`) and the namespace labels
//! that choose them (`pod-security.kubernetes.io/enforce|warn|audit[-version]`), checked as
//! Kubernetes' Pod Security admission checks them and worded as kube-apiserver words them.
//!
//! berth differs from Kubernetes in one default: a namespace without an `enforce` label is
//! held to `baseline` (Kubernetes enforces nothing), except `kube-system`, which is
//! `privileged`. Only the `latest` version of the standards exists here.

use serde_json::{Map, Value};

use crate::status::FieldError;

/// The prefix of the namespace labels.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// The three modes a namespace label sets.
pub const MODES: [&str; 3] = ["enforce", "warn", "audit"];

/// One of the Pod Security Standards, from the most open to the most closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// What a namespace's labels ask: the level pods must meet, and the levels whose violations
/// are only warned about or recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespacePolicy {
    pub enforce: Level,
    pub warn: Option<Level>,
    pub audit: Option<Level>,
}

/// The policy of namespace `ns` with these labels. A label whose value is not a level (only
/// possible for namespaces stored before validation refused it) counts as `restricted`, as
/// Kubernetes fails closed.
pub fn namespace_policy(ns: &str, labels: Option<&Map<String, Value>>) -> NamespacePolicy {
    let level = |mode: &str| {
        labels
            .and_then(|l| l.get(&format!("{LABEL_PREFIX}{mode}")))
            .map(|v| {
                v.as_str()
                    .and_then(Level::parse)
                    .unwrap_or(Level::Restricted)
            })
    };
    let default = if ns == "kube-system" {
        Level::Privileged
    } else {
        Level::Baseline
    };
    NamespacePolicy {
        enforce: level("enforce").unwrap_or(default),
        warn: level("warn").filter(|l| *l != Level::Privileged),
        audit: level("audit").filter(|l| *l != Level::Privileged),
    }
}

/// Errors in a namespace's Pod Security labels: levels must be one of the three and versions
/// `latest`.
pub fn validate_labels(labels: &Map<String, Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        let Some(rest) = k.strip_prefix(LABEL_PREFIX) else {
            continue;
        };
        let field = format!("metadata.labels[{k}]");
        let value = v.as_str().unwrap_or("");
        match rest.strip_suffix("-version") {
            Some(mode) if MODES.contains(&mode) => {
                if value != "latest" {
                    errs.push(FieldError::not_supported(field, value, &["latest"]));
                }
            }
            None if MODES.contains(&rest) => {
                if Level::parse(value).is_none() {
                    errs.push(FieldError::not_supported(
                        field,
                        value,
                        &["privileged", "baseline", "restricted"],
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                format!("metadata.labels[{k}]"),
                rest,
                &[
                    "enforce",
                    "enforce-version",
                    "warn",
                    "warn-version",
                    "audit",
                    "audit-version",
                ],
            )),
        }
    }
    errs
}

/// `"baseline:latest"`, as messages name a policy.
pub fn policy_name(level: Level) -> String {
    format!("\"{}:latest\"", level.as_str())
}

/// The refusal of a pod that violates the enforced level.
pub fn forbidden_message(name: &str, level: Level, violations: &[String]) -> String {
    format!(
        "pods \"{name}\" is forbidden: violates PodSecurity {}: {}",
        policy_name(level),
        violations.join(", ")
    )
}

/// The warning for a pod (or a pod template) that would violate `level`.
pub fn warning_message(level: Level, violations: &[String]) -> String {
    format!(
        "would violate PodSecurity {}: {}",
        policy_name(level),
        violations.join(", ")
    )
}

/// Capabilities `baseline` allows a container to add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls `baseline` allows (those Kubernetes counts as namespaced and safe).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// `"a"`, `"a", "b"`.
fn quoted<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names of the containers whose security context `bad` picks.
fn names_where(containers: &[(String, &Value)], bad: impl Fn(&Value) -> bool) -> Vec<String> {
    containers
        .iter()
        .filter(|(_, sc)| bad(sc))
        .map(|(n, _)| n.clone())
        .collect()
}

/// `container "a"` or `containers "a", "b"`.
fn containers_named(names: &[String]) -> String {
    let word = if names.len() == 1 {
        "container"
    } else {
        "containers"
    };
    format!("{word} {}", quoted(names))
}

fn sorted_unique(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// A capability name as Kubernetes writes it (no `CAP_` prefix, upper case).
pub fn capability_name(s: &str) -> String {
    let up = s.to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
}

/// Every container of a pod spec (init, regular, ephemeral) with its name and security
/// context (`Null` when it has none).
fn all_containers(spec: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            out.push((
                name.to_string(),
                c.get("securityContext").unwrap_or(&Value::Null),
            ));
        }
    }
    out
}

fn sc_bool(sc: &Value, f: &str) -> Option<bool> {
    sc.get(f).and_then(Value::as_bool)
}

fn seccomp_type(sc: &Value) -> Option<&str> {
    sc.pointer("/seccompProfile/type").and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// What a pod spec does that `level` forbids, one `reason (detail)` per broken rule, in
/// Kubernetes' order and words. Empty: the pod meets the level.
pub fn check(level: Level, spec: &Value) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let restricted = level == Level::Restricted;
    let pod_sc = spec.get("securityContext").unwrap_or(&Value::Null);
    let containers = all_containers(spec);
    let mut out: Vec<String> = Vec::new();

    if restricted {
        let bad: Vec<String> = names_where(&containers, |sc| {
            sc_bool(sc, "allowPrivilegeEscalation") != Some(false)
        });
        if !bad.is_empty() {
            out.push(format!(
                "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
                containers_named(&bad)
            ));
        }
    }

    // Capabilities: baseline allows its list to be added; restricted wants ALL dropped and
    // nothing but NET_BIND_SERVICE added.
    let mut not_dropping = Vec::new();
    let mut adders = Vec::new();
    let mut added = Vec::new();
    for (name, sc) in &containers {
        let add: Vec<String> = strings(sc.pointer("/capabilities/add"))
            .iter()
            .map(|c| capability_name(c))
            .collect();
        let bad: Vec<String> = add
            .into_iter()
            .filter(|c| {
                if restricted {
                    c != "NET_BIND_SERVICE"
                } else {
                    !BASELINE_CAPABILITIES.contains(&c.as_str())
                }
            })
            .collect();
        if !bad.is_empty() {
            adders.push(name.clone());
            added.extend(bad);
        }
        if restricted
            && !strings(sc.pointer("/capabilities/drop"))
                .iter()
                .any(|c| capability_name(c) == "ALL")
        {
            not_dropping.push(name.clone());
        }
    }
    if restricted {
        let mut details = Vec::new();
        if !not_dropping.is_empty() {
            details.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                containers_named(&not_dropping)
            ));
        }
        if !adders.is_empty() {
            details.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_named(&adders),
                quoted(&sorted_unique(added))
            ));
        }
        if !details.is_empty() {
            out.push(format!(
                "unrestricted capabilities ({})",
                details.join("; ")
            ));
        }
    } else if !adders.is_empty() {
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            containers_named(&adders),
            quoted(&sorted_unique(added))
        ));
    }

    let hosts: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| spec.get(*f).and_then(Value::as_bool) == Some(true))
        .collect();
    if !hosts.is_empty() {
        let list: Vec<String> = hosts.iter().map(|h| format!("{h}=true")).collect();
        out.push(format!("host namespaces ({})", list.join(", ")));
    }

    let volumes: Vec<(&str, &Map<String, Value>)> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let m = v.as_object()?;
            Some((m.get("name").and_then(Value::as_str).unwrap_or(""), m))
        })
        .collect();
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter(|(_, m)| m.contains_key("hostPath"))
        .map(|(n, _)| *n)
        .collect();
    if !host_paths.is_empty() {
        let word = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!("hostPath volumes ({word} {})", quoted(&host_paths)));
    }

    let mut port_users = Vec::new();
    let mut ports = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut uses = false;
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(h) = p
                    .get("hostPort")
                    .and_then(Value::as_i64)
                    .filter(|h| *h != 0)
                {
                    uses = true;
                    ports.push(h);
                }
            }
            if uses {
                port_users.push(
                    c.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    }
    if !port_users.is_empty() {
        ports.sort_unstable();
        ports.dedup();
        let list = ports
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (verb, noun) = if port_users.len() == 1 {
            (
                "uses",
                if ports.len() == 1 {
                    "hostPort"
                } else {
                    "hostPorts"
                },
            )
        } else {
            (
                "use",
                if ports.len() == 1 {
                    "hostPort"
                } else {
                    "hostPorts"
                },
            )
        };
        out.push(format!(
            "hostPort ({} {verb} {noun} {list})",
            containers_named(&port_users)
        ));
    }

    let privileged: Vec<String> =
        names_where(&containers, |sc| sc_bool(sc, "privileged") == Some(true));
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            containers_named(&privileged)
        ));
    }

    let mut unmasked = Vec::new();
    let mut mounts = Vec::new();
    for (name, sc) in &containers {
        if let Some(p) = sc.get("procMount").and_then(Value::as_str)
            && p != "Default"
        {
            unmasked.push(name.clone());
            mounts.push(p.to_string());
        }
    }
    if !unmasked.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to {})",
            containers_named(&unmasked),
            quoted(&sorted_unique(mounts))
        ));
    }

    if restricted {
        let bad: Vec<&str> = volumes
            .iter()
            .filter_map(|(n, m)| {
                let ty = m.keys().find(|k| *k != "name")?;
                (!RESTRICTED_VOLUMES.contains(&ty.as_str())).then_some(*n)
            })
            .collect();
        if !bad.is_empty() {
            let mut types: Vec<String> = volumes
                .iter()
                .filter(|(n, _)| bad.contains(n))
                .filter_map(|(_, m)| m.keys().find(|k| *k != "name").cloned())
                .collect();
            types = sorted_unique(types);
            let word = if bad.len() == 1 { "volume" } else { "volumes" };
            let uses = if bad.len() == 1 { "uses" } else { "use" };
            let tword = if types.len() == 1 {
                "restricted volume type"
            } else {
                "restricted volume types"
            };
            out.push(format!(
                "restricted volume types ({word} {} {uses} {tword} {})",
                quoted(&bad),
                quoted(&types)
            ));
        }

        // runAsNonRoot: the pod or every container must set it (or a non-zero runAsUser).
        let pod_nonroot = sc_bool(pod_sc, "runAsNonRoot");
        let pod_user = pod_sc.get("runAsUser").and_then(Value::as_i64);
        let mut details = Vec::new();
        if pod_nonroot == Some(false) {
            details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
        }
        let explicit_false: Vec<String> =
            names_where(&containers, |sc| sc_bool(sc, "runAsNonRoot") == Some(false));
        if !explicit_false.is_empty() {
            details.push(format!(
                "{} must not set securityContext.runAsNonRoot=false",
                containers_named(&explicit_false)
            ));
        }
        let unset: Vec<String> = names_where(&containers, |sc| {
            let user = sc.get("runAsUser").and_then(Value::as_i64).or(pod_user);
            sc_bool(sc, "runAsNonRoot").is_none()
                && pod_nonroot != Some(true)
                && user.is_none_or(|u| u == 0)
        });
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_named(&unset)
            ));
        }
        if !details.is_empty() {
            out.push(format!("runAsNonRoot != true ({})", details.join("; ")));
        }

        let mut details = Vec::new();
        if pod_user == Some(0) {
            details.push("pod must not set runAsUser=0".to_string());
        }
        let root: Vec<String> = names_where(&containers, |sc| {
            sc.get("runAsUser").and_then(Value::as_i64) == Some(0)
        });
        if !root.is_empty() {
            details.push(format!(
                "{} must not set runAsUser=0",
                containers_named(&root)
            ));
        }
        if !details.is_empty() {
            out.push(format!("runAsUser=0 ({})", details.join("; ")));
        }
    }

    // seccompProfile: never Unconfined; restricted also wants RuntimeDefault or Localhost
    // set on the pod or on every container.
    let mut details = Vec::new();
    let pod_type = seccomp_type(pod_sc);
    if pod_type == Some("Unconfined") {
        details.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    }
    let unconfined: Vec<String> =
        names_where(&containers, |sc| seccomp_type(sc) == Some("Unconfined"));
    if !unconfined.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            containers_named(&unconfined)
        ));
    }
    if restricted && pod_type.is_none() {
        let unset: Vec<String> = names_where(&containers, |sc| seccomp_type(sc).is_none());
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_named(&unset)
            ));
        }
    }
    if !details.is_empty() {
        out.push(format!("seccompProfile ({})", details.join("; ")));
    }

    let bad_sysctls: Vec<String> = pod_sc
        .get("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(String::from)
        .collect();
    if !bad_sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", bad_sysctls.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn baseline_by_default_and_kube_system_privileged() {
        assert_eq!(namespace_policy("default", None).enforce, Level::Baseline);
        assert_eq!(namespace_policy("team-a", None).enforce, Level::Baseline);
        assert_eq!(
            namespace_policy("kube-system", None).enforce,
            Level::Privileged
        );
        let l = labels(json!({
            "pod-security.kubernetes.io/enforce": "privileged",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "baseline",
        }));
        let p = namespace_policy("x", Some(&l));
        assert_eq!(p.enforce, Level::Privileged);
        assert_eq!(p.warn, Some(Level::Restricted));
        assert_eq!(p.audit, Some(Level::Baseline));
        // A label on kube-system wins over its default.
        let l = labels(json!({"pod-security.kubernetes.io/enforce": "restricted"}));
        assert_eq!(
            namespace_policy("kube-system", Some(&l)).enforce,
            Level::Restricted
        );
        // A bad stored value fails closed.
        let l = labels(json!({"pod-security.kubernetes.io/enforce": "nonsense"}));
        assert_eq!(namespace_policy("x", Some(&l)).enforce, Level::Restricted);
    }

    #[test]
    fn labels_are_validated() {
        let l = labels(json!({
            "pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/enforce-version": "v1.29",
            "pod-security.kubernetes.io/warn-version": "latest",
            "pod-security.kubernetes.io/audit": "baseline",
            "pod-security.kubernetes.io/other": "x",
            "app": "web",
        }));
        let errs = validate_labels(&l);
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs.contains(&"metadata.labels[pod-security.kubernetes.io/enforce]: Unsupported value: \"strict\": supported values: \"privileged\", \"baseline\", \"restricted\""), "{msgs:?}");
        assert!(msgs.contains(&"metadata.labels[pod-security.kubernetes.io/enforce-version]: Unsupported value: \"v1.29\": supported values: \"latest\""), "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("metadata.labels[pod-security.kubernetes.io/other]")),
            "{msgs:?}"
        );
    }

    #[test]
    fn baseline_names_each_field_as_kubernetes_does() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": false,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}],
            "securityContext": {"seccompProfile": {"type": "Unconfined"},
                "sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
            "containers": [
                {"name": "c", "image": "i", "securityContext": {"privileged": true,
                    "capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_ADMIN"]},
                    "procMount": "Unmasked"},
                 "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "d", "image": "i", "securityContext": {"privileged": true,
                    "seccompProfile": {"type": "Unconfined"}}},
            ],
        });
        let v = check(Level::Baseline, &spec);
        assert_eq!(
            v,
            vec![
                "non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "host namespaces (hostNetwork=true, hostPID=true)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"c\" uses hostPort 8080)",
                "privileged (containers \"c\", \"d\" must not set securityContext.privileged=true)",
                "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")",
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\"; container \"d\" must not set securityContext.seccompProfile.type to \"Unconfined\")",
                "forbidden sysctls (kernel.msgmax)",
            ]
        );
        assert_eq!(
            forbidden_message("p", Level::Baseline, &v[1..2]),
            "pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true, hostPID=true)"
        );
        assert!(check(Level::Privileged, &spec).is_empty());
        // Spelling a capability another way does not get it past the check.
        let sneaky = json!({"containers": [{"name": "c", "image": "i",
            "securityContext": {"capabilities": {"add": ["cap_sys_admin", "Net_Admin"]}}}]});
        assert_eq!(
            check(Level::Baseline, &sneaky),
            vec![
                "non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)"
            ]
        );
        // Every kind of container is looked at.
        let init = json!({"initContainers": [{"name": "i", "image": "i", "securityContext": {"privileged": true}}],
            "containers": [{"name": "c", "image": "i"}]});
        assert_eq!(
            check(Level::Baseline, &init),
            vec!["privileged (container \"i\" must not set securityContext.privileged=true)"]
        );
    }

    #[test]
    fn a_plain_pod_meets_baseline_not_restricted() {
        let spec = json!({"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "e", "emptyDir": {}}]});
        assert!(check(Level::Baseline, &spec).is_empty());
        assert_eq!(
            check(Level::Restricted, &spec),
            vec![
                "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)",
                "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"])",
                "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)",
                "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ]
        );
    }

    #[test]
    fn restricted_pod_passes_and_its_breaches_are_named() {
        let good = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        });
        assert!(check(Level::Restricted, &good).is_empty());
        // A pod that says false is named, and so is every container left to follow it.
        let mut pod_false = good.clone();
        pod_false["securityContext"]["runAsNonRoot"] = json!(false);
        assert_eq!(
            check(Level::Restricted, &pod_false),
            vec![
                "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false; pod or container \"c\" must set securityContext.runAsNonRoot=true)"
            ]
        );
        // A non-zero runAsUser stands in for runAsNonRoot.
        let mut by_user = good.clone();
        by_user["securityContext"] = json!({"runAsUser": 1000, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}});
        assert!(check(Level::Restricted, &by_user).is_empty());
        let mut bad = good.clone();
        bad["securityContext"]["runAsUser"] = json!(0);
        bad["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["CHOWN"]);
        bad["volumes"] = json!([{"name": "h", "hostPath": {"path": "/tmp"}}]);
        assert_eq!(
            check(Level::Restricted, &bad),
            vec![
                "unrestricted capabilities (container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add)",
                "hostPath volumes (volume \"h\")",
                "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")",
                "runAsUser=0 (pod must not set runAsUser=0)",
            ]
        );
    }

    /// JSON shaped like pod specs: the fields the checks read, holding anything.
    fn spec_like() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "ALL",
                "SYS_ADMIN",
                "Unconfined",
                "Localhost",
                "Unmasked",
                "hostPath",
                "",
                "c",
            ])
            .prop_map(Value::from),
        ];
        let keys = prop::sample::select(vec![
            "containers",
            "initContainers",
            "ephemeralContainers",
            "securityContext",
            "capabilities",
            "add",
            "drop",
            "privileged",
            "hostNetwork",
            "hostPID",
            "volumes",
            "hostPath",
            "name",
            "ports",
            "hostPort",
            "procMount",
            "seccompProfile",
            "type",
            "runAsNonRoot",
            "runAsUser",
            "sysctls",
            "allowPrivilegeEscalation",
        ]);
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(spec in spec_like()) {
            for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
                let _ = check(level, &spec);
            }
        }
    }
}

//! Defaults: what Kubernetes fills in on create, so stored objects look as they would there.

use serde_json::{Map, Value};

use crate::kinds::ResourceKind;
use crate::object::Object;

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.to_string(), v);
    }
}

fn default_pod_spec(spec: &mut Value) {
    let Value::Object(s) = spec else { return };
    set_default(s, "restartPolicy", "Always".into());
    set_default(s, "dnsPolicy", "ClusterFirst".into());
    set_default(s, "terminationGracePeriodSeconds", 30.into());
    set_default(s, "schedulerName", "default-scheduler".into());
    let host_net = s.get("hostNetwork") == Some(&Value::Bool(true));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = s.get_mut(list) {
            for c in cs {
                let Value::Object(c) = c else { continue };
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                let policy = if latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                set_default(c, "imagePullPolicy", policy.into());
                set_default(c, "terminationMessagePath", "/dev/termination-log".into());
                if let Some(Value::Array(ps)) = c.get_mut("ports") {
                    for p in ps {
                        if let Value::Object(p) = p {
                            set_default(p, "protocol", "TCP".into());
                            if host_net && let Some(port) = p.get("containerPort").cloned() {
                                set_default(p, "hostPort", port);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fills in the defaults Kubernetes fills in, so stored objects look as they would there.
pub fn apply_defaults(kind: &ResourceKind, obj: &mut Object) {
    let map = &mut obj.0;
    match kind.kind {
        "Pod" => {
            if let Some(spec) = map.get_mut("spec") {
                default_pod_spec(spec);
                // Every pod runs as a ServiceAccount: its namespace's `default` unless it
                // names one (Kubernetes' ServiceAccount admission; the deprecated
                // `serviceAccount` follows).
                if let Value::Object(s) = spec {
                    let named = s
                        .get("serviceAccountName")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .or_else(|| {
                            s.get("serviceAccount")
                                .and_then(Value::as_str)
                                .filter(|n| !n.is_empty())
                        })
                        .unwrap_or("default")
                        .to_string();
                    s.insert("serviceAccountName".into(), named.clone().into());
                    s.insert("serviceAccount".into(), named.into());
                }
            }
            if let Value::Object(st) = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                set_default(st, "phase", "Pending".into());
            }
        }
        "ReplicaSet" | "Deployment" => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                set_default(spec, "replicas", 1.into());
                if kind.kind == "Deployment" {
                    set_default(spec, "revisionHistoryLimit", 10.into());
                    set_default(spec, "progressDeadlineSeconds", 600.into());
                    let st = spec
                        .entry("strategy")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(st) = st {
                        set_default(st, "type", "RollingUpdate".into());
                        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                            let ru = st
                                .entry("rollingUpdate")
                                .or_insert_with(|| Value::Object(Map::new()));
                            if let Value::Object(ru) = ru {
                                set_default(ru, "maxSurge", "25%".into());
                                set_default(ru, "maxUnavailable", "25%".into());
                            }
                        }
                    }
                }
                if let Some(Value::Object(t)) = spec.get_mut("template")
                    && let Some(ts) = t.get_mut("spec")
                {
                    default_pod_spec(ts);
                }
            }
        }
        "Service" => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                set_default(spec, "type", "ClusterIP".into());
                set_default(spec, "sessionAffinity", "None".into());
                if let Some(Value::Array(ps)) = spec.get_mut("ports") {
                    for p in ps {
                        if let Value::Object(p) = p {
                            set_default(p, "protocol", "TCP".into());
                            if let Some(port) = p.get("port").cloned() {
                                set_default(p, "targetPort", port);
                            }
                        }
                    }
                }
            }
        }
        "Secret" => {
            set_default(map, "type", "Opaque".into());
            if let Some(Value::Object(sd)) = map.remove("stringData") {
                let data = map
                    .entry("data")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = data {
                    for (k, v) in sd {
                        if let Value::String(s) = v {
                            d.insert(k, Value::String(crate::base64::encode(s.as_bytes())));
                        }
                    }
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            // Users and groups are RBAC's own subjects (ServiceAccounts are core's).
            if let Some(Value::Array(subjects)) = map.get_mut("subjects") {
                for s in subjects {
                    if let Value::Object(s) = s
                        && matches!(
                            s.get("kind").and_then(Value::as_str),
                            Some("User" | "Group")
                        )
                        && s.get("apiGroup")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .is_empty()
                    {
                        s.insert("apiGroup".into(), "rbac.authorization.k8s.io".into());
                    }
                }
            }
        }
        "Namespace" => {
            if let Value::Object(st) = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                set_default(st, "phase", "Active".into());
            }
            // Kubernetes labels every namespace with its own name.
            let name = obj.name().to_string();
            let m = obj.metadata_mut();
            let labels = m
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(l) = labels {
                l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
        _ => {}
    }
}

//! Discovery documents: `/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}`, `/version`.

use berth_api::KINDS;
use serde_json::{Value, json};

/// The Kubernetes version berth's API corresponds to, for clients that check skew.
pub const KUBE_VERSION: (&str, &str) = ("1", "31");

pub fn version(berth_version: &str) -> Value {
    json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0+berth-{berth_version}", KUBE_VERSION.0, KUBE_VERSION.1),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// berth's own group and what it serves.
pub const BERTH_GROUP: &str = "berth.dev";

/// The resource metrics group (what metrics-server serves in Kubernetes; the API server
/// answers it here from the node agents).
pub const METRICS_GROUP: &str = "metrics.k8s.io";
pub const METRICS_VERSION: &str = "v1beta1";

fn group_entry(name: &str) -> Value {
    let v = if name == METRICS_GROUP {
        METRICS_VERSION
    } else {
        "v1"
    };
    json!({
        "name": name,
        "versions": [{"groupVersion": format!("{name}/{v}"), "version": v}],
        "preferredVersion": {"groupVersion": format!("{name}/{v}"), "version": v},
    })
}

pub fn api_group_list() -> Value {
    let mut groups: Vec<Value> = berth_api::kinds::groups()
        .into_iter()
        .map(group_entry)
        .collect();
    if !berth_api::kinds::groups().contains(&BERTH_GROUP) {
        groups.push(group_entry(BERTH_GROUP));
    }
    groups.push(group_entry(METRICS_GROUP));
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(name: &str) -> Option<Value> {
    let known =
        name == BERTH_GROUP || name == METRICS_GROUP || berth_api::kinds::groups().contains(&name);
    known.then(|| {
        let mut g = group_entry(name);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == METRICS_GROUP && version == METRICS_VERSION {
        return Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": format!("{METRICS_GROUP}/{METRICS_VERSION}"),
            "resources": [
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            ],
        }));
    }
    if version != "v1" {
        return None;
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    let kinds: Vec<_> = KINDS.iter().filter(|k| k.group == group).collect();
    let mut resources = Vec::new();
    if group == BERTH_GROUP {
        resources.extend([
            json!({"name": "history", "singularName": "history", "namespaced": false, "kind": "ObjectHistory", "verbs": ["get"]}),
            json!({"name": "revisions", "singularName": "revision", "namespaced": false, "kind": "RevisionList", "verbs": ["list"]}),
            json!({"name": "export", "singularName": "export", "namespaced": false, "kind": "List", "verbs": ["get"]}),
            json!({"name": "audit", "singularName": "audit", "namespaced": false, "kind": "EventList", "verbs": ["get"]}),
        ]);
    } else if kinds.is_empty() {
        return None;
    }
    for k in kinds {
        if k.is_review() {
            resources.push(json!({
                "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["create"],
            }));
            continue;
        }
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": k.short_names,
        }));
        if k.has_scale() {
            resources.push(json!({
                "name": format!("{}/scale", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if k.kind == "Pod" {
            for (sub, kind, verbs) in [
                ("binding", "Binding", json!(["create"])),
                ("log", "Pod", json!(["get"])),
                ("exec", "PodExecOptions", json!(["create", "get"])),
            ] {
                resources.push(json!({
                    "name": format!("pods/{sub}"), "singularName": "", "namespaced": true,
                    "kind": kind, "verbs": verbs,
                }));
            }
        }
        if k.has_status {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

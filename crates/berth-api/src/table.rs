//! What `get` shows of each kind: kubectl's columns and cells, shared by the CLI's tables and
//! the API server's `Table` responses (what kubectl asks for), so both print the same.

use serde_json::Value;

use crate::ResourceKind;
use crate::timefmt;

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

fn n(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_i64().unwrap_or(0)
}

/// The age column: time since `creationTimestamp`.
pub fn age(v: &Value, now_nanos: u64) -> String {
    match timefmt::parse_rfc3339(s(v, &["metadata", "creationTimestamp"])) {
        Ok(t) => timefmt::short_age(now_nanos.saturating_sub(t) / 1_000_000_000),
        Err(_) => "<unknown>".into(),
    }
}

fn join_or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(",")
    }
}

fn selector_string(sel: &Value) -> String {
    let m = sel.get("matchLabels").unwrap_or(sel);
    join_or_none(
        m.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Headers and cells for one kind, as `kubectl get` shows them.
pub fn columns(kind: &ResourceKind, wide: bool) -> Vec<&'static str> {
    let mut c: Vec<&str> = match kind.kind {
        "Pod" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "Deployment" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "ReplicaSet" => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "Service" => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "Endpoints" => vec!["NAME", "ENDPOINTS", "AGE"],
        "EndpointSlice" => vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "ConfigMap" => vec!["NAME", "DATA", "AGE"],
        "Secret" => vec!["NAME", "TYPE", "DATA", "AGE"],
        "Namespace" => vec!["NAME", "STATUS", "AGE"],
        "Node" => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "Event" => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "Lease" => vec!["NAME", "HOLDER", "AGE"],
        "ConfigTemplate" => vec!["NAME", "NODE", "DESTINATION", "APPLIED", "REVISION", "AGE"],
        "Ingress" => vec!["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        match kind.kind {
            "Pod" => c.extend(["IP", "NODE"]),
            "Deployment" | "ReplicaSet" => c.extend(["CONTAINERS", "IMAGES", "SELECTOR"]),
            "Service" => c.push("SELECTOR"),
            "Node" => c.extend(["INTERNAL-IP", "OS-IMAGE"]),
            _ => {}
        }
    }
    c
}

pub fn row(kind: &ResourceKind, o: &Value, wide: bool, now: u64) -> Vec<String> {
    let name = s(o, &["metadata", "name"]).to_string();
    let age = age(o, now);
    let containers = |spec: &Value| -> (String, String) {
        let cs = spec["containers"].as_array().cloned().unwrap_or_default();
        (
            join_or_none(cs.iter().map(|c| s(c, &["name"]).to_string()).collect()),
            join_or_none(cs.iter().map(|c| s(c, &["image"]).to_string()).collect()),
        )
    };
    let mut r = match kind.kind {
        "Pod" => {
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum();
            let mut phase = s(o, &["status", "phase"]).to_string();
            if let Some(reason) = statuses
                .iter()
                .find_map(|c| c["state"]["waiting"]["reason"].as_str())
            {
                phase = reason.to_string();
            }
            if o["metadata"]["deletionTimestamp"].is_string() {
                phase = "Terminating".into();
            }
            if phase.is_empty() {
                phase = "Pending".into();
            }
            vec![
                name,
                format!("{ready}/{total}"),
                phase,
                restarts.to_string(),
                age,
            ]
        }
        "Deployment" => vec![
            name,
            format!(
                "{}/{}",
                n(o, &["status", "readyReplicas"]),
                n(o, &["spec", "replicas"])
            ),
            n(o, &["status", "updatedReplicas"]).to_string(),
            n(o, &["status", "availableReplicas"]).to_string(),
            age,
        ],
        "ReplicaSet" => vec![
            name,
            n(o, &["spec", "replicas"]).to_string(),
            n(o, &["status", "replicas"]).to_string(),
            n(o, &["status", "readyReplicas"]).to_string(),
            age,
        ],
        "Service" => {
            let ports = o["spec"]["ports"].as_array().cloned().unwrap_or_default();
            let ports = join_or_none(
                ports
                    .iter()
                    .map(|p| {
                        let np = p["nodePort"]
                            .as_i64()
                            .map(|n| format!(":{n}"))
                            .unwrap_or_default();
                        format!(
                            "{}{np}/{}",
                            p["port"],
                            p["protocol"].as_str().unwrap_or("TCP")
                        )
                    })
                    .collect(),
            );
            let ip = s(o, &["spec", "clusterIP"]);
            vec![
                name,
                s(o, &["spec", "type"]).to_string(),
                if ip.is_empty() {
                    "<pending>".into()
                } else {
                    ip.to_string()
                },
                "<none>".into(),
                ports,
                age,
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in o["subsets"].as_array().cloned().unwrap_or_default() {
                for a in sub["addresses"].as_array().cloned().unwrap_or_default() {
                    for p in sub["ports"].as_array().cloned().unwrap_or_default() {
                        eps.push(format!("{}:{}", s(&a, &["ip"]), p["port"]));
                    }
                }
            }
            vec![name, join_or_none(eps), age]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].to_string())
                .collect();
            let eps: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            vec![
                name,
                s(o, &["addressType"]).to_string(),
                join_or_none(ports),
                join_or_none(eps),
                age,
            ]
        }
        "Ingress" => {
            let hosts: Vec<String> = o["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["host"].as_str().unwrap_or("*").to_string())
                .collect();
            let addrs: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    a["ip"]
                        .as_str()
                        .or(a["hostname"].as_str())
                        .map(String::from)
                })
                .collect();
            vec![
                name,
                o["spec"]["ingressClassName"]
                    .as_str()
                    .unwrap_or("<none>")
                    .to_string(),
                if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                },
                addrs.join(","),
                "80".into(),
                age,
            ]
        }
        "ConfigTemplate" => {
            let applied = crate::object::condition(&o["status"], "Applied")
                .unwrap_or("Unknown")
                .to_string();
            vec![
                name,
                s(o, &["spec", "nodeName"]).to_string(),
                s(o, &["spec", "destination"]).to_string(),
                applied,
                match &o["status"]["renderedRevision"] {
                    Value::Null => "<none>".into(),
                    v => v.as_str().map_or_else(|| v.to_string(), String::from),
                },
                age,
            ]
        }
        "ConfigMap" => {
            let count = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, count.to_string(), age]
        }
        "Secret" => vec![
            name,
            s(o, &["type"]).to_string(),
            o["data"].as_object().map_or(0, |m| m.len()).to_string(),
            age,
        ],
        "Namespace" => vec![name, s(o, &["status", "phase"]).to_string(), age],
        "Node" => {
            let ready = crate::object::condition(&o["status"], "Ready").map(|c| c == "True");
            let mut status = match ready {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".into(),
                None => "Unknown".into(),
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles = o["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                status,
                join_or_none(roles),
                age,
                s(o, &["status", "nodeInfo", "kubeletVersion"]).to_string(),
            ]
        }
        "Event" => {
            let obj = format!(
                "{}/{}",
                s(o, &["involvedObject", "kind"]).to_ascii_lowercase(),
                s(o, &["involvedObject", "name"])
            );
            vec![
                age,
                s(o, &["type"]).to_string(),
                s(o, &["reason"]).to_string(),
                obj,
                s(o, &["message"]).to_string(),
            ]
        }
        "Lease" => vec![name, s(o, &["spec", "holderIdentity"]).to_string(), age],
        _ => vec![name, age],
    };
    if wide {
        match kind.kind {
            "Pod" => {
                let ip = s(o, &["status", "podIP"]);
                let node = s(o, &["spec", "nodeName"]);
                r.push(if ip.is_empty() {
                    "<none>".into()
                } else {
                    ip.into()
                });
                r.push(if node.is_empty() {
                    "<none>".into()
                } else {
                    node.into()
                });
            }
            "Deployment" | "ReplicaSet" => {
                let (c, i) = containers(&o["spec"]["template"]["spec"]);
                r.extend([c, i, selector_string(&o["spec"]["selector"])]);
            }
            "Service" => r.push(selector_string(&o["spec"]["selector"])),
            "Node" => {
                let ip = crate::object::node_internal_ip(o)
                    .unwrap_or("<none>")
                    .to_string();
                r.extend([ip, s(o, &["status", "nodeInfo", "osImage"]).to_string()]);
            }
            _ => {}
        }
    }
    r
}

/// Every column of a kind with its priority: 0 always shown, 1 only with `-o wide`.
pub fn all_columns(kind: &ResourceKind) -> Vec<(&'static str, u8)> {
    let narrow = columns(kind, false);
    columns(kind, true)
        .into_iter()
        .map(|c| (c, u8::from(!narrow.contains(&c))))
        .collect()
}

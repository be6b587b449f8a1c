//! Data-driven placement tests: `fixtures/cases.yaml`, with nodes and pods built as API
//! objects so the parsing from objects is tested too.

use serde_json::{Value, json};

use super::*;

fn node_object(n: &Value) -> Object {
    let ready = if n.get("notReady").and_then(Value::as_bool) == Some(true) {
        "False"
    } else {
        "True"
    };
    Object::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": n["name"], "labels": n.get("labels").cloned().unwrap_or(json!({}))},
        "spec": {"taints": n.get("taints").cloned().unwrap_or(json!([])),
                 "unschedulable": n.get("unschedulable").cloned().unwrap_or(json!(false))},
        "status": {
            "allocatable": {
                "cpu": n.get("cpu").cloned().unwrap_or(json!("4")),
                "memory": n.get("memory").cloned().unwrap_or(json!("8Gi")),
                "pods": n.get("pods").cloned().unwrap_or(json!("110")),
            },
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }))
    .unwrap()
}

fn pod_object(p: &Value, name: &str) -> Object {
    let mut requests = serde_json::Map::new();
    for k in ["cpu", "memory"] {
        if let Some(v) = p.get(k) {
            requests.insert(k.into(), v.clone());
        }
    }
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(o) = p.get("owner") {
        meta["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": o}]);
    }
    if let Some(s) = p.get("strategy") {
        meta["annotations"] = json!({Strategy::ANNOTATION: s});
    }
    let mut spec =
        json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": requests}}]});
    if let Some(ns) = p.get("nodeSelector") {
        spec["nodeSelector"] = ns.clone();
    }
    if let Some(t) = p.get("tolerations") {
        spec["tolerations"] = t.clone();
    }
    if let Some(terms) = p.get("affinity").and_then(Value::as_array) {
        let terms: Vec<Value> = terms
            .iter()
            .map(|t| json!({"matchExpressions": t}))
            .collect();
        spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
    }
    Object::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}))
        .unwrap()
}

#[test]
fn placement_cases() {
    let cases: Vec<Value> = serde_saphyr::from_str(include_str!("../fixtures/cases.yaml")).unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut snap = Snapshot {
            nodes: case["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| NodeInfo::from_object(&node_object(n)))
                .collect(),
            default_strategy: Strategy::Spread,
        };
        for (i, p) in case
            .get("placed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let info = PodInfo::from_object(&pod_object(p, &format!("placed-{i}")));
            let node = p["node"].as_str().unwrap();
            snap.nodes
                .iter_mut()
                .find(|n| n.name == node)
                .unwrap()
                .place_pod(&info);
        }
        let pod = PodInfo::from_object(&pod_object(&case["pod"], "new"));
        if let Some(seq) = case.get("sequence").and_then(Value::as_array) {
            let mut last: Option<String> = None;
            let got: Vec<String> = seq
                .iter()
                .map(|_| {
                    let n = place(&snap, &pod, last.as_deref(), 0)
                        .unwrap_or_else(|e| panic!("{name}: {}", e.message));
                    snap.nodes
                        .iter_mut()
                        .find(|x| x.name == n)
                        .unwrap()
                        .place_pod(&pod);
                    last = Some(n.clone());
                    n
                })
                .collect();
            let want: Vec<String> = seq
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, want, "{name}");
        } else if let Some(want) = case.get("expect").and_then(Value::as_str) {
            assert_eq!(
                place(&snap, &pod, None, 0).map_err(|e| e.message),
                Ok(want.to_string()),
                "{name}"
            );
        } else {
            let want = case["unschedulable"].as_str().unwrap();
            assert_eq!(
                place(&snap, &pod, None, 0).map_err(|e| e.message),
                Err(want.to_string()),
                "{name}"
            );
        }
    }
}

#[test]
fn random_spreads_over_every_fitting_node() {
    let snap = Snapshot {
        nodes: ["a", "b", "c", "d"]
            .iter()
            .map(|n| {
                NodeInfo::from_object(&node_object(
                    &json!({"name": n, "unschedulable": *n == "d"}),
                ))
            })
            .collect(),
        default_strategy: Strategy::Random,
    };
    let pod = PodInfo::from_object(&pod_object(&json!({}), "p"));
    let mut seen = std::collections::BTreeSet::new();
    for r in 0..12u64 {
        seen.insert(
            place(
                &snap,
                &pod,
                None,
                r.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7,
            )
            .unwrap(),
        );
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["a", "b", "c"],
        "the cordoned node is never chosen"
    );
}

#[test]
fn requests_count_init_containers_as_kubernetes_does() {
    let spec = json!({
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
        ],
    });
    let r = pod_requests(&spec);
    assert_eq!((r.cpu_millis, r.memory, r.pods), (2000, 256 << 20, 1));
}

#[test]
fn large_clusters_score_a_sample_as_kubernetes_does() {
    assert_eq!(nodes_to_find(3), 3);
    assert_eq!(nodes_to_find(100), 100);
    assert_eq!(nodes_to_find(1000), 420); // 50 - 8 = 42%
    assert_eq!(nodes_to_find(5000), 500); // 50 - 40 = 10%
    assert_eq!(nodes_to_find(10_000), 500); // at least 5%
    let snap = Snapshot {
        nodes: (0..1000)
            .map(|i| NodeInfo::from_object(&node_object(&json!({"name": format!("n{i:04}")}))))
            .collect(),
        default_strategy: Strategy::Spread,
    };
    let pod = PodInfo::from_object(&pod_object(&json!({"cpu": "100m"}), "p"));
    let (r, examined) = place_from(&snap, &pod, None, 0, 990);
    assert_eq!(examined, 420);
    assert!(r.is_ok());
    // Binpack looks at every node, so it really fills the fullest.
    let pod = PodInfo::from_object(&pod_object(
        &json!({"cpu": "100m", "strategy": "binpack"}),
        "p",
    ));
    assert_eq!(place_from(&snap, &pod, None, 0, 990).1, 1000);
}

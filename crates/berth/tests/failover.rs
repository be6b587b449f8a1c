//! Several nodes on this machine (the harness in tests/common/harness.rs): each a network
//! namespace on an underlay bridge running `berth agent`, the server in another. A node's
//! death or its partition from the others gets its pods replaced on the rest within 10 s;
//! when it comes back, its stale pods are stopped and the Deployment never has more Ready
//! pods than it asked for.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::harness::Harness;
use common::{berth, eventually, get_json, stderr, stdout};

/// Ready pods of the app: (name, node).
fn ready(kc: &Path) -> Vec<(String, String)> {
    get_json(kc, &["pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| common::is_ready(p))
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {name: c, image: host, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]}
"#;

/// A two-node cluster running APP, one replica on each node: (harness, kubeconfig).
fn two_nodes_with_the_app() -> (Harness, std::path::PathBuf) {
    let h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();
    let manifest = h.dir.path().join("app.yaml");
    std::fs::write(&manifest, APP).unwrap();
    let o = berth(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Spread: one replica per node.
    let placed = eventually(60, "2 ready replicas", || {
        let r = ready(&kc);
        (r.len() == 2).then_some(r)
    });
    let mut nodes: Vec<&str> = placed.iter().map(|(_, n)| n.as_str()).collect();
    nodes.sort();
    assert_eq!(
        nodes,
        vec!["node-a", "node-b"],
        "spread puts one replica on each node"
    );
    (h, kc)
}

/// Waits until node-a's replica runs again on node-b; returns how long that took.
fn replaced_on_b(kc: &Path, since: Instant) -> Duration {
    eventually(30, "a replacement on node-b", || {
        let r = ready(kc);
        (r.len() == 2 && r.iter().all(|(_, n)| n == "node-b")).then_some(())
    });
    since.elapsed()
}

/// After node-a is back: waits until its stale pods are gone (from the API and the machine)
/// and it is Ready again, watching that never more than 2 pods are Ready meanwhile.
fn stale_pods_stopped(h: &Harness, kc: &Path) {
    let mut most = 0;
    eventually(60, "node-a's stale pods to be gone", || {
        let r = ready(kc);
        most = most.max(r.len());
        let all = get_json(kc, &["pods", "-l", "app=web"])["items"]
            .as_array()
            .unwrap()
            .len();
        let on_machine = h.nodes[0].runtime().pod_ids().len();
        let node_ready = h.ready_nodes().contains(&"node-a".to_string());
        (all == 2 && on_machine == 0 && node_ready).then_some(())
    });
    assert!(most <= 2, "{most} pods were Ready at once after the heal");
}

#[test]
fn a_dead_nodes_pods_run_again_elsewhere_and_come_back_stopped() {
    let (mut h, kc) = two_nodes_with_the_app();

    // node-a dies.
    let died = Instant::now();
    h.kill("node-a");
    let took = replaced_on_b(&kc, died);
    println!("node death -> replacement Ready: {took:?}");
    assert!(took < Duration::from_secs(10), "replaced after {took:?}");
    let node_a = get_json(&kc, &["node", "node-a"]);
    let ready_cond = node_a["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready_cond["status"], "Unknown", "{node_a}");
    assert!(
        node_a["spec"]["taints"]
            .to_string()
            .contains("node.kubernetes.io/unreachable")
    );

    // It comes back: its stale pods are stopped and deleted; never more than 2 Ready.
    h.restart("node-a");
    stale_pods_stopped(&h, &kc);
    // Draining node-b moves its pods to node-a; cordoned, it gets no new ones.
    let o = berth(&kc, &["drain", "node-b"]);
    assert!(
        stdout(&o).contains("node/node-b drained"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !{
        let r = ready(&kc);
        r.len() == 2 && r.iter().all(|(_, n)| n == "node-a")
    } {
        assert!(
            Instant::now() < deadline,
            "both replicas never ran on node-a: {}\n{}",
            stdout(&berth(&kc, &["get", "pods", "-o", "wide"])),
            stdout(&berth(&kc, &["get", "nodes", "-o", "yaml"]))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get_json(&kc, &["node", "node-b"])["spec"]["unschedulable"],
        true
    );
    let o = berth(&kc, &["uncordon", "node-b"]);
    assert!(
        stdout(&o).contains("node/node-b uncordoned"),
        "{}",
        stderr(&o)
    );
    let o = berth(&kc, &["delete", "deploy", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(30, "the pods to go", || {
        get_json(&kc, &["pods"])["items"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
}

#[test]
fn a_partitioned_nodes_pods_run_elsewhere_and_stop_when_it_heals() {
    let (mut h, kc) = two_nodes_with_the_app();
    let cut = Instant::now();
    h.partition("node-a");
    let took = replaced_on_b(&kc, cut);
    println!("partition -> replacement Ready: {took:?}");
    assert!(took < Duration::from_secs(10), "replaced after {took:?}");
    // Cut off, node-a still runs its pod: the control plane could not reach it.
    assert_eq!(h.nodes[0].runtime().pod_ids().len(), 1);
    assert!(!h.ready_nodes().contains(&"node-a".to_string()));
    h.heal("node-a");
    stale_pods_stopped(&h, &kc);
}

fn deployment(name: &str, strategy: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{berth.dev/scheduling-strategy: {strategy}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: host
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"#
    )
}

/// The nodes the app's pods were placed on, once all 3 are bound.
fn placement(kc: &Path, app: &str) -> Vec<String> {
    eventually(60, &format!("{app}'s 3 pods to be placed"), || {
        let pods = get_json(kc, &["pods", "-l", &format!("app={app}")]);
        let mut nodes: Vec<String> = pods["items"]
            .as_array()?
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from))
            .collect();
        nodes.sort();
        (nodes.len() == 3).then_some(nodes)
    })
}

#[test]
fn strategies_place_as_named_on_three_nodes() {
    let h = Harness::start(3, &[]);
    let kc = h.kubeconfig.clone();
    let dir = h.dir.path();
    let apply = |name: &str, strategy: &str| {
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, deployment(name, strategy)).unwrap();
        let o = berth(&kc, &["apply", "-f", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    // Spread: one replica per node.
    apply("spread", "spread");
    assert_eq!(placement(&kc, "spread"), vec!["node-a", "node-b", "node-c"]);
    // Binpack: all on one node (the fullest that fits).
    apply("packed", "binpack");
    let packed = placement(&kc, "packed");
    assert!(packed.iter().all(|n| *n == packed[0]), "{packed:?}");
    // Round-robin: the next node each time, so three in a row land on three nodes.
    apply("rr", "round-robin");
    assert_eq!(placement(&kc, "rr"), vec!["node-a", "node-b", "node-c"]);
    // Random: placed somewhere that fits (which one is the random number's business).
    apply("rand", "random");
    assert_eq!(placement(&kc, "rand").len(), 3);
    for app in ["spread", "packed", "rr", "rand"] {
        let o = berth(&kc, &["delete", "deploy", app]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    eventually(60, "the pods to go", || {
        get_json(&kc, &["pods"])["items"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
}

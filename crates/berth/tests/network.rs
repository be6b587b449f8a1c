//! The pod network across nodes, on the multi-node harness (as root): the server gives each
//! node a pod range from its cluster range; every node routes the others' ranges to them; a
//! pod on one node reaches a pod on another by its IP; a node's removal removes its route
//! everywhere.

mod common;

use std::process::Command;

use common::harness::Harness;
use common::{berth, eventually, get_json, stderr, stdout};

fn server_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: host
    command: ["/usr/bin/python3", "-m", "http.server", "8080"]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#
    )
}

/// `ip -n NS route show`.
fn routes(ns: &str) -> String {
    let o = Command::new("ip")
        .args(["-n", ns, "route", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pods_on_different_nodes_reach_each_other_and_a_removed_node_takes_its_routes() {
    let mut h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();

    // Each node got a /24 of the cluster range from the server.
    let cidrs: Vec<String> = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            eventually(10, "a pod range", || {
                get_json(&kc, &["node", n])["spec"]["podCIDR"]
                    .as_str()
                    .map(String::from)
            })
        })
        .collect();
    assert_ne!(cidrs[0], cidrs[1]);
    for c in &cidrs {
        assert!(c.starts_with("10.42.") && c.ends_with(".0/24"), "{c}");
    }

    let file = h.dir.path().join("pods.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---{}",
            server_pod("web-a", "node-a"),
            server_pod("web-b", "node-b")
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ip_of = |pod: &str| {
        eventually(60, &format!("{pod} ready"), || {
            let p = get_json(&kc, &["pod", pod]);
            (common::is_ready(&p)).then(|| p["status"]["podIP"].as_str().map(String::from))?
        })
    };
    let (ip_a, ip_b) = (ip_of("web-a"), ip_of("web-b"));
    assert!(
        cidrs[0].starts_with(&ip_a[..ip_a.rfind('.').unwrap()]),
        "{ip_a} in {}",
        cidrs[0]
    );

    // From a pod on node-a to the pod on node-b, and back, by pod IP.
    let fetch = |from: &str, ip: &str| {
        let code = format!(
            "import urllib.request; print(urllib.request.urlopen('http://{ip}:8080/', timeout=5).status)"
        );
        berth(&kc, &["exec", from, "--", "/usr/bin/python3", "-c", &code])
    };
    let o = fetch("web-a", &ip_b);
    assert_eq!(stdout(&o).trim(), "200", "{}", stderr(&o));
    let o = fetch("web-b", &ip_a);
    assert_eq!(stdout(&o).trim(), "200", "{}", stderr(&o));

    // node-a routes node-b's range to node-b's address on the underlay.
    let ns_a = h.netns("node-a");
    let ip_node_b = h.nodes[1].ip.clone();
    let via = format!("{} via {ip_node_b}", cidrs[1]);
    assert!(routes(&ns_a).contains(&via), "{}", routes(&ns_a));

    // node-b goes away for good: its route goes from node-a.
    h.kill("node-b");
    let o = berth(&kc, &["delete", "node", "node-b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "node-a to drop the route to node-b", || {
        (!routes(&ns_a).contains(&cidrs[1])).then_some(())
    });
}

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
metadata: {{name: {name}, labels: {{app: web}}}}
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

/// `dig ARGS` inside a pod (the host image has this machine's dig); its output.
fn dig(kc: &std::path::Path, pod: &str, args: &[&str]) -> String {
    let mut a = vec!["exec", pod, "--", "/usr/bin/dig", "+time=2", "+tries=1"];
    a.extend_from_slice(args);
    let o = berth(kc, &a);
    stdout(&o)
}

#[test]
fn cluster_dns_answers_services_and_pods_on_every_node() {
    let h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();
    let file = h.dir.path().join("app.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---{}---{}",
            server_pod("web-a", "node-a"),
            server_pod("web-b", "node-b"),
            r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-h}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"#
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut ips = Vec::new();
    for pod in ["web-a", "web-b"] {
        ips.push(eventually(60, &format!("{pod} ready"), || {
            let p = get_json(&kc, &["pod", pod]);
            (common::is_ready(&p)).then(|| p["status"]["podIP"].as_str().map(String::from))?
        }));
    }
    ips.sort();
    let vip = get_json(&kc, &["svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();

    for pod in ["web-a", "web-b"] {
        // The Service's name, fully qualified and through the search list, UDP and TCP.
        let short = |args: &[&str]| {
            let mut a = vec!["+short"];
            a.extend_from_slice(args);
            dig(&kc, pod, &a)
        };
        assert_eq!(
            short(&["web.default.svc.cluster.local"]).trim(),
            vip,
            "from {pod}"
        );
        assert_eq!(short(&["+search", "web"]).trim(), vip, "from {pod}");
        assert_eq!(
            short(&["+tcp", "web.default.svc.cluster.local"]).trim(),
            vip
        );
        // Headless: the ready pods, once the Endpoints list them.
        eventually(20, "both pods behind the headless name", || {
            let mut got: Vec<String> = short(&["web-h.default.svc.cluster.local"])
                .lines()
                .map(String::from)
                .collect();
            got.sort();
            (got == ips).then_some(())
        });
        let srv = short(&["SRV", "_http._tcp.web.default.svc.cluster.local"]);
        assert_eq!(srv.trim(), "0 100 80 web.default.svc.cluster.local.");
        // Pods by address; unknown names; names outside the cluster with forwarding off.
        let dashed = ips[0].replace('.', "-");
        assert_eq!(
            short(&[&format!("{dashed}.default.pod.cluster.local")]).trim(),
            ips[0]
        );
        assert!(dig(&kc, pod, &["nope.default.svc.cluster.local"]).contains("status: NXDOMAIN"));
        assert!(dig(&kc, pod, &["example.com"]).contains("status: REFUSED"));
    }
    // The pods' resolv.conf: this node's DNS, the Kubernetes search list.
    let o = berth(
        &kc,
        &["exec", "web-a", "--", "/bin/cat", "/etc/resolv.conf"],
    );
    let conf = stdout(&o);
    assert!(
        conf.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{conf}"
    );
    assert!(conf.contains("options ndots:5"), "{conf}");

    // A Service that goes is gone from DNS.
    let o = berth(&kc, &["delete", "svc", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(10, "the name to go", || {
        dig(&kc, "web-b", &["web.default.svc.cluster.local"])
            .contains("status: NXDOMAIN")
            .then_some(())
    });
}

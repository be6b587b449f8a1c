//! The pod network across nodes, on the multi-node harness (as root): the server gives each
//! node a pod range from its cluster range; every node routes the others' ranges to them; a
//! pod on one node reaches a pod on another by its IP; a node's removal removes its route
//! everywhere.

mod common;

use std::process::Command;

use common::harness::Harness;
use common::{berth, curl_host, eventually, get_json, stderr, stdout};

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

/// Waits until the pod is Ready; its IP.
fn ready_ip(kc: &std::path::Path, pod: &str) -> String {
    eventually(60, &format!("{pod} ready"), || {
        let p = get_json(kc, &["pod", pod]);
        (common::is_ready(&p)).then(|| p["status"]["podIP"].as_str().map(String::from))?
    })
}

/// An HTTP server pod on node-a (web-a) and one on node-b (web-b); their IPs once Ready.
fn two_servers(h: &Harness) -> (String, String) {
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
    let o = berth(&h.kubeconfig, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    (
        ready_ip(&h.kubeconfig, "web-a"),
        ready_ip(&h.kubeconfig, "web-b"),
    )
}

/// web-a fetches from web-b by pod IP, and back.
fn fetch_both_ways(kc: &std::path::Path, ip_a: &str, ip_b: &str) {
    for (from, ip) in [("web-a", ip_b), ("web-b", ip_a)] {
        let code = format!(
            "import urllib.request; print(urllib.request.urlopen('http://{ip}:8080/', timeout=5).status)"
        );
        let o = berth(kc, &["exec", from, "--", "/usr/bin/python3", "-c", &code]);
        assert_eq!(stdout(&o).trim(), "200", "from {from}: {}", stderr(&o));
    }
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

    let (ip_a, ip_b) = two_servers(&h);
    assert!(
        cidrs[0].starts_with(&ip_a[..ip_a.rfind('.').unwrap()]),
        "{ip_a} in {}",
        cidrs[0]
    );

    // From a pod on node-a to the pod on node-b, and back, by pod IP.
    fetch_both_ways(&kc, &ip_a, &ip_b);

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
    let mut ips = vec![ready_ip(&kc, "web-a"), ready_ip(&kc, "web-b")];
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

/// A pod that answers HTTP on 8080 with its name and the peer it saw, and echoes UDP on 9000
/// with its name in front; ready while /tmp/ready exists.
fn echo_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: echo}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: host
    command: ["/usr/bin/python3", "-c", "{ECHO}"]
    readinessProbe:
      exec: {{command: ["/usr/bin/test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
"#,
        ECHO = ECHO_SERVER.replace('\n', "\\n").replace('"', "\\\"")
    )
}

const ECHO_SERVER: &str = r#"import http.server, os, socket, threading
open('/tmp/ready', 'w').close()
name = os.environ['HOSTNAME']
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('', 9000))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(name.encode() + b' ' + d, a)
threading.Thread(target=udp, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        if self.path.startswith('/slow'):
            import time
            open('/tmp/slow', 'w').close()
            time.sleep(5)
        h = self.headers
        b = (name + ' ' + self.client_address[0] + ' xff=' + str(h.get('X-Forwarded-For')) + ' fwd=' + str(h.get('Forwarded')) + ' host=' + str(h.get('Host')) + ' path=' + self.path).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()
"#;

/// Applies echo-a (on node-a), echo-b (on node-b) and `more` (YAML documents).
fn apply_echo(h: &Harness, more: &str) {
    let file = h.dir.path().join("echo.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            echo_pod("echo-a", "node-a") + "---" + &echo_pod("echo-b", "node-b"),
            more.trim_start_matches('\n')
        ),
    )
    .unwrap();
    let o = berth(&h.kubeconfig, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `curl` N times (one connection each) from inside a pod; each answer's first word.
fn curl_from_pod(kc: &std::path::Path, pod: &str, url: &str, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do /usr/bin/curl -s --max-time 3 {url} || echo FAIL$?; echo; done"
    );
    let o = berth(kc, &["exec", pod, "--", "/bin/sh", "-c", &script]);
    stdout(&o)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// `curl` from the host inside a network namespace; the answer or `FAILn`.
fn curl_in_netns(ns: &str, url: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "3", url])
        .output()
        .unwrap();
    if o.status.success() {
        String::from_utf8_lossy(&o.stdout).into_owned()
    } else {
        format!("FAIL{}", o.status.code().unwrap_or(-1))
    }
}

#[test]
fn every_node_proxies_cluster_ips_and_node_ports_to_ready_endpoints() {
    let h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();
    apply_echo(
        &h,
        r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: udp, port: 90, targetPort: 9000, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: echo}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    let pod_ips = [ready_ip(&kc, "echo-a"), ready_ip(&kc, "echo-b")];
    let svc = get_json(&kc, &["svc", "echo"]);
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let sticky_vip = get_json(&kc, &["svc", "sticky"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();

    // From a pod, the cluster IP reaches both endpoints in turn; the endpoint sees the
    // caller's pod address.
    let url = format!("http://{vip}/");
    eventually(20, "both endpoints behind the cluster IP", || {
        let got = curl_from_pod(&kc, "echo-a", &url, 6);
        (got.contains(&"echo-a".to_string()) && got.contains(&"echo-b".to_string())).then_some(())
    });
    let o = berth(&kc, &["exec", "echo-a", "--", "/usr/bin/curl", "-s", &url]);
    let seen = stdout(&o);
    if seen.starts_with("echo-a") {
        // Through this node's proxy to a pod on this node: the peer is the gateway.
        assert!(!seen.contains(&pod_ips[1]), "{seen}");
    } else {
        assert!(seen.starts_with("echo-b"), "{seen}");
    }
    // The address is on each node's loopback, labelled as its agent's.
    for n in ["node-a", "node-b"] {
        let o = Command::new("ip")
            .args(["-n", &h.netns(n), "-4", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        let addrs = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(addrs.contains(&format!("{vip}/32")), "{n}: {addrs}");
    }
    // From each node itself, and through each node's node port from another machine on the
    // underlay.
    for (i, n) in ["node-a", "node-b"].iter().enumerate() {
        let got = curl_in_netns(&h.netns(n), &url);
        assert!(got.starts_with("echo-"), "{n}: {got}");
        let np = format!("http://{}:{node_port}/", h.nodes[i].ip);
        let got = curl_in_netns(&h.server_netns(), &np);
        assert!(got.starts_with("echo-"), "node port of {n}: {got}");
    }
    // UDP: a datagram to the cluster IP comes back from an endpoint.
    let udp = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(b'ping', ('{vip}', 90)); print(s.recv(100).decode())"
    );
    let o = berth(
        &kc,
        &["exec", "echo-b", "--", "/usr/bin/python3", "-c", &udp],
    );
    let got = stdout(&o);
    assert!(
        got.starts_with("echo-") && got.trim_end().ends_with("ping"),
        "{got} {}",
        stderr(&o)
    );
    // Session affinity: one client, one endpoint.
    let got = curl_from_pod(&kc, "echo-b", &format!("http://{sticky_vip}/"), 6);
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.iter().all(|g| *g == got[0]), "{got:?}");

    // An endpoint that stops being ready gets no more connections.
    let o = berth(&kc, &["exec", "echo-b", "--", "/bin/rm", "/tmp/ready"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "only echo-a behind the cluster IP", || {
        let got = curl_from_pod(&kc, "echo-a", &url, 4);
        got.iter().all(|g| g == "echo-a").then_some(())
    });
    // None ready: refused at once, not left hanging.
    let o = berth(&kc, &["exec", "echo-a", "--", "/bin/rm", "/tmp/ready"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "connections refused", || {
        let got = curl_from_pod(&kc, "echo-b", &url, 1);
        (got == ["FAIL56"] || got == ["FAIL7"] || got == ["FAIL52"]).then_some(())
    });

    // A Service that goes takes its address off every node.
    let o = berth(&kc, &["delete", "svc", "echo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "the cluster IP to go", || {
        let o = Command::new("ip")
            .args(["-n", &h.netns("node-a"), "-4", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        (!String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/32"))).then_some(())
    });
}

#[test]
fn the_ingress_routes_by_host_and_path_and_tells_backends_who_called() {
    let h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();
    let file = h.dir.path().join("ing.yaml");
    let vhost_pod = echo_pod("legacy", "node-b")
        .replace("app: echo", "app: legacy")
        .replace(
        "    image: host\n",
        "    image: host\n    env: [{name: VIRTUAL_HOST, value: legacy.example.test}, {name: VIRTUAL_PORT, value: \"8080\"}]\n",
    );
    std::fs::write(
        &file,
        format!(
            "{}---{}---{}---{}",
            echo_pod("echo-a", "node-a"),
            echo_pod("echo-b", "node-b"),
            vhost_pod,
            r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - host: shop.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {name: http}}}}
      - {path: /down, pathType: Prefix, backend: {service: {name: nobody, port: {number: 80}}}}
"#
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for p in ["echo-a", "echo-b", "legacy"] {
        ready_ip(&kc, p);
    }
    let client_ns = h.server_netns();
    let client_ip = h
        .url
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    for node in &h.nodes {
        let url = format!("http://{}/", node.ip);
        // An Ingress host, through either node, to both endpoints; the backend sees the
        // client's address and the host asked for.
        let seen = eventually(20, "both endpoints behind the ingress", || {
            let mut names = std::collections::BTreeSet::new();
            let mut last = String::new();
            for _ in 0..6 {
                let (code, body) = curl_host(&client_ns, &url, "shop.example.test");
                if code != 200 {
                    return None;
                }
                names.insert(body.split(' ').next().unwrap_or("").to_string());
                last = body;
            }
            (names.len() == 2).then_some(last)
        });
        assert!(seen.contains(&format!("xff={client_ip} ")), "{seen}");
        assert!(
            seen.contains(&format!(
                "fwd=for={client_ip};host=\"shop.example.test\";proto=http"
            )),
            "{seen}"
        );
        assert!(seen.contains("host=shop.example.test"), "{seen}");
        // A pod's VIRTUAL_HOST, on its VIRTUAL_PORT.
        let (code, body) = curl_host(&client_ns, &format!("{url}x?y=1"), "legacy.example.test");
        assert_eq!(code, 200, "{body}");
        assert!(
            body.starts_with("legacy ") && body.ends_with("path=/x?y=1"),
            "{body}"
        );
        // Unknown host: 404; a route with nobody ready: 503.
        assert_eq!(curl_host(&client_ns, &url, "nope.example.test").0, 404);
        assert_eq!(
            curl_host(&client_ns, &format!("{url}down/x"), "shop.example.test").0,
            503
        );
    }

    // A change applies live: a slow request in flight finishes while the Ingress changes.
    let node_a = h.nodes[0].ip.clone();
    let slow = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client_ns,
            "curl",
            "-s",
            "--max-time",
            "10",
        ])
        .args(["-H", "Host: shop.example.test", "-w", "\n%{http_code}"])
        .arg(format!("http://{node_a}/slow"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once an endpoint has the request (it marks it), the Ingress changes under it.
    eventually(10, "the slow request at an endpoint", || {
        ["echo-a", "echo-b"]
            .iter()
            .any(|p| {
                berth(&kc, &["exec", p, "--", "/usr/bin/test", "-f", "/tmp/slow"])
                    .status
                    .success()
            })
            .then_some(())
    });
    let changed = h.dir.path().join("ing2.yaml");
    std::fs::write(
        &changed,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - host: shop2.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
"#,
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", changed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "the new host to route", || {
        (curl_host(
            &client_ns,
            &format!("http://{node_a}/"),
            "shop2.example.test",
        )
        .0 == 200)
            .then_some(())
    });
    assert_eq!(
        curl_host(
            &client_ns,
            &format!("http://{node_a}/"),
            "shop.example.test"
        )
        .0,
        404
    );
    let out = slow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.ends_with("\n200") && text.contains("path=/slow"),
        "{text}"
    );
}

#[test]
fn nodes_on_different_subnets_reach_each_others_pods_through_a_tunnel() {
    // node-a on the server's subnet; node-b on another, behind a router.
    let mut h = Harness::start_routed(1, 1, &[]);
    let kc = h.kubeconfig.clone();
    let (ip_a, ip_b) = two_servers(&h);
    fetch_both_ways(&kc, &ip_a, &ip_b);

    // The route goes through the tunnel device, not via the other node's address.
    let ns_a = h.netns("node-a");
    let cidr_b = get_json(&kc, &["node", "node-b"])["spec"]["podCIDR"]
        .as_str()
        .unwrap()
        .to_string();
    let r = routes(&ns_a);
    let line = r
        .lines()
        .find(|l| l.starts_with(&cidr_b))
        .unwrap_or_else(|| panic!("no route to {cidr_b}: {r}"));
    assert!(
        line.contains("dev berth.vx") && line.contains("onlink"),
        "{line}"
    );

    // node-b goes for good: its route and tunnel entries go from node-a.
    h.kill("node-b");
    let o = berth(&kc, &["delete", "node", "node-b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "node-a to drop the tunnel route to node-b", || {
        (!routes(&ns_a).contains(&cidr_b)).then_some(())
    });
    let fdb = Command::new("bridge")
        .args(["-n", &ns_a, "fdb", "show", "dev", "berth.vx"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&fdb.stdout).contains(&h.nodes[1].ip),
        "{}",
        String::from_utf8_lossy(&fdb.stdout)
    );
}

#[test]
fn ready_pods_on_every_node_are_registered_and_berth_gen_renders_them_from_outside() {
    let h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();
    apply_echo(
        &h,
        "\napiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  selector: {app: echo}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    );
    let ips = [ready_ip(&kc, "echo-a"), ready_ip(&kc, "echo-b")];

    // Both replicas, each with the node it runs on, under the Service's directory.
    let listed = eventually(20, "both pods registered", || {
        let o = berth(&kc, &["kv", "ls", "-R", "/services/default/echo"]);
        let out = stdout(&o);
        (out.contains("/services/default/echo/echo-a")
            && out.contains("/services/default/echo/echo-b"))
        .then_some(out)
    });
    for (pod, node) in [("echo-a", "node-a"), ("echo-b", "node-b")] {
        let o = berth(
            &kc,
            &["kv", "get", &format!("/services/default/echo/{pod}")],
        );
        let reg: serde_json::Value = serde_json::from_str(&stdout(&o)).expect(&listed);
        assert_eq!(reg["node"], node, "{reg}");
        assert_eq!(reg["ports"][0]["port"], 8080, "{reg}");
    }

    // `berth gen` on this machine (outside the cluster) renders them from the tree.
    let tpl = h.dir.path().join("backends.tpl");
    std::fs::write(
        &tpl,
        "{% for key, value in kv|items %}\n{% set r = value|fromjson %}\n{{ r.pod }} {{ r.ip }}:{{ r.ports[0].port }} on {{ r.node }}\n{% endfor %}\n",
    )
    .unwrap();
    let dest = h.dir.path().join("backends.conf");
    let o = berth(
        &kc,
        &[
            "gen",
            "--template",
            tpl.to_str().unwrap(),
            "--dest",
            dest.to_str().unwrap(),
            "--kv",
            "/services/default/echo",
            "--once",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        format!(
            "echo-a {}:8080 on node-a\necho-b {}:8080 on node-b\n",
            ips[0], ips[1]
        )
    );

    // A replica that stops being ready leaves the tree.
    let o = berth(&kc, &["exec", "echo-b", "--", "/bin/rm", "/tmp/ready"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "echo-b unregistered", || {
        let o = berth(&kc, &["kv", "ls", "-R", "/services/default/echo"]);
        let out = stdout(&o);
        (out.contains("echo-a") && !out.contains("echo-b")).then_some(())
    });
}

//! Several nodes: `berth server` and two `berth agent` processes on this machine, each agent
//! with its own data directory, bridge and pod range. A node's death gets its pods replaced on
//! the other within 10 s; when it comes back, its stale pods are stopped and the Deployment
//! never has more Ready pods than it asked for.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, BerthProcess, berth, eventually, get_json, node_runtime, stderr, stdout};

struct Agent {
    child: Option<Child>,
    token: String,
    name: String,
    data: PathBuf,
    bridge: String,
    cidr: String,
}

impl Agent {
    fn start(
        server: &BerthProcess,
        token: &str,
        name: &str,
        data: &Path,
        net: (String, String),
    ) -> Agent {
        let mut a = Agent {
            child: None,
            token: token.into(),
            name: name.into(),
            data: data.to_path_buf(),
            bridge: net.0,
            cidr: net.1,
        };
        a.spawn(server);
        a
    }

    fn spawn(&mut self, server: &BerthProcess) {
        let token = self.token.clone();
        let child = Command::new(BIN)
            .args([
                "agent",
                "--server",
                &server.url,
                "--token",
                &token,
                "--node-name",
                &self.name,
            ])
            .arg("--ca-file")
            .arg(server.data_dir.join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(&self.data)
            .args([
                "--bridge",
                &self.bridge,
                "--pod-cidr",
                &self.cidr,
                "--restart-backoff",
                "1s",
            ])
            .env("BERTH_AGENT_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn runtime(&self) -> berth_runtime::pod::Runtime {
        node_runtime(&self.data, &self.bridge, &self.cidr)
    }

    /// The machine dies: its agent is SIGKILLed and everything it ran goes with it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let rt = self.runtime();
        for id in rt.pod_ids() {
            let _ = rt.remove_pod(&id);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        let _ = self.runtime().network.remove_bridge();
    }
}

/// Ready pods of the app: (name, node).
fn ready(kc: &Path) -> Vec<(String, String)> {
    get_json(kc, &["pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
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

#[test]
fn a_dead_nodes_pods_run_again_elsewhere_and_come_back_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = BerthProcess::start("server", &dir.path().join("server"));
    let kc = server.kubeconfig();
    // Nodes join with a token of their own, not the admin's.
    let o = berth(&kc, &["token", "create", "--description", "failover test"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_string();
    assert_eq!(token.len(), 23, "{token}");
    let mut a = Agent::start(
        &server,
        &token,
        "node-a",
        &dir.path().join("a"),
        berth_testkit::unique_net(),
    );
    let _b = Agent::start(
        &server,
        &token,
        "node-b",
        &dir.path().join("b"),
        berth_testkit::unique_net(),
    );
    eventually(30, "two Ready nodes", || {
        let nodes = get_json(&kc, &["nodes"]);
        let n = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (n == 2).then_some(())
    });
    let manifest = dir.path().join("app.yaml");
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

    // node-a dies.
    let died = Instant::now();
    a.kill();
    eventually(30, "a replacement on node-b", || {
        let r = ready(&kc);
        (r.len() == 2 && r.iter().all(|(_, n)| n == "node-b")).then_some(())
    });
    let took = died.elapsed();
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
    a.spawn(&server);
    let mut most = 0;
    eventually(60, "node-a's stale pods to be gone", || {
        let r = ready(&kc);
        most = most.max(r.len());
        let all = get_json(&kc, &["pods", "-l", "app=web"])["items"]
            .as_array()
            .unwrap()
            .len();
        let node_ready = get_json(&kc, &["node", "node-a"])["status"]["conditions"]
            .to_string()
            .contains("KubeletReady");
        (all == 2 && node_ready).then_some(())
    });
    assert!(most <= 2, "{most} pods were Ready at once after the heal");
    assert!(std::fs::read_dir(dir.path().join("a/pods")).map_or(0, |d| d.count()) == 0);
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
    let dir = tempfile::tempdir().unwrap();
    let server = BerthProcess::start("server", &dir.path().join("server"));
    let kc = server.kubeconfig();
    let o = berth(&kc, &["token", "create"]);
    let token = stdout(&o).trim().to_string();
    let _agents: Vec<Agent> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            Agent::start(
                &server,
                &token,
                n,
                &dir.path().join(n),
                berth_testkit::unique_net(),
            )
        })
        .collect();
    eventually(30, "three nodes", || {
        (get_json(&kc, &["nodes"])["items"].as_array()?.len() == 3).then_some(())
    });
    let apply = |name: &str, strategy: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
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

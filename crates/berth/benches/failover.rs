//! Node death → its pods Running and Ready elsewhere, on the multi-node harness (as root):
//! three nodes, each a network namespace with its own agent; a Deployment of 3 (one replica
//! per node, by spread). Ten times: a node that runs a replica dies (agent, shims and
//! containers SIGKILLed); the clock runs until the Deployment has 3 Ready replicas again, none
//! on the dead node. Then the node boots again and the next round waits for it. The same for a
//! partition (underlay link down) of 10 more rounds. Prints median, min and max.
//!
//! `cargo bench -p berth --bench failover` (or `scripts/bench failover`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::harness::Harness;
use common::{berth, eventually, get_json, is_ready, stderr};

const ROUNDS: usize = 10;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: host, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}
"#;

/// Nodes of the app's Ready, not terminating, replicas.
fn ready_on(kc: &std::path::Path) -> Vec<String> {
    get_json(kc, &["pods", "-l", "app=web"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from))
        .collect()
}

fn settled(h: &Harness, kc: &std::path::Path) {
    eventually(120, "3 nodes and 3 replicas, nothing stale", || {
        let all = get_json(kc, &["pods", "-l", "app=web"])["items"]
            .as_array()?
            .len();
        (h.ready_nodes().len() == 3 && ready_on(kc).len() == 3 && all == 3).then_some(())
    });
}

fn summary(what: &str, mut took: Vec<Duration>) {
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} rounds",
        ms(took[took.len() / 2]),
        ms(took[0]),
        ms(took[took.len() - 1]),
        took.len()
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the failover benchmark needs root");
        std::process::exit(1);
    }
    let mut h = Harness::start(3, &[]);
    let kc = h.kubeconfig.clone();
    let manifest = h.dir.path().join("app.yaml");
    std::fs::write(&manifest, APP).unwrap();
    let o = berth(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for mode in ["death", "partition"] {
        let mut took = Vec::new();
        for round in 0..ROUNDS {
            settled(&h, &kc);
            // A node that runs a replica (after earlier rounds, one may run none).
            let on = ready_on(&kc);
            let victim = on[round % on.len()].clone();
            let t0 = Instant::now();
            if mode == "death" {
                h.kill(&victim);
            } else {
                h.partition(&victim);
            }
            eventually(60, "the replacement", || {
                let on = ready_on(&kc);
                (on.len() == 3 && !on.contains(&victim)).then_some(())
            });
            took.push(t0.elapsed());
            if mode == "death" {
                h.restart(&victim);
            } else {
                h.heal(&victim);
            }
        }
        summary(&format!("node {mode} -> replacement Ready"), took);
    }
}

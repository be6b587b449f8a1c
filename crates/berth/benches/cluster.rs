//! The orchestration benchmarks, as root: `berth up` (release build) with its own bridge and
//! range, pods on the built-in host image.
//!
//! - pod create → Running (as the watch reports it), one pod at a time, 200 pods: p50, p99;
//! - RSS of `berth up` itself with 10 pods running (their shims counted apart).
//!
//! `cargo bench -p berth --bench cluster` (or `scripts/bench cluster`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_client::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth");
const PODS: usize = 200;

struct Up {
    child: Child,
    data: std::path::PathBuf,
    bridge: String,
    cidr: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rt = berth_runtime::pod::Runtime {
            root: self.data.clone(),
            network: berth_runtime::net::Network {
                bridge: self.bridge.clone(),
                range: self.cidr.parse().unwrap(),
                ipam_dir: self.data.join("ipam").join(&self.bridge),
                netns_dir: self.data.join("netns"),
                blackholes: vec![],
            },
            shim_command: vec![BIN.into(), "__shim".into()],
            cgroup_parent: "/berth".into(),
        };
        for id in rt.pod_ids() {
            let _ = rt.remove_pod(&id);
        }
        let _ = rt.network.remove_bridge();
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "host",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}})
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the cluster benchmarks need root");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (bridge, cidr) = berth_testkit::unique_net();
    let port = berth_testkit::free_port();
    let child = Command::new(BIN)
        .args([
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("BERTH_BRIDGE", &bridge)
        .env("BERTH_POD_CIDR", &cidr)
        .env("BERTH_AGENT_PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = Up {
        child,
        data: data.clone(),
        bridge,
        cidr,
    };
    let ca_path = data.join("pki/ca.crt");
    let mut ca = String::new();
    while !ca.contains("END CERTIFICATE") {
        ca = std::fs::read_to_string(&ca_path).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let tokens = std::fs::read_to_string(data.join("tokens.csv")).unwrap();
    let token = tokens
        .lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split(',').next())
        .unwrap()
        .to_string();
    let c = Client::new(&format!("https://127.0.0.1:{port}"), &token, &ca);
    let pods = resolve("pods").unwrap();
    let nodes = resolve("nodes").unwrap();
    loop {
        if let Ok(n) = c.list(nodes, None, "").await
            && n["items"].as_array().is_some_and(|i| !i.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm-up: the host image's layer and the first shim.
    c.create(pods, Some("default"), &pod("warm"), "")
        .await
        .unwrap();
    let mut times = Vec::new();
    let mut w = c
        .watch(pods, Some("default"), "labelSelector=bench%3D1")
        .await
        .unwrap();
    for i in 0..=PODS {
        let name = format!("p{i}");
        let started = Instant::now();
        c.create(pods, Some("default"), &pod(&name), "")
            .await
            .unwrap();
        loop {
            let ev = w.next().await.unwrap().expect("the watch ended");
            if ev.object["metadata"]["name"] == name.as_str()
                && ev.object["status"]["phase"] == "Running"
            {
                break;
            }
        }
        if i > 0 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        // Keep 10 running for the memory reading; remove the rest as we go.
        if i > 10 {
            let _ = c
                .delete(
                    pods,
                    Some("default"),
                    &format!("p{}", i - 10),
                    "gracePeriodSeconds=0",
                )
                .await;
        }
    }
    times.sort_by(f64::total_cmp);
    println!("| what | berth | goal |");
    println!("|---|---|---|");
    println!(
        "| pod create → Running, one at a time, {PODS} pods (host image, one node) | p50 {:.1} ms, p99 {:.1} ms | p99 ≤ 150 ms |",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = c.list(pods, Some("default"), "").await.unwrap()["items"]
        .as_array()
        .map_or(0, |i| i.len());
    println!(
        "| RSS of `berth up` (control plane + agent) with {running} pods running, shims apart | {:.1} MB | ≤ 50 MB |",
        rss_kib(up.child.id()) as f64 / 1024.0
    );
    drop(up);
}

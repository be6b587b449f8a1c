//! Scheduler throughput, as Kubernetes' scheduler_perf measures it: 5,000 simulated nodes
//! (Node objects only, Ready, no agents), then N pending pods; placements per second until
//! every pod is bound, each binding a committed (fsynced) store write.
//!
//! `cargo bench -p berth --bench scheduler` (or `scripts/bench scheduler`). In-process: the
//! store and registry of a real control plane, the scheduler loop as `berth server` runs it.

use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_api::object::Object;
use berth_apiserver::registry::Registry;
use serde_json::json;

const NODES: usize = 5_000;

async fn run(pods: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = berth_app::ServerOptions::new(dir.path());
    opts.listen = "127.0.0.1:0".parse().unwrap();
    // The API server alone: the scheduler is started below, once the pods wait.
    opts.controllers = false;
    let server = berth_app::start(opts).await.unwrap();
    let registry = Registry::new(server.store().clone());
    let (nodes_k, pods_k) = (resolve("nodes").unwrap(), resolve("pods").unwrap());
    for i in 0..NODES {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{i:05}")},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        let created = registry
            .create(
                nodes_k,
                None,
                Object::from_value(node).unwrap(),
                "bench",
                false,
            )
            .await
            .unwrap();
        let status = serde_json::to_vec(
            &json!({"status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
        registry
            .patch(
                nodes_k,
                None,
                created.name(),
                berth_apiserver::patch::PatchType::Merge,
                &status,
                "bench",
                true,
                false,
            )
            .await
            .unwrap();
    }
    // Pods go in concurrently, 64 writers at a time.
    let mut handles = Vec::new();
    for w in 0..64 {
        let registry = registry.clone();
        handles.push(tokio::spawn(async move {
            let mut i = w;
            while i < pods {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i:06}"), "namespace": "default"},
                    "spec": {"containers": [{"name": "c", "image": "host", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}});
                registry
                    .create(pods_k, Some("default"), Object::from_value(pod).unwrap(), "bench", false)
                    .await
                    .unwrap();
                i += 64;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    // Bindings are counted from a watch of the pods (what an informer sees), not by
    // listing: a list of every pod every few ms would take the cores the scheduler needs.
    let mut watch = server
        .store()
        .watch(
            b"/registry/core/pods/",
            server.store().current_revision() + 1,
        )
        .unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    // The scheduler on an informer of its own, as the server runs it on the shared one.
    let informer = berth_controllers::informer::Informer::new(registry.clone());
    let informing = tokio::spawn(informer.clone().run(stop.clone()));
    let sched = tokio::spawn(berth_controllers::scheduler::run(
        registry.clone(),
        informer,
        berth_scheduler::Strategy::Spread,
        stop,
    ));
    let mut bound = std::collections::HashSet::new();
    let mut first: Option<Instant> = None;
    while bound.len() < pods {
        let batch = watch.next().await.unwrap().expect("the watch ended");
        for ev in batch.events.iter() {
            let v: serde_json::Value = serde_json::from_slice(&ev.kv.value).unwrap_or_default();
            if v["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            {
                bound.insert(ev.kv.key.clone());
                first.get_or_insert_with(Instant::now);
            }
        }
    }
    let took = started.elapsed();
    // Without the scheduler's start (its first list of every node and pod), as
    // scheduler_perf measures a scheduler whose informers have synced.
    let steady = first.map_or(took, |f| f.elapsed());
    let _ = stop_tx.send(true);
    let _ = sched.await;
    let _ = informing.await;
    server.shutdown().await;
    Run {
        rate: pods as f64 / took.as_secs_f64(),
        took,
        steady_rate: pods as f64 / steady.as_secs_f64(),
    }
}

struct Run {
    rate: f64,
    took: Duration,
    steady_rate: f64,
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "| what | placements/s from the scheduler's start | time | placements/s once its first list is done |"
    );
    println!("|---|---:|---:|---:|");
    for pods in [10_000, 50_000] {
        let r = run(pods).await;
        println!(
            "| {pods} pods onto {NODES} nodes (spread), each binding a durable write | {:.0} | {:.2} s | {:.0} |",
            r.rate,
            r.took.as_secs_f64(),
            r.steady_rate
        );
    }
}

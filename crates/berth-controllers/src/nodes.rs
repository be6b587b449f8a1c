//! The node lifecycle controller: a node whose Lease has not been renewed within the grace
//! period becomes NotReady (condition Ready=Unknown, the `node.kubernetes.io/unreachable`
//! NoExecute taint, its pods marked not Ready); after the eviction delay its pods are deleted
//! gracefully, so their ReplicaSets replace them elsewhere. The pods stay Terminating until the
//! node comes back and stops them (or the node is deleted). A renewed Lease makes it Ready
//! again.
//!
//! Defaults are short (4 s + 2 s), so replacements run within 10 s of a node's death;
//! Kubernetes' are 40 s and 5 min.
//!
//! It also gives each node that registers without a `spec.podCIDR` the next free /24 of the
//! cluster's pod range, as kube-controller-manager's `--allocate-node-cidrs` does. (Services'
//! cluster IPs and node ports are not this controller's: the registry allocates them in the
//! Service's own write, `berth-apiserver`'s `ranges.rs`.)

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use berth_api::cidr::Ipv4Net;
use berth_api::object::Object;
use berth_apiserver::events::{Reporter, record as event};
use berth_apiserver::registry::{DeleteOptions, ListOptions, Registry};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::runtime::{Error, pod_finished};

const USER: &str = "system:node-controller";

const REPORTER: Reporter = Reporter {
    component: "node-controller",
    user: USER,
};
/// The taint an unreachable node gets.
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// How long a node may go without renewing its Lease, and how long after that its pods go;
/// and the range nodes get their pod ranges from.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub grace: Duration,
    pub eviction: Duration,
    /// The cluster's pod range (`--cluster-cidr`): a node that registers without a
    /// `spec.podCIDR` gets the next free /24 of it, as kube-controller-manager's
    /// `--allocate-node-cidrs` does.
    pub cluster_cidr: Ipv4Net,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            grace: Duration::from_secs(4),
            eviction: Duration::from_secs(2),
            cluster_cidr: Ipv4Net {
                addr: Ipv4Addr::new(10, 42, 0, 0),
                prefix: 16,
            },
        }
    }
}

/// The first /24 of `cluster` (a range of [`Ipv4Net::CLUSTER_PREFIXES`]) that none of `used`
/// (CIDR strings, any prefix; what is not one is skipped) overlaps.
fn next_node_cidr(cluster: Ipv4Net, used: &[&str]) -> Option<String> {
    // Parsed as ranges, host bits cleared: a node's `10.42.0.5/24` holds 10.42.0.0/24.
    let taken: Vec<Ipv4Net> = used
        .iter()
        .filter_map(|c| Ipv4Net::parse(c, 0..=32, "10.42.0.0/24").ok())
        .collect();
    let base = u32::from(cluster.network());
    let count = 1u32 << (24 - cluster.prefix);
    (0..count)
        .map(|i| Ipv4Net {
            addr: Ipv4Addr::from(base + (i << 8)),
            prefix: 24,
        })
        .find(|n| !taken.iter().any(|t| t.overlaps(*n)))
        .map(|n| n.to_string())
}

/// Gives every node without a pod range the next free one.
async fn allocate_cidrs(
    registry: &Registry,
    kind: &berth_api::ResourceKind,
    nodes: &[Object],
    cluster: Ipv4Net,
) {
    let cidr_of = |n: &Object| {
        n.get("spec")
            .and_then(|s| s.get("podCIDR"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut used: Vec<String> = nodes
        .iter()
        .map(cidr_of)
        .filter(|c| !c.is_empty())
        .collect();
    for n in nodes.iter().filter(|n| cidr_of(n).is_empty()) {
        let refs: Vec<&str> = used.iter().map(String::as_str).collect();
        let Some(cidr) = next_node_cidr(cluster, &refs) else {
            tracing::warn!(
                node = n.name(),
                "the cluster's pod range is full; no range for the node"
            );
            continue;
        };
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match registry
            .merge_patch(kind, None, n.name(), &patch, USER, false)
            .await
        {
            Ok(_) => used.push(cidr),
            Err(e) => tracing::debug!(error = %e, "cannot give a node its pod range"),
        }
    }
}

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, timing: Timing, stop: watch::Receiver<bool>) {
    crate::runtime::supervise("node lifecycle controller", stop, || {
        run_loop(&registry, timing)
    })
    .await
}

/// Looks at the nodes every half second; ends only when `supervise` drops it.
async fn run_loop(registry: &Registry, timing: Timing) -> Result<(), Error> {
    let mut not_ready_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tick(registry, timing, &mut not_ready_since).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ready_status(node: &Object) -> String {
    node.condition("Ready").unwrap_or("Unknown").to_string()
}

async fn tick(registry: &Registry, timing: Timing, not_ready_since: &mut HashMap<String, Instant>) {
    let (Some(nodes_kind), Some(leases_kind), Some(pods_kind)) = (
        berth_api::kinds::resolve("nodes"),
        berth_api::kinds::resolve("leases"),
        berth_api::kinds::resolve("pods"),
    ) else {
        return;
    };
    let Ok(nodes) = registry.list(nodes_kind, None, &ListOptions::default()) else {
        return;
    };
    allocate_cidrs(registry, nodes_kind, &nodes.items, timing.cluster_cidr).await;
    let leases = registry
        .list(
            leases_kind,
            Some("kube-node-lease"),
            &ListOptions::default(),
        )
        .map(|l| l.items)
        .unwrap_or_default();
    let now = berth_api::timefmt::now_nanos();
    for node in nodes.items {
        let name = node.name().to_string();
        let renewed = leases
            .iter()
            .find(|l| l.name() == name)
            .and_then(|l| l.get("spec")?.get("renewTime")?.as_str().map(String::from))
            .and_then(|t| berth_api::timefmt::parse_rfc3339(&t).ok());
        let Some(renewed) = renewed else {
            continue; // No lease yet: the agent is still registering.
        };
        let stale = now.saturating_sub(renewed) > timing.grace.as_nanos() as u64;
        let ready = ready_status(&node);
        if stale {
            let since = *not_ready_since
                .entry(name.clone())
                .or_insert_with(Instant::now);
            if ready != "Unknown" {
                set_unreachable(registry, nodes_kind, &node, true).await;
                event(
                    registry,
                    REPORTER,
                    &node,
                    "Normal",
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
            }
            let pods = on_node(registry, pods_kind, &name);
            for p in &pods {
                mark_not_ready(registry, pods_kind, p).await;
            }
            if since.elapsed() >= timing.eviction {
                for p in pods.iter().filter(|p| p.deletion_timestamp().is_none()) {
                    let ns = p.namespace().unwrap_or("default");
                    if let Err(e) = registry
                        .delete(
                            pods_kind,
                            Some(ns),
                            p.name(),
                            &DeleteOptions::default(),
                            USER,
                        )
                        .await
                    {
                        tracing::debug!(error = %e, "cannot evict a pod");
                    } else {
                        event(
                            registry,
                            REPORTER,
                            p,
                            "Normal",
                            "TaintManagerEviction",
                            &format!("Marking for deletion Pod {ns}/{}", p.name()),
                        )
                        .await;
                    }
                }
            }
        } else {
            not_ready_since.remove(&name);
            // Back: Ready again and untainted (the agent may have said Ready itself already).
            let tainted = node
                .get("spec")
                .and_then(|s| s.get("taints"))
                .is_some_and(|t| t.to_string().contains(UNREACHABLE));
            if ready == "Unknown" || tainted {
                set_unreachable(registry, nodes_kind, &node, false).await;
                event(
                    registry,
                    REPORTER,
                    &node,
                    "Normal",
                    "NodeReady",
                    &format!("Node {name} status is now: NodeReady"),
                )
                .await;
            }
        }
    }
}

/// The node's pods that still count (not finished).
fn on_node(registry: &Registry, pods_kind: &berth_api::ResourceKind, node: &str) -> Vec<Object> {
    let opts = ListOptions {
        fields: berth_api::selector::FieldSelector::parse(&format!("spec.nodeName={node}"), "Pod")
            .unwrap_or_default(),
        ..Default::default()
    };
    registry
        .list(pods_kind, None, &opts)
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !pod_finished(p))
        .collect()
}

async fn set_unreachable(
    registry: &Registry,
    kind: &berth_api::ResourceKind,
    node: &Object,
    unreachable: bool,
) {
    let now = berth_api::timefmt::now_rfc3339();
    let mut conditions: Vec<Value> = node
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let was_ready = node.condition("Ready") == Some("True");
    // A node coming back whose agent already said Ready keeps that condition.
    let keep = !unreachable && was_ready;
    conditions.retain(|c| c.get("type") != Some(&json!("Ready")) || keep);
    if !keep {
        conditions.push(if unreachable {
        json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
               "message": "Kubelet stopped posting node status.", "lastTransitionTime": now, "lastHeartbeatTime": now})
    } else {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "berth agent is posting ready status", "lastTransitionTime": now, "lastHeartbeatTime": now})
        });
    }
    let _ = registry
        .merge_patch(
            kind,
            None,
            node.name(),
            &json!({"status": {"conditions": conditions}}),
            USER,
            true,
        )
        .await;
    let mut taints: Vec<Value> = node
        .get("spec")
        .and_then(|s| s.get("taints"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    taints.retain(|t| t.get("key") != Some(&json!(UNREACHABLE)));
    if unreachable {
        taints.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now}));
    }
    let _ = registry
        .merge_patch(
            kind,
            None,
            node.name(),
            &json!({"spec": {"taints": taints}}),
            USER,
            false,
        )
        .await;
}

/// A pod on an unreachable node is not Ready (whatever it last reported).
async fn mark_not_ready(registry: &Registry, kind: &berth_api::ResourceKind, pod: &Object) {
    let conditions: Vec<Value> = pod
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !conditions.iter().any(|c| {
        matches!(
            c.get("type").and_then(Value::as_str),
            Some("Ready" | "ContainersReady")
        ) && c.get("status") == Some(&json!("True"))
    }) {
        return;
    }
    let now = berth_api::timefmt::now_rfc3339();
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|mut c| {
            if matches!(
                c.get("type").and_then(Value::as_str),
                Some("Ready" | "ContainersReady")
            ) {
                c["status"] = json!("False");
                c["reason"] = json!("NodeNotReady");
                c["lastTransitionTime"] = json!(now);
            }
            c
        })
        .collect();
    let _ = registry
        .merge_patch(
            kind,
            pod.namespace(),
            pod.name(),
            &json!({"status": {"conditions": conditions}}),
            USER,
            true,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ranges_are_the_free_24s_of_the_cluster_range() {
        let c = Ipv4Net::parse_cluster("10.42.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert_eq!(next_node_cidr(c, &[]).unwrap(), "10.42.0.0/24");
        assert_eq!(
            next_node_cidr(c, &["10.42.0.0/24", "10.42.2.0/24"]).unwrap(),
            "10.42.1.0/24"
        );
        // A node that brought a range of its own (a /23) takes both /24s.
        assert_eq!(
            next_node_cidr(c, &["10.42.0.0/23", "garbage"]).unwrap(),
            "10.42.2.0/24"
        );
        let small = Ipv4Net::parse_cluster("10.9.0.0/24").unwrap();
        assert_eq!(next_node_cidr(small, &["10.9.0.0/24"]), None);
        // A range written with host bits is the range they lie in, not one shifted by them.
        assert_eq!(
            next_node_cidr(c, &["10.42.0.5/24"]).unwrap(),
            "10.42.1.0/24"
        );
        // A range holding the whole cluster range leaves nothing.
        assert_eq!(next_node_cidr(c, &["0.0.0.0/0"]), None);
        assert!(Ipv4Net::parse_cluster("10.0.0.0/25").is_err());
        assert!(Ipv4Net::parse_cluster("nope").is_err());
    }
}

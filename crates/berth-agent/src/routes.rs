//! The pod network across nodes: every node's pods live in that node's range
//! (`spec.podCIDR`), and each agent routes every other node's range to that node's address
//! (direct routes between nodes on one subnet, as flannel's host-gw does). A node that goes
//! away takes its route with it, on every node. Packets between pods are forwarded by the
//! nodes, so forwarding is turned on once there is another node to route to.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use berth_api::kinds::resolve;
use berth_client::Client;
use berth_runtime::net::Ipv4Net;
use berth_runtime::netlink::{Netlink, RouteTo};
use serde_json::Value;
use tokio::sync::watch;

use crate::AgentConfig;

/// Waits until the server has given this node its pod range.
pub(crate) async fn allocated_range(
    client: &Client,
    node: &str,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Ipv4Net> {
    let nodes = resolve("nodes").ok_or_else(|| anyhow::anyhow!("no node kind"))?;
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        if let Ok(n) = client.get(nodes, None, node).await
            && let Some(cidr) = n["spec"]["podCIDR"].as_str().filter(|c| !c.is_empty())
        {
            return cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("the server gave this node the range {cidr:?}: {e}"));
        }
        if !warned && started.elapsed() > Duration::from_secs(10) {
            tracing::warn!(
                "still waiting for the server to give this node a pod range (is its --cluster-cidr full?)"
            );
            warned = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => anyhow::bail!("stopped before the node had a pod range"),
        }
    }
}

/// Where another node's pods are: its range, and its address.
fn route_of(n: &Value) -> Option<(Ipv4Net, Ipv4Addr)> {
    let cidr: Ipv4Net = n["spec"]["podCIDR"].as_str()?.parse().ok()?;
    let ip = n["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .parse()
        .ok()?;
    Some((cidr, ip))
}

struct Routes {
    own: Ipv4Net,
    own_ip: Option<Ipv4Addr>,
    /// Node name -> the route installed for it.
    installed: HashMap<String, (Ipv4Net, Ipv4Addr)>,
    forwarding: bool,
}

impl Routes {
    fn set(&mut self, name: &str, want: Option<(Ipv4Net, Ipv4Addr)>) {
        let want = want.filter(|(cidr, ip)| *cidr != self.own && Some(*ip) != self.own_ip);
        if self.installed.get(name).copied() == want {
            return;
        }
        let mut nl = match Netlink::new() {
            Ok(nl) => nl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open netlink to route pods");
                return;
            }
        };
        if let Some((cidr, ip)) = self.installed.remove(name)
            && let Err(e) = nl.del_route(cidr.network(), cidr.prefix, RouteTo::Gateway(ip))
        {
            tracing::warn!(error = %e, node = name, "cannot remove the route to a node's pods");
        }
        let Some((cidr, ip)) = want else { return };
        if !self.forwarding {
            match std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
                Ok(()) => self.forwarding = true,
                Err(e) => tracing::warn!(error = %e, "cannot turn on forwarding for pod traffic"),
            }
        }
        match nl.add_route(cidr.network(), cidr.prefix, RouteTo::Gateway(ip)) {
            Ok(()) => {
                tracing::info!(node = name, %cidr, via = %ip, "route to a node's pods");
                self.installed.insert(name.to_string(), (cidr, ip));
            }
            Err(e) if e.errno() == Some(libc::ENETUNREACH) => tracing::warn!(
                node = name,
                %ip,
                "node is not on this node's subnet, and tunnels (VXLAN) between nodes are not implemented yet: its pods are unreachable from here"
            ),
            Err(e) => tracing::warn!(error = %e, node = name, "cannot route to a node's pods"),
        }
    }
}

/// Keeps the routes to other nodes' pods in step with the Nodes, until `stop`.
pub(crate) async fn run(client: Client, cfg: AgentConfig, stop: watch::Receiver<bool>) {
    let routes = Routes {
        own: cfg.runtime.network.range,
        own_ip: cfg.node_ip.parse().ok(),
        installed: HashMap::new(),
        forwarding: false,
    };
    let routes = std::sync::Mutex::new(routes);
    crate::follow(
        &client,
        "nodes",
        stop,
        |items| {
            let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<String> = items
                .iter()
                .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
                .collect();
            let gone: Vec<String> = routes
                .installed
                .keys()
                .filter(|k| !names.contains(k))
                .cloned()
                .collect();
            for g in gone {
                routes.set(&g, None);
            }
            for n in items {
                routes.set(n["metadata"]["name"].as_str().unwrap_or(""), route_of(n));
            }
        },
        |typ, n| {
            let name = n["metadata"]["name"].as_str().unwrap_or("");
            let want = if typ == "DELETED" { None } else { route_of(n) };
            routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set(name, want);
        },
    )
    .await
}

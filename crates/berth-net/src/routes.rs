//! The pod network across nodes: every node's pods live in that node's range
//! (`spec.podCIDR`), and each agent routes every other node's range to that node:
//!
//! - directly to its address when it is on this node's subnet (as flannel's host-gw does);
//! - through a VXLAN tunnel when it is not (as flannel's vxlan backend does): one device
//!   (`berth.vx`, VNI 1, UDP 8472) per node, whose MAC and tunnel address are derived from the
//!   node's pod range, so every node computes every other's without exchanging anything: the
//!   range `R` is reached via `R.0` on the device, `R.0` is the MAC `0a:58:R.0`, and that MAC
//!   lives at the node's address.
//!
//! A node that goes away takes its route (and tunnel entries) with it, on every node. Packets
//! between pods are forwarded by the nodes, so forwarding is turned on once there is another
//! node to route to.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use berth_api::cidr::Ipv4Net;
use berth_api::kinds::resolve;
use berth_client::Client;
use berth_client::informer::{self, Event, Watcher};
use berth_netlink::{Netlink, RouteTable, RouteTo};
use serde_json::Value;
use tokio::sync::watch;

/// What the routes are kept for: this node.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// This node's pod range (never routed elsewhere).
    pub range: Ipv4Net,
    /// This node's address (where its tunnel starts).
    pub node_ip: Ipv4Addr,
}

/// Waits until the server has given this node its pod range.
pub async fn allocated_range(
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
    let ip = berth_api::object::node_internal_ip(n)?.parse().ok()?;
    Some((cidr, ip))
}

/// The tunnel device.
const VXLAN_DEVICE: &str = "berth.vx";
const VXLAN_VNI: u32 = 1;
const VXLAN_PORT: u16 = 8472;

/// The tunnel MAC of the node whose pods are in `range`.
fn vtep_mac(range: Ipv4Net) -> [u8; 6] {
    let o = range.network().octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// How a node's range is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    /// Through the tunnel device (by index).
    Tunnel(u32),
}

struct Routes {
    own: Ipv4Net,
    own_ip: Ipv4Addr,
    /// Node name -> the route installed for it.
    installed: HashMap<String, (Ipv4Net, Ipv4Addr, Via)>,
    forwarding: bool,
}

impl Routes {
    /// The tunnel device, made (with this node's tunnel address) if need be.
    fn tunnel(&self, nl: &mut impl RouteTable) -> Result<u32, String> {
        let local = self.own_ip;
        let index = nl
            .ensure_vxlan(
                VXLAN_DEVICE,
                VXLAN_VNI,
                local,
                VXLAN_PORT,
                vtep_mac(self.own),
            )
            .map_err(|e| e.to_string())?;
        nl.add_address(index, self.own.network(), 32)
            .map_err(|e| e.to_string())?;
        Ok(index)
    }

    fn remove(&mut self, nl: &mut impl RouteTable, name: &str) {
        let Some((cidr, ip, via)) = self.installed.remove(name) else {
            return;
        };
        let r = match via {
            Via::Direct => nl.del_route(cidr.network(), cidr.prefix, RouteTo::Gateway(ip)),
            Via::Tunnel(link) => nl
                .del_route(
                    cidr.network(),
                    cidr.prefix,
                    RouteTo::Onlink {
                        gateway: cidr.network(),
                        link,
                    },
                )
                .and_then(|_| nl.set_neighbour(false, link, cidr.network(), vtep_mac(cidr)))
                .and_then(|_| nl.set_fdb(false, link, vtep_mac(cidr), ip)),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, node = name, "cannot remove the route to a node's pods");
        }
    }

    /// Routes `cidr` through the tunnel to the node at `ip`.
    fn add_tunnel(
        &self,
        nl: &mut impl RouteTable,
        cidr: Ipv4Net,
        ip: Ipv4Addr,
    ) -> Result<Via, String> {
        let link = self.tunnel(nl)?;
        let mac = vtep_mac(cidr);
        nl.set_fdb(true, link, mac, ip).map_err(|e| e.to_string())?;
        nl.set_neighbour(true, link, cidr.network(), mac)
            .map_err(|e| e.to_string())?;
        nl.add_route(
            cidr.network(),
            cidr.prefix,
            RouteTo::Onlink {
                gateway: cidr.network(),
                link,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Via::Tunnel(link))
    }

    /// What `name`'s pods need from this node: nothing for this node itself, or its range
    /// and address.
    fn wanted(&self, want: Option<(Ipv4Net, Ipv4Addr)>) -> Option<(Ipv4Net, Ipv4Addr)> {
        want.filter(|(cidr, ip)| *cidr != self.own && *ip != self.own_ip)
    }

    /// Whether what is installed for `name` is `want` already.
    fn holds(&self, name: &str, want: Option<(Ipv4Net, Ipv4Addr)>) -> bool {
        self.installed.get(name).map(|(c, i, _)| (*c, *i)) == want
    }

    /// Makes the route to `name`'s pods what the Node says, through the kernel's netlink
    /// (with forwarding turned on once a route exists).
    fn set(&mut self, name: &str, want: Option<(Ipv4Net, Ipv4Addr)>) {
        let want = self.wanted(want);
        if self.holds(name, want) {
            return;
        }
        let mut nl = match Netlink::new() {
            Ok(nl) => nl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open netlink to route pods");
                return;
            }
        };
        if want.is_some() && !self.forwarding {
            match std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
                Ok(()) => self.forwarding = true,
                Err(e) => tracing::warn!(error = %e, "cannot turn on forwarding for pod traffic"),
            }
        }
        self.set_in(&mut nl, name, want);
    }

    /// As `set`, on `nl`: removes what was installed for `name`, then routes its range
    /// directly when its address is on this node's link, else through the tunnel.
    fn set_in(&mut self, nl: &mut impl RouteTable, name: &str, want: Option<(Ipv4Net, Ipv4Addr)>) {
        let want = self.wanted(want);
        if self.holds(name, want) {
            return;
        }
        self.remove(nl, name);
        let Some((cidr, ip)) = want else { return };
        let via = match nl.add_route(cidr.network(), cidr.prefix, RouteTo::Gateway(ip)) {
            Ok(()) => Ok(Via::Direct),
            // Not on this node's subnet ("network unreachable", or "invalid gateway" when it
            // is reached through a router): through the tunnel.
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH | libc::EINVAL)) => {
                self.add_tunnel(nl, cidr, ip)
            }
            Err(e) => Err(e.to_string()),
        };
        match via {
            Ok(via) => {
                tracing::info!(node = name, %cidr, via = %ip, tunnel = matches!(via, Via::Tunnel(_)), "route to a node's pods");
                self.installed.insert(name.to_string(), (cidr, ip, via));
            }
            Err(e) => tracing::warn!(error = %e, node = name, "cannot route to a node's pods"),
        }
    }
}

/// Keeps the routes to other nodes' pods in step with the Nodes, until `stop`.
pub async fn run(client: Client, opts: Options, stop: watch::Receiver<bool>) {
    let mut routes = Routes {
        own: opts.range,
        own_ip: opts.node_ip,
        installed: HashMap::new(),
        forwarding: false,
    };
    let Some(nodes) = resolve("nodes") else {
        return;
    };
    informer::follow(Watcher::new(client, nodes), stop, |ev| match ev {
        Event::Listed(items) => {
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
            for n in &items {
                routes.set(n["metadata"]["name"].as_str().unwrap_or(""), route_of(n));
            }
        }
        Event::Applied(n) => {
            routes.set(n["metadata"]["name"].as_str().unwrap_or(""), route_of(&n));
        }
        Event::Deleted(n) => routes.set(n["metadata"]["name"].as_str().unwrap_or(""), None),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route table that records what it is asked and refuses gateways off its link, as the
    /// kernel does (ENETUNREACH): no root needed.
    #[derive(Default)]
    struct Recorder {
        on_link: Vec<Ipv4Addr>,
        calls: Vec<String>,
    }

    fn refused(what: &str, errno: i32) -> berth_netlink::NetlinkError {
        berth_netlink::NetlinkError {
            what: what.into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    impl RouteTable for Recorder {
        fn add_route(
            &mut self,
            dst: Ipv4Addr,
            prefix: u8,
            to: RouteTo,
        ) -> Result<(), berth_netlink::NetlinkError> {
            if let RouteTo::Gateway(gw) = to
                && !self.on_link.contains(&gw)
            {
                return Err(refused("add route", libc::ENETUNREACH));
            }
            self.calls.push(format!("add {dst}/{prefix} {to:?}"));
            Ok(())
        }
        fn del_route(
            &mut self,
            dst: Ipv4Addr,
            prefix: u8,
            to: RouteTo,
        ) -> Result<(), berth_netlink::NetlinkError> {
            self.calls.push(format!("del {dst}/{prefix} {to:?}"));
            Ok(())
        }
        fn set_neighbour(
            &mut self,
            add: bool,
            index: u32,
            ip: Ipv4Addr,
            _mac: [u8; 6],
        ) -> Result<(), berth_netlink::NetlinkError> {
            self.calls.push(format!("neighbour {add} {index} {ip}"));
            Ok(())
        }
        fn set_fdb(
            &mut self,
            add: bool,
            index: u32,
            _mac: [u8; 6],
            dst: Ipv4Addr,
        ) -> Result<(), berth_netlink::NetlinkError> {
            self.calls.push(format!("fdb {add} {index} {dst}"));
            Ok(())
        }
        fn ensure_vxlan(
            &mut self,
            name: &str,
            vni: u32,
            local: Ipv4Addr,
            port: u16,
            _mac: [u8; 6],
        ) -> Result<u32, berth_netlink::NetlinkError> {
            self.calls
                .push(format!("vxlan {name} vni {vni} local {local} port {port}"));
            Ok(7)
        }
        fn add_address(
            &mut self,
            index: u32,
            addr: Ipv4Addr,
            prefix: u8,
        ) -> Result<(), berth_netlink::NetlinkError> {
            self.calls.push(format!("address {index} {addr}/{prefix}"));
            Ok(())
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn routes() -> Routes {
        Routes {
            own: net("10.42.0.0/24"),
            own_ip: Ipv4Addr::new(192, 168, 1, 10),
            installed: HashMap::new(),
            forwarding: true,
        }
    }

    #[test]
    fn a_node_on_the_link_is_routed_directly_and_its_route_goes_with_it() {
        let mut r = routes();
        let peer = Ipv4Addr::new(192, 168, 1, 11);
        let mut nl = Recorder {
            on_link: vec![peer],
            ..Default::default()
        };
        r.set_in(&mut nl, "b", Some((net("10.42.1.0/24"), peer)));
        r.set_in(&mut nl, "b", Some((net("10.42.1.0/24"), peer)));
        r.set_in(&mut nl, "b", None);
        assert_eq!(
            nl.calls,
            [
                "add 10.42.1.0/24 Gateway(192.168.1.11)",
                "del 10.42.1.0/24 Gateway(192.168.1.11)",
            ],
            "one add (the repeat changes nothing), one delete"
        );
        assert!(r.installed.is_empty());
    }

    #[test]
    fn a_node_off_the_link_is_reached_through_the_tunnel_and_all_of_it_is_undone() {
        let mut r = routes();
        let far = Ipv4Addr::new(172, 16, 0, 5);
        let mut nl = Recorder::default();
        r.set_in(&mut nl, "c", Some((net("10.42.2.0/24"), far)));
        assert_eq!(r.installed["c"].2, Via::Tunnel(7));
        r.set_in(&mut nl, "c", None);
        assert_eq!(
            nl.calls,
            [
                "vxlan berth.vx vni 1 local 192.168.1.10 port 8472",
                "address 7 10.42.0.0/32",
                "fdb true 7 172.16.0.5",
                "neighbour true 7 10.42.2.0",
                "add 10.42.2.0/24 Onlink { gateway: 10.42.2.0, link: 7 }",
                "del 10.42.2.0/24 Onlink { gateway: 10.42.2.0, link: 7 }",
                "neighbour false 7 10.42.2.0",
                "fdb false 7 172.16.0.5",
            ]
        );
    }

    #[test]
    fn this_node_and_a_moved_node_are_handled() {
        let mut r = routes();
        let (a, b) = (
            Ipv4Addr::new(192, 168, 1, 11),
            Ipv4Addr::new(192, 168, 1, 12),
        );
        let mut nl = Recorder {
            on_link: vec![a, b],
            ..Default::default()
        };
        // This node's own range or address needs no route.
        r.set_in(&mut nl, "self", Some((net("10.42.0.0/24"), a)));
        r.set_in(
            &mut nl,
            "self2",
            Some((net("10.42.9.0/24"), Ipv4Addr::new(192, 168, 1, 10))),
        );
        assert!(nl.calls.is_empty(), "{:?}", nl.calls);
        // A node whose address changes: the old route goes before the new one comes.
        r.set_in(&mut nl, "b", Some((net("10.42.1.0/24"), a)));
        r.set_in(&mut nl, "b", Some((net("10.42.1.0/24"), b)));
        assert_eq!(
            nl.calls,
            [
                "add 10.42.1.0/24 Gateway(192.168.1.11)",
                "del 10.42.1.0/24 Gateway(192.168.1.11)",
                "add 10.42.1.0/24 Gateway(192.168.1.12)",
            ]
        );
    }
}

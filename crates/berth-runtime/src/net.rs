//! A pod's network sandbox: a network namespace with loopback up and one veth to the node's
//! bridge, an address from the node's pod range (leases persisted as files, as CNI's
//! host-local does), and a default route through the bridge's address.
//!
//! Invariants:
//! - Everything a sandbox creates is named from the pod id (`vb<hash>` on the host, the
//!   netns file `NETNS_DIR/<pod>`, a lease file holding the pod id), so `teardown` finds it all
//!   without any other state, also after a crash.
//! - A lease file is created with `O_EXCL`: two processes never hand out one address.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use berth_api::cidr::Ipv4Net;
use berth_netlink::{Netlink, NetlinkError, RouteTo};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {errno}{hint}", hint = if *.errno == nix::errno::Errno::EPERM { " (pod networks need root)" } else { "" })]
    Sys { what: String, errno: nix::Error },
    #[error("no free address left in {0}: remove pods or give the node a larger range")]
    Exhausted(Ipv4Net),
}

type Result<T> = std::result::Result<T, NetError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The routes that keep the default cluster ranges (k3s': pods 10.42.0.0/16, services
/// 10.43.0.0/16) on the machine: for a node whose pods are in the default pod range, both are
/// blackholed, so nothing addressed to them leaves through the default route. Routes to other
/// nodes' pod ranges are more specific and win.
pub fn default_blackholes(range: Ipv4Net) -> Vec<Ipv4Net> {
    let pods = Ipv4Net {
        addr: Ipv4Addr::new(10, 42, 0, 0),
        prefix: 16,
    };
    if pods.contains(range.network()) {
        vec![
            pods,
            Ipv4Net {
                addr: Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
        ]
    } else {
        vec![]
    }
}

/// A node's pod network: its bridge, its range, and where leases and namespaces live.
#[derive(Debug, Clone)]
pub struct Network {
    pub bridge: String,
    pub range: Ipv4Net,
    /// Lease files, one per address in use.
    pub ipam_dir: PathBuf,
    /// Network namespace files, one per pod (nsfs bind mounts).
    pub netns_dir: PathBuf,
    /// Ranges routed nowhere on the host (the cluster's pod and service ranges), so nothing
    /// addressed to them leaves the machine. The node's own range is routed to its bridge.
    pub blackholes: Vec<Ipv4Net>,
}

/// A pod's network, as set up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetwork {
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub host_veth: String,
}

/// The host side's name of a pod's veth (at most 15 bytes, as the kernel requires).
pub fn host_veth_name(pod: &str) -> String {
    // Stable across versions and processes: a restarted agent finds the veths it made.
    let h = berth_api::names::fnv1a(pod.as_bytes());
    format!("vb{:012x}", h & 0xffff_ffff_ffff)
}

impl Network {
    /// Creates the bridge (with the range's first address) and the blackhole routes if they
    /// are missing. Safe to call from several processes at once.
    pub fn ensure_bridge(&self) -> Result<u32> {
        let mut nl = Netlink::new()?;
        let index = match nl.link_index(&self.bridge)? {
            Some(i) => i,
            None => {
                match nl.add_bridge(&self.bridge) {
                    Err(e) if e.errno() == Some(libc::EEXIST) => {}
                    r => r?,
                }
                nl.link_index(&self.bridge)?.ok_or_else(|| NetError::Sys {
                    what: format!("bridge {} vanished after creation", self.bridge),
                    errno: nix::errno::Errno::ENODEV,
                })?
            }
        };
        nl.add_address(index, self.range.gateway(), self.range.prefix)?;
        nl.set_up(index)?;
        for b in &self.blackholes {
            nl.add_route(b.network(), b.prefix, RouteTo::Blackhole)?;
        }
        Ok(index)
    }

    /// Removes the bridge and the blackhole routes (when the node goes away for good).
    pub fn remove_bridge(&self) -> Result<()> {
        let mut nl = Netlink::new()?;
        if let Some(i) = nl.link_index(&self.bridge)? {
            nl.del_link(i)?;
        }
        for b in &self.blackholes {
            nl.del_route(b.network(), b.prefix, RouteTo::Blackhole)?;
        }
        Ok(())
    }

    fn netns_path(&self, pod: &str) -> PathBuf {
        self.netns_dir.join(pod)
    }

    /// Takes a free address for `pod` (or the one it holds already).
    pub fn allocate(&self, pod: &str) -> Result<Ipv4Addr> {
        std::fs::create_dir_all(&self.ipam_dir).map_err(io(&self.ipam_dir))?;
        if let Some(ip) = self.lease_of(pod)? {
            return Ok(ip);
        }
        // Start after the last address handed out, so a released address is not reused at
        // once (a stale peer might still be talking to it).
        let last_file = self.ipam_dir.join("last");
        let last: Option<Ipv4Addr> = std::fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let all: Vec<Ipv4Addr> = self.range.pod_addresses().collect();
        let start = last
            .and_then(|l| all.iter().position(|a| *a == l))
            .map_or(0, |p| p + 1);
        for i in 0..all.len() {
            let ip = all[(start + i) % all.len()];
            let path = self.ipam_dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(pod.as_bytes()).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                    let _ = std::fs::write(&last_file, ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(NetError::Exhausted(self.range))
    }

    /// Every lease: (address, pod).
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let entries = match std::fs::read_dir(&self.ipam_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.ipam_dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(ip) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Ok(pod) = std::fs::read_to_string(e.path()) {
                out.push((ip, pod));
            }
        }
        out.sort();
        Ok(out)
    }

    fn lease_of(&self, pod: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .leases()?
            .into_iter()
            .find(|(_, p)| p == pod)
            .map(|(ip, _)| ip))
    }

    /// Gives back every address `pod` holds.
    pub fn release(&self, pod: &str) -> Result<()> {
        for (ip, p) in self.leases()? {
            if p == pod {
                let path = self.ipam_dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&path)(e));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Makes the pod's sandbox: namespace, loopback, veth to the bridge, address, route.
    /// On failure, whatever was made is removed again.
    pub fn setup(&self, pod: &str) -> Result<PodNetwork> {
        let bridge = self.ensure_bridge()?;
        let ip = self.allocate(pod)?;
        let made = self.setup_links(pod, bridge, ip);
        if made.is_err() {
            let _ = self.teardown(pod);
        }
        made
    }

    fn setup_links(&self, pod: &str, bridge: u32, ip: Ipv4Addr) -> Result<PodNetwork> {
        std::fs::create_dir_all(&self.netns_dir).map_err(io(&self.netns_dir))?;
        let netns = self.netns_path(pod);
        let host_veth = host_veth_name(pod);
        let gateway = self.range.gateway();
        let prefix = self.range.prefix;
        // One thread does it all: its netlink socket to the host is opened before it moves
        // into the new namespace, and the namespace dies with the thread unless mounted.
        let netns2 = netns.clone();
        let host_veth2 = host_veth.clone();
        let handle = std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || -> Result<()> {
                let mut host = Netlink::new()?;
                std::fs::File::create(&netns2).map_err(io(&netns2))?;
                unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| NetError::Sys {
                    what: "create a network namespace".into(),
                    errno,
                })?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &netns2,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|errno| NetError::Sys {
                    what: format!("bind the network namespace to {}", netns2.display()),
                    errno,
                })?;
                let ns = std::fs::File::open("/proc/thread-self/ns/net")
                    .map_err(io(Path::new("/proc/thread-self/ns/net")))?;
                host.add_veth(&host_veth2, "eth0", ns.as_raw_fd())?;
                let hidx = host.link_index(&host_veth2)?.ok_or_else(|| NetError::Sys {
                    what: format!("veth {host_veth2} vanished"),
                    errno: nix::errno::Errno::ENODEV,
                })?;
                host.set_master(hidx, bridge)?;
                host.set_up(hidx)?;
                let mut inside = Netlink::new()?;
                let lo = inside.link_index("lo")?.unwrap_or(1);
                inside.set_up(lo)?;
                let eth0 = inside.link_index("eth0")?.ok_or_else(|| NetError::Sys {
                    what: "eth0 did not arrive in the pod's namespace".into(),
                    errno: nix::errno::Errno::ENODEV,
                })?;
                inside.add_address(eth0, ip, prefix)?;
                inside.set_up(eth0)?;
                inside.add_route(Ipv4Addr::UNSPECIFIED, 0, RouteTo::Gateway(gateway))?;
                Ok(())
            })
            .map_err(io(&netns))?;
        handle.join().map_err(|_| NetError::Sys {
            what: "the network setup thread panicked".into(),
            errno: nix::errno::Errno::EIO,
        })??;
        Ok(PodNetwork {
            netns,
            ip,
            gateway,
            prefix,
            host_veth,
        })
    }

    /// Removes the pod's veth, namespace and lease. Idempotent: anything already gone is fine.
    pub fn teardown(&self, pod: &str) -> Result<()> {
        let mut nl = Netlink::new()?;
        if let Some(i) = nl.link_index(&host_veth_name(pod))? {
            match nl.del_link(i) {
                Err(e) if e.errno() == Some(libc::ENODEV) => {}
                r => r?,
            }
        }
        let netns = self.netns_path(pod);
        if netns.exists() {
            match umount2(&netns, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(errno) => {
                    return Err(NetError::Sys {
                        what: format!("unmount {}", netns.display()),
                        errno,
                    });
                }
            }
            let _ = std::fs::remove_file(&netns);
        }
        self.release(pod)
    }

    /// Pods that left something behind (a namespace file or a lease) — what a restarted node
    /// must tear down when they are not among its live pods.
    pub fn pods_with_leftovers(&self) -> Result<Vec<String>> {
        let mut pods: Vec<String> = self.leases()?.into_iter().map(|(_, p)| p).collect();
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            pods.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        pods.sort();
        pods.dedup();
        Ok(pods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (The range arithmetic is tested with `Ipv4Net` in `berth_api::cidr`.)
    #[test]
    fn veth_names_fit() {
        assert!(host_veth_name("some-very-long-pod-id-0123456789").len() <= 15);
    }

    #[test]
    fn leases_are_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let net = Network {
            bridge: "unused".into(),
            range: "10.99.0.0/29".parse().unwrap(),
            ipam_dir: dir.path().join("ipam"),
            netns_dir: dir.path().join("netns"),
            blackholes: vec![],
        };
        // A /29 has 8 addresses: network, gateway, broadcast, and 5 for pods.
        let ips: Vec<_> = (0..5)
            .map(|i| net.allocate(&format!("p{i}")).unwrap())
            .collect();
        let mut unique = ips.clone();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        assert_eq!(
            net.allocate("p0").unwrap(),
            ips[0],
            "a pod keeps its address"
        );
        assert!(matches!(net.allocate("p5"), Err(NetError::Exhausted(_))));
        net.release("p2").unwrap();
        assert_eq!(net.allocate("p5").unwrap(), ips[2]);
        assert_eq!(net.pods_with_leftovers().unwrap().len(), 5);
    }
}

//! A cluster of several machines on this one (as root): an underlay bridge of the test's
//! own, `berth server` in a network namespace on it, and N nodes, each a network namespace
//! with its own address on the underlay, running `berth agent` with its own data directory,
//! pod bridge and range, and cgroup parent. A node can die (its agent, shims and containers
//! SIGKILLed), come back, and be cut off from the others (its underlay link down) and
//! healed. Everything is removed on drop, pass or fail.
//!
//! Processes enter only the namespace's network (`nsenter --net`): mounts and cgroups stay
//! the machine's, as they would be on a real node.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{BIN, berth, eventually, get_json, stderr, stdout};

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace joined to `bridge` by a veth (`link` on the host side, `eth0`
/// inside) with `addr` (a /24).
fn add_namespace(ns: &str, bridge: &str, link: &str, addr: &str) {
    ip(&["netns", "add", ns]);
    ip(&[
        "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ]);
    ip(&["link", "set", link, "master", bridge, "up"]);
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", ns, "link", "set", "eth0", "up"]);
    ip(&["-n", ns, "link", "set", "lo", "up"]);
}

fn in_namespace(ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(BIN);
    c
}

pub struct Node {
    pub name: String,
    pub ip: String,
    ns: String,
    /// The host side of its underlay link.
    link: String,
    pub data: PathBuf,
    pub bridge: String,
    pub cidr: String,
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl Node {
    /// The node's runtime, as its agent sees it (for inspection and cleanup).
    pub fn runtime(&self) -> berth_runtime::pod::Runtime {
        let mut rt = super::node_runtime(&self.data, &self.bridge, &self.cidr);
        rt.cgroup_parent = self.cgroup_parent.clone();
        rt
    }

    /// Kills what runs on the node: its agent, its pods' shims and every process in its
    /// cgroup tree, as a machine's power loss would.
    fn kill_everything(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let rt = self.runtime();
        for id in rt.pod_ids() {
            let pid_file = rt.pod_dir(&id).join(berth_runtime::shim::PID_FILE);
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                super::kill_pid(pid, 9);
            }
        }
        berth_runtime::pod::kill_cgroup(&self.cgroup_parent);
    }
}

fn spawn_agent(url: &str, token: &str, ca: &Path, node: &mut Node) {
    let child = in_namespace(&node.ns)
        .args(["agent", "--server", url, "--token", token])
        .arg("--ca-file")
        .arg(ca)
        .args(["--node-name", &node.name, "--node-ip", &node.ip])
        .arg("--data-dir")
        .arg(&node.data)
        .args(["--bridge", &node.bridge])
        .args(["--cgroup-parent", &node.cgroup_parent])
        .args(["--restart-backoff", "1s"])
        // Cluster DNS answers cluster names only: nothing is forwarded off the machine.
        .args(["--dns-upstream", "none"])
        .args(["--proxy-drain-timeout", "3s"])
        // Tests render ConfigTemplates into the harness's directory (the nodes' data dirs
        // are in it too).
        .arg("--config-template-dir")
        .arg(node.data.parent().expect("the harness directory"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start berth agent");
    node.child = Some(child);
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    underlay: String,
    prefix: String,
    /// A second underlay on another subnet, behind a router namespace (`start_routed`).
    far: Option<(String, String)>,
    router_ns: Option<String>,
    server_ns: String,
    server: Option<Child>,
    pub url: String,
    pub kubeconfig: PathBuf,
    token: String,
    pub nodes: Vec<Node>,
}

impl Harness {
    /// Starts the server (with `server_args`) and `n` nodes, and waits until every node is
    /// Ready.
    pub fn start(n: usize, server_args: &[&str]) -> Harness {
        Self::start_routed(n, 0, server_args)
    }

    /// As `start`, with `far` more nodes on a second underlay of another subnet, reached
    /// through a router namespace (so their pods are reached through tunnels).
    pub fn start_routed(n: usize, far: usize, server_args: &[&str]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (underlay, cidr) = berth_testkit::unique_net();
        let prefix = cidr.trim_end_matches(".0/24").to_string();
        let mut h = Harness {
            dir,
            server_ns: format!("{underlay}s"),
            underlay,
            prefix,
            far: None,
            router_ns: None,
            server: None,
            url: String::new(),
            kubeconfig: PathBuf::new(),
            token: String::new(),
            nodes: Vec::new(),
        };
        ip(&["link", "add", &h.underlay, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", h.prefix),
            "dev",
            &h.underlay,
        ]);
        ip(&["link", "set", &h.underlay, "up"]);
        let server_ip = format!("{}.1", h.prefix);
        add_namespace(&h.server_ns, &h.underlay, &h.server_ns, &server_ip);
        if far > 0 {
            h.add_router();
        }
        let data = h.dir.path().join("server");
        let mut child = in_namespace(&h.server_ns)
            .args(["server", "--data-dir"])
            .arg(&data)
            .args(["--api-listen", &format!("{server_ip}:6443")])
            .args(server_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start berth server");
        h.url = super::ready_url(&mut child, "server");
        h.server = Some(child);
        h.kubeconfig = data.join("kubeconfig.yaml");
        let o = berth(
            &h.kubeconfig,
            &["token", "create", "--description", "harness"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        h.token = stdout(&o).trim().to_string();
        for i in 0..n + far {
            let name = format!("node-{}", (b'a' + i as u8) as char);
            let is_far = i >= n;
            let (ns, node_ip) = match (&h.far, is_far) {
                (Some((bridge, prefix)), true) => {
                    let ns = format!("{}f{i}", h.underlay);
                    let node_ip = format!("{prefix}.{}", 10 + i);
                    add_namespace(&ns, bridge, &ns, &node_ip);
                    (ns, node_ip)
                }
                _ => {
                    let ns = format!("{}n{i}", h.underlay);
                    let node_ip = format!("{}.{}", h.prefix, 10 + i);
                    add_namespace(&ns, &h.underlay, &ns, &node_ip);
                    (ns, node_ip)
                }
            };
            h.route_across(&ns, is_far);
            // The pod range comes from the server (`--cluster-cidr`, 10.42.0.0/16): each
            // node's bridge and pods live in its own namespace, so the default range is the
            // test's own.
            let (bridge, _) = berth_testkit::unique_net();
            let cidr = String::from("10.42.0.0/24");
            let mut node = Node {
                cgroup_parent: format!("/berth-{}-{name}", h.underlay),
                name,
                ip: node_ip,
                link: ns.clone(),
                ns,
                data: h.dir.path().join(format!("node{i}")),
                bridge,
                cidr,
                child: None,
            };
            spawn_agent(&h.url, &h.token, &h.ca_file(), &mut node);
            h.nodes.push(node);
        }
        h.wait_ready(n + far);
        h
    }

    /// A second underlay bridge on its own subnet, and a router namespace between the two.
    fn add_router(&mut self) {
        let (bridge, cidr) = berth_testkit::unique_net();
        let prefix = cidr.trim_end_matches(".0/24").to_string();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["link", "set", &bridge, "up"]);
        let r = format!("{}g", self.underlay);
        ip(&["netns", "add", &r]);
        for (side, br, addr) in [
            (
                "a",
                self.underlay.clone(),
                format!("{}.253/24", self.prefix),
            ),
            ("b", bridge.clone(), format!("{prefix}.253/24")),
        ] {
            let host = format!("{r}{side}");
            let inside = format!("eth{side}");
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &inside, "netns", &r,
            ]);
            ip(&["link", "set", &host, "master", &br, "up"]);
            ip(&["-n", &r, "addr", "add", &addr, "dev", &inside]);
            ip(&["-n", &r, "link", "set", &inside, "up"]);
        }
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .output()
            .expect("sysctl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        self.far = Some((bridge, prefix));
        self.router_ns = Some(r);
        let server_ns = self.server_ns.clone();
        self.route_across(&server_ns, false);
    }

    /// Routes a namespace's traffic for the other underlay through the router.
    fn route_across(&self, ns: &str, is_far: bool) {
        let Some((_, far_prefix)) = &self.far else {
            return;
        };
        let (to, via) = if is_far {
            (format!("{}.0/24", self.prefix), format!("{far_prefix}.253"))
        } else {
            (format!("{far_prefix}.0/24"), format!("{}.253", self.prefix))
        };
        ip(&["-n", ns, "route", "add", &to, "via", &via]);
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server/pki/ca.crt")
    }

    /// The join token the nodes were started with.
    pub fn join_token(&self) -> &str {
        &self.token
    }

    /// Waits until `n` nodes report Ready.
    pub fn wait_ready(&self, n: usize) {
        eventually(30, &format!("{n} Ready nodes"), || {
            (self.ready_nodes().len() == n).then_some(())
        });
    }

    /// The names of the nodes whose Ready condition is True.
    pub fn ready_nodes(&self) -> Vec<String> {
        get_json(&self.kubeconfig, &["nodes"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| super::is_ready(n))
            .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
            .collect()
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The machine dies: agent, shims and containers SIGKILLed.
    pub fn kill(&mut self, name: &str) {
        self.node(name).kill_everything();
    }

    /// The machine boots again: its agent starts over the same data directory.
    pub fn restart(&mut self, name: &str) {
        let (url, token, ca) = (self.url.clone(), self.token.clone(), self.ca_file());
        spawn_agent(&url, &token, &ca, self.node(name));
    }

    /// Cuts the node off the underlay (everything keeps running on it).
    pub fn partition(&mut self, name: &str) {
        let link = self.node(name).link.clone();
        ip(&["link", "set", &link, "down"]);
    }

    /// Joins it again.
    pub fn heal(&mut self, name: &str) {
        let link = self.node(name).link.clone();
        ip(&["link", "set", &link, "up"]);
    }

    /// The server's network namespace: a machine on the underlay that is no node.
    pub fn server_netns(&self) -> String {
        self.server_ns.clone()
    }

    /// The node's network namespace (for `ip -n NS ...`, `nsenter --net=/run/netns/NS`).
    pub fn netns(&self, name: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("node")
            .ns
            .clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill_everything();
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for node in &mut self.nodes {
            let rt = node.runtime();
            for id in rt.pod_ids() {
                let _ = rt.remove_pod(&id);
            }
            berth_runtime::pod::remove_cgroup(&node.cgroup_parent);
        }
        // The links go first: a namespace can outlive its name while the kernel still holds
        // sockets of it (connections to a peer that is gone retransmit for minutes), and its
        // veth would stay on the host until then.
        let links = self.nodes.iter().map(|n| (&n.link, &n.ns));
        for (link, ns) in links.chain([(&self.server_ns, &self.server_ns)]) {
            let _ = Command::new("ip").args(["link", "del", link]).status();
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(r) = &self.router_ns {
            for side in ["a", "b"] {
                let _ = Command::new("ip")
                    .args(["link", "del", &format!("{r}{side}")])
                    .status();
            }
            let _ = Command::new("ip").args(["netns", "del", r]).status();
        }
        if let Some((bridge, _)) = &self.far {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.underlay])
            .status();
    }
}

//! Pod sandboxes on a real bridge (needs root): addresses, loopback, reachability, and that
//! teardown leaves nothing behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;

use berth_netlink::Netlink;
use berth_runtime::net::{Network, host_veth_name};

/// Runs `f` on a thread inside the network namespace at `netns`.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

struct Cleanup(Network, Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.1 {
            let _ = self.0.teardown(p);
        }
        let _ = self.0.remove_bridge();
    }
}

#[test]
fn two_pods_reach_each_other_and_teardown_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, range) = berth_testkit::unique_net();
    let net = Network {
        bridge,
        range: range.parse().unwrap(),
        ipam_dir: dir.path().join("ipam"),
        netns_dir: dir.path().join("netns"),
        blackholes: vec![],
    };
    let pods = vec!["pod-a".to_string(), "pod-b".to_string()];
    let _cleanup = Cleanup(net.clone(), pods.clone());
    let a = net.setup(&pods[0]).unwrap();
    let b = net.setup(&pods[1]).unwrap();
    assert_ne!(a.ip, b.ip);
    assert!(net.range.contains(a.ip) && net.range.contains(b.ip));
    assert_eq!(a.gateway, net.range.gateway());

    // A server in pod A, on its pod address; pod B connects over the bridge.
    let (tx, rx) = std::sync::mpsc::channel();
    let a_ip = a.ip;
    let server = {
        let ns = a.netns.clone();
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let l = TcpListener::bind((a_ip, 8080)).unwrap();
                // Loopback is up inside the pod too.
                let lo = TcpListener::bind((Ipv4Addr::LOCALHOST, 8081)).unwrap();
                tx.send(()).unwrap();
                let (mut s, peer) = l.accept().unwrap();
                s.write_all(b"hello from a").unwrap();
                let c = TcpStream::connect((Ipv4Addr::LOCALHOST, 8081)).unwrap();
                drop((c, lo.accept().unwrap()));
                peer.ip()
            })
        })
    };
    rx.recv().unwrap();
    let got = in_netns(&b.netns, move || {
        let mut s = TcpStream::connect((a_ip, 8080)).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    });
    assert_eq!(got, "hello from a");
    assert_eq!(
        server.join().unwrap(),
        std::net::IpAddr::V4(b.ip),
        "the peer is pod B's own address"
    );

    for p in &pods {
        net.teardown(p).unwrap();
        net.teardown(p).unwrap(); // idempotent
    }
    let mut nl = Netlink::new().unwrap();
    for p in &pods {
        assert_eq!(nl.link_index(&host_veth_name(p)).unwrap(), None);
        assert!(!net.netns_dir.join(p).exists());
    }
    assert!(net.leases().unwrap().is_empty());
    assert!(net.pods_with_leftovers().unwrap().is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&net.netns_dir.display().to_string()));
}

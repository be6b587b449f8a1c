//! Cluster DNS throughput on one node (as root): a release `berth up` (its own bridge and
//! range, forwarding off), one Service, and a load generator in this process asking its
//! name, `web.default.svc.cluster.local` A, over UDP from 32 sockets, each with one query
//! in flight, for 5 s (only cluster names, only to the node's own gateway address). Prints
//! answers per second and latency percentiles. The generator shares the machine's 2 cores
//! with the server.
//!
//! `cargo bench -p berth --bench dns` (or `scripts/bench dns`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{BerthProcess, berth, eventually, get_json, stderr};

const SOCKETS: usize = 32;
const RUN: Duration = Duration::from_secs(5);

/// A standard query for `name` A, with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the DNS benchmark needs root");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let up = BerthProcess::start("up", &dir.path().join("data"));
    let kc = up.kubeconfig();
    let file = dir.path().join("svc.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let vip = get_json(&kc, &["svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, cidr) = up.net.clone().unwrap();
    let net: Ipv4Addr = cidr.trim_end_matches("/24").parse().unwrap();
    let server = SocketAddr::from((Ipv4Addr::from(u32::from(net) + 1), 53));
    let name = "web.default.svc.cluster.local";
    // Ready once the node's DNS knows the Service.
    eventually(20, "the Service in DNS", || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        s.send_to(&query(1, name), server).ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        (n > 12 && buf[3] & 0x0f == 0 && buf[7] == 1).then_some(())
    });
    let deadline = Instant::now() + RUN;
    let workers: Vec<_> = (0..SOCKETS)
        .map(|w| {
            std::thread::spawn(move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut lat = Vec::new();
                let mut lost = 0u64;
                let mut buf = [0u8; 512];
                let mut id = (w as u16) << 10;
                while Instant::now() < deadline {
                    id = id.wrapping_add(1);
                    let t = Instant::now();
                    s.send_to(&query(id, name), server).unwrap();
                    match s.recv(&mut buf) {
                        Ok(n) if n > 12 && buf[..2] == id.to_be_bytes() => lat.push(t.elapsed()),
                        _ => lost += 1,
                    }
                }
                (lat, lost)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut lost = 0;
    for w in workers {
        let (l, x) = w.join().unwrap();
        lat.extend(l);
        lost += x;
    }
    lat.sort();
    println!(
        "| what | answers/s | p50 | p99 | lost |\n|---|---:|---:|---:|---:|\n| `{name}` A ({vip}), UDP, {SOCKETS} sockets x 1 in flight, {} s | **{:.0}** | {:.0} µs | {:.0} µs | {lost} |",
        RUN.as_secs(),
        lat.len() as f64 / RUN.as_secs_f64(),
        pct(&lat, 0.5).as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6,
    );
}

//! Propagation (as root): how long after a pod becomes Ready each consumer of it knows. A
//! release `berth up` (its own bridge and range, DNS forwarding off), a Service `web` and a
//! headless `web-h` selecting the pod, and a ConfigTemplate rendering the Service's ready
//! endpoints into a file (debounce min 100 ms). Each round a pod starts; the clock starts when
//! this process's watch of the API sees it Ready, and stops, for each consumer, when:
//!
//! - DNS: the node's cluster DNS answers `web-h.default.svc.cluster.local` with its address;
//! - proxy: a connection to the cluster IP of `web` is answered by the pod;
//! - KV: the key/value watch of `/services/default/web` delivers its registration;
//! - template: the rendered file holds its address.
//!
//! Each is polled every 0.5 ms (DNS, proxy, file) or watched (KV). The reference is the
//! benchmark's own watch event, so a consumer can be slightly ahead of it (a negative time).
//! Then the pod is deleted and the round waits for every consumer to forget it.
//!
//! `cargo bench -p berth --bench propagation` (or `scripts/bench propagation`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BerthProcess, berth, eventually, get_json, stderr};

const ROUNDS: usize = 50;

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The A records of an answer.
fn a_records(resp: &[u8]) -> Vec<Ipv4Addr> {
    // Answers to our own fixed-shape query: the question is at 12.., then answers with a
    // compressed name (2 bytes), type, class, ttl, rdlength, rdata.
    let Some(qend) = resp.get(12..).and_then(|r| r.iter().position(|b| *b == 0)) else {
        return Vec::new();
    };
    let mut at = 12 + qend + 1 + 4;
    let count = u16::from_be_bytes([resp[6], resp[7]]);
    let mut out = Vec::new();
    for _ in 0..count {
        if resp.len() < at + 12 {
            break;
        }
        let rdlen = u16::from_be_bytes([resp[at + 10], resp[at + 11]]) as usize;
        if rdlen == 4 && resp.len() >= at + 16 {
            out.push(Ipv4Addr::new(
                resp[at + 12],
                resp[at + 13],
                resp[at + 14],
                resp[at + 15],
            ));
        }
        at += 12 + rdlen;
    }
    out
}

fn dns_has(sock: &UdpSocket, server: SocketAddr, ip: Ipv4Addr, id: u16) -> bool {
    let _ = sock.send_to(&query(id, "web-h.default.svc.cluster.local"), server);
    let mut buf = [0u8; 512];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) if buf[..2] == id.to_be_bytes() => return a_records(&buf[..n]).contains(&ip),
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// Whether the cluster IP answers with the pod's own name.
fn proxy_reaches(vip: SocketAddr, pod: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&vip, Duration::from_millis(50)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains(pod)
}

fn pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: host
    command: ["/usr/bin/python3", "-c", "import http.server, os\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        b = os.environ['HOSTNAME'].encode()\n        self.send_response(200)\n        self.send_header('Content-Length', str(len(b)))\n        self.end_headers()\n        self.wfile.write(b)\n    def log_message(self, *a):\n        pass\nhttp.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n"]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#
    )
}

fn summary(name: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1],
        ms.len()
    )
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the propagation benchmark needs root");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let up = BerthProcess::start_with("up", &dir.path().join("data"), &["--node-name", "bench"]);
    let kc = up.kubeconfig();
    let out = dir.path().join("rendered.conf");
    let manifest = dir.path().join("setup.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-h}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 8080}}]
---
apiVersion: berth.dev/v1
kind: ConfigTemplate
metadata: {{name: list}}
spec:
  nodeName: bench
  destination: {out}
  debounce: {{min: 100ms, max: 1s}}
  template: |
    {{% for s in services if s.name == "web" %}}
    {{% for e in s.endpoints %}}
    server {{{{ e.ip }}}}
    {{% endfor %}}
    {{% endfor %}}
"#,
            out = out.display()
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let vip: Ipv4Addr = get_json(&kc, &["svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let vip = SocketAddr::from((vip, 80));
    let (_, cidr) = up.net.clone().unwrap();
    let net: Ipv4Addr = cidr.trim_end_matches("/24").parse().unwrap();
    let dns = SocketAddr::from((Ipv4Addr::from(u32::from(net) + 1), 53));
    eventually(30, "the first render", || out.exists().then_some(()));

    // Our own watches: pods (Ready seen) and the Service's key/value directory.
    let ready_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let kv_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cfg = berth_client::KubeConfig::load(&kc).unwrap();
    let client = berth_client::Client::from_kubeconfig(&cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let (client, ready_at) = (client.clone(), ready_at.clone());
        rt.spawn(async move {
            let pods = berth_api::kinds::resolve("pods").unwrap();
            let mut w = client.watch(pods, Some("default"), "").await.unwrap();
            while let Ok(Some(ev)) = w.next().await {
                if common::is_ready(&ev.object) {
                    let name = ev.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    ready_at
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        });
    }
    {
        let (client, kv_at) = (client.clone(), kv_at.clone());
        rt.spawn(async move {
            let mut s = client
                .json_lines(&berth_client::kv_path(
                    "/services/default/web",
                    "watch=1&recurse=1",
                ))
                .await
                .unwrap();
            while let Ok(Some(ev)) = s.next().await {
                if ev["type"] == "PUT" {
                    let key = ev["key"].as_str().unwrap_or("");
                    let pod = key.rsplit('/').next().unwrap_or("").to_string();
                    kv_at
                        .lock()
                        .unwrap()
                        .entry(pod)
                        .or_insert_with(Instant::now);
                }
            }
        });
    }

    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut t_dns, mut t_proxy, mut t_kv, mut t_file) = (vec![], vec![], vec![], vec![]);
    let ms = |a: Instant, b: Instant| {
        if b >= a {
            (b - a).as_secs_f64() * 1000.0
        } else {
            -((a - b).as_secs_f64() * 1000.0)
        }
    };
    let mut id: u16 = 0;
    for round in 0..ROUNDS {
        let name = format!("p{round}");
        let file = dir.path().join("pod.yaml");
        std::fs::write(&file, pod(&name)).unwrap();
        let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let ip: Ipv4Addr = eventually(30, "the pod's address", || {
            get_json(&kc, &["pod", &name])["status"]["podIP"]
                .as_str()?
                .parse()
                .ok()
        });
        let (mut dns_at, mut proxy_at, mut file_at) = (None, None, None);
        let started = Instant::now();
        while dns_at.is_none() || proxy_at.is_none() || file_at.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round} stuck"
            );
            id = id.wrapping_add(1);
            if dns_at.is_none() && dns_has(&sock, dns, ip, id) {
                dns_at = Some(Instant::now());
            }
            if proxy_at.is_none() && proxy_reaches(vip, &name) {
                proxy_at = Some(Instant::now());
            }
            if file_at.is_none()
                && std::fs::read_to_string(&out)
                    .unwrap_or_default()
                    .contains(&format!("server {ip}\n"))
            {
                file_at = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let ready = eventually(10, "our watch to see it Ready", || {
            ready_at.lock().unwrap().get(&name).copied()
        });
        let kv = eventually(10, "the registration", || {
            kv_at.lock().unwrap().get(&name).copied()
        });
        t_dns.push(ms(ready, dns_at.unwrap()));
        t_proxy.push(ms(ready, proxy_at.unwrap()));
        t_kv.push(ms(ready, kv));
        t_file.push(ms(ready, file_at.unwrap()));
        // Gone everywhere before the next round.
        let o = berth(
            &kc,
            &["delete", "pod", &name, "--grace-period", "0", "--force"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        eventually(30, "the pod forgotten", || {
            id = id.wrapping_add(1);
            let gone = !dns_has(&sock, dns, ip, id)
                && !std::fs::read_to_string(&out)
                    .unwrap_or_default()
                    .contains(&format!("server {ip}\n"))
                && get_json(&kc, &["pods"])["items"]
                    .as_array()
                    .is_none_or(|a| a.is_empty());
            gone.then_some(())
        });
    }
    println!("| consumer | p50 | p99 | max | rounds |\n|---|---:|---:|---:|---:|");
    println!("{}", summary("cluster DNS (headless A record)", t_dns));
    println!(
        "{}",
        summary("service proxy (cluster IP answered by the pod)", t_proxy)
    );
    println!("{}", summary("key/value registration (watch event)", t_kv));
    println!(
        "{}",
        summary(
            "rendered file (ConfigTemplate, debounce min 100 ms)",
            t_file
        )
    );
}

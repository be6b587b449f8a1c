//! Proxying beside haproxy and nginx (as root), with wrk in the same run: a release
//! `berth up` (its own bridge and range) runs one backend pod (Debian's nginx answering a
//! 2-byte body), a Service for it and an Ingress; on this machine, Debian's haproxy (TCP and
//! HTTP mode) and nginx (an HTTP reverse proxy with upstream keep-alive) proxy to the same
//! pod. wrk (5 s, keep-alive; five rounds with the paths in turn, median shown) measures each
//! path, loaded (2 threads, 64 connections) and one request at a time (1 connection, for the
//! latency a proxy adds):
//!
//! - L4: the pod directly; berth's cluster IP; haproxy `mode tcp`;
//! - L7: berth's ingress (by Host); nginx `proxy_pass`; haproxy `mode http`.
//!
//! Prints requests/s and latency percentiles, p99 added over the direct path, and the CPU
//! time (user and system, from /proc) the proxy's processes spent per request, which varies
//! less between runs than requests/s. Everything shares this machine's cores (wrk, the proxy
//! under test and the backend).
//!
//! `cargo bench -p berth --bench proxy` (or `scripts/bench proxy`); `-- --hold` sets the paths
//! up and keeps them until its input ends, for profiling by hand.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BerthProcess, berth, eventually, get_json, stderr};

const RUN: &str = "5s";
/// Each path is measured this many times, in turn with the others; the median is shown.
const ROUNDS: usize = 5;

/// A process of the comparison, stopped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        common::kill_pid(self.0.id() as i32, 15);
        let _ = self.0.wait();
    }
}

const BACKEND: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: backend, labels: {app: backend}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: nginx
    image: host
    command: ["/bin/sh", "-c", "mkdir -p /tmp/n && printf 'user root; worker_processes 1; pid /tmp/n/pid; error_log stderr; events { worker_connections 4096; } http { access_log off; client_body_temp_path /tmp/n; proxy_temp_path /tmp/n; fastcgi_temp_path /tmp/n; uwsgi_temp_path /tmp/n; scgi_temp_path /tmp/n; keepalive_requests 1000000; server { listen 8080; location / { return 200 ok; } } }' > /tmp/n/conf && exec /usr/sbin/nginx -g 'daemon off;' -c /tmp/n/conf"]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench}
spec:
  rules:
  - host: bench.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {name: http}}}}
"#;

struct Result {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: bool,
    /// CPU time the proxy process(es) spent per request (user + system), in µs.
    cpu_us: Option<f64>,
}

/// The fields of `/proc/PID/stat` after the command, from the state (field 3 in proc(5)).
fn stat_fields(pid: impl std::fmt::Display) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Field `n` (numbered as in proc(5), n >= 3) of a process's stat.
fn stat_field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n - 3).and_then(|v| v.parse().ok())
}

/// The processes of `root`: itself and its children (nginx's workers).
fn family(root: i32) -> Vec<i32> {
    let mut pids = vec![root];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if stat_field(&stat_fields(pid), 4) == Some(root as u64) {
            pids.push(pid);
        }
    }
    pids
}

/// User + system CPU time (fields 14 and 15) of these processes, all their threads, in clock
/// ticks.
fn cpu_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .map(|pid| {
            let f = stat_fields(pid);
            stat_field(&f, 14).unwrap_or(0) + stat_field(&f, 15).unwrap_or(0)
        })
        .sum()
}

/// Milliseconds of a wrk latency (`812.00us`, `1.23ms`, `1.01s`).
fn millis(s: &str) -> f64 {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, host: Option<&str>, connections: u32, proxy: &[i32]) -> Result {
    let mut c = Command::new("wrk");
    let threads = connections.min(2);
    c.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        "-d",
        RUN,
        "--latency",
    ]);
    if let Some(h) = host {
        c.args(["-H", &format!("Host: {h}")]);
    }
    let before = cpu_ticks(proxy);
    let o = c
        .arg(url)
        .output()
        .expect("wrk (scripts/bench installs it)");
    let ticks = cpu_ticks(proxy) - before;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()))
            .unwrap_or_default()
    };
    let total: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0.0))
        })
        .unwrap_or(0.0);
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    Result {
        cpu_us: (!proxy.is_empty() && total > 0.0).then(|| ticks as f64 / hz * 1e6 / total),
        rps: find("Requests/sec:").parse().unwrap_or(0.0),
        p50: millis(&find("50%")),
        p99: millis(&find("99%")),
        errors: text.contains("Socket errors") || text.contains("Non-2xx"),
    }
}

fn wait_port(addr: &str) {
    eventually(20, &format!("{addr} to listen"), || {
        std::net::TcpStream::connect(addr).ok().map(drop)
    });
}

fn haproxy(dir: &Path, pod: &str) -> Proc {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4096\ndefaults\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend l4\n  mode tcp\n  bind 127.0.0.1:18001\n  default_backend l4b\nbackend l4b\n  mode tcp\n  server s1 {pod}:8080\nfrontend l7\n  mode http\n  bind 127.0.0.1:18003\n  default_backend l7b\nbackend l7b\n  mode http\n  http-reuse always\n  server s1 {pod}:8080\n"
        ),
    )
    .unwrap();
    let p = Proc(
        Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/bench installs it)"),
    );
    wait_port("127.0.0.1:18001");
    wait_port("127.0.0.1:18003");
    p
}

fn nginx(dir: &Path, pod: &str) -> Proc {
    let d = dir.display();
    let cfg = dir.join("nginx.conf");
    std::fs::write(
        &cfg,
        format!(
            "user root;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  upstream b {{ server {pod}:8080; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:18002;\n    keepalive_requests 1000000;\n    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let p = Proc(
        Command::new("/usr/sbin/nginx")
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (scripts/bench installs it)"),
    );
    wait_port("127.0.0.1:18002");
    p
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the proxy benchmark needs root");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let up = BerthProcess::start_with("up", &dir.path().join("data"), &["--ingress-port", "18080"]);
    let kc = up.kubeconfig();
    let file = dir.path().join("backend.yaml");
    std::fs::write(&file, BACKEND).unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pod = eventually(60, "the backend Ready", || {
        let p = get_json(&kc, &["pod", "backend"]);
        common::is_ready(&p).then(|| p["status"]["podIP"].as_str().map(String::from))?
    });
    let vip = get_json(&kc, &["svc", "backend"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    wait_port(&format!("{vip}:80"));
    wait_port("127.0.0.1:18080");
    let _haproxy = haproxy(dir.path(), &pod);
    let _nginx = nginx(dir.path(), &pod);
    // Every path answers before the clock runs.
    std::thread::sleep(Duration::from_millis(500));

    let (berth_pid, haproxy_pid) = (vec![up.pid()], vec![_haproxy.0.id() as i32]);
    let nginx_pids = family(_nginx.0.id() as i32);
    let runs = [
        (
            "L4",
            "direct to the pod",
            format!("http://{pod}:8080/"),
            None,
            vec![],
        ),
        (
            "L4",
            "berth cluster IP",
            format!("http://{vip}/"),
            None,
            berth_pid.clone(),
        ),
        (
            "L4",
            "haproxy mode tcp",
            "http://127.0.0.1:18001/".to_string(),
            None,
            haproxy_pid.clone(),
        ),
        (
            "L7",
            "berth ingress",
            "http://127.0.0.1:18080/".to_string(),
            Some("bench.test"),
            berth_pid,
        ),
        (
            "L7",
            "nginx proxy_pass",
            "http://127.0.0.1:18002/".to_string(),
            None,
            nginx_pids,
        ),
        (
            "L7",
            "haproxy mode http",
            "http://127.0.0.1:18003/".to_string(),
            None,
            haproxy_pid,
        ),
    ];
    // `cargo bench ... -- ingress haproxy`: only the paths whose names contain these.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<_> = runs
        .iter()
        .filter(|(_, name, _, _, _)| {
            only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    // `-- --hold`: the paths stay up for profiling by hand until this program's input ends.
    if std::env::args().any(|a| a == "--hold") {
        for (layer, name, url, host, pids) in &selected {
            println!("{layer} {name}: {url} host={host:?} pids={pids:?}");
        }
        println!("holding; end the input (Ctrl-D) to stop");
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        return;
    }
    for connections in [64, 1] {
        // Rounds in turn, so a slow spell of the machine hits every path alike.
        let mut results: Vec<Vec<Result>> = selected.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, (_, _, url, host, pids)) in selected.iter().enumerate() {
                results[i].push(wrk(url, *host, connections, pids));
            }
        }
        // The run of median requests/s, with the median CPU per request of all runs.
        let median = |rs: &mut Vec<Result>| {
            let mut cpu: Vec<f64> = rs.iter().filter_map(|r| r.cpu_us).collect();
            cpu.sort_by(f64::total_cmp);
            rs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            let mut r = rs.remove(rs.len() / 2);
            r.cpu_us = cpu.get(cpu.len() / 2).copied();
            r
        };
        let mut direct_p99 = None;
        println!(
            "\n{connections} connection(s), median of {ROUNDS} runs of {RUN} each:\n\n| layer | path | requests/s | p50 | p99 | p99 added over direct | proxy CPU per request | errors |\n|---|---|---:|---:|---:|---:|---:|---|"
        );
        for ((layer, name, _, _, _), rs) in selected.iter().zip(results.iter_mut()) {
            let errors = rs.iter().any(|r| r.errors);
            let r = median(rs);
            if name.starts_with("direct") {
                direct_p99 = Some(r.p99);
            }
            let added = direct_p99.map_or("".to_string(), |d| format!("{:+.3} ms", r.p99 - d));
            let cpu = r.cpu_us.map_or("".to_string(), |c| format!("{c:.1} µs"));
            println!(
                "| {layer} | {name} | {:.0} | {:.3} ms | {:.3} ms | {added} | {cpu} | {} |",
                r.rps,
                r.p50,
                r.p99,
                if errors { "yes" } else { "none" }
            );
        }
    }
}

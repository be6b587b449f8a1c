//! The control plane's benchmarks, beside etcd 3.4 on the same machine in the same run.
//!
//! `cargo bench -p berth --bench control_plane` (etcd's rows need Debian's `etcd-server`;
//! `scripts/bench` installs it). Prints a Markdown table for docs/benchmarks.md.
//!
//! - durable writes/s with 1, 16 and 64 concurrent writers: berth's store in-process, berth's
//!   API over HTTP (create ConfigMap), etcd over its HTTP gateway (put), each its own process
//!   on loopback with its own fresh data directory;
//! - the cost of encryption at rest: Secret creates (AES-GCM) beside ConfigMap creates
//!   (`secrets`);
//! - watch delivery latency (write sent -> event received) with 1,000 HTTP watchers;
//! - list of 10,000 objects over HTTP;
//! - `berth up` cold start to ready, and idle RSS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_client::{Client, Method};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_berth");
const RUN: Duration = Duration::from_secs(4);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_http(url: &str, ca: &str) -> Duration {
    let started = Instant::now();
    let c = Client::new(url, "", ca);
    loop {
        if let Ok(r) = c.raw(Method::GET, "/readyz", None).await
            && r.status == 200
        {
            return started.elapsed();
        }
        if let Ok(r) = c.raw(Method::GET, "/health", None).await
            && r.status == 200
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts `berth server` (HTTPS, as users run it); returns the process, URL and CA.
fn start_berth(dir: &Path) -> (Proc, String, String) {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "server",
            "--data-dir",
            dir.to_str().unwrap(),
            "--api-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let ca_path = dir.join("pki/ca.crt");
    let started = Instant::now();
    while !ca_path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "berth did not write its CA"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut ca = String::new();
    while !ca.contains("END CERTIFICATE") {
        ca = std::fs::read_to_string(&ca_path).unwrap_or_default();
    }
    (Proc(child), url, ca)
}

fn token(dir: &Path) -> String {
    let t = std::fs::read_to_string(dir.join("tokens.csv")).unwrap();
    t.lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

fn start_etcd(dir: &Path) -> Option<(Proc, String)> {
    let etcd = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let (cp, pp) = (free_port(), free_port());
    let child = Command::new(etcd)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{cp}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{cp}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{pp}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{pp}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{pp}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Proc(child), format!("http://127.0.0.1:{cp}")))
}

fn b64(s: &str) -> String {
    berth_api::base64::encode(s.as_bytes())
}

/// Runs `writers` loops of `op` for `RUN`; returns completed operations per second.
async fn rate<F, Fut>(writers: usize, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while started.elapsed() < RUN {
                assert!(op(w, i).await, "write failed");
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn writes(out: &mut Vec<String>) {
    let mut rows = Vec::new();
    for writers in [1usize, 16, 64] {
        // berth's store, in-process
        let dir = tempfile::tempdir().unwrap();
        let store =
            berth_store::Store::open(dir.path(), berth_store::StoreOptions::default()).unwrap();
        let s = store.clone();
        let store_rate = rate(writers, move |w, i| {
            let s = s.clone();
            async move {
                s.put(
                    format!("/bench/{w}/{i}").as_bytes(),
                    b"0123456789abcdef0123456789abcdef",
                    berth_store::Origin::new("bench", "put"),
                )
                .await
                .is_ok()
            }
        })
        .await;
        store.close();

        // berth's API, its own process
        let dir = tempfile::tempdir().unwrap();
        let (_p, url, ca) = start_berth(dir.path());
        wait_http(&url, &ca).await;
        let c = Client::new(&url, &token(dir.path()), &ca);
        let cm = resolve("cm").unwrap();
        let api_rate = rate(writers, move |w, i| {
            let c = c.clone();
            async move {
                let o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("b-{w}-{i}")}, "data": {"v": "0123456789abcdef0123456789abcdef"}});
                c.create(cm, Some("default"), &o, "").await.is_ok()
            }
        })
        .await;
        drop(_p);

        // etcd, its own process
        let dir = tempfile::tempdir().unwrap();
        let etcd_rate = match start_etcd(dir.path()) {
            Some((_e, url)) => {
                wait_http(&url, "").await;
                let c = Client::new(&url, "", "");
                let r = rate(writers, move |w, i| {
                    let c = c.clone();
                    async move {
                        let body = json!({"key": b64(&format!("/bench/{w}/{i}")), "value": b64("0123456789abcdef0123456789abcdef")});
                        matches!(c.raw(Method::POST, "/v3/kv/put", Some(("application/json", serde_json::to_vec(&body).unwrap()))).await, Ok(r) if r.status == 200)
                    }
                })
                .await;
                Some(r)
            }
            None => None,
        };
        let ratio = |x: f64| etcd_rate.map_or("n/a".to_string(), |e| format!("{:.1}×", x / e));
        rows.push(format!(
            "| {writers} | {store_rate:.0} | {api_rate:.0} | {} | {} | {} |",
            etcd_rate.map_or("not installed".into(), |e| format!("{e:.0}")),
            ratio(store_rate),
            ratio(api_rate),
        ));
        eprintln!("{}", rows.last().unwrap());
    }
    out.push("### Durable writes per second\n".into());
    out.push("| writers | berth store (in-process) | berth API (HTTPS create) | etcd 3.4 (HTTP put) | store / etcd | API / etcd |".into());
    out.push("| ---: | ---: | ---: | ---: | ---: | ---: |".into());
    out.extend(rows);
}

/// The store's own watchers, in-process: what every component inside berth sees.
async fn store_watch_latency() -> String {
    const WATCHERS: usize = 1000;
    const EVENTS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::Store::open(dir.path(), berth_store::StoreOptions::default()).unwrap();
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..EVENTS).map(|_| AtomicU64::new(0)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    for _ in 0..WATCHERS {
        let mut w = store.watch(b"/w/", 0).unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            for _ in 0..EVENTS {
                let Ok(Some(b)) = w.next().await else { return };
                let at = base.elapsed().as_nanos() as u64;
                let key = String::from_utf8_lossy(&b.events[0].kv.key).into_owned();
                if let Some(i) = key
                    .strip_prefix("/w/")
                    .and_then(|i| i.parse::<usize>().ok())
                {
                    let _ = tx.send((i, at));
                }
            }
        });
    }
    drop(tx);
    for i in 0..EVENTS {
        sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        store
            .put(
                format!("/w/{i}").as_bytes(),
                b"v",
                berth_store::Origin::new("bench", "put"),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::new();
    while let Some((i, at)) = rx.recv().await {
        lat.push(at.saturating_sub(sent[i].load(Ordering::Acquire)) as f64 / 1e6);
    }
    store.close();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "| store, in-process: {WATCHERS} watchers × {EVENTS} writes (one every 20 ms) | {} of {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        lat.len(),
        WATCHERS * EVENTS,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    )
}

async fn watch_latency(out: &mut Vec<String>) {
    let store_line = store_watch_latency().await;
    eprintln!("{store_line}");
    const WATCHERS: usize = 1000;
    const EVENTS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let (_p, url, ca) = start_berth(dir.path());
    wait_http(&url, &ca).await;
    let c = Client::new(&url, &token(dir.path()), &ca);
    let cm = resolve("cm").unwrap();
    let rv = c.list(cm, Some("default"), "").await.unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..EVENTS).map(|_| AtomicU64::new(0)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        // One connection per watcher, as separate clients would have.
        let wc = Client::new(&url, &token(dir.path()), &ca);
        streams.push(
            wc.watch(cm, Some("default"), &format!("resourceVersion={rv}"))
                .await
                .unwrap(),
        );
    }
    for mut s in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok(Some(ev)) = s.next().await {
                let at = base.elapsed().as_nanos() as u64;
                let name = ev.object["metadata"]["name"].as_str().unwrap_or("");
                if let Some(i) = name
                    .strip_prefix("w-")
                    .and_then(|i| i.parse::<usize>().ok())
                {
                    let _ = tx.send((i, at));
                    n += 1;
                    if n == EVENTS {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    for i in 0..EVENTS {
        sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        let o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w-{i}")}});
        c.create(cm, Some("default"), &o, "").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::with_capacity(WATCHERS * EVENTS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while lat.len() < WATCHERS * EVENTS {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, at))) => {
                lat.push((at.saturating_sub(sent[i].load(Ordering::Acquire))) as f64 / 1e6)
            }
            _ => break,
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let line = format!(
        "| API, HTTPS: {WATCHERS} watch streams × {EVENTS} creates (one every 20 ms), clients parsing on the same 2 cores | {} of {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        lat.len(),
        WATCHERS * EVENTS,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    eprintln!("{line}");
    out.push(
        "\n### Watch delivery latency (write sent → event received; includes the write's fsync)\n"
            .into(),
    );
    out.push("| load | events delivered | p50 | p99 | max |".into());
    out.push("| --- | ---: | ---: | ---: | ---: |".into());
    out.push(store_line);
    out.push(line);
}

async fn list_10k(out: &mut Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (_p, url, ca) = start_berth(dir.path());
    wait_http(&url, &ca).await;
    let c = Client::new(&url, &token(dir.path()), &ca);
    let cm = resolve("cm").unwrap();
    let made = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (c, made) = (c.clone(), made.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..(10_000 / 32 + 1) {
                let n = w * 1000 + i;
                if made.fetch_add(1, Ordering::Relaxed) >= 10_000 {
                    return;
                }
                let o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("l-{n}"), "labels": {"app": "bench"}}, "data": {"k": "v"}});
                c.create(cm, Some("default"), &o, "").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = Vec::new();
    let mut count = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let l = c.list(cm, Some("default"), "").await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        count = l["items"].as_array().unwrap().len();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let line = format!(
        "| list {count} ConfigMaps (HTTPS, JSON) | {:.1} ms | {:.1} ms |",
        percentile(&times, 0.5),
        percentile(&times, 1.0)
    );
    eprintln!("{line}");
    out.push("\n### List\n".into());
    out.push("| what | median of 10 | max |".into());
    out.push("| --- | ---: | ---: |".into());
    out.push(line);
}

/// Removes a node's bridge when the benchmark is done with it.
struct NetCleanup(String, String);

impl Drop for NetCleanup {
    fn drop(&mut self) {
        let net = berth_runtime::net::Network {
            bridge: self.0.clone(),
            range: self.1.parse().unwrap(),
            ipam_dir: std::path::PathBuf::new(),
            netns_dir: std::path::PathBuf::new(),
            blackholes: vec![],
        };
        let _ = net.remove_bridge();
    }
}

async fn cold_start(out: &mut Vec<String>) {
    let mut times = Vec::new();
    let mut rss_kb = 0;
    for i in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // `berth up` runs a node too: give it a bridge and range of its own, removed after.
        let (bridge, cidr) = berth_testkit::unique_net();
        let _net = NetCleanup(bridge.clone(), cidr.clone());
        let started = Instant::now();
        let child = Command::new(BIN)
            .env("BERTH_BRIDGE", &bridge)
            .env("BERTH_POD_CIDR", &cidr)
            .args([
                "up",
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--api-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc(child);
        let url = format!("https://127.0.0.1:{port}");
        let ca_path = dir.path().join("pki/ca.crt");
        let mut ca = String::new();
        while !ca.contains("END CERTIFICATE") {
            ca = std::fs::read_to_string(&ca_path).unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let c = Client::new(&url, "", &ca);
        loop {
            if matches!(c.raw(Method::GET, "/readyz", None).await, Ok(r) if r.status == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", p.0.id())).unwrap_or_default();
            rss_kb = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let line = format!(
        "| `berth up` fresh data dir → /readyz 200 | {:.0} ms | {:.0} ms | {:.1} MB |",
        percentile(&times, 0.5),
        percentile(&times, 1.0),
        rss_kb as f64 / 1024.0
    );
    eprintln!("{line}");
    out.push("\n### Start and memory\n".into());
    out.push("| what | median of 5 | max | idle RSS (3 s after ready) |".into());
    out.push("| --- | ---: | ---: | ---: |".into());
    out.push(line);
}

/// The cost of encryption at rest: creates of Secrets (AES-GCM, the default config) against
/// creates of ConfigMaps with the same data, on one server.
async fn secret_writes(out: &mut Vec<String>) {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let (_p, url, ca) = start_berth(dir.path());
    wait_http(&url, &ca).await;
    let c = Client::new(&url, &token(dir.path()), &ca);
    for writers in [1usize, 16, 64] {
        let mut rates = Vec::new();
        for (kind, prefix) in [("ConfigMap", "cm"), ("Secret", "secret")] {
            let k = resolve(prefix).unwrap();
            let c = c.clone();
            rates.push(
                rate(writers, move |w, i| {
                    let c = c.clone();
                    async move {
                        let o = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": format!("{prefix}-{writers}-{w}-{i}")}, "data": {"v": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}});
                        c.create(k, Some("default"), &o, "").await.is_ok()
                    }
                })
                .await,
            );
        }
        rows.push(format!(
            "| {writers} | {:.0} | {:.0} | {:+.1} % |",
            rates[0],
            rates[1],
            (rates[1] / rates[0] - 1.0) * 100.0
        ));
        eprintln!("{}", rows.last().unwrap());
    }
    out.push("### Secrets encrypted at rest: creates per second\n".into());
    out.push("| writers | ConfigMaps (plaintext) | Secrets (AES-GCM) | difference |".into());
    out.push("| ---: | ---: | ---: | ---: |".into());
    out.extend(rows);
}

/// The cost of authorization on the write path: creates of ConfigMaps by the admin (the
/// group `system:masters`, which RBAC does not evaluate) against the same creates by a user
/// whose `edit` RoleBinding is found among 400 others (100 ClusterRoleBindings, 300
/// RoleBindings in the namespace, for other users), on one server; three rounds each,
/// alternating, the median reported.
async fn authz_writes(out: &mut Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens.csv"),
        "admin-token-0123456789,admin,1,system:masters\nwriter-token-0123456789,writer,2\n",
    )
    .unwrap();
    let (_p, url, ca) = start_berth(dir.path());
    wait_http(&url, &ca).await;
    let admin = Client::new(&url, "admin-token-0123456789", &ca);
    let writer = Client::new(&url, "writer-token-0123456789", &ca);
    let (crb, rb) = (
        resolve("clusterrolebindings").unwrap(),
        resolve("rolebindings").unwrap(),
    );
    let binding = |kind: &str, name: &str, role: &str, user: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": user}]})
    };
    for i in 0..100 {
        let b = binding(
            "ClusterRoleBinding",
            &format!("user-{i:03}-view"),
            "view",
            &format!("user-{i:03}"),
        );
        admin.create(crb, None, &b, "").await.unwrap();
    }
    for i in 0..300 {
        let b = binding(
            "RoleBinding",
            &format!("user-{i:03}-edit"),
            "edit",
            &format!("user-{i:03}"),
        );
        admin.create(rb, Some("default"), &b, "").await.unwrap();
    }
    let b = binding("RoleBinding", "writer-edit", "edit", "writer");
    admin.create(rb, Some("default"), &b, "").await.unwrap();
    let cm = resolve("cm").unwrap();
    // The binding is in force within moments of its write.
    let probe = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}});
    let started = Instant::now();
    while writer
        .create(cm, Some("default"), &probe, "")
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the writer's binding never took"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rows = Vec::new();
    for writers in [1usize, 16, 64] {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for (who, c) in [(0, &admin), (1, &writer)] {
                let c = c.clone();
                rates[who].push(
                    rate(writers, move |w, i| {
                        let c = c.clone();
                        async move {
                            let o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("authz-{who}-{round}-{writers}-{w}-{i}")}, "data": {"v": "x"}});
                            c.create(cm, Some("default"), &o, "").await.is_ok()
                        }
                    })
                    .await,
                );
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, u) = (median(&mut rates[0]), median(&mut rates[1]));
        rows.push(format!(
            "| {writers} | {a:.0} | {u:.0} | {:+.1} % |",
            (u / a - 1.0) * 100.0
        ));
        eprintln!("{}", rows.last().unwrap());
    }
    out.push("### Authorization on the write path: ConfigMap creates per second\n".into());
    out.push("| writers | admin (system:masters, no RBAC evaluation) | user bound to edit among 400 bindings | difference |".into());
    out.push("| ---: | ---: | ---: | ---: |".into());
    out.extend(rows);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    // `cargo bench -p berth --bench control_plane -- watch list` runs only those sections.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    rt.block_on(async {
        if want("start") {
            cold_start(&mut out).await;
        }
        if want("writes") {
            writes(&mut out).await;
        }
        if want("secrets") {
            secret_writes(&mut out).await;
        }
        if want("authz") {
            authz_writes(&mut out).await;
        }
        if want("watch") {
            watch_latency(&mut out).await;
        }
        if want("list") {
            list_10k(&mut out).await;
        }
    });
    println!("{}", out.join("\n"));
}

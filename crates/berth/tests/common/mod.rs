//! Runs the real `berth` binary: a server process of its own per test (loopback port chosen by
//! the kernel, its own data directory), killed when the test ends, pass or fail.
#![allow(dead_code)]

pub mod harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

pub struct BerthProcess {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub ready_after: Duration,
    /// For `up`: the node's own bridge and pod range (removed on drop).
    pub net: Option<(String, String)>,
}

impl BerthProcess {
    /// Starts `berth ROLE --data-dir DIR --api-listen 127.0.0.1:0` and waits for "ready".
    pub fn start(role: &str, data_dir: &Path) -> BerthProcess {
        Self::start_with(role, data_dir, &[])
    }

    /// As `start`, with more arguments. `up` gets a bridge and pod range of its own.
    pub fn start_with(role: &str, data_dir: &Path, extra: &[&str]) -> BerthProcess {
        let started = Instant::now();
        let net = (role == "up").then(berth_testkit::unique_net);
        let mut cmd = Command::new(BIN);
        cmd.args([
            role,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(extra);
        if let Some((bridge, cidr)) = &net {
            cmd.env("BERTH_BRIDGE", bridge).env("BERTH_POD_CIDR", cidr);
        }
        // Nodes' agent APIs on ports of their own.
        cmd.env("BERTH_AGENT_PORT", "0");
        // Cluster DNS answers cluster names only: nothing is forwarded off the machine.
        cmd.env("BERTH_DNS_UPSTREAM", "none");
        // Nodes of tests share the machine's addresses: no ingress on its port 80.
        cmd.env("BERTH_INGRESS_PORT", "0");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth");
        let url = ready_url(&mut child, role);
        BerthProcess {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            ready_after: started.elapsed(),
            net,
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// The cluster CA the server made in its data directory.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("pki/ca.crt")).unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through libc on a pid this test started.
        unsafe_kill(self.pid(), sig);
    }

    /// Waits for the process to exit, at most `secs`.
    pub fn wait(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// Sends a signal to a process this test started.
pub fn kill_pid(pid: i32, sig: i32) {
    unsafe_kill(pid, sig);
}

/// Waits (20 s at most) for a starting berth's "... is ready at URL" line; kills it and
/// fails the test if it never comes.
pub fn ready_url(child: &mut Child, role: &str) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split(" is ready at ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(u) => u,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth {role} did not become ready");
        }
    }
}

/// Whether an object's Ready condition is True (a pod's or a node's).
pub fn is_ready(o: &serde_json::Value) -> bool {
    o["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((bridge, cidr)) = &self.net {
            // The node's pods (their shims outlive it), then its network.
            remove_node(&self.data_dir, bridge, cidr);
        }
    }
}

/// Runs a CLI verb against a kubeconfig; returns the output.
pub fn berth(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a kubeconfig for another user of the same server.
/// kubectl (as shipped on this kind of machine) with `kubeconfig`, and `home` as its home (a
/// cache directory of its own: discovery must come from the server under test).
pub fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let bin = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("kubectl is part of this machine image (see docs/testing.md); install it to run this test");
    Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .output()
        .expect("run kubectl")
}

pub fn kubeconfig_for(dir: &Path, server: &BerthProcess, user: &str, token: &str) -> PathBuf {
    let p = dir.join(format!("{user}.kubeconfig"));
    let url = &server.url;
    let ca = dir.join(format!("{user}-ca.crt"));
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let ca = ca.display();
    std::fs::write(&p, format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: {user}\n    namespace: default\ncurrent-context: c\n")).unwrap();
    p
}

/// The runtime of a test node: its data dir, bridge and range (the layout berth uses).
pub fn node_runtime(data: &Path, bridge: &str, cidr: &str) -> berth_runtime::pod::Runtime {
    berth_runtime::pod::Runtime {
        root: data.to_path_buf(),
        network: berth_runtime::net::Network {
            bridge: bridge.to_string(),
            range: cidr.parse().unwrap(),
            ipam_dir: data.join("ipam").join(bridge),
            netns_dir: data.join("netns"),
            blackholes: vec![],
        },
        shim_command: vec![BIN.into(), "__shim".into()],
        cgroup_parent: "/berth".into(),
    }
}

/// Removes every pod a test node ran, then its bridge.
pub fn remove_node(data: &Path, bridge: &str, cidr: &str) {
    let rt = node_runtime(data, bridge, cidr);
    for id in rt.pod_ids() {
        let _ = rt.remove_pod(&id);
    }
    let _ = rt.network.remove_bridge();
    // The cluster IPs its proxy served on this machine's loopback.
    let _ =
        berth_net::proxy::remove_labelled_addresses(&berth_net::proxy::service_address_label(data));
}

/// `berth get WHAT -o json`, parsed.
pub fn get_json(kc: &Path, what: &[&str]) -> serde_json::Value {
    let o = get_as_json(kc, what);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `berth get WHAT -o json`, as it ran.
fn get_as_json(kc: &Path, what: &[&str]) -> std::process::Output {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    berth(kc, &args)
}

/// As `get_json`, for polling: `None` while the object does not exist yet (or the call
/// fails), instead of failing the test.
pub fn try_get_json(kc: &Path, what: &[&str]) -> Option<serde_json::Value> {
    let o = get_as_json(kc, what);
    o.status
        .success()
        .then(|| serde_json::from_str(&stdout(&o)).ok())?
}

/// Polls until `f` gives a value (every 50 ms, at most `secs`).
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-node cluster of the test's own (`berth up`, crash-loop back-off 1 s) with
/// `manifest` applied: (its dir, the process, the kubeconfig, the data dir).
pub fn cluster_with(manifest: &str) -> (tempfile::TempDir, BerthProcess, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = BerthProcess::start_with("up", &data, &["--restart-backoff", "1s"]);
    let kc = up.kubeconfig();
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, manifest).unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    (dir, up, kc, data)
}

/// `curl` inside a network namespace with a Host header: (status, body); status 0 when it
/// got no answer.
pub fn curl_host(ns: &str, url: &str, host: &str) -> (u16, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "5"])
        .args(["-H", &format!("Host: {host}"), "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The admin token a server wrote into its data dir's `tokens.csv`.
pub fn admin_token(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("tokens.csv")).unwrap();
    text.lines()
        .find(|l| l.contains(",admin,"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

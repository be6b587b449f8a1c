//! The real `berth server` under a low open-file limit (set with util-linux's `prlimit`, which
//! execs it): it raises its soft limit to the hard one at start, and a flood of connections up
//! to its limit neither stops an established connection nor the store, nor makes the process
//! spin; once the flood ends it accepts again. On a node (`berth up`) the pod workers still
//! start a pod during the flood.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BIN, eventually, ready_url};

const PRLIMIT: &str = "/usr/bin/prlimit";

/// A `berth` serving role started under `prlimit --nofile=SOFT:HARD`, killed (and for `up`
/// its node's pods and network removed) when dropped.
struct Server {
    p: common::BerthProcess,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(soft: u64, hard: u64, extra: &[&str]) -> Server {
        Self::start_role("server", soft, hard, extra)
    }

    fn start_role(role: &str, soft: u64, hard: u64, extra: &[&str]) -> Server {
        assert!(
            Path::new(PRLIMIT).exists(),
            "{PRLIMIT} is missing (util-linux)"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let net = (role == "up").then(berth_testkit::unique_net);
        let mut cmd = Command::new(PRLIMIT);
        cmd.arg(format!("--nofile={soft}:{hard}"))
            .arg(BIN)
            .args([role, "--data-dir"])
            .arg(&data)
            .args(["--api-listen", "127.0.0.1:0"])
            .args(extra)
            .env("BERTH_AGENT_PORT", "0")
            .env("BERTH_DNS_UPSTREAM", "none")
            .env("BERTH_INGRESS_PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((bridge, cidr)) = &net {
            cmd.env("BERTH_BRIDGE", bridge).env("BERTH_POD_CIDR", cidr);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn prlimit berth");
        let url = ready_url(&mut child, role);
        Server {
            p: common::BerthProcess {
                child,
                url,
                data_dir: data,
                ready_after: started.elapsed(),
                net,
            },
            _dir: dir,
        }
    }

    fn pid(&self) -> i32 {
        self.p.pid()
    }

    fn addr(&self) -> String {
        self.p.url.trim_start_matches("https://").to_string()
    }

    fn token(&self) -> String {
        let text = std::fs::read_to_string(self.p.data_dir.join("tokens.csv")).unwrap();
        let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
        line.split(',').next().unwrap().to_string()
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        let ca = std::fs::read_to_string(self.p.data_dir.join("pki/ca.crt")).unwrap();
        berth_tls::client_config(&ca, None).unwrap()
    }

    /// A TLS connection to the API, kept alive.
    fn connect(&self) -> std::io::Result<Api> {
        let tcp = TcpStream::connect(self.addr())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = rustls::ClientConnection::new(self.tls(), "127.0.0.1".try_into().unwrap())
            .map_err(std::io::Error::other)?;
        Ok(Api {
            tls: rustls::StreamOwned::new(conn, tcp),
            token: self.token(),
        })
    }

    /// Descriptors the server has open.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system), from /proc/PID/stat, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        // Fields 14 and 15 of stat(5) (utime, stime); `after` starts at field 3.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

/// An HTTPS/1.1 connection speaking raw requests.
struct Api {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    token: String,
}

impl Api {
    fn request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        write!(
            self.tls,
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        )?;
        self.tls.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    return Ok((status, body));
                }
            }
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Opens `n` connections that never send anything (the kernel completes them before berth
/// accepts them, up to the listen backlog).
fn flood(addr: &str, n: usize) -> Vec<TcpStream> {
    let addr = addr.parse().unwrap();
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("flood connection {i}: {e}"))
        })
        .collect()
}

/// Whether the server closes a new, silent connection at once (it refuses).
fn refuses(addr: &str) -> bool {
    refuses_or_keeps(addr, &mut Vec::new())
}

/// Whether the server closes a new, silent connection at once; a connection it takes
/// instead is pushed on `kept`, holding its descriptor.
fn refuses_or_keeps(addr: &str, kept: &mut Vec<TcpStream>) -> bool {
    let Ok(mut probe) = TcpStream::connect(addr) else {
        return false;
    };
    probe
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 1];
    // A refused connection reads its end (or a reset); an accepted one waits for a handshake.
    match probe.read(&mut b) {
        Ok(0) => true,
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            true
        }
        _ => {
            kept.push(probe);
            false
        }
    }
}

/// The test's own descriptors: a flood of several hundred needs more than a 1024 soft limit
/// shared by parallel tests.
fn raise_own_limit() {
    berth_tls::limits::raise_nofile_limit().unwrap();
}

#[test]
fn a_serving_berth_raises_its_soft_open_file_limit_to_the_hard_one() {
    let server = Server::start(512, 4096, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["4096", "4096"], "{line}");
}

#[test]
fn a_flood_to_the_descriptor_reserve_spares_established_connections_and_the_store() {
    raise_own_limit();
    // 256 descriptors, the last 64 kept: the flood is cut off near 192.
    let server = Server::start(
        256,
        256,
        &[
            "--fd-reserve",
            "64",
            "--max-connections-per-client",
            "100000",
            "--tls-handshake-timeout",
            "120s",
        ],
    );
    let addr = server.addr();
    let mut api = server.connect().unwrap();
    assert_eq!(api.request("GET", "/healthz", "").unwrap().0, 200);

    let held = flood(&addr, 300);
    eventually(
        30,
        "the server refuses connections past its reserve",
        || refuses(&addr).then_some(()),
    );
    let open = server.open_fds();
    assert!(
        open <= 256 - 64 + 8,
        "{open} descriptors open: the reserve was not kept"
    );
    // The established connection is served, and the store writes.
    assert_eq!(api.request("GET", "/healthz", "").unwrap().0, 200);
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"during-flood"},"data":{"a":"b"}}"#;
    let (status, body) = api
        .request("POST", "/api/v1/namespaces/default/configmaps", cm)
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .request(
            "GET",
            "/api/v1/namespaces/default/configmaps/during-flood",
            "",
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");

    drop(held);
    let mut fresh = eventually(30, "a new connection is served after the flood", || {
        let mut c = server.connect().ok()?;
        (c.request("GET", "/healthz", "").ok()?.0 == 200).then_some(c)
    });
    let (status, body) = fresh
        .request(
            "GET",
            "/api/v1/namespaces/default/configmaps/during-flood",
            "",
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn accept_at_emfile_backs_off_without_spinning_and_recovers() {
    raise_own_limit();
    // No reserve: the flood takes every descriptor and accept(2) fails with EMFILE.
    let server = Server::start(
        128,
        128,
        &[
            "--fd-reserve",
            "0",
            "--max-connections-per-client",
            "100000",
            "--tls-handshake-timeout",
            "120s",
        ],
    );
    let addr = server.addr();
    let mut api = server.connect().unwrap();
    assert_eq!(api.request("GET", "/healthz", "").unwrap().0, 200);
    // About 114 accepted before EMFILE, the rest in the listen backlog (128).
    let held = flood(&addr, 200);
    eventually(30, "the server's descriptors are all taken", || {
        (server.open_fds() >= 126).then_some(())
    });
    // The listener stays readable (the backlog is full of connections it cannot take): a
    // loop that retried at once would burn a CPU.
    let before = server.cpu_ticks();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = server.cpu_ticks() - before;
    let per_sec = ticks as f64 / started.elapsed().as_secs_f64();
    assert!(
        per_sec < 30.0,
        "{ticks} ticks of CPU in 2 s at EMFILE: the accept loop spins"
    );
    assert_eq!(
        api.request("GET", "/healthz", "").unwrap().0,
        200,
        "the established connection is served at EMFILE"
    );
    drop(held);
    eventually(30, "a new connection is served after the flood", || {
        let mut c = server.connect().ok()?;
        (c.request("GET", "/healthz", "").ok()?.0 == 200).then_some(())
    });
}

/// Lines in `path` (0 when it is not there yet).
fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_flood_to_the_descriptor_reserve_spares_the_nodes_pod_workers() {
    raise_own_limit();
    let server = Server::start_role(
        "up",
        512,
        512,
        &[
            "--fd-reserve",
            "160",
            "--max-connections-per-client",
            "100000",
            "--tls-handshake-timeout",
            "120s",
            "--restart-backoff",
            "1s",
        ],
    );
    let addr = server.addr();
    let mut api = server.connect().unwrap();
    // A container that records each start and fails: the node's pod worker restarts it on
    // its own, which takes descriptors (the shim, its sockets, logs, mounts) each time.
    let starts = tempfile::tempdir().unwrap();
    let log = starts.path().join("log");
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "restarting"},
        "spec": {"restartPolicy": "Always",
            "containers": [{"name": "c", "image": "host",
                "command": ["/bin/sh", "-c", "echo start >> /starts/log; exit 1"],
                "volumeMounts": [{"name": "s", "mountPath": "/starts"}]}],
            "volumes": [{"name": "s", "hostPath": {"path": starts.path()}}]}});
    // In kube-system: a hostPath needs the privileged Pod Security level.
    eventually(30, "the node takes the pod", || {
        let (status, _) = api
            .request(
                "POST",
                "/api/v1/namespaces/kube-system/pods",
                &pod.to_string(),
            )
            .ok()?;
        (status == 201).then_some(())
    });
    eventually(30, "the container starts", || {
        (lines(&log) >= 1).then_some(())
    });

    let held = flood(&addr, 450);
    eventually(
        30,
        "the server refuses connections past its reserve",
        || refuses(&addr).then_some(()),
    );
    let before = lines(&log);
    eventually(
        40,
        "the pod worker restarts the container during the flood",
        || (lines(&log) >= before + 2).then_some(()),
    );
    // The flood still holds the reserve's edge after the restarts. The worker's own
    // descriptors come and go with each restart, so the edge may have moved by a few: a
    // probe the server takes is kept (it tops the flood up) and the next one is tried. A
    // flood the server had dropped would leave hundreds of free descriptors, far more than
    // the 48 probes allowed here.
    let mut topped_up = Vec::new();
    while !refuses_or_keeps(&addr, &mut topped_up) {
        assert!(
            topped_up.len() < 48,
            "the server took {} more connections after the restarts: the flood no longer holds it at its reserve",
            topped_up.len()
        );
    }
    // The established connection is served all along.
    let (status, body) = api
        .request(
            "DELETE",
            "/api/v1/namespaces/kube-system/pods/restarting",
            "",
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    drop((held, topped_up));
}

#[test]
fn limits_that_would_refuse_everything_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--max-connections-per-client", "0"),
        ("--idle-timeout", "0s"),
        ("--request-head-timeout", "0s"),
        ("--tls-handshake-timeout", "soon"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let o = Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(data.path())
            .args(["--api-listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flag} {value} was taken");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")),
            "{flag} {value}: {err}"
        );
    }
}

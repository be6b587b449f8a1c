//! The runtime's interface, shaped like Kubernetes' CRI: run a pod sandbox; create, start,
//! stop and remove its containers; state; exec; remove the pod. Also what a node does when
//! it starts: adopt the shims that still run, and clean up after the ones that died.
//!
//! Layout of a pod's directory (`DATA/pods/<id>`):
//! `pod.json` (config and network), `hosts`, `resolv.conf`, `hostname`, `shim.sock`,
//! `shim.pid`, `shim.log`, `containers/<name>/{upper,work,merged,bundle,state.json}`,
//! `logs/<name>/<attempt>.log`, `volumes/<name>`, `libcontainer/`.
//!
//! Invariant: removing a pod (or cleaning up after a dead one) finds what to remove from the
//! pod id and the mount table alone — mounts under its directory, its cgroup, its network
//! names and lease — so nothing is left behind even when `pod.json` is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::net::{Network, PodNetwork};
use crate::rootfs::{Rootfs, unmount_under};
use crate::shim::{self, ContainerState, Request, Response, Status};
use crate::spec::{ContainerSpec, Mount};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {0} does not exist")]
    NoPod(String),
    #[error("the shim of pod {pod}: {message}")]
    Shim { pod: String, message: String },
    #[error("pod or container name {0:?}: use letters, digits, '-', '_' and '.', up to 63")]
    BadName(String),
    #[error(
        "command {command:?} not found in the image (PATH={path}); check the command, or the image"
    )]
    CommandNotFound { command: String, path: String },
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn check_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadName(n.into()))
    }
}

/// DNS settings for a pod's `resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    /// The host's resolvers, without loopback ones (unreachable from a pod), as Docker does.
    pub fn from_host() -> Dns {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mut dns = Dns::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("nameserver"), Some(ns)) if !ns.starts_with("127.") && ns != "::1" => {
                    dns.nameservers.push(ns.into())
                }
                (Some("search"), Some(first)) => {
                    dns.searches = std::iter::once(first).chain(w).map(String::from).collect()
                }
                _ => {}
            }
        }
        dns
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for ns in &self.nameservers {
            s.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            s.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

/// What a pod sandbox is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodConfig {
    /// Unique on the node (a pod's UID, or a generated id).
    pub id: String,
    /// What the caller wants kept with the pod (image, command, ...).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub dns: Dns,
    /// The pod shares the node's network (and UTS) namespace: no network of its own, no
    /// address, the node's hosts file and host name (`hostNetwork: true`).
    #[serde(default)]
    pub host_network: bool,
}

/// A pod as recorded in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub config: PodConfig,
    /// None when the pod uses the node's network.
    pub network: Option<PodNetwork>,
    pub created_at: u64,
}

/// A container to create in a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    pub name: String,
    /// The image's unpacked layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// Process, limits, extra mounts; the runtime fills in the cgroup, network and hostname.
    pub spec: ContainerSpec,
    /// Which run of this container it is (the log file's name): 0, 1, ...
    pub attempt: u32,
    /// The built-in host image: programs are looked up on the host's own paths.
    pub host_root: bool,
}

/// The node's runtime.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Holds `pods/`.
    pub root: PathBuf,
    pub network: Network,
    /// The command that runs a shim: the `berth` binary and its hidden role.
    pub shim_command: Vec<String>,
    /// Cgroup under which every pod gets `<id>/<container>`.
    pub cgroup_parent: String,
}

/// What a node found on start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Pods whose shim still runs: their containers were left running.
    pub adopted: Vec<String>,
    /// Pods whose shim was gone: their leftovers were removed.
    pub cleaned: Vec<String>,
}

impl Runtime {
    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.root.join("pods").join(id)
    }

    /// The pod's cgroup path (its containers' are `PATH/NAME`).
    pub fn cgroup_of_pod(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent.trim_end_matches('/'))
    }

    fn shim_err(pod: &str) -> impl Fn(String) -> RuntimeError + '_ {
        move |message| RuntimeError::Shim {
            pod: pod.to_string(),
            message,
        }
    }

    fn call(&self, pod: &str, req: &Request, timeout: Option<Duration>) -> Result<Response> {
        let dir = self.pod_dir(pod);
        if !dir.exists() {
            return Err(RuntimeError::NoPod(pod.into()));
        }
        match shim::call(&dir, req, timeout) {
            Ok(Response::Error(e)) => Err(Self::shim_err(pod)(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(Self::shim_err(pod)(format!("not answering: {e}"))),
        }
    }

    /// Makes the pod's sandbox and starts its shim.
    pub fn run_pod(&self, config: &PodConfig) -> Result<PodRecord> {
        check_name(&config.id)?;
        // Pods hold their volumes and the mounts of their images: no host user may reach them.
        for private in [self.root.clone(), self.root.join("pods")] {
            berth_fs::private_dir(&private).map_err(io(&private))?;
        }
        let dir = self.pod_dir(&config.id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let made = self.run_pod_in(&dir, config);
        if made.is_err() {
            let _ = self.remove_pod(&config.id);
        }
        made
    }

    fn run_pod_in(&self, dir: &Path, config: &PodConfig) -> Result<PodRecord> {
        let write = |name: &str, text: String| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(io(&p))
        };
        let (network, hostname) = if config.host_network {
            let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            write(
                "hosts",
                std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| {
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into()
                }),
            )?;
            (None, node)
        } else {
            let network = self.network.setup(&config.id)?;
            let hostname = if config.hostname.is_empty() {
                config.name.clone()
            } else {
                config.hostname.clone()
            };
            write(
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
                    network.ip
                ),
            )?;
            (Some(network), hostname)
        };
        write("resolv.conf", config.dns.render())?;
        write("hostname", format!("{hostname}\n"))?;
        let record = PodRecord {
            config: config.clone(),
            network,
            created_at: berth_api::timefmt::now_nanos(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| io(dir)(e.into()))?;
        write("pod.json", String::from_utf8_lossy(&json).into_owned())?;
        self.start_shim(dir, &config.id)?;
        Ok(record)
    }

    fn start_shim(&self, dir: &Path, id: &str) -> Result<()> {
        let log_path = dir.join("shim.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let log2 = log.try_clone().map_err(io(&log_path))?;
        let (exe, args) = self
            .shim_command
            .split_first()
            .ok_or_else(|| Self::shim_err(id)("no shim command configured".into()))?;
        let status = Command::new(exe)
            .args(args)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(io(Path::new(exe)))?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Self::shim_err(id)(format!(
                "did not start ({status}): {}",
                text.trim()
            )));
        }
        // The socket was bound before the shim forked: it answers, or queues until it does.
        self.call(id, &Request::State, Some(Duration::from_secs(10)))
            .map(drop)
    }

    /// The pod's record, read from its directory.
    pub fn pod(&self, id: &str) -> Result<PodRecord> {
        let path = self.pod_dir(id).join("pod.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RuntimeError::NoPod(id.into())
            } else {
                io(&path)(e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| io(&path)(e.into()))
    }

    /// Ids of the pods on this node.
    pub fn pod_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Creates a container in a pod (not started): its overlay root, its bundle, and the shim's
    /// process waiting for `start_container`.
    pub fn create_container(&self, pod: &str, c: &ContainerConfig) -> Result<()> {
        check_name(&c.name)?;
        let record = self.pod(pod)?;
        let pdir = self.pod_dir(pod);
        let cdir = pdir.join("containers").join(&c.name);
        if cdir.join("merged").exists() {
            unmount_under(&cdir)?;
        }
        let _ = std::fs::remove_dir_all(&cdir);
        std::fs::create_dir_all(&cdir).map_err(io(&cdir))?;
        let root = Rootfs::mount(&c.layers, &cdir)?;
        if let Some(argv0) = c.spec.argv.first() {
            let path = c
                .spec
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let lookup_root = if c.host_root {
                Path::new("/")
            } else {
                root.path()
            };
            if crate::rootfs::find_program(lookup_root, argv0, &path).is_none() {
                return Err(RuntimeError::CommandNotFound {
                    command: argv0.clone(),
                    path,
                });
            }
        }
        let mut spec = c.spec.clone();
        spec.cgroup_path = format!("{}/{}", self.cgroup_of_pod(pod), c.name);
        spec.host.network = record.network.is_none();
        spec.netns = record
            .network
            .as_ref()
            .map(|n| n.netns.display().to_string());
        if spec.hostname.is_empty() {
            spec.hostname = std::fs::read_to_string(pdir.join("hostname"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
        }
        for f in ["hosts", "resolv.conf", "hostname"] {
            spec.mounts.push(Mount {
                destination: format!("/etc/{f}"),
                source: pdir.join(f).display().to_string(),
                read_only: false,
            });
        }
        let bundle = cdir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io(&bundle))?;
        let mut config = spec.to_oci(&root.path().display().to_string());
        crate::seccomp::precompile(&mut config, &bundle).map_err(|e| RuntimeError::Io {
            path: bundle.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        let cfg_path = bundle.join("config.json");
        std::fs::write(
            &cfg_path,
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(io(&cfg_path))?;
        let log = pdir
            .join("logs")
            .join(&c.name)
            .join(format!("{}.log", c.attempt));
        let created = self.call(
            pod,
            &Request::Create {
                name: c.name.clone(),
                bundle,
                log,
                cgroup: spec.cgroup_path.clone(),
            },
            Some(Duration::from_secs(60)),
        );
        match created {
            Ok(_) => {
                root.keep();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn start_container(&self, pod: &str, name: &str) -> Result<()> {
        self.call(
            pod,
            &Request::Start { name: name.into() },
            Some(Duration::from_secs(60)),
        )
        .map(drop)
    }

    /// Every container's state in a pod.
    pub fn containers(&self, pod: &str) -> Result<Vec<ContainerState>> {
        match self.call(pod, &Request::State, Some(Duration::from_secs(10)))? {
            Response::States(s) => Ok(s),
            other => Err(Self::shim_err(pod)(format!("unexpected answer {other:?}"))),
        }
    }

    pub fn container(&self, pod: &str, name: &str) -> Result<ContainerState> {
        self.containers(pod)?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Self::shim_err(pod)(format!("no container named {name}")))
    }

    /// Blocks until the container has exited.
    pub fn wait(&self, pod: &str, name: &str) -> Result<ContainerState> {
        match self.call(pod, &Request::Wait { name: name.into() }, None)? {
            Response::State(s) => Ok(s),
            other => Err(Self::shim_err(pod)(format!("unexpected answer {other:?}"))),
        }
    }

    pub fn kill(&self, pod: &str, name: &str, signal: i32) -> Result<()> {
        self.call(
            pod,
            &Request::Kill {
                name: name.into(),
                signal,
            },
            Some(Duration::from_secs(10)),
        )
        .map(drop)
    }

    /// Stops a container: `signal` (SIGTERM, or the image's stop signal), up to `grace` for it
    /// to exit, then SIGKILL.
    pub fn stop_container(
        &self,
        pod: &str,
        name: &str,
        signal: i32,
        grace: Duration,
    ) -> Result<ContainerState> {
        let state = self.container(pod, name)?;
        if state.status == Status::Exited {
            return Ok(state);
        }
        if state.status == Status::Running && !grace.is_zero() {
            self.kill(pod, name, signal)?;
            // A grace period past what the clock holds waits as long as it can.
            let deadline = Instant::now().checked_add(grace);
            while deadline.is_none_or(|d| Instant::now() < d) {
                let s = self.container(pod, name)?;
                if s.status == Status::Exited {
                    return Ok(s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if state.status == Status::Created {
            return Ok(state);
        }
        self.kill(pod, name, libc::SIGKILL)?;
        self.wait(pod, name)
    }

    /// Removes a stopped container: its runtime state, cgroup, and root. Its logs stay with
    /// the pod.
    pub fn remove_container(&self, pod: &str, name: &str) -> Result<()> {
        let cdir = self.pod_dir(pod).join("containers").join(name);
        match self.call(
            pod,
            &Request::Delete { name: name.into() },
            Some(Duration::from_secs(30)),
        ) {
            Ok(_) => {}
            Err(RuntimeError::Shim { message, .. }) if message.contains("no container named") => {}
            Err(e) => return Err(e),
        }
        remove_cgroup(&format!("{}/{name}", self.cgroup_of_pod(pod)));
        unmount_under(&cdir)?;
        let _ = std::fs::remove_dir_all(&cdir);
        Ok(())
    }

    /// Runs `argv` in a running container's namespaces and cgroup with this process's stdout
    /// and stderr, and its stdin when `stdin` is set (a terminal on it stays the command's
    /// terminal); returns its exit code. (A separate single-threaded `berth` process does the
    /// joining.)
    pub fn exec(
        &self,
        pod: &str,
        name: &str,
        argv: &[String],
        stdin: bool,
        exec_command: &[String],
    ) -> Result<i32> {
        let status = self
            .exec_process(pod, name, argv, exec_command)?
            .stdin(if stdin {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .status()
            .map_err(io(Path::new(&exec_command[0])))?;
        Ok(status.code().unwrap_or(128 + 9))
    }

    /// The process that runs `argv` in a container, for the caller to give its stdio and run
    /// (probes run it quietly with a timeout).
    pub fn exec_process(
        &self,
        pod: &str,
        name: &str,
        argv: &[String],
        exec_command: &[String],
    ) -> Result<Command> {
        let (exe, args) = exec_command
            .split_first()
            .ok_or_else(|| Self::shim_err(pod)("no exec command configured".into()))?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .arg(self.pod_dir(pod))
            .arg(name)
            .arg("--")
            .args(argv);
        Ok(cmd)
    }

    /// Removes the pod: kills what still runs, then its containers, shim, volumes, network,
    /// cgroup and directory. Idempotent, and works on a pod whose shim died.
    pub fn remove_pod(&self, id: &str) -> Result<()> {
        let dir = self.pod_dir(id);
        if let Ok(states) = self.containers(id) {
            for c in states {
                if c.status == Status::Running {
                    let _ = self.kill(id, &c.name, libc::SIGKILL);
                    let _ = self.wait(id, &c.name);
                }
                let _ = self.call(
                    id,
                    &Request::Delete {
                        name: c.name.clone(),
                    },
                    Some(Duration::from_secs(30)),
                );
            }
            let _ = self.call(id, &Request::Shutdown, Some(Duration::from_secs(5)));
        }
        // Whatever still runs in the pod's cgroup (a dead shim's orphans) is killed.
        kill_cgroup(&self.cgroup_of_pod(id));
        if let Some(pid) = std::fs::read_to_string(dir.join(shim::PID_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            wait_gone(pid, Duration::from_secs(5));
        }
        remove_cgroup(&self.cgroup_of_pod(id));
        if dir.exists() {
            unmount_under(&dir)?;
        }
        self.network.teardown(id)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }

    /// On a node's start: adopts pods whose shim answers, removes what dead ones left (and
    /// any network leftovers of pods without a directory).
    pub fn recover(&self) -> Result<Recovery> {
        let mut out = Recovery::default();
        for id in self.pod_ids() {
            if shim::call(
                &self.pod_dir(&id),
                &Request::State,
                Some(Duration::from_secs(5)),
            )
            .is_ok()
            {
                out.adopted.push(id);
            } else {
                self.remove_pod(&id)?;
                out.cleaned.push(id);
            }
        }
        for id in self.network.pods_with_leftovers()? {
            if !self.pod_dir(&id).exists() {
                self.network.teardown(&id)?;
                out.cleaned.push(id);
            }
        }
        Ok(out)
    }
}

/// Cgroup directories of `path` under every mounted hierarchy (v1 controllers and v2).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let mut dirs = Vec::new();
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        dirs.push(base.join(rel));
    }
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(e.path().join(rel));
        }
    }
    dirs.retain(|d| d.exists());
    dirs
}

/// Kills every process in a cgroup tree and waits (bounded) for them to go.
pub fn kill_cgroup(path: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut any = false;
        for d in cgroup_dirs(path) {
            for entry in walkdir(&d) {
                let procs = std::fs::read_to_string(entry.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if !any || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn walkdir(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![d.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Removes a cgroup tree (deepest first) under every hierarchy; busy ones stay.
pub fn remove_cgroup(path: &str) {
    for d in cgroup_dirs(path) {
        let mut all = walkdir(&d);
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in all {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn wait_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return;
        }
        // A zombie has ended; reaping it is its parent's business.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

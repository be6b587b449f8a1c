//! `berth run` and `berth container ...`: containers on this machine without the control
//! plane (what `docker run` / `nerdctl run` do), each in a pod sandbox of its own with an
//! address on the node's bridge; and the hidden single-threaded roles (the per-pod shim, exec)
//! the runtime re-executes `berth` as.

use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_api::cidr::Ipv4Net;
use berth_api::quantity::Quantity;
use berth_image::ImageStore;
use berth_runtime::ContainerSpec;
use berth_runtime::logs::{Stream, parse_record};
use berth_runtime::net::Network;
use berth_runtime::pod::{ContainerConfig, Dns, PodConfig, Runtime, RuntimeError};
use berth_runtime::shim::Status;
use berth_runtime::spec::Mount;
use clap::{Args, Subcommand};

/// The hidden role the runtime runs each pod's shim as.
pub const SHIM_ROLE: &str = "__shim";
/// The hidden role that execs into a container.
pub const EXEC_ROLE: &str = "__exec";

/// The one container of a `berth run` pod.
const MAIN: &str = "main";

/// The pod range of a machine that names none (`berth run`, and the first node of a cluster
/// with the default --cluster-cidr).
pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/24";

/// Which network this machine's pods join.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// The bridge pods attach to
    #[arg(
        long,
        value_name = "NAME",
        env = "BERTH_BRIDGE",
        default_value = "berth0"
    )]
    pub bridge: String,
    /// The address range of pods on this machine
    /// (a node of a cluster without it gets one from the server's --cluster-cidr)
    #[arg(long, value_name = "CIDR", env = "BERTH_POD_CIDR")]
    pub pod_cidr: Option<String>,
    /// The cgroup every pod of this machine goes under
    #[arg(
        long,
        value_name = "PATH",
        env = "BERTH_CGROUP_PARENT",
        default_value = "/berth"
    )]
    pub cgroup_parent: String,
}

/// Where local containers live and which network they join.
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Where images and containers live
    #[arg(long, value_name = "DIR", env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

impl LocalArgs {
    fn data(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(berth_cli::default_data_dir)
    }

    /// The runtime over this data dir and network.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        self.net.runtime(&self.data())
    }
}

impl NetArgs {
    /// The runtime over `data` and this network.
    pub fn runtime(&self, data: &Path) -> anyhow::Result<Runtime> {
        let data = data.to_path_buf();
        let cidr = self.pod_cidr.as_deref().unwrap_or(DEFAULT_POD_CIDR);
        let range: Ipv4Net = cidr.parse().with_context(|| format!("--pod-cidr {cidr}"))?;
        let blackholes = berth_runtime::net::default_blackholes(range);
        let exe = std::env::current_exe().context("cannot find the berth executable")?;
        Ok(Runtime {
            root: data.clone(),
            network: Network {
                bridge: self.bridge.clone(),
                range,
                ipam_dir: data.join("ipam").join(&self.bridge),
                netns_dir: data.join("netns"),
                blackholes,
            },
            shim_command: vec![exe.display().to_string(), SHIM_ROLE.into()],
            cgroup_parent: self.cgroup_parent.clone(),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// Name of the container (default: a random id)
    #[arg(long)]
    pub name: Option<String>,
    /// Remove the container and its files when it exits
    #[arg(long)]
    pub rm: bool,
    /// Start it and print its name instead of waiting for it
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set an environment variable (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Mount a volume: a host path (/srv/data:/data) or a named volume kept in the data
    /// directory (db:/var/lib/db); add :ro for read-only (repeatable)
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Forward a port of this machine to the container: [IP:]HOSTPORT:PORT (repeatable;
    /// forwarded while `berth run` runs)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOSTPORT:PORT")]
    pub publish: Vec<String>,
    /// Memory limit, e.g. 64Mi; going over it kills the container (OOMKilled, exit 137)
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5
    #[arg(long, value_name = "QUANTITY")]
    pub cpus: Option<String>,
    /// Most processes the container may have
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// Make the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// The container's hostname (default: its name)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Image: a name from `berth image ls`, or `host` for this machine's own programs
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ContainerCmd {
    /// List containers (running ones; -a for all)
    Ls {
        #[arg(short, long)]
        all: bool,
    },
    /// Print a container's output
    Logs {
        name: String,
        /// Keep printing new output until the container exits
        #[arg(short, long)]
        follow: bool,
    },
    /// Wait for a container to exit and print its exit code
    Wait { name: String },
    /// Stop a container: its image's stop signal (SIGTERM by default), then SIGKILL after the
    /// grace period
    Stop {
        name: String,
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long, default_value_t = 10)]
        time: u64,
    },
    /// Remove a container (-f stops it first)
    Rm {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
    },
    /// Run a command in a running container
    Exec {
        /// Pass this terminal's input to the command
        #[arg(short, long)]
        interactive: bool,
        /// The command runs on this terminal (needs a terminal on stdin)
        #[arg(short, long)]
        tty: bool,
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ContainerArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    #[command(subcommand)]
    pub cmd: ContainerCmd,
}

fn new_id() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_volume(v: &str, data: &Path) -> anyhow::Result<Mount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("-v {v:?}: write SRC:DST or SRC:DST:ro"),
    };
    if !dst.starts_with('/') {
        bail!("-v {v:?}: the container path {dst:?} must be absolute");
    }
    let source = if src.starts_with('/') {
        if !Path::new(src).exists() {
            bail!("-v {v:?}: the host path {src} does not exist");
        }
        PathBuf::from(src)
    } else {
        berth_runtime::volumes::named(data, src).with_context(|| format!("-v {v:?}"))?
    };
    Ok(Mount {
        destination: dst.into(),
        source: source.display().to_string(),
        read_only: ro,
    })
}

fn parse_publish(p: &str) -> anyhow::Result<(SocketAddr, u16)> {
    let bad = || anyhow::anyhow!("-p {p:?}: write HOSTPORT:PORT or IP:HOSTPORT:PORT");
    let (host, port) = p.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host: SocketAddr = match host.parse::<u16>() {
        Ok(hp) => SocketAddr::from(([0, 0, 0, 0], hp)),
        Err(_) => host.parse().map_err(|_| bad())?,
    };
    Ok((host, port))
}

/// Copies bytes both ways between a published port's client and the container.
fn forward(listener: TcpListener, to: SocketAddr) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                    return;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut s) = (client, server);
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[allow(unsafe_code)]
extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

#[allow(unsafe_code)]
fn catch_interrupts() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let _ = sigaction(s, &action);
        }
    }
}

/// Prints a container's log records (stdout to stdout, stderr to stderr) from `offset`;
/// returns the new offset.
fn print_log(path: &Path, offset: u64) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return offset;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    // Rotated under us: start over on the new file.
    let offset = if len < offset { 0 } else { offset };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    // Only whole records; a torn last one is read next time.
    let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in buf[..end].split(|b| *b == b'\n') {
        if let Some(rec) = parse_record(line) {
            let w: &mut dyn Write = match rec.stream {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            let _ = w.write_all(&rec.text);
            if rec.full {
                let _ = w.write_all(b"\n");
            }
        }
    }
    let _ = out.flush();
    let _ = err.flush();
    offset + end as u64
}

/// An image's `StopSignal` (`SIGQUIT`, `QUIT` or `3`) as a number; SIGTERM when unset or
/// unknown, as Docker falls back.
pub fn stop_signal(name: &str) -> i32 {
    let name = name.trim();
    if name.is_empty() {
        return libc::SIGTERM;
    }
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map_or(libc::SIGTERM, |s| s as i32)
}

/// The signal that stops a container made by `berth run`.
fn stop_signal_of(rt: &Runtime, id: &str) -> i32 {
    rt.pod(id)
        .ok()
        .and_then(|p| p.config.annotations.get("stopSignal").cloned())
        .map_or(libc::SIGTERM, |s| stop_signal(&s))
}

fn exit_code_of(rt: &Runtime, id: &str) -> anyhow::Result<i32> {
    let s = rt.container(id, MAIN)?;
    if s.reason.as_deref() == Some("OOMKilled") {
        eprintln!("berth: the container went over its memory limit and was killed (OOMKilled)");
    }
    Ok(s.exit_code.unwrap_or(255))
}

/// Runs the container; returns the exit code for the process.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // Flags first: a typo costs nothing.
    let quantity = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<Quantity>> {
        v.as_deref()
            .map(|s| Quantity::parse(s).map_err(|e| anyhow::anyhow!("--{flag} {s:?}: {e}")))
            .transpose()
    };
    let memory_limit =
        quantity("memory", &args.memory)?.map_or(0, |q| q.units_ceil().max(0) as u64);
    let cpu_limit_millis = quantity("cpus", &args.cpus)?.map_or(0, |q| q.millis().max(0) as u64);
    let mut env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("-e {kv:?}: write KEY=VALUE"))?;
        env.push((k.to_string(), v.to_string()));
    }
    let publish = args
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("berth run needs root (it makes namespaces, cgroups and mounts); run it with sudo");
    }
    let data = args.local.data();
    let mounts = args
        .volumes
        .iter()
        .map(|v| parse_volume(v, &data))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = args.local.runtime()?;
    let id = args.name.clone().unwrap_or_else(new_id);
    if rt.pod_dir(&id).exists() {
        bail!(
            "a container named {id} exists; remove it with `berth container rm {id}` or pick another --name"
        );
    }

    // The image: the built-in host image, or one from the store.
    let host = args.image == berth_runtime::host::NAME;
    let (layers, config, image_name) = if host {
        let layer = berth_runtime::host::layer(&data.join("images"))
            .context("cannot make the host image")?;
        let config = berth_image::ImageConfig {
            env: vec![format!("PATH={}", berth_runtime::host::PATH)],
            ..Default::default()
        };
        (vec![layer], config, "host".to_string())
    } else {
        let store = ImageStore::open(&data.join("images"))?;
        let image = store.resolve(&args.image)?;
        let layers = image
            .layers
            .iter()
            .map(|l| store.layer_dir(l))
            .collect::<Result<Vec<_>, _>>()?;
        (layers, image.config, image.name)
    };
    let argv = config.argv(&args.command, &[]);
    if argv.is_empty() {
        bail!("the image {image_name} names no command; give one after the image name");
    }
    let etc = if host {
        PathBuf::from("/etc")
    } else {
        berth_runtime::user::image_etc(&layers)
    };
    let (uid, gid) =
        berth_runtime::user::resolve(&config.user, &etc).map_err(anyhow::Error::msg)?;
    let mut all_mounts = if host {
        berth_runtime::host::mounts()
    } else {
        vec![]
    };
    all_mounts.extend(mounts);
    let spec = ContainerSpec {
        argv: argv.clone(),
        env: config.env_with(&env),
        cwd: config.working_dir.clone(),
        uid,
        gid,
        hostname: args.hostname.clone().unwrap_or_default(),
        read_only_root: args.read_only,
        memory_limit,
        cpu_limit_millis,
        cpu_request_millis: 0,
        pids_limit: args.pids_limit.unwrap_or(0),
        mounts: all_mounts,
        ..Default::default()
    };
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert("image".to_string(), image_name);
    annotations.insert("command".to_string(), argv.join(" "));
    annotations.insert("stopSignal".to_string(), config.stop_signal.clone());
    let pod = PodConfig {
        id: id.clone(),
        name: id.clone(),
        namespace: String::new(),
        hostname: args.hostname.clone().unwrap_or_else(|| id.clone()),
        dns: Dns::from_host(),
        annotations,
        host_network: false,
    };
    let record = rt.run_pod(&pod)?;
    let started = rt
        .create_container(
            &id,
            &ContainerConfig {
                name: MAIN.into(),
                layers,
                spec,
                attempt: 0,
                host_root: host,
            },
        )
        .and_then(|_| rt.start_container(&id, MAIN));
    if let Err(e) = started {
        let _ = rt.remove_pod(&id);
        if let RuntimeError::CommandNotFound { .. } = e {
            eprintln!("error: {e}");
            return Ok(127);
        }
        return Err(e.into());
    }
    for (host_addr, port) in &publish {
        let l = TcpListener::bind(host_addr).with_context(|| {
            format!("cannot publish {host_addr}: the port is taken or needs privileges")
        })?;
        // `berth run` always gives its pod a network of its own.
        let ip = record
            .network
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.ip);
        forward(l, SocketAddr::from((ip, *port)));
    }
    if args.detach {
        println!("{id}");
        return Ok(0);
    }
    catch_interrupts();
    let log = rt.pod_dir(&id).join("logs").join(MAIN).join("0.log");
    let mut offset = 0;
    let mut stopping = false;
    loop {
        offset = print_log(&log, offset);
        let s = rt.container(&id, MAIN)?;
        if s.status == Status::Exited {
            print_log(&log, offset);
            break;
        }
        if INTERRUPTED.load(Ordering::Relaxed) && !stopping {
            stopping = true;
            let rt2 = rt.clone();
            let id2 = id.clone();
            std::thread::spawn(move || {
                let signal = stop_signal_of(&rt2, &id2);
                let _ = rt2.stop_container(&id2, MAIN, signal, Duration::from_secs(10));
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = exit_code_of(&rt, &id)?;
    if args.rm {
        rt.remove_pod(&id)?;
    }
    Ok(code)
}

/// `berth container ...`.
pub fn container(args: ContainerArgs) -> anyhow::Result<i32> {
    let rt = args.local.runtime()?;
    let exists = |name: &str| -> anyhow::Result<()> {
        if !rt.pod_dir(name).exists() {
            bail!("no container named {name}; `berth container ls -a` lists them");
        }
        Ok(())
    };
    match args.cmd {
        ContainerCmd::Ls { all } => {
            let mut rows = Vec::new();
            for id in rt.pod_ids() {
                let Ok(rec) = rt.pod(&id) else { continue };
                let status = match rt.container(&id, MAIN) {
                    Ok(s) if s.status == Status::Exited => {
                        format!("Exited ({})", s.exit_code.unwrap_or(255))
                    }
                    Ok(s) if s.status == Status::Running => "Running".into(),
                    Ok(_) => "Created".into(),
                    Err(_) => "Unknown (shim gone)".into(),
                };
                if !all && status != "Running" {
                    continue;
                }
                let a = |k: &str| rec.config.annotations.get(k).cloned().unwrap_or_default();
                rows.push(vec![
                    id,
                    a("image"),
                    a("command"),
                    status,
                    rec.network
                        .as_ref()
                        .map_or_else(|| "host".to_string(), |n| n.ip.to_string()),
                ]);
            }
            print!(
                "{}",
                berth_cli::print::table(&["NAME", "IMAGE", "COMMAND", "STATUS", "IP"], &rows)
            );
            Ok(0)
        }
        ContainerCmd::Logs { name, follow } => {
            exists(&name)?;
            let log = rt.pod_dir(&name).join("logs").join(MAIN).join("0.log");
            let mut offset = print_log(&log, 0);
            if follow {
                loop {
                    let s = rt.container(&name, MAIN)?;
                    offset = print_log(&log, offset);
                    if s.status == Status::Exited {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Ok(0)
        }
        ContainerCmd::Wait { name } => {
            exists(&name)?;
            let s = rt.wait(&name, MAIN)?;
            println!("{}", s.exit_code.unwrap_or(255));
            Ok(0)
        }
        ContainerCmd::Stop { name, time } => {
            exists(&name)?;
            let signal = stop_signal_of(&rt, &name);
            let s = rt.stop_container(&name, MAIN, signal, Duration::from_secs(time))?;
            println!("{name} stopped (exit code {})", s.exit_code.unwrap_or(255));
            Ok(0)
        }
        ContainerCmd::Rm { names, force } => {
            for name in names {
                exists(&name)?;
                if let Ok(s) = rt.container(&name, MAIN)
                    && s.status == Status::Running
                    && !force
                {
                    bail!("{name} is running; stop it first, or use rm -f");
                }
                rt.remove_pod(&name)?;
                println!("{name}");
            }
            Ok(0)
        }
        ContainerCmd::Exec {
            interactive,
            tty,
            name,
            command,
        } => {
            exists(&name)?;
            if tty && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                bail!("-t needs a terminal on stdin; leave out -t when piping input (use -i)");
            }
            let exe = std::env::current_exe().context("cannot find the berth executable")?;
            let exec = [exe.display().to_string(), EXEC_ROLE.into()];
            Ok(rt.exec(&name, MAIN, &command, interactive || tty, &exec)?)
        }
    }
}

/// The hidden roles, dispatched before anything starts a thread. `None` when `argv` is not
/// one of them.
pub fn hidden_role(argv: &[String]) -> Option<i32> {
    match argv.get(1).map(String::as_str) {
        Some(SHIM_ROLE) => Some(match argv.get(2) {
            Some(dir) => berth_runtime::shim::main(Path::new(dir)),
            None => {
                eprintln!("usage: berth {SHIM_ROLE} POD_DIR");
                2
            }
        }),
        Some(EXEC_ROLE) => Some(match (argv.get(2), argv.get(3), argv.get(4)) {
            (Some(dir), Some(name), Some(sep)) if sep == "--" => {
                berth_runtime::exec::main(Path::new(dir), name, &argv[5..])
            }
            _ => {
                eprintln!("usage: berth {EXEC_ROLE} POD_DIR CONTAINER -- COMMAND...");
                2
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let m = parse_volume("data:/data:ro", dir.path()).unwrap();
        assert!(m.read_only);
        assert!(m.source.ends_with("volumes/data"));
        assert!(
            parse_volume("/nonexistent/x:/d", dir.path())
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(
            parse_volume("a:rel", dir.path())
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        assert!(parse_volume("a", dir.path()).is_err());
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            ("0.0.0.0:8080".parse().unwrap(), 80)
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80").unwrap(),
            ("127.0.0.1:8080".parse().unwrap(), 80)
        );
        assert!(parse_publish("x:80").is_err());
        assert_eq!(stop_signal(""), libc::SIGTERM);
        assert_eq!(stop_signal("SIGQUIT"), libc::SIGQUIT);
        assert_eq!(stop_signal("quit"), libc::SIGQUIT);
        assert_eq!(stop_signal("9"), 9);
        assert_eq!(stop_signal("SIGNOPE"), libc::SIGTERM);
    }
}

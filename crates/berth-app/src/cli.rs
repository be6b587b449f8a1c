//! The command line of the one `berth` binary: roles (`up`, `server`) and the CLI verbs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::server::{ServerOptions, start};

/// berth: a container platform in one binary, speaking the Kubernetes API.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Start a local cluster with `berth up`, then use the verbs (`berth get pods`) from another terminal."
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: berth_cli::Conn,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run an all-in-one local cluster in the foreground (Ctrl-C stops it)
    Up(ServerArgs),
    /// Run the control plane only: API server, store, scheduler and controllers
    Server(ServerArgs),
    /// Run a node: register with a control plane and run the pods it places here (as root)
    Agent(AgentArgs),
    /// Run one container from a local image in the foreground and exit with its code
    ///
    /// Isolated as Docker isolates (own pid, mount, uts, ipc and network namespaces, Docker's
    /// default capabilities, no_new_privs, a seccomp filter, masked /proc paths), on an overlay
    /// of the image's layers, in a pod sandbox of its own with an address on this machine's
    /// bridge. Its output streams here and `berth run` exits with its code; -d leaves it
    /// running (see `berth container`). The image `host` runs this machine's own programs.
    Run(crate::run::RunArgs),
    /// Containers started by `berth run` on this machine: ls, logs, wait, stop, rm, exec
    Container(crate::run::ContainerArgs),
    Gen(crate::confgen::GenArgs),
    #[command(flatten)]
    Verb(berth_cli::Verb),
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Where state lives (store, tokens, kubeconfig)
    #[arg(long, value_name = "DIR", env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the API listens on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    pub api_listen: SocketAddr,
    /// How long the history of every object is kept (e.g. 7d, 12h, 30m)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = berth_api::duration::parse)]
    pub history_retention: Duration,
    /// Once ready, apply these manifests (files or directories), as `berth apply -f` would
    #[arg(long, value_name = "FILE")]
    pub apply: Vec<String>,
    /// How pods that name no strategy are placed: spread, binpack, round-robin or random
    /// (a workload picks its own with the annotation berth.dev/scheduling-strategy)
    #[arg(long, value_name = "STRATEGY", default_value = "spread", value_parser = parse_strategy)]
    pub scheduling: berth_scheduler::Strategy,
    /// How long a node may go without renewing its Lease before it is NotReady
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = berth_api::duration::parse)]
    pub node_monitor_grace_period: Duration,
    /// The cluster's pod range: a node that names no --pod-cidr gets the next free /24 of it
    #[arg(long, value_name = "CIDR", default_value = "10.42.0.0/16", value_parser = berth_api::cidr::Ipv4Net::parse_cluster)]
    pub cluster_cidr: berth_api::cidr::Ipv4Net,
    /// Where Services' cluster IPs come from
    #[arg(long, value_name = "CIDR", default_value = "10.43.0.0/16", value_parser = berth_api::cidr::Ipv4Net::parse_cluster)]
    pub service_cidr: berth_api::cidr::Ipv4Net,
    /// How long after a node went NotReady its pods are replaced elsewhere
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = berth_api::duration::parse)]
    pub pod_eviction_timeout: Duration,
    /// The longest a node agent's client certificate is valid (agents renew theirs at 70-90 %
    /// of its life): how long a stolen node certificate is good for
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = berth_api::duration::parse)]
    pub node_cert_lifetime: Duration,
    /// The longest a user's client certificate is valid (`berth user create`; its --ttl asks
    /// for less): until then a certificate is refused only once `berth user revoke` lists it
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = berth_api::duration::parse)]
    pub user_cert_lifetime: Duration,
    /// Where the audit log goes (JSON lines of audit.k8s.io/v1 Events: refused requests,
    /// reads of Secrets, writes), `-` for standard output [default: DATA_DIR/audit/audit.log]
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log once it would pass this many MiB
    #[arg(long, value_name = "MIB", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_log_maxsize: u64,
    /// How many rotated audit logs are kept (audit.log.1 is the newest); 0 keeps none
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub audit_log_maxbackup: usize,
    /// Kubernetes' EncryptionConfiguration file: which resources are encrypted at rest, with
    /// which keys (default DATA_DIR/encryption.yaml, written at first start with a fresh
    /// AES-GCM key for Secrets; it must be 0600)
    #[arg(long, value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// `berth up` only: the node's settings
    #[command(flatten)]
    pub node: NodeArgs,
}

/// What a peer may hold on each listener it can reach: the API, the agent API, the ingress
/// and DNS over TCP (each listener counts its own connections).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// The most connections open at once on each listener (API, agent API, ingress, DNS over
    /// TCP); more are accepted and closed at once
    #[arg(long, value_name = "N", env = "BERTH_MAX_CONNECTIONS", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// The most connections one client address may have open at once on each listener
    #[arg(long, value_name = "N", env = "BERTH_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_client: u32,
    /// How long a client may take to finish its TLS handshake (API, agent API)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub tls_handshake_timeout: Duration,
    /// How long a request head may take from its first byte (HTTP; a query over DNS TCP);
    /// the connection is then closed (the ingress answers 408 first)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub request_head_timeout: Duration,
    /// How long a connection may wait for its next request (keep-alive) or sit unwritable (a
    /// client that reads nothing) before it is closed
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// How long the API waits for a whole request body (408 after it)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub request_body_timeout: Duration,
    /// File descriptors kept for the store, pod workers and outgoing connections: a
    /// connection that would leave fewer free (of the soft RLIMIT_NOFILE, which berth raises
    /// to the hard limit at start) is closed at once; 0 keeps none
    #[arg(
        long,
        value_name = "N",
        env = "BERTH_FD_RESERVE",
        default_value_t = 256
    )]
    pub fd_reserve: u64,
}

impl LimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> berth_tls::ConnLimits {
        berth_tls::ConnLimits {
            max_conns: self.max_connections as usize,
            max_per_client: self.max_connections_per_client as usize,
            handshake_timeout: self.tls_handshake_timeout,
            head_timeout: self.request_head_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.request_body_timeout,
            fd_reserve: self.fd_reserve,
        }
    }
}

/// A node's settings (for `berth agent`, and the node inside `berth up`).
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's name (default: the host name)
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The address other nodes reach this one at
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub node_ip: std::net::Ipv4Addr,
    #[command(flatten)]
    pub net: crate::run::NetArgs,
    /// The most one image layer may take once unpacked (bytes, or a quantity such as 20Gi);
    /// a layer that unpacks past it is refused and nothing of it is kept
    #[arg(long, value_name = "SIZE", default_value = "20Gi", value_parser = parse_size, env = "BERTH_MAX_LAYER_SIZE")]
    pub max_layer_size: u64,
    /// The first wait before restarting a crashed container (or pulling again); it doubles
    /// up to 5 min, as Kubernetes' (10s)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = berth_api::duration::parse)]
    pub restart_backoff: Duration,
    /// A registry spoken to over plain HTTP (repeatable)
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// The port of the node's agent API (logs, exec, top) on --node-ip; 0 picks a free one
    #[arg(
        long,
        value_name = "PORT",
        env = "BERTH_AGENT_PORT",
        default_value_t = 10250
    )]
    pub agent_port: u16,
    /// Where the node's cluster DNS sends names outside the cluster: `host` (this machine's
    /// resolv.conf), `none` (answer REFUSED), or addresses (comma-separated)
    #[arg(
        long,
        value_name = "WHERE",
        env = "BERTH_DNS_UPSTREAM",
        default_value = "host"
    )]
    pub dns_upstream: String,
    /// How long the service proxy lets connections to an endpoint that stopped being ready
    /// go on before closing them
    #[arg(
        long,
        value_name = "DURATION",
        env = "BERTH_PROXY_DRAIN_TIMEOUT",
        default_value = "30s",
        value_parser = berth_api::duration::parse
    )]
    pub proxy_drain_timeout: Duration,
    /// How the service proxy relays the bytes of established cluster IP and node port
    /// connections: `io-uring` (threads, one per two CPUs, each submitting all its sends and
    /// receives in one system call; epoll where the kernel does not allow io_uring) or
    /// `epoll` (a copy task per connection)
    #[arg(
        long,
        value_name = "RELAY",
        env = "BERTH_PROXY_RELAY",
        default_value = "io-uring"
    )]
    pub proxy_relay: berth_net::proxy::Relay,
    /// The port the node serves HTTP ingress on, on --node-ip (Ingress objects and pods'
    /// VIRTUAL_HOST); 0 turns the ingress off
    #[arg(
        long,
        value_name = "PORT",
        env = "BERTH_INGRESS_PORT",
        default_value_t = 80
    )]
    pub ingress_port: u16,
    /// A directory this node's ConfigTemplates may write into (repeatable; default
    /// DATA_DIR/templates): a template whose destination is elsewhere is not rendered. Add
    /// /etc/nginx and the like for services configured from the cluster
    #[arg(long, value_name = "DIR")]
    pub config_template_dir: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The control plane's URL
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The node's bearer token
    #[arg(long, value_name = "TOKEN", env = "BERTH_TOKEN")]
    pub token: String,
    /// The cluster CA (PEM) to trust the server with (the server writes it to
    /// DATA_DIR/pki/ca.crt)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Where pods, images and volumes live
    #[arg(long, value_name = "DIR", env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The cluster's service range (the server's --service-cidr): blackholed on this node
    #[arg(long, value_name = "CIDR", default_value = "10.43.0.0/16", value_parser = berth_api::cidr::Ipv4Net::parse_cluster)]
    pub service_cidr: berth_api::cidr::Ipv4Net,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A size in bytes, written as a number or a Kubernetes quantity (`20Gi`, `500M`).
fn parse_size(s: &str) -> Result<u64, String> {
    let q = berth_api::quantity::Quantity::parse(s).map_err(|e| e.to_string())?;
    u64::try_from(q.units_ceil())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a positive size"))
}

/// A duration that is not zero (a zero timeout would close every connection).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = berth_api::duration::parse(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: a timeout must be longer than zero"));
    }
    Ok(d)
}

fn parse_strategy(s: &str) -> Result<berth_scheduler::Strategy, String> {
    berth_scheduler::Strategy::parse(s)
        .ok_or_else(|| format!("{s:?} is not one of spread, binpack, round-robin, random"))
}

impl NodeArgs {
    /// The agent's configuration over `data_dir`.
    pub fn agent_config(
        &self,
        data_dir: &std::path::Path,
        cluster_ca_pem: Option<String>,
        conn_limits: berth_tls::ConnLimits,
    ) -> anyhow::Result<berth_agent::AgentConfig> {
        let runtime = self.net.runtime(data_dir)?;
        let exe = std::env::current_exe()?;
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_else(|_| "node".into()),
        };
        Ok(berth_agent::AgentConfig {
            node_name,
            node_ip: self.node_ip,
            runtime,
            data_dir: data_dir.to_path_buf(),
            exec_command: vec![exe.display().to_string(), crate::run::EXEC_ROLE.into()],
            lease_duration: Duration::from_secs(10),
            dns: berth_runtime::pod::Dns::from_host(),
            insecure_registries: self.insecure_registry.clone(),
            max_layer_size: self.max_layer_size,
            restart_backoff: self.restart_backoff,
            agent_port: self.agent_port,
            cluster_ca_pem,
            range_given: self.net.pod_cidr.is_some(),
            dns_upstream: match self.dns_upstream.as_str() {
                "host" => berth_net::dns::host_upstreams(),
                "none" => Vec::new(),
                list => list
                    .split(',')
                    .map(|a| {
                        let a = a.trim();
                        a.parse::<std::net::SocketAddr>()
                            .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                            .map_err(|_| {
                                anyhow::anyhow!(
                                    "--dns-upstream {a:?} is not host, none or an address"
                                )
                            })
                    })
                    .collect::<anyhow::Result<_>>()?,
            },
            service_cidr: None,
            proxy_drain: self.proxy_drain_timeout,
            proxy_relay: self.proxy_relay,
            ingress_port: self.ingress_port,
            conn_limits,
            config_template_dirs: self.template_dirs(data_dir)?,
        })
    }

    /// The directories ConfigTemplates may write into: those given, or DATA_DIR/templates.
    fn template_dirs(&self, data_dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
        if self.config_template_dir.is_empty() {
            return Ok(vec![std::path::absolute(data_dir.join("templates"))?]);
        }
        self.config_template_dir
            .iter()
            .map(|d| {
                let ok = d.is_absolute()
                    && !d.components().any(|c| c == std::path::Component::ParentDir);
                anyhow::ensure!(
                    ok,
                    "--config-template-dir {} must be an absolute path without ..",
                    d.display()
                );
                Ok(d.clone())
            })
            .collect()
    }
}

async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "berth agent needs root (it makes namespaces, cgroups and mounts); run it with sudo"
        );
    }
    let data_dir = args.data_dir.unwrap_or_else(berth_cli::default_data_dir);
    let ca = match &args.ca_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("--ca-file {}", f.display()))?)
        }
        None => None,
    };
    let client = berth_client::Client::with_ca(&args.server, &args.token, ca.as_deref())?;
    let mut cfg = args
        .node
        .agent_config(&data_dir, ca, args.limits.limits())?;
    cfg.service_cidr = Some(args.service_cidr);
    println!("berth agent {} joining {}", cfg.node_name, args.server);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(berth_agent::run(client, cfg, stop));
    tokio::select! {
        r = agent => r.context("the agent panicked")??,
        _ = wait_for_signal() => {
            let _ = stop_tx.send(true);
            println!("stopping (pods keep running; the next start adopts them)");
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_server(args: ServerArgs, all_in_one: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = args.data_dir.unwrap_or_else(berth_cli::default_data_dir);
    let mut opts = ServerOptions::new(&data_dir);
    opts.listen = args.api_listen;
    opts.retention = args.history_retention;
    opts.scheduling = args.scheduling;
    opts.node_timing = berth_controllers::nodes::Timing {
        grace: args.node_monitor_grace_period,
        eviction: args.pod_eviction_timeout,
        cluster_cidr: args.cluster_cidr,
    };
    opts.service_cidr = args.service_cidr;
    opts.limits = args.limits.limits();
    if let Some(path) = args.audit_log_path {
        opts.audit.sink = if path.as_os_str() == "-" {
            berth_apiserver::audit::Sink::Stdout
        } else {
            berth_apiserver::audit::Sink::File(path)
        };
    }
    opts.audit.max_bytes = args.audit_log_maxsize.saturating_mul(1024 * 1024);
    opts.audit.max_backups = args.audit_log_maxbackup;
    opts.node_cert_lifetime = args.node_cert_lifetime;
    opts.user_cert_lifetime = args.user_cert_lifetime;
    opts.encryption_config = args.encryption_provider_config.clone();
    let server = start(opts).await?;
    let (agent_stop, agent_stop_rx) = tokio::sync::watch::channel(false);
    if all_in_one {
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "berth up runs pods, which needs root (namespaces, cgroups, mounts); run it with sudo, or run `berth server` for the control plane alone"
            );
        }
        let cfg =
            args.node
                .agent_config(&data_dir, Some(server.ca_pem.clone()), args.limits.limits())?;
        let mut cfg = cfg;
        cfg.service_cidr = Some(args.service_cidr);
        let client =
            berth_client::Client::with_ca(&server.url, &server.token, Some(&server.ca_pem))?;
        tokio::spawn(async move {
            if let Err(e) = berth_agent::run(client, cfg, agent_stop_rx).await {
                eprintln!("error: the node agent stopped: {e:#}");
            }
        });
    }
    let ready_ms = started.elapsed().as_millis();
    tracing::info!(url = %server.url, data_dir = %data_dir.display(), ready_ms = ready_ms as u64, "berth is ready");
    let role = if all_in_one {
        "cluster"
    } else {
        "control plane"
    };
    println!("berth {role} is ready at {} ({ready_ms} ms)", server.url);
    println!("kubeconfig: {}", server.kubeconfig.display());
    if !args.apply.is_empty() {
        let conn = berth_cli::Conn {
            kubeconfig: Some(server.kubeconfig.clone()),
            namespace: None,
        };
        let mut out = Vec::new();
        let verb = berth_cli::Verb::Apply {
            files: args.apply.clone(),
            dry_run: false,
        };
        let r = berth_cli::run(&conn, verb, &mut out).await;
        print!("{}", String::from_utf8_lossy(&out));
        if let Err(e) = r {
            eprintln!("{}", berth_cli::describe_error(&e));
        }
    }
    println!();
    println!("Try, in another terminal:");
    println!("  export KUBECONFIG={}", server.kubeconfig.display());
    if all_in_one {
        println!(
            "  berth get pods -o wide                       # where the pods run, their addresses"
        );
        println!(
            "  curl http://POD_IP:8080/                     # the demo answers with its pod's name"
        );
        println!(
            "  berth get svc demo; curl http://CLUSTER_IP/  # the Service, balanced over its pods by this node's proxy"
        );
        println!(
            "  berth kv ls /services/default/demo           # its ready pods, registered in the key/value tree"
        );
        println!("  berth logs deploy/demo -f                    # every replica's log, prefixed");
        println!("  berth exec -it deploy/demo -- sh             # a shell in a replica");
        println!(
            "    (inside: getent hosts demo               # cluster DNS: the Service's address)"
        );
        println!("  berth top pods                               # CPU and memory");
        println!("  berth scale deploy/demo --replicas 5");
        println!("  berth delete pod POD                         # it is replaced");
        println!("  kubectl set env deploy/demo GREETING=hi      # a rolling update");
        println!("  berth rollout status deploy/demo; berth rollout undo deploy/demo");
        println!("  berth get events; berth history deploy/demo --diff");
        println!(
            "  berth user create alice --role view -n default  # alice.kubeconfig: a read-only user to hand out"
        );
    } else {
        println!("  berth get namespaces");
        println!("  berth apply -f examples/demo.yaml");
        println!("  berth get deploy,svc,cm -o wide  # what you applied");
        println!("  berth history deploy/demo --diff # who changed it, and how");
        println!("  berth export > state.yaml        # the whole desired state");
        println!("  berth user create alice --role edit -n default  # alice.kubeconfig, for alice");
    }
    println!("(kubectl works too: it reads the same kubeconfig.)");
    println!();
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await;
    println!("stopping...");
    let _ = agent_stop.send(true);
    server.shutdown().await;
    Ok(())
}

fn init_tracing() {
    init_tracing_with("warn");
}

fn init_tracing_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Serving roles hold a descriptor per connection, pod and open store file: their soft
/// `RLIMIT_NOFILE` is raised to the hard limit (the soft default, 1024, is for select(2)).
fn raise_nofile_limit() {
    match berth_tls::limits::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                before,
                after,
                "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
            )
        }
        Ok((_, after)) => tracing::info!(limit = after, "open-file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    // The shim role must stay single-threaded: it is dispatched before anything starts threads.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a.starts_with("__")) {
        // The runtime library warns about every cgroup controller this kernel lacks; only
        // errors are for the user unless BERTH_LOG asks for more.
        init_tracing_with("error");
        if let Some(code) = crate::run::hidden_role(&argv) {
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
    }
    let cli = Cli::parse();
    // Local containers need no async runtime (and the shim they start must not inherit one).
    init_tracing();
    let local = match &cli.cmd {
        Cmd::Run(args) => Some(crate::run::run(args.clone())),
        Cmd::Container(args) => Some(crate::run::container(args.clone())),
        _ => None,
    };
    if let Some(result) = local {
        return match result {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(125)
            }
        };
    }

    if matches!(cli.cmd, Cmd::Up(_) | Cmd::Server(_) | Cmd::Agent(_)) {
        raise_nofile_limit();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<i32> = rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(_) | Cmd::Container(_) => {
                unreachable!("handled before the runtime starts")
            }
            Cmd::Up(a) => run_server(a, true).await.map(|_| 0),
            Cmd::Server(a) => run_server(a, false).await.map(|_| 0),
            Cmd::Agent(a) => run_agent(a).await.map(|_| 0),
            Cmd::Gen(a) => crate::confgen::run(&cli.conn, a).await,
            Cmd::Verb(v) => {
                let mut out = std::io::stdout().lock();
                berth_cli::run(&cli.conn, v, &mut out).await
            }
        }
    });
    // Detached tasks (a node's pod workers) may sit in blocking runtime calls: give them a
    // moment, not forever. The pods keep running in their shims either way.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        // A closed pipe (`berth get ... | head`) is the reader's choice, not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", berth_cli::describe_error(&e));
            ExitCode::from(1)
        }
    }
}

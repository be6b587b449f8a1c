//! Starting and stopping the control plane: store, API server, garbage collector, scheduler,
//! workload controllers, kubeconfig.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_apiserver::{ApiServer, Authenticator, ServerConfig};
use berth_store::{Store, StoreOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to run a control plane.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// How long history is kept.
    pub retention: Duration,
    pub bookmark_interval: Duration,
    /// Serve HTTPS with the cluster CA (default). Plain HTTP is for debugging: kubectl does
    /// not send tokens over it.
    pub tls: bool,
    /// Run the scheduler and the workload controllers (off: the API server and its garbage
    /// collector alone, as kube-apiserver without its controller manager and scheduler).
    pub controllers: bool,
    /// How pods that name no strategy are placed.
    pub scheduling: berth_scheduler::Strategy,
    /// When a silent node is NotReady, and when its pods are replaced.
    pub node_timing: berth_controllers::nodes::Timing,
    /// Where Services' cluster IPs come from.
    pub service_cidr: berth_api::cidr::Ipv4Net,
    /// What API clients may hold: connections, timeouts, descriptors.
    pub limits: berth_tls::ConnLimits,
    /// The longest a node agent's client certificate is valid (agents renew theirs before).
    pub node_cert_lifetime: Duration,
    /// The longest a user's client certificate (`berth user create`) is valid.
    pub user_cert_lifetime: Duration,
    /// The audit log: where, rotated when, how many old files kept.
    pub audit: berth_apiserver::audit::AuditConfig,
    /// The encryption config (`--encryption-provider-config`); `None` is
    /// `DATA_DIR/encryption.yaml`, written with a fresh key for Secrets when absent.
    pub encryption_config: Option<PathBuf>,
}

impl ServerOptions {
    pub fn new(data_dir: &Path) -> Self {
        ServerOptions {
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:6443".parse().expect("literal address"),
            retention: Duration::from_secs(7 * 24 * 3600),
            bookmark_interval: Duration::from_secs(5),
            tls: true,
            controllers: true,
            scheduling: berth_scheduler::Strategy::Spread,
            node_timing: berth_controllers::nodes::Timing::default(),
            service_cidr: berth_api::cidr::Ipv4Net {
                addr: std::net::Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
            limits: berth_tls::ConnLimits::default(),
            node_cert_lifetime: Duration::from_secs(7 * 24 * 3600),
            user_cert_lifetime: Duration::from_secs(30 * 24 * 3600),
            audit: berth_apiserver::audit::AuditConfig::file(
                data_dir.join("audit").join("audit.log"),
            ),
            encryption_config: None,
        }
    }
}

/// A control plane running in this process.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub url: String,
    pub token: String,
    /// The cluster CA (PEM); empty when serving plain HTTP.
    pub ca_pem: String,
    pub kubeconfig: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Store,
    api: std::sync::Arc<ApiServer>,
}

impl RunningServer {
    /// The store under this server, for tests and in-process tools.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops accepting, lets in-flight requests finish (at most 5 s), stops the controllers
    /// and closes the store.
    pub async fn shutdown(self) {
        self.api.begin_shutdown();
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

pub const ADMIN_USER: &str = "admin";

/// Reads the token file, creating it with a fresh admin token on first start.
fn ensure_tokens(dir: &Path) -> anyhow::Result<(Authenticator, String)> {
    let path = dir.join("tokens.csv");
    if !path.exists() {
        let token = berth_apiserver::auth::generate_token()
            .context("cannot make the admin token: the OS gave no randomness")?;
        write_private(
            &path,
            &format!(
                "# token,user,uid,groups (kube-apiserver --token-auth-file format)\n{token},{ADMIN_USER},1,\"system:masters\"\n"
            ),
        )?;
    }
    let auth = Authenticator::from_file(&path)?;
    let text = std::fs::read_to_string(&path)?;
    let admin = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            let mut f = l.split(',');
            let t = f.next()?;
            (f.next()? == ADMIN_USER).then(|| t.trim().to_string())
        })
        .with_context(|| format!("{} has no line for user {ADMIN_USER}", path.display()))?;
    Ok((auth, admin))
}

/// Writes a file only its owner can read, atomically.
pub fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    berth_apiserver::files::write_private(path, content)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the encryption config before anything is served; the default file is written at
/// first start (a fresh AES-GCM key for Secrets), a file named by the flag must exist.
/// Says whether it wrote the file.
fn load_encryption(
    opts: &ServerOptions,
) -> anyhow::Result<(
    std::sync::Arc<berth_apiserver::encryption::Transformer>,
    bool,
)> {
    use berth_apiserver::encryption::{DEFAULT_FILE, Transformer};
    let (path, create) = match &opts.encryption_config {
        Some(p) => (p.clone(), false),
        None => (opts.data_dir.join(DEFAULT_FILE), true),
    };
    let (values, created) = Transformer::load_or_create(&path, create)
        .map_err(|e| anyhow::anyhow!("encryption at rest: {e}"))?;
    if created {
        tracing::info!(path = %path.display(), "wrote a new encryption config: Secrets are encrypted at rest with a fresh AES-GCM key; keep a copy of the file apart from the data directory");
    }
    tracing::info!(path = %path.display(), providers = %values.describe(), "encryption at rest");
    Ok((std::sync::Arc::new(values), created))
}

/// Starts the control plane and returns once it is ready to serve.
pub async fn start(opts: ServerOptions) -> anyhow::Result<RunningServer> {
    // The data directory holds the store (with every Secret), tokens and keys: root's alone.
    berth_fs::private_dir(&opts.data_dir)
        .with_context(|| format!("cannot create data directory {}", opts.data_dir.display()))?;
    let (auth, token) = ensure_tokens(&opts.data_dir)?;
    // The audit log names users, paths and request bodies: its directory is root's alone.
    if let berth_apiserver::audit::Sink::File(path) = &opts.audit.sink
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        berth_fs::private_dir(dir).with_context(|| {
            format!("cannot create the audit log's directory {}", dir.display())
        })?;
    }
    let (encryption, new_key) = load_encryption(&opts)?;
    let store_dir = opts.data_dir.join("store");
    berth_fs::private_dir(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let store_opts = StoreOptions {
        retention: opts.retention,
        ..Default::default()
    };
    let dir = store_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, store_opts))
        .await?
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another berth running? choose another with --api-listen",
                opts.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let listener = berth_tls::limits::Listener::new(
        listener,
        "api",
        opts.limits,
        if opts.tls {
            berth_tls::limits::Refusal::Close
        } else {
            berth_tls::limits::Refusal::Http
        },
    );
    let pki = if opts.tls {
        let dir = opts.data_dir.join("pki");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Some(berth_apiserver::tls::ensure(&dir, &[addr.ip()])?)
    } else {
        None
    };
    // Listening on every address: clients on this host reach it on loopback.
    let reach = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    let url = format!("{}://{reach}", if pki.is_some() { "https" } else { "http" });
    let ca_pem = pki.as_ref().map(|p| p.ca_pem.clone()).unwrap_or_default();
    let signer = pki.as_ref().map(|p| {
        std::sync::Arc::new(berth_controllers::csr::Signer {
            ca: p.ca.clone(),
            max_lifetime: opts.node_cert_lifetime,
            max_user_lifetime: opts.user_cert_lifetime,
        })
    });
    let config = ServerConfig {
        bookmark_interval: opts.bookmark_interval,
        agent_client: pki.as_ref().map(|p| p.agent_client.clone()),
        sa_signer: match &pki {
            Some(_) => Some(std::sync::Arc::new(
                berth_apiserver::satoken::Signer::load_or_create(&opts.data_dir.join("pki"))
                    .map_err(|e| anyhow::anyhow!("ServiceAccount token key: {e}"))?,
            )),
            None => None,
        },
        service_cidr: opts.service_cidr,
        body_timeout: opts.limits.body_timeout,
        audit: Some(opts.audit.clone()),
        encryption: encryption.clone(),
        ..Default::default()
    };
    let api = ApiServer::new(store.clone(), auth, config);
    api.bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the default namespaces and roles: {e}"))?;
    if new_key {
        // Secrets stored before this start (a data directory from before encryption at rest)
        // are encrypted now, not at their next change.
        let n = api
            .registry
            .rewrite_stale("system:berth")
            .await
            .map_err(|e| anyhow::anyhow!("cannot encrypt the Secrets stored before: {e}"))?;
        if n > 0 {
            tracing::info!(
                objects = n,
                "encrypted the objects stored before encryption at rest was on"
            );
        }
    }
    let kubeconfig = opts.data_dir.join("kubeconfig.yaml");
    let rendered = berth_client::kubeconfig::render(&url, &ca_pem, &token, ADMIN_USER);
    if let Err(e) = berth_apiserver::files::write_private(&kubeconfig, &rendered) {
        // A full disk: the server still serves reads (writes answer 507 until space is
        // freed); only the admin's kubeconfig may name an old address.
        if e.kind() != std::io::ErrorKind::StorageFull {
            return Err(e).with_context(|| format!("cannot write {}", kubeconfig.display()));
        }
        tracing::warn!(path = %kubeconfig.display(), error = %e, "the disk is full: the kubeconfig is not updated and may name an old address");
    }

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let router = berth_apiserver::router(api.clone());
    let mut rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        berth_apiserver::tls::serve(
            listener,
            router,
            pki.map(|p| p.server_config),
            shutdown,
            Duration::from_secs(5),
        )
        .await
    }));
    // One watch of every object, shared by the controllers below.
    let informer = berth_controllers::informer::Informer::new(api.registry.clone());
    tasks.push(tokio::spawn(informer.clone().run(stop_rx.clone())));
    tasks.push(tokio::spawn(berth_controllers::gc::run(
        api.registry.clone(),
        informer.clone(),
        stop_rx.clone(),
    )));
    // Node identities: certificate requests approved and signed (with TLS only: without it
    // there is no CA and nothing to present a certificate over).
    if let Some(signer) = signer {
        tasks.push(tokio::spawn(berth_controllers::csr::run(
            api.registry.clone(),
            informer.clone(),
            signer,
            stop_rx.clone(),
        )));
    }
    // RBAC's own: the roles a user binds to are as the aggregation makes them.
    tasks.push(tokio::spawn(berth_controllers::rbac::run(
        api.registry.clone(),
        informer.clone(),
        stop_rx.clone(),
    )));
    if opts.controllers {
        tasks.push(tokio::spawn(berth_controllers::scheduler::run(
            api.registry.clone(),
            informer.clone(),
            opts.scheduling,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(berth_controllers::workloads::run(
            api.registry.clone(),
            informer.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(berth_controllers::serviceaccounts::run(
            api.registry.clone(),
            informer.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(berth_controllers::endpoints::run(
            api.registry.clone(),
            informer,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(berth_controllers::nodes::run(
            api.registry.clone(),
            opts.node_timing,
            stop_rx,
        )));
    }
    Ok(RunningServer {
        addr,
        url,
        token,
        ca_pem,
        kubeconfig,
        stop,
        tasks,
        store,
        api,
    })
}

//! berth's API server: Kubernetes paths, shapes and semantics over the revisioned store, plus
//! berth's history API.
//!
//! API boundary: `ApiServer::new` + `router` (served by `tls::serve`), and for the wiring
//! `audit::{AuditConfig, Sink}`, `auth`, `files` and `tls`. Everything else is reached through HTTP, except what the
//! in-process controllers (`berth-controllers`) use to take the same write path as a request:
//! `Registry` (`registry`; `revision` and `watch_objects` for their informer), its errors
//! (`error`), Event recording (`events`) and the key/value tree's `kv::{list_dir, sync_dir}`;
//! for the wiring also `encryption` (the `EncryptionConfiguration` file, read at start).
//! The store under the `Registry` is this crate's own (`pub(crate)`), so where objects and
//! keys live in it is decided here. `patch` and `server::route` are public for the benchmarks
//! and the fuzz test. Discovery, history, Pod Security admission, node proxying and watch
//! encoding are private: they are HTTP's business.

pub mod audit;
pub mod auth;
pub mod authz;
mod discovery;
pub mod encryption;
pub mod error;
pub mod events;
pub mod files;
mod history;
pub mod kv;
pub mod nodeauthz;
pub mod patch;
mod podsecurity;
mod proxy;
mod ranges;
pub mod registry;
mod reviews;
pub mod satoken;
pub mod server;
pub mod tls;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use berth_store::Store;

pub use auth::{Authenticator, UserInfo};
pub use registry::Registry;

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted (Kubernetes allows 3 MiB).
    pub max_body_bytes: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// berth's version, for `/version`.
    pub version: String,
    /// The client certificate presented to node agents (logs, exec, metrics); none when the
    /// server runs without TLS.
    pub agent_client: Option<berth_tls::Identity>,
    /// Where Services' cluster IPs come from.
    pub service_cidr: berth_api::cidr::Ipv4Net,
    /// What signs ServiceAccount tokens (none without TLS: then there are none).
    pub sa_signer: Option<Arc<satoken::Signer>>,
    /// How long a whole request body may take to arrive.
    pub body_timeout: Duration,
    /// Where the audit log goes; none: nothing is audited.
    pub audit: Option<audit::AuditConfig>,
    /// Encryption at rest of the resources it names (`--encryption-provider-config`);
    /// identity for everything by default.
    pub encryption: Arc<encryption::Transformer>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(5),
            version: env!("CARGO_PKG_VERSION").to_string(),
            agent_client: None,
            sa_signer: None,
            service_cidr: berth_api::cidr::Ipv4Net {
                addr: std::net::Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
            body_timeout: Duration::from_secs(60),
            audit: None,
            encryption: Arc::default(),
        }
    }
}

/// The API server's shared state.
#[derive(Debug)]
pub struct ApiServer {
    pub registry: Registry,
    pub auth: Authenticator,
    pub config: ServerConfig,
    /// The RBAC policy in force.
    pub(crate) authz: Arc<authz::Authorizer>,
    /// Shared by every watch: each change is decoded and encoded once.
    pub(crate) watch_cache: Arc<watch::EncodeCache>,
    /// Where refused requests, reads of Secrets and writes are recorded.
    pub audit: Arc<audit::AuditLog>,
    ready: AtomicBool,
    /// Turns true when the server stops: open watches end, so clients re-watch elsewhere or
    /// later instead of holding the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl ApiServer {
    pub fn new(store: Store, auth: Authenticator, config: ServerConfig) -> Arc<Self> {
        let audit = Arc::new(audit::AuditLog::start(config.audit.clone()));
        Arc::new(ApiServer {
            registry: Registry::new(store)
                .with_service_range(config.service_cidr)
                .with_encryption(config.encryption.clone()),
            auth,
            config,
            authz: Arc::default(),
            watch_cache: Arc::default(),
            audit,
            ready: AtomicBool::new(false),
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ends every open watch and reports not ready; call before draining connections.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        self.stopping.send_replace(true);
    }

    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Creates the default namespaces and RBAC policy, and starts following the policy (on
    /// the current tokio runtime, until shutdown); the server reports ready after this.
    pub async fn bootstrap(&self) -> Result<(), error::ApiError> {
        self.registry.ensure_default_namespaces().await?;
        self.registry.ensure_default_rbac().await?;
        // Loaded once here so the first request is decided on the policy just written.
        self.authz.load_now(&self.registry)?;
        self.authz.nodes.load_now(&self.registry)?;
        tokio::spawn(
            self.authz
                .nodes
                .clone()
                .follow(self.registry.clone(), self.stopping()),
        );
        tokio::spawn(
            self.authz
                .clone()
                .follow(self.registry.clone(), self.stopping()),
        );
        self.ready.store(true, Ordering::Release);
        Ok(())
    }
}

/// The HTTP router: one handler that routes by Kubernetes path.
pub fn router(state: Arc<ApiServer>) -> Router {
    Router::new()
        .fallback(server::handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

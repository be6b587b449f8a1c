//! TLS for the API: the cluster CA made at first start (kept in the data directory), a serving
//! certificate issued by it at every start for the names and addresses the server answers on,
//! and the client certificate the server presents to node agents (for logs, exec and stats).
//!
//! kubectl and client-go send bearer tokens only over TLS, so the API is HTTPS by default and
//! the kubeconfig carries the CA (`certificate-authority-data`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

pub use berth_tls::{Ca, Identity, TlsError, Usage, serve};

/// The user the API server is when it calls node agents.
use berth_tls::AGENT_CLIENT_USER;

/// The cluster's CA and the server's TLS configuration.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate, PEM, for kubeconfigs and clients.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
    /// What the server presents to node agents.
    pub agent_client: Identity,
    /// The CA itself, for signing what it approves (node agents' client certificates).
    pub ca: Arc<Ca>,
}

/// Loads (or makes, on first start) the CA in `dir`, and issues a serving certificate for
/// `localhost`, `127.0.0.1`, `::1` and `extra_ips`, and the agent client certificate.
pub fn ensure(dir: &Path, extra_ips: &[IpAddr]) -> Result<Pki, TlsError> {
    let ca = Ca::load_or_create(dir, "berth-ca")?;
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    for ip in extra_ips {
        if !ip.is_unspecified() && !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    let serving = ca.issue(
        "berth-apiserver",
        &["localhost".to_string(), "berth".to_string()],
        &ips,
        Usage::Server,
    )?;
    Ok(Pki {
        ca_pem: ca.pem.clone(),
        // Clients may authenticate with a certificate of the cluster CA (node agents do).
        server_config: berth_tls::server_config(
            &serving,
            berth_tls::ClientAuth::Optional(&ca.pem),
        )?,
        agent_client: ca.issue(AGENT_CLIENT_USER, &[], &[], Usage::Client)?,
        ca: Arc::new(ca),
    })
}

//! TLS for the API: a cluster CA made at first start (kept in the data directory), a serving
//! certificate issued by it at every start for the names and addresses the server answers on,
//! and the accept loop that serves the router over TLS.
//!
//! kubectl and client-go send bearer tokens only over TLS, so the API is HTTPS by default and
//! the kubeconfig carries the CA (`certificate-authority-data`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path} is not a PEM key or certificate: {message}")]
    Pem { path: String, message: String },
}

/// The cluster's CA and the server's TLS configuration.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate, PEM, for kubeconfigs and clients.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "berth-ca");
    p.distinguished_name.push(DnType::OrganizationName, "berth");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time_now();
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = now + Duration::from_secs(10 * 365 * 86400);
    Ok(p)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), TlsError> {
    crate::files::write_private(path, content).map_err(io(path))
}

/// Loads (or makes, on first start) the CA in `dir`, and issues a serving certificate for
/// `localhost`, `127.0.0.1`, `::1` and `extra_ips`.
pub fn ensure(dir: &Path, extra_ips: &[IpAddr]) -> Result<Pki, TlsError> {
    let key_path = dir.join("ca.key");
    let cert_path = dir.join("ca.crt");
    let (ca_key, ca_pem) = if key_path.exists() && cert_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
            path: key_path.display().to_string(),
            message: e.to_string(),
        })?;
        (
            key,
            std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?,
        )
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        (key, cert.pem())
    };
    // The CA's subject and key are all an issuer needs; they are the same at every start.
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut p = CertificateParams::new(vec!["localhost".to_string(), "berth".to_string()])?;
    p.distinguished_name
        .push(DnType::CommonName, "berth-apiserver");
    let mut ips: Vec<IpAddr> = vec![
        "127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    for ip in extra_ips {
        if !ip.is_unspecified() && !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    p.subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = now + Duration::from_secs(365 * 86400);
    let server_key = KeyPair::generate()?;
    let server_cert = p.signed_by(&server_key, &issuer)?;

    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| TlsError::Pem {
        path: cert_path.display().to_string(),
        message: e.to_string(),
    })?;
    let chain = vec![server_cert.der().clone(), ca_der];
    let key =
        PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).map_err(|e| {
            TlsError::Pem {
                path: "server key".into(),
                message: e.to_string(),
            }
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem,
        server_config: Arc::new(config),
    })
}

/// Serves `router` over TLS until `shutdown` resolves; then stops accepting and gives open
/// connections up to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

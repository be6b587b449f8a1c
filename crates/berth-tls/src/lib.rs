//! Certificates and TLS for berth's two HTTPS servers, the API and each node agent's API:
//!
//! - a CA (`Ca`): the cluster's, made at the server's first start and kept in its data
//!   directory; and each agent's own, made in memory at every agent start and published on
//!   its Node so the API server can trust the agent's serving certificate;
//! - identities (`Identity`) issued by a CA for serving and for client authentication (the
//!   API server authenticates to agents with a client certificate from the cluster CA, as
//!   kube-apiserver does to kubelets);
//! - rustls configurations for both ends, and the accept loop that serves an axum router
//!   over TLS or plain HTTP (with HTTP upgrades, for exec's WebSockets);
//! - the limits every listener a peer can reach accepts and serves under ([`limits`]).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod limits;
pub use limits::ConnLimits;

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn pem_err(path: &str) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// Writes a file only its owner can read (mode 0600), atomically: a reader sees the old
/// content or the new, never a part; the data is synced before the rename. A failed write
/// (a full disk) leaves the old file and no temporary one.
pub fn write_private(path: &Path, content: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(content.as_ref())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, common_name);
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

/// A certificate authority: its certificate (PEM) and what signs with it.
pub struct Ca {
    pub pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Ca {
    fn from_parts(common_name: &str, key: KeyPair, pem: String) -> Result<Ca, TlsError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(pem_err(common_name))?;
        Ok(Ca {
            pem,
            der,
            // The CA's subject and key are all an issuer needs; they are the same at every
            // start.
            issuer: Issuer::new(ca_params(common_name)?, key),
        })
    }

    /// A new CA held in memory only.
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate()?;
        let pem = ca_params(common_name)?.self_signed(&key)?.pem();
        Ca::from_parts(common_name, key, pem)
    }

    /// Loads the CA kept in `dir` (`ca.key`, `ca.crt`), making it on first use.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<Ca, TlsError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.crt");
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
                path: key_path.display().to_string(),
                message: e.to_string(),
            })?;
            let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            return Ca::from_parts(common_name, key, pem);
        }
        let key = KeyPair::generate()?;
        let pem = ca_params(common_name)?.self_signed(&key)?.pem();
        write_private(&key_path, key.serialize_pem()).map_err(io(&key_path))?;
        write_private(&cert_path, &pem).map_err(io(&cert_path))?;
        Ca::from_parts(common_name, key, pem)
    }

    /// Issues a certificate valid for a year: for a server, valid for `names` and `ips`;
    /// for a client, naming `common_name` (the user it authenticates as).
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        ips: &[IpAddr],
        usage: Usage,
    ) -> Result<Identity, TlsError> {
        let mut p = CertificateParams::new(names.to_vec())?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let now = time_now();
        p.not_before = now - Duration::from_secs(3600);
        p.not_after = now + Duration::from_secs(365 * 86400);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(pem_err(common_name))?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.der.clone()],
            key,
        })
    }
}

impl Ca {
    /// Signs a certificate signing request (PEM) as a client certificate valid for
    /// `lifetime`, naming the subject the request asks for (check it first: see
    /// [`request_subject`]); returns the certificate, PEM.
    pub fn sign_client_request(
        &self,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<String, TlsError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let p = &mut csr.params;
        // Only the subject is taken from the request; what the certificate may do is ours.
        p.subject_alt_names.clear();
        p.custom_extensions.clear();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time_now();
        // A little back-dated, for clocks a little behind (5 min, as Kubernetes' signer; a
        // tenth of a short lifetime, whose renewal is reckoned from its start).
        p.not_before = now - Duration::from_secs(300).min(lifetime / 10);
        p.not_after = now + lifetime;
        Ok(csr.signed_by(&self.issuer)?.pem())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM bundle as a root store.
pub fn roots(pem: &str, what: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.map_err(pem_err(what))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: what.to_string(),
            message: "no certificate in it".into(),
        });
    }
    Ok(roots)
}

/// Which client certificates a server asks for.
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    /// None (clients authenticate otherwise, or not at all).
    None,
    /// Every client must present one issued by this CA (PEM).
    Required(&'a str),
    /// A client may present one issued by this CA; one that presents another is refused.
    Optional(&'a str),
}

/// A server configuration presenting `id`, asking clients for certificates as `client_auth`
/// says.
pub fn server_config(
    id: &Identity,
    client_auth: ClientAuth<'_>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let verifier = |pem: &str| -> Result<_, TlsError> {
        Ok(rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(pem, "client CA")?),
            provider(),
        ))
    };
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(pem) => builder.with_client_cert_verifier(
            verifier(pem)?
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        ),
        ClientAuth::Optional(pem) => builder.with_client_cert_verifier(
            verifier(pem)?
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        ),
    };
    let mut config = builder.with_single_cert(id.chain.clone(), id.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only `roots_pem`, presenting `id` when given.
pub fn client_config(
    roots_pem: &str,
    id: Option<&Identity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_from(roots(roots_pem, "certificate-authority")?, id)
}

/// A client configuration trusting only `roots` (none at all when it is empty: then only
/// plain-HTTP peers can be reached), presenting `id` when given. The one TLS client setup of
/// berth: the API client, image pulls and the server's calls to node agents.
pub fn client_config_from(
    roots: rustls::RootCertStore,
    id: Option<&Identity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match id {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The connector of a pooled HTTP/1.1 client (hyper's) for `http://` and `https://` URLs:
/// TLS with `tls`, `TCP_NODELAY`, and a connect that gives up after `connect_timeout`.
pub fn https_connector(
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// The connector of a client that presents no certificate and trusts only the certificates
/// of `ca_pem` (none at all without it: then only plain-HTTP peers can be reached); `what`
/// names the bundle in errors. The API client's and image pulls' one TLS setup.
pub fn connector_trusting(
    ca_pem: Option<&str>,
    what: &str,
    connect_timeout: Duration,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TlsError,
> {
    let roots = match ca_pem {
        Some(pem) => roots(pem, what)?,
        None => rustls::RootCertStore::empty(),
    };
    Ok(https_connector(
        client_config_from(roots, None)?,
        connect_timeout,
    ))
}

/// What a request's connection is: the peer's address, and the client certificate it
/// presented (verified against the server's client CA during the handshake), a request
/// extension on every request [`serve`] serves.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: std::net::SocketAddr,
    pub client_cert: Option<CertificateDer<'static>>,
}

/// The user a client certificate names, as kube-apiserver reads one: its subject's common name
/// is the user, each organization a group. `None` when it names no user.
pub fn client_subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    (!user.is_empty()).then_some((user, groups))
}

/// The user (CN) of the API server's client certificate toward node agents: the only
/// certificate an agent's logs, exec and stats answer, although every client certificate of
/// the cluster CA (nodes', users') passes its handshake. The certificate controller never
/// signs a user's request naming it.
pub const AGENT_CLIENT_USER: &str = "berth-apiserver-agent-client";

/// A certificate's SHA-256 fingerprint (of its DER), lowercase hex: how a revoked client
/// certificate is named (`berth user revoke`; the API server refuses the ones it lists).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprint and end of validity (seconds since the epoch) of the first certificate in
/// `pem` (a signed CertificateSigningRequest's `status.certificate`).
pub fn certificate_facts(pem: &str) -> Option<(String, i64)> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((fingerprint(&der), cert.validity().not_after.timestamp()))
}

/// A new private key and a certificate signing request (PKCS#10) for `user` in `groups`,
/// both PEM: what a node agent sends to get its client certificate. rcgen keeps one value per
/// attribute type, so of several groups only the last is in the request (and in a certificate
/// signed from any request): callers ask for at most one.
pub fn certificate_request(user: &str, groups: &[&str]) -> Result<(String, String), TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        p.distinguished_name.push(DnType::OrganizationName, *g);
    }
    let key = KeyPair::generate()?;
    let csr = p.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// The user and groups a certificate signing request asks for (its signature checked).
pub fn request_subject(csr_pem: &str) -> Result<(String, Vec<String>), TlsError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut user = None;
    let mut groups = Vec::new();
    for (typ, value) in csr.params.distinguished_name.iter() {
        let text = match value {
            rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
            rcgen::DnValue::Utf8String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        match typ {
            DnType::CommonName => user = Some(text),
            DnType::OrganizationName => groups.push(text),
            _ => {}
        }
    }
    let user = user.ok_or_else(|| TlsError::Pem {
        path: "certificate request".into(),
        message: "it names no user (no common name)".into(),
    })?;
    Ok((user, groups))
}

/// Loads a certificate chain and its key from PEM (a node agent's saved identity).
impl Identity {
    pub fn from_pem(cert_pem: &str, key_pem: &str, what: &str) -> Result<Identity, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(what))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: what.into(),
                message: "no certificate in it".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err(what))?;
        Ok(Identity { chain, key })
    }

    /// When its certificate stops being valid, in seconds since the epoch.
    pub fn not_after(&self) -> Option<i64> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.chain.first()?).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// When its certificate started being valid, in seconds since the epoch.
    pub fn not_before(&self) -> Option<i64> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.chain.first()?).ok()?;
        Some(cert.validity().not_before.timestamp())
    }
}

/// A client certificate that can be replaced while clients use it (a node agent's, rotated
/// before it expires): each new TLS connection presents the current one.
#[derive(Debug)]
pub struct ClientCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

fn certified(id: &Identity) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let key = provider()
        .key_provider
        .load_private_key(id.key.clone_key())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        id.chain.clone(),
        key,
    )))
}

impl ClientCert {
    pub fn new(id: &Identity) -> Result<Arc<ClientCert>, TlsError> {
        Ok(Arc::new(ClientCert {
            current: std::sync::RwLock::new(certified(id)?),
        }))
    }

    /// Presents `id` from the next connection on.
    pub fn replace(&self, id: &Identity) -> Result<(), TlsError> {
        let next = certified(id)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The connector of a client that trusts only `ca_pem` and presents `cert`'s current
/// certificate.
pub fn connector_presenting(
    ca_pem: &str,
    cert: Arc<ClientCert>,
    connect_timeout: Duration,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TlsError,
> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem, "certificate-authority")?)
        .with_client_cert_resolver(cert);
    Ok(https_connector(Arc::new(config), connect_timeout))
}

/// Serves `router` on `listener` (over TLS with `tls`, else plain HTTP/1.1) until `shutdown`
/// resolves; then stops accepting and gives open connections up to `drain` to finish.
/// Connections may upgrade (WebSockets). Each request carries its peer's address as axum's
/// `ConnectInfo<SocketAddr>` extension. Every connection runs under the listener's
/// [`limits::ConnLimits`]: the TLS handshake, each request head and each idle wait between
/// requests are timed, and so is a write the client does not take.
pub async fn serve(
    listener: limits::Listener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let limits = *listener.limits();
    // Turns true when the server stops: each connection then ends after its current request.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    // Every connection's task holds a sender: the channel closes when the last has ended.
    let (alive, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer, permit) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let (alive, stopping) = (alive.clone(), stopping.clone());
        tokio::spawn(async move {
            let (_alive, _permit) = (alive, permit);
            let io = limits::Timed::new(tcp, limits.idle_timeout);
            let timer = io.head_timer(&limits);
            let ended = match acceptor {
                Some(acceptor) => {
                    let handshake = acceptor.accept(io);
                    let tls = match tokio::time::timeout(limits.handshake_timeout, handshake).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            let after = limits.handshake_timeout;
                            tracing::debug!(%peer, "no TLS handshake in {after:?}");
                            return;
                        }
                    };
                    let info = ConnInfo {
                        peer,
                        client_cert: tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.clone().into_owned()),
                    };
                    let service = TowerToHyperService::new(router.layer(Extension(info)));
                    serve_connection(TokioIo::new(tls), service, timer, &limits, stopping).await
                }
                None => {
                    let info = ConnInfo {
                        peer,
                        client_cert: None,
                    };
                    let service = TowerToHyperService::new(router.layer(Extension(info)));
                    serve_connection(TokioIo::new(io), service, timer, &limits, stopping).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(alive);
    if tokio::time::timeout(drain, all_ended.recv()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends, or, once `stopping`,
/// until its current request has been answered. The head timer bounds each wait for a
/// request head (hyper arms it when it starts one).
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    timer: limits::HeadTimer,
    limits: &limits::ConnLimits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(timer)
        .header_read_timeout(limits.head_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = stopping.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_survives_restart_and_issues_both_usages() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ca::load_or_create(dir.path(), "berth-ca").unwrap();
        let b = Ca::load_or_create(dir.path(), "berth-ca").unwrap();
        assert_eq!(a.pem, b.pem, "the CA is kept, not remade");
        let server = b
            .issue(
                "n1",
                &["n1".into()],
                &["10.0.0.1".parse().unwrap()],
                Usage::Server,
            )
            .unwrap();
        let client = a.issue("berth-apiserver", &[], &[], Usage::Client).unwrap();
        assert_eq!(server.chain.len(), 2);
        server_config(&server, ClientAuth::Required(&a.pem)).unwrap();
        client_config(&a.pem, Some(&client)).unwrap();
        assert!(roots("not pem", "x").is_err());
    }

    #[test]
    fn a_signed_request_names_its_subject_fingerprint_and_end() {
        let ca = Ca::generate("berth-ca").unwrap();
        let (_key, csr) = certificate_request("alice", &["dev"]).unwrap();
        assert_eq!(
            request_subject(&csr).unwrap(),
            ("alice".into(), vec!["dev".into()])
        );
        let pem = ca
            .sign_client_request(&csr, Duration::from_secs(3600))
            .unwrap();
        let (fp, not_after) = certificate_facts(&pem).unwrap();
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(fp, fingerprint(&der));
        assert_eq!(fp.len(), 64);
        assert_eq!(
            client_subject(&der).unwrap(),
            ("alice".into(), vec!["dev".into()])
        );
        let now = time_now().unix_timestamp();
        assert!((now + 3590..=now + 3610).contains(&not_after));
        assert!(certificate_facts("not pem").is_none());
    }
}

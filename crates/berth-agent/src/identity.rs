//! The node's identity, kubelet-style: a client certificate naming `system:node:NAME` in the
//! group `system:nodes`, issued by the cluster CA through a CertificateSigningRequest.
//!
//! - An agent given a join token (the server says it is in `system:bootstrappers`) uses it
//!   once: it makes a key, asks for a certificate, and from then on authenticates with the
//!   certificate alone. Key and certificate are kept in `DATA_DIR/pki/node-client.{key,crt}`
//!   (0600), so a restarted agent needs no token.
//! - Before the certificate expires (at 70–90 % of its life, as the kubelet picks) the agent
//!   asks for a new one with the old, and switches to it without restarting anything: every
//!   new connection presents the current certificate.
//! - An agent given any other credential (an admin's token, as `berth up`'s own agent has)
//!   uses it as it is.
//!
//! Invariant: the private key never leaves the node; the server only ever sees the request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_api::kinds::resolve;
use berth_client::Client;
use berth_tls::{ClientCert, Identity};
use serde_json::json;
use tokio::sync::watch;

/// The signer of node agents' client certificates.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long a certificate request may wait for its certificate.
const WAIT: Duration = Duration::from_secs(300);

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("node-client.key"), dir.join("node-client.crt"))
}

fn now_secs() -> i64 {
    (berth_api::timefmt::now_nanos() / 1_000_000_000) as i64
}

/// The identity saved in `dir`, if it is this node's and still valid for a while.
fn saved(dir: &Path, node: &str) -> Option<Identity> {
    let (key, cert) = paths(dir);
    let (key, cert) = (
        std::fs::read_to_string(key).ok()?,
        std::fs::read_to_string(cert).ok()?,
    );
    let id = Identity::from_pem(&cert, &key, "node-client.crt").ok()?;
    let (user, _) = berth_tls::client_subject(id.chain.first()?)?;
    let fresh = id.not_after().is_some_and(|t| t > now_secs() + 60);
    (user == format!("system:node:{node}") && fresh).then_some(id)
}

/// The API client this node works with, and its certificate when it has one (to renew).
pub(crate) async fn client(
    given: Client,
    server: &str,
    ca_pem: Option<&str>,
    node: &str,
    dir: &Path,
) -> anyhow::Result<(Client, Option<(Arc<ClientCert>, Identity)>)> {
    let Some(ca_pem) = ca_pem else {
        // No CA, no certificate to check one against: the credential given it is.
        return Ok((given, None));
    };
    let id = match saved(dir, node) {
        Some(id) => id,
        None => {
            if !bootstrapping(&given).await? {
                return Ok((given, None));
            }
            tracing::info!(node, "asking the cluster for this node's identity");
            let issued = request(&given, node).await?;
            save(dir, &issued)?;
            issued.id
        }
    };
    let cert = ClientCert::new(&id)?;
    let client = Client::with_client_cert(server, ca_pem, cert.clone())?;
    tracing::info!(
        node,
        "authenticating as system:node:{node} with a client certificate"
    );
    Ok((client, Some((cert, id))))
}

/// Whether the credential the agent was given is a join token.
async fn bootstrapping(client: &Client) -> anyhow::Result<bool> {
    let kind = resolve("selfsubjectreviews").context("this berth has no SelfSubjectReview")?;
    let me = client
        .create(
            kind,
            None,
            &json!({"apiVersion": kind.api_version(), "kind": kind.kind}),
            "",
        )
        .await
        .context("cannot ask the server who this agent is")?;
    Ok(me["status"]["userInfo"]["groups"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g == "system:bootstrappers")))
}

/// A certificate just issued: as loaded, and as it is kept.
struct Issued {
    id: Identity,
    cert_pem: String,
    key_pem: String,
}

/// Keeps the key and certificate for the next start (0600 each, written atomically).
fn save(dir: &Path, issued: &Issued) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (key, cert) = paths(dir);
    berth_tls::write_private(&key, &issued.key_pem)
        .with_context(|| format!("cannot write {}", key.display()))?;
    berth_tls::write_private(&cert, &issued.cert_pem)
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(())
}

/// Asks for a certificate for this node and waits for it (approved and signed by the
/// control plane, or denied: then the reason is the error).
async fn request(client: &Client, node: &str) -> anyhow::Result<Issued> {
    let user = format!("system:node:{node}");
    let (key_pem, csr_pem) = berth_tls::certificate_request(&user, &["system:nodes"])?;
    let kind = resolve("certificatesigningrequests").context("this berth has no CSRs")?;
    let csr = json!({
        "apiVersion": kind.api_version(), "kind": kind.kind,
        "metadata": {"generateName": format!("node-csr-{node}-")},
        "spec": {
            "request": berth_api::base64::encode(csr_pem.as_bytes()),
            "signerName": SIGNER,
            "usages": ["digital signature", "key encipherment", "client auth"],
        },
    });
    let created = client
        .create(kind, None, &csr, "")
        .await
        .context("cannot ask for a node certificate")?;
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let csr = client.get(kind, None, &name).await?;
        let conditions = csr["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| c["type"] == "Denied" || c["type"] == "Failed")
        {
            bail!(
                "the certificate request {name} for {user} was {}: {} ({})",
                c["type"].as_str().unwrap_or("").to_lowercase(),
                c["message"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            );
        }
        if let Some(cert) = csr["status"]["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
            .and_then(berth_api::base64::decode)
            .and_then(|b| String::from_utf8(b).ok())
        {
            let id = Identity::from_pem(&cert, &key_pem, &name)?;
            return Ok(Issued {
                id,
                cert_pem: cert,
                key_pem,
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the certificate request {name} for {user} was neither approved nor denied within {WAIT:?}; approve it with `kubectl certificate approve {name}`"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renews the certificate before it expires, for as long as the agent runs.
pub(crate) async fn renew(
    client: Client,
    cert: Arc<ClientCert>,
    mut current: Identity,
    node: String,
    dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (from, to) = (
            current.not_before().unwrap_or_else(now_secs),
            current.not_after().unwrap_or_else(now_secs),
        );
        // At 70–90 % of its life, as the kubelet picks: nodes joined together renew apart.
        let spread = (berth_api::timefmt::now_nanos() % 1000) as f64 / 1000.0;
        let share = 0.7 + 0.2 * spread;
        let at = from + ((to - from) as f64 * share) as i64;
        let wait = Duration::from_secs(at.saturating_sub(now_secs()).max(1) as u64);
        tracing::debug!(
            node,
            valid_from = from,
            valid_to = to,
            "renewing this node's client certificate in {wait:?}"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        match request(&client, &node).await.and_then(|issued| {
            save(&dir, &issued)?;
            cert.replace(&issued.id)?;
            Ok(issued.id)
        }) {
            Ok(id) => {
                tracing::info!(node, "renewed this node's client certificate");
                current = id;
            }
            Err(e) => {
                tracing::warn!(node, error = %format!("{e:#}"), "cannot renew this node's client certificate; trying again in 10 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

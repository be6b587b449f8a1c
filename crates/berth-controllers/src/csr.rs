//! The certificate controller: approves node agents' CertificateSigningRequests and signs
//! approved requests with the cluster CA, as Kubernetes' csrapproving and csrsigning
//! controllers do for kubelets.
//!
//! Approval (signer `kubernetes.io/kube-apiserver-client-kubelet` only; every other request
//! waits for an admin's `kubectl certificate approve`):
//! - the request must ask for exactly `CN=system:node:NAME, O=system:nodes` and client auth;
//! - from a join token (group `system:bootstrappers`): approved when no Node `NAME` exists
//!   yet, denied when one does (a second machine cannot take a registered node's name; delete
//!   the Node to join a new machine under it);
//! - from `system:node:NAME` itself (a renewal): approved;
//! - from anyone else: left for an admin.
//!
//! Signing: every approved request of a signer berth runs gets a client certificate naming
//! what it asked for, valid for its `spec.expirationSeconds` or the server's limit for its
//! signer (`--node-cert-lifetime` for nodes, `--user-cert-lifetime` for
//! `kube-apiserver-client`, users'), whichever is shorter.
//!
//! A user's request naming `berth_tls::AGENT_CLIENT_USER`, the API server's identity toward
//! node agents, fails instead of being signed.
//!
//! Invariant: a certificate is only ever written for a request that is Approved and not
//! Denied, and only once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::object::Object;
use berth_apiserver::registry::{Registry, requested_subject};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::Error;

const USER: &str = "system:controller:certificate-controller";

/// Node agents' client certificates.
pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// What signs: the cluster CA, and the longest a certificate may live.
pub struct Signer {
    pub ca: Arc<berth_tls::Ca>,
    /// Nodes' certificates (`kube-apiserver-client-kubelet`).
    pub max_lifetime: Duration,
    /// Users' certificates (`kube-apiserver-client`).
    pub max_user_lifetime: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("max_lifetime", &self.max_lifetime)
            .field("max_user_lifetime", &self.max_user_lifetime)
            .finish_non_exhaustive()
    }
}

/// Runs until `stop` turns true.
pub async fn run(
    registry: Registry,
    informer: Arc<Informer>,
    signer: Arc<Signer>,
    stop: watch::Receiver<bool>,
) {
    crate::runtime::supervise("certificate controller", stop, || {
        run_once(&registry, &informer, &signer)
    })
    .await
}

async fn run_once(registry: &Registry, informer: &Informer, signer: &Signer) -> Result<(), Error> {
    let (all, mut changes) = informer.list_and_watch()?;
    let prefix = crate::informer::key_prefix("certificatesigningrequests");
    let mut csrs: BTreeMap<String, Object> = all
        .into_iter()
        .filter(|o| o.kind() == "CertificateSigningRequest")
        .map(|o| (o.name().to_string(), o))
        .collect();
    let pending: Vec<String> = csrs.keys().cloned().collect();
    for name in pending {
        if let Some(csr) = csrs.get(&name) {
            handle(registry, signer, csr).await;
        }
    }
    loop {
        let Some(batch) = changes.next().await? else {
            return Ok(());
        };
        for change in batch.changes() {
            if !change.event.kv.key.starts_with(&prefix) {
                continue;
            }
            let Some(o) = change.object() else {
                continue;
            };
            if change.event.typ == berth_store::EventType::Delete {
                csrs.remove(o.name());
                continue;
            }
            csrs.insert(o.name().to_string(), o.clone());
            handle(registry, signer, o).await;
        }
    }
}

fn conditions(csr: &Object) -> Vec<Value> {
    csr.get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn has(csr: &Object, typ: &str) -> bool {
    conditions(csr).iter().any(|c| c["type"] == typ)
}

fn spec_str<'a>(csr: &'a Object, field: &str) -> &'a str {
    csr.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What the automatic approver decides for a request: `Some((approve, reason, message))`, or
/// `None` to leave it for an admin.
fn decide(registry: &Registry, csr: &Object) -> Option<(bool, &'static str, String)> {
    if spec_str(csr, "signerName") != KUBELET_SIGNER {
        return None;
    }
    let deny = |reason, message: String| Some((false, reason, message));
    let Some((user, groups)) = requested_subject(csr) else {
        return deny("BadRequest", "the request cannot be read".into());
    };
    let Some(node) = user.strip_prefix("system:node:").filter(|n| !n.is_empty()) else {
        return deny(
            "BadSubject",
            format!("a node's request must name system:node:NAME, not {user:?}"),
        );
    };
    if groups != ["system:nodes"] {
        return deny(
            "BadSubject",
            format!("a node's request must be in exactly the group system:nodes, not {groups:?}"),
        );
    }
    let usages: Vec<&str> = csr
        .get("spec")
        .and_then(|s| s.get("usages"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !usages.contains(&"client auth") {
        return deny(
            "BadUsages",
            "a node's request must ask for client auth".into(),
        );
    }
    let requester = spec_str(csr, "username");
    let requester_groups: Vec<&str> = csr
        .get("spec")
        .and_then(|s| s.get("groups"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if requester == user {
        return Some((
            true,
            "AutoApproved",
            format!("renewal of {user}'s own certificate"),
        ));
    }
    if requester_groups.contains(&"system:bootstrappers") {
        let nodes = berth_api::kinds::resolve("nodes")?;
        return match registry.get(nodes, None, node) {
            Ok(_) => deny(
                "NodeExists",
                format!(
                    "node {node} is registered already; a join token cannot take its name (delete the Node first to join a new machine as {node})"
                ),
            ),
            Err(e) if e.code() == 404 => Some((
                true,
                "AutoApproved",
                format!("{requester} joins node {node} with a join token"),
            )),
            // Cannot tell now: decided on the next change.
            Err(_) => None,
        };
    }
    None
}

async fn handle(registry: &Registry, signer: &Signer, csr: &Object) {
    let Some(kind) = berth_api::kinds::resolve("certificatesigningrequests") else {
        return;
    };
    let signed = csr
        .get("status")
        .and_then(|s| s.get("certificate"))
        .is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty()));
    if signed || has(csr, "Denied") || has(csr, "Failed") {
        return;
    }
    if !has(csr, "Approved") {
        let Some((approve, reason, message)) = decide(registry, csr) else {
            return;
        };
        let typ = if approve { "Approved" } else { "Denied" };
        let body = json!({"status": {"conditions": [
            {"type": typ, "status": "True", "reason": reason, "message": message}]}});
        let Some(body) = Object::from_value(body) else {
            return;
        };
        if let Err(e) = registry.approve_csr(kind, csr.name(), &body, USER).await {
            tracing::debug!(csr = csr.name(), error = %e, "cannot record the decision on a certificate request");
        }
        // Signed when the approval comes back through the watch.
        return;
    }
    if !berth_api::validate::SIGNERS.contains(&spec_str(csr, "signerName")) {
        return;
    }
    let asked = csr
        .get("spec")
        .and_then(|s| s.get("expirationSeconds"))
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    let max = if spec_str(csr, "signerName") == KUBELET_SIGNER {
        signer.max_lifetime
    } else {
        signer.max_user_lifetime
    };
    let lifetime = asked.map_or(max, |a| a.min(max));
    let pem = match csr
        .get("spec")
        .and_then(|s| s.get("request"))
        .and_then(Value::as_str)
        .and_then(berth_api::base64::decode)
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(p) => p,
        None => return,
    };
    // The API server's identity toward agents is not anybody's to have.
    let reserved = spec_str(csr, "signerName") != KUBELET_SIGNER
        && requested_subject(csr).is_some_and(|(user, _)| user == berth_tls::AGENT_CLIENT_USER);
    let signed = if reserved {
        Err(format!(
            "{} is the API server's own identity toward node agents",
            berth_tls::AGENT_CLIENT_USER
        ))
    } else {
        signer
            .ca
            .sign_client_request(&pem, lifetime)
            .map_err(|e| e.to_string())
    };
    let status = match signed {
        Ok(cert) => json!({"certificate": berth_api::base64::encode(cert.as_bytes())}),
        Err(e) => {
            let mut cs = conditions(csr);
            cs.push(
                json!({"type": "Failed", "status": "True", "reason": "SignerFailed",
                "message": e, "lastUpdateTime": berth_api::timefmt::now_rfc3339()}),
            );
            json!({"conditions": cs})
        }
    };
    if let Err(e) = registry
        .merge_patch(
            kind,
            None,
            csr.name(),
            &json!({"status": status}),
            USER,
            true,
        )
        .await
    {
        tracing::debug!(csr = csr.name(), error = %e, "cannot write a signed certificate");
    }
}

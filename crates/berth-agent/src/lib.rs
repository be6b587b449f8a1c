//! The node agent (berth's kubelet): registers its Node, renews its Lease, watches the pods
//! bound to it, runs them through the runtime, and reports their status as Kubernetes does.
//!
//! Invariants:
//! - The agent talks to the control plane only through the API (the same HTTPS client any
//!   remote node uses), so `berth up` and a multi-node cluster run the same code.
//! - Each pod has one worker task; only it touches that pod's sandbox, so runtime calls for
//!   one pod never interleave. Runtime calls block (sockets, mounts), so they run on tokio's
//!   blocking pool.
//! - On start it adopts the pods whose shims still run and removes the ones the API no
//!   longer binds to this node.

mod api;
mod identity;
mod pods;
mod probes;
mod security;
mod templates;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_api::kinds::resolve;
use berth_client::{Client, informer};
use berth_net::{catalog, dns, ingress, proxy, routes};
use berth_runtime::pod::{Dns, Runtime};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// What an agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's address others reach it at.
    pub node_ip: std::net::Ipv4Addr,
    pub runtime: Runtime,
    /// Where images live.
    pub data_dir: PathBuf,
    /// The command that runs exec (the `berth` binary and its hidden role).
    pub exec_command: Vec<String>,
    /// How long the Node's Lease lasts; it is renewed every fifth of that.
    pub lease_duration: Duration,
    /// Resolvers for pods (cluster DNS later; the host's by default).
    pub dns: Dns,
    /// Registries spoken to over plain HTTP when pulling.
    pub insecure_registries: Vec<String>,
    /// The most one image layer may take unpacked (`--max-layer-size`).
    pub max_layer_size: u64,
    /// The first crash-loop (and image pull) back-off; it doubles up to 5 min. Kubernetes
    /// uses 10 s.
    pub restart_backoff: Duration,
    /// The port of the agent's own API (logs, exec, stats) on `node_ip`; 0 picks a free one.
    pub agent_port: u16,
    /// The cluster CA: callers of the agent API must present a certificate it issued. Without
    /// it the agent serves no API (logs, exec and top are then unavailable on this node).
    pub cluster_ca_pem: Option<String>,
    /// Whether the runtime's pod range was given (`--pod-cidr`); if not, the node takes the
    /// one the server allocates it (`spec.podCIDR`).
    pub range_given: bool,
    /// Where names outside the cluster domain are asked (none: REFUSED).
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// The cluster's service range: blackholed on the node, so only the cluster IPs the proxy
    /// serves are reachable in it.
    pub service_cidr: Option<berth_api::cidr::Ipv4Net>,
    /// How long the service proxy lets connections to an endpoint that went away go on.
    pub proxy_drain: Duration,
    /// How the service proxy relays established TCP connections.
    pub proxy_relay: proxy::Relay,
    /// The port every address of the node serves the ingress on (0: no ingress).
    pub ingress_port: u16,
    /// What peers of the agent API, the ingress and DNS over TCP may hold: connections,
    /// timeouts, descriptors.
    pub conn_limits: berth_tls::ConnLimits,
    /// The directories ConfigTemplates may write into (`--config-template-dir`, absolute):
    /// a template whose destination is elsewhere is not rendered. Published on the Node for
    /// the API server's admission.
    pub config_template_dirs: Vec<PathBuf>,
}

fn micro_time_now() -> String {
    let nanos = berth_api::timefmt::now_nanos();
    // MicroTime: RFC 3339 with microseconds.
    let s = berth_api::timefmt::rfc3339_nanos_from_nanos(nanos - nanos % 1000);
    s.replacen("000Z", "Z", 1)
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn node_status(cfg: &AgentConfig) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = memory_bytes();
    let now = berth_api::timefmt::now_rfc3339();
    let capacity =
        json!({"cpu": cpus.to_string(), "memory": format!("{}Ki", memory / 1024), "pods": "110"});
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "berth agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "kubeletVersion": concat!("v1.32.0-berth.", env!("CARGO_PKG_VERSION")),
            "containerRuntimeVersion": concat!("berth://", env!("CARGO_PKG_VERSION")),
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH,
            "osImage": "berth",
        },
    })
}

/// Where the agent API is, as published on the Node.
#[derive(Debug, Clone)]
struct AgentEndpoint {
    port: u16,
    ca_pem: String,
}

/// Creates or refreshes the Node object.
async fn register(
    client: &Client,
    cfg: &AgentConfig,
    api: Option<&AgentEndpoint>,
) -> anyhow::Result<()> {
    let nodes = resolve("nodes").context("node kind")?;
    let name = &cfg.node_name;
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    let dirs: Vec<String> = cfg
        .config_template_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let annotations = json!({
        berth_api::wellknown::AGENT_CA_ANNOTATION: api.map(|a| a.ca_pem.clone()),
        berth_api::wellknown::CONFIG_TEMPLATE_DIRS_ANNOTATION: json!(dirs).to_string(),
    });
    let spec = if cfg.range_given {
        let cidr = cfg.runtime.network.range.to_string();
        json!({"podCIDR": cidr, "podCIDRs": [cidr]})
    } else {
        json!({})
    };
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    });
    match client.create(nodes, None, &node, "").await {
        Ok(_) => {}
        Err(e) if e.code() == Some(409) => {
            // A node that joins again has a new agent CA (made at every start), and may have
            // other template directories.
            client
                .patch(
                    nodes,
                    None,
                    name,
                    "application/merge-patch+json",
                    &json!({"metadata": {"annotations": annotations}}),
                    "",
                )
                .await
                .context("cannot update the node's agent certificate")?;
        }
        Err(e) => return Err(e).context("cannot register the node"),
    }
    let mut status = node_status(cfg);
    status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": api.map_or(0, |a| a.port)}});
    patch_status(client, nodes, None, name, &json!({"status": status}))
        .await
        .context("cannot report the node's status")?;
    Ok(())
}

/// A merge patch of an object's status subresource.
pub(crate) async fn patch_status(
    client: &Client,
    kind: &berth_api::ResourceKind,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
) -> Result<Value, berth_client::ClientError> {
    let path = format!("{}/status", Client::object_path(kind, ns, name));
    client
        .json(
            berth_client::Method::PATCH,
            &path,
            Some((
                "application/merge-patch+json",
                serde_json::to_vec(patch).unwrap_or_default(),
            )),
        )
        .await
}

/// Renews the node's Lease (creating it first), and its Ready status now and then.
async fn heartbeat(
    client: Client,
    cfg: AgentConfig,
    endpoint: Option<AgentEndpoint>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(leases) = resolve("leases") else {
        return;
    };
    let ns = "kube-node-lease";
    let every = cfg.lease_duration / 5;
    let mut beats: u64 = 0;
    loop {
        let renew = json!({"spec": {"holderIdentity": cfg.node_name, "leaseDurationSeconds": cfg.lease_duration.as_secs().max(1), "renewTime": micro_time_now()}});
        // Bounded: across a partition a request can hang until TCP gives up, and renewals
        // must go on as soon as the network is back.
        let r = tokio::time::timeout(
            every.max(Duration::from_secs(1)),
            client.patch(
                leases,
                Some(ns),
                &cfg.node_name,
                "application/merge-patch+json",
                &renew,
                "",
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(berth_client::ClientError::Connect {
                server: client.server().to_string(),
                message: "no answer in time".into(),
            })
        });
        if let Err(e) = r {
            if e.code() == Some(404) {
                let mut lease = renew.clone();
                lease["apiVersion"] = json!("coordination.k8s.io/v1");
                lease["kind"] = json!("Lease");
                lease["metadata"] = json!({"name": cfg.node_name, "namespace": ns});
                if let Err(e) = client.create(leases, Some(ns), &lease, "").await {
                    tracing::warn!(error = %e, "cannot create the node's lease");
                }
            } else {
                tracing::warn!(error = %e, "cannot renew the node's lease");
            }
        }
        beats += 1;
        // The Node's own status (Ready, heartbeat) about every 30 s, as kubelet does when
        // nothing changed.
        if beats.is_multiple_of(((30 * 5) / cfg.lease_duration.as_secs().max(1)).max(1))
            && let Err(e) = register(&client, &cfg, endpoint.as_ref()).await
        {
            tracing::warn!(error = %e, "cannot refresh the node's status");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs the agent until `stop` turns true.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // A join token is traded for this node's own identity before anything else is done.
    let node_pki = cfg.data_dir.join("pki");
    let server = client.server().to_string();
    let (client, renewal) = identity::client(
        client,
        &server,
        cfg.cluster_ca_pem.as_deref(),
        &cfg.node_name,
        &node_pki,
    )
    .await?;
    if let Some((cert, id)) = renewal {
        tokio::spawn(identity::renew(
            client.clone(),
            cert,
            id,
            cfg.node_name.clone(),
            node_pki,
            stop.clone(),
        ));
    }
    let rt = cfg.runtime.clone();
    let recovered = tokio::task::spawn_blocking(move || rt.recover())
        .await
        .context("recovery panicked")??;
    if !recovered.cleaned.is_empty() {
        tracing::info!(pods = ?recovered.cleaned, "removed what pods whose shim had died left behind");
    }
    let endpoint = match &cfg.cluster_ca_pem {
        Some(ca) => {
            let l = api::bind(
                cfg.node_ip,
                cfg.agent_port,
                &cfg.node_name,
                ca,
                cfg.conn_limits,
            )
            .await?;
            let endpoint = AgentEndpoint {
                port: l.port,
                ca_pem: l.ca_pem.clone(),
            };
            tokio::spawn(api::serve(
                l,
                cfg.runtime.clone(),
                cfg.node_name.clone(),
                cfg.exec_command.clone(),
                client.clone(),
                stop.clone(),
            ));
            Some(endpoint)
        }
        None => {
            tracing::warn!(
                "no cluster CA given (--ca-file): this node serves no agent API, so logs, exec and top do not reach it"
            );
            None
        }
    };
    register(&client, &cfg, endpoint.as_ref()).await?;
    // The runtime the pods get: with the range the server allocated (unless one was given)
    // and the service range blackholed.
    let mut runtime = cfg.runtime.clone();
    if !cfg.range_given {
        let range = routes::allocated_range(&client, &cfg.node_name, &mut stop).await?;
        runtime.network.blackholes = berth_runtime::net::default_blackholes(range);
        runtime.network.range = range;
        tracing::info!(%range, "pod range allocated by the server");
    }
    if let Some(services) = cfg.service_cidr
        && !runtime.network.blackholes.contains(&services)
    {
        runtime.network.blackholes.push(services);
    }
    let route_opts = routes::Options {
        range: runtime.network.range,
        node_ip: cfg.node_ip,
    };
    tokio::spawn(routes::run(client.clone(), route_opts, stop.clone()));
    // One informer cache per kind for everything on this node that follows the whole
    // cluster (the service catalog, config generation); the pod workers follow only this
    // node's pods, with a watch of their own.
    let informers = informer::Informers::new(client.clone(), stop.clone());
    // One view of Services and Endpoints for cluster DNS and the service proxy.
    let catalog = catalog::Shared::new();
    catalog::follow(&informers, catalog.clone(), stop.clone());
    {
        let opts = proxy::Options {
            drain: cfg.proxy_drain,
            relay: cfg.proxy_relay,
            label: proxy::service_address_label(&cfg.data_dir),
            node_ip: cfg.node_ip,
        };
        let (catalog, stop) = (catalog.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = proxy::run(catalog, opts, stop).await {
                tracing::warn!(error = %format!("{e:#}"), "no service proxy on this node");
            }
        });
    }
    if cfg.ingress_port != 0 {
        let (catalog, stop, limits) = (catalog.clone(), stop.clone(), cfg.conn_limits);
        // On the node's address (not all addresses, where it would take port 80 from every
        // cluster IP on the loopback).
        let addr = std::net::SocketAddr::from((cfg.node_ip, cfg.ingress_port));
        tokio::spawn(async move {
            if let Err(e) = ingress::run(catalog, addr, limits, stop).await {
                tracing::warn!(error = %format!("{e:#}"), "no ingress on this node");
            }
        });
    }
    // Cluster DNS on the pods' gateway address (the bridge's), for this node's pods.
    let net = runtime.network.clone();
    let mut cluster_dns = None;
    match tokio::task::spawn_blocking(move || net.ensure_bridge()).await {
        Ok(Ok(_)) => {
            let gw = runtime.network.range.gateway();
            let addr = std::net::SocketAddr::from((gw, 53));
            let (zone, upstream, stop) = (catalog.clone(), cfg.dns_upstream.clone(), stop.clone());
            let limits = cfg.conn_limits;
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                match dns::serve(zone, addr, upstream, limits, stop, ready_tx).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "no cluster DNS on this node; its pods use the host's resolvers")
                    }
                }
            });
            if ready_rx.await.unwrap_or(false) {
                cluster_dns = Some(gw);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot make the pod bridge; no cluster DNS"),
        Err(_) => {}
    }
    tokio::spawn(templates::run(
        client.clone(),
        informers,
        cfg.node_name.clone(),
        cfg.config_template_dirs.clone().into(),
        stop.clone(),
    ));
    tokio::spawn(heartbeat(
        client.clone(),
        cfg.clone(),
        endpoint,
        stop.clone(),
    ));
    let pods_kind = resolve("pods").context("pod kind")?;
    let selector = format!(
        "fieldSelector={}",
        berth_client::encode_query(&format!("spec.nodeName={}", cfg.node_name))
    );
    let pod_opts = pods::Options {
        node_ip: cfg.node_ip,
        runtime,
        data_dir: cfg.data_dir.clone(),
        exec_command: cfg.exec_command.clone(),
        dns: cfg.dns.clone(),
        cluster_dns,
        insecure_registries: cfg.insecure_registries.clone(),
        max_layer_size: cfg.max_layer_size,
        restart_backoff: cfg.restart_backoff,
    };
    let shared = Arc::new(pods::Shared::new(client.clone(), pod_opts));
    let mut workers: HashMap<String, mpsc::UnboundedSender<pods::Update>> = HashMap::new();
    let mut adopted: Vec<String> = recovered.adopted;
    // Listed, then watched from the list's revision (with bookmarks, so a resumed watch
    // starts from a recent one); a list tells which pods went away while we were not looking.
    let mut pods = informer::Watcher::new(client.clone(), pods_kind)
        .selector(&selector)
        .bookmarks();
    loop {
        let ev = tokio::select! {
            ev = pods.next() => ev,
            _ = stop.changed() => return Ok(()),
        };
        match ev {
            informer::Event::Listed(items) => {
                let listed: Vec<String> = items
                    .iter()
                    .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
                    .collect();
                for p in items {
                    dispatch(&shared, &mut workers, pods::Update::Pod(p));
                }
                // Pods this node runs that the API no longer binds here: gone while we were
                // away.
                for uid in workers.keys().cloned().collect::<Vec<_>>() {
                    if !listed.contains(&uid) {
                        dispatch_gone(&mut workers, &uid);
                    }
                }
                for uid in std::mem::take(&mut adopted) {
                    if !listed.contains(&uid) {
                        let s = shared.clone();
                        tokio::spawn(async move { s.remove_sandbox(uid).await });
                    }
                }
            }
            informer::Event::Applied(p) => dispatch(&shared, &mut workers, pods::Update::Pod(p)),
            informer::Event::Deleted(p) => {
                if let Some(uid) = p["metadata"]["uid"].as_str() {
                    dispatch_gone(&mut workers, uid);
                }
            }
        }
    }
}

fn dispatch(
    shared: &Arc<pods::Shared>,
    workers: &mut HashMap<String, mpsc::UnboundedSender<pods::Update>>,
    update: pods::Update,
) {
    let pods::Update::Pod(p) = &update else {
        return;
    };
    let Some(uid) = p["metadata"]["uid"].as_str().map(String::from) else {
        return;
    };
    if let Some(tx) = workers.get(&uid)
        && tx.send(update.clone()).is_ok()
    {
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(update);
    workers.insert(uid.clone(), tx);
    tokio::spawn(pods::worker(shared.clone(), uid, rx));
}

fn dispatch_gone(workers: &mut HashMap<String, mpsc::UnboundedSender<pods::Update>>, uid: &str) {
    if let Some(tx) = workers.remove(uid) {
        let _ = tx.send(pods::Update::Gone);
    }
}

/// Records an Event about an object, as the kubelet of this node.
pub(crate) async fn event(client: &Client, obj: &Value, typ: &str, reason: &str, message: &str) {
    let (Some(events), Some(about)) = (resolve("events"), obj.as_object()) else {
        return;
    };
    let nanos = berth_api::timefmt::now_nanos();
    let ev = berth_api::object::event(about, "kubelet", typ, reason, message, nanos);
    let ns = ev["metadata"]["namespace"].as_str().unwrap_or("default");
    if let Err(e) = client.create(events, Some(ns), &ev, "").await {
        tracing::debug!(error = %e, "cannot record an event");
    }
}

//! One worker per pod: makes the runtime match the pod's spec (sandbox, containers, restarts
//! with back-off), reports the pod's status, and stops the pod gracefully when it is deleted.
//!
//! Here: the worker's loop (`worker`) and what it shares. One pass is `sync`; what a
//! container runs is `container`, its image `image`, the pod's volumes `volumes`; the status
//! reported is `status`; stopping is `stop`.

mod container;
mod image;
mod status;
mod stop;
mod sync;
mod volumes;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_client::Client;
use berth_runtime::shim::Status;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::image::{Pulled, resolve_image};
use self::status::{same_status, status_of};
use self::stop::{stop_gracefully, terminate};
use self::sync::{Track, sync_blocking};
use self::volumes::{EMPTY_DIR_CHECK, empty_dir_over_limit, projected};

#[derive(Debug, Clone)]
pub(crate) enum Update {
    Pod(Value),
    Gone,
}

/// What the pod workers need to know of their node, decided before the first worker starts
/// (never changed after).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The node's address (a host-network pod's IP, and its `hostIP`).
    pub(crate) node_ip: std::net::Ipv4Addr,
    /// The runtime, with the node's pod range and blackholes settled.
    pub(crate) runtime: berth_runtime::pod::Runtime,
    /// Where images live.
    pub(crate) data_dir: std::path::PathBuf,
    /// The command that runs exec probes (the `berth` binary and its hidden role).
    pub(crate) exec_command: Vec<String>,
    /// Resolvers for pods that do not use cluster DNS.
    pub(crate) dns: berth_runtime::pod::Dns,
    /// The address this node's cluster DNS answers on, when it serves.
    pub(crate) cluster_dns: Option<std::net::Ipv4Addr>,
    /// Registries spoken to over plain HTTP when pulling.
    pub(crate) insecure_registries: Vec<String>,
    /// The most one image layer may take unpacked.
    pub(crate) max_layer_size: u64,
    /// The first crash-loop (and image pull) back-off.
    pub(crate) restart_backoff: Duration,
}

pub(crate) struct Shared {
    client: Client,
    cfg: Options,
}

/// Kubernetes' crash-loop back-off: restart at once the first time, then wait 10 s, 20 s,
/// ... up to 5 min; a container that ran 10 min starts over.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Shared {
    pub(crate) fn new(client: Client, cfg: Options) -> Shared {
        Shared { client, cfg }
    }

    pub(crate) async fn remove_sandbox(&self, uid: String) {
        let rt = self.cfg.runtime.clone();
        let r = tokio::task::spawn_blocking(move || rt.remove_pod(&uid)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "cannot remove a pod's sandbox");
        }
    }
}

/// The pod's init containers, then its containers.
fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(containers(pod))
}

/// The pod's containers.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn rfc3339(nanos: u64) -> String {
    berth_api::timefmt::rfc3339_from_nanos(nanos)
}

pub(crate) async fn worker(
    shared: std::sync::Arc<Shared>,
    uid: String,
    mut rx: mpsc::UnboundedReceiver<Update>,
) {
    let mut pod: Option<Value> = None;
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut last_status = Value::Null;
    let mut start_time = String::new();
    let mut seeded = false;
    let mut pulled: HashMap<String, Pulled> = HashMap::new();
    let mut probes: HashMap<String, crate::probes::Probes> = HashMap::new();
    let mut last_report: Option<Instant> = None;
    let mut files: HashMap<String, Vec<berth_runtime::volumes::File>> = HashMap::new();
    let mut projected_at: Option<Instant> = None;
    let mut measured_at: Option<Instant> = None;
    let mut evicted: Option<String> = None;
    let mut last_pod_ip = String::new();
    loop {
        let update = if pod.is_none() {
            rx.recv().await
        } else {
            tokio::select! {
                u = rx.recv() => u,
                _ = tokio::time::sleep(Duration::from_millis(500)) => Some(Update::Pod(Value::Null)),
            }
        };
        match update {
            Some(Update::Pod(Value::Null)) => {}
            Some(Update::Pod(p)) => pod = Some(p),
            Some(Update::Gone) | None => {
                shared.remove_sandbox(uid).await;
                return;
            }
        }
        // Coalesce what else is queued.
        while let Ok(u) = rx.try_recv() {
            match u {
                Update::Pod(p) => pod = Some(p),
                Update::Gone => {
                    shared.remove_sandbox(uid).await;
                    return;
                }
            }
        }
        let Some(p) = pod.clone() else { continue };
        if p.pointer("/metadata/deletionTimestamp").is_some() {
            terminate(&shared, &p).await;
            return;
        }
        if !seeded {
            // A restarted agent goes on counting restarts where the status left off.
            for cs in p
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let t = tracks.entry(s(cs, "/name").to_string()).or_default();
                t.restarts = cs.get("restartCount").and_then(Value::as_u64).unwrap_or(0) as u32;
                t.last_state = cs.pointer("/lastState/terminated").cloned();
            }
            start_time = match s(&p, "/status/startTime") {
                "" => berth_api::timefmt::now_rfc3339(),
                t => t.to_string(),
            };
            seeded = true;
        }
        let phase = s(&p, "/status/phase");
        if matches!(phase, "Succeeded" | "Failed") {
            // Finished: nothing runs again; its sandbox goes (its logs with it).
            continue;
        }
        // Images and projected volumes need the network; the rest is blocking work.
        let mut images = HashMap::new();
        for c in all_containers(&p) {
            let name = s(c, "/name").to_string();
            let image = s(c, "/image").to_string();
            let cached = pulled.get(&name).filter(|e| e.image == image);
            let fresh = match cached {
                Some(e) if e.result.is_ok() || Instant::now() < e.retry_at => None,
                _ => {
                    let policy = match s(c, "/imagePullPolicy") {
                        "" if image.ends_with(":latest")
                            || !image.rsplit('/').next().unwrap_or("").contains(':') =>
                        {
                            "Always"
                        }
                        "" => "IfNotPresent",
                        p => p,
                    };
                    Some(resolve_image(&shared, &image, policy).await)
                }
            };
            if let Some(result) = fresh {
                let prev = pulled.remove(&name).filter(|e| e.image == image);
                let backoff = match (&result, prev) {
                    (Ok(_), _) => Duration::ZERO,
                    (Err(_), Some(p)) if !p.backoff.is_zero() => (p.backoff * 2).min(BACKOFF_MAX),
                    (Err(_), _) => shared.cfg.restart_backoff,
                };
                pulled.insert(
                    name.clone(),
                    Pulled {
                        image: image.clone(),
                        result,
                        retry_at: Instant::now() + backoff,
                        backoff,
                        failures: 0,
                    },
                );
            }
            if let Some(e) = pulled.get_mut(&name) {
                let r = match &e.result {
                    Ok(i) => Ok(i.clone()),
                    // After the first failure kubelet says it is backing off.
                    Err((reason, msg)) if reason == "ErrImagePull" && e.failures > 0 => Err((
                        "ImagePullBackOff".to_string(),
                        format!("Back-off pulling image \"{image}\": {msg}"),
                    )),
                    Err(err) => Err(err.clone()),
                };
                if e.result.is_err() {
                    e.failures += 1;
                }
                images.insert(name, r);
            }
        }
        let ns = s(&p, "/metadata/namespace").to_string();
        let mut volume_error = None;
        // ConfigMaps and Secrets are read again every 10 s (kubelet: about a minute).
        let refresh = projected_at.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10));
        if refresh {
            files.clear();
            projected_at = Some(Instant::now());
        }
        for v in p
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|_| refresh)
        {
            if v.get("configMap").is_some() || v.get("secret").is_some() {
                match projected(&shared.client, &ns, v).await {
                    Ok(f) => {
                        files.insert(s(v, "/name").to_string(), f);
                    }
                    Err(e) => volume_error = Some(e),
                }
            }
        }
        if let Some(e) = volume_error {
            for c in all_containers(&p) {
                tracks.entry(s(c, "/name").to_string()).or_default().waiting =
                    Some(("CreateContainerConfigError".into(), e.clone()));
            }
            images.clear();
        }
        // ConfigMaps and Secrets that env entries name.
        let mut refs: HashMap<String, Value> = HashMap::new();
        for c in all_containers(&p) {
            let env = c.get("env").and_then(Value::as_array).into_iter().flatten();
            let env_from = c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for e in env.chain(env_from) {
                for (ptr, kind) in [
                    ("/valueFrom/configMapKeyRef/name", "configmaps"),
                    ("/valueFrom/secretKeyRef/name", "secrets"),
                    ("/configMapRef/name", "configmaps"),
                    ("/secretRef/name", "secrets"),
                ] {
                    let name = s(e, ptr);
                    let key = format!("{kind}/{name}");
                    if name.is_empty() || refs.contains_key(&key) {
                        continue;
                    }
                    if let Some(k) = resolve(kind)
                        && let Ok(o) = shared.client.get(k, Some(&ns), name).await
                    {
                        refs.insert(key, o);
                    }
                }
            }
        }
        // Disk emptyDirs over their sizeLimit evict the pod, as the kubelet does: its
        // containers are killed at once and it ends Failed with reason Evicted.
        if evicted.is_none() && measured_at.is_none_or(|t| t.elapsed() >= EMPTY_DIR_CHECK) {
            measured_at = Some(Instant::now());
            let cfg = shared.cfg.clone();
            let p2 = p.clone();
            if let Ok(Some(msg)) =
                tokio::task::spawn_blocking(move || empty_dir_over_limit(&cfg, &p2)).await
            {
                tracing::warn!(pod = s(&p, "/metadata/name"), "{msg}");
                crate::event(&shared.client, &p, "Warning", "Evicted", &msg).await;
                for c in all_containers(&p) {
                    stop_gracefully(&shared, &p, s(c, "/name").to_string(), Duration::ZERO).await;
                }
                evicted = Some(msg);
            }
        }
        let cfg = shared.cfg.clone();
        let p2 = p.clone();
        let files = files.clone();
        let mut t2 = tracks.clone();
        let backoff = shared.cfg.restart_backoff;
        let stopped = evicted.is_some();
        let pod_ip_then = last_pod_ip.clone();
        let result = tokio::task::spawn_blocking(move || {
            if stopped {
                // Nothing starts again; the status reports what is left.
                let states = cfg
                    .runtime
                    .containers(s(&p2, "/metadata/uid"))
                    .map_err(|e| e.to_string());
                return (states.map(|st| (pod_ip_then, st)), t2);
            }
            let r = sync_blocking(&cfg, &p2, &images, &files, refresh, &refs, &mut t2, backoff);
            (r, t2)
        })
        .await;
        let (pod_ip, states) = match result {
            Ok((Ok(v), t)) => {
                tracks = t;
                last_pod_ip = v.0.clone();
                v
            }
            Ok((Err(e), t)) => {
                tracks = t;
                tracing::warn!(pod = s(&p, "/metadata/name"), error = %e, "cannot run the pod");
                (String::new(), Vec::new())
            }
            Err(_) => continue,
        };
        // Probes of running containers; a failed liveness (or startup) probe kills the
        // container, and its restart policy takes over.
        let mut ready_by_probe = HashMap::new();
        for c in containers(&p) {
            let name = s(c, "/name").to_string();
            let Some(st) = states
                .iter()
                .find(|x| x.name == name && x.status == Status::Running)
            else {
                continue;
            };
            let v = probes
                .entry(name.clone())
                .or_default()
                .check(&shared.cfg, &uid, &pod_ip, c, st.started_at.unwrap_or(0))
                .await;
            ready_by_probe.insert(name.clone(), v.ready);
            let track = tracks.entry(name.clone()).or_default();
            for (reason, msg) in v.events {
                track.events.push(("Warning", reason, msg));
            }
            if let Some(why) = v.kill {
                track.events.push(("Normal", "Killing".into(), why));
                let grace = berth_api::validate::seconds_of(
                    p.pointer("/spec/terminationGracePeriodSeconds"),
                    30,
                );
                stop_gracefully(&shared, &p, name.clone(), Duration::from_secs(grace)).await;
            }
        }
        for track in tracks.values_mut() {
            for (typ, reason, msg) in track.events.drain(..) {
                crate::event(&shared.client, &p, typ, &reason, &msg).await;
            }
        }
        let mut status = status_of(
            &shared.cfg,
            &p,
            &pod_ip,
            &states,
            &tracks,
            &ready_by_probe,
            &start_time,
        );
        if let Some(msg) = &evicted {
            status["phase"] = json!("Failed");
            status["reason"] = json!("Evicted");
            status["message"] = json!(msg);
            for c in status["conditions"].as_array_mut().into_iter().flatten() {
                if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodFailed");
                }
            }
        }
        // Report what changed, and what someone else changed (the node controller marks pods
        // on a silent node not Ready): the stored status is compared too, once the last
        // report has had time to come back through the watch.
        let stored_differs = !same_status(&status, &p["status"])
            && last_report.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(2));
        if !same_status(&status, &last_status) || stored_differs {
            last_report = Some(Instant::now());
            let Some(pods) = resolve("pods") else {
                continue;
            };
            // Written against the version this view came from: had the pod changed since (a
            // node back from a partition learns only now that its pod is being deleted), the
            // write is refused and the next pass works from the newer pod, instead of
            // reporting a pod Ready that is on its way out.
            let patch = json!({
                "metadata": {"resourceVersion": s(&p, "/metadata/resourceVersion")},
                "status": status,
            });
            match crate::patch_status(
                &shared.client,
                pods,
                Some(&ns),
                s(&p, "/metadata/name"),
                &patch,
            )
            .await
            {
                Ok(_) => last_status = status,
                Err(e) if e.code() == Some(409) => {
                    tracing::debug!("the pod changed since this view; reporting from the next");
                    last_report = None;
                }
                Err(e) => tracing::warn!(error = %e, "cannot report a pod's status"),
            }
        }
    }
}

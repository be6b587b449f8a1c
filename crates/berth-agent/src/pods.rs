//! One worker per pod: makes the runtime match the pod's spec (sandbox, containers, restarts
//! with back-off), reports the pod's status, and stops the pod gracefully when it is deleted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_client::Client;
use berth_image::{ImageConfig, ImageStore};
use berth_runtime::ContainerSpec;
use berth_runtime::pod::{ContainerConfig, Dns, PodConfig, RuntimeError};
use berth_runtime::shim::{ContainerState, Status};
use berth_runtime::spec::Mount;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::AgentConfig;

#[derive(Debug, Clone)]
pub(crate) enum Update {
    Pod(Value),
    Gone,
}

pub(crate) struct Shared {
    client: Client,
    cfg: AgentConfig,
}

/// Kubernetes' crash-loop back-off: restart at once the first time, then wait 10 s, 20 s,
/// ... up to 5 min; a container that ran 10 min starts over.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Shared {
    pub(crate) fn new(client: Client, cfg: AgentConfig) -> Shared {
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

/// What the worker remembers of one container between passes.
#[derive(Debug, Default, Clone)]
struct Track {
    restarts: u32,
    /// Not restarted before this.
    backoff_until: Option<Instant>,
    backoff: Duration,
    /// The previous run's `terminated` state.
    last_state: Option<Value>,
    /// Why it is not running (image, creation errors).
    waiting: Option<(String, String)>,
    image_id: String,
    /// Events to record: (type, reason, message).
    events: Vec<(&'static str, String, String)>,
}

/// An image resolved (or not) for one container, and when to try again after a failure.
struct Pulled {
    image: String,
    result: Result<Image, (String, String)>,
    retry_at: Instant,
    backoff: Duration,
    failures: u32,
}

/// An image ready to run.
#[derive(Clone)]
struct Image {
    layers: Vec<PathBuf>,
    config: ImageConfig,
    host: bool,
    id: String,
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

async fn resolve_image(
    shared: &Shared,
    image: &str,
    policy: &str,
) -> Result<Image, (String, String)> {
    let data = shared.cfg.data_dir.join("images");
    if image == berth_runtime::host::NAME {
        let layer = berth_runtime::host::layer(&data).map_err(|e| {
            (
                "CreateContainerError".to_string(),
                format!("the host image: {e}"),
            )
        })?;
        return Ok(Image {
            layers: vec![layer],
            config: ImageConfig {
                env: vec![format!("PATH={}", berth_runtime::host::PATH)],
                ..Default::default()
            },
            host: true,
            id: "berth://host".into(),
        });
    }
    let store = ImageStore::open(&data).map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    let local = store.resolve(image);
    let record = match (local, policy) {
        (Ok(r), p) if p != "Always" => r,
        (Err(e), "Never") => {
            return Err((
                "ErrImageNeverPull".into(),
                format!(
                    "Container image \"{image}\" is not present with pull policy of Never: {e}"
                ),
            ));
        }
        (_, _) => {
            let reference = berth_image::Reference::parse(image)
                .map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?;
            let opts = berth_image::registry::PullOptions {
                insecure: shared.cfg.insecure_registries.clone(),
                parallel: 3,
                ..Default::default()
            };
            match berth_image::registry::pull(&store, &reference, &opts, &|_| {}).await {
                Ok(r) => r,
                Err(e) => {
                    // A pull that fails but leaves a usable local copy (IfNotPresent raced,
                    // or Always with the registry down) still runs, as kubelet does not.
                    return Err(("ErrImagePull".into(), e.to_string()));
                }
            }
        }
    };
    // Unpacking waits on the layer's lock and on the disk: never on the async workers.
    let store = store.with_max_layer_size(shared.cfg.max_layer_size);
    let wanted = record.layers.clone();
    let layers = tokio::task::spawn_blocking(move || {
        wanted
            .iter()
            .map(|l| store.layer_dir(l))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| {
        (
            "ErrImagePull".to_string(),
            format!("unpacking the image: {e}"),
        )
    })?
    .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    Ok(Image {
        layers,
        config: record.config.clone(),
        host: false,
        id: record.config_digest.to_string(),
    })
}

/// Files of a ConfigMap or Secret volume.
async fn projected(
    client: &Client,
    ns: &str,
    vol: &Value,
) -> Result<Vec<berth_runtime::volumes::File>, String> {
    let (kind, name, secret) = if let Some(cm) = vol.get("configMap") {
        ("configmaps", s(cm, "/name"), false)
    } else if let Some(sec) = vol.get("secret") {
        ("secrets", s(sec, "/secretName"), true)
    } else {
        return Ok(Vec::new());
    };
    let src = vol
        .get("configMap")
        .or_else(|| vol.get("secret"))
        .cloned()
        .unwrap_or_default();
    let mode = src
        .get("defaultMode")
        .and_then(Value::as_u64)
        .unwrap_or(0o644) as u32;
    let k = resolve(kind).ok_or("kind")?;
    let obj = client
        .get(k, Some(ns), name)
        .await
        .map_err(|e| format!("{kind} \"{name}\": {e}"))?;
    let mut files = Vec::new();
    let mut add = |key: &str, bytes: Vec<u8>| {
        let items = src.get("items").and_then(Value::as_array);
        match items {
            Some(items) => {
                for it in items.iter().filter(|i| s(i, "/key") == key) {
                    files.push(berth_runtime::volumes::File {
                        path: s(it, "/path").to_string(),
                        contents: bytes.clone(),
                        mode: it
                            .get("mode")
                            .and_then(Value::as_u64)
                            .map_or(mode, |m| m as u32),
                    });
                }
            }
            None => files.push(berth_runtime::volumes::File {
                path: key.to_string(),
                contents: bytes,
                mode,
            }),
        }
    };
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let text = v.as_str().unwrap_or("");
            let bytes = if secret {
                berth_api::base64::decode(text).unwrap_or_default()
            } else {
                text.as_bytes().to_vec()
            };
            add(k, bytes);
        }
    }
    if let Some(data) = obj.get("binaryData").and_then(Value::as_object) {
        for (k, v) in data {
            add(
                k,
                berth_api::base64::decode(v.as_str().unwrap_or("")).unwrap_or_default(),
            );
        }
    }
    Ok(files)
}

fn quantity(v: &Value, ptr: &str) -> Option<berth_api::quantity::Quantity> {
    v.pointer(ptr).and_then(|q| match q {
        Value::String(s) => berth_api::quantity::Quantity::parse(s).ok(),
        Value::Number(n) => berth_api::quantity::Quantity::parse(&n.to_string()).ok(),
        _ => None,
    })
}

/// A pod's resolv.conf as its DNS policy says: ClusterFirst (the default) is this node's
/// cluster DNS with the Kubernetes search list; Default is the host's resolvers; None is the
/// pod's own `dnsConfig`. (`dnsConfig` adds to the other two.)
/// `hostNetwork: true`: the pod shares the node's network.
fn host_network(pod: &Value) -> bool {
    pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
}

fn pod_dns(cfg: &AgentConfig, pod: &Value) -> Dns {
    let ns = s(pod, "/metadata/namespace");
    let mut dns = match (s(pod, "/spec/dnsPolicy"), cfg.cluster_dns) {
        ("None", _) => Dns::default(),
        // As the kubelet: ClusterFirst on the node's network falls back to the node's resolvers
        // (ClusterFirstWithHostNet asks for the cluster's).
        ("ClusterFirst", _) if host_network(pod) => cfg.dns.clone(),
        ("Default", _) | (_, None) => cfg.dns.clone(),
        (_, Some(ip)) => Dns {
            nameservers: vec![ip.to_string()],
            searches: vec![
                format!("{ns}.svc.{}", crate::dns::DOMAIN),
                format!("svc.{}", crate::dns::DOMAIN),
                crate::dns::DOMAIN.to_string(),
            ],
            options: vec!["ndots:5".into()],
        },
    };
    let strings = |ptr: &str| -> Vec<String> {
        pod.pointer(ptr)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    dns.nameservers
        .extend(strings("/spec/dnsConfig/nameservers"));
    dns.searches.extend(strings("/spec/dnsConfig/searches"));
    for o in pod
        .pointer("/spec/dnsConfig/options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(o, "/name");
        match o.get("value").and_then(Value::as_str) {
            Some(v) => dns.options.push(format!("{name}:{v}")),
            None if !name.is_empty() => dns.options.push(name.to_string()),
            None => {}
        }
    }
    dns
}

/// The pod's host name: `spec.hostname`, or its name.
fn hostname_of(pod: &Value) -> &str {
    match s(pod, "/spec/hostname") {
        "" => s(pod, "/metadata/name"),
        h => h,
    }
}

/// A pod's volumes as made on this node: where each is, and whether containers must see it
/// read-only whatever their mount says (projected volumes, as the kubelet mounts them).
struct PodVolumes {
    /// The pod's directory; `subPath` staging points go under it.
    dir: PathBuf,
    by_name: HashMap<String, (PathBuf, bool)>,
    /// The emptyDirs each container's user is let into (`grant_user`) as it starts: those
    /// of a pod without an fsGroup.
    per_user: HashSet<String>,
}

/// Expands `$(VAR)` in a `subPathExpr` from the container's environment, as the kubelet
/// does; a name not in the environment expands to nothing.
fn expand_sub_path(expr: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                if let Some((_, v)) = env.iter().rev().find(|(k, _)| k == name) {
                    out.push_str(v);
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// How often disk emptyDirs with a sizeLimit are measured (the kubelet's eviction manager
/// looks every 10 s).
const EMPTY_DIR_CHECK: Duration = Duration::from_secs(5);

/// The kubelet's eviction message for the first disk emptyDir of `pod` that uses more than
/// its `sizeLimit`, if any. Blocking: walks the volumes.
fn empty_dir_over_limit(cfg: &AgentConfig, pod: &Value) -> Option<String> {
    let dir = cfg.runtime.pod_dir(s(pod, "/metadata/uid")).join("volumes");
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(ed) = v.get("emptyDir") else {
            continue;
        };
        if s(ed, "/medium") == "Memory" {
            continue; // the tmpfs's own size bounds it
        }
        let Some(limit) = quantity(ed, "/sizeLimit") else {
            continue;
        };
        let name = s(v, "/name");
        let Ok(root) = berth_fs::open_root(&dir.join(name)) else {
            continue;
        };
        let used = match berth_fs::disk_usage(std::os::fd::AsFd::as_fd(&root)) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(volume = name, error = %e, "cannot measure an emptyDir");
                continue;
            }
        };
        if i128::from(used) > limit.units_ceil() {
            let shown = ed.get("sizeLimit").map_or(String::new(), |q| match q {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            return Some(format!(
                "Usage of EmptyDir volume \"{name}\" exceeds the limit \"{shown}\". "
            ));
        }
    }
    None
}

/// The runtime's view of one of the pod's containers.
fn container_config(
    pod: &Value,
    c: &Value,
    image: &Image,
    pod_ip: &str,
    node: &str,
    volumes: &PodVolumes,
    refs: &HashMap<String, Value>,
    attempt: u32,
) -> Result<ContainerConfig, String> {
    let strings = |ptr: &str| -> Vec<String> {
        c.pointer(ptr)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let argv = image.config.argv(&strings("/command"), &strings("/args"));
    if argv.is_empty() {
        return Err("the image names no command and the container gives none".into());
    }
    // HOSTNAME as container runtimes set it (the pod's hostname); the image's and the
    // container's own env come after it and win.
    let mut env = vec![("HOSTNAME".to_string(), hostname_of(pod).to_string())];
    // envFrom first: every key of a ConfigMap or Secret (with an optional prefix); `env`
    // entries after it win.
    for from in c
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (kind, r, secret) = match (from.get("configMapRef"), from.get("secretRef")) {
            (Some(r), _) => ("configmaps", r, false),
            (_, Some(r)) => ("secrets", r, true),
            _ => continue,
        };
        let name = s(r, "/name");
        let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
        let Some(obj) = refs.get(&format!("{kind}/{name}")) else {
            if optional {
                continue;
            }
            return Err(format!(
                "{} \"{name}\" not found",
                if secret { "secret" } else { "configmap" }
            ));
        };
        let prefix = s(from, "/prefix");
        for (k, v) in obj
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let text = v.as_str().unwrap_or("");
            let value = if secret {
                String::from_utf8_lossy(&berth_api::base64::decode(text).unwrap_or_default())
                    .into_owned()
            } else {
                text.to_string()
            };
            env.push((format!("{prefix}{k}"), value));
        }
    }
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let name = s(e, "/name").to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            v.to_string()
        } else if let Some(r) = e
            .pointer("/valueFrom/configMapKeyRef")
            .or_else(|| e.pointer("/valueFrom/secretKeyRef"))
        {
            let secret = e.pointer("/valueFrom/secretKeyRef").is_some();
            let (kind, obj_name, key) = (
                if secret { "secrets" } else { "configmaps" },
                s(r, "/name"),
                s(r, "/key"),
            );
            let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
            let found = refs
                .get(&format!("{kind}/{obj_name}"))
                .and_then(|o| {
                    o.pointer(&format!(
                        "/data/{}",
                        key.replace('~', "~0").replace('/', "~1")
                    ))
                })
                .and_then(Value::as_str);
            match found {
                Some(v) if secret => {
                    String::from_utf8_lossy(&berth_api::base64::decode(v).unwrap_or_default())
                        .into_owned()
                }
                Some(v) => v.to_string(),
                None if optional => continue,
                None => {
                    return Err(format!(
                        "couldn't find key {key} in {} {obj_name}",
                        if secret { "Secret" } else { "ConfigMap" }
                    ));
                }
            }
        } else {
            match s(e, "/valueFrom/fieldRef/fieldPath") {
                "metadata.name" => s(pod, "/metadata/name").to_string(),
                "metadata.namespace" => s(pod, "/metadata/namespace").to_string(),
                "metadata.uid" => s(pod, "/metadata/uid").to_string(),
                "spec.nodeName" => node.to_string(),
                "status.podIP" => pod_ip.to_string(),
                _ => String::new(),
            }
        };
        env.push((name, value));
    }
    let env = image.config.env_with(&env);
    let sc = c.get("securityContext").cloned().unwrap_or_default();
    let psc = pod
        .pointer("/spec/securityContext")
        .cloned()
        .unwrap_or_default();
    let etc = if image.host {
        PathBuf::from("/etc")
    } else {
        berth_runtime::user::image_etc(&image.layers)
    };
    let (mut uid, mut gid) = berth_runtime::user::resolve(&image.config.user, &etc)?;
    // An ID past 32 bits is refused, never wrapped (4294967296 would be root).
    let id = |f: &str| -> Result<Option<u32>, String> {
        match sc.get(f).or_else(|| psc.get(f)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("securityContext.{f} {v} is not a user or group ID")),
        }
    };
    if let Some(u) = id("runAsUser")? {
        uid = u;
    }
    if let Some(g) = id("runAsGroup")? {
        gid = g;
    }
    let mut mounts = if image.host {
        berth_runtime::host::mounts()
    } else {
        Vec::new()
    };
    for (i, m) in c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = s(m, "/name");
        let (src, forced_ro) = volumes
            .by_name
            .get(name)
            .ok_or_else(|| format!("volume mount {name:?}: the pod has no such volume"))?;
        let sub = match (s(m, "/subPath"), s(m, "/subPathExpr")) {
            ("", "") => String::new(),
            ("", expr) => expand_sub_path(expr, &env),
            (sub, _) => sub.to_string(),
        };
        if volumes.per_user.contains(name) {
            let acl = berth_runtime::volumes::grant_user(src, uid)
                .map_err(|e| format!("volume mount {name:?}: {e}"))?;
            if !acl {
                tracing::warn!(volume = name, dir = %src.display(),
                    "the filesystem has no POSIX ACLs: this emptyDir is writable by every user of the host");
            }
        }
        // A subPath is resolved inside the volume by descriptor and bind-mounted to a point
        // of berth's own, so a link the container plants in the volume leads nowhere else.
        let source = if sub.is_empty() {
            src.clone()
        } else {
            let staging = volumes
                .dir
                .join("subpaths")
                .join(s(c, "/name"))
                .join(i.to_string());
            berth_runtime::volumes::sub_path(src, &sub, &staging)
                .map_err(|e| format!("volume mount {name:?}: {e}"))?
        };
        mounts.push(Mount {
            destination: s(m, "/mountPath").to_string(),
            source: source.display().to_string(),
            read_only: *forced_ro || m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    let wd = s(c, "/workingDir");
    Ok(ContainerConfig {
        name: s(c, "/name").to_string(),
        layers: image.layers.clone(),
        spec: ContainerSpec {
            argv,
            env,
            cwd: if wd.is_empty() {
                image.config.working_dir.clone()
            } else {
                wd.to_string()
            },
            uid,
            gid,
            hostname: String::new(),
            read_only_root: sc
                .get("readOnlyRootFilesystem")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            memory_limit: quantity(c, "/resources/limits/memory")
                .map_or(0, |q| q.units_ceil().max(0) as u64),
            cpu_limit_millis: quantity(c, "/resources/limits/cpu")
                .map_or(0, |q| q.millis().max(0) as u64),
            cpu_request_millis: quantity(c, "/resources/requests/cpu")
                .map_or(0, |q| q.millis().max(0) as u64),
            pids_limit: 0,
            mounts,
            ..Default::default()
        },
        attempt,
        host_root: image.host,
    })
}

fn should_restart(policy: &str, st: &ContainerState) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => st.exit_code != Some(0),
        _ => true,
    }
}

fn terminated(uid: &str, st: &ContainerState) -> Value {
    let mut t = json!({
        "exitCode": st.exit_code.unwrap_or(0),
        "reason": st.reason.clone().unwrap_or_default(),
        "containerID": format!("berth://{uid}/{}", st.name),
    });
    if let Some(sig) = st.signal {
        t["signal"] = json!(sig);
    }
    if let Some(at) = st.started_at {
        t["startedAt"] = json!(rfc3339(at));
    }
    if let Some(at) = st.finished_at {
        t["finishedAt"] = json!(rfc3339(at));
    }
    t
}

/// One pass: the runtime made to match the spec. Blocking.
#[allow(clippy::too_many_arguments)]
fn sync_blocking(
    cfg: &AgentConfig,
    pod: &Value,
    images: &HashMap<String, Result<Image, (String, String)>>,
    projected_files: &HashMap<String, Vec<berth_runtime::volumes::File>>,
    refs: &HashMap<String, Value>,
    tracks: &mut HashMap<String, Track>,
    backoff_initial: Duration,
) -> Result<(String, Vec<ContainerState>), String> {
    let rt = &cfg.runtime;
    let uid = s(pod, "/metadata/uid").to_string();
    let record = match rt.pod(&uid) {
        Ok(r) => r,
        Err(RuntimeError::NoPod(_)) => {
            let hostname = hostname_of(pod);
            rt.run_pod(&PodConfig {
                id: uid.clone(),
                name: s(pod, "/metadata/name").to_string(),
                namespace: s(pod, "/metadata/namespace").to_string(),
                hostname: hostname.to_string(),
                dns: pod_dns(cfg, pod),
                annotations: Default::default(),
                host_network: host_network(pod),
            })
            .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    // A pod on the node's network has the node's address.
    let pod_ip = record
        .network
        .as_ref()
        .map_or_else(|| cfg.node_ip.clone(), |n| n.ip.to_string());
    // Volumes: made once per pod, refreshed projections every pass.
    let dir = rt.pod_dir(&uid);
    let mut volumes = PodVolumes {
        dir: dir.clone(),
        by_name: HashMap::new(),
        per_user: HashSet::new(),
    };
    // The pod's fsGroup owns its emptyDirs and projected volumes (hostPaths stay as they are).
    let fs_group = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
        .and_then(|g| u32::try_from(g).ok());
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(v, "/name").to_string();
        let mut read_only = false;
        let path = if let Some(ed) = v.get("emptyDir") {
            let memory = s(ed, "/medium") == "Memory";
            let limit = quantity(ed, "/sizeLimit").map_or(0, |q| q.units_ceil().max(0) as u64);
            let p = berth_runtime::volumes::empty_dir(&dir, &name, memory, limit)
                .map_err(|e| e.to_string())?;
            match fs_group {
                Some(g) => berth_runtime::volumes::set_group(&p, g, false, false)
                    .map_err(|e| e.to_string())?,
                None => {
                    volumes.per_user.insert(name.clone());
                }
            }
            p
        } else if let Some(hp) = v.get("hostPath") {
            let p = PathBuf::from(s(hp, "/path"));
            if matches!(s(hp, "/type"), "DirectoryOrCreate") {
                let _ = std::fs::create_dir_all(&p);
            }
            p
        } else if let Some(files) = projected_files.get(&name) {
            let p = dir.join("volumes").join(&name);
            berth_runtime::volumes::project(&p, files).map_err(|e| e.to_string())?;
            if let Some(g) = fs_group {
                berth_runtime::volumes::set_group(&p, g, true, true).map_err(|e| e.to_string())?;
            }
            read_only = true;
            p
        } else {
            continue;
        };
        volumes.by_name.insert(name, (path, read_only));
    }
    let policy = s(pod, "/spec/restartPolicy").to_string();
    let node = s(pod, "/spec/nodeName").to_string();
    let mut states: HashMap<String, ContainerState> = rt
        .containers(&uid)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    let now = Instant::now();
    // Makes one container match its spec: started, or restarted when `restart` says so
    // (after its back-off), or left as it is.
    let mut step = |states: &mut HashMap<String, ContainerState>,
                    c: &Value,
                    restart: &dyn Fn(&ContainerState) -> bool|
     -> Result<(), String> {
        let name = s(c, "/name").to_string();
        let track = tracks.entry(name.clone()).or_default();
        let image = match images.get(&name) {
            Some(Ok(i)) => i.clone(),
            Some(Err((reason, msg))) => {
                track.waiting = Some((reason.clone(), msg.clone()));
                return Ok(());
            }
            None => return Ok(()),
        };
        track.image_id = image.id.clone();
        let start = match states.get(&name) {
            None => true,
            Some(st) if st.status == Status::Exited && restart(st) => {
                if track.backoff_until.is_some_and(|t| now < t) {
                    if track
                        .waiting
                        .as_ref()
                        .is_none_or(|(r, _)| r != "CrashLoopBackOff")
                    {
                        track.events.push((
                            "Warning",
                            "BackOff".into(),
                            format!(
                                "Back-off restarting failed container {name} in pod {}_{}",
                                s(pod, "/metadata/name"),
                                s(pod, "/metadata/namespace")
                            ),
                        ));
                    }
                    track.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={name} pod={}_{}({uid})",
                            track.backoff.as_secs(),
                            s(pod, "/metadata/name"),
                            s(pod, "/metadata/namespace"),
                        ),
                    ));
                    false
                } else {
                    // It ran long enough: the back-off starts over.
                    let ran = st
                        .finished_at
                        .unwrap_or(0)
                        .saturating_sub(st.started_at.unwrap_or(0));
                    if Duration::from_nanos(ran) >= BACKOFF_MAX * 2 {
                        track.backoff = Duration::ZERO;
                    }
                    track.last_state = Some(terminated(&uid, st));
                    track.restarts += 1;
                    track.backoff = if track.backoff.is_zero() {
                        backoff_initial
                    } else {
                        (track.backoff * 2).min(BACKOFF_MAX)
                    };
                    rt.remove_container(&uid, &name)
                        .map_err(|e| e.to_string())?;
                    states.remove(&name);
                    true
                }
            }
            Some(_) => false,
        };
        if !start {
            return Ok(());
        }
        let made = container_config(
            pod,
            c,
            &image,
            &pod_ip,
            &node,
            &volumes,
            refs,
            track.restarts,
        )
        .and_then(|mut cc| crate::security::apply(&cfg.data_dir, pod, c, &mut cc).map(|()| cc))
        .map_err(|m| ("CreateContainerConfigError".to_string(), m))
        .and_then(|cc| {
            rt.create_container(&uid, &cc)
                .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))
        })
        .and_then(|_| {
            rt.start_container(&uid, &name)
                .map_err(|e| ("RunContainerError".to_string(), e.to_string()))
        });
        match made {
            Ok(()) => {
                track.waiting = None;
                track.events.push((
                    "Normal",
                    "Created".into(),
                    format!("Created container {name}"),
                ));
                track.events.push((
                    "Normal",
                    "Started".into(),
                    format!("Started container {name}"),
                ));
                if let Ok(st) = rt.container(&uid, &name) {
                    states.insert(name.clone(), st);
                }
                if track.restarts > 0 {
                    track.backoff_until = Some(now + track.backoff);
                }
            }
            Err((reason, msg)) => {
                let _ = rt.remove_container(&uid, &name);
                if track
                    .waiting
                    .as_ref()
                    .is_none_or(|(r, m)| *r != reason || *m != msg)
                {
                    track
                        .events
                        .push(("Warning", "Failed".into(), format!("Error: {msg}")));
                }
                track.waiting = Some((reason, msg));
            }
        }
        Ok(())
    };
    // Init containers run one at a time, each to success, before the others start.
    let mut init_failed = false;
    let mut initialized = true;
    for c in pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(c, "/name").to_string();
        let done = states
            .get(&name)
            .is_some_and(|st| st.status == Status::Exited && st.exit_code == Some(0));
        if done {
            continue;
        }
        initialized = false;
        let failed = states
            .get(&name)
            .is_some_and(|st| st.status == Status::Exited && st.exit_code != Some(0));
        if failed && policy == "Never" {
            init_failed = true;
            break;
        }
        step(&mut states, c, &|st: &ContainerState| {
            st.exit_code != Some(0)
        })?;
        break;
    }
    if initialized && !init_failed {
        for c in containers(pod) {
            step(&mut states, c, &|st: &ContainerState| {
                should_restart(&policy, st)
            })?;
        }
    }
    let mut list: Vec<ContainerState> = states.into_values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((pod_ip, list))
}

/// The pod's status as Kubernetes reports it.
fn status_of(
    cfg: &AgentConfig,
    pod: &Value,
    pod_ip: &str,
    states: &[ContainerState],
    tracks: &HashMap<String, Track>,
    ready_by_probe: &HashMap<String, bool>,
    start_time: &str,
) -> Value {
    let policy = s(pod, "/spec/restartPolicy");
    let uid = s(pod, "/metadata/uid");
    // Init containers: done when each exited 0; a failure under restartPolicy Never fails
    // the pod.
    let (mut initialized, mut init_failed) = (true, false);
    let mut init_statuses = Vec::new();
    for c in pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(c, "/name");
        let track = tracks.get(name).cloned().unwrap_or_default();
        let st = states.iter().find(|x| x.name == name);
        let done = st.is_some_and(|st| st.status == Status::Exited && st.exit_code == Some(0));
        initialized &= done;
        let state = match (st, &track.waiting) {
            (Some(st), _) if st.status == Status::Running => {
                json!({"running": {"startedAt": rfc3339(st.started_at.unwrap_or(0))}})
            }
            (_, Some((reason, message))) => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            (Some(st), None) if st.status == Status::Exited => {
                if st.exit_code != Some(0) && policy == "Never" {
                    init_failed = true;
                }
                json!({"terminated": terminated(uid, st)})
            }
            _ => json!({"waiting": {"reason": "PodInitializing"}}),
        };
        init_statuses.push(json!({
            "name": name, "state": state, "ready": done, "restartCount": track.restarts,
            "lastState": track.last_state.as_ref().map_or(json!({}), |t| json!({"terminated": t})),
            "image": s(c, "/image"), "imageID": track.image_id,
        }));
    }
    let mut statuses = Vec::new();
    let (mut running, mut all_ready, mut succeeded, mut failed, mut total) = (0, true, 0, 0, 0);
    for c in containers(pod) {
        total += 1;
        let name = s(c, "/name");
        let track = tracks.get(name).cloned().unwrap_or_default();
        let st = states.iter().find(|x| x.name == name);
        let (state, ready) = match (st, &track.waiting) {
            (Some(st), _) if st.status == Status::Running => {
                running += 1;
                let ready = ready_by_probe.get(name).copied().unwrap_or(true);
                (
                    json!({"running": {"startedAt": rfc3339(st.started_at.unwrap_or(0))}}),
                    ready,
                )
            }
            (_, Some((reason, message))) => {
                // A container that has run and waits to run again keeps the pod Running.
                if track.last_state.is_some() {
                    running += 1;
                }
                (
                    json!({"waiting": {"reason": reason, "message": message}}),
                    false,
                )
            }
            (Some(st), None) if st.status == Status::Exited => {
                if should_restart(policy, st) {
                    running += 1;
                } else if st.exit_code == Some(0) {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
                (
                    json!({"terminated": terminated(s(pod, "/metadata/uid"), st)}),
                    false,
                )
            }
            _ => {
                let reason = if initialized {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                };
                (json!({"waiting": {"reason": reason}}), false)
            }
        };
        all_ready &= ready;
        let mut cs = json!({
            "name": name,
            "state": state,
            "lastState": track.last_state.as_ref().map_or(json!({}), |t| json!({"terminated": t})),
            "ready": ready,
            "started": st.is_some_and(|st| st.status == Status::Running),
            "restartCount": track.restarts,
            "image": s(c, "/image"),
            "imageID": track.image_id,
        });
        if st.is_some() {
            cs["containerID"] = json!(format!("berth://{}/{name}", s(pod, "/metadata/uid")));
        }
        statuses.push(cs);
    }
    let phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if total > 0 && succeeded == total {
        "Succeeded"
    } else if total > 0 && succeeded + failed == total && failed > 0 {
        "Failed"
    } else if running > 0 || succeeded + failed > 0 {
        "Running"
    } else {
        "Pending"
    };
    let now = berth_api::timefmt::now_rfc3339();
    let cond = |t: &str, ok: bool| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now});
        if !ok && (t == "Ready" || t == "ContainersReady") {
            c["reason"] = json!("ContainersNotReady");
        }
        c
    };
    let ready = all_ready && total > 0 && phase == "Running";
    json!({
        "phase": phase,
        "conditions": [
            cond("PodScheduled", true),
            cond("Initialized", initialized),
            cond("ContainersReady", ready),
            cond("Ready", ready),
        ],
        "hostIP": cfg.node_ip,
        "podIP": pod_ip,
        "podIPs": if pod_ip.is_empty() { json!([]) } else { json!([{"ip": pod_ip}]) },
        "startTime": start_time,
        "containerStatuses": statuses,
        "initContainerStatuses": init_statuses,
    })
}

/// Conditions' transition times aside, did anything change?
fn same_status(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(Value::Array(cs)) = v.get_mut("conditions") {
            for c in cs {
                if let Value::Object(m) = c {
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// Stops a running container as the kubelet does: its preStop hook first (within the grace
/// period), then SIGTERM, then SIGKILL when what is left of the grace period has passed.
async fn stop_gracefully(shared: &Shared, pod: &Value, name: String, grace: Duration) {
    let started = Instant::now();
    let spec = containers(pod).find(|c| s(c, "/name") == name);
    let hook = spec.and_then(|c| {
        Some((
            c,
            c.pointer("/lifecycle/preStop").filter(|h| h.is_object())?,
        ))
    });
    if let Some((c, hook)) = hook {
        let (ok, msg) = crate::probes::run_handler(
            &shared.cfg,
            s(pod, "/metadata/uid"),
            s(pod, "/status/podIP"),
            c,
            hook,
            grace,
        )
        .await;
        if !ok {
            let msg = format!("PreStopHook failed: {msg}");
            crate::event(&shared.client, pod, "Warning", "FailedPreStopHook", &msg).await;
        }
    }
    // A hook that used the whole grace period still leaves the process 2 s to stop, as
    // Kubernetes allows.
    let floor = if hook.is_some() {
        Duration::from_secs(2).min(grace)
    } else {
        Duration::ZERO
    };
    let left = grace.saturating_sub(started.elapsed()).max(floor);
    let rt = shared.cfg.runtime.clone();
    let uid = s(pod, "/metadata/uid").to_string();
    let _ =
        tokio::task::spawn_blocking(move || rt.stop_container(&uid, &name, libc::SIGTERM, left))
            .await;
}

/// Stops every container (the pod's grace period, split as kubelet does: each container
/// gets what is left), removes the sandbox, and deletes the pod for good.
async fn terminate(shared: &Shared, pod: &Value) {
    let uid = s(pod, "/metadata/uid").to_string();
    let grace = berth_api::validate::seconds_of(
        pod.pointer("/metadata/deletionGracePeriodSeconds")
            .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds")),
        30,
    );
    let rt = shared.cfg.runtime.clone();
    let uid2 = uid.clone();
    let states = tokio::task::spawn_blocking(move || rt.containers(&uid2))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    // All containers stop at once (each after its preStop hook), sharing the one grace
    // period.
    let stops = states
        .into_iter()
        .filter(|c| c.status == Status::Running)
        .map(|c| stop_gracefully(shared, pod, c.name, Duration::from_secs(grace)));
    futures_util::future::join_all(stops).await;
    let rt = shared.cfg.runtime.clone();
    let uid2 = uid.clone();
    let _ = tokio::task::spawn_blocking(move || rt.remove_pod(&uid2)).await;
    let Some(pods) = resolve("pods") else { return };
    let body = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
    let path = Client::object_path(
        pods,
        Some(s(pod, "/metadata/namespace")),
        s(pod, "/metadata/name"),
    );
    let r = shared
        .client
        .raw(
            berth_client::Method::DELETE,
            &path,
            Some((
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            )),
        )
        .await;
    if let Ok(r) = r
        && !matches!(r.status, 200 | 202 | 404 | 409)
    {
        tracing::warn!(status = r.status, "cannot delete a stopped pod");
    }
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
            let r = sync_blocking(&cfg, &p2, &images, &files, &refs, &mut t2, backoff);
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

//! What one container runs: its command, environment (with references resolved), user,
//! mounts (subPaths opened beneath their volume), limits and security settings, from the
//! pod's spec and its image; and the pod's sandbox settings (DNS, hostname, host network).

use std::collections::HashMap;
use std::path::PathBuf;

use berth_runtime::ContainerSpec;
use berth_runtime::pod::{ContainerConfig, Dns};
use berth_runtime::spec::Mount;
use serde_json::Value;

use super::Options;
use super::image::Image;
use super::s;
use super::volumes::{PodVolumes, expand_sub_path};

pub(super) fn quantity(v: &Value, ptr: &str) -> Option<berth_api::quantity::Quantity> {
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
pub(super) fn host_network(pod: &Value) -> bool {
    pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
}

pub(super) fn pod_dns(cfg: &Options, pod: &Value) -> Dns {
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
                format!("{ns}.svc.{}", berth_net::dns::DOMAIN),
                format!("svc.{}", berth_net::dns::DOMAIN),
                berth_net::dns::DOMAIN.to_string(),
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
pub(super) fn hostname_of(pod: &Value) -> &str {
    match s(pod, "/spec/hostname") {
        "" => s(pod, "/metadata/name"),
        h => h,
    }
}

/// The runtime's view of one of the pod's containers.
pub(super) fn container_config(
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

//! A pod's volumes as the worker sees them: projected files (ConfigMaps, Secrets, downward
//! API) read from the API, the volumes by name with their paths, `subPathExpr` expansion, and
//! the measure of disk `emptyDir`s against their `sizeLimit`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use berth_api::kinds::resolve;
use berth_client::Client;
use serde_json::Value;

use super::Options;
use super::container::quantity;
use super::s;

/// Files of a ConfigMap or Secret volume.
pub(super) async fn projected(
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

/// A pod's volumes as made on this node: where each is, and whether containers must see it
/// read-only whatever their mount says (projected volumes, as the kubelet mounts them).
pub(super) struct PodVolumes {
    /// The pod's directory; `subPath` staging points go under it.
    pub(super) dir: PathBuf,
    pub(super) by_name: HashMap<String, (PathBuf, bool)>,
    /// The emptyDirs each container's user is let into (`grant_user`) as it starts: those
    /// of a pod without an fsGroup.
    pub(super) per_user: HashSet<String>,
}

/// Expands `$(VAR)` in a `subPathExpr` from the container's environment, as the kubelet
/// does; a name not in the environment expands to nothing.
pub(super) fn expand_sub_path(expr: &str, env: &[(String, String)]) -> String {
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
pub(super) const EMPTY_DIR_CHECK: Duration = Duration::from_secs(5);

/// The kubelet's eviction message for the first disk emptyDir of `pod` that uses more than
/// its `sizeLimit`, if any. Blocking: walks the volumes.
pub(super) fn empty_dir_over_limit(cfg: &Options, pod: &Value) -> Option<String> {
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

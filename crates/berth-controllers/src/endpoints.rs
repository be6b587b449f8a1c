//! The endpoints controller: every Service with a selector has an Endpoints object of the same
//! name listing the pods it selects, as Kubernetes' does: ready pods under `addresses`, pods
//! with an address that are not ready (yet) under `notReadyAddresses`, each with its node and
//! a reference to the pod; the Service's ports with named target ports resolved per pod (pods
//! that resolve them differently fall in different subsets). Terminating pods are left out.
//! Services without a selector keep the Endpoints their users write.
//!
//! Invariant: it follows Services and Pods through the informer into a cache, and writes
//! an Endpoints object only when its content changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use berth_api::object::Object;
use berth_api::selector::LabelSelector;
use berth_apiserver::kv;
use berth_apiserver::registry::{DeleteOptions, Registry};
use berth_store::EventType;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::{Error, Key, key, pod_finished, pod_ready};

const USER: &str = "system:controller:endpoint-controller";

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, informer: Arc<Informer>, stop: watch::Receiver<bool>) {
    crate::runtime::supervise_informed("endpoints controller", registry, informer, stop, run_once)
        .await
}

#[derive(Default)]
struct Cache {
    services: BTreeMap<Key, Object>,
    /// Pods by namespace.
    pods: HashMap<String, BTreeMap<String, Object>>,
    /// What this controller last wrote (or found) per Service: the subsets and labels.
    written: HashMap<Key, Value>,
    /// The EndpointSlices last written per Service (one per subset).
    slices: HashMap<Key, Vec<Value>>,
    /// The key/value registrations last written per Service (`/services/NS/SVC/POD`).
    registered: HashMap<Key, BTreeMap<String, Vec<u8>>>,
}

async fn run_once(registry: &Registry, informer: &Informer) -> Result<(), Error> {
    let (all, mut changes) = informer.list_and_watch()?;
    let prefixes = ["services", "pods", "endpoints"].map(crate::informer::key_prefix);
    let mut c = Cache::default();
    let mut queue: BTreeSet<Key> = BTreeSet::new();
    for o in all {
        match o.kind() {
            "Service" => {
                queue.insert(key(&o));
                c.services.insert(key(&o), o);
            }
            "Pod" => {
                let (ns, name) = key(&o);
                c.pods.entry(ns).or_default().insert(name, o);
            }
            "Endpoints" => {
                c.written.insert(key(&o), content(&o));
            }
            _ => {}
        }
    }
    // Registrations of Services that went while the server was down go too.
    if let Ok(have) = kv::list_dir(registry, REGISTRATIONS) {
        for rest in have.keys() {
            let mut parts = rest.splitn(3, '/');
            if let (Some(ns), Some(svc), Some(_)) = (parts.next(), parts.next(), parts.next()) {
                let k = (ns.to_string(), svc.to_string());
                c.registered.entry(k.clone()).or_default();
                queue.insert(k);
            }
        }
    }
    loop {
        while let Some(k) = queue.pop_first() {
            reconcile(registry, &mut c, &k).await;
        }
        let Some(batch) = changes.next().await? else {
            return Ok(());
        };
        for change in batch.changes() {
            let ev = change.event;
            let k = &ev.kv.key;
            let (svc, pod, ep) = (
                k.starts_with(&prefixes[0]),
                k.starts_with(&prefixes[1]),
                k.starts_with(&prefixes[2]),
            );
            if !(svc || pod || ep) {
                continue;
            }
            let Some(o) = change.object().cloned() else {
                continue;
            };
            let put = ev.typ == EventType::Put;
            if svc {
                queue.insert(key(&o));
                if put {
                    c.services.insert(key(&o), o);
                } else {
                    c.services.remove(&key(&o));
                }
            } else if pod {
                let (ns, name) = key(&o);
                // Any Service of the namespace may select it (before or after the change).
                queue.extend(c.services.keys().filter(|(n, _)| *n == ns).cloned());
                let pods = c.pods.entry(ns).or_default();
                if put {
                    pods.insert(name, o);
                } else {
                    pods.remove(&name);
                }
            } else if put {
                // Someone else wrote an Endpoints object: compare it with what it should be.
                if c.written.get(&key(&o)) != Some(&content(&o)) {
                    c.written.insert(key(&o), content(&o));
                    queue.insert(key(&o));
                }
            } else {
                c.written.remove(&key(&o));
                queue.insert(key(&o));
            }
        }
    }
}

/// What of an Endpoints object this controller owns.
fn content(o: &Object) -> Value {
    json!({
        "labels": o.metadata().and_then(|m| m.get("labels")).cloned().unwrap_or(json!({})),
        "subsets": o.get("subsets").cloned().unwrap_or(json!([])),
    })
}

/// A Service port's target on one pod: the number, or the pod's container port of that name.
fn target_port(p: &Object, sp: &Value) -> Option<i64> {
    let target = sp.get("targetPort").unwrap_or_else(|| &sp["port"]);
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    if let Ok(n) = name.parse::<i64>() {
        return Some(n);
    }
    p.get("spec")?
        .get("containers")?
        .as_array()?
        .iter()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|cp| cp.get("name").and_then(Value::as_str) == Some(name))?
        .get("containerPort")?
        .as_i64()
}

/// One subset: pods that resolve the Service's ports alike.
#[derive(Default)]
struct Subset {
    ports: Vec<Value>,
    ready: Vec<Value>,
    not_ready: Vec<Value>,
}

/// The subsets a Service's pods make.
fn subsets(svc: &Object, pods: &[&Object]) -> Value {
    let spec = svc.get("spec").cloned().unwrap_or_default();
    let publish_not_ready = spec
        .get("publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ports: Vec<Value> = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Pods grouped by the ports they resolve to.
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    for p in pods {
        let ip = p
            .get("status")
            .and_then(|s| s.get("podIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if ip.is_empty() || p.deletion_timestamp().is_some() || pod_finished(p) {
            continue;
        }
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|sp| {
                let mut e = json!({
                    "port": target_port(p, sp)?,
                    "protocol": sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                });
                if let Some(n) = sp
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    e["name"] = json!(n);
                }
                if let Some(a) = sp.get("appProtocol") {
                    e["appProtocol"] = a.clone();
                }
                Some(e)
            })
            .collect();
        if !ports.is_empty() && resolved.is_empty() {
            continue;
        }
        let node = p
            .get("spec")
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut addr = json!({
            "ip": ip,
            "targetRef": {"kind": "Pod", "namespace": p.namespace().unwrap_or(""), "name": p.name(), "uid": p.uid()},
        });
        if !node.is_empty() {
            addr["nodeName"] = json!(node);
        }
        let g = groups
            .entry(serde_json::to_string(&resolved).unwrap_or_default())
            .or_insert_with(|| Subset {
                ports: resolved.clone(),
                ..Default::default()
            });
        if pod_ready(p) || publish_not_ready {
            g.ready.push(addr);
        } else {
            g.not_ready.push(addr);
        }
    }
    let by_ip = |a: &Value, b: &Value| {
        let ip = |v: &Value| {
            v["ip"]
                .as_str()
                .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
                .map_or(0, u32::from)
        };
        ip(a).cmp(&ip(b))
    };
    Value::Array(
        groups
            .into_values()
            .map(|mut g| {
                g.ready.sort_by(by_ip);
                g.not_ready.sort_by(by_ip);
                let mut s = json!({"ports": g.ports});
                if !g.ready.is_empty() {
                    s["addresses"] = json!(g.ready);
                }
                if !g.not_ready.is_empty() {
                    s["notReadyAddresses"] = json!(g.not_ready);
                }
                s
            })
            .collect(),
    )
}

/// Where ready pods of Services are registered in the key/value tree: `NS/SVC/POD` under it.
const REGISTRATIONS: &str = "/services";

/// The key/value registrations of a Service's ready pods: `POD` → its address, ports, node
/// and labels (JSON).
fn registrations(k: &Key, subsets: &Value, pods: &[&Object]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in subsets.as_array().into_iter().flatten() {
        for a in sub["addresses"].as_array().into_iter().flatten() {
            let Some(name) = a["targetRef"]["name"].as_str() else {
                continue;
            };
            let labels = pods
                .iter()
                .find(|p| p.name() == name)
                .and_then(|p| p.metadata())
                .and_then(|m| m.get("labels"))
                .cloned()
                .unwrap_or(json!({}));
            let v = json!({
                "pod": name, "namespace": k.0, "service": k.1,
                "ip": a["ip"], "node": a.get("nodeName").cloned().unwrap_or(Value::Null),
                "ports": sub["ports"], "labels": labels,
            });
            out.insert(name.to_string(), serde_json::to_vec(&v).unwrap_or_default());
        }
    }
    out
}

/// Makes a Service's registrations `want`, when they differ from what was written.
async fn register(registry: &Registry, c: &mut Cache, k: &Key, want: BTreeMap<String, Vec<u8>>) {
    if c.registered.get(k) == Some(&want) {
        return;
    }
    let dir = format!("{REGISTRATIONS}/{}/{}", k.0, k.1);
    match kv::sync_dir(registry, &dir, &want, USER).await {
        Ok(()) if want.is_empty() => {
            c.registered.remove(k);
        }
        Ok(()) => {
            c.registered.insert(k.clone(), want);
        }
        Err(e) => tracing::debug!(error = %e, "cannot register a Service's pods"),
    }
}

async fn reconcile(registry: &Registry, c: &mut Cache, k: &Key) {
    let Some(ep_kind) = berth_api::kinds::resolve("endpoints") else {
        return;
    };
    let Some(svc) = c.services.get(k) else {
        // The Service is gone: so are its slices, Endpoints and registrations.
        if c.registered.contains_key(k) {
            register(registry, c, k, BTreeMap::new()).await;
        }
        sync_slices(registry, c, k, &[]).await;
        if c.written.remove(k).is_some() {
            match registry
                .delete(ep_kind, Some(&k.0), &k.1, &DeleteOptions::default(), USER)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == 404 => {}
                Err(e) => tracing::debug!(error = %e, "cannot delete Endpoints"),
            }
        }
        return;
    };
    let selector = svc
        .get("spec")
        .and_then(|s| s.get("selector"))
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    let Some(selector) = selector else {
        return; // No selector: the user's Endpoints.
    };
    let Ok(sel) = LabelSelector::from_object(&json!({"matchLabels": selector})) else {
        return;
    };
    let pods: Vec<&Object> = c
        .pods
        .get(&k.0)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|p| sel.matches(&p.labels()))
        .collect();
    let labels = svc
        .metadata()
        .and_then(|m| m.get("labels"))
        .cloned()
        .unwrap_or(json!({}));
    let want = json!({"labels": labels, "subsets": subsets(svc, &pods)});
    let regs = registrations(k, &want["subsets"], &pods);
    register(registry, c, k, regs).await;
    if c.written.get(k) == Some(&want) {
        // After a restart the slices are not known yet: they are made sure of once.
        if !c.slices.contains_key(k) {
            let slices = slices_of(k, &want);
            sync_slices(registry, c, k, &slices).await;
        }
        return;
    }
    let obj = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": k.1, "namespace": k.0, "labels": want["labels"]},
        "subsets": want["subsets"],
    });
    let Some(obj) = Object::from_value(obj) else {
        return;
    };
    let r = put(registry, ep_kind, &k.0, &k.1, obj).await;
    match r {
        Ok(_) => {
            let slices = slices_of(k, &want);
            c.written.insert(k.clone(), want);
            sync_slices(registry, c, k, &slices).await;
        }
        Err(e) => tracing::debug!(error = %e, "cannot write Endpoints"),
    }
}

/// The EndpointSlices (`discovery.k8s.io/v1`) of a Service's Endpoints content: one per
/// subset, named after the Service (`SVC`, `SVC-1`, ...), labelled
/// `kubernetes.io/service-name` as consumers find them.
fn slices_of(k: &Key, want: &Value) -> Vec<Value> {
    let conditions = |ready: bool| json!({"ready": ready, "serving": ready, "terminating": false});
    want["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, sub)| {
            let mut endpoints = Vec::new();
            for (list, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                for a in sub[list].as_array().into_iter().flatten() {
                    let mut e = json!({"addresses": [a["ip"]], "conditions": conditions(ready), "targetRef": a["targetRef"]});
                    if let Some(n) = a.get("nodeName") {
                        e["nodeName"] = n.clone();
                    }
                    endpoints.push(e);
                }
            }
            let name = if i == 0 { k.1.clone() } else { format!("{}-{i}", k.1) };
            let mut labels = want["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels["kubernetes.io/service-name"] = json!(k.1);
            labels["endpointslice.kubernetes.io/managed-by"] = json!("berth");
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": k.0, "labels": labels},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": sub["ports"],
            })
        })
        .collect()
}

/// Writes an object whether or not it exists yet (replacing it when it does).
async fn put(
    registry: &Registry,
    kind: &berth_api::ResourceKind,
    ns: &str,
    name: &str,
    obj: Object,
) -> berth_apiserver::error::ApiResult<Object> {
    match registry
        .update(kind, Some(ns), name, obj.clone(), USER, "update", false)
        .await
    {
        Err(e) if e.code() == 404 => match registry
            .create(kind, Some(ns), obj.clone(), USER, false)
            .await
        {
            // Made meanwhile by another writer: replace that.
            Err(e) if e.code() == 409 => {
                registry
                    .update(kind, Some(ns), name, obj, USER, "update", false)
                    .await
            }
            r => r,
        },
        r => r,
    }
}

/// Writes the slices that changed and deletes the ones no longer wanted.
async fn sync_slices(registry: &Registry, c: &mut Cache, k: &Key, want: &[Value]) {
    let Some(kind) = berth_api::kinds::resolve("endpointslices") else {
        return;
    };
    let had = c.slices.remove(k).unwrap_or_default();
    let name = |v: &Value| v["metadata"]["name"].as_str().unwrap_or("").to_string();
    for old in had
        .iter()
        .filter(|o| !want.iter().any(|w| name(w) == name(o)))
    {
        let _ = registry
            .delete(
                kind,
                Some(&k.0),
                &name(old),
                &DeleteOptions::default(),
                USER,
            )
            .await;
    }
    for w in want {
        if had.contains(w) {
            continue;
        }
        let Some(obj) = Object::from_value(w.clone()) else {
            continue;
        };
        let r = put(registry, kind, &k.0, &name(w), obj).await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "cannot write an EndpointSlice");
        }
    }
    if !want.is_empty() {
        c.slices.insert(k.clone(), want.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Object {
        Object::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    #[test]
    fn ready_pods_are_addresses_and_named_ports_resolve_per_pod() {
        let svc = Object::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .unwrap();
        let a = pod("a", "10.42.0.12", true, "http", 8080);
        let b = pod("b", "10.42.0.3", true, "http", 8080);
        let c = pod("c", "10.42.0.4", false, "http", 8080);
        let d = pod("d", "10.42.0.5", true, "http", 9090);
        let e = pod("e", "10.42.0.6", true, "other", 1);
        let s = subsets(&svc, &[&a, &b, &c, &d, &e]);
        let s = s.as_array().unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        let on_8080 = s.iter().find(|x| x["ports"][0]["port"] == 8080).unwrap();
        let ips: Vec<&str> = on_8080["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect();
        assert_eq!(
            ips,
            ["10.42.0.3", "10.42.0.12"],
            "sorted as addresses, not strings"
        );
        assert_eq!(on_8080["notReadyAddresses"][0]["ip"], "10.42.0.4");
        assert_eq!(on_8080["addresses"][0]["targetRef"]["name"], "b");
        assert_eq!(on_8080["ports"][0]["name"], "http");
        let on_9090 = s.iter().find(|x| x["ports"][0]["port"] == 9090).unwrap();
        assert_eq!(on_9090["addresses"][0]["ip"], "10.42.0.5");
    }
}

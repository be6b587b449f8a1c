//! The agent's view of the cluster's Services and Endpoints, kept by one informer watcher
//! (list+watch) of each and shared by everything on the node that routes by them (cluster DNS, the service proxy).
//!
//! Invariant: readers see whole objects (one lock per change); every change bumps a counter
//! that followers wait on, so they re-read the view rather than track events themselves.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use berth_client::informer::{self, Event, Informers};
use serde_json::Value;
use tokio::sync::watch;

/// A Service or Endpoints by (namespace, name), lowercase.
pub(crate) type Key = (String, String);

pub(crate) fn key(o: &Value) -> Key {
    (
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_lowercase(),
        o["metadata"]["name"].as_str().unwrap_or("").to_lowercase(),
    )
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServicePort {
    /// Lowercase; empty for the single unnamed port.
    pub name: String,
    /// Lowercase: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Service {
    /// None for a headless Service.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP`, for this long.
    pub affinity: Option<Duration>,
}

/// One subset of an Endpoints object: its ready addresses and their ports.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Subset {
    pub ready: Vec<Ipv4Addr>,
    /// (name, protocol, port), lowercase as in [`ServicePort`].
    pub ports: Vec<(String, String, u16)>,
}

/// A Service port an Ingress names: by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortRef {
    Number(u16),
    Name(String),
}

/// Where an Ingress sends a request: a Service (in the Ingress's namespace) and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IngressBackend {
    pub service: Key,
    pub port: PortRef,
}

/// One path of one Ingress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IngressPath {
    /// Lowercase; None for a rule without a host (any host). `*.example.com` for wildcards.
    pub host: Option<String>,
    pub path: String,
    pub exact: bool,
    pub backend: IngressBackend,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ingress {
    pub paths: Vec<IngressPath>,
    pub default: Option<IngressBackend>,
}

/// A ready pod that names virtual hosts (`VIRTUAL_HOST`, the docker-gen convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VirtualHostPod {
    pub hosts: Vec<String>,
    pub addr: SocketAddr,
}

/// What the node knows of Services and their endpoints, Ingresses, and virtual-host pods.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub(crate) services: HashMap<Key, Service>,
    pub(crate) endpoints: HashMap<Key, Vec<Subset>>,
    pub(crate) ingresses: HashMap<Key, Ingress>,
    pub(crate) vhosts: HashMap<Key, VirtualHostPod>,
}

fn ingress_backend(ns: &str, b: &Value) -> Option<IngressBackend> {
    let svc = &b["service"];
    let name = svc["name"].as_str()?.to_lowercase();
    let port = match (svc["port"]["number"].as_u64(), svc["port"]["name"].as_str()) {
        (Some(n), _) => PortRef::Number(u16::try_from(n).ok()?),
        (None, Some(n)) => PortRef::Name(n.to_lowercase()),
        _ => return None,
    };
    Some(IngressBackend {
        service: (ns.to_lowercase(), name),
        port,
    })
}

/// The virtual-host entry of a pod: when it is ready, has an address and names hosts.
pub(crate) fn virtual_host_pod(p: &Value) -> Option<VirtualHostPod> {
    if !berth_api::object::condition_true(p, "Ready")
        || !p["metadata"]["deletionTimestamp"].is_null()
    {
        return None;
    }
    let ip: Ipv4Addr = p["status"]["podIP"].as_str()?.parse().ok()?;
    let containers = p["spec"]["containers"].as_array()?;
    let env = |name: &str| {
        containers.iter().find_map(|c| {
            c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"]
                .as_str()
                .map(String::from)
        })
    };
    let hosts: Vec<String> = env("VIRTUAL_HOST")?
        .split(',')
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return None;
    }
    let port = env("VIRTUAL_PORT")
        .and_then(|p| p.parse().ok())
        .or_else(|| {
            containers
                .iter()
                .find_map(|c| c["ports"][0]["containerPort"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
        })
        .unwrap_or(80);
    Some(VirtualHostPod {
        hosts,
        addr: SocketAddr::from((ip, port)),
    })
}

fn lower(v: &Value, default: &str) -> String {
    v.as_str().unwrap_or(default).to_lowercase()
}

impl Catalog {
    pub(crate) fn put_service(&mut self, o: &Value) {
        let spec = &o["spec"];
        if spec["type"] == "ExternalName" {
            self.services.remove(&key(o));
            return;
        }
        let affinity = (spec["sessionAffinity"] == "ClientIP").then(|| {
            Duration::from_secs(berth_api::validate::seconds_of(
                Some(&spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]),
                10800,
            ))
        });
        let svc = Service {
            cluster_ip: spec["clusterIP"].as_str().and_then(|ip| ip.parse().ok()),
            ports: spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(ServicePort {
                        name: lower(&p["name"], ""),
                        protocol: lower(&p["protocol"], "TCP"),
                        port: u16::try_from(p["port"].as_u64()?).ok()?,
                        node_port: p["nodePort"]
                            .as_u64()
                            .and_then(|n| u16::try_from(n).ok())
                            .filter(|n| *n != 0),
                    })
                })
                .collect(),
            affinity,
        };
        self.services.insert(key(o), svc);
    }

    pub(crate) fn put_endpoints(&mut self, o: &Value) {
        let subsets = o["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Subset {
                ready: s["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["ip"].as_str()?.parse().ok())
                    .collect(),
                ports: s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            lower(&p["name"], ""),
                            lower(&p["protocol"], "TCP"),
                            u16::try_from(p["port"].as_u64()?).ok()?,
                        ))
                    })
                    .collect(),
            })
            .collect();
        self.endpoints.insert(key(o), subsets);
    }

    pub(crate) fn put_ingress(&mut self, o: &Value) {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let mut ing = Ingress {
            default: ingress_backend(ns, &o["spec"]["defaultBackend"]),
            ..Default::default()
        };
        for r in o["spec"]["rules"].as_array().into_iter().flatten() {
            let host = r["host"]
                .as_str()
                .filter(|h| !h.is_empty())
                .map(str::to_lowercase);
            for p in r["http"]["paths"].as_array().into_iter().flatten() {
                let Some(backend) = ingress_backend(ns, &p["backend"]) else {
                    continue;
                };
                ing.paths.push(IngressPath {
                    host: host.clone(),
                    path: p["path"].as_str().unwrap_or("/").to_string(),
                    exact: p["pathType"] == "Exact",
                    backend,
                });
            }
        }
        self.ingresses.insert(key(o), ing);
    }

    /// Where a Service port (by number or name) sends traffic.
    pub(crate) fn service_backends(&self, k: &Key, port: &PortRef) -> Vec<SocketAddr> {
        let Some(svc) = self.services.get(k) else {
            return Vec::new();
        };
        let sp = svc.ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(n) => p.name == *n,
        });
        sp.map(|sp| self.backends(k, sp)).unwrap_or_default()
    }

    /// The addresses of a Service's ready endpoints, sorted, each once.
    pub(crate) fn ready_ips(&self, k: &Key) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = self
            .endpoints
            .get(k)
            .into_iter()
            .flatten()
            .flat_map(|s| s.ready.iter().copied())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Where a Service port's traffic goes: each ready endpoint at the port of the same name
    /// and protocol, sorted.
    pub(crate) fn backends(&self, k: &Key, port: &ServicePort) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .endpoints
            .get(k)
            .into_iter()
            .flatten()
            .flat_map(|s| {
                let p = s
                    .ports
                    .iter()
                    .find(|(n, pr, _)| *n == port.name && *pr == port.protocol)
                    .map(|(_, _, p)| *p);
                s.ready
                    .iter()
                    .filter_map(move |ip| Some(SocketAddr::from((*ip, p?))))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The catalog and its change counter.
#[derive(Debug)]
pub struct Shared {
    catalog: RwLock<Catalog>,
    changed: watch::Sender<u64>,
}

impl Shared {
    /// An empty catalog, for [`follow`] to fill.
    pub fn new() -> Arc<Shared> {
        Shared::holding(Catalog::default())
    }

    /// A catalog holding `catalog` from the start (tests' fixed zones).
    pub(crate) fn holding(catalog: Catalog) -> Arc<Shared> {
        Arc::new(Shared {
            catalog: RwLock::new(catalog),
            changed: watch::channel(0).0,
        })
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, f: impl FnOnce(&mut Catalog)) {
        f(&mut self.catalog.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes on every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Follows every object of `plural` through the process's shared informer of that kind
/// until `stop`, on a task of its own.
fn spawn_follow(
    informers: &Informers,
    plural: &str,
    stop: &watch::Receiver<bool>,
    on: impl FnMut(&Event) + Send + 'static,
) {
    let Some(kind) = berth_api::kinds::resolve(plural) else {
        return;
    };
    let events = informers.store(kind).events();
    tokio::spawn(informer::each(events, stop.clone(), on));
}

/// Keeps `shared` in step with Services and Endpoints (and, for the ingress, Ingresses and
/// virtual-host pods), until `stop`.
pub fn follow(informers: &Informers, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    {
        let shared = shared.clone();
        spawn_follow(informers, "ingresses", &stop, move |ev| {
            shared.write(|c| match ev {
                Event::Listed(items) => {
                    c.ingresses.clear();
                    for o in items {
                        c.put_ingress(o);
                    }
                }
                Event::Applied(o) => c.put_ingress(o),
                Event::Deleted(o) => {
                    c.ingresses.remove(&key(o));
                }
            })
        });
    }
    {
        // Pods change often; only a change of a pod's virtual-host entry is news.
        let shared = shared.clone();
        spawn_follow(informers, "pods", &stop, move |ev| {
            let (p, want) = match ev {
                Event::Listed(items) => {
                    let vhosts: HashMap<Key, VirtualHostPod> = items
                        .iter()
                        .filter_map(|p| Some((key(p), virtual_host_pod(p)?)))
                        .collect();
                    if shared.read().vhosts != vhosts {
                        shared.write(|c| c.vhosts = vhosts);
                    }
                    return;
                }
                Event::Applied(p) => (p, virtual_host_pod(p)),
                Event::Deleted(p) => (p, None),
            };
            let k = key(p);
            if shared.read().vhosts.get(&k) != want.as_ref() {
                shared.write(|c| match want {
                    Some(v) => {
                        c.vhosts.insert(k, v);
                    }
                    None => {
                        c.vhosts.remove(&k);
                    }
                });
            }
        });
    }
    for services in [true, false] {
        let shared = shared.clone();
        let plural = if services { "services" } else { "endpoints" };
        spawn_follow(informers, plural, &stop, move |ev| {
            shared.write(|c| match (ev, services) {
                (Event::Listed(items), _) => {
                    if services {
                        c.services.clear();
                    } else {
                        c.endpoints.clear();
                    }
                    for o in items {
                        if services {
                            c.put_service(o)
                        } else {
                            c.put_endpoints(o)
                        }
                    }
                }
                (Event::Deleted(o), true) => {
                    c.services.remove(&key(o));
                }
                (Event::Deleted(o), false) => {
                    c.endpoints.remove(&key(o));
                }
                (Event::Applied(o), true) => c.put_service(o),
                (Event::Applied(o), false) => c.put_endpoints(o),
            })
        });
    }
}

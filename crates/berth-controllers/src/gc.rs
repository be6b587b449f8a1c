//! The garbage collector and the namespace controller: deletes dependents whose owners are
//! gone (background cascading deletion) and empties namespaces being deleted.
//!
//! Invariants: it reads a cache fed by the informer's watch (no polling); it is idempotent, so a
//! restart re-lists and finishes any cascade a crash interrupted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use berth_api::ResourceKind;
use berth_api::object::Object;
use berth_apiserver::registry::{DeleteOptions, ListOptions, Registry};
use berth_store::EventType;
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::Error;

const USER: &str = "system:garbage-collector";

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ref {
    kind: &'static ResourceKind,
    ns: Option<String>,
    name: String,
}

impl Ref {
    fn of(o: &Head) -> Option<Ref> {
        Some(Ref {
            kind: berth_api::kinds::by_api_version_kind(&o.api_version, &o.kind)?,
            ns: o.metadata.namespace.clone().filter(|n| !n.is_empty()),
            name: o.metadata.name.clone(),
        })
    }
}

/// What the collector reads of an object: who it is and who owns it. Everything else in the
/// stored JSON is skipped without being built (the collector sees every write of the
/// cluster, so a full decode of each would cost more than all its own work).
#[derive(Debug, Default, serde::Deserialize)]
struct Head {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Debug, Default, serde::Deserialize)]
struct HeadMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: String,
    #[serde(rename = "ownerReferences", default)]
    owner_references: Vec<OwnerUid>,
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct OwnerUid {
    #[serde(default)]
    uid: String,
}

impl Head {
    fn of(o: &Object) -> Head {
        Head {
            api_version: o.api_version().to_string(),
            kind: o.kind().to_string(),
            metadata: HeadMeta {
                name: o.name().to_string(),
                namespace: o.namespace().map(String::from),
                uid: o.uid().to_string(),
                owner_references: o
                    .owner_references()
                    .into_iter()
                    .map(|r| OwnerUid { uid: r.uid })
                    .collect(),
                deletion_timestamp: o.deletion_timestamp().map(String::from),
            },
        }
    }

    fn decode(value: &[u8]) -> Option<Head> {
        serde_json::from_slice(value).ok()
    }

    fn being_deleted(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn owners(&self) -> impl Iterator<Item = &str> {
        self.metadata
            .owner_references
            .iter()
            .map(|o| o.uid.as_str())
    }
}

#[derive(Default)]
struct Graph {
    /// uid -> object, for every live object.
    live: HashMap<String, Ref>,
    /// owner uid -> dependents' uids.
    dependents: HashMap<String, HashSet<String>>,
    /// dependent uid -> its owners' uids.
    owners: HashMap<String, Vec<String>>,
}

impl Graph {
    fn upsert(&mut self, o: &Head) {
        let Some(r) = Ref::of(o) else { return };
        let uid = o.metadata.uid.clone();
        self.remove(&uid);
        let owners: Vec<String> = o.owners().map(String::from).collect();
        for ow in &owners {
            self.dependents
                .entry(ow.clone())
                .or_default()
                .insert(uid.clone());
        }
        if !owners.is_empty() {
            self.owners.insert(uid.clone(), owners);
        }
        self.live.insert(uid, r);
    }

    fn remove(&mut self, uid: &str) {
        self.live.remove(uid);
        if let Some(owners) = self.owners.remove(uid) {
            for ow in owners {
                if let Some(d) = self.dependents.get_mut(&ow) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&ow);
                    }
                }
            }
        }
    }

    /// Dependents of `uid` none of whose owners is alive any more.
    fn orphans_of(&self, uid: &str) -> Vec<Ref> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|d| {
                self.owners
                    .get(*d)
                    .is_some_and(|ows| ows.iter().all(|o| !self.live.contains_key(o)))
            })
            .filter_map(|d| self.live.get(d).cloned())
            .collect()
    }

    fn all_orphans(&self) -> Vec<Ref> {
        self.owners
            .iter()
            .filter(|(_, ows)| ows.iter().all(|o| !self.live.contains_key(o)))
            .filter_map(|(d, _)| self.live.get(d).cloned())
            .collect()
    }
}

async fn delete(registry: &Registry, r: &Ref) {
    let opts = DeleteOptions::default();
    match registry
        .delete(r.kind, r.ns.as_deref(), &r.name, &opts, USER)
        .await
    {
        Ok(_) => tracing::debug!(kind = r.kind.kind, name = %r.name, "garbage-collected"),
        Err(e) if e.code() == 404 => {}
        Err(e) => {
            tracing::warn!(kind = r.kind.kind, name = %r.name, error = %e, "garbage collection failed")
        }
    }
}

/// Deletes everything in a terminating namespace; deletes the namespace when it is empty.
async fn finish_namespace(registry: &Registry, ns: &str) {
    let mut left = 0;
    for kind in berth_api::KINDS.iter().filter(|k| k.namespaced) {
        let Ok(list) = registry.list(kind, Some(ns), &ListOptions::default()) else {
            continue;
        };
        for o in list.items {
            left += 1;
            if o.deletion_timestamp().is_none() {
                let r = Ref {
                    kind,
                    ns: Some(ns.to_string()),
                    name: o.name().to_string(),
                };
                delete(registry, &r).await;
            }
        }
    }
    if left > 0 {
        // Deleting what is left brings events that call this again.
        return;
    }
    let Some(nsk) = berth_api::kinds::resolve("namespaces") else {
        return;
    };
    if let Ok(obj) = registry.get(nsk, None, ns)
        && obj.deletion_timestamp().is_some()
    {
        let key = nsk.key(None, ns).into_bytes();
        let rev = obj.resource_version().parse().unwrap_or(0);
        let _ = registry
            .delete_if_unchanged(nsk, key, rev, &obj, "system:namespace-controller")
            .await;
    }
}

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, informer: Arc<Informer>, stop: watch::Receiver<bool>) {
    crate::runtime::supervise_informed("garbage collector", registry, informer, stop, run_once)
        .await
}

async fn run_once(registry: &Registry, informer: &Informer) -> Result<(), Error> {
    let (all, mut changes) = informer.list_and_watch()?;
    let mut g = Graph::default();
    let mut terminating: HashSet<String> = HashSet::new();
    for o in &all {
        g.upsert(&Head::of(o));
        if o.kind() == "Namespace" && o.deletion_timestamp().is_some() {
            terminating.insert(o.name().to_string());
        }
    }
    for r in g.all_orphans() {
        delete(registry, &r).await;
    }
    for ns in terminating.clone() {
        finish_namespace(registry, &ns).await;
    }
    loop {
        let Some(batch) = changes.next().await? else {
            return Ok(());
        };
        for change in batch.changes() {
            let ev = change.event;
            // The head only, from the raw bytes: no full decode of every write for this.
            let Some(obj) = Head::decode(&ev.kv.value) else {
                continue;
            };
            let name = obj.metadata.name.as_str();
            match ev.typ {
                EventType::Put => {
                    g.upsert(&obj);
                    if obj.kind == "Namespace"
                        && obj.being_deleted()
                        && terminating.insert(name.to_string())
                    {
                        finish_namespace(registry, name).await;
                    }
                    // An object whose owners are all gone already (created late) goes too.
                    if obj.owners().next().is_some()
                        && obj.owners().all(|o| !g.live.contains_key(o))
                        && let Some(r) = Ref::of(&obj)
                    {
                        delete(registry, &r).await;
                    }
                }
                EventType::Delete => {
                    let uid = obj.metadata.uid.clone();
                    g.remove(&uid);
                    for r in g.orphans_of(&uid) {
                        delete(registry, &r).await;
                    }
                    if obj.kind == "Namespace" {
                        terminating.remove(name);
                    } else if let Some(ns) = obj.metadata.namespace.as_deref()
                        && terminating.contains(ns)
                    {
                        finish_namespace(registry, ns).await;
                    }
                }
            }
        }
    }
}

//! The garbage collector and the namespace controller: deletes dependents whose owners are
//! gone (background cascading deletion) and empties namespaces being deleted.
//!
//! Invariants: it reads a cache fed by one store watch (no polling); it is idempotent, so a
//! restart re-lists and finishes any cascade a crash interrupted.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_api::ResourceKind;
use berth_api::object::Object;
use berth_store::EventType;
use tokio::sync::watch;

use crate::registry::{DeleteOptions, ListOptions, Registry, decode};

const USER: &str = "system:garbage-collector";

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ref {
    kind: &'static ResourceKind,
    ns: Option<String>,
    name: String,
}

impl Ref {
    fn of(o: &Object) -> Option<Ref> {
        Some(Ref {
            kind: o.resource_kind()?,
            ns: o.namespace().map(str::to_string),
            name: o.name().to_string(),
        })
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
    fn upsert(&mut self, o: &Object) {
        let Some(r) = Ref::of(o) else { return };
        let uid = o.uid().to_string();
        self.remove(&uid);
        let owners: Vec<String> = o.owner_references().into_iter().map(|r| r.uid).collect();
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
            tracing::warn!(kind = r.kind.kind, name = %r.name, error = %e.0.message, "garbage collection failed")
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
            if o.deletion_timestamp().is_none()
                && let Some(r) = Ref::of(&o)
            {
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
            .delete_if_unchanged(nsk, key, rev, ns, "system:namespace-controller")
            .await;
    }
}

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, stop: watch::Receiver<bool>) {
    supervise("garbage collector", stop, || run_once(&registry)).await
}

/// Runs a controller's loop until `stop` turns true, starting it again (after a short pause,
/// from a fresh list) whenever it ends or fails.
pub(crate) async fn supervise<F, Fut>(what: &str, mut stop: watch::Receiver<bool>, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    loop {
        tokio::select! {
            r = f() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "{what} restarts");
                }
            }
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_once(registry: &Registry) -> Result<(), String> {
    let (all, rev) = registry.all_objects(None).map_err(|e| e.0.message)?;
    let mut g = Graph::default();
    let mut terminating: HashSet<String> = HashSet::new();
    for o in &all {
        g.upsert(o);
        if o.kind() == "Namespace" && o.deletion_timestamp().is_some() {
            terminating.insert(o.name().to_string());
        }
    }
    let mut watcher = registry
        .store
        .watch(b"/registry/", rev + 1)
        .map_err(|e| e.to_string())?;
    for r in g.all_orphans() {
        delete(registry, &r).await;
    }
    for ns in terminating.clone() {
        finish_namespace(registry, &ns).await;
    }
    loop {
        let Some(batch) = watcher.next().await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        for ev in batch.events.iter() {
            let Ok(obj) = decode(&ev.kv) else { continue };
            match ev.typ {
                EventType::Put => {
                    g.upsert(&obj);
                    if obj.kind() == "Namespace"
                        && obj.deletion_timestamp().is_some()
                        && terminating.insert(obj.name().to_string())
                    {
                        finish_namespace(registry, obj.name()).await;
                    }
                    // An object whose owners are all gone already (created late) goes too.
                    let owners = obj.owner_references();
                    if !owners.is_empty()
                        && owners.iter().all(|o| !g.live.contains_key(&o.uid))
                        && let Some(r) = Ref::of(&obj)
                    {
                        delete(registry, &r).await;
                    }
                }
                EventType::Delete => {
                    let uid = obj.uid().to_string();
                    g.remove(&uid);
                    for r in g.orphans_of(&uid) {
                        delete(registry, &r).await;
                    }
                    if obj.kind() == "Namespace" {
                        terminating.remove(obj.name());
                    } else if let Some(ns) = obj.namespace()
                        && terminating.contains(ns)
                    {
                        finish_namespace(registry, ns).await;
                    }
                }
            }
        }
    }
}

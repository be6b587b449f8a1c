//! The service account controller: every namespace has a ServiceAccount named `default`, as
//! Kubernetes' does, made when the namespace is and again if it is deleted while the
//! namespace lives (a namespace being deleted gets none: its contents are going).
//!
//! Invariant: it only ever creates `default` ServiceAccounts, through the registry; one that
//! exists (whoever made it, whatever it holds) is left as it is.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_api::object::Object;
use berth_apiserver::registry::Registry;
use berth_store::EventType;
use serde_json::json;
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::Error;

const USER: &str = "system:controller:service-account-controller";

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, informer: Arc<Informer>, stop: watch::Receiver<bool>) {
    crate::runtime::supervise_informed(
        "service account controller",
        registry,
        informer,
        stop,
        run_once,
    )
    .await
}

fn active(ns: &Object) -> bool {
    ns.deletion_timestamp().is_none()
}

async fn run_once(registry: &Registry, informer: &Informer) -> Result<(), Error> {
    let (all, mut changes) = informer.list_and_watch()?;
    let namespaces = crate::informer::key_prefix("namespaces");
    let accounts = crate::informer::key_prefix("serviceaccounts");
    // Namespaces that live, and those of them that have their default account.
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut have: BTreeSet<String> = BTreeSet::new();
    for o in &all {
        match o.kind() {
            "Namespace" if active(o) => {
                live.insert(o.name().to_string());
            }
            "ServiceAccount" if o.name() == DEFAULT => {
                have.insert(o.namespace().unwrap_or("").to_string());
            }
            _ => {}
        }
    }
    for ns in live.difference(&have) {
        ensure(registry, ns).await;
    }
    loop {
        let Some(batch) = changes.next().await? else {
            return Ok(());
        };
        for change in batch.changes() {
            let key = &change.event.kv.key;
            let is_ns = key.starts_with(&namespaces);
            if !is_ns && !key.starts_with(&accounts) {
                continue;
            }
            let Some(o) = change.object() else {
                continue;
            };
            let put = change.event.typ == EventType::Put;
            if is_ns {
                if put && active(o) {
                    if live.insert(o.name().to_string()) && !have.contains(o.name()) {
                        ensure(registry, o.name()).await;
                    }
                } else {
                    live.remove(o.name());
                }
            } else if o.name() == DEFAULT {
                let ns = o.namespace().unwrap_or("").to_string();
                if put {
                    have.insert(ns);
                } else {
                    have.remove(&ns);
                    if live.contains(&ns) {
                        ensure(registry, &ns).await;
                    }
                }
            }
        }
    }
}

/// Creates `namespace`'s default ServiceAccount (one that exists already is fine).
async fn ensure(registry: &Registry, namespace: &str) {
    let Some(kind) = berth_api::kinds::resolve("serviceaccounts") else {
        return;
    };
    let Some(sa) = Object::from_value(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": DEFAULT, "namespace": namespace}}))
    else {
        return;
    };
    match registry
        .create(kind, Some(namespace), sa, USER, false)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == 409 => {}
        // A namespace going away refuses new contents: nothing to make.
        Err(e) if e.code() == 403 => {}
        Err(e) => tracing::warn!(namespace, error = %e, "cannot create the default ServiceAccount"),
    }
}

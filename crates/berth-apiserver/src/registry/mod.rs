//! The registry: create, read, update, patch and delete of objects in the store, with
//! Kubernetes' semantics (resource versions, generations, status subresources, finalizers,
//! owner references). HTTP-free, so controllers inside the server use it directly.
//!
//! Invariants: an object's `resourceVersion` is the store's mod revision of its key and is
//! never stored in the value; every write is a store transaction that compares the mod revision
//! it read, so concurrent writers get 409 Conflict rather than lost updates.
//!
//! Laid out as kube-apiserver's registry is: the generic store, and each kind's strategy
//! beside it. Every file adds an `impl Registry` block; helpers a sibling needs are
//! `pub(super)`.
//!
//! Every object value is written and read through the registry's `encryption::Transformer`
//! (`encode`, `decode_stored`, and `ObjectWatcher` for watches), so no reader sees ciphertext
//! and the store holds no plaintext of the resources the encryption config names.
//!
//! - `generic.rs`: the kind-independent store: keys, encode/decode, get, create, update,
//!   update_status, patch, delete (with `DeleteOptions`), the compare-and-write every write
//!   goes through.
//! - `list.rs`: list with selectors, limit and continue tokens at one revision
//!   (`ListOptions`, `ListResult`), every object (`all_objects`), and the `XList` body.
//! - `services.rs`: Services' cluster IP and node port allocation (with `crate::ranges`).
//! - `pods.rs`: the `binding` subresource (one pod, or a batch in one transaction) and a
//!   pod's deletion grace period.
//! - `cascade.rs`: what a delete does to dependents (`Propagation`: orphan, foreground) and
//!   to a namespace (marked Terminating for the namespace controller).
//! - `namespaces.rs`: the namespace a request writes to, refusing writes into a terminating
//!   one, and the namespaces every cluster starts with.
//! - `scale.rs`: the `scale` subresource (`autoscaling/v1` `Scale`).

use std::sync::Arc;

use berth_api::cidr::Ipv4Net;
use berth_store::{KeyValue, Store, StoreError, WatchBatch, Watcher};

use crate::encryption::{self, Transformer};

mod cascade;
mod csr;
mod generic;
mod list;
mod namespaces;
mod pods;
mod rbac;
mod scale;
mod services;

pub(crate) use cascade::Propagation;
pub use csr::requested_subject;
pub use generic::{DeleteOptions, decode};
pub(crate) use list::list_body;
pub use list::{ListOptions, ListResult};

/// Where every kind's objects live in the store (`ResourceKind::key_prefix` is under it).
const OBJECTS_PREFIX: &[u8] = b"/registry/";

/// A handle on the store that speaks objects.
#[derive(Clone, Debug)]
pub struct Registry {
    /// The store itself is the API server's: other crates read and write through the methods,
    /// so the tree's layout (where objects and keys live) stays this crate's business.
    pub(crate) store: Store,
    /// Where Services' cluster IPs come from (`--service-cidr`; 10.43.0.0/16 by default).
    service_range: Ipv4Net,
    /// Encrypts the values of the resources the encryption config names, and decrypts
    /// whatever is read; identity for everything when there is no config.
    pub(crate) values: Arc<Transformer>,
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry {
            store,
            service_range: Ipv4Net {
                addr: std::net::Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
            values: Arc::default(),
        }
    }

    /// The same, encrypting and decrypting object values with `values`.
    pub fn with_encryption(mut self, values: Arc<Transformer>) -> Self {
        self.values = values;
        self
    }

    /// The same, giving Services cluster IPs from `range`.
    pub(crate) fn with_service_range(mut self, range: Ipv4Net) -> Self {
        self.service_range = range;
        self
    }

    /// The store's revision now: a list read now is at this revision or a later one.
    pub fn revision(&self) -> u64 {
        self.store.current_revision()
    }

    /// Every change to the cluster's objects from revision `start` on, one batch per revision
    /// (the store replays those it still keeps before `start` is reached). Only objects: the
    /// key/value tree's changes are not in it.
    pub fn watch_objects(&self, start: u64) -> Result<ObjectWatcher, StoreError> {
        self.watch_prefix(OBJECTS_PREFIX, start)
    }

    /// Every change under `prefix` from revision `start` on, values decrypted.
    pub(crate) fn watch_prefix(
        &self,
        prefix: &[u8],
        start: u64,
    ) -> Result<ObjectWatcher, StoreError> {
        Ok(ObjectWatcher {
            inner: self.store.watch(prefix, start)?,
            values: self.values.clone(),
        })
    }
}

/// One change to a value [`follow_values`] follows: written (its new value) or deleted (its
/// last).
pub(crate) type ValueChange = (berth_store::EventType, serde_json::Value);

impl Registry {
    /// Every object under `prefix`, as plaintext JSON, and the revision read; what does not
    /// open or parse is left out (logged, naming `what` it is left out of).
    pub(crate) fn values_under(
        &self,
        prefix: &[u8],
        what: &str,
    ) -> Result<(Vec<serde_json::Value>, u64), StoreError> {
        let all = self.store.range(prefix, None, 0)?;
        let values = all
            .kvs
            .iter()
            .filter_map(|kv| match self.values.open(&kv.key, &kv.value) {
                Ok(o) => serde_json::from_slice(&o.value).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "an object is left out of {what}");
                    None
                }
            })
            .collect();
        Ok((values, all.revision))
    }
}

/// Keeps something built from the objects under `prefix` in step with the store until `stop`
/// turns true (or the store closes): `reset` gets every object (at the start, and again
/// whenever the watch breaks or falls behind), `apply` every later revision's changes, in
/// order. What the RBAC policy and the Node authorizer's pod graph are kept by.
pub(crate) async fn follow_values(
    registry: &Registry,
    prefix: &[u8],
    what: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut reset: impl FnMut(Vec<serde_json::Value>),
    mut apply: impl FnMut(Vec<ValueChange>),
) {
    loop {
        let from = match registry.values_under(prefix, what) {
            Ok((values, rev)) => {
                reset(values);
                rev + 1
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read {what}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let Ok(mut watch) = registry.watch_prefix(prefix, from) else {
            continue;
        };
        loop {
            let batch = tokio::select! {
                b = watch.next() => b,
                _ = stop.changed() => return,
            };
            let batch = match batch {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "the watch of {what} broke; reading it again");
                    break;
                }
            };
            apply(
                batch
                    .events
                    .iter()
                    .filter_map(|ev| Some((ev.typ, serde_json::from_slice(&ev.kv.value).ok()?)))
                    .collect(),
            );
        }
    }
}

/// A store watch whose values are plaintext: encrypted ones are opened as they arrive (a
/// revision with none is passed on as the store made it). A value that does not open is
/// logged, naming the object and the key, and handed on empty, so every reader skips it as
/// it skips any value that is not an object, rather than stop the watch for everything else.
pub struct ObjectWatcher {
    inner: Watcher,
    values: Arc<Transformer>,
}

impl std::fmt::Debug for ObjectWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectWatcher")
    }
}

impl ObjectWatcher {
    /// The next revision's changes, as `Watcher::next`.
    pub async fn next(&mut self) -> Result<Option<Arc<WatchBatch>>, StoreError> {
        let Some(batch) = self.inner.next().await? else {
            return Ok(None);
        };
        let sealed = |kv: &KeyValue| encryption::is_sealed(&kv.value);
        if !batch
            .events
            .iter()
            .any(|e| sealed(&e.kv) || e.prev.as_ref().is_some_and(sealed))
        {
            return Ok(Some(batch));
        }
        let mut opened = (*batch).clone();
        for e in &mut opened.events {
            self.open(&mut e.kv);
            if let Some(prev) = &mut e.prev {
                self.open(prev);
            }
        }
        Ok(Some(Arc::new(opened)))
    }

    /// As `Watcher::progress`.
    pub fn progress(&self) -> Option<u64> {
        self.inner.progress()
    }

    fn open(&self, kv: &mut KeyValue) {
        if !encryption::is_sealed(&kv.value) {
            return;
        }
        kv.value = match self.values.open(&kv.key, &kv.value) {
            Ok(o) => o.value.into_owned(),
            Err(e) => {
                tracing::warn!(error = %e, revision = kv.mod_revision, "a watched value does not decrypt; watchers skip it");
                Vec::new()
            }
        };
    }
}

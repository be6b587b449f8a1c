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

use berth_api::cidr::Ipv4Net;
use berth_store::{Store, StoreError, Watcher};

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
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry {
            store,
            service_range: Ipv4Net {
                addr: std::net::Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
        }
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
    pub fn watch_objects(&self, start: u64) -> Result<Watcher, StoreError> {
        self.store.watch(OBJECTS_PREFIX, start)
    }
}

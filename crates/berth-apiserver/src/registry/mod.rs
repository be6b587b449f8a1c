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
use berth_store::Store;

mod cascade;
mod generic;
mod list;
mod namespaces;
mod pods;
mod scale;
mod services;

pub use cascade::Propagation;
pub use generic::{DeleteOptions, decode};
pub use list::{ListOptions, ListResult, list_body};

/// A handle on the store that speaks objects.
#[derive(Clone, Debug)]
pub struct Registry {
    pub store: Store,
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
    pub fn with_service_range(mut self, range: Ipv4Net) -> Self {
        self.service_range = range;
        self
    }
}

//! Everything that moves service traffic on a node: the service catalog the other parts read,
//! cluster DNS, the L4 service proxy and its io_uring/epoll byte relay, the ingress with its
//! HTTP/1.1 codec, and the pod routes (direct or VXLAN) between nodes. The mesh will live here.
//!
//! API boundary: the node agent starts each part with typed options and a stop signal:
//! [`catalog::follow`] fills one [`catalog::Shared`] catalog from the node's shared informer
//! caches (`berth_client::informer::Informers`), which
//! [`dns::serve`], [`proxy::run`] and [`ingress::run`] read; [`routes::run`] keeps the routes
//! to other nodes' pods. The HTTP/1.1 codec (`h1`) and the relay threads (`relay`) are
//! internal.
//!
//! Architecture invariants:
//! - This crate does not depend on the container runtime (`berth-runtime`, and so not on
//!   libcontainer): it builds and its tests run without it (checked in `.ci/run`). Netlink
//!   requests (cluster IPs on the loopback, routes, VXLAN) go through `berth-netlink`.
//! - It reads the cluster only through `berth-client`: its informer (list, then watch; one
//!   reflector per kind for the whole node), and a get of the node's own Node until the server has given it a pod
//!   range. It writes nothing to the API.
//! - Every part the agent starts ends when its stop signal turns true (the io_uring relay
//!   threads are the process's, started on first use, and stay).

pub mod catalog;
pub mod dns;
mod h1;
pub mod ingress;
pub mod proxy;
mod relay;
pub mod routes;

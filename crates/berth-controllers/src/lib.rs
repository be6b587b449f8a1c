//! berth's controllers: the loops that make the cluster's state follow what its objects ask
//! for, run inside the control plane (`berth server`, `berth up`) beside the API server.
//!
//! - `scheduler`: binds pending pods to nodes (the placement itself is `berth-scheduler`'s
//!   pure function);
//! - `workloads`: ReplicaSets keep their pods, Deployments roll out through ReplicaSets;
//! - `endpoints`: each selecting Service's Endpoints, EndpointSlices and key/value
//!   registrations;
//! - `nodes`: node lifecycle (a silent node's taint, its pods' eviction) and each node's pod
//!   range;
//! - `gc`: the garbage collector and the namespace controller;
//! - `csr`: approves node agents' certificate requests and signs approved ones (node
//!   identities);
//! - `serviceaccounts`: every namespace's `default` ServiceAccount;
//! - `rbac`: ClusterRole aggregation (`admin`, `edit`, `view` from the roles labelled for
//!   them);
//! - `informer`: the one store watch they all follow, each write decoded at most once;
//! - `runtime`: what they share (supervision with back-off, the error a run ends with,
//!   object keys, pod readiness); Events are recorded with `berth_apiserver::events::record`,
//!   each controller naming itself.
//!
//! API boundary: `informer::Informer::{new, run}` (made once per control plane, its `run`
//! spawned beside the controllers) and each controller's `run(registry, [informer,] .., stop)`,
//! which runs until `stop` turns true (restarting its loop after a back-off when it fails or
//! panics); `nodes::Timing` for the command line. `runtime`, the informer's subscriptions and
//! each controller's helpers are the crate's own.
//!
//! Dependency on `berth-apiserver`, deliberate: controllers write through its `Registry`,
//! the very write path HTTP requests take (validation, admission, defaulting, optimistic
//! concurrency, Service ranges, the binding subresource), so a controller can do nothing a
//! client could not; they read by its lists and its watch of every object
//! (`Registry::watch_objects`), never the store under it. They use the registry's public API
//! only (`Registry`, `registry::{DeleteOptions, ListOptions, ListResult, decode}`,
//! `error::{ApiError, ApiResult}`, `events`, `kv::{list_dir, sync_dir}`).
//!
//! Invariants: every controller follows the store through the informer from the revision of
//! its list, seeing each later revision once and in order (only the node lifecycle
//! controller looks every 500 ms, as it compares Lease times with the clock); each is
//! idempotent, so a restart re-lists and finishes what a crash interrupted; no controller
//! reaches into another's file: what two share is in `runtime` or `informer`.

pub mod csr;
pub mod endpoints;
pub mod gc;
pub mod informer;
pub mod nodes;
pub mod rbac;
mod runtime;
pub mod scheduler;
pub mod serviceaccounts;
pub mod workloads;

//! Validation and defaulting of objects, kind by kind, with errors naming each bad field.
//!
//! The entry points are here (`validate_create`, `validate_update` in `update`,
//! `apply_defaults` in `defaults`); `walker` is the error-collecting reader they share, and
//! each kind family has its file: `metadata`, `pod` (with `security`), `workloads`,
//! `service`, `ingress`, `config`, `cluster`, `rbac`.
//!
//! Invariant: `validate_create` and `validate_update` report every error they find, not just
//! the first, and never panic on any JSON input (fuzzed in `tests/fuzz_bodies.rs` of the API
//! server).

mod cluster;
mod config;
mod defaults;
mod ingress;
mod metadata;
mod pod;
mod rbac;
mod security;
mod service;
#[cfg(test)]
mod tests;
mod update;
mod walker;
mod workloads;

use serde_json::Value;

use crate::kinds::ResourceKind;
use crate::object::Object;
use crate::status::FieldError;

pub use defaults::apply_defaults;
pub use rbac::SIGNERS;
pub use security::CAPABILITIES;
pub use update::validate_update;

use walker::V;

/// The largest value of an int32 field, as Kubernetes' types hold it. Every count and every
/// duration in seconds of a manifest is held to it too (Kubernetes keeps a few of those in
/// int64): 68 years, so a deadline computed from one never overflows.
pub const MAX_INT32: i64 = i32::MAX as i64;

/// A duration in seconds read from an object already stored (maybe before this validation
/// held it): a missing, negative or non-integer value gives `default`, and a value above
/// `MAX_INT32` counts as `MAX_INT32`. Controllers and agents read durations through this.
pub fn seconds_of(v: Option<&Value>, default: u64) -> u64 {
    match v.and_then(Value::as_i64) {
        Some(n) if n >= 0 => n.min(MAX_INT32) as u64,
        _ => default,
    }
}

/// Validates an object about to be created.
pub fn validate_create(kind: &ResourceKind, obj: &Object) -> Vec<FieldError> {
    let mut v = V::default();
    metadata::validate_metadata(&mut v, kind, obj);
    validate_spec(&mut v, kind, obj);
    v.errs
}

fn validate_spec(v: &mut V, kind: &ResourceKind, obj: &Object) {
    match kind.kind {
        "Pod" => pod::validate_pod_spec(v, "spec", obj.get("spec"), false),
        "ReplicaSet" => workloads::validate_replica_set(v, obj),
        "Deployment" => workloads::validate_deployment(v, obj),
        "Service" => service::validate_service(v, obj),
        "ConfigMap" => config::validate_config_map(v, obj),
        "Secret" => config::validate_secret(v, obj),
        "Ingress" => ingress::validate_ingress(v, obj),
        "ConfigTemplate" => config::validate_config_template(v, obj),
        "EndpointSlice" => service::validate_endpoint_slice(v, obj),
        "Endpoints" => service::validate_endpoints(v, obj),
        "Event" => cluster::validate_event(v, obj),
        "Lease" => cluster::validate_lease(v, obj),
        "Node" => cluster::validate_node(v, obj),
        "Namespace" => cluster::validate_namespace(v, obj),
        "Role" => rbac::validate_role(v, obj),
        "ClusterRole" => rbac::validate_cluster_role(v, obj),
        "RoleBinding" => rbac::validate_role_binding(v, obj),
        "ClusterRoleBinding" => rbac::validate_cluster_role_binding(v, obj),
        "ServiceAccount" => rbac::validate_service_account(v, obj),
        "CertificateSigningRequest" => rbac::validate_csr(v, obj),
        _ => {}
    }
}

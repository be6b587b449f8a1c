//! The default RBAC policy every cluster starts with, and ClusterRole aggregation.
//!
//! - [`Registry::ensure_default_rbac`] writes Kubernetes' default ClusterRoles and bindings
//!   (`berth_api::rbac::defaults`) when the server starts: a missing one is created; one
//!   that carries `rbac.authorization.kubernetes.io/autoupdate: "true"` gets back any rule
//!   or subject it lost (kube-apiserver's reconciliation: permissions are added, never
//!   taken away, so an operator's additions stay); one whose annotation is not `"true"` is
//!   left as the operator made it.
//! - [`Registry::aggregate_cluster_roles`] writes the rules of every ClusterRole with an
//!   `aggregationRule` (`admin`, `edit`, `view`, and any an operator makes) from the roles its
//!   selectors pick; the server runs it at start and the RBAC controller on every change of
//!   a ClusterRole.

use berth_api::kinds;
use berth_api::object::Object;
use berth_api::rbac::{PolicyRule, defaults};
use serde_json::Value;

use super::{ListOptions, Registry};
use crate::error::{ApiError, ApiResult};

/// Who the server's own RBAC writes are recorded as.
const USER: &str = "system:apiserver";

/// `items` of `new` missing from `old`, appended to `old` (the reconciliation's union).
fn union(old: &Value, new: &Value) -> Value {
    let mut out: Vec<Value> = old.as_array().cloned().unwrap_or_default();
    for v in new.as_array().into_iter().flatten() {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Value::Array(out)
}

impl Registry {
    /// Creates the default ClusterRoles and bindings, and gives back what auto-updated ones
    /// lost (see the module's documentation); then aggregates.
    pub async fn ensure_default_rbac(&self) -> ApiResult<()> {
        let objects = defaults::cluster_roles()
            .into_iter()
            .chain(defaults::cluster_role_bindings());
        for want in objects {
            let want = Object::from_value(want)
                .ok_or_else(|| ApiError::internal("a default RBAC object is not an object"))?;
            let kind = want
                .resource_kind()
                .ok_or_else(|| ApiError::internal("RBAC kinds missing"))?;
            let have = match self.get(kind, None, want.name()) {
                Ok(have) => have,
                Err(e) if e.code() == 404 => {
                    match self.create(kind, None, want, USER, false).await {
                        Ok(_) => {}
                        // Made meanwhile by another server of the cluster.
                        Err(e) if e.code() == 409 => {}
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if have.annotation("rbac.authorization.kubernetes.io/autoupdate") != Some("true") {
                continue;
            }
            let field = if kind.kind == "ClusterRole" {
                "rules"
            } else {
                "subjects"
            };
            // Aggregated roles' rules are the aggregation's to write.
            if have.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                continue;
            }
            let null = Value::Null;
            let old = have.get(field).unwrap_or(&null);
            let merged = union(old, want.get(field).unwrap_or(&null));
            if &merged != old {
                let mut updated = have.clone();
                updated.0.insert(field.into(), merged);
                self.update(kind, None, have.name(), updated, USER, "update", false)
                    .await?;
            }
        }
        self.aggregate_cluster_roles().await?;
        Ok(())
    }

    /// Writes the rules of every aggregated ClusterRole whose rules differ from what its
    /// selectors pick now; returns how many it wrote.
    pub async fn aggregate_cluster_roles(&self) -> ApiResult<usize> {
        let kind = kinds::resolve("clusterroles")
            .ok_or_else(|| ApiError::internal("RBAC kinds missing"))?;
        let roles = self.list(kind, None, &ListOptions::default())?.items;
        let values: Vec<Value> = roles.iter().map(Object::as_value).collect();
        let mut written = 0;
        for (name, rules) in defaults::aggregate(&values) {
            let Some(role) = roles.iter().find(|r| r.name() == name) else {
                continue;
            };
            let want: Value = rules.iter().map(PolicyRule::to_value).collect();
            if role.get("rules") == Some(&want) {
                continue;
            }
            let mut updated = role.clone();
            updated.0.insert("rules".into(), want);
            match self
                .update(kind, None, &name, updated, USER, "update", false)
                .await
            {
                Ok(_) => written += 1,
                // Changed meanwhile: the next change brings it round again.
                Err(e) if e.code() == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }
}

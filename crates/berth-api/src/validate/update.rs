//! Updates: everything a create checks, plus the fields that may not change once set (a
//! pod's spec but for images and a few scheduling fields, selectors, a cluster IP, immutable
//! ConfigMaps and Secrets, the namespace).

use serde_json::Value;

use super::walker::{V, describe};
use crate::kinds::ResourceKind;
use crate::object::Object;
use crate::status::FieldError;

fn immutable(v: &mut V, path: &str, old: Option<&Value>, new: Option<&Value>) {
    if old != new {
        v.push(FieldError {
            field: path.into(),
            kind: crate::status::FieldErrorKind::Invalid,
            message: format!(
                "{path}: Invalid value: {}: field is immutable",
                describe(new.unwrap_or(&Value::Null))
            ),
        });
    }
}

/// Validates an update: everything `validate_create` checks, plus the fields that may not
/// change once set.
pub fn validate_update(kind: &ResourceKind, old: &Object, new: &Object) -> Vec<FieldError> {
    let mut v = V::default();
    super::metadata::validate_metadata(&mut v, kind, new);
    super::validate_spec(&mut v, kind, new);
    match kind.kind {
        "Pod" => {
            // A pod's spec may change only in its containers' images and a few scheduling
            // fields, as in Kubernetes.
            let strip = |o: &Object| {
                let mut spec = o.get("spec").cloned().unwrap_or(Value::Null);
                for list in ["containers", "initContainers"] {
                    if let Some(Value::Array(cs)) = spec.get_mut(list) {
                        for c in cs {
                            if let Value::Object(m) = c {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Value::Object(m) = &mut spec {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    m.remove("terminationGracePeriodSeconds");
                    // nodeName may be set once, by binding.
                    if old
                        .get("spec")
                        .and_then(|s| s.get("nodeName"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        m.remove("nodeName");
                    }
                }
                spec
            };
            if strip(old) != strip(new) {
                v.push(FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`"));
            }
        }
        "Deployment" | "ReplicaSet" => {
            immutable(
                &mut v,
                "spec.selector",
                old.get("spec").and_then(|s| s.get("selector")),
                new.get("spec").and_then(|s| s.get("selector")),
            );
        }
        "Service" => {
            let ip = |o: &Object| o.get("spec").and_then(|s| s.get("clusterIP")).cloned();
            if ip(old).is_some_and(|i| i != "") {
                immutable(&mut v, "spec.clusterIP", ip(old).as_ref(), ip(new).as_ref());
            }
        }
        "RoleBinding" | "ClusterRoleBinding" if old.get("roleRef") != new.get("roleRef") => {
            // What a binding grants is fixed: a new role takes a new binding (kubectl
            // apply's --force, or delete and create), so no one can widen a grant they
            // were allowed to make.
            v.push(FieldError::invalid(
                "roleRef",
                describe(new.get("roleRef").unwrap_or(&Value::Null)),
                "cannot change roleRef",
            ));
        }
        "ConfigMap" | "Secret" if old.get("immutable") == Some(&Value::Bool(true)) => {
            for f in ["data", "binaryData", "immutable"] {
                if old.get(f) != new.get(f) {
                    v.push(FieldError::forbidden(
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        _ => {}
    }
    if old.namespace() != new.namespace() && kind.namespaced {
        immutable(
            &mut v,
            "metadata.namespace",
            old.metadata().and_then(|m| m.get("namespace")),
            new.metadata().and_then(|m| m.get("namespace")),
        );
    }
    v.errs
}

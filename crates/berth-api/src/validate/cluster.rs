//! Cluster objects: Events, Leases, Nodes (taints) and Namespaces.

use super::walker::V;
use crate::names;
use crate::object::Object;
use crate::status::FieldError;

pub(super) fn validate_event(v: &mut V, obj: &Object) {
    match v.obj("involvedObject", obj.get("involvedObject")) {
        Some(io) => {
            v.str("involvedObject.name", io.get("name"));
            v.str("involvedObject.kind", io.get("kind"));
        }
        None => v.push(FieldError::required("involvedObject")),
    }
    v.one_of("type", obj.get("type"), &["Normal", "Warning"]);
    v.str("reason", obj.get("reason"));
    v.str("message", obj.get("message"));
    v.non_negative("count", obj.get("count"));
}

pub(super) fn validate_lease(v: &mut V, obj: &Object) {
    if let Some(s) = v.obj("spec", obj.get("spec")) {
        v.str("spec.holderIdentity", s.get("holderIdentity"));
        v.non_negative("spec.leaseDurationSeconds", s.get("leaseDurationSeconds"));
        v.non_negative("spec.leaseTransitions", s.get("leaseTransitions"));
        v.str("spec.renewTime", s.get("renewTime"));
        v.str("spec.acquireTime", s.get("acquireTime"));
    }
}

pub(super) fn validate_node(v: &mut V, obj: &Object) {
    if let Some(s) = v.obj("spec", obj.get("spec")) {
        v.bool("spec.unschedulable", s.get("unschedulable"));
        v.str("spec.podCIDR", s.get("podCIDR"));
        for (i, t) in v.arr("spec.taints", s.get("taints")).iter().enumerate() {
            let tp = format!("spec.taints[{i}]");
            if let Some(tm) = v.obj(&tp, Some(t)) {
                if let Some(k) = v.req_str(&format!("{tp}.key"), tm.get("key"))
                    && let Some(e) = names::qualified_name(k)
                {
                    v.push(FieldError::invalid(
                        format!("{tp}.key"),
                        format!("\"{k}\""),
                        &e,
                    ));
                }
                if tm.get("effect").is_none() {
                    v.push(FieldError::required(format!("{tp}.effect")));
                }
                v.one_of(
                    &format!("{tp}.effect"),
                    tm.get("effect"),
                    &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                );
            }
        }
    }
}

pub(super) fn validate_namespace(v: &mut V, obj: &Object) {
    if let Some(s) = v.obj("spec", obj.get("spec")) {
        v.arr("spec.finalizers", s.get("finalizers"));
    }
}

//! Metadata every object has: its name (in the syntax its kind requires), namespace, labels,
//! annotations, owner references and finalizers.

use serde_json::Value;

use super::walker::V;
use crate::kinds::ResourceKind;
use crate::names;
use crate::object::Object;
use crate::status::FieldError;

/// Which name syntax a kind requires.
fn name_check(kind: &ResourceKind) -> fn(&str) -> Option<String> {
    match kind.kind {
        "Namespace" => names::dns1123_label,
        "Service" => names::dns1035_label,
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => names::path_segment_name,
        _ => names::dns1123_subdomain,
    }
}

pub(super) fn validate_metadata(v: &mut V, kind: &ResourceKind, obj: &Object) {
    let meta = obj.get("metadata");
    let Some(m) = v.obj("metadata", meta) else {
        v.push(FieldError::required("metadata.name"));
        return;
    };
    let name = v.str("metadata.name", m.get("name"));
    let generate = v.str("metadata.generateName", m.get("generateName"));
    match name {
        Some(n) if !n.is_empty() => {
            if let Some(e) = name_check(kind)(n) {
                v.push(FieldError::invalid("metadata.name", format!("\"{n}\""), &e));
            }
        }
        _ => {
            if generate.is_none_or(str::is_empty) {
                v.push(FieldError::required("metadata.name"));
            }
        }
    }
    if kind.namespaced
        && let Some(ns) = v.str("metadata.namespace", m.get("namespace"))
        && let Some(e) = names::dns1123_label(ns)
    {
        v.push(FieldError::invalid(
            "metadata.namespace",
            format!("\"{ns}\""),
            &e,
        ));
    }
    v.string_map(
        "metadata.labels",
        m.get("labels"),
        names::qualified_name,
        Some(names::label_value),
    );
    if kind.kind == "Namespace"
        && let Some(labels) = m.get("labels").and_then(Value::as_object)
    {
        for e in crate::podsecurity::validate_labels(labels) {
            v.push(e);
        }
    }
    v.string_map(
        "metadata.annotations",
        m.get("annotations"),
        names::qualified_name,
        None,
    );
    let total: usize = m
        .get("annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if total > 256 * 1024 {
        v.push(FieldError::invalid(
            "metadata.annotations",
            format!("{total} bytes"),
            "must have at most 262144 bytes",
        ));
    }
    for (i, r) in v
        .arr("metadata.ownerReferences", m.get("ownerReferences"))
        .iter()
        .enumerate()
    {
        let p = format!("metadata.ownerReferences[{i}]");
        if v.obj(&p, Some(r)).is_some() {
            for f in ["apiVersion", "kind", "name", "uid"] {
                v.req_str(&format!("{p}.{f}"), r.get(f));
            }
            v.bool(&format!("{p}.controller"), r.get("controller"));
            v.bool(
                &format!("{p}.blockOwnerDeletion"),
                r.get("blockOwnerDeletion"),
            );
        }
    }
    for (i, f) in v
        .arr("metadata.finalizers", m.get("finalizers"))
        .iter()
        .enumerate()
    {
        if let Some(s) = v.str(&format!("metadata.finalizers[{i}]"), Some(f))
            && let Some(e) = names::qualified_name(s)
        {
            v.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                format!("\"{s}\""),
                &e,
            ));
        }
    }
}

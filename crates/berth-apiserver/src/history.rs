//! berth's history API (`/apis/berth.dev/v1/...`): who changed what, when and how; objects as
//! they were at any retained revision; the whole desired state exported at a revision.

use std::collections::HashMap;

use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use berth_api::timefmt;
use berth_store::EventType;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, decode};

/// Picks the revision a request means: `revision=N`, or the last one at or before `at=TIME`.
pub fn resolve_revision(
    registry: &Registry,
    q: &HashMap<String, String>,
) -> ApiResult<Option<u64>> {
    if let Some(r) = q.get("revision") {
        let n: u64 = r
            .parse()
            .map_err(|_| ApiError::bad_request(format!("revision {r:?} is not a number")))?;
        return Ok(Some(n));
    }
    if let Some(t) = q.get("at") {
        let nanos = timefmt::parse_rfc3339(t).map_err(ApiError::bad_request)?;
        return registry
            .store
            .revision_at_time(nanos)
            .map(Some)
            .map_err(|_| {
                ApiError::gone(format!(
                    "no retained revision at or before {t}; the oldest retained revision is {}",
                    registry.store.compacted_revision().max(1)
                ))
            });
    }
    Ok(None)
}

fn target(
    q: &HashMap<String, String>,
) -> ApiResult<(&'static ResourceKind, Option<String>, String)> {
    let kind_name = q.get("resource").ok_or_else(|| {
        ApiError::bad_request("resource is required (e.g. resource=deployments.apps)")
    })?;
    let kind = kinds::resolve(kind_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the server doesn't have a resource type {kind_name:?}"
        ))
    })?;
    let name = q
        .get("name")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    let ns = if kind.namespaced {
        Some(
            q.get("namespace")
                .cloned()
                .unwrap_or_else(|| "default".into()),
        )
    } else {
        None
    };
    Ok((kind, ns, name))
}

/// `GET /apis/berth.dev/v1/history?resource=&namespace=&name=[&revision=|&at=]`: the object's
/// retained revisions, or the object at one revision.
pub fn history(registry: &Registry, q: &HashMap<String, String>) -> ApiResult<Value> {
    let (kind, ns, name) = target(q)?;
    if let Some(rev) = resolve_revision(registry, q)? {
        return Ok(registry
            .get_at(kind, ns.as_deref(), &name, rev)?
            .into_value());
    }
    let key = kind.key(ns.as_deref(), &name);
    let entries = registry.store.history(key.as_bytes())?;
    if entries.is_empty() {
        return Err(ApiError::not_found(kind, &name));
    }
    let items: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut obj = decode(&e.kv).map(Object::into_value).unwrap_or(Value::Null);
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert(
                    "resourceVersion".into(),
                    Value::String(e.info.revision.to_string()),
                );
            }
            json!({
                "revision": e.info.revision,
                "time": timefmt::rfc3339_nanos_from_nanos(e.info.time_nanos),
                "user": e.info.user,
                "verb": e.info.verb,
                "type": if e.typ == EventType::Put { "Put" } else { "Delete" },
                "object": obj,
            })
        })
        .collect();
    Ok(json!({
        "kind": "ObjectHistory",
        "apiVersion": "berth.dev/v1",
        "metadata": {"resourceVersion": registry.store.current_revision().to_string()},
        "target": {"resource": kind.qualified_plural(), "namespace": ns, "name": name},
        "compactedRevision": registry.store.compacted_revision(),
        "items": items,
    }))
}

/// `GET /apis/berth.dev/v1/revisions?from=&to=&limit=`: the audit log of revisions.
pub fn revisions(registry: &Registry, q: &HashMap<String, String>) -> ApiResult<Value> {
    let num = |k: &str, d: u64| -> ApiResult<u64> {
        q.get(k).map_or(Ok(d), |v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("{k} {v:?} is not a number")))
        })
    };
    let current = registry.store.current_revision();
    let to = num("to", current)?;
    let limit = num("limit", 500)? as usize;
    let from = num("from", to.saturating_sub(limit as u64).saturating_add(1))?;
    let items: Vec<Value> = registry
        .store
        .revisions(from, to, limit)?
        .into_iter()
        .map(|r| json!({"revision": r.revision, "time": timefmt::rfc3339_nanos_from_nanos(r.time_nanos), "user": r.user, "verb": r.verb, "changes": r.events}))
        .collect();
    Ok(json!({
        "kind": "RevisionList",
        "apiVersion": "berth.dev/v1",
        "metadata": {"resourceVersion": current.to_string()},
        "compactedRevision": registry.store.compacted_revision(),
        "items": items,
    }))
}

/// Kinds that record what the cluster is doing rather than what a user wants.
fn is_runtime_state(o: &Object) -> bool {
    matches!(
        o.kind(),
        "Event" | "Lease" | "Node" | "Endpoints" | "EndpointSlice"
    )
}

/// The namespaces every server makes at start, as it made them: nothing to export.
fn is_untouched_system_namespace(o: &Object) -> bool {
    o.kind() == "Namespace"
        && matches!(
            o.name(),
            "default" | "kube-system" | "kube-public" | "kube-node-lease"
        )
        && o.annotations().is_empty()
        && o.labels()
            .keys()
            .all(|k| k == "kubernetes.io/metadata.name")
}

const KIND_ORDER: &[&str] = &[
    "Namespace",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "ReplicaSet",
    "Pod",
];

/// `GET /apis/berth.dev/v1/export[?revision=|?at=]`: the desired state as a `List`: no status,
/// no server-set fields, nothing a controller made (it would make it again), no runtime state.
pub fn export(registry: &Registry, q: &HashMap<String, String>) -> ApiResult<Value> {
    let rev = resolve_revision(registry, q)?;
    let (all, rev) = registry.all_objects(rev)?;
    let mut items: Vec<Object> = all
        .into_iter()
        .filter(|o| {
            !is_runtime_state(o)
                && o.owner_references().is_empty()
                && o.deletion_timestamp().is_none()
                && !is_untouched_system_namespace(o)
        })
        .map(|o| {
            let mut m = o.to_desired_manifest();
            m.remove_annotation("kubectl.kubernetes.io/last-applied-configuration");
            if m.kind() == "Namespace" {
                let name = m.name().to_string();
                if let Some(Value::Object(l)) = m.metadata_mut().get_mut("labels") {
                    if l.get("kubernetes.io/metadata.name").and_then(Value::as_str)
                        == Some(name.as_str())
                    {
                        l.remove("kubernetes.io/metadata.name");
                    }
                    if l.is_empty() {
                        m.remove_meta("labels");
                    }
                }
            }
            m
        })
        .collect();
    items.sort_by_key(|o| {
        (
            KIND_ORDER
                .iter()
                .position(|k| *k == o.kind())
                .unwrap_or(KIND_ORDER.len()),
            o.namespace().unwrap_or("").to_string(),
            o.name().to_string(),
        )
    });
    Ok(json!({
        "kind": "List",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rev.to_string()},
        "items": items.into_iter().map(Object::into_value).collect::<Vec<_>>(),
    }))
}

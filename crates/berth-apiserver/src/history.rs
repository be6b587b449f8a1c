//! berth's history API (`/apis/berth.dev/v1/...`): who changed what, when and how; objects as
//! they were at any retained revision; the whole desired state exported at a revision.
//!
//! Trust boundary: history never serves a Secret's values. The store keeps them as it keeps
//! every revision (until compaction), but what this API returns of a Secret has each value of
//! `data` and `stringData` (and of the manifest in the last-applied annotation) replaced: in
//! an object's history by `(hidden, version N)`, N counting the values the key has had, with
//! each revision's `dataChanges` naming the keys added, changed or removed; in an object at
//! one revision by `(hidden)`. `export` leaves Secrets out (listing them in
//! `omittedSecrets`) unless `includeSecrets` asks for them, which only the current state may,
//! and even then leaves out (in `forbiddenSecrets`) those the requester may not `get`.
//! Values are read through the registry, decrypted; a revision that does not decrypt shows
//! its error instead of the object.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use berth_api::timefmt;
use berth_store::EventType;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

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

/// What stands for a Secret's value wherever history shows one.
const HIDDEN: &str = "(hidden)";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Replaces every value of a Secret's `data` and `stringData` by `HIDDEN`.
fn hide_values(obj: &mut Value) {
    for field in ["data", "stringData"] {
        if let Some(Value::Object(m)) = obj.get_mut(field) {
            for v in m.values_mut() {
                *v = Value::String(HIDDEN.into());
            }
        }
    }
}

/// Hides a Secret's values in the object and in the manifest its last-applied annotation
/// holds (an annotation that is not a JSON object is hidden whole).
fn hide_secret(obj: &mut Value) {
    hide_values(obj);
    if let Some(Value::String(a)) = obj.pointer_mut(&format!(
        "/metadata/annotations/{}",
        LAST_APPLIED.replace('/', "~1")
    )) {
        *a = match serde_json::from_str::<Value>(a) {
            Ok(mut applied @ Value::Object(_)) => {
                hide_values(&mut applied);
                applied.to_string()
            }
            _ => HIDDEN.into(),
        };
    }
}

/// Follows one Secret through its retained revisions, oldest first, hiding its values.
#[derive(Default)]
struct SecretMask {
    /// Each key's last value and how many values it has had.
    seen: BTreeMap<String, (Value, u64)>,
    /// The keys of `data` at the revision before.
    before: BTreeSet<String>,
}

impl SecretMask {
    /// Hides one revision's values (`data` values as `(hidden, version N)`) and says which
    /// keys it added, changed or removed.
    fn mask(&mut self, obj: &mut Value) -> Vec<Value> {
        let mut changes = Vec::new();
        let mut now = BTreeSet::new();
        let versions: Vec<(String, u64)> = match obj.get("data") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    now.insert(k.clone());
                    let (change, version) = match self.seen.get(k) {
                        Some((old, n)) if old == v => {
                            // Unchanged, or back with the value it had before its removal.
                            let back = (!self.before.contains(k)).then_some("added");
                            (back, *n)
                        }
                        Some((_, n)) if self.before.contains(k) => (Some("changed"), n + 1),
                        Some((_, n)) => (Some("added"), n + 1),
                        None => (Some("added"), 1),
                    };
                    self.seen.insert(k.clone(), (v.clone(), version));
                    if let Some(c) = change {
                        changes.push(json!({"key": k, "change": c}));
                    }
                    (k.clone(), version)
                })
                .collect(),
            _ => Vec::new(),
        };
        for k in self.before.difference(&now) {
            changes.push(json!({"key": k, "change": "removed"}));
        }
        self.before = now;
        hide_secret(obj);
        if let Some(Value::Object(m)) = obj.get_mut("data") {
            for (k, version) in versions {
                m.insert(k, Value::String(format!("(hidden, version {version})")));
            }
        }
        changes
    }
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
        let mut obj = registry
            .get_at(kind, ns.as_deref(), &name, rev)?
            .into_value();
        if kind.kind == "Secret" {
            hide_secret(&mut obj);
        }
        return Ok(obj);
    }
    let key = kind.key(ns.as_deref(), &name);
    let entries = registry.store.history(key.as_bytes())?;
    if entries.is_empty() {
        return Err(ApiError::not_found(kind, &name));
    }
    let mut secret = (kind.kind == "Secret").then(SecretMask::default);
    let items: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let (mut obj, unreadable) = match registry.decode_stored(&e.kv) {
                Ok(o) => (o.into_value(), None),
                Err(err) => (Value::Null, Some(err.to_string())),
            };
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert(
                    "resourceVersion".into(),
                    Value::String(e.info.revision.to_string()),
                );
            }
            let put = e.typ == EventType::Put;
            let mut item = json!({
                "revision": e.info.revision,
                "time": timefmt::rfc3339_nanos_from_nanos(e.info.time_nanos),
                "user": e.info.user,
                "verb": e.info.verb,
                "type": if put { "Put" } else { "Delete" },
            });
            if let Some(mask) = secret.as_mut() {
                if put {
                    item["dataChanges"] = Value::Array(mask.mask(&mut obj));
                } else {
                    hide_secret(&mut obj);
                }
            }
            item["object"] = obj;
            if let Some(err) = unreadable {
                item["error"] = Value::String(err);
            }
            item
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

/// `GET /apis/berth.dev/v1/export[?revision=|?at=][&includeSecrets=true]`: the desired state
/// as a `List`: no status, no server-set fields, nothing a controller made (it would make it
/// again), no runtime state. Secrets are left out and named in `omittedSecrets`, unless
/// `includeSecrets` asks for the current ones (never a past revision's: history serves no
/// Secret's values); those `may_get_secret(namespace, name)` refuses the requester are left
/// out all the same and named in `forbiddenSecrets`. Objects whose values do not decrypt are
/// named, with the reason, in `unreadable`.
pub fn export(
    registry: &Registry,
    q: &HashMap<String, String>,
    may_get_secret: &dyn Fn(&str, &str) -> bool,
) -> ApiResult<Value> {
    let rev = resolve_revision(registry, q)?;
    let include_secrets = match q.get("includeSecrets").map(String::as_str) {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "includeSecrets {other:?} is not true or false"
            )));
        }
    };
    if include_secrets && rev.is_some() {
        return Err(ApiError::bad_request(
            "includeSecrets exports only the current state: history serves no past Secret's values",
        ));
    }
    let (all, unreadable, rev) = registry.all_readable_objects(rev)?;
    let mut omitted = Vec::new();
    let mut forbidden = Vec::new();
    let mut items: Vec<Object> = all
        .into_iter()
        .filter(|o| {
            !is_runtime_state(o)
                && o.owner_references().is_empty()
                && o.deletion_timestamp().is_none()
                && !is_untouched_system_namespace(o)
        })
        .filter(|o| {
            if o.kind() != "Secret" {
                return true;
            }
            let ns = o.namespace().unwrap_or("");
            let name = format!("{ns}/{}", o.name());
            if !include_secrets {
                omitted.push(name);
                false
            } else if !may_get_secret(ns, o.name()) {
                forbidden.push(name);
                false
            } else {
                true
            }
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
        "omittedSecrets": omitted,
        "forbiddenSecrets": forbidden,
        "unreadable": unreadable,
        "items": items.into_iter().map(Object::into_value).collect::<Vec<_>>(),
    }))
}

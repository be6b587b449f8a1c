//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the subset of
//! Kubernetes' strategic merge patch that kubectl sends for the kinds berth serves.

use berth_api::ResourceKind;
use berth_api::object::Object;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    /// From the request's Content-Type.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                ),
            )),
        }
    }
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the patch is not valid JSON: {} (line {}, column {})",
            e.to_string().split(" at line").next().unwrap_or_default(),
            e.line(),
            e.column()
        ))
    })
}

/// Applies a patch to the current object and returns the patched JSON.
pub fn apply(
    kind: &ResourceKind,
    current: &Object,
    typ: PatchType,
    body: &[u8],
) -> ApiResult<Value> {
    let mut doc = current.as_value();
    match typ {
        PatchType::Merge => {
            let p = parse_json(body)?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &p);
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
            })?;
            json_patch::patch(&mut doc, &p.0).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        PatchType::Strategic => {
            let p = parse_json(body)?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(&mut doc, &p, &mut Vec::new(), kind);
        }
    }
    Ok(doc)
}

/// The merge key of a list at a path, as Kubernetes' API types declare it; `None` means the
/// list is replaced whole.
fn merge_key(path: &[String], kind: &ResourceKind) -> Option<&'static str> {
    let last = path.last().map(String::as_str)?;
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases" => Some(if last == "hostAliases" { "ip" } else { "name" }),
        "ports" if kind.kind == "Service" => Some("port"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        _ => None,
    }
}

/// Lists of plain values merged as sets.
fn is_set_list(path: &[String]) -> bool {
    matches!(path.last().map(String::as_str), Some("finalizers"))
}

fn strategic_merge(doc: &mut Value, patch: &Value, path: &mut Vec<String>, kind: &ResourceKind) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *doc = Value::Object(replaced);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                d.remove(k);
            }
            Value::Object(_) => {
                let entry = d.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, v, path, kind);
            }
            Value::Array(items) => {
                if let Some(key) = merge_key(path, kind) {
                    let entry = d
                        .entry(k.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    merge_keyed_list(entry, items, key, path, kind);
                } else if is_set_list(path) {
                    let entry = d
                        .entry(k.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(existing) = entry {
                        for it in items {
                            if !existing.contains(it) {
                                existing.push(it.clone());
                            }
                        }
                    }
                } else {
                    d.insert(k.clone(), v.clone());
                }
            }
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
}

fn merge_keyed_list(
    doc: &mut Value,
    items: &[Value],
    key: &str,
    path: &mut Vec<String>,
    kind: &ResourceKind,
) {
    if !doc.is_array() {
        *doc = Value::Array(Vec::new());
    }
    let Value::Array(existing) = doc else { return };
    for item in items {
        let Some(id) = item.get(key).cloned() else {
            existing.push(item.clone());
            continue;
        };
        let pos = existing.iter().position(|e| e.get(key) == Some(&id));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                existing.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge(&mut existing[i], item, path, kind),
            (None, _) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item, path, kind);
                existing.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let kind = berth_api::kinds::resolve("deploy").unwrap();
        let cur = Object::from_value(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}}, "replicas": 2}, "metadata": {"finalizers": ["f1"]}}))
        .unwrap();
        let out = apply(
            kind,
            &cur,
            PatchType::Strategic,
            br#"{"spec": {"replicas": null, "template": {"spec": {"containers": [
            {"name": "a", "image": "x:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "b", "$patch": "delete"}]}}}, "metadata": {"finalizers": ["f2"]}}"#,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([
            {"name": "a", "image": "x:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}])
        );
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
    }

    #[test]
    fn merge_and_json_patch() {
        let kind = berth_api::kinds::resolve("cm").unwrap();
        let cur = Object::from_value(json!({"data": {"a": "1", "b": "2"}})).unwrap();
        let out = apply(
            kind,
            &cur,
            PatchType::Merge,
            br#"{"data": {"a": null, "c": "3"}}"#,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"b": "2", "c": "3"}));
        let out = apply(
            kind,
            &cur,
            PatchType::Json,
            br#"[{"op": "replace", "path": "/data/a", "value": "9"}]"#,
        )
        .unwrap();
        assert_eq!(out["data"]["a"], "9");
        let err = apply(
            kind,
            &cur,
            PatchType::Json,
            br#"[{"op": "test", "path": "/data/a", "value": "0"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            apply(kind, &cur, PatchType::Merge, b"{nope")
                .unwrap_err()
                .code(),
            400
        );
    }
}

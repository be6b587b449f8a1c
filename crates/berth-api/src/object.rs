//! `Object`: one Kubernetes-shaped resource held as its JSON, with typed accessors.
//!
//! berth keeps objects as JSON rather than one Rust struct per kind: the API server must store
//! and return every field a client sent (kubectl round-trips them), and validation walks the
//! JSON so each error can name the exact path. Accessors here give typed views of the parts the
//! server reasons about (metadata, spec, status).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::kinds::{self, ResourceKind};

/// A resource: a JSON object with `apiVersion`, `kind` and `metadata`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Object(pub Map<String, Value>);

/// An owner reference, the part garbage collection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Object {
    /// Wraps a JSON value; `None` unless it is an object.
    pub fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Object(m) => Some(Object(m)),
            _ => None,
        }
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn as_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    fn str_at(&self, outer: &str, field: &str) -> Option<&str> {
        self.0.get(outer)?.get(field)?.as_str()
    }

    pub fn api_version(&self) -> &str {
        self.0
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.0.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    /// The registered kind this object claims to be.
    pub fn resource_kind(&self) -> Option<&'static ResourceKind> {
        kinds::by_api_version_kind(self.api_version(), self.kind())
    }

    pub fn name(&self) -> &str {
        self.str_at("metadata", "name").unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.str_at("metadata", "namespace")
            .filter(|s| !s.is_empty())
    }

    pub fn uid(&self) -> &str {
        self.str_at("metadata", "uid").unwrap_or("")
    }

    pub fn resource_version(&self) -> &str {
        self.str_at("metadata", "resourceVersion").unwrap_or("")
    }

    pub fn generation(&self) -> i64 {
        self.metadata()
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.0.get("metadata").and_then(Value::as_object)
    }

    /// The metadata object, created if absent.
    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let entry = self
            .0
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(m) => m,
            _ => unreachable!("metadata was just made an object"),
        }
    }

    pub fn set_meta(&mut self, field: &str, value: impl Into<Value>) {
        self.metadata_mut().insert(field.to_string(), value.into());
    }

    pub fn remove_meta(&mut self, field: &str) {
        self.metadata_mut().remove(field);
    }

    fn string_map(&self, field: &str) -> BTreeMap<String, String> {
        self.metadata()
            .and_then(|m| m.get(field))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.string_map("labels")
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.string_map("annotations")
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata()?.get("annotations")?.get(key)?.as_str()
    }

    pub fn set_annotation(&mut self, key: &str, value: &str) {
        let m = self.metadata_mut();
        let ann = m
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        if let Value::Object(a) = ann {
            a.insert(key.to_string(), Value::String(value.to_string()));
        }
    }

    pub fn remove_annotation(&mut self, key: &str) {
        let m = self.metadata_mut();
        let empty = match m.get_mut("annotations") {
            Some(Value::Object(a)) => {
                a.remove(key);
                a.is_empty()
            }
            _ => false,
        };
        if empty {
            m.remove("annotations");
        }
    }

    pub fn owner_references(&self) -> Vec<OwnerRef> {
        let Some(list) = self
            .metadata()
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        list.iter()
            .map(|r| OwnerRef {
                api_version: r["apiVersion"].as_str().unwrap_or("").into(),
                kind: r["kind"].as_str().unwrap_or("").into(),
                name: r["name"].as_str().unwrap_or("").into(),
                uid: r["uid"].as_str().unwrap_or("").into(),
            })
            .collect()
    }

    pub fn finalizers(&self) -> Vec<String> {
        self.metadata()
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn deletion_timestamp(&self) -> Option<&str> {
        self.str_at("metadata", "deletionTimestamp")
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// The status (`True`, `False`, `Unknown`) of its condition `typ` (see [`condition`]).
    pub fn condition(&self, typ: &str) -> Option<&str> {
        condition(self.0.get("status")?, typ)
    }

    /// Everything but `metadata` and `status`: what a change to bumps `generation`.
    pub fn desired_state(&self) -> Map<String, Value> {
        self.0
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The manifest a user would write to reproduce this object: no status and no field the
    /// server sets (uid, resourceVersion, generation, timestamps, managed fields).
    pub fn to_desired_manifest(&self) -> Object {
        let mut out = self.clone();
        out.0.remove("status");
        let m = out.metadata_mut();
        for f in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generateName",
        ] {
            m.remove(f);
        }
        out
    }

    /// `kind/name` as kubectl prints it: `deployment.apps/web`.
    pub fn display_ref(&self) -> String {
        match self.resource_kind() {
            Some(k) => format!("{}/{}", k.qualified_singular(), self.name()),
            None => format!("{}/{}", self.kind().to_ascii_lowercase(), self.name()),
        }
    }
}

/// The status (`True`, `False`, `Unknown`) of the condition `typ` in an object's `status`
/// (`status.conditions[type=typ].status`), when it has one.
pub fn condition<'a>(status: &'a Value, typ: &str) -> Option<&'a str> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == typ)?["status"]
        .as_str()
}

/// Whether an object's condition `typ` is `True` (a pod or node that is `Ready`).
pub fn condition_true(object: &Value, typ: &str) -> bool {
    condition(&object["status"], typ) == Some("True")
}

/// An Event about `about` (the object it references by apiVersion, kind, namespace, name and
/// uid), reported by `component`, at `nanos` since the epoch. Named `NAME.NANOS_HEX` in the
/// object's namespace (`default` for cluster objects), as Kubernetes' recorder names them.
pub fn event(
    about: &Map<String, Value>,
    component: &str,
    typ: &str,
    reason: &str,
    message: &str,
    nanos: u64,
) -> Value {
    let meta = about.get("metadata").unwrap_or(&Value::Null);
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let name = meta["name"].as_str().unwrap_or("");
    let now = crate::timefmt::rfc3339_from_nanos(nanos);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {
            "apiVersion": about.get("apiVersion"), "kind": about.get("kind"),
            "namespace": ns, "name": name, "uid": meta["uid"],
        },
        "reason": reason, "message": message, "type": typ,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })
}

/// A Node's `InternalIP` address (where other nodes and the API server reach it).
pub fn node_internal_ip(node: &Value) -> Option<&str> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_are_read_by_type() {
        let pod = json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False"}]}});
        assert_eq!(condition(&pod["status"], "Ready"), Some("False"));
        assert!(condition_true(&pod, "PodScheduled"));
        assert!(!condition_true(&pod, "Ready"));
        assert!(!condition_true(&json!({}), "Ready"));
        assert!(!condition_true(
            &json!({"status": {"conditions": "no"}}),
            "Ready"
        ));
        let o = Object::from_value(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n"}, "status": pod["status"]}))
        .unwrap();
        assert_eq!(o.condition("Ready"), Some("False"));
        assert_eq!(o.condition("Gone"), None);
    }

    #[test]
    fn an_event_references_its_object_and_names_its_reporter() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}});
        let e = event(
            d.as_object().unwrap(),
            "deployment-controller",
            "Normal",
            "ScalingReplicaSet",
            "up",
            255,
        );
        assert_eq!(
            e["metadata"],
            json!({"name": "web.ff", "namespace": "shop"})
        );
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web", "uid": "u1"})
        );
        assert_eq!(e["source"]["component"], "deployment-controller");
        assert_eq!(e["reportingComponent"], "deployment-controller");
        assert_eq!(e["firstTimestamp"], e["lastTimestamp"]);
        // A cluster object's Events go to `default`.
        let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
        assert_eq!(
            event(n.as_object().unwrap(), "c", "Normal", "R", "m", 1)["metadata"]["namespace"],
            "default"
        );
    }
}

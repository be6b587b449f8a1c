//! The `scale` subresource: an `autoscaling/v1` `Scale` view of a workload's replicas, read
//! and written through the workload itself.

use berth_api::kinds::ResourceKind;
use berth_api::object::Object;
use berth_api::selector::LabelSelector;
use serde_json::{Map, Value, json};

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// The `scale` subresource: an `autoscaling/v1` `Scale` view of a workload.
    pub(crate) fn get_scale(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Object> {
        if !kind.has_scale() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} has no scale subresource", kind.qualified_plural()),
            ));
        }
        Ok(scale_of(&self.get(kind, ns, name)?))
    }

    /// PUT (or the result of a PATCH) of the `scale` subresource: sets `spec.replicas`.
    pub(crate) async fn update_scale(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        scale: Object,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let current = self.get(kind, ns, name)?;
        let rv = scale.resource_version();
        if !rv.is_empty() && rv != current.resource_version() {
            return Err(ApiError::conflict(kind, name));
        }
        let replicas = scale.get("spec").and_then(|s| s.get("replicas"));
        let replicas = match replicas {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => n.clone(),
            other => {
                let shown = other.map_or("null".to_string(), Value::to_string);
                return Err(ApiError(Box::new(berth_api::Status::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    &[berth_api::FieldError::invalid(
                        "spec.replicas",
                        shown,
                        "must be a non-negative integer",
                    )],
                ))));
            }
        };
        let mut new = current.clone();
        if let Some(Value::Object(spec)) = new.0.get_mut("spec") {
            spec.insert("replicas".into(), Value::Number(replicas));
        }
        let updated = self
            .update(kind, ns, name, new, user, "scale", dry_run)
            .await?;
        Ok(scale_of(&updated))
    }
}

fn scale_of(o: &Object) -> Object {
    let selector = o
        .get("spec")
        .and_then(|s| s.get("selector"))
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let meta = o.metadata().cloned().unwrap_or_default();
    let keep: Map<String, Value> = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ]
    .iter()
    .filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect();
    let v = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": keep,
        "spec": {"replicas": o.get("spec").and_then(|s| s.get("replicas")).cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": o.get("status").and_then(|s| s.get("replicas")).cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    });
    Object::from_value(v).unwrap_or_else(|| Object(Map::new()))
}

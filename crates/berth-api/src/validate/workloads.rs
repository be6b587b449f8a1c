//! Workloads: a ReplicaSet's and a Deployment's selector, replicas and pod template, and a
//! Deployment's rollout strategy and deadlines.

use serde_json::{Map, Value};

use super::MAX_INT32;
use super::pod::validate_pod_spec;
use super::walker::{V, describe};
use crate::names;
use crate::object::Object;
use crate::selector::LabelSelector;
use crate::status::FieldError;

fn validate_template(v: &mut V, kind: &str, spec: &Map<String, Value>) {
    let selector = match v.obj("spec.selector", spec.get("selector")) {
        None => {
            v.push(FieldError::required("spec.selector"));
            None
        }
        Some(sel) => match LabelSelector::from_object(&Value::Object(sel.clone())) {
            Ok(s) if s.is_empty() => {
                v.push(FieldError::invalid(
                    "spec.selector",
                    "{}",
                    "empty selector is invalid for deployment",
                ));
                None
            }
            Ok(s) => {
                v.string_map(
                    "spec.selector.matchLabels",
                    sel.get("matchLabels"),
                    names::qualified_name,
                    Some(names::label_value),
                );
                Some(s)
            }
            Err(e) => {
                v.push(FieldError::invalid(
                    "spec.selector",
                    describe(&Value::Object(sel.clone())),
                    &e,
                ));
                None
            }
        },
    };
    v.non_negative("spec.replicas", spec.get("replicas"));
    v.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"));
    let Some(t) = v.obj("spec.template", spec.get("template")) else {
        v.push(FieldError::required("spec.template"));
        return;
    };
    let tmeta = v.obj("spec.template.metadata", t.get("metadata"));
    let labels = tmeta.and_then(|m| m.get("labels"));
    v.string_map(
        "spec.template.metadata.labels",
        labels,
        names::qualified_name,
        Some(names::label_value),
    );
    let label_map = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(sel) = selector
        && !sel.matches(&label_map)
    {
        v.push(FieldError::invalid(
            "spec.template.metadata.labels",
            describe(labels.unwrap_or(&Value::Null)),
            &format!("`selector` does not match template `labels` of this {kind}"),
        ));
    }
    validate_pod_spec(v, "spec.template.spec", t.get("spec"), true);
}

fn validate_int_or_percent(v: &mut V, path: &str, val: Option<&Value>) {
    match val {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (0..=MAX_INT32).contains(&n)) => {}
        Some(Value::String(s))
            if s.strip_suffix('%')
                .is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p <= 100)) => {}
        Some(other) => v.push(FieldError::invalid(
            path,
            describe(other),
            &format!("must be an integer from 0 to {MAX_INT32} or a percentage such as '25%'"),
        )),
    }
}

pub(super) fn validate_replica_set(v: &mut V, obj: &Object) {
    match v.obj("spec", obj.get("spec")) {
        Some(spec) => validate_template(v, "ReplicaSet", spec),
        None => v.push(FieldError::required("spec")),
    }
}

pub(super) fn validate_deployment(v: &mut V, obj: &Object) {
    match v.obj("spec", obj.get("spec")) {
        Some(spec) => {
            validate_template(v, "Deployment", spec);
            v.non_negative(
                "spec.revisionHistoryLimit",
                spec.get("revisionHistoryLimit"),
            );
            let deadline = v.non_negative(
                "spec.progressDeadlineSeconds",
                spec.get("progressDeadlineSeconds"),
            );
            let min_ready = spec
                .get("minReadySeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if let Some(d) = deadline
                && d <= min_ready
            {
                v.push(FieldError::invalid(
                    "spec.progressDeadlineSeconds",
                    d,
                    "must be greater than minReadySeconds",
                ));
            }
            if let Some(st) = v.obj("spec.strategy", spec.get("strategy")) {
                let t = v.one_of(
                    "spec.strategy.type",
                    st.get("type"),
                    &["RollingUpdate", "Recreate"],
                );
                if let Some(ru) = v.obj("spec.strategy.rollingUpdate", st.get("rollingUpdate")) {
                    if t.as_deref() == Some("Recreate") {
                        v.push(FieldError::forbidden(
                            "spec.strategy.rollingUpdate",
                            "may not be specified when strategy `type` is 'Recreate'",
                        ));
                    }
                    validate_int_or_percent(
                        v,
                        "spec.strategy.rollingUpdate.maxSurge",
                        ru.get("maxSurge"),
                    );
                    validate_int_or_percent(
                        v,
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        ru.get("maxUnavailable"),
                    );
                    let zero = |x: Option<&Value>| {
                        matches!(x, Some(Value::Number(n)) if n.as_i64() == Some(0))
                            || matches!(x, Some(Value::String(s)) if s == "0%")
                    };
                    if zero(ru.get("maxSurge")) && zero(ru.get("maxUnavailable")) {
                        v.push(FieldError::invalid(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            }
        }
        None => v.push(FieldError::required("spec")),
    }
}

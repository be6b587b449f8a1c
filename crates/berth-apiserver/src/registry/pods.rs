//! Pods' strategy: the `binding` subresource (a pod assigned to a node once, with its
//! PodScheduled condition; `bind_all` for the scheduler's batches in one transaction) and the
//! grace period a pod's deletion gets.

use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use berth_api::timefmt;
use berth_store::{Compare, CompareOp, Op, Origin, Txn};
use serde_json::{Value, json};

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// The grace period a pod's deletion gets, or `None` when it goes at once: a pod not on
    /// a node, one that has finished, a grace of 0 (force), or a second deletion that does
    /// not shorten the first's.
    pub(super) fn pod_grace(kind: &ResourceKind, pod: &Object, asked: Option<i64>) -> Option<i64> {
        if kind.kind != "Pod" {
            return None;
        }
        let spec = pod.get("spec");
        let bound = spec
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = pod
            .get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound || matches!(phase, "Succeeded" | "Failed") {
            return None;
        }
        // Held to 0..=MAX_INT32 whatever a pod stored before validation did so says.
        let grace = asked
            .unwrap_or_else(|| {
                spec.and_then(|s| s.get("terminationGracePeriodSeconds"))
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            })
            .clamp(0, berth_api::validate::MAX_INT32);
        if grace == 0 {
            return None;
        }
        let current = pod
            .metadata()
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64);
        match current {
            Some(c) if pod.deletion_timestamp().is_some() && grace >= c => Some(c),
            _ => Some(grace),
        }
    }

    /// The `binding` subresource: assigns a pod to a node, once.
    pub async fn bind(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let kind = kinds::resolve("pods").ok_or_else(|| ApiError::internal("pod kind missing"))?;
        let (key, kv, pod) = self.load_for_update(kind, Some(ns), name)?;
        let bound = Self::bound(&pod, node)?;
        self.commit_update(kind, key, &kv, &pod, bound, user, "bind", dry_run)
            .await
    }

    /// The pod as a binding leaves it: its node, and the PodScheduled condition, in one write,
    /// as Kubernetes' binding does. A pod already bound, or being deleted, is refused (409).
    fn bound(pod: &Object, node: &str) -> ApiResult<Object> {
        let kind = kinds::resolve("pods").ok_or_else(|| ApiError::internal("pod kind missing"))?;
        let name = pod.name();
        let current = pod
            .get("spec")
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(ApiError::conflict(kind, name).with_message(format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
            )));
        }
        if pod.deletion_timestamp().is_some() {
            return Err(ApiError::conflict(kind, name).with_message(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        let mut bound = pod.clone();
        if let Some(Value::Object(spec)) = bound.0.get_mut("spec") {
            spec.insert("nodeName".into(), Value::String(node.to_string()));
        }
        let status = bound.0.entry("status").or_insert_with(|| json!({}));
        if let Value::Object(st) = status {
            let mut conditions: Vec<Value> = st
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": timefmt::now_rfc3339()}));
            st.insert("conditions".into(), Value::Array(conditions));
        }
        Ok(bound)
    }

    /// Binds many pods in one store transaction, each with the objects `also` makes for it
    /// (the scheduler's Scheduled Event), created in the same transaction. What cannot go in
    /// the batch (a pod gone, bound or changed meanwhile) is bound alone, so one conflict
    /// costs only itself. Returns each pod's result, in order.
    pub async fn bind_all(
        &self,
        bindings: &[(Object, String)],
        also: impl Fn(&Object) -> Vec<(&'static ResourceKind, Object)>,
        user: &str,
    ) -> Vec<ApiResult<Object>> {
        let Some(kind) = kinds::resolve("pods") else {
            return Vec::new();
        };
        let mut results: Vec<Option<ApiResult<Object>>> = Vec::with_capacity(bindings.len());
        let mut txn = Txn::default();
        let mut batched = Vec::new();
        for (i, (pod, node)) in bindings.iter().enumerate() {
            // The caller's copy of the pod is the base; the compare refuses it if it is stale.
            let seen: u64 = pod.resource_version().parse().unwrap_or(0);
            // The pod's value is sealed (when its kind is encrypted) before it joins the batch.
            let bound = Self::bound(pod, node).and_then(|b| {
                let key = Self::key(kind, pod.namespace(), pod.name());
                let value = self.encode(&key, &b)?;
                Ok((key, value, b))
            });
            match bound {
                Ok((key, value, bound)) => {
                    txn = txn
                        .when(Compare::mod_revision(key.clone(), CompareOp::Equal, seen))
                        .then(Op::Put {
                            key,
                            value,
                            lease: 0,
                        });
                    for (kind, obj) in also(&bound) {
                        let ns = obj.namespace().map(String::from);
                        if let Ok((key, obj)) = self.prepare_create(kind, ns.as_deref(), obj)
                            && let Ok(value) = self.encode(&key, &obj)
                        {
                            txn = txn
                                .when(Compare::mod_revision(key.clone(), CompareOp::Equal, 0))
                                .then(Op::Put {
                                    key,
                                    value,
                                    lease: 0,
                                });
                        }
                    }
                    batched.push((i, bound));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if !batched.is_empty() {
            match self.store.txn(txn, Origin::new(user, "bind")).await {
                Ok(r) if r.succeeded => {
                    for (i, mut bound) in batched {
                        bound.set_meta("resourceVersion", r.revision.to_string());
                        results[i] = Some(Ok(bound));
                    }
                }
                // Someone changed one of them: each goes alone.
                _ => {
                    for (i, _) in batched {
                        let (pod, node) = &bindings[i];
                        let ns = pod.namespace().unwrap_or("default");
                        let r = self.bind(ns, pod.name(), node, user, false).await;
                        if let Ok(bound) = &r {
                            for (kind, obj) in also(bound) {
                                let ns = obj.namespace().map(String::from);
                                let _ = self.create(kind, ns.as_deref(), obj, user, false).await;
                            }
                        }
                        results[i] = Some(r);
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::internal("binding lost"))))
            .collect()
    }
}

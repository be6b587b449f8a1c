//! Pod Security admission: holds pods to the level their namespace enforces (403 naming each
//! broken rule and the level), warns about pods and pod templates that break the namespace's
//! `warn` (and, for templates, `enforce`) level, and records `audit` breaches as Events.
//!
//! Warnings go back to the client as `Warning: 299 - "..."` response headers, which kubectl
//! prints. They are gathered per request in a task-local (see `scope`), so every write path a
//! request takes (create, update, patch) can add them without changing its signature;
//! controllers' own writes have no scope and their warnings are dropped.

use std::cell::RefCell;

use berth_api::podsecurity::{self, Level, NamespacePolicy};
use berth_api::{Object, ResourceKind, kinds};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Runs a request's handling, returning what it produced and the warnings it gathered.
pub async fn scope<F: std::future::Future>(f: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let out = f.await;
            let warnings = WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()));
            (out, warnings)
        })
        .await
}

/// Adds a warning to the current request (nothing outside a request's scope).
pub fn warn(message: String) {
    let _ = WARNINGS.try_with(|w| {
        let mut w = w.borrow_mut();
        if !w.contains(&message) {
            w.push(message);
        }
    });
}

/// A `Warning` header's value: code 299, no agent, the text as a quoted string.
pub fn header_value(message: &str) -> String {
    let escaped = message.replace('\\', "\\\\").replace('"', "\\\"");
    // Header values may not hold control characters.
    let clean: String = escaped
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("299 - \"{clean}\"")
}

/// The policy of namespace `ns`, from its labels.
pub fn policy_of(registry: &Registry, ns: &str) -> ApiResult<NamespacePolicy> {
    let nsk =
        kinds::resolve("namespaces").ok_or_else(|| ApiError::internal("namespace kind missing"))?;
    let labels = match registry.get(nsk, None, ns) {
        Ok(o) => o
            .metadata()
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned(),
        Err(e) if e.code() == 404 => None,
        Err(e) => return Err(e),
    };
    Ok(podsecurity::namespace_policy(ns, labels.as_ref()))
}

/// The pod spec an object carries: a pod's own, or a workload's template's.
fn pod_spec<'a>(kind: &ResourceKind, obj: &'a Object) -> Option<&'a Value> {
    match kind.kind {
        "Pod" => obj.get("spec"),
        "Deployment" | "ReplicaSet" => obj.get("spec")?.get("template")?.get("spec"),
        _ => None,
    }
}

/// What an admitted write must still record once it is stored: its audit breaches.
#[derive(Debug, Default)]
pub struct Admitted {
    pub audit: Option<String>,
}

/// Admits (or refuses) the write of `obj`. Pods breaking the enforced level are refused with
/// 403; workloads only get warnings, as Kubernetes gives them.
pub fn admit(registry: &Registry, kind: &ResourceKind, obj: &Object) -> ApiResult<Admitted> {
    let Some(spec) = pod_spec(kind, obj) else {
        return Ok(Admitted::default());
    };
    let policy = policy_of(registry, obj.namespace().unwrap_or("default"))?;
    let enforced = podsecurity::check(policy.enforce, spec);
    if !enforced.is_empty() {
        if kind.kind == "Pod" {
            return Err(ApiError::forbidden(podsecurity::forbidden_message(
                obj.name(),
                policy.enforce,
                &enforced,
            ))
            .with_details(kind, obj.name()));
        }
        warn(podsecurity::warning_message(policy.enforce, &enforced));
    }
    if let Some(level) = policy
        .warn
        .filter(|l| *l != policy.enforce || kind.kind != "Pod")
    {
        let v = podsecurity::check(level, spec);
        if !v.is_empty() {
            warn(podsecurity::warning_message(level, &v));
        }
    }
    let audit = policy.audit.and_then(|level| {
        let v = podsecurity::check(level, spec);
        (!v.is_empty()).then(|| podsecurity::warning_message(level, &v))
    });
    Ok(Admitted { audit })
}

/// Records an admitted object's audit breaches as a Warning Event on it.
pub async fn record(registry: &Registry, obj: &Object, admitted: Admitted) {
    if let Some(message) = admitted.audit {
        // Boxed: recording is itself a create (of an Event), which admits nothing further.
        Box::pin(crate::events::record(
            registry,
            crate::events::POD_SECURITY,
            obj,
            "Warning",
            "PodSecurityAudit",
            &message,
        ))
        .await;
    }
}

/// When a namespace's enforced level changes: a warning per pod already in it that breaks
/// the new level (the pods keep running), as Kubernetes warns.
pub fn check_existing_pods(registry: &Registry, old: &Object, new: &Object) -> ApiResult<()> {
    let ns = new.name();
    let labels = |o: &Object| {
        o.metadata()
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned()
    };
    let before = podsecurity::namespace_policy(ns, labels(old).as_ref()).enforce;
    let after = podsecurity::namespace_policy(ns, labels(new).as_ref()).enforce;
    if before == after || after == Level::Privileged {
        return Ok(());
    }
    let Some(pk) = kinds::resolve("pods") else {
        return Ok(());
    };
    let pods = registry.list(pk, Some(ns), &Default::default())?;
    let mut first = true;
    for p in &pods.items {
        let v = podsecurity::check(after, p.get("spec").unwrap_or(&Value::Null));
        if v.is_empty() {
            continue;
        }
        if first {
            warn(format!(
                "existing pods in namespace \"{ns}\" violate the new PodSecurity enforce level {}",
                podsecurity::policy_name(after)
            ));
            first = false;
        }
        warn(format!("{}: {}", p.name(), v.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_quoted_and_cannot_break_the_header() {
        assert_eq!(
            header_value("would violate \"x\" a\\b"),
            "299 - \"would violate \\\"x\\\" a\\\\b\""
        );
        let v = header_value("line\r\nInjected: yes");
        assert!(!v.contains('\r') && !v.contains('\n'), "{v}");
        assert!(axum::http::HeaderValue::from_str(&v).is_ok());
    }

    #[tokio::test]
    async fn warnings_belong_to_their_request() {
        // Outside a request nothing is kept; inside, each is kept once, in order.
        warn("lost".into());
        let ((), w) = scope(async {
            warn("a".into());
            warn("b".into());
            warn("a".into());
        })
        .await;
        assert_eq!(w, vec!["a", "b"]);
        let ((), w) = scope(async {}).await;
        assert!(w.is_empty());
    }
}

//! Reviews: questions a client creates and the server answers in the same request, never
//! storing them, as kube-apiserver answers them (`kubectl auth can-i`, `kubectl auth whoami`):
//!
//! - `SelfSubjectAccessReview`: may I do this? `SubjectAccessReview`: may this user (with
//!   these groups) do this? `LocalSubjectAccessReview`: the same, within the namespace of the
//!   URL. The question is `spec.resourceAttributes` (verb, group, resource, subresource,
//!   namespace, name) or `spec.nonResourceAttributes` (verb, path); the answer
//!   `status.allowed` and, when allowed, `status.reason` (the binding and role that allow).
//! - `SelfSubjectRulesReview`: what may I do in `spec.namespace`? `status.resourceRules` and
//!   `status.nonResourceRules`, every rule bound to the caller there and cluster-wide.
//! - `SelfSubjectReview`: who am I? `status.userInfo` as the server authenticated the caller.
//!
//! Who may ask is RBAC's to decide like any other request (`create` on the review's
//! resource: every authenticated user may ask about themselves; asking about others takes a
//! role that grants it, as `system:node` and `cluster-admin` do).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_api::kinds::ResourceKind;
use berth_api::rbac::{PolicyRule, Request, ResourceRequest};
use berth_api::status::FieldError;
use serde_json::{Map, Value, json};

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or("").to_string()
}

fn invalid(kind: &ResourceKind, field: &str, why: &str) -> ApiError {
    ApiError::invalid(kind, "", &[FieldError::invalid(field, "null", why)])
}

/// The question of an access review's `spec`.
fn question(kind: &ResourceKind, spec: &Value, url_ns: Option<&str>) -> ApiResult<Request> {
    let (res, non) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    match (res.is_object(), non.is_object()) {
        (true, false) => {
            let mut namespace = text(res, "namespace");
            if let Some(ns) = url_ns {
                if namespace.is_empty() {
                    namespace = ns.to_string();
                } else if namespace != ns {
                    return Err(invalid(
                        kind,
                        "spec.resourceAttributes.namespace",
                        "must match metadata.namespace",
                    ));
                }
            }
            Ok(Request::Resource(ResourceRequest {
                verb: text(res, "verb"),
                api_group: text(res, "group"),
                resource: text(res, "resource"),
                subresource: text(res, "subresource"),
                namespace,
                name: text(res, "name"),
            }))
        }
        (false, true) => Ok(Request::NonResource {
            verb: text(non, "verb"),
            path: text(non, "path"),
        }),
        _ => Err(invalid(
            kind,
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// The user an access review asks about.
fn subject(kind: &ResourceKind, spec: &Value, caller: &UserInfo) -> ApiResult<UserInfo> {
    if kind.kind == "SelfSubjectAccessReview" {
        return Ok(caller.clone());
    }
    let user = text(spec, "user");
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(String::from))
        .collect();
    if user.is_empty() && groups.is_empty() {
        return Err(invalid(
            kind,
            "spec.user",
            "at least one of user or group must be specified",
        ));
    }
    Ok(UserInfo {
        name: user,
        uid: text(spec, "uid"),
        groups,
    })
}

/// The rules of a `SelfSubjectRulesReview`'s status, as Kubernetes lists them.
fn rules_status(rules: &[PolicyRule]) -> Value {
    let strings = |v: &[String]| -> Value { v.iter().map(|s| Value::from(s.as_str())).collect() };
    let mut resource = Vec::new();
    let mut non_resource = Vec::new();
    for r in rules {
        if !r.non_resource_urls.is_empty() {
            non_resource.push(
                json!({"verbs": strings(&r.verbs), "nonResourceURLs": strings(&r.non_resource_urls)}),
            );
        }
        if !r.resources.is_empty() {
            let mut m = Map::new();
            m.insert("verbs".into(), strings(&r.verbs));
            m.insert("apiGroups".into(), strings(&r.api_groups));
            m.insert("resources".into(), strings(&r.resources));
            if !r.resource_names.is_empty() {
                m.insert("resourceNames".into(), strings(&r.resource_names));
            }
            resource.push(Value::Object(m));
        }
    }
    json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
}

/// Answers a review: `201 Created` with the request's object and its `status` filled in.
pub(crate) fn answer(
    s: &ApiServer,
    method: &Method,
    kind: &'static ResourceKind,
    url_ns: Option<&str>,
    body: &[u8],
    caller: &UserInfo,
) -> ApiResult<Response> {
    if method != Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "{} can only be created: they are answered, not stored",
                kind.plural
            ),
        ));
    }
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON {}: {e}", kind.kind)))?;
    if !review.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body is not a JSON {}",
            kind.kind
        )));
    }
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let status = match kind.kind {
        "SelfSubjectReview" => json!({"userInfo": {
            "username": caller.name, "uid": caller.uid, "groups": caller.groups}}),
        "SelfSubjectRulesReview" => {
            let ns = text(&spec, "namespace");
            rules_status(&s.authz.rules_for(caller, &ns))
        }
        _ => {
            let request = question(kind, &spec, url_ns)?;
            let who = subject(kind, &spec, caller)?;
            match s.authz.allows(&who, &request) {
                Some(reason) => json!({"allowed": true, "reason": reason}),
                None => json!({"allowed": false}),
            }
        }
    };
    review["apiVersion"] = json!(kind.api_version());
    review["kind"] = json!(kind.kind);
    review["status"] = status;
    Ok((StatusCode::CREATED, axum::Json(review)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_come_from_resource_or_non_resource_attributes() {
        let ssar = berth_api::kinds::resolve("selfsubjectaccessreviews").unwrap();
        let lsar = berth_api::kinds::resolve("localsubjectaccessreviews").unwrap();
        let spec = json!({"resourceAttributes": {"verb": "get", "resource": "pods", "subresource": "log", "namespace": "a", "name": "p"}});
        assert_eq!(
            question(ssar, &spec, None).unwrap(),
            Request::Resource(ResourceRequest {
                verb: "get".into(),
                resource: "pods".into(),
                subresource: "log".into(),
                namespace: "a".into(),
                name: "p".into(),
                ..ResourceRequest::default()
            })
        );
        // A local review is about its own namespace only.
        assert_eq!(question(lsar, &spec, Some("a")).unwrap().namespace(), "a");
        assert_eq!(question(lsar, &spec, Some("b")).unwrap_err().code(), 422);
        let open = json!({"resourceAttributes": {"verb": "list", "resource": "pods"}});
        assert_eq!(question(lsar, &open, Some("b")).unwrap().namespace(), "b");
        let path = json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
        assert!(matches!(
            question(ssar, &path, None).unwrap(),
            Request::NonResource { .. }
        ));
        for bad in [
            json!({}),
            json!({"resourceAttributes": {}, "nonResourceAttributes": {}}),
        ] {
            let e = question(ssar, &bad, None).unwrap_err();
            assert_eq!(e.code(), 422);
            assert!(e.to_string().contains("exactly one of"), "{e}");
        }
    }
}

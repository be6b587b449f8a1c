//! RBAC objects (Roles, ClusterRoles, their bindings), ServiceAccounts and
//! CertificateSigningRequests (how nodes get their identities), checked as
//! kube-apiserver checks them: every rule names its verbs and either resources (with API
//! groups) or non-resource URLs (ClusterRoles only); every binding refers to a role and names
//! subjects of a kind it knows.

use serde_json::Value;

use super::walker::{V, describe};
use crate::names;
use crate::object::Object;
use crate::status::FieldError;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A list whose items must all be strings; returns how many there are.
fn strings(v: &mut V, path: &str, value: Option<&Value>) -> usize {
    let items = v.arr(path, value);
    for (i, s) in items.iter().enumerate() {
        v.str(&format!("{path}[{i}]"), Some(s));
    }
    items.len()
}

fn validate_rules(v: &mut V, obj: &Object, namespaced: bool) {
    for (i, r) in v.arr("rules", obj.get("rules")).iter().enumerate() {
        let p = format!("rules[{i}]");
        let Some(m) = v.obj(&p, Some(r)) else {
            continue;
        };
        if strings(v, &format!("{p}.verbs"), m.get("verbs")) == 0 {
            v.push(
                FieldError::required(format!("{p}.verbs")).with_message(format!(
                    "{p}.verbs: Required value: verbs must contain at least one value"
                )),
            );
        }
        let groups = strings(v, &format!("{p}.apiGroups"), m.get("apiGroups"));
        let resources = strings(v, &format!("{p}.resources"), m.get("resources"));
        let names = strings(v, &format!("{p}.resourceNames"), m.get("resourceNames"));
        let urls = strings(v, &format!("{p}.nonResourceURLs"), m.get("nonResourceURLs"));
        if urls > 0 {
            if namespaced {
                v.push(FieldError::invalid(
                    format!("{p}.nonResourceURLs"),
                    describe(&m["nonResourceURLs"]),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if groups > 0 || resources > 0 || names > 0 {
                v.push(FieldError::invalid(
                    format!("{p}.nonResourceURLs"),
                    describe(&m["nonResourceURLs"]),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if groups == 0 {
            v.push(
                FieldError::required(format!("{p}.apiGroups")).with_message(format!(
                    "{p}.apiGroups: Required value: resource rules must supply at least one api group"
                )),
            );
        }
        if resources == 0 {
            v.push(
                FieldError::required(format!("{p}.resources")).with_message(format!(
                    "{p}.resources: Required value: resource rules must supply at least one resource"
                )),
            );
        }
    }
}

pub(super) fn validate_role(v: &mut V, obj: &Object) {
    validate_rules(v, obj, true);
}

pub(super) fn validate_cluster_role(v: &mut V, obj: &Object) {
    validate_rules(v, obj, false);
    if let Some(a) = v.obj("aggregationRule", obj.get("aggregationRule")) {
        let selectors = v.arr(
            "aggregationRule.clusterRoleSelectors",
            a.get("clusterRoleSelectors"),
        );
        if selectors.is_empty() {
            v.push(FieldError::required("aggregationRule.clusterRoleSelectors"));
        }
        for (i, s) in selectors.iter().enumerate() {
            if let Err(e) = crate::selector::LabelSelector::from_object(s) {
                v.push(FieldError::invalid(
                    format!("aggregationRule.clusterRoleSelectors[{i}]"),
                    describe(s),
                    &e,
                ));
            }
        }
    }
}

fn validate_binding(v: &mut V, obj: &Object, namespaced: bool) {
    match v.obj("roleRef", obj.get("roleRef")) {
        Some(r) => {
            if let Some(g) = v.str("roleRef.apiGroup", r.get("apiGroup"))
                && g != RBAC_GROUP
            {
                v.push(FieldError::not_supported(
                    "roleRef.apiGroup",
                    g,
                    &[RBAC_GROUP],
                ));
            }
            let kinds: &[&str] = if namespaced {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if r.get("kind").is_none() {
                v.push(FieldError::required("roleRef.kind"));
            }
            v.one_of("roleRef.kind", r.get("kind"), kinds);
            if let Some(n) = v.req_str("roleRef.name", r.get("name"))
                && let Some(e) = names::path_segment_name(n)
            {
                v.push(FieldError::invalid("roleRef.name", format!("\"{n}\""), &e));
            }
        }
        None => v.push(FieldError::required("roleRef")),
    }
    for (i, s) in v.arr("subjects", obj.get("subjects")).iter().enumerate() {
        let p = format!("subjects[{i}]");
        let Some(m) = v.obj(&p, Some(s)) else {
            continue;
        };
        let name = v.req_str(&format!("{p}.name"), m.get("name"));
        if m.get("kind").is_none() {
            v.push(FieldError::required(format!("{p}.kind")));
        }
        let kind = v.one_of(
            &format!("{p}.kind"),
            m.get("kind"),
            &["ServiceAccount", "User", "Group"],
        );
        let group = v
            .str(&format!("{p}.apiGroup"), m.get("apiGroup"))
            .unwrap_or("");
        let ns = v
            .str(&format!("{p}.namespace"), m.get("namespace"))
            .unwrap_or("");
        match kind.as_deref() {
            Some("ServiceAccount") => {
                if !group.is_empty() {
                    v.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        group,
                        &[""],
                    ));
                }
                if let Some(n) = name
                    && let Some(e) = names::dns1123_subdomain(n)
                {
                    v.push(FieldError::invalid(
                        format!("{p}.name"),
                        format!("\"{n}\""),
                        &e,
                    ));
                }
                if !namespaced && ns.is_empty() {
                    v.push(FieldError::required(format!("{p}.namespace")));
                }
            }
            Some("User" | "Group") if group != RBAC_GROUP => {
                v.push(FieldError::not_supported(
                    format!("{p}.apiGroup"),
                    group,
                    &[RBAC_GROUP],
                ));
            }
            _ => {}
        }
    }
}

pub(super) fn validate_role_binding(v: &mut V, obj: &Object) {
    validate_binding(v, obj, true);
}

pub(super) fn validate_cluster_role_binding(v: &mut V, obj: &Object) {
    validate_binding(v, obj, false);
}

pub(super) fn validate_service_account(v: &mut V, obj: &Object) {
    v.bool(
        "automountServiceAccountToken",
        obj.get("automountServiceAccountToken"),
    );
    for list in ["secrets", "imagePullSecrets"] {
        for (i, s) in v.arr(list, obj.get(list)).iter().enumerate() {
            if let Some(m) = v.obj(&format!("{list}[{i}]"), Some(s)) {
                v.str(&format!("{list}[{i}].name"), m.get("name"));
            }
        }
    }
}

/// The signers berth's control plane runs (`kube-apiserver-client-kubelet` for node
/// agents, approved automatically; `kube-apiserver-client` for users, approved by an admin).
pub const SIGNERS: &[&str] = &[
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kube-apiserver-client",
];

/// Kubernetes' key usages a client certificate may ask for.
const USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

pub(super) fn validate_csr(v: &mut V, obj: &Object) {
    let Some(spec) = v.obj("spec", obj.get("spec")) else {
        v.push(FieldError::required("spec"));
        return;
    };
    if let Some(r) = v.req_str("spec.request", spec.get("request")) {
        let pem = crate::base64::decode(r).and_then(|b| String::from_utf8(b).ok());
        if !pem.is_some_and(|p| p.contains("-----BEGIN CERTIFICATE REQUEST-----")) {
            v.push(FieldError::invalid(
                "spec.request",
                "<the request>",
                "must be a base64-encoded PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)",
            ));
        }
    }
    if spec.get("signerName").is_none() {
        v.push(FieldError::required("spec.signerName"));
    }
    v.one_of("spec.signerName", spec.get("signerName"), SIGNERS);
    for (i, u) in v.arr("spec.usages", spec.get("usages")).iter().enumerate() {
        v.one_of(&format!("spec.usages[{i}]"), Some(u), USAGES);
    }
    if let Some(n) = v.int("spec.expirationSeconds", spec.get("expirationSeconds"))
        && n < 600
    {
        v.push(FieldError::invalid(
            "spec.expirationSeconds",
            n,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
}

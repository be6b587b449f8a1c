//! The registry of kinds berth serves: group, version, plural, scope and short names.

/// One served resource type, as discovery (`/api/v1`, `/apis/apps/v1`) describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether the kind has a `status` subresource (and therefore a `metadata.generation`).
    pub has_status: bool,
}

impl ResourceKind {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` for the core group, `deployments.apps` otherwise; the form kubectl prints.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `pod` or `deployment.apps`: the prefix of `deployment.apps/web created`.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// The URL path of the collection, in a namespace when the kind is namespaced.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    /// Whether the kind has a `scale` subresource (`kubectl scale`).
    /// Whether it is a review (an access review, `SelfSubjectReview`): a question created and
    /// answered in one request, never stored, with `create` its only verb.
    pub fn is_review(&self) -> bool {
        matches!(self.group, "authorization.k8s.io" | "authentication.k8s.io")
    }

    pub fn has_scale(&self) -> bool {
        matches!(self.kind, "Deployment" | "ReplicaSet")
    }

    /// The store key prefix of every object of this kind (`/registry/core/pods/`).
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

macro_rules! kind {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, [$($short:expr),*], $status:expr) => {
        ResourceKind {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            has_status: $status,
        }
    };
}

/// Every kind berth serves, in the order discovery lists them.
pub static KINDS: &[ResourceKind] = &[
    kind!(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        ["ns"],
        true
    ),
    kind!("", "Node", "nodes", "node", false, ["no"], true),
    kind!("", "Pod", "pods", "pod", true, ["po"], true),
    kind!("", "Service", "services", "service", true, ["svc"], true),
    kind!(
        "",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        ["ep"],
        false
    ),
    kind!(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        ["cm"],
        false
    ),
    kind!("", "Secret", "secrets", "secret", true, [], false),
    kind!("", "Event", "events", "event", true, ["ev"], false),
    kind!(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        ["rs"],
        true
    ),
    kind!(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        true,
        ["deploy"],
        true
    ),
    kind!(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        [],
        false
    ),
    kind!(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        ["ing"],
        true
    ),
    kind!(
        "berth.dev",
        "ConfigTemplate",
        "configtemplates",
        "configtemplate",
        true,
        ["ct"],
        true
    ),
    kind!(
        "coordination.k8s.io",
        "Lease",
        "leases",
        "lease",
        true,
        [],
        false
    ),
    kind!(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        ["sa"],
        false
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "Role",
        "roles",
        "role",
        true,
        [],
        false
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        [],
        false
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        [],
        false
    ),
    kind!(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        [],
        false
    ),
    kind!(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        ["csr"],
        true
    ),
    kind!(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "",
        false,
        [],
        false
    ),
    kind!(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "",
        false,
        [],
        false
    ),
    kind!(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "",
        false,
        [],
        false
    ),
    kind!(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "",
        true,
        [],
        false
    ),
    kind!(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "",
        false,
        [],
        false
    ),
];

/// Finds a kind by `apiVersion` and `kind`, as written in a manifest.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

/// Finds a kind by group and plural, as in a URL path.
pub fn by_group_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Finds a kind the way kubectl resolves what a user typed: plural, singular, short name, kind
/// (any case), optionally qualified by group (`deployments.apps`).
pub fn resolve(name: &str) -> Option<&'static ResourceKind> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    KINDS.iter().find(|k| {
        let group_ok = group.as_deref().is_none_or(|g| g == k.group);
        group_ok
            && (k.plural == base
                || k.singular == base
                || k.kind.eq_ignore_ascii_case(&base)
                || k.short_names.contains(&base.as_str()))
    })
}

/// The API groups berth serves, with the kinds in each.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KINDS {
        if !k.group.is_empty() && !out.contains(&k.group) {
            out.push(k.group);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_what_kubectl_resolves() {
        for (typed, kind) in [
            ("po", "Pod"),
            ("pods", "Pod"),
            ("pod", "Pod"),
            ("Pod", "Pod"),
            ("deploy", "Deployment"),
            ("deployments.apps", "Deployment"),
            ("rs", "ReplicaSet"),
            ("svc", "Service"),
            ("ep", "Endpoints"),
            ("cm", "ConfigMap"),
            ("ns", "Namespace"),
            ("no", "Node"),
            ("lease", "Lease"),
            ("endpointslices", "EndpointSlice"),
            ("endpointslices.discovery.k8s.io", "EndpointSlice"),
            ("ct", "ConfigTemplate"),
            ("ing", "Ingress"),
            ("ingresses.networking.k8s.io", "Ingress"),
            ("configtemplates.berth.dev", "ConfigTemplate"),
        ] {
            assert_eq!(resolve(typed).map(|k| k.kind), Some(kind), "{typed}");
        }
        assert!(resolve("deployments.core").is_none());
        assert!(resolve("widgets").is_none());
    }

    #[test]
    fn paths_and_keys() {
        let deploy = resolve("deploy").unwrap();
        assert_eq!(
            deploy.collection_path(Some("default")),
            "/apis/apps/v1/namespaces/default/deployments"
        );
        assert_eq!(
            deploy.key(Some("default"), "web"),
            "/registry/apps/deployments/default/web"
        );
        let ns = resolve("ns").unwrap();
        assert_eq!(ns.collection_path(Some("x")), "/api/v1/namespaces");
        assert_eq!(ns.key(None, "x"), "/registry/core/namespaces/x");
    }
}

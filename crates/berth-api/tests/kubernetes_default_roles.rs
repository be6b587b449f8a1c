//! The hidden-field check of berth's default roles: `view`, `edit` and `admin`, as berth
//! aggregates them, grant exactly what Kubernetes' do on the resources of Kubernetes' own API
//! groups, one permission at a time. The expected sets are written out here from Kubernetes'
//! bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy, its cluster-roles
//! fixture), restricted to the groups berth serves; berth's own groups (`berth.dev`,
//! `metrics.k8s.io`) are checked by the unit tests beside the roles.

use std::collections::BTreeSet;

use berth_api::rbac::defaults::{aggregate, cluster_roles};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

type Perms = BTreeSet<(String, String, String)>;

fn add(set: &mut Perms, verbs: &[&str], group: &str, resources: &[&str]) {
    for v in verbs {
        for r in resources {
            set.insert((v.to_string(), group.to_string(), r.to_string()));
        }
    }
}

/// Kubernetes' `view`, on the groups berth serves.
fn kubernetes_view() -> Perms {
    let mut p = Perms::new();
    add(
        &mut p,
        READ,
        "",
        &[
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "pods",
            "serviceaccounts",
            "services",
            "services/status",
            "bindings",
            "events",
            "limitranges",
            "namespaces/status",
            "pods/log",
            "pods/status",
            "resourcequotas",
            "namespaces",
        ],
    );
    add(&mut p, READ, "discovery.k8s.io", &["endpointslices"]);
    add(
        &mut p,
        READ,
        "apps",
        &[
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
        ],
    );
    add(
        &mut p,
        READ,
        "networking.k8s.io",
        &["ingresses", "ingresses/status"],
    );
    p
}

/// Kubernetes' `edit`: `view` and what `system:aggregate-to-edit` adds.
fn kubernetes_edit() -> Perms {
    let mut p = kubernetes_view();
    add(
        &mut p,
        READ,
        "",
        &[
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "secrets",
            "services/proxy",
        ],
    );
    add(&mut p, &["impersonate"], "", &["serviceaccounts"]);
    add(
        &mut p,
        WRITE,
        "",
        &[
            "pods",
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "configmaps",
            "events",
            "persistentvolumeclaims",
            "secrets",
            "serviceaccounts",
            "services",
            "services/proxy",
        ],
    );
    add(
        &mut p,
        &["create"],
        "",
        &["pods/eviction", "serviceaccounts/token"],
    );
    add(
        &mut p,
        WRITE,
        "apps",
        &[
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
        ],
    );
    add(&mut p, WRITE, "networking.k8s.io", &["ingresses"]);
    add(&mut p, READ_WRITE, "coordination.k8s.io", &["leases"]);
    p
}

/// Kubernetes' `admin`: `edit` and what `system:aggregate-to-admin` adds.
fn kubernetes_admin() -> Perms {
    let mut p = kubernetes_edit();
    add(
        &mut p,
        &["create"],
        "authorization.k8s.io",
        &["localsubjectaccessreviews"],
    );
    add(
        &mut p,
        READ_WRITE,
        "rbac.authorization.k8s.io",
        &["rolebindings", "roles"],
    );
    p
}

/// What berth's role `name` grants, one permission at a time, on Kubernetes' groups.
fn berth(name: &str) -> Perms {
    let roles = cluster_roles();
    let (_, rules) = aggregate(&roles)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no aggregated role {name}"));
    let mut p = Perms::new();
    for r in rules {
        assert!(
            r.resource_names.is_empty() && r.non_resource_urls.is_empty(),
            "{r:?}"
        );
        for g in &r.api_groups {
            if matches!(g.as_str(), "berth.dev" | "metrics.k8s.io" | "kv.berth.dev") {
                continue;
            }
            for res in &r.resources {
                for v in &r.verbs {
                    p.insert((v.clone(), g.clone(), res.clone()));
                }
            }
        }
    }
    p
}

#[test]
fn view_edit_and_admin_grant_what_kubernetes_grants() {
    for (name, want) in [
        ("view", kubernetes_view()),
        ("edit", kubernetes_edit()),
        ("admin", kubernetes_admin()),
    ] {
        let have = berth(name);
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: missing {missing:?}, beyond Kubernetes {extra:?}"
        );
    }
}

#[test]
fn the_small_default_roles_are_kubernetes_own() {
    let roles = cluster_roles();
    let rules = |name: &str| {
        let r = roles
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no role {name}"));
        serde_json::to_string(&r["rules"]).unwrap()
    };
    assert_eq!(
        rules("system:discovery"),
        r#"[{"verbs":["get"],"nonResourceURLs":["/api","/api/*","/apis","/apis/*","/healthz","/livez","/openapi","/openapi/*","/readyz","/version","/version/"]}]"#
    );
    assert_eq!(
        rules("system:public-info-viewer"),
        r#"[{"verbs":["get"],"nonResourceURLs":["/healthz","/livez","/readyz","/version","/version/"]}]"#
    );
    assert_eq!(
        rules("system:basic-user"),
        r#"[{"verbs":["create"],"apiGroups":["authorization.k8s.io"],"resources":["selfsubjectaccessreviews","selfsubjectrulesreviews"]},{"verbs":["create"],"apiGroups":["authentication.k8s.io"],"resources":["selfsubjectreviews"]}]"#
    );
    assert_eq!(
        rules("system:node-bootstrapper"),
        r#"[{"verbs":["create","get","list","watch"],"apiGroups":["certificates.k8s.io"],"resources":["certificatesigningrequests"]}]"#
    );
    assert_eq!(
        rules("cluster-admin"),
        r#"[{"verbs":["*"],"apiGroups":["*"],"resources":["*"]},{"verbs":["*"],"nonResourceURLs":["*"]}]"#
    );
}

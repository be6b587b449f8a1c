//! The roles and bindings every berth cluster starts with: Kubernetes' default ClusterRoles
//! (`cluster-admin`, `admin`, `edit`, `view`, the `system:aggregate-to-*` roles they are built
//! from, and the discovery roles) with the same rules for the resources berth serves, so a
//! policy written against them means the same here; and the role aggregation that builds
//! `admin`, `edit` and `view` from the roles labelled for them.
//!
//! berth's own resources, and where they differ from what one might expect:
//! - berth's resources reach `view`, `edit` and `admin` through roles of berth's own
//!   (`berth:aggregate-to-view`, `berth:aggregate-to-edit`), so Kubernetes' `system:aggregate-to-*`
//!   roles keep exactly Kubernetes' rules.
//! - ConfigTemplates write files on a node and may run commands there as root: `view` reads
//!   them and `edit` writes them, but a template with commands (`configtemplates/commands`) or
//!   with a destination outside the node's template directories (`configtemplates/anywhere`)
//!   takes a permission only `cluster-admin` holds (checked in admission by the API server).
//! - The key/value tree (`keys` in `kv.berth.dev`, named by key path, `/app/*` a prefix):
//!   `view` reads it and `edit` writes it, except the `/services` tree the endpoints
//!   controller keeps (the subresource `keys/services`), which `edit` only reads.
//! - Node agents (group `system:nodes`) are authorized as kubelets by the Node authorizer and
//!   hold `system:node-proxier` (kube-proxy's) and `berth:node` (Ingresses for the ingress,
//!   ConfigTemplates and the key/value tree for config generation).
//! - `metrics.k8s.io` (pods, nodes) is readable by `view`, `edit` and `admin`, through the
//!   `system:aggregated-metrics-reader` role metrics-server installs in Kubernetes.

use serde_json::{Value, json};

use super::PolicyRule;
use crate::selector::LabelSelector;

/// Kubernetes' verb sets.
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

/// The label a role carries to be folded into `admin`, `edit` or `view`.
pub fn aggregate_label(to: &str) -> String {
    format!("rbac.authorization.k8s.io/aggregate-to-{to}")
}

fn cluster_role(name: &str, labels: &[(String, &str)], rules: Vec<PolicyRule>) -> Value {
    let mut all = serde_json::Map::new();
    all.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for (k, v) in labels {
        all.insert(k.clone(), (*v).into());
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": all,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules.iter().map(PolicyRule::to_value).collect::<Vec<_>>(),
    })
}

/// An aggregated role: no rules of its own, the rules of the roles labelled `to`.
fn aggregated(name: &str, to: &str, labels: &[(String, &str)]) -> Value {
    let mut r = cluster_role(name, labels, Vec::new());
    r["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {aggregate_label(to): "true"}}]});
    r
}

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule::new(verbs, &[group], resources)
}

/// The default ClusterRoles, as Kubernetes' bootstrap policy defines them (restricted to
/// the resources berth serves), before aggregation fills `admin`, `edit` and `view`.
pub fn cluster_roles() -> Vec<Value> {
    let to = |r: &str| (aggregate_label(r), "true");
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![
                PolicyRule::new(&["*"], &["*"], &["*"]),
                PolicyRule::urls(&["*"], &["*"]),
            ],
        ),
        aggregated("admin", "admin", &[]),
        aggregated("edit", "edit", &[to("admin")]),
        aggregated("view", "view", &[to("edit")]),
        cluster_role(
            "system:aggregate-to-admin",
            &[to("admin")],
            vec![
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    READ_WRITE,
                    "rbac.authorization.k8s.io",
                    &["rolebindings", "roles"],
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[to("edit")],
            vec![
                rule(
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
                ),
                rule(&["impersonate"], "", &["serviceaccounts"]),
                rule(
                    WRITE,
                    "",
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(&["create"], "", &["pods/eviction"]),
                rule(
                    WRITE,
                    "",
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], "", &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    "apps",
                    &[
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(WRITE, "networking.k8s.io", &["ingresses"]),
                rule(READ_WRITE, "coordination.k8s.io", &["leases"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[to("view")],
            vec![
                rule(
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
                    ],
                ),
                rule(
                    READ,
                    "",
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "resourcequotas",
                    ],
                ),
                rule(READ, "", &["namespaces"]),
                rule(READ, "discovery.k8s.io", &["endpointslices"]),
                rule(
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
                ),
                rule(
                    READ,
                    "networking.k8s.io",
                    &["ingresses", "ingresses/status"],
                ),
            ],
        ),
        cluster_role(
            "berth:aggregate-to-edit",
            &[to("edit")],
            vec![
                rule(WRITE, "berth.dev", &["configtemplates"]),
                rule(WRITE, super::KV_GROUP, &["keys"]),
            ],
        ),
        cluster_role(
            "berth:aggregate-to-view",
            &[to("view")],
            vec![
                rule(
                    READ,
                    "berth.dev",
                    &["configtemplates", "configtemplates/status"],
                ),
                rule(READ, super::KV_GROUP, &["keys", "keys/services"]),
            ],
        ),
        cluster_role(
            "system:aggregated-metrics-reader",
            &[to("view"), to("edit"), to("admin")],
            vec![rule(READ, "metrics.k8s.io", &["nodes", "pods"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    "authentication.k8s.io",
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role("system:node", &[], {
            // What the Node authorizer allows a node only through its pods, listed here as
            // Kubernetes lists them in the role.
            let mut rules = node_rules();
            rules.extend([
                rule(READ, "", &["configmaps", "secrets"]),
                rule(&["get"], "", &["persistentvolumeclaims"]),
                rule(&["create"], "", &["serviceaccounts/token"]),
            ]);
            rules
        }),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                "certificates.k8s.io",
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], "", &["endpoints", "services"]),
                rule(READ, "", &["nodes"]),
                rule(&["create", "patch", "update"], "", &["events"]),
                rule(&["list", "watch"], "discovery.k8s.io", &["endpointslices"]),
            ],
        ),
        cluster_role(
            "berth:node",
            &[],
            vec![
                rule(&["list", "watch"], "networking.k8s.io", &["ingresses"]),
                rule(READ, "berth.dev", &["configtemplates"]),
                rule(
                    &["patch", "update"],
                    "berth.dev",
                    &["configtemplates/status"],
                ),
                rule(READ, super::KV_GROUP, &["keys", "keys/services"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
    ]
}

/// What every kubelet does, the Node authorizer's static rules (Kubernetes' `system:node`
/// role without what a node reaches only through its pods: Secrets, ConfigMaps,
/// PersistentVolumeClaims and ServiceAccount tokens).
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
        rule(
            &["create"],
            "authorization.k8s.io",
            &["localsubjectaccessreviews", "subjectaccessreviews"],
        ),
        rule(READ, "", &["services"]),
        rule(&["create", "get", "list", "watch"], "", &["nodes"]),
        rule(&["patch", "update"], "", &["nodes/status"]),
        rule(&["patch", "update"], "", &["nodes"]),
        rule(&["create", "patch", "update"], "", &["events"]),
        rule(READ, "", &["pods"]),
        rule(&["create", "delete"], "", &["pods"]),
        rule(&["patch", "update"], "", &["pods/status"]),
        rule(&["create"], "", &["pods/eviction"]),
        rule(&["get"], "", &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            "certificates.k8s.io",
            &["certificatesigningrequests"],
        ),
        rule(
            &["create", "delete", "get", "patch", "update"],
            "coordination.k8s.io",
            &["leases"],
        ),
    ]
}

fn cluster_role_binding(role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The default ClusterRoleBindings: `cluster-admin` to `system:masters`, and the discovery
/// roles to every authenticated user (and the public one to anyone).
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_role_binding("cluster-admin", &["system:masters"]),
        cluster_role_binding("system:discovery", &["system:authenticated"]),
        cluster_role_binding("system:basic-user", &["system:authenticated"]),
        cluster_role_binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        // A node agent is the kubelet, kube-proxy and an ingress controller in one: the Node
        // authorizer allows what a kubelet does (so `system:node` is bound to no one, as in
        // Kubernetes), and the nodes hold kube-proxy's role and berth's.
        cluster_role_binding("system:node", &[]),
        cluster_role_binding("system:node-proxier", &["system:nodes"]),
        cluster_role_binding("berth:node", &["system:nodes"]),
        // A join token asks for a node identity and can do nothing else.
        cluster_role_binding("system:node-bootstrapper", &["system:bootstrappers"]),
    ]
}

fn labels_of(role: &Value) -> std::collections::BTreeMap<String, String> {
    role["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// The rules of every aggregated ClusterRole among `roles` (those with an
/// `aggregationRule`): the union, without repeats, of the rules of every other ClusterRole
/// one of its selectors picks, in the order of their names, as Kubernetes' aggregation
/// controller writes them. Aggregated roles that feed others (`edit` into `admin`) are
/// followed to the end. Returns (name, rules) for each aggregated role.
pub fn aggregate(roles: &[Value]) -> Vec<(String, Vec<PolicyRule>)> {
    let name = |r: &Value| r["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut sorted: Vec<&Value> = roles.iter().collect();
    sorted.sort_by_key(|r| name(r));
    let mut rules: std::collections::BTreeMap<String, Vec<PolicyRule>> = sorted
        .iter()
        .map(|r| (name(r), super::rules_of(r)))
        .collect();
    let aggregated: Vec<(String, Vec<LabelSelector>)> = sorted
        .iter()
        .filter_map(|r| {
            let selectors = r["aggregationRule"]["clusterRoleSelectors"].as_array()?;
            Some((
                name(r),
                selectors
                    .iter()
                    .filter_map(|s| LabelSelector::from_object(s).ok())
                    // An empty selector would pick every role: Kubernetes ignores it too.
                    .filter(|s| !s.is_empty())
                    .collect(),
            ))
        })
        .collect();
    // Each round can carry rules one aggregation further; as many rounds as there are
    // aggregated roles reach the end of any chain.
    for _ in 0..=aggregated.len() {
        let mut changed = false;
        for (target, selectors) in &aggregated {
            let mut union: Vec<PolicyRule> = Vec::new();
            for r in &sorted {
                let n = name(r);
                if &n == target || !selectors.iter().any(|s| s.matches(&labels_of(r))) {
                    continue;
                }
                for rule in rules.get(&n).into_iter().flatten() {
                    if !union.contains(rule) {
                        union.push(rule.clone());
                    }
                }
            }
            if rules.get(target) != Some(&union) {
                rules.insert(target.clone(), union);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    aggregated
        .into_iter()
        .map(|(n, _)| {
            let r = rules.remove(&n).unwrap_or_default();
            (n, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Policy, Request, ResourceRequest, User};
    use super::*;

    /// The defaults with aggregation applied, as a server holds them.
    fn policy() -> Policy {
        let mut roles = cluster_roles();
        for (name, rules) in aggregate(&roles) {
            let r = roles
                .iter_mut()
                .find(|r| r["metadata"]["name"] == name.as_str())
                .unwrap();
            r["rules"] = rules.iter().map(PolicyRule::to_value).collect();
        }
        let mut p = Policy::default();
        for o in roles.iter().chain(&cluster_role_bindings()) {
            p.put(o);
        }
        p
    }

    fn can(p: &Policy, role: &str, verb: &str, group: &str, resource: &str) -> bool {
        let mut p = p.clone();
        p.put(
            &json!({"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "ns"},
            "roleRef": {"kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "u"}]}),
        );
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let req = Request::Resource(ResourceRequest {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: "x".into(),
        });
        let u = User {
            name: "u".into(),
            groups: vec![],
        };
        p.authorize(&u, &req).is_some()
    }

    #[test]
    fn view_edit_and_admin_mean_what_they_mean_in_kubernetes() {
        let p = policy();
        // view: reads, but no Secrets and no way into a container.
        assert!(can(&p, "view", "list", "", "pods"));
        assert!(can(&p, "view", "get", "", "pods/log"));
        assert!(can(&p, "view", "get", "apps", "deployments/scale"));
        assert!(can(&p, "view", "list", "metrics.k8s.io", "pods"));
        assert!(!can(&p, "view", "get", "", "secrets"));
        assert!(!can(&p, "view", "create", "", "pods/exec"));
        assert!(!can(&p, "view", "delete", "", "pods"));
        // edit: view plus writes, Secrets and exec; no RBAC, ConfigTemplates without
        // commands and inside the node's directories, the key/value tree but `/services`.
        assert!(can(&p, "edit", "list", "", "pods"));
        assert!(can(&p, "edit", "delete", "", "pods"));
        assert!(can(&p, "edit", "get", "", "secrets"));
        assert!(can(&p, "edit", "create", "", "pods/exec"));
        assert!(can(&p, "edit", "update", "apps", "deployments/scale"));
        assert!(!can(
            &p,
            "edit",
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings"
        ));
        assert!(can(&p, "edit", "create", "berth.dev", "configtemplates"));
        assert!(can(&p, "edit", "update", "berth.dev", "configtemplates"));
        assert!(can(&p, "edit", "delete", "berth.dev", "configtemplates"));
        assert!(!can(
            &p,
            "edit",
            "update",
            "berth.dev",
            "configtemplates/status"
        ));
        for sub in ["configtemplates/commands", "configtemplates/anywhere"] {
            for role in ["view", "edit", "admin"] {
                assert!(!can(&p, role, "create", "berth.dev", sub), "{role} {sub}");
            }
            assert!(can(&p, "cluster-admin", "create", "berth.dev", sub));
        }
        assert!(can(&p, "view", "get", "kv.berth.dev", "keys"));
        assert!(can(&p, "view", "list", "kv.berth.dev", "keys/services"));
        assert!(!can(&p, "view", "update", "kv.berth.dev", "keys"));
        assert!(can(&p, "edit", "update", "kv.berth.dev", "keys"));
        assert!(can(&p, "edit", "deletecollection", "kv.berth.dev", "keys"));
        assert!(can(&p, "edit", "get", "kv.berth.dev", "keys/services"));
        assert!(!can(&p, "edit", "update", "kv.berth.dev", "keys/services"));
        assert!(!can(&p, "admin", "delete", "kv.berth.dev", "keys/services"));
        assert!(!can(&p, "edit", "update", "", "endpoints"));
        // admin: edit plus the namespace's RBAC.
        assert!(can(&p, "admin", "delete", "", "pods"));
        assert!(can(
            &p,
            "admin",
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings"
        ));
        assert!(!can(
            &p,
            "admin",
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles"
        ));
        assert!(can(&p, "admin", "create", "berth.dev", "configtemplates"));
        assert!(!can(
            &p,
            "admin",
            "bind",
            "rbac.authorization.k8s.io",
            "roles"
        ));
        // cluster-admin: everything.
        assert!(can(
            &p,
            "cluster-admin",
            "create",
            "berth.dev",
            "configtemplates"
        ));
        assert!(can(
            &p,
            "cluster-admin",
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles"
        ));
    }

    #[test]
    fn aggregation_follows_chains_and_drops_repeats() {
        let roles = cluster_roles();
        let out: std::collections::BTreeMap<String, Vec<PolicyRule>> =
            aggregate(&roles).into_iter().collect();
        let (view, edit, admin) = (&out["view"], &out["edit"], &out["admin"]);
        assert!(view.iter().all(|r| edit.contains(r)));
        assert!(edit.iter().all(|r| admin.contains(r)));
        assert!(admin.len() > edit.len() && edit.len() > view.len());
        // The metrics reader is folded into all three, once each.
        let metrics = rule(READ, "metrics.k8s.io", &["nodes", "pods"]);
        for rules in [view, edit, admin] {
            assert_eq!(rules.iter().filter(|r| **r == metrics).count(), 1);
        }
        // A role that picks itself does not feed on itself.
        let selfish = vec![
            aggregated("loop", "loop", &[(aggregate_label("loop"), "true")]),
            cluster_role(
                "leaf",
                &[(aggregate_label("loop"), "true")],
                vec![rule(READ, "", &["pods"])],
            ),
        ];
        assert_eq!(
            aggregate(&selfish),
            [("loop".to_string(), vec![rule(READ, "", &["pods"])])]
        );
    }

    #[test]
    fn discovery_is_open_to_everyone_authenticated_and_health_to_anyone() {
        let p = policy();
        let get = |path: &str| Request::NonResource {
            verb: "get".into(),
            path: path.into(),
        };
        let anyone = User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        };
        let someone = User {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert!(p.authorize(&anyone, &get("/healthz")).is_some());
        assert!(p.authorize(&anyone, &get("/apis")).is_none());
        assert!(p.authorize(&someone, &get("/apis/apps/v1")).is_some());
        assert!(p.authorize(&someone, &get("/metrics")).is_none());
        let review = Request::Resource(ResourceRequest {
            verb: "create".into(),
            api_group: "authorization.k8s.io".into(),
            resource: "selfsubjectaccessreviews".into(),
            ..ResourceRequest::default()
        });
        assert!(p.authorize(&someone, &review).is_some());
    }
}

//! RBAC as Kubernetes evaluates it (`rbac.authorization.k8s.io/v1`): which requests a policy
//! rule allows, which subjects a binding names, and whether one set of rules covers another
//! (the check that stops anyone granting what they do not hold).
//!
//! Pure: the server keeps the Roles and bindings and asks here. The semantics are
//! Kubernetes', so that policies written for it mean the same on berth:
//! - a rule allows a resource request when its verbs, API groups, resources and resource
//!   names all match (`*` matches any; `*/scale` matches the `scale` subresource of any
//!   resource; no resource names means every name), and a non-resource request (`/healthz`)
//!   when its verbs and URLs match (`/apis/*` matches every path under `/apis/`);
//! - berth's key/value tree (`keys` in `kv.berth.dev`) names its resources by key path, and
//!   there a resource name ending in `/*` is a prefix: `/app/*` matches the key `/app` and
//!   every key beneath it (`/app/x`, `/app/x/y`, and the name `/app/*` a recursive read,
//!   watch or delete of `/app` is authorized as), never `/apple`; `/*` matches every key.
//!   Elsewhere names match whole, as in Kubernetes;
//! - rules only ever allow: there is no deny, so the union of every bound rule is what a
//!   user may do;
//! - owner rules cover servant rules when every single permission in the servant rules
//!   (one verb on one resource of one group, with one name if names are given) is allowed
//!   by one owner rule on its own.

pub mod defaults;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

/// The API group of berth's key/value tree, whose resource `keys` is named by key path.
pub const KV_GROUP: &str = "kv.berth.dev";

/// Whether a rule's resource name `rule` matches the name `name` of a request on `resource`
/// (with its subresource, `keys/services`) in `group`: equal, or for the key/value tree a
/// prefix `P/*` that `name` is `P` or lies beneath.
fn name_matches(rule: &str, name: &str, group: &str, resource: &str) -> bool {
    rule == name
        || (group == KV_GROUP
            && (resource == "keys" || resource.starts_with("keys/"))
            && rule.strip_suffix("/*").is_some_and(|prefix| {
                name == prefix
                    || name
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            }))
}

impl PolicyRule {
    /// A rule from its JSON (`{"verbs": [...], "apiGroups": [...], ...}`); fields that are
    /// missing or not lists of strings are empty (validation refuses them before they are
    /// stored).
    pub fn from_value(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// The rule as JSON, with only the fields it has (as Kubernetes writes rules).
    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() || k == "verbs" {
                m.insert(
                    k.into(),
                    v.iter().map(|s| Value::from(s.as_str())).collect(),
                );
            }
        }
        Value::Object(m)
    }

    /// A rule from string slices (for the built-in roles).
    pub fn new(verbs: &[&str], api_groups: &[&str], resources: &[&str]) -> PolicyRule {
        let own = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            api_groups: own(api_groups),
            resources: own(resources),
            ..PolicyRule::default()
        }
    }

    /// A non-resource rule from string slices.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        let own = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            non_resource_urls: own(urls),
            ..PolicyRule::default()
        }
    }

    /// The same rule limited to `names`.
    pub fn names(mut self, names: &[&str]) -> PolicyRule {
        self.resource_names = names.iter().map(|x| x.to_string()).collect();
        self
    }

    /// Whether this rule allows `request`.
    pub fn allows(&self, request: &Request) -> bool {
        let verb = |v: &str| has(&self.verbs, "*") || has(&self.verbs, v);
        match request {
            Request::Resource(r) => {
                verb(&r.verb)
                    && (has(&self.api_groups, "*") || has(&self.api_groups, &r.api_group))
                    && self.resource_matches(&r.resource, &r.subresource)
                    && (self.resource_names.is_empty()
                        || (!r.name.is_empty()
                            && self
                                .resource_names
                                .iter()
                                .any(|n| name_matches(n, &r.name, &r.api_group, &r.resource))))
            }
            Request::NonResource { verb: v, path } => {
                verb(v) && self.non_resource_urls.iter().any(|u| url_covers(u, path))
            }
        }
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || (subresource.is_empty() && r == resource)
                || (!subresource.is_empty()
                    && (r.strip_prefix(resource).and_then(|x| x.strip_prefix('/'))
                        == Some(subresource)
                        || r.strip_prefix("*/") == Some(subresource)))
        })
    }
}

/// Whether the rule URL `rule` matches the request path `path`: equal, `*`, or a prefix
/// ending in `*`.
fn url_covers(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// A request about a resource: `get pods/log NAME in NS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRequest {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped resources and for requests across all namespaces.
    pub namespace: String,
    /// Empty for requests on a collection (`list`, `create`, ...).
    pub name: String,
}

/// What a request asks to do, as an authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Resource(ResourceRequest),
    /// A path outside the resource tree (`/healthz`, `/version`, `/apis`).
    NonResource {
        verb: String,
        path: String,
    },
}

impl Request {
    /// A resource request: `verb` on `group`'s `resource` (`subresource`), in `namespace`,
    /// named `name` (each "" when there is none).
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Request {
        Request::Resource(ResourceRequest {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// The namespace the request is in ("" when cluster-wide).
    pub fn namespace(&self) -> &str {
        match self {
            Request::Resource(r) => &r.namespace,
            Request::NonResource { .. } => "",
        }
    }

    /// How kube-apiserver words a refusal of it for `user` (`User "alice" cannot list
    /// resource "secrets" in API group "" in the namespace "shop"`).
    pub fn forbidden_message(&self, user: &str) -> String {
        match self {
            Request::Resource(r) => {
                let resource = if r.subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{}", r.resource, r.subresource)
                };
                let scope = if r.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{}\"", r.namespace)
                };
                format!(
                    "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                    r.verb, r.api_group
                )
            }
            Request::NonResource { verb, path } => {
                format!("User \"{user}\" cannot {verb} path \"{path}\"")
            }
        }
    }
}

/// Who a request comes from, as authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The user name a ServiceAccount authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Whether a binding's subject (`{"kind": "User"|"Group"|"ServiceAccount", "name", ...}`)
/// names `user`. A ServiceAccount subject without a namespace is in the binding's own.
pub fn subject_matches(subject: &Value, user: &User, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => !name.is_empty() && user.name == name,
        Some("Group") => !name.is_empty() && has(&user.groups, name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !name.is_empty()
                && !ns.is_empty()
                && user
                    .name
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    == Some((ns, name))
        }
        _ => false,
    }
}

/// One permission: the unit [`covers`] compares.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for name in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: one(name),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
    }
    out
}

/// Whether `owner` holds every permission of the single permission `sub`.
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let all = |set: &[String], want: &[String]| has(set, "*") || want.iter().all(|w| has(set, w));
    let resources = sub.resources.iter().all(|r| {
        has(&owner.resources, "*")
            || has(&owner.resources, r)
            || r.split_once('/')
                .is_some_and(|(_, sub)| has(&owner.resources, &format!("*/{sub}")))
    });
    let urls = sub
        .non_resource_urls
        .iter()
        .all(|u| owner.non_resource_urls.iter().any(|o| url_covers(o, u)));
    // `sub` is one permission: one group and one resource.
    let (group, resource) = (
        sub.api_groups.first().map_or("", String::as_str),
        sub.resources.first().map_or("", String::as_str),
    );
    let names = owner.resource_names.is_empty()
        || (!sub.resource_names.is_empty()
            && sub.resource_names.iter().all(|n| {
                owner
                    .resource_names
                    .iter()
                    .any(|o| name_matches(o, n, group, resource))
            }));
    all(&owner.verbs, &sub.verbs)
        && all(&owner.api_groups, &sub.api_groups)
        && resources
        && urls
        && names
}

/// Whether `owner` rules hold every permission `servant` rules grant; when not, the single
/// permissions they lack (what an escalation refusal lists).
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> Result<(), Vec<PolicyRule>> {
    let missing: Vec<PolicyRule> = servant
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// A permission as kube-apiserver lists it in an escalation refusal:
/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["delete"]}`.
pub fn describe(rule: &PolicyRule) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !rule.api_groups.is_empty() || !rule.resources.is_empty() {
        parts.push(format!("APIGroups:[{}]", list(&rule.api_groups)));
        parts.push(format!("Resources:[{}]", list(&rule.resources)));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", list(&rule.resource_names)));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!(
            "NonResourceURLs:[{}]",
            list(&rule.non_resource_urls)
        ));
    }
    parts.push(format!("Verbs:[{}]", list(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// A binding's reference to the role it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRef {
    /// `Role` (in the binding's namespace) or `ClusterRole`.
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone)]
struct Binding {
    subjects: Vec<SubjectKey>,
    role: RoleRef,
}

/// Why a request was allowed: the binding and role that allowed it (kube-apiserver's audit
/// annotation `authorization.k8s.io/reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub binding_kind: &'static str,
    /// `NAMESPACE/NAME` for RoleBindings, `NAME` for ClusterRoleBindings.
    pub binding: String,
    pub role: RoleRef,
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RBAC: allowed by {} \"{}\" of {} \"{}\"",
            self.binding_kind, self.binding, self.role.kind, self.role.name
        )
    }
}

/// The Roles, ClusterRoles and their bindings in force, indexed for the authorizer: each
/// object is put in as it is written and taken out as it is deleted. Bindings are also
/// indexed by subject, so a decision looks only at the bindings that name the user or one of
/// its groups, however many bindings there are.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// By namespace, then name.
    roles: HashMap<String, HashMap<String, Vec<PolicyRule>>>,
    /// By namespace ("" for ClusterRoleBindings), then name.
    bindings: HashMap<String, BTreeMap<String, Binding>>,
    /// The bindings that name each subject.
    by_subject: HashMap<SubjectKey, BTreeSet<BindingKey>>,
}

/// A binding's place: its namespace ("" for a ClusterRoleBinding) and name.
type BindingKey = (String, String);

/// Who a subject matches: a user name (ServiceAccounts by the user name they authenticate
/// as) or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SubjectKey {
    User(String),
    Group(String),
}

/// The key a subject of a binding in `binding_ns` is indexed by (see [`subject_matches`]);
/// `None` for a subject that can match no one.
fn subject_key(subject: &Value, binding_ns: &str) -> Option<SubjectKey> {
    let name = subject["name"].as_str().filter(|n| !n.is_empty())?;
    match subject["kind"].as_str()? {
        "User" => Some(SubjectKey::User(name.to_string())),
        "Group" => Some(SubjectKey::Group(name.to_string())),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            (!ns.is_empty()).then(|| SubjectKey::User(service_account_user(ns, name)))
        }
        _ => None,
    }
}

/// The kinds a [`Policy`] holds.
pub const POLICY_KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

fn rules_of(o: &Value) -> Vec<PolicyRule> {
    o["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(PolicyRule::from_value)
        .collect()
}

impl Policy {
    /// Puts in (or replaces) an object of one of the [`POLICY_KINDS`]; other kinds are
    /// ignored.
    pub fn put(&mut self, o: &Value) {
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        match o["kind"].as_str() {
            Some("ClusterRole") => {
                self.cluster_roles.insert(name, rules_of(o));
            }
            Some("Role") => {
                self.roles.entry(ns).or_default().insert(name, rules_of(o));
            }
            Some("ClusterRoleBinding") => self.put_binding(String::new(), name, o),
            Some("RoleBinding") if !ns.is_empty() => self.put_binding(ns, name, o),
            _ => {}
        }
    }

    fn put_binding(&mut self, ns: String, name: String, o: &Value) {
        self.remove_binding(&ns, &name);
        let subjects: Vec<SubjectKey> = o["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| subject_key(s, &ns))
            .collect();
        for s in &subjects {
            self.by_subject
                .entry(s.clone())
                .or_default()
                .insert((ns.clone(), name.clone()));
        }
        let binding = Binding {
            subjects,
            role: RoleRef {
                kind: o["roleRef"]["kind"].as_str().unwrap_or("").to_string(),
                name: o["roleRef"]["name"].as_str().unwrap_or("").to_string(),
            },
        };
        self.bindings.entry(ns).or_default().insert(name, binding);
    }

    fn remove_binding(&mut self, ns: &str, name: &str) {
        let Some(bindings) = self.bindings.get_mut(ns) else {
            return;
        };
        let Some(old) = bindings.remove(name) else {
            return;
        };
        if bindings.is_empty() {
            self.bindings.remove(ns);
        }
        let key = (ns.to_string(), name.to_string());
        for s in old.subjects {
            if let Some(keys) = self.by_subject.get_mut(&s) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_subject.remove(&s);
                }
            }
        }
    }

    /// Takes out the object `kind` `namespace/name`.
    pub fn remove(&mut self, kind: &str, namespace: &str, name: &str) {
        match kind {
            "ClusterRole" => {
                self.cluster_roles.remove(name);
            }
            "Role" => {
                if let Some(r) = self.roles.get_mut(namespace) {
                    r.remove(name);
                    if r.is_empty() {
                        self.roles.remove(namespace);
                    }
                }
            }
            "ClusterRoleBinding" => self.remove_binding("", name),
            "RoleBinding" if !namespace.is_empty() => self.remove_binding(namespace, name),
            _ => {}
        }
    }

    /// The rules a role reference grants in `namespace` (a Role is looked up there); none
    /// when the role does not exist (a binding may name a role before it is made).
    pub fn role_rules(&self, role: &RoleRef, namespace: &str) -> &[PolicyRule] {
        let rules = match role.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role.name),
            "Role" => self.roles.get(namespace).and_then(|r| r.get(&role.name)),
            _ => None,
        };
        rules.map_or(&[], Vec::as_slice)
    }

    /// The bindings that name `user` (or one of its groups) and apply in `namespace` ("" for
    /// cluster-wide requests): its ClusterRoleBindings, then its RoleBindings of that
    /// namespace, each in name order.
    fn bound(&self, user: &User, namespace: &str) -> Vec<(&BindingKey, &Binding)> {
        let keys = std::iter::once(SubjectKey::User(user.name.clone()))
            .chain(user.groups.iter().map(|g| SubjectKey::Group(g.clone())));
        let mut found: BTreeSet<&BindingKey> = BTreeSet::new();
        for k in keys {
            if let Some(bindings) = self.by_subject.get(&k) {
                found.extend(
                    bindings.iter().filter(|(ns, _)| {
                        ns.is_empty() || (!namespace.is_empty() && ns == namespace)
                    }),
                );
            }
        }
        found
            .into_iter()
            .filter_map(|key| Some((key, self.bindings.get(&key.0)?.get(&key.1)?)))
            .collect()
    }

    /// What allows `user` to make `request`, if anything does (no rule denies: what no
    /// binding allows is refused).
    pub fn authorize(&self, user: &User, request: &Request) -> Option<Allowed> {
        self.bound(user, request.namespace())
            .into_iter()
            .find(|((ns, _), b)| {
                self.role_rules(&b.role, ns)
                    .iter()
                    .any(|r| r.allows(request))
            })
            .map(|((ns, name), b)| Allowed {
                binding_kind: if ns.is_empty() {
                    "ClusterRoleBinding"
                } else {
                    "RoleBinding"
                },
                binding: if ns.is_empty() {
                    name.clone()
                } else {
                    format!("{ns}/{name}")
                },
                role: b.role.clone(),
            })
    }

    /// Every rule bound to `user` that applies in `namespace` ("" for the cluster-wide ones
    /// only): what `SelfSubjectRulesReview` lists and what an escalation check compares.
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<PolicyRule> {
        self.bound(user, namespace)
            .into_iter()
            .flat_map(|((ns, _), b)| self.role_rules(&b.role, ns).to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Request {
        Request::resource("get", group, resource, sub, ns, name)
    }

    #[test]
    fn rules_match_as_kubernetes_matches_them() {
        let pods = PolicyRule::new(&["get", "list"], &[""], &["pods"]);
        assert!(pods.allows(&get("", "pods", "", "a", "p")));
        // A subresource is not its resource.
        assert!(!pods.allows(&get("", "pods", "log", "a", "p")));
        assert!(!pods.allows(&get("apps", "pods", "", "a", "p")));
        let log = PolicyRule::new(&["get"], &[""], &["pods/log"]);
        assert!(log.allows(&get("", "pods", "log", "a", "p")));
        assert!(!log.allows(&get("", "pods", "", "a", "p")));
        assert!(!log.allows(&get("", "pods", "exec", "a", "p")));
        let scale = PolicyRule::new(&["get"], &["*"], &["*/scale"]);
        assert!(scale.allows(&get("apps", "deployments", "scale", "a", "d")));
        assert!(!scale.allows(&get("apps", "deployments", "", "a", "d")));
        let all = PolicyRule::new(&["*"], &["*"], &["*"]);
        assert!(all.allows(&get("x", "y", "z", "", "")));
        // Names: a named rule allows only those names, never a collection.
        let one = PolicyRule::new(&["get", "list"], &[""], &["secrets"]).names(&["s1"]);
        assert!(one.allows(&get("", "secrets", "", "a", "s1")));
        assert!(!one.allows(&get("", "secrets", "", "a", "s2")));
        assert!(!one.allows(&get("", "secrets", "", "a", "")));
        // Non-resource URLs, with a trailing star as a prefix.
        let urls = PolicyRule::urls(&["get"], &["/healthz", "/apis/*"]);
        let path = |p: &str| Request::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert!(urls.allows(&path("/healthz")));
        assert!(urls.allows(&path("/apis/apps/v1")));
        assert!(!urls.allows(&path("/apis")));
        assert!(!urls.allows(&path("/healthz/etcd")));
        assert!(!urls.allows(&get("", "pods", "", "", "")));
        assert!(!pods.allows(&path("/api/v1/pods")));
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let alice = User {
            name: "alice".into(),
            groups: vec!["dev".into()],
        };
        assert!(subject_matches(
            &json!({"kind": "User", "name": "alice"}),
            &alice,
            "x"
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "dev"}),
            &alice,
            "x"
        ));
        assert!(!subject_matches(
            &json!({"kind": "Group", "name": "ops"}),
            &alice,
            "x"
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": ""}),
            &User::default(),
            "x"
        ));
        let sa = User {
            name: "system:serviceaccount:shop:web".into(),
            groups: vec![],
        };
        let subject = json!({"kind": "ServiceAccount", "name": "web"});
        assert!(subject_matches(&subject, &sa, "shop"));
        assert!(!subject_matches(&subject, &sa, "other"));
        let elsewhere = json!({"kind": "ServiceAccount", "name": "web", "namespace": "shop"});
        assert!(subject_matches(&elsewhere, &sa, "other"));
    }

    #[test]
    fn covering_needs_every_single_permission() {
        let edit = vec![
            PolicyRule::new(
                &["get", "list", "watch", "create", "delete"],
                &[""],
                &["pods"],
            ),
            PolicyRule::new(&["get"], &[""], &["pods/log"]),
            PolicyRule::urls(&["get"], &["/apis/*"]),
        ];
        assert!(
            covers(
                &edit,
                &[PolicyRule::new(&["get", "delete"], &[""], &["pods"])]
            )
            .is_ok()
        );
        assert!(covers(&edit, &[PolicyRule::urls(&["get"], &["/apis/apps"])]).is_ok());
        let wants = [PolicyRule::new(
            &["get", "update"],
            &["", "apps"],
            &["pods", "pods/log"],
        )];
        let missing = covers(&edit, &wants).unwrap_err();
        let described: Vec<String> = missing.iter().map(describe).collect();
        assert_eq!(
            described,
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["update"]}"#,
                r#"{APIGroups:[""], Resources:["pods/log"], Verbs:["update"]}"#,
                r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["get"]}"#,
                r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["update"]}"#,
                r#"{APIGroups:["apps"], Resources:["pods/log"], Verbs:["get"]}"#,
                r#"{APIGroups:["apps"], Resources:["pods/log"], Verbs:["update"]}"#,
            ]
        );
        // A star covers anything; names narrow the owner, not the servant.
        let root = [
            PolicyRule::new(&["*"], &["*"], &["*"]),
            PolicyRule::urls(&["*"], &["*"]),
        ];
        assert!(covers(&root, &edit).is_ok());
        let named = [PolicyRule::new(&["get"], &[""], &["secrets"]).names(&["a"])];
        assert!(
            covers(
                &named,
                &[PolicyRule::new(&["get"], &[""], &["secrets"]).names(&["a"])]
            )
            .is_ok()
        );
        assert!(covers(&named, &[PolicyRule::new(&["get"], &[""], &["secrets"])]).is_err());
        assert!(
            covers(
                &named,
                &[PolicyRule::new(&["get"], &[""], &["secrets"]).names(&["b"])]
            )
            .is_err()
        );
        // A subresource wildcard covers that subresource of every resource.
        let scale = [PolicyRule::new(&["update"], &["apps"], &["*/scale"])];
        assert!(
            covers(
                &scale,
                &[PolicyRule::new(
                    &["update"],
                    &["apps"],
                    &["deployments/scale"]
                )]
            )
            .is_ok()
        );
        assert!(
            covers(
                &scale,
                &[PolicyRule::new(&["update"], &["apps"], &["deployments"])]
            )
            .is_err()
        );
    }

    #[test]
    fn refusals_are_worded_as_kube_apiserver_words_them() {
        let r = Request::Resource(ResourceRequest {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: "shop".into(),
            ..ResourceRequest::default()
        });
        assert_eq!(
            r.forbidden_message("alice"),
            r#"User "alice" cannot list resource "secrets" in API group "" in the namespace "shop""#
        );
        let n = Request::Resource(ResourceRequest {
            verb: "patch".into(),
            resource: "nodes".into(),
            subresource: "status".into(),
            name: "n1".into(),
            ..ResourceRequest::default()
        });
        assert_eq!(
            n.forbidden_message("bob"),
            r#"User "bob" cannot patch resource "nodes/status" in API group "" at the cluster scope"#
        );
    }

    #[test]
    fn rules_round_trip_through_json() {
        let v = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]});
        let r = PolicyRule::from_value(&v);
        assert_eq!(r, PolicyRule::new(&["get"], &[""], &["pods"]).names(&["a"]));
        assert_eq!(r.to_value(), v);
    }

    #[test]
    fn a_policy_allows_through_cluster_and_namespace_bindings_only() {
        let mut p = Policy::default();
        p.put(&json!({"kind": "ClusterRole", "metadata": {"name": "view"},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}));
        p.put(
            &json!({"kind": "Role", "metadata": {"name": "secrets", "namespace": "shop"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}),
        );
        p.put(
            &json!({"kind": "RoleBinding", "metadata": {"name": "alice-view", "namespace": "shop"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}]}),
        );
        p.put(&json!({"kind": "RoleBinding", "metadata": {"name": "alice-secrets", "namespace": "shop"},
            "roleRef": {"kind": "Role", "name": "secrets"},
            "subjects": [{"kind": "User", "name": "alice"}]}));
        p.put(
            &json!({"kind": "ClusterRoleBinding", "metadata": {"name": "ops-view"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "ops"}]}),
        );
        let alice = User {
            name: "alice".into(),
            groups: vec![],
        };
        let ops = User {
            name: "olga".into(),
            groups: vec!["ops".into()],
        };
        let list = |resource: &str, ns: &str| {
            Request::Resource(ResourceRequest {
                verb: "list".into(),
                resource: resource.into(),
                namespace: ns.into(),
                ..ResourceRequest::default()
            })
        };
        // A RoleBinding grants a ClusterRole's rules in its namespace only.
        let why = p.authorize(&alice, &list("pods", "shop")).unwrap();
        assert_eq!(
            why.to_string(),
            r#"RBAC: allowed by RoleBinding "shop/alice-view" of ClusterRole "view""#
        );
        assert!(p.authorize(&alice, &list("pods", "other")).is_none());
        assert!(p.authorize(&alice, &list("pods", "")).is_none());
        assert!(
            p.authorize(&alice, &get("", "secrets", "", "shop", "s"))
                .is_some()
        );
        assert!(p.authorize(&alice, &list("secrets", "shop")).is_none());
        // A ClusterRoleBinding grants everywhere, all namespaces at once included.
        assert!(p.authorize(&ops, &list("pods", "")).is_some());
        assert!(p.authorize(&ops, &list("pods", "other")).is_some());
        assert_eq!(p.rules_for(&alice, "shop").len(), 2);
        assert!(p.rules_for(&alice, "other").is_empty());
        // Deleting the role takes its grant away; a binding to a missing role grants nothing.
        p.remove("Role", "shop", "secrets");
        assert!(
            p.authorize(&alice, &get("", "secrets", "", "shop", "s"))
                .is_none()
        );
        p.remove("RoleBinding", "shop", "alice-view");
        assert!(p.authorize(&alice, &list("pods", "shop")).is_none());
        // A binding written again with other subjects stops granting the old ones.
        p.put(
            &json!({"kind": "ClusterRoleBinding", "metadata": {"name": "ops-view"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "build"}]}),
        );
        assert!(p.authorize(&ops, &list("pods", "")).is_none());
        let ci = User {
            name: "system:serviceaccount:build:ci".into(),
            groups: vec![],
        };
        assert!(p.authorize(&ci, &list("pods", "shop")).is_some());
    }

    #[test]
    fn key_names_ending_in_a_star_are_prefixes_of_the_key_value_tree_only() {
        let app = PolicyRule::new(&["get", "list", "update"], &[KV_GROUP], &["keys"])
            .names(&["/app/*", "/one"]);
        let key = |verb: &str, name: &str| Request::resource(verb, KV_GROUP, "keys", "", "", name);
        for allowed in ["/app", "/app/x", "/app/x/y", "/app/*", "/app/x/*", "/one"] {
            assert!(app.allows(&key("get", allowed)), "{allowed}");
        }
        for refused in ["/apple", "/other/y", "/", "/*", "/one/x", "/one/*", ""] {
            assert!(!app.allows(&key("get", refused)), "{refused}");
        }
        // The `/services` tree is the subresource `keys/services`: a rule on `keys` does not
        // reach it, whatever its names.
        let all = PolicyRule::new(&["get"], &[KV_GROUP], &["keys"]).names(&["/*"]);
        assert!(all.allows(&key("get", "/x/y")));
        assert!(!all.allows(&Request::resource(
            "get",
            KV_GROUP,
            "keys",
            "services",
            "",
            "/services/a"
        )));
        // Elsewhere a star is just a character of a name.
        let secrets = PolicyRule::new(&["get"], &[""], &["secrets"]).names(&["app/*"]);
        assert!(!secrets.allows(&get("", "secrets", "", "a", "app/x")));
        // Covering follows the same prefixes: `/app/*` may grant `/app/x` and `/app/x/*`.
        assert!(
            covers(
                std::slice::from_ref(&app),
                &[
                    PolicyRule::new(&["get"], &[KV_GROUP], &["keys"])
                        .names(&["/app/x", "/app/x/*"])
                ]
            )
            .is_ok()
        );
        assert!(
            covers(
                std::slice::from_ref(&app),
                &[PolicyRule::new(&["get"], &[KV_GROUP], &["keys"]).names(&["/*"])]
            )
            .is_err()
        );
        assert!(covers(&[app], &[PolicyRule::new(&["get"], &[KV_GROUP], &["keys"])]).is_err());
    }
}

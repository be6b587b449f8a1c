//! Authorization: whether the caller of a request may make it, by RBAC (Kubernetes' Roles,
//! ClusterRoles and their bindings, evaluated by `berth_api::rbac`).
//!
//! - [`attributes`] turns a routed request into what RBAC decides on (verb, API group,
//!   resource, subresource, namespace, name; or a non-resource path), as kube-apiserver's
//!   request info does: GET of an object is `get`, of a collection `list` (`watch` with
//!   `watch=1`), POST `create`, PUT `update`, PATCH `patch`, DELETE `delete` (of a collection,
//!   `deletecollection`); a pod's `exec` is `create` on `pods/exec` whatever the method.
//! - [`Authorizer`] holds the roles and bindings in force, read from the store when the
//!   server starts and kept in step by a watch of them; a change is in force once that
//!   watch has delivered it (milliseconds), as with kube-apiserver's informers.
//! - The group `system:masters` may do anything without a binding (kube-apiserver's
//!   privileged group): the admin is never locked out by a broken policy.
//!
//! Invariant: a request is refused unless a rule allows it; nothing allows by default.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::Method;
use berth_api::rbac::{self, Policy, Request, ResourceRequest};
use berth_store::{EventType, StoreError};
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::registry::Registry;
use crate::server::Route;

/// The group that may do anything.
pub const MASTERS: &str = "system:masters";

/// The store prefix of the four RBAC kinds.
const RBAC_PREFIX: &[u8] = b"/registry/rbac.authorization.k8s.io/";

/// What a routed request asks to do; `None` for what needs no authorization (health and
/// version, open to anyone).
pub fn attributes(
    method: &Method,
    route: &Route,
    path: &str,
    q: &HashMap<String, String>,
) -> Option<Request> {
    let watch = q.get("watch").is_some_and(|w| w == "1" || w == "true");
    let verb = |collection: bool| -> &'static str {
        match *method {
            Method::GET | Method::HEAD if collection && watch => "watch",
            Method::GET | Method::HEAD if collection => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if collection => "deletecollection",
            Method::DELETE => "delete",
            _ => "unknown",
        }
    };
    let resource = Request::resource;
    let non_resource = || Request::NonResource {
        verb: verb(false).to_string(),
        path: path.to_string(),
    };
    Some(match route {
        Route::Health | Route::Version => return None,
        Route::Api | Route::Apis | Route::Group(_) | Route::Resources { .. } | Route::OpenApiV2 => {
            non_resource()
        }
        Route::Collection { kind, ns } => resource(
            verb(true),
            kind.group,
            kind.plural,
            "",
            ns.as_deref().unwrap_or(""),
            "",
        ),
        Route::Object {
            kind,
            ns,
            name,
            sub,
        } => {
            let sub = sub.as_deref().unwrap_or("");
            // Exec (and attach) start a process whichever method carries them: `create`, as
            // kube-apiserver authorizes them.
            let v = if kind.kind == "Pod" && matches!(sub, "exec" | "attach" | "portforward") {
                "create"
            } else {
                verb(false)
            };
            resource(
                v,
                kind.group,
                kind.plural,
                sub,
                ns.as_deref().unwrap_or(""),
                name,
            )
        }
        Route::NodeProxy { node, .. } => resource(verb(false), "", "nodes", "proxy", "", node),
        Route::Metrics {
            resource: r,
            ns,
            name,
        } => resource(
            verb(name.is_none()),
            "metrics.k8s.io",
            r,
            "",
            ns.as_deref().unwrap_or(""),
            name.as_deref().unwrap_or(""),
        ),
        // berth's own APIs: the history of objects (it shows Secrets' values), the export of
        // the whole cluster, and the key/value tree, whose key is the resource name.
        Route::History => resource(verb(true), "berth.dev", "history", "", "", ""),
        Route::Revisions => resource(verb(true), "berth.dev", "revisions", "", "", ""),
        Route::Export => resource(verb(true), "berth.dev", "export", "", "", ""),
        // The audit log names who was refused what: `get` on `audit`, cluster-admin's alone
        // among the default roles.
        Route::Audit => resource(verb(false), "berth.dev", "audit", "", "", ""),
        Route::Kv(key) => {
            // The flags as `kv::handle` reads them (present and not false), so what is
            // authorized is what is served.
            let flag = |f: &str| q.get(f).is_some_and(|v| v != "false" && v != "0");
            let beneath = flag("recurse") || flag("list");
            let (name, sub) = kv_name(key, beneath);
            let v = match *method {
                Method::GET | Method::HEAD if beneath && flag("watch") => "watch",
                _ => verb(beneath),
            };
            resource(v, rbac::KV_GROUP, "keys", sub, "", &name)
        }
    })
}

/// The key/value tree the endpoints controller keeps (`/services/NS/SVC/POD`): the
/// subresource `keys/services`, so that a rule on `keys` (`edit`'s, or one naming `/*`) does
/// not reach it.
const KV_SERVICES: &str = "/services";

/// The resource name and subresource a key/value request is authorized as: the key itself;
/// for a request on everything beneath it (a recursive read, watch or delete, or a listing of
/// its names) the prefix `KEY/*` (`/*` for the root), which only a rule naming that prefix
/// or a wider one allows. A request that reaches into `/services` (a key there, or the whole
/// tree) is on `keys/services`.
fn kv_name(key: &str, beneath: bool) -> (String, &'static str) {
    let services = key == KV_SERVICES
        || key
            .strip_prefix(KV_SERVICES)
            .is_some_and(|rest| rest.starts_with('/'))
        || (beneath && key == "/");
    let name = if beneath {
        format!("{}/*", key.trim_end_matches('/'))
    } else {
        key.to_string()
    };
    (name, if services { "services" } else { "" })
}

/// The message of a refusal, as kube-apiserver words it: `pods "web" is forbidden: User
/// "alice" cannot get resource "pods" in API group "" in the namespace "shop"`.
pub fn forbidden(user: &str, request: &Request) -> ApiError {
    let why = request.forbidden_message(user);
    let Request::Resource(r) = request else {
        return ApiError::forbidden(format!("forbidden: {why}"));
    };
    let what = if r.api_group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.api_group)
    };
    let message = if r.name.is_empty() {
        format!("{what} is forbidden: {why}")
    } else {
        format!("{what} \"{}\" is forbidden: {why}", r.name)
    };
    ApiError::from_status(
        berth_api::Status::failure(403, "Forbidden", message).with_details(
            &r.api_group,
            &r.resource,
            &r.name,
        ),
    )
}

tokio::task_local! {
    /// Who the request being handled comes from, for the checks made where the object is
    /// written (escalation); unset for the in-process controllers, which are trusted.
    static REQUESTER: (UserInfo, Arc<Authorizer>);
}

/// Runs a request's handling as `user`.
pub async fn as_requester<F: std::future::Future>(
    user: UserInfo,
    authz: Arc<Authorizer>,
    f: F,
) -> F::Output {
    REQUESTER.scope((user, authz), f).await
}

/// Who the request being handled comes from; `None` outside a request (the in-process
/// controllers).
pub(crate) fn requester() -> Option<UserInfo> {
    REQUESTER.try_with(|(user, _)| user.clone()).ok()
}

/// NodeRestriction for the write being made: a node identity writes only its own objects
/// (see `nodeauthz::admit`); other writers, and writes from outside a request, pass.
pub(crate) fn admit_node(
    kind: &berth_api::ResourceKind,
    old: Option<&berth_api::Object>,
    new: Option<&berth_api::Object>,
) -> Result<(), ApiError> {
    let Ok(Some(node)) =
        REQUESTER.try_with(|(user, _)| crate::nodeauthz::node_of(user).map(str::to_string))
    else {
        return Ok(());
    };
    crate::nodeauthz::admit(&node, kind, old, new)
}

/// Refuses a Role, ClusterRole or binding that would grant its writer permissions the writer
/// does not hold (kube-apiserver's escalation check): a role's rules must be covered by the
/// writer's own rules in its namespace (cluster-wide ones for a ClusterRole) unless the
/// writer may `escalate` it; a binding's role likewise unless the writer may `bind` it. An
/// aggregated ClusterRole takes `escalate`. Other kinds, and writes from outside a request,
/// pass.
pub(crate) fn admit_rbac(
    kind: &berth_api::ResourceKind,
    obj: &berth_api::Object,
) -> Result<(), ApiError> {
    if kind.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let Ok(Some(refusal)) = REQUESTER.try_with(|(user, authz)| authz.escalation(kind, obj, user))
    else {
        return Ok(());
    };
    Err(refusal)
}

/// The subresources of `configtemplates` whose `create` a writer needs besides the write
/// itself (an extra check in admission, as kube-apiserver's `bind`/`escalate` and PSP's
/// `use`): `commands` for a template that runs commands as root on its node, `anywhere` for
/// one whose destination is outside the directories its node's agent renders into.
pub const CT_COMMANDS: &str = "commands";
pub const CT_ANYWHERE: &str = "anywhere";

/// Refuses a ConfigTemplate created, or its spec changed, by a writer who lacks what the new
/// spec needs: `create` on `configtemplates/commands` (group `berth.dev`) when it has a check,
/// a reload or an exec probe (commands run as root on the node); `create` on
/// `configtemplates/anywhere` when its destination is not beneath a directory its node
/// publishes in the `berth.dev/config-template-dirs` annotation (a Node that does not exist
/// or publishes none allows nowhere). A change of the metadata only needs neither; writes
/// from outside a request (the controllers) pass.
pub(crate) fn admit_config_template(
    registry: &Registry,
    kind: &berth_api::ResourceKind,
    old: Option<&berth_api::Object>,
    new: &berth_api::Object,
) -> Result<(), ApiError> {
    if kind.group != "berth.dev" || kind.kind != "ConfigTemplate" {
        return Ok(());
    }
    if old.is_some_and(|o| o.get("spec") == new.get("spec")) {
        return Ok(());
    }
    let Ok((user, authz)) = REQUESTER.try_with(|(u, a)| (u.clone(), a.clone())) else {
        return Ok(());
    };
    // An invalid spec was refused by validation already.
    let Ok(spec) = berth_api::configtemplate::parse(new.get("spec"), true) else {
        return Ok(());
    };
    let ns = new.namespace().unwrap_or("");
    let need = |sub: &str, why: String| -> Result<(), ApiError> {
        let request = Request::resource("create", kind.group, kind.plural, sub, ns, new.name());
        match authz.check(&user, &request) {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = format!("{e}: {why}");
                Err(e.with_message(message))
            }
        }
    };
    if spec.has_commands() {
        need(
            CT_COMMANDS,
            "the template runs commands (check, reload or an exec probe) as root on its node"
                .into(),
        )?;
    }
    let node = spec.node_name.as_deref().unwrap_or("");
    let dirs: Vec<String> = berth_api::kinds::resolve("nodes")
        .and_then(|nodes| registry.get(nodes, None, node).ok())
        .and_then(|n| {
            let a = n.annotations();
            serde_json::from_str(a.get(berth_api::wellknown::CONFIG_TEMPLATE_DIRS_ANNOTATION)?).ok()
        })
        .unwrap_or_default();
    if berth_api::configtemplate::allowed_dir(&spec.destination, &dirs).is_none() {
        need(
            CT_ANYWHERE,
            format!(
                "the destination {} is outside the directories node {node:?} renders templates into ({})",
                spec.destination,
                if dirs.is_empty() {
                    "none known".to_string()
                } else {
                    dirs.join(", ")
                }
            ),
        )?;
    }
    Ok(())
}

fn refuse(kind: &berth_api::ResourceKind, obj: &berth_api::Object, why: String) -> ApiError {
    ApiError::forbidden(format!(
        "{}.{} \"{}\" is forbidden: {why}",
        kind.plural,
        kind.group,
        obj.name()
    ))
    .with_details(kind, obj.name())
}

/// The roles and bindings in force, the Node authorizer, and the decisions made from them.
#[derive(Debug, Default)]
pub struct Authorizer {
    policy: RwLock<Policy>,
    pub(crate) nodes: Arc<crate::nodeauthz::NodeAuthorizer>,
}

fn user_of(u: &UserInfo) -> rbac::User {
    rbac::User {
        name: u.name.clone(),
        groups: u.groups.clone(),
    }
}

impl Authorizer {
    /// Whether `user` may make `request`: why (the binding and role, the Node authorizer,
    /// or the group `system:masters`), or the 403 to answer.
    pub fn check(&self, user: &UserInfo, request: &Request) -> Result<String, ApiError> {
        self.allows(user, request)
            .ok_or_else(|| forbidden(&user.name, request))
    }

    /// Why `user` may make `request`, if anything allows it: the group `system:masters`, the
    /// Node authorizer (for node identities), or RBAC.
    pub fn allows(&self, user: &UserInfo, request: &Request) -> Option<String> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Some(format!("allowed by the group {MASTERS}"));
        }
        if let Some(node) = crate::nodeauthz::node_of(user)
            && let Some(why) = self.nodes.allows(node, request)
        {
            return Some(why);
        }
        self.read()
            .authorize(&user_of(user), request)
            .map(|a| a.to_string())
    }

    /// Every rule bound to `user` in `namespace` (and cluster-wide); a member of
    /// `system:masters` holds every permission.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<rbac::PolicyRule> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return vec![
                rbac::PolicyRule::new(&["*"], &["*"], &["*"]),
                rbac::PolicyRule::urls(&["*"], &["*"]),
            ];
        }
        self.read().rules_for(&user_of(user), namespace)
    }

    /// The rules a role reference grants in `namespace`.
    pub fn role_rules(&self, role: &rbac::RoleRef, namespace: &str) -> Vec<rbac::PolicyRule> {
        self.read().role_rules(role, namespace).to_vec()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every role and binding as of now; returns the revision read.
    /// (Through the registry: RBAC objects are encrypted too if the encryption config names
    /// them.)
    fn set(&self, objects: Vec<Value>) {
        let mut policy = Policy::default();
        for o in &objects {
            policy.put(o);
        }
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Loads the policy, then keeps it in step with the store until `stop` (a watch that
    /// breaks, or falls behind, loads it again).
    pub async fn follow(
        self: Arc<Self>,
        registry: Registry,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::registry::follow_values(
            &registry,
            RBAC_PREFIX,
            "the RBAC policy",
            stop,
            |all| self.set(all),
            |changes| {
                let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
                for (typ, v) in changes {
                    match typ {
                        EventType::Put => policy.put(&v),
                        EventType::Delete => policy.remove(
                            v["kind"].as_str().unwrap_or(""),
                            v["metadata"]["namespace"].as_str().unwrap_or(""),
                            v["metadata"]["name"].as_str().unwrap_or(""),
                        ),
                    }
                }
            },
        )
        .await
    }

    /// Why writing `obj` would be an escalation for `user`, if it would (see [`admit_rbac`]).
    fn escalation(
        &self,
        kind: &berth_api::ResourceKind,
        obj: &berth_api::Object,
        user: &UserInfo,
    ) -> Option<ApiError> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return None;
        }
        let ns = obj.namespace().unwrap_or("");
        let may = |verb: &str, resource: &str, name: &str| {
            self.allows(
                user,
                &Request::Resource(ResourceRequest {
                    verb: verb.into(),
                    api_group: "rbac.authorization.k8s.io".into(),
                    resource: resource.into(),
                    namespace: ns.into(),
                    name: name.into(),
                    ..ResourceRequest::default()
                }),
            )
            .is_some()
        };
        let value = obj.as_value();
        let granted = match kind.kind {
            "Role" | "ClusterRole" => {
                if may("escalate", kind.plural, obj.name()) {
                    return None;
                }
                if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                    return Some(refuse(
                        kind,
                        obj,
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    ));
                }
                value["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(rbac::PolicyRule::from_value)
                    .collect::<Vec<_>>()
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let role = rbac::RoleRef {
                    kind: value["roleRef"]["kind"].as_str().unwrap_or("").into(),
                    name: value["roleRef"]["name"].as_str().unwrap_or("").into(),
                };
                let plural = if role.kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                if may("bind", plural, &role.name) {
                    return None;
                }
                self.role_rules(&role, ns)
            }
            _ => return None,
        };
        let held = self.rules_for(user, ns);
        let missing = rbac::covers(&held, &granted).err()?;
        let list: Vec<String> = missing.iter().map(rbac::describe).collect();
        Some(refuse(
            kind,
            obj,
            format!(
                "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
                user.name,
                user.groups
                    .iter()
                    .map(|g| format!("{g:?}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                list.join("\n")
            ),
        ))
    }

    /// Loads the policy once, now (for a server that serves before its follower runs).
    pub fn load_now(&self, registry: &Registry) -> Result<(), StoreError> {
        let (all, _) = registry.values_under(RBAC_PREFIX, "the RBAC policy")?;
        self.set(all);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::route;

    fn attrs(method: Method, path_and_query: &str) -> Option<Request> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let q: HashMap<String, String> = berth_api::url::query_pairs(Some(query))
            .into_iter()
            .collect();
        attributes(&method, &route(path).unwrap(), path, &q)
    }

    #[test]
    fn requests_map_to_kubernetes_verbs_and_resources() {
        let cases: &[(Method, &str, [&str; 6])] = &[
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods",
                ["list", "", "pods", "", "shop", ""],
            ),
            (
                Method::GET,
                "/api/v1/pods?watch=1",
                ["watch", "", "pods", "", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods/web",
                ["get", "", "pods", "", "shop", "web"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods/web/log",
                ["get", "", "pods", "log", "shop", "web"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods/web/exec",
                ["create", "", "pods", "exec", "shop", "web"],
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/shop/deployments",
                ["create", "apps", "deployments", "", "shop", ""],
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/shop/deployments/d/scale",
                ["update", "apps", "deployments", "scale", "shop", "d"],
            ),
            (
                Method::PATCH,
                "/api/v1/nodes/n1/status",
                ["patch", "", "nodes", "status", "", "n1"],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/shop/secrets",
                ["deletecollection", "", "secrets", "", "shop", ""],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/shop/secrets/s",
                ["delete", "", "secrets", "", "shop", "s"],
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1/proxy/metrics",
                ["get", "", "nodes", "proxy", "", "n1"],
            ),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods",
                ["list", "metrics.k8s.io", "pods", "", "shop", ""],
            ),
            (
                Method::PUT,
                "/apis/kv.berth.dev/v1/keys/app/a",
                ["update", "kv.berth.dev", "keys", "", "", "/app/a"],
            ),
            (
                Method::GET,
                "/apis/kv.berth.dev/v1/keys/app?recurse=1",
                ["list", "kv.berth.dev", "keys", "", "", "/app/*"],
            ),
            (
                Method::GET,
                "/apis/kv.berth.dev/v1/keys/app?watch=1&recurse",
                ["watch", "kv.berth.dev", "keys", "", "", "/app/*"],
            ),
            (
                Method::GET,
                "/apis/kv.berth.dev/v1/keys/app?list",
                ["list", "kv.berth.dev", "keys", "", "", "/app/*"],
            ),
            (
                Method::DELETE,
                "/apis/kv.berth.dev/v1/keys/app?recurse=true",
                ["deletecollection", "kv.berth.dev", "keys", "", "", "/app/*"],
            ),
            (
                Method::PUT,
                "/apis/kv.berth.dev/v1/keys/services/shop/web/p1",
                [
                    "update",
                    "kv.berth.dev",
                    "keys",
                    "services",
                    "",
                    "/services/shop/web/p1",
                ],
            ),
            (
                Method::PUT,
                "/apis/kv.berth.dev/v1/keys/servicesx",
                ["update", "kv.berth.dev", "keys", "", "", "/servicesx"],
            ),
            (
                Method::GET,
                "/apis/kv.berth.dev/v1/keys/?recurse=1",
                ["list", "kv.berth.dev", "keys", "services", "", "/*"],
            ),
        ];
        for (method, path, [verb, group, resource, sub, ns, name]) in cases {
            assert_eq!(
                attrs(method.clone(), path),
                Some(Request::resource(verb, group, resource, sub, ns, name)),
                "{method} {path}"
            );
        }
        assert_eq!(
            attrs(Method::GET, "/apis/apps/v1"),
            Some(Request::NonResource {
                verb: "get".into(),
                path: "/apis/apps/v1".into()
            })
        );
        assert_eq!(attrs(Method::GET, "/healthz"), None);
        assert_eq!(attrs(Method::GET, "/version"), None);
    }

    #[test]
    fn refusals_read_as_kube_apiserver_writes_them() {
        let e = forbidden(
            "alice",
            &Request::resource("list", "", "secrets", "", "shop", ""),
        );
        assert_eq!(e.code(), 403);
        assert_eq!(
            e.to_string(),
            r#"secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "shop""#
        );
        let e = forbidden(
            "bob",
            &Request::resource("delete", "apps", "deployments", "", "shop", "web"),
        );
        assert_eq!(
            e.to_string(),
            r#"deployments.apps "web" is forbidden: User "bob" cannot delete resource "deployments" in API group "apps" in the namespace "shop""#
        );
    }

    #[tokio::test]
    async fn config_templates_with_commands_or_outside_the_node_take_their_own_permission() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            berth_store::Store::open(dir.path(), berth_store::StoreOptions::default()).unwrap();
        let registry = Registry::new(store);
        let nodes = berth_api::kinds::resolve("nodes").unwrap();
        let node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
            "annotations": {berth_api::wellknown::CONFIG_TEMPLATE_DIRS_ANNOTATION: "[\"/srv/t\"]"}}});
        registry
            .create(
                nodes,
                None,
                berth_api::Object::from_value(node).unwrap(),
                "test",
                false,
            )
            .await
            .unwrap();
        let authz = Arc::new(Authorizer::default());
        // ops may run commands, not write anywhere.
        authz
            .policy
            .write()
            .unwrap()
            .put(&serde_json::json!({"kind": "ClusterRole",
            "metadata": {"name": "commands"}, "rules": [{"verbs": ["create"],
            "apiGroups": ["berth.dev"], "resources": ["configtemplates/commands"]}]}));
        authz
            .policy
            .write()
            .unwrap()
            .put(&serde_json::json!({"kind": "ClusterRoleBinding",
            "metadata": {"name": "ops"}, "roleRef": {"kind": "ClusterRole", "name": "commands"},
            "subjects": [{"kind": "User", "name": "ops"}]}));
        let kind = berth_api::kinds::resolve("configtemplates").unwrap();
        let template = |destination: &str, reload: bool| {
            let mut spec = serde_json::json!({"nodeName": "n1", "destination": destination,
                "template": "x"});
            if reload {
                spec["reload"] = serde_json::json!({"command": ["/bin/true"]});
            }
            berth_api::Object::from_value(serde_json::json!({"apiVersion": "berth.dev/v1",
                "kind": "ConfigTemplate", "metadata": {"name": "t", "namespace": "shop"},
                "spec": spec}))
            .unwrap()
        };
        let admit = |user: &str, groups: &[&str], old: Option<berth_api::Object>, new| {
            let user = UserInfo {
                name: user.into(),
                uid: String::new(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            };
            let (registry, authz) = (registry.clone(), authz.clone());
            async move {
                as_requester(user, authz, async {
                    admit_config_template(&registry, kind, old.as_ref(), &new)
                })
                .await
            }
        };
        let inside = template("/srv/t/a.conf", false);
        let commands = template("/srv/t/a.conf", true);
        let outside = template("/etc/a.conf", false);
        assert!(admit("eddie", &[], None, inside.clone()).await.is_ok());
        let e = admit("eddie", &[], None, commands.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), 403);
        assert!(
            e.to_string().starts_with(r#"configtemplates.berth.dev "t" is forbidden: User "eddie" cannot create resource "configtemplates/commands" in API group "berth.dev" in the namespace "shop": the template runs commands"#),
            "{e}"
        );
        let e = admit("eddie", &[], None, outside.clone())
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"cannot create resource "configtemplates/anywhere""#)
                && e.to_string().contains("/etc/a.conf")
                && e.to_string().contains("/srv/t"),
            "{e}"
        );
        // A change that leaves the spec alone needs neither; one that changes it does.
        assert!(
            admit("eddie", &[], Some(commands.clone()), commands.clone())
                .await
                .is_ok()
        );
        let mut changed = commands.clone();
        changed.0["spec"]["template"] = "y".into();
        assert!(
            admit("eddie", &[], Some(commands.clone()), changed)
                .await
                .is_err()
        );
        assert!(
            admit("eddie", &[], Some(commands.clone()), inside.clone())
                .await
                .is_ok()
        );
        // A node that publishes no directories allows nowhere.
        let mut elsewhere = inside.clone();
        elsewhere.0["spec"]["nodeName"] = "n2".into();
        assert!(admit("eddie", &[], None, elsewhere).await.is_err());
        // Holders of the permission, the admins' group and the controllers pass.
        assert!(admit("ops", &[], None, commands.clone()).await.is_ok());
        assert!(
            admit("ops", &[], None, template("/etc/a.conf", true))
                .await
                .is_err()
        );
        assert!(
            admit("root", &[MASTERS], None, template("/etc/a.conf", true))
                .await
                .is_ok()
        );
        assert!(
            admit_config_template(&registry, kind, None, &template("/etc/a.conf", true)).is_ok()
        );
    }
}

//! The Node authorizer and NodeRestriction admission, as Kubernetes has them: a node agent,
//! authenticated as `system:node:NAME` in `system:nodes`, may do what a kubelet needs and no
//! more.
//!
//! - Secrets, ConfigMaps and PersistentVolumeClaims: a node may `get` one only when a pod
//!   bound to it refers to it (a volume, `env`/`envFrom`, `imagePullSecrets`); never list or
//!   watch them; likewise a token (`serviceaccounts/token`) only for an account a pod of its
//!   runs as. The graph of which pod on which node refers to what is kept from a store
//!   watch of pods.
//! - Everything else a kubelet does (its Node, Leases, pods and their status, Services,
//!   Endpoints, Events, certificate requests): the static node rules
//!   (`berth_api::rbac::defaults::node_rules`).
//! - Admission (`admit`): what a node writes must be its own: its Node (whose
//!   `node-role.kubernetes.io/` and `node-restriction.kubernetes.io/` labels it may not
//!   touch, so it cannot steer workloads meant for other nodes), its Lease in
//!   `kube-node-lease`, the status of pods and ConfigTemplates bound to it; it creates no pods
//!   and deletes only its own.
//!
//! What the Node authorizer does not allow is left to RBAC, which grants nodes nothing more
//! by default (`system:node` is bound to no one, as in Kubernetes).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use berth_api::object::Object;
use berth_api::rbac::{PolicyRule, Request};
use berth_store::{EventType, StoreError};
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::registry::Registry;

/// The group every node identity is in.
pub const NODES: &str = "system:nodes";

/// The node a user is, when it is a node's identity.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES)).then_some(name)
}

/// What one pod refers to: `(resource, name)` in its namespace.
fn refs_of(pod: &Value) -> Refs {
    let mut out = BTreeSet::new();
    let spec = &pod["spec"];
    let mut add = |resource: &'static str, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            out.insert((resource, n.to_string()));
        }
    };
    // The account it runs as: a node may ask for its token (`default` when none is named).
    add(
        "serviceaccounts",
        Some(spec["serviceAccountName"].as_str().unwrap_or("default")),
    );
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add("secrets", s["name"].as_str());
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add("secrets", v["secret"]["secretName"].as_str());
        add("configmaps", v["configMap"]["name"].as_str());
        add(
            "persistentvolumeclaims",
            v["persistentVolumeClaim"]["claimName"].as_str(),
        );
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add("secrets", s["secret"]["name"].as_str());
            add("configmaps", s["configMap"]["name"].as_str());
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add("secrets", e["valueFrom"]["secretKeyRef"]["name"].as_str());
                add(
                    "configmaps",
                    e["valueFrom"]["configMapKeyRef"]["name"].as_str(),
                );
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add("secrets", e["secretRef"]["name"].as_str());
                add("configmaps", e["configMapRef"]["name"].as_str());
            }
        }
    }
    out
}

/// What a pod refers to: `(resource, name)` pairs in its namespace.
type Refs = BTreeSet<(&'static str, String)>;

/// Pods by node, with what each refers to.
#[derive(Debug, Default)]
struct Graph {
    /// node → (namespace, pod) → references.
    nodes: HashMap<String, HashMap<(String, String), Refs>>,
    /// (namespace, pod) → node, to move or drop a pod's entry.
    placed: HashMap<(String, String), String>,
}

impl Graph {
    fn put(&mut self, pod: &Value) {
        let key = (
            pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
        );
        self.remove(&key);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if node.is_empty() {
            return;
        }
        self.placed.insert(key.clone(), node.to_string());
        self.nodes
            .entry(node.to_string())
            .or_default()
            .insert(key, refs_of(pod));
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(node) = self.placed.remove(key)
            && let Some(pods) = self.nodes.get_mut(&node)
        {
            pods.remove(key);
            if pods.is_empty() {
                self.nodes.remove(&node);
            }
        }
    }

    /// The pod on `node` in `namespace` that refers to `resource` `name`, if one does.
    fn referrer(&self, node: &str, namespace: &str, resource: &str, name: &str) -> Option<&str> {
        self.nodes.get(node)?.iter().find_map(|((ns, pod), refs)| {
            (ns == namespace && refs.iter().any(|(r, n)| *r == resource && n == name))
                .then_some(pod.as_str())
        })
    }
}

/// The store prefix of pods.
const PODS_PREFIX: &[u8] = b"/registry/core/pods/";

/// The resources a node reaches only through its pods.
const GRAPH_RESOURCES: [&str; 3] = ["secrets", "configmaps", "persistentvolumeclaims"];

/// The Node authorizer: the graph, and the static rules.
#[derive(Debug)]
pub struct NodeAuthorizer {
    graph: RwLock<Graph>,
    rules: Vec<PolicyRule>,
}

impl Default for NodeAuthorizer {
    fn default() -> Self {
        NodeAuthorizer {
            graph: RwLock::default(),
            rules: berth_api::rbac::defaults::node_rules(),
        }
    }
}

impl NodeAuthorizer {
    /// Why node `node` may make `request`, if the Node authorizer allows it (`None` leaves
    /// the decision to RBAC).
    pub fn allows(&self, node: &str, request: &Request) -> Option<String> {
        // A token for the account a pod of its runs as (for the pod's projected token).
        if let Request::Resource(r) = request
            && r.api_group.is_empty()
            && r.resource == "serviceaccounts"
            && r.subresource == "token"
        {
            if r.verb != "create" || r.name.is_empty() {
                return None;
            }
            let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
            return graph
                .referrer(node, &r.namespace, "serviceaccounts", &r.name)
                .map(|pod| {
                    format!(
                        "node authorizer: pod {}/{pod} on node {node} runs as it",
                        r.namespace
                    )
                });
        }
        if let Request::Resource(r) = request
            && GRAPH_RESOURCES.contains(&r.resource.as_str())
            && r.api_group.is_empty()
            && r.subresource.is_empty()
        {
            if r.verb != "get" || r.name.is_empty() {
                return None;
            }
            let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
            return graph
                .referrer(node, &r.namespace, &r.resource, &r.name)
                .map(|pod| {
                    format!(
                        "node authorizer: pod {}/{pod} on node {node} refers to it",
                        r.namespace
                    )
                });
        }
        self.rules
            .iter()
            .any(|rule| rule.allows(request))
            .then(|| format!("node authorizer: what node {node} needs"))
    }

    fn set(&self, pods: Vec<Value>) {
        let mut graph = Graph::default();
        for p in &pods {
            graph.put(p);
        }
        *self.graph.write().unwrap_or_else(|e| e.into_inner()) = graph;
    }

    /// Loads the graph now (before the first request).
    pub fn load_now(&self, registry: &Registry) -> Result<(), StoreError> {
        let (pods, _) = registry.values_under(PODS_PREFIX, "the node authorizer's graph")?;
        self.set(pods);
        Ok(())
    }

    /// Keeps the graph in step with the store's pods until `stop`.
    pub async fn follow(
        self: Arc<Self>,
        registry: Registry,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::registry::follow_values(
            &registry,
            PODS_PREFIX,
            "the node authorizer's graph",
            stop,
            |pods| self.set(pods),
            |changes| {
                let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
                for (typ, v) in changes {
                    match typ {
                        EventType::Put => graph.put(&v),
                        EventType::Delete => graph.remove(&(
                            v["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                            v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        )),
                    }
                }
            },
        )
        .await
    }
}

/// Labels on its Node a node may not add, change or remove.
const RESTRICTED_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/",
    "node-restriction.kubernetes.io/",
];

fn restricted_labels(o: Option<&Object>) -> Vec<(String, String)> {
    o.map(Object::labels)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| RESTRICTED_LABELS.iter().any(|p| k.starts_with(p)))
        .collect()
}

fn node_name_of(o: &Object) -> &str {
    o.get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// NodeRestriction: refuses a write by node `node` of an object that is not its own. `old`
/// is the object before (none for a create), `new` after (none for a delete).
pub fn admit(
    node: &str,
    kind: &berth_api::ResourceKind,
    old: Option<&Object>,
    new: Option<&Object>,
) -> Result<(), ApiError> {
    let Some(obj) = new.or(old) else {
        return Ok(());
    };
    let refuse = |why: String| {
        Err(
            ApiError::forbidden(format!("node \"{node}\" is not allowed to {why}"))
                .with_details(kind, obj.name()),
        )
    };
    match kind.kind {
        "Node" => {
            if obj.name() != node {
                return refuse(format!("modify node \"{}\"", obj.name()));
            }
            if new.is_none() {
                return Ok(());
            }
            if restricted_labels(old) != restricted_labels(new) {
                return refuse(format!(
                    "modify labels with the prefixes {} on its Node",
                    RESTRICTED_LABELS.join(" or ")
                ));
            }
        }
        "Pod" => {
            if old.is_none() {
                return refuse("create pods (it runs the pods bound to it)".into());
            }
            if node_name_of(obj) != node {
                return refuse(format!(
                    "modify pod \"{}/{}\", which is not bound to it",
                    obj.namespace().unwrap_or(""),
                    obj.name()
                ));
            }
        }
        "Lease" if obj.namespace() != Some("kube-node-lease") || obj.name() != node => {
            return refuse(format!(
                "modify lease \"{}/{}\" (only kube-node-lease/{node})",
                obj.namespace().unwrap_or(""),
                obj.name()
            ));
        }
        "ConfigTemplate" if old.is_none() || node_name_of(obj) != node => {
            return refuse(format!(
                "write ConfigTemplate \"{}/{}\", which is not bound to it",
                obj.namespace().unwrap_or(""),
                obj.name()
            ));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}, "spec": {"nodeName": node,
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [{"name": "a", "secret": {"secretName": "db"}},
                {"name": "b", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "all"}}]}]}})
    }

    fn get(resource: &str, ns: &str, name: &str) -> Request {
        Request::resource("get", "", resource, "", ns, name)
    }

    #[test]
    fn a_node_reads_what_its_pods_refer_to_and_nothing_else() {
        let n = NodeAuthorizer::default();
        n.graph.write().unwrap().put(&pod("shop", "web", "node-a"));
        for (r, name) in [
            ("secrets", "db"),
            ("secrets", "pull"),
            ("secrets", "env"),
            ("configmaps", "cfg"),
            ("configmaps", "all"),
            ("persistentvolumeclaims", "data"),
        ] {
            assert!(
                n.allows("node-a", &get(r, "shop", name)).is_some(),
                "{r}/{name}"
            );
            assert!(
                n.allows("node-b", &get(r, "shop", name)).is_none(),
                "{r}/{name} on b"
            );
            assert!(
                n.allows("node-a", &get(r, "other", name)).is_none(),
                "{r}/{name} elsewhere"
            );
        }
        assert!(
            n.allows("node-a", &get("secrets", "shop", "unrelated"))
                .is_none()
        );
        let list = Request::resource("list", "", "secrets", "", "shop", "");
        assert!(n.allows("node-a", &list).is_none());
        // A pod that moves or goes takes its references with it.
        n.graph.write().unwrap().put(&pod("shop", "web", "node-b"));
        assert!(n.allows("node-a", &get("secrets", "shop", "db")).is_none());
        assert!(n.allows("node-b", &get("secrets", "shop", "db")).is_some());
        n.graph
            .write()
            .unwrap()
            .remove(&("shop".into(), "web".into()));
        assert!(n.allows("node-b", &get("secrets", "shop", "db")).is_none());
        // A token only for the accounts its pods run as.
        let token = |sa: &str, ns: &str| {
            Request::resource("create", "", "serviceaccounts", "token", ns, sa)
        };
        n.graph.write().unwrap().put(&pod("shop", "web", "node-a"));
        assert!(n.allows("node-a", &token("default", "shop")).is_some());
        assert!(n.allows("node-a", &token("builder", "shop")).is_none());
        assert!(n.allows("node-b", &token("default", "shop")).is_none());
        let mut runs_as = pod("shop", "job", "node-a");
        runs_as["spec"]["serviceAccountName"] = serde_json::json!("builder");
        n.graph.write().unwrap().put(&runs_as);
        assert!(n.allows("node-a", &token("builder", "shop")).is_some());
        // What every kubelet does is allowed by the static rules.
        let watch_pods = Request::resource("watch", "", "pods", "", "", "");
        assert!(n.allows("node-a", &watch_pods).is_some());
        let status = Request::resource("patch", "", "pods", "status", "shop", "web");
        assert!(n.allows("node-a", &status).is_some());
    }

    fn obj(v: Value) -> Object {
        Object::from_value(v).unwrap()
    }

    #[test]
    fn a_node_writes_only_its_own_objects() {
        let kind = |k: &str| berth_api::kinds::resolve(k).unwrap();
        let node_a = obj(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"zone": "1"}}}),
        );
        assert!(admit("node-a", kind("nodes"), None, Some(&node_a)).is_ok());
        let e = admit("node-b", kind("nodes"), Some(&node_a), Some(&node_a)).unwrap_err();
        assert_eq!(e.code(), 403);
        assert!(
            e.to_string()
                .contains(r#"node "node-b" is not allowed to modify node "node-a""#),
            "{e}"
        );
        let mut promoted = node_a.clone();
        promoted.0["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
        assert!(admit("node-a", kind("nodes"), Some(&node_a), Some(&promoted)).is_err());
        let mut relabelled = node_a.clone();
        relabelled.0["metadata"]["labels"]["zone"] = json!("2");
        assert!(admit("node-a", kind("nodes"), Some(&node_a), Some(&relabelled)).is_ok());
        let p = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x"}, "spec": {"nodeName": "node-a"}}),
        );
        assert!(admit("node-a", kind("pods"), Some(&p), Some(&p)).is_ok());
        assert!(admit("node-b", kind("pods"), Some(&p), Some(&p)).is_err());
        assert!(
            admit("node-a", kind("pods"), None, Some(&p)).is_err(),
            "no pod creates"
        );
        let lease = |ns: &str, n: &str| {
            obj(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n, "namespace": ns}}),
            )
        };
        assert!(
            admit(
                "node-a",
                kind("leases"),
                None,
                Some(&lease("kube-node-lease", "node-a"))
            )
            .is_ok()
        );
        assert!(
            admit(
                "node-a",
                kind("leases"),
                None,
                Some(&lease("kube-node-lease", "node-b"))
            )
            .is_err()
        );
        assert!(
            admit(
                "node-a",
                kind("leases"),
                None,
                Some(&lease("default", "node-a"))
            )
            .is_err()
        );
    }

    #[test]
    fn only_node_identities_are_nodes() {
        let u = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(node_of(&u("system:node:a", &[NODES])), Some("a"));
        assert_eq!(node_of(&u("system:node:a", &[])), None);
        assert_eq!(node_of(&u("system:node:", &[NODES])), None);
        assert_eq!(node_of(&u("alice", &[NODES])), None);
    }
}

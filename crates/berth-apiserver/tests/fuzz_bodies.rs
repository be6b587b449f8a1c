//! Fuzzing of API request bodies: random JSON, and valid objects with random parts replaced,
//! sent to create, update and every patch type of every kind. Nothing may panic, every
//! refusal must be a 4xx `Status`, and what was stored before must survive.

use berth_api::object::Object;
use berth_apiserver::Registry;
use berth_apiserver::patch::PatchType;
use berth_store::{Store, StoreOptions};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-zA-Z0-9./:_-]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "metadata",
            "spec",
            "containers",
            "name",
            "image",
            "ports",
            "-1",
            "100m",
            "1.5Gi",
            "Always",
            "",
            "None"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "apiVersion",
                    "kind",
                    "metadata",
                    "name",
                    "namespace",
                    "labels",
                    "annotations",
                    "spec",
                    "status",
                    "containers",
                    "image",
                    "ports",
                    "containerPort",
                    "port",
                    "selector",
                    "matchLabels",
                    "template",
                    "replicas",
                    "data",
                    "resources",
                    "limits",
                    "requests",
                    "ownerReferences",
                    "finalizers",
                    "generateName",
                    "resourceVersion",
                    "$patch",
                    "x"
                ])
                .prop_map(String::from),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at a random path of `base` with `with`.
fn graft(base: Value, path: &[usize], with: Value) -> Value {
    let Some((&i, rest)) = path.split_first() else {
        return with;
    };
    match base {
        Value::Object(mut m) if !m.is_empty() => {
            let k = m.keys().nth(i % m.len()).cloned().unwrap_or_default();
            let child = m.remove(&k).unwrap_or(Value::Null);
            m.insert(k, graft(child, rest, with));
            Value::Object(m)
        }
        Value::Array(mut a) if !a.is_empty() => {
            let n = i % a.len();
            let child = std::mem::take(&mut a[n]);
            a[n] = graft(child, rest, with);
            Value::Array(a)
        }
        _ => with,
    }
}

fn fixture(kind: &str) -> Value {
    let tmpl = json!({"metadata": {"labels": {"app": "f"}}, "spec": {"containers": [{"name": "c", "image": "host", "ports": [{"containerPort": 80}], "resources": {"limits": {"memory": "64Mi"}}}]}});
    match kind {
        "Pod" => {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "f"}, "spec": tmpl["spec"]})
        }
        "Deployment" => {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "f"}, "spec": {"selector": {"matchLabels": {"app": "f"}}, "template": tmpl}})
        }
        "ReplicaSet" => {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "f"}, "spec": {"selector": {"matchLabels": {"app": "f"}}, "template": tmpl}})
        }
        "Service" => {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "f"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "f"}}})
        }
        "Secret" => {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "f"}, "data": {"k": "aGVsbG8="}})
        }
        "Endpoints" => {
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "f"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 1}]}]})
        }
        "Event" => {
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "f"}, "involvedObject": {"kind": "Pod", "name": "x"}})
        }
        "EndpointSlice" => {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "f"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 1}]})
        }
        "Node" => {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "f"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})
        }
        "Lease" => {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "f"}, "spec": {"holderIdentity": "x"}})
        }
        "Namespace" => json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "f"}}),
        "Ingress" => {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "f"}, "spec": {"rules": [{"host": "a.example.test", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "f", "port": {"number": 80}}}}]}}]}})
        }
        "ConfigTemplate" => {
            json!({"apiVersion": "berth.dev/v1", "kind": "ConfigTemplate", "metadata": {"name": "f"}, "spec": {"nodeName": "n", "destination": "/tmp/f.conf", "template": "{% for s in services %}{{ s.name }}{% endfor %}", "debounce": {"min": "10ms", "max": "1s"}, "check": {"command": ["true"]}, "probe": {"httpGet": {"url": "http://127.0.0.1/"}}}})
        }
        "ServiceAccount" => {
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "f"}, "automountServiceAccountToken": false})
        }
        "CertificateSigningRequest" => {
            let (_, csr) =
                berth_tls::certificate_request("system:node:f", &["system:nodes"]).unwrap();
            json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "f"},
                "spec": {"request": berth_api::base64::encode(csr.as_bytes()), "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                    "usages": ["digital signature", "client auth"]}})
        }
        "Role" | "ClusterRole" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "f"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}]})
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "f"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "web", "namespace": "default"}]})
        }
        _ => {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f"}, "data": {"k": "v"}})
        }
    }
}

fn check(r: Result<Object, berth_apiserver::error::ApiError>) {
    if let Err(e) = r {
        assert!(
            (400..500).contains(&e.code()),
            "a bad body must get a 4xx, got {}: {}",
            e.code(),
            e
        );
        assert_eq!(e.status().kind, "Status");
    }
}

proptest! {
    // PROPTEST_CASES sets the count: 256 in the test command, a million in
    // `scripts/bench fuzz` (on tmpfs, where a store's fsync costs nothing).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bodies_never_panic_and_bad_ones_get_4xx(
        kind_idx in 0usize..berth_api::KINDS.len(),
        path in prop::collection::vec(any::<usize>(), 0..6),
        random in arb_json(),
        patch in arb_json(),
        raw in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let reg = Registry::new(store.clone());
        let kind = &berth_api::KINDS[kind_idx];
        // Reviews are never stored; their bodies are fuzzed through the server's handler.
        if kind.is_review() {
            return Ok(());
        }
        let ns = kind.namespaced.then_some("default");
        rt.block_on(async {
            reg.ensure_default_namespaces().await.unwrap();
            let good = fixture(kind.kind);
            let stored = reg.create(kind, ns, Object::from_value(good.clone()).unwrap(), "fuzz", false).await.unwrap();
            // Random JSON as a whole body, and grafted into a valid one.
            if let Some(o) = Object::from_value(random.clone()) {
                check(reg.create(kind, ns, o.clone(), "fuzz", false).await);
                check(reg.update(kind, ns, "f", o, "fuzz", "update", false).await);
            }
            let grafted = graft(good.clone(), &path, random.clone());
            if let Some(o) = Object::from_value(grafted) {
                let mut renamed = o.clone();
                if renamed.metadata().is_some_and(|m| m.get("name").and_then(Value::as_str) == Some("f")) {
                    renamed.set_meta("name", "g");
                }
                check(reg.create(kind, ns, renamed, "fuzz", false).await);
                let mut upd = o;
                upd.remove_meta("resourceVersion");
                check(reg.update(kind, ns, "f", upd, "fuzz", "update", false).await);
            }
            // Every patch type, with structured and raw bodies.
            let body = serde_json::to_vec(&patch).unwrap();
            for pt in [PatchType::Merge, PatchType::Json, PatchType::Strategic] {
                check(reg.patch(kind, ns, "f", pt, &body, "fuzz", false, false).await);
                check(reg.patch(kind, ns, "f", pt, &raw, "fuzz", false, false).await);
                if kind.has_status {
                    check(reg.patch(kind, ns, "f", pt, &body, "fuzz", true, false).await);
                }
            }
            // The object stored first is still readable and still valid.
            let now = reg.get(kind, ns, "f");
            if let Ok(now) = now {
                let errs = berth_api::validate::validate_create(kind, &now);
                assert!(errs.is_empty(), "an invalid object was stored: {errs:?}");
                assert_eq!(now.uid(), stored.uid());
            }
        });
        store.close();
    }

    #[test]
    fn routes_and_manifests_never_panic(path in "(/[a-z0-9%.:-]{0,10}){0,8}", text in "\\PC{0,300}") {
        let _ = berth_apiserver::server::route(&path);
        let _ = berth_api::manifest::parse("fuzz", &text);
    }
}

//! The API over real HTTP against an in-process control plane: every kind's round trip,
//! conflicts, validation, authentication, selectors, paging, watch, subresources, cascading
//! deletion and namespaces.

mod common;

use std::time::Duration;

use berth_api::kinds::resolve;
use berth_client::Client;
use common::{TestServer, eventually};
use hyper::Method;
use serde_json::{Value, json};

/// A valid object of each kind, named `name`.
fn fixture(kind: &str, name: &str) -> Value {
    let pod_spec =
        json!({"containers": [{"name": "app", "image": "host", "command": ["sleep", "1000"]}]});
    let tmpl = json!({"metadata": {"labels": {"app": name}}, "spec": pod_spec});
    match kind {
        "Namespace" => json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        "Node" => {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"t": "1"}}})
        }
        "Pod" => {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": pod_spec})
        }
        "Service" => {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}})
        }
        "Endpoints" => {
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "labels": {"t": "1"}}, "subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80}]}]})
        }
        "ConfigMap" => {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"t": "1"}}, "data": {"k": "v"}})
        }
        "Secret" => {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": {"t": "1"}}, "stringData": {"password": "hunter2"}})
        }
        "Event" => {
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "labels": {"t": "1"}}, "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Test", "message": "m", "type": "Normal"})
        }
        "ReplicaSet" => {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": tmpl}})
        }
        "Deployment" => {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": tmpl}})
        }
        "Lease" => {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 10}})
        }
        "EndpointSlice" => {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": name, "labels": {"t": "1"}}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
        }
        "Ingress" => {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": {"rules": [{"host": "a.example.test", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}})
        }
        "ConfigTemplate" => {
            json!({"apiVersion": "berth.dev/v1", "kind": "ConfigTemplate", "metadata": {"name": name, "labels": {"t": "1"}}, "spec": {"nodeName": "n1", "destination": "/tmp/x.conf", "template": "{{ services|length }}"}})
        }
        "ServiceAccount" => {
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "labels": {"t": "1"}}, "automountServiceAccountToken": false})
        }
        "CertificateSigningRequest" => {
            let (_, csr) =
                berth_tls::certificate_request(&format!("user-{name}"), &["dev"]).unwrap();
            json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name, "labels": {"t": "1"}},
                "spec": {"request": berth_api::base64::encode(csr.as_bytes()), "signerName": "kubernetes.io/kube-apiserver-client",
                    "usages": ["digital signature", "client auth"]}})
        }
        "Role" | "ClusterRole" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name, "labels": {"t": "1"}}, "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}]})
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name, "labels": {"t": "1"}}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "Group", "name": "auditors"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "default"}]})
        }
        other => panic!("no fixture for {other}"),
    }
}

async fn next_event(w: &mut berth_client::WatchStream) -> berth_client::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event in time")
        .unwrap()
        .expect("stream open")
}

#[tokio::test]
async fn every_kind_round_trips_create_get_list_update_patch_watch_delete() {
    let t = TestServer::start().await;
    let c = &t.admin;
    // Reviews are answered, not stored (tested on their own).
    for kind in berth_api::KINDS.iter().filter(|k| !k.is_review()) {
        let ns = kind.namespaced.then_some("default");
        let name = format!("rt-{}", kind.singular);
        let mut w = c.watch(kind, ns, "resourceVersion=1").await.unwrap();
        // create
        let created = c
            .create(kind, ns, &fixture(kind.kind, &name), "")
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", kind.kind));
        assert_eq!(created["metadata"]["name"], name.as_str());
        assert!(!created["metadata"]["uid"].as_str().unwrap().is_empty());
        assert!(created["metadata"]["creationTimestamp"].is_string());
        let rv1 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        // duplicate
        let dup = c
            .create(kind, ns, &fixture(kind.kind, &name), "")
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Some(409), "{}", kind.kind);
        // get and list
        let got = c.get(kind, ns, &name).await.unwrap();
        assert_eq!(got, created, "{}", kind.kind);
        let list = c.list(kind, ns, "").await.unwrap();
        assert_eq!(list["kind"], format!("{}List", kind.kind));
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["metadata"]["name"] == name.as_str())
        );
        // update with the current resourceVersion
        let mut upd = got.clone();
        upd["metadata"]["labels"]["updated"] = json!("yes");
        let updated = c.replace(kind, ns, &name, &upd).await.unwrap();
        assert_ne!(updated["metadata"]["resourceVersion"], rv1.as_str());
        // a stale resourceVersion conflicts
        let stale = c.replace(kind, ns, &name, &upd).await.unwrap_err();
        assert_eq!(stale.code(), Some(409), "{}", kind.kind);
        // merge patch, JSON patch, strategic merge patch
        let p = c
            .patch(
                kind,
                ns,
                &name,
                "application/merge-patch+json",
                &json!({"metadata": {"annotations": {"a": "1"}}}),
                "",
            )
            .await
            .unwrap();
        assert_eq!(p["metadata"]["annotations"]["a"], "1");
        let p = c
            .patch(
                kind,
                ns,
                &name,
                "application/json-patch+json",
                &json!([{"op": "add", "path": "/metadata/annotations/b", "value": "2"}]),
                "",
            )
            .await
            .unwrap();
        assert_eq!(p["metadata"]["annotations"]["b"], "2");
        let p = c
            .patch(
                kind,
                ns,
                &name,
                "application/strategic-merge-patch+json",
                &json!({"metadata": {"labels": {"s": "3"}}}),
                "",
            )
            .await
            .unwrap();
        assert_eq!(p["metadata"]["labels"]["s"], "3");
        // delete
        c.delete(kind, ns, &name, "").await.unwrap();
        // (a namespace goes through Terminating first)
        eventually(10, "the object to be gone", || async {
            (c.get(kind, ns, &name).await.err()?.code() == Some(404)).then_some(())
        })
        .await;
        // the watch saw it all, in order
        let mut types = Vec::new();
        while types.last().map(String::as_str) != Some("DELETED") {
            let ev = next_event(&mut w).await;
            if ev.object["metadata"]["name"] != name.as_str() {
                continue;
            }
            types.push(ev.typ);
        }
        let modified = if kind.kind == "Namespace" { 5 } else { 4 };
        let mut want = vec!["ADDED".to_string()];
        want.extend(std::iter::repeat_n("MODIFIED".to_string(), modified));
        want.push("DELETED".into());
        assert_eq!(types, want, "{}", kind.kind);
    }
    t.stop().await;
}

#[tokio::test]
async fn validation_names_every_bad_field_with_422() {
    let t = TestServer::start().await;
    let k = resolve("deploy").unwrap();
    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Bad_Name", "labels": {"ok": "not ok!"}},
        "spec": {"replicas": -2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "", "ports": [{"containerPort": 99999}],
                "resources": {"limits": {"memory": "12 GB"}}}]}}}});
    let err = t
        .admin
        .create(k, Some("default"), &bad, "")
        .await
        .unwrap_err();
    let berth_client::ClientError::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    let fields: Vec<String> = status
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    for want in [
        "metadata.name",
        "metadata.labels.ok",
        "spec.replicas",
        "spec.template.spec.containers[0].image",
        "spec.template.spec.containers[0].ports[0].containerPort",
        "spec.template.spec.containers[0].resources.limits.memory",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} missing from {fields:?}"
        );
    }
    // immutable selector
    t.admin
        .create(k, Some("default"), &fixture("Deployment", "web"), "")
        .await
        .unwrap();
    let mut d = t.admin.get(k, Some("default"), "web").await.unwrap();
    d["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
    let err = t
        .admin
        .replace(k, Some("default"), "web", &d)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(422));
    assert!(err.to_string().contains("spec.selector"), "{err}");
    // a pod's spec is immutable
    let p = resolve("po").unwrap();
    t.admin
        .create(p, Some("default"), &fixture("Pod", "p"), "")
        .await
        .unwrap();
    let mut pod = t.admin.get(p, Some("default"), "p").await.unwrap();
    pod["spec"]["containers"][0]["command"] = json!(["true"]);
    assert_eq!(
        t.admin
            .replace(p, Some("default"), "p", &pod)
            .await
            .unwrap_err()
            .code(),
        Some(422)
    );
    t.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let t = TestServer::start().await;
    let c = &t.admin;
    // 401 without a token, or with a wrong one
    let r = t
        .anonymous
        .raw(Method::GET, "/api/v1/namespaces", None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let s: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "Unauthorized");
    let wrong = Client::new(
        c.server(),
        "wrong-token-xxxxxxxx",
        &t.server.as_ref().unwrap().ca_pem,
    );
    assert_eq!(
        wrong.raw(Method::GET, "/api", None).await.unwrap().status,
        401
    );
    // health is open
    assert_eq!(
        t.anonymous
            .raw(Method::GET, "/readyz", None)
            .await
            .unwrap()
            .status,
        200
    );
    // malformed JSON says where
    let r = c
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some((
                "application/json",
                b"{\"apiVersion\": \"v1\",\n  \"kind\": ".to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let s: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(s["message"].as_str().unwrap().contains("line 2"), "{s}");
    // malformed YAML says where
    let r = c
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some((
                "application/yaml",
                b"apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n".to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("line"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // YAML bodies work
    let r = c
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some((
                "application/yaml",
                b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
                    .to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // too large
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"x": "a".repeat(4 * 1024 * 1024)}});
    let r = c
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(("application/json", serde_json::to_vec(&big).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    // kind mismatch, namespace mismatch, unknown resource, missing namespace
    let cm = resolve("cm").unwrap();
    let err = c
        .create(
            resolve("svc").unwrap(),
            Some("default"),
            &fixture("ConfigMap", "x"),
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(400));
    let mut other_ns = fixture("ConfigMap", "x");
    other_ns["metadata"]["namespace"] = json!("elsewhere");
    assert_eq!(
        c.create(cm, Some("default"), &other_ns, "")
            .await
            .unwrap_err()
            .code(),
        Some(400)
    );
    assert_eq!(
        c.raw(Method::GET, "/api/v1/widgets", None)
            .await
            .unwrap()
            .status,
        404
    );
    let err = c
        .create(cm, Some("nowhere"), &fixture("ConfigMap", "x"), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404));
    assert!(
        err.to_string().contains("namespaces \"nowhere\" not found"),
        "{err}"
    );
    // bad selectors
    assert_eq!(
        c.list(cm, Some("default"), "labelSelector=a%20in%20b")
            .await
            .unwrap_err()
            .code(),
        Some(400)
    );
    assert_eq!(
        c.list(cm, Some("default"), "fieldSelector=spec.x%3Dy")
            .await
            .unwrap_err()
            .code(),
        Some(400)
    );
    // nothing stored was harmed
    assert_eq!(
        c.get(cm, Some("default"), "from-yaml").await.unwrap()["data"]["a"],
        "b"
    );
    t.stop().await;
}

#[tokio::test]
async fn discovery_documents() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let api = c.json(Method::GET, "/api", None).await.unwrap();
    assert_eq!(api["versions"], json!(["v1"]));
    let v1 = c.json(Method::GET, "/api/v1", None).await.unwrap();
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "pods",
        "pods/status",
        "services",
        "configmaps",
        "namespaces",
        "nodes",
        "endpoints",
        "secrets",
        "events",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let apis = c.json(Method::GET, "/apis", None).await.unwrap();
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"apps")
            && groups.contains(&"coordination.k8s.io")
            && groups.contains(&"berth.dev")
    );
    let apps = c.json(Method::GET, "/apis/apps/v1", None).await.unwrap();
    assert_eq!(apps["groupVersion"], "apps/v1");
    let version = t
        .anonymous
        .json(Method::GET, "/version", None)
        .await
        .unwrap();
    assert_eq!(version["major"], "1");
    let ns = c.list(resolve("ns").unwrap(), None, "").await.unwrap();
    assert!(
        ns["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["metadata"]["name"] == "default")
    );
    t.stop().await;
}

#[tokio::test]
async fn selectors_and_paging() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let cm = resolve("cm").unwrap();
    for i in 0..25 {
        let mut o = fixture("ConfigMap", &format!("cm-{i:02}"));
        o["metadata"]["labels"] =
            json!({"tier": if i % 2 == 0 { "even" } else { "odd" }, "n": i.to_string()});
        c.create(cm, Some("default"), &o, "").await.unwrap();
    }
    let count = |v: &Value| v["items"].as_array().unwrap().len();
    assert_eq!(
        count(
            &c.list(cm, Some("default"), "labelSelector=tier%3Deven")
                .await
                .unwrap()
        ),
        13
    );
    assert_eq!(
        count(
            &c.list(cm, Some("default"), "labelSelector=tier!%3Deven")
                .await
                .unwrap()
        ),
        12
    );
    assert_eq!(
        count(
            &c.list(cm, Some("default"), "labelSelector=n%20in%20(1,2,3)")
                .await
                .unwrap()
        ),
        3
    );
    assert_eq!(
        count(
            &c.list(
                cm,
                Some("default"),
                "labelSelector=n%20notin%20(1,2,3),tier"
            )
            .await
            .unwrap()
        ),
        22
    );
    assert_eq!(
        count(
            &c.list(cm, Some("default"), "labelSelector=!tier")
                .await
                .unwrap()
        ),
        0
    );
    assert_eq!(
        count(
            &c.list(cm, Some("default"), "fieldSelector=metadata.name%3Dcm-03")
                .await
                .unwrap()
        ),
        1
    );
    // paging: 25 objects in pages of 10, one consistent snapshot even with writes between pages
    let p1 = c.list(cm, Some("default"), "limit=10").await.unwrap();
    assert_eq!(count(&p1), 10);
    c.create(cm, Some("default"), &fixture("ConfigMap", "cm-99"), "")
        .await
        .unwrap();
    let tok = p1["metadata"]["continue"].as_str().unwrap();
    let p2 = c
        .list(cm, Some("default"), &format!("limit=10&continue={tok}"))
        .await
        .unwrap();
    let tok = p2["metadata"]["continue"].as_str().unwrap();
    let p3 = c
        .list(cm, Some("default"), &format!("limit=10&continue={tok}"))
        .await
        .unwrap();
    assert_eq!((count(&p2), count(&p3)), (10, 5));
    assert!(p3["metadata"].get("continue").is_none());
    assert_eq!(
        p1["metadata"]["resourceVersion"],
        p3["metadata"]["resourceVersion"]
    );
    // all namespaces
    let all = c.list(cm, None, "").await.unwrap();
    assert_eq!(count(&all), 26);
    t.stop().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let k = resolve("deploy").unwrap();
    let d = c
        .create(k, Some("default"), &fixture("Deployment", "web"), "")
        .await
        .unwrap();
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(
        d["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults applied"
    );
    // status through the main resource is ignored
    let mut d2 = d.clone();
    d2["status"] = json!({"replicas": 5});
    d2["metadata"]["labels"]["x"] = json!("y");
    let d2 = c.replace(k, Some("default"), "web", &d2).await.unwrap();
    assert!(d2.get("status").is_none());
    assert_eq!(
        d2["metadata"]["generation"], 1,
        "metadata changes do not bump generation"
    );
    // status subresource changes only status
    let mut st = d2.clone();
    st["status"] = json!({"replicas": 2, "readyReplicas": 1});
    st["spec"]["replicas"] = json!(9);
    let path = format!("{}/status", Client::object_path(k, Some("default"), "web"));
    let out = c
        .json(
            Method::PUT,
            &path,
            Some(("application/json", serde_json::to_vec(&st).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(out["status"]["readyReplicas"], 1);
    assert_eq!(out["spec"]["replicas"], 2);
    let out = c
        .json(
            Method::PATCH,
            &path,
            Some((
                "application/merge-patch+json",
                br#"{"status":{"readyReplicas":2}}"#.to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(out["status"]["readyReplicas"], 2);
    // spec changes bump generation
    let p = c
        .patch(
            k,
            Some("default"),
            "web",
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 3}}),
            "",
        )
        .await
        .unwrap();
    assert_eq!(p["metadata"]["generation"], 2);
    assert_eq!(
        p["status"]["readyReplicas"], 2,
        "status survives a spec change"
    );
    // a no-op update writes nothing
    let again = c
        .patch(
            k,
            Some("default"),
            "web",
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 3}}),
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"],
        p["metadata"]["resourceVersion"]
    );
    // dry run writes nothing
    let dry = c
        .patch(
            k,
            Some("default"),
            "web",
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 7}}),
            "dryRun=All",
        )
        .await
        .unwrap();
    assert_eq!(dry["spec"]["replicas"], 7);
    assert_eq!(
        c.get(k, Some("default"), "web").await.unwrap()["spec"]["replicas"],
        3
    );
    t.stop().await;
}

#[tokio::test]
async fn watch_semantics() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let cm = resolve("cm").unwrap();
    let first = c
        .create(cm, Some("default"), &fixture("ConfigMap", "a"), "")
        .await
        .unwrap();
    let rv0: u64 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    c.patch(
        cm,
        Some("default"),
        "a",
        "application/merge-patch+json",
        &json!({"data": {"k": "2"}}),
        "",
    )
    .await
    .unwrap();
    c.create(cm, Some("default"), &fixture("ConfigMap", "b"), "")
        .await
        .unwrap();
    c.delete(cm, Some("default"), "a", "").await.unwrap();
    // from an old revision: exactly the missed events, in order
    let mut w = c
        .watch(cm, Some("default"), &format!("resourceVersion={rv0}"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = next_event(&mut w).await;
        seen.push(format!(
            "{} {}",
            e.typ,
            e.object["metadata"]["name"].as_str().unwrap()
        ));
    }
    assert_eq!(seen, vec!["MODIFIED a", "ADDED b", "DELETED a"]);
    // without a resourceVersion: the current state as ADDED, then changes
    let mut w2 = c.watch(cm, Some("default"), "").await.unwrap();
    let e = next_event(&mut w2).await;
    assert_eq!(
        (e.typ.as_str(), e.object["metadata"]["name"].as_str()),
        ("ADDED", Some("b"))
    );
    // label selectors turn transitions into ADDED/DELETED
    let mut wl = c
        .watch(cm, Some("default"), "labelSelector=sel%3Dyes")
        .await
        .unwrap();
    c.patch(
        cm,
        Some("default"),
        "b",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"sel": "yes"}}}),
        "",
    )
    .await
    .unwrap();
    c.patch(
        cm,
        Some("default"),
        "b",
        "application/merge-patch+json",
        &json!({"data": {"z": "1"}}),
        "",
    )
    .await
    .unwrap();
    c.patch(
        cm,
        Some("default"),
        "b",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"sel": "no"}}}),
        "",
    )
    .await
    .unwrap();
    let types: Vec<String> = [
        next_event(&mut wl).await,
        next_event(&mut wl).await,
        next_event(&mut wl).await,
    ]
    .into_iter()
    .map(|e| e.typ)
    .collect();
    assert_eq!(types, vec!["ADDED", "MODIFIED", "DELETED"]);
    // bookmarks carry the current revision
    let mut wb = c
        .watch(
            cm,
            Some("default"),
            &format!("resourceVersion={}&allowWatchBookmarks=true", rv0),
        )
        .await
        .unwrap();
    let bookmark = loop {
        let e = next_event(&mut wb).await;
        if e.typ == "BOOKMARK" {
            break e;
        }
    };
    let brv: u64 = bookmark.object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let list = c.list(cm, Some("default"), "").await.unwrap();
    assert!(
        brv >= list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
    // timeoutSeconds ends the stream
    let mut wt = c
        .watch(
            cm,
            Some("default"),
            "resourceVersion=999999&timeoutSeconds=1",
        )
        .await;
    if let Ok(w) = wt.as_mut() {
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match w.next().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the watch should end after its timeout");
    }
    t.stop().await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_says_relist() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let cm = resolve("cm").unwrap();
    for i in 0..5 {
        c.create(
            cm,
            Some("default"),
            &fixture("ConfigMap", &format!("c{i}")),
            "",
        )
        .await
        .unwrap();
    }
    let store = t.server.as_ref().unwrap();
    let _ = store;
    // Compact through the store the server runs on.
    let current: u64 =
        c.list(cm, Some("default"), "").await.unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    berth_app_compact(&t, current).await;
    let mut w = c
        .watch(cm, Some("default"), "resourceVersion=2")
        .await
        .unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(e.typ, "ERROR");
    assert_eq!(e.object["code"], 410);
    assert_eq!(e.object["reason"], "Expired");
    assert!(
        e.object["message"]
            .as_str()
            .unwrap()
            .contains("too old resource version")
    );
    t.stop().await;
}

async fn berth_app_compact(t: &TestServer, rev: u64) {
    t.server
        .as_ref()
        .unwrap()
        .store()
        .compact(rev)
        .await
        .unwrap();
}

#[tokio::test]
async fn background_cascading_delete_and_orphans() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let (dk, rk, pk) = (
        resolve("deploy").unwrap(),
        resolve("rs").unwrap(),
        resolve("po").unwrap(),
    );
    let d = c
        .create(dk, Some("default"), &fixture("Deployment", "web"), "")
        .await
        .unwrap();
    let owner = |o: &Value, kind: &str| json!([{"apiVersion": o["apiVersion"], "kind": kind, "name": o["metadata"]["name"], "uid": o["metadata"]["uid"], "controller": true}]);
    let mut rs = fixture("ReplicaSet", "web-1");
    rs["spec"]["selector"]["matchLabels"]["app"] = json!("web-1");
    rs["spec"]["template"]["metadata"]["labels"]["app"] = json!("web-1");
    rs["metadata"]["ownerReferences"] = owner(&d, "Deployment");
    let rs = c.create(rk, Some("default"), &rs, "").await.unwrap();
    for i in 0..3 {
        let mut p = fixture("Pod", &format!("web-1-{i}"));
        p["metadata"]["ownerReferences"] = owner(&rs, "ReplicaSet");
        c.create(pk, Some("default"), &p, "").await.unwrap();
    }
    c.delete(dk, Some("default"), "web", "").await.unwrap();
    eventually(10, "dependents to be collected", || async {
        let pods = c.list(pk, Some("default"), "").await.unwrap();
        let rss = c.list(rk, Some("default"), "").await.unwrap();
        (pods["items"].as_array().unwrap().is_empty()
            && rss["items"].as_array().unwrap().is_empty())
        .then_some(())
    })
    .await;
    // Orphan keeps the dependents and drops their owner reference.
    let d = c
        .create(dk, Some("default"), &fixture("Deployment", "keep"), "")
        .await
        .unwrap();
    let mut p = fixture("Pod", "kept");
    p["metadata"]["ownerReferences"] = owner(&d, "Deployment");
    c.create(pk, Some("default"), &p, "").await.unwrap();
    c.delete(dk, Some("default"), "keep", "propagationPolicy=Orphan")
        .await
        .unwrap();
    let kept = c.get(pk, Some("default"), "kept").await.unwrap();
    assert!(kept["metadata"].get("ownerReferences").is_none());
    t.stop().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let cm = resolve("cm").unwrap();
    let mut o = fixture("ConfigMap", "held");
    o["metadata"]["finalizers"] = json!(["example.com/hold"]);
    c.create(cm, Some("default"), &o, "").await.unwrap();
    let r = c
        .raw(
            Method::DELETE,
            &Client::object_path(cm, Some("default"), "held"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let held = c.get(cm, Some("default"), "held").await.unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    c.patch(
        cm,
        Some("default"),
        "held",
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": null}}),
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        c.get(cm, Some("default"), "held").await.unwrap_err().code(),
        Some(404)
    );
    t.stop().await;
}

#[tokio::test]
async fn deleting_a_namespace_empties_it() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let (nsk, cm) = (resolve("ns").unwrap(), resolve("cm").unwrap());
    c.create(nsk, None, &fixture("Namespace", "team"), "")
        .await
        .unwrap();
    for i in 0..3 {
        c.create(
            cm,
            Some("team"),
            &fixture("ConfigMap", &format!("c{i}")),
            "",
        )
        .await
        .unwrap();
    }
    c.delete(nsk, None, "team", "").await.unwrap();
    let err = c
        .create(cm, Some("team"), &fixture("ConfigMap", "late"), "")
        .await;
    if let Err(e) = err {
        assert!(matches!(e.code(), Some(403) | Some(404)), "{e}");
    }
    eventually(10, "namespace to go", || async {
        (c.get(nsk, None, "team").await.err()?.code() == Some(404)).then_some(())
    })
    .await;
    let left = c.list(cm, Some("team"), "").await.unwrap();
    assert!(left["items"].as_array().unwrap().is_empty(), "{left}");
    assert_eq!(
        c.delete(nsk, None, "default", "").await.unwrap_err().code(),
        Some(403)
    );
    t.stop().await;
}

#[tokio::test]
async fn history_records_authors_and_past_states() {
    let t = TestServer::start().await;
    let cm = resolve("cm").unwrap();
    t.alice
        .create(cm, Some("default"), &fixture("ConfigMap", "conf"), "")
        .await
        .unwrap();
    t.bob
        .patch(
            cm,
            Some("default"),
            "conf",
            "application/merge-patch+json",
            &json!({"data": {"k": "bob"}}),
            "",
        )
        .await
        .unwrap();
    let v2 = t
        .alice
        .patch(
            cm,
            Some("default"),
            "conf",
            "application/merge-patch+json",
            &json!({"data": {"k": "alice"}}),
            "",
        )
        .await
        .unwrap();
    t.bob.delete(cm, Some("default"), "conf", "").await.unwrap();
    let h = t
        .admin
        .history("resource=configmaps&namespace=default&name=conf")
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["user"].as_str().unwrap().into(),
                i["verb"].as_str().unwrap().into(),
                i["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("alice".into(), "create".into(), "Put".into()),
            ("bob".into(), "patch".into(), "Put".into()),
            ("alice".into(), "patch".into(), "Put".into()),
            ("bob".into(), "delete".into(), "Delete".into()),
        ]
    );
    let rev = v2["metadata"]["resourceVersion"].as_str().unwrap();
    let past = t
        .admin
        .history(&format!(
            "resource=configmaps&namespace=default&name=conf&revision={rev}"
        ))
        .await
        .unwrap();
    assert_eq!(past["data"]["k"], "alice");
    let first_time = h["items"][0]["time"].as_str().unwrap();
    let _ = first_time;
    // the revision log names authors too
    let revs = t.admin.revisions("limit=10").await.unwrap();
    assert!(
        revs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user"] == "bob" && r["verb"] == "delete")
    );
    t.stop().await;
}

#[tokio::test]
async fn scale_subresource() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let k = resolve("deploy").unwrap();
    c.create(k, Some("default"), &fixture("Deployment", "web"), "")
        .await
        .unwrap();
    let path = format!("{}/scale", Client::object_path(k, Some("default"), "web"));
    let s = c.json(Method::GET, &path, None).await.unwrap();
    assert_eq!(
        (s["kind"].as_str(), s["apiVersion"].as_str()),
        (Some("Scale"), Some("autoscaling/v1"))
    );
    assert_eq!(s["spec"]["replicas"], 2);
    assert_eq!(s["status"]["selector"], "app=web");
    let mut put = s.clone();
    put["spec"]["replicas"] = json!(4);
    let s2 = c
        .json(
            Method::PUT,
            &path,
            Some(("application/json", serde_json::to_vec(&put).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(s2["spec"]["replicas"], 4);
    // a stale resourceVersion conflicts
    assert_eq!(
        c.json(
            Method::PUT,
            &path,
            Some(("application/json", serde_json::to_vec(&put).unwrap()))
        )
        .await
        .unwrap_err()
        .code(),
        Some(409)
    );
    c.json(
        Method::PATCH,
        &path,
        Some((
            "application/merge-patch+json",
            br#"{"spec":{"replicas":1}}"#.to_vec(),
        )),
    )
    .await
    .unwrap();
    assert_eq!(
        c.get(k, Some("default"), "web").await.unwrap()["spec"]["replicas"],
        1
    );
    let bad = c
        .json(
            Method::PATCH,
            &path,
            Some((
                "application/merge-patch+json",
                br#"{"spec":{"replicas":-3}}"#.to_vec(),
            )),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(422));
    assert!(bad.to_string().contains("spec.replicas"), "{bad}");
    // kinds without it say so
    let cm = resolve("cm").unwrap();
    c.create(cm, Some("default"), &fixture("ConfigMap", "c"), "")
        .await
        .unwrap();
    assert_eq!(
        c.json(
            Method::GET,
            &format!("{}/scale", Client::object_path(cm, Some("default"), "c")),
            None
        )
        .await
        .unwrap_err()
        .code(),
        Some(404)
    );
    t.stop().await;
}

#[tokio::test]
async fn binding_assigns_a_pod_once_and_bound_pods_stop_gracefully() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let po = resolve("pods").unwrap();
    c.create(po, Some("default"), &fixture("Pod", "web"), "")
        .await
        .unwrap();
    let bind = |node: &str| {
        let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "web"}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}}))
        .unwrap();
        let path = format!(
            "{}/binding",
            Client::object_path(po, Some("default"), "web")
        );
        async move {
            c.raw(Method::POST, &path, Some(("application/json", body)))
                .await
                .unwrap()
        }
    };
    assert_eq!(bind("n1").await.status, 201);
    let pod = c.get(po, Some("default"), "web").await.unwrap();
    assert_eq!(pod["spec"]["nodeName"], "n1");
    let again = bind("n2").await;
    assert_eq!(again.status, 409);
    let status: Value = serde_json::from_slice(&again.body).unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("already assigned to node \"n1\""),
        "{status}"
    );
    let empty = bind("").await;
    assert_eq!(empty.status, 422);

    // A bound pod is marked, with its grace period, for its node's agent to stop.
    let r = c
        .raw(
            Method::DELETE,
            &Client::object_path(po, Some("default"), "web"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let marked = c.get(po, Some("default"), "web").await.unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    // A shorter grace period shortens it; a longer one does not lengthen it.
    let body = serde_json::to_vec(&json!({"gracePeriodSeconds": 5})).unwrap();
    c.raw(
        Method::DELETE,
        &Client::object_path(po, Some("default"), "web"),
        Some(("application/json", body)),
    )
    .await
    .unwrap();
    let body = serde_json::to_vec(&json!({"gracePeriodSeconds": 60})).unwrap();
    c.raw(
        Method::DELETE,
        &Client::object_path(po, Some("default"), "web"),
        Some(("application/json", body)),
    )
    .await
    .unwrap();
    let marked = c.get(po, Some("default"), "web").await.unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 5);
    // Binding a pod being deleted is refused; grace 0 deletes at once.
    assert_eq!(bind("n1").await.status, 409);
    let path = format!(
        "{}?gracePeriodSeconds=0",
        Client::object_path(po, Some("default"), "web")
    );
    assert_eq!(
        c.raw(Method::DELETE, &path, None).await.unwrap().status,
        200
    );
    assert_eq!(
        c.get(po, Some("default"), "web").await.unwrap_err().code(),
        Some(404)
    );
    let bad = format!(
        "{}?gracePeriodSeconds=-1",
        Client::object_path(po, Some("default"), "x")
    );
    assert_eq!(c.raw(Method::DELETE, &bad, None).await.unwrap().status, 400);
    // An unbound pod goes at once.
    c.create(po, Some("default"), &fixture("Pod", "loose"), "")
        .await
        .unwrap();
    let r = c
        .raw(
            Method::DELETE,
            &Client::object_path(po, Some("default"), "loose"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn bindings_in_one_transaction_fall_back_one_by_one_on_a_conflict() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let po = resolve("pods").unwrap();
    let ev = resolve("events").unwrap();
    for name in ["a", "b", "c"] {
        c.create(po, Some("default"), &fixture("Pod", name), "")
            .await
            .unwrap();
    }
    let registry =
        berth_apiserver::registry::Registry::new(t.server.as_ref().unwrap().store().clone());
    let get = |name: &str| registry.get(po, Some("default"), name).unwrap();
    let event = |bound: &berth_api::Object| {
        let e = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.scheduled", bound.name()), "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": bound.name()}, "reason": "Scheduled",
            "message": "m", "type": "Normal"});
        vec![(ev, berth_api::Object::from_value(e).unwrap())]
    };
    // All current: one transaction binds all three, with their events.
    let batch: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| (get(n), "n1".to_string()))
        .collect();
    let r = registry.bind_all(&batch, event, "test").await;
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(
        r[0].as_ref().unwrap().resource_version(),
        r[1].as_ref().unwrap().resource_version()
    );
    assert!(c.get(ev, Some("default"), "a.scheduled").await.is_ok());
    // A stale copy (c changed since it was read) and one already bound: the batch fails as a
    // whole, then each goes alone: c binds from its current version, a is refused.
    let stale_c = get("c");
    c.patch(
        po,
        Some("default"),
        "c",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"x": "1"}}}),
        "",
    )
    .await
    .unwrap();
    let batch = vec![(stale_c, "n2".to_string()), (get("a"), "n2".to_string())];
    let r = registry.bind_all(&batch, event, "test").await;
    assert!(
        r[0].is_ok(),
        "{:?}",
        r[0].as_ref().err().map(ToString::to_string)
    );
    assert_eq!(r[1].as_ref().unwrap_err().code(), 409);
    assert_eq!(get("c").into_value()["spec"]["nodeName"], "n2");
    assert_eq!(get("a").into_value()["spec"]["nodeName"], "n1");
}

#[tokio::test]
async fn services_get_cluster_ips_of_their_own_from_the_service_range() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let svc = resolve("services").unwrap();
    let make = |name: &str, ip: Option<&str>| {
        let mut s = fixture("Service", name);
        if let Some(ip) = ip {
            s["spec"]["clusterIP"] = json!(ip);
        }
        s
    };
    let a = c
        .create(svc, Some("default"), &make("a", None), "")
        .await
        .unwrap();
    let b = c
        .create(svc, Some("default"), &make("b", None), "")
        .await
        .unwrap();
    let ip_a = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip_a.starts_with("10.43."), "{a}");
    assert_eq!(a["spec"]["clusterIPs"], json!([ip_a]));
    assert_ne!(ip_a, b["spec"]["clusterIP"].as_str().unwrap());
    // One asked for by name is given if free, and refused if taken or out of range.
    let fixed = c
        .create(svc, Some("default"), &make("dns", Some("10.43.0.10")), "")
        .await
        .unwrap();
    assert_eq!(fixed["spec"]["clusterIP"], "10.43.0.10");
    let taken = c
        .create(svc, Some("default"), &make("again", Some("10.43.0.10")), "")
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Some(422));
    assert!(
        taken
            .to_string()
            .contains("provided IP is already allocated"),
        "{taken}"
    );
    let outside = c
        .create(svc, Some("default"), &make("far", Some("10.99.0.1")), "")
        .await
        .unwrap_err();
    assert!(
        outside.to_string().contains("not in the valid range"),
        "{outside}"
    );
    // Headless ones get none.
    let headless = c
        .create(svc, Some("default"), &make("headless", Some("None")), "")
        .await
        .unwrap();
    assert_eq!(headless["spec"]["clusterIP"], "None");
    // Deleting a Service gives its IP back.
    c.delete(svc, Some("default"), "dns", "").await.unwrap();
    let reused = c
        .create(svc, Some("default"), &make("dns2", Some("10.43.0.10")), "")
        .await
        .unwrap();
    assert_eq!(reused["spec"]["clusterIP"], "10.43.0.10");
}

#[tokio::test]
async fn node_ports_are_allocated_kept_across_updates_and_given_back() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let svc = resolve("services").unwrap();
    let mut s = fixture("Service", "np");
    s["spec"]["type"] = json!("NodePort");
    let created = c.create(svc, Some("default"), &s, "").await.unwrap();
    let port = created["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port), "{created}");
    // A PUT that leaves out the cluster IP and node port keeps both.
    let mut put = s.clone();
    put["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    put["metadata"]["labels"] = json!({"changed": "yes"});
    let updated = c.replace(svc, Some("default"), "np", &put).await.unwrap();
    assert_eq!(updated["spec"]["ports"][0]["nodePort"], port);
    assert_eq!(updated["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    // Another Service asking for the same port is refused, naming the field.
    let mut other = fixture("Service", "other");
    other["spec"]["type"] = json!("NodePort");
    other["spec"]["ports"][0]["nodePort"] = json!(port);
    let e = c
        .create(svc, Some("default"), &other, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422));
    assert!(
        e.to_string().contains("spec.ports[0].nodePort")
            && e.to_string().contains("already allocated"),
        "{e}"
    );
    // Back to ClusterIP gives the port back; so does deleting the Service.
    c.patch(
        svc,
        Some("default"),
        "np",
        "application/merge-patch+json",
        &json!({"spec": {"type": "ClusterIP"}}),
        "",
    )
    .await
    .unwrap();
    let got = c.create(svc, Some("default"), &other, "").await.unwrap();
    assert_eq!(got["spec"]["ports"][0]["nodePort"], port);
    c.delete(svc, Some("default"), "other", "").await.unwrap();
    let again = c
        .create(
            svc,
            Some("default"),
            &{
                let mut o = other.clone();
                o["metadata"]["name"] = json!("third");
                o
            },
            "",
        )
        .await
        .unwrap();
    assert_eq!(again["spec"]["ports"][0]["nodePort"], port);
}

#[tokio::test]
async fn logs_exec_and_metrics_say_what_is_missing() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let po = resolve("pods").unwrap();
    let no = resolve("nodes").unwrap();
    c.create(po, Some("default"), &fixture("Pod", "web"), "")
        .await
        .unwrap();
    let path = Client::object_path(po, Some("default"), "web");
    let message = |r: &berth_client::RawResponse| -> String {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["message"].as_str().unwrap_or("").to_string()
    };

    // Not on a node yet: nothing to read or run.
    let r = c
        .raw(Method::GET, &format!("{path}/log"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        message(&r).contains("has not been scheduled"),
        "{}",
        message(&r)
    );
    let r = c
        .raw(Method::GET, &format!("{path}/log?container=nope"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(message(&r).contains("container nope is not valid for pod web"));

    // Exec is a WebSocket; a plain request is told so.
    let r = c
        .raw(Method::POST, &format!("{path}/exec?command=true"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(message(&r).contains("WebSocket"), "{}", message(&r));

    // On a node whose agent publishes no API: 503 naming the node.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    c.create(no, None, &node, "").await.unwrap();
    let bind = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}}))
    .unwrap();
    let r = c
        .raw(
            Method::POST,
            &format!("{path}/binding"),
            Some(("application/json", bind)),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let r = c
        .raw(Method::GET, &format!("{path}/log"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(
        message(&r).contains("node n1 publishes no agent API"),
        "{}",
        message(&r)
    );

    // The metrics API is discoverable; a node without an agent is left out of the list.
    let groups = c.json(Method::GET, "/apis", None).await.unwrap();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"),
        "{groups}"
    );
    let nodes = c
        .json(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes", None)
        .await
        .unwrap();
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["items"], json!([]));
    let r = c
        .raw(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes/n1", None)
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let r = c
        .raw(
            Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn bootstrap_tokens_authenticate_until_they_expire_or_go() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let secrets = resolve("secrets").unwrap();
    let server = t.server.as_ref().unwrap();
    let b64 = |s: &str| berth_api::base64::encode(s.as_bytes());
    let token = |id: &str, secret: &str, expiration: &str| {
        let mut data = json!({"token-id": b64(id), "token-secret": b64(secret),
            "usage-bootstrap-authentication": b64("true")});
        if !expiration.is_empty() {
            data["expiration"] = json!(b64(expiration));
        }
        json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"}, "data": data})
    };
    c.create(
        secrets,
        Some("kube-system"),
        &token("abc123", "0123456789abcdef", ""),
        "",
    )
    .await
    .unwrap();
    c.create(
        secrets,
        Some("kube-system"),
        &token("old456", "0123456789abcdef", "2001-01-01T00:00:00Z"),
        "",
    )
    .await
    .unwrap();
    let as_token = |tok: &str| Client::new(&server.url, tok, &server.ca_pem);
    let code = |r: Result<Value, berth_client::ClientError>| {
        r.map(|_| 200).unwrap_or_else(|e| e.code().unwrap_or(0))
    };
    // Who a token is: a SelfSubjectReview any authenticated caller may make.
    let review = resolve("selfsubjectreviews").unwrap();
    let whoami = |tok: &str| {
        let client = as_token(tok);
        async move {
            client
                .create(
                    review,
                    None,
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
                    "",
                )
                .await
        }
    };
    let me = whoami("abc123.0123456789abcdef").await.unwrap();
    assert_eq!(
        me["status"]["userInfo"]["username"], "system:bootstrap:abc123",
        "{me}"
    );
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!(["system:bootstrappers", "system:authenticated"]),
        "{me}"
    );
    for (tok, why) in [
        ("abc123.0123456789abcdeX", "a wrong secret"),
        ("abc123.fffffffffffffff0", "another secret"),
        ("old456.0123456789abcdef", "expired"),
    ] {
        assert_eq!(code(whoami(tok).await), 401, "{why}");
    }
    // It may ask for a node identity and nothing else: no reads, no other writes.
    let nodes = resolve("nodes").unwrap();
    let cm = resolve("cm").unwrap();
    let joiner = as_token("abc123.0123456789abcdef");
    assert_eq!(code(joiner.list(nodes, None, "").await), 403);
    assert_eq!(
        code(
            joiner
                .create(cm, Some("default"), &fixture("ConfigMap", "by-node"), "")
                .await
        ),
        403
    );
    // The author of a change made with it is the bootstrap user.
    let csrs = resolve("csr").unwrap();
    joiner
        .create(
            csrs,
            None,
            &fixture("CertificateSigningRequest", "by-node"),
            "",
        )
        .await
        .unwrap();
    let h = c
        .history("resource=certificatesigningrequests&name=by-node")
        .await
        .unwrap();
    assert_eq!(h["items"][0]["user"], "system:bootstrap:abc123", "{h}");
    // Deleting its Secret revokes it.
    c.delete(secrets, Some("kube-system"), "bootstrap-token-abc123", "")
        .await
        .unwrap();
    assert_eq!(code(whoami("abc123.0123456789abcdef").await), 401);
    t.stop().await;
}

#[tokio::test]
async fn the_key_value_tree_reads_writes_compares_and_watches() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let k = |key: &str, q: &str| {
        let mut p = format!("/apis/kv.berth.dev/v1/keys{key}");
        if !q.is_empty() {
            p = format!("{p}?{q}");
        }
        p
    };
    let put = |key: &str, q: &str, v: &[u8]| {
        let p = k(key, q);
        let v = v.to_vec();
        async move {
            c.raw(Method::PUT, &p, Some(("application/octet-stream", v)))
                .await
                .unwrap()
        }
    };
    let get = |key: &str, q: &str| {
        let p = k(key, q);
        async move { c.raw(Method::GET, &p, None).await.unwrap() }
    };
    let body = |r: &berth_client::RawResponse| serde_json::from_slice::<Value>(&r.body).unwrap();

    let r = put("/app/config/level", "", b"debug").await;
    assert_eq!(r.status, 200);
    let first = body(&r);
    let index = first["modIndex"].as_u64().unwrap();
    assert_eq!(first["value"], "debug");
    assert_eq!(first["key"], "/app/config/level");
    put("/app/config/port", "", b"8080").await;
    put("/app/name", "", &[0xff, 0x00]).await;
    // A value, raw and as an entry; binary values come base64-encoded.
    let r = get("/app/config/level", "raw=1").await;
    assert_eq!(&r.body[..], b"debug");
    assert_eq!(body(&get("/app/name", "").await)["valueBase64"], "/wA=");
    // Directory-style listing, and everything under a key.
    let l = body(&get("/app", "list=1").await);
    let names: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config/", "name"]);
    let all = body(&get("/app/config", "recurse=1").await);
    assert_eq!(all["entries"].as_array().unwrap().len(), 2);
    // Missing: 404 naming the key.
    let r = get("/app/nope", "").await;
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("key /app/nope not found"));

    // Compare-and-swap: at the index read, it writes; at a stale one, 412 saying where it is.
    let r = put("/app/config/level", &format!("cas={index}"), b"info").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let now = body(&r)["modIndex"].as_u64().unwrap();
    let r = put("/app/config/level", &format!("cas={index}"), b"warn").await;
    assert_eq!(r.status, 412);
    assert!(
        String::from_utf8_lossy(&r.body).contains(&format!("is at index {now}")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(put("/app/config/level", "cas=0", b"x").await.status, 412);
    assert_eq!(put("/app/fresh", "cas=0", b"x").await.status, 200);
    // Too big, bad keys, bad indexes: refused, nothing stored changes.
    let r = put("/app/big", "", &vec![b'a'; 512 * 1024 + 1]).await;
    assert_eq!(r.status, 413);
    assert!(String::from_utf8_lossy(&r.body).contains("512 KiB"));
    assert_eq!(
        put("/app/big", "", &vec![b'a'; 512 * 1024]).await.status,
        200
    );
    assert_eq!(put("/app/%2E%2E/x", "", b"x").await.status, 400);
    assert_eq!(put("/app/x", "cas=abc", b"x").await.status, 400);
    assert_eq!(&get("/app/config/level", "raw=1").await.body[..], b"info");

    // A watch from an index sees each real change after it, in order; writing the same value
    // again is no change.
    let mut w = c
        .stream(&k("/app/config", &format!("watch=1&recurse=1&index={now}")))
        .await
        .unwrap();
    put("/app/config/level", "", b"info").await; // the same value
    put("/app/config/port", "", b"9090").await;
    c.raw(Method::DELETE, &k("/app/config/level", ""), None)
        .await
        .unwrap();
    put("/app/other", "", b"not watched").await;
    let mut lines = String::new();
    while lines.lines().count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("a change in time")
            .unwrap()
            .unwrap();
        lines.push_str(&String::from_utf8_lossy(&chunk));
    }
    let evs: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs[0]["type"], "PUT");
    assert_eq!(evs[0]["key"], "/app/config/port");
    assert_eq!(evs[0]["value"], "9090");
    assert_eq!(evs[1]["type"], "DELETE");
    assert_eq!(evs[1]["key"], "/app/config/level");
    assert!(evs[1]["modIndex"].as_u64() > evs[0]["modIndex"].as_u64());

    // Recursive delete; an index compacted away is 410.
    let r = c
        .raw(Method::DELETE, &k("/app", "recurse=1"), None)
        .await
        .unwrap();
    assert_eq!(body(&r)["deleted"], 5);
    assert_eq!(get("/app/name", "").await.status, 404);
    let current = t.server.as_ref().unwrap().store().current_revision();
    berth_app_compact(&t, current).await;
    let r = get("/app", &format!("watch=1&index={}", index)).await;
    assert_eq!(r.status, 410);
    t.stop().await;
}

/// POSTs `obj` to `path` and returns the answer with its warnings.
async fn post_raw(c: &Client, path: &str, obj: &Value) -> berth_client::RawResponse {
    c.raw(
        Method::POST,
        path,
        Some(("application/json", serde_json::to_vec(obj).unwrap())),
    )
    .await
    .unwrap()
}

fn host_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "hostNetwork": true,
        "volumes": [{"name": "root", "hostPath": {"path": "/", "type": "Directory"}}],
        "containers": [{"name": "app", "image": "host", "command": ["sleep", "1000"],
            "securityContext": {"privileged": true}, "volumeMounts": [{"name": "root", "mountPath": "/host"}]}]}})
}

#[tokio::test]
async fn pod_security_enforces_baseline_by_default_and_follows_namespace_labels() {
    let t = TestServer::start().await;
    let c = &t.admin;
    let pods = resolve("pods").unwrap();
    let nsk = resolve("namespaces").unwrap();

    // default: baseline. 403 naming every broken rule, its field and the level; nothing kept.
    let r = post_raw(c, "/api/v1/namespaces/default/pods", &host_pod("bad")).await;
    let status: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["details"]["name"], "bad");
    assert_eq!(status["details"]["kind"], "pods");
    assert_eq!(
        status["message"],
        "pods \"bad\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), hostPath volumes (volume \"root\"), privileged (container \"app\" must not set securityContext.privileged=true)"
    );
    assert_eq!(
        c.get(pods, Some("default"), "bad")
            .await
            .unwrap_err()
            .code(),
        Some(404)
    );
    // Each field alone is refused, also in a namespace made without labels.
    c.create(nsk, None, &fixture("Namespace", "plain"), "")
        .await
        .unwrap();
    for (field, spec, why) in [
        (
            "hostPID",
            json!({"hostPID": true}),
            "host namespaces (hostPID=true)",
        ),
        (
            "capabilities",
            json!({"containers": [{"name": "app", "image": "host", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
            "non-default capabilities (container \"app\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
        ),
        (
            "seccomp",
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
        ),
    ] {
        let mut p = fixture("Pod", field.to_lowercase().as_str());
        for (k, v) in spec.as_object().unwrap() {
            p["spec"][k] = v.clone();
        }
        let r = post_raw(c, "/api/v1/namespaces/plain/pods", &p).await;
        let status: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 403, "{field}: {status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .ends_with(&format!("violates PodSecurity \"baseline:latest\": {why}")),
            "{field}: {status}"
        );
    }

    // kube-system is privileged unless labelled otherwise.
    let r = post_raw(c, "/api/v1/namespaces/kube-system/pods", &host_pod("sys")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // A namespace labelled enforce=privileged takes them.
    let mut ns = fixture("Namespace", "open");
    ns["metadata"]["labels"] = json!({"pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/enforce-version": "latest"});
    c.create(nsk, None, &ns, "").await.unwrap();
    let r = post_raw(c, "/api/v1/namespaces/open/pods", &host_pod("host")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // A bad label value is refused naming the label.
    let mut bad = fixture("Namespace", "typo");
    bad["metadata"]["labels"] = json!({"pod-security.kubernetes.io/enforce": "privilged"});
    let err = c.create(nsk, None, &bad, "").await.unwrap_err();
    assert_eq!(err.code(), Some(422));
    assert!(
        err.to_string().contains(
            "metadata.labels[pod-security.kubernetes.io/enforce]: Unsupported value: \"privilged\""
        ),
        "{err}"
    );

    // warn: the pod is made, and the answer carries the warning kubectl prints.
    let mut ns = fixture("Namespace", "warned");
    ns["metadata"]["labels"] = json!({"pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted"});
    c.create(nsk, None, &ns, "").await.unwrap();
    let r = post_raw(c, "/api/v1/namespaces/warned/pods", &fixture("Pod", "w")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.warnings,
        vec![
            "299 - \"would violate PodSecurity \\\"restricted:latest\\\": allowPrivilegeEscalation != false (container \\\"app\\\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \\\"app\\\" must set securityContext.capabilities.drop=[\\\"ALL\\\"]), runAsNonRoot != true (pod or container \\\"app\\\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \\\"app\\\" must set securityContext.seccompProfile.type to \\\"RuntimeDefault\\\" or \\\"Localhost\\\")\""
        ]
    );
    // audit: recorded as an Event on the pod.
    let ev = c
        .list(resolve("events").unwrap(), Some("warned"), "")
        .await
        .unwrap();
    let audit: Vec<&Value> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "PodSecurityAudit")
        .collect();
    assert_eq!(audit.len(), 1, "{ev}");
    assert_eq!(audit[0]["involvedObject"]["name"], "w");
    assert!(
        audit[0]["message"].as_str().unwrap().starts_with(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{}",
        audit[0]
    );

    // A workload whose template breaks the enforced level is made, with a warning.
    let mut d = fixture("Deployment", "hostnet");
    d["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    let r = post_raw(c, "/apis/apps/v1/namespaces/default/deployments", &d).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.warnings,
        vec![
            "299 - \"would violate PodSecurity \\\"baseline:latest\\\": host namespaces (hostNetwork=true)\""
        ]
    );

    // Updates that leave the template alone are not looked at again; changes to it are.
    let patch = |body: Value| {
        c.raw(
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/hostnet",
            Some((
                "application/merge-patch+json",
                serde_json::to_vec(&body).unwrap(),
            )),
        )
    };
    let r = patch(json!({"spec": {"replicas": 3}})).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let r = patch(json!({"spec": {"template": {"spec": {"hostIPC": true}}}}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.warnings,
        vec![
            "299 - \"would violate PodSecurity \\\"baseline:latest\\\": host namespaces (hostNetwork=true, hostIPC=true)\""
        ]
    );

    // Tightening a namespace warns about the pods already in it, which stay.
    let mut open = c.get(nsk, None, "open").await.unwrap();
    open["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("baseline");
    let r = c
        .raw(
            Method::PUT,
            "/api/v1/namespaces/open",
            Some(("application/json", serde_json::to_vec(&open).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert_eq!(
        r.warnings[0],
        "299 - \"existing pods in namespace \\\"open\\\" violate the new PodSecurity enforce level \\\"baseline:latest\\\"\""
    );
    assert!(r.warnings[1].starts_with("299 - \"host: host namespaces (hostNetwork=true)"));
    c.get(pods, Some("open"), "host").await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn pods_a_controller_makes_are_checked_when_made() {
    let t = TestServer::start_with(|o| o.controllers = true).await;
    let c = &t.admin;
    let mut rs = fixture("ReplicaSet", "hostrs");
    rs["spec"]["template"]["spec"]["hostPID"] = json!(true);
    let r = post_raw(c, "/apis/apps/v1/namespaces/default/replicasets", &rs).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    let ev = resolve("events").unwrap();
    let msg = eventually(20, "a FailedCreate event", || async {
        let l = c.list(ev, Some("default"), "").await.ok()?;
        l["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedCreate" && e["involvedObject"]["name"] == "hostrs")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
    })
    .await;
    assert!(
        msg.starts_with("Error creating: pods \"hostrs-")
            && msg.ends_with(
                "is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostPID=true)"
            ),
        "{msg}"
    );
    let pods = c
        .list(resolve("pods").unwrap(), Some("default"), "")
        .await
        .unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 0, "{pods}");
    t.stop().await;
}

#[tokio::test]
async fn every_namespace_has_a_default_service_account() {
    let t = TestServer::start_with(|o| o.controllers = true).await;
    let c = &t.admin;
    let (nsk, sa) = (resolve("ns").unwrap(), resolve("sa").unwrap());
    // The namespaces a cluster starts with, and one made later.
    c.create(nsk, None, &fixture("Namespace", "team"), "")
        .await
        .unwrap();
    for ns in ["default", "kube-system", "team"] {
        eventually(10, &format!("{ns}'s default ServiceAccount"), || async {
            c.get(sa, Some(ns), "default").await.ok().map(|_| ())
        })
        .await;
    }
    // Deleted while its namespace lives, it comes back (a new object, a new uid).
    let before = c.get(sa, Some("team"), "default").await.unwrap();
    c.delete(sa, Some("team"), "default", "").await.unwrap();
    let after = eventually(10, "the default ServiceAccount made again", || async {
        c.get(sa, Some("team"), "default").await.ok()
    })
    .await;
    assert_ne!(after["metadata"]["uid"], before["metadata"]["uid"]);
    t.stop().await;
}

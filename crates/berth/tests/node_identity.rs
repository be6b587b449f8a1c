//! Node identities, on a real node in a network namespace of its own: a join token is traded
//! once for a client certificate `system:node:NAME` (a CertificateSigningRequest the control
//! plane approves and signs), the token alone can do nothing else, a second machine cannot
//! take a registered node's name, and the certificate is renewed before it expires.

mod common;

use std::path::{Path, PathBuf};

use common::harness::Harness;
use common::{berth, eventually, get_json, stdout};
use serde_json::Value;

/// A kubeconfig that authenticates with `token` (the join token).
fn token_kubeconfig(h: &Harness, token: &str) -> PathBuf {
    let p = h.dir.path().join("join.kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: joiner\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: joiner\ncurrent-context: c\n",
            h.url,
            h.ca_file().display()
        ),
    )
    .unwrap();
    p
}

fn csrs(kc: &Path) -> Vec<Value> {
    get_json(kc, &["csr"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn condition(csr: &Value, typ: &str) -> Option<Value> {
    csr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == typ)
        .cloned()
}

#[test]
fn a_join_token_buys_one_node_identity_which_renews_itself() {
    // Certificates live 30 s here (a week by default): a renewal is due within 21-27 s.
    let started = std::time::Instant::now();
    let h = Harness::start(1, &["--node-cert-lifetime", "30s"]);
    let admin = &h.kubeconfig;

    // The node joined with a request the control plane approved and signed.
    let joined = csrs(admin);
    let first = joined
        .iter()
        .find(|c| {
            c["spec"]["username"]
                .as_str()
                .is_some_and(|u| u.starts_with("system:bootstrap:"))
        })
        .unwrap_or_else(|| panic!("no request from the join token: {joined:?}"));
    assert_eq!(
        condition(first, "Approved").unwrap()["reason"],
        "AutoApproved",
        "{first}"
    );
    assert!(
        first["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(
        first["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );

    // The certificate it joined with, to see it renewed below.
    let cert = h.nodes[0].data.join("pki/node-client.crt");
    let before = std::fs::read_to_string(&cert).unwrap();

    // From then on it writes as itself.
    let lease = eventually(20, "the node's Lease written as system:node:node-a", || {
        let o = berth(
            admin,
            &[
                "history",
                "lease/node-a",
                "-n",
                "kube-node-lease",
                "--status",
                "-o",
                "json",
            ],
        );
        let h: Value = serde_json::from_slice(&o.stdout).ok()?;
        let items = h["items"].as_array()?.clone();
        items
            .iter()
            .any(|i| i["user"] == "system:node:node-a")
            .then_some(items)
    });
    assert!(!lease.is_empty());

    // The join token alone reads nothing and writes nothing.
    let joiner = token_kubeconfig(&h, h.join_token());
    for what in [
        &["get", "pods", "-A"][..],
        &["get", "secrets", "-A"],
        &["get", "nodes"],
        &["get", "configmaps", "-n", "kube-system"],
    ] {
        let o = berth(&joiner, what);
        assert!(!o.status.success(), "{what:?} with a join token");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("is forbidden"), "{what:?}: {e}");
    }

    // A second machine cannot take node-a's name with the token: its request is denied.
    let (_, csr_pem) =
        berth_tls::certificate_request("system:node:node-a", &["system:nodes"]).unwrap();
    let manifest = h.dir.path().join("impostor.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: impostor\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [digital signature, key encipherment, client auth]\n",
            berth_api::base64::encode(csr_pem.as_bytes())
        ),
    )
    .unwrap();
    let o = berth(&joiner, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let denied = eventually(10, "the impostor's request to be decided", || {
        condition(&get_json(admin, &["csr", "impostor"]), "Denied")
    });
    assert_eq!(denied["reason"], "NodeExists", "{denied}");
    let impostor = get_json(admin, &["csr", "impostor"]);
    assert!(impostor["status"]["certificate"].is_null(), "{impostor}");
    // What the server recorded as the requester is the token's, whatever a client writes.
    assert!(
        impostor["spec"]["username"]
            .as_str()
            .is_some_and(|u| u.starts_with("system:bootstrap:")),
        "{impostor}"
    );

    // With its certificate (curl, as any client), the node reads only the Secrets its pods
    // refer to and writes only its own objects.
    let pki = h.nodes[0].data.join("pki");
    let as_node = |method: &str, path: &str, body: Option<&str>| -> (u16, String) {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(h.ca_file())
            .arg("--cert")
            .arg(pki.join("node-client.crt"))
            .arg("--key")
            .arg(pki.join("node-client.key"));
        if let Some(b) = body {
            cmd.args([
                "-H",
                "Content-Type: application/merge-patch+json",
                "--data",
                b,
            ]);
        }
        let o = cmd.arg(format!("{}{path}", h.url)).output().expect("curl");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };
    for s in ["mine", "theirs"] {
        let o = berth(
            admin,
            &["create", "secret", "generic", s, "--from-literal=k=v"],
        );
        let o = if o.status.success() {
            o
        } else {
            // This berth has no `create secret`: a manifest does the same.
            let f = h.dir.path().join(format!("{s}.yaml"));
            std::fs::write(
                &f,
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {s}\nstringData:\n  k: v\n"
                ),
            )
            .unwrap();
            berth(admin, &["apply", "-f", f.to_str().unwrap()])
        };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let pod = h.dir.path().join("uses-mine.yaml");
    std::fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: uses-mine\nspec:\n  nodeName: node-a\n  containers:\n  - name: c\n    image: host\n    command: [sleep, '3600']\n    env:\n    - name: K\n      valueFrom:\n        secretKeyRef: {name: mine, key: k}\n").unwrap();
    let o = berth(admin, &["apply", "-f", pod.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eventually(10, "node-a to read the Secret its pod refers to", || {
        (as_node("GET", "/api/v1/namespaces/default/secrets/mine", None).0 == 200).then_some(())
    });
    let (code, body) = as_node("GET", "/api/v1/namespaces/default/secrets/theirs", None);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"User \"system:node:node-a\" cannot get resource \"secrets\""#),
        "{body}"
    );
    assert_eq!(as_node("GET", "/api/v1/secrets", None).0, 403);
    assert_eq!(
        as_node("GET", "/api/v1/namespaces/default/configmaps", None).0,
        403
    );
    // Another node's Node, and its own restricted labels, are out of its reach.
    let other = h.dir.path().join("node-b.yaml");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-b\n",
    )
    .unwrap();
    assert!(
        berth(admin, &["apply", "-f", other.to_str().unwrap()])
            .status
            .success()
    );
    let (code, body) = as_node(
        "PATCH",
        "/api/v1/nodes/node-b",
        Some(r#"{"metadata":{"labels":{"stolen":"yes"}}}"#),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"node \"node-a\" is not allowed to modify node \"node-b\""#),
        "{body}"
    );
    let (code, body) = as_node(
        "PATCH",
        "/api/v1/nodes/node-a",
        Some(r#"{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}"#),
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = as_node(
        "PATCH",
        "/api/v1/nodes/node-a",
        Some(r#"{"metadata":{"labels":{"disk":"ssd"}}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let b = get_json(admin, &["node", "node-b"]);
    assert!(b["metadata"]["labels"]["stolen"].is_null(), "{b}");

    // The agent API answers the API server, and others only as RBAC lets them: the node's
    // own certificate, of the same CA, gets neither logs nor exec of a pod (from where the
    // API server calls it).
    let node = get_json(admin, &["node", "node-a"]);
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].clone();
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or_else(|| panic!("no address on {node}"))
        .to_string();
    for path in [
        "/containerLogs/default/uses-mine/c",
        "/exec/default/uses-mine/c?command=id&output=1",
    ] {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &h.server_netns(), "curl", "-sSk"])
            .args(["-o", "/dev/null", "-w", "%{http_code}", "--cert"])
            .arg(pki.join("node-client.crt"))
            .arg("--key")
            .arg(pki.join("node-client.key"))
            .arg(format!("https://{ip}:{port}{path}"))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "403",
            "{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // Anyone else RBAC lets use the node's API (nodes/proxy), asked of the API server with a
    // SubjectAccessReview as the kubelet asks it: a user of the cluster CA in group ops.
    let (key, csr_pem) = berth_tls::certificate_request("olga", &["ops"]).unwrap();
    let csr = h.dir.path().join("olga-csr.yaml");
    std::fs::write(
        &csr,
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: olga\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [digital signature, client auth]\n",
            berth_api::base64::encode(csr_pem.as_bytes())
        ),
    )
    .unwrap();
    assert!(
        berth(admin, &["apply", "-f", csr.to_str().unwrap()])
            .status
            .success()
    );
    let home = h.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = common::kubectl(&home, admin, &["certificate", "approve", "olga"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cert_pem = eventually(10, "olga's certificate", || {
        let c = get_json(admin, &["csr", "olga"]);
        let b64 = c["status"]["certificate"].as_str()?.to_string();
        String::from_utf8(berth_api::base64::decode(&b64)?).ok()
    });
    let (olga_crt, olga_key) = (h.dir.path().join("olga.crt"), h.dir.path().join("olga.key"));
    std::fs::write(&olga_crt, cert_pem).unwrap();
    std::fs::write(&olga_key, key).unwrap();
    let logs_as_olga = || {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &h.server_netns(), "curl", "-sSk"])
            .args(["-o", "/dev/null", "-w", "%{http_code}", "--cert"])
            .arg(&olga_crt)
            .arg("--key")
            .arg(&olga_key)
            .arg(format!(
                "https://{ip}:{port}/containerLogs/default/uses-mine/c"
            ))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(logs_as_olga(), "403");
    let role = h.dir.path().join("node-proxy.yaml");
    std::fs::write(
        &role,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: node-proxy\nrules:\n- apiGroups: [\"\"]\n  resources: [nodes/proxy]\n  verbs: [get, create]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: ops-node-proxy\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: node-proxy\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: ops\n",
    )
    .unwrap();
    assert!(
        berth(admin, &["apply", "-f", role.to_str().unwrap()])
            .status
            .success()
    );
    // The agent keeps a refusal up to 30 s.
    eventually(45, "olga to read the pod's log from the node", || {
        (logs_as_olga() == "200").then_some(())
    });

    // Before its certificate runs out, the node asks for a new one with the old, and keeps
    // working past the first one's end.
    let renewal = eventually(45, "a renewal by the node itself", || {
        csrs(admin).into_iter().find(|c| {
            c["spec"]["username"] == "system:node:node-a"
                && c["status"]["certificate"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
        })
    });
    assert_eq!(
        condition(&renewal, "Approved").unwrap()["reason"],
        "AutoApproved"
    );
    eventually(10, "the renewed certificate on disk", || {
        (std::fs::read_to_string(&cert).unwrap() != before).then_some(())
    });
    // Once its first certificate has expired (30 s after it was signed, which was before the
    // node was Ready), the node still renews its Lease: it presents the new one.
    let expired = started + std::time::Duration::from_secs(35);
    if let Some(left) = expired.checked_duration_since(std::time::Instant::now()) {
        // Waiting for a certificate's end, a time, not for an event.
        std::thread::sleep(left);
    }
    let renew_time = || {
        get_json(admin, &["lease", "node-a", "-n", "kube-node-lease"])["spec"]["renewTime"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let mut seen = renew_time();
    for i in 0..3 {
        seen = eventually(
            20,
            &format!("Lease renewal {i} after the first certificate ran out"),
            || {
                let now = renew_time();
                (now != seen).then_some(now)
            },
        );
    }
    let out = stdout(&berth(admin, &["get", "nodes"]));
    assert!(out.contains("node-a") && out.contains("Ready"), "{out}");
}

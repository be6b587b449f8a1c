//! kubectl (as shipped on this kind of machine) against `berth server`: the point of speaking
//! the Kubernetes API is that existing tools work.

mod common;

use std::process::Output;

use common::{BerthProcess, kubectl};

fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kubectl_drives_berth() {
    let dir = tempfile::tempdir().unwrap();
    let server = BerthProcess::start("server", &dir.path().join("data"));
    let kc = server.kubeconfig();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let k = |args: &[&str]| kubectl(&home, &kc, args);
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo.yaml");

    let ns = out(&k(&["get", "namespaces"]));
    assert!(
        ns.starts_with("NAME") && ns.contains("default") && ns.contains("kube-system"),
        "{ns}"
    );

    // kubectl's client-side schema validation needs the OpenAPI documents berth does not
    // serve yet; berth validates on the server.
    let applied = out(&k(&["apply", "--validate=false", "-f", demo]));
    assert_eq!(
        applied,
        "configmap/demo-config created\ndeployment.apps/demo created\nservice/demo created\n"
    );
    let again = out(&k(&["apply", "--validate=false", "-f", demo]));
    assert_eq!(
        again,
        "configmap/demo-config unchanged\ndeployment.apps/demo unchanged\nservice/demo unchanged\n"
    );

    // Server-side printing: the same columns as `berth get`.
    let deploy = out(&k(&["get", "deploy", "demo", "-o", "wide"]));
    assert!(
        deploy.starts_with(
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES   SELECTOR"
        ),
        "{deploy}"
    );
    assert!(
        deploy.contains("0/3") && deploy.contains("app=demo"),
        "{deploy}"
    );
    let all = out(&k(&["get", "cm", "-A"]));
    assert!(
        all.starts_with("NAMESPACE") && all.contains("demo-config"),
        "{all}"
    );

    assert_eq!(
        out(&k(&["scale", "deploy", "demo", "--replicas", "5"])),
        "deployment.apps/demo scaled\n"
    );
    assert_eq!(
        out(&k(&[
            "get",
            "deploy",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ])),
        "5"
    );
    out(&k(&[
        "patch",
        "deploy",
        "demo",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ]));
    out(&k(&["label", "cm", "demo-config", "tier=web"]));
    assert_eq!(
        out(&k(&["get", "cm", "-l", "tier=web", "-o", "name"])),
        "configmap/demo-config\n"
    );
    let described = out(&k(&["describe", "cm", "demo-config"]));
    assert!(described.contains("hello from berth"), "{described}");

    // Errors come back as kubectl expects them: every bad field named.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: Bad_Name\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec:\n      containers: [{name: c, image: \"\"}]\n").unwrap();
    let refused = k(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("The Deployment \"Bad_Name\" is invalid"), "{e}");
    for line in [
        "* metadata.name: Invalid value: \"Bad_Name\"",
        "* spec.replicas: Invalid value: -1",
        "* spec.template.spec.containers[0].image: Required value",
    ] {
        assert!(e.contains(line), "{line:?} missing from:\n{e}");
    }
    // Pod Security: kubectl prints the server's warnings and its refusals as they come.
    let ns = dir.path().join("ns.yaml");
    std::fs::write(&ns, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: watched\n  labels: {pod-security.kubernetes.io/warn: restricted}\n").unwrap();
    out(&k(&[
        "apply",
        "--validate=false",
        "-f",
        ns.to_str().unwrap(),
    ]));
    let warned = k(&[
        "run",
        "w",
        "-n",
        "watched",
        "--image",
        "host",
        "--restart",
        "Never",
        "--",
        "true",
    ]);
    let e = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{e}");
    assert!(
        e.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"w\" must set securityContext.allowPrivilegeEscalation=false)"),
        "{e}"
    );
    let host = dir.path().join("host.yaml");
    std::fs::write(&host, "apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: host, securityContext: {privileged: true}}]\n").unwrap();
    let refused = k(&["apply", "--validate=false", "-f", host.to_str().unwrap()]);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("pods \"h\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{e}"
    );

    let missing = k(&["get", "pod", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("Error from server (NotFound): pods \"nope\" not found")
    );

    let deleted = out(&k(&["delete", "-f", demo]));
    assert!(
        deleted.contains("deployment.apps \"demo\" deleted"),
        "{deleted}"
    );
    let resources = out(&k(&["api-resources"]));
    assert!(
        resources.contains("deployments")
            && resources.contains("deploy")
            && resources.contains("apps/v1"),
        "{resources}"
    );
}

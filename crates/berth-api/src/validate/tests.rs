//! Validation and defaulting, kind by kind, through the public entry points.

use serde_json::json;

use super::*;
use crate::kinds::resolve;

fn obj(v: Value) -> Object {
    Object::from_value(v).unwrap()
}

fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn a_good_deployment_passes() {
    let d = obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "host", "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}}}
    }));
    assert_eq!(validate_create(resolve("deploy").unwrap(), &d), vec![]);
}

#[test]
fn every_bad_field_is_named() {
    let d = obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "Web_1", "labels": {"bad key": "x"}},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}],
                    "resources": {"requests": {"cpu": "lots"}}}]}}}
    }));
    let errs = validate_create(resolve("deploy").unwrap(), &d);
    let f = fields(&errs);
    for want in [
        "metadata.name",
        "metadata.labels",
        "spec.replicas",
        "spec.template.metadata.labels",
        "spec.template.spec.containers[0].image",
        "spec.template.spec.containers[0].ports[0].containerPort",
        "spec.template.spec.containers[0].resources.requests.cpu",
    ] {
        assert!(f.contains(&want), "missing {want} in {f:?}");
    }
}

/// A Deployment whose every duration and count is `n`, and a Service whose affinity
/// timeout is `n`.
fn with_numbers(n: Value) -> (Object, Object) {
    let probe = json!({"exec": {"command": ["true"]}, "initialDelaySeconds": n,
        "periodSeconds": n, "timeoutSeconds": n, "successThreshold": n,
        "failureThreshold": n, "terminationGracePeriodSeconds": n});
    let d = obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": n, "minReadySeconds": 0, "revisionHistoryLimit": n,
            "progressDeadlineSeconds": n,
            "strategy": {"rollingUpdate": {"maxSurge": n, "maxUnavailable": n}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": n, "activeDeadlineSeconds": n,
                    "securityContext": {"runAsUser": n, "runAsGroup": n, "fsGroup": n},
                    "containers": [{"name": "c", "image": "i",
                        "livenessProbe": probe, "readinessProbe": probe,
                        "lifecycle": {"preStop": {"sleep": {"seconds": n}}},
                        "securityContext": {"runAsUser": n, "runAsGroup": n}}]}}}
    }));
    let svc = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": n}}}}),
    );
    (d, svc)
}

#[test]
fn every_duration_and_count_is_range_checked() {
    let deploy = resolve("deploy").unwrap();
    let svc = resolve("svc").unwrap();
    // The biggest values Kubernetes' int32 fields hold pass (the affinity timeout aside,
    // which Kubernetes holds to a day).
    let (d, s) = with_numbers(json!(MAX_INT32));
    assert_eq!(validate_create(deploy, &d), vec![]);
    assert_eq!(
        fields(&validate_create(svc, &s)),
        vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds"]
    );
    let c = "spec.template.spec.containers[0]";
    let named = [
        "spec.replicas".to_string(),
        "spec.revisionHistoryLimit".into(),
        "spec.progressDeadlineSeconds".into(),
        "spec.strategy.rollingUpdate.maxSurge".into(),
        "spec.strategy.rollingUpdate.maxUnavailable".into(),
        "spec.template.spec.terminationGracePeriodSeconds".into(),
        "spec.template.spec.activeDeadlineSeconds".into(),
        "spec.template.spec.securityContext.runAsUser".into(),
        "spec.template.spec.securityContext.runAsGroup".into(),
        "spec.template.spec.securityContext.fsGroup".into(),
        format!("{c}.livenessProbe.initialDelaySeconds"),
        format!("{c}.livenessProbe.periodSeconds"),
        format!("{c}.livenessProbe.timeoutSeconds"),
        format!("{c}.livenessProbe.successThreshold"),
        format!("{c}.livenessProbe.failureThreshold"),
        format!("{c}.livenessProbe.terminationGracePeriodSeconds"),
        format!("{c}.readinessProbe.periodSeconds"),
        format!("{c}.lifecycle.preStop.sleep.seconds"),
        format!("{c}.securityContext.runAsUser"),
        format!("{c}.securityContext.runAsGroup"),
    ];
    // One past int32, the largest JSON integer, and a negative number: each field named,
    // with what is wrong.
    for n in [json!(MAX_INT32 + 1), json!(i64::MAX), json!(-1)] {
        let (d, s) = with_numbers(n.clone());
        let errs = validate_create(deploy, &d);
        for want in &named {
            let e = errs
                .iter()
                .find(|e| e.field == *want)
                .unwrap_or_else(|| panic!("{n}: {want} not named in {errs:?}"));
            assert!(e.message.contains("must be"), "{n}: {want}: {}", e.message);
        }
        assert_eq!(
            fields(&validate_create(svc, &s)),
            vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds"]
        );
    }
    // A number too big for any integer, or a fraction, is named as not an integer.
    let (d, _) = with_numbers(json!(1e300));
    let errs = validate_create(deploy, &d);
    assert!(
        errs.iter()
            .any(|e| e.field == "spec.progressDeadlineSeconds"
                && e.message.contains("must be an integer")),
        "{errs:?}"
    );
    // Kubernetes: the progress deadline must exceed minReadySeconds.
    let mut d = with_numbers(json!(5)).0.into_value();
    d["spec"]["minReadySeconds"] = json!(5);
    let errs = validate_create(deploy, &obj(d));
    assert_eq!(fields(&errs), vec!["spec.progressDeadlineSeconds"]);
    assert!(errs[0].message.contains("greater than minReadySeconds"));
}

#[test]
fn stored_durations_are_read_within_bounds() {
    assert_eq!(seconds_of(Some(&json!(i64::MAX)), 600), MAX_INT32 as u64);
    assert_eq!(seconds_of(Some(&json!(u64::MAX)), 600), 600);
    assert_eq!(seconds_of(Some(&json!(-5)), 600), 600);
    assert_eq!(seconds_of(Some(&json!("10")), 600), 600);
    assert_eq!(seconds_of(None, 600), 600);
    assert_eq!(seconds_of(Some(&json!(42)), 600), 42);
}

fn pod_errors(spec: Value) -> Vec<String> {
    let p =
        obj(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}));
    validate_create(resolve("pods").unwrap(), &p)
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn security_context_fields_are_checked_and_unimplemented_ones_refused() {
    assert_eq!(
        pod_errors(json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": false,
            "securityContext": {"runAsNonRoot": true, "supplementalGroups": [5],
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/a.json"},
                "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]},
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true,
                "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_TIME"], "drop": ["ALL"]},
                "seccompProfile": {"type": "Unconfined"}, "procMount": "Unmasked",
                "runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": true}}],
        })),
        Vec::<String>::new()
    );
    let errs = pod_errors(json!({
        "hostPID": "yes", "shareProcessNamespace": true, "hostUsers": false,
        "ephemeralContainers": [{"name": "debug", "image": "i"}],
        "securityContext": {"fsGroup": -2, "fsGroupChangePolicy": "Sometimes", "seLinuxOptions": {"type": "x"},
            "seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/shadow"},
            "sysctls": [{"name": "vm.overcommit_memory", "value": "1"}]},
        "volumes": [{"name": "h", "hostPath": {"path": "relative", "type": "Directroy"}}],
        "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}],
            "securityContext": {"privileged": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMN"]}, "appArmorProfile": {"type": "RuntimeDefault"},
            "seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "a"},
            "procMount": "Masked", "runAsUser": -1}}],
    }));
    for want in [
        "spec.hostPID: Invalid value: \"yes\": must be a boolean",
        "spec.shareProcessNamespace: Forbidden: berth gives each container its own process namespace and does not implement a shared one",
        "spec.hostUsers: Forbidden: berth does not run pods in user namespaces of their own; leave hostUsers unset or true",
        "spec.ephemeralContainers: Forbidden: berth does not implement ephemeral containers; use exec",
        "spec.securityContext.fsGroup: Invalid value: -2: must be greater than or equal to 0",
        "spec.securityContext.fsGroupChangePolicy: Unsupported value: \"Sometimes\": supported values: \"OnRootMismatch\", \"Always\"",
        "spec.securityContext.seLinuxOptions: Forbidden: berth does not implement this field; supported fields are runAsUser, runAsGroup, runAsNonRoot, supplementalGroups, fsGroup, fsGroupChangePolicy, seccompProfile, sysctls",
        "spec.securityContext.seccompProfile.localhostProfile: Invalid value: \"../etc/shadow\": must be a relative path inside the node's seccomp directory, without '.' or '..' components",
        "spec.securityContext.sysctls[0].name: Forbidden: sysctl \"vm.overcommit_memory\" is not namespaced: a pod may set only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* sysctls",
        "spec.volumes[0].hostPath.path: Invalid value: \"relative\": must be an absolute path without '..'",
        "spec.volumes[0].hostPath.type: Unsupported value: \"Directroy\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\"",
        "spec.containers[0].ports[0].hostPort: Forbidden: berth does not forward node ports into a pod's network; use hostNetwork: true or a Service of type NodePort",
        "spec.containers[0].securityContext.appArmorProfile: Forbidden: berth does not implement this field; supported fields are runAsUser, runAsGroup, runAsNonRoot, readOnlyRootFilesystem, privileged, allowPrivilegeEscalation, capabilities, seccompProfile, procMount",
        "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].securityContext.capabilities.add[0]: Invalid value: \"NET_ADMN\": is not a Linux capability (names such as NET_ADMIN or ALL)",
        "spec.containers[0].securityContext: Invalid value: {...}: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        "spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value: \"a\": can only be set when seccomp type is Localhost",
        "spec.containers[0].securityContext.procMount: Unsupported value: \"Masked\": supported values: \"Default\", \"Unmasked\"",
    ] {
        assert!(
            errs.iter().any(|e| e == want),
            "missing {want} in {errs:#?}"
        );
    }
    let errs = pod_errors(json!({"hostNetwork": true,
        "securityContext": {"seccompProfile": {"type": "Localhost"}, "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
        "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 81}]}]}));
    for want in [
        "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
        "spec.securityContext.sysctls[0].name: Forbidden: sysctl \"net.ipv4.tcp_syncookies\" not allowed with hostNetwork enabled",
        "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true",
    ] {
        assert!(
            errs.iter().any(|e| e == want),
            "missing {want} in {errs:#?}"
        );
    }
}

#[test]
fn host_network_defaults_host_ports_and_namespace_labels_are_checked() {
    let mut p = obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}]}}),
    );
    apply_defaults(resolve("pods").unwrap(), &mut p);
    assert_eq!(p.0["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    assert!(validate_create(resolve("pods").unwrap(), &p).is_empty());
    let ns = obj(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n",
        "labels": {"pod-security.kubernetes.io/warn": "lax"}}}),
    );
    assert_eq!(
        fields(&validate_create(resolve("namespaces").unwrap(), &ns)),
        vec!["metadata.labels[pod-security.kubernetes.io/warn]"]
    );
}

#[test]
fn immutable_fields() {
    let k = resolve("deploy").unwrap();
    let mk = |app: &str| {
        obj(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        )
    };
    let errs = validate_update(k, &mk("a"), &mk("b"));
    assert_eq!(fields(&errs), vec!["spec.selector"]);
    let pod = |cmd: &str| {
        obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "command": [cmd]}]}}),
        )
    };
    assert_eq!(
        fields(&validate_update(
            resolve("po").unwrap(),
            &pod("a"),
            &pod("b")
        )),
        vec!["spec"]
    );
}

#[test]
fn sub_paths_stay_below_their_volume() {
    let pod = |mount: Value| {
        obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"volumes": [{"name": "v", "emptyDir": {}}],
                "containers": [{"name": "c", "image": "i", "volumeMounts": [mount]}]}}),
        )
    };
    let errs = |mount: Value| validate_create(resolve("po").unwrap(), &pod(mount));
    let mp = "spec.containers[0].volumeMounts[0]";
    for (mount, field, why) in [
        (
            json!({"name": "v", "mountPath": "/m", "subPath": "/etc"}),
            "subPath",
            "must be a relative path",
        ),
        (
            json!({"name": "v", "mountPath": "/m", "subPath": "a/../../b"}),
            "subPath",
            "must not contain '..'",
        ),
        (
            json!({"name": "v", "mountPath": "/m", "subPathExpr": "$(X)/.."}),
            "subPathExpr",
            "must not contain '..'",
        ),
        (
            json!({"name": "v", "mountPath": "/m", "subPath": "a", "subPathExpr": "b"}),
            "subPathExpr",
            "mutually exclusive",
        ),
    ] {
        let e = errs(mount.clone());
        assert_eq!(fields(&e), vec![format!("{mp}.{field}")], "{mount}");
        assert!(e[0].message.contains(why), "{}", e[0].message);
    }
    for ok in ["a", "a/b..c/d", "..x", "$(POD)/logs"] {
        assert_eq!(
            errs(json!({"name": "v", "mountPath": "/m", "subPath": ok})),
            vec![],
            "{ok}"
        );
    }
}

#[test]
fn service_ports() {
    let s = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}, {"port": 0, "name": "x"}]}}),
    );
    let errs = validate_create(resolve("svc").unwrap(), &s);
    assert!(fields(&errs).contains(&"spec.ports[0].name"));
    assert!(fields(&errs).contains(&"spec.ports[1].port"));
}

#[test]
fn defaults_like_kubernetes() {
    let mut s = obj(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "hello"}}),
    );
    apply_defaults(resolve("secret").unwrap(), &mut s);
    assert_eq!(s.get("data").unwrap()["k"], "aGVsbG8=");
    assert_eq!(s.get("type").unwrap(), "Opaque");
    let mut d = obj(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    apply_defaults(resolve("deploy").unwrap(), &mut d);
    assert_eq!(d.get("spec").unwrap()["replicas"], 1);
    assert_eq!(
        d.get("spec").unwrap()["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    assert_eq!(
        d.get("spec").unwrap()["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
}

#[test]
fn rbac_objects_are_checked_as_kube_apiserver_checks_them() {
    // Kubernetes' own default roles and bindings are valid, colons in names and all.
    let defaults = crate::rbac::defaults::cluster_roles()
        .into_iter()
        .chain(crate::rbac::defaults::cluster_role_bindings());
    for d in defaults {
        let o = obj(d);
        let kind = resolve(o.kind()).unwrap();
        assert_eq!(validate_create(kind, &o), vec![], "{}", o.name());
    }
    let role = obj(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "a/b", "namespace": "shop"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
            {"verbs": ["get"], "apiGroups": [""]},
            {"verbs": ["get", 7], "resources": ["pods"]},
        ]}),
    );
    let errs = validate_create(resolve("roles").unwrap(), &role);
    assert_eq!(
        fields(&errs),
        [
            "metadata.name",
            "rules[0].verbs",
            "rules[1].nonResourceURLs",
            "rules[2].resources",
            "rules[3].verbs[1]",
            "rules[3].apiGroups",
        ],
        "{errs:?}"
    );
    assert!(
        errs[2]
            .message
            .contains("namespaced rules cannot apply to non-resource URLs")
    );
    let binding = obj(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "web"},
            {"kind": "Robot", "name": "r2"},
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io"},
        ]}),
    );
    let errs = validate_create(resolve("clusterrolebindings").unwrap(), &binding);
    assert_eq!(
        fields(&errs),
        [
            "roleRef.kind",
            "subjects[0].namespace",
            "subjects[1].kind",
            "subjects[2].name"
        ],
        "{errs:?}"
    );
    // Users and groups get RBAC's API group by default.
    let mut rb = obj(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "web"}]}),
    );
    let kind = resolve("rolebindings").unwrap();
    apply_defaults(kind, &mut rb);
    assert_eq!(
        rb.get("subjects").unwrap()[0]["apiGroup"],
        "rbac.authorization.k8s.io"
    );
    assert!(rb.get("subjects").unwrap()[1].get("apiGroup").is_none());
    assert_eq!(validate_create(kind, &rb), vec![]);
    // What a binding grants never changes.
    let mut wider = rb.clone();
    wider.0["roleRef"]["name"] = json!("admin");
    let errs = validate_update(kind, &rb, &wider);
    assert_eq!(fields(&errs), ["roleRef"]);
    assert!(errs[0].message.contains("cannot change roleRef"));
}

#[test]
fn pods_run_as_a_service_account() {
    let kind = resolve("pods").unwrap();
    let mut p = obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "host"}]}}),
    );
    apply_defaults(kind, &mut p);
    assert_eq!(p.get("spec").unwrap()["serviceAccountName"], "default");
    assert_eq!(p.get("spec").unwrap()["serviceAccount"], "default");
    let mut named = obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccount": "builder", "containers": [{"name": "c", "image": "host"}]}}),
    );
    apply_defaults(kind, &mut named);
    assert_eq!(named.get("spec").unwrap()["serviceAccountName"], "builder");
    assert_eq!(validate_create(kind, &named), vec![]);
    let bad = obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "Not_Valid", "automountServiceAccountToken": "yes",
            "containers": [{"name": "c", "image": "host"}]}}),
    );
    assert_eq!(
        fields(&validate_create(kind, &bad)),
        [
            "spec.serviceAccountName",
            "spec.automountServiceAccountToken"
        ]
    );
    // Templates are left alone: their pods get it when they are made.
    let d = resolve("deploy").unwrap();
    let mut dep = obj(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "host"}]}}}}),
    );
    apply_defaults(d, &mut dep);
    assert!(dep.get("spec").unwrap()["template"]["spec"]["serviceAccountName"].is_null());
}

//! Pods' security settings on a real node (`berth up`, as root): what the namespace's Pod
//! Security level allows runs with its real effect, read back from inside the container
//! (/proc/self/status, /proc/net/dev, /proc/1), and what is wrong fails clearly.

mod common;

use std::path::Path;

use common::{berth, cluster_with, eventually, get_json, stderr, stdout};
use serde_json::Value;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: priv
  labels: {pod-security.kubernetes.io/enforce: privileged}
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: host, command: ["grep", "-E", "^(CapEff|NoNewPrivs|Seccomp):", "/proc/self/status"]}
---
apiVersion: v1
kind: Pod
metadata: {name: dropall}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: host
    command: ["grep", "-E", "^(CapEff|NoNewPrivs):", "/proc/self/status"]
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Pod
metadata: {name: escalates}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: host
    command: ["grep", "-E", "^(CapEff|NoNewPrivs):", "/proc/self/status"]
    securityContext: {allowPrivilegeEscalation: true, capabilities: {drop: [NET_RAW], add: [AUDIT_WRITE, CAP_CHOWN]}}
---
apiVersion: v1
kind: Pod
metadata: {name: privileged, namespace: priv}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; test -c /dev/kmsg && echo devices; grep -w /sys /proc/mounts"]
    securityContext: {privileged: true}
---
apiVersion: v1
kind: Pod
metadata: {name: unmasked, namespace: priv}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "echo timer_list=$(wc -c < /proc/timer_list)"]
    securityContext: {procMount: Unmasked}
---
apiVersion: v1
kind: Pod
metadata: {name: masked, namespace: priv}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: host, command: ["sh", "-c", "echo timer_list=$(wc -c < /proc/timer_list)"]}
---
apiVersion: v1
kind: Pod
metadata: {name: unconfined, namespace: priv}
spec:
  restartPolicy: Never
  securityContext: {seccompProfile: {type: Unconfined}}
  containers:
  - {name: c, image: host, command: ["grep", "-E", "^Seccomp:", "/proc/self/status"]}
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: priv}
spec:
  restartPolicy: Never
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers:
  - {name: c, image: host, command: ["sh", "-c", "cat /proc/net/dev; echo pid1=$(cat /proc/1/comm); echo net=$(readlink /proc/self/ns/net) ipc=$(readlink /proc/self/ns/ipc)"]}
---
apiVersion: v1
kind: Pod
metadata: {name: tuned}
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
    runAsNonRoot: true
    supplementalGroups: [4242]
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "77"}]
  containers:
  - {name: c, image: host, command: ["sh", "-c", "grep -E '^(Uid|Groups):' /proc/self/status; echo port_start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); echo net=$(readlink /proc/self/ns/net) ipc=$(readlink /proc/self/ns/ipc)"]}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true}
  containers:
  - {name: c, image: host, command: ["true"]}
"#;

/// The log of a pod that ran to completion.
fn finished_log(kc: &Path, ns: &str, name: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let p = loop {
        let p = get_json(kc, &["pod", name, "-n", ns]);
        if matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {name} to finish: {}",
            p["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let o = berth(kc, &["logs", name, "-n", ns]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}\n{}", stdout(&o));
    stdout(&o)
}

fn field(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {log}"))
        .trim()
        .to_string()
}

/// The pod's waiting reason and message once it has one.
fn waiting(kc: &Path, name: &str) -> (String, String) {
    eventually(60, &format!("{name} to be held back"), || {
        let p: Value = get_json(kc, &["pod", name]);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        let reason = w["reason"].as_str()?.to_string();
        (reason != "ContainerCreating")
            .then(|| (reason, w["message"].as_str().unwrap_or("").to_string()))
    })
}

#[test]
fn security_contexts_take_effect_inside_containers() {
    let (dir, up, kc, data) = cluster_with(PODS);

    // Docker's defaults: its 14 capabilities, its seccomp filter, and no_new_privs.
    let plain = finished_log(&kc, "default", "plain");
    assert_eq!(field(&plain, "CapEff"), "00000000a80425fb", "{plain}");
    assert_eq!(field(&plain, "Seccomp"), "2", "{plain}");
    assert_eq!(field(&plain, "NoNewPrivs"), "1", "{plain}");

    let dropped = finished_log(&kc, "default", "dropall");
    assert_eq!(field(&dropped, "CapEff"), "0000000000000000", "{dropped}");
    assert_eq!(field(&dropped, "NoNewPrivs"), "1", "{dropped}");

    // NET_RAW (bit 13) dropped; escalation allowed.
    let esc = finished_log(&kc, "default", "escalates");
    assert_eq!(field(&esc, "CapEff"), "00000000a80405fb", "{esc}");
    assert_eq!(field(&esc, "NoNewPrivs"), "0", "{esc}");

    // Privileged: every capability the node has (its bounding set; this test runs as the
    // node's root), no filter, the node's devices, /sys writable.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let priv_log = finished_log(&kc, "priv", "privileged");
    assert_eq!(
        field(&priv_log, "CapEff"),
        field(&own, "CapBnd"),
        "{priv_log}"
    );
    assert_eq!(field(&priv_log, "Seccomp"), "0", "{priv_log}");
    assert_eq!(field(&priv_log, "NoNewPrivs"), "0", "{priv_log}");
    assert!(priv_log.contains("devices"), "{priv_log}");
    assert!(
        priv_log
            .lines()
            .any(|l| l.starts_with("sysfs /sys sysfs rw")),
        "{priv_log}"
    );

    // procMount Unmasked: /proc's masked paths are there to read; by default they are empty.
    let masked = finished_log(&kc, "priv", "masked");
    assert!(masked.contains("timer_list=0"), "{masked}");
    let unmasked = finished_log(&kc, "priv", "unmasked");
    assert!(
        !unmasked.contains("timer_list=0") && unmasked.contains("timer_list="),
        "{unmasked}"
    );

    let unconfined = finished_log(&kc, "priv", "unconfined");
    assert_eq!(field(&unconfined, "Seccomp"), "0", "{unconfined}");

    // hostNetwork: the node's interfaces (this test node's own bridge among them), the
    // node's address as the pod's; hostPID: the node's pid 1.
    let bridge = up.net.as_ref().unwrap().0.clone();
    let hostnet = finished_log(&kc, "priv", "hostnet");
    assert!(hostnet.contains(&format!("{bridge}:")), "{hostnet}");
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    assert!(
        hostnet.contains(&format!("pid1={}", host_init.trim())),
        "{hostnet}"
    );
    let p = get_json(&kc, &["pod", "hostnet", "-n", "priv"]);
    assert_eq!(p["status"]["podIP"], p["status"]["hostIP"], "{p}");
    let node_ns = format!(
        "net={} ipc={}",
        std::fs::read_link("/proc/self/ns/net").unwrap().display(),
        std::fs::read_link("/proc/self/ns/ipc").unwrap().display()
    );
    assert!(hostnet.contains(&node_ns), "{node_ns} not in {hostnet}");

    // A pod of its own: its user and extra group, a namespaced sysctl set in its own
    // network namespace only (the node's value is untouched), and namespaces not the node's.
    let node_port_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let tuned = finished_log(&kc, "default", "tuned");
    assert!(field(&tuned, "Uid").starts_with("1000"), "{tuned}");
    assert_eq!(field(&tuned, "Groups"), "4242", "{tuned}");
    assert!(tuned.contains("port_start=77"), "{tuned}");
    assert!(!tuned.contains(&node_ns), "{tuned}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        node_port_start
    );

    // runAsNonRoot against an image that runs as root: held back, saying why.
    let (reason, message) = waiting(&kc, "nonroot");
    assert_eq!(reason, "CreateContainerConfigError");
    assert!(
        message.contains("container has runAsNonRoot and image will run as root"),
        "{message}"
    );

    // A Localhost seccomp profile from the node's seccomp directory.
    std::fs::create_dir_all(data.join("seccomp/profiles")).unwrap();
    std::fs::write(
        data.join("seccomp/profiles/allow.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#,
    )
    .unwrap();
    let file = dir.path().join("local.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: local}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: host
    command: ["grep", "-E", "^Seccomp:", "/proc/self/status"]
    securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/allow.json}}
---
apiVersion: v1
kind: Pod
metadata: {name: missing-profile}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: host
    command: ["true"]
    securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/none.json}}
"#,
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let local = finished_log(&kc, "default", "local");
    assert_eq!(field(&local, "Seccomp"), "2", "{local}");
    let (reason, message) = waiting(&kc, "missing-profile");
    assert_eq!(reason, "CreateContainerConfigError");
    assert!(
        message.contains("cannot read seccomp profile \"profiles/none.json\""),
        "{message}"
    );
    drop(up);
}

#[test]
fn host_path_types_are_checked_and_unprivileged_namespaces_refuse_host_access() {
    let (dir, up, kc, _data) = cluster_with(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: priv\n  labels: {pod-security.kubernetes.io/enforce: privileged}\n",
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let made = dir.path().join("made");
    let manifest = dir.path().join("pods.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: wrong-kind, namespace: priv}}
spec:
  restartPolicy: Never
  volumes: [{{name: h, hostPath: {{path: {file}, type: Directory}}}}]
  containers:
  - {{name: c, image: host, command: ["true"], volumeMounts: [{{name: h, mountPath: /h}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: creates, namespace: priv}}
spec:
  restartPolicy: Never
  volumes: [{{name: h, hostPath: {{path: {made}, type: FileOrCreate}}}}]
  containers:
  - {{name: c, image: host, command: ["sh", "-c", "echo written > /h"], volumeMounts: [{{name: h, mountPath: /h}}]}}
"#,
            file = file.display(),
            made = made.display()
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (reason, message) = eventually(60, "wrong-kind to be held back", || {
        let p: Value = get_json(&kc, &["pod", "wrong-kind", "-n", "priv"]);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        let reason = w["reason"].as_str()?.to_string();
        (reason != "ContainerCreating")
            .then(|| (reason, w["message"].as_str().unwrap_or("").to_string()))
    });
    assert_eq!(reason, "CreateContainerConfigError");
    assert_eq!(
        message,
        format!(
            "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory",
            file.display()
        )
    );
    finished_log(&kc, "priv", "creates");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "written\n");

    // Such a pod in the default namespace (baseline) is refused, naming field and level,
    // and nothing is made on the node.
    let refused = dir.path().join("refused.yaml");
    std::fs::write(
        &refused,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: refused}}\nspec:\n  volumes: [{{name: h, hostPath: {{path: {made}, type: FileOrCreate}}}}]\n  containers:\n  - {{name: c, image: host, command: [\"true\"]}}\n",
            made = dir.path().join("never").display()
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", refused.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "pods \"refused\" is forbidden: violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"h\")"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("never").exists());

    // berth's own CLI prints the warnings of a namespace labelled warn, as kubectl does.
    let warned = dir.path().join("warned.yaml");
    std::fs::write(
        &warned,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: warned\n  labels: {pod-security.kubernetes.io/warn: restricted}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: w, namespace: warned}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: host, command: [\"true\"], securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}}\n",
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", warned.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "Warning: would violate PodSecurity \"restricted:latest\": runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)\n"
        ),
        "{}",
        stderr(&o)
    );
    drop(up);
}

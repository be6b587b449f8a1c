//! Attacks on the volume boundary by real pods (`berth up`, as root): a container plants links
//! in a volume it can write, then asks for a `subPath` through them, or tampers with a
//! projected volume; nothing outside the volume may change, and the container start fails
//! with a clear reason instead.

mod common;

use common::{cluster_with, eventually, get_json};
use serde_json::Value;

/// The status of container `name` in pod `pod`, once `ok` says it is the one waited for.
fn container_status(
    kc: &std::path::Path,
    pod: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(60, what, || {
        let p = get_json(kc, &["pod", pod]);
        let st = p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)?
            .clone();
        ok(&st).then_some(st)
    })
}

fn pod_uid(kc: &std::path::Path, pod: &str) -> String {
    get_json(kc, &["pod", pod])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_sub_path_through_a_planted_link_never_reaches_the_host() {
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("precious"), "keep").unwrap();
    let v = victim.path().display();
    // The init container plants links in the shared emptyDir: to the host's victim directory
    // by absolute path, up and out by a relative one, and a good one inside. The app then
    // mounts each through subPath and would write into the victim if any were followed.
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: planter}}
spec:
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: plant
    image: host
    command: ["sh", "-c", "mkdir -p /shared/ok && ln -s {v} /shared/abs && ln -s ../../../../../../../../..{v} /shared/up && ln -s ok /shared/inside"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: abs
    image: host
    command: ["sh", "-c", "echo pwned > /mnt/owned; sleep 1000"]
    volumeMounts: [{{name: shared, mountPath: /mnt, subPath: abs}}]
  - name: up
    image: host
    command: ["sh", "-c", "echo pwned > /mnt/owned; sleep 1000"]
    volumeMounts: [{{name: shared, mountPath: /mnt, subPath: up}}]
  - name: good
    image: host
    env: [{{name: SUB, value: inside}}]
    command: ["sh", "-c", "echo fine > /mnt/written; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: shared, mountPath: /mnt, subPathExpr: "$(SUB)"}}]
"#
    );
    let (_dir, _up, kc, data) = cluster_with(&manifest);
    for c in ["abs", "up"] {
        let st = container_status(&kc, "planter", c, "the subPath to be refused", |st| {
            st["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        });
        let msg = st["state"]["waiting"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(&format!("subPath \"{c}\"")) && msg.contains("out of its volume"),
            "{c}: {msg}"
        );
    }
    container_status(&kc, "planter", "good", "the good subPath to run", |st| {
        st["state"]["running"].is_object()
    });
    let uid = pod_uid(&kc, "planter");
    let written = data.join(format!("pods/{uid}/volumes/shared/ok/written"));
    eventually(20, "the good container's file in its volume", || {
        (std::fs::read_to_string(&written).ok()? == "fine\n").then_some(())
    });
    let names: Vec<_> = std::fs::read_dir(victim.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["precious"],
        "nothing was written outside the volume"
    );
    assert_eq!(
        std::fs::read_to_string(victim.path().join("precious")).unwrap(),
        "keep"
    );
}

#[test]
fn projected_volumes_are_read_only_to_the_container() {
    // The container tries everything that once let a refresh delete host directories:
    // replacing ..data, adding files, removing the version directory. Each must fail.
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {app.conf: "v=1"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
data: {token: c2VjcmV0}
---
apiVersion: v1
kind: Pod
metadata: {name: tamper}
spec:
  volumes: [{name: cfg, configMap: {name: cfg}}, {name: sec, secret: {secretName: sec}}]
  containers:
  - name: c
    image: host
    command:
    - sh
    - -c
    - |
      for d in /cfg /sec; do
        ln -sfn / $d/..data 2>/dev/null && echo "$d link-swapped"
        echo x > $d/new 2>/dev/null && echo "$d wrote"
        rm -rf $d/..[0-9]* 2>/dev/null; ls -a $d | grep -q '^\.\.[0-9]' || echo "$d removed"
      done
      echo "tamper done $(cat /cfg/app.conf) $(cat /sec/token)"
      trap 'exit 0' TERM; while true; do sleep 0.1; done
    volumeMounts: [{name: cfg, mountPath: /cfg}, {name: sec, mountPath: /sec}]
"#;
    let (_dir, _up, kc, data) = cluster_with(manifest);
    container_status(&kc, "tamper", "c", "the tamperer to run", |st| {
        st["state"]["running"].is_object()
    });
    let uid = pod_uid(&kc, "tamper");
    let log_file = data.join(format!("pods/{uid}/logs/c/0.log"));
    let log = eventually(30, "the tamperer's report", || {
        let log = std::fs::read_to_string(&log_file).ok()?;
        log.contains("tamper done").then_some(log)
    });
    for bad in ["link-swapped", "wrote", "removed"] {
        assert!(
            !log.contains(bad),
            "the container could change its projected volume: {log}"
        );
    }
    assert!(log.contains("tamper done v=1 secret"), "{log}");
    // The volume on the host is as berth made it.
    let cfg = data.join(format!("pods/{uid}/volumes/cfg"));
    let target = std::fs::read_link(cfg.join("..data")).unwrap();
    assert!(target.to_string_lossy().starts_with(".."), "{target:?}");
    assert!(!cfg.join("new").exists());
}

#[test]
fn a_disk_empty_dir_past_its_size_limit_evicts_the_pod_and_stays_private() {
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: filler}
spec:
  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/fill bs=64k count=64 2>/dev/null; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
---
apiVersion: v1
kind: Pod
metadata: {name: small}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}, {name: mem, emptyDir: {medium: Memory}}]
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "echo mine > /scratch/note && echo mem > /mem/note && echo wrote; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: mem, mountPath: /mem}]
  - name: d
    image: host
    securityContext: {runAsUser: 2000}
    command: ["sh", "-c", "echo other > /scratch/other && echo mem > /mem/other && echo wrote; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: mem, mountPath: /mem}]
"#;
    let (_dir, _up, kc, data) = cluster_with(manifest);
    let p = eventually(60, "the filler to be evicted", || {
        let p = get_json(&kc, &["pod", "filler"]);
        (p["status"]["reason"] == "Evicted").then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Failed", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    container_status(&kc, "filler", "c", "the filler's container to stop", |st| {
        st["state"]["terminated"].is_object()
    });
    // A pod within its limit runs on; its containers' users (two, neither root) can write
    // to its emptyDirs, on disk and in memory, which no other user of the host can: not
    // through the data directory, and not even from inside the directory.
    let uid = pod_uid(&kc, "small");
    let volume = |name: &str| data.join(format!("pods/{uid}/volumes/{name}"));
    let note = volume("scratch").join("note");
    eventually(30, "the non-root containers' files", || {
        let read = |v: &str, f: &str| std::fs::read_to_string(volume(v).join(f)).ok();
        (read("scratch", "note")? == "mine\n"
            && read("scratch", "other")? == "other\n"
            && read("mem", "note")? == "mem\n"
            && read("mem", "other")? == "mem\n")
            .then_some(())
    });
    use std::os::unix::fs::PermissionsExt;
    for v in ["scratch", "mem"] {
        let mode = std::fs::metadata(volume(v)).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "emptyDir {v} is {mode:o}");
        let inside = std::process::Command::new("setpriv")
            .args([
                "--reuid=3000",
                "--regid=3000",
                "--clear-groups",
                "touch",
                "from-host",
            ])
            .current_dir(volume(v))
            .output()
            .unwrap();
        assert!(
            !inside.status.success(),
            "a host user with its working directory in emptyDir {v} wrote there"
        );
    }
    assert_ne!(
        get_json(&kc, &["pod", "small"])["status"]["phase"],
        "Failed"
    );
    let host_user = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "touch"])
        .arg(note.parent().unwrap().join("from-host"))
        .output()
        .unwrap();
    assert!(
        !host_user.status.success(),
        "an unprivileged host user wrote into an emptyDir"
    );
    for private in [data.clone(), data.join("pods"), data.join("images")] {
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", private.display());
    }
}

#[test]
fn an_fs_group_owns_the_pods_volumes_and_joins_its_processes() {
    let manifest = r#"
apiVersion: v1
kind: Secret
metadata: {name: sec}
data: {token: c2VjcmV0}
---
apiVersion: v1
kind: Pod
metadata: {name: grouped}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 3000}
  volumes: [{name: scratch, emptyDir: {}}, {name: sec, secret: {secretName: sec, defaultMode: 256}}]
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "echo groups $(id -G); echo mine > /scratch/note && echo wrote; echo token $(cat /sec/token); trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: sec, mountPath: /sec}]
"#;
    let (_dir, _up, kc, data) = cluster_with(manifest);
    container_status(&kc, "grouped", "c", "the grouped pod to run", |st| {
        st["state"]["running"].is_object()
    });
    let uid = pod_uid(&kc, "grouped");
    let log_file = data.join(format!("pods/{uid}/logs/c/0.log"));
    let log = eventually(30, "the container's report", || {
        let log = std::fs::read_to_string(&log_file).ok()?;
        log.contains("token").then_some(log)
    });
    assert!(log.contains("groups 1000 3000"), "{log}");
    assert!(log.contains("wrote"), "{log}");
    // A uid-1000 process reads a 0400 root-owned Secret file through the group.
    assert!(log.contains("token secret"), "{log}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let scratch = data.join(format!("pods/{uid}/volumes/scratch"));
    let m = std::fs::metadata(&scratch).unwrap();
    assert_eq!((m.gid(), m.permissions().mode() & 0o7777), (3000, 0o2770));
    let note = std::fs::metadata(scratch.join("note")).unwrap();
    assert_eq!(
        note.gid(),
        3000,
        "a file made in the volume stays the group's"
    );
    let token = std::fs::metadata(data.join(format!("pods/{uid}/volumes/sec/token"))).unwrap();
    assert_eq!(
        (token.gid(), token.permissions().mode() & 0o777),
        (3000, 0o440)
    );
}

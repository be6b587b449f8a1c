//! A one-node cluster (`berth up`, as root): pods placed by the scheduler, run by the node's
//! agent on the runtime, restarted as their policy says, reported as Kubernetes reports them,
//! and stopped gracefully when deleted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{berth, cluster_with, eventually, get_json, stderr, stdout};
use serde_json::Value;

/// Deletes pods at once (grace 0) and waits until the node has removed their sandboxes.
fn condition_of(p: &Value, t: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn force_delete_all(kc: &Path, data: &Path, pods: &[&str]) {
    let mut args = vec!["delete", "pod"];
    args.extend_from_slice(pods);
    args.extend_from_slice(&["--grace-period=0", "--force"]);
    let o = berth(kc, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(30, "every sandbox to go", || {
        std::fs::read_dir(data.join("pods"))
            .ok()?
            .next()
            .is_none()
            .then_some(())
    });
}

const PODS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello, file.conf: "setting=1"}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{name: cfg, configMap: {name: cfg}}, {name: scratch, emptyDir: {}}]
  containers:
  - name: web
    image: host
    command: ["sh", "-c", "trap 'echo stopping; exit 0' TERM; echo started $POD $GREETING $(cat /etc/app/file.conf); while true; do sleep 0.1; done"]
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    volumeMounts: [{name: cfg, mountPath: /etc/app, readOnly: true}, {name: scratch, mountPath: /scratch}]
---
apiVersion: v1
kind: Pod
metadata: {name: inits}
spec:
  volumes: [{name: work, emptyDir: {}}]
  initContainers:
  - {name: first, image: host, command: ["sh", "-c", "echo one > /work/steps"], volumeMounts: [{name: work, mountPath: /work}]}
  - {name: second, image: host, command: ["sh", "-c", "echo two >> /work/steps"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - name: app
    image: host
    command: ["sh", "-c", "echo $(cat /work/steps) $CFG_greeting; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    envFrom: [{prefix: CFG_, configMapRef: {name: cfg}}]
    volumeMounts: [{name: work, mountPath: /work}]
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  restartPolicy: Never
  initContainers:
  - {name: setup, image: host, command: ["sh", "-c", "exit 4"]}
  containers:
  - {name: app, image: host, command: ["true"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - {name: c, image: host, command: ["sh", "-c", "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: host, command: ["sh", "-c", "test \"$POD\" = once"], env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - {name: c, image: host, command: ["true"], resources: {requests: {memory: 100Ti}}}
---
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  containers:
  - {name: c, image: "127.0.0.1:9/nothing/here:1", command: ["true"]}
"#;

#[test]
fn pods_run_restart_report_and_stop_on_a_node() {
    let (_dir, up, kc, data) = cluster_with(PODS);
    let cidr = up.net.as_ref().unwrap().1.clone();
    let prefix = cidr.rsplit_once('.').unwrap().0.to_string();

    // The node registered itself, Ready.
    let node = eventually(30, "the node to register", || {
        let nodes = get_json(&kc, &["nodes"]);
        let n = nodes["items"].get(0)?.clone();
        n["status"]["conditions"].is_array().then_some(n)
    });
    assert_eq!(node["status"]["conditions"][0]["status"], "True");
    assert_eq!(node["status"]["allocatable"]["pods"], "110");

    // A long-running pod: Running and Ready with an address from the node's range.
    let web = eventually(30, "web to be Ready", || {
        let p = get_json(&kc, &["pod", "web"]);
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(p)
    });
    assert_eq!(web["status"]["phase"], "Running");
    assert!(
        web["status"]["podIP"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{prefix}.")),
        "{web}"
    );
    assert_eq!(web["status"]["hostIP"], "127.0.0.1");
    assert!(web["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(data.join("pods").join(&uid).exists());
    // Its output reaches its log file (the shim writes it as it comes).
    let log_file = data.join("pods").join(&uid).join("logs/web/0.log");
    eventually(10, "the pod's first line in its log", || {
        let log = std::fs::read_to_string(&log_file).ok()?;
        log.contains("stdout F started web hello setting=1")
            .then_some(())
    });

    // Init containers run in order before the app, which gets a ConfigMap through envFrom.
    let inits = eventually(30, "inits to run", || {
        let p = get_json(&kc, &["pod", "inits"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(condition_of(&inits, "Initialized"), "True");
    assert_eq!(
        inits["status"]["initContainerStatuses"][1]["state"]["terminated"]["exitCode"],
        0
    );
    let inits_log = data
        .join("pods")
        .join(inits["metadata"]["uid"].as_str().unwrap())
        .join("logs/app/0.log");
    eventually(10, "the app's line", || {
        std::fs::read_to_string(&inits_log)
            .ok()?
            .contains("stdout F one two hello")
            .then_some(())
    });
    // A failing init container under restartPolicy Never fails the pod; the app never runs.
    let failed = eventually(30, "init-fails to fail", || {
        let p = get_json(&kc, &["pod", "init-fails"]);
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(condition_of(&failed, "Initialized"), "False");
    assert!(
        failed["status"]["containerStatuses"][0]["state"]["waiting"].is_object(),
        "{failed}"
    );

    // A crashing container is restarted with a growing back-off.
    let crash = eventually(30, "crash to back off", || {
        let p = get_json(&kc, &["pod", "crash"]);
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"].as_u64()? >= 2
            && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            .then_some(p)
    });
    let cs = &crash["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3, "{cs}");
    assert_eq!(crash["status"]["phase"], "Running");
    let table = stdout(&berth(&kc, &["get", "pods"]));
    assert!(table.contains("CrashLoopBackOff"), "{table}");

    // restartPolicy Never, exit 0: Succeeded (its env came from the downward API).
    eventually(30, "once to succeed", || {
        (get_json(&kc, &["pod", "once"])["status"]["phase"] == "Succeeded").then_some(())
    });

    // Nothing fits: Pending, with Kubernetes' reason and an Event.
    let huge = eventually(30, "huge to be unschedulable", || {
        let p = get_json(&kc, &["pod", "huge"]);
        let c = p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        (c["status"] == "False").then_some(c)
    });
    assert_eq!(huge["reason"], "Unschedulable");
    assert_eq!(
        huge["message"],
        "0/1 nodes are available: 1 Insufficient memory."
    );
    let events = stdout(&berth(&kc, &["get", "events"]));
    assert!(
        events.contains("FailedScheduling") && events.contains("Scheduled"),
        "{events}"
    );

    // An image that cannot be pulled: ErrImagePull, then ImagePullBackOff, with the reason.
    let waiting = eventually(30, "noimage to report the pull failure", || {
        let p = get_json(&kc, &["pod", "noimage"]);
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ImagePullBackOff").then_some(w)
    });
    assert!(
        waiting["message"].as_str().unwrap().contains("127.0.0.1:9"),
        "{waiting}"
    );

    // Deleting a pod stops it gracefully (its TERM trap runs) and removes its sandbox.
    let started = Instant::now();
    let o = berth(&kc, &["delete", "pod", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the TERM trap ends it well within its grace"
    );
    assert!(
        !data.join("pods").join(&uid).exists(),
        "the sandbox is gone once delete returns"
    );
    force_delete_all(
        &kc,
        &data,
        &["crash", "once", "huge", "noimage", "inits", "init-fails"],
    );
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 3
  selector: {matchLabels: {app: app}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: app}, annotations: {version: "1"}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - {name: c, image: host, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]}
"#;

fn ready_pods(kc: &Path) -> Vec<Value> {
    get_json(kc, &["pods", "-l", "app=app"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .cloned()
        .collect()
}

#[test]
fn a_deployment_keeps_its_replicas_and_rolls_out_without_losing_availability() {
    let (dir, _up, kc, data) = cluster_with(DEPLOYMENT);
    let manifest = dir.path().join("manifest.yaml");
    eventually(60, "3 ready replicas", || {
        (ready_pods(&kc).len() == 3).then_some(())
    });
    let d = eventually(30, "the deployment's status", || {
        let d = get_json(&kc, &["deploy", "app"]);
        (d["status"]["readyReplicas"] == 3 && d["status"]["updatedReplicas"] == 3).then_some(d)
    });
    assert_eq!(d["status"]["conditions"][0]["status"], "True", "{d}");
    // Each controller signs its Events, as Kubernetes' do (kubectl's "From" column).
    let events = get_json(&kc, &["events"]);
    let from = |reason: &str| -> Vec<String> {
        let items = events["items"].as_array().unwrap();
        let found: Vec<String> = items
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["source"]["component"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(!found.is_empty(), "no {reason} event in {events}");
        found
    };
    assert!(
        from("ScalingReplicaSet")
            .iter()
            .all(|c| c == "deployment-controller")
    );
    assert!(from("Scheduled").iter().all(|c| c == "default-scheduler"));

    // A pod that goes away is replaced.
    let victim = ready_pods(&kc)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let o = berth(&kc, &["delete", "pod", &victim]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(60, "a replacement", || {
        let pods = ready_pods(&kc);
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    });

    // A new template rolls out; with maxUnavailable 0, never fewer than 3 ready pods.
    let patched = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version: \"1\"", "version: \"2\"");
    std::fs::write(&manifest, patched).unwrap();
    let o = berth(&kc, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut fewest = usize::MAX;
    eventually(90, "the rollout to finish", || {
        let pods = ready_pods(&kc);
        fewest = fewest.min(pods.len());
        let all_new = pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["annotations"]["version"] == "2");
        let total = get_json(&kc, &["pods", "-l", "app=app"])["items"]
            .as_array()
            .unwrap()
            .len();
        (all_new && total == 3).then_some(())
    });
    assert!(
        fewest >= 3,
        "ready pods dropped to {fewest} during the rollout"
    );
    let sets = get_json(&kc, &["rs", "-l", "app=app"]);
    let sets = sets["items"].as_array().unwrap();
    assert_eq!(
        sets.len(),
        2,
        "the old ReplicaSet stays, scaled to 0, as history"
    );
    let revisions: Vec<&str> = sets
        .iter()
        .map(|rs| {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        revisions.contains(&"1") && revisions.contains(&"2"),
        "{revisions:?}"
    );

    let o = berth(
        &kc,
        &["rollout", "status", "deploy/app", "--timeout", "60s"],
    );
    assert!(
        stdout(&o).contains("successfully rolled out"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let history = stdout(&berth(&kc, &["rollout", "history", "deploy/app"]));
    assert!(
        history.contains("REVISION") && history.lines().count() == 4,
        "{history}"
    );

    // Undo goes back to the previous template (as revision 3).
    let o = berth(&kc, &["rollout", "undo", "deploy/app"]);
    assert!(
        stdout(&o).contains("rolled back (to revision 1)"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    eventually(90, "the undo to roll out", || {
        let pods = ready_pods(&kc);
        let total = get_json(&kc, &["pods", "-l", "app=app"])["items"]
            .as_array()
            .unwrap()
            .len();
        (total == 3
            && pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["annotations"]["version"] == "1"))
        .then_some(())
    });

    // Scale.
    let o = berth(&kc, &["scale", "deploy/app", "--replicas", "1"]);
    assert!(
        stdout(&o).contains("deployment.apps/app scaled"),
        "{}",
        stderr(&o)
    );
    eventually(60, "one pod", || {
        (get_json(&kc, &["pods", "-l", "app=app"])["items"]
            .as_array()
            .unwrap()
            .len()
            == 1)
            .then_some(())
    });

    // Deleting the Deployment removes everything it owns.
    let o = berth(&kc, &["delete", "deploy", "app"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(60, "the pods to go", || {
        std::fs::read_dir(data.join("pods"))
            .ok()?
            .next()
            .is_none()
            .then_some(())
    });
    assert!(
        get_json(&kc, &["rs"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

const PROBED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: never-ready}
spec:
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    readinessProbe: {exec: {command: ["test", "-e", "/tmp/ready"]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: http-ready}
spec:
  containers:
  - name: c
    image: host
    command: ["/usr/bin/python3", "-m", "http.server", "8080", "--directory", "/tmp"]
    ports: [{name: web, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: web}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, initialDelaySeconds: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: goes-bad}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: host
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 1000"]
    livenessProbe: {exec: {command: ["test", "-e", "/tmp/alive"]}, periodSeconds: 1, failureThreshold: 2}
"#;

fn condition(p: &Value, t: &str) -> Option<String> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .and_then(|c| c["status"].as_str().map(String::from))
}

#[test]
fn probes_gate_readiness_and_restart_the_unhealthy() {
    let (_dir, _up, kc, data) = cluster_with(PROBED);

    // An HTTP readiness probe passes once the server answers; a TCP liveness probe holds.
    eventually(30, "http-ready to be Ready", || {
        (condition(&get_json(&kc, &["pod", "http-ready"]), "Ready").as_deref() == Some("True"))
            .then_some(())
    });

    // A liveness probe that starts failing gets the container killed and restarted.
    let bad = eventually(40, "goes-bad to be restarted", || {
        let p = get_json(&kc, &["pod", "goes-bad"]);
        (p["status"]["containerStatuses"][0]["restartCount"].as_u64()? >= 1).then_some(p)
    });
    assert!(
        bad["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(),
        "{bad}"
    );
    let events = stdout(&berth(&kc, &["get", "events"]));
    assert!(
        events.contains("Killing") && events.contains("Liveness probe failed"),
        "{events}"
    );

    // A readiness probe that never passes keeps the pod Running but not Ready.
    let p = get_json(&kc, &["pod", "never-ready"]);
    assert_eq!(p["status"]["phase"], "Running", "{p}");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"), "{p}");
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false);
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "readiness never restarts"
    );
    assert!(events.contains("Readiness probe failed"), "{events}");
    // The http pod stayed up all along.
    let h = get_json(&kc, &["pod", "http-ready"]);
    assert_eq!(
        h["status"]["containerStatuses"][0]["restartCount"], 0,
        "{h}"
    );

    force_delete_all(&kc, &data, &["never-ready", "http-ready", "goes-bad"]);
}

#[test]
fn prestop_hooks_run_before_the_stop_signal_and_stuck_rollouts_miss_their_deadline() {
    let hook_dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"
# hostPath needs the privileged Pod Security level.
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {{pod-security.kubernetes.io/enforce: privileged}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - name: out
    hostPath: {{path: {dir}}}
  containers:
  - name: app
    image: host
    command: ["/bin/sh", "-c", "trap 'echo term >> /out/log; exit 0' TERM; while :; do sleep 0.1; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      preStop:
        exec: {{command: ["/bin/sh", "-c", "echo prestop >> /out/log"]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: stuck}}
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector: {{matchLabels: {{app: stuck}}}}
  template:
    metadata: {{labels: {{app: stuck}}}}
    spec:
      containers:
      - name: app
        image: host
        command: ["/bin/sleep", "100000"]
        readinessProbe:
          exec: {{command: ["/bin/false"]}}
          periodSeconds: 1
"#,
        dir = hook_dir.path().display()
    );
    let (_dir, _up, kc, _data) = cluster_with(&manifest);
    eventually(30, "hooked to run", || {
        (get_json(&kc, &["pod", "hooked"])["status"]["phase"] == "Running").then_some(())
    });
    let o = berth(&kc, &["delete", "pod", "hooked"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(hook_dir.path().join("log")).unwrap_or_default();
    assert_eq!(
        log, "prestop\nterm\n",
        "the hook runs first, then the signal"
    );

    // A rollout whose pods never become ready: Progressing=False once the deadline passed,
    // and `rollout status` says so instead of waiting forever.
    let cond = eventually(30, "the progress deadline to pass", || {
        let d = get_json(&kc, &["deploy", "stuck"]);
        let c = d["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing")?
            .clone();
        (c["status"] == "False").then_some(c)
    });
    assert_eq!(cond["reason"], "ProgressDeadlineExceeded", "{cond}");
    let o = berth(
        &kc,
        &["rollout", "status", "deploy/stuck", "--timeout", "20s"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("deployment \"stuck\" exceeded its progress deadline"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn endpoints_follow_the_ready_pods_a_service_selects() {
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: host
        command: ["/bin/sleep", "100000"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: ["/usr/bin/test", "-f", "/tmp/ready"]}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;
    let (_dir, _up, kc, _data) = cluster_with(manifest);
    // The Endpoints object appears once the controller has seen the Service.
    let endpoints = |kc: &Path| common::try_get_json(kc, &["endpoints", "web"]);
    let ips = |ep: &Value, field: &str| -> Vec<String> {
        ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(String::from))
            .collect()
    };
    // Running but not ready: listed as not ready, with the named port resolved.
    let ep = eventually(60, "two not-ready addresses", || {
        let ep = endpoints(&kc)?;
        (ips(&ep, "notReadyAddresses").len() == 2).then_some(ep)
    });
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "http");
    assert!(ips(&ep, "addresses").is_empty());

    // One becomes ready: it moves to the addresses.
    let pods = get_json(&kc, &["pods", "-l", "app=web"]);
    let first = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let first_ip = pods["items"][0]["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone watches the Service's directory of the key/value tree.
    let mut watch = KvWatch::start(&kc, "/services/default/web");
    let o = berth(&kc, &["exec", &first, "--", "/usr/bin/touch", "/tmp/ready"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "the ready pod among the addresses", || {
        (ips(&endpoints(&kc)?, "addresses") == [first_ip.clone()]).then_some(())
    });

    // The ready pod is registered under /services/NS/SVC/POD (the other is not ready).
    let key = format!("/services/default/web/{first}");
    watch.expect(&format!("PUT {key} "));
    let o = berth(&kc, &["kv", "ls", "/services/default/web"]);
    let listed = stdout(&o);
    assert!(listed.contains(&first), "{listed}{}", stderr(&o));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let o = berth(&kc, &["kv", "get", &key]);
    let reg: Value = serde_json::from_str(&stdout(&o)).expect("a JSON registration");
    assert_eq!(reg["ip"], first_ip.as_str());
    assert_eq!(reg["labels"]["app"], "web");
    assert_eq!(reg["ports"][0]["port"], 8080);
    assert!(reg["node"].as_str().is_some_and(|n| !n.is_empty()), "{reg}");
    // Not ready any more: unregistered.
    let o = berth(&kc, &["exec", &first, "--", "/bin/rm", "/tmp/ready"]);
    assert!(o.status.success(), "{}", stderr(&o));
    watch.expect(&format!("DELETE {key} "));
    let o = berth(&kc, &["kv", "get", &key]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = berth(&kc, &["exec", &first, "--", "/usr/bin/touch", "/tmp/ready"]);
    assert!(o.status.success(), "{}", stderr(&o));
    watch.expect(&format!("PUT {key} "));

    // The same in the EndpointSlice consumers (kube-proxy, CoreDNS) read.
    let slice = eventually(20, "the slice to list the ready pod", || {
        let slices = get_json(
            &kc,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        );
        let slice = slices["items"][0].clone();
        let ready: Vec<Value> = slice["endpoints"]
            .as_array()?
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .cloned()
            .collect();
        (ready.len() == 1 && ready[0]["addresses"][0] == first_ip.as_str()).then_some(slice)
    });
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2, "{slice}");

    // Scaled to one: the other pod leaves the Endpoints.
    let o = berth(&kc, &["scale", "deploy/web", "--replicas", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(30, "one pod left in the Endpoints", || {
        let ep = endpoints(&kc)?;
        (ips(&ep, "addresses").len() + ips(&ep, "notReadyAddresses").len() == 1).then_some(())
    });

    // The Service goes: so do its Endpoints.
    let o = berth(&kc, &["delete", "svc", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "the Endpoints and slices to go", || {
        let o = berth(&kc, &["get", "endpoints", "web"]);
        let slices = get_json(&kc, &["endpointslices"]);
        (!o.status.success() && slices["items"].as_array()?.is_empty()).then_some(())
    });
    watch.expect("DELETE /services/default/web/");
    let o = berth(&kc, &["kv", "ls", "-R", "/services"]);
    assert!(stdout(&o).contains("nothing under"), "{}", stdout(&o));
}

/// `berth kv watch -r KEY` running in the background; its lines as they come.
struct KvWatch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl KvWatch {
    fn start(kc: &Path, key: &str) -> KvWatch {
        use std::io::BufRead;
        let mut child = std::process::Command::new(common::BIN)
            .args(["kv", "watch", "-r", key])
            .env("KUBECONFIG", kc)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        KvWatch { child, lines }
    }

    /// Waits (20 s at most) for a line starting with `prefix`.
    fn expect(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return,
                Ok(_) => {}
                Err(_) => panic!("no `{prefix}` from berth kv watch in time"),
            }
        }
    }
}

impl Drop for KvWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The `berth` binary as a user runs it: `berth up`, then the verbs from another process.

mod common;

use common::{BerthProcess, berth, kubeconfig_for, stderr, stdout};

const DEMO: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: web}
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: host
        command: [\"/bin/sh\", \"-c\", \"sleep 3600\"]
        resources:
          requests: {cpu: 100m, memory: 32Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
";

#[test]
fn up_apply_get_diff_delete_and_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = BerthProcess::start("up", dir.path());
    let kc = up.kubeconfig();
    let file = dir.path().join("demo.yaml");
    std::fs::write(&file, DEMO).unwrap();
    let f = file.to_str().unwrap();

    let o = berth(&kc, &["apply", "-f", f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "configmap/web-config created\ndeployment.apps/web created\nservice/web created\n"
    );
    let o = berth(&kc, &["apply", "-f", f]);
    assert_eq!(
        stdout(&o),
        "configmap/web-config unchanged\ndeployment.apps/web unchanged\nservice/web unchanged\n"
    );

    // get: tables, names, yaml, json, selectors, short names, several kinds
    let o = berth(&kc, &["get", "deploy"]);
    let out = stdout(&o);
    assert!(
        out.starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/3"),
        "{out}"
    );
    assert_eq!(
        stdout(&berth(&kc, &["get", "cm", "-l", "app=web", "-o", "name"])),
        "configmap/web-config\n"
    );
    let y = stdout(&berth(&kc, &["get", "deployment", "web", "-o", "yaml"]));
    assert!(
        y.contains("replicas: 3") && y.contains("kind: Deployment"),
        "{y}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&berth(&kc, &["get", "svc", "web", "-o", "json"]))).unwrap();
    assert_eq!(j["spec"]["ports"][0]["targetPort"], 8080);
    let both = stdout(&berth(&kc, &["get", "deploy,svc"]));
    assert!(
        both.contains("UP-TO-DATE") && both.contains("CLUSTER-IP"),
        "{both}"
    );
    let all = stdout(&berth(&kc, &["get", "cm", "-A"]));
    assert!(all.starts_with("NAMESPACE "), "{all}");
    let o = berth(&kc, &["get", "po", "missing"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "Error from server (NotFound): pods \"missing\" not found"
    );
    let o = berth(&kc, &["get", "widgets"]);
    assert!(
        stderr(&o).contains("doesn't have a resource type \"widgets\""),
        "{}",
        stderr(&o)
    );

    // diff shows what apply would change, exit code 1 when it would
    std::fs::write(&file, DEMO.replace("replicas: 3", "replicas: 5")).unwrap();
    let o = berth(&kc, &["diff", "-f", f]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let d = stdout(&o);
    assert!(
        d.contains("-  replicas: 3") && d.contains("+  replicas: 5"),
        "{d}"
    );
    assert!(
        stdout(&berth(&kc, &["get", "deploy", "web", "-o", "json"])).contains("\"replicas\": 3"),
        "diff changed nothing"
    );
    let o = berth(&kc, &["apply", "-f", f]);
    assert!(stdout(&o).contains("deployment.apps/web configured"));
    assert_eq!(berth(&kc, &["diff", "-f", f]).status.code(), Some(0));
    // a field removed from the manifest is removed from the object
    std::fs::write(
        &file,
        DEMO.replace("replicas: 3", "replicas: 5")
            .replace("  labels: {app: web}\ndata:", "data:"),
    )
    .unwrap();
    berth(&kc, &["apply", "-f", f]);
    let cm: serde_json::Value = serde_json::from_str(&stdout(&berth(
        &kc,
        &["get", "cm", "web-config", "-o", "json"],
    )))
    .unwrap();
    assert!(cm["metadata"].get("labels").is_none(), "{cm}");

    let o = berth(&kc, &["describe", "deploy", "web"]);
    assert!(
        stdout(&o).contains("Name:         web") && stdout(&o).contains("Spec:"),
        "{}",
        stdout(&o)
    );

    let o = berth(&kc, &["delete", "-f", f]);
    assert_eq!(
        stdout(&o),
        "configmap/web-config deleted\ndeployment.apps/web deleted\nservice/web deleted\n"
    );
    assert_eq!(berth(&kc, &["delete", "svc", "web"]).status.code(), Some(1));
    assert_eq!(
        berth(&kc, &["delete", "svc", "web", "--ignore-not-found"])
            .status
            .code(),
        Some(0)
    );

    // SIGTERM stops it cleanly, ending open watches rather than waiting out the 5 s drain.
    let mut watching = std::process::Command::new(common::BIN)
        .args(["get", "cm", "-w"])
        .env("KUBECONFIG", &kc)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let watch_out = watching.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(watch_out)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The watch is live once a change made now reaches it.
    let marker = dir.path().join("marker.yaml");
    std::fs::write(
        &marker,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut live = false;
    while !live {
        assert!(
            berth(&kc, &["apply", "-f", marker.to_str().unwrap()])
                .status
                .success()
        );
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            live |= line.starts_with("watched ");
        }
        assert!(
            live || std::time::Instant::now() < deadline,
            "the watch never saw a change"
        );
    }
    up.signal(libc::SIGTERM);
    let status = up
        .wait(4)
        .expect("berth up exits promptly after SIGTERM, even with a watch open");
    assert!(status.success(), "{status:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while watching.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch did not end with the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_bad_manifest_names_file_document_line_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = BerthProcess::start("server", dir.path());
    let kc = up.kubeconfig();
    let file = dir.path().join("bad.yaml");
    // document 2 has a YAML syntax error
    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [second\n").unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("bad.yaml: document 2, line 9, column"), "{e}");
    // document 2 is valid YAML but an invalid object
    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: Bad\nspec:\n  replicas: -1\n").unwrap();
    let o = berth(&kc, &["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("bad.yaml: document 2, line 6")
            && e.contains("metadata.name")
            && e.contains("spec.replicas")
            && e.contains("nothing was applied"),
        "{e}"
    );
    // an unknown kind
    std::fs::write(
        &file,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    )
    .unwrap();
    let e = stderr(&berth(&kc, &["apply", "-f", file.to_str().unwrap()]));
    assert!(e.contains("does not serve example.com/v1 Widget"), "{e}");
    // nothing from any of these reached the server
    let o = berth(&kc, &["get", "cm", "first"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn history_shows_authors_and_diffs_and_export_rebuilds_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tokens.csv"), "admin-token-0000000000,admin,1,system:masters\nalice-token-000000000,alice,2,system:masters\nbob-token-00000000000,bob,3,system:masters\n").unwrap();
    let server = BerthProcess::start("server", &data);
    let alice = kubeconfig_for(dir.path(), &server, "alice", "alice-token-000000000");
    let bob = kubeconfig_for(dir.path(), &server, "bob", "bob-token-00000000000");
    let file = dir.path().join("demo.yaml");
    std::fs::write(&file, DEMO).unwrap();
    let f = file.to_str().unwrap();
    assert!(berth(&alice, &["apply", "-f", f]).status.success());
    std::fs::write(&file, DEMO.replace("replicas: 3", "replicas: 4")).unwrap();
    assert!(berth(&bob, &["apply", "-f", f]).status.success());
    let before_last_change = stdout(&berth(&bob, &["export"]));
    std::fs::write(
        &file,
        DEMO.replace("replicas: 3", "replicas: 6")
            .replace("greeting: hello", "greeting: bonjour"),
    )
    .unwrap();
    assert!(berth(&alice, &["apply", "-f", f]).status.success());

    let h = stdout(&berth(&alice, &["history", "deploy/web"]));
    let rows: Vec<Vec<&str>> = h
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{h}");
    assert_eq!((rows[0][2], rows[0][3]), ("alice", "create"));
    assert_eq!((rows[1][2], rows[1][3]), ("bob", "patch"));
    assert_eq!((rows[2][2], rows[2][3]), ("alice", "patch"));
    let d = stdout(&berth(&alice, &["history", "deploy", "web", "--diff"]));
    assert!(
        d.contains("-  replicas: 3\n  +  replicas: 4")
            || (d.contains("-  replicas: 3") && d.contains("+  replicas: 4")),
        "{d}"
    );
    assert!(
        d.contains("-  replicas: 4") && d.contains("+  replicas: 6"),
        "{d}"
    );
    assert!(d.contains("by bob"), "{d}");
    // the past, by revision and by time
    let rev2 = rows[1][0];
    let past = stdout(&berth(
        &alice,
        &["get", "deploy", "web", "--revision", rev2, "-o", "json"],
    ));
    assert!(past.contains("\"replicas\": 4"), "{past}");
    // (-o json gives times to the nanosecond; the table rounds to seconds)
    let hj: serde_json::Value = serde_json::from_str(&stdout(&berth(
        &alice,
        &["history", "deploy/web", "-o", "json"],
    )))
    .unwrap();
    let t2 = hj["items"][1]["time"].as_str().unwrap();
    let at = stdout(&berth(
        &alice,
        &["get", "deploy", "web", "--at", t2, "-o", "json"],
    ));
    assert!(at.contains("\"replicas\": 4"), "{at}");
    let t0 = "2001-01-01T00:00:00Z";
    let o = berth(&alice, &["get", "deploy", "web", "--at", t0]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no retained revision"),
        "{}",
        stderr(&o)
    );

    // export at a past revision, apply to a fresh server, export there: the same state
    let rev = before_last_change
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let exported = stdout(&berth(&alice, &["export", "--revision", &rev]));
    assert_eq!(
        exported.lines().skip(1).collect::<Vec<_>>(),
        before_last_change.lines().skip(1).collect::<Vec<_>>()
    );
    assert!(
        exported.contains("replicas: 4")
            && exported.contains("hello")
            && !exported.contains("status:")
            && !exported.contains("uid:"),
        "{exported}"
    );
    let fresh_dir = dir.path().join("b");
    let fresh = BerthProcess::start("server", &fresh_dir);
    let state = dir.path().join("state.yaml");
    std::fs::write(&state, &exported).unwrap();
    let o = berth(
        &fresh.kubeconfig(),
        &["apply", "-f", state.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let again = stdout(&berth(&fresh.kubeconfig(), &["export"]));
    assert_eq!(
        again.lines().skip(1).collect::<Vec<_>>(),
        exported.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn help_explains() {
    let o = std::process::Command::new(common::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let h = stdout(&o);
    for verb in [
        "up",
        "server",
        "apply",
        "get",
        "describe",
        "delete",
        "diff",
        "history",
        "export",
        "api-resources",
        "version",
    ] {
        assert!(
            h.contains(&format!("  {verb} ")),
            "{verb} missing from --help:\n{h}"
        );
    }
    let o = std::process::Command::new(common::BIN)
        .args(["get", "pods"])
        .env("KUBECONFIG", "/nonexistent/kc")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read kubeconfig") || stderr(&o).contains("no kubeconfig"),
        "{}",
        stderr(&o)
    ); // A bad flag value names the flag and what it takes, before anything starts.
    let o = std::process::Command::new(common::BIN)
        .args(["up", "--proxy-relay", "splice"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--proxy-relay") && stderr(&o).contains("use io-uring or epoll"),
        "{}",
        stderr(&o)
    );
}

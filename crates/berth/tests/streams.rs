//! Reaching into running pods through the API (as root, on `berth up`): logs (tail, since,
//! timestamps, previous, follow, every replica of a Deployment), exec (exit codes, stdin, a
//! real terminal), and top — with berth's CLI and with kubectl.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, berth, cluster_with, eventually, get_json, stderr, stdout};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
  - name: main
    image: host
    command: ["/bin/sh", "-c", "echo first; echo second; echo third; exec sleep 100000"]
  - name: side
    image: host
    command: ["/bin/sleep", "100000"]
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: app
    image: host
    command: ["/bin/sh", "-c", "echo run at $(date +%s%N); exit 1"]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: app
        image: host
        command: ["/bin/sh", "-c", "echo hello from $HOSTNAME; exec sleep 100000"]
"#;

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn logs_exec_and_top_reach_running_pods() {
    let (dir, _up, kc, _data) = cluster_with(PODS);
    let b = |args: &[&str]| berth(&kc, args);
    eventually(60, "every pod running", || {
        let pods = get_json(&kc, &["pods"]);
        let items = pods["items"].as_array()?;
        (items.len() == 4
            && items
                .iter()
                .filter(|p| p["metadata"]["name"] != "crasher")
                .all(|p| p["status"]["phase"] == "Running"))
        .then_some(())
    });
    // The first lines are written as the container starts.
    eventually(10, "talker's output", || {
        (stdout(&b(&["logs", "talker", "-c", "main"])) == "first\nsecond\nthird\n").then_some(())
    });

    // A pod of several containers: the first, said so (as kubectl does).
    let o = b(&["logs", "talker"]);
    assert_eq!(ok(&o), "first\nsecond\nthird\n");
    assert!(
        stderr(&o).contains("Defaulted container \"main\" out of: main, side"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        ok(&b(&["logs", "talker", "-c", "main", "--tail", "2"])),
        "second\nthird\n"
    );
    let stamped = ok(&b(&[
        "logs",
        "talker",
        "-c",
        "main",
        "--tail",
        "1",
        "--timestamps",
    ]));
    let (time, text) = stamped.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "third");
    assert!(berth_api::timefmt::parse_rfc3339(time).is_ok(), "{stamped}");
    assert_eq!(
        ok(&b(&["logs", "talker", "-c", "main", "--since", "1h"])),
        "first\nsecond\nthird\n"
    );
    assert_eq!(
        ok(&b(&[
            "logs",
            "talker",
            "-c",
            "main",
            "--since-time",
            "2500-01-01T00:00:00Z"
        ])),
        ""
    );
    let o = b(&["logs", "talker", "-c", "main", "--previous"]);
    assert!(
        stderr(&o).contains("previous terminated container \"main\" in pod \"talker\" not found"),
        "{}",
        stderr(&o)
    );

    // Following: a line written later arrives on the open stream.
    let mut follow = Command::new(BIN)
        .args(["logs", "-f", "talker", "-c", "main"])
        .env("KUBECONFIG", &kc)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut poked = false;
    while !seen.iter().any(|l| l == "later") {
        assert!(
            Instant::now() < deadline,
            "no 'later' in the followed log: {seen:?}"
        );
        if seen.len() >= 3 && !poked {
            ok(&b(&[
                "exec",
                "talker",
                "-c",
                "main",
                "--",
                "/bin/sh",
                "-c",
                "echo later > /proc/1/fd/1",
            ]));
            poked = true;
        }
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(l);
        }
    }
    assert_eq!(seen, ["first", "second", "third", "later"]);
    let _ = follow.kill();
    let _ = follow.wait();

    // Every replica of a Deployment, each line with its pod and container.
    let replicas = eventually(20, "both replicas' greetings", || {
        let o = ok(&b(&["logs", "deploy/echo"]));
        (o.lines().count() == 2).then_some(o)
    });
    for line in replicas.lines() {
        let (prefix, text) = line.split_once("] ").unwrap();
        let pod = prefix.trim_start_matches("[pod/").trim_end_matches("/app");
        assert!(pod.starts_with("echo-"), "{line}");
        assert_eq!(text, format!("hello from {pod}"), "{line}");
    }

    // The previous run of a restarted container.
    eventually(60, "crasher to restart", || {
        let p = get_json(&kc, &["pod", "crasher"]);
        (p["status"]["containerStatuses"][0]["restartCount"].as_u64()? >= 1).then_some(())
    });
    let previous = ok(&b(&["logs", "crasher", "--previous"]));
    assert!(previous.starts_with("run at "), "{previous}");

    // Exec: output, the exit code, stdin.
    let o = b(&[
        "exec",
        "talker",
        "-c",
        "main",
        "--",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("command terminated with exit code 7"),
        "{}",
        stderr(&o)
    );
    let mut cat = Command::new(BIN)
        .args(["exec", "-i", "talker", "-c", "main", "--", "/bin/cat"])
        .env("KUBECONFIG", &kc)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let o = cat.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), "through stdin\n");
    let o = b(&["exec", "talker", "-c", "nope", "--", "true"]);
    assert!(
        stderr(&o).contains("container nope is not valid for pod talker"),
        "{}",
        stderr(&o)
    );

    // A terminal: the command's stdin is a tty inside the container, of the caller's size.
    // (`script` gives berth a terminal of its own, as a user's would be.)
    let cmd = format!(
        "stty cols 101 rows 31; KUBECONFIG={} {BIN} exec -it talker -c main -- /bin/sh -c 'stty size; tty'",
        kc.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains("31 101"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");

    // Usage, from the agents' cgroup readings.
    let top = eventually(20, "pod usage", || {
        let o = b(&["top", "pods"]);
        o.status.success().then(|| stdout(&o))
    });
    assert!(top.starts_with("NAME"), "{top}");
    assert!(
        top.lines()
            .any(|l| l.starts_with("talker ") && l.contains("Mi")),
        "{top}"
    );
    let top = ok(&b(&["top", "pods", "talker", "--containers"]));
    assert!(top.lines().any(|l| l.contains(" side ")), "{top}");
    let nodes = ok(&b(&["top", "nodes"]));
    assert!(
        nodes.lines().nth(1).is_some_and(|l| l.contains('%')),
        "{nodes}"
    );

    // kubectl, unchanged, through the same API.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let k = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kc)
            .env("HOME", &home)
            .output()
            .unwrap()
    };
    assert_eq!(
        ok(&k(&["logs", "talker", "-c", "main", "--tail=1"])),
        "later\n"
    );
    assert_eq!(
        ok(&k(&[
            "exec",
            "talker",
            "-c",
            "main",
            "--",
            "/bin/echo",
            "from kubectl"
        ])),
        "from kubectl\n"
    );
    let o = k(&[
        "exec", "talker", "-c", "main", "--", "/bin/sh", "-c", "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let top = ok(&k(&["top", "pod", "talker"]));
    assert!(top.contains("talker"), "{top}");
}

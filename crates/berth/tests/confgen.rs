//! Config generation end to end on the multi-node harness (as root), with Debian's real nginx
//! as the front on node-a: backend pods carry `VIRTUAL_HOST`; a ConfigTemplate run by node-a's
//! agent renders nginx's upstreams and server blocks, checks them with `nginx -t`, swaps them
//! in and reloads nginx. Under a bounded wrk load, scaling and a rolling update fail no
//! request; a template nginx rejects leaves the old config serving, with the error in
//! `berth describe`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::harness::Harness;
use common::{berth, curl_host, eventually, get_json, stderr, stdout};

/// nginx started in a node's network namespace (its own config and pid file); stopped (and
/// waited for) on drop.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        common::kill_pid(self.child.id() as i32, 15);
        let _ = self.child.wait();
    }
}

fn nginx_in(ns: &str, conf: &Path) -> Nginx {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "/usr/sbin/nginx", "-e", "stderr", "-c"])
        .arg(conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx (.ci/run installs it)");
    Nginx { child }
}

fn template(dir: &Path, listen: &str) -> String {
    let d = dir.display();
    format!(
        r#"user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  # nginx closes idle keep-alive connections when it reloads, and a client reusing one at
  # that instant sees it closed (browsers retry; wrk counts an error): one request per
  # connection, so every request wrk counts is one nginx answered or failed.
  keepalive_timeout 0;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  {{% for host, pods in virtual_hosts|items %}}
  upstream {{{{ host|replace(".", "_") }}}} {{
    {{% for p in pods %}}
    server {{{{ p.ip }}}}:{{{{ p.port }}}};
    {{% endfor %}}
  }}
  {{% endfor %}}
  server {{
    listen {listen} default_server;
    location = /berth-health {{ return 200 "ok\n"; }}
    location / {{ return 404; }}
  }}
  {{% for host, pods in virtual_hosts|items %}}
  server {{
    listen {listen};
    server_name {{{{ host }}}};
    location / {{ proxy_pass http://{{{{ host|replace(".", "_") }}}}; }}
  }}
  {{% endfor %}}
}}
"#
    )
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

fn config_template(node_ip: &str, dir: &Path, conf: &Path, extra: &str) -> String {
    let listen = format!("{node_ip}:8080");
    let nginx = |args: &str| {
        format!(
            "[/usr/sbin/nginx, -e, stderr, -c, \"{}\", {args}]",
            conf.display()
        )
    };
    format!(
        r#"apiVersion: berth.dev/v1
kind: ConfigTemplate
metadata: {{name: front}}
spec:
  nodeName: node-a
  destination: {conf}
  namespaces: [default]
  debounce: {{min: 100ms, max: 1s}}
  check: {{command: [/usr/sbin/nginx, -e, stderr, -t, -c, "{{candidate}}"]}}
  reload: {{command: {reload}}}
  probe: {{httpGet: {{url: "http://{listen}/berth-health"}}, timeoutSeconds: 5}}
  template: |
{body}"#,
        conf = conf.display(),
        reload = nginx("-s, reload"),
        body = indent(&format!("{}{extra}", template(dir, &listen)), 4)
    )
}

/// The backends: a threaded Python server with a listen backlog of 128 (Python's default of
/// 5 overflows under wrk's load on a busy CI machine: dropped SYNs cost a second each, and a
/// readiness probe that meets them times out, so both pods could leave the config at once).
const BACKENDS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: host
        command: ["/usr/bin/python3", "-c", "import http.server, os\nclass H(http.server.BaseHTTPRequestHandler):\n    protocol_version = 'HTTP/1.1'\n    def do_GET(self):\n        b = (os.environ['HOSTNAME'] + ' ' + os.environ.get('VERSION', '1')).encode()\n        self.send_response(200)\n        self.send_header('Content-Length', str(len(b)))\n        self.end_headers()\n        self.wfile.write(b)\n    def log_message(self, *a):\n        pass\nclass S(http.server.ThreadingHTTPServer):\n    request_queue_size = 128\nS(('', 8080), H).serve_forever()\n"]
        env:
        - {name: VIRTUAL_HOST, value: web.example.test}
        - {name: VERSION, value: "1"}
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
        lifecycle:
          preStop: {sleep: {seconds: 1}}
"#;

/// A wrk script counting the answers by status (each thread's tally is read back in `done`).
const TALLY: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
codes = {}
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("codes")) do io.write(string.format("status %d: %d\n", status, n)) end
  end
end
"#;

/// The upstream servers in the rendered config.
fn upstreams(conf: &Path) -> Vec<String> {
    std::fs::read_to_string(conf)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server ")?.strip_suffix(';'))
        .filter(|s| s.ends_with(":8080") && s.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(String::from)
        .collect()
}

fn ready_pod_ips(kc: &Path) -> Vec<String> {
    let mut ips: Vec<String> = get_json(kc, &["pods", "-l", "app=web"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| common::is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["status"]["podIP"].as_str().map(|ip| format!("{ip}:8080")))
        .collect();
    ips.sort();
    ips
}

fn wait_upstreams(kc: &Path, conf: &Path, n: usize) {
    eventually(
        60,
        &format!("{n} upstreams rendered for the ready pods"),
        || {
            let mut got = upstreams(conf);
            got.sort();
            let ready = ready_pod_ips(kc);
            (got.len() == n && got == ready).then_some(())
        },
    );
}

#[test]
fn a_config_template_keeps_nginx_in_step_with_the_pods_and_never_serves_a_broken_config() {
    let h = Harness::start(2, &[]);
    let kc = h.kubeconfig.clone();
    let dir: PathBuf = h.dir.path().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nginx.conf");
    let node_a = h.nodes[0].ip.clone();
    let ns_a = h.netns("node-a");

    // nginx runs on node-a with a config of its own before the template takes over.
    let listen = format!("{node_ip}:8080", node_ip = node_a);
    let d = dir.display();
    let first = format!(
        "user root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  server {{\n    listen {listen} default_server;\n    location = /berth-health {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    std::fs::write(&conf, first).unwrap();
    let _nginx = nginx_in(&ns_a, &conf);
    eventually(20, "nginx to answer", || {
        (curl_host(&ns_a, &format!("http://{listen}/berth-health"), "x").0 == 200).then_some(())
    });
    let apps = h.dir.path().join("web.yaml");
    std::fs::write(&apps, BACKENDS).unwrap();
    let o = berth(&kc, &["apply", "-f", apps.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ct = h.dir.path().join("front.yaml");
    std::fs::write(&ct, config_template(&node_a, &dir, &conf, "")).unwrap();
    let o = berth(&kc, &["apply", "-f", ct.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    wait_upstreams(&kc, &conf, 2);
    let url = format!("http://{node_a}:8080/");
    eventually(30, "nginx to route web.example.test", || {
        let (code, body) = curl_host(&ns_a, &url, "web.example.test");
        (code == 200 && body.starts_with("web-")).then_some(())
    });
    // Unknown hosts get the default server.
    assert_eq!(curl_host(&ns_a, &url, "nope.example.test").0, 404);
    let status = get_json(&kc, &["configtemplate", "front"])["status"].clone();
    assert!(status["renderedRevision"].is_string(), "{status}");
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
    // A second template on the same node (the node follows the cluster once for both):
    // one mark per ready web pod.
    let marks = dir.join("ready-pods.txt");
    let second = h.dir.path().join("marks.yaml");
    std::fs::write(
        &second,
        format!(
            "apiVersion: berth.dev/v1\nkind: ConfigTemplate\nmetadata: {{name: marks}}\nspec:\n  nodeName: node-a\n  destination: {}\n  debounce: {{min: 100ms, max: 1s}}\n  template: \"{{% for p in pods %}}{{% if p.ready and p.labels.app == 'web' %}}x{{% endif %}}{{% endfor %}}\"\n",
            marks.display()
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", second.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let wait_marks = |n: usize| {
        eventually(
            30,
            &format!("{n} ready pods in the second template's file"),
            || (std::fs::read_to_string(&marks).ok()? == "x".repeat(n)).then_some(()),
        )
    };
    wait_marks(2);
    // A template outside the node's template directories (--config-template-dir, the
    // harness's directory, which the node publishes) is not rendered, and says why.
    let node = get_json(&kc, &["node", "node-a"]);
    let dirs = node["metadata"]["annotations"]["berth.dev/config-template-dirs"].clone();
    assert_eq!(
        dirs.as_str(),
        Some(serde_json::json!([h.dir.path()]).to_string().as_str()),
        "{node}"
    );
    let outside = format!("/etc/berth-test-{}.conf", std::process::id());
    let third = h.dir.path().join("outside.yaml");
    std::fs::write(
        &third,
        format!(
            "apiVersion: berth.dev/v1\nkind: ConfigTemplate\nmetadata: {{name: outside}}\nspec:\n  nodeName: node-a\n  destination: {outside}\n  template: x\n"
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", third.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let condition = eventually(30, "the outside template to be refused", || {
        let c = get_json(&kc, &["configtemplate", "outside"])["status"]["conditions"][0].clone();
        (c["reason"] == "DestinationNotAllowed").then_some(c)
    });
    assert_eq!(condition["status"], "False", "{condition}");
    let message = condition["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&outside) && message.contains(&h.dir.path().display().to_string()),
        "{message}"
    );
    assert!(!Path::new(&outside).exists());

    // Load through nginx from another machine of the underlay while the Deployment scales
    // up and down and rolls out a new version.
    // A wrk script that tallies the answers by status, so a failure says which ones came.
    let tally = dir.join("tally.lua");
    std::fs::write(&tally, TALLY).unwrap();
    let wrk = Command::new("ip")
        .args([
            "netns",
            "exec",
            &h.server_netns(),
            "wrk",
            "-t1",
            "-c8",
            "-d90s",
            "-s",
        ])
        .arg(&tally)
        .args(["-H", "Host: web.example.test", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (.ci/run installs it)");
    let o = berth(&kc, &["scale", "deploy/web", "--replicas", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_upstreams(&kc, &conf, 4);
    wait_marks(4);
    let o = berth(&kc, &["scale", "deploy/web", "--replicas", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_upstreams(&kc, &conf, 2);
    std::fs::write(
        &apps,
        BACKENDS.replace(
            "{name: VERSION, value: \"1\"}",
            "{name: VERSION, value: \"2\"}",
        ),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", apps.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = berth(
        &kc,
        &["rollout", "status", "deploy/web", "--timeout", "90s"],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    wait_upstreams(&kc, &conf, 2);
    eventually(30, "the new version behind nginx", || {
        let (code, body) = curl_host(&ns_a, &url, "web.example.test");
        (code == 200 && body.ends_with(" 2")).then_some(())
    });
    common::kill_pid(wrk.id() as i32, 2);
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests: u64 = report
        .lines()
        .find_map(|l| {
            l.split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    assert!(requests > 100, "wrk made too few requests:\n{report}");
    assert!(
        !report.contains("Socket errors") && !report.contains("Non-2xx"),
        "requests failed while scaling and rolling out:\n{report}\nnginx's error log:\n{}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );

    // A template change nginx rejects: the old config stays and serves; the error is in the
    // status, `berth describe` and an Event.
    let before = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &ct,
        config_template(&node_a, &dir, &conf, "bogus_directive on;\n"),
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", ct.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let status = eventually(30, "the check to fail", || {
        let s = get_json(&kc, &["configtemplate", "front"])["status"].clone();
        s["lastError"].is_string().then_some(s)
    });
    let err = status["lastError"].as_str().unwrap();
    assert!(err.contains("bogus_directive"), "{err}");
    assert_eq!(status["conditions"][0]["reason"], "CheckFailed");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), before);
    let (code, _) = curl_host(&ns_a, &url, "web.example.test");
    assert_eq!(code, 200, "the old config keeps serving");
    let o = berth(&kc, &["describe", "configtemplate", "front"]);
    let described = stdout(&o);
    assert!(described.contains("bogus_directive"), "{described}");
    assert!(described.contains("CheckFailed"), "{described}");
    let events = stdout(&berth(&kc, &["get", "events"]));
    assert!(events.contains("CheckFailed"), "{events}");
    // The node's agent counts it, through the API's node proxy (read here by kubectl).
    let o = Command::new("/usr/bin/kubectl")
        .args(["--kubeconfig", kc.to_str().unwrap()])
        .args(["get", "--raw", "/api/v1/nodes/node-a/proxy/metrics"])
        .env("HOME", h.dir.path())
        .output()
        .unwrap();
    let metrics = stdout(&o);
    assert!(
        metrics.contains(
            "berth_configtemplate_failures_total{template=\"default/front\",stage=\"check\"}"
        ),
        "{metrics}{}",
        stderr(&o)
    );
    assert!(metrics.contains("berth_configtemplate_healthy{template=\"default/front\"} 0"));
}

/// `berth gen` running in the background; killed on drop.
struct Gen(Child);

impl Drop for Gen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn berth_gen_renders_outside_the_cluster_and_keeps_the_file_when_the_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::BerthProcess::start("server", &dir.path().join("server"));
    let kc = server.kubeconfig();
    let tpl = dir.path().join("app.tpl");
    std::fs::write(
        &tpl,
        "{% for s in services %}\nservice {{ s.name }}\n{% endfor %}\nlevel {{ kv['/cfg/app/level'] }}\n",
    )
    .unwrap();
    let dest = dir.path().join("out/app.conf");
    let o = berth(&kc, &["kv", "put", "/cfg/app/level", "info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svc = dir.path().join("svc.yaml");
    std::fs::write(
        &svc,
        "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let o = berth(&kc, &["apply", "-f", svc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Once: render, check, swap, exit 0.
    let args = |extra: &[&str]| {
        let mut a = vec![
            "gen".to_string(),
            "--template".into(),
            tpl.display().to_string(),
            "--dest".into(),
            dest.display().to_string(),
            "--kv".into(),
            "/cfg/app".into(),
            "--check".into(),
            "! grep -q level.bad {candidate}".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let once: Vec<String> = args(&["--once"]);
    let refs: Vec<&str> = once.iter().map(String::as_str).collect();
    let o = berth(&kc, &refs);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("applied"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "service api\nlevel info\n"
    );

    // Following: a change re-renders; a value the check refuses leaves the file as it was.
    let follow = args(&["--min-wait", "50ms"]);
    let mut child = Command::new(common::BIN)
        .args(&follow)
        .env("KUBECONFIG", &kc)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = {
        use std::io::BufRead;
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        rx
    };
    let _gen = Gen(child);
    let o = berth(&kc, &["kv", "put", "/cfg/app/level", "debug"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "the new value rendered", || {
        std::fs::read_to_string(&dest)
            .ok()?
            .contains("level debug")
            .then_some(())
    });
    let o = berth(&kc, &["kv", "put", "/cfg/app/level", "bad"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = berth(&kc, &["kv", "put", "/cfg/app/other", "x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The refused render is reported, and never lands.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = said
            .recv_timeout(left)
            .expect("berth gen to report the failed check");
        if line.contains("CheckFailed") {
            assert!(line.contains("level.bad"), "{line}");
            break;
        }
    }
    assert!(
        std::fs::read_to_string(&dest)
            .unwrap()
            .contains("level debug")
    );
    let o = berth(&kc, &["kv", "put", "/cfg/app/level", "warn"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually(20, "a good value rendered again", || {
        std::fs::read_to_string(&dest)
            .ok()?
            .contains("level warn")
            .then_some(())
    });

    // Bad flags say which flag.
    let o = berth(&kc, &["gen", "--template", tpl.to_str().unwrap(), "--once"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--dest"), "{}", stderr(&o));
    let o = berth(
        &kc,
        &[
            "gen",
            "--template",
            tpl.to_str().unwrap(),
            "--dest",
            "/tmp/x",
            "--min-wait",
            "soon",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--min-wait"), "{}", stderr(&o));
}

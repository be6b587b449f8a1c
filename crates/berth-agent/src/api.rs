//! The agent's own HTTPS API, which the API server calls (as kube-apiserver calls a kubelet)
//! for what only the node has: container logs, exec, and resource usage.
//!
//! - `GET /containerLogs/{ns}/{pod}/{container}?follow&previous&tailLines&sinceSeconds&
//!   sinceTime&timestamps&limitBytes`: the log as text, streamed while following;
//! - `GET /exec/{ns}/{pod}/{container}?command=..&input&output&error&tty`: a WebSocket in
//!   Kubernetes' channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`): one byte of
//!   channel, then data; 0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 terminal size
//!   (`{"Width":..,"Height":..}`), and in v5, 255 with a channel byte half-closes it;
//! - `GET /stats/summary`: kubelet's summary shape (node and pods, CPU in nanocores and
//!   memory working set), for the metrics API and `berth top`.
//!
//! Every caller must present a client certificate issued by the cluster CA. Logs, exec and
//! stats answer the API server's (`berth_tls::AGENT_CLIENT_USER`), which has authorized the
//! request it passes on, and anyone else only as RBAC allows `nodes/proxy` (`nodes/stats`) on
//! this node, asked of the API server with a SubjectAccessReview (the kubelet's webhook
//! authorization), the answer kept 30 s. The agent's serving certificate comes from a CA of its own, made at each start and
//! published on its Node for the API server to trust.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_api::wellknown::EXEC_PROTOCOLS;
use berth_runtime::logs;
use berth_runtime::pod::Runtime;
use berth_runtime::shim::Status;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

struct Api {
    rt: Runtime,
    node_name: String,
    exec_command: Vec<String>,
    /// The last CPU sample of each cgroup (and "" for the node): when, and how much.
    samples: Mutex<HashMap<String, (Instant, u64)>>,
}

/// A bound, not yet serving, agent API.
pub(crate) struct Listening {
    pub port: u16,
    pub ca_pem: String,
    listener: berth_tls::limits::Listener,
    config: Arc<rustls::ServerConfig>,
}

/// Binds the agent API on the node's address and makes its certificates.
pub(crate) async fn bind(
    node_ip: std::net::Ipv4Addr,
    port: u16,
    node_name: &str,
    cluster_ca_pem: &str,
    limits: berth_tls::ConnLimits,
) -> anyhow::Result<Listening> {
    use anyhow::Context;
    let ip = std::net::IpAddr::V4(node_ip);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .with_context(|| {
            format!("cannot listen on {ip}:{port} for the agent API; choose another with --agent-port (0 picks a free one)")
        })?;
    let port = listener.local_addr()?.port();
    let listener = berth_tls::limits::Listener::new(
        listener,
        "agent-api",
        limits,
        berth_tls::limits::Refusal::Close,
    );
    let ca = berth_tls::Ca::generate(&format!("berth-agent-{node_name}"))?;
    let id = ca.issue(
        node_name,
        &[node_name.to_string()],
        &[ip],
        berth_tls::Usage::Server,
    )?;
    let config = berth_tls::server_config(&id, berth_tls::ClientAuth::Required(cluster_ca_pem))?;
    Ok(Listening {
        port,
        ca_pem: ca.pem.clone(),
        listener,
        config,
    })
}

/// Serves the agent API until `stop` turns true.
pub(crate) async fn serve(
    l: Listening,
    rt: Runtime,
    node_name: String,
    exec_command: Vec<String>,
    client: berth_client::Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let gate = Arc::new(Gate {
        client,
        node: node_name.clone(),
        decided: Mutex::new(HashMap::new()),
    });
    let api = Arc::new(Api {
        rt,
        node_name,
        exec_command,
        samples: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", get(exec).post(exec))
        .route("/stats/summary", get(summary))
        .route_layer(axum::middleware::from_fn_with_state(gate, authorize))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { berth_metrics::render() }))
        .with_state(api);
    berth_tls::serve(
        l.listener,
        router,
        Some(l.config),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
        Duration::from_secs(1),
    )
    .await;
}

/// How long a SubjectAccessReview's answer is kept (the kubelet keeps allowed answers 5 min
/// and denied ones 30 s; one short time for both here, so a binding taken away takes hold soon).
const DECIDED_FOR: Duration = Duration::from_secs(30);

/// What a SubjectAccessReview asked: user, groups, verb and `nodes` subresource.
type Question = (String, Vec<String>, &'static str, &'static str);

/// Who may call the agent API: the API server (which has authorized the request it passes
/// on), and anyone RBAC lets use this node's API, asked of the API server with a
/// SubjectAccessReview as the kubelet's webhook authorization asks it.
struct Gate {
    client: berth_client::Client,
    node: String,
    /// (user, groups, verb, subresource) → (allowed, when asked).
    decided: Mutex<HashMap<Question, (bool, std::time::Instant)>>,
}

/// The verb and `nodes` subresource a request to the agent API is, as the kubelet maps its
/// paths: stats for `/stats`, proxy for the rest (logs and exec included); exec is `create`
/// whatever method carries it.
fn node_attributes(method: &axum::http::Method, path: &str) -> (&'static str, &'static str) {
    let sub = if path.starts_with("/stats") {
        "stats"
    } else {
        "proxy"
    };
    let verb = if path.starts_with("/exec") || *method == axum::http::Method::POST {
        "create"
    } else {
        "get"
    };
    (verb, sub)
}

async fn allowed(
    gate: &Gate,
    user: &str,
    groups: &[String],
    verb: &'static str,
    sub: &'static str,
) -> bool {
    let key = (user.to_string(), groups.to_vec(), verb, sub);
    if let Some((ok, at)) = gate
        .decided
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        && at.elapsed() < DECIDED_FOR
    {
        return *ok;
    }
    let Some(kind) = berth_api::kinds::resolve("subjectaccessreviews") else {
        return false;
    };
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "verb": verb, "resource": "nodes", "subresource": sub, "name": gate.node}},
    });
    let ok = match gate.client.create(kind, None, &review, "").await {
        Ok(answer) => answer["status"]["allowed"] == true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the API server whether {user} may use this node's API");
            return false;
        }
    };
    gate.decided
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (ok, std::time::Instant::now()));
    ok
}

/// Lets through the API server, and callers RBAC allows `nodes/proxy` (or `nodes/stats`) on
/// this node.
async fn authorize(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let who = req
        .extensions()
        .get::<berth_tls::ConnInfo>()
        .and_then(|c| c.client_cert.as_ref())
        .and_then(|der| berth_tls::client_subject(der));
    let Some((user, groups)) = who else {
        return text(
            StatusCode::UNAUTHORIZED,
            "a client certificate of the cluster CA is required",
        );
    };
    if user != berth_tls::AGENT_CLIENT_USER {
        let (verb, sub) = node_attributes(req.method(), req.uri().path());
        if !allowed(&gate, &user, &groups, verb, sub).await {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "User \"{user}\" cannot {verb} resource \"nodes/{sub}\" in API group \"\" at the cluster scope (node {}); use the API (kubectl logs, exec, top)",
                    gate.node
                ),
            );
        }
    }
    next.run(req).await
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (
        code,
        [("content-type", "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn query(raw: Option<String>) -> Vec<(String, String)> {
    berth_api::url::query_pairs(raw.as_deref())
}

fn flag(q: &[(String, String)], names: &[&str]) -> bool {
    q.iter()
        .any(|(k, v)| names.contains(&k.as_str()) && (v.is_empty() || v == "true" || v == "1"))
}

fn value<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl Api {
    /// The sandbox id of a pod this node runs (the newest, should a name be reused).
    fn find(&self, ns: &str, name: &str) -> Option<String> {
        let mut found: Vec<(std::time::SystemTime, String)> = self
            .rt
            .pod_ids()
            .into_iter()
            .filter_map(|id| {
                let rec = self.rt.pod(&id).ok()?;
                (rec.config.namespace == ns && rec.config.name == name).then(|| {
                    let t = std::fs::metadata(self.rt.pod_dir(&id))
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (t, id)
                })
            })
            .collect();
        found.sort();
        found.pop().map(|(_, id)| id)
    }

    fn not_here(&self, ns: &str, pod: &str) -> Response {
        text(
            StatusCode::NOT_FOUND,
            format!(
                "pod {ns}/{pod} has no sandbox on node {} (it has not started here, or is gone)",
                self.node_name
            ),
        )
    }
}

async fn container_logs(
    State(api): State<Arc<Api>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(raw);
    let Some(id) = api.find(&ns, &pod) else {
        return api.not_here(&ns, &pod);
    };
    // Negative numbers mean "no limit" (kubectl sends tailLines=-1 for all lines).
    let number = |name: &str| -> Result<Option<u64>, String> {
        match value(&q, name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(|n| u64::try_from(n).ok())
                .map_err(|_| format!("{name} {v:?} is not a number")),
        }
    };
    let (tail, since_seconds, limit) = match (
        number("tailLines"),
        number("sinceSeconds"),
        number("limitBytes"),
    ) {
        (Ok(t), Ok(s), Ok(l)) => (t, s, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return text(StatusCode::BAD_REQUEST, e);
        }
    };
    let since_nanos = match (since_seconds, value(&q, "sinceTime")) {
        (Some(s), _) => {
            Some(berth_api::timefmt::now_nanos().saturating_sub(s.saturating_mul(1_000_000_000)))
        }
        (None, Some(t)) if !t.is_empty() => match berth_api::timefmt::parse_rfc3339(t) {
            Ok(n) => Some(n),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("sinceTime: {e}")),
        },
        _ => None,
    };
    let opts = logs::ReadOptions {
        // kubectl sends tailLines=-1 for "all".
        tail_lines: tail.map(|t| t as usize),
        since_nanos,
        timestamps: flag(&q, &["timestamps"]),
        limit_bytes: limit,
    };
    let previous = flag(&q, &["previous"]);
    let follow = flag(&q, &["follow"]) && !previous;
    let dir = api.rt.pod_dir(&id);
    let attempts = logs::attempts(&dir, &container);
    let pick = if previous {
        attempts.len().checked_sub(2).map(|i| attempts[i].clone())
    } else {
        attempts.last().cloned()
    };
    let Some((attempt, path)) = pick else {
        return text(
            StatusCode::BAD_REQUEST,
            if previous {
                format!("previous terminated container {container:?} in pod {pod:?} not found")
            } else {
                format!("container {container:?} in pod {pod:?} is waiting to start")
            },
        );
    };
    let read = {
        let (path, opts) = (path.clone(), opts.clone());
        tokio::task::spawn_blocking(move || logs::read(&path, &opts)).await
    };
    let (first, offset) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", path.display()),
            );
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if !follow {
        return text(StatusCode::OK, String::from_utf8_lossy(&first).into_owned());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let rt = api.rt.clone();
    std::thread::spawn(move || {
        follow_log(
            &rt, &id, &container, attempt, &path, offset, first, &opts, &tx,
        )
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Sends a log as it grows, until the container has exited (or started again), the reader
/// went away, or `limitBytes` is reached.
fn follow_log(
    rt: &Runtime,
    id: &str,
    container: &str,
    attempt: u32,
    path: &std::path::Path,
    offset: u64,
    first: Vec<u8>,
    opts: &logs::ReadOptions,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let mut sent = first.len() as u64;
    if !first.is_empty() && tx.blocking_send(Ok(first)).is_err() {
        return;
    }
    let mut f = logs::Follower::new(path, offset, opts.timestamps);
    loop {
        // Whether it has ended is read before the last poll, so nothing written before the
        // end is missed.
        let ended = match rt.container(id, container) {
            Ok(s) => s.status == Status::Exited || s.log != path,
            Err(_) => true,
        } || logs::attempts(&rt.pod_dir(id), container)
            .last()
            .is_some_and(|(n, _)| *n != attempt);
        let mut chunk = match f.poll() {
            Ok(c) => c,
            Err(_) => return,
        };
        if let Some(limit) = opts.limit_bytes {
            chunk.truncate(limit.saturating_sub(sent) as usize);
        }
        sent += chunk.len() as u64;
        if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
        if ended || opts.limit_bytes.is_some_and(|l| sent >= l) || tx.is_closed() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The final word of an exec, as Kubernetes' v4 error channel carries it.
fn exit_status(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

struct ExecRequest {
    id: String,
    container: String,
    argv: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

async fn exec(
    State(api): State<Arc<Api>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let q = query(raw);
    let argv: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if argv.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "give a command to run (the command parameter)",
        );
    }
    let Ok(ws) = ws else {
        return text(
            StatusCode::BAD_REQUEST,
            "exec speaks WebSocket (v5.channel.k8s.io or v4.channel.k8s.io); upgrade the connection",
        );
    };
    let Some(id) = api.find(&ns, &pod) else {
        return api.not_here(&ns, &pod);
    };
    match api.rt.container(&id, &container) {
        Ok(s) if s.status == Status::Running => {}
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is not running"),
            );
        }
    }
    let req = ExecRequest {
        id,
        container,
        argv,
        stdin: flag(&q, &["input", "stdin"]),
        stdout: flag(&q, &["output", "stdout"]),
        stderr: flag(&q, &["error", "stderr"]),
        tty: flag(&q, &["tty"]),
    };
    ws.protocols(EXEC_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            if let Err(e) = session(&api, socket, req).await {
                tracing::warn!(error = %e, "exec session failed");
            }
        })
        .into_response()
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Runs one exec: the command through the exec role, its streams over the WebSocket.
async fn session(api: &Api, socket: WebSocket, r: ExecRequest) -> anyhow::Result<()> {
    use std::process::Stdio;
    let Some((exe, args)) = api.exec_command.split_first() else {
        anyhow::bail!("no exec command configured");
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .arg(api.rt.pod_dir(&r.id))
        .arg(&r.container)
        .arg("--")
        .args(&r.argv)
        .kill_on_drop(true);
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(EXEC_PROTOCOLS[0]);
    let mut master: Option<std::fs::File> = None;
    let (mut stdin, outputs): (Option<Writer>, Vec<(u8, Reader)>);
    let mut console_path = None;
    let mut child = if r.tty {
        // The command's terminal is made inside the container; its master side comes to us
        // over this socket.
        let sock = api.rt.pod_dir(&r.id).join(format!(
            "console-{:x}.sock",
            berth_api::timefmt::now_nanos()
        ));
        let listener = tokio::net::UnixListener::bind(&sock)?;
        console_path = Some(sock.clone());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env(berth_runtime::exec::CONSOLE_ENV, &sock);
        let mut child = cmd.spawn()?;
        let conn = tokio::select! {
            c = listener.accept() => c?.0,
            status = child.wait() => {
                let mut why = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut why).await;
                }
                let _ = std::fs::remove_file(&sock);
                anyhow::bail!("exec ended ({:?}) before its terminal was made: {}", status.ok(), why.trim());
            }
        };
        let conn = conn.into_std()?;
        conn.set_nonblocking(false)?;
        let m = tokio::task::spawn_blocking(move || berth_runtime::pty::receive_master(&conn))
            .await??;
        let m = std::fs::File::from(m);
        let reader = tokio::fs::File::from_std(m.try_clone()?);
        stdin = r
            .stdin
            .then(|| -> anyhow::Result<Writer> {
                Ok(Box::new(tokio::fs::File::from_std(m.try_clone()?)))
            })
            .transpose()?;
        let mut outs = vec![(1, Box::new(reader) as Reader)];
        // Should the exec itself fail, its words reach the caller.
        if let Some(e) = child.stderr.take() {
            outs.push((1, Box::new(e) as Reader));
        }
        outputs = outs;
        master = Some(m);
        child
    } else {
        cmd.stdin(if r.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if r.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if r.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn()?;
        stdin = child.stdin.take().map(|w| Box::new(w) as Writer);
        let mut outs = Vec::new();
        if let Some(o) = child.stdout.take() {
            outs.push((1, Box::new(o) as Reader));
        }
        if let Some(e) = child.stderr.take() {
            outs.push((2, Box::new(e) as Reader));
        }
        outputs = outs;
        child
    };
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        // A normal closure (1000): clients treat a close without a status as an error.
        let _ = sink
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    });
    let mut pumps = Vec::new();
    for (ch, mut reader) in outputs {
        let tx = out_tx.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            buf[0] = ch;
            loop {
                match reader.read(&mut buf[1..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let msg = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..=n]));
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    let code = loop {
        tokio::select! {
            status = child.wait() => {
                break status.ok().and_then(|s| s.code()).unwrap_or(137);
            }
            msg = incoming.next() => match msg {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    0 => {
                        if let Some(w) = stdin.as_mut()
                            && (w.write_all(&data[1..]).await.is_err() || w.flush().await.is_err())
                        {
                            stdin = None;
                        }
                    }
                    4 => {
                        let size: Value = serde_json::from_slice(&data[1..]).unwrap_or(Value::Null);
                        let (w, h) = (size["Width"].as_u64(), size["Height"].as_u64());
                        if let (Some(m), Some(w), Some(h)) = (&master, w, h) {
                            let _ = berth_runtime::pty::set_size(m, h.min(u16::MAX as u64) as u16, w.min(u16::MAX as u64) as u16);
                        }
                    }
                    255 if v5 && data.get(1) == Some(&0) => {
                        // Half-close of stdin: the command reads EOF (a terminal gets ^D).
                        if r.tty {
                            if let Some(w) = stdin.as_mut() {
                                let _ = w.write_all(&[4]).await;
                                let _ = w.flush().await;
                            }
                        } else {
                            stdin = None;
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The caller went away: the command goes too.
                    let _ = child.start_kill();
                    stdin = None;
                }
                Some(Ok(_)) => {}
            }
        }
    };
    drop(stdin);
    // What the command wrote before it ended is still sent; a background process keeping the
    // terminal open does not hold the session forever.
    for p in pumps {
        let abort = p.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), p)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    drop(master);
    if let Some(p) = console_path {
        let _ = std::fs::remove_file(p);
    }
    let status = serde_json::to_vec(&exit_status(&r.argv, code)).unwrap_or_default();
    let mut msg = vec![3u8];
    msg.extend_from_slice(&status);
    let _ = out_tx.send(Message::Binary(msg.into())).await;
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

impl Api {
    fn cpu_rates(&self, now: &HashMap<String, u64>, at: Instant) -> HashMap<String, u64> {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = HashMap::new();
        for (k, usage) in now {
            if let Some((t, prev)) = samples.get(k) {
                let dt = at.duration_since(*t).as_nanos() as u64;
                if dt > 0 {
                    out.insert(
                        k.clone(),
                        (usage.saturating_sub(*prev) as u128 * 1_000_000_000 / dt as u128) as u64,
                    );
                }
            }
            samples.insert(k.clone(), (at, *usage));
        }
        samples.retain(|k, _| now.contains_key(k));
        out
    }

    fn needs_second_sample(&self, keys: &[String]) -> bool {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().any(|k| {
            samples
                .get(k)
                .is_none_or(|(t, _)| t.elapsed() < Duration::from_millis(100))
        })
    }
}

/// The cgroups measured: "" for the node, `ID` for a pod, `ID/NAME` for a container.
fn measured(rt: &Runtime) -> Vec<(String, berth_runtime::pod::PodRecord, Vec<String>)> {
    rt.pod_ids()
        .into_iter()
        .filter_map(|id| {
            let rec = rt.pod(&id).ok()?;
            let mut names: Vec<String> = std::fs::read_dir(rt.pod_dir(&id).join("containers"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            Some((id, rec, names))
        })
        .collect()
}

fn usage_json(u: &berth_runtime::stats::Usage, nanocores: Option<u64>, time: &str) -> Value {
    json!({
        "cpu": {"time": time, "usageNanoCores": nanocores, "usageCoreNanoSeconds": u.cpu_ns},
        "memory": {"time": time, "workingSetBytes": u.memory_working_set, "usageBytes": u.memory_usage},
    })
}

async fn summary(State(api): State<Arc<Api>>) -> Response {
    let sample = {
        let api = api.clone();
        move || {
            let rt = &api.rt;
            let mut usage = HashMap::new();
            usage.insert(String::new(), berth_runtime::stats::node());
            let pods = measured(rt);
            for (id, _, names) in &pods {
                let cg = rt.cgroup_of_pod(id);
                usage.insert(id.clone(), berth_runtime::stats::cgroup(&cg));
                for n in names {
                    usage.insert(
                        format!("{id}/{n}"),
                        berth_runtime::stats::cgroup(&format!("{cg}/{n}")),
                    );
                }
            }
            (usage, pods, Instant::now())
        }
    };
    let Ok(mut s) = tokio::task::spawn_blocking(sample.clone()).await else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "sampling failed");
    };
    let cpu = |s: &(HashMap<String, berth_runtime::stats::Usage>, _, Instant)| {
        s.0.iter()
            .filter_map(|(k, u)| u.cpu_ns.map(|c| (k.clone(), c)))
            .collect::<HashMap<_, _>>()
    };
    let keys: Vec<String> = cpu(&s).into_keys().collect();
    if api.needs_second_sample(&keys) {
        // A rate needs two samples: the first call of a while waits for a short window.
        api.cpu_rates(&cpu(&s), s.2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        s = match tokio::task::spawn_blocking(sample).await {
            Ok(s) => s,
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "sampling failed"),
        };
    }
    let rates = api.cpu_rates(&cpu(&s), s.2);
    let time = berth_api::timefmt::now_rfc3339();
    let (usage, pods, _) = s;
    let of = |k: &str| {
        let u = usage.get(k).copied().unwrap_or_default();
        usage_json(&u, rates.get(k).copied(), &time)
    };
    let mut node = of("");
    node["nodeName"] = json!(api.node_name);
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|(id, rec, names)| {
            let mut p = of(&id);
            p["podRef"] =
                json!({"name": rec.config.name, "namespace": rec.config.namespace, "uid": id});
            p["containers"] = names
                .iter()
                .map(|n| {
                    let mut c = of(&format!("{id}/{n}"));
                    c["name"] = json!(n);
                    c
                })
                .collect();
            p
        })
        .collect();
    axum::Json(json!({"node": node, "pods": pods})).into_response()
}

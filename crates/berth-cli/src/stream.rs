//! The verbs that reach into running pods through the API server and the node agents:
//! `logs`, `exec` and `top`.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use anyhow::{Context, anyhow, bail};
use berth_api::kinds;
use berth_api::url::encode;
use berth_api::wellknown::EXEC_PROTOCOLS;
use berth_client::Client;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Which pods a `logs` or `exec` target means: `POD`, `pod/POD`, or a workload
/// (`deploy/web`, `rs/web-abc`, ...) whose selector picks its pods.
async fn pods_of(client: &Client, ns: &str, target: &str) -> anyhow::Result<Target> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(Target::Pod(target.to_string()));
    };
    let k = kinds::resolve(kind).ok_or_else(|| {
        anyhow!("the server doesn't have a resource type \"{kind}\" (see `berth api-resources`)")
    })?;
    if k.kind == "Pod" {
        return Ok(Target::Pod(name.to_string()));
    }
    let obj = client.get(k, Some(ns), name).await?;
    let sel = obj["spec"]["selector"].clone();
    let selector = selector_string(&sel).ok_or_else(|| {
        anyhow!(
            "{}/{name} has no pod selector; name a pod, or a deployment, replicaset, statefulset, daemonset or job",
            k.plural
        )
    })?;
    Ok(Target::Selector {
        what: format!("{}/{name}", k.plural),
        selector,
    })
}

enum Target {
    Pod(String),
    Selector { what: String, selector: String },
}

/// A LabelSelector as a selector string (`app=web,tier in (a,b),!canary`).
fn selector_string(sel: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The container a verb uses when none is named: kubectl's default-container annotation, or
/// the first.
fn default_container(pod: &Value) -> String {
    let annotated = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .map(String::from);
    let all: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let chosen = annotated
        .clone()
        .or_else(|| all.first().map(|c| c.to_string()))
        .unwrap_or_default();
    if annotated.is_none() && all.len() > 1 {
        eprintln!(
            "Defaulted container \"{chosen}\" out of: {}",
            all.join(", ")
        );
    }
    chosen
}

fn pods_kind() -> &'static berth_api::ResourceKind {
    kinds::resolve("pods").expect("pods are a built-in kind")
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// POD, pod/POD, or a workload: deploy/NAME, rs/NAME, sts/NAME, ds/NAME, job/NAME
    pub target: String,
    /// The container (default: the pod's only or default one)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Every container of each pod
    #[arg(long)]
    pub all_containers: bool,
    /// Keep streaming new lines (and, for a workload, replicas that start later)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous run of the container (after a restart)
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines (-1: all)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub tail: Option<i64>,
    /// Only lines newer than this (e.g. 30s, 5m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = berth_api::duration::parse)]
    pub since: Option<std::time::Duration>,
    /// Only lines at or after this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub since_time: Option<String>,
    /// Start each line with its time (RFC 3339, nanoseconds)
    #[arg(long)]
    pub timestamps: bool,
    /// Prefix each line with [pod/NAME/CONTAINER] (default: when several are shown)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub prefix: Option<bool>,
    /// Stop after this many bytes
    #[arg(long, value_name = "BYTES")]
    pub limit_bytes: Option<u64>,
}

fn log_query(a: &LogArgs, container: &str) -> String {
    let mut q = vec![format!("container={}", encode(container))];
    if a.follow {
        q.push("follow=true".into());
    }
    if a.previous {
        q.push("previous=true".into());
    }
    if let Some(t) = a.tail.filter(|t| *t >= 0) {
        q.push(format!("tailLines={t}"));
    }
    if let Some(d) = a.since {
        q.push(format!("sinceSeconds={}", d.as_secs().max(1)));
    }
    if let Some(t) = &a.since_time {
        q.push(format!("sinceTime={}", encode(t)));
    }
    if a.timestamps {
        q.push("timestamps=true".into());
    }
    if let Some(l) = a.limit_bytes {
        q.push(format!("limitBytes={l}"));
    }
    q.join("&")
}

/// `berth logs`: one container's log, or every replica's of a workload (prefixed with the
/// pod and container); with -f, following them, and picking up replicas that start later.
pub async fn logs(
    client: &Client,
    ns: &str,
    a: LogArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let pods = pods_kind();
    if a.since.is_some() && a.since_time.is_some() {
        bail!("--since and --since-time cannot be used together; pick one");
    }
    let (selector, many) = match pods_of(client, ns, &a.target).await? {
        Target::Pod(name) => {
            let pod = client.get(pods, Some(ns), &name).await?;
            let containers = containers_for(&pod, &a)?;
            let prefix = a.prefix.unwrap_or(containers.len() > 1);
            return stream_logs(client, ns, &a, vec![(name, containers)], None, prefix, out).await;
        }
        Target::Selector { what, selector } => (selector, what),
    };
    let list = client
        .list(
            pods,
            Some(ns),
            &format!("labelSelector={}", encode(&selector)),
        )
        .await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() && !a.follow {
        bail!("{many} has no pods (selector {selector})");
    }
    let mut targets = Vec::new();
    for p in &items {
        targets.push((
            p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            containers_for(p, &a)?,
        ));
    }
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let watch = a.follow.then_some((selector, rv));
    stream_logs(
        client,
        ns,
        &a,
        targets,
        watch,
        a.prefix.unwrap_or(true),
        out,
    )
    .await
}

fn containers_for(pod: &Value, a: &LogArgs) -> anyhow::Result<Vec<String>> {
    if a.all_containers {
        let mut names = Vec::new();
        for key in ["initContainers", "containers"] {
            for c in pod["spec"][key].as_array().into_iter().flatten() {
                names.push(c["name"].as_str().unwrap_or("").to_string());
            }
        }
        return Ok(names);
    }
    Ok(vec![
        a.container
            .clone()
            .unwrap_or_else(|| default_container(pod)),
    ])
}

enum Chunk {
    Data(String, Vec<u8>),
    Done(String, Option<String>),
}

/// Streams the logs of `targets` concurrently; lines are written whole, each with its
/// `[pod/NAME/CONTAINER]` prefix when `prefix`. With `watch` (a selector and a revision),
/// pods that appear later are followed too, until interrupted.
async fn stream_logs(
    client: &Client,
    ns: &str,
    a: &LogArgs,
    targets: Vec<(String, Vec<String>)>,
    watch: Option<(String, String)>,
    prefix: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(256);
    let mut started: HashSet<(String, String)> = HashSet::new();
    let mut running = 0usize;
    let start = |pod: &str,
                 container: &str,
                 started: &mut HashSet<(String, String)>,
                 running: &mut usize| {
        if !started.insert((pod.to_string(), container.to_string())) {
            return;
        }
        *running += 1;
        let label = format!("[pod/{pod}/{container}] ");
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/log?{}",
            encode(ns),
            encode(pod),
            log_query(a, container)
        );
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            let err = match client.stream(&path).await {
                Ok(mut s) => loop {
                    match s.next().await {
                        Ok(Some(b)) => {
                            if tx
                                .send(Chunk::Data(label.clone(), b.to_vec()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                },
                Err(e) => Some(crate::describe_error(&anyhow::Error::new(e))),
            };
            let _ = tx.send(Chunk::Done(label, err)).await;
        });
    };
    let single = targets.len() == 1 && targets[0].1.len() == 1 && watch.is_none();
    for (pod, containers) in &targets {
        for c in containers {
            start(pod, c, &mut started, &mut running);
        }
    }
    let mut events = match &watch {
        Some((selector, rv)) => Some(
            client
                .watch(
                    pods_kind(),
                    Some(ns),
                    &format!(
                        "labelSelector={}&resourceVersion={}",
                        encode(selector),
                        encode(rv)
                    ),
                )
                .await?,
        ),
        None => None,
    };
    let mut partial: HashMap<String, Vec<u8>> = HashMap::new();
    let mut failed = None;
    let emit = |label: &str, bytes: &[u8], out: &mut dyn Write| -> std::io::Result<()> {
        if prefix {
            out.write_all(label.as_bytes())?;
        }
        out.write_all(bytes)
    };
    loop {
        if running == 0 && events.is_none() {
            break;
        }
        let chunk = tokio::select! {
            c = rx.recv() => c,
            ev = async { events.as_mut()?.next().await.ok().flatten() }, if events.is_some() => {
                match ev {
                    Some(ev) if ev.typ == "ADDED" || ev.typ == "MODIFIED" => {
                        let p = &ev.object;
                        let phase = p["status"]["phase"].as_str().unwrap_or("");
                        if phase == "Running" {
                            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                            for c in containers_for(p, a)? {
                                start(&name, &c, &mut started, &mut running);
                            }
                        }
                    }
                    Some(_) => {}
                    None => events = None,
                }
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        match chunk {
            Chunk::Data(label, bytes) => {
                if single {
                    out.write_all(&bytes)?;
                    out.flush()?;
                    continue;
                }
                // Whole lines only, so replicas' lines do not interleave mid-line.
                let buf = partial.entry(label.clone()).or_default();
                buf.extend_from_slice(&bytes);
                if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
                    let whole: Vec<u8> = buf.drain(..=end).collect();
                    for line in whole.split_inclusive(|b| *b == b'\n') {
                        emit(&label, line, out)?;
                    }
                    out.flush()?;
                }
            }
            Chunk::Done(label, err) => {
                running -= 1;
                if let Some(rest) = partial.remove(&label).filter(|r| !r.is_empty()) {
                    emit(&label, &rest, out)?;
                    out.write_all(b"\n")?;
                }
                if let Some(e) = err {
                    if single || !prefix {
                        failed = Some(e);
                    } else {
                        eprintln!("{label}{e}");
                    }
                }
            }
        }
    }
    out.flush()?;
    if let Some(e) = failed {
        // The server's error, in kubectl's words.
        bail!(ServerSaid(e));
    }
    Ok(0)
}

/// An error already worded for the user (`Error from server (...): ...`).
#[derive(Debug)]
pub struct ServerSaid(pub String);

impl std::fmt::Display for ServerSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerSaid {}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExecArgs {
    /// POD, pod/POD, or a workload (its first running pod)
    pub target: String,
    /// The container (default: the pod's only or default one)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass standard input to the command
    #[arg(short = 'i', long = "stdin")]
    pub stdin: bool,
    /// Give the command a terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after --
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Puts the terminal on stdin into raw mode until dropped.
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let w = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    (w.ws_col > 0).then_some((w.ws_col, w.ws_row))
}

fn resize_message(cols: u16, rows: u16) -> Message {
    let mut m = vec![4u8];
    m.extend_from_slice(format!("{{\"Width\":{cols},\"Height\":{rows}}}").as_bytes());
    Message::Binary(m.into())
}

/// `berth exec`: runs a command in a container through the API server's WebSocket, with
/// stdin (-i) and a terminal (-t) when asked; exits with the command's code.
pub async fn exec(client: &Client, ns: &str, a: ExecArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    if a.command.is_empty() {
        bail!("give the command after --, e.g. `berth exec -it web -- sh`");
    }
    let pods = pods_kind();
    let name = match pods_of(client, ns, &a.target).await? {
        Target::Pod(n) => n,
        Target::Selector { what, selector } => {
            // As kubectl: the first running pod of the workload.
            let list = client
                .list(
                    pods,
                    Some(ns),
                    &format!(
                        "labelSelector={}&fieldSelector={}",
                        encode(&selector),
                        encode("status.phase=Running")
                    ),
                )
                .await?;
            list["items"][0]["metadata"]["name"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| anyhow!("{what} has no running pod to exec in"))?
        }
    };
    let pod = client.get(pods, Some(ns), &name).await?;
    let container = a
        .container
        .clone()
        .unwrap_or_else(|| default_container(&pod));
    let tty = a.tty && std::io::stdin().is_terminal();
    if a.tty && !tty {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let mut q: Vec<String> = a
        .command
        .iter()
        .map(|c| format!("command={}", encode(c)))
        .collect();
    q.push(format!("container={}", encode(&container)));
    q.push("stdout=true".into());
    if !tty {
        q.push("stderr=true".into());
    }
    if a.stdin {
        q.push("stdin=true".into());
    }
    if tty {
        q.push("tty=true".into());
    }
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/exec?{}",
        encode(ns),
        encode(&name),
        q.join("&")
    );
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let up = client.websocket(&path, &EXEC_PROTOCOLS, &key).await?;
    let v5 = up.protocol.as_deref() == Some(EXEC_PROTOCOLS[0]);
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        up.io,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let (mut sink, mut stream) = ws.split();
    let raw = tty.then(RawMode::enter);
    if tty && let Some((cols, rows)) = terminal_size() {
        sink.send(resize_message(cols, rows)).await?;
    }
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    if a.stdin {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = in_tx.send(None).await;
                        return;
                    }
                    Ok(n) => {
                        if in_tx.send(Some(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(in_tx);
    }
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("cannot watch the terminal's size")?;
    let mut stdin_open = a.stdin;
    let mut status: Option<Value> = None;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    1 => { stdout.write_all(&b[1..])?; stdout.flush()?; }
                    2 => { stderr.write_all(&b[1..])?; stderr.flush()?; }
                    3 => status = serde_json::from_slice(&b[1..]).ok(),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            data = in_rx.recv(), if stdin_open => match data.flatten() {
                Some(d) => {
                    let mut m = vec![0u8];
                    m.extend_from_slice(&d);
                    sink.send(Message::Binary(m.into())).await?;
                }
                None => {
                    stdin_open = false;
                    if v5 {
                        sink.send(Message::Binary(vec![255u8, 0].into())).await?;
                    }
                }
            },
            _ = winch.recv(), if tty => {
                if let Some((cols, rows)) = terminal_size() {
                    sink.send(resize_message(cols, rows)).await?;
                }
            }
        }
    }
    drop(raw);
    let _ = sink.close().await;
    match status {
        Some(s) if s["status"] == "Success" => Ok(0),
        Some(s) => {
            let code = s["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["reason"] == "ExitCode")
                .and_then(|c| c["message"].as_str()?.parse::<i32>().ok());
            match code {
                Some(c) => {
                    eprintln!("command terminated with exit code {c}");
                    Ok(c)
                }
                None => bail!(ServerSaid(format!(
                    "error: {}",
                    s["message"].as_str().unwrap_or("exec failed")
                ))),
            }
        }
        None => bail!("the connection closed before the command's exit status arrived"),
    }
}

fn cpu_millis(q: &Value) -> i64 {
    q.as_str()
        .and_then(|s| berth_api::quantity::Quantity::parse(s).ok())
        .map_or(0, |q| i64::try_from(q.millis()).unwrap_or(i64::MAX))
}

fn bytes_of(q: &Value) -> i64 {
    q.as_str()
        .and_then(|s| berth_api::quantity::Quantity::parse(s).ok())
        .map_or(0, |q| i64::try_from(q.units_ceil()).unwrap_or(i64::MAX))
}

/// The items of a metrics API answer (one object when `single`); a server without the API
/// is said so as kubectl says it.
async fn metric_items(client: &Client, path: &str, single: bool) -> anyhow::Result<Vec<Value>> {
    let m = client
        .json(berth_client::Method::GET, path, None)
        .await
        .map_err(|e| {
            if e.code() == Some(404) && !single {
                anyhow!("Metrics API not available")
            } else {
                anyhow::Error::new(e)
            }
        })?;
    Ok(if single {
        vec![m]
    } else {
        m["items"].as_array().cloned().unwrap_or_default()
    })
}

fn mi(b: i64) -> String {
    format!("{}Mi", b / (1024 * 1024))
}

/// `berth top nodes|pods`: usage from the metrics API, as kubectl top shows it.
pub async fn top(
    client: &Client,
    ns: &str,
    what: &str,
    name: Option<&str>,
    all_namespaces: bool,
    selector: Option<&str>,
    containers: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let base = "/apis/metrics.k8s.io/v1beta1";
    match what {
        "node" | "nodes" | "no" => {
            let path = match name {
                Some(n) => format!("{base}/nodes/{}", encode(n)),
                None => format!("{base}/nodes"),
            };
            let items = metric_items(client, &path, name.is_some()).await?;
            let nodes = kinds::resolve("nodes").expect("built-in kind");
            let mut rows = Vec::new();
            for it in items {
                let n = it["metadata"]["name"].as_str().unwrap_or("").to_string();
                let node = client.get(nodes, None, &n).await.unwrap_or(Value::Null);
                let cpu = cpu_millis(&it["usage"]["cpu"]);
                let mem = bytes_of(&it["usage"]["memory"]);
                let alloc_cpu = cpu_millis(&node["status"]["allocatable"]["cpu"]).max(1);
                let alloc_mem = bytes_of(&node["status"]["allocatable"]["memory"]).max(1);
                rows.push(vec![
                    n,
                    format!("{cpu}m"),
                    format!("{}%", cpu * 100 / alloc_cpu),
                    mi(mem),
                    format!("{}%", mem * 100 / alloc_mem),
                ]);
            }
            write!(
                out,
                "{}",
                crate::print::table(
                    &["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
                    &rows
                )
            )?;
        }
        "pod" | "pods" | "po" => {
            let mut path = match (name, all_namespaces) {
                (Some(n), _) => format!("{base}/namespaces/{}/pods/{}", encode(ns), encode(n)),
                (None, true) => format!("{base}/pods"),
                (None, false) => format!("{base}/namespaces/{}/pods", encode(ns)),
            };
            if let Some(sel) = selector {
                path.push_str(&format!("?labelSelector={}", encode(sel)));
            }
            let items = metric_items(client, &path, name.is_some()).await?;
            if items.is_empty() {
                writeln!(out, "No resources found")?;
                return Ok(0);
            }
            let mut rows = Vec::new();
            for it in &items {
                let pod = it["metadata"]["name"].as_str().unwrap_or("").to_string();
                let mut row_ns = Vec::new();
                if all_namespaces {
                    row_ns.push(
                        it["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                let cs = it["containers"].as_array().cloned().unwrap_or_default();
                if containers {
                    for c in cs {
                        let mut r = row_ns.clone();
                        r.extend([
                            pod.clone(),
                            c["name"].as_str().unwrap_or("").to_string(),
                            format!("{}m", cpu_millis(&c["usage"]["cpu"])),
                            mi(bytes_of(&c["usage"]["memory"])),
                        ]);
                        rows.push(r);
                    }
                } else {
                    let cpu: i64 = cs.iter().map(|c| cpu_millis(&c["usage"]["cpu"])).sum();
                    let mem: i64 = cs.iter().map(|c| bytes_of(&c["usage"]["memory"])).sum();
                    let mut r = row_ns;
                    r.extend([pod, format!("{cpu}m"), mi(mem)]);
                    rows.push(r);
                }
            }
            let mut headers = Vec::new();
            if all_namespaces {
                headers.push("NAMESPACE");
            }
            headers.push("NAME");
            if containers {
                headers.push("CONTAINER");
            }
            headers.extend(["CPU(cores)", "MEMORY(bytes)"]);
            write!(out, "{}", crate::print::table(&headers, &rows))?;
        }
        other => bail!("top shows nodes or pods, not {other:?}"),
    }
    Ok(0)
}

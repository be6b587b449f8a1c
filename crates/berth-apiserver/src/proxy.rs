//! What the API server asks node agents for, as kube-apiserver asks kubelets: a pod's logs
//! (`pods/log`), exec (`pods/exec`, a WebSocket passed through), and resource usage (the
//! `metrics.k8s.io` API, which metrics-server serves in Kubernetes).
//!
//! The server finds a node's agent from its Node: the InternalIP address, the port in
//! `status.daemonEndpoints.kubeletEndpoint`, and the agent's CA in the `berth.dev/agent-ca`
//! annotation (trusted for that node only). It authenticates with the client certificate
//! the cluster CA issued it.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_api::kinds::resolve;
use berth_api::wellknown::AGENT_CA_ANNOTATION;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::error::{ApiError, ApiResult};

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

struct Agent {
    node: String,
    ip: String,
    port: u64,
    ca: String,
}

fn agent_of(s: &ApiServer, node: &str) -> ApiResult<Agent> {
    let nodes = resolve("nodes").ok_or_else(|| unavailable("no node kind".into()))?;
    let n = s.registry.get(nodes, None, node)?.into_value();
    let ip = berth_api::object::node_internal_ip(&n)
        .unwrap_or("")
        .to_string();
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(0);
    let ca = n["metadata"]["annotations"][AGENT_CA_ANNOTATION]
        .as_str()
        .unwrap_or("")
        .to_string();
    if ip.is_empty() || port == 0 || ca.is_empty() {
        return Err(unavailable(format!(
            "node {node} publishes no agent API (its agent runs without the cluster CA, --ca-file, or has not registered yet)"
        )));
    }
    Ok(Agent {
        node: node.to_string(),
        ip,
        port,
        ca,
    })
}

/// Sends one request to a node's agent over a connection of its own (which may upgrade).
async fn call(
    s: &ApiServer,
    agent: &Agent,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
    let Some(id) = &s.config.agent_client else {
        return Err(unavailable(
            "this API server runs without TLS, so it has no certificate to call node agents with"
                .into(),
        ));
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        unavailable(format!(
            "cannot reach the agent of node {} at {}:{}: {what}: {e}",
            agent.node, agent.ip, agent.port
        ))
    };
    let config = berth_tls::client_config(&agent.ca, Some(id)).map_err(|e| fail("its CA", &e))?;
    let ip: std::net::IpAddr = agent.ip.parse().map_err(|e| fail("its address", &e))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((ip, agent.port as u16)),
    )
    .await
    .map_err(|_| fail("connect", &"timed out after 5s"))?
    .map_err(|e| fail("connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
        .await
        .map_err(|e| fail("TLS", &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail("HTTP", &e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", format!("{}:{}", agent.ip, agent.port));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail("request", &e))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| fail("request", &e))
}

/// An agent's non-success answer (plain text) as an API error with the same code.
async fn agent_error(resp: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        _ => "InternalError",
    };
    ApiError::new(code, reason, message)
}

/// The pod, its node, and the container a request means (the only one when it names none).
fn target(
    s: &ApiServer,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> ApiResult<(String, String)> {
    let pods = resolve("pods").ok_or_else(|| unavailable("no pod kind".into()))?;
    let pod = s.registry.get(pods, Some(ns), name)?.into_value();
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let (main, init) = (names("containers"), names("initContainers"));
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) if main.contains(c) || init.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if main.len() == 1 => main[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}] or one of the init containers: [{}]",
                main.join(" "),
                init.join(" ")
            )));
        }
    };
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} has not been scheduled to a node yet, so it has no logs and nothing to exec in"
        )));
    }
    Ok((node.to_string(), container))
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", berth_api::url::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Kubernetes' bounds for a log request, checked before the agent is asked: `tailLines` 0
/// or more (-1, as some clients send, means all), `sinceSeconds` from 1 to int32's maximum,
/// `limitBytes` 1 or more, and not both `sinceSeconds` and `sinceTime`.
fn check_log_options(q: &HashMap<String, String>) -> ApiResult<()> {
    use crate::server::query_int;
    query_int(q, "tailLines", -1, i64::MAX)?;
    let since = query_int(q, "sinceSeconds", 1, berth_api::validate::MAX_INT32)?;
    query_int(q, "limitBytes", 1, i64::MAX)?;
    if let Some(t) = q.get("sinceTime") {
        if since.is_some() {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        berth_api::timefmt::parse_rfc3339(t)
            .map_err(|e| ApiError::bad_request(format!("sinceTime {t:?}: {e}")))?;
    }
    Ok(())
}

/// `GET pods/NAME/log`: the container's log from its node's agent, streamed when following.
pub async fn logs(
    s: &ApiServer,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    check_log_options(q)?;
    let (node, container) = target(s, ns, name, q)?;
    let agent = agent_of(s, &node)?;
    let mut pass: Vec<(&str, &str)> = Vec::new();
    for k in [
        "follow",
        "previous",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "timestamps",
        "limitBytes",
    ] {
        if let Some(v) = q.get(k) {
            pass.push((k, v));
        }
    }
    let path = format!(
        "/containerLogs/{}/{}/{}?{}",
        berth_api::url::encode(ns),
        berth_api::url::encode(name),
        berth_api::url::encode(&container),
        query_string(&pass)
    );
    let resp = call(s, &agent, "GET", &path, &[]).await?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::new(resp.into_body()))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response()))
}

/// `GET|POST pods/NAME/exec` upgraded to a WebSocket: the upgrade is passed to the node's
/// agent, and once both sides switched protocols, bytes flow straight through.
pub async fn exec(
    s: &ApiServer,
    ns: &str,
    name: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult<Response> {
    let pairs = berth_api::url::query_pairs(raw_query);
    let q: HashMap<String, String> = pairs.iter().cloned().collect();
    let wants_ws = headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(upgrade) = upgrade.filter(|_| wants_ws) else {
        return Err(ApiError::bad_request(
            "exec needs a WebSocket upgrade (subprotocol v5.channel.k8s.io or v4.channel.k8s.io); SPDY is not served. kubectl 1.30 and later use WebSockets",
        ));
    };
    let (node, container) = target(s, ns, name, &q)?;
    let mut pass: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &pairs {
        let k = match k.as_str() {
            "command" => "command",
            "stdin" | "input" => "input",
            "stdout" | "output" => "output",
            "stderr" | "error" => "error",
            "tty" => "tty",
            _ => continue,
        };
        pass.push((k, v));
    }
    if !pass.iter().any(|(k, _)| *k == "command") {
        return Err(ApiError::bad_request(
            "give a command to run (the command parameter)",
        ));
    }
    let agent = agent_of(s, &node)?;
    let path = format!(
        "/exec/{}/{}/{}?{}",
        berth_api::url::encode(ns),
        berth_api::url::encode(name),
        berth_api::url::encode(&container),
        query_string(&pass)
    );
    let mut fwd = vec![
        ("connection", "Upgrade".to_string()),
        ("upgrade", "websocket".to_string()),
    ];
    for h in [
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
    ] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
            fwd.push((h, v.to_string()));
        }
    }
    let mut resp = call(s, &agent, "GET", &path, &fwd).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_error(resp).await);
    }
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in [
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "sec-websocket-protocol",
    ] {
        if let Some(v) = resp.headers().get(h) {
            out = out.header(h, v);
        }
    }
    let agent_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(client), Ok(agent)) = (upgrade.await, agent_side.await) else {
            return;
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    Ok(out
        .body(Body::empty())
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response()))
}

/// `GET nodes/NAME/proxy/PATH`: the agent's answer, passed through.
pub async fn node_get(s: &ApiServer, node: &str, path: &str) -> ApiResult<Response> {
    let agent = agent_of(s, node)?;
    let resp = call(s, &agent, "GET", &format!("/{path}"), &[]).await?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    let ty = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", ty)
        .body(Body::new(resp.into_body()))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response()))
}

/// A node agent's usage summary.
async fn summary(s: &ApiServer, node: &str) -> ApiResult<Value> {
    let agent = agent_of(s, node)?;
    let resp = call(s, &agent, "GET", "/stats/summary", &[]).await?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(format!("node {node}: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| unavailable(format!("node {node} answered no summary: {e}")))
}

fn usage(v: &Value) -> Value {
    let cpu = v["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
    let mem = v["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", mem / 1024)})
}

/// The summaries of the nodes that publish an agent API, fetched at once.
async fn summaries(s: &ApiServer, only: Option<&str>) -> ApiResult<Vec<(String, Value)>> {
    let nodes = resolve("nodes").ok_or_else(|| unavailable("no node kind".into()))?;
    let names: Vec<String> = match only {
        Some(n) => vec![n.to_string()],
        None => s
            .registry
            .list(nodes, None, &Default::default())?
            .items
            .iter()
            .map(|o| o.name().to_string())
            .collect(),
    };
    let calls = names.iter().map(|n| summary(s, n));
    let results = futures_util::future::join_all(calls).await;
    let mut out = Vec::new();
    for (n, r) in names.into_iter().zip(results) {
        match r {
            Ok(v) => out.push((n, v)),
            // One node asked for by name answers its own error; a list skips nodes that are
            // down, as metrics-server does.
            Err(e) if only.is_some() => return Err(e),
            Err(e) => tracing::debug!(node = %n, error = %e.0.message, "no usage from node"),
        }
    }
    Ok(out)
}

const WINDOW: &str = "1s";

/// `metrics.k8s.io/v1beta1` nodes and pods (NodeMetrics, PodMetrics), from the agents.
pub async fn metrics(
    s: &ApiServer,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<Value> {
    let api_version = format!(
        "{}/{}",
        crate::discovery::METRICS_GROUP,
        crate::discovery::METRICS_VERSION
    );
    let now = berth_api::timefmt::now_rfc3339();
    let mut items = Vec::new();
    if resource == "nodes" {
        for (node, sum) in summaries(s, name).await? {
            let u = usage(&sum["node"]);
            items.push(json!({
                "metadata": {"name": node, "creationTimestamp": now},
                "timestamp": sum["node"]["cpu"]["time"], "window": WINDOW, "usage": u,
            }));
        }
    } else {
        // Which pods: by namespace, name and label selector, as the pod list would answer.
        let pods = resolve("pods").ok_or_else(|| unavailable("no pod kind".into()))?;
        let opts = crate::server::list_options(pods, q)?;
        let wanted: HashMap<String, (String, String, String)> = s
            .registry
            .list(pods, ns, &opts)?
            .items
            .iter()
            .map(|o| {
                let v = o.as_value();
                (
                    v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    (
                        o.namespace().unwrap_or("").to_string(),
                        o.name().to_string(),
                        v["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
            .filter(|(_, (_, n, _))| name.is_none_or(|want| want == n))
            .collect();
        if let Some(n) = name
            && wanted.is_empty()
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("podmetrics.metrics.k8s.io \"{n}\" not found"),
            ));
        }
        let mut nodes: Vec<&str> = wanted.values().map(|(_, _, n)| n.as_str()).collect();
        nodes.sort();
        nodes.dedup();
        for node in nodes.into_iter().filter(|n| !n.is_empty()) {
            let Ok(sum) = summary(s, node).await else {
                continue;
            };
            for p in sum["pods"].as_array().into_iter().flatten() {
                let uid = p["podRef"]["uid"].as_str().unwrap_or("");
                let Some((pns, pname, _)) = wanted.get(uid) else {
                    continue;
                };
                let containers: Vec<Value> = p["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| json!({"name": c["name"], "usage": usage(c)}))
                    .collect();
                items.push(json!({
                    "metadata": {"name": pname, "namespace": pns, "creationTimestamp": now},
                    "timestamp": p["cpu"]["time"], "window": WINDOW, "containers": containers,
                }));
            }
        }
        if let Some(n) = name
            && items.is_empty()
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("podmetrics.metrics.k8s.io \"{n}\" not found (it is not running)"),
            ));
        }
    }
    let kind = if resource == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    };
    if name.is_some() {
        let mut one = items.into_iter().next().unwrap_or(Value::Null);
        one["kind"] = json!(kind);
        one["apiVersion"] = json!(api_version);
        return Ok(one);
    }
    items.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                v["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(json!({
        "kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": {}, "items": items,
    }))
}

//! The ingress: every node accepts HTTP on one port (`--ingress-port`) and routes each request
//! by its Host and path to a ready endpoint, from Kubernetes Ingress objects and from pods'
//! `VIRTUAL_HOST` (the docker-gen convention), as one table rebuilt on every change.
//!
//! - Hosts: an exact host beats a wildcard (`*.example.com`, one label), which beats a rule
//!   without a host. Paths: the longest match wins; `Exact` beats `Prefix` of the same length;
//!   `Prefix` matches whole path elements (`/a` matches `/a/b`, not `/ab`);
//!   `ImplementationSpecific` is `Prefix`. Pods' `VIRTUAL_HOST` names are `Prefix /` routes
//!   to their `VIRTUAL_PORT` (or first container port, or 80), after Ingress rules.
//! - No route for the host: 404 (or the Ingress `defaultBackend`); a route with no ready
//!   endpoint: 503; a request that could not be sent to an endpoint (no connection, or a
//!   kept-alive one it had closed) goes to the next; 502 when none answers.
//! - The backend sees the client: `X-Forwarded-For` (appended), `X-Forwarded-Host`,
//!   `X-Forwarded-Proto`, `X-Real-IP` and `Forwarded` (RFC 7239), and the original Host.
//! - A new table applies to requests that start after it; requests in flight finish where
//!   they are, and connections to clients stay open.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::catalog::{self, Catalog, IngressBackend};

type Body = BoxBody<Bytes, hyper::Error>;

/// Where one route's requests go, taken in turn.
#[derive(Debug, Default)]
struct Pool {
    addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Pool {
    /// The endpoints to try (at most three), starting at the next in turn.
    fn order(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.addrs.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n.min(3)).map(move |i| self.addrs[(start + i) % n])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`: the suffix `.example.com`, one label before it.
    Wildcard(String),
    Any,
}

impl HostMatch {
    fn of(host: Option<&str>) -> HostMatch {
        match host {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
                None => HostMatch::Exact(h.to_string()),
            },
        }
    }

    /// How well it matches `host`: 3 exact, 2 wildcard, 1 any, None not at all.
    fn rank(&self, host: &str) -> Option<u8> {
        match self {
            HostMatch::Exact(h) => (h == host).then_some(3),
            HostMatch::Wildcard(s) => host
                .strip_suffix(s.as_str())
                .filter(|label| !label.is_empty() && !label.contains('.'))
                .map(|_| 2),
            HostMatch::Any => Some(1),
        }
    }
}

#[derive(Debug)]
struct Route {
    host: HostMatch,
    path: String,
    exact: bool,
    pool: Arc<Pool>,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        if self.exact {
            return path == self.path;
        }
        let p = self.path.trim_end_matches('/');
        p.is_empty()
            || path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The routing table.
#[derive(Debug, Default)]
struct Table {
    routes: Vec<Route>,
    default: Option<Arc<Pool>>,
}

enum Pick {
    Go(Arc<Pool>),
    NoRoute,
}

impl Table {
    fn build(c: &Catalog) -> Table {
        let pool = |b: &IngressBackend| {
            Arc::new(Pool {
                addrs: c.service_backends(&b.service, &b.port),
                next: AtomicUsize::new(0),
            })
        };
        let mut t = Table::default();
        let mut ingresses: Vec<_> = c.ingresses.iter().collect();
        ingresses.sort_by(|a, b| a.0.cmp(b.0));
        for (_, ing) in ingresses {
            for p in &ing.paths {
                t.routes.push(Route {
                    host: HostMatch::of(p.host.as_deref()),
                    path: p.path.clone(),
                    exact: p.exact,
                    pool: pool(&p.backend),
                });
            }
            if t.default.is_none() {
                t.default = ing.default.as_ref().map(pool);
            }
        }
        let mut hosts: std::collections::BTreeMap<&str, Vec<SocketAddr>> = Default::default();
        for v in c.vhosts.values() {
            for h in &v.hosts {
                hosts.entry(h.as_str()).or_default().push(v.addr);
            }
        }
        for (h, mut addrs) in hosts {
            let host = HostMatch::of(Some(h));
            // An Ingress rule for the same host and path comes first.
            if t.routes.iter().any(|r| r.host == host && r.path == "/") {
                continue;
            }
            addrs.sort();
            t.routes.push(Route {
                host,
                path: "/".into(),
                exact: false,
                pool: Arc::new(Pool {
                    addrs,
                    next: AtomicUsize::new(0),
                }),
            });
        }
        t
    }

    fn pick(&self, host: &str, path: &str) -> Pick {
        let best = self
            .routes
            .iter()
            .filter_map(|r| Some((r.host.rank(host)?, r)))
            .filter(|(_, r)| r.matches(path))
            .max_by_key(|(rank, r)| (*rank, r.path.len(), r.exact));
        match (best, &self.default) {
            (Some((_, r)), _) => Pick::Go(r.pool.clone()),
            (None, Some(d)) => Pick::Go(d.clone()),
            (None, None) => Pick::NoRoute,
        }
    }
}

/// Kept-alive HTTP/1 connections to endpoints, by address. A connection goes back when its
/// response has been passed on to the end.
#[derive(Default)]
struct Upstreams {
    idle: std::sync::Mutex<std::collections::HashMap<SocketAddr, Vec<SendRequest<Body>>>>,
}

/// Idle connections kept per endpoint.
const IDLE_PER_ENDPOINT: usize = 256;

impl Upstreams {
    /// An idle connection to `addr`, or a new one.
    async fn get(&self, addr: SocketAddr) -> Result<SendRequest<Body>, String> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&addr)
                .and_then(Vec::pop);
            match idle {
                // Free once its connection has taken in the end of the last response.
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => break,
            }
        }
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| format!("{addr}: no connection in 2s"))?
        .map_err(|e| format!("{addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    fn put(&self, addr: SocketAddr, send: SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let v = idle.entry(addr).or_default();
        if v.len() < IDLE_PER_ENDPOINT {
            v.push(send);
        }
    }
}

/// A response body from an endpoint that gives its connection back to the pool once it has
/// been read to the end (dropped earlier, the connection goes: it still holds unread bytes).
struct Returning {
    inner: Incoming,
    back: Option<(Arc<Upstreams>, SocketAddr, SendRequest<Body>)>,
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner)
            && let Some((pool, addr, send)) = self.back.take()
        {
            pool.put(addr, send);
        }
    }
}

fn plain(code: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn forward_headers(h: &mut HeaderMap, client: IpAddr, host: &str) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_lowercase()))
        .collect();
    for n in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(named) {
        if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
            h.remove(name);
        }
    }
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let host_q = host.replace('"', "");
    let fwd = format!("for={node};host=\"{host_q}\";proto=http");
    let forwarded = match h.get("forwarded").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {fwd}"),
        None => fwd,
    };
    for (k, v) in [
        ("x-forwarded-for", xff),
        ("x-forwarded-host", host.to_string()),
        ("x-forwarded-proto", "http".to_string()),
        ("x-real-ip", client.to_string()),
        ("forwarded", forwarded),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
}

async fn handle(
    table: Arc<RwLock<Arc<Table>>>,
    upstreams: Arc<Upstreams>,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host_header = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("")
        .to_string();
    let bare = host_header
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host_header.as_str(), |(h, _)| h)
        .trim_end_matches('.');
    let host: std::borrow::Cow<'_, str> = if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        bare.to_ascii_lowercase().into()
    } else {
        bare.into()
    };
    let path = req.uri().path().to_string();
    let t = table.read().unwrap_or_else(|e| e.into_inner()).clone();
    let pool = match t.pick(&host, &path) {
        Pick::Go(p) => p,
        Pick::NoRoute => {
            return Ok(plain(
                StatusCode::NOT_FOUND,
                &format!("no route for host {host:?}"),
            ));
        }
    };
    if pool.addrs.is_empty() {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no ready endpoint for {host}{path}"),
        ));
    }
    let (mut parts, body) = req.into_parts();
    forward_headers(&mut parts.headers, client.ip(), &host_header);
    let mut out = Some(Request::from_parts(parts, body.boxed()));
    let mut last = String::new();
    for b in pool.order() {
        let Some(req) = out.take() else { break };
        let mut send = match upstreams.get(b).await {
            Ok(s) => s,
            Err(e) => {
                // Not sent: the request can go to the next endpoint.
                last = e;
                out = Some(req);
                continue;
            }
        };
        match send.try_send_request(req).await {
            Ok(resp) => {
                let back = Some((upstreams.clone(), b, send));
                return Ok(resp.map(|inner| Returning { inner, back }.boxed()));
            }
            Err(mut e) => {
                last = format!("{b}: {}", e.error());
                // A kept-alive connection the endpoint had closed: the request was not sent.
                out = e.take_message();
                if out.is_none() {
                    break;
                }
            }
        }
    }
    Ok(plain(
        StatusCode::BAD_GATEWAY,
        &format!("no endpoint answered ({last})"),
    ))
}

/// Serves the ingress on `addr` until `stop`, routing from `cat`.
pub(crate) async fn run(
    cat: Arc<catalog::Shared>,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the ingress on {addr}"))?;
    tracing::info!(%addr, "ingress listening");
    let table = Arc::new(RwLock::new(Arc::new(Table::build(&cat.read()))));
    {
        let (table, cat, mut stop) = (table.clone(), cat.clone(), stop.clone());
        let mut changed = cat.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
                let t = Arc::new(Table::build(&cat.read()));
                *table.write().unwrap_or_else(|e| e.into_inner()) = t;
            }
        });
    }
    let upstreams = Arc::new(Upstreams::default());
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = stop.changed() => return Ok(()),
        };
        let _ = conn.set_nodelay(true);
        let (table, upstreams) = (table.clone(), upstreams.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle(table.clone(), upstreams.clone(), peer, req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        for (name, ip) in [("web", "10.0.0.1"), ("api", "10.0.0.2"), ("empty", "")] {
            c.put_service(&json!({"metadata": {"namespace": "d", "name": name},
                "spec": {"clusterIP": "10.43.0.9", "ports": [{"name": "http", "port": 80}]}}));
            if !ip.is_empty() {
                c.put_endpoints(&json!({"metadata": {"namespace": "d", "name": name},
                    "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": 8080}]}]}));
            }
        }
        let backend = |s: &str| json!({"service": {"name": s, "port": {"number": 80}}});
        c.put_ingress(&json!({"metadata": {"namespace": "d", "name": "i"}, "spec": {"rules": [
            {"host": "shop.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("web")},
                {"path": "/api", "pathType": "Prefix", "backend": backend("api")},
                {"path": "/down", "pathType": "Exact", "backend": backend("empty")}]}},
            {"host": "*.wild.test", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend("api")}]}},
        ]}}));
        c.vhosts.insert(
            ("d".into(), "p".into()),
            catalog::VirtualHostPod {
                hosts: vec!["legacy.test".into()],
                addr: "10.0.0.7:3000".parse().unwrap(),
            },
        );
        c
    }

    fn to(t: &Table, host: &str, path: &str) -> Option<Vec<SocketAddr>> {
        match t.pick(host, path) {
            Pick::Go(p) => Some(p.addrs.clone()),
            Pick::NoRoute => None,
        }
    }

    #[test]
    fn hosts_and_paths_pick_routes() {
        let t = Table::build(&catalog());
        let a = |s: &str| vec![s.parse::<SocketAddr>().unwrap()];
        assert_eq!(to(&t, "shop.test", "/"), Some(a("10.0.0.1:8080")));
        assert_eq!(to(&t, "shop.test", "/api/v1"), Some(a("10.0.0.2:8080")));
        assert_eq!(to(&t, "shop.test", "/api"), Some(a("10.0.0.2:8080")));
        assert_eq!(to(&t, "shop.test", "/apix"), Some(a("10.0.0.1:8080")));
        assert_eq!(to(&t, "shop.test", "/down"), Some(vec![]));
        assert_eq!(to(&t, "x.wild.test", "/"), Some(a("10.0.0.2:8080")));
        assert_eq!(to(&t, "x.y.wild.test", "/"), None);
        assert_eq!(to(&t, "legacy.test", "/any"), Some(a("10.0.0.7:3000")));
        assert_eq!(to(&t, "nope.test", "/"), None);
    }

    #[test]
    fn forwarding_headers_name_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("s"));
        forward_headers(&mut h, "10.9.8.7".parse().unwrap(), "shop.test");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.9.8.7");
        assert_eq!(h["forwarded"], "for=10.9.8.7;host=\"shop.test\";proto=http");
        assert!(h.get("x-secret").is_none() && h.get("connection").is_none());
    }
}

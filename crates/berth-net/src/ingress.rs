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
//! - HTTP/1.1 is spoken here ([`crate::h1`]): each client connection is one task that reads a
//!   request, passes it to a kept-alive connection to an endpoint and passes the response back,
//!   the small ones in one write each way. Keep-alive and pipelining towards clients, chunked
//!   and streamed bodies both ways, `Expect: 100-continue` (the endpoint's 100 passes on),
//!   and upgrades (WebSocket: after the endpoint's 101, bytes both ways).
//! - A request goes to the next endpoint when it could not be sent; a kept-alive connection
//!   the endpoint had closed is dropped, with its idle siblings, and the request is sent
//!   again over a new one; a request sent to a new connection that closed without an answer
//!   is sent again only if it is idempotent. A request whose body is still streaming in takes
//!   a new connection (it could not be sent again). 504 when no response head comes in 60 s.
//! - An endpoint connection goes back to the idle ones only when its response's framing was
//!   certain and nothing followed it; one taken from them again must still have nothing to
//!   read (bytes there would be an answer to no request of ours, which the next client would
//!   get), or it is dropped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::catalog::{self, Catalog, IngressBackend};
use crate::h1;

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

    /// Every endpoint of every route.
    fn addrs(&self) -> HashSet<SocketAddr> {
        self.routes
            .iter()
            .map(|r| &r.pool)
            .chain(&self.default)
            .flat_map(|p| p.addrs.iter().copied())
            .collect()
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

/// How long an endpoint may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per endpoint.
const IDLE_PER_ENDPOINT: usize = 256;

/// A connection to an endpoint, with what was read from it and not used yet.
struct Upstream {
    io: TcpStream,
    buf: h1::Buf,
}

/// Kept-alive connections to endpoints, by address; the last one back is the first out.
#[derive(Default)]
struct Upstreams {
    idle: Mutex<HashMap<SocketAddr, Vec<Upstream>>>,
}

impl Upstreams {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Upstream>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept-alive connection to `addr` (and true), or a new one (always, when `fresh`).
    async fn get(&self, addr: SocketAddr, fresh: bool) -> Result<(Upstream, bool), String> {
        while !fresh && let Some(u) = self.idle().get_mut(&addr).and_then(Vec::pop) {
            if quiet(&u.io) {
                return Ok((u, true));
            }
        }
        let io = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{addr}: no connection in {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = io.set_nodelay(true);
        let buf = h1::Buf::new();
        Ok((Upstream { io, buf }, false))
    }

    fn put(&self, addr: SocketAddr, u: Upstream) {
        if !u.buf.is_empty() || !quiet(&u.io) {
            return;
        }
        let mut idle = self.idle();
        let v = idle.entry(addr).or_default();
        if v.len() < IDLE_PER_ENDPOINT {
            v.push(u);
        }
    }

    /// Drops the idle connections to `addr`: one of them was found closed, so the endpoint
    /// has likely closed them all (it restarted, or its keep-alive timeout passed).
    fn forget(&self, addr: SocketAddr) {
        self.idle().remove(&addr);
    }

    /// Drops the idle connections to endpoints that no route has any more.
    fn keep_only(&self, addrs: &HashSet<SocketAddr>) {
        self.idle().retain(|a, _| addrs.contains(a));
    }
}

/// Whether an idle connection to an endpoint is as it was left: open, with nothing waiting to
/// be read. Bytes that came after a complete response answer no request of ours (the endpoint
/// took a request's framing otherwise than we did), and would be taken for the answer to the
/// next client's request, so such a connection is dropped, never reused.
fn quiet(io: &TcpStream) -> bool {
    // One non-blocking peek on the socket itself: no wait, nothing taken from it.
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    match rustix::net::recv(io, &mut [0u8; 1], flags) {
        Err(e) => e == rustix::io::Errno::AGAIN,
        Ok((0, _)) => false,
        Ok(_) => {
            let peer = io.peer_addr().ok();
            tracing::warn!(
                endpoint = ?peer,
                "an endpoint sent bytes after its response that no request asked for; its connection is dropped"
            );
            false
        }
    }
}

/// What became of one request.
enum Outcome {
    /// Answered; the client's connection may carry another request.
    Answered { keep_alive: bool },
    /// Not answered: what to answer instead.
    Failed(u16, String),
    /// The client's connection is done with (it went, the answer broke off after it began, or
    /// an upgraded connection ended).
    Closed,
}

/// Why no response head came.
enum HeadError {
    /// The connection ended (or failed) before a byte of a final response arrived.
    Ended(String),
    TimedOut,
    Malformed(&'static str),
    /// The client went while interim responses were passed on.
    ClientGone,
}

/// Reads the endpoint's final response head into `out` (rewritten for the client); interim
/// (1xx) responses are passed on to the client as they come.
async fn response_head<R, W>(
    from: &mut R,
    buf: &mut h1::Buf,
    client: &mut W,
    req: &h1::RequestHead,
    out: &mut Vec<u8>,
    idle: Duration,
) -> Result<h1::ResponseHead, HeadError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        out.clear();
        match h1::parse_response(buf.bytes(), req.head_method, !req.keep_alive, out) {
            Ok(Some(r)) if r.status == 101 && !req.upgrade => {
                return Err(HeadError::Malformed(
                    "a switch of protocols nobody asked for",
                ));
            }
            Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                buf.consume(r.len);
                // HTTP/1.0 clients do not expect interim responses.
                if !req.http10 {
                    let w = tokio::time::timeout(idle, client.write_all(out)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        return Err(HeadError::ClientGone);
                    }
                }
            }
            Ok(Some(r)) => return Ok(r),
            Ok(None) => match tokio::time::timeout(idle, buf.fill(from)).await {
                Err(_) => return Err(HeadError::TimedOut),
                Ok(Ok(0)) => return Err(HeadError::Ended("closed without answering".into())),
                Ok(Err(e)) => return Err(HeadError::Ended(e.to_string())),
                Ok(Ok(_)) => {}
            },
            Err(e) => return Err(HeadError::Malformed(e)),
        }
    }
}

/// Sends one request (`head`, then its body from `cbuf` and the client) to an endpoint of
/// `pool` and its response back. The request goes to the next endpoint when it could not be
/// sent, or when a kept-alive connection turns out closed; once sent to a new connection, only
/// idempotent requests are sent again. Any read or write of either message may wait `idle`
/// (`--idle-timeout`) for progress, as nginx's `proxy_read_timeout`.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    client: &mut TcpStream,
    cbuf: &mut h1::Buf,
    req: &h1::RequestHead,
    head: &mut Vec<u8>,
    rhead: &mut Vec<u8>,
    pool: &Pool,
    upstreams: &Upstreams,
    idle: Duration,
) -> Outcome {
    // What of the body is here already goes in the write of the head.
    let mut body = h1::Body::new(req.framing);
    let n = match body.take(cbuf.bytes()) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(400, e.to_string()),
    };
    head.extend_from_slice(&cbuf.bytes()[..n]);
    cbuf.consume(n);
    let whole = body.done();
    let mut last = String::from("no endpoint");
    let mut tries = pool.order();
    let mut again = None;
    while let Some(addr) = again.take().or_else(|| tries.next()) {
        // A body that is still coming cannot be sent again, so it goes over a new
        // connection, never one the endpoint may have closed meanwhile.
        let (mut up, reused) = match upstreams.get(addr, !whole).await {
            Ok(u) => u,
            Err(e) => {
                last = e;
                continue;
            }
        };
        if !matches!(
            tokio::time::timeout(idle, up.io.write_all(head)).await,
            Ok(Ok(()))
        ) {
            last = format!("{addr}: the request could not be sent");
            if reused {
                upstreams.forget(addr);
                again = Some(addr);
            }
            continue;
        }
        let (resp, sent) = {
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = up.io.split();
            let recv = response_head(&mut ur, &mut up.buf, &mut cw, req, rhead, idle);
            tokio::pin!(recv);
            // The rest of the body goes while the endpoint may answer already (it may refuse
            // the request early, or ask for the body with 100 Continue).
            if whole {
                ((&mut recv).await, true)
            } else {
                let mut none = Vec::new();
                let send = h1::relay(&mut body, cbuf, &mut cr, &mut uw, &mut none, idle);
                tokio::select! {
                    biased;
                    r = &mut recv => (r, false),
                    s = send => match s {
                        Ok(()) => ((&mut recv).await, true),
                        Err(h1::RelayError::Source(e)) => {
                            tracing::debug!(error = %e, "a request body broke off");
                            return Outcome::Closed;
                        }
                        Err(h1::RelayError::Sink(e)) => {
                            return Outcome::Failed(502, format!("{addr}: sending the body: {e}"));
                        }
                    },
                }
            }
        };
        let resp = match resp {
            Ok(r) => r,
            Err(HeadError::Ended(e)) => {
                last = format!("{addr}: {e}");
                if whole && up.buf.is_empty() && (reused || req.idempotent) {
                    if reused {
                        upstreams.forget(addr);
                        again = Some(addr);
                    }
                    continue;
                }
                return Outcome::Failed(502, last);
            }
            Err(HeadError::TimedOut) => {
                return Outcome::Failed(504, format!("{addr}: no answer in {idle:?}"));
            }
            Err(HeadError::Malformed(e)) => return Outcome::Failed(502, format!("{addr}: {e}")),
            Err(HeadError::ClientGone) => return Outcome::Closed,
        };
        up.buf.consume(resp.len);
        if resp.status == 101 {
            // Upgraded: bytes both ways until either side ends.
            rhead.extend_from_slice(up.buf.bytes());
            let cleft = cbuf.bytes().to_vec();
            if client.write_all(rhead).await.is_ok() && up.io.write_all(&cleft).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(client, &mut up.io).await;
            }
            return Outcome::Closed;
        }
        let mut rbody = h1::Body::new(resp.framing);
        if let Err(e) = h1::relay(&mut rbody, &mut up.buf, &mut up.io, client, rhead, idle).await {
            tracing::debug!(error = ?e, endpoint = %addr, "a response broke off");
            return Outcome::Closed;
        }
        // An HTTP/1.0 request asked the endpoint to close after answering.
        if resp.reusable && sent && !req.http10 {
            upstreams.put(addr, up);
        }
        return Outcome::Answered {
            keep_alive: req.keep_alive && sent && resp.framing != h1::Framing::Close,
        };
    }
    Outcome::Failed(502, format!("no endpoint answered ({last})"))
}

/// Serves one client connection, request after request. A request head must come whole
/// within the head timeout of its first byte (408 after it), and a connection between
/// requests is closed after the idle timeout.
async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    table: Arc<RwLock<Arc<Table>>>,
    upstreams: Arc<Upstreams>,
    limits: berth_tls::ConnLimits,
) {
    let mut cbuf = h1::Buf::new();
    let (mut head, mut rhead) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    // When the head being read must be whole: set at its first byte.
    let mut head_deadline = None;
    loop {
        head.clear();
        let req = match h1::parse_request(cbuf.bytes(), peer.ip(), &mut head) {
            Ok(Some(r)) => {
                head_deadline = None;
                r
            }
            Ok(None) => {
                let wait = if cbuf.is_empty() {
                    limits.idle_timeout
                } else {
                    head_deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + limits.head_timeout)
                        .saturating_duration_since(tokio::time::Instant::now())
                };
                match tokio::time::timeout(wait, cbuf.fill(&mut client)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    Err(_) if !cbuf.is_empty() => {
                        let why = format!(
                            "the request head did not come whole within {:?}",
                            limits.head_timeout
                        );
                        let _ = tokio::time::timeout(
                            limits.idle_timeout,
                            client.write_all(&h1::plain(408, &why, true)),
                        )
                        .await;
                        return;
                    }
                    _ => return,
                }
            }
            Err(refused) => {
                let _ = client
                    .write_all(&h1::plain(refused.status, refused.why, true))
                    .await;
                return;
            }
        };
        cbuf.consume(req.len);
        let t = table.read().unwrap_or_else(|e| e.into_inner()).clone();
        let picked = {
            // The path, borrowed from the head only while the route is picked.
            let path = String::from_utf8_lossy(&head[req.path.clone()]);
            match t.pick(&req.host, &path) {
                Pick::NoRoute => Err((404, format!("no route for host {:?}", req.host))),
                Pick::Go(pool) if pool.addrs.is_empty() => {
                    Err((503, format!("no ready endpoint for {}{path}", req.host)))
                }
                Pick::Go(pool) => Ok(pool),
            }
        };
        let failed = match picked {
            Err((status, text)) => Outcome::Failed(status, text),
            Ok(pool) => {
                exchange(
                    &mut client,
                    &mut cbuf,
                    &req,
                    &mut head,
                    &mut rhead,
                    &pool,
                    &upstreams,
                    limits.idle_timeout,
                )
                .await
            }
        };
        match failed {
            Outcome::Answered { keep_alive: true } => {}
            Outcome::Answered { keep_alive: false } | Outcome::Closed => return,
            Outcome::Failed(status, text) => {
                // A body not read yet would be taken for the next request.
                let close = !req.keep_alive || req.framing != h1::Framing::Empty;
                let w = client.write_all(&h1::plain(status, &text, close)).await;
                if close || w.is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves the ingress on `addr` until `stop`, routing from `cat`.
pub async fn run(
    cat: Arc<catalog::Shared>,
    addr: SocketAddr,
    limits: berth_tls::ConnLimits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the ingress on {addr}"))?;
    let listener = berth_tls::limits::Listener::new(
        listener,
        "ingress",
        limits,
        berth_tls::limits::Refusal::Http,
    );
    tracing::info!(%addr, "ingress listening");
    let table = Arc::new(RwLock::new(Arc::new(Table::build(&cat.read()))));
    let upstreams = Arc::new(Upstreams::default());
    {
        let (table, upstreams, cat, mut stop) =
            (table.clone(), upstreams.clone(), cat.clone(), stop.clone());
        let mut changed = cat.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
                let t = Arc::new(Table::build(&cat.read()));
                upstreams.keep_only(&t.addrs());
                *table.write().unwrap_or_else(|e| e.into_inner()) = t;
            }
        });
    }
    loop {
        let (conn, peer, permit) = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return Ok(()),
        };
        let _ = conn.set_nodelay(true);
        let (table, upstreams) = (table.clone(), upstreams.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve(conn, peer, table, upstreams, limits).await;
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
}

#[cfg(test)]
mod smuggling_tests;

#[cfg(test)]
mod limits_tests;

/// The ingress's HTTP/1.1 on real sockets: a client of raw bytes, the ingress's serving loop,
/// and a backend of raw bytes that answers by path.
#[cfg(test)]
mod wire_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Answers by path: `/chunked`, `/close` (body until the end of the connection), `/bye`
    /// (Connection: close), `/drop` (closes its side after answering, as a keep-alive timeout
    /// would), `/ws` (101, then echoes); otherwise a Content-Length body saying what it saw.
    /// Bodies are read as framed; `Expect: 100-continue` gets 100 Continue first.
    async fn backend(listener: TcpListener, accepts: Arc<AtomicUsize>) {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            accepts.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = h1::Buf::new();
                loop {
                    let mut scratch = Vec::new();
                    let req = loop {
                        match h1::parse_request(buf.bytes(), [127, 0, 0, 1].into(), &mut scratch) {
                            Ok(Some(r)) => break r,
                            Ok(None) if buf.fill(&mut s).await.unwrap_or(0) > 0 => {}
                            _ => return,
                        }
                    };
                    let head = String::from_utf8_lossy(&buf.bytes()[..req.len]).to_lowercase();
                    let path = String::from_utf8_lossy(&scratch[req.path.clone()]).into_owned();
                    buf.consume(req.len);
                    if head.contains("expect: 100-continue") {
                        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
                    }
                    let mut body = h1::Body::new(req.framing);
                    let mut seen = 0;
                    while !body.done() {
                        let n = body.take(buf.bytes()).unwrap();
                        seen += n;
                        buf.consume(n);
                        if !body.done() && buf.fill(&mut s).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    let xff = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    let said = format!("path={path} body={seen} xff={xff}");
                    let answer = match path.as_str() {
                        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_string(),
                        "/close" => "HTTP/1.1 200 OK\r\n\r\nuntil the end".to_string(),
                        "/bye" => "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye".to_string(),
                        "/ws" => "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n".to_string(),
                        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{said}", said.len()),
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    match path.as_str() {
                        "/close" | "/bye" | "/drop" => return,
                        "/ws" => {
                            let (mut r, mut w) = s.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    }

    struct Setup {
        ingress: SocketAddr,
        accepts: Arc<AtomicUsize>,
    }

    async fn setup() -> Setup {
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = b.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        tokio::spawn(backend(b, accepts.clone()));
        let route = |host: &str, addrs: Vec<SocketAddr>| Route {
            host: HostMatch::of(Some(host)),
            path: "/".into(),
            exact: false,
            pool: Arc::new(Pool {
                addrs,
                next: AtomicUsize::new(0),
            }),
        };
        let table = Table {
            routes: vec![
                route("t.test", vec![backend_addr]),
                route("down.test", vec![]),
            ],
            default: None,
        };
        let table = Arc::new(RwLock::new(Arc::new(table)));
        let upstreams = Arc::new(Upstreams::default());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingress = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (c, peer) = l.accept().await.unwrap();
                tokio::spawn(serve(
                    c,
                    peer,
                    table.clone(),
                    upstreams.clone(),
                    berth_tls::ConnLimits::default(),
                ));
            }
        });
        Setup { ingress, accepts }
    }

    /// Reads one response: status, head, body (as framed; chunked bodies raw).
    async fn response(
        s: &mut TcpStream,
        buf: &mut h1::Buf,
        head_method: bool,
    ) -> (u16, String, String) {
        let mut out = Vec::new();
        let r = loop {
            out.clear();
            match h1::parse_response(buf.bytes(), head_method, false, &mut out).unwrap() {
                Some(r) => break r,
                None => assert!(buf.fill(s).await.unwrap() > 0, "the ingress closed early"),
            }
        };
        let head = String::from_utf8_lossy(&buf.bytes()[..r.len]).into_owned();
        buf.consume(r.len);
        let mut body = h1::Body::new(r.framing);
        let mut got = Vec::new();
        loop {
            let n = body.take(buf.bytes()).unwrap();
            got.extend_from_slice(&buf.bytes()[..n]);
            buf.consume(n);
            if body.done() || buf.fill(s).await.unwrap() == 0 {
                break;
            }
        }
        (r.status, head, String::from_utf8_lossy(&got).into_owned())
    }

    async fn connect(s: &Setup) -> (TcpStream, h1::Buf) {
        (TcpStream::connect(s.ingress).await.unwrap(), h1::Buf::new())
    }

    #[tokio::test]
    async fn keep_alive_pipelining_bodies_and_framings() {
        let s = setup().await;
        let (mut c, mut buf) = connect(&s).await;
        // Two requests in one write; then a Content-Length body and a chunked one.
        c.write_all(b"GET /a HTTP/1.1\r\nHost: t.test\r\n\r\nGET /b HTTP/1.1\r\nHost: T.Test.\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n").await.unwrap();
        let (code, _, body) = response(&mut c, &mut buf, false).await;
        assert_eq!((code, body.as_str()), (200, "path=/a body=0 xff=127.0.0.1"));
        let (_, _, body) = response(&mut c, &mut buf, false).await;
        assert_eq!(body, "path=/b body=0 xff=1.2.3.4, 127.0.0.1");
        c.write_all(b"POST /p HTTP/1.1\r\nHost: t.test\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert_eq!(
            response(&mut c, &mut buf, false).await.2,
            "path=/p body=5 xff=127.0.0.1"
        );
        // A chunked body sent in pieces, the second after the head has gone.
        c.write_all(
            b"POST /q HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab",
        )
        .await
        .unwrap();
        c.write_all(b"cd\r\n0\r\n\r\n").await.unwrap();
        assert_eq!(
            response(&mut c, &mut buf, false).await.2,
            "path=/q body=14 xff=127.0.0.1"
        );
        // A chunked response passes as it is; HEAD gets no body.
        c.write_all(b"GET /chunked HTTP/1.1\r\nHost: t.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            response(&mut c, &mut buf, false).await.2,
            "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        );
        c.write_all(b"HEAD /h HTTP/1.1\r\nHost: t.test\r\n\r\n")
            .await
            .unwrap();
        let (code, head, body) = response(&mut c, &mut buf, true).await;
        assert_eq!((code, body.as_str()), (200, ""), "{head}");
        // All of it over kept-alive connections to the backend: one, and a new one for the
        // body that was still coming (a request that could not be sent again).
        assert_eq!(s.accepts.load(Ordering::SeqCst), 2);
        // A body that ends with the connection: the client is told, and its connection ends.
        c.write_all(b"GET /close HTTP/1.1\r\nHost: t.test\r\n\r\n")
            .await
            .unwrap();
        let (_, head, body) = response(&mut c, &mut buf, false).await;
        assert!(head.contains("Connection: close"), "{head}");
        assert_eq!(body, "until the end");
        assert_eq!(c.read(&mut [0; 16]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn closed_endpoint_connections_are_not_reused_and_requests_go_again() {
        let s = setup().await;
        let (mut c, mut buf) = connect(&s).await;
        // The backend says it closes, or just closes after answering: the next request
        // still gets its answer, over a new connection.
        for path in ["/bye", "/drop", "/after"] {
            c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t.test\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let (code, head, _) = response(&mut c, &mut buf, false).await;
            assert_eq!(code, 200, "{path}: {head}");
            assert!(
                !head.to_lowercase().contains("connection: close"),
                "{path}: {head}"
            );
        }
        assert!(s.accepts.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn expect_continue_and_upgrades() {
        let s = setup().await;
        let (mut c, mut buf) = connect(&s).await;
        c.write_all(b"PUT /up HTTP/1.1\r\nHost: t.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
        let (code, _, _) = response(&mut c, &mut buf, false).await;
        assert_eq!(code, 100, "the backend's 100 Continue reaches the client");
        c.write_all(b"abc").await.unwrap();
        assert_eq!(
            response(&mut c, &mut buf, false).await.2,
            "path=/up body=3 xff=127.0.0.1"
        );
        // An upgrade: 101, then bytes both ways.
        c.write_all(
            b"GET /ws HTTP/1.1\r\nHost: t.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let (code, head, _) = response(&mut c, &mut buf, false).await;
        assert_eq!(code, 101, "{head}");
        assert!(head.contains("Upgrade: echo"), "{head}");
        c.write_all(b"ping").await.unwrap();
        let mut got = buf.bytes().to_vec();
        while got.len() < 4 {
            let mut b = [0; 16];
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        assert_eq!(got, b"ping");
    }

    #[tokio::test]
    async fn http10_clients_and_clients_that_close() {
        let s = setup().await;
        // HTTP/1.0: answered, then closed; the endpoint was asked to close, so its
        // connection is not kept.
        let (mut c, mut buf) = connect(&s).await;
        c.write_all(b"GET /old HTTP/1.0\r\nHost: t.test\r\n\r\n")
            .await
            .unwrap();
        let (code, head, body) = response(&mut c, &mut buf, false).await;
        assert_eq!(
            (code, body.as_str()),
            (200, "path=/old body=0 xff=127.0.0.1")
        );
        assert!(head.contains("Connection: close"), "{head}");
        assert_eq!(c.read(&mut [0; 16]).await.unwrap(), 0);
        // HTTP/1.1 with Connection: close still gets 100 Continue, then its answer, then
        // the end; the endpoint's connection is kept (the close was the client's hop).
        let (mut c, mut buf) = connect(&s).await;
        c.write_all(b"PUT /x HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").await.unwrap();
        assert_eq!(response(&mut c, &mut buf, false).await.0, 100);
        c.write_all(b"ok").await.unwrap();
        let (code, head, _) = response(&mut c, &mut buf, false).await;
        assert_eq!(code, 200);
        assert!(head.contains("Connection: close"), "{head}");
        assert_eq!(c.read(&mut [0; 16]).await.unwrap(), 0);
        let (mut c, mut buf) = connect(&s).await;
        c.write_all(b"GET /again HTTP/1.1\r\nHost: t.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c, &mut buf, false).await.0, 200);
        assert_eq!(
            s.accepts.load(Ordering::SeqCst),
            2,
            "one kept connection after the 1.0 one"
        );
    }

    #[tokio::test]
    async fn our_own_answers() {
        let s = setup().await;
        for (req, code, close) in [
            ("GET / HTTP/1.1\r\nHost: nope.test\r\n\r\n", 404, false),
            ("GET / HTTP/1.1\r\nHost: down.test\r\n\r\n", 503, false),
            (
                "POST / HTTP/1.1\r\nHost: t.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
                true,
            ),
            ("GET / HTTP/1.1\r\nHost: t.test\r\n\r\n", 200, false),
            ("\x01\x02garbage\r\n\r\n", 400, true),
        ] {
            let (mut c, mut buf) = connect(&s).await;
            c.write_all(req.as_bytes()).await.unwrap();
            let (got, head, _) = response(&mut c, &mut buf, false).await;
            assert_eq!(got, code, "{req:?}: {head}");
            assert_eq!(head.contains("Connection: close"), close, "{req:?}: {head}");
        }
    }
}

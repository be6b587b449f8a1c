//! The service proxy: every node serves every Service's cluster IP itself, and balances each
//! connection (TCP) or flow (UDP) over the Service's ready endpoints.
//!
//! - Cluster IPs are /32 addresses on the node's loopback (labelled as this agent's, so a
//!   restart finds and clears its own and nobody else's). A pod reaches them by plain routing
//!   through its gateway, and the proxy sees the pod's address as the peer: no netfilter.
//! - Each Service port is one listening socket on `CLUSTER-IP:PORT`, and with a node port one
//!   more on the node's address (`NODE-IP:NODE-PORT`).
//! - Endpoints are taken in turn; a connection that cannot reach one tries the next. With
//!   `sessionAffinity: ClientIP`, a client keeps its endpoint while it stays ready and the
//!   affinity timeout has not passed since its last connection.
//! - A port with no ready endpoint resets connections at once.
//! - An endpoint that stops being ready gets no new connections; the ones it has are drained:
//!   they go on until they end or the drain timeout passes, then they are closed.
//! - Headless Services (no cluster IP) and SCTP ports are not proxied.
//! - Once a TCP connection has its endpoint, its bytes are relayed on io_uring threads (see
//!   `relay`), or, with `--proxy-relay epoll` or where io_uring cannot be used, by a copy
//!   task per connection on the agent's runtime.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use berth_netlink::{Netlink, NetlinkError};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::{self, Key};
use crate::relay::Relays;

/// How long a connection attempt to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a UDP flow lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long connections to an endpoint that went away may go on.
    pub drain: Duration,
    /// The label of this agent's loopback addresses (`lo:` and at most 11 more bytes).
    pub label: String,
    /// Where node ports listen: the node's address (all addresses would take the port from
    /// every cluster IP).
    pub node_ip: Ipv4Addr,
    /// How established TCP connections are relayed.
    pub relay: Relay,
}

/// How the proxy moves the bytes of established TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Relay {
    /// On io_uring threads, one per two CPUs; with epoll where io_uring cannot be used.
    #[default]
    IoUring,
    /// A copy task per connection on the agent's runtime (epoll).
    Epoll,
}

impl Relay {
    /// The relay threads this asks for, started on first use (it may block meanwhile);
    /// `None` for the copy task, asked for or because io_uring cannot be used.
    fn threads(self) -> Option<&'static Relays> {
        match self {
            Relay::IoUring => Relays::get(),
            Relay::Epoll => None,
        }
    }
}

impl std::str::FromStr for Relay {
    type Err = String;
    fn from_str(s: &str) -> Result<Relay, String> {
        match s {
            "io-uring" => Ok(Relay::IoUring),
            "epoll" => Ok(Relay::Epoll),
            _ => Err(format!("{s:?} is not a relay: use io-uring or epoll")),
        }
    }
}

/// A Service port as proxied: (service, port name, protocol).
type PortKey = (Key, String, String);

/// One Service port's state, shared by its listeners and connections.
#[derive(Debug)]
struct Port {
    backends: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
    affinity: RwLock<Option<Duration>>,
    /// ClientIP affinity: where each client went last, and when.
    sticky: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
    /// A signal per endpoint with open connections: true closes them.
    closers: Mutex<HashMap<SocketAddr, watch::Sender<bool>>>,
    drain: Duration,
    /// Where established connections are relayed; `None`: a copy task each.
    relays: Option<&'static Relays>,
}

impl Port {
    fn new(drain: Duration, relays: Option<&'static Relays>) -> Arc<Port> {
        Arc::new(Port {
            backends: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            affinity: RwLock::new(None),
            sticky: Mutex::new(HashMap::new()),
            closers: Mutex::new(HashMap::new()),
            drain,
            relays,
        })
    }

    fn backends(&self) -> Arc<Vec<SocketAddr>> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a new endpoint set; connections to the ones that left are closed after the drain
    /// timeout, unless they came back meanwhile.
    fn set(self: &Arc<Self>, backends: Vec<SocketAddr>, affinity: Option<Duration>) {
        *self.affinity.write().unwrap_or_else(|e| e.into_inner()) = affinity;
        let old = std::mem::replace(
            &mut *self.backends.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(backends.clone()),
        );
        for &gone in old.iter().filter(|b| !backends.contains(b)) {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(me.drain).await;
                if !me.backends().contains(&gone) {
                    let closer = me
                        .closers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&gone);
                    if let Some(c) = closer {
                        let _ = c.send(true);
                    }
                }
            });
        }
    }

    /// The endpoints to try for a client, in order.
    fn order(&self, client: IpAddr) -> Vec<SocketAddr> {
        let backends = self.backends();
        if backends.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        let mut order: Vec<SocketAddr> = backends[start..]
            .iter()
            .chain(&backends[..start])
            .copied()
            .collect();
        let affinity = *self.affinity.read().unwrap_or_else(|e| e.into_inner());
        if let Some(timeout) = affinity {
            let sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((b, at)) = sticky.get(&client)
                && at.elapsed() < timeout
                && let Some(i) = order.iter().position(|x| x == b)
            {
                let b = order.remove(i);
                order.insert(0, b);
            }
        }
        order
    }

    /// Records where a client went (for affinity), and returns the endpoint's close signal.
    fn connected(&self, client: IpAddr, backend: SocketAddr) -> watch::Receiver<bool> {
        let affinity = *self.affinity.read().unwrap_or_else(|e| e.into_inner());
        if affinity.is_some() {
            let mut sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
            if sticky.len() > 65_536 {
                sticky.retain(|_, (_, at)| affinity.is_some_and(|t| at.elapsed() < t));
            }
            sticky.insert(client, (backend, Instant::now()));
        }
        self.closers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(backend)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }
}

async fn closed(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn serve_tcp(port: Arc<Port>, mut inbound: TcpStream, peer: SocketAddr) {
    for b in port.order(peer.ip()) {
        let Ok(Ok(mut out)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b)).await
        else {
            continue;
        };
        let close = port.connected(peer.ip(), b);
        let _ = inbound.set_nodelay(true);
        let _ = out.set_nodelay(true);
        if let Some(relays) = port.relays {
            match (inbound.into_std(), out.into_std()) {
                (Ok(a), Ok(b)) => {
                    let (tx, ended) = tokio::sync::oneshot::channel();
                    let spliced = relays.splice(a.into(), b.into(), move || {
                        let _ = tx.send(());
                    });
                    tokio::select! {
                        _ = ended => {}
                        _ = closed(close) => spliced.close(),
                    }
                }
                // Not registered with the runtime after all: nothing to relay.
                _ => tracing::debug!("a proxied connection could not leave the runtime"),
            }
            return;
        }
        tokio::select! {
            _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut out, 16 * 1024, 16 * 1024) => {}
            _ = closed(close) => {}
        }
        return;
    }
    // Nowhere to go: a reset, as a refused connection would be.
    let _ = inbound.set_zero_linger();
}

async fn accept_tcp(listener: TcpListener, port: Arc<Port>) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                tokio::spawn(serve_tcp(port.clone(), conn, peer));
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_udp(sock: UdpSocket, port: Arc<Port>) {
    let sock = Arc::new(sock);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let flow = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let flow = match flow {
            Some(f) => f,
            None => {
                let Some(b) = port.order(client.ip()).first().copied() else {
                    continue;
                };
                let Ok(up) = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
                    continue;
                };
                if up.connect(b).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, up.clone());
                let close = port.connected(client.ip(), b);
                let (up2, sock2, flows2) = (up.clone(), sock.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    let replies = async {
                        while let Ok(Ok(n)) =
                            tokio::time::timeout(UDP_IDLE, up2.recv(&mut buf)).await
                        {
                            let _ = sock2.send_to(&buf[..n], client).await;
                        }
                    };
                    tokio::select! {
                        _ = replies => {}
                        _ = closed(close) => {}
                    }
                    flows2
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&client);
                });
                up
            }
        };
        let _ = flow.send(&buf[..n]).await;
    }
}

/// Where a port listens: address and protocol (`tcp`, `udp`).
type Frontend = (SocketAddr, String);

fn listen(front: &Frontend, port: Arc<Port>) -> std::io::Result<JoinHandle<()>> {
    let (addr, proto) = front;
    if proto == "udp" {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(std)?;
        return Ok(tokio::spawn(serve_udp(sock, port)));
    }
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(*addr)?;
    let listener = sock.listen(1024)?;
    Ok(tokio::spawn(accept_tcp(listener, port)))
}

/// What runs now.
struct State {
    opts: Options,
    /// The relay threads established connections go to (`None`: a copy task each).
    relays: Option<&'static Relays>,
    ports: HashMap<PortKey, Arc<Port>>,
    listeners: HashMap<Frontend, (Arc<Port>, JoinHandle<()>)>,
    /// Frontends that could not listen (said once; tried again on the next change).
    failed: HashSet<Frontend>,
    vips: HashSet<Ipv4Addr>,
    lo: u32,
}

/// Adds and removes this agent's loopback addresses.
fn set_addresses(lo: u32, label: &str, add: &[Ipv4Addr], del: &[Ipv4Addr]) {
    let mut nl = match Netlink::new() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot change the service addresses");
            return;
        }
    };
    for ip in add {
        if let Err(e) = nl.add_labelled_address(lo, *ip, 32, Some(label)) {
            tracing::warn!(error = %e, "cannot serve a cluster IP");
        }
    }
    for ip in del {
        if let Err(e) = nl.del_address(lo, *ip, 32) {
            tracing::warn!(error = %e, "cannot remove a cluster IP");
        }
    }
}

/// The label of the cluster IPs a node agent over `data_dir` puts on the loopback
/// ([`Options::label`]): one per data directory, so agents sharing a network namespace
/// (tests) keep to their own.
pub fn service_address_label(data_dir: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    format!("lo:b{h:08x}")
}

/// Removes the loopback addresses labelled `label`: what an earlier run left (an agent
/// killed before it could clean up), or, for a test, what its agents served.
pub fn remove_labelled_addresses(label: &str) -> Result<(), NetlinkError> {
    let mut nl = Netlink::new()?;
    let Some(lo) = nl.link_index("lo")? else {
        return Ok(());
    };
    for (ip, prefix, l) in nl.addresses(lo)? {
        if l == label {
            nl.del_address(lo, ip, prefix)?;
        }
    }
    Ok(())
}

impl State {
    async fn sync(&mut self, cat: &catalog::Shared) {
        let mut ports: HashMap<PortKey, (Vec<SocketAddr>, Option<Duration>)> = HashMap::new();
        let mut fronts: HashMap<Frontend, PortKey> = HashMap::new();
        let mut vips: HashSet<Ipv4Addr> = HashSet::new();
        {
            let c = cat.read();
            for (k, svc) in &c.services {
                let Some(vip) = svc.cluster_ip else { continue };
                for p in svc
                    .ports
                    .iter()
                    .filter(|p| p.protocol == "tcp" || p.protocol == "udp")
                {
                    let pk = (k.clone(), p.name.clone(), p.protocol.clone());
                    ports.insert(pk.clone(), (c.backends(k, p), svc.affinity));
                    vips.insert(vip);
                    fronts.insert(
                        (SocketAddr::from((vip, p.port)), p.protocol.clone()),
                        pk.clone(),
                    );
                    if let Some(np) = p.node_port {
                        fronts.insert(
                            (
                                SocketAddr::from((self.opts.node_ip, np)),
                                p.protocol.clone(),
                            ),
                            pk,
                        );
                    }
                }
            }
        }
        for (pk, (backends, affinity)) in &ports {
            let drain = self.opts.drain;
            self.ports
                .entry(pk.clone())
                .or_insert_with(|| Port::new(drain, self.relays))
                .set(backends.clone(), *affinity);
        }
        // A port that went: its connections drain as from endpoints that went.
        self.ports.retain(|pk, port| {
            let keep = ports.contains_key(pk);
            if !keep {
                port.set(Vec::new(), None);
            }
            keep
        });
        let add: Vec<Ipv4Addr> = vips.difference(&self.vips).copied().collect();
        if !add.is_empty() {
            let (lo, label) = (self.lo, self.opts.label.clone());
            let _ = tokio::task::spawn_blocking(move || set_addresses(lo, &label, &add, &[])).await;
        }
        self.listeners.retain(|front, (port, task)| {
            let keep = fronts
                .get(front)
                .and_then(|pk| self.ports.get(pk))
                .is_some_and(|p| Arc::ptr_eq(p, port));
            if !keep {
                task.abort();
            }
            keep
        });
        self.failed.retain(|f| fronts.contains_key(f));
        for (front, pk) in &fronts {
            if self.listeners.contains_key(front) {
                continue;
            }
            let Some(port) = self.ports.get(pk) else {
                continue;
            };
            match listen(front, port.clone()) {
                Ok(task) => {
                    self.failed.remove(front);
                    self.listeners.insert(front.clone(), (port.clone(), task));
                }
                Err(e) => {
                    if self.failed.insert(front.clone()) {
                        tracing::warn!(error = %e, address = %front.0, protocol = %front.1, service = %format!("{}/{}", pk.0.0, pk.0.1), "cannot serve a service port");
                    }
                }
            }
        }
        let del: Vec<Ipv4Addr> = self.vips.difference(&vips).copied().collect();
        if !del.is_empty() {
            let (lo, label) = (self.lo, self.opts.label.clone());
            let _ = tokio::task::spawn_blocking(move || set_addresses(lo, &label, &[], &del)).await;
        }
        self.vips = vips;
    }
}

/// Serves the Services of `cat` until `stop`, then takes its addresses off the loopback.
pub async fn run(
    cat: Arc<catalog::Shared>,
    opts: Options,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let label = opts.label.clone();
    let lo = tokio::task::spawn_blocking(|| Netlink::new()?.link_index("lo"))
        .await?
        .context("cannot find the loopback link")?
        .context("this network namespace has no loopback link")?;
    // What an earlier run left: the sync adds back what is still wanted.
    {
        let label = label.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || remove_labelled_addresses(&label)).await?
        {
            tracing::warn!(error = %e, "cannot remove the service addresses an earlier run left");
        }
    }
    // Chosen (and started) once, so whether io_uring can be used is said when the agent starts.
    let relay = opts.relay;
    let relays = tokio::task::spawn_blocking(move || relay.threads()).await?;
    let mut state = State {
        opts,
        relays,
        ports: HashMap::new(),
        listeners: HashMap::new(),
        failed: HashSet::new(),
        vips: HashSet::new(),
        lo,
    };
    let mut changed = cat.subscribe();
    loop {
        changed.borrow_and_update();
        state.sync(&cat).await;
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    for (_, (_, task)) in state.listeners.drain() {
        task.abort();
    }
    let vips: Vec<Ipv4Addr> = state.vips.drain().collect();
    tokio::task::spawn_blocking(move || set_addresses(lo, &label, &[], &vips)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_affinity_and_draining() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let port = Port::new(Duration::from_millis(50), None);
        port.set(vec![a, b], None);
        let client: IpAddr = "10.1.0.1".parse().unwrap();
        let firsts: Vec<SocketAddr> = (0..4).map(|_| port.order(client)[0]).collect();
        assert_eq!(firsts, vec![a, b, a, b], "in turn");
        // Affinity: the client keeps the endpoint it had.
        port.set(vec![a, b], Some(Duration::from_secs(60)));
        let mut close = port.connected(client, b);
        for _ in 0..4 {
            assert_eq!(port.order(client)[0], b);
        }
        // b leaves: new connections go to a, b's are closed after the drain.
        port.set(vec![a], Some(Duration::from_secs(60)));
        assert_eq!(port.order(client), vec![a]);
        assert!(!*close.borrow());
        tokio::time::timeout(Duration::from_secs(2), close.wait_for(|c| *c))
            .await
            .expect("closed after the drain")
            .unwrap();
        // One that comes back within the drain keeps its connections.
        let keep = port.connected(client, a);
        port.set(vec![], None);
        port.set(vec![a], None);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!*keep.borrow());
        assert!(Port::new(Duration::ZERO, None).order(client).is_empty());
    }

    /// A port with one echoing endpoint: its listening address, and the port.
    async fn echo_port(relay: Relay) -> (SocketAddr, Arc<Port>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = backend.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = c.read(&mut buf).await {
                        if c.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let port = Port::new(Duration::from_secs(1), relay.threads());
        port.set(vec![backend_addr], None);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(accept_tcp(listener, port.clone()));
        (addr, port)
    }

    #[tokio::test]
    async fn both_relays_carry_connections_and_close_them_after_the_drain() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for relay in [Relay::IoUring, Relay::Epoll] {
            let (addr, port) = echo_port(relay).await;
            let mut c = TcpStream::connect(addr).await.unwrap();
            for msg in [&b"ping"[..], &[7u8; 3000][..]] {
                c.write_all(msg).await.unwrap();
                let mut got = vec![0u8; msg.len()];
                c.read_exact(&mut got).await.unwrap();
                assert_eq!(got, msg, "{relay:?}");
            }
            // The endpoint goes: the connection goes on through the drain, then ends.
            port.set(Vec::new(), None);
            c.write_all(b"still").await.unwrap();
            let mut got = [0u8; 5];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"still", "{relay:?}");
            let mut rest = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
                .await
                .unwrap_or_else(|_| panic!("{relay:?}: not closed after the drain"))
                .unwrap();
            assert_eq!(n, 0, "{relay:?}");
            // With no endpoint, a new connection is reset at once.
            let mut c = TcpStream::connect(addr).await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut got))
                .await
                .unwrap();
            assert!(matches!(r, Err(_) | Ok(0)), "{relay:?}: {r:?}");
        }
    }
}

//! What a peer may hold: every listener a peer can reach (the API, each agent's API, the
//! ingress, DNS over TCP) accepts through one [`Listener`], and its connections run under the
//! same timeouts, so no idle, trickling or flooding client can exhaust the process.
//!
//! - At most `max_conns` connections per listener and `max_per_client` per peer address; a
//!   connection over either is accepted and closed at once (after a 503 for plain HTTP
//!   listeners), so the refused peer learns it and the kernel's backlog does not fill.
//! - File descriptors: the last `fd_reserve` of the process's `RLIMIT_NOFILE` are kept for the
//!   store, the pod workers and outgoing connections; a connection accepted past that point is
//!   closed. The count of open descriptors is the accepted descriptor's number (the kernel
//!   hands out the lowest free one, so at least that many are open) or, every 100 ms and
//!   whenever that estimate reaches the ceiling, a count of `/proc/self/fd`.
//! - An accept that fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)
//!   is retried after 100 ms: the loop never spins and never ends.
//! - Timeouts ([`ConnLimits`]): a TLS handshake; a request head, from its first byte; an idle
//!   connection waiting for its next request; a request body (the API's whole body); and a
//!   write the peer does not take (a client that stops reading), each closing the connection.
//!   For hyper, [`Timed`] and [`HeadTimer`] make hyper's `header_read_timeout` both: hyper
//!   arms it when it starts waiting for a head, and it runs for the idle time until the first
//!   byte of that head arrives, then for the head time.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The limits of one listener and its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once on the listener.
    pub max_conns: usize,
    /// Connections open at once from one peer address.
    pub max_per_client: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a request head may take from its first byte (haproxy's `timeout
    /// http-request`); for DNS over TCP, a message from its first byte.
    pub head_timeout: Duration,
    /// How long a connection may wait for its next request (or first), and how long a write
    /// may wait for a peer that takes nothing.
    pub idle_timeout: Duration,
    /// How long the API waits for a whole request body.
    pub body_timeout: Duration,
    /// File descriptors kept free for everything but accepted connections.
    pub fd_reserve: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_conns: 8192,
            max_per_client: 512,
            handshake_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            fd_reserve: 256,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Full { max: usize },
    PerClient { ip: IpAddr, max: usize },
    Fds { open: u64, limit: u64, reserve: u64 },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { max } => write!(
                f,
                "this listener has as many connections open as it takes ({max}, --max-connections)"
            ),
            Refused::PerClient { ip, max } => write!(
                f,
                "{ip} has {max} connections open here, the most one address may have (--max-connections-per-client)"
            ),
            Refused::Fds {
                open,
                limit,
                reserve,
            } => write!(
                f,
                "the server has {open} of its {limit} file descriptors open; the last {reserve} are kept for its own work (--fd-reserve)"
            ),
        }
    }
}

/// What a refused peer is told before the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing (TLS, DNS): the connection just closes.
    Close,
    /// A plain HTTP/1.1 `503 Service Unavailable` saying why.
    Http,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Shared {
    name: &'static str,
    limits: ConnLimits,
    refusal: Refusal,
    counts: Mutex<Counts>,
    /// When a refusal was last logged (ms since the process's first use of this module).
    warned_ms: AtomicU64,
    /// Refusals since then.
    refused: AtomicU64,
}

/// A TCP listener that admits connections within its [`ConnLimits`].
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

/// A connection's place in its listener's counts, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

fn since_start() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Whether an accept failed for want of resources, which only time (connections closing)
/// can give back.
fn exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether an accept failed for that one connection only (it went away before it was taken).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Listener {
    /// `name` names the listener in logs ("api", "ingress", ...).
    pub fn new(tcp: TcpListener, name: &'static str, limits: ConnLimits, refusal: Refusal) -> Self {
        Listener {
            tcp,
            shared: Arc::new(Shared {
                name,
                limits,
                refusal,
                counts: Mutex::new(Counts::default()),
                warned_ms: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.shared.limits
    }

    /// The next connection within the limits; refused ones are closed here. Never fails: an
    /// accept error is waited out. Cancel-safe (nothing is held across an await).
    pub async fn accept(&self) -> (TcpStream, SocketAddr, Permit) {
        loop {
            let (tcp, peer) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(e) if exhausted(&e) => {
                    self.log_refusal(&format!("cannot accept: {e}; retrying in 100 ms"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) if transient(&e) => continue,
                Err(e) => {
                    tracing::debug!(listener = self.shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            match self.admit(peer.ip(), tcp.as_raw_fd()) {
                Ok(permit) => return (tcp, peer, permit),
                Err(why) => {
                    if self.shared.refusal == Refusal::Http {
                        // Best effort, never waiting: a fresh socket's buffer takes it.
                        let _ = tcp.try_write(&http_refusal(&why.to_string()));
                    }
                    drop(tcp);
                    self.log_refusal(&format!("refused a connection from {peer}: {why}"));
                }
            }
        }
    }

    fn admit(&self, ip: IpAddr, fd: i32) -> Result<Permit, Refused> {
        let l = &self.shared.limits;
        // Before the listener's lock: a count of /proc/self/fd does not hold up closing
        // connections.
        fd_headroom(fd, l.fd_reserve)?;
        let mut c = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= l.max_conns {
            return Err(Refused::Full { max: l.max_conns });
        }
        let mine = c.per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= l.max_per_client {
            return Err(Refused::PerClient {
                ip,
                max: l.max_per_client,
            });
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Permit {
            shared: self.shared.clone(),
            ip,
        })
    }

    /// Logs a refusal as a warning at most every 10 s per listener (with how many there were
    /// since), and each one at debug.
    fn log_refusal(&self, what: &str) {
        let s = &self.shared;
        let n = s.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = since_start().as_millis() as u64;
        let last = s.warned_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && s.warned_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            s.refused.store(0, Ordering::Relaxed);
            tracing::warn!(listener = s.name, refused_since_last = n, "{what}");
        } else {
            tracing::debug!(listener = s.name, "{what}");
        }
    }
}

/// A plain HTTP/1.1 503 that closes the connection.
pub fn http_refusal(why: &str) -> Vec<u8> {
    let body = format!("{why}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The process's soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, setrlimit};
    let (soft, hard) = nofile_limit()?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    Ok((soft, hard))
}

/// Descriptors open now (`/proc/self/fd`, less the one reading it); `None` when it cannot be
/// read, which near the limit means there are none to spare.
fn count_open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// The process-wide estimate of open descriptors: the last count, and accepts since.
struct FdGauge {
    counted_at: Option<Instant>,
    count: u64,
    accepted_since: u64,
}

static GAUGE: Mutex<FdGauge> = Mutex::new(FdGauge {
    counted_at: None,
    count: 0,
    accepted_since: 0,
});

/// Whether a connection that got descriptor `fd` leaves `reserve` descriptors free.
fn fd_headroom(fd: i32, reserve: u64) -> Result<(), Refused> {
    if reserve == 0 {
        return Ok(());
    }
    let Ok((limit, _)) = nofile_limit() else {
        return Ok(());
    };
    let ceiling = limit.saturating_sub(reserve);
    let over = |open: u64| Refused::Fds {
        open,
        limit,
        reserve,
    };
    // The kernel hands out the lowest free descriptor: all below this one are open.
    let lowest = fd.max(0) as u64 + 1;
    if lowest > ceiling {
        return Err(over(lowest));
    }
    let mut g = GAUGE.lock().unwrap_or_else(|e| e.into_inner());
    g.accepted_since += 1;
    let estimate = lowest.max(g.count + g.accepted_since);
    let age = g.counted_at.map(|t| t.elapsed());
    match age {
        Some(a) if estimate <= ceiling && a < Duration::from_millis(100) => return Ok(()),
        // Counted a moment ago: a flood at the ceiling is not met with a count per accept.
        Some(a) if estimate > ceiling && a < Duration::from_millis(10) => {
            return Err(over(estimate));
        }
        _ => {}
    }
    let open = count_open_fds().unwrap_or(limit);
    g.counted_at = Some(Instant::now());
    g.count = open;
    g.accepted_since = 0;
    if open > ceiling {
        return Err(over(open));
    }
    Ok(())
}

/// A connection whose writes give up when the peer takes nothing for `stall`, and whose reads
/// are counted (for [`HeadTimer`]).
#[derive(Debug)]
pub struct Timed<S> {
    inner: S,
    reads: Arc<AtomicU64>,
    stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, stall: Duration) -> Self {
        Timed {
            inner,
            reads: Arc::new(AtomicU64::new(0)),
            stall,
            stalled: None,
        }
    }

    /// The timer of the request heads read from this connection.
    pub fn head_timer(&self, limits: &ConnLimits) -> HeadTimer {
        HeadTimer {
            reads: self.reads.clone(),
            idle: limits.idle_timeout,
            head: limits.head_timeout,
        }
    }

    /// After a write that could not proceed: an error once it has not for `stall`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took nothing written for {stall:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => match self.poll_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.after_write(cx, r)
    }
}

/// hyper's timer for one connection. hyper's HTTP/1 server uses its timer only for
/// `header_read_timeout`, arming it (`sleep_until`) when it starts waiting for a request
/// head: this one then waits the idle time while nothing arrives, and the head time from the
/// first byte read after it was armed.
#[derive(Debug, Clone)]
pub struct HeadTimer {
    reads: Arc<AtomicU64>,
    idle: Duration,
    head: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        hyper_util::rt::TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            seen: self.reads.load(Ordering::Relaxed),
            reads: self.reads.clone(),
            started: false,
            head: self.head,
            timer: Box::pin(tokio::time::sleep(self.idle)),
        })
    }
}

struct HeadSleep {
    reads: Arc<AtomicU64>,
    /// Reads counted when it was armed.
    seen: u64,
    /// Whether the head has begun (its timer runs).
    started: bool,
    head: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this right after each read that left the head unfinished.
        if !self.started && self.reads.load(Ordering::Relaxed) != self.seen {
            self.started = true;
            let deadline = tokio::time::Instant::now() + self.head;
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// Reads into `buf` until `done` says a message is whole: waits up to `idle` for its first
/// byte, then up to `head` for the rest. `Ok(false)` when the peer closed before a first byte;
/// an error on a timeout (naming which), a read error, or a close mid-message.
pub async fn read_message<R, F>(
    from: &mut R,
    buf: &mut Vec<u8>,
    limits: &ConnLimits,
    mut done: F,
) -> io::Result<bool>
where
    R: AsyncRead + Unpin,
    F: FnMut(&[u8]) -> bool,
{
    use tokio::io::AsyncReadExt;
    let timed_out = |what: &str, d: Duration| {
        io::Error::new(io::ErrorKind::TimedOut, format!("no {what} in {d:?}"))
    };
    let mut deadline = None;
    while !done(buf) {
        let wait = match deadline {
            None if buf.is_empty() => limits.idle_timeout,
            None => {
                let d = tokio::time::Instant::now() + limits.head_timeout;
                deadline = Some(d);
                limits.head_timeout
            }
            Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
        };
        let n = match tokio::time::timeout(wait, from.read_buf(buf)).await {
            Ok(r) => r?,
            Err(_) if buf.is_empty() => return Err(timed_out("request", limits.idle_timeout)),
            Err(_) => return Err(timed_out("whole request", limits.head_timeout)),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed in the middle of a request",
            ));
        }
    }
    Ok(true)
}

//! The accept loop's limits attacked over real loopback sockets: a client trickling a request
//! head, an idle keep-alive connection, a TLS handshake never finished, a client that reads
//! nothing of a large response, and one address (or many) opening more connections than
//! allowed, while other clients are still served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use berth_tls::ConnLimits;
use berth_tls::limits::{Listener, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A server on a loopback port of its own, stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
}

async fn start(limits: ConnLimits, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let refusal = if tls.is_some() {
        Refusal::Close
    } else {
        Refusal::Http
    };
    let listener = Listener::new(tcp, "test", limits, refusal);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(berth_tls::serve(
        listener,
        router(),
        tls,
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(100),
    ));
    Server {
        addr,
        stop: Some(stop),
    }
}

fn limits() -> ConnLimits {
    ConnLimits {
        handshake_timeout: Duration::from_secs(10),
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        ..ConnLimits::default()
    }
}

/// A connection from `source` (an address of the loopback) to `to`.
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{source}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// One GET on `conn`, kept alive; the response's status and body.
async fn get_on<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    conn: &mut S,
    path: &str,
) -> (u16, String) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(conn).await.expect("a response")
}

/// Reads one response with a Content-Length (or up to the close).
async fn read_response<S: AsyncReadExt + Unpin>(conn: &mut S) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let len: Option<usize> = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            });
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return Some((status, body));
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            return Some((status, String::from_utf8_lossy(&buf[end + 4..]).to_string()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits (at most `within`) for the server to close `conn`, reading and dropping what comes;
/// how long it took.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 65536];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, conn.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_closed_after_the_head_timeout_while_others_are_served() {
    let server = start(
        ConnLimits {
            head_timeout: Duration::from_millis(800),
            ..limits()
        },
        None,
    )
    .await;
    let slow = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    let started = Instant::now();
    // One byte every 50 ms: each read is quick, the head never ends.
    let trickle = tokio::spawn(async move {
        let head = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: {}", "a".repeat(400));
        for b in head.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Others are served meanwhile, on a connection of their own each.
    for _ in 0..5 {
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(get_on(&mut c, "/").await, (200, "ok".into()));
    }
    let mut sink = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut sink)).await;
    let took = started.elapsed();
    assert!(
        r.is_ok(),
        "the trickling client is still connected after 5 s"
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "closed after {took:?}, not at the 800 ms head timeout"
    );
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout_and_not_before() {
    let server = start(
        ConnLimits {
            idle_timeout: Duration::from_millis(800),
            head_timeout: Duration::from_secs(10),
            ..limits()
        },
        None,
    )
    .await;
    // Kept alive after a response: served again within the idle time, closed after it.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get_on(&mut c, "/").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_on(&mut c, "/").await.0,
        200,
        "a keep-alive connection used within the idle timeout is served"
    );
    let took = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(
        took >= Duration::from_millis(700),
        "closed after {took:?}, before the idle timeout"
    );
    // A connection that never sends anything goes the same way.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a connection that sends nothing is closed");
    assert!(took >= Duration::from_millis(700), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_never_finished_is_dropped_while_real_clients_get_in() {
    let ca = berth_tls::Ca::generate("test-ca").unwrap();
    let id = ca
        .issue(
            "localhost",
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            berth_tls::Usage::Server,
        )
        .unwrap();
    let server = start(
        ConnLimits {
            handshake_timeout: Duration::from_millis(700),
            ..limits()
        },
        Some(berth_tls::server_config(&id, berth_tls::ClientAuth::None).unwrap()),
    )
    .await;
    // Silent, and a ClientHello's first bytes then nothing.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(berth_tls::client_config(&ca.pem, None).unwrap());
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .expect("a real client completes its handshake");
    assert_eq!(get_on(&mut tls, "/").await, (200, "ok".into()));
    for c in [&mut silent, &mut partial] {
        let took = closed_within(c, Duration::from_secs(5))
            .await
            .expect("an unfinished handshake is dropped");
        assert!(took < Duration::from_secs(3), "dropped after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_of_a_response_is_dropped() {
    let server = start(
        ConnLimits {
            idle_timeout: Duration::from_millis(800),
            ..limits()
        },
        None,
    )
    .await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The socket buffers fill; the server's write waits on a client that takes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection was not closed");
    assert!(
        got < 64 << 20,
        "the whole 64 MiB came ({got} bytes): the stall did not end the connection"
    );
    // The server still serves.
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get_on(&mut other, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_limit_is_refused_while_another_gets_in() {
    let server = start(
        ConnLimits {
            max_per_client: 3,
            ..limits()
        },
        None,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", server.addr).await;
        assert_eq!(get_on(&mut c, "/").await.0, 200);
        held.push(c);
    }
    // The fourth from the same address: a 503 naming the limit, then the close.
    let mut fourth = connect_from("127.0.0.1", server.addr).await;
    let (status, body) = read_response(&mut fourth).await.expect("a refusal");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("127.0.0.1") && body.contains("--max-connections-per-client"),
        "{body}"
    );
    // Another address still gets in.
    let mut other = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(get_on(&mut other, "/").await, (200, "ok".into()));
    // Held connections still work; closing one makes room.
    assert_eq!(get_on(&mut held[0], "/").await.0, 200);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = connect_from("127.0.0.1", server.addr).await;
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        match read_response(&mut c).await {
            Some((200, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "no room made by a closed connection: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_refuses_every_address_until_a_connection_closes() {
    let server = start(
        ConnLimits {
            max_conns: 2,
            ..limits()
        },
        None,
    )
    .await;
    let mut a = connect_from("127.0.0.3", server.addr).await;
    let mut b = connect_from("127.0.0.4", server.addr).await;
    assert_eq!(get_on(&mut a, "/").await.0, 200);
    assert_eq!(get_on(&mut b, "/").await.0, 200);
    let mut c = connect_from("127.0.0.5", server.addr).await;
    let (status, body) = read_response(&mut c).await.expect("a refusal");
    assert_eq!(status, 503);
    assert!(body.contains("--max-connections"), "{body}");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = connect_from("127.0.0.5", server.addr).await;
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        if let Some((200, _)) = read_response(&mut c).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_on(&mut b, "/").await.0, 200);
}

//! The ingress's connection timeouts on real sockets: a client trickling its request head gets
//! a 408 and the close at the head timeout while others are served, and a kept-alive
//! connection is closed once idle for the idle timeout, not before.

use super::*;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// An ingress with no routes (every request: 404) under `limits`, through the same
/// listener and serving loop as `run`.
async fn ingress(limits: berth_tls::ConnLimits) -> SocketAddr {
    let table = Arc::new(RwLock::new(Arc::new(Table {
        routes: Vec::new(),
        default: None,
    })));
    let upstreams = Arc::new(Upstreams::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let l =
        berth_tls::limits::Listener::new(tcp, "ingress", limits, berth_tls::limits::Refusal::Http);
    tokio::spawn(async move {
        loop {
            let (c, peer, permit) = l.accept().await;
            let (table, upstreams) = (table.clone(), upstreams.clone());
            tokio::spawn(async move {
                let _permit = permit;
                serve(c, peer, table, upstreams, limits).await;
            });
        }
    });
    addr
}

/// Everything until the ingress closes (at most `within`), and when that was.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<(String, Duration)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&got).into_owned(),
                    started.elapsed(),
                ));
            }
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

fn limits() -> berth_tls::ConnLimits {
    berth_tls::ConnLimits {
        head_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(800),
        ..berth_tls::ConnLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_gets_408_at_the_head_timeout_while_others_are_served() {
    let addr = ingress(limits()).await;
    let slow = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: {}", "a".repeat(400));
        for b in head.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (text, _) = until_closed(&mut c, Duration::from_secs(5)).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }
    let mut text = String::new();
    let r = tokio::time::timeout(Duration::from_secs(5), rd.read_to_string(&mut text)).await;
    let took = started.elapsed();
    assert!(
        r.is_ok(),
        "the trickling client is still connected after 5 s"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not come whole within 800ms"), "{text}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "closed after {took:?}, not at the 800 ms head timeout"
    );
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_when_idle_for_the_idle_timeout() {
    let addr = ingress(limits()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The 404 is read; the connection stays open for the next request.
    let mut buf = h1::Buf::new();
    let mut out = Vec::new();
    loop {
        out.clear();
        if let Some(r) = h1::parse_response(buf.bytes(), false, false, &mut out).unwrap() {
            assert_eq!(r.status, 404);
            break;
        }
        assert!(
            buf.fill(&mut c).await.unwrap() > 0,
            "closed after one request"
        );
    }
    let (_, took) = until_closed(&mut c, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(
        took >= Duration::from_millis(700),
        "closed after {took:?}, before the idle timeout"
    );
    // A connection that sends nothing at all goes the same way, without a 408.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (text, took) = until_closed(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection is closed");
    assert!(text.is_empty(), "{text}");
    assert!(took >= Duration::from_millis(700), "closed after {took:?}");
}

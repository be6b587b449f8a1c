//! The API server's request timeouts against raw clients on a loopback port of the test's
//! own (plain HTTP, so the bytes are the test's to time): a body trickled past the body
//! timeout gets a 408 Status and writes nothing; a head trickled past the head timeout is
//! closed; other clients are served meanwhile. (When a test fails, its runtime ends the
//! server's tasks and the temporary directory goes with it.)

use std::time::{Duration, Instant};

use berth_app::{RunningServer, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(dir: &std::path::Path) -> RunningServer {
    let mut opts = ServerOptions::new(dir);
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.tls = false;
    opts.controllers = false;
    opts.limits.body_timeout = Duration::from_millis(800);
    opts.limits.head_timeout = Duration::from_millis(800);
    berth_app::start(opts).await.unwrap()
}

/// Everything until the server closes (5 s at most), and when that was.
async fn until_closed(c: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk)).await {
            Err(_) => panic!("still open after 5 s: {}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    started.elapsed(),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn get(addr: std::net::SocketAddr, token: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    until_closed(&mut c).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let body =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"slow"},"data":{"a":"b"}}"#;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(
        format!(
            "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.token,
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = c.into_split();
    // All of the body but its last byte, slowly.
    let trickle = tokio::spawn(async move {
        for b in body.as_bytes()[..body.len() - 1].iter() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await;
    });
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut head))
        .await
        .expect("an answer before 5 s")
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 800ms"), "{text}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    trickle.abort();
    let after = get(
        server.addr,
        &server.token,
        "/api/v1/namespaces/default/configmaps/slow",
    )
    .await;
    assert!(
        after.starts_with("HTTP/1.1 404"),
        "the refused body was written: {after}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_closed_at_the_head_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let slow = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in format!(
            "GET /healthz HTTP/1.1\r\nHost: b\r\nX-Slow: {}",
            "a".repeat(300)
        )
        .bytes()
        {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for _ in 0..3 {
        let r = get(server.addr, &server.token, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
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
        "closed after {took:?}"
    );
    trickle.abort();
    server.shutdown().await;
}

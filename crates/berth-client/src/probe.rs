//! The one-shot HTTP GET that health probes make (a pod's `httpGet` probe on its node, and a
//! ConfigTemplate's after a reload): plain HTTP/1.1, no TLS, the connection closed after the
//! answer, and only its status line read. The same request for both, so a probe means the
//! same thing wherever it is written.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET of `path` at `addr` (`host:port`): the status code it answered.
pub async fn http_status(
    addr: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status from {addr}"))
}

//! What a hostile registry can make a pull do, against small HTTP servers of this test's own
//! on loopback: a bearer realm on another host never gets the credentials, and endless or
//! oversized manifests, configs, token answers and layers fail with a clear error, having
//! read no more than the limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_image::registry::{MAX_MANIFEST, MAX_TOKEN, PullOptions, pull};
use berth_image::{ImageStore, Reference};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a server answers one request.
enum Reply {
    /// A complete response.
    Full(String),
    /// This head, then body bytes until the client stops reading.
    Endless(String),
    /// This head and a few bytes of the body, then silence with the connection held open.
    Stall(String),
}

/// A one-request-per-connection HTTP server: records each request head, answers with
/// `answer(head)`, and counts the body bytes it managed to send.
struct Server {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server(ip: &str, answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let answer = Arc::new(answer);
    let (h, n) = (heads.clone(), sent.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let (heads, sent, answer) = (h.clone(), n.clone(), answer.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut b = [0; 1024];
                    match c.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&b[..k]),
                    }
                }
                let head = String::from_utf8_lossy(&got).into_owned();
                heads.lock().unwrap().push(head.clone());
                match answer(&head) {
                    Reply::Full(r) => {
                        let _ = c.write_all(r.as_bytes()).await;
                    }
                    Reply::Stall(h) => {
                        if c.write_all(format!("{h}{{\"sch").as_bytes()).await.is_ok() {
                            std::future::pending::<()>().await;
                        }
                    }
                    Reply::Endless(h) => {
                        if c.write_all(h.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b' '; 64 * 1024];
                        while c.write_all(&chunk).await.is_ok() {
                            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    Server {
        addr,
        heads,
        sent,
        task,
    }
}

/// A pull that must end (with an error) soon, however long the registry talks.
async fn refused(store: &ImageStore, r: &Reference, o: &PullOptions) -> String {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        pull(store, r, o, &|_| {}),
    )
    .await
    .expect("the pull kept reading")
    .unwrap_err()
    .to_string()
}

fn full(status: &str, extra: &str, body: &str) -> Reply {
    Reply::Full(format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    ))
}

fn opts(registry: SocketAddr) -> PullOptions {
    PullOptions {
        insecure: vec![registry.to_string()],
        credentials: Some(("alice".into(), "s3cret".into())),
        parallel: 1,
        ..Default::default()
    }
}

/// A registry that wants a bearer token from `realm` and, given token `t`, says the manifest
/// is not there.
async fn registry_with_realm(realm: String) -> Server {
    server("127.0.0.1", move |head| {
        if head.to_ascii_lowercase().contains("authorization: bearer t\r\n") {
            full("404 Not Found", "", "")
        } else {
            full(
                "401 Unauthorized",
                &format!(
                    "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"reg\",scope=\"repository:x:pull\"\r\n"
                ),
                "",
            )
        }
    })
    .await
}

async fn token_service(ip: &str) -> Server {
    server(ip, |_| {
        full(
            "200 OK",
            "Content-Type: application/json\r\n",
            r#"{"token":"t"}"#,
        )
    })
    .await
}

fn authorizations(s: &Server) -> Vec<String> {
    s.heads
        .lock()
        .unwrap()
        .iter()
        .flat_map(|h| h.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .collect()
}

#[tokio::test]
async fn a_realm_on_another_host_gets_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("images")).unwrap();
    // The token service on another loopback address: another host.
    let tokens = token_service("127.0.0.2").await;
    let reg = registry_with_realm(format!("http://{}/token", tokens.addr)).await;
    let r = Reference::parse(&format!("{}/x:1", reg.addr)).unwrap();
    let e = pull(&store, &r, &opts(reg.addr), &|_| {})
        .await
        .unwrap_err();
    // Asked anonymously; the token it got works, and the registry says what it has.
    assert_eq!(tokens.heads.lock().unwrap().len(), 1);
    assert_eq!(authorizations(&tokens), Vec::<String>::new());
    assert!(e.to_string().contains("not found"), "{e}");
    // Named as an auth host, but plain HTTP: still none.
    let mut o = opts(reg.addr);
    o.auth_hosts = vec![tokens.addr.to_string(), "127.0.0.2".into()];
    pull(&store, &r, &o, &|_| {}).await.unwrap_err();
    assert_eq!(tokens.heads.lock().unwrap().len(), 2);
    assert_eq!(authorizations(&tokens), Vec::<String>::new());
    // The registry itself never gets Basic credentials either.
    assert!(
        authorizations(&reg)
            .iter()
            .all(|a| a.to_ascii_lowercase().starts_with("authorization: bearer")),
        "{:?}",
        authorizations(&reg)
    );

    // A token service that refuses anonymous requests: the error says why.
    let refusing = server("127.0.0.2", |_| full("401 Unauthorized", "", "")).await;
    let reg = registry_with_realm(format!("http://{}/token", refusing.addr)).await;
    let r = Reference::parse(&format!("{}/x:1", reg.addr)).unwrap();
    let e = refused(&store, &r, &opts(reg.addr)).await;
    assert!(
        e.contains("the credentials were not sent to") && e.contains("--auth-host"),
        "{e}"
    );
    assert_eq!(authorizations(&refusing), Vec::<String>::new());
}

#[tokio::test]
async fn a_realm_on_the_registrys_own_host_gets_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("images")).unwrap();
    let tokens = token_service("127.0.0.1").await;
    let reg = registry_with_realm(format!("http://{}/token", tokens.addr)).await;
    let r = Reference::parse(&format!("{}/x:1", reg.addr)).unwrap();
    pull(&store, &r, &opts(reg.addr), &|_| {})
        .await
        .unwrap_err();
    // alice:s3cret
    assert_eq!(
        authorizations(&tokens),
        ["authorization: Basic YWxpY2U6czNjcmV0"]
    );
}

/// Waits until the server's writes stop (the client closed), and returns what it sent.
async fn sent_when_stopped(s: &Server) -> u64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let before = s.sent.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let after = s.sent.load(Ordering::SeqCst);
        if after == before {
            return after;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client kept reading"
        );
    }
}

#[tokio::test]
async fn endless_and_oversized_bodies_stop_at_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("images")).unwrap();
    // A manifest that never ends (chunked, no length).
    let endless = server("127.0.0.1", |_| {
        Reply::Endless(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n"
                .into(),
        )
    })
    .await;
    let r = Reference::parse(&format!("{}/x:1", endless.addr)).unwrap();
    let e = refused(&store, &r, &opts(endless.addr)).await;
    assert!(
        e.contains(&format!(
            "the manifest of {r} is larger than {MAX_MANIFEST} bytes (4 MiB)"
        )),
        "{e}"
    );
    // It stopped reading: what was sent is the limit plus what the sockets hold.
    let sent = sent_when_stopped(&endless).await;
    assert!(sent < MAX_MANIFEST + (16 << 20), "{sent} bytes sent");

    // A manifest that says it is larger than the limit: refused before reading.
    let big = server("127.0.0.1", |_| {
        Reply::Endless(
            "HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\nConnection: close\r\n\r\n".into(),
        )
    })
    .await;
    let r = Reference::parse(&format!("{}/x:1", big.addr)).unwrap();
    let e = refused(&store, &r, &opts(big.addr)).await;
    assert!(e.contains("larger than 4194304 bytes"), "{e}");

    // An endless token answer.
    let tokens = server("127.0.0.1", |_| {
        Reply::Endless("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into())
    })
    .await;
    let reg = registry_with_realm(format!("http://{}/token", tokens.addr)).await;
    let r = Reference::parse(&format!("{}/x:1", reg.addr)).unwrap();
    let e = refused(&store, &r, &opts(reg.addr)).await;
    assert!(
        e.contains(&format!(
            "the token answer is larger than {MAX_TOKEN} bytes (1 MiB)"
        )),
        "{e}"
    );
    assert!(sent_when_stopped(&tokens).await < MAX_TOKEN + (16 << 20));
    // Nothing was stored by any of it.
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_layer_longer_than_its_descriptor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("images")).unwrap();
    let config = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let config_digest = berth_image::Digest::of(config.as_bytes()).to_string();
    let layer_digest = berth_image::Digest::of(b"tiny").to_string();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":4}}]}}"#,
        config.len()
    );
    let reg = server("127.0.0.1", move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        if path.contains("/manifests/") {
            full(
                "200 OK",
                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                &manifest,
            )
        } else if path.ends_with(&config_digest) {
            full("200 OK", "", config)
        } else {
            // The layer: far more than the 4 bytes it should be.
            Reply::Endless("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into())
        }
    })
    .await;
    let r = Reference::parse(&format!("{}/x:1", reg.addr)).unwrap();
    let e = refused(&store, &r, &opts(reg.addr)).await;
    assert!(
        e.contains(&format!(
            "layer {layer_digest} is longer than the 4 bytes its manifest says"
        )),
        "{e}"
    );
    assert!(sent_when_stopped(&reg).await < 16 << 20);
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_registry_that_goes_silent_mid_body_fails_the_pull() {
    let reg = server("127.0.0.1", |_| {
        Reply::Stall(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 4000\r\n\r\n".into(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let r = Reference::parse(&format!("{}/team/app:1", reg.addr)).unwrap();
    let o = PullOptions {
        stall_timeout: Some(std::time::Duration::from_secs(1)),
        ..opts(reg.addr)
    };
    let e = refused(&store, &r, &o).await;
    assert!(
        e.contains("sent nothing for 1 s while sending the manifest of") && e.contains("stalled"),
        "{e}"
    );
}

//! A typed client for berth's (Kubernetes-shaped) API: kubeconfig loading, CRUD, watch, the
//! one informer everything outside the server follows the cluster with ([`informer`]), and
//! berth's history API.

pub mod informer;
pub mod kubeconfig;
pub mod probe;

use std::time::Duration;

use berth_api::ResourceKind;
use berth_api::Status;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use hyper::Method;
pub use kubeconfig::{KubeConfig, KubeconfigError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` error.
    #[error("{}", .0.message)]
    Api(Box<Status>),
    #[error("cannot reach the berth API at {server}: {message}; is `berth up` running?")]
    Connect { server: String, message: String },
    #[error("unexpected response from {path}: {message}")]
    Protocol { path: String, message: String },
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
}

impl ClientError {
    /// The HTTP status code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(s) => Some(s.code),
            _ => None,
        }
    }
}

/// A raw response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub body: Bytes,
    /// The `Warning` headers' values (`299 - "text"`), in order.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Client {
    server: String,
    token: String,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Prints the server's `Warning` headers to stderr as kubectl does (`Warning: ...`).
    print_warnings: bool,
}

/// The text of a `Warning` header value (`299 - "text"`), unquoted.
pub fn warning_text(header: &str) -> String {
    let Some(quoted) = header
        .split_once(" - \"")
        .map(|(_, rest)| rest.strip_suffix('"').unwrap_or(rest))
    else {
        return header.to_string();
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn encode_query(s: &str) -> String {
    berth_api::url::encode(s)
}

/// One watch event.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub typ: String,
    pub object: Value,
}

/// A stream of JSON values, one per line, over one chunked response (watches of objects and
/// of the key/value tree).
pub struct JsonLines {
    body: ByteStream,
    buf: Vec<u8>,
    path: String,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("path", &self.path)
            .finish()
    }
}

impl JsonLines {
    /// The next value, `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map(Some).map_err(|e| {
                    ClientError::Protocol {
                        path: self.path.clone(),
                        message: e.to_string(),
                    }
                });
            }
            match self.body.next().await? {
                Some(data) => self.buf.extend_from_slice(&data),
                None => return Ok(None),
            }
        }
    }
}

/// A stream of watch events over one chunked response.
#[derive(Debug)]
pub struct WatchStream {
    lines: JsonLines,
}

impl WatchStream {
    /// The next event, `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        Ok(self.lines.next().await?.map(|v| WatchEvent {
            typ: v["type"].as_str().unwrap_or("").to_string(),
            object: v.get("object").cloned().unwrap_or(Value::Null),
        }))
    }
}

/// The API path of a key of the key/value tree (each `/`-separated segment encoded), with a
/// query.
pub fn kv_path(key: &str, query: &str) -> String {
    let segs: Vec<String> = key
        .split('/')
        .filter(|s| !s.is_empty())
        .map(berth_api::url::encode)
        .collect();
    let mut p = format!("/apis/kv.berth.dev/v1/keys/{}", segs.join("/"));
    if !query.is_empty() {
        p.push('?');
        p.push_str(query);
    }
    p
}

/// A response body read as it arrives (a followed log).
pub struct ByteStream {
    body: hyper::body::Incoming,
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream").finish()
    }
}

impl ByteStream {
    /// The next piece, `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::Protocol {
                        path: "stream".into(),
                        message: e.to_string(),
                    });
                }
                None => return Ok(None),
            }
        }
    }
}

/// A connection switched to another protocol (a WebSocket), and the subprotocol the server
/// chose.
#[derive(Debug)]
pub struct Upgraded {
    pub io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    pub protocol: Option<String>,
}

impl Client {
    /// A client for `server` (http:// or https://) that trusts only `ca_pem` for TLS.
    pub fn with_ca(server: &str, token: &str, ca_pem: Option<&str>) -> Result<Self, ClientError> {
        let tls_error = |e: berth_tls::TlsError| ClientError::Protocol {
            path: "certificate-authority".into(),
            message: e.to_string(),
        };
        let connector =
            berth_tls::connector_trusting(ca_pem, "certificate-authority", Duration::from_secs(5))
                .map_err(tls_error)?;
        Ok(Client::from_connector(server, token, connector))
    }

    fn from_connector(
        server: &str,
        token: &str,
        connector: hyper_rustls::HttpsConnector<HttpConnector>,
    ) -> Client {
        Client {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            // Idle connections are dropped well before the server closes them (its
            // --idle-timeout, 60 s by default), so a request never goes out on one it is
            // closing.
            http: HyperClient::builder(TokioExecutor::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            print_warnings: false,
        }
    }

    /// A client for `server` that trusts only `ca_pem` and authenticates with `cert`'s
    /// current client certificate (a node agent's identity, which it renews in place).
    pub fn with_client_cert(
        server: &str,
        ca_pem: &str,
        cert: std::sync::Arc<berth_tls::ClientCert>,
    ) -> Result<Self, ClientError> {
        let connector = berth_tls::connector_presenting(ca_pem, cert, Duration::from_secs(5))
            .map_err(|e| ClientError::Protocol {
                path: "certificate-authority".into(),
                message: e.to_string(),
            })?;
        Ok(Client::from_connector(server, "", connector))
    }

    /// Prints the warnings servers send (`Warning: ...` on stderr), as a command line tool
    /// should.
    pub fn printing_warnings(mut self) -> Self {
        self.print_warnings = true;
        self
    }

    /// A client for a plain-HTTP server, or an HTTPS one signed by `ca_pem`.
    pub fn new(server: &str, token: &str, ca_pem: &str) -> Self {
        // An unparsable CA leaves the client trusting nothing: every TLS request then fails
        // with an error that names the certificate.
        Client::with_ca(server, token, Some(ca_pem).filter(|c| !c.is_empty()))
            .or_else(|_| Client::with_ca(server, token, None))
            .expect("a client without a CA always builds")
    }

    /// From a kubeconfig's current context: its client certificate when it has one (with the
    /// cluster's CA, which such a context needs), else its token.
    pub fn from_kubeconfig(cfg: &KubeConfig) -> Result<Self, ClientError> {
        let ctx = cfg.current()?;
        let (Some(cert), Some(key)) = (&ctx.client_cert_pem, &ctx.client_key_pem) else {
            return Client::with_ca(&ctx.server, &ctx.token, ctx.ca_pem.as_deref());
        };
        let tls_error = |e: berth_tls::TlsError| ClientError::Protocol {
            path: "client-certificate".into(),
            message: e.to_string(),
        };
        let id =
            berth_tls::Identity::from_pem(cert, key, "client-certificate").map_err(tls_error)?;
        let cert = berth_tls::ClientCert::new(&id).map_err(tls_error)?;
        let ca = ctx.ca_pem.as_deref().ok_or_else(|| ClientError::Protocol {
            path: "certificate-authority".into(),
            message: "a client certificate needs the cluster's certificate-authority".into(),
        })?;
        let mut client = Client::with_client_cert(&ctx.server, ca, cert)?;
        // A context may name a token beside its certificate; kubectl sends both.
        client.token = ctx.token;
        Ok(client)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let uri = format!("{}{}", self.server, path);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header("accept", "application/json");
        if !self.token.is_empty() {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let req = match body {
            Some((ct, b)) => req
                .header("content-type", ct)
                .body(Full::new(Bytes::from(b))),
            None => req.body(Full::new(Bytes::new())),
        }
        .map_err(|e| ClientError::Protocol {
            path: path.into(),
            message: e.to_string(),
        })?;
        self.http.request(req).await.map_err(|e| {
            let mut message = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                message = format!("{message}: {s}");
                src = s.source();
            }
            ClientError::Connect {
                server: self.server.clone(),
                message,
            }
        })
    }

    /// GETs `path` and returns its body as it arrives; a non-2xx answer is an error.
    pub async fn stream(&self, path: &str) -> Result<ByteStream, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        if !resp.status().is_success() {
            return Err(api_error(path, resp).await);
        }
        Ok(ByteStream {
            body: resp.into_body(),
        })
    }

    /// Opens a WebSocket on `path` offering `protocols` with the handshake `key` (the
    /// handshake only; the caller speaks the frames).
    pub async fn websocket(
        &self,
        path: &str,
        protocols: &[&str],
        key: &str,
    ) -> Result<Upgraded, ClientError> {
        let uri = format!("{}{}", self.server, path);
        let mut req = hyper::Request::builder()
            .method(Method::GET)
            .uri(&uri)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", key)
            .header("sec-websocket-protocol", protocols.join(", "));
        if !self.token.is_empty() {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Protocol {
                path: path.into(),
                message: e.to_string(),
            })?;
        let mut resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Connect {
                server: self.server.clone(),
                message: e.to_string(),
            })?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Err(api_error(path, resp).await);
        }
        let protocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let io = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| ClientError::Protocol {
                path: path.into(),
                message: format!("the connection did not switch to WebSocket: {e}"),
            })?;
        Ok(Upgraded {
            io: hyper_util::rt::TokioIo::new(io),
            protocol,
        })
    }

    /// Sends a request and returns the raw answer, whatever its status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<RawResponse, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect::<Vec<String>>();
        if self.print_warnings {
            for w in &warnings {
                eprintln!("Warning: {}", warning_text(w));
            }
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol {
                path: path.into(),
                message: e.to_string(),
            })?
            .to_bytes();
        Ok(RawResponse {
            status,
            body,
            warnings,
        })
    }

    /// Sends a request; a non-2xx answer becomes `ClientError::Api`.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, ClientError> {
        let r = self.raw(method, path, body).await?;
        if !(200..300).contains(&r.status) {
            return Err(status_error(path, r.status, &r.body));
        }
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Protocol {
            path: path.into(),
            message: format!("the body is not JSON: {e}"),
        })
    }

    pub fn object_path(kind: &ResourceKind, ns: Option<&str>, name: &str) -> String {
        format!(
            "{}/{}",
            kind.collection_path(ns.filter(|_| kind.namespaced)),
            name
        )
    }

    pub async fn get(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError> {
        self.json(Method::GET, &Self::object_path(kind, ns, name), None)
            .await
    }

    /// Lists with a raw query string (`labelSelector=...&limit=...`).
    pub async fn list(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        query: &str,
    ) -> Result<Value, ClientError> {
        let mut path = kind.collection_path(ns.filter(|_| kind.namespaced));
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        self.json(Method::GET, &path, None).await
    }

    pub async fn create(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        obj: &Value,
        query: &str,
    ) -> Result<Value, ClientError> {
        let mut path = kind.collection_path(ns.filter(|_| kind.namespaced));
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        self.json(
            Method::POST,
            &path,
            Some((
                "application/json",
                serde_json::to_vec(obj).unwrap_or_default(),
            )),
        )
        .await
    }

    pub async fn replace(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        self.json(
            Method::PUT,
            &Self::object_path(kind, ns, name),
            Some((
                "application/json",
                serde_json::to_vec(obj).unwrap_or_default(),
            )),
        )
        .await
    }

    /// PATCH with a content type (`application/merge-patch+json`, ...) and optional query.
    pub async fn patch(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        patch: &Value,
        query: &str,
    ) -> Result<Value, ClientError> {
        let mut path = Self::object_path(kind, ns, name);
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        self.json(
            Method::PATCH,
            &path,
            Some((content_type, serde_json::to_vec(patch).unwrap_or_default())),
        )
        .await
    }

    pub async fn delete(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        query: &str,
    ) -> Result<Value, ClientError> {
        let mut path = Self::object_path(kind, ns, name);
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        self.json(Method::DELETE, &path, None).await
    }

    /// Starts a watch (`query` without `watch=1`, which this adds).
    pub async fn watch(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        query: &str,
    ) -> Result<WatchStream, ClientError> {
        let base = kind.collection_path(ns.filter(|_| kind.namespaced));
        let path = if query.is_empty() {
            format!("{base}?watch=1")
        } else {
            format!("{base}?watch=1&{query}")
        };
        Ok(WatchStream {
            lines: self.json_lines(&path).await?,
        })
    }

    /// GETs `path` and reads its body as JSON values, one per line, as they arrive.
    pub async fn json_lines(&self, path: &str) -> Result<JsonLines, ClientError> {
        Ok(JsonLines {
            body: self.stream(path).await?,
            buf: Vec::new(),
            path: path.to_string(),
        })
    }

    /// berth's history API: `query` as `resource=...&namespace=...&name=...[&revision=N]`.
    pub async fn history(&self, query: &str) -> Result<Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/apis/berth.dev/v1/history?{query}"),
            None,
        )
        .await
    }

    pub async fn export(&self, query: &str) -> Result<Value, ClientError> {
        let path = if query.is_empty() {
            "/apis/berth.dev/v1/export".to_string()
        } else {
            format!("/apis/berth.dev/v1/export?{query}")
        };
        self.json(Method::GET, &path, None).await
    }

    /// The audit log's recent events (`denied=1&limit=N`), an `audit.k8s.io/v1` `EventList`.
    pub async fn audit(&self, query: &str) -> Result<Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/apis/berth.dev/v1/audit?{query}"),
            None,
        )
        .await
    }

    pub async fn revisions(&self, query: &str) -> Result<Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/apis/berth.dev/v1/revisions?{query}"),
            None,
        )
        .await
    }
}

async fn api_error(path: &str, resp: hyper::Response<hyper::body::Incoming>) -> ClientError {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    status_error(path, status, &body)
}

/// A non-2xx answer as an error: the server's Status, or one made from what it said.
pub fn status_error(path: &str, status: u16, body: &[u8]) -> ClientError {
    let s: Status = serde_json::from_slice(body).unwrap_or_else(|_| {
        Status::failure(
            status,
            "Unknown",
            format!(
                "the server answered {status} to {path}: {}",
                String::from_utf8_lossy(body).trim()
            ),
        )
    });
    ClientError::Api(Box::new(s))
}

#[cfg(test)]
mod warning_tests {
    use super::warning_text;

    #[test]
    fn warning_headers_are_unquoted() {
        assert_eq!(
            warning_text(r#"299 - "would violate PodSecurity \"baseline:latest\": a \\ b""#),
            r#"would violate PodSecurity "baseline:latest": a \ b"#
        );
        assert_eq!(warning_text("not quoted"), "not quoted");
    }
}

#[cfg(test)]
mod ca_tests {
    use super::{Client, ClientError};

    /// A kubeconfig's CA that holds no certificate (garbage, or an empty bundle) is refused
    /// with an error naming it, instead of a client that trusts nothing and fails later.
    #[test]
    fn a_ca_bundle_without_a_certificate_is_refused_naming_it() {
        for bad in [
            "",
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            match Client::with_ca("https://127.0.0.1:6443", "t", Some(bad)) {
                Err(ClientError::Protocol { path, .. }) => {
                    assert_eq!(path, "certificate-authority", "{bad:?}")
                }
                Err(e) => panic!("{bad:?}: another error: {e}"),
                Ok(_) => panic!("{bad:?}: accepted"),
            }
        }
        assert!(Client::with_ca("http://127.0.0.1:8080", "t", None).is_ok());
    }
}

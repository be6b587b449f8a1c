//! Pulling from OCI distribution registries (Docker Registry HTTP API v2): manifests (OCI and
//! Docker v2, indexes resolved to linux/amd64), blobs streamed to disk and verified, several
//! layers at once, anonymous, basic and bearer-token auth, HTTP for registries named
//! insecure and HTTPS with a given CA.
//!
//! What a registry can make a pull do is bounded:
//! - credentials go only to the registry's own host: a bearer realm elsewhere is asked
//!   without them, unless it is HTTPS and named in [`PullOptions::auth_hosts`] (Docker Hub's
//!   `auth.docker.io` is, for Docker Hub); never over plain HTTP to another host, nor over
//!   plain HTTP to a registry spoken to over HTTPS;
//! - bodies read into memory have limits: manifests and indexes [`MAX_MANIFEST`] (4 MiB, as
//!   containerd), image configs [`MAX_CONFIG`] (8 MiB), token answers [`MAX_TOKEN`] (1 MiB);
//!   reading stops at the limit (a larger Content-Length fails before any is read);
//! - a layer may not be longer than its descriptor's size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::ImageError;
use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, LayerRef};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or index taken (containerd's limit).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest image config taken.
pub const MAX_CONFIG: u64 = 8 << 20;
/// The largest token-service answer taken.
pub const MAX_TOKEN: u64 = 1 << 20;

/// The token service of Docker Hub's registry, trusted with its credentials.
const DOCKER_HUB_AUTH: &str = "auth.docker.io";

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) trusted for HTTPS registries.
    pub ca_pem: Option<String>,
    /// `user`, `password` for basic auth or for getting a bearer token.
    pub credentials: Option<(String, String)>,
    /// Hosts (`host` or `host:port`) besides the registry's own that may get the credentials
    /// when a bearer challenge names them as its realm, over HTTPS only.
    pub auth_hosts: Vec<String>,
    /// Layers downloaded at once.
    pub parallel: usize,
    /// How long a registry may send nothing of a body it is answering before the pull fails
    /// ([`DEFAULT_STALL`] when not set).
    pub stall_timeout: Option<Duration>,
}

/// How long a registry may go silent in the middle of a body (its headers are bounded by the
/// request's own 60 s): a registry that stops sending cannot hold a pull, and the pod waiting
/// on it, for ever.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);

/// The next frame of a registry's body, or an error naming the registry once it has sent
/// nothing for `stall`.
async fn next_frame(
    body: &mut hyper::body::Incoming,
    stall: Duration,
    registry: &str,
    what: &str,
) -> Result<Option<hyper::body::Frame<Bytes>>, ImageError> {
    match tokio::time::timeout(stall, body.frame()).await {
        Err(_) => Err(ImageError::Registry {
            registry: registry.to_string(),
            message: format!(
                "sent nothing for {} s while sending {}; the registry stalled",
                stall.as_secs(),
                what.strip_suffix(" is").unwrap_or(what)
            ),
        }),
        Ok(None) => Ok(None),
        Ok(Some(f)) => f.map(Some).map_err(|e| unreachable_err(registry, e)),
    }
}

/// What a pull reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Resolved {
        manifest: Digest,
        layers: usize,
        bytes: u64,
    },
    LayerStarted {
        digest: Digest,
        size: u64,
    },
    LayerBytes {
        digest: Digest,
        done: u64,
        size: u64,
    },
    LayerDone {
        digest: Digest,
        cached: bool,
    },
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn unreachable_err(registry: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        registry: registry.to_string(),
        message: format!(
            "unreachable: {e}; check the address, or name it with --insecure-registry if it speaks plain HTTP"
        ),
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`).
fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut cur = rest.trim();
    while !cur.is_empty() {
        let Some((k, after)) = cur.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, n)) => (v.to_string(), n),
                None => (q.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.trim().to_string(), n),
                None => (after.trim().to_string(), ""),
            }
        };
        params.push((k, v));
        cur = next.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

struct Session {
    http: HttpClient,
    base: String,
    registry: String,
    repo: String,
    auth: Option<String>,
    creds: Option<(String, String)>,
    auth_hosts: Vec<String>,
    stall: Duration,
}

/// A URL's scheme and its host and port (`host:port`, the default port filled in), lower
/// case; None when it is not an http(s) URL with a host.
fn origin(url: &str) -> Option<(&'static str, String, u16)> {
    let (scheme, rest, default) = if let Some(r) = strip_prefix_ci(url, "https://") {
        ("https", r, 443)
    } else if let Some(r) = strip_prefix_ci(url, "http://") {
        ("http", r, 80)
    } else {
        return None;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // An IPv6 literal keeps its brackets.
    let split = match authority.rfind(']') {
        Some(end) => (end + 1 < authority.len()).then(|| authority.split_at(end + 1)),
        None => authority.rfind(':').map(|at| authority.split_at(at)),
    };
    let (host, port) = match split {
        Some((h, p)) => (h, p.strip_prefix(':')?.parse().ok()?),
        None => (authority, default),
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

/// Whether a token realm may get the registry's credentials: on the registry's own host, by
/// HTTPS (or by HTTP when the registry itself is spoken to over HTTP), or on a host the user
/// named, by HTTPS only.
fn realm_trusted(realm: &str, registry_base: &str, auth_hosts: &[String]) -> bool {
    let (Some((scheme, host, port)), Some((reg_scheme, reg_host, _))) =
        (origin(realm), origin(registry_base))
    else {
        return false;
    };
    if host == reg_host {
        return scheme == "https" || reg_scheme == "http";
    }
    scheme == "https"
        && auth_hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            h == host || h == format!("{host}:{port}")
        })
}

/// Reads a body into memory, at most `limit` bytes: a larger declared length fails before
/// any is read, and reading stops as soon as the limit is passed.
async fn read_limited(
    resp: hyper::Response<hyper::body::Incoming>,
    limit: u64,
    what: &str,
    registry: &str,
    stall: Duration,
) -> Result<Bytes, ImageError> {
    let too_large = || ImageError::Registry {
        registry: registry.to_string(),
        message: format!(
            "{what} larger than {limit} bytes ({} MiB), the limit",
            limit >> 20
        ),
    };
    let declared = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = resp.into_body();
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = next_frame(&mut body, stall, registry, what).await? {
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

impl Session {
    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ImageError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header("user-agent", concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| unreachable_err(&self.registry, e))?;
        tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .map_err(|_| unreachable_err(&self.registry, "no answer within 60 s"))?
            .map_err(|e| {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m = format!("{m}: {s}");
                    src = s.source();
                }
                unreachable_err(&self.registry, m)
            })
    }

    /// Answers a 401 challenge: basic credentials, or a bearer token from the realm.
    async fn authenticate(&mut self, challenge: &str) -> Result<(), ImageError> {
        let (scheme, params) = parse_challenge(challenge);
        let get = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
        };
        match scheme.as_str() {
            "basic" => {
                let (u, p) = self
                    .creds
                    .clone()
                    .ok_or_else(|| self.denied("the registry wants a user name and password"))?;
                self.auth = Some(format!("Basic {}", b64(&format!("{u}:{p}"))));
                Ok(())
            }
            "bearer" => {
                let realm =
                    get("realm").ok_or_else(|| self.denied("bearer challenge without a realm"))?;
                let mut url = format!("{realm}?");
                if let Some(s) = get("service") {
                    url.push_str(&format!("service={}&", s));
                }
                let scope =
                    get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repo));
                url.push_str(&format!("scope={scope}"));
                if origin(&realm).is_none() {
                    return Err(self.denied(&format!(
                        "the bearer realm {realm:?} is not an http(s) URL with a host"
                    )));
                }
                // The credentials go to the realm only when it is trusted with them; any
                // other is asked anonymously.
                let trusted = realm_trusted(&realm, &self.base, &self.auth_hosts);
                let basic = self
                    .creds
                    .as_ref()
                    .filter(|_| trusted)
                    .map(|(u, p)| format!("Basic {}", b64(&format!("{u}:{p}"))));
                let withheld = self.creds.is_some() && !trusted;
                if withheld {
                    tracing::warn!(registry = %self.registry, %realm, "the registry's token realm is on another host (or plain HTTP): asked without the credentials");
                }
                let resp = self.send(&url, None, basic.as_deref()).await?;
                if !resp.status().is_success() {
                    let mut why = format!("the token service answered {}", resp.status());
                    if withheld {
                        why.push_str(&format!(
                            "; the credentials were not sent to {realm}, which is not the registry's host (name its host with --auth-host to trust it, over HTTPS only)"
                        ));
                    }
                    return Err(self.denied(&why));
                }
                let body = read_limited(
                    resp,
                    MAX_TOKEN,
                    "the token answer is",
                    &self.registry,
                    self.stall,
                )
                .await?;
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|e| self.denied(&format!("bad token answer: {e}")))?;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| self.denied("no token in the answer"))?;
                self.auth = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(self.denied(&format!("unsupported auth scheme {other:?}"))),
        }
    }

    fn denied(&self, why: &str) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message: format!(
                "no permission to pull {}: {why}; check the credentials",
                self.repo
            ),
        }
    }

    /// GETs a registry path, answering one auth challenge.
    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ImageError> {
        let url = format!("{}/v2/{}/{}", self.base, self.repo, path);
        let mut resp = self.send(&url, accept, self.auth.as_deref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.authenticate(&challenge).await?;
            resp = self.send(&url, accept, self.auth.as_deref()).await?;
        }
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(ImageError::NotFoundIn {
                what: format!("{}/{}", self.repo, path),
                registry: self.registry.clone(),
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(self.denied(&format!("{} for {path}", resp.status())))
            }
            s => Err(ImageError::Registry {
                registry: self.registry.clone(),
                message: format!("{s} for {path}"),
            }),
        }
    }

    /// GETs a registry path into memory, at most `limit` bytes of it (`what` names it).
    async fn get_bytes(
        &mut self,
        path: &str,
        accept: Option<&str>,
        limit: u64,
        what: &str,
    ) -> Result<Bytes, ImageError> {
        let resp = self.get(path, accept).await?;
        read_limited(resp, limit, what, &self.registry, self.stall).await
    }
}

fn client(opts: &PullOptions) -> Result<HttpClient, ImageError> {
    let tls_error = |e: berth_tls::TlsError| ImageError::Invalid {
        what: "registry CA".into(),
        why: e.to_string(),
    };
    let conn = berth_tls::connector_trusting(
        opts.ca_pem.as_deref(),
        "registry CA",
        Duration::from_secs(10),
    )
    .map_err(tls_error)?;
    Ok(Client::builder(TokioExecutor::new()).build(conn))
}

/// Pulls an image into the store and records it under its reference.
pub async fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ImageRecord, ImageError> {
    let registry = reference.registry.clone();
    let host = if registry == crate::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io".to_string()
    } else {
        registry.clone()
    };
    let scheme = if opts.insecure.contains(&registry) {
        "http"
    } else {
        "https"
    };
    let mut s = Session {
        http: client(opts)?,
        base: format!("{scheme}://{host}"),
        registry: registry.clone(),
        repo: reference.repository.clone(),
        auth: None,
        creds: opts.credentials.clone(),
        auth_hosts: {
            let mut hosts = opts.auth_hosts.clone();
            if host == "registry-1.docker.io" {
                hosts.push(DOCKER_HUB_AUTH.to_string());
            }
            hosts
        },
        stall: opts.stall_timeout.unwrap_or(DEFAULT_STALL),
    };
    let wanted = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let mut body = s
        .get_bytes(
            &format!("manifests/{wanted}"),
            Some(ACCEPT),
            MAX_MANIFEST,
            &format!("the manifest of {reference} is"),
        )
        .await?;
    let mut digest = Digest::of(&body);
    if let Some(d) = &reference.digest
        && *d != digest
    {
        return Err(ImageError::DigestMismatch {
            expected: d.clone(),
            actual: digest,
        });
    }
    let bad = |why: String| ImageError::Invalid {
        what: format!("manifest of {reference}"),
        why,
    };
    let mut manifest: Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    if manifest.get("manifests").is_some() {
        store.write_blob(&digest, &mut &body[..])?;
        let arch = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        };
        let chosen = manifest["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter().find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch
                })
            })
            .ok_or_else(|| bad(format!("no linux/{arch} image in the index")))?;
        let d = Digest::parse(chosen["digest"].as_str().unwrap_or(""))?;
        body = s
            .get_bytes(
                &format!("manifests/{d}"),
                Some(ACCEPT),
                MAX_MANIFEST,
                &format!("the manifest {d} of {reference} is"),
            )
            .await?;
        digest = Digest::of(&body);
        if digest != d {
            return Err(ImageError::DigestMismatch {
                expected: d,
                actual: digest,
            });
        }
        manifest = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    }
    store.write_blob(&digest, &mut &body[..])?;
    let config_digest = Digest::parse(manifest["config"]["digest"].as_str().unwrap_or(""))?;
    if !store.has_blob(&config_digest) {
        let cfg = s
            .get_bytes(
                &format!("blobs/{config_digest}"),
                None,
                MAX_CONFIG,
                &format!("the config of {reference} is"),
            )
            .await?;
        store.write_blob(&config_digest, &mut &cfg[..])?;
    }
    let config = ImageConfig::from_blob(&store.read_blob(&config_digest)?)?;
    let mut layers = Vec::new();
    for l in manifest["layers"]
        .as_array()
        .ok_or_else(|| bad("no layers".into()))?
    {
        layers.push(LayerRef {
            digest: Digest::parse(l["digest"].as_str().unwrap_or(""))?,
            media_type: l["mediaType"].as_str().unwrap_or("").to_string(),
            size: l["size"]
                .as_u64()
                .ok_or_else(|| bad("a layer has no size".into()))?,
        });
    }
    progress(Progress::Resolved {
        manifest: digest.clone(),
        layers: layers.len(),
        bytes: layers.iter().map(|l| l.size).sum(),
    });

    // Layers, several at once, each streamed to disk and verified.
    let parallel = opts.parallel.max(1);
    let s = Arc::new(tokio::sync::Mutex::new(s));
    let mut pending = layers.clone();
    let mut running = tokio::task::JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let mut first_err = None;
    loop {
        while running.len() < parallel && first_err.is_none() {
            let Some(layer) = pending.pop() else { break };
            let (s, store, tx) = (s.clone(), store.clone(), tx.clone());
            running.spawn(async move { download(s, store, layer, tx).await });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some(p) = rx.recv() => progress(p),
            done = running.join_next() => match done {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => {
                    first_err.get_or_insert(e);
                }
                Some(Err(e)) => {
                    first_err.get_or_insert(ImageError::Invalid { what: "layer download".into(), why: e.to_string() });
                }
            },
        }
    }
    drop(tx);
    while let Ok(p) = rx.try_recv() {
        progress(p);
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let rec = ImageRecord {
        name: reference.to_string(),
        manifest: digest,
        config_digest,
        layers,
        config,
        source: format!("pull {registry}"),
    };
    store.put_image(rec.clone())?;
    Ok(rec)
}

/// Progress is reported at most this often (in bytes) per layer.
const PROGRESS_STEP: u64 = 256 * 1024;

async fn download(
    s: Arc<tokio::sync::Mutex<Session>>,
    store: ImageStore,
    layer: LayerRef,
    tx: tokio::sync::mpsc::UnboundedSender<Progress>,
) -> Result<(), ImageError> {
    let Some(mut w) = store.begin_blob(&layer.digest)? else {
        let _ = tx.send(Progress::LayerDone {
            digest: layer.digest,
            cached: true,
        });
        return Ok(());
    };
    let _ = tx.send(Progress::LayerStarted {
        digest: layer.digest.clone(),
        size: layer.size,
    });
    let (resp, registry, stall) = {
        let mut s = s.lock().await;
        (
            s.get(&format!("blobs/{}", layer.digest), None).await?,
            s.registry.clone(),
            s.stall,
        )
    };
    let mut body = resp.into_body();
    let mut reported = 0;
    let what = format!("layer {}", layer.digest);
    while let Some(frame) = next_frame(&mut body, stall, &registry, &what).await? {
        if let Ok(data) = frame.into_data() {
            if w.written() + data.len() as u64 > layer.size {
                return Err(ImageError::Registry {
                    registry,
                    message: format!(
                        "layer {} is longer than the {} bytes its manifest says",
                        layer.digest, layer.size
                    ),
                });
            }
            w.write(&data)?;
            if w.written() - reported >= PROGRESS_STEP {
                reported = w.written();
                let _ = tx.send(Progress::LayerBytes {
                    digest: layer.digest.clone(),
                    done: reported,
                    size: layer.size,
                });
            }
        }
    }
    w.commit()?;
    let _ = tx.send(Progress::LayerDone {
        digest: layer.digest,
        cached: false,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auth_challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        let (s, p) = parse_challenge("Basic realm=registry");
        assert_eq!((s.as_str(), p[0].1.as_str()), ("basic", "registry"));
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            origin("HTTPS://Auth.Example/token?x"),
            Some(("https", "auth.example".into(), 443))
        );
        assert_eq!(
            origin("http://[::1]:5000/t"),
            Some(("http", "[::1]".into(), 5000))
        );
        assert_eq!(origin("http://[::1]"), Some(("http", "[::1]".into(), 80)));
        for bad in [
            "ftp://a/",
            "http:///t",
            "http://u:p@a/t",
            "http://a:x/t",
            "//a/t",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_go_only_to_the_registrys_host_or_a_named_https_one() {
        let hosts = ["auth.example".to_string(), "tok.example:8443".to_string()];
        let reg = "https://reg.example:5000";
        let cases = [
            ("https://reg.example/token", reg, true),
            ("https://REG.example:9000/token", reg, true),
            // Plain HTTP to a registry spoken to over HTTPS: a downgrade.
            ("http://reg.example:5000/token", reg, false),
            (
                "http://reg.example:5001/token",
                "http://reg.example:5000",
                true,
            ),
            ("https://evil.example/token", reg, false),
            ("https://auth.example/token", reg, true),
            ("http://auth.example/token", reg, false),
            ("http://auth.example/token", "http://reg.example", false),
            ("https://tok.example:8443/t", reg, true),
            ("https://tok.example/t", reg, false),
            ("https://reg.example.evil.example/t", reg, false),
            ("not a url", reg, false),
        ];
        for (realm, base, trusted) in cases {
            assert_eq!(
                realm_trusted(realm, base, &hosts),
                trusted,
                "{realm} for {base}"
            );
        }
    }
}

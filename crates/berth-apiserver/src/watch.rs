//! `?watch=1`: a chunked stream of `{"type": ..., "object": ...}` lines, as Kubernetes sends.
//!
//! Label and field selectors apply to transitions as in Kubernetes: an object that starts
//! matching arrives as ADDED, one that stops matching leaves as DELETED.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use berth_api::ResourceKind;
use berth_api::object::Object;
use std::sync::Arc;

use berth_store::{Event, EventType, KeyValue, StoreError};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::registry::{ListOptions, Registry, decode};

/// The decoded object and its JSON for one stored change, made once and shared by every
/// watcher the change reaches (1,000 watchers of one kind decode and encode it once, not
/// 1,000 times).
pub struct Encoded {
    pub obj: Object,
    pub json: Bytes,
    pub prev: Option<Object>,
}

type CacheKey = (u64, Vec<u8>);
type CacheMap = (
    std::collections::HashMap<CacheKey, Arc<Encoded>>,
    std::collections::VecDeque<CacheKey>,
);

/// A bounded cache of `Encoded` changes by (revision, key).
#[derive(Default)]
pub struct EncodeCache {
    inner: std::sync::Mutex<CacheMap>,
}

impl std::fmt::Debug for EncodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeCache").finish()
    }
}

const CACHE_ENTRIES: usize = 8192;

impl EncodeCache {
    fn get(&self, revision: u64, ev: &Event) -> Option<Arc<Encoded>> {
        let key = (revision, ev.kv.key.clone());
        if let Some(e) = self.inner.lock().ok()?.0.get(&key) {
            return Some(e.clone());
        }
        let obj = decode_at(&ev.kv, revision)?;
        let json = Bytes::from(serde_json::to_vec(&obj.0).ok()?);
        let prev = ev.prev.as_ref().and_then(|k| decode_at(k, revision));
        let made = Arc::new(Encoded { obj, json, prev });
        let mut guard = self.inner.lock().ok()?;
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), made.clone()).is_none() {
            order.push_back(key);
            while order.len() > CACHE_ENTRIES {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Some(made)
    }
}

fn line_from(typ: &str, json: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(json.len() + typ.len() + 24);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(typ.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    v.extend_from_slice(json);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

pub struct WatchParams {
    pub kind: &'static ResourceKind,
    pub ns: Option<String>,
    pub opts: ListOptions,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub timeout: Option<Duration>,
    pub cache: Arc<EncodeCache>,
    /// Turns true when the server stops.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn line(typ: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": typ, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn error_line(e: &ApiError) -> Bytes {
    line("ERROR", serde_json::to_value(&e.0).unwrap_or(Value::Null))
}

fn matches(p: &WatchParams, obj: &Object) -> bool {
    (p.opts.labels.is_empty() || p.opts.labels.matches(&obj.labels()))
        && (p.opts.fields.is_empty() || p.opts.fields.matches(&obj.as_value()))
}

fn decode_at(kv: &KeyValue, rev: u64) -> Option<Object> {
    let mut o = decode(kv).ok()?;
    o.set_meta("resourceVersion", rev.to_string());
    Some(o)
}

/// Starts a watch and returns the streaming response. Errors that happen before the stream
/// starts (bad resource version) are returned as ordinary error responses; errors after it
/// starts arrive as an ERROR event, as Kubernetes sends them.
pub fn start(registry: Registry, mut p: WatchParams) -> Result<Response, ApiError> {
    let prefix = Registry::prefix(p.kind, p.ns.as_deref());
    let (initial, start) = match p.resource_version.as_deref() {
        None | Some("") | Some("0") => {
            let r = registry.list(p.kind, p.ns.as_deref(), &p.opts)?;
            (r.items, r.revision + 1)
        }
        Some(rv) => {
            let n: u64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
            })?;
            (Vec::new(), n + 1)
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let watcher = registry.watch_prefix(&prefix, start);
    tokio::spawn(async move {
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(Ok(error_line(&ApiError::from(e)))).await;
                return;
            }
        };
        for obj in initial {
            if tx.send(Ok(line("ADDED", obj.into_value()))).await.is_err() {
                return;
            }
        }
        let mut last_bookmark = start.saturating_sub(1);
        let mut tick = tokio::time::interval(p.bookmark_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = p
            .timeout
            .and_then(|t| tokio::time::Instant::now().checked_add(t));
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            tokio::select! {
                batch = watcher.next() => {
                    let batch = match batch {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        Err(e @ StoreError::WatcherTooSlow(_)) => {
                            let _ = tx.send(Ok(error_line(&ApiError::gone(e.to_string())))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Ok(error_line(&ApiError::from(e)))).await;
                            return;
                        }
                    };
                    for ev in &batch.events {
                        let Some(enc) = p.cache.get(batch.revision, ev) else { continue };
                        let typ = match ev.typ {
                            EventType::Put => {
                                let was = enc.prev.as_ref().is_some_and(|o| matches(&p, o));
                                match (matches(&p, &enc.obj), was) {
                                    (true, true) => Some("MODIFIED"),
                                    (true, false) => Some("ADDED"),
                                    (false, true) => Some("DELETED"),
                                    (false, false) => None,
                                }
                            }
                            EventType::Delete => matches(&p, &enc.obj).then_some("DELETED"),
                        };
                        if let Some(typ) = typ
                            && tx.send(Ok(line_from(typ, &enc.json))).await.is_err()
                        {
                            return;
                        }
                    }
                }
                _ = tick.tick(), if p.bookmarks => {
                    if let Some(rev) = watcher.progress()
                        && rev > last_bookmark {
                            last_bookmark = rev;
                            let obj = json!({"kind": p.kind.kind, "apiVersion": p.kind.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
                            if tx.send(Ok(line("BOOKMARK", obj))).await.is_err() {
                                return;
                            }
                        }
                }
                _ = &mut expired => return,
                _ = p.stopping.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

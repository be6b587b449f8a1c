//! The key/value tree: `/apis/kv.berth.dev/v1/keys/PATH`, a directory-style key space in the
//! cluster's store (what etcd's v2 keys API and Consul's KV give), with its history and
//! watches.
//!
//! - `GET` a key: its entry (`key`, `value` or `valueBase64`, `createIndex`, `modIndex`,
//!   `version`); `?raw` the bare value; `?list` the names directly under it (directories end
//!   in `/`); `?recurse` every entry at and under it.
//! - `PUT` a key: the body is the value (at most 512 KiB). `?cas=N` writes only if the key's
//!   `modIndex` is N (0: only if it does not exist); a mismatch is 412. Writing the value a key
//!   already has changes nothing (no new index, no watch event).
//! - `DELETE` a key (`?recurse`: and everything under it; `?cas=N` as for PUT).
//! - `GET ?watch` (`&recurse`, `&index=N`): a stream of `{"type":"PUT"|"DELETE", ...entry}`
//!   lines, one per change after index N (or from now), in order. An index that was compacted
//!   away is 410 Gone: read again, then watch from the read's index.
//!
//! Invariant: the index of a key is the store's revision, so one counter orders every change
//! of the tree and of the cluster's objects, and every change keeps who made it.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_store::{Compare, CompareOp, EventType, KeyValue, Op, Origin, Store, StoreError, Txn};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

/// Where the tree lives in the store.
const STORE_PREFIX: &str = "/kv";
/// The largest value.
const MAX_VALUE: usize = 512 * 1024;
/// The longest key.
const MAX_KEY: usize = 1024;

/// A key from the URL's path segments: `/a/b/c`, checked.
pub(crate) fn key_of(segments: &[&str]) -> ApiResult<String> {
    for s in segments {
        let bad = |why: &str| {
            Err(ApiError::bad_request(format!(
                "key segment {s:?} {why}; keys are /-separated names"
            )))
        };
        if *s == "." || *s == ".." {
            return bad("is not allowed");
        }
        if s.contains('/') {
            return bad("contains an encoded /");
        }
        if s.chars().any(char::is_control) {
            return bad("contains a control character");
        }
    }
    let key = format!("/{}", segments.join("/"));
    if key.len() > MAX_KEY {
        return Err(ApiError::bad_request(format!(
            "the key is {} bytes long; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    Ok(key)
}

fn store_key(key: &str) -> Vec<u8> {
    if key == "/" {
        format!("{STORE_PREFIX}/").into_bytes()
    } else {
        format!("{STORE_PREFIX}{key}").into_bytes()
    }
}

/// The prefix of everything under a key (`/a/` for `/a`).
fn dir_prefix(key: &str) -> Vec<u8> {
    let mut p = store_key(key);
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p
}

/// A stored entry as the API shows it.
fn entry(kv: &KeyValue) -> Value {
    let key = String::from_utf8_lossy(&kv.key[STORE_PREFIX.len()..]).into_owned();
    let mut e = json!({
        "key": key,
        "createIndex": kv.create_revision,
        "modIndex": kv.mod_revision,
        "version": kv.version,
    });
    match std::str::from_utf8(&kv.value) {
        Ok(s) => e["value"] = json!(s),
        Err(_) => e["valueBase64"] = json!(berth_api::base64::encode(&kv.value)),
    }
    e
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(404, "NotFound", format!("key {key} not found"))
}

fn cas_of(q: &std::collections::HashMap<String, String>) -> ApiResult<Option<u64>> {
    q.get("cas")
        .map(|c| {
            c.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "cas {c:?} is not an index: give the modIndex the key must have (0: must not exist)"
                ))
            })
        })
        .transpose()
}

fn cas_failed(key: &str, want: u64, now: Option<&KeyValue>) -> ApiError {
    let is = match now {
        Some(kv) => format!("is at index {}", kv.mod_revision),
        None => "does not exist".to_string(),
    };
    ApiError::new(
        412,
        "PreconditionFailed",
        format!(
            "compare failed: key {key} {is}, not {}; read it again and retry",
            if want == 0 {
                "absent".to_string()
            } else {
                format!("at index {want}")
            }
        ),
    )
}

/// Serves one request on the tree.
pub(crate) async fn handle(
    store: &Store,
    method: &Method,
    key: &str,
    q: &std::collections::HashMap<String, String>,
    body: Bytes,
    user: &str,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> ApiResult<Response> {
    let flag = |k: &str| q.get(k).is_some_and(|v| v != "false" && v != "0");
    match *method {
        Method::GET if flag("watch") => watch(store, key, flag("recurse"), q, stopping),
        Method::GET if flag("list") => {
            let page = range_all(store, &dir_prefix(key))?;
            let base = dir_prefix(key).len();
            let mut names: BTreeMap<String, Value> = BTreeMap::new();
            for kv in &page.1 {
                let rest = String::from_utf8_lossy(&kv.key[base..]).into_owned();
                match rest.split_once('/') {
                    Some((dir, _)) => {
                        names
                            .entry(format!("{dir}/"))
                            .or_insert_with(|| json!({"name": format!("{dir}/"), "dir": true}));
                    }
                    None => {
                        let mut e = entry(kv);
                        e["name"] = json!(rest);
                        names.insert(rest, e);
                    }
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"key": key, "index": page.0, "entries": names.into_values().collect::<Vec<_>>()}),
            ))
        }
        Method::GET if flag("recurse") => {
            let mut entries = Vec::new();
            if let Some(kv) = store.get(&store_key(key))? {
                entries.push(entry(&kv));
            }
            let (rev, kvs) = range_all(store, &dir_prefix(key))?;
            entries.extend(kvs.iter().map(entry));
            Ok(json_response(
                StatusCode::OK,
                &json!({"key": key, "index": rev, "entries": entries}),
            ))
        }
        Method::GET => {
            let kv = store.get(&store_key(key))?.ok_or_else(|| not_found(key))?;
            if flag("raw") {
                return Ok((
                    StatusCode::OK,
                    [
                        ("content-type", "application/octet-stream".to_string()),
                        ("x-berth-index", kv.mod_revision.to_string()),
                    ],
                    kv.value,
                )
                    .into_response());
            }
            Ok(json_response(StatusCode::OK, &entry(&kv)))
        }
        Method::PUT | Method::POST => {
            if key == "/" {
                return Err(ApiError::bad_request(
                    "the root is a directory; name a key under it",
                ));
            }
            if body.len() > MAX_VALUE {
                return Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!(
                        "the value of {key} is {} bytes; the limit is {MAX_VALUE} (512 KiB)",
                        body.len()
                    ),
                ));
            }
            let kv = put(store, key, &body, cas_of(q)?, user).await?;
            Ok(json_response(StatusCode::OK, &entry(&kv)))
        }
        Method::DELETE => {
            let (deleted, rev) = delete(store, key, flag("recurse"), cas_of(q)?, user).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"key": key, "deleted": deleted, "index": rev}),
            ))
        }
        ref m => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported on keys (GET, PUT, DELETE are)"),
        )),
    }
}

/// Every key under a store prefix, and the revision read at.
fn range_all(store: &Store, prefix: &[u8]) -> ApiResult<(u64, Vec<KeyValue>)> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut rev = None;
    loop {
        let page = match rev {
            Some(r) => store.range_at(prefix, after.as_deref(), 1000, r)?,
            None => store.range(prefix, after.as_deref(), 1000)?,
        };
        rev.get_or_insert(page.revision);
        after = page.kvs.last().map(|k| k.key.clone());
        out.extend(page.kvs);
        if !page.more {
            return Ok((rev.unwrap_or(0), out));
        }
    }
}

/// Writes a value (unless it is the value the key has), guarded by `cas`.
async fn put(
    store: &Store,
    key: &str,
    value: &[u8],
    cas: Option<u64>,
    user: &str,
) -> ApiResult<KeyValue> {
    let sk = store_key(key);
    let now = store.get(&sk)?;
    if let Some(want) = cas {
        let at = now.as_ref().map_or(0, |kv| kv.mod_revision);
        if at != want {
            return Err(cas_failed(key, want, now.as_ref()));
        }
    }
    if let Some(kv) = &now
        && kv.value == value
    {
        return Ok(kv.clone());
    }
    let seen = now.as_ref().map_or(0, |kv| kv.mod_revision);
    let txn = Txn::default()
        .when(Compare::mod_revision(sk.clone(), CompareOp::Equal, seen))
        .then(Op::Put {
            key: sk.clone(),
            value: value.to_vec(),
            lease: 0,
        });
    let r = store.txn(txn, Origin::new(user, "kv-put")).await?;
    if !r.succeeded {
        let cur = r.current.first().cloned().flatten();
        return match cas {
            Some(want) => Err(cas_failed(key, want, cur.as_ref())),
            None => Err(ApiError::new(
                409,
                "Conflict",
                format!("key {key} changed while it was written; try again"),
            )),
        };
    }
    Ok(KeyValue {
        key: sk,
        value: value.to_vec(),
        create_revision: now.as_ref().map_or(r.revision, |kv| kv.create_revision),
        mod_revision: r.revision,
        version: now.as_ref().map_or(1, |kv| kv.version + 1),
        lease: 0,
    })
}

/// Deletes a key (and with `recurse` everything under it); how many went, and the index.
async fn delete(
    store: &Store,
    key: &str,
    recurse: bool,
    cas: Option<u64>,
    user: &str,
) -> ApiResult<(usize, u64)> {
    let sk = store_key(key);
    let now = store.get(&sk)?;
    let mut txn = Txn::default();
    if let Some(want) = cas {
        let at = now.as_ref().map_or(0, |kv| kv.mod_revision);
        if at != want {
            return Err(cas_failed(key, want, now.as_ref()));
        }
    }
    let mut keys: Vec<(Vec<u8>, u64)> =
        now.iter().map(|kv| (sk.clone(), kv.mod_revision)).collect();
    if recurse {
        keys.extend(
            range_all(store, &dir_prefix(key))?
                .1
                .into_iter()
                .map(|kv| (kv.key, kv.mod_revision)),
        );
    }
    if keys.is_empty() {
        return Err(not_found(key));
    }
    for (k, rev) in &keys {
        txn = txn
            .when(Compare::mod_revision(k.clone(), CompareOp::Equal, *rev))
            .then(Op::Delete { key: k.clone() });
    }
    let r = store.txn(txn, Origin::new(user, "kv-delete")).await?;
    if !r.succeeded {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!("keys under {key} changed while they were deleted; try again"),
        ));
    }
    Ok((keys.len(), r.revision))
}

/// Every key under `dir` (at any depth), by its name below `dir` (`a/b` for `DIR/a/b`), with
/// its value. For controllers that own a directory: what they wrote before a restart.
pub fn list_dir(registry: &Registry, dir: &str) -> ApiResult<BTreeMap<String, Vec<u8>>> {
    let prefix = dir_prefix(dir);
    let (_, have) = range_all(&registry.store, &prefix)?;
    Ok(have
        .into_iter()
        .map(|kv| {
            let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            (name, kv.value)
        })
        .collect())
}

/// Makes the keys directly under `dir` exactly `want` (name → value) in one transaction,
/// writing only what differs from what is stored. For controllers that own a directory.
pub async fn sync_dir(
    registry: &Registry,
    dir: &str,
    want: &BTreeMap<String, Vec<u8>>,
    user: &str,
) -> ApiResult<()> {
    let store = &registry.store;
    let prefix = dir_prefix(dir);
    let (_, have) = range_all(store, &prefix)?;
    let mut txn = Txn::default();
    let mut have_names = Vec::new();
    for kv in &have {
        let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
        match want.get(&name) {
            Some(v) if *v == kv.value => {}
            Some(v) => {
                txn = txn.then(Op::Put {
                    key: kv.key.clone(),
                    value: v.clone(),
                    lease: 0,
                })
            }
            None => {
                txn = txn.then(Op::Delete {
                    key: kv.key.clone(),
                })
            }
        }
        have_names.push(name);
    }
    for (name, v) in want {
        if !have_names.contains(name) {
            let mut key = prefix.clone();
            key.extend_from_slice(name.as_bytes());
            txn = txn.then(Op::Put {
                key,
                value: v.clone(),
                lease: 0,
            });
        }
    }
    if txn.success.is_empty() {
        return Ok(());
    }
    store.txn(txn, Origin::new(user, "kv-put")).await?;
    Ok(())
}

fn watch(
    store: &Store,
    key: &str,
    recurse: bool,
    q: &std::collections::HashMap<String, String>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> ApiResult<Response> {
    let start = match q.get("index") {
        Some(i) => {
            i.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("index {i:?} is not a number")))?
                + 1
        }
        None => store.current_revision() + 1,
    };
    if start <= store.compacted_revision() {
        return Err(ApiError::gone(format!(
            "index {} was compacted (the oldest kept is {}); read the keys again and watch from the index the read gives",
            start - 1,
            store.compacted_revision()
        )));
    }
    let exact = store_key(key);
    let under = dir_prefix(key);
    let mut watcher = store.watch(&exact, start)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                b = watcher.next() => b,
                _ = stopping.changed() => return,
            };
            let batch = match batch {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(e) => {
                    let e = match e {
                        StoreError::WatcherTooSlow(_) => ApiError::gone(e.to_string()),
                        e => ApiError::from(e),
                    };
                    let mut l = serde_json::to_vec(
                        &json!({"type": "ERROR", "error": e.0.message, "code": e.code()}),
                    )
                    .unwrap_or_default();
                    l.push(b'\n');
                    let _ = tx.send(Ok(Bytes::from(l))).await;
                    return;
                }
            };
            for ev in &batch.events {
                let k = &ev.kv.key;
                if !(*k == exact || (recurse && k.starts_with(&under))) {
                    continue;
                }
                let mut e = entry(&ev.kv);
                e["type"] = json!(match ev.typ {
                    EventType::Put => "PUT",
                    EventType::Delete => "DELETE",
                });
                if ev.typ == EventType::Delete {
                    e.as_object_mut().map(|m| {
                        m.remove("value");
                        m.remove("valueBase64")
                    });
                }
                let mut l = serde_json::to_vec(&e).unwrap_or_default();
                l.push(b'\n');
                if tx.send(Ok(Bytes::from(l))).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok((
        StatusCode::OK,
        [("content-type", "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any path and any value: a key or a 400, an entry, never a panic; a key accepted
        /// maps to a store key under the tree's prefix.
        #[test]
        fn any_key_or_value_is_handled(
            segs in proptest::collection::vec(".{0,12}", 0..8),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
            if let Ok(k) = key_of(&refs) {
                proptest::prop_assert!(k.starts_with('/'));
                let sk = store_key(&k);
                proptest::prop_assert!(sk.starts_with(b"/kv/"));
                let kv = KeyValue { key: sk, value, create_revision: 1, mod_revision: 2, version: 1, lease: 0 };
                let e = entry(&kv);
                proptest::prop_assert!(e["value"].is_string() || e["valueBase64"].is_string());
            }
        }
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(key_of(&["a", "b"]).unwrap(), "/a/b");
        assert_eq!(key_of(&[]).unwrap(), "/");
        assert!(key_of(&[".."]).is_err());
        assert!(key_of(&["a/b"]).is_err());
        assert!(key_of(&["a\u{1}"]).is_err());
        assert!(key_of(&[&"x".repeat(2000)]).is_err());
    }

    #[tokio::test]
    async fn a_synced_directory_lists_back_by_name_and_objects_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), berth_store::StoreOptions::default()).unwrap();
        let registry = Registry::new(store.clone());
        let want: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        sync_dir(&registry, "/services/ns/svc", &want, "test")
            .await
            .unwrap();
        let rev = registry.revision();
        assert!(store.get(b"/kv/services/ns/svc/a").unwrap().is_some());
        let listed = list_dir(&registry, "/services").unwrap();
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            ["ns/svc/a", "ns/svc/b"],
            "names below the directory, the store's prefix hidden"
        );
        // The same content again writes nothing; an empty one clears the directory.
        sync_dir(&registry, "/services/ns/svc", &want, "test")
            .await
            .unwrap();
        assert_eq!(registry.revision(), rev);
        sync_dir(&registry, "/services/ns/svc", &BTreeMap::new(), "test")
            .await
            .unwrap();
        assert!(list_dir(&registry, "/services").unwrap().is_empty());
        // The key/value tree's writes are not changes to objects.
        let mut objects = registry.watch_objects(1).unwrap();
        store.close();
        assert!(
            !matches!(objects.next().await, Ok(Some(_))),
            "no object changed"
        );
    }
}

//! What templates render from: Pods, Services, Endpoints and Nodes of the cluster, and
//! key/value prefixes, each listed then watched, held whole in memory.
//!
//! Invariant: nothing is rendered before every source has been read once (an empty first
//! render would wipe a config); after that every change bumps a counter the engine waits on.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use berth_client::{Client, Method};
use serde_json::Value;
use tokio::sync::watch;

/// The kinds templates see.
pub const KINDS: [&str; 4] = ["pods", "services", "endpoints", "nodes"];

/// Objects by kind and `namespace/name`, key/value entries by key, and the highest revision
/// seen.
#[derive(Debug, Default)]
pub struct Data {
    pub objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    pub kv: BTreeMap<String, String>,
    pub revision: u64,
    /// Sources read at least once.
    synced: usize,
}

fn obj_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn revision_of(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The sources of one engine.
#[derive(Debug)]
pub struct Sources {
    data: RwLock<Data>,
    changed: watch::Sender<u64>,
    expected: usize,
}

impl Sources {
    /// Starts following the cluster through `client` (and the key prefixes `kv`) until
    /// `stop`.
    pub fn start(client: Client, kv: &[String], stop: watch::Receiver<bool>) -> Arc<Sources> {
        let s = Arc::new(Sources {
            data: RwLock::new(Data::default()),
            changed: watch::channel(0).0,
            expected: KINDS.len() + kv.len(),
        });
        for kind in KINDS {
            let (s, client, stop) = (s.clone(), client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut first = true;
                crate::follow(
                    &client,
                    kind,
                    stop,
                    |items| {
                        s.write(|d| {
                            let m = d.objects.entry(kind).or_default();
                            m.clear();
                            for o in items {
                                d.revision = d.revision.max(revision_of(o));
                                m.insert(obj_key(o), o.clone());
                            }
                            if std::mem::take(&mut first) {
                                d.synced += 1;
                            }
                        })
                    },
                    |typ, o| {
                        s.write(|d| {
                            d.revision = d.revision.max(revision_of(o));
                            let m = d.objects.entry(kind).or_default();
                            if typ == "DELETED" {
                                m.remove(&obj_key(o));
                            } else {
                                m.insert(obj_key(o), o.clone());
                            }
                        })
                    },
                )
                .await
            });
        }
        for prefix in kv {
            tokio::spawn(follow_kv(
                client.clone(),
                s.clone(),
                prefix.clone(),
                stop.clone(),
            ));
        }
        s
    }

    /// Sources that hold `data` and never change (for tests of what is done with them).
    #[cfg(test)]
    pub fn fixed(mut data: Data) -> Arc<Sources> {
        data.synced = 0;
        Arc::new(Sources {
            data: RwLock::new(data),
            changed: watch::channel(0).0,
            expected: 0,
        })
    }

    fn write(&self, f: impl FnOnce(&mut Data)) {
        f(&mut self.data.write().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether every source has been read once.
    pub fn synced(&self) -> bool {
        self.read().synced >= self.expected
    }
}

/// Reads a key prefix, then follows it from the read's index; reads again when the watch
/// breaks.
async fn follow_kv(
    client: Client,
    s: Arc<Sources>,
    prefix: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let read = client
            .json(
                Method::GET,
                &berth_client::kv_path(&prefix, "recurse=1"),
                None,
            )
            .await;
        let index = match read {
            Ok(r) => {
                let index = r["index"].as_u64().unwrap_or(0);
                s.write(|d| {
                    d.kv.retain(|k, _| !under(k, &prefix));
                    for e in r["entries"].as_array().into_iter().flatten() {
                        if let (Some(k), Some(v)) = (e["key"].as_str(), e["value"].as_str()) {
                            d.kv.insert(k.to_string(), v.to_string());
                        }
                    }
                    if std::mem::take(&mut first) {
                        d.synced += 1;
                    }
                });
                index
            }
            Err(e) => {
                tracing::debug!(error = %e, prefix, "cannot read key/value prefix; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let Ok(mut stream) = client
            .json_lines(&berth_client::kv_path(
                &prefix,
                &format!("watch=1&recurse=1&index={index}"),
            ))
            .await
        else {
            continue;
        };
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = stop.changed() => return,
            };
            let Ok(Some(ev)) = ev else { break };
            let Some(key) = ev["key"].as_str() else {
                continue;
            };
            s.write(|d| {
                d.revision = d.revision.max(ev["modIndex"].as_u64().unwrap_or(0));
                match (ev["type"].as_str(), ev["value"].as_str()) {
                    (Some("PUT"), Some(v)) => {
                        d.kv.insert(key.to_string(), v.to_string());
                    }
                    _ => {
                        d.kv.remove(key);
                    }
                }
            });
        }
    }
}

fn under(key: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    key == p || key.starts_with(&format!("{p}/"))
}

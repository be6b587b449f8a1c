//! What templates render from: Pods, Services, Endpoints and Nodes of the cluster, and
//! key/value prefixes, each listed then watched, held whole in memory. The objects are
//! followed once per agent (one berth-client informer cache per kind) and shared by all its
//! templates; each template follows its own key/value prefixes.
//!
//! Invariant: nothing is rendered before every source has been read once (an empty first
//! render would wipe a config); after that every change bumps a counter the engine waits on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use berth_client::informer::{self, Informers};
use berth_client::{Client, Method};
use tokio::sync::watch;

/// The kinds templates see.
pub const KINDS: [&str; 4] = ["pods", "services", "endpoints", "nodes"];

/// Objects by kind and `namespace/name`, owned (what [`Data`] holds).
#[cfg(test)]
pub type ObjectMap = BTreeMap<&'static str, BTreeMap<String, serde_json::Value>>;

/// Objects and key/value entries, owned: the sources of tests, which never change.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Data {
    pub objects: ObjectMap,
    pub kv: BTreeMap<String, String>,
    pub revision: u64,
}

#[cfg(test)]
impl Data {
    pub fn view(&self) -> View<'_> {
        View {
            objects: self.objects.iter().map(|(k, m)| (*k, m)).collect(),
            kv: &self.kv,
            revision: self.revision,
        }
    }
}

/// What one render sees: objects (by kind), key/value entries, and the highest revision
/// among them.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub objects: BTreeMap<&'static str, &'a informer::Objects>,
    pub kv: &'a BTreeMap<String, String>,
    pub revision: u64,
}

/// Something followed: what it holds, a counter bumped on every change, and how many of its
/// parts have been read once out of how many there are.
#[derive(Debug)]
struct Feed<T> {
    data: RwLock<(T, u64)>,
    changed: watch::Sender<u64>,
    synced: AtomicUsize,
    expected: usize,
}

impl<T: Default> Feed<T> {
    fn new(expected: usize) -> Arc<Feed<T>> {
        Arc::new(Feed {
            data: RwLock::new((T::default(), 0)),
            changed: watch::channel(0).0,
            synced: AtomicUsize::new(0),
            expected,
        })
    }

    /// Changes what it holds, raising the revision to `revision`.
    fn write(&self, revision: u64, f: impl FnOnce(&mut T)) {
        {
            let mut d = self.data.write().unwrap_or_else(|e| e.into_inner());
            f(&mut d.0);
            d.1 = d.1.max(revision);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// One more part has been read once.
    fn part_synced(&self) {
        self.synced.fetch_add(1, Ordering::SeqCst);
        self.changed.send_modify(|n| *n += 1);
    }

    fn read(&self) -> RwLockReadGuard<'_, (T, u64)> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst) >= self.expected
    }
}

/// Every Pod, Service, Endpoints and Node, listed then watched: the process's shared
/// informer cache per kind, and what they have in common (a change counter, how many have
/// been listed once). One is enough for all the templates of an agent, and its caches are
/// the ones its service catalog reads.
#[derive(Debug)]
pub struct Objects {
    stores: Vec<(&'static str, informer::Store)>,
    feed: Arc<Feed<()>>,
}

/// Follows the objects of [`KINDS`] through `informers` until `stop`.
pub fn follow_objects(informers: &Informers, stop: &watch::Receiver<bool>) -> Arc<Objects> {
    let stores: Vec<_> = KINDS
        .into_iter()
        .filter_map(|k| Some((k, informers.store(berth_api::kinds::resolve(k)?))))
        .collect();
    let feed = Feed::new(stores.len());
    for (_, store) in &stores {
        let (feed, store, mut stop) = (feed.clone(), store.clone(), stop.clone());
        tokio::spawn(async move {
            // The cache is written first, then the change counted.
            let mut changed = store.subscribe();
            tokio::select! {
                _ = store.wait_ready() => {}
                _ = stop.changed() => return,
            }
            feed.part_synced();
            feed.write(0, |_| {});
            loop {
                tokio::select! {
                    r = changed.changed() => match r {
                        Ok(()) => feed.write(0, |_| {}),
                        Err(_) => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        });
    }
    Arc::new(Objects { stores, feed })
}

/// The sources of one engine: the objects (its own, or its agent's shared ones) and its own
/// key/value prefixes.
#[derive(Debug)]
pub struct Sources {
    objects: Arc<Objects>,
    kv: Arc<Feed<BTreeMap<String, String>>>,
}

/// Holds the sources still while a render reads them.
pub struct Reading<'a> {
    objects: Vec<(&'static str, RwLockReadGuard<'a, informer::Objects>)>,
    revision: u64,
    kv: RwLockReadGuard<'a, (BTreeMap<String, String>, u64)>,
}

impl Reading<'_> {
    pub fn view(&self) -> View<'_> {
        View {
            objects: self.objects.iter().map(|(k, g)| (*k, &**g)).collect(),
            kv: &self.kv.0,
            revision: self.revision.max(self.kv.1),
        }
    }
}

/// Changes to an engine's sources.
pub struct Changes {
    objects: watch::Receiver<u64>,
    kv: watch::Receiver<u64>,
}

impl Changes {
    /// Waits for a change not seen yet; an error when the sources are gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        tokio::select! {
            r = self.objects.changed() => r,
            r = self.kv.changed() => r,
        }
    }

    /// Takes every change so far as seen.
    pub fn seen(&mut self) {
        self.objects.borrow_and_update();
        self.kv.borrow_and_update();
    }
}

impl Sources {
    /// Starts following the cluster through `client` (objects, and the key prefixes `kv`)
    /// until `stop`.
    pub fn start(client: Client, kv: &[String], stop: watch::Receiver<bool>) -> Arc<Sources> {
        let informers = Informers::new(client.clone(), stop.clone());
        let objects = follow_objects(&informers, &stop);
        Sources::sharing(objects, client, kv, stop)
    }

    /// As [`Sources::start`], with objects already followed (and shared with others).
    pub fn sharing(
        objects: Arc<Objects>,
        client: Client,
        kv: &[String],
        stop: watch::Receiver<bool>,
    ) -> Arc<Sources> {
        let feed = Feed::new(kv.len());
        for prefix in kv {
            tokio::spawn(follow_kv(
                client.clone(),
                feed.clone(),
                prefix.clone(),
                stop.clone(),
            ));
        }
        Arc::new(Sources { objects, kv: feed })
    }

    /// Sources that hold `data` and never change (for tests of what is done with them).
    #[cfg(test)]
    pub fn fixed(data: Data) -> Arc<Sources> {
        let (mut stores, feed) = (Vec::new(), Feed::new(data.objects.len()));
        for (kind, items) in data.objects {
            let (store, mut writer) = informer::store();
            writer.apply(&informer::Event::Listed(items.into_values().collect()));
            feed.part_synced();
            stores.push((kind, store));
        }
        feed.write(data.revision, |_| {});
        let kv = Feed::new(0);
        kv.write(data.revision, |k| *k = data.kv);
        Arc::new(Sources {
            objects: Arc::new(Objects { stores, feed }),
            kv,
        })
    }

    pub fn read(&self) -> Reading<'_> {
        // The caches first: their revisions, read while they are held, cover exactly what
        // they hold.
        let objects = &self.objects;
        let guards: Vec<_> = objects.stores.iter().map(|(k, s)| (*k, s.read())).collect();
        let revision = objects
            .stores
            .iter()
            .map(|(_, s)| s.revision())
            .fold(objects.feed.read().1, u64::max);
        Reading {
            objects: guards,
            revision,
            kv: self.kv.read(),
        }
    }

    pub fn subscribe(&self) -> Changes {
        Changes {
            objects: self.objects.feed.changed.subscribe(),
            kv: self.kv.changed.subscribe(),
        }
    }

    /// Whether every source has been read once.
    pub fn synced(&self) -> bool {
        self.objects.feed.synced() && self.kv.synced()
    }
}

/// Reads a key prefix, then follows it from the read's index; reads again when the watch
/// breaks.
async fn follow_kv(
    client: Client,
    s: Arc<Feed<BTreeMap<String, String>>>,
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
                s.write(0, |kv| {
                    kv.retain(|k, _| !under(k, &prefix));
                    for e in r["entries"].as_array().into_iter().flatten() {
                        if let (Some(k), Some(v)) = (e["key"].as_str(), e["value"].as_str()) {
                            kv.insert(k.to_string(), v.to_string());
                        }
                    }
                });
                if std::mem::take(&mut first) {
                    s.part_synced();
                }
                index
            }
            Err(e) => {
                tracing::debug!(error = %e, prefix, "cannot read key/value prefix; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(informer::RETRY) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let mut stream = match client
            .json_lines(&berth_client::kv_path(
                &prefix,
                &format!("watch=1&recurse=1&index={index}"),
            ))
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                // Read again, but not at once: a server that lists and will not watch would
                // otherwise be asked in a tight loop.
                tracing::debug!(error = %e, prefix, "cannot watch key/value prefix; reading again");
                tokio::select! {
                    _ = tokio::time::sleep(informer::RETRY) => continue,
                    _ = stop.changed() => return,
                }
            }
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
            s.write(ev["modIndex"].as_u64().unwrap_or(0), |kv| {
                match (ev["type"].as_str(), ev["value"].as_str()) {
                    (Some("PUT"), Some(v)) => {
                        kv.insert(key.to_string(), v.to_string());
                    }
                    _ => {
                        kv.remove(key);
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

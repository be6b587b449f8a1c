//! The in-process informer: one store watch over every object, shared by the controllers, so
//! each write is read once from the store and decoded at most once however many controllers
//! follow it (before, each controller kept its own watch and decoded every write itself).
//!
//! Shape (kube-runtime's watcher, in process): `run` follows the store and fans each revision
//! out to every `Subscription`. A controller subscribes first and lists after, then skips what
//! its list already holds (`Subscription::listed`), so it sees every revision after its list
//! exactly once, in order. An object is decoded on the first subscriber's asking
//! (`Change::object`) and shared by the rest; a subscriber that needs only some kinds looks at
//! the key first, and one that reads only the raw bytes (the garbage collector's small head)
//! causes no full decode at all.
//!
//! Invariants: no subscriber misses a revision silently. One that falls `CAPACITY` revisions
//! behind gets `Error::Lagged` and starts again from a fresh list (as a store watcher that far
//! behind is cut off); when the informer's own watch breaks, every subscription ends
//! (`next` answers `None`) and its controller starts again from a fresh list.

use std::sync::{Arc, Mutex, OnceLock};

use berth_api::object::Object;
use berth_apiserver::registry::{Registry, decode};
use berth_store::{Event, WatchBatch};
use tokio::sync::{broadcast, watch};

use crate::runtime::Error;

/// Revisions a subscriber may fall behind before it must list again (the store's default
/// watch buffer).
const CAPACITY: usize = 10_000;

/// One revision as the informer hands it out: the store's events, each object decoded once, on
/// first use.
#[derive(Debug)]
pub(crate) struct Batch {
    inner: Arc<WatchBatch>,
    objects: Vec<OnceLock<Option<Object>>>,
}

impl Batch {
    fn new(inner: Arc<WatchBatch>) -> Batch {
        let objects = inner.events.iter().map(|_| OnceLock::new()).collect();
        Batch { inner, objects }
    }

    /// The store revision of these changes.
    pub fn revision(&self) -> u64 {
        self.inner.revision
    }

    /// The revision's changes, in the store's order.
    pub fn changes(&self) -> impl Iterator<Item = Change<'_>> {
        self.inner
            .events
            .iter()
            .zip(&self.objects)
            .map(|(event, object)| Change { event, object })
    }
}

/// The store key prefix of the objects of `plural` (from `ResourceKind::key_prefix`, so no
/// controller spells out the store's layout); for a plural berth does not serve, a prefix no
/// key has (keys start with `/`).
pub(crate) fn key_prefix(plural: &str) -> Vec<u8> {
    berth_api::kinds::resolve(plural).map_or_else(|| vec![0], |k| k.key_prefix().into_bytes())
}

/// One change to one key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    /// What the store recorded: the key, its raw value (for a delete, the last one) and
    /// revisions.
    pub event: &'a Event,
    object: &'a OnceLock<Option<Object>>,
}

impl<'a> Change<'a> {
    /// The object the change wrote (for a delete, the object as it was); `None` when the value
    /// is not an object. Decoded on the first call of any subscriber, shared after.
    pub fn object(&self) -> Option<&'a Object> {
        self.object
            .get_or_init(|| decode(&self.event.kv).ok())
            .as_ref()
    }
}

/// The shared watch. Cheap to share: controllers hold it in an `Arc`.
#[derive(Debug)]
pub struct Informer {
    registry: Registry,
    /// The feed subscriptions join: replaced, ending every subscription to the old one,
    /// whenever the watch under it ends.
    feed: Mutex<Feed>,
}

/// A watch's revisions, from `start` on, as they go out.
#[derive(Debug)]
struct Feed {
    start: u64,
    tx: broadcast::Sender<Arc<Batch>>,
}

impl Feed {
    /// A feed from the store's next revision: whoever subscribes to it and then lists sees
    /// every revision after the list, since `start` is at most one past the list's.
    fn from_now(registry: &Registry) -> Feed {
        Feed {
            start: registry.revision() + 1,
            tx: broadcast::Sender::new(CAPACITY),
        }
    }
}

impl Informer {
    pub fn new(registry: Registry) -> Arc<Informer> {
        Arc::new(Informer {
            feed: Mutex::new(Feed::from_now(&registry)),
            registry,
        })
    }

    /// Follows the store until `stop` turns true; after a failure it starts again, ending
    /// every subscription so their controllers list again.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        crate::runtime::supervise("informer", stop, || self.run_once()).await
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run_once(&self) -> Result<(), Error> {
        let (start, tx) = {
            let feed = self.feed();
            (feed.start, feed.tx.clone())
        };
        let result = async {
            // From the feed's start: the store replays what came before this watch began.
            let mut watcher = self.registry.watch_objects(start)?;
            while let Some(batch) = watcher.next().await? {
                // No subscriber yet is no error: the first one lists what it missed.
                let _ = tx.send(Arc::new(Batch::new(batch)));
            }
            Ok(())
        }
        .await;
        // The subscriptions to this watch end (they may miss what comes next); new ones join
        // the next feed, which the next run follows from where it starts.
        *self.feed() = Feed::from_now(&self.registry);
        result
    }

    /// A new subscription, to be followed by a list (`Subscription::listed`): it receives every
    /// revision the informer forwards from now on.
    pub(crate) fn subscribe(&self) -> Subscription {
        let rx = self.feed().tx.subscribe();
        Subscription { rx, after: 0 }
    }

    /// Subscribes, then lists every object: the objects and a subscription that goes on from
    /// the list's revision. Every controller's run starts here.
    pub(crate) fn list_and_watch(&self) -> Result<(Vec<Object>, Subscription), Error> {
        let mut sub = self.subscribe();
        let (all, rev) = self.registry.all_objects(None).map_err(Error::List)?;
        sub.listed(rev);
        Ok((all, sub))
    }
}

/// One controller's view of the informer's revisions.
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: broadcast::Receiver<Arc<Batch>>,
    /// Revisions up to here are in the subscriber's list already.
    after: u64,
}

impl Subscription {
    /// Says the subscriber's list holds every revision up to `revision`: those are skipped.
    pub fn listed(&mut self, revision: u64) {
        self.after = revision;
    }

    /// The next revision after the list; `None` when the informer's watch broke (list again).
    pub async fn next(&mut self) -> Result<Option<Arc<Batch>>, Error> {
        loop {
            match self.rx.recv().await {
                Ok(b) if b.revision() <= self.after => continue,
                Ok(b) => return Ok(Some(b)),
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(Error::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::{Store, StoreOptions};
    use serde_json::json;
    use std::time::Duration;

    async fn configmap(registry: &Registry, name: &str) -> u64 {
        let kind = berth_api::kinds::resolve("configmaps").unwrap();
        let o = Object::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}}))
        .unwrap();
        let created = registry
            .create(kind, Some("default"), o, "test", false)
            .await
            .unwrap();
        created.resource_version().parse().unwrap()
    }

    async fn next(sub: &mut Subscription) -> Option<Arc<Batch>> {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a revision within 10 s")
            .unwrap()
    }

    #[tokio::test]
    async fn a_subscriber_sees_each_revision_after_its_list_once_and_decoded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let registry = Registry::new(store.clone());
        registry.ensure_default_namespaces().await.unwrap();
        let informer = Informer::new(registry.clone());
        // Written before the informer runs: its feed starts before them, so the store
        // replays them to it.
        configmap(&registry, "before-run").await;
        let (stop_tx, stop) = watch::channel(false);
        let running = tokio::spawn(informer.clone().run(stop));
        let (listed, mut sub) = informer.list_and_watch().unwrap();
        assert!(listed.iter().any(|o| o.name() == "before-run"));
        // A second subscriber shares the first one's decoding.
        let (_, mut other) = informer.list_and_watch().unwrap();
        let rev = configmap(&registry, "after-list").await;
        let b = next(&mut sub).await.unwrap();
        assert_eq!(b.revision(), rev, "what the list held is skipped");
        let first = b.changes().next().unwrap().object().unwrap() as *const Object;
        let b2 = next(&mut other).await.unwrap();
        let second = b2.changes().next().unwrap().object().unwrap() as *const Object;
        assert_eq!(first, second, "one decode for both");
        assert_eq!(
            b2.changes().next().unwrap().object().unwrap().name(),
            "after-list"
        );
        // The watch under the informer breaks (the store closes): every subscription ends, so
        // its controller lists again rather than missing revisions.
        store.close();
        assert!(next(&mut sub).await.is_none());
        stop_tx.send_replace(true);
        running.await.unwrap();
    }
}

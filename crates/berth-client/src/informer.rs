//! The one list+watch loop outside the server (kube-runtime's watcher, reflector and store in
//! spirit): every component that follows the cluster (the node agent's pods, its service
//! catalog and routes, config generation) reads it through here.
//!
//! - [`Watcher`] is an explicit state machine: *empty* (list, remember the list's
//!   `resourceVersion`) → *listed* (open a watch from that version) → *watching* (each event
//!   moves the version on; so does a BOOKMARK, when asked for). A watch that ends or breaks
//!   is opened again from the last version seen (resumed, not listed again); an `ERROR` event
//!   (410 Gone when the server has compacted past the version, or anything else) or a watch
//!   that cannot be opened starts over with a list. A list that fails is tried again after
//!   [`RETRY`] (the first failure of an outage is a warning, the retries debug). It never
//!   gives up; callers stop it by dropping it (every `await` in
//!   [`Watcher::next`] may be cancelled: the state only changes once a step completes).
//! - [`Writer`] applies a watcher's events to a cache, and [`Store`] reads it: one writer,
//!   any number of cheap clonable readers, each woken on every change.
//! - [`follow`] is the loop most callers want: a watcher driven until a stop signal, its
//!   events handed to a callback.
//! - [`Informers`] keeps one reflector per kind for a whole process, shared: a node's
//!   service catalog and its config generation read the same caches, and each follows the
//!   changes through its own [`Store::events`] (the whole state first, then every change).
//!
//! Invariant: a [`Event::Listed`] carries the whole state at one revision and replaces what
//! came before; the events after it are the changes after that revision, in order, none
//! missed (resuming from the last version seen replays what happened while disconnected).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use berth_api::ResourceKind;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::{Client, WatchStream};

/// How long a failed list waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What a [`Watcher`] saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Every object, as one list returned them: the state replaces all that came before.
    Listed(Vec<Value>),
    /// An object was added or changed.
    Applied(Value),
    /// An object was deleted (its last state).
    Deleted(Value),
}

enum State {
    /// Nothing known: list next.
    Empty,
    /// Known up to `rv`: watch from there next.
    Listed { rv: String },
    /// Following a watch; `rv` is the last version it delivered.
    Watching { rv: String, stream: WatchStream },
}

/// Lists a kind, then follows it by watch, resuming from the last version seen (see the
/// module's documentation).
pub struct Watcher {
    client: Client,
    kind: &'static ResourceKind,
    query: String,
    bookmarks: bool,
    state: State,
    /// Whether the last list failed: the first failure of an outage is a warning, the
    /// retries while it lasts are debug.
    failing: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("kind", &self.kind.plural)
            .field("query", &self.query)
            .finish()
    }
}

fn resource_version(o: &Value) -> Option<&str> {
    o["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
}

impl Watcher {
    /// A watcher of every object of `kind` (all namespaces).
    pub fn new(client: Client, kind: &'static ResourceKind) -> Watcher {
        Watcher {
            client,
            kind,
            query: String::new(),
            bookmarks: false,
            state: State::Empty,
            failing: false,
        }
    }

    /// Only the objects a raw selector query picks (`fieldSelector=...&labelSelector=...`),
    /// in both the lists and the watches.
    pub fn selector(mut self, query: &str) -> Watcher {
        self.query = query.to_string();
        self
    }

    /// Asks for BOOKMARK events, so a quiet watch still moves its version on and resumes
    /// from a recent one.
    pub fn bookmarks(mut self) -> Watcher {
        self.bookmarks = true;
        self
    }

    fn joined(&self, parts: &[String]) -> String {
        std::iter::once(self.query.clone())
            .chain(parts.iter().cloned())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The next event; waits (and retries) as long as it takes.
    pub async fn next(&mut self) -> Event {
        let plural = self.kind.plural;
        loop {
            match &mut self.state {
                State::Empty => {
                    let list = match self.client.list(self.kind, None, &self.query).await {
                        Ok(l) => l,
                        Err(e) => {
                            if std::mem::replace(&mut self.failing, true) {
                                tracing::debug!(error = %e, kind = plural, "cannot list; retrying");
                            } else {
                                tracing::warn!(error = %e, kind = plural, "cannot list; retrying");
                            }
                            tokio::time::sleep(RETRY).await;
                            continue;
                        }
                    };
                    self.failing = false;
                    let rv = resource_version(&list).unwrap_or("").to_string();
                    let items = match list {
                        Value::Object(mut m) => match m.remove("items") {
                            Some(Value::Array(items)) => items,
                            _ => Vec::new(),
                        },
                        _ => Vec::new(),
                    };
                    self.state = State::Listed { rv };
                    return Event::Listed(items);
                }
                State::Listed { rv } => {
                    let rv = rv.clone();
                    let mut parts = vec![format!("resourceVersion={rv}")];
                    if self.bookmarks {
                        parts.push("allowWatchBookmarks=true".into());
                    }
                    let query = self.joined(&parts);
                    self.state = match self.client.watch(self.kind, None, &query).await {
                        Ok(stream) => State::Watching { rv, stream },
                        Err(e) => {
                            tracing::debug!(error = %e, kind = plural, "cannot watch; listing again");
                            State::Empty
                        }
                    };
                }
                State::Watching { rv, stream } => {
                    let ev = match stream.next().await {
                        Ok(Some(ev)) => ev,
                        // Ended (the server's timeout, or it stopped) or broken: resume.
                        Ok(None) | Err(_) => {
                            let rv = std::mem::take(rv);
                            self.state = State::Listed { rv };
                            continue;
                        }
                    };
                    if let Some(v) = resource_version(&ev.object) {
                        *rv = v.to_string();
                    }
                    match ev.typ.as_str() {
                        "ADDED" | "MODIFIED" => return Event::Applied(ev.object),
                        "DELETED" => return Event::Deleted(ev.object),
                        "ERROR" => {
                            // 410 Gone: the version is compacted away. Anything else: the
                            // server ends the watch after it; either way, start over.
                            tracing::debug!(kind = plural, status = %ev.object, "the watch failed; listing again");
                            self.state = State::Empty;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Drives `watcher` until `stop` turns true (or its sender goes), giving `on` every event.
pub async fn follow(
    mut watcher: Watcher,
    mut stop: watch::Receiver<bool>,
    mut on: impl FnMut(Event),
) {
    if *stop.borrow() {
        return;
    }
    loop {
        tokio::select! {
            ev = watcher.next() => on(ev),
            _ = stop.changed() => return,
        }
    }
}

/// The key objects are cached by: `namespace/name` (`/name` for cluster-scoped kinds).
pub fn key_of(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The objects a [`Store`] holds, by [`key_of`].
pub type Objects = BTreeMap<String, Value>;

/// How many changes a [`Store::events`] subscriber may fall behind before it is handed the
/// whole state again.
const EVENTS_BEHIND: usize = 1024;

#[derive(Debug)]
struct Cache {
    objects: RwLock<Objects>,
    changed: watch::Sender<u64>,
    /// Every change, for [`Store::events`]; sent while the objects are locked for writing, so
    /// a subscriber that locks them to subscribe sees each change either in its first state
    /// or as an event, never both and never neither. Taken (closing the channel) when the
    /// writer goes.
    events: Mutex<Option<broadcast::Sender<Arc<Event>>>>,
    ready: AtomicBool,
    /// The highest `resourceVersion` applied, when they are numbers (berth's are); written
    /// only with the objects locked for writing.
    revision: AtomicU64,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            objects: RwLock::default(),
            changed: watch::channel(0).0,
            events: Mutex::new(Some(broadcast::channel(EVENTS_BEHIND).0)),
            ready: AtomicBool::new(false),
            revision: AtomicU64::new(0),
        }
    }
}

/// Reads a cache a [`Writer`] keeps. Cheap to clone; every clone sees the same objects.
#[derive(Debug, Clone)]
pub struct Store {
    cache: Arc<Cache>,
}

/// The one writer of a cache.
#[derive(Debug)]
pub struct Writer {
    cache: Arc<Cache>,
}

/// A cache: its only writer and a reader.
pub fn store() -> (Store, Writer) {
    let cache = Arc::new(Cache::default());
    (
        Store {
            cache: cache.clone(),
        },
        Writer { cache },
    )
}

impl Cache {
    fn events(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<Arc<Event>>>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Writer {
    /// Ends every subscriber's [`Events`] (after what was sent before).
    fn drop(&mut self) {
        self.cache.events().take();
    }
}

fn numeric_version(o: &Value) -> u64 {
    resource_version(o)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

impl Writer {
    /// Applies an event: a list replaces everything, a change updates one object.
    pub fn apply(&mut self, ev: &Event) {
        {
            let mut objects = self
                .cache
                .objects
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let top = match ev {
                Event::Listed(items) => {
                    *objects = items.iter().map(|o| (key_of(o), o.clone())).collect();
                    items.iter().map(numeric_version).max().unwrap_or(0)
                }
                Event::Applied(o) => {
                    objects.insert(key_of(o), o.clone());
                    numeric_version(o)
                }
                Event::Deleted(o) => {
                    objects.remove(&key_of(o));
                    numeric_version(o)
                }
            };
            self.cache.revision.fetch_max(top, Ordering::SeqCst);
            if matches!(ev, Event::Listed(_)) {
                self.cache.ready.store(true, Ordering::SeqCst);
            }
            if let Some(events) = &*self.cache.events()
                && events.receiver_count() > 0
            {
                // Only a subscriber lagging past the channel's bound misses it, and it is
                // handed the whole state instead.
                let _ = events.send(Arc::new(ev.clone()));
            }
        }
        self.cache.changed.send_modify(|n| *n += 1);
    }
}

impl Store {
    /// One object, by [`key_of`].
    pub fn get(&self, key: &str) -> Option<Value> {
        self.read().get(key).cloned()
    }

    /// Every object, held still while the guard lives (keep it short: the writer waits).
    pub fn read(&self) -> RwLockReadGuard<'_, Objects> {
        self.cache.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The highest `resourceVersion` among the changes applied so far (0 when they are not
    /// numbers). Read while a [`Store::read`] guard is held, it covers exactly what the
    /// guard shows.
    pub fn revision(&self) -> u64 {
        self.cache.revision.load(Ordering::SeqCst)
    }

    /// Every change from now on, as [`Event`]s: first the whole state as one
    /// [`Event::Listed`] (once a list has filled the cache), then each change in order. A
    /// subscriber that falls more than a thousand changes behind is handed the whole state
    /// again as a fresh `Listed`, which replaces all it had, as after a watcher's relist.
    pub fn events(&self) -> Events {
        let objects = self.read();
        let rx = match &*self.cache.events() {
            Some(events) => events.subscribe(),
            // The writer is gone: a channel that is closed already.
            None => broadcast::channel(1).1,
        };
        let first = self
            .is_ready()
            .then(|| Arc::new(Event::Listed(objects.values().cloned().collect())));
        drop(objects);
        Events {
            store: self.clone(),
            rx,
            first,
        }
    }

    /// Whether a list has filled it once.
    pub fn is_ready(&self) -> bool {
        self.cache.ready.load(Ordering::SeqCst)
    }

    /// A receiver woken on every change (its value counts the changes).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.cache.changed.subscribe()
    }

    /// Waits until a list has filled it once.
    pub async fn wait_ready(&self) {
        let mut changed = self.subscribe();
        while !self.is_ready() {
            if changed.changed().await.is_err() {
                // The writer is gone: wait on no more.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The changes of a [`Store`], from [`Store::events`].
#[derive(Debug)]
pub struct Events {
    store: Store,
    rx: broadcast::Receiver<Arc<Event>>,
    first: Option<Arc<Event>>,
}

impl Events {
    /// The next change; `None` once the cache's writer is gone (its reflector stopped).
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(ev) = self.first.take() {
                return Some(ev);
            }
            match self.rx.recv().await {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "an informer subscriber fell behind; handing it the whole state"
                    );
                    *self = self.store.events();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Hands every change of `events` to `on` until `stop` turns true (or its sender goes, or
/// the cache's writer does).
pub async fn each(mut events: Events, mut stop: watch::Receiver<bool>, mut on: impl FnMut(&Event)) {
    if *stop.borrow() {
        return;
    }
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => on(&ev),
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// One reflector per kind, shared by everything in a process that follows that kind: the
/// first [`Informers::store`] of a kind starts it (on the current tokio runtime), and it
/// runs until the stop signal it was made with.
#[derive(Debug, Clone)]
pub struct Informers {
    client: Client,
    stop: watch::Receiver<bool>,
    stores: Arc<Mutex<HashMap<(&'static str, &'static str), Store>>>,
}

impl Informers {
    pub fn new(client: Client, stop: watch::Receiver<bool>) -> Informers {
        Informers {
            client,
            stop,
            stores: Arc::default(),
        }
    }

    /// The cache of every object of `kind` (all namespaces), kept by the one reflector of
    /// that kind.
    pub fn store(&self, kind: &'static ResourceKind) -> Store {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry((kind.group, kind.plural))
            .or_insert_with(|| {
                let (store, writer) = store();
                let watcher = Watcher::new(self.client.clone(), kind);
                tokio::spawn(reflect(watcher, writer, self.stop.clone(), |_| {}));
                store
            })
            .clone()
    }
}

/// Keeps `writer`'s cache in step with `watcher` until `stop`, giving `on` every event after
/// it is applied (kube-runtime's reflector).
pub async fn reflect(
    watcher: Watcher,
    mut writer: Writer,
    stop: watch::Receiver<bool>,
    mut on: impl FnMut(&Event),
) {
    follow(watcher, stop, |ev| {
        writer.apply(&ev);
        on(&ev);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Query, State as AxState};
    use axum::response::{IntoResponse, Response};
    use serde_json::json;
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    /// A scripted API server: every list answers `list`; each watch pops the next script
    /// (the lines it sends, then it ends). Every query is recorded.
    #[derive(Default)]
    struct Fake {
        lists: Mutex<Vec<HashMap<String, String>>>,
        watches: Mutex<Vec<HashMap<String, String>>>,
        list: Mutex<Value>,
        scripts: Mutex<VecDeque<Vec<Value>>>,
    }

    async fn pods(
        AxState(f): AxState<Arc<Fake>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        if q.get("watch").is_some_and(|w| w == "1") {
            f.watches.lock().unwrap().push(q);
            let script = f.scripts.lock().unwrap().pop_front();
            let Some(lines) = script else {
                // Out of script: hold the watch open.
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(1);
                tokio::spawn(async move {
                    tx.closed().await;
                });
                return axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(
                    rx,
                ))
                .into_response();
            };
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            return body.into_response();
        }
        f.lists.lock().unwrap().push(q);
        axum::Json(f.list.lock().unwrap().clone()).into_response()
    }

    fn pod(name: &str, rv: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}})
    }

    async fn serve(fake: Arc<Fake>) -> Client {
        let app = axum::Router::new()
            .route("/api/v1/pods", axum::routing::get(pods))
            .with_state(fake);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        Client::new(&format!("http://{addr}"), "", "")
    }

    async fn next(w: &mut Watcher) -> Event {
        tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an event in time")
    }

    #[tokio::test]
    async fn lists_watches_resumes_and_lists_again_when_gone() {
        let fake = Arc::new(Fake::default());
        *fake.list.lock().unwrap() =
            json!({"metadata": {"resourceVersion": "10"}, "items": [pod("a", "5"), pod("b", "9")]});
        fake.scripts.lock().unwrap().extend([
            // A change, a bookmark, then the server ends the watch: resumed from 15.
            vec![
                json!({"type": "MODIFIED", "object": pod("a", "11")}),
                json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}),
            ],
            // A deletion, then 410 Gone: listed again.
            vec![
                json!({"type": "DELETED", "object": pod("b", "16")}),
                json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}),
            ],
        ]);
        let client = serve(fake.clone()).await;
        let kind = berth_api::kinds::resolve("pods").unwrap();
        let mut w = Watcher::new(client, kind)
            .selector("fieldSelector=spec.nodeName%3Dn1")
            .bookmarks();
        let (store, mut writer) = store();
        assert!(!store.is_ready());

        let ev = next(&mut w).await;
        assert_eq!(ev, Event::Listed(vec![pod("a", "5"), pod("b", "9")]));
        writer.apply(&ev);
        assert!(store.is_ready());
        assert_eq!(store.read().len(), 2);

        let ev = next(&mut w).await;
        assert_eq!(ev, Event::Applied(pod("a", "11")));
        writer.apply(&ev);
        assert_eq!(store.get("default/a"), Some(pod("a", "11")));

        let ev = next(&mut w).await;
        assert_eq!(ev, Event::Deleted(pod("b", "16")));
        writer.apply(&ev);
        assert_eq!(store.get("default/b"), None);

        *fake.list.lock().unwrap() =
            json!({"metadata": {"resourceVersion": "20"}, "items": [pod("c", "18")]});
        let ev = next(&mut w).await;
        assert_eq!(ev, Event::Listed(vec![pod("c", "18")]));
        writer.apply(&ev);
        assert_eq!(
            store.read().keys().cloned().collect::<Vec<_>>(),
            ["default/c"]
        );

        // The selector on every request; the second watch resumed from the bookmark, the
        // third (after 410) from the new list.
        let lists = fake.lists.lock().unwrap().clone();
        assert_eq!(lists.len(), 2, "{lists:?}");
        assert!(
            lists
                .iter()
                .all(|q| q.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=n1"))
        );
        // Wait for the third watch to be opened.
        for _ in 0..100 {
            if fake.watches.lock().unwrap().len() >= 3 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), w.next()).await;
        }
        let watches = fake.watches.lock().unwrap().clone();
        let rvs: Vec<&str> = watches
            .iter()
            .map(|q| q["resourceVersion"].as_str())
            .collect();
        assert_eq!(rvs, ["10", "15", "20"]);
        assert!(watches.iter().all(|q| {
            q.get("allowWatchBookmarks").map(String::as_str) == Some("true")
                && q.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=n1")
        }));
    }

    #[tokio::test]
    async fn follow_stops_when_told_and_reflect_fills_the_store() {
        let fake = Arc::new(Fake::default());
        *fake.list.lock().unwrap() =
            json!({"metadata": {"resourceVersion": "3"}, "items": [pod("a", "2")]});
        let client = serve(fake.clone()).await;
        let kind = berth_api::kinds::resolve("pods").unwrap();
        let (store, writer) = store();
        let (stop_tx, stop) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let seen = seen.clone();
            tokio::spawn(reflect(
                Watcher::new(client, kind),
                writer,
                stop,
                move |e| seen.lock().unwrap().push(e.clone()),
            ))
        };
        tokio::time::timeout(Duration::from_secs(10), store.wait_ready())
            .await
            .unwrap();
        assert_eq!(store.get("default/a"), Some(pod("a", "2")));
        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), [Event::Listed(vec![pod("a", "2")])]);
    }

    async fn next_event(e: &mut Events) -> Option<Event> {
        tokio::time::timeout(Duration::from_secs(10), e.next())
            .await
            .expect("an event in time")
            .map(|ev| (*ev).clone())
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_whole_state_then_each_change_once() {
        let (store, mut writer) = store();
        // Before any list: nothing first; the list arrives as the first event.
        let mut early = store.events();
        writer.apply(&Event::Listed(vec![pod("a", "5"), pod("b", "9")]));
        assert_eq!(
            next_event(&mut early).await,
            Some(Event::Listed(vec![pod("a", "5"), pod("b", "9")]))
        );
        writer.apply(&Event::Applied(pod("a", "11")));
        // After it: the state as it is now, then only what comes after.
        let mut late = store.events();
        writer.apply(&Event::Deleted(pod("b", "12")));
        assert_eq!(
            next_event(&mut late).await,
            Some(Event::Listed(vec![pod("a", "11"), pod("b", "9")]))
        );
        assert_eq!(
            next_event(&mut late).await,
            Some(Event::Deleted(pod("b", "12")))
        );
        assert_eq!(
            next_event(&mut early).await,
            Some(Event::Applied(pod("a", "11")))
        );
        assert_eq!(
            next_event(&mut early).await,
            Some(Event::Deleted(pod("b", "12")))
        );
        assert_eq!(store.revision(), 12);
        // The writer gone: the subscribers end.
        drop(writer);
        assert_eq!(next_event(&mut early).await, None);
        assert_eq!(next_event(&mut late).await, None);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_handed_the_whole_state_again() {
        let (store, mut writer) = store();
        writer.apply(&Event::Listed(vec![]));
        let mut slow = store.events();
        assert_eq!(next_event(&mut slow).await, Some(Event::Listed(vec![])));
        for i in 0..EVENTS_BEHIND + 10 {
            writer.apply(&Event::Applied(pod(&format!("p{i:05}"), &i.to_string())));
        }
        match next_event(&mut slow).await {
            Some(Event::Listed(items)) => assert_eq!(items.len(), EVENTS_BEHIND + 10),
            other => panic!("expected the whole state, got {other:?}"),
        }
        writer.apply(&Event::Deleted(pod("p00000", "99999")));
        assert_eq!(
            next_event(&mut slow).await,
            Some(Event::Deleted(pod("p00000", "99999")))
        );
    }

    #[tokio::test]
    async fn informers_run_one_reflector_per_kind_for_all_their_users() {
        let fake = Arc::new(Fake::default());
        *fake.list.lock().unwrap() =
            json!({"metadata": {"resourceVersion": "3"}, "items": [pod("a", "2")]});
        let client = serve(fake.clone()).await;
        let kind = berth_api::kinds::resolve("pods").unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let informers = Informers::new(client, stop.clone());
        let (one, two) = (informers.store(kind), informers.clone().store(kind));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let seen = seen.clone();
            tokio::spawn(each(two.events(), stop, move |e| {
                seen.lock().unwrap().push(e.clone())
            }))
        };
        tokio::time::timeout(Duration::from_secs(10), one.wait_ready())
            .await
            .unwrap();
        assert_eq!(two.get("default/a"), Some(pod("a", "2")));
        assert_eq!(
            fake.lists.lock().unwrap().len(),
            1,
            "one list for both users"
        );
        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), [Event::Listed(vec![pod("a", "2")])]);
    }
}

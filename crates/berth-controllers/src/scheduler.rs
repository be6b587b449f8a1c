//! The scheduler loop around the pure placement function (`berth-scheduler`): it follows
//! pods and nodes through the informer, places every unbound pod, and binds it through the
//! same code as the `binding` subresource. A pod that fits nowhere gets `PodScheduled=False`
//! with Kubernetes' message and a `FailedScheduling` Event, and is tried again when a node or
//! a placed pod changes — never in a busy loop.
//!
//! Invariant: the snapshot counts a pod on a node from the moment it is bound until it is
//! deleted or finishes, so two pods never both take a node's last room.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_api::object::Object;
use berth_apiserver::events::{Reporter, record as event};
use berth_apiserver::registry::Registry;
use berth_scheduler::{NodeInfo, PodInfo, Snapshot, Strategy};
use berth_store::EventType;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::{Error, Key, key, pod_finished};

const USER: &str = "system:kube-scheduler";

/// The scheduler's Events: the component Kubernetes' scheduler names.
const REPORTER: Reporter = Reporter {
    component: "default-scheduler",
    user: USER,
};

/// Runs until `stop` turns true.
pub async fn run(
    registry: Registry,
    informer: Arc<Informer>,
    default: Strategy,
    stop: watch::Receiver<bool>,
) {
    crate::runtime::supervise("scheduler", stop, || {
        run_once(&registry, &informer, default)
    })
    .await
}

fn str_at<'a>(o: &'a Object, ptr: &str) -> &'a str {
    o.0.get("spec")
        .and_then(|s| s.pointer(ptr))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether this scheduler places the pod: unbound, not being deleted, ours.
fn wants_placement(o: &Object) -> bool {
    str_at(o, "/nodeName").is_empty()
        && o.deletion_timestamp().is_none()
        && matches!(
            str_at(o, "/schedulerName"),
            "" | "default-scheduler" | "berth"
        )
}

/// Whether a bound pod still takes room on its node.
fn holds_room(o: &Object) -> bool {
    !str_at(o, "/nodeName").is_empty() && !pod_finished(o)
}

#[derive(Default)]
struct State {
    /// The nodes in name order, kept up to date in place (the placement function reads it
    /// as is: nothing is copied per pod).
    snapshot: Snapshot,
    /// Node name -> its index in the snapshot.
    index: HashMap<String, usize>,
    /// Where the next search of a large cluster starts (rotated as Kubernetes does).
    start: usize,
    /// Bound pods that take room: uid -> (node, what it requests).
    placed: HashMap<String, (String, PodInfo)>,
    /// Unbound pods by creation order (resourceVersion of creation) -> object.
    pending: BTreeMap<Key, Object>,
    last: Option<String>,
    /// The message last reported per pending pod (so it is not reported again).
    reported: HashMap<String, String>,
    events: EventBudget,
    /// This scheduler's own binding writes (store key, revision) not yet seen on the watch.
    echoes: std::collections::HashSet<(Vec<u8>, u64)>,
}

impl State {
    fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        let i = *self.index.get(name)?;
        self.snapshot.nodes.get_mut(i)
    }

    fn reindex(&mut self) {
        self.snapshot.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        self.index = self
            .snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
    }

    fn unplace(&mut self, uid: &str) {
        if let Some((node, info)) = self.placed.remove(uid)
            && let Some(n) = self.node_mut(&node)
        {
            n.remove_pod(&info);
        }
    }

    fn place(&mut self, uid: &str, node: &str, info: PodInfo) {
        self.unplace(uid);
        if let Some(n) = self.node_mut(node) {
            n.place_pod(&info);
        }
        self.placed
            .insert(uid.to_string(), (node.to_string(), info));
    }

    /// Takes in a pod's new version; true when it may have freed room.
    fn pod_put(&mut self, o: &Object) -> bool {
        let uid = o.uid().to_string();
        if wants_placement(o) {
            self.pending.insert(key(o), o.clone());
            return false;
        }
        self.pending.remove(&key(o));
        self.reported.remove(&uid);
        if holds_room(o) {
            let node = str_at(o, "/nodeName").to_string();
            if self.placed.get(&uid).is_none_or(|(n, _)| *n != node) {
                self.place(&uid, &node, PodInfo::from_object(o));
            }
            false
        } else {
            let had = self.placed.contains_key(&uid);
            self.unplace(&uid);
            had
        }
    }

    /// Takes in what bindings did: refused ones give their room back; written ones are
    /// remembered, so their echo on the watch is not decoded again.
    fn settle(&mut self, done: Vec<Outcome>) {
        for (uid, written) in done {
            match written {
                Some(at) => {
                    self.echoes.insert(at);
                }
                None => self.unplace(&uid),
            }
        }
    }

    fn pod_deleted(&mut self, o: &Object) -> bool {
        self.pending.remove(&key(o));
        self.reported.remove(o.uid());
        let had = self.placed.contains_key(o.uid());
        self.unplace(o.uid());
        had
    }

    fn node_put(&mut self, o: &Object) {
        let mut n = NodeInfo::from_object(o);
        for (node, info) in self.placed.values() {
            if *node == n.name {
                n.place_pod(info);
            }
        }
        match self.index.get(&n.name) {
            Some(&i) => self.snapshot.nodes[i] = n,
            None => {
                self.snapshot.nodes.push(n);
                self.reindex();
            }
        }
    }

    fn node_deleted(&mut self, name: &str) {
        if let Some(i) = self.index.get(name).copied() {
            self.snapshot.nodes.remove(i);
            self.reindex();
        }
    }
}

async fn run_once(
    registry: &Registry,
    informer: &Informer,
    default: Strategy,
) -> Result<(), Error> {
    let (all, mut changes) = informer.list_and_watch()?;
    let watched = ["pods", "nodes"].map(crate::informer::key_prefix);
    let mut st = State::default();
    st.snapshot.default_strategy = default;
    st.snapshot.nodes = all
        .iter()
        .filter(|o| o.kind() == "Node")
        .map(NodeInfo::from_object)
        .collect();
    st.reindex();
    for o in all.iter().filter(|o| o.kind() == "Pod") {
        st.pod_put(o);
    }
    let mut random_state: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut retry_all = true;
    loop {
        schedule(registry, &mut st, &mut random_state, retry_all).await;
        retry_all = false;
        let Some(batch) = changes.next().await? else {
            return Ok(());
        };
        for change in batch.changes() {
            let ev = change.event;
            // Only pods and nodes matter here (the Events it writes itself are most of the
            // rest): nothing else is decoded.
            if !watched.iter().any(|p| ev.kv.key.starts_with(p)) {
                continue;
            }
            // A binding of its own coming back changes nothing it does not know.
            if ev.typ == EventType::Put
                && !st.echoes.is_empty()
                && st.echoes.remove(&(ev.kv.key.clone(), ev.kv.mod_revision))
            {
                continue;
            }
            let Some(obj) = change.object() else { continue };
            match (obj.kind(), ev.typ) {
                ("Node", EventType::Put) => {
                    st.node_put(obj);
                    retry_all = true;
                }
                ("Node", EventType::Delete) => st.node_deleted(obj.name()),
                ("Pod", EventType::Put) => retry_all |= st.pod_put(obj),
                ("Pod", EventType::Delete) => retry_all |= st.pod_deleted(obj),
                _ => {}
            }
        }
    }
}

/// Places pending pods: all of them after a change that can make room, else only the ones
/// not tried yet. Each decision counts in the snapshot at once; the bindings (durable
/// writes) go out concurrently, so the store's group commit shares their syncs.
async fn schedule(registry: &Registry, st: &mut State, random_state: &mut u64, retry_all: bool) {
    let todo: Vec<Object> = st
        .pending
        .values()
        .filter(|o| retry_all || !st.reported.contains_key(o.uid()))
        .cloned()
        .collect();
    let mut binds = tokio::task::JoinSet::new();
    let (mut batch, mut uids) = (Vec::new(), Vec::new());
    for pod in todo {
        let info = PodInfo::from_object(&pod);
        // xorshift: the random strategy's numbers.
        *random_state ^= *random_state << 13;
        *random_state ^= *random_state >> 7;
        *random_state ^= *random_state << 17;
        let (placed, examined) = berth_scheduler::place_from(
            &st.snapshot,
            &info,
            st.last.as_deref(),
            *random_state,
            st.start,
        );
        if !st.snapshot.nodes.is_empty() {
            st.start = (st.start + examined) % st.snapshot.nodes.len();
        }
        match placed {
            Ok(node) => {
                st.last = Some(node.clone());
                st.pending.remove(&key(&pod));
                st.place(pod.uid(), &node, info);
                uids.push(pod.uid().to_string());
                batch.push((pod, node));
                if batch.len() >= BATCH {
                    flush(registry, &mut st.events, &mut batch, &mut uids, &mut binds);
                    // A few batches in flight share the store's group commits.
                    if binds.len() >= IN_FLIGHT
                        && let Some(Ok(done)) = binds.join_next().await
                    {
                        st.settle(done);
                    }
                }
            }
            Err(u) => {
                if st.reported.get(pod.uid()) != Some(&u.message) {
                    set_unschedulable(registry, &pod, &u.message).await;
                    event(
                        registry,
                        REPORTER,
                        &pod,
                        "Warning",
                        "FailedScheduling",
                        &u.message,
                    )
                    .await;
                }
                st.reported.insert(pod.uid().to_string(), u.message);
            }
        }
    }
    flush(registry, &mut st.events, &mut batch, &mut uids, &mut binds);
    while let Some(r) = binds.join_next().await {
        st.settle(r.unwrap_or_default());
    }
}

/// How a binding ended: its pod's uid, and where its write went (store key, revision), or
/// `None` when it was refused.
type Outcome = (String, Option<(Vec<u8>, u64)>);

fn pods_key(ns: Option<&str>, name: &str) -> Vec<u8> {
    berth_api::kinds::resolve("pods")
        .map(|k| k.key(ns, name).into_bytes())
        .unwrap_or_default()
}

/// A token bucket for Scheduled Events: a burst of 1,000, then 500 a second.
#[derive(Debug)]
struct EventBudget {
    tokens: f64,
    at: std::time::Instant,
}

impl Default for EventBudget {
    fn default() -> Self {
        EventBudget {
            tokens: 1000.0,
            at: std::time::Instant::now(),
        }
    }
}

impl EventBudget {
    /// How many of `n` events may be written now.
    fn take(&mut self, n: usize) -> usize {
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * 500.0).min(1000.0);
        self.at = now;
        let k = (self.tokens.floor() as usize).min(n);
        self.tokens -= k as f64;
        k
    }
}

/// Bindings per store transaction.
const BATCH: usize = 256;
/// Transactions in flight at once.
const IN_FLIGHT: usize = 4;

/// Sends a batch of bindings (with their Scheduled Events) as one transaction; the task
/// answers the uids that could not be bound (bound elsewhere or deleted meanwhile), whose
/// room is given back (the watch brings the rest).
fn flush(
    registry: &Registry,
    budget: &mut EventBudget,
    batch: &mut Vec<(Object, String)>,
    uids: &mut Vec<String>,
    binds: &mut tokio::task::JoinSet<Vec<Outcome>>,
) {
    if batch.is_empty() {
        return;
    }
    let (batch, uids) = (std::mem::take(batch), std::mem::take(uids));
    let registry = registry.clone();
    // Events are best effort, as Kubernetes' event recorder makes them: a burst of bindings
    // records a Scheduled Event for as many as the budget allows, not one write per pod at
    // any rate.
    let allowed = budget.take(batch.len());
    binds.spawn(async move {
        let Some(events) = berth_api::kinds::resolve("events") else {
            return Vec::new();
        };
        let recorded = std::sync::atomic::AtomicUsize::new(0);
        let scheduled = |bound: &Object| {
            if recorded.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= allowed {
                return Vec::new();
            }
            let ns = bound.namespace().unwrap_or("default");
            let node = str_at(bound, "/nodeName");
            let msg = format!("Successfully assigned {ns}/{} to {node}", bound.name());
            berth_apiserver::events::object(bound, REPORTER.component, "Normal", "Scheduled", &msg)
                .map(|e| vec![(events, e)])
                .unwrap_or_default()
        };
        let results = registry.bind_all(&batch, scheduled, USER).await;
        results
            .into_iter()
            .zip(uids)
            .map(|(r, uid)| match r {
                Ok(bound) => {
                    let key = pods_key(bound.namespace(), bound.name());
                    (
                        uid,
                        Some((key, bound.resource_version().parse().unwrap_or(0))),
                    )
                }
                Err(e) => {
                    tracing::debug!(error = %e, "binding failed");
                    (uid, None)
                }
            })
            .collect()
    });
}

async fn set_unschedulable(registry: &Registry, pod: &Object, message: &str) {
    let Some(kind) = berth_api::kinds::resolve("pods") else {
        return;
    };
    let cond = json!({"type": "PodScheduled", "status": "False", "lastTransitionTime": berth_api::timefmt::now_rfc3339(),
        "reason": "Unschedulable", "message": message});
    // The agent reports the full condition list once it runs the pod; until then this is it.
    if let Err(e) = registry
        .merge_patch(
            kind,
            pod.namespace(),
            pod.name(),
            &json!({"status": {"phase": "Pending", "conditions": [cond]}}),
            USER,
            true,
        )
        .await
    {
        tracing::debug!(error = %e, "cannot set PodScheduled");
    }
}

//! Pod placement as a pure function: (cluster snapshot, pod) → a node, or the reasons no node
//! fits, worded as Kubernetes' scheduler words them. No IO: the scheduler loop around it
//! watches pods and nodes, keeps the snapshot, and binds.
//!
//! Filters: resource requests against allocatable minus what is placed; `nodeSelector`;
//! required node affinity; taints (NoSchedule, NoExecute) against tolerations; cordoned and
//! not-ready nodes; the node's pod count. Strategies pick among the nodes that pass:
//! **spread** (fewest replicas of the pod's owner, then least allocated), **binpack** (most
//! allocated), **round-robin** (the next node after the last one chosen, in name order) and
//! **random**.
//!
//! Invariant: the result depends only on the arguments (the random strategy takes its random
//! number as one), so every decision can be replayed in a test.

use std::collections::{BTreeMap, HashMap};

use berth_api::object::Object;
use berth_api::quantity::Quantity;
use serde_json::Value;

/// How to choose among nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Spread,
    Binpack,
    RoundRobin,
    Random,
}

impl Strategy {
    /// The annotation a workload names its strategy with.
    pub const ANNOTATION: &'static str = "berth.dev/scheduling-strategy";

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "spread" => Some(Strategy::Spread),
            "binpack" => Some(Strategy::Binpack),
            "round-robin" | "roundrobin" => Some(Strategy::RoundRobin),
            "random" => Some(Strategy::Random),
            _ => None,
        }
    }
}

/// CPU in thousandths, memory in bytes, and a pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory: self.memory + o.memory,
            pods: self.pods + o.pods,
        }
    }

    /// From a `{cpu: ..., memory: ..., pods: ...}` map of quantities; unreadable entries
    /// count as zero (validation has refused them already).
    pub fn from_map(v: Option<&Value>) -> Resources {
        let q = |k: &str| {
            v.and_then(|m| m.get(k)).and_then(|x| match x {
                Value::String(s) => Quantity::parse(s).ok(),
                Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
                _ => None,
            })
        };
        Resources {
            cpu_millis: q("cpu").map_or(0, |q| q.millis() as i64),
            memory: q("memory").map_or(0, |q| q.units_ceil() as i64),
            pods: q("pods").map_or(0, |q| q.units_ceil() as i64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Toleration {
    pub key: String,
    /// `Equal` (default) or `Exists`.
    pub operator: String,
    pub value: String,
    /// Empty: every effect.
    pub effect: String,
}

impl Toleration {
    fn tolerates(&self, t: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != t.effect {
            return false;
        }
        if self.key.is_empty() {
            return self.operator == "Exists";
        }
        if self.key != t.key {
            return false;
        }
        match self.operator.as_str() {
            "Exists" => true,
            _ => self.value == t.value,
        }
    }
}

/// One requirement of a node selector term (`matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.operator.as_str() {
            "In" => v.is_some_and(|v| self.values.contains(v)),
            "NotIn" => !v.is_some_and(|v| self.values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            "Gt" | "Lt" => {
                let (Some(v), Some(w)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|w| w.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == "Gt" { v > w } else { v < w }
            }
            _ => false,
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    pub allocatable: Resources,
    /// What the pods placed on it request (each counts 1 pod).
    pub requested: Resources,
    /// Pods placed on it per owner uid.
    pub by_owner: HashMap<String, u32>,
}

/// A pod as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: any term matches (each term: all its requirements).
    pub affinity_terms: Vec<Vec<Requirement>>,
    pub tolerations: Vec<Toleration>,
    pub owner: Option<String>,
    pub strategy: Option<Strategy>,
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// What a pod spec requests: the containers' sum, or the largest init container's, whichever
/// is larger (Kubernetes' effective request), plus one pod.
pub fn pod_requests(spec: &Value) -> Resources {
    let each = |list: &str| -> Vec<Resources> {
        spec.get(list)
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        Resources::from_map(c.get("resources").and_then(|r| r.get("requests")))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let sum = each("containers")
        .into_iter()
        .fold(Resources::default(), Resources::add);
    let init = each("initContainers");
    let max_init = Resources {
        cpu_millis: init.iter().map(|r| r.cpu_millis).max().unwrap_or(0),
        memory: init.iter().map(|r| r.memory).max().unwrap_or(0),
        pods: 0,
    };
    Resources {
        cpu_millis: sum.cpu_millis.max(max_init.cpu_millis),
        memory: sum.memory.max(max_init.memory),
        pods: 1,
    }
}

impl PodInfo {
    pub fn from_object(pod: &Object) -> PodInfo {
        let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        let affinity_terms = spec
            .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array)
            .map(|terms| {
                terms
                    .iter()
                    .map(|t| {
                        t.get("matchExpressions")
                            .and_then(Value::as_array)
                            .map(|es| {
                                es.iter()
                                    .map(|e| Requirement {
                                        key: s(e, "key"),
                                        operator: s(e, "operator"),
                                        values: e
                                            .get("values")
                                            .and_then(Value::as_array)
                                            .map(|vs| {
                                                vs.iter()
                                                    .filter_map(|v| v.as_str().map(String::from))
                                                    .collect()
                                            })
                                            .unwrap_or_default(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tolerations = spec
            .get("tolerations")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| Toleration {
                        key: s(t, "key"),
                        operator: s(t, "operator"),
                        value: s(t, "value"),
                        effect: s(t, "effect"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        PodInfo {
            namespace: pod.namespace().unwrap_or("").to_string(),
            name: pod.name().to_string(),
            requests: pod_requests(&spec),
            node_selector: str_map(spec.get("nodeSelector")),
            affinity_terms,
            tolerations,
            owner: pod.owner_references().first().map(|o| o.uid.clone()),
            strategy: pod
                .annotation(Strategy::ANNOTATION)
                .and_then(Strategy::parse),
        }
    }
}

impl NodeInfo {
    /// A node from its object (no pods placed yet: see `place_pod`).
    pub fn from_object(node: &Object) -> NodeInfo {
        let spec = node.get("spec").cloned().unwrap_or(Value::Null);
        let status = node.get("status").cloned().unwrap_or(Value::Null);
        let ready = berth_api::object::condition(&status, "Ready") == Some("True");
        let taints = spec
            .get("taints")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| Taint {
                        key: s(t, "key"),
                        value: s(t, "value"),
                        effect: s(t, "effect"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut allocatable = Resources::from_map(status.get("allocatable"));
        if status.pointer("/allocatable/pods").is_none() {
            allocatable.pods = 110;
        }
        NodeInfo {
            name: node.name().to_string(),
            labels: node.labels(),
            taints,
            unschedulable: spec
                .get("unschedulable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ready,
            allocatable,
            requested: Resources::default(),
            by_owner: HashMap::new(),
        }
    }

    /// Counts a pod as placed here.
    pub fn place_pod(&mut self, pod: &PodInfo) {
        self.requested = self.requested.add(pod.requests);
        if let Some(o) = &pod.owner {
            *self.by_owner.entry(o.clone()).or_default() += 1;
        }
    }

    /// Stops counting a pod placed here.
    pub fn remove_pod(&mut self, pod: &PodInfo) {
        self.requested.cpu_millis -= pod.requests.cpu_millis;
        self.requested.memory -= pod.requests.memory;
        self.requested.pods -= pod.requests.pods;
        if let Some(o) = &pod.owner
            && let Some(n) = self.by_owner.get_mut(o)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_owner.remove(o);
            }
        }
    }

    /// Why the pod cannot go here (Kubernetes' wording), or `None` when it fits.
    fn unfit(&self, pod: &PodInfo) -> Option<String> {
        if !self.ready {
            return Some("node(s) were not ready".into());
        }
        if self.unschedulable {
            return Some("node(s) were unschedulable".into());
        }
        if let Some(t) = self
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !pod.tolerations.iter().any(|tol| tol.tolerates(t)))
        {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            ));
        }
        if pod
            .node_selector
            .iter()
            .any(|(k, v)| self.labels.get(k) != Some(v))
            || (!pod.affinity_terms.is_empty()
                && !pod
                    .affinity_terms
                    .iter()
                    .any(|term| term.iter().all(|r| r.matches(&self.labels))))
        {
            return Some("node(s) didn't match Pod's node affinity/selector".into());
        }
        let after = self.requested.add(pod.requests);
        if after.pods > self.allocatable.pods {
            return Some("Too many pods".into());
        }
        if pod.requests.cpu_millis > 0 && after.cpu_millis > self.allocatable.cpu_millis {
            return Some("Insufficient cpu".into());
        }
        if pod.requests.memory > 0 && after.memory > self.allocatable.memory {
            return Some("Insufficient memory".into());
        }
        None
    }

    /// How full the node would be with the pod: the mean of its CPU and memory fractions.
    fn fullness(&self, pod: &PodInfo) -> f64 {
        let after = self.requested.add(pod.requests);
        let frac = |used: i64, cap: i64| {
            if cap <= 0 {
                1.0
            } else {
                used as f64 / cap as f64
            }
        };
        (frac(after.cpu_millis, self.allocatable.cpu_millis)
            + frac(after.memory, self.allocatable.memory))
            / 2.0
    }
}

/// The cluster as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    /// The default strategy for pods that name none.
    pub default_strategy: Strategy,
}

/// No node fits: Kubernetes' message, e.g. "0/3 nodes are available: 1 Insufficient memory,
/// 2 node(s) had untolerated taint {dedicated: gpu}."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub message: String,
}

/// How many feasible nodes to find before choosing among them, as Kubernetes'
/// `percentageOfNodesToScore` does by default: all of up to 100 nodes; of more, 50% less 1% per
/// 125 nodes, at least 5% and at least 100.
pub fn nodes_to_find(n: usize) -> usize {
    if n <= 100 {
        return n;
    }
    let pct = 50usize.saturating_sub(n / 125).max(5);
    (n * pct / 100).max(100)
}

/// Where `pod` goes, looking at every node. `last` is the node the round-robin strategy chose
/// last (it goes on from there); `random` is a random number for the random strategy.
pub fn place(
    snapshot: &Snapshot,
    pod: &PodInfo,
    last: Option<&str>,
    random: u64,
) -> Result<String, Unschedulable> {
    place_from(snapshot, pod, last, random, 0).0
}

/// As `place`, but in a large cluster spread and random choose among the first
/// `nodes_to_find` feasible nodes from `start` (the caller rotates it by the count returned,
/// as Kubernetes' scheduler does); binpack and round-robin always look at every node.
pub fn place_from(
    snapshot: &Snapshot,
    pod: &PodInfo,
    last: Option<&str>,
    random: u64,
    start: usize,
) -> (Result<String, Unschedulable>, usize) {
    let strategy = pod.strategy.unwrap_or(snapshot.default_strategy);
    let n = snapshot.nodes.len();
    let want = match strategy {
        Strategy::Spread | Strategy::Random => nodes_to_find(n),
        Strategy::Binpack | Strategy::RoundRobin => n,
    };
    let mut fits: Vec<&NodeInfo> = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut examined = 0;
    for i in 0..n {
        let node = &snapshot.nodes[(start + i) % n];
        examined += 1;
        match node.unfit(pod) {
            None => {
                fits.push(node);
                if fits.len() >= want {
                    break;
                }
            }
            Some(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    if fits.is_empty() {
        let total = snapshot.nodes.len();
        let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let message = if total == 0 {
            "0/0 nodes are available: no nodes registered; start an agent (berth agent) or check `berth get nodes`.".to_string()
        } else {
            format!("0/{total} nodes are available: {}.", detail.join(", "))
        };
        return (Err(Unschedulable { message }), examined);
    }
    fits.sort_by(|a, b| a.name.cmp(&b.name));
    let chosen = match strategy {
        Strategy::Spread => {
            let owned = |n: &NodeInfo| {
                pod.owner
                    .as_ref()
                    .and_then(|o| n.by_owner.get(o))
                    .copied()
                    .unwrap_or(0)
            };
            fits.iter()
                .min_by(|a, b| {
                    owned(a)
                        .cmp(&owned(b))
                        .then(a.fullness(pod).total_cmp(&b.fullness(pod)))
                        .then(a.name.cmp(&b.name))
                })
                .copied()
        }
        Strategy::Binpack => fits
            .iter()
            .max_by(|a, b| {
                a.fullness(pod)
                    .total_cmp(&b.fullness(pod))
                    .then(b.name.cmp(&a.name))
            })
            .copied(),
        Strategy::RoundRobin => {
            let next = last.map_or(0, |l| fits.partition_point(|n| n.name.as_str() <= l));
            Some(fits[next % fits.len()])
        }
        Strategy::Random => Some(fits[(random % fits.len() as u64) as usize]),
    };
    (
        Ok(chosen.map(|n| n.name.clone()).unwrap_or_default()),
        examined,
    )
}

#[cfg(test)]
mod tests;

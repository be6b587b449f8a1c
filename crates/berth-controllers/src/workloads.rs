//! The workload controllers: ReplicaSets keep their number of pods; Deployments roll their
//! template out through ReplicaSets (RollingUpdate with maxSurge/maxUnavailable, or
//! Recreate), keep a revision history, and report status as Kubernetes does.
//!
//! Shape (kube-runtime's): the informer feeds a cache of Deployments, ReplicaSets and Pods; each
//! change queues the objects it concerns (a pod → its ReplicaSet; a ReplicaSet → itself and
//! its Deployment); a reconcile pass runs each queued object's pure decision against the
//! cache and writes the result through the registry.
//!
//! Invariant: what a pass writes is put into the cache at once (created pods, deleted pods,
//! new replica counts), so the next pass never acts twice on a change the watch has not
//! brought back yet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_api::object::Object;
use berth_apiserver::events::{Reporter, record as event};
use berth_apiserver::registry::{DeleteOptions, Registry};
use berth_store::EventType;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::{Error, Key, key, pod_finished, pod_phase, pod_ready};

const USER: &str = "system:controller:workloads";

/// Events about ReplicaSets and their pods.
const REPLICASETS: Reporter = Reporter {
    component: "replicaset-controller",
    user: USER,
};

/// Events about Deployments.
const DEPLOYMENTS: Reporter = Reporter {
    component: "deployment-controller",
    user: USER,
};
/// The label that ties a ReplicaSet (and its pods) to one version of a Deployment's template.
const HASH_LABEL: &str = "pod-template-hash";
/// The revision a ReplicaSet stands for in its Deployment's history.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, informer: Arc<Informer>, stop: watch::Receiver<bool>) {
    crate::runtime::supervise_informed("workload controllers", registry, informer, stop, run_once)
        .await
}

#[derive(Default)]
struct Cache {
    deployments: BTreeMap<Key, Object>,
    replicasets: BTreeMap<Key, Object>,
    pods: BTreeMap<Key, Object>,
    /// Rollouts to look at again when their progress deadline passes.
    deadlines: BTreeMap<Key, tokio::time::Instant>,
}

fn controller_uid(o: &Object) -> Option<String> {
    let refs = o.get("metadata")?.get("ownerReferences")?.as_array()?;
    refs.iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid")?.as_str().map(String::from))
}

fn int(v: Option<&Value>, default: i64) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(default)
}

fn spec_replicas(o: &Object) -> i64 {
    int(o.get("spec").and_then(|s| s.get("replicas")), 1)
}

fn status_int(o: &Object, f: &str) -> i64 {
    int(o.get("status").and_then(|s| s.get(f)), 0)
}

/// A pod that counts toward its ReplicaSet: not being deleted, not finished.
fn pod_active(p: &Object) -> bool {
    p.deletion_timestamp().is_none() && !pod_finished(p)
}

fn owner_ref(o: &Object) -> Value {
    json!([{
        "apiVersion": o.api_version(), "kind": o.kind(), "name": o.name(), "uid": o.uid(),
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// A stable hash of a pod template (FNV-1a over its canonical JSON), as the label value.
fn template_hash(template: &Value) -> String {
    use berth_api::names::{SAFE_ALPHABET, fnv1a};
    let h = fnv1a(&serde_json::to_vec(&canonical(template)).unwrap_or_default());
    (0..10)
        .map(|i| SAFE_ALPHABET[((h >> (i * 6)) % SAFE_ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            json!(sorted)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A template without the hash label, for comparing a ReplicaSet's to its Deployment's.
fn template_sans_hash(t: Option<&Value>) -> Value {
    let mut t = t.cloned().unwrap_or(Value::Null);
    if let Some(Value::Object(l)) = t.pointer_mut("/metadata/labels") {
        l.remove(HASH_LABEL);
    }
    canonical(&t)
}

/// Kubernetes' `intstr` against a total: an int, or a percentage rounded up (surge) or down
/// (unavailable). Saturating: a stored object from before validation held its numbers to
/// int32 cannot overflow it.
fn scaled(v: Option<&Value>, total: i64, default_pct: i64, round_up: bool) -> i64 {
    let pct = match v {
        Some(Value::Number(n)) => return n.as_i64().unwrap_or(0),
        Some(Value::String(s)) if s.ends_with('%') => {
            s.trim_end_matches('%').parse().unwrap_or(default_pct)
        }
        _ => default_pct,
    };
    let part = total.saturating_mul(pct);
    if round_up {
        part.saturating_add(99) / 100
    } else {
        part / 100
    }
}

/// `secs` from now, or None when that is past what a clock holds (never, in practice).
fn after_secs(secs: u64) -> Option<tokio::time::Instant> {
    tokio::time::Instant::now().checked_add(Duration::from_secs(secs))
}

async fn run_once(registry: &Registry, informer: &Informer) -> Result<(), Error> {
    let (all, mut changes) = informer.list_and_watch()?;
    let watched = ["deployments", "replicasets", "pods"].map(crate::informer::key_prefix);
    let mut cache = Cache::default();
    let mut queue: BTreeSet<(u8, Key)> = BTreeSet::new();
    for o in all {
        match o.kind() {
            "Deployment" => {
                queue.insert((0, key(&o)));
                cache.deployments.insert(key(&o), o);
            }
            "ReplicaSet" => {
                queue.insert((1, key(&o)));
                cache.replicasets.insert(key(&o), o);
            }
            "Pod" => {
                cache.pods.insert(key(&o), o);
            }
            _ => {}
        }
    }
    loop {
        // ReplicaSets first (they make pods), then the Deployments over them.
        while let Some(item) = queue.pop_last() {
            match item {
                (1, k) => reconcile_rs(registry, &mut cache, &k, &mut queue).await,
                (_, k) => reconcile_deployment(registry, &mut cache, &k).await,
            }
        }
        let next_deadline = cache.deadlines.values().min().copied();
        let batch = tokio::select! {
            b = changes.next() => b?,
            _ = async {
                match next_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                let due: Vec<Key> = cache
                    .deadlines
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    cache.deadlines.remove(&k);
                    queue.insert((0, k));
                }
                continue;
            }
        };
        let Some(batch) = batch else {
            return Ok(());
        };
        for change in batch.changes() {
            let ev = change.event;
            // Only Deployments, ReplicaSets and Pods matter here: nothing else is decoded.
            if !watched.iter().any(|p| ev.kv.key.starts_with(p)) {
                continue;
            }
            let Some(o) = change.object().cloned() else {
                continue;
            };
            let put = ev.typ == EventType::Put;
            match o.kind() {
                "Deployment" => {
                    queue.insert((0, key(&o)));
                    if put {
                        cache.deployments.insert(key(&o), o);
                    } else {
                        cache.deployments.remove(&key(&o));
                    }
                }
                "ReplicaSet" => {
                    queue.insert((1, key(&o)));
                    if let Some(d) = owner_key(&cache.deployments, &o) {
                        queue.insert((0, d));
                    }
                    if put {
                        cache.replicasets.insert(key(&o), o);
                    } else {
                        cache.replicasets.remove(&key(&o));
                    }
                }
                "Pod" => {
                    if let Some(rs) = owner_key(&cache.replicasets, &o) {
                        queue.insert((1, rs));
                    }
                    if put {
                        cache.pods.insert(key(&o), o);
                    } else {
                        cache.pods.remove(&key(&o));
                    }
                }
                _ => {}
            }
        }
    }
}

fn owner_key(owners: &BTreeMap<Key, Object>, o: &Object) -> Option<Key> {
    let uid = controller_uid(o)?;
    let ns = o.namespace().unwrap_or("");
    owners
        .range((ns.to_string(), String::new())..)
        .take_while(|((n, _), _)| n == ns)
        .find(|(_, owner)| owner.uid() == uid)
        .map(|(k, _)| k.clone())
}

fn owned<'a>(objects: &'a BTreeMap<Key, Object>, owner: &Object) -> Vec<&'a Object> {
    let ns = owner.namespace().unwrap_or("").to_string();
    objects
        .range((ns.clone(), String::new())..)
        .take_while(|((n, _), _)| *n == ns)
        .map(|(_, o)| o)
        .filter(|o| controller_uid(o).as_deref() == Some(owner.uid()))
        .collect()
}

async fn patch_status(registry: &Registry, kind: &str, o: &Object, status: Value) {
    let Some(k) = berth_api::kinds::resolve(kind) else {
        return;
    };
    let mut current = o.get("status").cloned().unwrap_or(json!({}));
    // Conditions' times aside, nothing changed: no write.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(Value::Array(cs)) = v.get_mut("conditions") {
            for c in cs {
                if let Value::Object(m) = c {
                    m.remove("lastUpdateTime");
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    if let (Value::Object(cur), Value::Object(new)) = (&mut current, &status) {
        for (k, v) in new {
            cur.insert(k.clone(), v.clone());
        }
    }
    if strip(&current) == strip(o.get("status").unwrap_or(&json!({}))) {
        return;
    }
    if let Err(e) = registry
        .merge_patch(
            k,
            o.namespace(),
            o.name(),
            &json!({"status": status}),
            USER,
            true,
        )
        .await
    {
        tracing::debug!(error = %e, "cannot update {kind} status");
    }
}

/// Which pods of a ReplicaSet go first when it scales down, as Kubernetes ranks them: not
/// yet on a node, then pending, then not ready, then the newest.
fn deletion_rank(p: &Object) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let bound = p
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let created = p
        .metadata()
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (
        u8::from(bound),
        u8::from(pod_phase(p) == "Running"),
        u8::from(pod_ready(p)),
        std::cmp::Reverse(created),
    )
}

async fn reconcile_rs(
    registry: &Registry,
    cache: &mut Cache,
    k: &Key,
    queue: &mut BTreeSet<(u8, Key)>,
) {
    let Some(rs) = cache.replicasets.get(k).cloned() else {
        return;
    };
    if rs.deletion_timestamp().is_some() {
        return;
    }
    let pods: Vec<Object> = owned(&cache.pods, &rs).into_iter().cloned().collect();
    let active: Vec<&Object> = pods.iter().filter(|p| pod_active(p)).collect();
    let want = spec_replicas(&rs);
    let diff = want.saturating_sub(active.len() as i64);
    let Some(pod_kind) = berth_api::kinds::resolve("pods") else {
        return;
    };
    let ns = rs.namespace().unwrap_or("default").to_string();
    if diff > 0 {
        let template = rs
            .get("spec")
            .and_then(|s| s.get("template"))
            .cloned()
            .unwrap_or_default();
        for _ in 0..diff {
            let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
            // Named by the server from `generateName`, as Kubernetes' ReplicaSet controller
            // names its pods.
            meta["generateName"] = json!(format!("{}-", rs.name()));
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = owner_ref(&rs);
            if let Some(m) = meta.as_object_mut() {
                m.remove("name");
                m.remove("uid");
                m.remove("resourceVersion");
            }
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or_default()});
            let Some(obj) = Object::from_value(pod) else {
                continue;
            };
            match registry.create(pod_kind, Some(&ns), obj, USER, false).await {
                Ok(created) => {
                    cache.pods.insert(key(&created), created);
                }
                Err(e) => {
                    tracing::warn!(rs = rs.name(), error = %e, "cannot create a pod");
                    event(
                        registry,
                        REPLICASETS,
                        &rs,
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    )
                    .await;
                    break;
                }
            }
        }
    } else if diff < 0 {
        let mut victims: Vec<&Object> = active.clone();
        victims.sort_by_key(|p| deletion_rank(p));
        for p in victims
            .into_iter()
            .take(usize::try_from(diff.unsigned_abs()).unwrap_or(usize::MAX))
        {
            match registry
                .delete(
                    pod_kind,
                    Some(&ns),
                    p.name(),
                    &DeleteOptions::default(),
                    USER,
                )
                .await
            {
                Ok(mut gone) => {
                    if gone.deletion_timestamp().is_none() {
                        gone.set_meta("deletionTimestamp", "now");
                    }
                    cache.pods.insert(key(&gone), gone);
                }
                Err(e) => tracing::debug!(error = %e, "cannot delete a pod"),
            }
        }
    }
    let pods: Vec<Object> = owned(&cache.pods, &rs).into_iter().cloned().collect();
    let active: Vec<&Object> = pods.iter().filter(|p| pod_active(p)).collect();
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": active.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs.generation(),
    });
    patch_status(registry, "replicasets", &rs, status).await;
    if let Some(d) = owner_key(&cache.deployments, &rs) {
        queue.insert((0, d));
    }
}

async fn reconcile_deployment(registry: &Registry, cache: &mut Cache, k: &Key) {
    let Some(d) = cache.deployments.get(k).cloned() else {
        return;
    };
    if d.deletion_timestamp().is_some() {
        return;
    }
    let Some(rs_kind) = berth_api::kinds::resolve("replicasets") else {
        return;
    };
    let ns = d.namespace().unwrap_or("default").to_string();
    let spec = d.get("spec").cloned().unwrap_or_default();
    let replicas = spec_replicas(&d);
    let template = spec.get("template").cloned().unwrap_or_default();
    let want = template_sans_hash(Some(&template));
    let mut sets: Vec<Object> = owned(&cache.replicasets, &d).into_iter().cloned().collect();
    let revision_of = |o: &Object| -> i64 {
        o.annotation(REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    sets.sort_by_key(revision_of);
    let max_revision = sets.iter().map(revision_of).max().unwrap_or(0);
    let new_idx = sets
        .iter()
        .position(|rs| template_sans_hash(rs.get("spec").and_then(|s| s.get("template"))) == want);
    let strategy = spec
        .pointer("/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let paused = spec.get("paused").and_then(Value::as_bool).unwrap_or(false);
    if paused {
        return;
    }
    // The ReplicaSet of the current template: found, brought to the newest revision, or made.
    let new_rs = match new_idx {
        Some(i) => {
            let rs = sets.remove(i);
            if revision_of(&rs) < max_revision {
                // Rolling back to an old template makes its ReplicaSet the newest revision.
                let body = json!({"metadata": {"annotations": {REVISION: max_revision.saturating_add(1).to_string()}}});
                set_rs(registry, cache, &rs, body).await.unwrap_or(rs)
            } else {
                rs
            }
        }
        None => {
            let hash = template_hash(&template);
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut selector = spec.get("selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut labels = t["metadata"]["labels"].clone();
            labels[HASH_LABEL] = json!(hash);
            // It starts empty; the rollout below scales it.
            let initial = 0;
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("{}-{hash}", d.name()), "namespace": ns, "labels": labels,
                    "annotations": {REVISION: max_revision.saturating_add(1).to_string()},
                    "ownerReferences": owner_ref(&d),
                },
                "spec": {"replicas": initial, "selector": selector, "template": t},
            });
            let Some(obj) = Object::from_value(rs) else {
                return;
            };
            match registry.create(rs_kind, Some(&ns), obj, USER, false).await {
                Ok(created) => {
                    cache.replicasets.insert(key(&created), created.clone());
                    event(
                        registry,
                        DEPLOYMENTS,
                        &d,
                        "Normal",
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {} to {initial}", created.name()),
                    )
                    .await;
                    created
                }
                Err(e) => {
                    tracing::warn!(deployment = d.name(), error = %e, "cannot create a replica set");
                    return;
                }
            }
        }
    };
    let old: Vec<Object> = sets;
    let old_pods: i64 = old
        .iter()
        .map(|rs| {
            owned(&cache.pods, rs)
                .into_iter()
                .filter(|p| p.deletion_timestamp().is_none())
                .count() as i64
        })
        .sum();
    let ready_of = |rs: &Object| status_int(rs, "readyReplicas");
    let new_target;
    if strategy == "Recreate" {
        for rs in old.iter().filter(|rs| spec_replicas(rs) > 0) {
            scale(registry, cache, &d, rs, 0).await;
        }
        // The new version starts once every old pod is gone.
        new_target = if old_pods == 0 { replicas } else { 0 };
        if spec_replicas(&new_rs) != new_target {
            scale(registry, cache, &d, &new_rs, new_target).await;
        }
    } else {
        let surge = scaled(
            spec.pointer("/strategy/rollingUpdate/maxSurge"),
            replicas,
            25,
            true,
        );
        let mut unavailable = scaled(
            spec.pointer("/strategy/rollingUpdate/maxUnavailable"),
            replicas,
            25,
            false,
        );
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        let old_total = old
            .iter()
            .map(spec_replicas)
            .fold(0i64, i64::saturating_add);
        let total = spec_replicas(&new_rs).saturating_add(old_total);
        // Scale up the new set within the surge.
        let mut target = spec_replicas(&new_rs);
        if target < replicas {
            let room = replicas.saturating_add(surge).saturating_sub(total);
            if room > 0 {
                target = target.saturating_add(room).min(replicas);
            }
        } else if target > replicas {
            target = replicas;
        }
        if target != spec_replicas(&new_rs) {
            scale(registry, cache, &d, &new_rs, target).await;
        }
        new_target = target;
        // Scale down the old sets as far as availability allows: first what is not ready,
        // then ready pods down to replicas - maxUnavailable available in all.
        let min_available = replicas.saturating_sub(unavailable);
        let new_unavailable = target.saturating_sub(ready_of(&new_rs)).max(0);
        let all_pods = target.saturating_add(old_total);
        let mut budget = all_pods
            .saturating_sub(min_available)
            .saturating_sub(new_unavailable);
        for rs in old.iter() {
            let cur = spec_replicas(rs);
            if cur <= 0 {
                continue;
            }
            let unhealthy = cur.saturating_sub(ready_of(rs)).max(0);
            let mut cut = unhealthy.min(cur);
            let healthy_cut = budget.max(0).min(cur - cut);
            cut += healthy_cut;
            budget -= healthy_cut;
            if cut > 0 {
                scale(registry, cache, &d, rs, cur - cut).await;
            }
        }
    }
    // History: old sets at zero beyond revisionHistoryLimit go, oldest first.
    let limit = int(spec.get("revisionHistoryLimit"), 10).max(0) as usize;
    let empty: Vec<&Object> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_int(rs, "replicas") == 0)
        .collect();
    if empty.len() > limit {
        for rs in empty.iter().take(empty.len() - limit) {
            let _ = registry
                .delete(
                    rs_kind,
                    Some(&ns),
                    rs.name(),
                    &DeleteOptions::default(),
                    USER,
                )
                .await;
        }
    }
    // Status.
    let sets_now: Vec<Object> = owned(&cache.replicasets, &d).into_iter().cloned().collect();
    let total_replicas = sets_now
        .iter()
        .map(|rs| status_int(rs, "replicas"))
        .fold(0i64, i64::saturating_add);
    let ready = sets_now
        .iter()
        .map(ready_of)
        .fold(0i64, i64::saturating_add);
    let new_now = cache
        .replicasets
        .get(&key(&new_rs))
        .cloned()
        .unwrap_or(new_rs.clone());
    let updated = status_int(&new_now, "replicas");
    let unavailable_n = replicas.saturating_sub(ready).max(0);
    let min_available = replicas.saturating_sub(scaled(
        spec.pointer("/strategy/rollingUpdate/maxUnavailable"),
        replicas,
        25,
        false,
    ));
    let now = berth_api::timefmt::now_rfc3339();
    let available = ready >= min_available.min(replicas);
    let complete = updated == replicas
        && ready >= replicas
        && total_replicas == replicas
        && new_target == replicas;
    let progressing = progress(
        &d,
        complete,
        new_rs.name(),
        [total_replicas, updated, ready],
        &now,
    );
    if let Some(at) = progressing.recheck {
        cache.deadlines.insert(k.clone(), at);
    } else {
        cache.deadlines.remove(k);
    }
    let status = json!({
        "observedGeneration": d.generation(),
        "replicas": total_replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": unavailable_n,
        "conditions": [
            {"type": "Available", "status": if available { "True" } else { "False" },
             "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
             "lastUpdateTime": now, "lastTransitionTime": now},
            progressing.condition,
        ],
    });
    patch_status(registry, "deployments", &d, status).await;
}

/// The Progressing condition, and when to look again.
struct Progress {
    condition: Value,
    /// When the deadline passes, if nothing moves before.
    recheck: Option<tokio::time::Instant>,
}

/// Kubernetes' progress deadline: a rollout that makes no progress (no new, updated or ready
/// replica) for `progressDeadlineSeconds` (600 by default) is marked Progressing=False,
/// ProgressDeadlineExceeded; it still goes on should the pods come up later.
fn progress(d: &Object, complete: bool, new_rs: &str, counts: [i64; 3], now: &str) -> Progress {
    let old_status = d.get("status").cloned().unwrap_or_default();
    let old = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .unwrap_or_default();
    let deadline = berth_api::validate::seconds_of(
        d.get("spec").and_then(|s| s.get("progressDeadlineSeconds")),
        600,
    )
    .max(1);
    let old_counts = ["replicas", "updatedReplicas", "readyReplicas"]
        .map(|f| old_status.get(f).and_then(Value::as_i64).unwrap_or(-1));
    let moved = old_counts != counts
        || old_status.get("observedGeneration").and_then(Value::as_i64) != Some(d.generation())
        || !old["message"].as_str().unwrap_or("").contains(new_rs);
    let old_str = |f: &str| old[f].as_str().unwrap_or(now).to_string();
    let (status, reason, message, updated, recheck) = if complete {
        let m = format!("ReplicaSet \"{new_rs}\" has successfully progressed.");
        ("True", "NewReplicaSetAvailable", m, now.to_string(), None)
    } else if moved {
        let m = format!("ReplicaSet \"{new_rs}\" is progressing.");
        (
            "True",
            "ReplicaSetUpdated",
            m,
            now.to_string(),
            after_secs(deadline),
        )
    } else {
        let last = old_str("lastUpdateTime");
        let since = berth_api::timefmt::parse_rfc3339(&last)
            .ok()
            .map(|t| berth_api::timefmt::now_nanos().saturating_sub(t) / 1_000_000_000)
            .unwrap_or(0);
        if old["reason"] == "ProgressDeadlineExceeded" || since >= deadline {
            let m = format!("ReplicaSet \"{new_rs}\" has timed out progressing.");
            ("False", "ProgressDeadlineExceeded", m, last, None)
        } else {
            let m = format!("ReplicaSet \"{new_rs}\" is progressing.");
            let left = deadline - since;
            ("True", "ReplicaSetUpdated", m, last, after_secs(left))
        }
    };
    let transition = if old["status"] == status {
        old_str("lastTransitionTime")
    } else {
        now.to_string()
    };
    Progress {
        condition: json!({"type": "Progressing", "status": status, "reason": reason,
            "message": message, "lastUpdateTime": updated, "lastTransitionTime": transition}),
        recheck,
    }
}

async fn set_rs(
    registry: &Registry,
    cache: &mut Cache,
    rs: &Object,
    body: Value,
) -> Option<Object> {
    let k = berth_api::kinds::resolve("replicasets")?;
    match registry
        .merge_patch(k, rs.namespace(), rs.name(), &body, USER, false)
        .await
    {
        Ok(updated) => {
            cache.replicasets.insert(key(&updated), updated.clone());
            Some(updated)
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot update a replica set");
            None
        }
    }
}

async fn scale(registry: &Registry, cache: &mut Cache, d: &Object, rs: &Object, to: i64) {
    let from = spec_replicas(rs);
    if set_rs(registry, cache, rs, json!({"spec": {"replicas": to}}))
        .await
        .is_some()
    {
        let verb = if to > from { "up" } else { "down" };
        event(
            registry,
            DEPLOYMENTS,
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!(
                "Scaled {verb} replica set {} from {from} to {to}",
                rs.name()
            ),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intstr_and_hashes() {
        assert_eq!(scaled(Some(&json!("25%")), 3, 25, true), 1);
        assert_eq!(scaled(Some(&json!("25%")), 3, 25, false), 0);
        assert_eq!(scaled(Some(&json!(2)), 3, 25, false), 2);
        assert_eq!(scaled(None, 10, 25, true), 3);
        assert_eq!(scaled(None, 10, 25, false), 2);
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = json!({"spec": {"containers": [{"image": "i", "name": "c"}]}, "metadata": {"labels": {"app": "x"}}});
        assert_eq!(
            template_hash(&a),
            template_hash(&b),
            "key order does not matter"
        );
        let c = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "j"}]}});
        assert_ne!(template_hash(&a), template_hash(&c));
        let mut with_hash = a.clone();
        with_hash["metadata"]["labels"][HASH_LABEL] = json!("abc");
        assert_eq!(
            template_sans_hash(Some(&with_hash)),
            template_sans_hash(Some(&a))
        );
    }

    #[test]
    fn numbers_past_int32_saturate() {
        assert_eq!(
            scaled(Some(&json!("100%")), i64::MAX, 25, true),
            i64::MAX / 100
        );
        assert_eq!(scaled(Some(&json!(i64::MAX)), 3, 25, true), i64::MAX);
        // A deadline no clock holds is read as int32's maximum; one of a stored object that
        // is not a number at all counts as the default.
        for deadline in [json!(i64::MAX), json!(u64::MAX), json!(-1), json!("soon")] {
            let d = Object::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "generation": 1},
                "spec": {"progressDeadlineSeconds": deadline}}))
            .unwrap();
            let p = progress(&d, false, "d-1", [1, 1, 0], "2026-01-01T00:00:00Z");
            assert!(p.recheck.is_some(), "{deadline}");
            assert_eq!(p.condition["reason"], "ReplicaSetUpdated");
        }
    }
}

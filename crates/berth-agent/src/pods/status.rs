//! The pod's status as Kubernetes reports it: phase, conditions, container statuses
//! (waiting, running, terminated, last state, restarts), pod and host IPs.

use std::collections::HashMap;

use berth_runtime::shim::{ContainerState, Status};
use serde_json::{Value, json};

use super::Options;
use super::sync::{Track, should_restart};
use super::{containers, rfc3339, s};

pub(super) fn terminated(uid: &str, st: &ContainerState) -> Value {
    let mut t = json!({
        "exitCode": st.exit_code.unwrap_or(0),
        "reason": st.reason.clone().unwrap_or_default(),
        "containerID": format!("berth://{uid}/{}", st.name),
    });
    if let Some(sig) = st.signal {
        t["signal"] = json!(sig);
    }
    if let Some(at) = st.started_at {
        t["startedAt"] = json!(rfc3339(at));
    }
    if let Some(at) = st.finished_at {
        t["finishedAt"] = json!(rfc3339(at));
    }
    t
}

/// The pod's status as Kubernetes reports it.
pub(super) fn status_of(
    cfg: &Options,
    pod: &Value,
    pod_ip: &str,
    states: &[ContainerState],
    tracks: &HashMap<String, Track>,
    ready_by_probe: &HashMap<String, bool>,
    start_time: &str,
) -> Value {
    let policy = s(pod, "/spec/restartPolicy");
    let uid = s(pod, "/metadata/uid");
    // Init containers: done when each exited 0; a failure under restartPolicy Never fails
    // the pod.
    let (mut initialized, mut init_failed) = (true, false);
    let mut init_statuses = Vec::new();
    for c in pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(c, "/name");
        let track = tracks.get(name).cloned().unwrap_or_default();
        let st = states.iter().find(|x| x.name == name);
        let done = st.is_some_and(|st| st.status == Status::Exited && st.exit_code == Some(0));
        initialized &= done;
        let state = match (st, &track.waiting) {
            (Some(st), _) if st.status == Status::Running => {
                json!({"running": {"startedAt": rfc3339(st.started_at.unwrap_or(0))}})
            }
            (_, Some((reason, message))) => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            (Some(st), None) if st.status == Status::Exited => {
                if st.exit_code != Some(0) && policy == "Never" {
                    init_failed = true;
                }
                json!({"terminated": terminated(uid, st)})
            }
            _ => json!({"waiting": {"reason": "PodInitializing"}}),
        };
        init_statuses.push(json!({
            "name": name, "state": state, "ready": done, "restartCount": track.restarts,
            "lastState": track.last_state.as_ref().map_or(json!({}), |t| json!({"terminated": t})),
            "image": s(c, "/image"), "imageID": track.image_id,
        }));
    }
    let mut statuses = Vec::new();
    let (mut running, mut all_ready, mut succeeded, mut failed, mut total) = (0, true, 0, 0, 0);
    for c in containers(pod) {
        total += 1;
        let name = s(c, "/name");
        let track = tracks.get(name).cloned().unwrap_or_default();
        let st = states.iter().find(|x| x.name == name);
        let (state, ready) = match (st, &track.waiting) {
            (Some(st), _) if st.status == Status::Running => {
                running += 1;
                let ready = ready_by_probe.get(name).copied().unwrap_or(true);
                (
                    json!({"running": {"startedAt": rfc3339(st.started_at.unwrap_or(0))}}),
                    ready,
                )
            }
            (_, Some((reason, message))) => {
                // A container that has run and waits to run again keeps the pod Running.
                if track.last_state.is_some() {
                    running += 1;
                }
                (
                    json!({"waiting": {"reason": reason, "message": message}}),
                    false,
                )
            }
            (Some(st), None) if st.status == Status::Exited => {
                if should_restart(policy, st) {
                    running += 1;
                } else if st.exit_code == Some(0) {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
                (
                    json!({"terminated": terminated(s(pod, "/metadata/uid"), st)}),
                    false,
                )
            }
            _ => {
                let reason = if initialized {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                };
                (json!({"waiting": {"reason": reason}}), false)
            }
        };
        all_ready &= ready;
        let mut cs = json!({
            "name": name,
            "state": state,
            "lastState": track.last_state.as_ref().map_or(json!({}), |t| json!({"terminated": t})),
            "ready": ready,
            "started": st.is_some_and(|st| st.status == Status::Running),
            "restartCount": track.restarts,
            "image": s(c, "/image"),
            "imageID": track.image_id,
        });
        if st.is_some() {
            cs["containerID"] = json!(format!("berth://{}/{name}", s(pod, "/metadata/uid")));
        }
        statuses.push(cs);
    }
    let phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if total > 0 && succeeded == total {
        "Succeeded"
    } else if total > 0 && succeeded + failed == total && failed > 0 {
        "Failed"
    } else if running > 0 || succeeded + failed > 0 {
        "Running"
    } else {
        "Pending"
    };
    let now = berth_api::timefmt::now_rfc3339();
    let cond = |t: &str, ok: bool| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now});
        if !ok && (t == "Ready" || t == "ContainersReady") {
            c["reason"] = json!("ContainersNotReady");
        }
        c
    };
    let ready = all_ready && total > 0 && phase == "Running";
    json!({
        "phase": phase,
        "conditions": [
            cond("PodScheduled", true),
            cond("Initialized", initialized),
            cond("ContainersReady", ready),
            cond("Ready", ready),
        ],
        "hostIP": cfg.node_ip.to_string(),
        "podIP": pod_ip,
        "podIPs": if pod_ip.is_empty() { json!([]) } else { json!([{"ip": pod_ip}]) },
        "startTime": start_time,
        "containerStatuses": statuses,
        "initContainerStatuses": init_statuses,
    })
}

/// Conditions' transition times aside, did anything change?
pub(super) fn same_status(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(Value::Array(cs)) = v.get_mut("conditions") {
            for c in cs {
                if let Value::Object(m) = c {
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

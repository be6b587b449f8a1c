//! Stopping: a container gracefully (preStop hook, SIGTERM, SIGKILL after the grace period),
//! and a deleted pod as a whole before its sandbox goes.

use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_client::Client;
use berth_runtime::shim::Status;
use serde_json::{Value, json};

use super::{Shared, containers, s};

/// Stops a running container as the kubelet does: its preStop hook first (within the grace
/// period), then SIGTERM, then SIGKILL when what is left of the grace period has passed.
pub(super) async fn stop_gracefully(shared: &Shared, pod: &Value, name: String, grace: Duration) {
    let started = Instant::now();
    let spec = containers(pod).find(|c| s(c, "/name") == name);
    let hook = spec.and_then(|c| {
        Some((
            c,
            c.pointer("/lifecycle/preStop").filter(|h| h.is_object())?,
        ))
    });
    if let Some((c, hook)) = hook {
        let (ok, msg) = crate::probes::run_handler(
            &shared.cfg,
            s(pod, "/metadata/uid"),
            s(pod, "/status/podIP"),
            c,
            hook,
            grace,
        )
        .await;
        if !ok {
            let msg = format!("PreStopHook failed: {msg}");
            crate::event(&shared.client, pod, "Warning", "FailedPreStopHook", &msg).await;
        }
    }
    // A hook that used the whole grace period still leaves the process 2 s to stop, as
    // Kubernetes allows.
    let floor = if hook.is_some() {
        Duration::from_secs(2).min(grace)
    } else {
        Duration::ZERO
    };
    let left = grace.saturating_sub(started.elapsed()).max(floor);
    let rt = shared.cfg.runtime.clone();
    let uid = s(pod, "/metadata/uid").to_string();
    let _ =
        tokio::task::spawn_blocking(move || rt.stop_container(&uid, &name, libc::SIGTERM, left))
            .await;
}

/// Stops every container (the pod's grace period, split as kubelet does: each container
/// gets what is left), removes the sandbox, and deletes the pod for good.
pub(super) async fn terminate(shared: &Shared, pod: &Value) {
    let uid = s(pod, "/metadata/uid").to_string();
    let grace = berth_api::validate::seconds_of(
        pod.pointer("/metadata/deletionGracePeriodSeconds")
            .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds")),
        30,
    );
    let rt = shared.cfg.runtime.clone();
    let uid2 = uid.clone();
    let states = tokio::task::spawn_blocking(move || rt.containers(&uid2))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    // All containers stop at once (each after its preStop hook), sharing the one grace
    // period.
    let stops = states
        .into_iter()
        .filter(|c| c.status == Status::Running)
        .map(|c| stop_gracefully(shared, pod, c.name, Duration::from_secs(grace)));
    futures_util::future::join_all(stops).await;
    let rt = shared.cfg.runtime.clone();
    let uid2 = uid.clone();
    let _ = tokio::task::spawn_blocking(move || rt.remove_pod(&uid2)).await;
    let Some(pods) = resolve("pods") else { return };
    let body = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
    let path = Client::object_path(
        pods,
        Some(s(pod, "/metadata/namespace")),
        s(pod, "/metadata/name"),
    );
    let r = shared
        .client
        .raw(
            berth_client::Method::DELETE,
            &path,
            Some((
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            )),
        )
        .await;
    if let Ok(r) = r
        && !matches!(r.status, 200 | 202 | 404 | 409)
    {
        tracing::warn!(status = r.status, "cannot delete a stopped pod");
    }
}

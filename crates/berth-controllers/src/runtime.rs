//! The controller runtime every controller of this crate shares: supervision with back-off
//! (a loop that fails, ends or panics starts again from a fresh list), the error a run ends
//! with, object keys and the pod readiness helpers.
//!
//! Invariant: a controller's state lives inside the future `supervise` runs, so a restart
//! (after an error or a panic) always rebuilds it from a fresh list; nothing survives a run
//! but what the store holds.

use std::sync::Arc;
use std::time::Duration;

use berth_api::object::Object;
use berth_apiserver::Registry;
use berth_apiserver::error::ApiError;
use berth_store::StoreError;
use serde_json::Value;
use tokio::sync::watch;

use crate::informer::Informer;

/// Why a controller's run ended; `supervise` logs it and starts the run again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The first list of the cluster's objects, from which a run builds its cache, failed.
    #[error("cannot list the cluster's objects: {0}")]
    List(ApiError),
    /// The store refused the watch a run follows, or the watch broke (cut off as too slow,
    /// compacted past, the store closed).
    #[error("the store watch failed: {0}")]
    Watch(#[from] StoreError),
    /// The controller fell this many revisions behind the informer's watch: it lists again.
    #[error("fell {0} revisions behind the informer")]
    Lagged(u64),
}

/// How a supervised loop is started again after it failed, ended or panicked: the pause
/// doubles from `first` up to `max`, and starts over from `first` once a run lasted
/// `healthy` (kube-runtime's controllers back off the same way).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
    healthy: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(30),
            healthy: Duration::from_secs(60),
        }
    }
}

/// Runs a controller's loop until `stop` turns true, starting it again (after a back-off,
/// from a fresh list) whenever it ends, fails or panics. A panic is caught here, logged with
/// its message, and ends only this loop's run: other controllers run on.
pub(crate) async fn supervise<F, Fut>(what: &str, stop: watch::Receiver<bool>, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    supervise_with(what, stop, Backoff::default(), f).await
}

/// Runs a controller that follows the informer: `run_once(registry, informer)` under
/// `supervise`, each run from a fresh list, until `stop` turns true.
pub(crate) async fn supervise_informed(
    what: &str,
    registry: Registry,
    informer: Arc<Informer>,
    stop: watch::Receiver<bool>,
    run_once: impl AsyncFn(&Registry, &Informer) -> Result<(), Error>,
) {
    supervise(what, stop, || run_once(&registry, &informer)).await
}

/// `supervise` with its back-off given.
async fn supervise_with<F, Fut>(
    what: &str,
    mut stop: watch::Receiver<bool>,
    backoff: Backoff,
    mut f: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    use futures_util::FutureExt;
    let mut pause = backoff.first;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        // Unwind safety: a loop keeps its state (caches, queues) inside its own future, which
        // the panic drops; the next run builds it again from a fresh list.
        let run = std::panic::AssertUnwindSafe(f()).catch_unwind();
        let outcome = tokio::select! {
            r = run => r,
            _ = stop.changed() => return,
        };
        if started.elapsed() >= backoff.healthy {
            pause = backoff.first;
        }
        match outcome {
            Ok(Ok(())) => tracing::info!("{what} ended; it starts again in {pause:?}"),
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed; it starts again in {pause:?}"),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                tracing::error!(panic = %message, "{what} panicked; it starts again in {pause:?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = pause.saturating_mul(2).min(backoff.max);
    }
}

/// An object's place in a controller's cache: (namespace, or "" for cluster objects; name).
pub(crate) type Key = (String, String);

/// The cache key of an object.
pub(crate) fn key(o: &Object) -> Key {
    (
        o.namespace().unwrap_or("").to_string(),
        o.name().to_string(),
    )
}

/// A pod's `status.phase` ("" before the agent reports one).
pub(crate) fn pod_phase(p: &Object) -> &str {
    p.get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether a pod has run to its end (Succeeded or Failed): it takes no room and serves nothing.
pub(crate) fn pod_finished(p: &Object) -> bool {
    matches!(pod_phase(p), "Succeeded" | "Failed")
}

/// Whether a pod's `Ready` condition is `True`.
pub(crate) fn pod_ready(p: &Object) -> bool {
    p.condition("Ready") == Some("True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// Polls `f` until it holds, or fails the test after 10 s.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_loop_restarts_with_back_off_and_the_others_run_on() {
        let (stop, rx) = watch::channel(false);
        let backoff = Backoff {
            first: Duration::from_millis(30),
            max: Duration::from_millis(120),
            healthy: Duration::from_secs(60),
        };
        // The faulty loop panics on its first four runs, then runs until stopped.
        let starts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
        let s = starts.clone();
        let faulty = tokio::spawn(supervise_with("faulty", rx.clone(), backoff, move || {
            let s = s.clone();
            async move {
                let n = {
                    let mut s = s.lock().unwrap();
                    s.push(tokio::time::Instant::now());
                    s.len()
                };
                if n <= 4 {
                    panic!("injected panic {n}");
                }
                std::future::pending::<Result<(), Error>>().await
            }
        }));
        // Another controller on the same runtime counts its ticks all along.
        let ticks = Arc::new(AtomicU64::new(0));
        let t = ticks.clone();
        let other = tokio::spawn(supervise("other", rx.clone(), move || {
            let t = t.clone();
            async move {
                loop {
                    t.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
        until("the faulty loop's fifth run", || {
            starts.lock().unwrap().len() == 5
        })
        .await;
        let seen = ticks.load(Ordering::Relaxed);
        until("the other loop to tick on", || {
            ticks.load(Ordering::Relaxed) > seen + 10
        })
        .await;
        let at = starts.lock().unwrap().clone();
        // Each restart waited at least its pause, doubling up to the maximum.
        for (i, want_ms) in [30u64, 60, 120, 120].into_iter().enumerate() {
            let gap = at[i + 1] - at[i];
            assert!(
                gap >= Duration::from_millis(want_ms),
                "restart {} came after {gap:?}, before its {want_ms} ms back-off",
                i + 1
            );
        }
        assert!(!faulty.is_finished() && !other.is_finished());
        assert_eq!(starts.lock().unwrap().len(), 5, "the healthy run stays");
        // Both end when told to.
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), faulty)
            .await
            .expect("the faulty loop stops")
            .expect("the supervisor itself never panics");
        tokio::time::timeout(Duration::from_secs(10), other)
            .await
            .expect("the other loop stops")
            .unwrap();
    }
}

//! The ClusterRole aggregation controller: the rules of every ClusterRole with an
//! `aggregationRule` (`admin`, `edit`, `view`, and any an operator makes) are the rules of the
//! ClusterRoles its selectors pick, written again whenever a ClusterRole changes, as
//! Kubernetes' clusterrole-aggregation controller keeps them. A role labelled
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"` is part of `view` moments after it
//! is made, and leaves it when it goes.
//!
//! Invariant: it writes only aggregated roles' `rules`, through the registry's
//! `aggregate_cluster_roles` (the function the server also runs at start), and only when they
//! differ from what the selectors pick.

use std::sync::Arc;

use berth_apiserver::registry::Registry;
use tokio::sync::watch;

use crate::informer::Informer;
use crate::runtime::Error;

/// Runs until `stop` turns true.
pub async fn run(registry: Registry, informer: Arc<Informer>, stop: watch::Receiver<bool>) {
    crate::runtime::supervise_informed(
        "clusterrole aggregation controller",
        registry,
        informer,
        stop,
        run_once,
    )
    .await
}

async fn run_once(registry: &Registry, informer: &Informer) -> Result<(), Error> {
    let (_, mut changes) = informer.list_and_watch()?;
    let roles = crate::informer::key_prefix("clusterroles");
    // Whatever changed while it was not running.
    aggregate(registry).await;
    loop {
        let Some(batch) = changes.next().await? else {
            return Ok(());
        };
        if batch.changes().any(|c| c.event.kv.key.starts_with(&roles)) {
            aggregate(registry).await;
        }
    }
}

async fn aggregate(registry: &Registry) {
    match registry.aggregate_cluster_roles().await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(roles = n, "aggregated ClusterRoles' rules written"),
        Err(e) => tracing::warn!(error = %e, "cannot aggregate ClusterRoles"),
    }
}

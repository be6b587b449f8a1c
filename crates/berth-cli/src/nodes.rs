//! `berth cordon|uncordon|drain NODE`: kubectl's node maintenance verbs.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_api::kinds;
use berth_client::{Client, encode_query};
use serde_json::{Value, json};

/// Marks a node (un)schedulable.
pub async fn cordon(
    client: &Client,
    node: &str,
    on: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let nodes = kinds::resolve("nodes").context("node kind")?;
    let current = client.get(nodes, None, node).await?;
    let already = current["spec"]["unschedulable"].as_bool().unwrap_or(false) == on;
    if !already {
        client
            .patch(
                nodes,
                None,
                node,
                "application/merge-patch+json",
                &json!({"spec": {"unschedulable": if on { json!(true) } else { Value::Null }}}),
                "",
            )
            .await?;
    }
    let verb = if on { "cordoned" } else { "uncordoned" };
    if already {
        writeln!(out, "node/{node} already {verb}")?;
    } else {
        writeln!(out, "node/{node} {verb}")?;
    }
    Ok(0)
}

/// Cordons a node and evicts its pods, waiting (up to `timeout`) until they are gone. Pods no
/// controller would replace are refused unless `force`.
pub async fn drain(
    client: &Client,
    node: &str,
    force: bool,
    grace: i64,
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    cordon(client, node, true, out).await?;
    let pods_kind = kinds::resolve("pods").context("pod kind")?;
    let q = format!(
        "fieldSelector={}",
        encode_query(&format!("spec.nodeName={node}"))
    );
    let list = client.list(pods_kind, None, &q).await?;
    let pods: Vec<Value> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    let unmanaged: Vec<String> = pods
        .iter()
        .filter(|p| {
            !p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["controller"] == true))
        })
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap_or(""),
                p["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    if !unmanaged.is_empty() && !force {
        bail!(
            "cannot delete Pods that declare no controller (use --force to override): {}",
            unmanaged.join(", ")
        );
    }
    let query = if grace >= 0 {
        format!("gracePeriodSeconds={grace}")
    } else {
        String::new()
    };
    for p in &pods {
        let (ns, name) = (
            p["metadata"]["namespace"].as_str().unwrap_or("default"),
            p["metadata"]["name"].as_str().unwrap_or(""),
        );
        match client.delete(pods_kind, Some(ns), name, &query).await {
            Ok(_) => writeln!(out, "evicting pod {ns}/{name}")?,
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let started = Instant::now();
    loop {
        let left: Vec<String> = client.list(pods_kind, None, &q).await?["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                pods.iter()
                    .any(|o| o["metadata"]["uid"] == p["metadata"]["uid"])
            })
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        if left.is_empty() {
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "drain did not finish within {}s; still there: {}",
                timeout.as_secs(),
                left.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writeln!(out, "node/{node} drained")?;
    Ok(0)
}

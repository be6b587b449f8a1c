//! `berth scale` and `berth rollout status|history|undo`: kubectl's verbs over the scale
//! subresource and a Deployment's ReplicaSets (one per revision of its template).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_api::kinds::{self, ResourceKind};
use berth_client::Client;
use clap::Subcommand;
use serde_json::{Value, json};

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

#[derive(Subcommand, Debug, Clone)]
pub enum RolloutCmd {
    /// Wait until a Deployment's rollout finishes (exit code 1 on timeout)
    Status {
        /// deploy/NAME
        target: String,
        /// Give up after this long, e.g. 2m (0: wait forever)
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// The revisions of a Deployment's template
    History {
        /// deploy/NAME
        target: String,
    },
    /// Go back to the previous revision (or --to-revision N)
    Undo {
        /// deploy/NAME
        target: String,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
}

/// `KIND/NAME`, or `KIND NAME`.
pub fn target(args: &[String]) -> anyhow::Result<(&'static ResourceKind, String)> {
    let (k, n) = match args {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .context("give KIND/NAME or KIND NAME, e.g. deploy/web")?,
        [k, n] => (k.clone(), n.clone()),
        _ => bail!("give one object: KIND/NAME or KIND NAME"),
    };
    let kind = kinds::resolve(&k).ok_or_else(|| {
        anyhow::anyhow!(
            "the server doesn't have a resource type \"{k}\" (see `berth api-resources`)"
        )
    })?;
    Ok((kind, n))
}

fn seconds(s: &str) -> anyhow::Result<u64> {
    berth_api::duration::parse(s)
        .map(|d| d.as_secs())
        .map_err(anyhow::Error::msg)
}

/// `berth scale KIND/NAME --replicas N`.
pub async fn scale(
    client: &Client,
    ns: &str,
    args: &[String],
    replicas: i64,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (kind, name) = target(args)?;
    if !kind.has_scale() {
        bail!(
            "{} cannot be scaled; scale a deployment or a replicaset",
            kind.plural
        );
    }
    if replicas < 0 {
        bail!("--replicas must be 0 or more");
    }
    let path = format!("{}/scale", Client::object_path(kind, Some(ns), &name));
    let body = serde_json::to_vec(&json!({"spec": {"replicas": replicas}}))?;
    client
        .json(
            berth_client::Method::PATCH,
            &path,
            Some(("application/merge-patch+json", body)),
        )
        .await?;
    writeln!(out, "{}/{name} scaled", kind.qualified_singular())?;
    Ok(0)
}

fn deployment_target(args: &str) -> anyhow::Result<String> {
    let (kind, name) = target(&[args.to_string()])?;
    if kind.kind != "Deployment" {
        bail!(
            "rollout works on deployments (deploy/NAME), not {}",
            kind.plural
        );
    }
    Ok(name)
}

/// The Deployment's ReplicaSets by revision, oldest first.
async fn revisions(client: &Client, ns: &str, d: &Value) -> anyhow::Result<Vec<(i64, Value)>> {
    let rs_kind = kinds::resolve("replicasets").context("replicaset kind")?;
    let uid = d["metadata"]["uid"].as_str().unwrap_or("");
    let list = client.list(rs_kind, Some(ns), "").await?;
    let mut out: Vec<(i64, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
        })
        .map(|rs| {
            let rev = rs["metadata"]["annotations"][REVISION]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            (rev, rs.clone())
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

pub async fn rollout(
    client: &Client,
    ns: &str,
    cmd: RolloutCmd,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let dk = kinds::resolve("deployments").context("deployment kind")?;
    match cmd {
        RolloutCmd::Status { target, timeout } => {
            let name = deployment_target(&target)?;
            let limit = seconds(&timeout)?;
            let started = Instant::now();
            let mut last = String::new();
            loop {
                let d = client.get(dk, Some(ns), &name).await?;
                let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let st = &d["status"];
                let n = |f: &str| st[f].as_i64().unwrap_or(0);
                let observed =
                    n("observedGeneration") >= d["metadata"]["generation"].as_i64().unwrap_or(0);
                let exceeded = st["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                    })
                });
                if observed && exceeded {
                    eprintln!("error: deployment \"{name}\" exceeded its progress deadline");
                    return Ok(1);
                }
                let msg = if !observed {
                    "Waiting for deployment spec update to be observed...".to_string()
                } else if n("updatedReplicas") < want {
                    format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {} out of {want} new replicas have been updated...",
                        n("updatedReplicas")
                    )
                } else if n("replicas") > n("updatedReplicas") {
                    format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                        n("replicas") - n("updatedReplicas")
                    )
                } else if n("availableReplicas") < n("updatedReplicas") {
                    format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {} of {} updated replicas are available...",
                        n("availableReplicas"),
                        n("updatedReplicas")
                    )
                } else {
                    writeln!(out, "deployment \"{name}\" successfully rolled out")?;
                    return Ok(0);
                };
                if msg != last {
                    writeln!(out, "{msg}")?;
                    out.flush()?;
                    last = msg;
                }
                if limit > 0 && started.elapsed() > Duration::from_secs(limit) {
                    eprintln!("error: timed out waiting for the condition");
                    return Ok(1);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        RolloutCmd::History { target } => {
            let name = deployment_target(&target)?;
            let d = client.get(dk, Some(ns), &name).await?;
            writeln!(out, "deployment.apps/{name}")?;
            let rows: Vec<Vec<String>> = revisions(client, ns, &d)
                .await?
                .into_iter()
                .map(|(rev, rs)| {
                    vec![
                        rev.to_string(),
                        rs["metadata"]["annotations"]["kubernetes.io/change-cause"]
                            .as_str()
                            .unwrap_or("<none>")
                            .to_string(),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                crate::print::table(&["REVISION", "CHANGE-CAUSE"], &rows)
            )?;
            Ok(0)
        }
        RolloutCmd::Undo {
            target,
            to_revision,
        } => {
            let name = deployment_target(&target)?;
            let d = client.get(dk, Some(ns), &name).await?;
            let revs = revisions(client, ns, &d).await?;
            let current = revs.last().map_or(0, |(r, _)| *r);
            let chosen = if to_revision > 0 {
                revs.iter().find(|(r, _)| *r == to_revision)
            } else {
                revs.iter().rev().find(|(r, _)| *r < current)
            };
            let Some((rev, rs)) = chosen else {
                bail!(
                    "no revision {} of deployment {name} to go back to (see `berth rollout history deploy/{name}`)",
                    if to_revision > 0 {
                        to_revision.to_string()
                    } else {
                        "before the current one".into()
                    }
                );
            };
            let mut template = rs["spec"]["template"].clone();
            if let Some(Value::Object(l)) = template.pointer_mut("/metadata/labels") {
                l.remove(HASH_LABEL);
            }
            let body = json!({"spec": {"template": template}});
            client
                .json(
                    berth_client::Method::PATCH,
                    &Client::object_path(dk, Some(ns), &name),
                    Some(("application/merge-patch+json", serde_json::to_vec(&body)?)),
                )
                .await?;
            writeln!(
                out,
                "deployment.apps/{name} rolled back (to revision {rev})"
            )?;
            Ok(0)
        }
    }
}

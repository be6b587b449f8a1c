//! `berth delete`: by kind and names or from manifests, with the cascade policy, a grace
//! period, and (by default) waiting until each object is gone.

use std::io::Write;

use anyhow::bail;
use berth_api::kinds::ResourceKind;
use berth_client::Client;
use clap::Args;

use crate::{Cascade, Conn, connect, describe_error, manifests, ns_for, resolve_kind};

/// What `berth delete` takes.
#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// Kind, then names; or use -f
    pub args: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// What happens to dependents (objects this one owns)
    #[arg(long, value_enum, default_value = "background")]
    pub cascade: Cascade,
    /// Succeed when the object does not exist
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Seconds a pod gets to stop (default: its terminationGracePeriodSeconds); 0 with
    /// --force removes it from the API at once, whatever still runs
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value_t = -1)]
    pub grace_period: i64,
    /// With --grace-period=0: do not wait for the node to confirm the pod stopped
    #[arg(long)]
    pub force: bool,
    /// Wait until the objects are gone (pods: stopped by their node)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub wait: bool,
}

/// Deletes each target; exit code 1 when any could not be deleted.
pub(crate) async fn run(conn: &Conn, args: DeleteArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let DeleteArgs {
        args,
        files,
        cascade,
        ignore_not_found,
        grace_period,
        force,
        wait,
    } = args;
    if grace_period == 0 && !force {
        bail!(
            "--grace-period=0 removes pods without waiting for their node to stop them; add --force to do that, or give a grace period of 1 or more"
        );
    }
    let ctx = connect(conn)?;
    let policy = match cascade {
        Cascade::Background => "Background",
        Cascade::Foreground => "Foreground",
        Cascade::Orphan => "Orphan",
    };
    let mut targets: Vec<(&'static ResourceKind, Option<String>, String)> = Vec::new();
    if !files.is_empty() {
        for it in manifests::read_all(&files, &ctx.namespace)? {
            targets.push((
                it.kind,
                it.object.namespace().map(String::from),
                it.object.name().to_string(),
            ));
        }
    } else {
        let (kind, names) = match args.split_first() {
            Some((k, rest)) if k.contains('/') => {
                let (k, n) = k.split_once('/').unwrap_or((k, ""));
                let mut names = vec![n.to_string()];
                names.extend(rest.iter().cloned());
                (resolve_kind(k)?, names)
            }
            Some((k, rest)) => (resolve_kind(k)?, rest.to_vec()),
            None => bail!("give a kind and names (berth delete deploy web) or -f FILE"),
        };
        if names.is_empty() {
            bail!("give the names of the {} to delete", kind.plural);
        }
        for n in names {
            targets.push((kind, ns_for(kind, &ctx.namespace).map(String::from), n));
        }
    }
    let mut code = 0;
    for (kind, ns, name) in targets {
        match ctx
            .client
            .delete(
                kind,
                ns.as_deref(),
                &name,
                &if grace_period >= 0 {
                    format!("propagationPolicy={policy}&gracePeriodSeconds={grace_period}")
                } else {
                    format!("propagationPolicy={policy}")
                },
            )
            .await
        {
            Ok(gone) => {
                writeln!(out, "{}/{} deleted", kind.qualified_singular(), name)?;
                if wait {
                    wait_deleted(&ctx.client, kind, ns.as_deref(), &name, &gone).await?;
                }
            }
            Err(e) if e.code() == Some(404) && ignore_not_found => {}
            Err(e) => {
                eprintln!("{}", describe_error(&e.into()));
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Waits until an object deleted is gone (or replaced by a new one of the same name): a pod
/// stops within its grace period, a namespace once empty.
async fn wait_deleted(
    client: &Client,
    kind: &ResourceKind,
    ns: Option<&str>,
    name: &str,
    deleted: &serde_json::Value,
) -> anyhow::Result<()> {
    let uid = deleted["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let grace = deleted["metadata"]["deletionGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(grace + 60);
    loop {
        match client.get(kind, ns, name).await {
            Err(e) if e.code() == Some(404) => return Ok(()),
            Ok(o) if o["metadata"]["uid"].as_str() != Some(uid.as_str()) => return Ok(()),
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{}/{name} is still being deleted after {} s; `berth get {} {name} -o yaml` shows what holds it",
                kind.qualified_singular(),
                grace + 60,
                kind.plural
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

//! `berth secrets rotate`: every object of the encrypted resources written again, unchanged,
//! so the server encrypts it with the first key of its encryption config. This is
//! Kubernetes' own procedure (`kubectl get secrets -A -o json | kubectl replace -f -`): the
//! server writes an unchanged object again when it was last written with another key, and
//! leaves an object already on the current key alone, so running it twice costs nothing.

use std::io::Write;

use anyhow::Context;
use berth_client::Client;
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug, Clone)]
pub enum SecretsCmd {
    /// Re-encrypt every Secret (and every object of the other resources named) with the
    /// current first key of the server's encryption config
    ///
    /// After adding a new key first in the config and restarting the server, this moves
    /// every object to it; the old key can then be removed (see docs/security.md).
    Rotate {
        /// Also these resources (as the encryption config names them: configmaps,
        /// deployments.apps, ...); Secrets are always rotated
        #[arg(long = "resource", value_name = "RESOURCE")]
        resources: Vec<String>,
    },
}

pub(crate) async fn run(
    client: &Client,
    cmd: SecretsCmd,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let SecretsCmd::Rotate { resources } = cmd;
    let mut names = vec!["secrets".to_string()];
    names.extend(resources.into_iter().filter(|r| r != "secrets"));
    for name in names {
        let kind = crate::resolve_kind(&name)?;
        let list = client
            .list(kind, None, "")
            .await
            .with_context(|| format!("cannot list {}", kind.qualified_plural()))?;
        let (mut rewritten, mut current, mut moved) = (0usize, 0usize, 0usize);
        for item in list["items"].as_array().into_iter().flatten() {
            let mut obj = item.clone();
            // A List's items may leave out their kind; the PUT body must carry it.
            obj["kind"] = Value::String(kind.kind.to_string());
            obj["apiVersion"] = Value::String(kind.api_version());
            let ns = obj["metadata"]["namespace"].as_str().map(String::from);
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let before = obj["metadata"]["resourceVersion"].clone();
            match client.replace(kind, ns.as_deref(), &name, &obj).await {
                Ok(after) if after["metadata"]["resourceVersion"] != before => rewritten += 1,
                Ok(_) => current += 1,
                // Changed or deleted meanwhile: written with the current key, or gone.
                Err(e) if matches!(e.code(), Some(404 | 409)) => moved += 1,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot rewrite {} {}{name}",
                            kind.qualified_plural(),
                            ns.map(|n| format!("{n}/")).unwrap_or_default()
                        )
                    });
                }
            }
        }
        write!(
            out,
            "{}: {rewritten} rewritten with the current key, {current} already on it",
            kind.qualified_plural()
        )?;
        if moved > 0 {
            write!(out, ", {moved} changed or deleted meanwhile")?;
        }
        writeln!(out)?;
    }
    Ok(0)
}

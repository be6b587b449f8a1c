//! `berth apply -f`: create what is missing, update what exists with a three-way merge
//! against the last applied manifest (as `kubectl apply`), all validated before any is sent.

use std::io::Write;

use anyhow::anyhow;
use serde_json::Value;

use crate::{Ctx, describe_error, manifests};

pub(crate) async fn apply(
    ctx: &Ctx,
    items: Vec<manifests::Item>,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let suffix = if dry_run { " (dry run)" } else { "" };
    let q = if dry_run { "dryRun=All" } else { "" };
    for it in items {
        let ns = it.object.namespace().map(String::from);
        let ns = ns.as_deref().filter(|_| it.kind.namespaced);
        let name = it.object.name().to_string();
        let desired = manifests::with_last_applied(&it.object);
        let label = format!("{}/{}", it.kind.qualified_singular(), name);
        let at = || format!("{}: document {}", it.source, it.doc);
        match ctx.client.get(it.kind, ns, &name).await {
            Err(e) if e.code() == Some(404) => {
                ctx.client
                    .create(it.kind, ns, &desired.as_value(), q)
                    .await
                    .map_err(|e| anyhow!("{}: {}", at(), describe_error(&e.into())))?;
                writeln!(out, "{label} created{suffix}")?;
            }
            Err(e) => return Err(e.into()),
            Ok(live) => {
                let patch = manifests::patch_against(&live, &desired);
                if patch.is_empty() {
                    writeln!(out, "{label} unchanged")?;
                    continue;
                }
                ctx.client
                    .patch(
                        it.kind,
                        ns,
                        &name,
                        "application/merge-patch+json",
                        &Value::Object(patch),
                        q,
                    )
                    .await
                    .map_err(|e| anyhow!("{}: {}", at(), describe_error(&e.into())))?;
                writeln!(out, "{label} configured{suffix}")?;
            }
        }
    }
    Ok(0)
}

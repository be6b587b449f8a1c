//! `berth apply -f`: create what is missing, update what exists with a three-way merge
//! against the last applied manifest (as `kubectl apply`), all validated before any is sent.

use std::io::Write;

use anyhow::anyhow;
use berth_client::ClientError;
use serde_json::Value;

use crate::{Ctx, describe_error, manifests};

/// What applying one document did, or with `dryRun=All` would do.
pub(crate) enum Applied {
    /// It did not exist: the object as created.
    Created(Value),
    /// It matched the manifest already: the live object.
    Unchanged(Value),
    /// The live object, and the object after the three-way merge patch.
    Configured { live: Value, merged: Value },
}

/// Where applying one document failed: reading the live object, or writing the new one.
pub(crate) enum Failed {
    Reading(ClientError),
    Writing(ClientError),
}

/// Applies one document: creates the object when it is missing, else patches it with the
/// three-way merge against the last applied manifest (nothing when there is nothing to
/// change). `query` is `dryRun=All` for a rehearsal (`diff`, `apply --dry-run`).
pub(crate) async fn apply_one(
    ctx: &Ctx,
    it: &manifests::Item,
    query: &str,
) -> Result<Applied, Failed> {
    let ns = it.object.namespace().map(String::from);
    let ns = ns.as_deref().filter(|_| it.kind.namespaced);
    let name = it.object.name().to_string();
    let desired = manifests::with_last_applied(&it.object);
    match ctx.client.get(it.kind, ns, &name).await {
        Err(e) if e.code() == Some(404) => ctx
            .client
            .create(it.kind, ns, &desired.as_value(), query)
            .await
            .map(Applied::Created)
            .map_err(Failed::Writing),
        Err(e) => Err(Failed::Reading(e)),
        Ok(live) => {
            let patch = manifests::patch_against(&live, &desired);
            if patch.is_empty() {
                return Ok(Applied::Unchanged(live));
            }
            let merged = ctx
                .client
                .patch(
                    it.kind,
                    ns,
                    &name,
                    "application/merge-patch+json",
                    &Value::Object(patch),
                    query,
                )
                .await
                .map_err(Failed::Writing)?;
            Ok(Applied::Configured { live, merged })
        }
    }
}

pub(crate) async fn apply(
    ctx: &Ctx,
    items: Vec<manifests::Item>,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let suffix = if dry_run { " (dry run)" } else { "" };
    let q = if dry_run { "dryRun=All" } else { "" };
    for it in items {
        let label = format!("{}/{}", it.kind.qualified_singular(), it.object.name());
        match apply_one(ctx, &it, q).await {
            Ok(Applied::Created(_)) => writeln!(out, "{label} created{suffix}")?,
            Ok(Applied::Unchanged(_)) => writeln!(out, "{label} unchanged")?,
            Ok(Applied::Configured { .. }) => writeln!(out, "{label} configured{suffix}")?,
            Err(Failed::Reading(e)) => return Err(e.into()),
            Err(Failed::Writing(e)) => {
                let at = format!("{}: document {}", it.source, it.doc);
                return Err(anyhow!("{at}: {}", describe_error(&e.into())));
            }
        }
    }
    Ok(0)
}

//! `berth diff -f`: what `apply` would change, as a unified diff (exit code 1 when it would).

use std::io::Write;

use serde_json::Value;

use crate::{Ctx, manifests, print};

/// YAML of an object for diffs: without the fields that change on every write.
pub(crate) fn diffable(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
        // The last-applied copy repeats the whole manifest; the diff of the object says it.
        let empty = match m.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(manifests::LAST_APPLIED);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            m.remove("annotations");
        }
    }
    if v.is_null() {
        String::new()
    } else {
        print::to_yaml(&v)
    }
}

pub(crate) async fn diff(
    ctx: &Ctx,
    items: Vec<manifests::Item>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut changed = false;
    for it in items {
        let ns = it.object.namespace().map(String::from);
        let ns = ns.as_deref().filter(|_| it.kind.namespaced);
        let name = it.object.name().to_string();
        let desired = manifests::with_last_applied(&it.object);
        let (live, merged) = match ctx.client.get(it.kind, ns, &name).await {
            Err(e) if e.code() == Some(404) => (
                Value::Null,
                ctx.client
                    .create(it.kind, ns, &desired.as_value(), "dryRun=All")
                    .await?,
            ),
            Err(e) => return Err(e.into()),
            Ok(live) => {
                let patch = manifests::patch_against(&live, &desired);
                let merged = if patch.is_empty() {
                    live.clone()
                } else {
                    ctx.client
                        .patch(
                            it.kind,
                            ns,
                            &name,
                            "application/merge-patch+json",
                            &Value::Object(patch),
                            "dryRun=All",
                        )
                        .await?
                };
                (live, merged)
            }
        };
        let mut merged = merged;
        if live.is_null() {
            // Fields the server would set on create are noise here.
            if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
                for f in ["uid", "creationTimestamp"] {
                    m.remove(f);
                }
            }
        }
        let (a, b) = (diffable(&live), diffable(&merged));
        if a != b {
            changed = true;
            let label = format!("{}/{}", it.kind.qualified_singular(), name);
            write!(
                out,
                "{}",
                print::unified_diff(&a, &b, &format!("live/{label}"), &format!("merged/{label}"))
            )?;
        }
    }
    Ok(i32::from(changed))
}

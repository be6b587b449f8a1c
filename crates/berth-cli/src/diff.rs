//! `berth diff -f`: what `apply` would change, as a unified diff (exit code 1 when it would).

use std::io::Write;

use serde_json::Value;

use crate::apply::{Applied, Failed, apply_one};
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
        let (live, merged) = match apply_one(ctx, &it, "dryRun=All").await {
            Ok(Applied::Created(merged)) => (Value::Null, merged),
            Ok(Applied::Unchanged(live)) => (live.clone(), live),
            Ok(Applied::Configured { live, merged }) => (live, merged),
            Err(Failed::Reading(e) | Failed::Writing(e)) => return Err(e.into()),
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
            let label = format!("{}/{}", it.kind.qualified_singular(), it.object.name());
            write!(
                out,
                "{}",
                print::unified_diff(&a, &b, &format!("live/{label}"), &format!("merged/{label}"))
            )?;
        }
    }
    Ok(i32::from(changed))
}

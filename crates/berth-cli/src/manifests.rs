//! Reading manifests from files, directories or stdin, checking every document before any is
//! sent, and kubectl's client-side three-way merge for `apply`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_api::ResourceKind;
use berth_api::manifest::{self, ManifestDoc};
use berth_api::object::Object;
use berth_api::validate;
use serde_json::{Map, Value};

/// The annotation kubectl keeps the last applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One document ready to send: where it came from and what it is.
#[derive(Debug, Clone)]
pub struct Item {
    pub source: String,
    pub doc: usize,
    pub line: usize,
    pub kind: &'static ResourceKind,
    pub object: Object,
}

fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut out: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
            })
            .collect();
        out.sort();
        if out.is_empty() {
            bail!("no .yaml, .yml or .json files in {}", path.display());
        }
        Ok(out)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Reads every `-f` argument (a file, a directory, or `-` for stdin), parses and validates
/// every document, and fails, naming file, document, line and column, if any is bad: then
/// nothing is applied.
pub fn read_all(args: &[String], default_ns: &str) -> anyhow::Result<Vec<Item>> {
    let mut docs: Vec<(String, ManifestDoc)> = Vec::new();
    for arg in args {
        if arg == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            for d in manifest::parse("<stdin>", &text)? {
                docs.push(("<stdin>".into(), d));
            }
            continue;
        }
        for file in files_of(Path::new(arg))? {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {name}"))?;
            for d in manifest::parse(&name, &text)? {
                docs.push((name.clone(), d));
            }
        }
    }
    if docs.is_empty() {
        bail!("no objects found in {}", args.join(", "));
    }
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for (source, d) in docs {
        let at = format!("{source}: document {}, line {}", d.doc, d.line);
        let Some(kind) = d.object.resource_kind() else {
            problems.push(format!(
                "{at}: berth does not serve {} {} (see `berth api-resources`)",
                d.object.api_version(),
                d.object.kind()
            ));
            continue;
        };
        let mut obj = d.object;
        if kind.namespaced && obj.namespace().is_none() {
            obj.set_meta("namespace", default_ns.to_string());
        }
        let mut check = obj.clone();
        validate::apply_defaults(kind, &mut check);
        let errs = validate::validate_create(kind, &check);
        if !errs.is_empty() {
            let msgs: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
            problems.push(format!(
                "{at}: {} \"{}\" is invalid: {}",
                kind.kind,
                obj.name(),
                msgs.join("; ")
            ));
            continue;
        }
        items.push(Item {
            source,
            doc: d.doc,
            line: d.line,
            kind,
            object: obj,
        });
    }
    if !problems.is_empty() {
        bail!("{}\nnothing was applied", problems.join("\n"));
    }
    Ok(items)
}

/// Whether every field of `want` is in `have` with the same value (server defaults may add).
fn subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| subset(a, b))
        }
        (w, h) => w == h,
    }
}

/// kubectl's three-way merge as a JSON merge patch: fields the user removed since the last
/// apply are deleted; fields that differ from the live object are set. Lists the user did not
/// change are left alone when the live list holds what the manifest says (plus defaults).
pub fn three_way(
    original: Option<&Value>,
    modified: &Value,
    current: &Value,
) -> Map<String, Value> {
    let mut patch = Map::new();
    let (Some(m), Some(c)) = (modified.as_object(), current.as_object()) else {
        return patch;
    };
    let o = original.and_then(Value::as_object);
    if let Some(o) = o {
        for k in o.keys() {
            if !m.contains_key(k) && c.contains_key(k) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    for (k, mv) in m {
        let cv = c.get(k);
        let ov = o.and_then(|o| o.get(k));
        match (mv, cv) {
            (Value::Object(_), Some(Value::Object(_))) => {
                let sub = three_way(ov, mv, cv.unwrap_or(&Value::Null));
                if !sub.is_empty() {
                    patch.insert(k.clone(), Value::Object(sub));
                }
            }
            (Value::Array(_), Some(cv)) => {
                let user_changed = ov.is_some_and(|ov| ov != mv);
                if user_changed || !subset(mv, cv) {
                    patch.insert(k.clone(), mv.clone());
                }
            }
            (mv, Some(cv)) if mv == cv => {}
            (mv, _) => {
                patch.insert(k.clone(), mv.clone());
            }
        }
    }
    patch
}

/// The merge patch that takes the live object to the manifest, against the manifest last
/// applied (kept in the live object's annotation).
pub fn patch_against(live: &Value, desired: &Object) -> Map<String, Value> {
    let original: Option<Value> = live["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok());
    three_way(original.as_ref(), &desired.as_value(), live)
}

/// The object as `apply` sends it: the manifest with its own last-applied annotation.
pub fn with_last_applied(obj: &Object) -> Object {
    let mut clean = obj.clone();
    clean.remove_annotation(LAST_APPLIED);
    let mut out = obj.clone();
    out.set_annotation(
        LAST_APPLIED,
        &serde_json::to_string(&clean.0).unwrap_or_default(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn three_way_merge() {
        let original = json!({"metadata": {"labels": {"a": "1", "gone": "x"}}, "spec": {"replicas": 2, "template": {"containers": [{"name": "c", "image": "i:1"}]}}});
        let modified = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 2, "template": {"containers": [{"name": "c", "image": "i:1"}]}}});
        // live: someone scaled to 5, the server defaulted imagePullPolicy
        let current = json!({"metadata": {"labels": {"a": "1", "gone": "x", "other": "kept"}}, "spec": {"replicas": 5, "template": {"containers": [{"name": "c", "image": "i:1", "imagePullPolicy": "IfNotPresent"}]}}});
        let p = three_way(Some(&original), &modified, &current);
        assert_eq!(
            Value::Object(p),
            json!({"metadata": {"labels": {"a": "2", "gone": null}}, "spec": {"replicas": 2}})
        );
        // unchanged input makes an empty patch despite server defaults
        let same = three_way(
            Some(&modified),
            &modified,
            &json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 2, "template": {"containers": [{"name": "c", "image": "i:1", "imagePullPolicy": "IfNotPresent"}]}}}),
        );
        assert!(same.is_empty(), "{same:?}");
    }
}

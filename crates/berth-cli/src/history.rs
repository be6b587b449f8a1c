//! `berth history`: who changed an object, when and how (with `--diff`), or the cluster's
//! recent revisions; a Secret's changes name its keys, never its values.

use std::io::Write;

use anyhow::{Context, bail};
use berth_client::encode_query;
use serde_json::Value;

use crate::diff::diffable;
use crate::{Ctx, Output, print, print_document, resolve_kind, short_time};

pub(crate) async fn history(
    ctx: &Ctx,
    target: Vec<String>,
    show_diff: bool,
    show_status: bool,
    limit: u64,
    output: Option<Output>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (kind, name) = match target.as_slice() {
        [] => {
            let revs = ctx.client.revisions(&format!("limit={limit}")).await?;
            if print_document(&revs, output, out)? {
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = revs["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    vec![
                        r["revision"].to_string(),
                        short_time(&r["time"]),
                        r["user"].as_str().unwrap_or("").into(),
                        r["verb"].as_str().unwrap_or("").into(),
                        r["changes"].to_string(),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                print::table(&["REVISION", "TIME", "USER", "VERB", "CHANGES"], &rows)
            )?;
            return Ok(0);
        }
        [one] => {
            let (k, n) = one
                .split_once('/')
                .context("give KIND/NAME or KIND NAME, e.g. berth history deploy/web")?;
            (resolve_kind(k)?, n.to_string())
        }
        [k, n] => (resolve_kind(k)?, n.clone()),
        _ => bail!("give one object: KIND/NAME or KIND NAME"),
    };
    let mut q = format!(
        "resource={}&name={}",
        kind.qualified_plural(),
        encode_query(&name)
    );
    if kind.namespaced {
        q.push_str(&format!("&namespace={}", ctx.namespace));
    }
    let mut h = ctx.client.history(&q).await?;
    let items: Vec<Value> = h["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| show_status || i["verb"] != "update-status")
        .collect();
    h["items"] = Value::Array(items.clone());
    if print_document(&h, output, out)? {
        return Ok(0);
    }
    if !show_diff {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                let mut change = match (i["type"].as_str(), i["verb"].as_str()) {
                    (Some("Delete"), _) => "deleted".to_string(),
                    (_, Some(v)) => v.to_string(),
                    _ => String::new(),
                };
                if let Some(d) = data_changes(i) {
                    change.push_str(&format!(" ({d})"));
                }
                vec![
                    i["revision"].to_string(),
                    short_time(&i["time"]),
                    i["user"].as_str().unwrap_or("").into(),
                    change,
                ]
            })
            .collect();
        write!(
            out,
            "{}",
            print::table(&["REVISION", "TIME", "USER", "CHANGE"], &rows)
        )?;
        return Ok(0);
    }
    let mut prev = String::new();
    for i in items {
        writeln!(
            out,
            "revision {}  {}  by {}  ({})",
            i["revision"],
            short_time(&i["time"]),
            i["user"].as_str().unwrap_or(""),
            i["verb"].as_str().unwrap_or("")
        )?;
        if let Some(d) = data_changes(&i) {
            writeln!(out, "  {d}")?;
        }
        let cur = if i["type"] == "Delete" {
            String::new()
        } else {
            diffable(&i["object"])
        };
        let d = print::unified_diff(&prev, &cur, "before", "after");
        if d.is_empty() {
            writeln!(out, "  (no change to the object)")?;
        }
        for l in d.lines() {
            writeln!(out, "  {l}")?;
        }
        prev = cur;
    }
    Ok(0)
}

/// A Secret revision's `dataChanges` as words: `data: password changed, token added` (the
/// server never sends the values).
fn data_changes(item: &Value) -> Option<String> {
    let changes = item["dataChanges"].as_array().filter(|c| !c.is_empty())?;
    let words: Vec<String> = changes
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["key"].as_str().unwrap_or("?"),
                c["change"].as_str().unwrap_or("changed")
            )
        })
        .collect();
    Some(format!("data: {}", words.join(", ")))
}

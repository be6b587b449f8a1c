//! `berth describe`: one object in detail, kind by kind, with its recent events.

use std::io::Write;

use berth_api::kinds::ResourceKind;
use berth_client::encode_query;
use serde_json::Value;

use crate::{Ctx, manifests, ns_for, print, resolve_kind};

pub(crate) async fn describe(
    ctx: &Ctx,
    kind: &'static ResourceKind,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let ns = ns_for(kind, &ctx.namespace);
    let o = ctx.client.get(kind, ns, name).await?;
    let m = &o["metadata"];
    let kv = |v: &Value| -> String {
        match v.as_object() {
            Some(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n              "),
            _ => "<none>".into(),
        }
    };
    writeln!(out, "Name:         {}", m["name"].as_str().unwrap_or(""))?;
    if kind.namespaced {
        writeln!(
            out,
            "Namespace:    {}",
            m["namespace"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out, "Kind:         {}", kind.kind)?;
    writeln!(out, "Labels:       {}", kv(&m["labels"]))?;
    let mut ann = m["annotations"].clone();
    if let Some(a) = ann.as_object_mut() {
        a.remove(manifests::LAST_APPLIED);
    }
    writeln!(out, "Annotations:  {}", kv(&ann))?;
    writeln!(
        out,
        "Created:      {}",
        m["creationTimestamp"].as_str().unwrap_or("")
    )?;
    writeln!(out, "UID:          {}", m["uid"].as_str().unwrap_or(""))?;
    writeln!(
        out,
        "Version:      {} (generation {})",
        m["resourceVersion"].as_str().unwrap_or(""),
        m["generation"].as_i64().unwrap_or(0)
    )?;
    if let Some(owners) = m["ownerReferences"].as_array() {
        for r in owners {
            writeln!(
                out,
                "Controlled By:  {}/{}",
                r["kind"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            )?;
        }
    }
    if m["deletionTimestamp"].is_string() {
        writeln!(
            out,
            "Terminating:  since {}",
            m["deletionTimestamp"].as_str().unwrap_or("")
        )?;
    }
    let body: serde_json::Map<String, Value> = o
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &body {
        let mut title = k.clone();
        if let Some(f) = title.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        writeln!(out, "{title}:")?;
        let kind_secret = kind.kind == "Secret" && k == "data";
        if kind_secret {
            for (dk, dv) in v.as_object().cloned().unwrap_or_default() {
                let len =
                    berth_api::base64::decode(dv.as_str().unwrap_or("")).map_or(0, |b| b.len());
                writeln!(out, "  {dk}:  {len} bytes")?;
            }
            continue;
        }
        for l in print::to_yaml(v).lines() {
            writeln!(out, "  {l}")?;
        }
    }
    // Events about this object.
    let evk = resolve_kind("events")?;
    let q = format!(
        "fieldSelector={}",
        encode_query(&format!(
            "involvedObject.name={name},involvedObject.kind={}",
            kind.kind
        ))
    );
    let events = ctx
        .client
        .list(evk, ns.or(Some("default")), &q)
        .await
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default();
    if events.is_empty() {
        writeln!(out, "Events:       <none>")?;
    } else {
        writeln!(out, "Events:")?;
        let now = print::now_nanos();
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e["type"].as_str().unwrap_or("").into(),
                    e["reason"].as_str().unwrap_or("").into(),
                    print::age(e, now),
                    e["source"]["component"].as_str().unwrap_or("").into(),
                    e["message"].as_str().unwrap_or("").into(),
                ]
            })
            .collect();
        for l in print::table(&["Type", "Reason", "Age", "From", "Message"], &rows).lines() {
            writeln!(out, "  {l}")?;
        }
    }
    Ok(0)
}

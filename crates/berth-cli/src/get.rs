//! `berth get`: list objects or show one (tables, `-o wide|yaml|json|name`), several kinds at
//! once, as of a past revision or time, or watched.

use std::io::Write;

use anyhow::bail;
use berth_api::kinds::ResourceKind;
use berth_client::encode_query;
use clap::Args;
use serde_json::{Value, json};

use crate::{Ctx, Output, ns_for, print, resolve_kind};

/// What `berth get` takes.
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Kind: plural, singular or short name (po, deploy, rs, svc, ep, cm, ns, no)
    pub kind: String,
    /// Names (all objects of the kind if none)
    pub names: Vec<String>,
    /// Label selector, e.g. app=web,tier!=db
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. status.phase=Running
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// After listing, watch for changes
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Show the object as it was at this store revision
    #[arg(long, conflicts_with = "at")]
    pub revision: Option<u64>,
    /// Show the object as it was at this time (RFC 3339, e.g. 2026-11-27T10:00:00Z)
    #[arg(long)]
    pub at: Option<String>,
}

/// Lists or shows each kind asked for, one table each.
pub(crate) async fn run(ctx: &Ctx, args: GetArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let GetArgs {
        kind,
        names,
        selector,
        field_selector,
        all_namespaces,
        output,
        watch,
        revision,
        at,
    } = args;
    // `get deploy,cm` lists several kinds, one table each.
    let kinds = kind
        .split(',')
        .map(resolve_kind)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if kinds.len() > 1 && (!names.is_empty() || watch) {
        bail!("names and --watch go with one kind at a time");
    }
    let mut code = 0;
    for (i, k) in kinds.into_iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        code = code.max(
            get(
                ctx,
                k,
                names.clone(),
                selector.clone(),
                field_selector.clone(),
                all_namespaces,
                output,
                watch,
                revision,
                at.clone(),
                out,
            )
            .await?,
        );
    }
    Ok(code)
}

async fn get(
    ctx: &Ctx,
    kind: &'static ResourceKind,
    names: Vec<String>,
    selector: Option<String>,
    field_selector: Option<String>,
    all_namespaces: bool,
    output: Option<Output>,
    watch: bool,
    revision: Option<u64>,
    at: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let ns = if all_namespaces {
        None
    } else {
        ns_for(kind, &ctx.namespace)
    };
    let show_ns = all_namespaces && kind.namespaced;
    let mut objects: Vec<Value> = Vec::new();
    if revision.is_some() || at.is_some() {
        let [name] = names.as_slice() else {
            bail!("--revision and --at show one object: give its name")
        };
        let mut q = format!(
            "resource={}&name={}",
            kind.qualified_plural(),
            encode_query(name)
        );
        if let Some(ns) = ns {
            q.push_str(&format!("&namespace={ns}"));
        }
        match (revision, &at) {
            (Some(r), _) => q.push_str(&format!("&revision={r}")),
            (None, Some(t)) => q.push_str(&format!("&at={}", encode_query(t))),
            _ => {}
        }
        objects.push(ctx.client.history(&q).await?);
    } else if !names.is_empty() {
        for n in &names {
            objects.push(ctx.client.get(kind, ns, n).await?);
        }
    } else {
        let mut q = Vec::new();
        if let Some(s) = &selector {
            q.push(format!("labelSelector={}", encode_query(s)));
        }
        if let Some(f) = &field_selector {
            q.push(format!("fieldSelector={}", encode_query(f)));
        }
        let list = ctx.client.list(kind, ns, &q.join("&")).await?;
        objects = list["items"].as_array().cloned().unwrap_or_default();
        if !watch && objects.is_empty() && matches!(output, None | Some(Output::Wide)) {
            match ns {
                Some(ns) => eprintln!("No resources found in {ns} namespace."),
                None => eprintln!("No resources found"),
            }
            return Ok(0);
        }
        if watch {
            let rv = list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_string();
            print_objects(kind, &objects, output, show_ns, false, false, out)?;
            out.flush()?;
            let mut wq = q.clone();
            wq.push(format!("resourceVersion={rv}"));
            let mut w = ctx.client.watch(kind, ns, &wq.join("&")).await?;
            while let Some(ev) = w.next().await? {
                if ev.typ == "ERROR" {
                    bail!(
                        "watch ended: {}",
                        ev.object["message"].as_str().unwrap_or("error")
                    );
                }
                if ev.typ == "BOOKMARK" {
                    continue;
                }
                print_objects(kind, &[ev.object], output, show_ns, true, true, out)?;
                out.flush()?;
            }
            return Ok(0);
        }
    }
    let single = names.len() == 1;
    print_objects(kind, &objects, output, show_ns, false, single, out)?;
    Ok(0)
}

fn print_objects(
    kind: &ResourceKind,
    objects: &[Value],
    output: Option<Output>,
    show_ns: bool,
    no_headers: bool,
    single: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Some(Output::Yaml) | Some(Output::Json) => {
            // One object asked for by name (or one watch event) prints as itself; a listing
            // is always a List, as kubectl prints it.
            let v = if objects.len() == 1 && (no_headers || single) {
                objects[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}})
            };
            if output == Some(Output::Yaml) {
                if no_headers {
                    writeln!(out, "---")?;
                }
                write!(out, "{}", print::to_yaml(&v))?;
            } else {
                write!(out, "{}", print::to_json(&v))?;
            }
        }
        Some(Output::Name) => {
            for o in objects {
                writeln!(
                    out,
                    "{}/{}",
                    kind.qualified_singular(),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )?;
            }
        }
        None | Some(Output::Wide) => {
            let wide = output == Some(Output::Wide);
            let now = print::now_nanos();
            let mut headers = print::columns(kind, wide);
            if show_ns {
                headers.insert(0, "NAMESPACE");
            }
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| {
                    let mut r = print::row(kind, o, wide, now);
                    if show_ns {
                        r.insert(
                            0,
                            o["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        );
                    }
                    r
                })
                .collect();
            let t = print::table(&headers, &rows);
            if no_headers {
                for l in t.lines().skip(1) {
                    writeln!(out, "{l}")?;
                }
            } else {
                write!(out, "{t}")?;
            }
        }
    }
    Ok(())
}

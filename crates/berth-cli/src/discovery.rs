//! What the server offers: `berth api-resources` (the kinds it serves) and `berth version`.

use std::io::Write;

use crate::{Conn, Ctx, connect, hyper_get, print};

/// The client's version and the server's (or why it is unknown).
pub(crate) async fn version(conn: &Conn, out: &mut dyn Write) -> anyhow::Result<i32> {
    writeln!(out, "Client Version: v{}", env!("CARGO_PKG_VERSION"))?;
    match connect(conn) {
        Ok(ctx) => match ctx.client.json(hyper_get(), "/version", None).await {
            Ok(v) => writeln!(
                out,
                "Server Version: {}",
                v["gitVersion"].as_str().unwrap_or("?")
            )?,
            Err(e) => writeln!(out, "Server Version: unreachable ({e})")?,
        },
        Err(e) => writeln!(out, "Server Version: unknown ({e})")?,
    }
    Ok(0)
}

/// The kinds the server serves, as a table.
pub(crate) async fn api_resources(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut rows = Vec::new();
    let mut lists = vec![ctx.client.json(hyper_get(), "/api/v1", None).await?];
    let groups = ctx.client.json(hyper_get(), "/apis", None).await?;
    for g in groups["groups"].as_array().cloned().unwrap_or_default() {
        let gv = g["preferredVersion"]["groupVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        lists.push(
            ctx.client
                .json(hyper_get(), &format!("/apis/{gv}"), None)
                .await?,
        );
    }
    for l in lists {
        for r in l["resources"].as_array().cloned().unwrap_or_default() {
            let name = r["name"].as_str().unwrap_or("");
            if name.contains('/') {
                continue;
            }
            let short = r["shortNames"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            rows.push(vec![
                name.to_string(),
                short,
                l["groupVersion"].as_str().unwrap_or("").into(),
                r["namespaced"].to_string(),
                r["kind"].as_str().unwrap_or("").into(),
            ]);
        }
    }
    write!(
        out,
        "{}",
        print::table(
            &["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
            &rows
        )
    )?;
    Ok(0)
}

//! `berth history --denied`: the requests the API server refused (401, 403), from its audit
//! log: when, who, what they asked and why it was refused. Reading it takes `get` on
//! `berth.dev` `audit` (cluster-admin's).

use std::io::Write;

use serde_json::Value;

use crate::{Ctx, Output, print, print_document, short_time};

pub(crate) async fn denied(
    ctx: &Ctx,
    limit: u64,
    output: Option<Output>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let events = ctx.client.audit(&format!("denied=1&limit={limit}")).await?;
    if print_document(&events, output, out)? {
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = events["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let user = e["user"]["username"].as_str().unwrap_or("(unknown)");
            vec![
                short_time(&e["requestReceivedTimestamp"]),
                user.to_string(),
                e["verb"].as_str().unwrap_or("").to_string(),
                object(e),
                e["responseStatus"]["code"].to_string(),
                e["responseStatus"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        print::table(
            &["TIME", "USER", "VERB", "OBJECT", "CODE", "MESSAGE"],
            &rows
        )
    )?;
    Ok(0)
}

/// What a request was about: `secrets shop/db`, `deployments.apps/scale shop/web`,
/// `nodes n1`, or the path of a request outside the resource tree.
fn object(e: &Value) -> String {
    let Some(o) = e.get("objectRef").filter(|o| o.is_object()) else {
        let uri = e["requestURI"].as_str().unwrap_or("");
        return uri.split('?').next().unwrap_or(uri).to_string();
    };
    let s = |k: &str| o[k].as_str().unwrap_or("");
    let mut what = s("resource").to_string();
    if !s("apiGroup").is_empty() {
        what = format!("{what}.{}", s("apiGroup"));
    }
    if !s("subresource").is_empty() {
        what = format!("{what}/{}", s("subresource"));
    }
    match (s("namespace"), s("name")) {
        ("", "") => what,
        ("", name) => format!("{what} {name}"),
        (ns, "") => format!("{what} -n {ns}"),
        (ns, name) => format!("{what} {ns}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_read_as_kubectl_names_them() {
        let o = |v: Value| object(&v);
        assert_eq!(
            o(json!({"objectRef": {"resource": "secrets", "namespace": "shop", "name": "db"}})),
            "secrets shop/db"
        );
        assert_eq!(
            o(
                json!({"objectRef": {"resource": "deployments", "apiGroup": "apps", "subresource": "scale", "namespace": "shop", "name": "web"}})
            ),
            "deployments.apps/scale shop/web"
        );
        assert_eq!(
            o(json!({"objectRef": {"resource": "pods", "namespace": "shop"}})),
            "pods -n shop"
        );
        assert_eq!(o(json!({"objectRef": {"resource": "nodes"}})), "nodes");
        assert_eq!(o(json!({"requestURI": "/apis?x=1"})), "/apis");
    }
}

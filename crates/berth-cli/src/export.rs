//! `berth export`: the whole desired state as one multi-document manifest, now or as of a
//! past revision or time; Secrets only on request, only current ones, and only those the
//! caller may read (the others are named on stderr).

use std::io::Write;

use berth_client::encode_query;

use crate::{Ctx, print};

/// Writes the export; Secrets left out are named in comments.
pub(crate) async fn export(
    ctx: &Ctx,
    revision: Option<u64>,
    at: Option<String>,
    include_secrets: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let q = match (revision, at) {
        (Some(r), _) => format!("revision={r}"),
        (None, Some(t)) => format!("at={}", encode_query(&t)),
        _ if include_secrets => "includeSecrets=true".to_string(),
        _ => String::new(),
    };
    let list = ctx.client.export(&q).await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "# berth export at revision {}",
        list["metadata"]["resourceVersion"].as_str().unwrap_or("?")
    )?;
    for s in list["omittedSecrets"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "# left out: secret {} (Secrets are exported only with --include-secrets, at the current revision)",
            s.as_str().unwrap_or("?")
        )?;
    }
    // Asked for, but not the caller's to read, or not readable at all: said on stderr, so the
    // manifest on stdout stays whole and the user still learns what is missing.
    for s in list["forbiddenSecrets"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: left out secret {}: you may not get Secrets in its namespace",
            s.as_str().unwrap_or("?")
        );
    }
    for e in list["unreadable"].as_array().into_iter().flatten() {
        eprintln!("warning: left out: {}", e.as_str().unwrap_or("?"));
    }
    for it in items {
        writeln!(out, "---")?;
        write!(out, "{}", print::to_yaml(&it))?;
    }
    Ok(0)
}

//! `berth kv put|get|ls|rm|watch`: the cluster's key/value tree
//! (`/apis/kv.berth.dev/v1/keys/...`), laid out as directories: `/services/NS/SVC/POD` holds
//! every ready pod of every Service, and anything else is yours.

use std::io::{Read, Write};

use anyhow::Context;
use berth_client::{Client, Method};
use clap::{Subcommand, ValueEnum};
use serde_json::Value;

/// How an entry is shown.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOutput {
    /// The value itself (for `get`), a table (for `ls`), one line per change (for `watch`)
    Plain,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug, Clone)]
pub enum KvCmd {
    /// Set a key's value (from the argument, a file, or - for standard input); at most 512 KiB
    Put {
        key: String,
        /// The value (or use --file)
        value: Option<String>,
        /// Read the value from this file (- for standard input)
        #[arg(short = 'f', long, value_name = "FILE", conflicts_with = "value")]
        file: Option<String>,
        /// Write only if the key is at this index (0: only if it does not exist yet)
        #[arg(long, value_name = "INDEX")]
        cas: Option<u64>,
    },
    /// Print a key's value
    Get {
        key: String,
        #[arg(short = 'o', long, value_enum, default_value = "plain")]
        output: KvOutput,
    },
    /// List what is directly under a key (directories end in /), or everything with -R
    Ls {
        #[arg(default_value = "/")]
        key: String,
        /// Every key under it, at any depth
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(short = 'o', long, value_enum, default_value = "plain")]
        output: KvOutput,
    },
    /// Delete a key (with -r, and everything under it)
    Rm {
        key: String,
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Delete only if the key is at this index
        #[arg(long, value_name = "INDEX")]
        cas: Option<u64>,
    },
    /// Print every change of a key (with -r, of everything under it) as it happens
    Watch {
        key: String,
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Start after this index (from `get -o json` or `ls -o json`), so no change between
        /// a read and the watch is missed
        #[arg(long, value_name = "INDEX")]
        index: Option<u64>,
        #[arg(short = 'o', long, value_enum, default_value = "plain")]
        output: KvOutput,
    },
}

/// The API path of a key.
fn path(key: &str, query: &str) -> anyhow::Result<String> {
    if !key.starts_with('/') {
        anyhow::bail!("key {key:?} must start with / (for example /config/app/level)");
    }
    Ok(berth_client::kv_path(key, query))
}

fn value_text(e: &Value) -> String {
    match (e["value"].as_str(), e["valueBase64"].as_str()) {
        (Some(v), _) => v.to_string(),
        (None, Some(b)) => format!("(binary, base64) {b}"),
        _ => String::new(),
    }
}

fn short(s: &str) -> String {
    let one_line = s.replace('\n', "\\n");
    if one_line.chars().count() > 60 {
        format!("{}...", one_line.chars().take(57).collect::<String>())
    } else {
        one_line
    }
}

fn print(out: &mut dyn Write, v: &Value, how: KvOutput) -> anyhow::Result<()> {
    match how {
        KvOutput::Yaml => write!(out, "{}", crate::print::to_yaml(v))?,
        _ => writeln!(out, "{}", crate::print::to_json(v))?,
    }
    Ok(())
}

pub async fn run(client: &Client, cmd: KvCmd, out: &mut dyn Write) -> anyhow::Result<i32> {
    match cmd {
        KvCmd::Put {
            key,
            value,
            file,
            cas,
        } => {
            let data = match (value, file.as_deref()) {
                (Some(v), _) => v.into_bytes(),
                (None, Some("-")) => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .context("cannot read standard input")?;
                    b
                }
                (None, Some(f)) => std::fs::read(f).with_context(|| format!("cannot read {f}"))?,
                (None, None) => {
                    anyhow::bail!(
                        "give the value: berth kv put KEY VALUE, or --file FILE (- for standard input)"
                    )
                }
            };
            let q = cas.map(|c| format!("cas={c}")).unwrap_or_default();
            let e = client
                .json(
                    Method::PUT,
                    &path(&key, &q)?,
                    Some(("application/octet-stream", data)),
                )
                .await?;
            writeln!(
                out,
                "{} set (index {})",
                e["key"].as_str().unwrap_or(&key),
                e["modIndex"]
            )?;
        }
        KvCmd::Get { key, output } => {
            if output == KvOutput::Plain {
                let r = client.raw(Method::GET, &path(&key, "raw=1")?, None).await?;
                if !(200..300).contains(&r.status) {
                    return Err(berth_client::status_error(&key, r.status, &r.body).into());
                }
                out.write_all(&r.body)?;
                if !r.body.ends_with(b"\n") && std::str::from_utf8(&r.body).is_ok() {
                    writeln!(out)?;
                }
            } else {
                let e = client.json(Method::GET, &path(&key, "")?, None).await?;
                print(out, &e, output)?;
            }
        }
        KvCmd::Ls {
            key,
            recursive,
            output,
        } => {
            let q = if recursive { "recurse=1" } else { "list=1" };
            let l = client.json(Method::GET, &path(&key, q)?, None).await?;
            if output != KvOutput::Plain {
                print(out, &l, output)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = l["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let name = e["name"]
                        .as_str()
                        .or(e["key"].as_str())
                        .unwrap_or("")
                        .to_string();
                    if e["dir"] == true {
                        vec![name, String::new(), String::new()]
                    } else {
                        vec![name, e["modIndex"].to_string(), short(&value_text(e))]
                    }
                })
                .collect();
            if rows.is_empty() {
                writeln!(out, "nothing under {key}")?;
            } else {
                write!(
                    out,
                    "{}",
                    crate::print::table(&["KEY", "INDEX", "VALUE"], &rows)
                )?;
            }
        }
        KvCmd::Rm {
            key,
            recursive,
            cas,
        } => {
            let mut q = Vec::new();
            if recursive {
                q.push("recurse=1".to_string());
            }
            if let Some(c) = cas {
                q.push(format!("cas={c}"));
            }
            let r = client
                .json(Method::DELETE, &path(&key, &q.join("&"))?, None)
                .await?;
            writeln!(out, "{} deleted ({} keys)", key, r["deleted"])?;
        }
        KvCmd::Watch {
            key,
            recursive,
            index,
            output,
        } => {
            let mut q = vec!["watch=1".to_string()];
            if recursive {
                q.push("recurse=1".into());
            }
            if let Some(i) = index {
                q.push(format!("index={i}"));
            }
            let mut s = client.json_lines(&path(&key, &q.join("&"))?).await?;
            while let Some(ev) = s.next().await? {
                if ev["type"] == "ERROR" {
                    anyhow::bail!(
                        "the watch ended: {}",
                        ev["error"].as_str().unwrap_or("unknown error")
                    );
                }
                match output {
                    KvOutput::Plain => writeln!(
                        out,
                        "{} {} {} {}",
                        ev["type"].as_str().unwrap_or(""),
                        ev["key"].as_str().unwrap_or(""),
                        ev["modIndex"],
                        short(&value_text(&ev))
                    )?,
                    KvOutput::Json => writeln!(out, "{}", serde_json::to_string(&ev)?)?,
                    KvOutput::Yaml => write!(out, "---\n{}", crate::print::to_yaml(&ev))?,
                }
                out.flush()?;
            }
        }
    }
    Ok(0)
}

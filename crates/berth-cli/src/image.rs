//! `berth image ls|inspect|rm|import`: the image store of a data directory, used directly
//! (no server needed).

use std::io::Write;
use std::path::PathBuf;

use berth_image::{ImageRecord, ImageStore, import::import};
use clap::Subcommand;
use serde_json::json;

use crate::print;

#[derive(Subcommand, Debug, Clone)]
pub enum ImageCmd {
    /// List the images in the store
    Ls,
    /// Show an image's manifest digest, layers and run configuration as JSON
    Inspect { name: String },
    /// Remove images, and the blobs and layers no other image uses
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Import images from an OCI image layout (directory or tar) or a `docker save` archive
    Import {
        file: PathBuf,
        /// Name the image (required when the archive names none)
        #[arg(long)]
        name: Option<String>,
    },
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

fn split_name(rec: &ImageRecord) -> (String, String) {
    let r = berth_image::Reference::parse(&rec.name).ok();
    match r {
        Some(r) => {
            let tag = r.tag.clone().unwrap_or_else(|| "<none>".into());
            let repo = berth_image::Reference {
                tag: None,
                digest: None,
                ..r
            }
            .familiar();
            (repo, tag)
        }
        None => (rec.name.clone(), "<none>".into()),
    }
}

/// Runs an image command against the store under `data_dir`.
pub fn run(data_dir: &std::path::Path, cmd: ImageCmd, out: &mut dyn Write) -> anyhow::Result<i32> {
    let store = ImageStore::open(&data_dir.join("images"))?;
    match cmd {
        ImageCmd::Ls => {
            let rows: Vec<Vec<String>> = store
                .list()?
                .iter()
                .map(|r| {
                    let (repo, tag) = split_name(r);
                    vec![
                        repo,
                        tag,
                        r.manifest.hex()[..12].to_string(),
                        human_size(r.size()),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                print::table(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE"], &rows)
            )?;
        }
        ImageCmd::Inspect { name } => {
            let r = store.resolve(&name)?;
            let v = json!({
                "name": r.name,
                "manifest": r.manifest.as_str(),
                "config": r.config_digest.as_str(),
                "size": r.size(),
                "layers": r.layers.iter().map(|l| json!({"digest": l.digest.as_str(), "mediaType": l.media_type, "size": l.size})).collect::<Vec<_>>(),
                "runConfig": r.config,
                "source": r.source,
            });
            write!(out, "{}", print::to_json(&v))?;
        }
        ImageCmd::Rm { names } => {
            let mut code = 0;
            for n in names {
                match store.remove(&n) {
                    Ok(r) => writeln!(out, "Deleted: {} ({})", r.name, r.manifest)?,
                    Err(e) => {
                        eprintln!("error: {e}");
                        code = 1;
                    }
                }
            }
            return Ok(code);
        }
        ImageCmd::Import { file, name } => {
            for r in import(&store, &file, name.as_deref())? {
                writeln!(
                    out,
                    "imported {} ({}, {} layers, {})",
                    r.name,
                    r.manifest,
                    r.layers.len(),
                    human_size(r.size())
                )?;
            }
        }
    }
    Ok(0)
}

//! `berth image ls|inspect|rm|import`: the image store of a data directory, used directly
//! (no server needed).

use std::io::Write;
use std::path::PathBuf;

use berth_image::registry::{Progress, PullOptions, pull};
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
    /// Pull an image from a registry (OCI distribution API), with progress
    Pull {
        /// Image reference, e.g. busybox:1.36 or localhost:5000/team/app:v1
        image: String,
        /// A registry (host:port) to reach over plain HTTP; repeatable
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure: Vec<String>,
        /// A CA certificate (PEM file) to trust for the registry's HTTPS
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Credentials as USER:PASSWORD (or set BERTH_REGISTRY_AUTH)
        #[arg(
            long,
            value_name = "USER:PASSWORD",
            env = "BERTH_REGISTRY_AUTH",
            hide_env_values = true
        )]
        creds: Option<String>,
        /// A host (HOST or HOST:PORT) besides the registry's own that may get the credentials
        /// when the registry names it as its token service (HTTPS only); repeatable
        #[arg(long = "auth-host", value_name = "HOST")]
        auth_hosts: Vec<String>,
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

/// Shows pull progress: redrawn in place on a terminal, a line per finished layer otherwise.
fn progress_printer() -> impl Fn(Progress) + Sync {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    move |p| {
        let short = |d: &berth_image::Digest| d.hex()[..12].to_string();
        match p {
            Progress::Resolved {
                manifest,
                layers,
                bytes,
            } => eprintln!(
                "{}: {layers} layers, {}",
                short(&manifest),
                human_size(bytes)
            ),
            Progress::LayerStarted { .. } => {}
            Progress::LayerBytes { digest, done, size } if tty => {
                let pct = (done * 100).checked_div(size).unwrap_or(0);
                eprint!(
                    "\r{}: downloading {} / {} ({pct}%)   ",
                    short(&digest),
                    human_size(done),
                    human_size(size)
                );
            }
            Progress::LayerBytes { .. } => {}
            Progress::LayerDone { digest, cached } => {
                let what = if cached { "already present" } else { "pulled" };
                if tty {
                    eprintln!("\r{}: {what}{}", short(&digest), " ".repeat(40));
                } else {
                    eprintln!("{}: {what}", short(&digest));
                }
            }
        }
    }
}

/// Runs an image command against the store under `data_dir`.
pub async fn run(
    data_dir: &std::path::Path,
    cmd: ImageCmd,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
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
        ImageCmd::Pull {
            image,
            insecure,
            ca,
            creds,
            auth_hosts,
        } => {
            let reference = berth_image::Reference::parse(&image)?;
            let ca_pem = match ca {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| anyhow::anyhow!("cannot read CA {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let credentials = match creds {
                Some(c) => {
                    let (u, p) = c
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("credentials must be USER:PASSWORD"))?;
                    Some((u.to_string(), p.to_string()))
                }
                None => None,
            };
            let opts = PullOptions {
                insecure,
                ca_pem,
                credentials,
                auth_hosts,
                parallel: 3,
                stall_timeout: None,
            };
            let rec = pull(&store, &reference, &opts, &progress_printer()).await?;
            writeln!(out, "pulled {} ({})", rec.name, rec.manifest)?;
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

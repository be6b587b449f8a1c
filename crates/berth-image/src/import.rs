//! Importing images from files: OCI image layouts (a directory or a tar of one) and
//! `docker save` archives (both the classic `manifest.json` form and the OCI form newer
//! Dockers write). Every blob is verified against its digest on the way in.
//!
//! An archive is hostile input: it is unpacked with the layer unpacker (no entry written
//! through a link), and every file in it is then opened beneath its root with the kernel
//! refusing links that lead out (`berth_fs::open_beneath`), so an archive whose `index.json`
//! or blobs are links to the host's files is refused rather than read. JSON documents are
//! read up to [`MAX_JSON`].

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, LayerRef};
use crate::{ImageError, io_err};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn invalid(what: &str, why: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        what: what.to_string(),
        why: why.into(),
    }
}

/// A directory that removes itself.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The most an index, manifest or config in an archive may hold (containerd's limit for
/// manifests).
pub const MAX_JSON: u64 = 4 << 20;

/// An archive's files, reached only beneath its root.
struct Layout {
    root: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl Layout {
    fn open_dir(path: &Path) -> Result<Layout, ImageError> {
        Ok(Layout {
            root: berth_fs::open_root(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Opens `rel` for reading; a link that leaves the archive is refused.
    fn open(&self, rel: &str) -> Result<std::fs::File, ImageError> {
        use std::os::fd::AsFd;
        berth_fs::open_beneath(
            self.root.as_fd(),
            Path::new(rel),
            rustix::fs::OFlags::RDONLY,
        )
        .map(std::fs::File::from)
        .map_err(|e| match e {
            berth_fs::FsError::Escapes { .. } => invalid(
                &self.path.display().to_string(),
                format!("{rel} is a link that leads out of the archive"),
            ),
            e => ImageError::Io {
                path: self.path.join(rel).display().to_string(),
                source: e.into(),
            },
        })
    }

    fn has(&self, rel: &str) -> bool {
        self.open(rel).is_ok()
    }

    /// Reads a JSON document of at most [`MAX_JSON`] bytes.
    fn read_json_bytes(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        use std::io::Read;
        let mut b = Vec::new();
        self.open(rel)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut b)
            .map_err(io_err(&self.path.join(rel)))?;
        if b.len() as u64 > MAX_JSON {
            return Err(invalid(rel, format!("larger than {} MiB", MAX_JSON >> 20)));
        }
        Ok(b)
    }

    fn read_json(&self, rel: &str) -> Result<Value, ImageError> {
        serde_json::from_slice(&self.read_json_bytes(rel)?).map_err(|e| invalid(rel, e.to_string()))
    }
}

/// Imports every image in `path`. `name` names the image when the archive does not (or
/// renames it when it holds exactly one).
pub fn import(
    store: &ImageStore,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImageError> {
    let name = name.map(Reference::parse).transpose()?;
    let (dir, _tmp) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let tmp = store.root().join("tmp").join(format!(
            "import-{}-{}",
            std::process::id(),
            Digest::of(path.display().to_string().as_bytes()).hex()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let guard = TempDir(tmp.clone());
        let f = std::fs::File::open(path).map_err(io_err(path))?;
        let mut r = std::io::BufReader::new(f);
        let gz = std::io::BufRead::fill_buf(&mut r)
            .map_err(io_err(path))?
            .starts_with(&[0x1f, 0x8b]);
        let stream: Box<dyn std::io::Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(r))
        } else {
            Box::new(r)
        };
        let opts = crate::unpack::UnpackOptions {
            whiteouts: false,
            max_size: u64::MAX,
        };
        crate::unpack::unpack(stream, &tmp, opts).map_err(|e| match e {
            ImageError::Invalid { why, .. } => invalid(
                &path.display().to_string(),
                format!("not a tar archive of an image: {why}"),
            ),
            e => e,
        })?;
        (tmp, Some(guard))
    };
    let source = format!("import {}", path.display());
    let dir = Layout::open_dir(&dir)?;
    if dir.has("index.json") {
        import_oci(store, &dir, name, &source)
    } else if dir.has("manifest.json") {
        import_docker(store, &dir, name, &source)
    } else {
        Err(invalid(
            &path.display().to_string(),
            "neither an OCI image layout (index.json) nor a `docker save` archive (manifest.json)",
        ))
    }
}

/// A name given on the command line can name one image only.
fn one_image_if_named(name: &Option<Reference>, images: usize) -> Result<(), ImageError> {
    if name.is_some() && images > 1 {
        return Err(invalid(
            "--name",
            format!("the archive holds {images} images; import it without a name"),
        ));
    }
    Ok(())
}

fn copy_blob(store: &ImageStore, dir: &Layout, d: &Digest) -> Result<u64, ImageError> {
    let mut f = dir.open(&format!("blobs/sha256/{}", d.hex()))?;
    store.write_blob(d, &mut f)
}

fn descriptor_digest(v: &Value, what: &str) -> Result<Digest, ImageError> {
    Ok(Digest::parse(v["digest"].as_str().ok_or_else(|| {
        invalid(what, "descriptor without a digest")
    })?)?)
}

/// Picks linux/amd64 out of an index.
fn pick_platform(index: &Value) -> Result<Value, ImageError> {
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| invalid("image index", "no manifests"))?;
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    manifests
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .or_else(|| manifests.iter().find(|m| m.get("platform").is_none()))
        .cloned()
        .ok_or_else(|| invalid("image index", format!("no linux/{arch} image in it")))
}

/// Stores a manifest's config and layers (from `dir`) and returns the record.
fn record_from_manifest(
    store: &ImageStore,
    dir: &Layout,
    manifest_digest: Digest,
    manifest: &Value,
    name: String,
    source: &str,
) -> Result<ImageRecord, ImageError> {
    let config_digest = descriptor_digest(&manifest["config"], "manifest config")?;
    copy_blob(store, dir, &config_digest)?;
    let config = ImageConfig::from_blob(&store.read_blob(&config_digest)?)?;
    let mut layers = Vec::new();
    for l in manifest["layers"]
        .as_array()
        .ok_or_else(|| invalid("manifest", "no layers list"))?
    {
        let digest = descriptor_digest(l, "layer")?;
        let size = copy_blob(store, dir, &digest)?;
        layers.push(LayerRef {
            digest,
            media_type: l["mediaType"].as_str().unwrap_or("").to_string(),
            size,
        });
    }
    Ok(ImageRecord {
        name,
        manifest: manifest_digest,
        config_digest,
        layers,
        config,
        source: source.to_string(),
    })
}

fn import_oci(
    store: &ImageStore,
    dir: &Layout,
    name: Option<Reference>,
    source: &str,
) -> Result<Vec<ImageRecord>, ImageError> {
    let index = dir.read_json("index.json")?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return Err(invalid("index.json", "lists no images"));
    }
    one_image_if_named(&name, entries.len())?;
    let mut out = Vec::new();
    for e in entries {
        let ann = &e["annotations"];
        let full = match (
            &name,
            ann["io.containerd.image.name"].as_str(),
            ann["org.opencontainers.image.ref.name"].as_str(),
        ) {
            (Some(n), _, _) => n.to_string(),
            (None, Some(n), _) => Reference::parse(n)?.to_string(),
            (None, None, Some(r)) if r.contains('/') || r.contains(':') => {
                Reference::parse(r)?.to_string()
            }
            _ => {
                return Err(invalid(
                    "index.json",
                    "an image has no name; give one with --name",
                ));
            }
        };
        let mut digest = descriptor_digest(&e, "index.json")?;
        copy_blob(store, dir, &digest)?;
        let mut manifest: Value = serde_json::from_slice(&store.read_blob(&digest)?)
            .map_err(|err| invalid("manifest", err.to_string()))?;
        let mt = manifest["mediaType"]
            .as_str()
            .or(e["mediaType"].as_str())
            .unwrap_or("")
            .to_string();
        if mt == OCI_INDEX || mt == DOCKER_LIST || manifest.get("manifests").is_some() {
            let chosen = pick_platform(&manifest)?;
            digest = descriptor_digest(&chosen, "image index")?;
            copy_blob(store, dir, &digest)?;
            manifest = serde_json::from_slice(&store.read_blob(&digest)?)
                .map_err(|err| invalid("manifest", err.to_string()))?;
        } else if !(mt == OCI_MANIFEST || mt == DOCKER_MANIFEST || mt.is_empty()) {
            return Err(invalid("manifest", format!("unsupported media type {mt}")));
        }
        let rec = record_from_manifest(store, dir, digest, &manifest, full, source)?;
        store.put_image(rec.clone())?;
        out.push(rec);
    }
    Ok(out)
}

fn import_docker(
    store: &ImageStore,
    dir: &Layout,
    name: Option<Reference>,
    source: &str,
) -> Result<Vec<ImageRecord>, ImageError> {
    let entries = dir.read_json("manifest.json")?;
    let entries = entries
        .as_array()
        .cloned()
        .ok_or_else(|| invalid("manifest.json", "not a list"))?;
    one_image_if_named(&name, entries.len())?;
    let mut out = Vec::new();
    for e in entries {
        let rel = |p: &str| -> Result<String, ImageError> {
            if Path::new(p)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(invalid(
                    "manifest.json",
                    format!("path {p:?} leaves the archive"),
                ));
            }
            Ok(p.to_string())
        };
        let config_path = rel(e["Config"]
            .as_str()
            .ok_or_else(|| invalid("manifest.json", "an entry has no Config"))?)?;
        let config_bytes = dir.read_json_bytes(&config_path)?;
        let config_digest = store.write_blob_bytes(&config_bytes)?;
        let config = ImageConfig::from_blob(&config_bytes)?;
        let mut layers = Vec::new();
        for l in e["Layers"].as_array().cloned().unwrap_or_default() {
            let p = rel(l
                .as_str()
                .ok_or_else(|| invalid("manifest.json", "a layer path is not a string"))?)?;
            let at = dir.path.join(&p);
            let mut f = dir.open(&p)?;
            let mut head = [0u8; 2];
            let gz = std::io::Read::read(&mut f, &mut head).map_err(io_err(&at))? == 2
                && head == [0x1f, 0x8b];
            let mut f = dir.open(&p)?;
            let mut hasher = crate::digest::HashingWriter::new(std::io::sink());
            std::io::copy(&mut f, &mut hasher).map_err(io_err(&at))?;
            let digest = hasher.hasher.finish();
            let mut f = dir.open(&p)?;
            let size = store.write_blob(&digest, &mut f)?;
            let media_type = if gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            layers.push(LayerRef {
                digest,
                media_type: media_type.into(),
                size,
            });
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.as_str(), "size": config_bytes.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest.as_str(), "size": l.size})).collect::<Vec<_>>(),
        });
        let manifest_digest =
            store.write_blob_bytes(&serde_json::to_vec(&manifest).unwrap_or_default())?;
        let tags: Vec<String> = e["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let names: Vec<String> = match (&name, tags.is_empty()) {
            (Some(n), _) => vec![n.to_string()],
            (None, false) => tags
                .iter()
                .map(|t| Reference::parse(t).map(|r| r.to_string()))
                .collect::<Result<_, _>>()?,
            (None, true) => {
                return Err(invalid(
                    "manifest.json",
                    "an image has no RepoTags; give it a name with --name",
                ));
            }
        };
        for n in names {
            let rec = ImageRecord {
                name: n,
                manifest: manifest_digest.clone(),
                config_digest: config_digest.clone(),
                layers: layers.clone(),
                config: config.clone(),
                source: source.to_string(),
            };
            store.put_image(rec.clone())?;
            out.push(rec);
        }
    }
    Ok(out)
}

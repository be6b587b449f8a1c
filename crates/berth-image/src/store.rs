//! The content store in the data directory:
//!
//! ```text
//! images/blobs/sha256/<hex>          blobs by digest (manifests, configs, layers)
//! images/layers/<hex>/rootfs         a layer unpacked once, an overlay lower dir
//! images/layers/<hex>/complete       written last: the unpack finished
//! images/images.json                 name -> manifest, config, layers (written atomically)
//! images/tmp/                        downloads and unpacks in progress
//! ```
//!
//! Reference counts are what `images.json` says: a blob or layer no image names is garbage,
//! removed by `gc` (and by `remove`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ImageConfig;
use crate::digest::{Digest, HashingWriter};
use crate::reference::Reference;
use crate::{ImageError, io_err};

/// The name of the built-in image made of the host's own programs.
pub const HOST_IMAGE: &str = "host";

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRef {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image the store knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// Full reference: `docker.io/library/busybox:latest`.
    pub name: String,
    pub manifest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<LayerRef>,
    pub config: ImageConfig,
    /// Where it came from: `import FILE`, `pull REGISTRY`.
    pub source: String,
}

impl ImageRecord {
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A blob being written: bytes go to a temporary file and into a hash; `commit` checks the
/// digest and moves the file into place. Dropped without a commit, it leaves nothing.
pub struct BlobWriter {
    out: HashingWriter<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    dst: PathBuf,
    expected: Digest,
    done: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("expected", &self.expected)
            .finish()
    }
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(bytes).map_err(io_err(&self.tmp))
    }

    pub fn written(&self) -> u64 {
        self.out.written
    }

    /// Verifies the digest and stores the blob; returns its size.
    pub fn commit(mut self) -> Result<u64, ImageError> {
        self.out.flush().map_err(io_err(&self.tmp))?;
        let hasher = std::mem::take(&mut self.out.hasher);
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(ImageError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        self.out
            .inner
            .get_ref()
            .sync_all()
            .map_err(io_err(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.dst).map_err(io_err(&self.dst))?;
        self.done = true;
        Ok(self.out.written)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: Vec<ImageRecord>,
}

/// The image store of one data directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        for d in ["blobs/sha256", "layers", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    fn tmp_file(&self) -> Result<(std::fs::File, PathBuf), ImageError> {
        let dir = self.root.join("tmp");
        for n in 0u32.. {
            let p = dir.join(format!("{}-{n}.part", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(f) => return Ok((f, p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        unreachable!("u32 ran out of temporary names")
    }

    /// Starts writing a blob that must turn out to have digest `expected`. `None` when the
    /// store already has it.
    pub fn begin_blob(&self, expected: &Digest) -> Result<Option<BlobWriter>, ImageError> {
        let dst = self.blob_path(expected);
        if dst.exists() {
            return Ok(None);
        }
        let (file, tmp) = self.tmp_file()?;
        Ok(Some(BlobWriter {
            out: HashingWriter::new(std::io::BufWriter::new(file)),
            tmp,
            dst,
            expected: expected.clone(),
            done: false,
        }))
    }

    /// Streams a blob in, verifying it against `expected` as it goes. On a mismatch nothing
    /// is stored. A blob already present is not written again.
    pub fn write_blob(&self, expected: &Digest, reader: &mut dyn Read) -> Result<u64, ImageError> {
        match self.begin_blob(expected)? {
            None => {
                let dst = self.blob_path(expected);
                Ok(std::fs::metadata(&dst).map_err(io_err(&dst))?.len())
            }
            Some(mut w) => {
                std::io::copy(reader, &mut w.out).map_err(io_err(&w.tmp))?;
                w.commit()
            }
        }
    }

    /// Stores bytes whose digest is computed here.
    pub fn write_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, ImageError> {
        let d = Digest::of(bytes);
        self.write_blob(&d, &mut &bytes[..])?;
        Ok(d)
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let p = self.blob_path(d);
        std::fs::read(&p).map_err(io_err(&p))
    }

    /// The unpacked root of a layer, unpacking it the first time.
    pub fn layer_dir(&self, layer: &LayerRef) -> Result<PathBuf, ImageError> {
        let base = self.root.join("layers").join(layer.digest.hex());
        let rootfs = base.join("rootfs");
        if base.join("complete").exists() {
            return Ok(rootfs);
        }
        if !(layer.media_type.contains("tar") || layer.media_type.is_empty())
            || layer.media_type.contains("zstd")
        {
            return Err(ImageError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
        // An unpack a crash interrupted is redone from scratch.
        if base.exists() {
            std::fs::remove_dir_all(&base).map_err(io_err(&base))?;
        }
        std::fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
        let blob = self.blob_path(&layer.digest);
        let f = std::fs::File::open(&blob).map_err(io_err(&blob))?;
        crate::unpack::unpack_layer(f, &rootfs)?;
        let marker = base.join("complete");
        std::fs::write(&marker, layer.digest.as_str()).map_err(io_err(&marker))?;
        Ok(rootfs)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<Index, ImageError> {
        let p = self.index_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Invalid {
                what: p.display().to_string(),
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn write_index(&self, idx: &Index) -> Result<(), ImageError> {
        let p = self.index_path();
        let tmp = p.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(idx).map_err(|e| ImageError::Invalid {
            what: "image index".into(),
            why: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err(&p))
    }

    /// Records an image under its name (replacing what the name pointed at).
    pub fn put_image(&self, rec: ImageRecord) -> Result<(), ImageError> {
        let mut idx = self.read_index()?;
        idx.images.retain(|i| i.name != rec.name);
        idx.images.push(rec);
        idx.images.sort_by(|a, b| a.name.cmp(&b.name));
        self.write_index(&idx)
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.read_index()?.images)
    }

    /// Finds an image by what a user typed: a name (`busybox`, `busybox:1.36`, full
    /// reference) or a digest prefix of its manifest.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let idx = self.read_index()?;
        if let Ok(r) = Reference::parse(name) {
            let full = r.to_string();
            if let Some(i) = idx.images.iter().find(|i| i.name == full) {
                return Ok(i.clone());
            }
        }
        if name.len() >= 12 {
            let want = name.strip_prefix("sha256:").unwrap_or(name);
            let hits: Vec<_> = idx
                .images
                .iter()
                .filter(|i| i.manifest.hex().starts_with(want))
                .collect();
            if hits.len() == 1 {
                return Ok(hits[0].clone());
            }
        }
        Err(ImageError::NotFound(name.to_string()))
    }

    /// Forgets an image, then removes what no other image uses.
    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let rec = self.resolve(name)?;
        let mut idx = self.read_index()?;
        idx.images.retain(|i| i.name != rec.name);
        self.write_index(&idx)?;
        self.gc()?;
        Ok(rec)
    }

    /// Removes blobs and unpacked layers no image refers to; returns how many went.
    pub fn gc(&self) -> Result<usize, ImageError> {
        let idx = self.read_index()?;
        let mut live: BTreeSet<String> = BTreeSet::new();
        for i in &idx.images {
            live.insert(i.manifest.hex().to_string());
            live.insert(i.config_digest.hex().to_string());
            for l in &i.layers {
                live.insert(l.digest.hex().to_string());
            }
        }
        let mut removed = 0;
        for dir in ["blobs/sha256", "layers"] {
            let d = self.root.join(dir);
            for e in std::fs::read_dir(&d).map_err(io_err(&d))? {
                let e = e.map_err(io_err(&d))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    let p = e.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    }
                    .map_err(io_err(&p))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

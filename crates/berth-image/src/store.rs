//! The content store in the data directory:
//!
//! ```text
//! images/blobs/sha256/<hex>          blobs by digest (manifests, configs, layers)
//! images/layers/<hex>/rootfs         a layer unpacked once, an overlay lower dir
//! images/layers/<hex>/complete       written last: the unpack finished
//! images/images.json                 name -> manifest, config, layers (written atomically)
//! images/tmp/                        downloads and unpacks in progress
//! images/locks/                      one lock file per layer being unpacked, and the index's
//! ```
//!
//! The whole tree is private to root (`0700`): layers hold other people's set-user-ID programs
//! and device nodes, which no unprivileged user of the host may reach.
//!
//! A layer is unpacked once, even when many pods (or processes) want it at the same moment: the
//! first takes the layer's lock, unpacks into `tmp/`, marks it complete and renames it into
//! `layers/`; the others wait on the lock and then find it done. `layers/<hex>` therefore only
//! ever holds a finished unpack; one found without its marker (left by an older berth or a
//! crash) is removed and unpacked again.
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
    max_layer_size: u64,
}

/// An exclusive lock held on a file in `locks/` until dropped (`flock`, so it is released
/// when the process dies, and two threads of one process exclude each other too).
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code, reason = "held for its lock")] std::fs::File);

impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        // A store made by an older berth may be readable by all; it holds what images hold.
        berth_fs::private_dir(root).map_err(io_err(root))?;
        for d in ["blobs/sha256", "layers", "tmp", "locks"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            max_layer_size: crate::unpack::DEFAULT_MAX_LAYER_SIZE,
        })
    }

    /// Sets the most one layer may take unpacked (`--max-layer-size`).
    pub fn with_max_layer_size(mut self, bytes: u64) -> ImageStore {
        self.max_layer_size = bytes;
        self
    }

    /// Takes the store's lock named `name`, waiting for whoever holds it.
    pub fn lock(&self, name: &str) -> Result<StoreLock, ImageError> {
        let p = self.root.join("locks").join(name);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&p)(e.into()))?;
        Ok(StoreLock(f))
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

    /// Whether `base` holds a finished unpack of `digest`.
    fn layer_complete(base: &Path, digest: &Digest) -> bool {
        std::fs::read_to_string(base.join("complete")).is_ok_and(|m| m.trim() == digest.as_str())
    }

    /// The unpacked root of a layer, unpacking it the first time. Safe to call from many
    /// threads and processes at once: the layer is unpacked exactly once, and no caller gets
    /// its directory before the unpack has finished.
    pub fn layer_dir(&self, layer: &LayerRef) -> Result<PathBuf, ImageError> {
        let hex = layer.digest.hex();
        let base = self.root.join("layers").join(hex);
        let rootfs = base.join("rootfs");
        if Self::layer_complete(&base, &layer.digest) {
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
        let _lock = self.lock(&format!("layer-{hex}"))?;
        if Self::layer_complete(&base, &layer.digest) {
            return Ok(rootfs);
        }
        // Whatever is there now is an unpack that never finished: nobody uses it.
        berth_fs::remove_tree(&base).map_err(io_err(&base))?;
        // The temporary name is the layer's own: only the lock's holder uses it.
        let tmp = self.root.join("tmp").join(format!("layer-{hex}"));
        berth_fs::remove_tree(&tmp).map_err(io_err(&tmp))?;
        let result = self.unpack_into(layer, &tmp);
        if result.is_err() {
            // A refused or failed unpack leaves nothing behind.
            let _ = berth_fs::remove_tree(&tmp);
            return result.map(|_| rootfs);
        }
        std::fs::rename(&tmp, &base).map_err(io_err(&base))?;
        let layers = self.root.join("layers");
        std::fs::File::open(&layers)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&layers))?;
        Ok(rootfs)
    }

    /// Unpacks a layer's blob into `tmp/rootfs`, makes it durable and marks it complete.
    fn unpack_into(&self, layer: &LayerRef, tmp: &Path) -> Result<(), ImageError> {
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
        let blob = self.blob_path(&layer.digest);
        let f = std::fs::File::open(&blob).map_err(io_err(&blob))?;
        let opts = crate::unpack::UnpackOptions {
            whiteouts: true,
            max_size: self.max_layer_size,
        };
        crate::unpack::unpack(f, &rootfs, opts).map_err(|e| match e {
            ImageError::Invalid { why, .. } => ImageError::Invalid {
                what: format!("layer {}", layer.digest),
                why,
            },
            e => e,
        })?;
        // The marker must never reach the disk before the files it vouches for.
        let dir = std::fs::File::open(&rootfs).map_err(io_err(&rootfs))?;
        rustix::fs::syncfs(&dir).map_err(|e| io_err(&rootfs)(e.into()))?;
        let marker = tmp.join("complete");
        let mut m = std::fs::File::create(&marker).map_err(io_err(&marker))?;
        m.write_all(layer.digest.as_str().as_bytes())
            .and_then(|()| m.sync_all())
            .map_err(io_err(&marker))
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
        let _lock = self.lock("index")?;
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
        {
            let _lock = self.lock("index")?;
            let mut idx = self.read_index()?;
            idx.images.retain(|i| i.name != rec.name);
            self.write_index(&idx)?;
        }
        self.gc()?;
        Ok(rec)
    }

    /// Removes blobs and unpacked layers no image refers to; returns how many went.
    pub fn gc(&self) -> Result<usize, ImageError> {
        let _lock = self.lock("index")?;
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
                    berth_fs::remove_tree(&p).map_err(io_err(&p))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

//! OCI images: references, digests, the content store in the data directory (blobs by digest,
//! each layer unpacked once and shared read-only as an overlay lower dir), layer unpacking
//! with whiteouts, import of OCI image layouts and `docker save` archives, and the built-in
//! `host` image.
//!
//! Architecture invariant: a blob is stored only after its content matched its digest; an
//! unpacked layer directory is used only once its `complete` marker exists, so a crash in the
//! middle of an unpack is redone, never used half-done.

pub mod config;
pub mod digest;
pub mod import;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use config::ImageConfig;
pub use digest::Digest;
pub use reference::Reference;
pub use store::{ImageRecord, ImageStore, LayerRef};

/// Everything that can go wrong with images, naming what was involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] berth_fs::FsError),
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error(transparent)]
    Digest(#[from] digest::DigestError),
    #[error("content of {expected} does not match its digest (got {actual}); nothing was stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("image {0} not found locally; pull or import it, or check the name (`berth image ls`)")]
    NotFound(String),
    #[error("{what} is not valid: {why}")]
    Invalid { what: String, why: String },
    #[error("{what} not found in {registry}; pull it or check the name")]
    NotFoundIn { what: String, registry: String },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("layer {digest}: unsupported media type {media_type}")]
    UnsupportedLayer { digest: Digest, media_type: String },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}
